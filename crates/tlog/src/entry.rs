//! The format of Custos log entries: what the server records for each trust event.
//!
//! An entry is one compact JSON object, `{"v":1,"time":<unix seconds>,"event":{"type":…}}`,
//! written by the server itself (no API appends caller-supplied bytes). Its leaf hash is
//! RFC 6962's `SHA-256(0x00 ‖ entry bytes)`, so a verifier hashes the bytes exactly as served;
//! the JSON never needs re-canonicalising.
//!
//! Each event is a digest plus the minimal, non-secret metadata a monitor needs. No private
//! key, token, secret ID, CSR or certificate body is ever logged; certificates appear by their
//! SHA-256 only.
//!
//! | `type` | fields |
//! |---|---|
//! | `pki.issue` | `mount`, `issuer`, `role`, `serial`, `not_after`, `cert_sha256`, `nf_types`, `requester` |
//! | `pki.ca` | `mount`, `op` (`root.generate`, `sign-intermediate`, `intermediate.set-signed`, `import`), `serial`, `subject`, `issuer` (RFC 4514 names, at most 1,024 characters), `not_after`, `cert_sha256` (of the DER), `is_ca`, `requester` |
//! | `pki.revoke` | `mount`, `serial`, `requester` |
//! | `pki.role` | `mount`, `role`, `op` (`write`/`delete`), `config_sha256` (absent on delete), `requester` |
//! | `acl.policy` | `name`, `op`, `policy_sha256` (absent on delete), `requester` |
//! | `fw.sign` | `mount`, `image_sha256`, `device_class`, `version`, `builder` (the SLSA builder ID), `signers` (key IDs, or the keyless identity), `envelopes` (`payload_type`, `payload_sha256`), `requester` |
//! | `nrf.key` | `kid` (the new key's RFC 7638 thumbprint), `retired_kid` |
//! | `audit.head` | `device`, `lines`, `head` (the device's last chain hash) |
//! | `attest.device` | `mount`, `device`, `op` (`write`: enrolled, its AK activated; `delete`), `device_class`, `ek_sha256` (of the EK's public area), `ak_name` (hex), `requester` |
//! | `attest.status` | `mount`, `device`, `status` (`TRUSTED`/`UNTRUSTED`), `rules` (the failed ones), `firmware` (SHA-256 of each measured image), `requester` |
//! | `attest.install` | `mount`, `device`, `image_sha256`, `version`, `security_version` (the device's new anti-rollback floor when higher), `requester` |
//!
//! `time` is the log's integrated time: the sequencer sets it when the entry joins a batch.
//! `requester` is the calling token's display name (`root`, `approle`, `jwt-…`).

use serde::{Deserialize, Serialize};

/// Largest entry accepted (bytes).
pub const MAX_ENTRY_BYTES: usize = 8 << 10;

/// The entry format version.
pub const VERSION: u8 = 1;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// [`VERSION`].
    pub v: u8,
    /// Integrated time (unix seconds), set by the sequencer.
    pub time: u64,
    /// What happened.
    pub event: Event,
}

/// A firmware envelope, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeDigest {
    /// The DSSE payload type.
    pub payload_type: String,
    /// SHA-256 of the payload bytes (hex).
    pub payload_sha256: String,
}

/// `write` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// Created or replaced.
    Write,
    /// Deleted.
    Delete,
}

/// The trust events the log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[allow(missing_docs)] // the fields are described in the module's table
pub enum Event {
    /// A certificate was issued.
    #[serde(rename = "pki.issue")]
    CertIssued {
        mount: String,
        issuer: String,
        role: String,
        serial: String,
        not_after: i64,
        cert_sha256: String,
        nf_types: Vec<String>,
        requester: String,
    },
    /// A CA certificate entered a PKI mount (generated, signed for another CA, set as an
    /// intermediate's certificate, or imported). Logged before it is stored.
    #[serde(rename = "pki.ca")]
    CaCertificate {
        mount: String,
        op: String,
        serial: String,
        subject: String,
        issuer: String,
        not_after: i64,
        cert_sha256: String,
        is_ca: bool,
        requester: String,
    },
    /// A certificate was revoked.
    #[serde(rename = "pki.revoke")]
    CertRevoked {
        mount: String,
        serial: String,
        requester: String,
    },
    /// A PKI role was written or deleted.
    #[serde(rename = "pki.role")]
    RoleChanged {
        mount: String,
        role: String,
        op: ChangeOp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_sha256: Option<String>,
        requester: String,
    },
    /// An ACL policy was written or deleted.
    #[serde(rename = "acl.policy")]
    PolicyChanged {
        name: String,
        op: ChangeOp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy_sha256: Option<String>,
        requester: String,
    },
    /// A signed firmware provenance bundle was registered.
    #[serde(rename = "fw.sign")]
    FirmwareSigned {
        mount: String,
        image_sha256: String,
        device_class: String,
        version: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        builder: String,
        signers: Vec<String>,
        envelopes: Vec<EnvelopeDigest>,
        requester: String,
    },
    /// The NRF's token-signing key was rotated in.
    #[serde(rename = "nrf.key")]
    NrfKeyRotated { kid: String, retired_kid: String },
    /// An audit device's hash-chain head.
    #[serde(rename = "audit.head")]
    AuditHead {
        device: String,
        lines: u64,
        head: String,
    },
    /// A device's TPM was enrolled (EK certificate checked, AK activated) or removed.
    #[serde(rename = "attest.device")]
    DeviceChanged {
        mount: String,
        device: String,
        op: ChangeOp,
        device_class: String,
        ek_sha256: String,
        ak_name: String,
        requester: String,
    },
    /// A device's attestation status changed.
    #[serde(rename = "attest.status")]
    AttestationChanged {
        mount: String,
        device: String,
        status: String,
        rules: Vec<String>,
        firmware: Vec<String>,
        requester: String,
    },
    /// A device reported a firmware install.
    #[serde(rename = "attest.install")]
    DeviceInstall {
        mount: String,
        device: String,
        image_sha256: String,
        version: String,
        security_version: u64,
        requester: String,
    },
    /// A device was quarantined (`op` = `quarantine`) or released (`release`).
    #[serde(rename = "attest.quarantine")]
    DeviceQuarantine {
        mount: String,
        device: String,
        op: String,
        reason: String,
        /// Serials of the certificates revoked with it (quarantine only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revoked: Vec<String>,
        requester: String,
    },
}

impl Event {
    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CertIssued { .. } => "pki.issue",
            Event::CaCertificate { .. } => "pki.ca",
            Event::CertRevoked { .. } => "pki.revoke",
            Event::RoleChanged { .. } => "pki.role",
            Event::PolicyChanged { .. } => "acl.policy",
            Event::FirmwareSigned { .. } => "fw.sign",
            Event::NrfKeyRotated { .. } => "nrf.key",
            Event::AuditHead { .. } => "audit.head",
            Event::DeviceChanged { .. } => "attest.device",
            Event::AttestationChanged { .. } => "attest.status",
            Event::DeviceInstall { .. } => "attest.install",
            Event::DeviceQuarantine { .. } => "attest.quarantine",
        }
    }

    /// Who caused it, when a caller did.
    pub fn requester(&self) -> Option<&str> {
        match self {
            Event::CertIssued { requester, .. }
            | Event::CaCertificate { requester, .. }
            | Event::CertRevoked { requester, .. }
            | Event::RoleChanged { requester, .. }
            | Event::PolicyChanged { requester, .. }
            | Event::FirmwareSigned { requester, .. }
            | Event::DeviceChanged { requester, .. }
            | Event::AttestationChanged { requester, .. }
            | Event::DeviceInstall { requester, .. }
            | Event::DeviceQuarantine { requester, .. } => Some(requester),
            Event::NrfKeyRotated { .. } | Event::AuditHead { .. } => None,
        }
    }
}

/// Why entry bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Larger than [`MAX_ENTRY_BYTES`].
    #[error("the entry is larger than {MAX_ENTRY_BYTES} bytes")]
    TooLarge,
    /// Not a Custos entry (what is wrong).
    #[error("not a Custos log entry: {0}")]
    Malformed(String),
}

impl Entry {
    /// An entry of `event` at `time`.
    pub fn new(time: u64, event: Event) -> Entry {
        Entry {
            v: VERSION,
            time,
            event,
        }
    }

    /// The bytes that are logged.
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        let b = serde_json::to_vec(self).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if b.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge);
        }
        Ok(b)
    }

    /// Parses logged bytes, refusing oversized input, unknown versions, types and fields.
    pub fn parse(bytes: &[u8]) -> Result<Entry, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge);
        }
        let e: Entry =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if e.v != VERSION {
            return Err(EntryError::Malformed(format!(
                "version {} is not {VERSION}",
                e.v
            )));
        }
        Ok(e)
    }
}
