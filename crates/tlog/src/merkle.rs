//! RFC 6962 Merkle trees (SHA-256): hashing, roots and proofs from stored complete-subtree
//! hashes, and proof verification as RFC 9162 specifies it.

use aws_lc_rs::digest;

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// Why a proof cannot be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the variants' fields are named by their messages
pub enum ProofError {
    /// The leaf is not in the tree.
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The old tree is larger than the new one.
    #[error("tree size {old} cannot be consistent with tree size {new}")]
    BadSizes { old: u64, new: u64 },
    /// Too few or too many hashes for the sizes.
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    /// The proof computes another root.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// The store lacks a hash the proof needs.
    #[error("the hash at level {level}, index {index} is not available")]
    Missing { level: u8, index: u64 },
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// `MTH({d}) = SHA-256(0x00 || d)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// Stored hashes of complete subtrees: level `l`, index `i` is the root of leaves
/// `[i·2^l, (i+1)·2^l)`. Level 0 holds leaf hashes.
pub trait HashSource {
    /// The hash, if stored.
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of leaves `[lo, hi)`, where `lo` is a multiple of the largest power of
/// two not above `hi - lo` (always true for the ranges RFC 6962's recursion visits).
pub fn range_hash(src: &impl HashSource, lo: u64, hi: u64) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return src.node(n.trailing_zeros() as u8, lo >> n.trailing_zeros());
    }
    let k = split(n);
    let l = range_hash(src, lo, lo + k)?;
    let r = range_hash(src, lo + k, hi)?;
    Ok(node_hash(&l, &r))
}

/// The root hash of the tree of `size` leaves.
pub fn root(src: &impl HashSource, size: u64) -> Result<Hash, ProofError> {
    if size == 0 {
        Ok(empty_root())
    } else {
        range_hash(src, 0, size)
    }
}

/// The inclusion proof (audit path, leaf to root) of leaf `index` in the tree of `size`.
pub fn inclusion_proof(
    src: &impl HashSource,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0u64, size);
    let mut siblings = Vec::with_capacity(64);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
        }
    }
    siblings
        .into_iter()
        .rev()
        .map(|(a, b)| range_hash(src, a, b))
        .collect()
}

/// The consistency proof between the trees of `old` and `new` leaves (RFC 6962 2.1.2).
pub fn consistency_proof(
    src: &impl HashSource,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: the sibling ranges are found top-down and emitted
    // bottom-up, after the subtree where the old tree ends (unless that is the old root).
    let mut siblings = Vec::with_capacity(64);
    let mut terminal = None;
    let (mut lo, mut hi, mut b) = (0u64, new, true);
    while old != hi {
        let k = split(hi - lo);
        if old <= lo + k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
            b = false;
        }
    }
    if !b {
        terminal = Some((lo, hi));
    }
    let mut out = Vec::with_capacity(siblings.len() + 1);
    for (a, z) in terminal.into_iter().chain(siblings.into_iter().rev()) {
        out.push(range_hash(src, a, z)?);
    }
    Ok(out)
}

fn lsb(x: u64) -> bool {
    x & 1 == 1
}

/// RFC 9162: "if LSB(fn) is not set, right-shift both fn and sn equally until either LSB(fn)
/// is set or fn is 0" (climbing past levels where the node has no right sibling).
fn skip_right_edge(f: &mut u64, s: &mut u64) {
    while !lsb(*f) && *f != 0 {
        *f >>= 1;
        *s >>= 1;
    }
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size` with `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if lsb(f) || f == s {
            r = node_hash(p, &r);
            skip_right_edge(&mut f, &mut s);
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old` leaves with `old_root` is a prefix of the tree of `new`
/// leaves with `new_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        // Every tree extends the empty tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old - 1, new - 1);
    while lsb(f) {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if lsb(f) || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            skip_right_edge(&mut f, &mut s);
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Every complete-subtree hash of a tree, in memory (2 hashes per leaf). Appending is
/// amortised O(1) hashes.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        MemoryTree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let n = self.levels[level].len();
            if n % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            level += 1;
        }
    }

    /// The stored hashes of `level` (for tiles).
    pub fn level(&self, level: u8) -> &[Hash] {
        self.levels
            .get(usize::from(level))
            .map_or(&[][..], |v| v.as_slice())
    }
}

impl HashSource for MemoryTree {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(usize::from(level))
            .and_then(|v| v.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(ProofError::Missing { level, index })
    }
}
