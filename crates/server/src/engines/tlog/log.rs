//! The transparency log the server keeps of its own trust events (`sys/tlog/`).
//!
//! **Sequencing.** Callers hand an [`Event`] to [`Log::append`] and wait. One sequencer task
//! drains the queue in batches (everything queued while the previous batch was committing, up
//! to [`MAX_BATCH`]), stamps the integrated time, appends the leaf hashes to the in-memory
//! tree, and writes in **one storage transaction** the entry bundles the batch touched and the
//! new signed checkpoint. Only after that transaction is durable are the callers answered and
//! the checkpoint published, so every acknowledged entry is durable and every published
//! checkpoint is on disk.
//!
//! **No fork after a crash.** Bundles and checkpoint commit together, so the disk always holds
//! a checkpoint and exactly the entries it covers. At unseal the tree is rebuilt from the
//! stored bundles and its root must equal the stored checkpoint's, or the log refuses to run
//! (and issuance, which must be logged, fails closed). A write whose outcome is unknown makes
//! the sequencer reload from disk before the next batch, so it can never extend a state the
//! disk does not have.
//!
//! **Storage** (all values through the barrier): `core/tlog-key` (origin + Ed25519 seed),
//! `sys/tlog/checkpoint` (the signed note), `sys/tlog/bundle/<N, 20 digits>` (C2SP entry
//! bundles; the last one partial and rewritten as it grows). Hash tiles are served from the
//! in-memory tree (64 bytes per leaf).

use crate::core::barrier::{Plain, View};
use crate::core::engine::Sys;
use crate::core::now_unix;
use crate::error::{ApiError, ApiResult};
use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::entry::{Entry, Event};
use custos_tlog::merkle::{self, leaf_hash, Hash, MemoryTree};
use custos_tlog::note::{self, Signer, TYPE_ED25519};
use custos_tlog::receipt::{encode_hashes, Receipt};
use custos_tlog::tile::{self, TileId, WIDTH};
use custos_tlog::witness;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// Storage key of the log's identity and checkpoint key (encrypted).
pub(crate) const KEY_PATH: &str = "core/tlog-key";
const CHECKPOINT_PATH: &str = "sys/tlog/checkpoint";
/// Most entries sequenced in one transaction.
pub const MAX_BATCH: usize = 8192;
/// Appends waiting for the sequencer before callers are held back.
const QUEUE: usize = 65_536;
/// Full entry bundles kept in memory for serving.
const BUNDLE_CACHE: usize = 1024;

fn bundle_path(n: u64) -> String {
    format!("sys/tlog/bundle/{n:020}")
}

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("transparency log unavailable: {why}"))
}

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

struct Pending {
    event: Event,
    reply: oneshot::Sender<Result<u64, String>>,
}

/// The committed partial bundle: its first index and its entries.
#[derive(Default, Clone)]
struct Tail {
    start: u64,
    entries: Vec<Arc<[u8]>>,
}

/// The server's log, opened at unseal; dropped (and its sequencer stopped) at seal.
pub(crate) struct Log {
    /// Storage (the barrier, sealed with the core).
    view: View,
    /// The origin line of every checkpoint (also the key name).
    pub origin: String,
    signer: Signer,
    tree: RwLock<MemoryTree>,
    head: RwLock<Arc<Head>>,
    tail: RwLock<Arc<Tail>>,
    bundles: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    tx: mpsc::Sender<Pending>,
    /// Why the log cannot run (a stored state that does not match its checkpoint).
    broken: RwLock<Option<String>>,
    /// Audit chain heads last logged, per device.
    audit_heads: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Witnesses: base URL and cosigner key.
    witnesses: Vec<(String, note::Verifier)>,
    /// Cosignatures a checkpoint needs before it is served at `checkpoint`.
    threshold: usize,
    /// The newest checkpoint with witness cosignatures: (size, note).
    cosigned: RwLock<Option<(u64, Arc<str>)>>,
    /// Wakes the cosigning task.
    kick: tokio::sync::Notify,
    /// Wakes callers waiting for a cosigned checkpoint.
    cosigned_changed: tokio::sync::Notify,
}

/// What the sequencer owns between batches.
struct Seq {
    size: u64,
    tail: Vec<Arc<[u8]>>,
    tail_start: u64,
    reload: bool,
}

fn poisoned() -> ApiError {
    ApiError::internal(std::io::Error::other("transparency log lock poisoned"))
}

/// Rebuilt from storage: the tree, the checkpoint and the partial bundle.
struct Loaded {
    tree: MemoryTree,
    head: Head,
    tail: Tail,
}

async fn load(a: &View, origin: &str, signer: &Signer) -> ApiResult<Loaded> {
    let Some(note_bytes) = a.get_uncached(CHECKPOINT_PATH).await? else {
        return Err(unavailable("the stored checkpoint is missing"));
    };
    let note_text = String::from_utf8(note_bytes.to_vec())
        .map_err(|_| unavailable("the stored checkpoint is not text"))?;
    let opened = note::open(&note_text, std::slice::from_ref(signer.verifier()))
        .map_err(|e| unavailable(format!("the stored checkpoint: {e}")))?;
    let cp = Checkpoint::parse(opened.text).map_err(unavailable)?;
    if cp.origin != origin {
        return Err(unavailable("the stored checkpoint is another log's"));
    }
    let mut tree = MemoryTree::new();
    let mut tail = Tail::default();
    let bundles = cp.size.div_ceil(WIDTH);
    for n in 0..bundles {
        let plain = a
            .get_uncached(&bundle_path(n))
            .await?
            .ok_or_else(|| unavailable(format!("entry bundle {n} is missing")))?;
        let entries = tile::parse_bundle(&plain)
            .ok_or_else(|| unavailable(format!("entry bundle {n} is malformed")))?;
        let want = usize::try_from((cp.size - n * WIDTH).min(WIDTH)).unwrap_or(0);
        if entries.len() < want {
            return Err(unavailable(format!(
                "entry bundle {n} holds {} entries, the checkpoint needs {want}",
                entries.len()
            )));
        }
        for e in &entries[..want] {
            tree.push(leaf_hash(e));
        }
        if want < WIDTH as usize {
            tail = Tail {
                start: n * WIDTH,
                entries: entries[..want].iter().map(|e| Arc::from(*e)).collect(),
            };
        }
    }
    if bundles == cp.size / WIDTH {
        tail.start = cp.size;
    }
    let root = merkle::root(&tree, cp.size).map_err(unavailable)?;
    if root != cp.root {
        return Err(unavailable(format!(
            "the stored entries do not hash to the stored checkpoint (size {}); refusing to fork",
            cp.size
        )));
    }
    Ok(Loaded {
        tree,
        head: Head {
            size: cp.size,
            note: Arc::from(note_text),
        },
        tail,
    })
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

fn sign(signer: &Signer, origin: &str, size: u64, root: Hash) -> String {
    let body = Checkpoint {
        origin: origin.to_string(),
        size,
        root,
        extensions: Vec::new(),
    }
    .body();
    let sig = signer.sign(&body, 0);
    note::assemble(&body, &[sig])
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
                let note = sign(&signer, origin, 0, merkle::empty_root());
                a.write_uncached(vec![
                    Plain::Put(KEY_PATH.into(), key.to_vec()),
                    Plain::Put(CHECKPOINT_PATH.into(), note.into_bytes()),
                ])
                .await?;
                tracing::info!(origin, vkey = %signer.verifier().vkey(), "transparency log created");
                signer
            }
        };
        let origin = signer.verifier().name.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (loaded, broken) = match load(&a, &origin, &signer).await {
            Ok(l) => (l, None),
            Err(e) => {
                tracing::error!(error = %e, "transparency log refused to start");
                (
                    Loaded {
                        tree: MemoryTree::new(),
                        head: Head {
                            size: 0,
                            note: Arc::from(""),
                        },
                        tail: Tail::default(),
                    },
                    Some(e.to_string()),
                )
            }
        };
        let seq = Seq {
            size: loaded.head.size,
            tail: loaded.tail.entries.clone(),
            tail_start: loaded.tail.start,
            reload: false,
        };
        let log = Arc::new(Log {
            view: a,
            origin,
            signer,
            tree: RwLock::new(loaded.tree),
            head: RwLock::new(Arc::new(loaded.head)),
            tail: RwLock::new(Arc::new(loaded.tail)),
            bundles: Mutex::new(HashMap::new()),
            tx,
            broken: RwLock::new(broken),
            audit_heads: tokio::sync::Mutex::new(HashMap::new()),
            witnesses: ws,
            threshold: threshold.clamp(1, witnesses.len().max(1)),
            cosigned: RwLock::new(None),
            kick: tokio::sync::Notify::new(),
            cosigned_changed: tokio::sync::Notify::new(),
        });
        tokio::spawn(sequencer(Arc::downgrade(&log), rx, seq));
        if !log.witnesses.is_empty() {
            tokio::spawn(cosigner(Arc::downgrade(&log)));
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
        self.check_running()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
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
        if id.level.is_some() {
            let tree = self.tree.read().map_err(|_| poisoned())?;
            return Ok(Some(
                tile::tile_bytes(&*tree, id).map_err(ApiError::internal)?,
            ));
        }
        let width = usize::from(id.width);
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
            return Ok(b.clone());
        }
        let plain = self
            .view
            .get_uncached(&bundle_path(n))
            .await?
            .ok_or_else(|| unavailable(format!("entry bundle {n} is missing")))?;
        let b = Arc::new(plain.to_vec());
        self.cache_bundle(n, b.clone())?;
        Ok(b)
    }

    fn cache_bundle(&self, n: u64, b: Arc<Vec<u8>>) -> ApiResult<()> {
        let mut c = self.bundles.lock().map_err(|_| poisoned())?;
        if c.len() >= BUNDLE_CACHE {
            c.clear();
        }
        c.insert(n, b);
        Ok(())
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

    /// The inclusion proof of `index` in the published tree of `size` (≤ the head's size).
    pub(crate) fn inclusion(&self, index: u64, size: u64) -> ApiResult<Vec<Hash>> {
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
        let tree = self.tree.read().map_err(|_| poisoned())?;
        merkle::inclusion_proof(&*tree, index, size).map_err(ApiError::internal)
    }

    /// The consistency proof between published sizes `old ≤ new`.
    pub(crate) fn consistency(&self, old: u64, new: u64) -> ApiResult<Vec<Hash>> {
        let head = self.head()?;
        if new > head.size || old > new {
            return Err(ApiError::bad(format!(
                "sizes: need old ≤ new ≤ {} (got old {old}, new {new})",
                head.size
            )));
        }
        let tree = self.tree.read().map_err(|_| poisoned())?;
        merkle::consistency_proof(&*tree, old, new).map_err(ApiError::internal)
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
        let proof = self.inclusion(index, size)?;
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

async fn sequencer(log: Weak<Log>, mut rx: mpsc::Receiver<Pending>, mut seq: Seq) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(log) = log.upgrade() else {
            for p in batch {
                let _ = p.reply.send(Err("the server is sealed".into()));
            }
            break;
        };
        if seq.reload {
            match reload(&log, &mut seq).await {
                Ok(()) => seq.reload = false,
                Err(e) => {
                    for p in batch {
                        let _ = p
                            .reply
                            .send(Err(format!("reloading after a failed write: {e}")));
                    }
                    continue;
                }
            }
        }
        commit(&log, &mut seq, batch).await;
    }
}

async fn reload(log: &Log, seq: &mut Seq) -> ApiResult<()> {
    let l = load(&log.view, &log.origin, &log.signer).await?;
    let published = log.head.read().map_err(|_| poisoned())?.size;
    if l.head.size < published {
        return Err(unavailable(
            "the stored log is shorter than the published checkpoint",
        ));
    }
    seq.size = l.head.size;
    seq.tail = l.tail.entries.clone();
    seq.tail_start = l.tail.start;
    *log.tree.write().map_err(|_| poisoned())? = l.tree;
    *log.tail.write().map_err(|_| poisoned())? = Arc::new(l.tail);
    *log.head.write().map_err(|_| poisoned())? = Arc::new(l.head);
    Ok(())
}

async fn commit(log: &Log, seq: &mut Seq, batch: Vec<Pending>) {
    let time = u64::try_from(now_unix()).unwrap_or(0);
    let mut replies = Vec::with_capacity(batch.len());
    let mut fresh: Vec<Arc<[u8]>> = Vec::with_capacity(batch.len());
    for p in batch {
        match Entry::new(time, p.event).encode() {
            Ok(b) => {
                fresh.push(Arc::from(b));
                replies.push(p.reply);
            }
            Err(e) => {
                let _ = p.reply.send(Err(e.to_string()));
            }
        }
    }
    if fresh.is_empty() {
        return;
    }
    let old = seq.size;
    let new = old + fresh.len() as u64;
    let result = write_batch(log, seq, &fresh, old, new).await;
    match result {
        Ok(full) => {
            for (n, b) in full {
                let _ = log.cache_bundle(n, Arc::new(b));
            }
            for (i, r) in replies.into_iter().enumerate() {
                let _ = r.send(Ok(old + i as u64));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "transparency log batch not committed");
            if let Ok(mut t) = log.tree.write() {
                t.truncate(old);
            }
            seq.reload = true;
            for r in replies {
                let _ = r.send(Err(e.to_string()));
            }
        }
    }
}

/// Writes one batch; returns the bundles it completed (for the cache).
async fn write_batch(
    log: &Log,
    seq: &mut Seq,
    fresh: &[Arc<[u8]>],
    old: u64,
    new: u64,
) -> ApiResult<Vec<(u64, Vec<u8>)>> {
    {
        let mut t = log.tree.write().map_err(|_| poisoned())?;
        for e in fresh {
            t.push(leaf_hash(e));
        }
    }
    let root = {
        let t = log.tree.read().map_err(|_| poisoned())?;
        merkle::root(&*t, new).map_err(ApiError::internal)?
    };
    let note = sign(&log.signer, &log.origin, new, root);
    let mut all: Vec<Arc<[u8]>> = Vec::with_capacity(seq.tail.len() + fresh.len());
    all.extend(seq.tail.iter().cloned());
    all.extend(fresh.iter().cloned());
    let first = seq.tail_start / WIDTH;
    let mut ops = Vec::with_capacity(all.len() / WIDTH as usize + 2);
    let mut full = Vec::new();
    for (i, chunk) in all.chunks(WIDTH as usize).enumerate() {
        let n = first + i as u64;
        let bytes = tile::encode_bundle(chunk.iter().map(|e| &e[..]))
            .ok_or_else(|| ApiError::internal(std::io::Error::other("entry too large")))?;
        if chunk.len() == WIDTH as usize {
            full.push((n, bytes.clone()));
        }
        ops.push(Plain::Put(bundle_path(n), bytes));
    }
    ops.push(Plain::Put(CHECKPOINT_PATH.into(), note.as_bytes().to_vec()));
    log.view.write_uncached(ops).await?;
    // Durable: publish.
    let done = full.len() * WIDTH as usize;
    seq.tail = all.split_off(done);
    seq.tail_start += done as u64;
    seq.size = new;
    *log.tail.write().map_err(|_| poisoned())? = Arc::new(Tail {
        start: seq.tail_start,
        entries: seq.tail.clone(),
    });
    *log.head.write().map_err(|_| poisoned())? = Arc::new(Head {
        size: new,
        note: Arc::from(note),
    });
    log.kick.notify_one();
    debug_assert!(old <= new);
    Ok(full)
}

/// How long a witness may take to answer.
const WITNESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every witness to cosign each new checkpoint (C2SP tlog-witness `add-checkpoint`),
/// verifies the cosignatures, and publishes the checkpoint with them.
async fn cosigner(log: Weak<Log>) {
    let http = match reqwest::Client::builder().timeout(WITNESS_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "witness client");
            return;
        }
    };
    // What each witness has cosigned, as far as the log knows (learnt from 409 answers).
    let mut known: Vec<u64> = Vec::new();
    let mut done: Option<u64> = None;
    loop {
        let Some(l) = log.upgrade() else { return };
        let kicked = l.kick.notified();
        if known.len() != l.witnesses.len() {
            known = vec![0; l.witnesses.len()];
        }
        if let Ok(head) = l.head() {
            if done != Some(head.size) {
                match cosign_round(&l, &http, &head, &mut known).await {
                    Some((cosigned, n)) if n >= l.threshold => {
                        if let Ok(mut c) = l.cosigned.write() {
                            *c = Some((head.size, Arc::from(cosigned)));
                        }
                        done = Some(head.size);
                        l.cosigned_changed.notify_waiters();
                    }
                    Some((_, n)) => tracing::warn!(
                        size = head.size,
                        cosignatures = n,
                        required = l.threshold,
                        "checkpoint not served yet: too few witnesses cosigned; retrying"
                    ),
                    None => {}
                }
            }
        }
        // Holding the log here delays its drop after a seal by at most this wait.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), kicked).await;
    }
}

/// One round of asking every witness; the note with the cosignatures collected, and how
/// many there are.
async fn cosign_round(
    l: &Log,
    http: &reqwest::Client,
    head: &Head,
    known: &mut [u64],
) -> Option<(String, usize)> {
    let (body, _) = note::parse(&head.note).ok()?;
    let mut lines = Vec::new();
    for (i, (url, key)) in l.witnesses.iter().enumerate() {
        for _attempt in 0..2 {
            let old = known[i].min(head.size);
            let Ok(proof) = l.consistency(old, head.size) else {
                known[i] = 0;
                continue;
            };
            let req = witness::AddCheckpoint {
                old,
                proof,
                checkpoint: head.note.to_string(),
            };
            let resp = http
                .post(format!("{url}/add-checkpoint"))
                .body(req.encode())
                .send()
                .await;
            let r = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(witness = %url, error = %e, "witness unreachable");
                    break;
                }
            };
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            match status {
                200 => {
                    // Keep only lines that verify as this witness's cosignature on this body.
                    let candidate = format!("{body}\n{text}");
                    match note::open(&candidate, std::slice::from_ref(key)) {
                        Ok(_) => {
                            lines.push(text.trim_end_matches('\n').to_string());
                            known[i] = head.size;
                        }
                        Err(e) => tracing::warn!(witness = %url, error = %e, "bad cosignature"),
                    }
                    break;
                }
                409 => match text.trim().parse::<u64>() {
                    Ok(n) if n <= head.size => known[i] = n,
                    _ => {
                        tracing::error!(witness = %url, answer = %text.trim(), "the witness has seen a larger tree than this log");
                        break;
                    }
                },
                _ => {
                    tracing::error!(witness = %url, status, answer = %text.trim(), "the witness refused to cosign");
                    break;
                }
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    let n = lines.len();
    let mut out = head.note.to_string();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    Some((out, n))
}
