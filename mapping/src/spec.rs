//! What a platform team writes under `spec.api.mapping` of an `InsurerIntegration` with
//! `style: mapped`: the two calls and where the answer keeps each thing we need.
//!
//! Templates are minijinja. In a body every `{{ value }}` is written as JSON (strings quoted and
//! escaped), so a template cannot be broken by what a customer typed; in a path every
//! `{{ value }}` is percent-encoded. Pointers are RFC 6901 JSON pointers (`/data/items/0/price`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// JSON pointer syntax: empty (the whole document) or `/`-separated tokens with `~0`/`~1` escapes.
pub const POINTER_PATTERN: &str = r"^(/([^~/]|~[01])*)*$";

/// How to call an insurer whose API no built-in style speaks, and how to read its answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// The call that starts a calculation. Templates see `request` (the quote request, as in the public
    /// API) and `key` (our stable id of this quote at this insurer, fit for idempotency keys).
    pub create: CallTemplate,
    /// The call that asks how a calculation is doing. Templates see `reference`.
    pub poll: CallTemplate,
    /// Pointer to the insurer's id of the calculation in the create answer; polls get it as `reference`.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub reference: String,
    /// How to read a create or poll answer.
    pub answer: AnswerMapping,
    /// Pointer to the insurer's error message. An answer where it points at a value (not null) is a
    /// rejection whatever its HTTP status — some APIs say "error" with HTTP 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub error: Option<String>,
}

/// One HTTP call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallTemplate {
    /// HTTP method.
    #[serde(default)]
    pub method: Method,
    /// Path template relative to `api.baseUrl`, with a query if the API wants one, e.g.
    /// `quotes/{{ reference }}` or `calc?id={{ reference }}`.
    #[schemars(length(max = 2048))]
    pub path: String,
    /// JSON body template; none sends no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// True when repeating the call cannot do its work twice (the API deduplicates by something in the
    /// call, such as `key`): only then is a call whose answer was lost retried.
    #[serde(default)]
    pub idempotent: bool,
}

/// HTTP methods a mapped call may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
}

/// Where a create or poll answer keeps what the platform needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerMapping {
    /// Pointer to the calculation's status. A create answer without it is taken as pending.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub status: String,
    /// The insurer's status values (strings, or numbers written as text) and what each means; any other
    /// value is a protocol error.
    #[schemars(length(min = 1))]
    pub status_map: BTreeMap<String, Outcome>,
    /// Pointer to the premium: a JSON number or a decimal string.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub premium: String,
    /// The unit the premium is in.
    #[serde(default)]
    pub premium_unit: PremiumUnit,
    /// Pointer to the premium's currency (`RUB`, `RUR` or the numeric code `643`); without it roubles
    /// are assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub currency: Option<String>,
    /// Pointer to the offer's id at the insurer (what buying the policy needs); without it, the
    /// calculation's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub offer_reference: Option<String>,
    /// Pointer to the RFC 3339 moment the price holds until; without it, 24 hours after the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub valid_until: Option<String>,
    /// Pointer to the reason of a decline or a failure, shown to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub message: Option<String>,
    /// Pointers to the tariff coefficients the premium was computed from.
    pub breakdown: BreakdownPointers,
}

/// What an insurer's status value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Still calculating.
    Pending,
    /// Priced: the premium and breakdown are in the answer.
    Offer,
    /// The insurer refuses the risk.
    Declined,
    /// The insurer's calculation failed.
    Failed,
}

/// The unit of the premium in answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PremiumUnit {
    /// Roubles with kopecks as a fraction (`13318.79`).
    #[default]
    Rubles,
    /// Whole kopecks (`1331879`).
    Kopecks,
}

/// A pointer for each coefficient of the tariff formula (JSON numbers or decimal strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakdownPointers {
    /// Base rate ТБ, roubles.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub tb: String,
    /// Territory КТ.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub kt: String,
    /// Bonus-malus КБМ.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub kbm: String,
    /// Age and experience КВС.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub kvs: String,
    /// Drivers listed or unlimited КО.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub ko: String,
    /// Engine power КМ.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub km: String,
    /// Period of use КС.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub ks: String,
    /// Gross violations КН.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub kn: String,
    /// Short-term policy КП.
    #[schemars(regex(pattern = POINTER_PATTERN))]
    pub kp: String,
}

impl BreakdownPointers {
    /// Each coefficient's name with its pointer, in formula order.
    pub fn named(&self) -> [(&'static str, &str); 9] {
        [
            ("tb", &self.tb),
            ("kt", &self.kt),
            ("kbm", &self.kbm),
            ("kvs", &self.kvs),
            ("ko", &self.ko),
            ("km", &self.km),
            ("ks", &self.ks),
            ("kn", &self.kn),
            ("kp", &self.kp),
        ]
    }
}
