//! # custos-provenance
//!
//! Firmware provenance without I/O: what `custos fw sign`, `custos fw verify` and
//! `custos fw install` decide, and the formats they write, exactly as published:
//!
//! * [`dsse`]: DSSE v1 pre-authentication encoding and JSON envelope; (t, n) verification
//!   counts **distinct keys**, never signatures;
//! * [`statement`]: in-toto Statement v1, SLSA Provenance v1, and the Custos firmware
//!   predicate (vendor, device class, hardware IDs, version, **security version**,
//!   channel, not-after);
//! * [`bundle`]: the file that travels with an image (envelopes, signer material, room for
//!   transparency-log proofs);
//! * [`keys`]: Ed25519 and ECDSA P-256 keys and the [`keys::Signer`] trait (file keys here,
//!   PKCS#11 and keyless certificates in the CLI);
//! * [`policy`] and [`verify`]: the operator's TOML policy, the device state, and the
//!   verdict listing every failed rule, with anti-rollback;
//! * [`record`]: what the server's provenance store keeps, split into the operational view
//!   and the supplier/builder details.
//!
//! Hashing the image (streamed), reading files, CRL fetching and the installer run are the
//! caller's.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod dsse;
pub mod keys;
pub mod policy;
pub mod record;
pub mod statement;
pub mod verify;

#[cfg(test)]
mod tests;

use bundle::{Bundle, VerificationMaterial, BUNDLE_MEDIA_TYPE};
use dsse::{DsseError, Envelope, INTOTO_PAYLOAD_TYPE};
use keys::Signer;
use statement::{Firmware, SlsaInputs, Statement, Subject};
use std::collections::BTreeMap;

/// What `custos fw sign` signs.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The image's file name (subject name).
    pub image_name: String,
    /// The image's digests (sha256 and sha512).
    pub digests: BTreeMap<String, String>,
    /// SLSA provenance inputs.
    pub slsa: SlsaInputs,
    /// The firmware predicate.
    pub firmware: Firmware,
    /// Signing time, unix seconds.
    pub signed_at: i64,
}

/// Builds a bundle: a SLSA provenance statement and a firmware statement about the image,
/// each in a DSSE envelope signed by every signer. `certificate_chain` (PEM, leaf first) is
/// for keyless signing; otherwise the signers' public keys go into the bundle.
pub fn sign_bundle(
    req: &SignRequest,
    signers: &[&dyn Signer],
    certificate_chain: Vec<String>,
) -> Result<Bundle, DsseError> {
    let subject = Subject {
        name: req.image_name.clone(),
        digest: req.digests.clone(),
    };
    let fw =
        serde_json::to_value(&req.firmware).map_err(|e| DsseError::Malformed(e.to_string()))?;
    let statements = [
        Statement::new(
            subject.clone(),
            statement::SLSA_PROVENANCE_V1,
            statement::slsa_provenance(&req.slsa),
        ),
        Statement::new(subject, statement::FIRMWARE_V1, fw),
    ];
    let mut envelopes = Vec::new();
    for s in &statements {
        let payload = serde_json::to_vec(s).map_err(|e| DsseError::Malformed(e.to_string()))?;
        envelopes.push(Envelope::sign(INTOTO_PAYLOAD_TYPE, &payload, signers)?);
    }
    let public_keys = if certificate_chain.is_empty() {
        let mut v: Vec<String> = signers.iter().map(|s| s.public_key().to_pem()).collect();
        v.dedup();
        v
    } else {
        Vec::new()
    };
    Ok(Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        dsse_envelopes: envelopes,
        verification_material: VerificationMaterial {
            public_keys,
            certificate_chain,
        },
        signed_at: statement::to_rfc3339(req.signed_at),
        tlog_entries: Vec::new(),
    })
}
