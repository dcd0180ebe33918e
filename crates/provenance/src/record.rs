//! What the provenance store keeps about a registered bundle, split into what operational
//! consumers may see (digests, device class, versions) and the details that identify
//! suppliers, builders, sources and build hosts.
//!
//! [`Record::from_bundle`] checks that the bundle is self-consistent (every envelope verifies
//! with the bundle's own keys or signing certificate, every statement is about the same
//! image) before reading anything. Trust decisions stay with the device's policy.

use crate::bundle::Bundle;
use crate::dsse::INTOTO_PAYLOAD_TYPE;
use crate::keys::PublicKey;
use crate::statement::{self, Firmware, Statement};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a bundle cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

fn bad(s: impl Into<String>) -> RecordError {
    RecordError(s.into())
}

/// A lineage edge: a parent image or component, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// sha256, lower-case hex.
    pub sha256: String,
    /// URI (detail: may name internal registries).
    pub uri: String,
    /// Name.
    pub name: String,
}

/// The operational view: enough to decide and audit installs, nothing about who built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Image digests.
    pub digest: BTreeMap<String, String>,
    /// Device class.
    pub device_class: String,
    /// Version.
    pub version: String,
    /// Security version.
    pub security_version: u64,
    /// Release channel.
    pub channel: String,
    /// Not after (RFC 3339).
    pub not_after: String,
    /// Parent/component digests (sha256).
    pub parents: Vec<String>,
}

/// The detailed view (read only with a policy on the details path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// Supplier (the firmware predicate's vendor).
    pub vendor: String,
    /// Hardware IDs.
    pub hardware_ids: Vec<String>,
    /// SLSA builder ID.
    pub builder_id: String,
    /// SLSA build type.
    pub build_type: String,
    /// Source repository and commit.
    pub source: Value,
    /// SLSA internal parameters (build hosts and the like).
    pub internal_parameters: Value,
    /// Lineage with URIs.
    pub dependencies: Vec<Dependency>,
    /// Build invocation and times.
    pub metadata: Value,
    /// Who signed: key IDs (key mode).
    pub signer_keys: Vec<String>,
    /// Who signed: certificate identity (keyless).
    pub signer_identity: Option<String>,
    /// Keyless certificate serial, hex.
    pub signer_serial: Option<String>,
    /// The signer's claimed signing time.
    pub signed_at: String,
}

/// Both views of one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Operational.
    pub summary: Summary,
    /// Detailed.
    pub details: Details,
}

impl Record {
    /// Reads a bundle after checking its signatures against its own material.
    pub fn from_bundle(b: &Bundle) -> Result<Record, RecordError> {
        let vm = &b.verification_material;
        let (keys, identity, serial) = if !vm.public_keys.is_empty() {
            let mut keys = Vec::new();
            for p in &vm.public_keys {
                let k = PublicKey::from_pem(p.as_bytes())
                    .map_err(|e| bad(format!("publicKeys: {e}")))?;
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            (keys, None, None)
        } else if let Some(leaf) = vm.certificate_chain.first() {
            let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.as_bytes())
                .map_err(|e| bad(format!("certificateChain: {e}")))?;
            let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
                .map_err(|e| bad(format!("certificateChain: {e}")))?;
            let uri = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|s| {
                    s.value.general_names.iter().find_map(|g| match g {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                });
            let key = PublicKey::from_certificate_der(&pem.contents)
                .map_err(|e| bad(format!("certificateChain: {e}")))?;
            (vec![key], uri, Some(hex::encode(cert.raw_serial())))
        } else {
            return Err(bad(
                "the bundle carries neither public keys nor a certificate chain",
            ));
        };
        let mut signer_keys = Vec::new();
        let mut statements = Vec::new();
        for (i, e) in b.dsse_envelopes.iter().enumerate() {
            let v = e
                .verify(&keys, 1)
                .map_err(|err| bad(format!("envelope {i}: {err}")))?;
            if v.payload_type != INTOTO_PAYLOAD_TYPE {
                return Err(bad(format!(
                    "envelope {i}: payloadType is not {INTOTO_PAYLOAD_TYPE}"
                )));
            }
            for id in v.key_ids {
                if !signer_keys.contains(&id) {
                    signer_keys.push(id);
                }
            }
            statements.push(
                Statement::parse(&v.payload).map_err(|err| bad(format!("envelope {i}: {err}")))?,
            );
        }
        let first = &statements[0].subject;
        if first.len() != 1 {
            return Err(bad("each statement must be about exactly one image"));
        }
        let digest = first[0].digest.clone();
        let sha = digest
            .get("sha256")
            .cloned()
            .ok_or_else(|| bad("the image subject has no sha256 digest"))?;
        if statements
            .iter()
            .any(|s| s.subject.len() != 1 || s.subject[0].digest.get("sha256") != Some(&sha))
        {
            return Err(bad("the statements are about different images"));
        }
        let find = |t: &str| statements.iter().find(|s| s.predicate_type == t);
        let fw = find(statement::FIRMWARE_V1)
            .ok_or_else(|| bad("no firmware statement"))
            .and_then(|s| Firmware::parse(&s.predicate).map_err(|e| bad(e.to_string())))?;
        let slsa = find(statement::SLSA_PROVENANCE_V1).ok_or_else(|| bad("no SLSA provenance"))?;
        let facts = statement::slsa_facts(&slsa.predicate).map_err(|e| bad(e.to_string()))?;
        let p = &slsa.predicate;
        let mut dependencies = Vec::new();
        for d in p["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(h) = d["digest"]["sha256"].as_str() {
                if h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()) {
                    dependencies.push(Dependency {
                        sha256: h.to_ascii_lowercase(),
                        uri: d["uri"].as_str().unwrap_or_default().to_string(),
                        name: d["name"].as_str().unwrap_or_default().to_string(),
                    });
                }
            }
        }
        Ok(Record {
            summary: Summary {
                digest,
                device_class: fw.device_class.clone(),
                version: fw.version.clone(),
                security_version: fw.security_version,
                channel: fw.channel.clone(),
                not_after: fw.not_after.clone(),
                parents: dependencies.iter().map(|d| d.sha256.clone()).collect(),
            },
            details: Details {
                vendor: fw.vendor,
                hardware_ids: fw.hardware_ids,
                builder_id: facts.builder_id,
                build_type: p["buildDefinition"]["buildType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                source: p["buildDefinition"]["externalParameters"]["source"].clone(),
                internal_parameters: p["buildDefinition"]["internalParameters"].clone(),
                dependencies,
                metadata: p["runDetails"]["metadata"].clone(),
                signer_keys: if identity.is_some() {
                    Vec::new()
                } else {
                    signer_keys
                },
                signer_identity: identity,
                signer_serial: serial,
                signed_at: b.signed_at.clone(),
            },
        })
    }

    /// The image's sha256.
    pub fn sha256(&self) -> &str {
        self.summary
            .digest
            .get("sha256")
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The signer IDs events are filed under: key IDs, or the certificate identity.
    pub fn signer_ids(&self) -> Vec<String> {
        match &self.details.signer_identity {
            Some(id) => vec![id.clone()],
            None => self.details.signer_keys.clone(),
        }
    }
}
