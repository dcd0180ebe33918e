//! Appraisal: a quote, its signature and an event log, against what the verifier expects (the
//! enrolled AK, the nonce it issued, the device's previous quote and anti-rollback floor) and
//! the device class's policy. The verdict is TRUSTED or UNTRUSTED with **every** failed rule
//! named, as `custos fw verify` does for images.
//!
//! Reference values for firmware come from a [`References`] implementation: the server's is
//! the provenance store, where an image is trusted when its signed, logged provenance passes
//! the firmware policy for the device's class.

use crate::eventlog::{EventLog, EV_NO_ACTION, EV_SEPARATOR};
use crate::policy::ClassPolicy;
use crate::tpm::{pcr_digest, Attest, ClockInfo, HashAlg, Public, Signature};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Rule names, stable for alerts and dashboards.
pub mod rule {
    /// The quote or its signature could not be parsed.
    pub const QUOTE_MALFORMED: &str = "quote.malformed";
    /// The enrolled AK is not a restricted, fixed signing key.
    pub const AK_ATTRIBUTES: &str = "ak.attributes";
    /// The quote was signed with SHA-1, or a hash the AK does not fix.
    pub const QUOTE_HASH: &str = "quote.hash";
    /// The signature does not verify with the device's AK.
    pub const QUOTE_SIGNATURE: &str = "quote.signature";
    /// `extraData` is not the nonce issued for this attestation.
    pub const QUOTE_NONCE: &str = "quote.nonce";
    /// The quote does not cover the bank and PCRs the policy requires.
    pub const QUOTE_PCR_SELECTION: &str = "quote.pcr_selection";
    /// The event log could not be parsed (truncated, oversized, not crypto-agile).
    pub const EVENTLOG_MALFORMED: &str = "eventlog.malformed";
    /// The PCRs replayed from the event log do not produce the quote's PCR digest.
    pub const EVENTLOG_REPLAY: &str = "eventlog.replay";
    /// A PCR the policy pins has another value.
    pub const PCR_VALUE: &str = "pcr.value";
    /// A firmware measurement that no reference value knows.
    pub const MEASUREMENT_UNKNOWN: &str = "measurement.unknown";
    /// A firmware measurement whose provenance fails the firmware policy (an unpinned key, a
    /// builder not allowed, another device class).
    pub const MEASUREMENT_UNTRUSTED: &str = "measurement.untrusted";
    /// A firmware measurement whose signing key or certificate is revoked.
    pub const MEASUREMENT_REVOKED: &str = "measurement.revoked";
    /// A firmware measurement below the device's anti-rollback floor.
    pub const MEASUREMENT_ROLLBACK: &str = "measurement.rollback";
    /// The TPM's reset or restart counter went back since the last quote.
    pub const CLOCK_RESET_COUNTER: &str = "clock.reset_counter";
    /// The TPM clock did not advance since the last quote (a replayed or stale quote).
    pub const CLOCK_STALE: &str = "clock.stale";
    /// The TPM clock advanced more than the wall clock since the last quote allows.
    pub const CLOCK_FUTURE: &str = "clock.future";
}

/// What the provenance store knows of a firmware image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferenceImage {
    /// The release's version.
    pub version: String,
    /// Its anti-rollback security version.
    pub security_version: u64,
    /// Who signed it: key IDs, or the keyless certificate's identity.
    pub signers: Vec<String>,
    /// The supplier whose trust root verified it.
    pub supplier: Option<String>,
    /// The SLSA builder that built it.
    pub builder: Option<String>,
    /// `None` when its provenance passes the firmware policy for the class asked about;
    /// otherwise every failed rule, and whether one of them is a revocation.
    pub denied: Option<Denied>,
}

/// Why an image's provenance is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denied {
    /// A signing key or certificate is revoked.
    pub revoked: bool,
    /// The firmware policy's failed rules, `rule: detail`.
    pub reasons: Vec<String>,
}

/// Reference values: the provenance of a measured image, for a device class.
pub trait References {
    /// The image whose SHA-256 is `sha256`, as appraised for `device_class`; `None` when no
    /// provenance names it.
    fn image(&self, sha256: &[u8], device_class: &str) -> Option<ReferenceImage>;
}

/// Reference values gathered beforehand (a server looks them up asynchronously, then
/// appraises): SHA-256 → the image as appraised for the device's class.
impl References for BTreeMap<Vec<u8>, ReferenceImage> {
    fn image(&self, sha256: &[u8], _device_class: &str) -> Option<ReferenceImage> {
        self.get(sha256).cloned()
    }
}

/// The SHA-256 digests of the firmware measurements in `event_log` that `class` checks (the
/// ones a [`References`] implementation will be asked about), without duplicates; empty
/// when the log does not parse.
pub fn firmware_digests(event_log: &[u8], class: &ClassPolicy) -> Vec<Vec<u8>> {
    let Ok(log) = EventLog::parse(event_log) else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for e in &log.events {
        if !class.firmware_pcrs.contains(&e.pcr) || e.kind == EV_NO_ACTION || e.kind == EV_SEPARATOR
        {
            continue;
        }
        if let Some(d) = e.digests.get(&HashAlg::Sha256) {
            if !out.contains(d) && !class.allowed_digests.contains(d) {
                out.push(d.clone());
            }
        }
    }
    out
}

/// Rules whose failure means the evidence itself is not authentic (forged, replayed, not
/// from this device's TPM, or a log that is not what was measured): a verifier refuses such
/// evidence and records nothing. The other rules judge what authentic evidence shows.
pub fn is_authenticity_rule(rule: &str) -> bool {
    rule.starts_with("quote.") && rule != rule::QUOTE_PCR_SELECTION
        || rule.starts_with("eventlog.")
        || rule.starts_with("clock.")
        || rule == rule::AK_ATTRIBUTES
}

/// No reference values (only the policy's pinned digests count).
pub struct NoReferences;

impl References for NoReferences {
    fn image(&self, _: &[u8], _: &str) -> Option<ReferenceImage> {
        None
    }
}

/// The last quote the verifier accepted from this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastQuote {
    /// Its TPM clock (ms).
    pub clock: u64,
    /// Its reset count.
    pub reset_count: u32,
    /// Its restart count.
    pub restart_count: u32,
    /// When it was appraised (Unix seconds).
    pub at: i64,
}

/// What the verifier expects of this attestation.
pub struct Expected<'a> {
    /// The device's enrolled, activated attestation key.
    pub ak: &'a Public,
    /// The nonce issued for this attestation.
    pub nonce: &'a [u8],
    /// The device class's policy.
    pub class: &'a ClassPolicy,
    /// The previous accepted quote.
    pub last: Option<LastQuote>,
    /// The device's anti-rollback floor: the highest security version it has installed.
    pub floor: u64,
    /// Now (Unix seconds).
    pub now: i64,
}

/// The evidence a device sends.
pub struct Evidence<'a> {
    /// The TPMS_ATTEST bytes (`tpm2_quote -m`).
    pub attest: &'a [u8],
    /// The TPMT_SIGNATURE bytes (`tpm2_quote -s`).
    pub signature: &'a [u8],
    /// The crypto-agile event log.
    pub event_log: &'a [u8],
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The rule ([`rule`]).
    pub rule: &'static str,
    /// What exactly failed.
    pub detail: String,
}

/// A firmware measurement and what it was matched to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measured {
    /// The PCR.
    pub pcr: u8,
    /// SHA-256 of what was measured, hex.
    pub sha256: String,
    /// The release, when the provenance store knows it.
    pub version: Option<String>,
    /// Its security version.
    pub security_version: Option<u64>,
    /// `provenance`, `pinned` or `unknown`.
    pub source: &'static str,
    /// Who signed it (key IDs or a keyless identity), when the provenance store knows it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// Its supplier, when the provenance store knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// Its builder, when the provenance store knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// TRUSTED when no rule failed.
    pub trusted: bool,
    /// Every failed rule.
    pub failures: Vec<Failure>,
    /// Firmware measurements on the policy's firmware PCRs, in log order.
    pub firmware: Vec<Measured>,
    /// The quote's clock, for the next appraisal's [`LastQuote`] (absent if unparsable).
    #[serde(skip)]
    pub clock: Option<ClockInfo>,
    /// The replayed PCRs of the policy's bank (hex), when the log parsed.
    pub pcrs: BTreeMap<u8, String>,
}

impl Verdict {
    /// The rule names that failed.
    pub fn rules(&self) -> Vec<&'static str> {
        self.failures.iter().map(|f| f.rule).collect()
    }
}

/// Slack for the TPM clock against the wall clock: 10% plus 60 s.
fn clock_allowance(wall_ms: u64) -> u64 {
    wall_ms + wall_ms / 10 + 60_000
}

/// Appraises `ev` against `x` and the references. Never panics on any input.
pub fn appraise(ev: &Evidence<'_>, x: &Expected<'_>, refs: &dyn References) -> Verdict {
    let mut v = Verdict {
        trusted: false,
        failures: Vec::new(),
        firmware: Vec::new(),
        clock: None,
        pcrs: BTreeMap::new(),
    };
    macro_rules! fail {
        ($rule:expr, $detail:expr $(,)?) => {
            v.failures.push(Failure {
                rule: $rule,
                detail: $detail,
            })
        };
    }
    if !x.ak.is_attestation_key() {
        fail!(
            rule::AK_ATTRIBUTES,
            format!(
                "the enrolled key's attributes 0x{:08x} are not those of a restricted, fixed, TPM-generated signing key",
                x.ak.attributes
            ),
        );
    }
    let attest = Attest::parse(ev.attest);
    let sig = Signature::parse(ev.signature);
    let (attest, sig) = match (attest, sig) {
        (Ok(a), Ok(s)) => (a, s),
        (a, s) => {
            for e in [a.err(), s.err()].into_iter().flatten() {
                fail!(rule::QUOTE_MALFORMED, e.to_string());
            }
            v.trusted = false;
            return v;
        }
    };
    // The signature: SHA-1 never; the AK's own scheme and hash when it fixes them.
    let mut sig_ok = true;
    if sig.hash == HashAlg::Sha1 {
        sig_ok = false;
        fail!(
            rule::QUOTE_HASH,
            "the quote is signed over SHA-1, which a collision can forge; quote with -g sha256"
                .into(),
        );
    } else if let Some((_, h)) = x.ak.scheme.filter(|(_, h)| *h != sig.hash) {
        sig_ok = false;
        fail!(
            rule::QUOTE_HASH,
            format!(
                "signed with {} but the AK is fixed to {}",
                sig.hash.name(),
                h.name()
            ),
        );
    }
    if sig_ok {
        if let Err(e) = x.ak.verify(ev.attest, &sig) {
            fail!(rule::QUOTE_SIGNATURE, e.to_string());
        }
    }
    if !ct_eq(&attest.extra_data, x.nonce) {
        fail!(
            rule::QUOTE_NONCE,
            "extraData is not the nonce issued for this attestation (a replayed or foreign quote)"
                .into(),
        );
    }
    // Clock and counters.
    let c = attest.clock;
    v.clock = Some(c);
    // `clockInfo.safe` is 0 after a power loss until the TPM saves its clock again: common on
    // a base station, and no weakness here, since the nonce proves freshness and the clock is
    // compared with the last quote's only within one reset (a power loss raises the count).
    if let Some(l) = x.last {
        if c.reset_count < l.reset_count
            || (c.reset_count == l.reset_count && c.restart_count < l.restart_count)
        {
            fail!(
                rule::CLOCK_RESET_COUNTER,
                format!(
                    "reset/restart count {}/{} is below the last quote's {}/{}",
                    c.reset_count, c.restart_count, l.reset_count, l.restart_count
                ),
            );
        } else if c.reset_count == l.reset_count {
            if c.clock <= l.clock {
                fail!(
                    rule::CLOCK_STALE,
                    format!(
                        "the TPM clock ({} ms) did not advance since the last quote ({} ms)",
                        c.clock, l.clock
                    ),
                );
            } else {
                let wall = u64::try_from(x.now.saturating_sub(l.at)).unwrap_or(0) * 1000;
                if c.clock - l.clock > clock_allowance(wall) {
                    fail!(
                        rule::CLOCK_FUTURE,
                        format!(
                            "the TPM clock advanced {} ms while {} ms passed",
                            c.clock - l.clock,
                            wall
                        ),
                    );
                }
            }
        }
    }
    // The selection must cover the policy's bank and PCRs.
    let bank = x.class.bank;
    let quoted: Vec<u8> = attest
        .pcr_select
        .iter()
        .filter(|s| s.hash == bank)
        .flat_map(|s| s.pcrs.iter().copied())
        .collect();
    let missing: Vec<String> = x
        .class
        .pcrs
        .iter()
        .filter(|p| !quoted.contains(p))
        .map(u8::to_string)
        .collect();
    if !missing.is_empty() {
        fail!(
            rule::QUOTE_PCR_SELECTION,
            format!(
                "the quote does not cover {} PCR(s) {}",
                bank.name(),
                missing.join(", ")
            ),
        );
    }
    // The event log, replayed, must give the quoted digest.
    let log = match EventLog::parse(ev.event_log) {
        Ok(l) => l,
        Err(e) => {
            fail!(rule::EVENTLOG_MALFORMED, e.to_string());
            v.trusted = v.failures.is_empty();
            return v;
        }
    };
    let pcrs = log.replay();
    let digest = pcr_digest(sig.hash, &attest.pcr_select, |h, p| {
        pcrs.get(&h).map(|b| b[usize::from(p)].clone())
    });
    match digest {
        None => fail!(
            rule::EVENTLOG_REPLAY,
            "the quote selects a bank the event log does not record".into(),
        ),
        Some(d) if d != attest.pcr_digest => fail!(
            rule::EVENTLOG_REPLAY,
            "the PCRs replayed from the event log do not match the quote's PCR digest (the log is not what was measured)".into(),
        ),
        Some(_) => {}
    }
    if let Some(b) = pcrs.get(&bank) {
        for &p in &x.class.pcrs {
            v.pcrs.insert(p, hex::encode(&b[usize::from(p)]));
        }
        for (p, want) in &x.class.pcr_values {
            if &b[usize::from(*p)] != want {
                fail!(
                    rule::PCR_VALUE,
                    format!(
                        "PCR {p} is {}, the policy pins {}",
                        hex::encode(&b[usize::from(*p)]),
                        hex::encode(want)
                    ),
                );
            }
        }
    }
    // Firmware measurements.
    for e in &log.events {
        if !x.class.firmware_pcrs.contains(&e.pcr)
            || e.kind == EV_NO_ACTION
            || e.kind == EV_SEPARATOR
        {
            continue;
        }
        let Some(d) = e.digests.get(&HashAlg::Sha256) else {
            fail!(
                rule::MEASUREMENT_UNKNOWN,
                format!(
                    "a measurement in PCR {} has no SHA-256 digest to look up",
                    e.pcr
                ),
            );
            continue;
        };
        let hexd = hex::encode(d);
        let mut m = Measured {
            pcr: e.pcr,
            sha256: hexd.clone(),
            version: None,
            security_version: None,
            source: "unknown",
            signers: Vec::new(),
            supplier: None,
            builder: None,
        };
        if x.class.allowed_digests.iter().any(|a| a == d) {
            m.source = "pinned";
        } else if let Some(img) = refs.image(d, &x.class.name) {
            m.source = "provenance";
            m.version = Some(img.version.clone());
            m.security_version = Some(img.security_version);
            m.signers = img.signers.clone();
            m.supplier = img.supplier.clone();
            m.builder = img.builder.clone();
            match &img.denied {
                Some(den) if den.revoked => fail!(
                    rule::MEASUREMENT_REVOKED,
                    format!("image {hexd} ({}): {}", img.version, den.reasons.join("; ")),
                ),
                Some(den) => fail!(
                    rule::MEASUREMENT_UNTRUSTED,
                    format!("image {hexd} ({}): {}", img.version, den.reasons.join("; ")),
                ),
                None if img.security_version < x.floor => fail!(
                    rule::MEASUREMENT_ROLLBACK,
                    format!(
                        "image {hexd} ({}) has security version {}, below the device's floor {}",
                        img.version, img.security_version, x.floor
                    ),
                ),
                None => {}
            }
        } else {
            fail!(
                rule::MEASUREMENT_UNKNOWN,
                format!(
                    "PCR {} measured {hexd}, which no signed firmware for {} and no pinned digest names",
                    e.pcr, x.class.name
                ),
            );
        }
        v.firmware.push(m);
    }
    v.trusted = v.failures.is_empty();
    v
}

/// Constant-time equality (a nonce is not secret, but comparing it in constant time costs
/// nothing and keeps the habit).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
