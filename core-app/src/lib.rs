//! core-app
