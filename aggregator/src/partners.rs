//! Partner authentication for the intake API: each partner has a bearer token; only
//! SHA-256 digests are kept in memory, and tokens are compared digest to digest.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Known partners by token digest.
#[derive(Clone, Default)]
pub struct Partners {
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partners").field("names", &self.by_digest.values().collect::<Vec<_>>()).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Partners {
    /// Parses `name:token` pairs separated by commas, e.g. `web:s3cret,acme:t0ken`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut partners = Partners::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, token) = pair.split_once(':').ok_or("each partner must be written as name:token")?;
            if name.is_empty() || token.len() < 8 {
                return Err(format!("partner '{name}': a name and a token of at least 8 characters are required"));
            }
            partners.by_digest.insert(digest(token), name.to_string());
        }
        Ok(partners)
    }

    /// The partner presenting this `Authorization` header value, if any.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        self.by_digest.get(&digest(token)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_partners() {
        let p = Partners::parse("web:web-token-1, acme:acme-token-2").unwrap();
        assert_eq!(p.authenticate(Some("Bearer web-token-1")), Some("web"));
        assert_eq!(p.authenticate(Some("Bearer acme-token-2")), Some("acme"));
        assert_eq!(p.authenticate(Some("Bearer nope-nope")), None);
        assert_eq!(p.authenticate(Some("web-token-1")), None);
        assert_eq!(p.authenticate(None), None);
        assert!(!format!("{p:?}").contains("token-1"));
        assert!(Partners::parse("web").is_err());
        assert!(Partners::parse("web:short").is_err());
    }
}
