//! in-toto Statement v1 (`in-toto/attestation` spec v1), the SLSA Provenance v1 predicate, and
//! the Custos firmware predicate.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1 predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The Custos firmware predicate type: what the image is for and its anti-rollback counter.
pub const FIRMWARE_V1: &str = "https://custos.dev/attestation/firmware/v1";

/// Why a statement or predicate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct StatementError {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> StatementError {
    StatementError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An artifact a statement is about, identified by its digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// A name (the image file name); never used for matching.
    pub name: String,
    /// Algorithm → lower-case hex digest.
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// Always [`STATEMENT_V1`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// The predicate's type URI.
    pub predicate_type: String,
    /// The predicate.
    #[serde(default)]
    pub predicate: Value,
}

/// Hex length of each digest algorithm Custos checks.
fn digest_len(alg: &str) -> Option<usize> {
    match alg {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    }
}

impl Statement {
    /// A statement about one image.
    pub fn new(subject: Subject, predicate_type: &str, predicate: Value) -> Statement {
        Statement {
            type_: STATEMENT_V1.into(),
            subject: vec![subject],
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// Parses and checks a payload: `_type`, a non-empty subject list whose sha256/sha512
    /// digests are well-formed lower-case hex, a predicate type.
    pub fn parse(payload: &[u8]) -> Result<Statement, StatementError> {
        let s: Statement =
            serde_json::from_slice(payload).map_err(|e| bad("statement", e.to_string()))?;
        if s.type_ != STATEMENT_V1 {
            return Err(bad("_type", format!("{:?} is not {STATEMENT_V1}", s.type_)));
        }
        if s.subject.is_empty() {
            return Err(bad("subject", "is empty"));
        }
        for (i, sub) in s.subject.iter().enumerate() {
            if sub.digest.is_empty() {
                return Err(bad(&format!("subject[{i}].digest"), "is empty"));
            }
            for (alg, hex) in &sub.digest {
                if let Some(n) = digest_len(alg) {
                    if hex.len() != n
                        || !hex
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    {
                        return Err(bad(
                            &format!("subject[{i}].digest.{alg}"),
                            format!("must be {n} lower-case hex digits"),
                        ));
                    }
                }
            }
        }
        if s.predicate_type.is_empty() {
            return Err(bad("predicateType", "is empty"));
        }
        Ok(s)
    }

    /// True if some subject's digests include every `(alg, hex)` of `image` that the subject
    /// carries, and at least one of the `required` algorithms matches. A subject listing a
    /// digest that differs from the image's never matches.
    pub fn covers(&self, image: &BTreeMap<String, String>, required: &[String]) -> bool {
        self.subject.iter().any(|s| {
            let conflicts = s
                .digest
                .iter()
                .any(|(a, h)| image.get(a).is_some_and(|i| i != h));
            let all_required = !required.is_empty()
                && required.iter().all(
                    |a| matches!((s.digest.get(a), image.get(a)), (Some(x), Some(y)) if x == y),
                );
            !conflicts && all_required
        })
    }
}

/// A SLSA ResourceDescriptor (lineage entry): a parent image or a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    /// URI, e.g. `oci://registry/base-image` or `git+https://…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Digests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
}

/// Inputs for a SLSA Provenance v1 predicate.
#[derive(Debug, Clone, Default)]
pub struct SlsaInputs {
    /// `runDetails.builder.id`.
    pub builder_id: String,
    /// `buildDefinition.buildType`.
    pub build_type: String,
    /// Source repository (`externalParameters.source.uri`).
    pub source_repo: String,
    /// Source commit (`externalParameters.source.digest.gitCommit`).
    pub commit: String,
    /// Parent images and components.
    pub dependencies: Vec<ResourceDescriptor>,
    /// `metadata.invocationId`.
    pub invocation_id: String,
    /// `metadata.startedOn` (RFC 3339).
    pub started_on: String,
    /// `metadata.finishedOn` (RFC 3339).
    pub finished_on: String,
    /// `internalParameters` (build host etc.; private, see the provenance store).
    pub internal: Value,
}

/// Builds the SLSA Provenance v1 predicate.
pub fn slsa_provenance(i: &SlsaInputs) -> Value {
    let mut metadata = serde_json::Map::new();
    for (k, v) in [
        ("invocationId", &i.invocation_id),
        ("startedOn", &i.started_on),
        ("finishedOn", &i.finished_on),
    ] {
        if !v.is_empty() {
            metadata.insert(k.into(), Value::String(v.clone()));
        }
    }
    let mut def = serde_json::json!({
        "buildType": i.build_type,
        "externalParameters": {
            "source": {"uri": i.source_repo, "digest": {"gitCommit": i.commit}},
        },
        "resolvedDependencies": i.dependencies,
    });
    if !i.internal.is_null() {
        def["internalParameters"] = i.internal.clone();
    }
    serde_json::json!({
        "buildDefinition": def,
        "runDetails": {
            "builder": {"id": i.builder_id},
            "metadata": metadata,
        },
    })
}

/// The facts a verifier reads from a SLSA predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlsaFacts {
    /// `runDetails.builder.id`.
    pub builder_id: String,
    /// `runDetails.metadata.finishedOn`, unix seconds, if present.
    pub finished_on: Option<i64>,
    /// `buildDefinition.externalParameters.source.uri`, if present.
    pub source_repo: Option<String>,
    /// `…source.digest.gitCommit`, if present.
    pub commit: Option<String>,
}

/// Reads the builder ID and finish time of a SLSA Provenance v1 predicate.
pub fn slsa_facts(p: &Value) -> Result<SlsaFacts, StatementError> {
    let builder_id = p["runDetails"]["builder"]["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("runDetails.builder.id", "is required"))?
        .to_string();
    if !p["buildDefinition"]["buildType"].is_string() {
        return Err(bad("buildDefinition.buildType", "is required"));
    }
    let finished_on = match p["runDetails"]["metadata"]["finishedOn"].as_str() {
        None => None,
        Some(t) => Some(
            rfc3339(t)
                .ok_or_else(|| bad("runDetails.metadata.finishedOn", "must be an RFC 3339 time"))?,
        ),
    };
    let source = &p["buildDefinition"]["externalParameters"]["source"];
    Ok(SlsaFacts {
        builder_id,
        finished_on,
        source_repo: source["uri"].as_str().map(str::to_string),
        commit: source["digest"]["gitCommit"].as_str().map(str::to_string),
    })
}

/// Parses an RFC 3339 time into unix seconds.
pub fn rfc3339(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp())
}

/// Formats unix seconds as RFC 3339 (UTC).
pub fn to_rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The Custos firmware predicate ([`FIRMWARE_V1`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Firmware {
    /// The supplier.
    pub vendor: String,
    /// The device class the image is built for.
    pub device_class: String,
    /// Hardware IDs (board revisions) the image supports.
    #[serde(default)]
    pub hardware_ids: Vec<String>,
    /// Human-readable version.
    pub version: String,
    /// Monotonically increasing anti-rollback counter (as SUIT's sequence number).
    pub security_version: u64,
    /// Release channel (e.g. `stable`, `beta`).
    #[serde(default)]
    pub channel: String,
    /// The image must not be installed after this time (RFC 3339).
    pub not_after: String,
}

impl Firmware {
    /// Parses and checks the predicate.
    pub fn parse(v: &Value) -> Result<Firmware, StatementError> {
        let f: Firmware = serde_json::from_value(v.clone())
            .map_err(|e| bad("predicate", format!("not a firmware predicate: {e}")))?;
        for (k, val) in [
            ("vendor", &f.vendor),
            ("deviceClass", &f.device_class),
            ("version", &f.version),
        ] {
            if val.is_empty() || val.len() > 256 {
                return Err(bad(k, "must be 1 to 256 characters"));
            }
        }
        if rfc3339(&f.not_after).is_none() {
            return Err(bad("notAfter", "must be an RFC 3339 time"));
        }
        Ok(f)
    }

    /// `notAfter` in unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        rfc3339(&self.not_after).unwrap_or(i64::MIN)
    }
}
