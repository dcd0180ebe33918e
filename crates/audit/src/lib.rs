//! # custos-audit
//!
//! The tamper-evident audit log format.
//!
//! **Owns:** HMAC-SHA256 of secret values with a per-device salt (Vault's
//! `hmac-sha256:<hex>` form), the hash chain that links every line to the one before it, and
//! [`verify`], which finds the first edited, removed, inserted or reordered line.
//!
//! **Must never:** write files or read clocks (the server's audit device does that), or emit
//! a secret in the clear.
//!
//! ## Line format
//! ```text
//! {"hash":"<H_n>","seq":<n>,"prev":"<H_{n-1}>", ...entry fields...}
//! H_n = hex(SHA-256(bytes of the line after `{"hash":"<H_n>",`))
//! ```
//! The first line of a log has `seq` 1 and `prev` of 64 zeros. Because `prev` is inside the
//! hashed bytes, each line commits to the whole history before it. An attacker who rewrites
//! every later line can still forge a consistent file; that is why the chain head is also
//! published to the transparency log.
#![forbid(unsafe_code)]

use aws_lc_rs::{digest, hmac};
use serde_json::{Map, Value};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const PREFIX: &str = "{\"hash\":\"";

/// HMACs secret strings with the device's salt.
pub struct Hasher {
    key: hmac::Key,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(..)")
    }
}

impl Hasher {
    /// A hasher for the device salt `salt`.
    pub fn new(salt: &[u8]) -> Self {
        Hasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, salt),
        }
    }

    /// `hmac-sha256:<hex>` of `value`.
    pub fn hmac(&self, value: &str) -> String {
        let tag = hmac::sign(&self.key, value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(tag.as_ref()))
    }

    /// Replaces every string inside `v` (recursively) with its HMAC.
    pub fn hash_strings(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.hmac(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.hash_strings(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.hash_strings(x)),
            _ => {}
        }
    }

    /// HMACs the named string fields of an object, leaving other fields as they are.
    pub fn hash_fields(&self, obj: &mut Map<String, Value>, fields: &[&str]) {
        for f in fields {
            if let Some(Value::String(s)) = obj.get_mut(*f) {
                if !s.is_empty() {
                    *s = self.hmac(s);
                }
            }
        }
    }
}

/// The running state of a chain: the last sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Sequence number of the last line written (0 before any).
    pub seq: u64,
    /// Hash of the last line written.
    pub prev: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b).as_ref())
}

impl Chain {
    /// Renders `entry` (a JSON object) as the next line, without the trailing newline, and
    /// advances the chain. The caller must only keep the new state if the write succeeds, so
    /// the method returns the line and the next state instead of mutating.
    pub fn next_line(&self, entry: &Map<String, Value>) -> (String, Chain) {
        let seq = self.seq + 1;
        let body = Value::Object(entry.clone()).to_string();
        let fields = body
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .unwrap_or("");
        let sep = if fields.is_empty() { "" } else { "," };
        let rest = format!("\"seq\":{seq},\"prev\":\"{}\"{sep}{fields}}}", self.prev);
        let hash = sha256_hex(rest.as_bytes());
        let line = format!("{PREFIX}{hash}\",{rest}");
        (line, Chain { seq, prev: hash })
    }

    /// Recovers the chain state from the last line of an existing log, to continue it.
    pub fn from_last_line(line: &str) -> Result<Chain, Tamper> {
        let (hash, rest) = split_line(line).ok_or(Tamper::Malformed { line: 0 })?;
        let meta = parse_meta(rest).ok_or(Tamper::Malformed { line: 0 })?;
        Ok(Chain {
            seq: meta.0,
            prev: hash.to_string(),
        })
    }
}

/// What [`verify`] found wrong, naming the 1-based line number in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Tamper {
    /// The line is not a chained audit line at all.
    #[error("line {line}: not a valid chained audit line")]
    Malformed {
        /// Line number.
        line: usize,
    },
    /// The line's contents do not match its hash: it was edited.
    #[error("line {line}: edited (its contents do not match its hash)")]
    Edited {
        /// Line number.
        line: usize,
    },
    /// One or more lines are missing before this line.
    #[error("line {line}: {count} line(s) removed before it (sequence {from} to {to} missing)")]
    Removed {
        /// Line number.
        line: usize,
        /// How many are missing.
        count: u64,
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// This line and the next are out of order.
    #[error("line {line}: reordered (sequence {found} appears before sequence {expected})")]
    Reordered {
        /// Line number.
        line: usize,
        /// Sequence found.
        found: u64,
        /// Sequence expected.
        expected: u64,
    },
    /// A line that does not belong to the chain was inserted here.
    #[error(
        "line {line}: inserted (sequence {found} repeats or goes backwards; expected {expected})"
    )]
    Inserted {
        /// Line number.
        line: usize,
        /// Sequence found.
        found: u64,
        /// Sequence expected.
        expected: u64,
    },
    /// The line is intact but does not link to the line before it, which was replaced.
    #[error("line {line}: replaced (line {next} does not link to it)")]
    Replaced {
        /// The replaced line.
        line: usize,
        /// The line whose `prev` exposes it.
        next: usize,
    },
}

fn split_line(line: &str) -> Option<(&str, &str)> {
    let after = line.strip_prefix(PREFIX)?;
    let hash = after.get(..64)?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = after.get(64..)?.strip_prefix("\",")?;
    Some((hash, rest))
}

fn parse_meta(rest: &str) -> Option<(u64, String)> {
    let v: Value = serde_json::from_str(&format!("{{{rest}")).ok()?;
    let seq = v.get("seq")?.as_u64()?;
    let prev = v.get("prev")?.as_str()?.to_string();
    Some((seq, prev))
}

/// Summary of a log that verified cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: u64,
    /// Hash of the last line (the chain head).
    pub head: String,
}

/// Verifies a whole log. Returns the first problem found.
pub fn verify(text: &str) -> Result<Verified, Tamper> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let n = i + 1;
        let (hash, rest) = split_line(l).ok_or(Tamper::Malformed { line: n })?;
        if sha256_hex(rest.as_bytes()) != hash {
            return Err(Tamper::Edited { line: n });
        }
        let (seq, prev) = parse_meta(rest).ok_or(Tamper::Malformed { line: n })?;
        parsed.push((hash.to_string(), seq, prev));
    }
    let mut chain = Chain::default();
    for (i, (hash, seq, prev)) in parsed.iter().enumerate() {
        let n = i + 1;
        let expected = chain.seq + 1;
        if *seq > expected {
            if parsed.get(i + 1).map(|p| p.1) == Some(expected) {
                return Err(Tamper::Reordered {
                    line: n,
                    found: *seq,
                    expected,
                });
            }
            return Err(Tamper::Removed {
                line: n,
                count: seq - expected,
                from: expected,
                to: seq - 1,
            });
        }
        if *seq < expected {
            return Err(Tamper::Inserted {
                line: n,
                found: *seq,
                expected,
            });
        }
        if *prev != chain.prev {
            // Sequence is continuous and this line is intact, so the line before it was
            // swapped for a self-consistent forgery (or, for line 1, the log was cut).
            return Err(if n == 1 {
                Tamper::Removed {
                    line: 1,
                    count: 0,
                    from: 0,
                    to: 0,
                }
            } else {
                Tamper::Replaced {
                    line: n - 1,
                    next: n,
                }
            });
        }
        chain = Chain {
            seq: *seq,
            prev: hash.clone(),
        };
    }
    Ok(Verified {
        lines: chain.seq,
        head: chain.prev,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn log(n: usize) -> Vec<String> {
        let mut c = Chain::default();
        (0..n)
            .map(|i| {
                let e = json!({"type": "request", "request": {"path": format!("kv/{i}")}});
                let (line, next) = c.next_line(e.as_object().unwrap());
                c = next;
                line
            })
            .collect()
    }

    fn join(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn intact_log_verifies_and_reports_head() {
        let l = log(10);
        let v = verify(&join(&l)).unwrap();
        assert_eq!(v.lines, 10);
        assert_eq!(v.head, Chain::from_last_line(&l[9]).unwrap().prev);
    }

    #[test]
    fn edited_line_is_caught() {
        let mut l = log(10);
        l[4] = l[4].replace("kv/4", "kv/X");
        assert_eq!(verify(&join(&l)), Err(Tamper::Edited { line: 5 }));
    }

    #[test]
    fn deleted_line_is_caught() {
        let mut l = log(10);
        l.remove(6);
        assert_eq!(
            verify(&join(&l)),
            Err(Tamper::Removed {
                line: 7,
                count: 1,
                from: 7,
                to: 7
            })
        );
    }

    #[test]
    fn swapped_pair_is_caught() {
        let mut l = log(10);
        l.swap(2, 3);
        assert_eq!(
            verify(&join(&l)),
            Err(Tamper::Reordered {
                line: 3,
                found: 4,
                expected: 3
            })
        );
    }

    #[test]
    fn inserted_copy_of_a_line_is_caught() {
        let mut l = log(10);
        let dup = l[2].clone();
        l.insert(5, dup);
        assert!(matches!(
            verify(&join(&l)),
            Err(Tamper::Inserted { line: 6, .. })
        ));
    }

    #[test]
    fn forged_line_with_recomputed_hash_is_caught_by_the_next_link() {
        let mut l = log(10);
        // Re-chain a forged line 4 from line 3's state, so its own hash is valid.
        let state = Chain {
            seq: 3,
            prev: Chain::from_last_line(&l[2]).unwrap().prev,
        };
        let forged = json!({"type": "request", "request": {"path": "forged"}});
        l[3] = state.next_line(forged.as_object().unwrap()).0;
        assert_eq!(
            verify(&join(&l)),
            Err(Tamper::Replaced { line: 4, next: 5 })
        );
    }

    #[test]
    fn truncated_head_of_log_is_caught() {
        let l = log(5);
        assert!(matches!(
            verify(&join(&l[2..])),
            Err(Tamper::Removed { line: 1, .. })
        ));
    }

    #[test]
    fn garbage_lines_are_malformed_not_panics() {
        for bad in ["", "{}", "{\"hash\":\"zz\",", "{\"hash\":\"", "\u{0}\u{1}"] {
            let r = verify(&format!("{bad}\n{bad}x\n"));
            assert!(r.is_err() || bad.is_empty());
        }
    }

    #[test]
    fn hmac_is_salted_and_recursive() {
        let a = Hasher::new(b"salt-a");
        let b = Hasher::new(b"salt-b");
        assert_ne!(a.hmac("secret"), b.hmac("secret"));
        assert!(a.hmac("secret").starts_with("hmac-sha256:"));
        let mut v = json!({"password": "hunter2", "nested": ["x", 5]});
        a.hash_strings(&mut v);
        assert!(!v.to_string().contains("hunter2"));
        assert_eq!(v["nested"][1], 5);
    }
}
