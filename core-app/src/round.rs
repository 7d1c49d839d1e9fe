//! Deciding a consumer round: what each event does to the quotes it belongs to, given their
//! state as read — pure, so the rules are tested without a database (`store::apply_all`
//! reads the state, asks this, and writes the answer in one statement).
//!
//! The rules, per event in the order given: an insurer the quote does not have is
//! `UnknownInsurer` (`Late` once the quote completed); an event id stored before, or earlier
//! in the round, is `Duplicate`; an event for a completed quote is `Late`; one whose version
//! is not newer than the insurer's last is `Stale`; anything else is stored with the quote's
//! next sequence number, and when it leaves no insurer pending the quote completes with a
//! `complete` event numbered after it. An event whose quote was not read is left to the
//! caller (`None`): its quote is not stored yet, and waiting for it takes locks.

use crate::store::Applied;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// An event of the round, as the rules see it.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub quote: Uuid,
    pub insurer: &'a str,
    pub event_id: Uuid,
    pub version: i32,
    /// `quote_insurers.status` after it: pending, offer, declined, failed, expired.
    pub status: &'static str,
    pub offer: Option<Value>,
    pub reason: Option<String>,
    /// The SSE event name: `status` or `offer`.
    pub name: &'a str,
}

/// A stored quote as read before the round.
#[derive(Debug, Clone)]
pub struct Quote {
    pub next_seq: i64,
    pub completed: bool,
    pub insurers: Vec<Insurer>,
}

/// One insurer of a stored quote.
#[derive(Debug, Clone)]
pub struct Insurer {
    pub name: String,
    pub display_name: String,
    pub status: String,
    pub version: i32,
}

/// What the round writes.
#[derive(Debug, Default, PartialEq)]
pub struct Writes {
    /// Each changed quote once: its id, the `next_seq` it was read with (the write is refused
    /// if it moved meanwhile), the new one, and whether it completes.
    pub quotes: Vec<QuoteWrite>,
    /// Each changed insurer once, with its last state of the round.
    pub insurers: Vec<InsurerWrite>,
    /// The events to append and push, in the round's order.
    pub events: Vec<EventWrite>,
}

/// A quote's new numbering and completion.
#[derive(Debug, PartialEq)]
pub struct QuoteWrite {
    pub id: Uuid,
    pub expected_seq: i64,
    pub next_seq: i64,
    pub completes: bool,
}

/// An insurer's new state.
#[derive(Debug, PartialEq)]
pub struct InsurerWrite {
    pub quote: Uuid,
    pub insurer: String,
    pub status: &'static str,
    pub version: i32,
    pub offer: Option<Value>,
    pub reason: Option<String>,
}

/// An event appended to a quote's log.
#[derive(Debug, PartialEq)]
pub struct EventWrite {
    pub quote: Uuid,
    pub seq: i64,
    pub what: Logged,
}

/// What a logged event says.
#[derive(Debug, PartialEq)]
pub enum Logged {
    /// An insurer's result (`status` or `offer`).
    Insurer {
        event_id: Uuid,
        name: String,
        insurer: String,
        display_name: String,
        status: &'static str,
        offer: Option<Value>,
        reason: Option<String>,
    },
    /// The quote completed: how many offers among how many insurers.
    Complete { offers: i64, insurers: i64 },
}

/// Decides every event of the round: its answer (`None` when its quote was not read) and
/// the writes. `seen` are the round's event ids already stored.
pub fn decide(
    events: &[Event<'_>],
    quotes: &HashMap<Uuid, Quote>,
    seen: &HashSet<Uuid>,
) -> (Vec<Option<Applied>>, Writes) {
    let mut state: HashMap<Uuid, Quote> = HashMap::new();
    let mut seen_now: HashSet<Uuid> = HashSet::new();
    let mut writes = Writes::default();
    let mut answers = Vec::with_capacity(events.len());
    for event in events {
        let Some(read) = quotes.get(&event.quote) else {
            answers.push(None);
            continue;
        };
        let quote = state.entry(event.quote).or_insert_with(|| read.clone());
        let Some(at) = quote.insurers.iter().position(|i| i.name == event.insurer) else {
            answers.push(Some(if quote.completed { Applied::Late } else { Applied::UnknownInsurer }));
            continue;
        };
        let answer = if seen.contains(&event.event_id) || seen_now.contains(&event.event_id) {
            Applied::Duplicate
        } else if quote.completed {
            Applied::Late
        } else if event.version <= quote.insurers[at].version {
            Applied::Stale
        } else {
            seen_now.insert(event.event_id);
            store(event, quote, at, &mut writes)
        };
        answers.push(Some(answer));
    }
    writes.quotes = quotes_changed(&writes.events, quotes, &state);
    (answers, writes)
}

/// Stores `event` as the quote's next, and completes the quote if no insurer is left pending.
fn store(event: &Event<'_>, quote: &mut Quote, at: usize, writes: &mut Writes) -> Applied {
    let insurer = &mut quote.insurers[at];
    insurer.status = event.status.to_string();
    insurer.version = event.version;
    let seq = quote.next_seq;
    writes.events.push(EventWrite {
        quote: event.quote,
        seq,
        what: Logged::Insurer {
            event_id: event.event_id,
            name: event.name.to_string(),
            insurer: insurer.name.clone(),
            display_name: insurer.display_name.clone(),
            status: event.status,
            offer: event.offer.clone(),
            reason: event.reason.clone(),
        },
    });
    let write = InsurerWrite {
        quote: event.quote,
        insurer: insurer.name.clone(),
        status: event.status,
        version: event.version,
        offer: event.offer.clone(),
        reason: event.reason.clone(),
    };
    // One write per insurer, its last state: an UPDATE … FROM takes one source row per target.
    match writes.insurers.iter_mut().find(|w| w.quote == write.quote && w.insurer == write.insurer) {
        Some(earlier) => *earlier = write,
        None => writes.insurers.push(write),
    }
    quote.next_seq += 1;
    let completed = quote.insurers.iter().all(|i| i.status != "pending");
    if completed {
        let offers = quote.insurers.iter().filter(|i| i.status == "offer").count() as i64;
        let insurers = quote.insurers.len() as i64;
        writes.events.push(EventWrite {
            quote: event.quote,
            seq: quote.next_seq,
            what: Logged::Complete { offers, insurers },
        });
        quote.next_seq += 1;
        quote.completed = true;
    }
    Applied::Stored { seq, completed }
}

/// The quotes the round appended to, in the order of their first event.
fn quotes_changed(events: &[EventWrite], read: &HashMap<Uuid, Quote>, now: &HashMap<Uuid, Quote>) -> Vec<QuoteWrite> {
    let mut changed: Vec<QuoteWrite> = Vec::new();
    for event in events {
        if changed.iter().any(|q| q.id == event.quote) {
            continue;
        }
        let (before, after) = (&read[&event.quote], &now[&event.quote]);
        changed.push(QuoteWrite {
            id: event.quote,
            expected_seq: before.next_seq,
            next_seq: after.next_seq,
            completes: after.completed,
        });
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(insurers: &[(&str, &str, i32)]) -> Quote {
        Quote {
            next_seq: 1,
            completed: false,
            insurers: insurers
                .iter()
                .map(|(name, status, version)| Insurer {
                    name: name.to_string(),
                    display_name: name.to_uppercase(),
                    status: status.to_string(),
                    version: *version,
                })
                .collect(),
        }
    }

    fn event(quote: Uuid, insurer: &'static str, version: i32, status: &'static str) -> Event<'static> {
        let name = if status == "offer" { "offer" } else { "status" };
        let offer = (status == "offer").then(|| serde_json::json!({"premium": "1.00"}));
        Event { quote, insurer, event_id: Uuid::new_v4(), version, status, offer, reason: None, name }
    }

    #[test]
    fn each_event_is_answered_as_alone_in_the_order_given() {
        let (q, missing) = (Uuid::new_v4(), Uuid::new_v4());
        let quotes = HashMap::from([(q, quote(&[("alfa", "pending", 0), ("vsk", "pending", 0)]))]);
        let first = event(q, "alfa", 1, "offer");
        let stored_before = event(q, "vsk", 1, "pending");
        let round = [
            first.clone(),
            first,                                // the same id again
            event(q, "alfa", 1, "pending"),       // an old version
            event(q, "reso", 1, "pending"),       // not the quote's
            event(missing, "alfa", 1, "pending"), // quote not read
            stored_before.clone(),                // stored by an earlier round
            event(q, "vsk", 1, "declined"),       // completes
            event(q, "alfa", 2, "failed"),        // after completion
            event(q, "reso", 1, "pending"),       // not the quote's, after completion
        ];
        let (answers, writes) = decide(&round, &quotes, &HashSet::from([stored_before.event_id]));
        assert_eq!(
            answers,
            [
                Some(Applied::Stored { seq: 1, completed: false }),
                Some(Applied::Duplicate),
                Some(Applied::Stale),
                Some(Applied::UnknownInsurer),
                None,
                Some(Applied::Duplicate),
                Some(Applied::Stored { seq: 2, completed: true }),
                Some(Applied::Late),
                Some(Applied::Late),
            ]
        );
        let seqs: Vec<i64> = writes.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(writes.events[2].what, Logged::Complete { offers: 1, insurers: 2 });
        assert_eq!(writes.quotes, [QuoteWrite { id: q, expected_seq: 1, next_seq: 4, completes: true }]);
        let states: Vec<(&str, &str, i32)> =
            writes.insurers.iter().map(|w| (w.insurer.as_str(), w.status, w.version)).collect();
        assert_eq!(states, [("alfa", "offer", 1), ("vsk", "declined", 1)]);
    }

    #[test]
    fn an_insurer_changed_twice_is_written_once_with_its_last_state() {
        let q = Uuid::new_v4();
        let mut read = quote(&[("alfa", "pending", 0), ("vsk", "pending", 0)]);
        read.next_seq = 7;
        let quotes = HashMap::from([(q, read)]);
        let round = [event(q, "alfa", 1, "pending"), event(q, "alfa", 2, "offer")];
        let (answers, writes) = decide(&round, &quotes, &HashSet::new());
        assert_eq!(
            answers,
            [Some(Applied::Stored { seq: 7, completed: false }), Some(Applied::Stored { seq: 8, completed: false })]
        );
        assert_eq!(writes.insurers.len(), 1);
        assert_eq!((writes.insurers[0].status, writes.insurers[0].version), ("offer", 2));
        assert_eq!(writes.quotes, [QuoteWrite { id: q, expected_seq: 7, next_seq: 9, completes: false }]);
    }

    #[test]
    fn quotes_interleaved_are_numbered_each_on_its_own() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let quotes = HashMap::from([
            (a, quote(&[("alfa", "pending", 0)])),
            (b, quote(&[("alfa", "offer", 1), ("vsk", "pending", 0)])),
        ]);
        let round = [event(b, "vsk", 1, "failed"), event(a, "alfa", 1, "pending"), event(b, "alfa", 2, "failed")];
        let (answers, writes) = decide(&round, &quotes, &HashSet::new());
        assert_eq!(
            answers,
            [
                Some(Applied::Stored { seq: 1, completed: true }),
                Some(Applied::Stored { seq: 1, completed: false }),
                Some(Applied::Late),
            ]
        );
        assert_eq!(writes.events[1].what, Logged::Complete { offers: 1, insurers: 2 });
        let ids: Vec<Uuid> = writes.quotes.iter().map(|w| w.id).collect();
        assert_eq!(ids, [b, a]);
    }

    #[test]
    fn a_round_of_nothing_new_writes_nothing() {
        let q = Uuid::new_v4();
        let mut read = quote(&[("alfa", "offer", 3)]);
        read.completed = true;
        let quotes = HashMap::from([(q, read)]);
        let (answers, writes) = decide(&[event(q, "alfa", 4, "failed")], &quotes, &HashSet::new());
        assert_eq!(answers, [Some(Applied::Late)]);
        assert_eq!(writes, Writes::default());
    }
}
