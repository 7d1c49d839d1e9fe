//! What a round of the aggregator's events does to its quotes, decided in memory on their state
//! read under the quotes' row locks: the pure core of [`crate::store::apply_all`]. Each event is
//! answered as if it had been applied alone, in the order given; the writes come out as whole
//! sets, one statement for all of them.

use crate::store::Applied;
use domain::events::QuoteEvent;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A quote as stored, read under its row lock.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteState {
    pub next_seq: i64,
    pub completed: bool,
    pub insurers: Vec<InsurerState>,
}

/// One insurer of a quote as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InsurerState {
    pub insurer: String,
    pub display_name: String,
    /// `quote_insurers.status`.
    pub status: String,
    /// The last event version applied (`store` clamps the envelope's u32 into Postgres's int4).
    pub version: i32,
}

/// An entry to append to a quote's log (and push), in the order the round makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Append<'a> {
    pub quote: Uuid,
    pub seq: i64,
    pub entry: Entry<'a>,
}

/// What an appended entry is.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// An insurer's event, with the insurer's display name.
    Event { event: &'a QuoteEvent, display_name: String },
    /// The quote's `complete`: how many insurers offered, of how many.
    Complete { offers: i64, insurers: i64 },
}

/// The writes of a round, and the answer to each of its events.
#[derive(Debug, Default, PartialEq)]
pub struct Plan<'a> {
    /// Per event, in the order given; `None` for an event whose quote was not among those
    /// locked (not stored yet, or stored meanwhile): it is left to the one-by-one path.
    pub answers: Vec<Option<Applied>>,
    pub appends: Vec<Append<'a>>,
    /// Each changed insurer's last stored event.
    pub insurers: Vec<&'a QuoteEvent>,
    /// Each changed quote: its next sequence number, and whether it completed in this round.
    pub quotes: Vec<(Uuid, i64, bool)>,
}

/// The event's version as Postgres holds it.
pub fn version(event: &QuoteEvent) -> i32 {
    i32::try_from(event.version).unwrap_or(i32::MAX)
}

/// Decides `events` against `quotes` (the locked ones, by id) and `seen` (the event ids among
/// them already in a log). The rules, per event: an id already logged is a duplicate; an event
/// of a completed quote is late; one whose version is not above its insurer's is stale; else it
/// is stored with the quote's next sequence number, and when it leaves no insurer of the quote
/// pending, `complete` follows it.
pub fn plan<'a>(events: &[&'a QuoteEvent], mut quotes: HashMap<Uuid, QuoteState>, seen: &HashSet<Uuid>) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut logged: HashSet<Uuid> = HashSet::new();
    // The last stored event of each changed insurer, and the order they were first changed in.
    let mut changed: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut touched: Vec<Uuid> = Vec::new();
    for &event in events {
        let Some(quote) = quotes.get_mut(&event.quote_id) else {
            plan.answers.push(None);
            continue;
        };
        let answer = match quote.insurers.iter().position(|i| i.insurer == event.insurer) {
            None if quote.completed => Applied::Late,
            None => Applied::UnknownInsurer,
            Some(_) if seen.contains(&event.event_id) || logged.contains(&event.event_id) => Applied::Duplicate,
            Some(_) if quote.completed => Applied::Late,
            Some(i) if version(event) <= quote.insurers[i].version => Applied::Stale,
            Some(i) => {
                let insurer = &mut quote.insurers[i];
                insurer.status = event.outcome.status().to_string();
                insurer.version = version(event);
                let display_name = insurer.display_name.clone();
                let seq = quote.next_seq;
                plan.appends.push(Append { quote: event.quote_id, seq, entry: Entry::Event { event, display_name } });
                quote.next_seq += 1;
                logged.insert(event.event_id);
                match changed.get(&(event.quote_id, event.insurer.as_str())) {
                    Some(&slot) => plan.insurers[slot] = event,
                    None => {
                        changed.insert((event.quote_id, event.insurer.as_str()), plan.insurers.len());
                        plan.insurers.push(event);
                    }
                }
                if !touched.contains(&event.quote_id) {
                    touched.push(event.quote_id);
                }
                let completed = quote.insurers.iter().all(|i| i.status != "pending");
                if completed {
                    let offers = quote.insurers.iter().filter(|i| i.status == "offer").count() as i64;
                    let entry = Entry::Complete { offers, insurers: quote.insurers.len() as i64 };
                    plan.appends.push(Append { quote: event.quote_id, seq: quote.next_seq, entry });
                    quote.next_seq += 1;
                    quote.completed = true;
                }
                Applied::Stored { seq, completed }
            }
        };
        plan.answers.push(Some(answer));
    }
    // A quote changed only while open, so one completed now completed in this round.
    plan.quotes = touched.into_iter().map(|id| (id, quotes[&id].next_seq, quotes[&id].completed)).collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::events::InsurerOutcome;

    fn quote(next_seq: i64, completed: bool, insurers: &[(&str, &str, i32)]) -> QuoteState {
        let insurers = insurers
            .iter()
            .map(|&(insurer, status, version)| InsurerState {
                insurer: insurer.into(),
                display_name: insurer.to_uppercase(),
                status: status.into(),
                version,
            })
            .collect();
        QuoteState { next_seq, completed, insurers }
    }

    fn event(quote: Uuid, insurer: &str, version: u32, outcome: InsurerOutcome) -> QuoteEvent {
        QuoteEvent::new(quote, insurer, version, outcome, Utc::now())
    }

    fn declined() -> InsurerOutcome {
        InsurerOutcome::Declined { reason: "no".into() }
    }

    #[test]
    fn each_event_is_answered_as_if_applied_alone_in_the_order_given() {
        let (open, done, absent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let logged_before = event(open, "alfa", 1, InsurerOutcome::Pending);
        let first = event(open, "alfa", 2, declined());
        let round = [
            logged_before.clone(),                           // in the log already
            first.clone(),                                   // stored
            first.clone(),                                   // the same id again in this round
            event(open, "alfa", 2, InsurerOutcome::Pending), // a new id, a version not above
            event(open, "reso", 1, InsurerOutcome::Pending), // not one of the quote's insurers
            event(absent, "alfa", 1, InsurerOutcome::Pending),
            event(done, "vsk", 3, declined()),              // a completed quote
            event(done, "reso", 1, declined()),             // nor one of its insurers
            event(open, "vsk", 1, declined()),              // completes `open`
            event(open, "vsk", 2, InsurerOutcome::Expired), // after that
        ];
        let quotes = HashMap::from([
            (open, quote(5, false, &[("alfa", "pending", 1), ("vsk", "pending", 0)])),
            (done, quote(9, true, &[("vsk", "offer", 2)])),
        ]);
        let events: Vec<&QuoteEvent> = round.iter().collect();
        let plan = plan(&events, quotes, &HashSet::from([logged_before.event_id]));
        assert_eq!(
            plan.answers,
            [
                Some(Applied::Duplicate),
                Some(Applied::Stored { seq: 5, completed: false }),
                Some(Applied::Duplicate),
                Some(Applied::Stale),
                Some(Applied::UnknownInsurer),
                None,
                Some(Applied::Late),
                Some(Applied::Late),
                Some(Applied::Stored { seq: 6, completed: true }),
                Some(Applied::Late),
            ]
        );
        let log: Vec<(i64, Option<Uuid>)> = plan
            .appends
            .iter()
            .map(|a| match &a.entry {
                Entry::Event { event, display_name } => {
                    assert_eq!(display_name, &event.insurer.to_uppercase());
                    (a.seq, Some(event.event_id))
                }
                Entry::Complete { offers, insurers } => {
                    assert_eq!((offers, insurers), (&0, &2));
                    (a.seq, None)
                }
            })
            .collect();
        assert_eq!(log, [(5, Some(first.event_id)), (6, Some(round[8].event_id)), (7, None)]);
        assert!(plan.appends.iter().all(|a| a.quote == open));
        assert_eq!(plan.quotes, [(open, 8, true)], "the completed quote is not written");
    }

    #[test]
    fn quotes_interleaved_in_a_round_are_numbered_each_on_its_own_and_an_insurer_keeps_its_last_event() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let failed = |reason: &str| InsurerOutcome::Failed { reason: reason.into() };
        let round = [
            event(a, "alfa", 1, InsurerOutcome::Pending),
            event(b, "alfa", 1, failed("B-1")),
            event(a, "alfa", 2, failed("A-2")),
            event(b, "vsk", 1, InsurerOutcome::Pending),
            event(a, "alfa", 3, declined()),
        ];
        let quotes = HashMap::from([
            (a, quote(1, false, &[("alfa", "pending", 0), ("vsk", "pending", 0)])),
            (b, quote(3, false, &[("alfa", "pending", 0), ("vsk", "pending", 0)])),
        ]);
        let events: Vec<&QuoteEvent> = round.iter().collect();
        let plan = plan(&events, quotes, &HashSet::new());
        let seqs: Vec<Option<i64>> = plan
            .answers
            .iter()
            .map(|answer| match answer {
                Some(Applied::Stored { seq, completed: false }) => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [Some(1), Some(3), Some(2), Some(4), Some(3)]);
        // The pushes in the round's order; within a quote, in its log's.
        let pushed: Vec<(Uuid, i64)> = plan.appends.iter().map(|p| (p.quote, p.seq)).collect();
        assert_eq!(pushed, [(a, 1), (b, 3), (a, 2), (b, 4), (a, 3)]);
        let last: Vec<Uuid> = plan.insurers.iter().map(|e| e.event_id).collect();
        assert_eq!(last, [round[4].event_id, round[1].event_id, round[3].event_id], "a's alfa ends declined");
        assert_eq!(plan.quotes, [(a, 4, false), (b, 5, false)]);
    }

    #[test]
    fn complete_counts_the_offers_among_the_quotes_insurers() {
        let q = Uuid::new_v4();
        let quotes = HashMap::from([(
            q,
            quote(4, false, &[("alfa", "offer", 2), ("reso", "failed", 1), ("vsk", "pending", 1)]),
        )]);
        let round = [event(q, "vsk", 2, declined())];
        let plan = plan(&round.iter().collect::<Vec<_>>(), quotes, &HashSet::new());
        assert_eq!(plan.answers, [Some(Applied::Stored { seq: 4, completed: true })]);
        assert_eq!(plan.appends[1], Append { quote: q, seq: 5, entry: Entry::Complete { offers: 1, insurers: 3 } });
        assert_eq!(plan.quotes, [(q, 6, true)]);
    }
}
