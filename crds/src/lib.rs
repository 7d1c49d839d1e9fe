//! Rust types of the `InsurerIntegration` custom resource (filled in by the CRD issue).
