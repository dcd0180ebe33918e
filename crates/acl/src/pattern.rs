//! Vault path patterns: literal, `+` for exactly one segment, trailing `*` for a prefix.

use std::cmp::Ordering;

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    body: String,
    prefix: bool,
    first_wildcard: Option<usize>,
    plus_count: usize,
}

impl Pattern {
    /// Parses a pattern. `*` is only allowed as the last character.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (body, prefix) = match raw.strip_suffix('*') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        if body.contains('*') {
            return Err(format!(
                "path {raw:?}: '*' is only allowed as the last character"
            ));
        }
        let body = body.trim_start_matches('/');
        let mut plus_count = 0;
        let mut first_plus = None;
        let mut offset = 0;
        for seg in body.split('/') {
            if seg == "+" {
                plus_count += 1;
                first_plus.get_or_insert(offset);
            } else if seg.contains('+') {
                // '+' inside a segment is literal in Vault; keep it literal.
            }
            offset += seg.len() + 1;
        }
        let first_wildcard = match (first_plus, prefix) {
            (Some(p), _) => Some(p),
            (None, true) => Some(body.len()),
            (None, false) => None,
        };
        Ok(Pattern {
            raw: raw.trim_start_matches('/').to_string(),
            body: body.to_string(),
            prefix,
            first_wildcard,
            plus_count,
        })
    }

    /// The pattern as written (leading `/` removed).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True if the pattern has no wildcard at all.
    pub fn is_exact(&self) -> bool {
        self.first_wildcard.is_none()
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        let psegs: Vec<&str> = self.body.split('/').collect();
        let segs: Vec<&str> = path.split('/').collect();
        if !self.prefix {
            return psegs.len() == segs.len()
                && psegs.iter().zip(&segs).all(|(p, s)| *p == "+" || p == s);
        }
        if segs.len() < psegs.len() {
            return false;
        }
        let last = psegs.len() - 1;
        for (i, p) in psegs.iter().enumerate() {
            let s = segs[i];
            if i < last {
                if *p != "+" && p != &s {
                    return false;
                }
            } else if *p != "+" && !s.starts_with(p) {
                return false;
            }
        }
        true
    }
}

/// Vault's priority between two matching patterns: `Greater` means `a` wins.
/// In order: a later first wildcard wins; no trailing `*` wins; fewer `+` wins; longer
/// wins; lexically larger wins.
pub fn priority_cmp(a: &Pattern, b: &Pattern) -> Ordering {
    let pos = |p: &Pattern| p.first_wildcard.unwrap_or(usize::MAX);
    pos(a)
        .cmp(&pos(b))
        .then_with(|| b.prefix.cmp(&a.prefix))
        .then_with(|| b.plus_count.cmp(&a.plus_count))
        .then_with(|| a.raw.len().cmp(&b.raw.len()))
        .then_with(|| a.raw.cmp(&b.raw))
}
