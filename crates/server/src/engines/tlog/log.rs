//! The transparency log the server keeps of its own trust events (`sys/tlog/`).
//!
//! **Sequencing.** Callers hand an [`Event`] to [`Log::append`] and wait. One sequencer task
//! drains the queue in batches (everything queued while the previous batch was committing, up
//! to [`MAX_BATCH`]), stamps the integrated time, appends the leaf hashes to the tree's right
//! edge, and writes in **one storage transaction** the entry bundles and hash tiles the batch
//! touched and the new signed checkpoint. Only after that transaction is durable are the
//! callers answered and the checkpoint published, so every acknowledged entry is durable and
//! every published checkpoint is on disk. A write whose outcome is unknown makes the
//! sequencer reload from disk before the next batch, so it can never extend a state the disk
//! does not have.
//!
//! **Memory and start-up do not grow with the log.** The tree is kept as C2SP hash tiles
//! ([`custos_tlog::edge`]): only its right edge (at most 255 hashes per tile level) is in
//! memory; full tiles and bundles are read from storage when a proof or a reader needs them,
//! through bounded caches. Unseal reads the checkpoint, the partial bundle and one partial
//! tile per tile level (see [`super::store`]).

use super::store::{
    self, hashes_bytes, poisoned, unavailable, Reader, Seq, CHECKPOINT_PATH, KEY_PATH, TILED_PATH,
};
use crate::core::barrier::{Plain, Scoped, View};
use crate::core::engine::Sys;
use crate::error::{ApiError, ApiResult};
use custos_tlog::edge::{self, Edge, FullTile, ProofKind, Tiles, TwoGen};
use custos_tlog::entry::Event;
use custos_tlog::merkle::{self, Hash};
use custos_tlog::note::{self, Signer, TYPE_ED25519};
use custos_tlog::receipt::{encode_hashes, Receipt};
use custos_tlog::tile::{self, TileId, WIDTH};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// Most entries sequenced in one transaction.
pub const MAX_BATCH: usize = 8192;
/// Appends waiting for the sequencer before callers are held back.
const QUEUE: usize = 65_536;
/// Full hash tiles cached for proofs and readers (each generation; 8 KiB each, so at most
/// 32 MiB).
const TILE_CACHE: usize = 2048;
/// Full entry bundles cached for readers (each generation).
const BUNDLE_CACHE: usize = 256;

#[derive(Serialize, Deserialize)]
struct StoredKey {
    origin: String,
    seed: String,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

/// The published state: the newest durable checkpoint.
#[derive(Debug)]
pub(crate) struct Head {
    /// Tree size.
    pub size: u64,
    /// The signed checkpoint note.
    pub note: Arc<str>,
}

pub(super) struct Pending {
    pub event: Event,
    /// The state change the entry records, committed with it.
    pub with: Option<Scoped>,
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// The committed partial bundle: its first index and its entries.
#[derive(Default, Clone)]
pub(super) struct Tail {
    pub start: u64,
    pub entries: Vec<Arc<[u8]>>,
}

/// What opening the log cost (reported in `sys/metrics`; start-up must not grow with the
/// log).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenStats {
    /// Storage reads while opening.
    pub reads: u64,
    /// Wall time of opening, in seconds.
    pub seconds: f64,
    /// Tree size opened.
    pub size: u64,
    /// Leaves rehashed to convert a log stored before tiles (0 but once).
    pub converted: u64,
}

/// The server's log, opened at unseal; dropped (and its sequencer stopped) at seal.
pub(crate) struct Log {
    /// Storage (the barrier, sealed with the core).
    pub(super) view: View,
    /// The origin line of every checkpoint (also the key name).
    pub origin: String,
    pub(super) signer: Signer,
    /// The published tree's right edge (at least as new as `head`: published first).
    edge: RwLock<Arc<Edge>>,
    pub(super) head: RwLock<Arc<Head>>,
    tail: RwLock<Arc<Tail>>,
    tiles: Mutex<TwoGen<(u8, u64), FullTile>>,
    bundles: Mutex<TwoGen<u64, Arc<Vec<u8>>>>,
    tx: mpsc::Sender<Pending>,
    /// Why the log cannot run (a stored state that does not match its checkpoint).
    broken: RwLock<Option<String>>,
    /// Audit chain heads last logged, per device.
    audit_heads: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Witnesses: base URL and cosigner key.
    pub(super) witnesses: Vec<(String, note::Verifier)>,
    /// Cosignatures a checkpoint needs before it is served at `checkpoint`.
    pub(super) threshold: usize,
    /// The newest checkpoint with witness cosignatures: (size, note).
    pub(super) cosigned: RwLock<Option<(u64, Arc<str>)>>,
    /// Wakes the cosigning task.
    pub(super) kick: tokio::sync::Notify,
    /// Wakes callers waiting for a cosigned checkpoint.
    pub(super) cosigned_changed: tokio::sync::Notify,
    /// Storage reads by the log since it opened.
    reads: AtomicU64,
    /// What opening cost.
    pub(super) opened: OpenStats,
}

/// The cluster name as an origin path segment: lower-case letters, digits, `-` and `.`.
fn cluster_slug(cluster: &str) -> String {
    let s: String = cluster
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "custos".into()
    } else {
        s
    }
}

impl Log {
    /// Opens the log at unseal: creates its key and empty checkpoint on first use, rebuilds
    /// the tree, and starts the sequencer.
    pub(crate) async fn open(
        a: View,
        origin: &str,
        cluster: &str,
        witnesses: &[crate::config::TlogWitness],
        threshold: usize,
    ) -> ApiResult<Arc<Log>> {
        let mut ws = Vec::new();
        for w in witnesses {
            ws.push((
                w.url.clone(),
                note::Verifier::parse(&w.key).map_err(unavailable)?,
            ));
        }
        let signer = match a.get_json::<StoredKey>(KEY_PATH).await? {
            Some(k) => {
                use base64::Engine as _;
                let seed = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(&k.seed)
                        .map_err(|_| unavailable("the stored key is corrupt"))?,
                );
                if !origin.is_empty() && k.origin != origin {
                    tracing::warn!(stored = %k.origin, configured = %origin,
                        "the transparency log keeps the origin it was created with");
                }
                Signer::from_seed(&k.origin, TYPE_ED25519, &seed).map_err(unavailable)?
            }
            None => {
                use base64::Engine as _;
                let (signer, seed) = Signer::generate(
                    if origin.is_empty() {
                        "custos.local/log"
                    } else {
                        origin
                    },
                    TYPE_ED25519,
                )
                .map_err(unavailable)?;
                // Without a configured origin, one of this log's own: a witness that
                // serves several logs tells them apart by origin.
                let (signer, origin) = if origin.is_empty() {
                    let id = hex::encode(
                        &aws_lc_rs::digest::digest(
                            &aws_lc_rs::digest::SHA256,
                            &signer.verifier().public_key,
                        )
                        .as_ref()[..4],
                    );
                    let o = format!("custos.local/{}/{id}", cluster_slug(cluster));
                    (
                        Signer::from_seed(&o, TYPE_ED25519, &seed).map_err(unavailable)?,
                        o,
                    )
                } else {
                    (signer, origin.to_string())
                };
                let origin = origin.as_str();
                let stored = StoredKey {
                    origin: origin.to_string(),
                    seed: base64::engine::general_purpose::STANDARD.encode(&*seed),
                };
                let key = Zeroizing::new(serde_json::to_vec(&stored)?);
                let note = store::sign(&signer, origin, 0, merkle::empty_root());
                a.write_uncached(vec![
                    Plain::Put(KEY_PATH.into(), key.to_vec()),
                    Plain::Put(CHECKPOINT_PATH.into(), note.into_bytes()),
                    Plain::Put(TILED_PATH.into(), b"1".to_vec()),
                ])
                .await?;
                tracing::info!(origin, vkey = %signer.verifier().vkey(), "transparency log created");
                signer
            }
        };
        let origin = signer.verifier().name.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        let reads = AtomicU64::new(0);
        let started = std::time::Instant::now();
        let reader = Reader {
            view: &a,
            reads: &reads,
        };
        let (loaded, broken) = match store::load(&reader, &origin, &signer).await {
            Ok(l) => (l, None),
            Err(e) => {
                tracing::error!(error = %e, "transparency log refused to start");
                (
                    store::Loaded {
                        edge: Edge::new(),
                        head: Head {
                            size: 0,
                            note: Arc::from(""),
                        },
                        tail: Tail::default(),
                        parts: Vec::new(),
                        converted: 0,
                    },
                    Some(e.to_string()),
                )
            }
        };
        let opened = OpenStats {
            reads: reads.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            size: loaded.head.size,
            converted: loaded.converted,
        };
        tracing::info!(
            size = opened.size,
            reads = opened.reads,
            ms = opened.seconds * 1000.0,
            "transparency log opened"
        );
        let seq = Seq {
            edge: loaded.edge.clone(),
            tail: loaded.tail.entries.clone(),
            tail_start: loaded.tail.start,
            parts: loaded.parts.clone(),
            reload: false,
        };
        let log = Arc::new(Log {
            view: a,
            origin,
            signer,
            edge: RwLock::new(Arc::new(loaded.edge)),
            head: RwLock::new(Arc::new(loaded.head)),
            tail: RwLock::new(Arc::new(loaded.tail)),
            tiles: Mutex::new(TwoGen::new(TILE_CACHE)),
            bundles: Mutex::new(TwoGen::new(BUNDLE_CACHE)),
            tx,
            broken: RwLock::new(broken),
            audit_heads: tokio::sync::Mutex::new(HashMap::new()),
            witnesses: ws,
            threshold: threshold.clamp(1, witnesses.len().max(1)),
            cosigned: RwLock::new(None),
            kick: tokio::sync::Notify::new(),
            cosigned_changed: tokio::sync::Notify::new(),
            reads,
            opened,
        });
        tokio::spawn(store::sequencer(Arc::downgrade(&log), rx, seq));
        if !log.witnesses.is_empty() {
            tokio::spawn(super::cosign::cosigner(Arc::downgrade(&log)));
        }
        Ok(log)
    }

    fn check_running(&self) -> ApiResult<()> {
        match &*self.broken.read().map_err(|_| poisoned())? {
            Some(why) => Err(ApiError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }

    /// Appends an event; returns its index once it is durable and covered by the published
    /// checkpoint.
    pub(crate) async fn append(&self, event: Event) -> ApiResult<u64> {
        self.append_with(event, None).await
    }

    /// Appends an event and commits `with` in the same transaction; returns the entry's index
    /// once both are durable.
    pub(crate) async fn append_with(&self, event: Event, with: Option<Scoped>) -> ApiResult<u64> {
        self.check_running()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { event, with, reply })
            .await
            .map_err(|_| unavailable("the sequencer stopped"))?;
        match rx.await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("the sequencer stopped")),
        }
    }

    /// Logs the chain head of every audit device that wrote since the last call (the
    /// background task calls this every minute), so a truncated or rewritten audit file is
    /// caught against a head the log already holds.
    pub(crate) async fn log_audit_heads(&self, sys: &Sys) -> ApiResult<usize> {
        let mut last = self.audit_heads.lock().await;
        let mut n = 0;
        for (device, lines, head) in sys.audit_heads().await? {
            if lines == 0 || last.get(&device) == Some(&lines) {
                continue;
            }
            self.append(Event::AuditHead {
                device: device.clone(),
                lines,
                head,
            })
            .await?;
            last.insert(device, lines);
            n += 1;
        }
        Ok(n)
    }

    /// The newest published checkpoint.
    pub(crate) fn head(&self) -> ApiResult<Arc<Head>> {
        self.check_running()?;
        Ok(self.head.read().map_err(|_| poisoned())?.clone())
    }

    /// The note verifier key (`name+hash+base64`).
    pub(crate) fn vkey(&self) -> String {
        self.signer.verifier().vkey()
    }

    /// A counted reader over the log's storage.
    pub(super) fn reader(&self) -> Reader<'_> {
        Reader {
            view: &self.view,
            reads: &self.reads,
        }
    }

    /// Storage reads by the log since it opened, and what opening cost.
    pub(crate) fn reads(&self) -> (u64, OpenStats) {
        (self.reads.load(Ordering::Relaxed), self.opened)
    }

    /// Makes a durable state visible: the edge first, so that a reader holding a head finds
    /// an edge at least as large.
    pub(super) fn publish(&self, e: Edge, tail: Tail, head: Head) -> ApiResult<()> {
        *self.edge.write().map_err(|_| poisoned())? = Arc::new(e);
        *self.tail.write().map_err(|_| poisoned())? = Arc::new(tail);
        *self.head.write().map_err(|_| poisoned())? = Arc::new(head);
        self.kick.notify_one();
        Ok(())
    }

    /// Caches what a batch filled (bundles and tiles readers will ask for next).
    pub(super) fn cache_filled(
        &self,
        bundles: Vec<(u64, Vec<u8>)>,
        tiles: Vec<(u8, u64, FullTile)>,
    ) {
        if let Ok(mut c) = self.bundles.lock() {
            for (n, b) in bundles {
                c.insert(n, Arc::new(b));
            }
        }
        if let Ok(mut c) = self.tiles.lock() {
            for (l, n, t) in tiles {
                c.insert((l, n), t);
            }
        }
    }

    /// A full hash tile, from the cache or storage.
    async fn full_tile(&self, level: u8, n: u64) -> ApiResult<FullTile> {
        if let Some(t) = self.tiles.lock().map_err(|_| poisoned())?.get(&(level, n)) {
            return Ok(t);
        }
        let hashes = self
            .reader()
            .tile(level, n)
            .await?
            .filter(|h| h.len() == WIDTH as usize)
            .ok_or_else(|| unavailable(format!("hash tile {level}/{n} is missing")))?;
        let t = Arc::new(hashes);
        self.tiles
            .lock()
            .map_err(|_| poisoned())?
            .insert((level, n), t.clone());
        Ok(t)
    }

    /// A hash tile or entry bundle of the published tree. `None`: not (yet) in the log.
    pub(crate) async fn tile(&self, id: &TileId) -> ApiResult<Option<Vec<u8>>> {
        let head = self.head()?;
        let shift = u32::from(id.tree_level());
        let have = if shift >= 64 { 0 } else { head.size >> shift };
        let end = id
            .index
            .checked_mul(WIDTH)
            .and_then(|s| s.checked_add(u64::from(id.width)));
        if end.is_none_or(|e| e > have) {
            return Ok(None);
        }
        let width = usize::from(id.width);
        if let Some(level) = id.level {
            if width < WIDTH as usize {
                let e = self.edge.read().map_err(|_| poisoned())?.clone();
                let p = e.partial(level);
                if edge::partial_index(e.size(), level) == id.index && p.len() >= width {
                    return Ok(Some(hashes_bytes(&p[..width])));
                }
            }
            // Full, or a partial tile that has filled since: a prefix of the stored one.
            let t = self.full_tile(level, id.index).await?;
            return Ok(Some(hashes_bytes(&t[..width])));
        }
        let tail = self.tail.read().map_err(|_| poisoned())?.clone();
        if id.index * WIDTH == tail.start && tail.entries.len() >= width {
            return Ok(tile::encode_bundle(
                tail.entries[..width].iter().map(|e| &e[..]),
            ));
        }
        let full = self.full_bundle(id.index).await?;
        if width == WIDTH as usize {
            return Ok(Some(full.to_vec()));
        }
        let entries = tile::parse_bundle(&full)
            .ok_or_else(|| unavailable(format!("entry bundle {} is malformed", id.index)))?;
        Ok(tile::encode_bundle(entries.into_iter().take(width)))
    }

    async fn full_bundle(&self, n: u64) -> ApiResult<Arc<Vec<u8>>> {
        if let Some(b) = self.bundles.lock().map_err(|_| poisoned())?.get(&n) {
            return Ok(b);
        }
        let plain = self
            .reader()
            .get(&store::bundle_path(n))
            .await?
            .ok_or_else(|| unavailable(format!("entry bundle {n} is missing")))?;
        let b = Arc::new(plain.to_vec());
        self.bundles
            .lock()
            .map_err(|_| poisoned())?
            .insert(n, b.clone());
        Ok(b)
    }

    /// The entry at `index` (which must be below the published size).
    pub(crate) async fn entry(&self, index: u64) -> ApiResult<Vec<u8>> {
        let n = index / WIDTH;
        let i = usize::try_from(index % WIDTH).unwrap_or(0);
        let tail = self.tail.read().map_err(|_| poisoned())?.clone();
        if n * WIDTH == tail.start {
            if let Some(e) = tail.entries.get(i) {
                return Ok(e.to_vec());
            }
        }
        let full = self.full_bundle(n).await?;
        tile::parse_bundle(&full)
            .and_then(|v| v.get(i).map(|e| e.to_vec()))
            .ok_or_else(|| unavailable(format!("entry {index} is missing from its bundle")))
    }

    /// A proof over the published tree: the tiles it needs beyond the edge are fetched
    /// (cached), then it is computed.
    async fn prove(&self, kind: ProofKind) -> ApiResult<Vec<Hash>> {
        let e = self.edge.read().map_err(|_| poisoned())?.clone();
        let need = edge::tiles_needed(&e, kind).map_err(ApiError::internal)?;
        let mut got = HashMap::with_capacity(need.len());
        for (l, n) in need {
            got.insert((l, n), self.full_tile(l, n).await?);
        }
        kind.prove(&Tiles::new(&e, &got))
            .map_err(ApiError::internal)
    }

    /// The inclusion proof of `index` in the published tree of `size` (≤ the head's size).
    pub(crate) async fn inclusion(&self, index: u64, size: u64) -> ApiResult<Vec<Hash>> {
        let head = self.head()?;
        if size > head.size {
            return Err(ApiError::bad(format!(
                "size: {size} is beyond the log's size {}",
                head.size
            )));
        }
        if index >= size {
            return Err(ApiError::bad(format!(
                "index: {index} is not below the tree size {size}"
            )));
        }
        self.prove(ProofKind::Inclusion { index, size }).await
    }

    /// The consistency proof between published sizes `old ≤ new`.
    pub(crate) async fn consistency(&self, old: u64, new: u64) -> ApiResult<Vec<Hash>> {
        let head = self.head()?;
        if new > head.size || old > new {
            return Err(ApiError::bad(format!(
                "sizes: need old ≤ new ≤ {} (got old {old}, new {new})",
                head.size
            )));
        }
        self.prove(ProofKind::Consistency { old, new }).await
    }

    /// The checkpoint to serve: the newest one, with witness cosignatures once collected.
    /// What `checkpoint` serves: without witnesses, the newest checkpoint; with them, the
    /// newest one cosigned by at least the threshold of witnesses (as Sigsum and Rekor v2
    /// publish only witnessed checkpoints), so a verifier that requires cosignatures never
    /// sees a head the witnesses have not answered for yet. Until a first checkpoint is
    /// cosigned, the (uncosigned) newest one. `head` always serves the newest.
    pub(crate) fn served_checkpoint(&self) -> ApiResult<Arc<str>> {
        let head = self.head()?;
        if let Some((_, note)) = &*self.cosigned.read().map_err(|_| poisoned())? {
            return Ok(note.clone());
        }
        Ok(head.note.clone())
    }

    /// A receipt for `index`: against the newest cosigned checkpoint that covers it, else the
    /// newest checkpoint.
    pub(crate) async fn receipt(&self, index: u64) -> ApiResult<Receipt> {
        use base64::Engine as _;
        let head = self.head()?;
        if index >= head.size {
            return Err(ApiError::NotFound);
        }
        let (size, note) = match &*self.cosigned.read().map_err(|_| poisoned())? {
            Some((size, note)) if *size > index => (*size, note.clone()),
            _ => (head.size, head.note.clone()),
        };
        let entry = self.entry(index).await?;
        let proof = self.inclusion(index, size).await?;
        Ok(Receipt {
            origin: self.origin.clone(),
            index,
            entry: base64::engine::general_purpose::STANDARD.encode(entry),
            inclusion_proof: encode_hashes(&proof),
            checkpoint: note.to_string(),
        })
    }

    /// Like [`Log::receipt`], but with witnesses configured waits (up to `wait`) for a
    /// cosigned checkpoint that covers `index`, so the receipt satisfies k-of-n verifiers.
    pub(crate) async fn witnessed_receipt(
        &self,
        index: u64,
        wait: std::time::Duration,
    ) -> ApiResult<Receipt> {
        if !self.witnesses.is_empty() {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let covered = self
                    .cosigned
                    .read()
                    .map_err(|_| poisoned())?
                    .as_ref()
                    .is_some_and(|(s, _)| *s > index);
                if covered {
                    break;
                }
                let changed = self.cosigned_changed.notified();
                self.kick.notify_one();
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    tracing::warn!(
                        index,
                        "no witness cosigned in time; receipt without cosignatures"
                    );
                    break;
                }
            }
        }
        self.receipt(index).await
    }
}
