//! Versioned tariff tables: embedding, parsing and picking the version in force.
//!
//! The TOML files in `domain/data/tariff/` are compiled into the binary and parsed on
//! first use. A broken file is a build defect, not a runtime condition, so parsing
//! panics with the file name; the tests load every table to catch that before release.

use std::sync::LazyLock;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::TariffError;
use super::coefficients::{BaseRates, Kbm, Km, Kn, Ko, Kp, Ks, Kt, Kvs, RegionCodes};

/// A number taken from a table, with whether our reference confirms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figure {
    pub value: Decimal,
    pub verified: bool,
}

/// Data files write a figure either as a decimal string, or, when the value is not
/// confirmed, as `{ value = "…", verified = false, note = "why" }`. The note is required
/// so that nobody flags a value without saying what is doubtful about it. TOML floats
/// are refused: they would pass through binary floating point on the way to `Decimal`.
impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            Annotated(Annotated),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Annotated {
            value: String,
            verified: bool,
            #[allow(dead_code)] // Only there to force a written reason.
            note: String,
        }
        let (text, verified) = match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a decimal string or { value, verified, note } (floats are not accepted)")
        })? {
            Raw::Plain(text) => (text, true),
            Raw::Annotated(a) => (a.value, a.verified),
        };
        let value = text.parse().map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))?;
        Ok(Figure { value, verified })
    }
}

/// One version of a table, as enacted by one act.
#[derive(Debug)]
pub(crate) struct Version<T> {
    pub effective_from: NaiveDate,
    #[allow(dead_code)] // Kept with the data so a debugger or a future audit trail sees it.
    pub source: String,
    pub data: T,
}

/// All versions of one table, oldest first.
#[derive(Debug)]
pub(crate) struct Table<T> {
    name: &'static str,
    versions: Vec<Version<T>>,
}

impl<T> Table<T> {
    /// The latest version whose effective date is on or before `date`.
    pub fn in_force(&self, date: NaiveDate) -> Result<&T, TariffError> {
        self.versions.iter().rev().find(|v| v.effective_from <= date).map(|v| &v.data).ok_or_else(|| {
            TariffError::NoTableInForce { table: self.name, date, earliest: self.versions[0].effective_from }
        })
    }

    #[cfg(test)]
    pub fn versions(&self) -> &[Version<T>] {
        &self.versions
    }
}

/// Every table the engine uses.
#[derive(Debug)]
pub(crate) struct Tables {
    pub base_rate: Table<BaseRates>,
    pub kbm: Table<Kbm>,
    pub kvs: Table<Kvs>,
    pub ko: Table<Ko>,
    pub km: Table<Km>,
    pub ks: Table<Ks>,
    pub kt: Table<Kt>,
    pub kn: Table<Kn>,
    pub kp: Table<Kp>,
    pub region_codes: RegionCodes,
}

/// The tables, parsed once per process.
pub(crate) static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    base_rate: table("base_rate", include_str!("../../data/tariff/base_rate.toml")),
    kbm: table("kbm", include_str!("../../data/tariff/kbm.toml")),
    kvs: table("kvs", include_str!("../../data/tariff/kvs.toml")),
    ko: table("ko", include_str!("../../data/tariff/ko.toml")),
    km: table("km", include_str!("../../data/tariff/km.toml")),
    ks: table("ks", include_str!("../../data/tariff/ks.toml")),
    kt: table("kt", include_str!("../../data/tariff/kt.toml")),
    kn: table("kn", include_str!("../../data/tariff/kn.toml")),
    kp: table("kp", include_str!("../../data/tariff/kp.toml")),
    region_codes: parse("region_codes", include_str!("../../data/tariff/region_codes.toml"))
        .and_then(RegionCodes::build)
        .unwrap_or_else(|e| panic!("domain/data/tariff/region_codes.toml: {e}")),
});

/// A table's file format after parsing, before its own consistency checks.
pub(crate) trait FromRaw: Sized {
    type Raw: DeserializeOwned;
    fn from_raw(raw: Self::Raw) -> Result<Self, String>;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    versions: Vec<toml::Table>,
}

fn table<T: FromRaw>(name: &'static str, text: &str) -> Table<T> {
    build_table(name, text).unwrap_or_else(|e| panic!("domain/data/tariff/{name}.toml: {e}"))
}

/// Takes `effective_from` and `source` off each version by hand rather than with
/// `#[serde(flatten)]`, because flattening would make the table's own
/// `deny_unknown_fields` ignore misspelt keys.
fn build_table<T: FromRaw>(name: &'static str, text: &str) -> Result<Table<T>, String> {
    let file: RawFile = parse(name, text)?;
    if file.versions.is_empty() {
        return Err("no [[versions]]".into());
    }
    let mut versions: Vec<Version<T>> = Vec::with_capacity(file.versions.len());
    for (index, mut fields) in file.versions.into_iter().enumerate() {
        let at = match fields.remove("effective_from") {
            Some(toml::Value::Datetime(datetime)) => plain_date(datetime)?,
            _ => return Err(format!("version #{index}: effective_from must be a date")),
        };
        if versions.last().is_some_and(|prev| prev.effective_from >= at) {
            return Err(format!("version {at} is not after the previous one"));
        }
        let source = match fields.remove("source") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
            _ => return Err(format!("version {at}: source must name the act")),
        };
        let raw: T::Raw = toml::Value::Table(fields).try_into().map_err(|e| format!("version {at}: {e}"))?;
        let data = T::from_raw(raw).map_err(|e| format!("version {at}: {e}"))?;
        versions.push(Version { effective_from: at, source, data });
    }
    Ok(Table { name, versions })
}

fn parse<R: DeserializeOwned>(name: &str, text: &str) -> Result<R, String> {
    toml::from_str(text).map_err(|e| format!("{name}: {e}"))
}

/// Refuses date-times: a time of day or an offset would be meaningless for a date
/// from which an act is in force.
fn plain_date(datetime: toml::value::Datetime) -> Result<NaiveDate, String> {
    match (datetime.date, datetime.time, datetime.offset) {
        (Some(d), None, None) => NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
            .ok_or_else(|| format!("invalid date {datetime}")),
        _ => Err(format!("{datetime}: expected a plain date such as 2025-12-09")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::from_str(s).unwrap()
    }

    fn dates_of<T>(v: &[Version<T>]) -> Vec<NaiveDate> {
        v.iter().map(|v| v.effective_from).collect()
    }

    #[test]
    fn every_embedded_table_parses_with_the_expected_versions() {
        let t = &*TABLES;
        let since_2022 = [d("2022-01-09")];
        assert_eq!(dates_of(t.base_rate.versions()), [d("2022-09-13"), d("2025-12-09")]);
        assert_eq!(dates_of(t.kt.versions()), [d("2022-01-09"), d("2025-12-09")]);
        assert_eq!(dates_of(t.kbm.versions()), [d("2022-04-01")]);
        assert_eq!(dates_of(t.kvs.versions()), since_2022);
        assert_eq!(dates_of(t.ko.versions()), since_2022);
        assert_eq!(dates_of(t.km.versions()), since_2022);
        assert_eq!(dates_of(t.ks.versions()), since_2022);
        assert_eq!(dates_of(t.kn.versions()), since_2022);
        assert_eq!(dates_of(t.kp.versions()), since_2022);
        assert!(t.base_rate.versions()[1].source.contains("7204-У"));
        assert!(t.kbm.versions()[0].source.contains("6007-У"));
    }

    #[derive(Debug)]
    struct Probe(Figure);

    impl FromRaw for Probe {
        type Raw = ProbeRaw;
        fn from_raw(raw: ProbeRaw) -> Result<Self, String> {
            Ok(Probe(raw.x))
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProbeRaw {
        x: Figure,
    }

    #[test]
    fn picks_latest_version_not_after_date() {
        let table: Table<Probe> = build_table(
            "probe",
            r#"
            [[versions]]
            effective_from = 2022-01-09
            source = "a"
            x = "1.00"
            [[versions]]
            effective_from = 2025-12-09
            source = "b"
            x = { value = "2.00", verified = false, note = "n" }
            "#,
        )
        .unwrap();
        let at = |s| table.in_force(d(s)).map(|p| p.0);
        assert_eq!(at("2025-12-08").unwrap(), Figure { value: Decimal::from_str("1.00").unwrap(), verified: true });
        assert_eq!(at("2025-12-09").unwrap(), Figure { value: Decimal::from_str("2.00").unwrap(), verified: false });
        assert_eq!(at("2022-01-09").unwrap().value, Decimal::ONE);
        assert!(matches!(at("2022-01-08"), Err(TariffError::NoTableInForce { table: "probe", .. })));
    }

    #[test]
    fn rejects_malformed_files() {
        let cases = [
            // Versions out of order.
            r#"[[versions]]
            effective_from = 2025-12-09
            source = "a"
            x = "1"
            [[versions]]
            effective_from = 2022-01-09
            source = "b"
            x = "1""#,
            // A date-time instead of a date.
            r#"[[versions]]
            effective_from = 2025-12-09T00:00:00
            source = "a"
            x = "1""#,
            // A float would lose the exact decimal.
            r#"[[versions]]
            effective_from = 2025-12-09
            source = "a"
            x = 1.8"#,
            // Unverified without a reason.
            r#"[[versions]]
            effective_from = 2025-12-09
            source = "a"
            x = { value = "1", verified = false }"#,
            // No source.
            r#"[[versions]]
            effective_from = 2025-12-09
            source = " "
            x = "1""#,
            // A typo in a key.
            r#"[[versions]]
            effective_from = 2025-12-09
            source = "a"
            y = "1""#,
            "versions = []",
        ];
        for text in cases {
            assert!(build_table::<Probe>("probe", text).is_err(), "{text}");
        }
    }
}
