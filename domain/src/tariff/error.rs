//! Why a tariff could not be computed.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::vehicle::VehicleCategory;

/// A reason the tariff cannot price the input; messages are meant for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// Only category B has tables.
    #[error("vehicle category {0:?} is not priced: only category B has tariff tables")]
    UnsupportedCategory(VehicleCategory),
    /// The policy starts before the first version of a table.
    #[error("no {table} table is in force on {date}: the earliest version applies from {earliest}")]
    NoTableInForce {
        /// Which table (the data file's name without extension).
        table: &'static str,
        /// The policy start date.
        date: NaiveDate,
        /// When the table's first version came into force.
        earliest: NaiveDate,
    },
    /// A fixed base rate lies outside the corridor in force.
    #[error("base rate {rate} ₽ is outside the corridor {lower}–{upper} ₽")]
    BaseRateOutsideCorridor {
        /// The requested base rate, rounded to kopecks.
        rate: Decimal,
        /// Corridor lower bound.
        lower: Decimal,
        /// Corridor upper bound.
        upper: Decimal,
    },
    /// A position in the corridor must be a fraction from 0 to 1.
    #[error("base rate position {0} is outside 0 to 1")]
    BaseRatePositionOutOfRange(Decimal),
    /// Zero horsepower cannot be a real engine.
    #[error("engine power must be above 0 hp")]
    InvalidPower,
    /// Only 3 to 12 months of use have a КС.
    #[error("period of use must be 3 to 12 months, not {0}")]
    InvalidPeriod(u8),
    /// The region is not a 2–3 digit code.
    #[error("region {0:?} is not a 2–3 digit region code")]
    InvalidRegion(String),
    /// A policy with listed drivers lists none.
    #[error("the policy lists no drivers")]
    NoDrivers,
    /// The age and experience of a driver fall in no КВС cell.
    #[error(
        "driver #{}: age {age} with {experience} years of experience is not a possible combination",
        index + 1
    )]
    ImpossibleDriver {
        /// Zero-based position in the list of drivers.
        index: usize,
        /// Full years of age at the policy start.
        age: u32,
        /// Full years of driving experience at the policy start.
        experience: u32,
    },
}
