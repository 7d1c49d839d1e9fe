//! The `mapped` partner API style: an insurer whose API no built-in style speaks is described in
//! its `InsurerIntegration` — request templates over the quote request, JSON pointers into the
//! answers, a status map — and onboarded without code.
//!
//! Pure: [`Mapped`] renders calls and reads answers; the aggregator's `mapped` client sends
//! them through the same HTTP shell and protections as every other style.

mod answer;
mod spec;
mod template;

pub use answer::Reading;
pub use spec::{
    AnswerMapping, BreakdownPointers, CallTemplate, Mapping, Method, Outcome, POINTER_PATTERN, PremiumUnit,
};
pub use template::RenderedCall;

use chrono::{DateTime, Utc};
use domain::request::QuoteRequest;
use minijinja::context;
use minijinja::value::{Serde, Value as TemplateValue};
use template::Templates;

/// The mapping is unusable: which field, and why. Found when a manifest is checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MappingError {
    pub field: String,
    pub message: String,
}

/// A template failed for one request (a missing value, the fuel ran out, not JSON).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// An answer that does not give what the mapping says it should, or that carries an error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// The answer's `error` pointer found the insurer's message: a rejection.
    #[error("the insurer answered with an error")]
    Rejected(String),
    /// Not JSON, a pointer found nothing, a value of the wrong kind, an unknown status.
    #[error("{0}")]
    Protocol(String),
}

/// A compiled mapping: checked once, used for every call.
#[derive(Debug)]
pub struct Mapped {
    mapping: Mapping,
    templates: Templates,
}

impl Mapped {
    /// Checks the pointers and compiles the templates.
    pub fn new(mapping: &Mapping) -> Result<Self, MappingError> {
        let answer = &mapping.answer;
        let mut pointers: Vec<(String, &str)> = vec![
            ("reference".into(), &mapping.reference),
            ("answer.status".into(), &answer.status),
            ("answer.premium".into(), &answer.premium),
        ];
        let optional = [
            ("error", &mapping.error),
            ("answer.currency", &answer.currency),
            ("answer.offerReference", &answer.offer_reference),
            ("answer.validUntil", &answer.valid_until),
            ("answer.message", &answer.message),
        ];
        pointers.extend(optional.iter().filter_map(|(name, p)| p.as_deref().map(|p| (name.to_string(), p))));
        pointers.extend(answer.breakdown.named().map(|(name, p)| (format!("answer.breakdown.{name}"), p)));
        for (field, pointer) in pointers {
            if !is_pointer(pointer) {
                return Err(MappingError {
                    field: format!("api.mapping.{field}"),
                    message: format!("'{pointer}' is not a JSON pointer (RFC 6901: empty, or /-separated tokens)"),
                });
            }
        }
        if answer.status_map.is_empty() {
            return Err(MappingError {
                field: "api.mapping.answer.statusMap".into(),
                message: "lists no status".into(),
            });
        }
        if !answer.status_map.values().any(|o| *o == Outcome::Offer) {
            return Err(MappingError {
                field: "api.mapping.answer.statusMap".into(),
                message: "maps no status to offer".into(),
            });
        }
        Ok(Mapped { mapping: mapping.clone(), templates: Templates::compile(mapping)? })
    }

    /// The create call for `request`, which the insurer may know by `key`.
    pub fn create_call(&self, key: &str, request: &QuoteRequest) -> Result<RenderedCall, RenderError> {
        let context = context! { key => key, request => TemplateValue::from(Serde(request)) };
        self.templates.render("create", &self.mapping.create, context)
    }

    /// Whether the mapping declares its create idempotent (`create.idempotent`).
    pub fn create_is_idempotent(&self) -> bool {
        self.mapping.create.idempotent
    }

    /// The poll call for the calculation `reference`.
    pub fn poll_call(&self, reference: &str) -> Result<RenderedCall, RenderError> {
        self.templates.render("poll", &self.mapping.poll, context! { reference => reference })
    }

    /// Reads a create answer: the insurer's reference and the calculation's state.
    pub fn read_created(&self, body: &[u8], now: DateTime<Utc>) -> Result<(String, Reading), AnswerError> {
        let answer = self.parse(body)?;
        let reference = answer::reference_at(&answer, &self.mapping.reference)?;
        let reading = answer::read(&self.mapping.answer, &answer, &reference, true, now)?;
        Ok((reference, reading))
    }

    /// Reads a poll answer for the calculation `reference`.
    pub fn read_polled(&self, body: &[u8], reference: &str, now: DateTime<Utc>) -> Result<Reading, AnswerError> {
        let answer = self.parse(body)?;
        answer::read(&self.mapping.answer, &answer, reference, false, now)
    }

    /// The insurer's message in an error answer, when the mapping says where it is.
    pub fn error_message(&self, body: &[u8]) -> Option<String> {
        let answer = answer::parse(body).ok()?;
        answer::error_at(&answer, self.mapping.error.as_deref()?)
    }

    /// JSON, and not an error in disguise.
    fn parse(&self, body: &[u8]) -> Result<serde_json::Value, AnswerError> {
        let answer = answer::parse(body)?;
        if let Some(message) = self.mapping.error.as_deref().and_then(|p| answer::error_at(&answer, p)) {
            return Err(AnswerError::Rejected(message));
        }
        Ok(answer)
    }
}

fn is_pointer(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    text.starts_with('/') && {
        let mut chars = text.chars();
        let mut ok = true;
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                ok = false;
                break;
            }
        }
        ok
    }
}
