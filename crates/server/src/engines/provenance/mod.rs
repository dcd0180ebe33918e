//! The provenance store (mount type `provenance`): registered firmware bundles, looked up by
//! image digest, with lineage and signing events.
//!
//! Privacy is by path, so ordinary ACL policies decide who sees what:
//! * operational: `images/<sha256>` (digests, device class, versions, not-after, parent
//!   digests), `images` (LIST), `lineage/<sha256>`;
//! * detailed: `details/images/<sha256>` (supplier, builder, source, build hosts, signer),
//!   `details/bundles/<sha256>` (the bundles), `details/signers` (LIST) and
//!   `details/signers/<id>` (signing events).
//!
//! Registration (`bundles`, update) checks the bundle's own signatures before storing it;
//! whether an image is trusted is the device policy's decision (`custos fw verify`). Every
//! value is stored through the barrier (AES-256-GCM), details included.

use crate::core::barrier::{Plain, View};
use crate::core::engine::Sys;
use crate::core::engine::{Ctx, Engine, PathSpec};
use crate::core::services::{ProvenanceStore, TrustLog};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation::{self, *};
use custos_provenance::bundle::Bundle;
use custos_provenance::record::{Details, Record, Summary};
use custos_tlog::entry::{EnvelopeDigest, Event as LogEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The provenance store engine.
pub struct Provenance {
    log: Arc<dyn TrustLog>,
    /// Serialises registrations (read-modify-write of bundle lists and events).
    lock: tokio::sync::Mutex<()>,
    /// The core's handle, once unsealed (for [`ProvenanceStore`] lookups).
    sys: std::sync::OnceLock<Sys>,
}

impl Provenance {
    /// A provenance store whose registrations are logged to `log`.
    pub fn new(log: Arc<dyn TrustLog>) -> Self {
        Provenance {
            log,
            lock: tokio::sync::Mutex::new(()),
            sys: std::sync::OnceLock::new(),
        }
    }
}

/// The provenance store's part of the posture report: signing keys in use longer than
/// `key_max_age` (their first registered signature is older), and images whose bundles name
/// no builder.
#[async_trait::async_trait]
impl crate::core::services::PostureSource for Provenance {
    async fn findings(
        &self,
        _expiring_within: i64,
        key_max_age: Option<i64>,
        now: i64,
    ) -> ApiResult<Vec<crate::core::services::Finding>> {
        let sys = self.sys.get().ok_or(ApiError::Sealed)?;
        let mut out = Vec::new();
        let Some(max) = key_max_age else {
            return Ok(out);
        };
        for m in sys.mounts().await? {
            let a = sys.view(&m)?;
            for k in a.list("signer/").await? {
                let Some(v) = a.get_json::<Value>(&format!("signer/{k}")).await? else {
                    continue;
                };
                let first = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["registered_at"].as_str())
                    .filter_map(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map(|t| t.unix_timestamp())
                    .min();
                if let Some(t) = first.filter(|t| now - t > max) {
                    out.push(crate::core::services::Finding {
                        rule: "signer.key_age".into(),
                        object: format!("{} signer {}", m.path, v["id"].as_str().unwrap_or(&k)),
                        detail: format!(
                            "signing since {} ({} days), past the rotation schedule of {} days",
                            crate::core::rfc3339(t),
                            (now - t) / 86_400,
                            max / 86_400
                        ),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl ProvenanceStore for Provenance {
    async fn bundles(&self, mount_path: &str, sha256: &str) -> ApiResult<Vec<Value>> {
        let sys = self.sys.get().ok_or(ApiError::Sealed)?;
        if !is_sha256(sha256) {
            return Ok(Vec::new());
        }
        let Some(m) = sys
            .mounts()
            .await?
            .into_iter()
            .find(|m| m.path == mount_path && m.kind == "provenance")
        else {
            return Ok(Vec::new());
        };
        Ok(sys
            .view(&m)?
            .get_json::<Vec<Value>>(&format!("bundle/{sha256}"))
            .await?
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl Engine for Provenance {
    fn route(&self, sub: &str) -> Option<PathSpec> {
        route(sub.trim_end_matches('/')).map(PathSpec::new)
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        handle(self, ctx, req).await
    }

    async fn unseal(&self, sys: &Sys) -> ApiResult<()> {
        let _ = self.sys.set(sys.clone());
        Ok(())
    }
}

/// The operations each path serves, or `None` for an unknown path.
fn route(sub: &str) -> Option<&'static [Operation]> {
    let parts: Vec<&str> = sub.split('/').collect();
    Some(match parts.as_slice() {
        ["bundles"] => &[Create, Update],
        ["images"] | ["details", "signers"] => &[List],
        ["images", d] | ["lineage", d] | ["details", "images", d] | ["details", "bundles", d]
            if is_sha256(d) =>
        {
            &[Read]
        }
        ["details", "signers", id] if !id.is_empty() && id.len() <= 512 => &[Read],
        _ => return None,
    })
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A signing event filed under a signer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Event {
    image: String,
    version: String,
    device_class: String,
    signed_at: String,
    registered_at: String,
}

/// Signer IDs are key IDs (hex) or certificate identities (URIs): stored under a hash.
fn signer_key(id: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        id.as_bytes(),
    ))
}

/// Most lineage levels walked.
const MAX_DEPTH: usize = 8;
/// Most bundles kept per image.
const MAX_BUNDLES: usize = 16;

async fn handle(p: &Provenance, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let a = &ctx.view;
    let parts: Vec<&str> = ctx.sub.trim_end_matches('/').split('/').collect();
    match (parts.as_slice(), req.op) {
        (["bundles"], _) => register(p, ctx, req).await,
        (["images"], List) => Response::list(a.list("image/").await?),
        (["images", d], Read) => {
            let s: Summary = a
                .get_json(&format!("image/{d}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(serde_json::to_value(s)?))
        }
        (["lineage", d], Read) => {
            if a.get_json::<Value>(&format!("image/{d}")).await?.is_none() {
                return Err(ApiError::NotFound);
            }
            let mut seen = Vec::new();
            Ok(Response::data(lineage(a, d, 0, &mut seen).await?))
        }
        (["details", "images", d], Read) => {
            let s: Details = a
                .get_json(&format!("detail/{d}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(serde_json::to_value(s)?))
        }
        (["details", "bundles", d], Read) => {
            let list: Vec<Value> = a
                .get_json(&format!("bundle/{d}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(json!({ "bundles": list })))
        }
        (["details", "signers"], List) => {
            let mut ids = Vec::new();
            for k in a.list("signer/").await? {
                if let Some(v) = a.get_json::<Value>(&format!("signer/{k}")).await? {
                    if let Some(id) = v["id"].as_str() {
                        ids.push(id.to_string());
                    }
                }
            }
            ids.sort();
            Response::list(ids)
        }
        (["details", "signers", id], Read) => {
            let v: Value = a
                .get_json(&format!("signer/{}", signer_key(id)))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(v))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The bundle without its log receipts: what registration compares and logs.
fn unlogged(bundle: &Bundle) -> Bundle {
    Bundle {
        tlog_entries: Vec::new(),
        ..bundle.clone()
    }
}

async fn register(p: &Provenance, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (a, m, who) = (&ctx.view, ctx.mount, ctx.requester());
    let raw = match req.data.get("bundle") {
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(v @ Value::Object(_)) => serde_json::to_vec(v)?,
        _ => {
            return Err(ApiError::bad(
                "bundle: a provenance bundle (JSON object or string) is required",
            ))
        }
    };
    let bundle = Bundle::parse(&raw).map_err(|e| ApiError::bad(format!("bundle: {e}")))?;
    let rec = Record::from_bundle(&bundle).map_err(|e| ApiError::bad(format!("bundle: {e}")))?;
    let d = rec.sha256().to_string();
    let now = crate::core::rfc3339(crate::core::now_unix());
    let _g = p.lock.lock().await;
    let mut bundles: Vec<Value> = a
        .get_json(&format!("bundle/{d}"))
        .await?
        .unwrap_or_default();
    let bare = unlogged(&bundle);
    if let Some(known) = bundles.iter().find(|v| {
        serde_json::from_value::<Bundle>((*v).clone()).is_ok_and(|k| unlogged(&k) == bare)
    }) {
        return Ok(Response::data(json!({
            "sha256": d, "registered": false, "reason": "already registered",
            "tlog_entries": known.get("tlogEntries").cloned().unwrap_or(json!([])),
        })));
    }
    if let Some(existing) = a.get_json::<Summary>(&format!("image/{d}")).await? {
        if existing != rec.summary {
            return Err(ApiError::bad(format!(
                "bundle: image {d} is already registered with other facts: {}; every bundle of one image must state the same facts",
                summary_diff(&existing, &rec.summary).join(", ")
            )));
        }
    }
    if bundles.len() >= MAX_BUNDLES {
        return Err(ApiError::bad(format!(
            "bundle: image {d} already has {MAX_BUNDLES} bundles"
        )));
    }
    // The signing event is durable in the transparency log before the registration is, so no
    // registered bundle is ever missing from the log.
    let envelopes = bundle
        .dsse_envelopes
        .iter()
        .map(|e| EnvelopeDigest {
            payload_type: e.payload_type.clone(),
            payload_sha256: custos_provenance::dsse::decode_b64(&e.payload)
                .map(|p| crate::core::sha256_hex(&p))
                .unwrap_or_default(),
        })
        .collect();
    let index = p
        .log
        .append(LogEvent::FirmwareSigned {
            mount: m.path.clone(),
            image_sha256: d.clone(),
            device_class: rec.summary.device_class.clone(),
            version: rec.summary.version.clone(),
            builder: rec.details.builder_id.clone(),
            signers: rec.signer_ids(),
            envelopes,
            requester: who,
        })
        .await?;
    let receipt = serde_json::to_value(
        p.log
            .receipt(index, std::time::Duration::from_secs(10))
            .await?,
    )?;
    let mut logged = bare;
    logged.tlog_entries = vec![receipt.clone()];
    bundles.push(serde_json::to_value(&logged)?);
    let mut ops = vec![
        Plain::Put(format!("image/{d}"), serde_json::to_vec(&rec.summary)?),
        Plain::Put(format!("detail/{d}"), serde_json::to_vec(&rec.details)?),
        Plain::Put(format!("bundle/{d}"), serde_json::to_vec(&bundles)?),
    ];
    let event = Event {
        image: d.clone(),
        version: rec.summary.version.clone(),
        device_class: rec.summary.device_class.clone(),
        signed_at: rec.details.signed_at.clone(),
        registered_at: now,
    };
    for id in rec.signer_ids() {
        let key = format!("signer/{}", signer_key(&id));
        let mut v: Value = a
            .get_json(&key)
            .await?
            .unwrap_or_else(|| json!({"id": id, "events": []}));
        if let Some(ev) = v["events"].as_array_mut() {
            ev.push(serde_json::to_value(&event)?);
        }
        ops.push(Plain::Put(key, serde_json::to_vec(&v)?));
    }
    // One atomic, durable write: the image, its details, its bundles and the events.
    a.write(ops).await?;
    tracing::info!(image = %d, "provenance bundle registered");
    Ok(Response::data(
        json!({"sha256": d, "registered": true, "tlog_entries": [receipt]}),
    ))
}

/// image → parents → components, by digest; registered nodes carry their summary facts.
fn lineage<'a>(
    a: &'a View,
    d: &'a str,
    depth: usize,
    seen: &'a mut Vec<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Value>> + Send + 'a>> {
    Box::pin(async move {
        let s: Option<Summary> = a.get_json(&format!("image/{d}")).await?;
        let Some(s) = s else {
            return Ok(json!({"sha256": d, "registered": false}));
        };
        let mut node = json!({
            "sha256": d, "registered": true, "device_class": s.device_class,
            "version": s.version, "security_version": s.security_version,
        });
        if seen.iter().any(|x| x == d) {
            node["cycle"] = json!(true);
            return Ok(node);
        }
        seen.push(d.to_string());
        if depth >= MAX_DEPTH {
            node["truncated"] = json!(true);
            return Ok(node);
        }
        let mut parents = Vec::new();
        for p in &s.parents {
            parents.push(lineage(a, p, depth + 1, seen).await?);
        }
        node["parents"] = Value::Array(parents);
        Ok(node)
    })
}

/// The facts two summaries of one image disagree on, as `name: registered vs this bundle`.
fn summary_diff(old: &Summary, new: &Summary) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{name} {a:?} registered, {b:?} in this bundle"));
        }
    };
    cmp(
        "digests",
        format!("{:?}", old.digest),
        format!("{:?}", new.digest),
    );
    cmp(
        "device class",
        old.device_class.clone(),
        new.device_class.clone(),
    );
    cmp("version", old.version.clone(), new.version.clone());
    cmp(
        "security version",
        old.security_version.to_string(),
        new.security_version.to_string(),
    );
    cmp("channel", old.channel.clone(), new.channel.clone());
    cmp("not after", old.not_after.clone(), new.not_after.clone());
    cmp("parents", old.parents.join(" "), new.parents.join(" "));
    d
}
