//! Newtypes for the identifiers and strings in a quote request: each can only hold a
//! valid, normalised value, and its `Debug` never shows personal data in clear.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a string newtype that is parsed by `$parse`, serialised as its string, and
/// shown by `Debug` only as its kind and length (these values are personal data).
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $parse:path) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and normalises `input`, or explains what is wrong with it.
            pub fn parse(input: &str) -> Result<Self, String> {
                $parse(input).map(Self)
            }

            /// The normalised value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted {} chars>)"), self.0.chars().count())
            }
        }
    };
}

string_newtype!(
    /// Vehicle identification number: 17 characters of `[A-HJ-NPR-Z0-9]`, upper case.
    Vin,
    parse_vin
);
string_newtype!(
    /// Russian registration plate `А123ВС77`, always in Cyrillic.
    Plate,
    parse_plate
);
string_newtype!(
    /// Driving licence `7700 123456` (series of 4 digits, or 2 digits + 2 Cyrillic letters).
    Licence,
    parse_licence
);
string_newtype!(
    /// Russian internal passport `4510 123456`.
    Passport,
    parse_passport
);
string_newtype!(
    /// A person's name part: letters, spaces, hyphens and apostrophes, at most 50 characters.
    PersonName,
    parse_person_name
);

/// The twelve Cyrillic letters allowed on plates, paired with their Latin look-alikes.
const PLATE_LETTERS: [(char, char); 12] = [
    ('А', 'A'),
    ('В', 'B'),
    ('Е', 'E'),
    ('К', 'K'),
    ('М', 'M'),
    ('Н', 'H'),
    ('О', 'O'),
    ('Р', 'P'),
    ('С', 'C'),
    ('Т', 'T'),
    ('У', 'Y'),
    ('Х', 'X'),
];

/// Maps a Latin look-alike to its Cyrillic plate letter; Cyrillic letters pass through.
fn to_cyrillic(c: char) -> char {
    PLATE_LETTERS.iter().find(|(_, latin)| *latin == c).map_or(c, |(cyr, _)| *cyr)
}

fn is_plate_letter(c: char) -> bool {
    PLATE_LETTERS.iter().any(|(cyr, _)| *cyr == c)
}

/// Upper-cases and drops spaces and hyphens people type inside identifiers.
fn compact(input: &str) -> String {
    input.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_uppercase).collect()
}

fn parse_vin(input: &str) -> Result<String, String> {
    let vin = compact(input);
    let len = vin.chars().count();
    if len != 17 {
        return Err(format!("VIN must be 17 characters, got {len}"));
    }
    if let Some((pos, bad)) = vin
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'O' | 'Q'))))
    {
        return Err(format!(
            "VIN may contain only digits and Latin letters except I, O and Q; found '{bad}' at position {}",
            pos + 1
        ));
    }
    Ok(vin)
}

fn parse_plate(input: &str) -> Result<String, String> {
    let plate: String = compact(input).chars().map(to_cyrillic).collect();
    let chars: Vec<char> = plate.chars().collect();
    let shape_ok = matches!(chars.len(), 8 | 9)
        && is_plate_letter(chars[0])
        && chars[1..4].iter().all(char::is_ascii_digit)
        && chars[4..6].iter().all(|c| is_plate_letter(*c))
        && chars[6..].iter().all(char::is_ascii_digit);
    if !shape_ok {
        return Err("plate must look like А123ВС77 or А123ВС777: a letter, 3 digits, 2 letters and a 2–3 digit region; letters only from А В Е К М Н О Р С Т У Х".into());
    }
    if chars[1..4] == ['0', '0', '0'] {
        return Err("plate number 000 does not exist".into());
    }
    Ok(plate)
}

fn parse_licence(input: &str) -> Result<String, String> {
    let compacted: String = compact(input).chars().map(to_cyrillic).collect();
    let chars: Vec<char> = compacted.chars().collect();
    let series_ok = chars.len() == 10
        && chars[..2].iter().all(char::is_ascii_digit)
        && (chars[2..4].iter().all(char::is_ascii_digit) || chars[2..4].iter().all(|c| is_cyrillic_upper(*c)));
    if !series_ok || !chars[4..].iter().all(char::is_ascii_digit) {
        return Err("driving licence must be a series of 4 digits (or 2 digits and 2 Cyrillic letters) and a 6-digit number, e.g. 7700 123456".into());
    }
    Ok(format!("{} {}", chars[..4].iter().collect::<String>(), chars[4..].iter().collect::<String>()))
}

fn is_cyrillic_upper(c: char) -> bool {
    matches!(c, 'А'..='Я' | 'Ё')
}

fn parse_passport(input: &str) -> Result<String, String> {
    let digits = compact(input);
    if digits.len() != 10 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("passport must be a 4-digit series and a 6-digit number, e.g. 4510 123456".into());
    }
    Ok(format!("{} {}", &digits[..4], &digits[4..]))
}

fn parse_person_name(input: &str) -> Result<String, String> {
    let name = input.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > 50 {
        return Err("must be at most 50 characters".into());
    }
    if !name.chars().all(|c| c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | '’')) {
        return Err("may contain only letters, spaces, hyphens and apostrophes".into());
    }
    if !name.chars().next().is_some_and(char::is_alphabetic) {
        return Err("must start with a letter".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vin_is_normalised_and_checked() {
        assert_eq!(Vin::parse(" xtagfl110ky123456 ").unwrap().as_str(), "XTAGFL110KY123456");
        let cases = [
            ("XTAGFL110KY12345", "17 characters, got 16"),
            ("XTAGFL110KY1234567", "got 18"),
            ("XTAGFLI10KY123456", "found 'I' at position 7"),
            ("OTAGFL110KY123456", "found 'O' at position 1"),
            ("XTAGFL110KY12345Q", "found 'Q' at position 17"),
            ("XTAGFL110KY12345Ж", "found 'Ж'"),
        ];
        for (input, expected) in cases {
            let err = Vin::parse(input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn plate_latin_look_alikes_become_cyrillic() {
        assert_eq!(Plate::parse("a123bc77").unwrap().as_str(), "А123ВС77");
        assert_eq!(Plate::parse("А 123 ВС 777").unwrap().as_str(), "А123ВС777");
        assert_eq!(Plate::parse("Y001XT199").unwrap().as_str(), "У001ХТ199");
        for bad in ["А000ВС77", "Б123ВС77", "А123ВС7", "А123ВС7777", "123ВС77", "АА123В77", ""] {
            assert!(Plate::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn licence_and_passport_are_normalised() {
        assert_eq!(Licence::parse("7700123456").unwrap().as_str(), "7700 123456");
        assert_eq!(Licence::parse("77 ab 123456").unwrap().as_str(), "77АВ 123456");
        assert_eq!(Licence::parse("77ЯЯ 123456").unwrap().as_str(), "77ЯЯ 123456");
        for bad in ["770 123456", "7700 12345", "A700 123456", "77A1 123456"] {
            assert!(Licence::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Passport::parse("4510123456").unwrap().as_str(), "4510 123456");
        for bad in ["4510 12345", "45AB 123456", "4510 1234567"] {
            assert!(Passport::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names_accept_real_names_and_reject_junk() {
        for good in ["Иванов", "Римский-Корсаков", "O'Neil", "Анна Мария"] {
            assert!(PersonName::parse(good).is_ok(), "{good} rejected");
        }
        assert_eq!(PersonName::parse("  Анна   Мария ").unwrap().as_str(), "Анна Мария");
        for bad in ["", "   ", "Иван2", "-Иван", "<script>", &"Я".repeat(51)] {
            assert!(PersonName::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn debug_never_shows_personal_data() {
        let p = Passport::parse("4510 123456").unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("4510") && !shown.contains("123456"), "{shown}");
    }
}
