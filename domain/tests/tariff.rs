//! Table-driven tests of the tariff engine against hand-computed values.
//!
//! Every expectation is an exact decimal string, so a changed table value, band edge
//! or rounding rule fails a test.

use std::str::FromStr;

use chrono::NaiveDate;
use domain::tariff::{
    BaseRate, Breakdown, DriverFactors, Drivers, Factor, KbmClass, Quote, TariffError, TariffInput, calculate,
    full_years_between, kvs,
};
use domain::vehicle::{Purpose, VehicleCategory};
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).unwrap()
}

/// Under the current act, in force from 09.12.2025.
const CURRENT: &str = "2026-01-15";
/// Under the previous corridor (13.09.2022 – 08.12.2025).
const PREVIOUS: &str = "2024-06-01";

fn driver(age_years: u32, experience_years: u32, kbm_class: KbmClass) -> DriverFactors {
    DriverFactors { age_years, experience_years, kbm_class }
}

/// Moscow, 106 hp, one driver aged 41 with 20 years of experience, class 3, a year.
fn moscow(policy_start: &str) -> TariffInput {
    TariffInput {
        policy_start: date(policy_start),
        category: VehicleCategory::B,
        purpose: Purpose::Personal,
        power_hp: 106,
        region: "77".into(),
        city: None,
        drivers: Drivers::Listed(vec![driver(41, 20, KbmClass::NEW_DRIVER)]),
        period_months: 12,
        gross_violations: false,
    }
}

fn quote(input: &TariffInput) -> Quote {
    calculate(input, BaseRate::Position(Decimal::ONE)).unwrap()
}

fn top() -> BaseRate {
    BaseRate::Position(Decimal::ONE)
}

// ---------------------------------------------------------------- КВС

#[test]
fn kvs_every_row_and_impossible_cells() {
    // (age, experience, КВС or None for "–")
    let cases: &[(u32, u32, Option<&str>)] = &[
        // Below the youngest band.
        (15, 0, None),
        // 16–21
        (16, 0, Some("2.27")),
        (18, 1, Some("1.92")),
        (19, 2, Some("1.84")),
        (20, 3, Some("1.65")),
        (21, 4, Some("1.65")),
        (21, 5, Some("1.62")),
        (21, 6, Some("1.62")),
        (21, 7, None),
        (21, 10, None),
        (21, 15, None),
        // 22–24
        (22, 0, Some("1.88")),
        (22, 1, Some("1.72")),
        (23, 2, Some("1.71")),
        (24, 3, Some("1.13")),
        (24, 5, Some("1.10")),
        (24, 7, Some("1.09")),
        (24, 9, Some("1.09")),
        (24, 10, None),
        (24, 15, None),
        // 25–29
        (25, 0, Some("1.72")),
        (26, 1, Some("1.60")),
        (27, 2, Some("1.54")),
        (28, 4, Some("1.09")),
        (29, 6, Some("1.08")),
        (29, 8, Some("1.07")),
        (29, 14, Some("1.02")),
        (29, 15, None),
        // 30–34
        (30, 0, Some("1.56")),
        (31, 1, Some("1.50")),
        (32, 2, Some("1.48")),
        (33, 3, Some("1.05")),
        (34, 5, Some("1.04")),
        (34, 7, Some("1.01")),
        (34, 10, Some("0.97")),
        (34, 15, Some("0.95")),
        // 35–39
        (35, 0, Some("1.54")),
        (36, 1, Some("1.47")),
        (37, 2, Some("1.46")),
        (38, 3, Some("1.00")),
        (39, 6, Some("0.97")),
        (39, 9, Some("0.95")),
        (39, 12, Some("0.94")),
        (39, 20, Some("0.93")),
        // 40–49
        (40, 0, Some("1.50")),
        (41, 1, Some("1.44")),
        (45, 2, Some("1.43")),
        (49, 4, Some("0.96")),
        (49, 5, Some("0.95")),
        (49, 7, Some("0.94")),
        (49, 14, Some("0.93")),
        (41, 20, Some("0.91")),
        // 50–59
        (50, 0, Some("1.46")),
        (51, 1, Some("1.40")),
        (55, 2, Some("1.39")),
        (59, 3, Some("0.93")),
        (59, 5, Some("0.92")),
        (59, 9, Some("0.91")),
        (59, 10, Some("0.90")),
        (59, 30, Some("0.86")),
        // 60+
        (60, 0, Some("1.43")),
        (65, 1, Some("1.36")),
        (70, 2, Some("1.35")),
        (75, 4, Some("0.91")),
        (80, 6, Some("0.90")),
        (85, 7, Some("0.89")),
        (90, 14, Some("0.88")),
        (99, 60, Some("0.83")),
    ];
    for &(age, experience, expected) in cases {
        assert_eq!(kvs(age, experience, date(CURRENT)), expected.map(dec), "age {age}, experience {experience}");
    }
}

#[test]
fn kvs_has_no_table_before_2022() {
    assert_eq!(kvs(41, 20, date("2022-01-08")), None);
    assert_eq!(kvs(41, 20, date("2022-01-09")), Some(dec("0.91")));
}

// ---------------------------------------------------------------- КМ

#[test]
fn km_every_band_edge() {
    let cases: &[(u16, &str)] = &[
        (1, "0.60"),
        (50, "0.60"),
        (51, "1.00"),
        (70, "1.00"),
        (71, "1.10"),
        (100, "1.10"),
        (101, "1.20"),
        (120, "1.20"),
        (121, "1.40"),
        (150, "1.40"),
        (151, "1.60"),
        (u16::MAX, "1.60"),
    ];
    for &(power_hp, expected) in cases {
        let input = TariffInput { power_hp, ..moscow(CURRENT) };
        assert_eq!(quote(&input).breakdown.km, dec(expected), "{power_hp} hp");
    }
}

// ---------------------------------------------------------------- КС

#[test]
fn ks_every_period() {
    let cases: &[(u8, &str)] = &[
        (3, "0.50"),
        (4, "0.60"),
        (5, "0.65"),
        (6, "0.70"),
        (7, "0.80"),
        (8, "0.90"),
        (9, "0.95"),
        (10, "1.00"),
        (11, "1.00"),
        (12, "1.00"),
    ];
    for &(period_months, expected) in cases {
        let input = TariffInput { period_months, ..moscow(CURRENT) };
        assert_eq!(quote(&input).breakdown.ks, dec(expected), "{period_months} months");
    }
}

// ---------------------------------------------------------------- КБМ

#[test]
fn kbm_every_class() {
    let cases: &[(&str, &str)] = &[
        ("M", "3.92"),
        ("0", "2.94"),
        ("1", "2.25"),
        ("2", "1.76"),
        ("3", "1.17"),
        ("4", "1.00"),
        ("5", "0.91"),
        ("6", "0.83"),
        ("7", "0.78"),
        ("8", "0.74"),
        ("9", "0.68"),
        ("10", "0.63"),
        ("11", "0.57"),
        ("12", "0.52"),
        ("13", "0.46"),
    ];
    for &(class, expected) in cases {
        let input =
            TariffInput { drivers: Drivers::Listed(vec![driver(41, 20, class.parse().unwrap())]), ..moscow(CURRENT) };
        let q = quote(&input);
        assert_eq!(q.breakdown.kbm, dec(expected), "class {class}");
        assert!(q.unverified.is_empty(), "class {class}");
    }
    assert_eq!(KbmClass::NEW_DRIVER.to_string(), "3");
}

// ---------------------------------------------------------------- drivers

/// Age, experience, КБМ class.
type Driver = (u32, u32, &'static str);

#[test]
fn listed_drivers_take_the_worst_kbm_and_the_worst_kvs_separately() {
    // (drivers as (age, experience, class), КБМ, КВС)
    let cases: &[(&[Driver], &str, &str)] = &[
        // Experienced driver with a bad history + novice with a perfect one:
        // КБМ from the first (3.92), КВС from the second (1.88).
        (&[(45, 25, "M"), (22, 0, "13")], "3.92", "1.88"),
        // Same drivers listed the other way round.
        (&[(22, 0, "13"), (45, 25, "M")], "3.92", "1.88"),
        // Three drivers, the worst of each from the second and the third.
        (&[(41, 20, "5"), (30, 3, "2"), (24, 1, "9")], "1.76", "1.72"),
        // One driver is simply that driver.
        (&[(60, 40, "13")], "0.46", "0.83"),
    ];
    for &(drivers, kbm, kvs) in cases {
        let input = TariffInput {
            drivers: Drivers::Listed(drivers.iter().map(|&(a, e, c)| driver(a, e, c.parse().unwrap())).collect()),
            ..moscow(CURRENT)
        };
        let b = quote(&input).breakdown;
        assert_eq!((b.kbm, b.kvs, b.ko), (dec(kbm), dec(kvs), dec("1.00")), "{drivers:?}");
    }
}

#[test]
fn unlimited_drivers() {
    let input = TariffInput { drivers: Drivers::Unlimited, ..moscow(CURRENT) };
    let q = quote(&input);
    assert_eq!(q.breakdown.ko, dec("2.32"));
    assert_eq!(q.breakdown.kvs, dec("1.00"));
    // Stand-in for the owner's class, hence flagged.
    assert_eq!(q.breakdown.kbm, dec("1.00"));
    assert_eq!(q.unverified, [Factor::Kbm]);
    // 8665.00 × 1.80 × 1.00 × 1.00 × 2.32 × 1.20 = 15597.00 × 2.32 × 1.20
    //   = 36185.04 × 1.20 = 43422.048 → 43422.05
    assert_eq!(q.premium.amount(), dec("43422.05"));
}

// ---------------------------------------------------------------- full premiums

#[test]
fn full_premiums_computed_by_hand() {
    // Moscow (КТ 1.80), 106 hp (КМ 1.20), driver 41 y / 20 y (КВС 0.91), class 3
    // (КБМ 1.17), a year (КС 1.00), listed (КО 1.00), top of the corridor:
    //
    // from 09.12.2025, ТБ 8665.00:
    //   8665.00 × 1.80 = 15597.00; × 1.17 = 18248.49; × 0.91 = 16606.1259;
    //   × 1.20 = 19927.35108 → 19927.35
    let q = quote(&moscow("2025-12-09"));
    assert_eq!(
        q.breakdown,
        Breakdown {
            tb: dec("8665.00"),
            kt: dec("1.80"),
            kbm: dec("1.17"),
            kvs: dec("0.91"),
            ko: dec("1.00"),
            km: dec("1.20"),
            ks: dec("1.00"),
            kn: dec("1.00"),
            kp: dec("1.00"),
        }
    );
    assert_eq!(q.premium.amount(), dec("19927.35"));
    assert_eq!(q.premium.amount().to_string(), "19927.35");
    assert!(q.unverified.is_empty());

    // The day before, ТБ 7535.00:
    //   7535.00 × 1.80 = 13563.00; × 1.17 = 15868.71; × 0.91 = 14440.5261;
    //   × 1.20 = 17328.63132 → 17328.63
    let q = quote(&moscow("2025-12-08"));
    assert_eq!(q.breakdown.tb, dec("7535.00"));
    assert_eq!(q.premium.amount(), dec("17328.63"));

    // Taxi in St Petersburg (КТ 1.64), 90 hp (КМ 1.10), drivers 45/25 class M and
    // 22/0 class 13, position 0.8 of the taxi corridor 1267–18119:
    //   ТБ = 1267 + 16852 × 0.8 = 14748.60
    //   14748.60 × 1.64 = 24187.704; × 3.92 = 94815.79968; × 1.88 = 178253.7033984;
    //   × 1.10 = 196079.07373824 → 196079.07
    let input = TariffInput {
        purpose: Purpose::Taxi,
        region: "78".into(),
        power_hp: 90,
        drivers: Drivers::Listed(vec![driver(45, 25, KbmClass::M), driver(22, 0, KbmClass::C13)]),
        ..moscow(CURRENT)
    };
    let q = calculate(&input, BaseRate::Position(dec("0.8"))).unwrap();
    assert_eq!(q.breakdown.tb, dec("14748.60"));
    assert_eq!(q.premium.amount(), dec("196079.07"));

    // Novosibirsk (КТ 3.12 now), 150 hp (КМ 1.40), unlimited (КО 2.32), 6 months
    // (КС 0.70), gross violations (КН 1.50), middle of the corridor (ТБ 5032.00):
    //   5032.00 × 3.12 = 15699.84; × 2.32 = 36423.6288; × 1.40 = 50993.08032;
    //   × 0.70 = 35695.156224; × 1.50 = 53542.734336 → 53542.73
    let input = TariffInput {
        region: "54".into(),
        city: Some("Новосибирск".into()),
        power_hp: 150,
        drivers: Drivers::Unlimited,
        period_months: 6,
        gross_violations: true,
        ..moscow(CURRENT)
    };
    let q = calculate(&input, BaseRate::Position(dec("0.5"))).unwrap();
    assert_eq!(q.breakdown.tb, dec("5032.00"));
    assert_eq!(q.breakdown.kn, dec("1.50"));
    assert_eq!(q.premium.amount(), dec("53542.73"));
    assert_eq!(q.unverified, [Factor::Kbm, Factor::Kn]);
}

// ---------------------------------------------------------------- ТБ corridor

#[test]
fn corridor_switches_on_9_december_2025() {
    // (start, purpose, position, ТБ)
    let cases: &[(&str, Purpose, &str, &str)] = &[
        ("2022-09-13", Purpose::Personal, "0", "1646.00"),
        ("2025-12-08", Purpose::Personal, "0", "1646.00"),
        ("2025-12-08", Purpose::Personal, "1", "7535.00"),
        ("2025-12-08", Purpose::Personal, "0.5", "4590.50"),
        ("2025-12-09", Purpose::Personal, "0", "1399.00"),
        ("2025-12-09", Purpose::Personal, "1", "8665.00"),
        ("2025-12-09", Purpose::Personal, "0.5", "5032.00"),
        ("2025-12-08", Purpose::Taxi, "0", "1490.00"),
        ("2025-12-08", Purpose::Taxi, "1", "15756.00"),
        ("2025-12-09", Purpose::Taxi, "0", "1267.00"),
        ("2025-12-09", Purpose::Taxi, "1", "18119.00"),
        // Purposes other than taxi use the individuals' corridor.
        ("2025-12-09", Purpose::Training, "1", "8665.00"),
        ("2025-12-09", Purpose::Other, "1", "8665.00"),
        // ТБ is rounded to kopecks: 1399 + 7266 × 0.33333 = 3820.97578 → 3820.98,
        // 1646 + 5889 × 0.33333 = 3608.98037 → 3608.98.
        ("2025-12-09", Purpose::Personal, "0.33333", "3820.98"),
        ("2025-12-08", Purpose::Personal, "0.33333", "3608.98"),
    ];
    for &(start, purpose, position, tb) in cases {
        let input = TariffInput { purpose, ..moscow(start) };
        let q = calculate(&input, BaseRate::Position(dec(position))).unwrap();
        assert_eq!(q.breakdown.tb, dec(tb), "{start} {purpose:?} {position}");
        assert_eq!(q.breakdown.tb.to_string(), tb, "{start} {purpose:?} {position}");
    }
}

#[test]
fn fixed_base_rate_within_the_corridor() {
    let cases: &[(&str, &str, &str)] = &[
        (CURRENT, "1399", "1399.00"),
        (CURRENT, "8665", "8665.00"),
        (CURRENT, "5000.125", "5000.13"),
        (PREVIOUS, "7535.00", "7535.00"),
        (PREVIOUS, "1646", "1646.00"),
    ];
    for &(start, rate, tb) in cases {
        let q = calculate(&moscow(start), BaseRate::Fixed(dec(rate))).unwrap();
        assert_eq!(q.breakdown.tb.to_string(), tb, "{start} {rate}");
    }
}

// ---------------------------------------------------------------- КТ

#[test]
fn kt_by_territory() {
    // (start, region, city, КТ, flagged as unverified)
    let cases: &[(&str, &str, Option<&str>, &str, bool)] = &[
        (CURRENT, "77", None, "1.80", false),
        (CURRENT, "77", Some("Москва"), "1.80", false),
        (CURRENT, "799", None, "1.80", false),
        (CURRENT, "197", None, "1.80", false),
        (CURRENT, " 77 ", None, "1.80", false),
        (CURRENT, "50", Some("Балашиха"), "1.56", false),
        (CURRENT, "750", None, "1.56", false),
        (CURRENT, "78", None, "1.64", false),
        (CURRENT, "178", None, "1.64", false),
        (CURRENT, "47", None, "1.24", false),
        (CURRENT, "16", Some("Казань"), "1.80", false),
        (CURRENT, "116", Some("г. казань"), "1.80", false),
        (CURRENT, "66", Some("Екатеринбург"), "1.64", false),
        (PREVIOUS, "77", None, "1.80", false),
        (PREVIOUS, "47", None, "1.24", false),
        // Territories missing from the table fall back to the unverified default.
        (CURRENT, "16", None, "1.00", true),
        (CURRENT, "16", Some("Набережные Челны"), "1.00", true),
        (CURRENT, "54", None, "1.00", true),
        (CURRENT, "01", None, "1.00", true),
        (CURRENT, "999", None, "1.00", true),
    ];
    for &(start, region, city, kt, flagged) in cases {
        let input = TariffInput { region: region.into(), city: city.map(Into::into), ..moscow(start) };
        let q = quote(&input);
        assert_eq!(q.breakdown.kt, dec(kt), "{region} {city:?}");
        assert_eq!(q.unverified.contains(&Factor::Kt), flagged, "{region} {city:?}");
    }
}

#[test]
fn kt_novosibirsk_doubles_on_9_december_2025() {
    // Same fixed ТБ in both corridors so that only КТ changes. Unlimited, 150 hp,
    // 6 months, gross violations:
    //   before: 5000 × 1.56 = 7800.00; × 2.32 = 18096.00; × 1.40 = 25334.40;
    //           × 0.70 = 17734.08; × 1.50 = 26601.12
    //   after:  5000 × 3.12 = 15600.00; × 2.32 = 36192.00; × 1.40 = 50668.80;
    //           × 0.70 = 35468.16; × 1.50 = 53202.24
    for (start, kt, premium) in [("2025-12-08", "1.56", "26601.12"), ("2025-12-09", "3.12", "53202.24")] {
        let input = TariffInput {
            region: "54".into(),
            city: Some("Новосибирск".into()),
            power_hp: 150,
            drivers: Drivers::Unlimited,
            period_months: 6,
            gross_violations: true,
            ..moscow(start)
        };
        let q = calculate(&input, BaseRate::Fixed(dec("5000"))).unwrap();
        assert_eq!(q.breakdown.kt, dec(kt), "{start}");
        assert_eq!(q.premium.amount(), dec(premium), "{start}");
    }
}

// ---------------------------------------------------------------- rounding

#[test]
fn premium_is_rounded_to_kopecks_once_half_away_from_zero() {
    // Unlisted territory (КТ 1.00), 60 hp (КМ 1.00), driver 35/3 (КВС 1.00),
    // class 4 (КБМ 1.00), 3 months (КС 0.50):
    let base = TariffInput {
        region: "01".into(),
        power_hp: 60,
        drivers: Drivers::Listed(vec![driver(35, 3, KbmClass::C4)]),
        period_months: 3,
        ..moscow(CURRENT)
    };
    // (fixed ТБ, premium)
    let cases: &[(&str, &str)] = &[
        // 2000.01 × 0.50 = 1000.005: half a kopeck goes up (banker's would give 1000.00).
        ("2000.01", "1000.01"),
        // 2000.03 × 0.50 = 1000.015 → 1000.02 (banker's would agree).
        ("2000.03", "1000.02"),
        // 2000.02 × 0.50 = 1000.01 exactly.
        ("2000.02", "1000.01"),
        // 2000.00 × 0.50 = 1000.00, still printed with two places.
        ("2000", "1000.00"),
    ];
    for &(tb, premium) in cases {
        let q = calculate(&base, BaseRate::Fixed(dec(tb))).unwrap();
        assert_eq!(q.premium.amount().to_string(), premium, "ТБ {tb}");
    }
    // Rounding once at the end, not per factor: 16606.1259 × 1.20 = 19927.35108 would
    // be 16606.13 × 1.20 = 19927.356 → 19927.36 if each step were rounded.
    assert_eq!(quote(&moscow(CURRENT)).premium.amount(), dec("19927.35"));
}

// ---------------------------------------------------------------- errors

#[test]
fn errors() {
    let rate = |r: &str| BaseRate::Fixed(dec(r));
    let position = |p: &str| BaseRate::Position(dec(p));
    let with = |f: &dyn Fn(&mut TariffInput)| {
        let mut input = moscow(CURRENT);
        f(&mut input);
        input
    };
    let cases: Vec<(TariffInput, BaseRate, TariffError)> = vec![
        (with(&|i| i.category = VehicleCategory::A), top(), TariffError::UnsupportedCategory(VehicleCategory::A)),
        (with(&|i| i.category = VehicleCategory::C), top(), TariffError::UnsupportedCategory(VehicleCategory::C)),
        (
            moscow("2022-09-12"),
            top(),
            TariffError::NoTableInForce { table: "base_rate", date: date("2022-09-12"), earliest: date("2022-09-13") },
        ),
        (
            moscow(CURRENT),
            rate("1398.99"),
            TariffError::BaseRateOutsideCorridor { rate: dec("1398.99"), lower: dec("1399"), upper: dec("8665") },
        ),
        (
            moscow(CURRENT),
            rate("8665.01"),
            TariffError::BaseRateOutsideCorridor { rate: dec("8665.01"), lower: dec("1399"), upper: dec("8665") },
        ),
        // Allowed from 09.12.2025 but not the day before.
        (
            moscow("2025-12-08"),
            rate("8000"),
            TariffError::BaseRateOutsideCorridor { rate: dec("8000.00"), lower: dec("1646"), upper: dec("7535") },
        ),
        // A taxi rate is not an individual's rate.
        (
            moscow(CURRENT),
            rate("18119"),
            TariffError::BaseRateOutsideCorridor { rate: dec("18119.00"), lower: dec("1399"), upper: dec("8665") },
        ),
        (moscow(CURRENT), position("-0.01"), TariffError::BaseRatePositionOutOfRange(dec("-0.01"))),
        (moscow(CURRENT), position("1.01"), TariffError::BaseRatePositionOutOfRange(dec("1.01"))),
        (with(&|i| i.power_hp = 0), top(), TariffError::InvalidPower),
        (with(&|i| i.period_months = 2), top(), TariffError::InvalidPeriod(2)),
        (with(&|i| i.period_months = 13), top(), TariffError::InvalidPeriod(13)),
        (with(&|i| i.region = String::new()), top(), TariffError::InvalidRegion(String::new())),
        (with(&|i| i.region = "7".into()), top(), TariffError::InvalidRegion("7".into())),
        (with(&|i| i.region = "Москва".into()), top(), TariffError::InvalidRegion("Москва".into())),
        (with(&|i| i.drivers = Drivers::Listed(vec![])), top(), TariffError::NoDrivers),
        (
            with(&|i| i.drivers = Drivers::Listed(vec![driver(15, 0, KbmClass::C3)])),
            top(),
            TariffError::ImpossibleDriver { index: 0, age: 15, experience: 0 },
        ),
        (
            with(&|i| i.drivers = Drivers::Listed(vec![driver(41, 20, KbmClass::C3), driver(21, 7, KbmClass::C3)])),
            top(),
            TariffError::ImpossibleDriver { index: 1, age: 21, experience: 7 },
        ),
    ];
    for (input, base_rate, expected) in cases {
        assert_eq!(calculate(&input, base_rate), Err(expected.clone()), "{expected}");
    }
}

#[test]
fn error_messages_are_for_people() {
    let cases: &[(TariffError, &str)] = &[
        (
            TariffError::UnsupportedCategory(VehicleCategory::C),
            "vehicle category C is not priced: only category B has tariff tables",
        ),
        (
            TariffError::BaseRateOutsideCorridor { rate: dec("8665.01"), lower: dec("1399"), upper: dec("8665") },
            "base rate 8665.01 ₽ is outside the corridor 1399–8665 ₽",
        ),
        (
            TariffError::NoTableInForce { table: "base_rate", date: date("2022-09-12"), earliest: date("2022-09-13") },
            "no base_rate table is in force on 2022-09-12: the earliest version applies from 2022-09-13",
        ),
        (
            TariffError::ImpossibleDriver { index: 1, age: 21, experience: 7 },
            "driver #2: age 21 with 7 years of experience is not a possible combination",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), *message);
    }
}

// ---------------------------------------------------------------- wire format

#[test]
fn quote_serialises_with_decimal_strings() {
    let json = serde_json::to_value(quote(&moscow(CURRENT))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "breakdown": {
                "tb": "8665.00", "kt": "1.80", "kbm": "1.17", "kvs": "0.91", "ko": "1.00",
                "km": "1.20", "ks": "1.00", "kn": "1.00", "kp": "1.00"
            },
            "premium": { "amount": "19927.35", "currency": "RUB" }
        })
    );
    let back: Quote = serde_json::from_value(json).unwrap();
    assert_eq!(back, quote(&moscow(CURRENT)));

    let unlimited = TariffInput { drivers: Drivers::Unlimited, ..moscow(CURRENT) };
    let json = serde_json::to_value(quote(&unlimited)).unwrap();
    assert_eq!(json["unverified"], serde_json::json!(["kbm"]));
}

#[test]
fn input_round_trips_through_json() {
    let input = moscow(CURRENT);
    let json = serde_json::to_value(&input).unwrap();
    assert_eq!(
        json["drivers"],
        serde_json::json!({"listed": [{"age_years": 41, "experience_years": 20, "kbm_class": "3"}]})
    );
    let back: TariffInput = serde_json::from_value(json).unwrap();
    assert_eq!(back, input);
    assert_eq!(serde_json::to_value(BaseRate::Position(dec("0.5"))).unwrap(), serde_json::json!({"position": "0.5"}));
}

// ---------------------------------------------------------------- full years

#[test]
fn ages_and_experience_from_dates_feed_kvs() {
    // Born 29.02.1984, licensed 29.02.2004, policy from 28.02.2025: 41 and 21 full
    // years (29 February completes a year on 28 February in common years).
    let start = date("2025-02-28");
    let age = full_years_between(date("1984-02-29"), start);
    let experience = full_years_between(date("2004-02-29"), start);
    assert_eq!((age, experience), (41, 21));
    assert_eq!(kvs(age, experience, start), Some(dec("0.91")));
    assert_eq!(full_years_between(date("1984-02-29"), date("2025-02-27")), 40);
}
