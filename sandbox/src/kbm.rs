//! A stand-in for the insurers' union database (АИС РСА) lookup of a driver's bonus-malus class.
//!
//! Real insurers look the class up by licence; the sandbox derives it deterministically
//! from the normalised licence text, so a given licence always has the same class:
//! `h = FNV-1a-64(licence as UTF-8)`, `bucket = h % 100`, and buckets map to classes
//! roughly as drivers are spread in practice: most long-time drivers sit in the good
//! classes, few in the malus ones.

use domain::tariff::KbmClass;

/// Upper bucket bound (exclusive) and class, in bucket order.
const DISTRIBUTION: [(u64, &str); 15] = [
    (1, "M"),
    (2, "0"),
    (3, "1"),
    (5, "2"),
    (20, "3"),
    (26, "4"),
    (32, "5"),
    (38, "6"),
    (44, "7"),
    (50, "8"),
    (56, "9"),
    (62, "10"),
    (70, "11"),
    (78, "12"),
    (100, "13"),
];

/// 64-bit FNV-1a: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The class the simulated database holds for this (normalised) licence.
pub fn lookup(licence: &str) -> KbmClass {
    let bucket = fnv1a(licence.as_bytes()) % 100;
    let (_, class) = DISTRIBUTION.iter().find(|(upper, _)| bucket < *upper).expect("buckets cover 0..100");
    class.parse().expect("DISTRIBUTION holds valid classes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_stable_and_spread() {
        // Pinned values: changing the algorithm would silently reprice every demo driver.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(lookup("7700 123456"), lookup("7700 123456"));
        let classes: std::collections::HashSet<String> =
            (0..2000).map(|i| lookup(&format!("7700 {i:06}")).to_string()).collect();
        assert!(classes.len() >= 12, "only {} classes reached", classes.len());
    }
}
