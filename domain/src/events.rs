//! Event envelopes the aggregator publishes (through its outbox and Kafka) and core-app
//! stores and streams: one event per change of one insurer's status for one quote.

use crate::money::Money;
use crate::tariff::Breakdown;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The Kafka topic of quote events (message key = quote id).
pub const TOPIC: &str = "osago.quote-events.v1";

/// One insurer's result for one quote, as it changes over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum InsurerOutcome {
    /// Sent to the insurer; no answer yet.
    Pending,
    /// The insurer priced the policy.
    Offer { offer: Offer },
    /// The insurer refuses to insure this risk.
    Declined { reason: String },
    /// The call failed (insurer errors, open circuit, …); the reason is machine-readable.
    Failed { reason: String },
    /// No final answer before the quote's deadline.
    Expired,
}

impl InsurerOutcome {
    /// True for every outcome after which nothing more will arrive from this insurer.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, InsurerOutcome::Pending)
    }

    /// This outcome with every NUL character taken out of the insurer's texts (a reason, an
    /// offer's reference): Postgres's `text` and `jsonb` cannot hold one, and an event refused by
    /// a consumer's database would hold up every event behind it.
    pub fn storable(self) -> Self {
        let clean = |text: String| if text.contains('\0') { text.replace('\0', "") } else { text };
        match self {
            InsurerOutcome::Declined { reason } => InsurerOutcome::Declined { reason: clean(reason) },
            InsurerOutcome::Failed { reason } => InsurerOutcome::Failed { reason: clean(reason) },
            InsurerOutcome::Offer { mut offer } => {
                offer.insurer_reference = clean(offer.insurer_reference);
                InsurerOutcome::Offer { offer }
            }
            other => other,
        }
    }

    /// The outcome's `status` on the wire, which both services' databases store too.
    pub fn status(&self) -> &'static str {
        match self {
            InsurerOutcome::Pending => "pending",
            InsurerOutcome::Offer { .. } => "offer",
            InsurerOutcome::Declined { .. } => "declined",
            InsurerOutcome::Failed { .. } => "failed",
            InsurerOutcome::Expired => "expired",
        }
    }

    /// The SSE event name and envelope `type` for this outcome.
    pub fn event_type(&self) -> EventType {
        match self {
            InsurerOutcome::Offer { .. } => EventType::Offer,
            _ => EventType::Status,
        }
    }
}

/// A priced policy offer from one insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub premium: Money,
    /// The insurer's own id of the calculation, needed to buy the policy there.
    pub insurer_reference: String,
    /// The price holds until this moment.
    pub valid_until: DateTime<Utc>,
    pub breakdown: Breakdown,
}

/// Event type names, shared by the Kafka envelope and the SSE `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Status,
    Offer,
}

impl EventType {
    /// The name on the wire, serde's: the envelope's `type` and the SSE `event:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Status => "status",
            EventType::Offer => "offer",
        }
    }
}

/// The envelope on the wire: Kafka message value, keyed by `quote_id`. The order of the fields
/// matters to the aggregator's outbox, which writes `version` into the JSON text: only ids, the
/// type and the insurer's name may come before it (`aggregator::outbox::around_version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteEvent {
    /// Unique per event; consumers deduplicate by it.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub quote_id: Uuid,
    /// The insurer's resource name (e.g. `alfa`).
    pub insurer: String,
    /// Increases by one with each event of this insurer for this quote, so order can be checked.
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub outcome: InsurerOutcome,
}

impl QuoteEvent {
    /// A new event with a fresh time-ordered id; the type follows from the outcome.
    pub fn new(
        quote_id: Uuid,
        insurer: impl Into<String>,
        version: u32,
        outcome: InsurerOutcome,
        at: DateTime<Utc>,
    ) -> Self {
        QuoteEvent {
            event_id: Uuid::now_v7(),
            event_type: outcome.event_type(),
            quote_id,
            insurer: insurer.into(),
            version,
            occurred_at: at,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcomes_status_is_the_one_on_the_wire() {
        let outcomes = [
            InsurerOutcome::Pending,
            InsurerOutcome::Declined { reason: "no".into() },
            InsurerOutcome::Failed { reason: "down".into() },
            InsurerOutcome::Expired,
        ];
        for outcome in outcomes {
            assert_eq!(serde_json::to_value(&outcome).unwrap()["status"], outcome.status());
        }
    }

    #[test]
    fn an_outcome_is_stored_without_the_nul_characters_of_an_insurers_texts() {
        let failed = InsurerOutcome::Failed { reason: "rejected: HTTP 422: bad\0 VIN\0".into() }.storable();
        assert_eq!(failed, InsurerOutcome::Failed { reason: "rejected: HTTP 422: bad VIN".into() });
        let declined = InsurerOutcome::Declined { reason: "\0".into() }.storable();
        assert_eq!(declined, InsurerOutcome::Declined { reason: String::new() });
        assert_eq!(InsurerOutcome::Expired.storable(), InsurerOutcome::Expired);
    }

    #[test]
    fn an_event_types_name_is_the_one_serde_writes() {
        for kind in [EventType::Status, EventType::Offer] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
