//! The pure core of a fake insurer: given a request, decide — reproducibly under the
//! seed — how long it takes, and whether it ends in an offer, a decline or an error.

use crate::config::{DeclineRules, Faults, Latency, Personality};
use crate::kbm;
use domain::request::QuoteRequest;
use domain::tariff::{self, BaseRate, Quote, full_years_between};
use domain::vehicle::Purpose;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use rust_decimal::Decimal;
use std::time::Duration;

/// What will happen to one calculation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// How long the create call itself takes.
    pub create_delay: Duration,
    /// How long after creation the result is visible to polls.
    pub ready_after: Duration,
    pub outcome: Outcome,
}

/// How a calculation ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Offer { quote: Quote, reference: String, valid_for: Duration },
    Declined { reason: String },
    Error { message: String },
}

/// A random source private to one (insurer, request) pair, so outcomes do not depend on
/// the order or timing in which requests arrive.
pub fn rng_for(seed: u64, insurer: &str, request_key: &str) -> ChaCha8Rng {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(insurer.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(request_key.as_bytes());
    ChaCha8Rng::seed_from_u64(kbm::fnv1a(&bytes))
}

/// Decides the fate of `request` at this insurer.
pub fn decide(p: &Personality, faults: &Faults, seed: u64, request_key: &str, request: &QuoteRequest) -> Decision {
    let mut rng = rng_for(seed, &p.name, request_key);
    let create_delay = sample(&p.create_latency, &mut rng);
    let ready_after = sample(&p.offer_latency, &mut rng).mul_f64(faults.slowdown);
    let calculation_fails = rng.random_bool(faults.calculation_error_rate);
    let reference = format!("{}-{:012X}", p.name.to_uppercase(), rng.random::<u64>() >> 16);
    let outcome = if calculation_fails {
        Outcome::Error { message: "calculation service unavailable, try again later".into() }
    } else if let Some(reason) = decline_reason(&p.decline, request) {
        Outcome::Declined { reason }
    } else {
        match price(p, request) {
            Ok(quote) => Outcome::Offer { quote, reference, valid_for: p.offer_validity },
            Err(e) => Outcome::Declined { reason: e.to_string() },
        }
    };
    Decision { create_delay, ready_after, outcome }
}

/// The premium at this insurer's own base rate, with КБМ from the simulated union database.
pub fn price(p: &Personality, request: &QuoteRequest) -> Result<Quote, tariff::TariffError> {
    let input = request.tariff_input(|d| d.kbm_class.unwrap_or_else(|| kbm::lookup(d.licence.as_str())));
    let position = Decimal::from_f64_retain(p.base_rate_position).unwrap_or(Decimal::ONE).round_dp(4);
    tariff::calculate(&input, BaseRate::Position(position))
}

fn decline_reason(rules: &DeclineRules, request: &QuoteRequest) -> Option<String> {
    let start = request.policy.start_date;
    if let Some(min) = rules.min_driver_age
        && request.listed_drivers().iter().any(|d| full_years_between(d.birth_date, start) < min)
    {
        return Some(format!("drivers younger than {min} are not insured"));
    }
    if let Some(max) = rules.max_vehicle_age {
        let age = i64::from(chrono::Datelike::year(&start)) - i64::from(request.vehicle.year);
        if age > i64::from(max) {
            return Some(format!("vehicles older than {max} years are not insured"));
        }
    }
    if rules.unlimited_drivers && request.unlimited_drivers {
        return Some("unlimited-drivers policies are not offered".into());
    }
    if rules.regions.contains(&request.owner.region) {
        return Some(format!("owners registered in region {} are not insured online", request.owner.region));
    }
    if rules.taxi && request.vehicle.purpose == Purpose::Taxi {
        return Some("taxis are not insured".into());
    }
    None
}

/// Draws from the log-normal distribution through the median and the 99th percentile.
fn sample(latency: &Latency, rng: &mut ChaCha8Rng) -> Duration {
    let median = latency.median.as_secs_f64();
    let p99 = latency.p99.as_secs_f64();
    if median <= 0.0 || p99 <= median {
        return latency.median;
    }
    // z(0.99) of the standard normal.
    let sigma = (p99 / median).ln() / 2.326_348;
    match LogNormal::new(median.ln(), sigma) {
        // Cap the tail so one unlucky draw cannot stall a demo for minutes.
        Ok(dist) => Duration::from_secs_f64(dist.sample(rng).min(p99 * 3.0)),
        Err(_) => latency.median,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_samples_follow_median_and_p99() {
        let latency = Latency { median: Duration::from_millis(100), p99: Duration::from_millis(400) };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut xs: Vec<f64> = (0..20_000).map(|_| sample(&latency, &mut rng).as_secs_f64()).collect();
        xs.sort_by(f64::total_cmp);
        let median = xs[xs.len() / 2];
        let p99 = xs[xs.len() * 99 / 100];
        assert!((0.09..0.11).contains(&median), "median {median}");
        assert!((0.34..0.46).contains(&p99), "p99 {p99}");
        assert!(xs.last().unwrap() <= &1.2);
    }

    #[test]
    fn constant_latency_is_constant() {
        let latency = Latency::constant(Duration::from_millis(5));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(sample(&latency, &mut rng), Duration::from_millis(5));
    }
}
