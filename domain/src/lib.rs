//! OSAGO domain: the quote request and its validation, the tariff engine, event envelopes.

mod errors;
pub mod events;
pub mod example;
pub mod intake;
pub mod money;
pub mod request;
pub mod tariff;
pub mod vehicle;

pub use errors::{FieldError, ValidationErrors};
