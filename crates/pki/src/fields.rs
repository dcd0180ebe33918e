//! Vault's field coercions: bools from `true`/`"true"`, lists from arrays or comma-joined
//! strings (as cert-manager sends them), durations from seconds or Go strings.

use crate::PkiError;
use serde_json::{Map, Value};

/// Reads a boolean field.
pub fn bool_of(d: &Map<String, Value>, k: &str, default: bool) -> Result<bool, PkiError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" => Ok(false),
            _ => Err(PkiError::field(k, "must be a boolean")),
        },
        Some(Value::Number(n)) => Ok(n.as_i64() != Some(0)),
        Some(_) => Err(PkiError::field(k, "must be a boolean")),
    }
}

/// Reads a string field ("" when absent).
pub fn str_of(d: &Map<String, Value>, k: &str) -> Result<String, PkiError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(PkiError::field(k, "must be a string")),
    }
}

/// Reads a list field: a JSON array of strings or a comma-separated string.
pub fn list_of(d: &Map<String, Value>, k: &str) -> Result<Vec<String>, PkiError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                _ => Err(PkiError::field(k, "must be a list of strings")),
            })
            .filter(|r| r.as_ref().map(|s| !s.is_empty()).unwrap_or(true))
            .collect(),
        Some(_) => Err(PkiError::field(k, "must be a list of strings")),
    }
}

/// Reads a duration in seconds (0 when absent).
pub fn duration_of(d: &Map<String, Value>, k: &str) -> Result<u64, PkiError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| PkiError::field(k, "must be a non-negative number of seconds")),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => parse_duration(s).map_err(|e| PkiError::field(k, &e)),
        Some(_) => Err(PkiError::field(k, "must be a duration")),
    }
}

/// Reads an integer.
pub fn int_of(d: &Map<String, Value>, k: &str, default: i64) -> Result<i64, PkiError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| PkiError::field(k, "must be an integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| PkiError::field(k, "must be an integer")),
        Some(_) => Err(PkiError::field(k, "must be an integer")),
    }
}

/// Go-style durations: `90`, `90s`, `2160h`, `1h30m`, `7d`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u128 = 0;
    let mut num = String::new();
    let mut any = false;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && it.peek() == Some(&'s') {
            unit.push('s');
            it.next();
        }
        let ms: f64 = match unit.as_str() {
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 6e4,
            "h" => 3.6e6,
            "d" => 8.64e7,
            _ => return Err(format!("invalid duration {s:?}")),
        };
        let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        total += (v * ms).ceil() as u128;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("invalid duration {s:?}"));
    }
    u64::try_from(total.div_ceil(1000)).map_err(|_| format!("duration {s:?} is too large"))
}

/// `*` matches any run of characters (Vault's glob for URIs, domains and bound claims).
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(idx) => rest = &rest[idx + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// RFC 3339 (UTC) for a Unix time, for what a person reads (logs, tables); the number itself
/// when it is out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
