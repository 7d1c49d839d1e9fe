//! Bonus-malus classes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A driver's bonus-malus class on the 15-class scale in force since 01.04.2022.
///
/// Ordered from the worst (M) to the best (13) class, so a larger class means a
/// smaller coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KbmClass {
    /// Class M, the worst.
    M,
    /// Class 0.
    C0,
    /// Class 1.
    C1,
    /// Class 2.
    C2,
    /// Class 3, given to drivers with no insurance history.
    C3,
    /// Class 4.
    C4,
    /// Class 5.
    C5,
    /// Class 6.
    C6,
    /// Class 7.
    C7,
    /// Class 8.
    C8,
    /// Class 9.
    C9,
    /// Class 10.
    C10,
    /// Class 11.
    C11,
    /// Class 12.
    C12,
    /// Class 13, the best.
    C13,
}

impl KbmClass {
    /// The class of a driver without insurance history (КБМ 1.17).
    pub const NEW_DRIVER: KbmClass = KbmClass::C3;

    /// Every class from M to 13.
    pub const ALL: [KbmClass; 15] = [
        KbmClass::M,
        KbmClass::C0,
        KbmClass::C1,
        KbmClass::C2,
        KbmClass::C3,
        KbmClass::C4,
        KbmClass::C5,
        KbmClass::C6,
        KbmClass::C7,
        KbmClass::C8,
        KbmClass::C9,
        KbmClass::C10,
        KbmClass::C11,
        KbmClass::C12,
        KbmClass::C13,
    ];

    /// The class as written in the act and in АИС РСА: "M", "0" … "13".
    pub const fn as_str(self) -> &'static str {
        match self {
            KbmClass::M => "M",
            KbmClass::C0 => "0",
            KbmClass::C1 => "1",
            KbmClass::C2 => "2",
            KbmClass::C3 => "3",
            KbmClass::C4 => "4",
            KbmClass::C5 => "5",
            KbmClass::C6 => "6",
            KbmClass::C7 => "7",
            KbmClass::C8 => "8",
            KbmClass::C9 => "9",
            KbmClass::C10 => "10",
            KbmClass::C11 => "11",
            KbmClass::C12 => "12",
            KbmClass::C13 => "13",
        }
    }
}

impl fmt::Display for KbmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of the 15 class names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a КБМ class (expected M or 0 to 13)")]
pub struct ParseKbmClassError(pub String);

/// Accepts the Cyrillic "М" as well as the Latin "M", because Russian forms and
/// documents use either and they look the same to the person typing.
impl FromStr for KbmClass {
    type Err = ParseKbmClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if matches!(trimmed, "M" | "m" | "М" | "м") {
            return Ok(KbmClass::M);
        }
        KbmClass::ALL
            .into_iter()
            .find(|class| class.as_str() == trimmed)
            .ok_or_else(|| ParseKbmClassError(s.to_owned()))
    }
}

impl Serialize for KbmClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KbmClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = ["M", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"];
        for (class, name) in KbmClass::ALL.into_iter().zip(names) {
            assert_eq!(class.to_string(), name);
            assert_eq!(name.parse::<KbmClass>().unwrap(), class);
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<KbmClass>(&json).unwrap(), class);
        }
    }

    #[test]
    fn accepts_cyrillic_m_and_rejects_others() {
        assert_eq!("М".parse::<KbmClass>().unwrap(), KbmClass::M);
        assert_eq!(" 3 ".parse::<KbmClass>().unwrap(), KbmClass::NEW_DRIVER);
        for bad in ["", "14", "-1", "03", "N", "3.0"] {
            assert!(bad.parse::<KbmClass>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<KbmClass>("3").is_err());
    }

    #[test]
    fn orders_from_worst_to_best() {
        assert!(KbmClass::M < KbmClass::C0);
        assert!(KbmClass::C9 < KbmClass::C10);
    }
}
