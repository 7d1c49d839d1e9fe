//! The rules that turn a [`RawQuoteRequest`] into a [`QuoteRequest`], collecting every
//! problem with its field path.

use super::*;
use crate::ValidationErrors;
use crate::tariff::{full_years_between, kvs};
use chrono::{Datelike, Days, Months};

/// Oldest model year we insure; older cars are collectors' items with other products.
const MIN_YEAR: i64 = 1950;
/// Engine power bounds in hp: below is a typo, above is no road vehicle.
const POWER_HP: std::ops::RangeInclusive<i64> = 1..=2000;
/// Policy length in months allowed for residents.
const PERIOD_MONTHS: std::ops::RangeInclusive<i64> = 3..=12;
/// Listed drivers allowed on one policy.
const MAX_DRIVERS: usize = 5;
/// A driver must be an adult on the first day of cover.
const MIN_DRIVER_AGE: u32 = 18;
/// A licence cannot be earned before this age, so experience cannot start earlier.
const MIN_EXPERIENCE_AGE: u32 = 16;
/// The policy holder must be an adult to sign the contract.
const MIN_OWNER_AGE: u32 = 18;
/// A policy may be bought at most this many days before it starts.
const MAX_DAYS_AHEAD: u64 = 60;

/// Collects errors while reading fields; keeps the code below one line per rule.
struct Reader {
    errors: ValidationErrors,
}

impl Reader {
    fn required<'a, T>(&mut self, value: &'a Option<T>, path: &str) -> Option<&'a T> {
        if value.is_none() {
            self.errors.push(path, "is required");
        }
        value.as_ref()
    }

    fn text(&mut self, value: &Option<String>, path: &str, max: usize) -> Option<String> {
        let text = self.required(value, path)?.trim();
        if text.is_empty() {
            self.errors.push(path, "must not be empty");
            return None;
        }
        if text.chars().count() > max {
            self.errors.push(path, format!("must be at most {max} characters"));
            return None;
        }
        // Postgres refuses U+0000 in jsonb, and no name of a car or a city has a control character.
        if text.chars().any(char::is_control) {
            self.errors.push(path, "must not contain control characters");
            return None;
        }
        Some(text.to_string())
    }

    fn parsed<T>(&mut self, value: &Option<String>, path: &str, parse: fn(&str) -> Result<T, String>) -> Option<T> {
        self.optional(value, path, parse).unwrap_or_else(|| {
            if value.is_none() {
                self.errors.push(path, "is required");
            }
            None
        })
    }

    /// `None` when absent, `Some(None)` when present but invalid (already reported).
    fn optional<T>(
        &mut self,
        value: &Option<String>,
        path: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        let value = value.as_deref()?;
        Some(parse(value).map_err(|msg| self.errors.push(path, msg)).ok())
    }

    fn date(&mut self, value: &Option<String>, path: &str) -> Option<NaiveDate> {
        self.parsed(value, path, parse_date)
    }

    fn enumerated<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Option<String>,
        path: &str,
        allowed: &str,
    ) -> Option<T> {
        let value = self.required(value, path)?;
        serde_json::from_value(serde_json::Value::String(value.clone()))
            .map_err(|_| self.errors.push(path, format!("unknown value '{value}'; expected one of {allowed}")))
            .ok()
    }

    fn in_range(&mut self, value: &Option<i64>, path: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let value = *self.required(value, path)?;
        if !range.contains(&value) {
            self.errors.push(path, format!("must be between {} and {}, got {value}", range.start(), range.end()));
            return None;
        }
        Some(value)
    }
}

fn parse_date(input: &str) -> Result<NaiveDate, String> {
    // chrono's %Y also takes a sign and any number of digits ("-0001", "+10000"), and %m
    // and %d a single digit; the contract is exactly YYYY-MM-DD.
    let text = input.trim();
    let shape_ok = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    // The shape checked, the digits are read directly: `parse_from_str` read its format
    // string anew at each call (7 % of a request's parse).
    let number = |at: std::ops::Range<usize>| text[at].parse::<u32>().ok();
    shape_ok
        .then(|| NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?))
        .flatten()
        .ok_or_else(|| format!("'{input}' is not a date in the form YYYY-MM-DD"))
}

/// Parses everything that does not depend on today's date.
pub(super) fn parse(raw: &RawQuoteRequest) -> Result<QuoteRequest, ValidationErrors> {
    let mut r = Reader { errors: ValidationErrors::default() };
    let start = raw.policy.as_ref().and_then(|p| p.start_date.as_deref()).and_then(|d| parse_date(d).ok());

    let (start_date, period) = match &raw.policy {
        Some(p) => (
            r.date(&p.start_date, "policy.start_date"),
            r.in_range(&p.period_months, "policy.period_months", PERIOD_MONTHS),
        ),
        None => {
            r.errors.push("policy", "is required");
            (None, None)
        }
    };

    let vehicle = parse_vehicle(&mut r, raw.vehicle.as_ref(), start);
    let owner = parse_owner(&mut r, raw.owner.as_ref(), start);

    let unlimited = raw.unlimited_drivers.unwrap_or(false);
    let raw_drivers = raw.drivers.as_deref().unwrap_or_default();
    if !unlimited && raw_drivers.is_empty() {
        r.errors.push("drivers", "list at least one driver, or set unlimited_drivers to true");
    }
    if raw_drivers.len() > MAX_DRIVERS {
        r.errors
            .push("drivers", format!("at most {MAX_DRIVERS} drivers can be listed; choose unlimited_drivers for more"));
    }
    let drivers: Vec<Option<Driver>> =
        raw_drivers.iter().enumerate().map(|(i, d)| parse_driver(&mut r, d, &format!("drivers[{i}]"), start)).collect();
    check_unique_licences(&mut r, &drivers);

    let Reader { errors } = r;
    if !errors.is_empty() {
        return Err(errors);
    }
    // Every `None` above recorded an error, so all values are present here.
    let (Some(start_date), Some(period), Some(vehicle), Some(owner)) = (start_date, period, vehicle, owner) else {
        unreachable!("a missing value without a recorded error")
    };
    Ok(QuoteRequest {
        vehicle,
        owner,
        drivers: drivers.into_iter().flatten().collect(),
        unlimited_drivers: unlimited,
        policy: Policy { start_date, period_months: period as u8 },
    })
}

fn parse_vehicle(r: &mut Reader, raw: Option<&RawVehicle>, start: Option<NaiveDate>) -> Option<Vehicle> {
    let Some(v) = raw else {
        r.errors.push("vehicle", "is required");
        return None;
    };
    let max_year = start.map_or(9999, |s| i64::from(s.year()) + 1);
    let category = r.enumerated(&v.category, "vehicle.category", "A, M, B, BE, C, CE, D, DE, Tb, Tm");
    let make = r.text(&v.make, "vehicle.make", 64);
    let model = r.text(&v.model, "vehicle.model", 64);
    let year = r.in_range(&v.year, "vehicle.year", MIN_YEAR..=max_year);
    let power = r.in_range(&v.power_hp, "vehicle.power_hp", POWER_HP);
    let vin = r.parsed(&v.vin, "vehicle.vin", Vin::parse);
    let plate = r.optional(&v.plate, "vehicle.plate", Plate::parse);
    let purpose = r.enumerated(&v.purpose, "vehicle.purpose", "personal, taxi, training, other");
    Some(Vehicle {
        category: category?,
        make: make?,
        model: model?,
        year: year? as u16,
        power_hp: power? as u16,
        vin: vin?,
        plate: plate.flatten(),
        purpose: purpose?,
    })
}

fn parse_owner(r: &mut Reader, raw: Option<&RawOwner>, start: Option<NaiveDate>) -> Option<Owner> {
    let Some(o) = raw else {
        r.errors.push("owner", "is required");
        return None;
    };
    let last_name = r.parsed(&o.last_name, "owner.last_name", PersonName::parse);
    let first_name = r.parsed(&o.first_name, "owner.first_name", PersonName::parse);
    let middle_name = r.optional(&o.middle_name, "owner.middle_name", PersonName::parse);
    let birth_date = r.date(&o.birth_date, "owner.birth_date");
    let passport = r.parsed(&o.passport, "owner.passport", Passport::parse);
    let region = r.parsed(&o.region, "owner.region", parse_region);
    let city = match o.city.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(_) => r.text(&o.city, "owner.city", 100),
    };
    if let (Some(birth), Some(start)) = (birth_date, start)
        && full_years_between(birth, start) < MIN_OWNER_AGE
    {
        r.errors.push(
            "owner.birth_date",
            format!("the policy holder must be at least {MIN_OWNER_AGE} on the policy start date"),
        );
    }
    Some(Owner {
        last_name: last_name?,
        first_name: first_name?,
        middle_name: middle_name.flatten(),
        birth_date: birth_date?,
        passport: passport?,
        region: region?,
        city,
    })
}

fn parse_region(input: &str) -> Result<String, String> {
    let code = input.trim();
    let ok = (2..=3).contains(&code.len())
        && code.chars().all(|c| c.is_ascii_digit())
        && !code.trim_start_matches('0').is_empty();
    if ok { Ok(code.to_string()) } else { Err("must be a 2–3 digit Russian region code, e.g. 77".into()) }
}

fn parse_driver(r: &mut Reader, d: &RawDriver, path: &str, start: Option<NaiveDate>) -> Option<Driver> {
    let at = |field: &str| format!("{path}.{field}");
    let last_name = r.parsed(&d.last_name, &at("last_name"), PersonName::parse);
    let first_name = r.parsed(&d.first_name, &at("first_name"), PersonName::parse);
    let middle_name = r.optional(&d.middle_name, &at("middle_name"), PersonName::parse);
    let birth_date = r.date(&d.birth_date, &at("birth_date"));
    let licence = r.parsed(&d.licence, &at("licence"), Licence::parse);
    let experience_since = r.date(&d.experience_since, &at("experience_since"));
    let kbm_class = r.optional(&d.kbm_class, &at("kbm_class"), |s| {
        s.parse().map_err(|_| "must be a bonus-malus class: M or 0 to 13".to_string())
    });
    if let (Some(birth), Some(since)) = (birth_date, experience_since) {
        check_driver_dates(r, path, birth, since, start);
    }
    Some(Driver {
        last_name: last_name?,
        first_name: first_name?,
        middle_name: middle_name.flatten(),
        birth_date: birth_date?,
        licence: licence?,
        experience_since: experience_since?,
        kbm_class: kbm_class.flatten(),
    })
}

/// Age and experience rules; all relative to the policy start, as the tariff is.
fn check_driver_dates(r: &mut Reader, path: &str, birth: NaiveDate, since: NaiveDate, start: Option<NaiveDate>) {
    // Adding months clamps 29 February to the 28th in common years.
    let earliest = birth.checked_add_months(Months::new(MIN_EXPERIENCE_AGE * 12));
    if earliest.is_none_or(|e| since < e) {
        r.errors.push(
            format!("{path}.experience_since"),
            format!("driving experience cannot start before the age of {MIN_EXPERIENCE_AGE}"),
        );
        return;
    }
    let Some(start) = start else { return };
    if since > start {
        r.errors
            .push(format!("{path}.experience_since"), "driving experience cannot start after the policy start date");
        return;
    }
    let age = full_years_between(birth, start);
    if age < MIN_DRIVER_AGE {
        r.errors.push(
            format!("{path}.birth_date"),
            format!("a driver must be at least {MIN_DRIVER_AGE} on the policy start date, this one is {age}"),
        );
        return;
    }
    let experience = full_years_between(since, start);
    if kvs(age, experience, start).is_none() {
        r.errors.push(
            format!("{path}.experience_since"),
            format!("{experience} years of experience at the age of {age} is not a possible combination"),
        );
    }
}

fn check_unique_licences(r: &mut Reader, drivers: &[Option<Driver>]) {
    for (i, d) in drivers.iter().enumerate() {
        let Some(d) = d else { continue };
        if drivers[..i].iter().flatten().any(|earlier| earlier.licence == d.licence) {
            r.errors.push(format!("drivers[{i}].licence"), "the same licence is listed twice");
        }
    }
}

/// Rules that depend on the day the request is made: the purchase window.
pub(super) fn check_purchase_date(raw: &RawQuoteRequest, today: NaiveDate) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    let start = raw.policy.as_ref().and_then(|p| p.start_date.as_deref()).and_then(|d| parse_date(d).ok());
    if let Some(start) = start {
        let latest = today.checked_add_days(Days::new(MAX_DAYS_AHEAD)).unwrap_or(NaiveDate::MAX);
        if start < today {
            errors.push("policy.start_date", "the policy cannot start in the past");
        } else if start > latest {
            errors.push("policy.start_date", format!("a policy can be bought at most {MAX_DAYS_AHEAD} days before it starts (latest start today: {latest})"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// schemathesis finding: "LA\u0000DA" as the make passed validation, the aggregator's
    /// jsonb insert refused it (500), and core-app answered 503 after three retries.
    #[test]
    fn free_text_has_no_control_characters() {
        let mut r = Reader { errors: ValidationErrors::default() };
        for (i, bad) in ["LA\u{0}DA", "VESTA\u{1}", "Мос\u{7f}ква", "a\u{85}b", "x\ny"].into_iter().enumerate() {
            assert_eq!(r.text(&Some(bad.to_string()), &format!("f{i}"), 64), None, "{bad:?}");
            assert!(r.errors.has(&format!("f{i}")), "{bad:?}");
        }
        assert_eq!(r.text(&Some(" LADA\t".to_string()), "ok", 64).as_deref(), Some("LADA"), "edges are trimmed");
    }

    /// Found while fuzzing: chrono read "-0001-01-01" and "+10000-01-01" as dates, so a
    /// driver born before the Common Era passed, and "2026-12-1" passed as "2026-12-01".
    #[test]
    fn dates_are_exactly_yyyy_mm_dd() {
        assert_eq!(parse_date(" 1985-04-12 "), Ok(NaiveDate::from_ymd_opt(1985, 4, 12).unwrap()));
        for bad in ["-0001-01-01", "+10000-01-01", "+2026-12-01", "2026-12-1", "2026-1-01", "2026-02-30", "2026/12/01"]
        {
            let err = parse_date(bad).unwrap_err();
            assert!(err.ends_with("is not a date in the form YYYY-MM-DD"), "{bad}: {err}");
        }
    }
}
