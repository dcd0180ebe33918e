//! The transparency log engine (a system engine at `sys/tlog/`): the server's own log of
//! trust events, offered to the other engines and the core as the
//! [`TrustLog`](crate::core::services::TrustLog) sink, and its public read API (C2SP tiles
//! and checkpoint, proofs, receipts).
//!
//! The log is part of the trusted base: its storage view is the barrier's root (it keeps its
//! key at `core/tlog-key` and its tiles under `sys/tlog/`). See [`log`] for sequencing.

mod cosign;
mod log;
mod store;

use crate::config::TlogWitness;
use crate::core::barrier::Scoped;
use crate::core::engine::{Ctx, Engine, PathSpec, Sys};
use crate::core::services::TrustLog;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation::Read;
use custos_tlog::entry::Event;
use custos_tlog::merkle::Hash;
use custos_tlog::receipt::{encode_hashes, Receipt};
use custos_tlog::tile::{TileId, WIDTH};
use log::Log;
pub use log::{OpenStats, MAX_BATCH};
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The transparency log engine. The log itself exists while unsealed.
pub struct TlogEngine {
    /// Empty: derived at creation from the cluster name and the key.
    origin: String,
    cluster: String,
    witnesses: Vec<TlogWitness>,
    /// Cosignatures a checkpoint needs before it is served at `checkpoint`.
    threshold: usize,
    log: RwLock<Option<Arc<Log>>>,
}

impl TlogEngine {
    /// A log created with `origin` (an existing log keeps its own; empty: one derived from
    /// the cluster name and the log's key, unique per log), cosigned by `witnesses`.
    pub fn new(origin: String, witnesses: Vec<TlogWitness>) -> Self {
        TlogEngine {
            cluster: "custos".into(),
            threshold: witnesses.len(),
            origin,
            witnesses,
            log: RwLock::new(None),
        }
    }

    /// The cluster name a derived origin carries.
    pub fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = cluster.to_string();
        self
    }

    /// Serves at `checkpoint` only checkpoints with at least `n` witness cosignatures
    /// (0 keeps the default: every witness).
    pub fn with_witness_threshold(mut self, n: usize) -> Self {
        if n > 0 {
            self.threshold = n.min(self.witnesses.len());
        }
        self
    }

    fn log(&self) -> ApiResult<Arc<Log>> {
        self.log
            .read()
            .ok()
            .and_then(|l| l.clone())
            .ok_or_else(|| ApiError::Unavailable("transparency log is not open".into()))
    }

    /// Appends `event` exactly as the server's own handlers do; its index once durable.
    /// For in-process harnesses (`custos bench --tlog`): the HTTP API has no append endpoint.
    pub async fn append(&self, event: Event) -> ApiResult<u64> {
        self.log()?.append(event).await
    }

    /// The published tree size.
    pub fn size(&self) -> ApiResult<u64> {
        Ok(self.log()?.head()?.size)
    }

    /// An inclusion proof from the published tree (in-process harnesses).
    pub async fn inclusion(&self, index: u64, size: u64) -> ApiResult<Vec<Hash>> {
        self.log()?.inclusion(index, size).await
    }

    /// A consistency proof between published sizes (in-process harnesses).
    pub async fn consistency(&self, old: u64, new: u64) -> ApiResult<Vec<Hash>> {
        self.log()?.consistency(old, new).await
    }

    /// Storage reads by the log since it was opened (at the last unseal), and what opening
    /// it cost.
    pub fn reads(&self) -> ApiResult<(u64, OpenStats)> {
        Ok(self.log()?.reads())
    }
}

#[async_trait::async_trait]
impl TrustLog for TlogEngine {
    async fn append(&self, event: Event) -> ApiResult<u64> {
        self.log()?.append(event).await
    }

    async fn append_with(&self, event: Event, with: Scoped) -> ApiResult<u64> {
        self.log()?.append_with(event, Some(with)).await
    }

    async fn receipt(&self, index: u64, wait: Duration) -> ApiResult<Receipt> {
        self.log()?.witnessed_receipt(index, wait).await
    }
}

#[async_trait::async_trait]
impl Engine for TlogEngine {
    fn storage_root(&self) -> &'static str {
        ""
    }

    /// Unauthenticated, like a CA's CRL: the log is public by design and holds nothing
    /// secret.
    fn route(&self, sub: &str) -> Option<PathSpec> {
        is_route(sub).then_some(PathSpec::new(&[Read]).open())
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        handle(&*self.log()?, ctx.sub, req).await
    }

    /// Opens the log: creates its key and empty checkpoint on first use, rebuilds the tree
    /// (refusing to serve a state that does not match its checkpoint) and starts the
    /// sequencer.
    async fn unseal(&self, sys: &Sys) -> ApiResult<()> {
        let log = Log::open(
            sys.root_view()?,
            &self.origin,
            &self.cluster,
            &self.witnesses,
            self.threshold,
        )
        .await?;
        if let Ok(mut l) = self.log.write() {
            *l = Some(log);
        }
        Ok(())
    }

    fn seal(&self) {
        if let Ok(mut l) = self.log.write() {
            *l = None;
        }
    }

    /// The last entries before the process exits: each audit device's chain head, under a
    /// signed checkpoint, durable before this returns.
    async fn shutdown(&self, sys: &Sys) -> ApiResult<()> {
        let n = self.log()?.log_audit_heads(sys).await?;
        tracing::info!(
            audit_heads = n,
            size = self.size()?,
            "transparency log closed with a signed checkpoint"
        );
        Ok(())
    }

    /// The log's size and what opening it cost (start-up must not grow with the log).
    fn metrics(&self) -> String {
        let Ok(log) = self.log() else {
            return String::new();
        };
        let (reads, o) = log.reads();
        let size = log.head().map(|h| h.size).unwrap_or(0);
        format!(
            "# HELP custos_tlog_size Entries in the transparency log (published checkpoint).\n\
             # TYPE custos_tlog_size gauge\ncustos_tlog_size {size}\n\
             # HELP custos_tlog_open_reads Storage reads the log made when it was last opened.\n\
             # TYPE custos_tlog_open_reads gauge\ncustos_tlog_open_reads {}\n\
             # HELP custos_tlog_open_seconds Time the log took to open at the last unseal.\n\
             # TYPE custos_tlog_open_seconds gauge\ncustos_tlog_open_seconds {:.6}\n\
             # HELP custos_tlog_open_converted_leaves Leaves rehashed at the last unseal to store an older log's tiles.\n\
             # TYPE custos_tlog_open_converted_leaves gauge\ncustos_tlog_open_converted_leaves {}\n\
             # HELP custos_tlog_storage_reads_total Storage reads by the log (tiles and bundles beyond its caches) since it opened.\n\
             # TYPE custos_tlog_storage_reads_total counter\ncustos_tlog_storage_reads_total {reads}\n",
            o.reads, o.seconds, o.converted
        )
    }

    /// Logs the chain head of every audit device that wrote since the last tick.
    async fn periodic(&self, sys: &Sys) -> ApiResult<()> {
        self.log()?.log_audit_heads(sys).await?;
        Ok(())
    }
}

/// Whether `sub` (below `sys/tlog/`) is a path of the log's read API.
fn is_route(sub: &str) -> bool {
    matches!(
        sub,
        "checkpoint" | "head" | "key" | "proof/inclusion" | "proof/consistency"
    ) || sub.starts_with("tile/")
        || sub.strip_prefix("entry/").is_some_and(|i| {
            !i.is_empty() && i.len() <= 20 && i.bytes().all(|b| b.is_ascii_digit())
        })
}

fn u64_field(req: &Request, k: &str) -> ApiResult<Option<u64>> {
    match req.str_field(k) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{k}: must be a non-negative integer"))),
    }
}

/// Full tiles never change: cache them for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Checkpoints and partial tiles change as the log grows.
const REVALIDATE: &str = "no-cache";

/// The log's read API: C2SP tiles and checkpoint (raw bodies with cache headers), the proof
/// API and receipts (JSON). Unauthenticated, like a CA's CRL: the log is public by design and
/// holds nothing secret.
async fn handle(log: &Log, sub: &str, req: &Request) -> ApiResult<Response> {
    match sub {
        "checkpoint" => {
            let note = log.served_checkpoint()?;
            Ok(Response {
                raw: Some(("text/plain; charset=utf-8", note.as_bytes().to_vec().into())),
                cache_control: Some(REVALIDATE),
                ..Default::default()
            })
        }
        "head" => {
            let note = log.head()?.note.clone();
            Ok(Response {
                raw: Some(("text/plain; charset=utf-8", note.as_bytes().to_vec().into())),
                cache_control: Some(REVALIDATE),
                ..Default::default()
            })
        }
        "key" => Ok(Response::data(json!({
            "origin": log.origin,
            "vkey": log.vkey(),
        }))),
        "proof/inclusion" => {
            let head = log.head()?;
            let index = u64_field(req, "index")?.ok_or_else(|| ApiError::bad("index: required"))?;
            let size = u64_field(req, "size")?.unwrap_or(head.size);
            let proof = log.inclusion(index, size).await?;
            Ok(Response::data(json!({
                "index": index,
                "size": size,
                "inclusion_proof": encode_hashes(&proof),
            })))
        }
        "proof/consistency" => {
            let head = log.head()?;
            let old = u64_field(req, "old")?.ok_or_else(|| ApiError::bad("old: required"))?;
            let new = u64_field(req, "new")?.unwrap_or(head.size);
            let proof = log.consistency(old, new).await?;
            Ok(Response::data(json!({
                "old": old,
                "new": new,
                "consistency_proof": encode_hashes(&proof),
            })))
        }
        _ => {
            if let Some(i) = sub.strip_prefix("entry/") {
                let index: u64 = i
                    .parse()
                    .map_err(|_| ApiError::bad("index: must be a non-negative integer"))?;
                let r = log.receipt(index).await?;
                return Ok(Response::data(serde_json::to_value(r)?));
            }
            let id = TileId::parse(sub).map_err(|e| ApiError::bad(format!("tile path: {e}")))?;
            let bytes = log.tile(&id).await?.ok_or(ApiError::NotFound)?;
            Ok(Response {
                raw: Some(("application/octet-stream", bytes.into())),
                cache_control: Some(if u64::from(id.width) == WIDTH {
                    IMMUTABLE
                } else {
                    REVALIDATE
                }),
                ..Default::default()
            })
        }
    }
}
