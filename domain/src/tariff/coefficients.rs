//! The shape of each tariff table, its consistency checks and its lookup.
//!
//! Checks run once when the embedded files are parsed, so that a lookup never has to
//! cope with a gap or an overlap in a table.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::kbm::KbmClass;
use super::tables::{Figure, FromRaw};

/// A base-rate corridor: the insurer picks its ТБ between the bounds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Corridor {
    pub lower: Figure,
    pub upper: Figure,
}

/// Corridors for category B vehicles of individuals.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BaseRates {
    pub individual: Corridor,
    pub taxi: Corridor,
}

impl FromRaw for BaseRates {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        for (name, c) in [("individual", raw.individual), ("taxi", raw.taxi)] {
            if !(c.lower.value.is_sign_positive() && c.lower.value < c.upper.value) {
                return Err(format!("{name}: need 0 < lower < upper"));
            }
        }
        Ok(raw)
    }
}

/// КБМ by class, indexed in the order of [`KbmClass::ALL`].
#[derive(Debug)]
pub(crate) struct Kbm {
    classes: [Figure; 15],
    unlimited_drivers: Figure,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KbmRaw {
    classes: BTreeMap<String, Figure>,
    unlimited_drivers: Figure,
}

impl FromRaw for Kbm {
    type Raw = KbmRaw;
    fn from_raw(raw: KbmRaw) -> Result<Self, String> {
        let mut by_class: BTreeMap<KbmClass, Figure> = BTreeMap::new();
        for (name, figure) in raw.classes {
            let class: KbmClass = name.parse().map_err(|e| format!("{e}"))?;
            if by_class.insert(class, figure).is_some() {
                return Err(format!("class {class} listed twice"));
            }
        }
        let figures: Vec<Figure> = KbmClass::ALL
            .iter()
            .map(|class| by_class.get(class).copied().ok_or(*class))
            .collect::<Result<_, _>>()
            .map_err(|class| format!("class {class} missing"))?;
        Ok(Kbm { classes: figures.try_into().expect("one figure per class"), unlimited_drivers: raw.unlimited_drivers })
    }
}

impl Kbm {
    pub fn lookup(&self, class: KbmClass) -> Figure {
        // The enum is declared in the order of `ALL`, which is the order of the array.
        self.classes[class as usize]
    }

    /// Stand-in for the owner's class, which the rules use when anyone may drive.
    pub fn unlimited_drivers(&self) -> Figure {
        self.unlimited_drivers
    }
}

/// КВС by age band (rows) and experience band (columns).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kvs {
    experience_from: Vec<u32>,
    rows: Vec<KvsRow>,
    unlimited_drivers: Figure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvsRow {
    age_from: u32,
    /// Cells left to right; missing trailing cells are impossible combinations.
    kvs: Vec<Figure>,
}

impl FromRaw for Kvs {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        if raw.experience_from.first() != Some(&0) || !strictly_ascending(&raw.experience_from) {
            return Err("experience_from must start at 0 and ascend".into());
        }
        let ages: Vec<u32> = raw.rows.iter().map(|r| r.age_from).collect();
        if ages.is_empty() || !strictly_ascending(&ages) {
            return Err("rows must ascend by age_from".into());
        }
        for row in &raw.rows {
            if row.kvs.is_empty() || row.kvs.len() > raw.experience_from.len() {
                return Err(format!("age {}: 1 to {} cells", row.age_from, raw.experience_from.len()));
            }
        }
        Ok(raw)
    }
}

impl Kvs {
    /// `None` for an age below the youngest band or an impossible cell.
    pub fn lookup(&self, age: u32, experience: u32) -> Option<Figure> {
        let row = self.rows.iter().rev().find(|r| r.age_from <= age)?;
        let column = self.experience_from.iter().rposition(|from| *from <= experience)?;
        row.kvs.get(column).copied()
    }

    /// КВС when anyone may drive: nobody's age or experience is known.
    pub fn unlimited_drivers(&self) -> Figure {
        self.unlimited_drivers
    }
}

/// КО for listed and unlimited drivers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ko {
    pub listed: Figure,
    pub unlimited: Figure,
}

impl FromRaw for Ko {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        Ok(raw)
    }
}

/// КМ by engine power bands.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Km {
    bands: Vec<KmBand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmBand {
    /// Inclusive upper bound; `None` only on the last, open-ended band.
    up_to_hp: Option<u16>,
    km: Figure,
}

impl FromRaw for Km {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        let Some((last, bounded)) = raw.bands.split_last() else {
            return Err("no bands".into());
        };
        if last.up_to_hp.is_some() {
            return Err("the last band must have no up_to_hp".into());
        }
        let bounds: Option<Vec<u16>> = bounded.iter().map(|b| b.up_to_hp).collect();
        match bounds {
            Some(bounds) if strictly_ascending(&bounds) => Ok(raw),
            _ => Err("only the last band may lack up_to_hp; bounds must ascend".into()),
        }
    }
}

impl Km {
    pub fn lookup(&self, power_hp: u16) -> Figure {
        self.bands
            .iter()
            .find(|band| band.up_to_hp.is_none_or(|up_to| power_hp <= up_to))
            .expect("the last band is open-ended")
            .km
    }
}

/// КС by months of use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ks {
    months: Vec<KsEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KsEntry {
    months: u8,
    ks: Figure,
}

impl Ks {
    /// Individuals cannot insure for fewer than 3 months, and a year has 12.
    pub const MONTHS: std::ops::RangeInclusive<u8> = 3..=12;

    pub fn lookup(&self, months: u8) -> Option<Figure> {
        self.months.iter().find(|entry| entry.months == months).map(|entry| entry.ks)
    }
}

impl FromRaw for Ks {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        let listed: Vec<u8> = raw.months.iter().map(|e| e.months).collect();
        if listed != Self::MONTHS.collect::<Vec<_>>() {
            return Err("months must be exactly 3, 4, … 12 in order".into());
        }
        Ok(raw)
    }
}

/// КН with and without gross violations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kn {
    pub none: Figure,
    pub gross_violations: Figure,
}

impl FromRaw for Kn {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        Ok(raw)
    }
}

/// КП for the policies the engine prices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kp {
    pub annual: Figure,
}

impl FromRaw for Kp {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        Ok(raw)
    }
}

/// КТ by territory, with a fallback for territories the table does not list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kt {
    default: Figure,
    territories: Vec<Territory>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Territory {
    region: String,
    city: Option<String>,
    #[allow(dead_code)] // For the people reading the data file.
    name: String,
    kt: Figure,
}

impl FromRaw for Kt {
    type Raw = Self;
    fn from_raw(raw: Self) -> Result<Self, String> {
        let mut seen = Vec::new();
        for t in &raw.territories {
            if !is_region_code(&t.region) {
                return Err(format!("{:?} is not a region code", t.region));
            }
            let key = (t.region.clone(), t.city.as_deref().map(city_key));
            if seen.contains(&key) {
                return Err(format!("territory {key:?} listed twice"));
            }
            seen.push(key);
        }
        Ok(raw)
    }
}

impl Kt {
    /// Region and city first, then the region alone, then the default. `region` must
    /// already be the subject's main code.
    pub fn lookup(&self, region: &str, city: Option<&str>) -> Figure {
        let city = city.map(city_key);
        let in_region = || self.territories.iter().filter(|t| t.region == region);
        let with_city =
            city.as_ref().and_then(|city| in_region().find(|t| t.city.as_deref().map(city_key).as_ref() == Some(city)));
        with_city.or_else(|| in_region().find(|t| t.city.is_none())).map_or(self.default, |t| t.kt)
    }
}

/// Plate-series codes that stand for the same subject as its main code.
#[derive(Debug)]
pub(crate) struct RegionCodes {
    main_by_alias: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionCodesRaw {
    #[allow(dead_code)] // For the people reading the data file.
    source: String,
    #[allow(dead_code)] // Aliases only normalise input; they never change a price.
    verified: bool,
    #[allow(dead_code)] // For the people reading the data file.
    note: String,
    aliases: BTreeMap<String, Vec<String>>,
}

impl RegionCodes {
    pub fn build(raw: RegionCodesRaw) -> Result<Self, String> {
        let mut main_by_alias = HashMap::new();
        for (main, aliases) in raw.aliases {
            for alias in aliases {
                if !is_region_code(&main) || !is_region_code(&alias) {
                    return Err(format!("{main:?} → {alias:?}: not region codes"));
                }
                if main_by_alias.insert(alias.clone(), main.clone()).is_some() {
                    return Err(format!("alias {alias} listed twice"));
                }
            }
        }
        if let Some(main) = main_by_alias.values().find(|m| main_by_alias.contains_key(*m)) {
            return Err(format!("{main} is both a main code and an alias"));
        }
        Ok(Self { main_by_alias })
    }

    /// The subject's main code for `code`, or `code` itself if it is not an alias.
    pub fn main_code<'a>(&'a self, code: &'a str) -> &'a str {
        self.main_by_alias.get(code).map_or(code, String::as_str)
    }
}

/// Two or three ASCII digits, the forms region codes take in documents and on plates.
pub(crate) fn is_region_code(code: &str) -> bool {
    (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// Forgives the ways people write a city: case, "ё" for "е", and the "г." prefix.
fn city_key(city: &str) -> String {
    let lower = city.trim().to_lowercase().replace('ё', "е");
    let bare = lower.strip_prefix("г.").or_else(|| lower.strip_prefix("г ")).unwrap_or(&lower);
    bare.trim().to_owned()
}

fn strictly_ascending<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|pair| pair[0] < pair[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_key_forgives_spelling() {
        assert_eq!(city_key(" г. Казань "), "казань");
        assert_eq!(city_key("г Казань"), "казань");
        assert_eq!(city_key("КАЗАНЬ"), "казань");
        assert_eq!(city_key("Королёв"), "королев");
        assert_eq!(city_key("Гусь-Хрустальный"), "гусь-хрустальный");
    }

    #[test]
    fn region_codes_are_two_or_three_digits() {
        for good in ["77", "01", "799"] {
            assert!(is_region_code(good), "{good}");
        }
        for bad in ["", "7", "7777", "7a", " 77", "٧٧"] {
            assert!(!is_region_code(bad), "{bad}");
        }
    }
}
