//! OSAGO tariff engine: premium = ТБ × КТ × КБМ × КВС × КО × КМ × КС × КН × КП.
//!
//! Pure: the only inputs are the arguments and the tables embedded from
//! `domain/data/tariff/`, whose version is chosen by the policy start date.

mod age;
mod coefficients;
mod error;
mod kbm;
mod tables;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::vehicle::{Purpose, VehicleCategory};
use coefficients::{Corridor, is_region_code};
use tables::{Figure, TABLES};

pub use age::full_years_between;
pub use error::TariffError;
pub use kbm::{KbmClass, ParseKbmClassError};

/// Everything about a policy that the premium depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffInput {
    /// First day of cover; selects the table versions in force.
    pub policy_start: NaiveDate,
    /// Registration-certificate category; only B is priced.
    pub category: VehicleCategory,
    /// Taxis use their own base-rate corridor; every other purpose uses the individuals' one.
    pub purpose: Purpose,
    /// Engine power in horsepower (КМ).
    pub power_hp: u16,
    /// Region code of the owner's registration, e.g. "77"; plate-series codes such as "799" are accepted.
    pub region: String,
    /// City of the owner's registration, for regions whose cities have their own КТ (e.g. "Казань" in "16").
    pub city: Option<String>,
    /// Who may drive (КО, and КБМ/КВС for listed drivers).
    pub drivers: Drivers,
    /// Months of use per year, 3 to 12 (КС).
    pub period_months: u8,
    /// Whether the insurer recorded gross violations of the insurance terms (КН).
    pub gross_violations: bool,
}

/// Who may drive the vehicle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drivers {
    /// Anyone may drive.
    ///
    /// The rules then take the owner's КБМ class, which the request does not carry, so
    /// the tables supply a stand-in КБМ (1.00) that quotes flag as unverified.
    Unlimited,
    /// Only the listed drivers may drive.
    Listed(Vec<DriverFactors>),
}

/// The facts about one listed driver that the tariff uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverFactors {
    /// Full years of age at the policy start (see [`full_years_between`]).
    pub age_years: u32,
    /// Full years since the first licence at the policy start (see [`full_years_between`]).
    pub experience_years: u32,
    /// Bonus-malus class from АИС РСА; [`KbmClass::NEW_DRIVER`] when there is no history.
    pub kbm_class: KbmClass,
}

/// How the insurer sets its base rate ТБ within the corridor in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseRate {
    /// Fraction of the way from the lower (0) to the upper (1) bound; survives corridor changes.
    Position(Decimal),
    /// Roubles; must lie within the corridor, and is rounded to kopecks.
    Fixed(Decimal),
}

/// The coefficients a premium was computed from; the field names are the wire keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Base rate, roubles with kopecks.
    pub tb: Decimal,
    /// Territory.
    pub kt: Decimal,
    /// Bonus-malus (the worst over listed drivers).
    pub kbm: Decimal,
    /// Age and experience (the worst over listed drivers).
    pub kvs: Decimal,
    /// Listed or unlimited drivers.
    pub ko: Decimal,
    /// Engine power.
    pub km: Decimal,
    /// Period of use.
    pub ks: Decimal,
    /// Gross violations.
    pub kn: Decimal,
    /// Short-term policy.
    pub kp: Decimal,
}

impl Breakdown {
    /// The unrounded premium: the product of all factors.
    pub fn product(&self) -> Decimal {
        [self.kt, self.kbm, self.kvs, self.ko, self.km, self.ks, self.kn, self.kp]
            .into_iter()
            .fold(self.tb, |acc, factor| acc * factor)
    }
}

/// One factor of the formula, named as in [`Breakdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// Base rate.
    Tb,
    /// Territory.
    Kt,
    /// Bonus-malus.
    Kbm,
    /// Age and experience.
    Kvs,
    /// Listed or unlimited drivers.
    Ko,
    /// Engine power.
    Km,
    /// Period of use.
    Ks,
    /// Gross violations.
    Kn,
    /// Short-term policy.
    Kp,
}

/// A computed premium and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The coefficients used.
    pub breakdown: Breakdown,
    /// The premium, rounded to kopecks once, after multiplying.
    pub premium: Money,
    /// Factors taken from values our reference does not confirm, so that callers can
    /// present the premium as an estimate; empty when every value is confirmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<Factor>,
}

/// КВС for a driver on `date`; `None` for an impossible age/experience cell, an age
/// below the youngest band, or a date before the first КВС table.
pub fn kvs(age: u32, experience: u32, date: NaiveDate) -> Option<Decimal> {
    let table = TABLES.kvs.in_force(date).ok()?;
    table.lookup(age, experience).map(|figure| figure.value)
}

/// Prices a policy with the insurer's base rate.
pub fn calculate(input: &TariffInput, base_rate: BaseRate) -> Result<Quote, TariffError> {
    if input.category != VehicleCategory::B {
        return Err(TariffError::UnsupportedCategory(input.category));
    }
    if input.power_hp == 0 {
        return Err(TariffError::InvalidPower);
    }
    let date = input.policy_start;
    let mut unverified = Vec::new();
    let mut take = |factor: Factor, figure: Figure| {
        if !figure.verified && !unverified.contains(&factor) {
            unverified.push(factor);
        }
        figure.value
    };

    let rates = TABLES.base_rate.in_force(date)?;
    let corridor = match input.purpose {
        Purpose::Taxi => rates.taxi,
        Purpose::Personal | Purpose::Training | Purpose::Other => rates.individual,
    };
    let tb = take(Factor::Tb, base_rate_within(corridor, base_rate)?);

    let region = input.region.trim();
    if !is_region_code(region) {
        return Err(TariffError::InvalidRegion(input.region.clone()));
    }
    let region = TABLES.region_codes.main_code(region);
    let kt = take(Factor::Kt, TABLES.kt.in_force(date)?.lookup(region, input.city.as_deref()));

    let (kbm, kvs, ko) = match &input.drivers {
        Drivers::Unlimited => (
            TABLES.kbm.in_force(date)?.unlimited_drivers(),
            TABLES.kvs.in_force(date)?.unlimited_drivers(),
            TABLES.ko.in_force(date)?.unlimited,
        ),
        Drivers::Listed(drivers) => {
            let (kbm, kvs) = worst_driver(drivers, date)?;
            (kbm, kvs, TABLES.ko.in_force(date)?.listed)
        }
    };
    let (kbm, kvs, ko) = (take(Factor::Kbm, kbm), take(Factor::Kvs, kvs), take(Factor::Ko, ko));

    let km = take(Factor::Km, TABLES.km.in_force(date)?.lookup(input.power_hp));
    let ks =
        TABLES.ks.in_force(date)?.lookup(input.period_months).ok_or(TariffError::InvalidPeriod(input.period_months))?;
    let ks = take(Factor::Ks, ks);
    let kn = TABLES.kn.in_force(date)?;
    let kn = take(Factor::Kn, if input.gross_violations { kn.gross_violations } else { kn.none });
    let kp = take(Factor::Kp, TABLES.kp.in_force(date)?.annual);

    let breakdown = Breakdown { tb, kt, kbm, kvs, ko, km, ks, kn, kp };
    Ok(Quote { premium: Money::rub(breakdown.product()), breakdown, unverified })
}

/// ТБ in roubles with kopecks, checked against the corridor.
fn base_rate_within(corridor: Corridor, base_rate: BaseRate) -> Result<Figure, TariffError> {
    let (lower, upper) = (corridor.lower.value, corridor.upper.value);
    let rate = match base_rate {
        BaseRate::Position(position) => {
            if !(Decimal::ZERO..=Decimal::ONE).contains(&position) {
                return Err(TariffError::BaseRatePositionOutOfRange(position));
            }
            lower + (upper - lower) * position
        }
        BaseRate::Fixed(rate) => rate,
    };
    let rate = Money::rub(rate).amount();
    if !(lower..=upper).contains(&rate) {
        return Err(TariffError::BaseRateOutsideCorridor { rate, lower, upper });
    }
    Ok(Figure { value: rate, verified: corridor.lower.verified && corridor.upper.verified })
}

/// The largest КБМ and the largest КВС among the drivers, which may come from
/// different drivers: the insurer carries the worst risk of each kind.
fn worst_driver(drivers: &[DriverFactors], date: NaiveDate) -> Result<(Figure, Figure), TariffError> {
    let kbm_table = TABLES.kbm.in_force(date)?;
    let kvs_table = TABLES.kvs.in_force(date)?;
    let mut worst: Option<(Figure, Figure)> = None;
    for (index, driver) in drivers.iter().enumerate() {
        let kbm = kbm_table.lookup(driver.kbm_class);
        let kvs = kvs_table.lookup(driver.age_years, driver.experience_years).ok_or(TariffError::ImpossibleDriver {
            index,
            age: driver.age_years,
            experience: driver.experience_years,
        })?;
        worst = Some(match worst {
            None => (kbm, kvs),
            Some((max_kbm, max_kvs)) => (larger(max_kbm, kbm), larger(max_kvs, kvs)),
        });
    }
    worst.ok_or(TariffError::NoDrivers)
}

fn larger(a: Figure, b: Figure) -> Figure {
    if b.value > a.value { b } else { a }
}
