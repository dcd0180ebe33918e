//! A log's tree kept as C2SP hash tiles: the **right edge** in memory, every full tile in
//! storage.
//!
//! The edge is, per tile level `L`, the hashes of the partial tile there (fewer than 256
//! hashes of tree level `8·L`). That is all appending needs, and all a root needs: every
//! complete subtree on the tree's right edge lies inside one of those partial tiles. So a
//! server that persists full tiles as they complete can start from the checkpoint, the edge
//! (at most 255 hashes per tile level, a handful of reads) and nothing else, whatever the
//! log's size. Proofs name the full tiles they need ([`tiles_needed`]); the caller fetches
//! them and computes the proof over [`Tiles`].

use crate::merkle::{self, Hash, HashSource, ProofError};
use crate::tile::{HEIGHT, WIDTH};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash as StdHash;
use std::sync::Arc;

/// A full tile's 256 hashes.
pub type FullTile = Arc<Vec<Hash>>;

/// Why stored edge tiles cannot make the tree a checkpoint names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum EdgeError {
    /// A partial tile has another number of hashes than the size implies.
    #[error("the partial tile at level {level} holds {got} hashes; size {size} needs {want}")]
    Width {
        level: u8,
        got: usize,
        want: usize,
        size: u64,
    },
}

/// The right edge of a tree stored as tiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    size: u64,
    /// `partial[L]`: the hashes of tree level `8·L` in the partial tile of tile level `L`.
    partial: Vec<Vec<Hash>>,
}

/// A tile that an append completed or changed, to persist in the same transaction as the
/// checkpoint that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWrite {
    /// Tile level.
    pub level: u8,
    /// Index within the level.
    pub index: u64,
    /// Its hashes so far (256 once full).
    pub hashes: Vec<Hash>,
}

/// The number of hashes in the partial tile of tile level `level` for a tree of `size`.
pub fn partial_width(size: u64, level: u8) -> usize {
    let shift = u32::from(level) * u32::from(HEIGHT);
    if shift >= 64 {
        return 0;
    }
    ((size >> shift) % WIDTH) as usize
}

/// The index of the partial tile of tile level `level` for a tree of `size`.
pub fn partial_index(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * u32::from(HEIGHT);
    if shift >= 64 {
        return 0;
    }
    (size >> shift) / WIDTH
}

/// Tile levels a tree of `size` has (with a full or partial tile).
pub fn tile_levels(size: u64) -> u8 {
    let mut l = 0u8;
    while u32::from(l) * u32::from(HEIGHT) < 64 && size >> (u32::from(l) * u32::from(HEIGHT)) > 0 {
        l += 1;
    }
    l
}

impl Edge {
    /// The empty tree.
    pub fn new() -> Edge {
        Edge::default()
    }

    /// The edge of a tree of `size` from its partial tiles, lowest level first (levels whose
    /// partial tile is empty may be given empty or left out at the top).
    pub fn from_partials(size: u64, mut partial: Vec<Vec<Hash>>) -> Result<Edge, EdgeError> {
        let levels = usize::from(tile_levels(size));
        partial.resize(levels.max(partial.len()), Vec::new());
        for (l, p) in partial.iter().enumerate() {
            let level = l as u8;
            let want = partial_width(size, level);
            if p.len() != want {
                return Err(EdgeError::Width {
                    level,
                    got: p.len(),
                    want,
                    size,
                });
            }
        }
        partial.truncate(levels);
        Ok(Edge { size, partial })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The partial tile of `level` (empty if that level has none).
    pub fn partial(&self, level: u8) -> &[Hash] {
        self.partial.get(usize::from(level)).map_or(&[], |v| v)
    }

    /// Appends a leaf hash. Tiles the append filled are added to `completed`.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<TileWrite>) {
        self.size += 1;
        let mut h = leaf;
        let mut level = 0usize;
        loop {
            if self.partial.len() == level {
                self.partial.push(Vec::with_capacity(WIDTH as usize));
            }
            let p = &mut self.partial[level];
            p.push(h);
            if p.len() < WIDTH as usize {
                return;
            }
            let full = std::mem::take(p);
            // The tile's root is the next tile level's next hash.
            let mut row = full.clone();
            while row.len() > 1 {
                row = row
                    .chunks_exact(2)
                    .map(|c| merkle::node_hash(&c[0], &c[1]))
                    .collect();
            }
            let lv = level as u8;
            completed.push(TileWrite {
                level: lv,
                index: partial_index(self.size, lv) - 1,
                hashes: full,
            });
            h = row[0];
            level += 1;
        }
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        // Every node the root needs is on the right edge, inside a partial tile.
        // Unreachable for a consistent edge; an all-zero root can match no checkpoint.
        merkle::root(&Tiles::new(self, &HashMap::new()), self.size).unwrap_or([0u8; 32])
    }

    /// The partial tiles of tile levels ≥ 1 whose contents differ from `before`'s (what a
    /// batch must persist besides the full tiles it completed; the level-0 partial tile is
    /// the leaf hashes of the partial entry bundle, which is stored anyway).
    pub fn changed_partials(&self, before: &Edge) -> Vec<TileWrite> {
        let mut out = Vec::new();
        for l in 1..self.partial.len() {
            let level = l as u8;
            let now = self.partial(level);
            if now.is_empty() {
                continue;
            }
            let idx = partial_index(self.size, level);
            let same = partial_index(before.size, level) == idx && before.partial(level) == now;
            if !same {
                out.push(TileWrite {
                    level,
                    index: idx,
                    hashes: now.to_vec(),
                });
            }
        }
        out
    }
}

/// A [`HashSource`] over the edge and a set of fetched full tiles.
pub struct Tiles<'a> {
    edge: &'a Edge,
    full: &'a HashMap<(u8, u64), FullTile>,
}

impl<'a> Tiles<'a> {
    /// The edge, with `full` holding the full tiles a proof needs.
    pub fn new(edge: &'a Edge, full: &'a HashMap<(u8, u64), FullTile>) -> Tiles<'a> {
        Tiles { edge, full }
    }

    /// The hashes of tile `(tl, index)`: the partial one from the edge, a full one from the
    /// fetched set.
    fn tile(&self, tl: u8, index: u64) -> Option<&[Hash]> {
        if partial_index(self.edge.size, tl) == index {
            let p = self.edge.partial(tl);
            if !p.is_empty() {
                return Some(p);
            }
        }
        self.full.get(&(tl, index)).map(|t| t.as_slice())
    }
}

impl HashSource for Tiles<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::Missing { level, index };
        let tl = level / HEIGHT;
        let r = u32::from(level % HEIGHT);
        let first = index.checked_shl(r).ok_or(missing.clone())?;
        let hashes = self.tile(tl, first / WIDTH).ok_or(missing.clone())?;
        let off = (first % WIDTH) as usize;
        let row = hashes.get(off..off + (1usize << r)).ok_or(missing)?;
        if row.len() == 1 {
            return Ok(row[0]);
        }
        let mut row: Vec<Hash> = row
            .chunks_exact(2)
            .map(|c| merkle::node_hash(&c[0], &c[1]))
            .collect();
        while row.len() > 1 {
            row = row
                .chunks_exact(2)
                .map(|c| merkle::node_hash(&c[0], &c[1]))
                .collect();
        }
        Ok(row[0])
    }
}

/// Records the full tiles a computation asks for (answering zero hashes).
struct Recorder<'a> {
    edge: &'a Edge,
    seen: RefCell<BTreeSet<(u8, u64)>>,
}

impl HashSource for Recorder<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let tl = level / HEIGHT;
        let first = index
            .checked_shl(u32::from(level % HEIGHT))
            .ok_or(ProofError::Missing { level, index })?;
        let t = first / WIDTH;
        let in_edge = partial_index(self.edge.size, tl) == t && !self.edge.partial(tl).is_empty();
        if !in_edge {
            self.seen.borrow_mut().insert((tl, t));
        }
        Ok([0u8; 32])
    }
}

/// What a proof needs from storage.
#[derive(Debug, Clone, Copy)]
pub enum ProofKind {
    /// Inclusion of `index` in the tree of `size`.
    Inclusion {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Consistency of the tree of `old` with the tree of `new`.
    Consistency {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
}

impl ProofKind {
    /// Computes the proof over `src`.
    pub fn prove(&self, src: &impl HashSource) -> Result<Vec<Hash>, ProofError> {
        match *self {
            ProofKind::Inclusion { index, size } => merkle::inclusion_proof(src, index, size),
            ProofKind::Consistency { old, new } => merkle::consistency_proof(src, old, new),
        }
    }
}

/// The full tiles (tile level, index) that `proof` needs beyond the edge, in order. Sizes
/// must not exceed the edge's (the caller checks; a larger one names tiles that do not
/// exist yet).
pub fn tiles_needed(edge: &Edge, proof: ProofKind) -> Result<Vec<(u8, u64)>, ProofError> {
    let r = Recorder {
        edge,
        seen: RefCell::new(BTreeSet::new()),
    };
    proof.prove(&r)?;
    Ok(r.seen.into_inner().into_iter().collect())
}

/// A bounded cache with two generations: a hit in the old one moves the entry to the new
/// one; when the new one reaches `cap`, the old one is dropped and the new one becomes old.
/// At most `2·cap` entries; recently used entries survive (an approximate LRU without a
/// list to maintain).
#[derive(Debug)]
pub struct TwoGen<K, V> {
    cap: usize,
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Eq + StdHash + Clone, V: Clone> TwoGen<K, V> {
    /// A cache of at most `2·cap` entries.
    pub fn new(cap: usize) -> Self {
        TwoGen {
            cap: cap.max(1),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// The value, if cached.
    pub fn get(&mut self, k: &K) -> Option<V> {
        if let Some(v) = self.young.get(k) {
            return Some(v.clone());
        }
        let v = self.old.remove(k)?;
        self.insert(k.clone(), v.clone());
        Some(v)
    }

    /// Caches a value.
    pub fn insert(&mut self, k: K, v: V) {
        if self.young.len() >= self.cap && !self.young.contains_key(&k) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, v);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, MemoryTree};

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    /// Builds both trees to `n` and keeps every completed tile, as storage would.
    fn build(n: u64) -> (Edge, MemoryTree, HashMap<(u8, u64), FullTile>) {
        let mut e = Edge::new();
        let mut m = MemoryTree::new();
        let mut full = HashMap::new();
        let mut done = Vec::new();
        for i in 0..n {
            e.push(leaf(i), &mut done);
            m.push(leaf(i));
        }
        for t in done {
            assert_eq!(t.hashes.len(), WIDTH as usize);
            full.insert((t.level, t.index), Arc::new(t.hashes));
        }
        (e, m, full)
    }

    #[test]
    fn edge_root_equals_the_full_trees_root_at_every_size_across_tile_boundaries() {
        let mut e = Edge::new();
        let mut m = MemoryTree::new();
        let mut done = Vec::new();
        for i in 0..(256 * 256 + 300) {
            assert_eq!(e.root(), merkle::root(&m, i).unwrap(), "size {i}");
            e.push(leaf(i), &mut done);
            m.push(leaf(i));
        }
    }

    #[test]
    fn proofs_from_edge_and_needed_tiles_equal_proofs_from_the_whole_tree() {
        let n = 256 * 256 * 2 + 256 * 3 + 17;
        let (e, m, full) = build(n);
        for &(index, size) in &[
            (0, n),
            (n - 1, n),
            (65_535, n),
            (70_000, 100_000),
            (5, 6),
            (256 * 256, 256 * 256 + 1),
        ] {
            let p = ProofKind::Inclusion { index, size };
            let need = tiles_needed(&e, p).unwrap();
            let fetched: HashMap<_, _> = need
                .iter()
                .map(|k| (*k, full.get(k).cloned().expect("a stored full tile")))
                .collect();
            assert_eq!(
                p.prove(&Tiles::new(&e, &fetched)).unwrap(),
                merkle::inclusion_proof(&m, index, size).unwrap()
            );
            // A proof touches a few tiles per tile level, not the log.
            assert!(need.len() <= 2 * usize::from(tile_levels(size)), "{need:?}");
        }
        for &(old, new) in &[(1, n), (256, n), (1000, 70_000), (n - 1, n), (300, 301)] {
            let p = ProofKind::Consistency { old, new };
            let need = tiles_needed(&e, p).unwrap();
            let fetched: HashMap<_, _> = need
                .iter()
                .map(|k| (*k, full.get(k).cloned().unwrap()))
                .collect();
            assert_eq!(
                p.prove(&Tiles::new(&e, &fetched)).unwrap(),
                merkle::consistency_proof(&m, old, new).unwrap()
            );
        }
    }

    #[test]
    fn a_missing_tile_is_reported_not_guessed() {
        let (e, _, _) = build(256 * 5 + 3);
        let empty = HashMap::new();
        let r = merkle::inclusion_proof(&Tiles::new(&e, &empty), 0, e.size());
        assert!(matches!(r, Err(ProofError::Missing { .. })));
    }

    #[test]
    fn edge_from_partials_round_trips_and_refuses_wrong_widths() {
        let (e, _, _) = build(256 * 256 + 256 * 7 + 9);
        let parts: Vec<Vec<Hash>> = (0..3).map(|l| e.partial(l).to_vec()).collect();
        let back = Edge::from_partials(e.size(), parts.clone()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.root(), e.root());
        let mut bad = parts;
        bad[1].pop();
        assert!(matches!(
            Edge::from_partials(e.size(), bad),
            Err(EdgeError::Width { level: 1, .. })
        ));
    }

    #[test]
    fn changed_partials_name_only_levels_above_zero_that_moved() {
        let (mut e, _, _) = build(256 * 3 + 10);
        let before = e.clone();
        let mut done = Vec::new();
        e.push(leaf(1), &mut done);
        assert!(e.changed_partials(&before).is_empty());
        let before = e.clone();
        for i in 0..245 {
            e.push(leaf(i), &mut done);
        }
        // A level-0 tile completed: the level-1 partial tile grew from 3 to 4 hashes.
        let ch = e.changed_partials(&before);
        assert_eq!(ch.len(), 1);
        assert_eq!((ch[0].level, ch[0].index, ch[0].hashes.len()), (1, 0, 4));
    }

    #[test]
    fn two_generation_cache_stays_bounded_and_keeps_recent_entries() {
        let mut c = TwoGen::new(4);
        for i in 0..100u32 {
            c.insert(i, i);
            let _ = c.get(&0);
            assert!(c.len() <= 8);
        }
        assert_eq!(c.get(&0), Some(0));
        assert_eq!(c.get(&99), Some(99));
        assert_eq!(c.get(&3), None);
    }
}
