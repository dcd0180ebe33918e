//! DSSE v1 (secure-systems-lab/dsse `protocol.md`, `envelope.md`): the pre-authentication
//! encoding, the JSON envelope, signing, and (t, n) verification that counts unique keys.

use crate::keys::{KeyError, PublicKey, Signer};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The in-toto payload type.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Largest envelope accepted (bytes of JSON).
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Most signatures an envelope may carry.
pub const MAX_SIGNATURES: usize = 16;

/// Why an envelope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")]
    TooLarge,
    /// Not the JSON envelope.
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    /// Fewer valid signatures by distinct trusted keys than the threshold.
    #[error("{valid} valid signature(s) by distinct trusted keys; {threshold} required")]
    Threshold {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// Required.
        threshold: usize,
    },
    /// A signer failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Unauthenticated hint (Custos writes the key ID); never used for trust.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// Base64 signature.
    pub sig: String,
}

/// The DSSE JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the serialized body.
    pub payload: String,
    /// How to interpret the body.
    pub payload_type: String,
    /// Signatures over the PAE.
    pub signatures: Vec<Signature>,
}

/// Decodes base64 in either alphabet, padded or not (DSSE: verifiers MUST accept either).
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let t = s.trim_end_matches('=');
    if t.contains(['-', '_']) {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(t)
            .ok()
    }
}

/// A verified envelope: the body, exactly as signed, and which keys signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The payload type.
    pub payload_type: String,
    /// The payload bytes (use these; never re-parse the envelope).
    pub payload: Vec<u8>,
    /// IDs of the distinct trusted keys with a valid signature.
    pub key_ids: Vec<String>,
}

impl Envelope {
    /// Signs `payload` of `payload_type` with each signer.
    pub fn sign(
        payload_type: &str,
        payload: &[u8],
        signers: &[&dyn Signer],
    ) -> Result<Envelope, DsseError> {
        let msg = pae(payload_type, payload);
        let mut signatures = Vec::with_capacity(signers.len());
        for s in signers {
            signatures.push(Signature {
                keyid: s.key_id(),
                sig: base64::engine::general_purpose::STANDARD.encode(s.sign(&msg)?),
            });
        }
        Ok(Envelope {
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
            payload_type: payload_type.to_string(),
            signatures,
        })
    }

    /// Parses the JSON envelope, refusing oversized or malformed input.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge);
        }
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| DsseError::Malformed(e.to_string()))?;
        e.check_shape()?;
        Ok(e)
    }

    /// Shape rules that do not need keys.
    pub fn check_shape(&self) -> Result<(), DsseError> {
        if self.signatures.is_empty() {
            return Err(DsseError::Malformed("no signatures".into()));
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(DsseError::Malformed(format!(
                "more than {MAX_SIGNATURES} signatures"
            )));
        }
        if self.payload_type.is_empty() {
            return Err(DsseError::Malformed("empty payloadType".into()));
        }
        if decode_b64(&self.payload).is_none() {
            return Err(DsseError::Malformed("payload is not base64".into()));
        }
        Ok(())
    }

    /// Verifies against `trusted` keys: at least `threshold` **distinct** keys must have a
    /// valid signature (a key that signs twice counts once). Every trusted key is tried for
    /// every signature; `keyid` is only a hint.
    pub fn verify(&self, trusted: &[PublicKey], threshold: usize) -> Result<Verified, DsseError> {
        self.check_shape()?;
        let payload = decode_b64(&self.payload)
            .ok_or_else(|| DsseError::Malformed("payload is not base64".into()))?;
        let msg = pae(&self.payload_type, &payload);
        let mut accepted: Vec<String> = Vec::new();
        for s in &self.signatures {
            let Some(sig) = decode_b64(&s.sig) else {
                continue;
            };
            // Try the hinted key first, then the rest.
            let mut order: Vec<&PublicKey> = trusted.iter().collect();
            order.sort_by_key(|k| k.key_id() != s.keyid);
            if let Some(k) = order.into_iter().find(|k| k.verify(&msg, &sig)) {
                let id = k.key_id();
                if !accepted.contains(&id) {
                    accepted.push(id);
                }
            }
        }
        if accepted.len() < threshold.max(1) {
            return Err(DsseError::Threshold {
                valid: accepted.len(),
                threshold: threshold.max(1),
            });
        }
        Ok(Verified {
            payload_type: self.payload_type.clone(),
            payload,
            key_ids: accepted,
        })
    }
}
