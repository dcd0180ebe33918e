//! The attestation policy: per device class, which PCRs a quote must cover, where firmware is
//! measured, extra pinned measurements and PCR values, and how often a device must attest.
//!
//! ```toml
//! [[device_classes]]
//! name = "gnb-du-x1"
//! bank = "sha256"                    # the PCR bank quoted and replayed (default sha256)
//! pcrs = [0, 1, 2, 3, 4, 5, 6, 7]    # the quote must cover these (default 0-7)
//! firmware_pcrs = [4]                # every measurement here must be a signed firmware
//!                                    # image for this class (default [4])
//! allowed_digests = ["9f86d0…"]      # extra trusted measurements (sha256 hex), e.g. a
//!                                    # boot loader that is not in the provenance store
//! pcr_values = { 0 = "3d45…" }       # PCRs pinned to exact values (hex, in `bank`)
//! interval = "10m"                   # STALE when the last TRUSTED verdict is older
//! quarantine_on = ["untrusted", "stale", "signer_alert"]  # automatic quarantine (default none)
//! stale_grace = "5m"                 # a STALE device is quarantined this long after (default 0)
//! known_good = "2c26b4…"             # the image a failed rollout rolls back to (sha256 hex)
//! ```

use crate::tpm::{HashAlg, PCR_COUNT};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A policy file's error, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("attestation policy: {setting}: {reason}")]
pub struct PolicyError {
    /// The setting (`device_classes[0].pcrs`).
    pub setting: String,
    /// Why.
    pub reason: String,
}

fn bad(setting: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        setting: setting.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    device_classes: Vec<RawClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    bank: Option<String>,
    pcrs: Option<Vec<u8>>,
    firmware_pcrs: Option<Vec<u8>>,
    #[serde(default)]
    allowed_digests: Vec<String>,
    #[serde(default)]
    pcr_values: BTreeMap<String, String>,
    interval: Option<String>,
    #[serde(default)]
    quarantine_on: Vec<String>,
    stale_grace: Option<String>,
    known_good: Option<String>,
}

/// What quarantines a device of a class without an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An UNTRUSTED verdict.
    Untrusted,
    /// STALE for longer than the class's `stale_grace`.
    Stale,
    /// A monitor alert naming the signer of the device's firmware.
    SignerAlert,
}

impl Trigger {
    /// Its name in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Untrusted => "untrusted",
            Trigger::Stale => "stale",
            Trigger::SignerAlert => "signer_alert",
        }
    }
}

/// What one device class must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// The class (as bundles and the device registry name it).
    pub name: String,
    /// The bank quoted and replayed.
    pub bank: HashAlg,
    /// PCRs the quote must cover.
    pub pcrs: Vec<u8>,
    /// PCRs whose every measurement must be a trusted firmware image.
    pub firmware_pcrs: Vec<u8>,
    /// Extra trusted measurements (SHA-256).
    pub allowed_digests: Vec<Vec<u8>>,
    /// PCRs pinned to exact values.
    pub pcr_values: BTreeMap<u8, Vec<u8>>,
    /// Seconds after which a device without a newer TRUSTED verdict is STALE.
    pub interval: u64,
    /// What quarantines a device of this class automatically.
    pub quarantine_on: Vec<Trigger>,
    /// Seconds a device may stay STALE before the `stale` trigger quarantines it.
    pub stale_grace: u64,
    /// The known-good image (SHA-256) a failed rollout rolls back to.
    pub known_good: Option<String>,
}

impl ClassPolicy {
    /// Whether `t` quarantines devices of this class.
    pub fn quarantines_on(&self, t: Trigger) -> bool {
        self.quarantine_on.contains(&t)
    }
}

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The classes.
    pub classes: Vec<ClassPolicy>,
}

fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul).filter(|n| *n > 0)
}

fn hex_digest(setting: &str, s: &str, size: usize) -> Result<Vec<u8>, PolicyError> {
    let d = hex::decode(s).map_err(|_| bad(setting, format!("{s:?} is not hex")))?;
    if d.len() != size || s.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(
            setting,
            format!("{s:?} is not a lower-case hex digest of {size} bytes"),
        ));
    }
    Ok(d)
}

fn pcr_list(setting: &str, v: Vec<u8>) -> Result<Vec<u8>, PolicyError> {
    let mut v = v;
    v.sort_unstable();
    v.dedup();
    if let Some(p) = v.iter().find(|p| usize::from(**p) >= PCR_COUNT) {
        return Err(bad(setting, format!("PCR {p}: PCRs are 0..23")));
    }
    Ok(v)
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| bad("policy", e.message().to_string()))?;
        if raw.device_classes.is_empty() {
            return Err(bad(
                "device_classes",
                "at least one device class is required",
            ));
        }
        let mut classes: Vec<ClassPolicy> = Vec::new();
        for (i, c) in raw.device_classes.into_iter().enumerate() {
            let f = |k: &str| format!("device_classes[{i}].{k}");
            if c.name.trim().is_empty() || c.name.contains(|ch: char| ch.is_whitespace()) {
                return Err(bad(f("name"), "must be a device class name"));
            }
            if classes.iter().any(|x| x.name == c.name) {
                return Err(bad(f("name"), format!("{:?} is listed twice", c.name)));
            }
            let bank = match c.bank.as_deref() {
                None => HashAlg::Sha256,
                Some(b) => match HashAlg::from_name(b) {
                    Some(HashAlg::Sha1) | None => {
                        return Err(bad(
                            f("bank"),
                            format!("{b:?}: use sha256, sha384 or sha512"),
                        ))
                    }
                    Some(h) => h,
                },
            };
            let pcrs = pcr_list(&f("pcrs"), c.pcrs.unwrap_or_else(|| (0..8).collect()))?;
            if pcrs.is_empty() {
                return Err(bad(f("pcrs"), "the quote must cover at least one PCR"));
            }
            let firmware_pcrs = pcr_list(&f("firmware_pcrs"), c.firmware_pcrs.unwrap_or(vec![4]))?;
            if let Some(p) = firmware_pcrs.iter().find(|p| !pcrs.contains(p)) {
                return Err(bad(
                    f("firmware_pcrs"),
                    format!(
                        "PCR {p} is not among the quoted pcrs, so its log could not be trusted"
                    ),
                ));
            }
            let allowed_digests = c
                .allowed_digests
                .iter()
                .map(|d| hex_digest(&f("allowed_digests"), d, 32))
                .collect::<Result<_, _>>()?;
            let mut pcr_values = BTreeMap::new();
            for (k, v) in &c.pcr_values {
                let p: u8 = k
                    .parse()
                    .ok()
                    .filter(|p| usize::from(*p) < PCR_COUNT)
                    .ok_or_else(|| bad(f("pcr_values"), format!("{k:?} is not a PCR number")))?;
                if !pcrs.contains(&p) {
                    return Err(bad(
                        f("pcr_values"),
                        format!("PCR {p} is not among the quoted pcrs"),
                    ));
                }
                pcr_values.insert(p, hex_digest(&f("pcr_values"), v, bank.size())?);
            }
            let interval = match c.interval.as_deref() {
                None => 600,
                Some(s) => parse_duration(s).ok_or_else(|| {
                    bad(f("interval"), format!("{s:?} is not a duration like 10m"))
                })?,
            };
            let mut quarantine_on = Vec::new();
            for t in &c.quarantine_on {
                let t = match t.as_str() {
                    "untrusted" => Trigger::Untrusted,
                    "stale" => Trigger::Stale,
                    "signer_alert" => Trigger::SignerAlert,
                    other => {
                        return Err(bad(
                            f("quarantine_on"),
                            format!("{other:?}: one of untrusted, stale, signer_alert"),
                        ))
                    }
                };
                if !quarantine_on.contains(&t) {
                    quarantine_on.push(t);
                }
            }
            let stale_grace = match c.stale_grace.as_deref() {
                None | Some("0") => 0,
                Some(s) => parse_duration(s).ok_or_else(|| {
                    bad(f("stale_grace"), format!("{s:?} is not a duration like 5m"))
                })?,
            };
            let known_good = match c.known_good {
                None => None,
                Some(k) => {
                    hex_digest(&f("known_good"), &k, 32)?;
                    Some(k)
                }
            };
            classes.push(ClassPolicy {
                name: c.name,
                bank,
                pcrs,
                firmware_pcrs,
                allowed_digests,
                pcr_values,
                interval,
                quarantine_on,
                stale_grace,
                known_good,
            });
        }
        Ok(Policy { classes })
    }

    /// The policy of a device class.
    pub fn class(&self, name: &str) -> Option<&ClassPolicy> {
        self.classes.iter().find(|c| c.name == name)
    }
}
