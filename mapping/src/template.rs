//! The calls' templates: compiled once per integration, rendered per call.
//!
//! Bodies escape every printed value as JSON and paths percent-encode it, so a value cannot
//! change the shape of the call. Rendering is bounded (fuel, recursion, output size): a
//! template written by mistake to loop for ever ends with an error, not a stuck poller.

use crate::spec::{CallTemplate, Mapping, Method};
use crate::{MappingError, RenderError};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Instructions one rendering may run: thousands of times what a realistic body needs.
const FUEL: u64 = 100_000;
/// Nesting of loops, macros and includes.
const RECURSION: usize = 32;
/// A rendered body larger than this is refused.
const MAX_OUTPUT: usize = 256 * 1024;
/// Characters a path value keeps as they are (RFC 3986 unreserved); all others are encoded.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The custom auto-escape of path templates: percent-encoding.
const PATH: &str = "path";

/// A call ready to send: method, path relative to the base URL, optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedCall {
    pub method: Method,
    pub path: String,
    pub body: Option<serde_json::Value>,
    pub idempotent: bool,
}

/// The compiled templates of both calls, named `create.path`, `create.body`, `poll.path`, `poll.body`.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every template, naming the field of the first that does not compile.
    pub fn compile(mapping: &Mapping) -> Result<Self, MappingError> {
        let mut env = environment();
        for (call, template) in [("create", &mapping.create), ("poll", &mapping.poll)] {
            add(&mut env, format!("{call}.path"), &template.path)?;
            if let Some(body) = &template.body {
                add(&mut env, format!("{call}.body"), body)?;
            }
        }
        Ok(Templates { env })
    }

    /// Renders `call` (`create` or `poll`, compiled from `template`) with `context`.
    pub fn render(&self, call: &str, template: &CallTemplate, context: Value) -> Result<RenderedCall, RenderError> {
        let render = |part: &str| -> Result<String, RenderError> {
            let name = format!("{call}.{part}");
            let text = self
                .env
                .get_template(&name)
                .and_then(|t| t.render(&context))
                .map_err(|e| RenderError(format!("{name} template: {}", describe(&e, false))))?;
            if text.len() > MAX_OUTPUT {
                return Err(RenderError(format!("{name} template rendered more than {MAX_OUTPUT} bytes")));
            }
            Ok(text)
        };
        let path = render("path")?;
        let body = match template.body {
            None => None,
            Some(_) => {
                let text = render("body")?;
                let json = serde_json::from_str(&text).map_err(|e| {
                    RenderError(format!(
                        "{call}.body template did not render JSON (line {} column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
                Some(json)
            }
        };
        Ok(RenderedCall {
            method: template.method,
            path: path.trim().to_string(),
            body,
            idempotent: template.idempotent,
        })
    }
}

fn add(env: &mut Environment<'static>, name: String, source: &str) -> Result<(), MappingError> {
    let field = format!("api.mapping.{name}");
    env.add_template_owned(name, source.to_string()).map_err(|e| MappingError { field, message: describe(&e, true) })
}

/// The environment every mapping renders in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Printing a missing value is an error (a typo in a field name must not send `null`); testing it
    // with `is defined` or `default` is fine.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".body") { AutoEscape::Json } else { AutoEscape::Custom(PATH.into()) }
    });
    env.set_formatter(|out, state, value| match state.auto_escape() {
        AutoEscape::Custom(name) if name == PATH => {
            let text = if value.is_none() { String::new() } else { value.to_string() };
            write!(out, "{}", utf8_percent_encode(&text, PATH_VALUE)).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    env.add_filter("ru_date", ru_date);
    env
}

const RU_DATE_ERROR: &str = "ru_date expects a YYYY-MM-DD date";

/// `2026-12-01` → `01.12.2026`, the date format of many Russian partner APIs.
fn ru_date(value: &str) -> Result<String, Error> {
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, RU_DATE_ERROR))?;
    Ok(date.format("%d.%m.%Y").to_string())
}

/// An error's kind and line, and its detail when `detailed` or written by us: details of rendering errors
/// may quote the values being rendered, which are personal data; compile errors quote only the template.
fn describe(error: &Error, detailed: bool) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail().filter(|d| detailed || *d == RU_DATE_ERROR) {
        text = format!("{text}: {detail}");
    }
    match error.line() {
        Some(line) => format!("{text} (line {line})"),
        None => text,
    }
}
