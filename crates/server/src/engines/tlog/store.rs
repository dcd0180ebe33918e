//! The log's storage: what is kept, how the tree is loaded at unseal in O(log n) reads, how
//! a log written before tiles were stored is converted once, and how the sequencer commits a
//! batch.
//!
//! **Keys** (all values through the barrier):
//! - `core/tlog-key`: origin and Ed25519 seed;
//! - `sys/tlog/checkpoint`: the newest signed note;
//! - `sys/tlog/bundle/<N, 20 digits>`: full C2SP entry bundles (a log written before parts
//!   were kept may also hold its partial bundle here);
//! - `sys/tlog/part/<N, 20 digits>/<first index, 20 digits>`: the partial bundle N, as the
//!   pieces the batches since it began appended (bundle-encoded). A batch writes only its new
//!   entries, not the whole partial bundle again; every [`MAX_PARTS`]th piece rewrites the
//!   pieces as one, so a reader joins at most that many; the full bundle replaces them;
//! - `sys/tlog/tile/<L>/<N, 20 digits>`: C2SP hash tiles, written when they fill; the
//!   partial tile of each tile level ≥ 1 is rewritten when it grows (once per 256^L leaves).
//!   The level-0 partial tile is never stored: it is the leaf hashes of the partial bundle;
//! - `sys/tlog/tiled`: set once every full tile is stored (logs from before tiles were kept
//!   are converted at their first unseal).
//!
//! **No fork after a crash.** Bundles, tiles and checkpoint of a batch commit in one
//! transaction, so the disk always holds a checkpoint and exactly the entries and tiles it
//! covers. At unseal the right edge (checkpoint, partial bundle, one partial tile per tile
//! level) must hash to the checkpoint's root, or the log refuses to run.

use super::log::{Head, Log, Pending, Tail};
use crate::core::barrier::{Plain, Scoped, View};
use crate::core::now_unix;
use crate::error::{ApiError, ApiResult};
use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::edge::{self, Edge, TileWrite};
use custos_tlog::entry::Entry;
use custos_tlog::merkle::{leaf_hash, Hash};
use custos_tlog::note::{self, Signer};
use custos_tlog::tile::{self, WIDTH};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// Storage key of the log's identity and checkpoint key (encrypted).
pub(crate) const KEY_PATH: &str = "core/tlog-key";
pub(super) const CHECKPOINT_PATH: &str = "sys/tlog/checkpoint";
/// Present once every full hash tile is stored.
pub(super) const TILED_PATH: &str = "sys/tlog/tiled";
/// Full tiles written per transaction while converting an old log.
const CONVERT_TILES_PER_TX: usize = 512;
/// Pieces the partial bundle is kept in before they are rewritten as one.
pub(super) const MAX_PARTS: usize = 16;

pub(super) fn bundle_path(n: u64) -> String {
    format!("sys/tlog/bundle/{n:020}")
}

fn parts_prefix(n: u64) -> String {
    format!("sys/tlog/part/{n:020}/")
}

fn part_path(n: u64, first: u64) -> String {
    format!("{}{first:020}", parts_prefix(n))
}

pub(super) fn tile_path(level: u8, n: u64) -> String {
    format!("sys/tlog/tile/{level}/{n:020}")
}

pub(super) fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("transparency log unavailable: {why}"))
}

pub(super) fn poisoned() -> ApiError {
    ApiError::internal(std::io::Error::other("transparency log lock poisoned"))
}

pub(super) fn hashes_bytes(h: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.len() * 32);
    for x in h {
        out.extend_from_slice(x);
    }
    out
}

/// Reads from storage, counted (start-up must not grow with the log).
pub(super) struct Reader<'a> {
    pub view: &'a View,
    pub reads: &'a AtomicU64,
}

impl Reader<'_> {
    pub async fn get(&self, key: &str) -> ApiResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.view.get_uncached(key).await
    }

    async fn list(&self, prefix: &str) -> ApiResult<Vec<String>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.view.list(prefix).await
    }

    /// The first `want` entries of bundle `n`, the one a tree of `n·256 + want` leaves ends
    /// in: joined from its stored pieces (or an older log's partial bundle), with the first
    /// index of each piece.
    pub async fn partial_bundle(
        &self,
        n: u64,
        want: usize,
    ) -> ApiResult<(Vec<Arc<[u8]>>, Vec<u64>)> {
        let start = n * WIDTH;
        let mut firsts: Vec<u64> = Vec::new();
        for k in self.list(&parts_prefix(n)).await? {
            firsts.push(
                k.parse()
                    .map_err(|_| unavailable(format!("entry bundle {n}: bad piece {k:?}")))?,
            );
        }
        firsts.sort_unstable();
        let mut entries: Vec<Arc<[u8]>> = Vec::with_capacity(want);
        if firsts.first() != Some(&start) {
            // Written before pieces were kept: the partial bundle itself.
            if let Some(plain) = self.get(&bundle_path(n)).await? {
                let e = tile::parse_bundle(&plain)
                    .ok_or_else(|| unavailable(format!("entry bundle {n} is malformed")))?;
                entries.extend(e.into_iter().map(Arc::from));
            }
        }
        for &f in &firsts {
            if entries.len() >= want {
                break;
            }
            if f != start + entries.len() as u64 {
                return Err(unavailable(format!(
                    "entry bundle {n}: piece at {f} does not follow entry {}",
                    start + entries.len() as u64
                )));
            }
            let plain = self
                .get(&part_path(n, f))
                .await?
                .ok_or_else(|| unavailable(format!("entry bundle {n}: piece {f} is missing")))?;
            let e = tile::parse_bundle(&plain)
                .ok_or_else(|| unavailable(format!("entry bundle {n}: piece {f} is malformed")))?;
            entries.extend(e.into_iter().map(Arc::from));
        }
        if entries.len() < want {
            return Err(unavailable(format!(
                "entry bundle {n} holds {} entries, the checkpoint needs {want}",
                entries.len()
            )));
        }
        entries.truncate(want);
        Ok((entries, firsts))
    }

    /// The stored hashes of tile `(level, n)`, if any.
    pub async fn tile(&self, level: u8, n: u64) -> ApiResult<Option<Vec<Hash>>> {
        match self.get(&tile_path(level, n)).await? {
            None => Ok(None),
            Some(b) => tile::tile_hashes(&b)
                .map(Some)
                .ok_or_else(|| unavailable(format!("hash tile {level}/{n} is malformed"))),
        }
    }
}

/// Rebuilt from storage: the right edge, the checkpoint and the partial bundle.
pub(super) struct Loaded {
    pub edge: Edge,
    pub head: Head,
    pub tail: Tail,
    /// First indexes of the stored pieces of the partial bundle.
    pub parts: Vec<u64>,
    /// Leaves hashed to convert a log stored before tiles (0 once converted).
    pub converted: u64,
}

/// Loads the published state: the checkpoint, the partial bundle and one partial tile per
/// tile level; O(log n) reads whatever the log's size.
pub(super) async fn load(r: &Reader<'_>, origin: &str, signer: &Signer) -> ApiResult<Loaded> {
    let Some(note_bytes) = r.get(CHECKPOINT_PATH).await? else {
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
    let mut converted = 0;
    if r.get(TILED_PATH).await?.is_none() {
        convert(r, cp.size).await?;
        converted = cp.size;
    }
    // The partial bundle gives the level-0 partial tile.
    let w0 = edge::partial_width(cp.size, 0);
    let tail_start = cp.size - w0 as u64;
    let mut tail = Tail {
        start: tail_start,
        entries: Vec::new(),
    };
    let mut partials: Vec<Vec<Hash>> = vec![Vec::new()];
    let mut parts = Vec::new();
    if w0 > 0 {
        let (entries, firsts) = r.partial_bundle(tail_start / WIDTH, w0).await?;
        partials[0] = entries.iter().map(|e| leaf_hash(e)).collect();
        tail.entries = entries;
        parts = firsts;
    }
    for level in 1..edge::tile_levels(cp.size) {
        let w = edge::partial_width(cp.size, level);
        let mut p = Vec::new();
        if w > 0 {
            let n = edge::partial_index(cp.size, level);
            let hashes = r
                .tile(level, n)
                .await?
                .ok_or_else(|| unavailable(format!("hash tile {level}/{n} is missing")))?;
            p = hashes.get(..w).map(<[Hash]>::to_vec).ok_or_else(|| {
                unavailable(format!(
                    "hash tile {level}/{n} holds {} hashes, the checkpoint needs {w}",
                    hashes.len()
                ))
            })?;
        }
        partials.push(p);
    }
    let edge = Edge::from_partials(cp.size, partials).map_err(unavailable)?;
    if edge.root() != cp.root {
        return Err(unavailable(format!(
            "the stored tree does not hash to the stored checkpoint (size {}); refusing to fork",
            cp.size
        )));
    }
    Ok(Loaded {
        edge,
        head: Head {
            size: cp.size,
            note: Arc::from(note_text),
        },
        tail,
        parts,
        converted,
    })
}

/// Converts a log stored before hash tiles were kept: one pass over its entry bundles,
/// writing every full tile and the partial tiles of levels ≥ 1, then the `tiled` mark. Runs
/// once; the root must equal the checkpoint's before the mark is set.
async fn convert(r: &Reader<'_>, size: u64) -> ApiResult<()> {
    let started = std::time::Instant::now();
    let mut e = Edge::new();
    let mut done: Vec<TileWrite> = Vec::new();
    for n in 0..size.div_ceil(WIDTH) {
        let want = usize::try_from((size - n * WIDTH).min(WIDTH)).unwrap_or(0);
        if want < WIDTH as usize {
            for x in r.partial_bundle(n, want).await?.0 {
                e.push(leaf_hash(&x), &mut done);
            }
            continue;
        }
        let plain = r
            .get(&bundle_path(n))
            .await?
            .ok_or_else(|| unavailable(format!("entry bundle {n} is missing")))?;
        let entries = tile::parse_bundle(&plain)
            .ok_or_else(|| unavailable(format!("entry bundle {n} is malformed")))?;
        for x in entries.get(..want).ok_or_else(|| {
            unavailable(format!(
                "entry bundle {n} holds {} entries, the checkpoint needs {want}",
                entries.len()
            ))
        })? {
            e.push(leaf_hash(x), &mut done);
        }
        if done.len() >= CONVERT_TILES_PER_TX {
            r.view.write_uncached(tile_ops(done.drain(..))).await?;
        }
    }
    let mut ops = tile_ops(done.drain(..));
    ops.extend(tile_ops(e.changed_partials(&Edge::new())));
    ops.push(Plain::Put(TILED_PATH.into(), b"1".to_vec()));
    r.view.write_uncached(ops).await?;
    tracing::info!(
        size,
        seconds = started.elapsed().as_secs_f64(),
        "transparency log converted to stored hash tiles (once)"
    );
    Ok(())
}

fn tile_ops(t: impl IntoIterator<Item = TileWrite>) -> Vec<Plain> {
    t.into_iter()
        .map(|t| Plain::Put(tile_path(t.level, t.index), hashes_bytes(&t.hashes)))
        .collect()
}

/// What the sequencer owns between batches.
pub(super) struct Seq {
    pub edge: Edge,
    pub tail: Vec<Arc<[u8]>>,
    pub tail_start: u64,
    /// First indexes of the stored pieces of the partial bundle.
    pub parts: Vec<u64>,
    pub reload: bool,
}

pub(super) fn sign(signer: &Signer, origin: &str, size: u64, root: Hash) -> String {
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

pub(super) async fn sequencer(log: Weak<Log>, mut rx: mpsc::Receiver<Pending>, mut seq: Seq) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < super::log::MAX_BATCH {
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
    let l = load(&log.reader(), &log.origin, &log.signer).await?;
    let published = log.head.read().map_err(|_| poisoned())?.size;
    if l.head.size < published {
        return Err(unavailable(
            "the stored log is shorter than the published checkpoint",
        ));
    }
    seq.edge = l.edge.clone();
    seq.tail = l.tail.entries.clone();
    seq.tail_start = l.tail.start;
    seq.parts = l.parts.clone();
    log.publish(l.edge, l.tail, l.head)?;
    Ok(())
}

async fn commit(log: &Log, seq: &mut Seq, batch: Vec<Pending>) {
    let time = u64::try_from(now_unix()).unwrap_or(0);
    let mut replies = Vec::with_capacity(batch.len());
    let mut fresh: Vec<Arc<[u8]>> = Vec::with_capacity(batch.len());
    let mut with = Vec::new();
    for p in batch {
        match Entry::new(time, p.event).encode() {
            Ok(b) => {
                fresh.push(Arc::from(b));
                replies.push(p.reply);
                with.extend(p.with);
            }
            Err(e) => {
                let _ = p.reply.send(Err(e.to_string()));
            }
        }
    }
    if fresh.is_empty() {
        return;
    }
    let old = seq.edge.size();
    match write_batch(log, seq, &fresh, with).await {
        Ok(()) => {
            for (i, r) in replies.into_iter().enumerate() {
                let _ = r.send(Ok(old + i as u64));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "transparency log batch not committed");
            seq.reload = true;
            for r in replies {
                let _ = r.send(Err(e.to_string()));
            }
        }
    }
}

/// Writes one batch: its bundles, the tiles it filled or grew, the new checkpoint and the
/// state changes the entries record, in one transaction; publishes them once durable. The
/// sequencer's state changes only then.
async fn write_batch(
    log: &Log,
    seq: &mut Seq,
    fresh: &[Arc<[u8]>],
    with: Vec<Scoped>,
) -> ApiResult<()> {
    let mut e = seq.edge.clone();
    let mut filled = Vec::new();
    for x in fresh {
        e.push(leaf_hash(x), &mut filled);
    }
    let new = e.size();
    let note = sign(&log.signer, &log.origin, new, e.root());
    let mut all: Vec<Arc<[u8]>> = Vec::with_capacity(seq.tail.len() + fresh.len());
    all.extend(seq.tail.iter().cloned());
    all.extend(fresh.iter().cloned());
    let first = seq.tail_start / WIDTH;
    let mut ops = Vec::with_capacity(all.len() / WIDTH as usize + filled.len() + MAX_PARTS + 4);
    let mut full_bundles = Vec::new();
    let mut parts = seq.parts.clone();
    let encode = |entries: &[Arc<[u8]>]| {
        tile::encode_bundle(entries.iter().map(|e| &e[..]))
            .ok_or_else(|| ApiError::internal(std::io::Error::other("entry too large")))
    };
    for (i, chunk) in all.chunks(WIDTH as usize).enumerate() {
        let n = first + i as u64;
        if chunk.len() == WIDTH as usize {
            let bytes = encode(chunk)?;
            full_bundles.push((n, bytes.clone()));
            ops.push(Plain::Put(bundle_path(n), bytes));
            if n == first {
                // The full bundle replaces the pieces.
                ops.extend(parts.drain(..).map(|f| Plain::Delete(part_path(n, f))));
            }
            continue;
        }
        // The new partial bundle: only the entries this batch added to it, as one more
        // piece, unless that makes too many.
        let start = n * WIDTH;
        let old = if n == first { seq.tail.len() } else { 0 };
        if parts.len() + 1 > MAX_PARTS || (old > 0 && parts.is_empty()) {
            // Rewritten as one piece (also an older log's partial bundle, stored whole).
            ops.extend(parts.drain(..).map(|f| Plain::Delete(part_path(n, f))));
            ops.push(Plain::Put(part_path(n, start), encode(chunk)?));
            parts.push(start);
        } else {
            ops.push(Plain::Put(
                part_path(n, start + old as u64),
                encode(&chunk[old..])?,
            ));
            parts.push(start + old as u64);
        }
    }
    let grown = e.changed_partials(&seq.edge);
    let full_tiles: Vec<(u8, u64, Arc<Vec<Hash>>)> = filled
        .into_iter()
        .map(|t| (t.level, t.index, Arc::new(t.hashes)))
        .collect();
    ops.extend(
        full_tiles
            .iter()
            .map(|(l, n, h)| Plain::Put(tile_path(*l, *n), hashes_bytes(h))),
    );
    ops.extend(tile_ops(grown));
    ops.push(Plain::Put(CHECKPOINT_PATH.into(), note.as_bytes().to_vec()));
    log.view.write_uncached_with(ops, with).await?;
    // Durable: publish.
    let done = full_bundles.len() * WIDTH as usize;
    seq.tail = all.split_off(done);
    seq.tail_start += done as u64;
    seq.parts = parts;
    seq.edge = e.clone();
    log.cache_filled(full_bundles, full_tiles);
    log.publish(
        e,
        Tail {
            start: seq.tail_start,
            entries: seq.tail.clone(),
        },
        Head {
            size: new,
            note: Arc::from(note),
        },
    )?;
    Ok(())
}
