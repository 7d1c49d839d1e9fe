//! Per-key rate limits (GCRA, via governor): one bucket per partner or client address, so
//! one caller's flood is refused without slowing anyone else.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A rate limit per key: `rate` per second sustained, `burst` at once.
#[derive(Clone)]
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Arc<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `rate` requests per second per key, bursts up to `burst` (both at least 1).
    pub fn per_second(rate: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(rate.max(1)).expect("non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
        KeyedLimit {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` when `key` may proceed now, otherwise how long it should wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops buckets of keys that have been idle long enough to be full again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let limit = KeyedLimit::per_second(1, 3);
        for _ in 0..3 {
            assert!(limit.check(&"flood").is_ok());
        }
        let wait = limit.check(&"flood").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check(&"quiet").is_ok(), "another key is not slowed by the flood");
    }
}
