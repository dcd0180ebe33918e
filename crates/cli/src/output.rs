//! Human and JSON output.

use serde_json::Value;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned key/value table.
    #[default]
    Human,
    /// The raw JSON response.
    Json,
}

/// RFC 3339 (UTC) for a Unix time.
pub use custos_pki::fields::rfc3339;

/// Whether a response field names a point in time (Vault's `expiration`, `creation_time`,
/// `revocation_time`, `not_after`, `…_at`, `…_until`).
fn is_time_field(key: &str) -> bool {
    matches!(
        key,
        "expiration" | "not_after" | "not_before" | "until" | "integrated_time" | "time"
    ) || key.ends_with("_time")
        || key.ends_with("_at")
        || key.ends_with("_until")
        || key.ends_with("_expiry")
}

/// A table cell: a Unix time in a time field prints as RFC 3339 (UTC), the way a person
/// reads it; `--format json` keeps the number.
fn cell(key: &str, v: &Value) -> String {
    match v.as_i64() {
        // 2001-09-09 .. 5138-11-16: a Unix time in seconds, not a count or a TTL.
        Some(n) if is_time_field(key) && (1_000_000_000..100_000_000_000).contains(&n) => {
            rfc3339(n)
        }
        _ => scalar(v),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

/// One field of a response, as `vault read -field=NAME` finds it: in `data` first, then in
/// `auth` (where `token`, `token_accessor`, `token_duration`, `token_renewable` and
/// `token_policies` name `client_token`, `accessor`, `lease_duration`, `renewable` and
/// `policies`), then at the top level.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let auth_name = match name {
        "token" => "client_token",
        "token_accessor" => "accessor",
        "token_duration" => "lease_duration",
        "token_renewable" => "renewable",
        "token_policies" => "policies",
        other => other,
    };
    v.get("data")
        .and_then(|d| d.get(name))
        .or_else(|| v.get("auth").and_then(|a| a.get(auth_name)))
        .or_else(|| v.get(name))
        .filter(|f| !f.is_null())
}

/// Prints one field bare, for scripts: a string as it is (no quotes), a number or boolean as
/// text, a list or object as compact JSON.
pub fn print_field(v: &Value) {
    match v {
        Value::String(s) => outln!("{s}"),
        Value::Array(_) | Value::Object(_) => {
            outln!("{}", serde_json::to_string(v).unwrap_or_default())
        }
        other => outln!("{other}"),
    }
}

/// Prints `v` (a whole response) in the chosen format. Human output shows `auth` and `data`
/// as a table, like Vault's CLI.
pub fn print(format: Format, v: &Value) {
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(a) = v.get("auth").and_then(Value::as_object) {
        for (k, val) in a {
            let key = match k.as_str() {
                "client_token" => "token".to_string(),
                "accessor" => "token_accessor".to_string(),
                "lease_duration" => "token_duration".to_string(),
                "renewable" => "token_renewable".to_string(),
                other => other.to_string(),
            };
            rows.push((key.clone(), cell(&key, val)));
        }
    }
    let data = v.get("data").filter(|d| !d.is_null()).unwrap_or(v);
    if let Some(obj) = data.as_object() {
        if v.get("auth").map(|a| a.is_null()).unwrap_or(true)
            || v.get("data").is_some_and(|d| !d.is_null())
        {
            for (k, val) in obj {
                if matches!(
                    k.as_str(),
                    "request_id"
                        | "lease_id"
                        | "lease_duration"
                        | "renewable"
                        | "wrap_info"
                        | "warnings"
                        | "auth"
                        | "mount_type"
                ) && v.get("data").is_some()
                {
                    continue;
                }
                rows.push((k.clone(), cell(k, val)));
            }
        }
    }
    if let Some(w) = v.get("warnings").and_then(Value::as_array) {
        for x in w {
            eprintln!("WARNING! {}", scalar(x));
        }
    }
    if rows.is_empty() {
        outln!("Success!");
        return;
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(3).max(3);
    outln!("{:width$}    Value", "Key");
    outln!("{:width$}    -----", "---");
    for (k, val) in rows {
        outln!("{k:width$}    {val}");
    }
}

/// Prints a LIST result one key per line (or JSON).
pub fn print_list(format: Format, v: &Value) {
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let keys = v
        .get("data")
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    outln!("Keys\n----");
    for k in keys {
        outln!("{}", scalar(&k));
    }
}
