//! Credentials from a Kubernetes Secret volume: `{secrets_dir}/{secretRef.name}/{secretRef.key}`,
//! read once at start-up. They never appear in `Debug`, errors or logs.

use crds::{Auth, AuthType, SecretRef};
use reqwest::RequestBuilder;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use std::fmt;
use std::path::{Path, PathBuf};

/// How a client authenticates each call.
#[derive(Clone)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(HeaderValue),
    /// HTTP Basic from a `user:password` secret.
    Basic {
        user: String,
        password: String,
    },
    /// A static key in a named header, e.g. `X-Api-Key`.
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
}

/// Why credentials could not be read. Names paths, never contents.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("api.auth.secretRef is required for auth type {0:?}")]
    MissingSecretRef(AuthType),
    #[error("api.auth.header is required for auth type header")]
    MissingHeader,
    #[error("secretRef {0:?} is not a plain Secret name and key")]
    BadSecretRef(String),
    #[error("reading secret file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("secret file {0} is empty")]
    Empty(PathBuf),
    #[error("secret file {0} must hold user:password for basic auth")]
    NotUserPassword(PathBuf),
    #[error("secret file {0} holds characters not allowed in an HTTP header")]
    NotAHeaderValue(PathBuf),
    #[error("api.auth.header {0:?} is not a valid HTTP header name")]
    BadHeaderName(String),
}

impl Credentials {
    /// Reads what `auth` refers to from the mounted Secret files under `secrets_dir`.
    pub fn load(auth: &Auth, secrets_dir: &Path) -> Result<Self, CredentialsError> {
        let secret = || -> Result<(String, PathBuf), CredentialsError> {
            let reference = auth.secret_ref.as_ref().ok_or(CredentialsError::MissingSecretRef(auth.kind))?;
            let path = secret_path(secrets_dir, reference)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|source| CredentialsError::Unreadable { path: path.clone(), source })?;
            let text = text.trim().to_string();
            if text.is_empty() {
                return Err(CredentialsError::Empty(path));
            }
            Ok((text, path))
        };
        let sensitive = |text: String, path: PathBuf| {
            let mut value = HeaderValue::try_from(text).map_err(|_| CredentialsError::NotAHeaderValue(path))?;
            value.set_sensitive(true);
            Ok::<_, CredentialsError>(value)
        };
        Ok(match auth.kind {
            AuthType::None => Credentials::None,
            AuthType::Bearer => {
                let (token, path) = secret()?;
                Credentials::Bearer(sensitive(format!("Bearer {token}"), path)?)
            }
            AuthType::Basic => {
                let (text, path) = secret()?;
                let (user, password) = text.split_once(':').ok_or(CredentialsError::NotUserPassword(path))?;
                Credentials::Basic { user: user.to_string(), password: password.to_string() }
            }
            AuthType::Header => {
                let header = auth.header.as_deref().ok_or(CredentialsError::MissingHeader)?;
                let name =
                    HeaderName::try_from(header).map_err(|_| CredentialsError::BadHeaderName(header.to_string()))?;
                let (key, path) = secret()?;
                Credentials::Header { name, value: sensitive(key, path)? }
            }
        })
    }

    /// Adds the credentials to a request.
    pub(crate) fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Credentials::None => request,
            Credentials::Bearer(value) => request.header(AUTHORIZATION, value.clone()),
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password)),
            Credentials::Header { name, value } => request.header(name.clone(), value.clone()),
        }
    }
}

/// `{dir}/{name}/{key}`, refusing anything that could step outside `dir`.
fn secret_path(dir: &Path, reference: &SecretRef) -> Result<PathBuf, CredentialsError> {
    let plain = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    if !plain(&reference.name) || !plain(&reference.key) {
        return Err(CredentialsError::BadSecretRef(format!("{}/{}", reference.name, reference.key)));
    }
    Ok(dir.join(&reference.name).join(&reference.key))
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: <redacted> }}"),
            Credentials::Header { name, .. } => write!(f, "Header {{ name: {name:?}, value: <redacted> }}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("osago-secrets-{}", uuid::Uuid::new_v4().simple()));
        for (path, content) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    fn auth(kind: AuthType, name: &str, key: &str, header: Option<&str>) -> Auth {
        Auth {
            kind,
            secret_ref: Some(SecretRef { name: name.into(), key: key.into() }),
            header: header.map(str::to_string),
        }
    }

    #[test]
    fn reads_trimmed_secrets_and_redacts_them() {
        let dir = dir_with(&[
            ("alfa-api/token", "s3cret-token\n"),
            ("ingos-api/key", "  k3y \n"),
            ("old-api/credentials", "partner:pa:ss\n"),
        ]);
        let cases = [
            (auth(AuthType::Bearer, "alfa-api", "token", None), "Bearer(<redacted>)", "s3cret-token"),
            (
                auth(AuthType::Header, "ingos-api", "key", Some("X-Api-Key")),
                "Header { name: \"x-api-key\", value: <redacted> }",
                "k3y",
            ),
            (
                auth(AuthType::Basic, "old-api", "credentials", None),
                "Basic { user: \"partner\", password: <redacted> }",
                "pa:ss",
            ),
        ];
        for (auth, debug, secret) in cases {
            let credentials = Credentials::load(&auth, &dir).unwrap();
            let shown = format!("{credentials:?}");
            assert_eq!(shown, debug);
            assert!(!shown.contains(secret));
        }
        match Credentials::load(&auth(AuthType::Bearer, "alfa-api", "token", None), &dir).unwrap() {
            Credentials::Bearer(value) => {
                assert_eq!(value.to_str().unwrap(), "Bearer s3cret-token");
                assert!(value.is_sensitive());
            }
            other => panic!("{other:?}"),
        }
        match Credentials::load(&auth(AuthType::Basic, "old-api", "credentials", None), &dir).unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("partner", "pa:ss"))
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_secrets_are_reported_without_their_content() {
        let dir = dir_with(&[("empty/token", " \n"), ("plain/credentials", "no-colon-here")]);
        let cases = [
            (auth(AuthType::Bearer, "missing", "token", None), "reading secret file"),
            (auth(AuthType::Bearer, "empty", "token", None), "is empty"),
            (auth(AuthType::Basic, "plain", "credentials", None), "user:password"),
            (auth(AuthType::Bearer, "..", "token", None), "not a plain Secret"),
            (auth(AuthType::Bearer, "a/b", "token", None), "not a plain Secret"),
            (auth(AuthType::Header, "plain", "credentials", None), "api.auth.header is required"),
            (auth(AuthType::Header, "plain", "credentials", Some("bad header")), "not a valid HTTP header"),
            (Auth { kind: AuthType::Bearer, secret_ref: None, header: None }, "secretRef is required"),
        ];
        for (auth, expected) in cases {
            let error = Credentials::load(&auth, &dir).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("no-colon-here"), "{error}");
        }
        assert!(matches!(Credentials::load(&Auth::default(), &dir), Ok(Credentials::None)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
