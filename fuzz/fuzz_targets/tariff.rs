//! The tariff engine on arbitrary inputs: any date (before, between and after the table
//! versions), category, purpose, power, region and city text, drivers (ages and experience
//! up to `u32::MAX`), period and base rate (any `Decimal`, as a position or a fixed rate).
//!
//! Properties: `calculate` never panics; a computed premium is positive, has exactly two
//! decimal places and is the product of its breakdown rounded once.
#![no_main]

use chrono::NaiveDate;
use domain::money::Money;
use domain::tariff::{BaseRate, DriverFactors, Drivers, KbmClass, TariffInput, calculate};
use domain::vehicle::{Purpose, VehicleCategory};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

const CATEGORIES: [VehicleCategory; 10] = [
    VehicleCategory::A,
    VehicleCategory::M,
    VehicleCategory::B,
    VehicleCategory::BE,
    VehicleCategory::C,
    VehicleCategory::CE,
    VehicleCategory::D,
    VehicleCategory::DE,
    VehicleCategory::Tb,
    VehicleCategory::Tm,
];
const PURPOSES: [Purpose; 4] = [Purpose::Personal, Purpose::Taxi, Purpose::Training, Purpose::Other];

/// Mostly dates around the table versions (2021–2030), sometimes any date chrono has.
fn date(u: &mut Unstructured) -> Result<NaiveDate> {
    let around = NaiveDate::from_ymd_opt(2021, 1, 1).expect("a date");
    Ok(if u.ratio(7, 8)? {
        around + chrono::Days::new(u.int_in_range(0..=3650)?)
    } else {
        NaiveDate::from_num_days_from_ce_opt(u.arbitrary()?).unwrap_or(NaiveDate::MAX)
    })
}

/// Mostly real-looking region codes, sometimes any text.
fn region(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary()?,
        1 => format!("{:02}", u.int_in_range(0..=99)?),
        _ => format!("{}", u.int_in_range(1..=999)?),
    })
}

fn decimal(u: &mut Unstructured) -> Result<Decimal> {
    Ok(match u.int_in_range(0..=2)? {
        0 => {
            Decimal::from_parts(u.arbitrary()?, u.arbitrary()?, u.arbitrary()?, u.arbitrary()?, u.int_in_range(0..=28)?)
        }
        1 => Decimal::new(u.int_in_range(0..=1_000_000)?, u.int_in_range(0..=6)?),
        // Kopecks within the 2025 corridor for category B.
        _ => Decimal::new(u.int_in_range(139_900..=866_500)?, 2),
    })
}

fn input(u: &mut Unstructured) -> Result<(TariffInput, BaseRate)> {
    let drivers = if u.ratio(1, 4)? {
        Drivers::Unlimited
    } else {
        let count = u.int_in_range(0..=6)?;
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push(DriverFactors {
                age_years: if u.ratio(7, 8)? { u.int_in_range(0..=100)? } else { u.arbitrary()? },
                experience_years: if u.ratio(7, 8)? { u.int_in_range(0..=80)? } else { u.arbitrary()? },
                kbm_class: *u.choose(&KbmClass::ALL)?,
            });
        }
        Drivers::Listed(list)
    };
    let input = TariffInput {
        policy_start: date(u)?,
        category: if u.ratio(3, 4)? { VehicleCategory::B } else { *u.choose(&CATEGORIES)? },
        purpose: *u.choose(&PURPOSES)?,
        power_hp: u.arbitrary()?,
        region: region(u)?,
        city: u.arbitrary()?,
        drivers,
        period_months: if u.ratio(7, 8)? { u.int_in_range(3..=12)? } else { u.arbitrary()? },
        gross_violations: u.arbitrary()?,
    };
    let rate = if u.arbitrary()? { BaseRate::Position(decimal(u)?) } else { BaseRate::Fixed(decimal(u)?) };
    Ok((input, rate))
}

fuzz_target!(|data: &[u8]| {
    let Ok((input, rate)) = input(&mut Unstructured::new(data)) else { return };
    if let Ok(quote) = calculate(&input, rate) {
        let premium = quote.premium.amount();
        assert!(premium > Decimal::ZERO, "a non-positive premium {premium} for {input:?}");
        assert_eq!(premium.scale(), Money::SCALE, "premium {premium} is not in kopecks");
        assert_eq!(Money::rub(quote.breakdown.product()).amount(), premium, "premium is not the rounded product");
    }
});
