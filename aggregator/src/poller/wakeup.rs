//! How a poller learns of new tasks: by intake's `NOTIFY osago_tasks`, or, when busy, by
//! looking every claim gap without listening.
//!
//! Listening is not free for a busy stack. Postgres signals every backend that listens in a
//! database on every NOTIFY committed in it, whatever the channel, and the outbox trigger
//! notifies the relay once per finished task: with six insurers, each finished task woke
//! seven backends, six of them pollers that had nothing to do with it (15 % of the
//! aggregator database's CPU in a profile at 120 quotes/s). A busy poller gains nothing from
//! the notifications either, since it claims at most once per gap however often it is woken.
//!
//! So once looks keep finding tasks at about the gap's pace, the poller stops listening and
//! looks every gap; after a few looks in a row find nothing, it listens again — and looks once
//! more after the LISTEN, for what arrived meanwhile. A pure state machine; the claim loop
//! does the I/O.

use std::time::Duration;

/// Looks in a row that found tasks, each soon after the one before, that make a poller busy.
pub const BUSY_LOOKS: u32 = 3;
/// Looks in a row that found nothing that make a busy poller listen again.
pub const IDLE_LOOKS: u32 = 3;

/// How the claim loop is woken for new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Woken by intake's notifications (and the fallback tick, and due tasks).
    Listening,
    /// Not listening: looks again one claim gap after every look.
    Polling,
}

/// The mode and the streak of looks that may change it.
#[derive(Debug, Clone)]
pub struct Wakeup {
    mode: Mode,
    /// Looks are "soon after" each other when this close: twice the claim gap, so a poller
    /// that is woken faster than it may claim counts as busy, and one woken now and then not.
    busy_spacing: Duration,
    streak: u32,
}

impl Wakeup {
    /// A listening poller whose claims are at least `claim_gap` apart.
    pub fn new(claim_gap: Duration) -> Self {
        Wakeup { mode: Mode::Listening, busy_spacing: claim_gap * 2, streak: 0 }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes one look's result — how many tasks it claimed, and how long after the previous
    /// look it came (`None` for the first) — and returns the new mode when it changes.
    pub fn after_look(&mut self, claimed: usize, since_previous: Option<Duration>) -> Option<Mode> {
        match self.mode {
            Mode::Listening => {
                let soon = since_previous.is_some_and(|gap| gap <= self.busy_spacing);
                self.streak = match (claimed > 0, soon) {
                    (false, _) => 0,
                    (true, true) => self.streak + 1,
                    (true, false) => 1,
                };
                (self.streak >= BUSY_LOOKS).then(|| self.switch(Mode::Polling))
            }
            Mode::Polling => {
                self.streak = if claimed == 0 { self.streak + 1 } else { 0 };
                (self.streak >= IDLE_LOOKS).then(|| self.switch(Mode::Listening))
            }
        }
    }

    fn switch(&mut self, to: Mode) -> Mode {
        self.mode = to;
        self.streak = 0;
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(40);

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_poller_woken_faster_than_it_may_claim_stops_listening() {
        let mut w = Wakeup::new(GAP);
        assert_eq!(w.after_look(1, None), None);
        assert_eq!(w.after_look(2, ms(40)), None);
        assert_eq!(w.after_look(1, ms(80)), Some(Mode::Polling));
        assert_eq!(w.mode(), Mode::Polling);
    }

    #[test]
    fn tasks_now_and_then_keep_it_listening() {
        let mut w = Wakeup::new(GAP);
        // A task every 100 ms, or tasks in quick looks broken by an empty one, or a burst after
        // a pause: never three quick productive looks in a row.
        for _ in 0..10 {
            assert_eq!(w.after_look(1, ms(100)), None);
        }
        for _ in 0..5 {
            assert_eq!(w.after_look(0, ms(40)), None);
            assert_eq!(w.after_look(1, ms(40)), None);
            assert_eq!(w.after_look(1, ms(40)), None);
        }
        assert_eq!(w.after_look(0, ms(40)), None);
        assert_eq!(w.after_look(1, ms(40)), None);
        assert_eq!(w.after_look(1, ms(40)), None);
        assert_eq!(w.after_look(5, ms(500)), None, "a pause restarts the streak");
        assert_eq!(w.mode(), Mode::Listening);
    }

    #[test]
    fn a_busy_poller_listens_again_after_looks_in_a_row_find_nothing() {
        let mut w = Wakeup::new(GAP);
        for _ in 0..3 {
            w.after_look(1, ms(40));
        }
        assert_eq!(w.mode(), Mode::Polling);
        // A gap now and then is normal for a busy insurer: the streak is of empty looks in a row.
        assert_eq!(w.after_look(0, ms(40)), None);
        assert_eq!(w.after_look(0, ms(40)), None);
        assert_eq!(w.after_look(3, ms(40)), None);
        assert_eq!(w.after_look(0, ms(40)), None);
        assert_eq!(w.after_look(0, ms(40)), None);
        assert_eq!(w.after_look(0, ms(40)), Some(Mode::Listening));
        // Listening again, it needs a fresh busy streak to stop.
        assert_eq!(w.after_look(1, ms(40)), None);
        assert_eq!(w.after_look(1, ms(40)), None);
        assert_eq!(w.after_look(1, ms(40)), Some(Mode::Polling));
    }
}
