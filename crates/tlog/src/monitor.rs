//! The monitor's rules: what a watcher of the log flags in each entry, without I/O.
//!
//! A rules file is TOML:
//!
//! ```toml
//! [signing]
//! # fw.sign: every signer (key ID, or keyless identity) must be on this list.
//! allowed_signers = ["3f0c9a7d5e21b48c6f0a1d2e3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e", "https://ci.acme.example/signers/release"]
//! # fw.sign: the device classes each SLSA builder may sign for ("*": any). When the table
//! # is present, a builder it does not list may sign for none.
//! [signing.device_classes]
//! "https://ci.acme.example/builders/firmware@v1" = ["gnb-du-x1", "upf-x2"]
//! # fw.sign only inside a declared maintenance window (UTC). No windows: any time.
//! [[signing.windows]]
//! days = ["sat", "sun"]   # default: every day
//! start = "01:00"
//! end = "05:00"           # an end before the start runs past midnight; "24:00" is midnight
//!
//! [burst]
//! # More than this many events within any 60 seconds from one identity (the requester, and
//! # for fw.sign each signer) raise one alert per burst.
//! per_minute = 50
//! events = ["fw.sign", "pki.issue"]   # the default
//!
//! [issuance]
//! # pki.issue: the NF types each role may produce, keyed "role" or "mount/role".
//! roles = { sba-amf = ["AMF"], "pki/sba-core" = ["SMF", "UPF"] }
//! unlisted_roles = "allow"   # or "alert": an issuance from a role not listed
//!
//! [ca]
//! # pki.ca: every CA certificate that enters a PKI mount (a generated root, an intermediate
//! # signed or set, an import) must be one of these, by SHA-256 of its DER; any other is an
//! # alert. Without this table new CAs are not checked.
//! allowed = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! ```
//!
//! [`evaluate`] applies them to one entry with the burst windows in [`BurstState`] (which the
//! monitor persists with its position, so a restart neither forgets a burst in progress nor
//! raises it twice). Log-integrity alerts (`log.*`) are raised by the monitor itself.

use crate::entry::{Entry, Event};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Largest rules file accepted (bytes).
pub const MAX_RULES_BYTES: usize = 1 << 20;

/// A signer not on `signing.allowed_signers`.
pub const SIGNER_UNKNOWN: &str = "signer.unknown";
/// A builder signing for a device class it may not.
pub const DEVICE_CLASS: &str = "signer.device_class";
/// Signing outside every maintenance window.
pub const SIGNING_WINDOW: &str = "signing.window";
/// More than `burst.per_minute` events from one identity.
pub const BURST: &str = "burst";
/// A certificate for an NF type its role should not produce.
pub const NF_TYPE: &str = "issuance.nf_type";
/// An issuance from a role the rules do not list (`unlisted_roles = "alert"`).
pub const ROLE_UNLISTED: &str = "issuance.role";
/// A CA certificate not on `ca.allowed`.
pub const CA_UNLISTED: &str = "ca.unlisted";
/// An entry that is not a Custos entry.
pub const LOG_ENTRY: &str = "log.entry";
/// A checkpoint that does not verify against the log key and witness threshold.
pub const LOG_CHECKPOINT: &str = "log.checkpoint";
/// A checkpoint the log signed that the required witnesses did not cosign within the
/// monitor's grace period (a silent witness, or a log that withholds its head from them).
pub const LOG_WITNESS: &str = "log.witness";
/// A tile or entry bundle the checkpoint needs is missing or short.
pub const LOG_GAP: &str = "log.gap";
/// Tiles or entries that do not hash to the signed root.
pub const LOG_TAMPERED: &str = "log.tampered";
/// A checkpoint that is not an extension of the last verified one.
pub const LOG_INCONSISTENT: &str = "log.inconsistent";

/// Every rule name, for counters.
pub const ALL_RULES: [&str; 13] = [
    SIGNER_UNKNOWN,
    DEVICE_CLASS,
    SIGNING_WINDOW,
    BURST,
    NF_TYPE,
    ROLE_UNLISTED,
    CA_UNLISTED,
    LOG_ENTRY,
    LOG_CHECKPOINT,
    LOG_WITNESS,
    LOG_GAP,
    LOG_TAMPERED,
    LOG_INCONSISTENT,
];

/// Why a rules file is refused (names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules: {0}")]
pub struct RulesError(pub String);

/// A signer as a `fw.sign` entry names it: a key ID (hex SHA-256 of the public key) or a
/// keyless certificate's identity (a URI or an e-mail address). A placeholder such as
/// `"<key ID>"` is neither, so it is refused rather than matching nothing forever.
/// RFC 3339 (UTC) for a Unix time, for messages a person reads.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn is_signer(s: &str) -> bool {
    let key_id = s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let uri = s.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && !rest.is_empty()
    });
    let email = s
        .split_once('@')
        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'));
    let clean = !s.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
    clean && (key_id || uri || email)
}

fn bad(m: impl Into<String>) -> RulesError {
    RulesError(m.into())
}

/// A maintenance window (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit d set: the window opens on weekday d (0 = Sunday).
    pub days: u8,
    /// Minute of the day it opens.
    pub start: u32,
    /// Minute of the day it closes (1440: midnight); below `start`: the next day.
    pub end: u32,
}

/// What to do with an issuance from a role the rules do not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Not checked.
    #[default]
    Allow,
    /// Raise [`ROLE_UNLISTED`].
    Alert,
}

/// The parsed rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `signing.allowed_signers` (`None`: not checked).
    pub allowed_signers: Option<Vec<String>>,
    /// `signing.device_classes` (`None`: not checked).
    pub device_classes: Option<BTreeMap<String, Vec<String>>>,
    /// `signing.windows` (empty: any time).
    pub windows: Vec<Window>,
    /// `burst.per_minute` (`None`: not checked).
    pub burst_per_minute: Option<u32>,
    /// `burst.events`.
    pub burst_events: Vec<String>,
    /// `issuance.roles`.
    pub roles: BTreeMap<String, Vec<String>>,
    /// `issuance.unlisted_roles`.
    pub unlisted_roles: Unlisted,
    /// `ca.allowed`: SHA-256 digests (hex, lower case) of the CA certificates expected
    /// (`None`: not checked).
    pub allowed_cas: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    signing: RawSigning,
    burst: Option<RawBurst>,
    #[serde(default)]
    issuance: RawIssuance,
    ca: Option<RawCa>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    allowed: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    allowed_signers: Option<Vec<String>>,
    device_classes: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    windows: Vec<RawWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Vec<String>>,
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurst {
    per_minute: u32,
    events: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIssuance {
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    unlisted_roles: Unlisted,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const EVENT_TYPES: [&str; 12] = [
    "pki.issue",
    "pki.ca",
    "pki.revoke",
    "pki.role",
    "acl.policy",
    "fw.sign",
    "nrf.key",
    "audit.head",
    "attest.device",
    "attest.status",
    "attest.install",
    "attest.quarantine",
];

fn minute_of_day(s: &str, field: &str) -> Result<u32, RulesError> {
    let err = || bad(format!("{field} {s:?} is not HH:MM (00:00 to 24:00)"));
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(err());
    }
    let h: u32 = h.parse().map_err(|_| err())?;
    let m: u32 = m.parse().map_err(|_| err())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(err());
    }
    Ok(h * 60 + m)
}

impl Rules {
    /// Parses and checks a rules file.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        if text.len() > MAX_RULES_BYTES {
            return Err(bad(format!("larger than {MAX_RULES_BYTES} bytes")));
        }
        let raw: RawRules = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut windows = Vec::new();
        for (i, w) in raw.signing.windows.iter().enumerate() {
            let field = |f: &str| format!("signing.windows[{i}].{f}");
            let start = minute_of_day(&w.start, &field("start"))?;
            let end = minute_of_day(&w.end, &field("end"))?;
            if start == end || start == 1440 {
                return Err(bad(format!(
                    "{}: the window from {} to {} is empty",
                    field("end"),
                    w.start,
                    w.end
                )));
            }
            let days = match &w.days {
                None => 0x7f,
                Some(list) if list.is_empty() => {
                    return Err(bad(format!("{}: no days listed", field("days"))))
                }
                Some(list) => {
                    let mut bits = 0u8;
                    for d in list {
                        let n = DAYS
                            .iter()
                            .position(|x| x.eq_ignore_ascii_case(d))
                            .ok_or_else(|| {
                                bad(format!(
                                    "{}: {d:?} is not one of {}",
                                    field("days"),
                                    DAYS.join(", ")
                                ))
                            })?;
                        bits |= 1 << n;
                    }
                    bits
                }
            };
            windows.push(Window { days, start, end });
        }
        let check_list = |field: &str, list: &[String]| -> Result<(), RulesError> {
            if list.iter().any(|s| s.trim().is_empty()) {
                return Err(bad(format!("{field}: an empty name")));
            }
            Ok(())
        };
        if let Some(l) = &raw.signing.allowed_signers {
            check_list("signing.allowed_signers", l)?;
            for s in l {
                if !is_signer(s) {
                    return Err(bad(format!(
                        "signing.allowed_signers: {s:?} is neither a key ID (64 lower-case hex, \
                         as `custos fw keygen` prints) nor a keyless identity (a URI or e-mail)"
                    )));
                }
            }
        }
        if let Some(m) = &raw.signing.device_classes {
            for (b, classes) in m {
                check_list(&format!("signing.device_classes.{b:?}"), classes)?;
            }
        }
        for (r, types) in &raw.issuance.roles {
            check_list(&format!("issuance.roles.{r:?}"), types)?;
        }
        let (per_minute, events) = match raw.burst {
            None => (None, Vec::new()),
            Some(b) => {
                if b.per_minute == 0 {
                    return Err(bad("burst.per_minute must be at least 1"));
                }
                let events = b
                    .events
                    .unwrap_or_else(|| vec!["fw.sign".into(), "pki.issue".into()]);
                if events.is_empty() {
                    return Err(bad("burst.events: no event types listed"));
                }
                for e in &events {
                    if !EVENT_TYPES.contains(&e.as_str()) {
                        return Err(bad(format!(
                            "burst.events: {e:?} is not one of {}",
                            EVENT_TYPES.join(", ")
                        )));
                    }
                }
                (Some(b.per_minute), events)
            }
        };
        let allowed_cas = match raw.ca {
            None => None,
            Some(c) => {
                let mut out = Vec::with_capacity(c.allowed.len());
                for (i, d) in c.allowed.iter().enumerate() {
                    let d = d.trim().to_ascii_lowercase();
                    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad(format!(
                            "ca.allowed[{i}]: {:?} is not the SHA-256 of a certificate (64 hex digits)",
                            c.allowed[i]
                        )));
                    }
                    out.push(d);
                }
                Some(out)
            }
        };
        Ok(Rules {
            allowed_cas,
            allowed_signers: raw.signing.allowed_signers,
            device_classes: raw.signing.device_classes,
            windows,
            burst_per_minute: per_minute,
            burst_events: events,
            roles: raw.issuance.roles,
            unlisted_roles: raw.issuance.unlisted_roles,
        })
    }
}

/// Whether unix time `t` falls inside `w`.
pub fn in_window(w: &Window, t: u64) -> bool {
    let day = t / 86_400;
    let weekday = ((day + 4) % 7) as u8; // 1970-01-01 was a Thursday
    let minute = ((t % 86_400) / 60) as u32;
    let open = |d: u8| w.days & (1 << d) != 0;
    if w.start < w.end {
        open(weekday) && minute >= w.start && minute < w.end
    } else {
        (open(weekday) && minute >= w.start) || (open((weekday + 6) % 7) && minute < w.end)
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The log itself cannot be trusted, or an unknown party signed.
    Critical,
    /// Activity outside policy.
    Warning,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name ([`SIGNER_UNKNOWN`], [`BURST`], …).
    pub rule: String,
    /// How bad.
    pub severity: Severity,
    /// What happened, in words.
    pub message: String,
    /// The entry's index (absent for alerts about the log as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The entry's integrated time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    /// Who (requester or signer), when the rule is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The logged event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

impl Alert {
    /// An alert about the log as a whole.
    pub fn log(rule: &str, message: String) -> Alert {
        Alert {
            rule: rule.into(),
            severity: Severity::Critical,
            message,
            index: None,
            time: None,
            identity: None,
            event: None,
        }
    }
}

/// One identity's recent event times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityWindow {
    /// The newest times, at most `per_minute + 1`.
    pub times: VecDeque<u64>,
    /// Whether the burst in progress was already raised.
    pub alerted: bool,
}

/// Sliding 60-second windows per identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurstState {
    /// By identity (`requester:<name>` or `signer:<id>`).
    pub windows: HashMap<String, IdentityWindow>,
}

/// The seconds a burst is counted over.
pub const BURST_SECONDS: u64 = 60;

impl BurstState {
    /// Counts one event of `id` at `t`; true when it starts a burst over `limit`.
    fn count(&mut self, id: &str, t: u64, limit: u32) -> bool {
        if self.windows.len() > 4096 {
            self.windows
                .retain(|_, w| w.times.back().is_some_and(|last| last + BURST_SECONDS > t));
        }
        let w = self.windows.entry(id.to_string()).or_default();
        while w.times.front().is_some_and(|f| f + BURST_SECONDS <= t) {
            w.times.pop_front();
        }
        w.times.push_back(t);
        let limit = limit as usize;
        while w.times.len() > limit + 1 {
            w.times.pop_front();
        }
        if w.times.len() > limit {
            let first = !w.alerted;
            w.alerted = true;
            first
        } else {
            w.alerted = false;
            false
        }
    }
}

/// The alerts the entry at `index` raises under `rules`.
pub fn evaluate(rules: &Rules, burst: &mut BurstState, index: u64, bytes: &[u8]) -> Vec<Alert> {
    let entry = match Entry::parse(bytes) {
        Ok(e) => e,
        Err(e) => {
            let mut a = Alert::log(LOG_ENTRY, format!("entry {index}: {e}"));
            a.index = Some(index);
            return vec![a];
        }
    };
    let event = serde_json::to_value(&entry.event).ok();
    let mut out = Vec::new();
    let mut raise = |rule: &str, severity: Severity, identity: Option<String>, message: String| {
        out.push(Alert {
            rule: rule.into(),
            severity,
            message,
            index: Some(index),
            time: Some(entry.time),
            identity,
            event: event.clone(),
        })
    };
    let t = entry.time;
    match &entry.event {
        Event::FirmwareSigned {
            device_class,
            version,
            builder,
            signers,
            image_sha256,
            ..
        } => {
            if let Some(allowed) = &rules.allowed_signers {
                let unknown: Vec<&String> =
                    signers.iter().filter(|s| !allowed.contains(s)).collect();
                if !unknown.is_empty() || signers.is_empty() {
                    let who = unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    raise(
                        SIGNER_UNKNOWN,
                        Severity::Critical,
                        Some(who.clone()),
                        format!(
                            "firmware {image_sha256} ({device_class} {version}) was signed by {} not on the allowed list",
                            if who.is_empty() { "no named signer".to_string() } else { who }
                        ),
                    );
                }
            }
            if let Some(map) = &rules.device_classes {
                let ok = map
                    .get(builder)
                    .is_some_and(|c| c.iter().any(|c| c == "*" || c == device_class));
                if !ok {
                    let b = if builder.is_empty() {
                        "(no builder)"
                    } else {
                        builder
                    };
                    raise(
                        DEVICE_CLASS,
                        Severity::Warning,
                        Some(b.to_string()),
                        format!("builder {b} signed firmware for device class {device_class}, which it may not"),
                    );
                }
            }
            if !rules.windows.is_empty() && !rules.windows.iter().any(|w| in_window(w, t)) {
                raise(
                    SIGNING_WINDOW,
                    Severity::Warning,
                    entry.event.requester().map(str::to_string),
                    format!("firmware {image_sha256} ({device_class} {version}) was signed at {}, outside every maintenance window", rfc3339(i64::try_from(t).unwrap_or(i64::MAX))),
                );
            }
        }
        Event::CaCertificate {
            mount,
            op,
            subject,
            cert_sha256,
            ..
        } => {
            if let Some(allowed) = &rules.allowed_cas {
                if !allowed.contains(&cert_sha256.to_ascii_lowercase()) {
                    raise(
                        CA_UNLISTED,
                        Severity::Critical,
                        entry.event.requester().map(str::to_string),
                        format!("a CA certificate not on ca.allowed entered mount {mount} ({op}): {subject}, SHA-256 {cert_sha256}"),
                    );
                }
            }
        }
        Event::CertIssued {
            mount,
            role,
            serial,
            nf_types,
            ..
        } => {
            let allowed = rules
                .roles
                .get(&format!("{mount}/{role}"))
                .or_else(|| rules.roles.get(role));
            match allowed {
                Some(list) => {
                    let off: Vec<&String> = nf_types
                        .iter()
                        .filter(|n| !list.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(n)))
                        .collect();
                    if !off.is_empty() {
                        raise(
                            NF_TYPE,
                            Severity::Warning,
                            entry.event.requester().map(str::to_string),
                            format!(
                                "certificate {serial} from role {mount}/{role} is for NF type {}, which the role should not produce (allowed: {})",
                                off.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                                list.join(", ")
                            ),
                        );
                    }
                }
                None if rules.unlisted_roles == Unlisted::Alert => raise(
                    ROLE_UNLISTED,
                    Severity::Warning,
                    entry.event.requester().map(str::to_string),
                    format!("certificate {serial} was issued from role {mount}/{role}, which the rules do not list"),
                ),
                None => {}
            }
        }
        _ => {}
    }
    if let Some(limit) = rules.burst_per_minute {
        if rules.burst_events.iter().any(|e| e == entry.event.kind()) {
            let mut ids: Vec<String> = entry
                .event
                .requester()
                .map(|r| format!("requester:{r}"))
                .into_iter()
                .collect();
            if let Event::FirmwareSigned { signers, .. } = &entry.event {
                ids.extend(signers.iter().map(|s| format!("signer:{s}")));
            }
            let started: Vec<String> = ids
                .into_iter()
                .filter(|id| burst.count(id, t, limit))
                .collect();
            if !started.is_empty() {
                let who = started.join(", ");
                raise(
                    BURST,
                    Severity::Warning,
                    Some(who.clone()),
                    format!(
                        "{who}: more than {limit} {} events within {BURST_SECONDS} s",
                        rules.burst_events.join("/")
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::entry::{EnvelopeDigest, Event};

    /// 2026-11-22 00:00 UTC, a Sunday.
    const SUNDAY: u64 = 1_795_305_600;

    fn fw(t: u64, builder: &str, class: &str, signers: &[&str], requester: &str) -> Vec<u8> {
        Entry::new(
            t,
            Event::FirmwareSigned {
                mount: "provenance".into(),
                image_sha256: "ab".repeat(32),
                device_class: class.into(),
                version: "5.2.0".into(),
                builder: builder.into(),
                signers: signers.iter().map(|s| s.to_string()).collect(),
                envelopes: vec![EnvelopeDigest {
                    payload_type: "application/vnd.in-toto+json".into(),
                    payload_sha256: "cd".repeat(32),
                }],
                requester: requester.into(),
            },
        )
        .encode()
        .unwrap()
    }

    fn issue(t: u64, role: &str, nf: &[&str], requester: &str) -> Vec<u8> {
        Entry::new(
            t,
            Event::CertIssued {
                mount: "pki".into(),
                issuer: "i".into(),
                role: role.into(),
                serial: "01:02".into(),
                not_after: 0,
                cert_sha256: "ef".repeat(32),
                nf_types: nf.iter().map(|s| s.to_string()).collect(),
                requester: requester.into(),
            },
        )
        .encode()
        .unwrap()
    }

    const RULES: &str = r#"
[signing]
allowed_signers = ["urn:k1", "urn:k2"]
[signing.device_classes]
"builder-a" = ["du"]
"builder-any" = ["*"]
[[signing.windows]]
days = ["sat", "sun"]
start = "22:00"
end = "02:00"
[burst]
per_minute = 5
[issuance]
roles = { amf = ["AMF"], "pki/core" = ["SMF", "UPF"] }
"#;

    fn rules_of(alerts: &[Alert]) -> Vec<&str> {
        alerts.iter().map(|a| a.rule.as_str()).collect()
    }

    #[test]
    fn rules_file_errors_name_the_field() {
        for (text, want) in [
            ("[signing]\nallowed = []", "unknown field"),
            // README's placeholder, pasted unedited: refused, not matched against nothing.
            (
                "[signing]\nallowed_signers = [\"<key ID>\"]",
                "\"<key ID>\" is neither a key ID",
            ),
            (
                "[signing]\nallowed_signers = [\"3f0c\"]",
                "neither a key ID",
            ),
            (
                "[[signing.windows]]\nstart = \"25:00\"\nend = \"01:00\"",
                "signing.windows[0].start",
            ),
            (
                "[[signing.windows]]\nstart = \"1:00\"\nend = \"02:00\"",
                "HH:MM",
            ),
            (
                "[[signing.windows]]\nstart = \"01:00\"\nend = \"01:00\"",
                "empty",
            ),
            (
                "[[signing.windows]]\ndays = [\"funday\"]\nstart = \"01:00\"\nend = \"02:00\"",
                "funday",
            ),
            ("[burst]\nper_minute = 0", "at least 1"),
            (
                "[burst]\nper_minute = 3\nevents = [\"pki.sign\"]",
                "pki.sign",
            ),
            ("[issuance]\nroles = { amf = [\"\"] }", "empty name"),
            ("[issuance]\nunlisted_roles = \"maybe\"", "unlisted_roles"),
        ] {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(Rules::parse("").unwrap(), Rules::default());
        Rules::parse(RULES).unwrap();
    }

    #[test]
    fn maintenance_windows_follow_utc_weekdays_and_wrap_past_midnight() {
        let w = &Rules::parse(RULES).unwrap().windows[0];
        let h = 3600;
        assert!(in_window(w, SUNDAY + h)); // Sun 01:00, from Sat 22:00
        assert!(!in_window(w, SUNDAY + 2 * h)); // Sun 02:00: closed
        assert!(in_window(w, SUNDAY + 23 * h)); // Sun 23:00
        assert!(in_window(w, SUNDAY + 24 * h + h)); // Mon 01:00, from Sun 22:00
        assert!(!in_window(w, SUNDAY + 24 * h + 23 * h)); // Mon 23:00
        assert!(!in_window(w, SUNDAY - 24 * h + h)); // Sat 01:00: Fri is closed
        let all = Rules::parse("[[signing.windows]]\nstart = \"00:00\"\nend = \"24:00\"").unwrap();
        assert!((0..7).all(|d| in_window(&all.windows[0], SUNDAY + d * 86_400 + 86_399)));
    }

    #[test]
    fn unknown_signer_wrong_device_class_and_off_window_signing_each_raise_their_rule() {
        let r = Rules::parse(RULES).unwrap();
        let mut b = BurstState::default();
        let t = SUNDAY + 3600;
        assert!(evaluate(&r, &mut b, 0, &fw(t, "builder-a", "du", &["urn:k1"], "ci")).is_empty());
        assert!(evaluate(
            &r,
            &mut b,
            1,
            &fw(t, "builder-any", "upf", &["urn:k2"], "ci")
        )
        .is_empty());
        let a = evaluate(
            &r,
            &mut b,
            2,
            &fw(t, "builder-a", "du", &["urn:k1", "urn:k9"], "ci"),
        );
        assert_eq!(rules_of(&a), [SIGNER_UNKNOWN]);
        assert_eq!(a[0].identity.as_deref(), Some("urn:k9"));
        assert_eq!(a[0].index, Some(2));
        assert_eq!(a[0].event.as_ref().unwrap()["type"], "fw.sign");
        let a = evaluate(&r, &mut b, 3, &fw(t, "builder-a", "cu", &["urn:k1"], "ci"));
        assert_eq!(rules_of(&a), [DEVICE_CLASS]);
        let a = evaluate(&r, &mut b, 4, &fw(t, "builder-z", "du", &["urn:k1"], "ci"));
        assert_eq!(rules_of(&a), [DEVICE_CLASS]);
        let a = evaluate(
            &r,
            &mut b,
            5,
            &fw(SUNDAY + 12 * 3600, "builder-a", "du", &["urn:k1"], "ci"),
        );
        assert_eq!(rules_of(&a), [SIGNING_WINDOW]);
        assert_eq!(evaluate(&r, &mut b, 6, b"{not json").len(), 1);
        assert_eq!(evaluate(&r, &mut b, 6, b"{not json")[0].rule, LOG_ENTRY);
    }

    #[test]
    fn an_nf_type_its_role_should_not_produce_is_flagged() {
        let r = Rules::parse(RULES).unwrap();
        let mut b = BurstState::default();
        assert!(evaluate(&r, &mut b, 0, &issue(1, "amf", &["AMF"], "x")).is_empty());
        assert!(evaluate(&r, &mut b, 1, &issue(1, "core", &["smf", "UPF"], "x")).is_empty());
        assert!(evaluate(&r, &mut b, 2, &issue(1, "web", &[], "x")).is_empty());
        let a = evaluate(&r, &mut b, 3, &issue(1, "amf", &["AMF", "NRF"], "x"));
        assert_eq!(rules_of(&a), [NF_TYPE]);
        assert!(a[0].message.contains("NRF"), "{}", a[0].message);
        let strict = Rules::parse("[issuance]\nunlisted_roles = \"alert\"").unwrap();
        let a = evaluate(&strict, &mut b, 4, &issue(1, "web", &[], "x"));
        assert_eq!(rules_of(&a), [ROLE_UNLISTED]);
    }

    #[test]
    fn a_burst_raises_one_alert_until_the_identity_calms_down() {
        let r = Rules::parse(RULES).unwrap();
        let mut b = BurstState::default();
        let t = SUNDAY + 100_000;
        let mut alerts = Vec::new();
        // Five a minute is the limit: 5 in 50 s are fine, 20 more in 20 s are one burst.
        for i in 0..5 {
            alerts.extend(evaluate(
                &r,
                &mut b,
                i,
                &issue(t + i * 10, "amf", &["AMF"], "bot"),
            ));
        }
        assert!(alerts.is_empty());
        for i in 0..20 {
            alerts.extend(evaluate(
                &r,
                &mut b,
                5 + i,
                &issue(t + 50 + i, "amf", &["AMF"], "bot"),
            ));
        }
        assert_eq!(rules_of(&alerts), [BURST]);
        assert_eq!(alerts[0].identity.as_deref(), Some("requester:bot"));
        assert_eq!(alerts[0].index, Some(5));
        // Another identity meanwhile is not affected.
        assert!(evaluate(&r, &mut b, 30, &issue(t + 70, "amf", &["AMF"], "other")).is_empty());
        // Quiet for a minute, then a second burst: a second alert.
        let later = t + 200;
        let n: Vec<Alert> = (0..6)
            .flat_map(|i| evaluate(&r, &mut b, 40 + i, &issue(later, "amf", &["AMF"], "bot")))
            .collect();
        assert_eq!(rules_of(&n), [BURST]);
        // The state survives serialisation (the monitor persists it).
        let copy: BurstState = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(copy, b);
    }
}
