//! Vault-style durations: integer seconds, or Go duration strings such as `90s`, `2160h`,
//! `1h30m`, `500ms` (rounded up to whole seconds).

/// Parses a duration into whole seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total_ms: u128 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut saw_unit = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let factor_ms: f64 = match unit.as_str() {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: missing number before {unit:?}"))?;
        total_ms += (v * factor_ms).ceil() as u128;
        num.clear();
        saw_unit = true;
    }
    if !num.is_empty() || !saw_unit {
        return Err(format!("invalid duration {s:?}: missing unit"));
    }
    u64::try_from(total_ms.div_ceil(1000)).map_err(|_| format!("duration {s:?} is too large"))
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
