//! The Custos provenance bundle: one JSON file that travels with an image. It carries the DSSE
//! envelopes (SLSA provenance and the firmware statement), what identifies the signer (a key
//! ID, or the certificate chain of a keyless signature), and transparency-log entries (filled
//! in by the log; empty until then).

use crate::dsse::{DsseError, Envelope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The bundle's media type.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.custos.provenance.bundle.v1+json";

/// Largest bundle accepted (bytes).
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;

/// Why a bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// Not a bundle (truncated, wrong media type, unknown fields, …).
    #[error("not a Custos provenance bundle: {0}")]
    Malformed(String),
    /// An envelope inside is malformed.
    #[error("envelope {index}: {source}")]
    Envelope {
        /// Position in `dsseEnvelopes`.
        index: usize,
        /// The envelope's problem.
        source: DsseError,
    },
}

/// Who signed: keys (PEM `PUBLIC KEY`, which a policy pins by fingerprint), or a short-lived
/// certificate (chain, leaf first, PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationMaterial {
    /// The signing keys (PEM). A key is trusted only if the policy pins its fingerprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// The signing certificate and its issuers, leaf first (keyless signing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_chain: Vec<String>,
}

/// A provenance bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_MEDIA_TYPE`].
    pub media_type: String,
    /// The signed statements.
    pub dsse_envelopes: Vec<Envelope>,
    /// The signer's identity material.
    pub verification_material: VerificationMaterial,
    /// When the signer says it signed (RFC 3339). A transparency-log entry's integrated time
    /// supersedes it once present.
    pub signed_at: String,
    /// Transparency-log inclusion proofs and checkpoints.
    #[serde(default)]
    pub tlog_entries: Vec<Value>,
}

impl Bundle {
    /// Parses a bundle, refusing oversized, truncated or unknown input.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge);
        }
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if b.media_type != BUNDLE_MEDIA_TYPE {
            return Err(BundleError::Malformed(format!(
                "mediaType {:?} is not {BUNDLE_MEDIA_TYPE}",
                b.media_type
            )));
        }
        if b.dsse_envelopes.is_empty() || b.dsse_envelopes.len() > 8 {
            return Err(BundleError::Malformed(
                "dsseEnvelopes must hold 1 to 8 envelopes".into(),
            ));
        }
        for (index, e) in b.dsse_envelopes.iter().enumerate() {
            e.check_shape()
                .map_err(|source| BundleError::Envelope { index, source })?;
        }
        if crate::statement::rfc3339(&b.signed_at).is_none() {
            return Err(BundleError::Malformed(
                "signedAt must be an RFC 3339 time".into(),
            ));
        }
        Ok(b)
    }

    /// Serialized, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
