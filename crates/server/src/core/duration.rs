//! Vault-style durations: integer seconds, or Go duration strings such as `90s`, `2160h`,
//! `1h30m`, `500ms` (rounded up to whole seconds).

/// Parses a duration into whole seconds (one implementation, shared with the PKI core).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    custos_pki::fields::parse_duration(s)
}

/// Reads a duration field from a JSON value (number of seconds or duration string).
pub fn duration_value(v: &serde_json::Value) -> Result<u64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("invalid duration {n}: must be a non-negative integer")),
        serde_json::Value::String(s) => parse_duration(s),
        other => Err(format!("invalid duration {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_cert_manager_sends_them() {
        assert_eq!(parse_duration("2160h").unwrap(), 2160 * 3600);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("1m0s").unwrap(), 60);
        assert_eq!(parse_duration("1.5h").unwrap(), 5400);
        assert_eq!(parse_duration("500ms").unwrap(), 1);
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86400);
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in ["", "h", "10x", "1h5", "-5s", "abc", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
