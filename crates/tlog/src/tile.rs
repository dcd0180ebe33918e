//! C2SP tlog-tiles: paths, tile contents and entry bundles.

use crate::merkle::{Hash, HashSource, ProofError};

/// Hashes per full tile.
pub const WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const HEIGHT: u8 = 8;
/// Largest entry an entry bundle can hold (uint16 length prefix).
pub const MAX_ENTRY: usize = 65_535;

/// A tile or entry-bundle address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileId {
    /// `None` for `tile/entries/…`, else the tile level (0–63).
    pub level: Option<u8>,
    /// Index within the level.
    pub index: u64,
    /// Width: 256 for a full tile, 1–255 for a partial one.
    pub width: u16,
}

/// Why a tile path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tile path: {0}")]
pub struct PathError(pub String);

fn perr(m: &str) -> PathError {
    PathError(m.to_string())
}

/// `1234067` → `x001/x234/067`.
pub fn encode_index(mut n: u64) -> String {
    let mut groups = Vec::new();
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g:03}")
            } else {
                format!("{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl TileId {
    /// The path below the log prefix, e.g. `tile/0/x001/234.p/17`.
    pub fn path(&self) -> String {
        let level = self
            .level
            .map_or_else(|| "entries".to_string(), |l| l.to_string());
        let mut p = format!("tile/{level}/{}", encode_index(self.index));
        if u64::from(self.width) < WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a path below the prefix; only the canonical spelling is accepted.
    pub fn parse(path: &str) -> Result<TileId, PathError> {
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| perr("must start with tile/"))?;
        let mut parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 2 || parts.len() > 10 {
            return Err(perr("wrong number of path elements"));
        }
        let level = match parts.remove(0) {
            "entries" => None,
            l => {
                let v: u8 = l.parse().map_err(|_| perr("level must be 0 to 63"))?;
                if v > 63 || l != v.to_string() {
                    return Err(perr("level must be 0 to 63 without leading zeroes"));
                }
                Some(v)
            }
        };
        let mut width = WIDTH as u16;
        if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
            let w = parts.pop().unwrap_or_default();
            let v: u16 = w.parse().map_err(|_| perr("width must be 1 to 255"))?;
            if v == 0 || v > 255 || w != v.to_string() {
                return Err(perr("width must be 1 to 255 without leading zeroes"));
            }
            width = v;
            let n = parts.len() - 1;
            parts[n] = parts[n].trim_end_matches(".p");
        }
        let mut index: u64 = 0;
        let last = parts.len() - 1;
        for (i, g) in parts.iter().enumerate() {
            let digits = if i < last {
                g.strip_prefix('x')
                    .ok_or_else(|| perr("all but the last index element start with x"))?
            } else {
                g
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(perr("index elements are three digits"));
            }
            let d: u64 = digits.parse().map_err(|_| perr("bad index"))?;
            index = index
                .checked_mul(1000)
                .and_then(|x| x.checked_add(d))
                .ok_or_else(|| perr("index too large"))?;
        }
        let id = TileId {
            level,
            index,
            width,
        };
        if id.path() != path {
            return Err(perr("not the canonical encoding"));
        }
        Ok(id)
    }

    /// The tree level of the hashes in this tile (8 × tile level; 0 for entries).
    pub fn tree_level(&self) -> u8 {
        self.level.unwrap_or(0) * HEIGHT
    }

    /// Whether this tile exists for a tree of `size` (full, or the partial one of that size).
    pub fn exists_at(&self, size: u64) -> bool {
        let shift = u32::from(self.tree_level());
        let hashes = if shift >= 64 { 0 } else { size >> shift };
        let full = hashes / WIDTH;
        if u64::from(self.width) == WIDTH {
            self.index < full
        } else {
            self.index == full && hashes % WIDTH == u64::from(self.width)
        }
    }
}

/// The tiles (hash tiles, not entry bundles) a tree of `size` leaves is served as.
pub fn tiles_for(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=63u8 {
        let shift = u32::from(level) * u32::from(HEIGHT);
        if shift >= 64 || size >> shift == 0 {
            break;
        }
        let hashes = size >> shift;
        for index in 0..hashes / WIDTH {
            out.push(TileId {
                level: Some(level),
                index,
                width: WIDTH as u16,
            });
        }
        if !hashes.is_multiple_of(WIDTH) {
            out.push(TileId {
                level: Some(level),
                index: hashes / WIDTH,
                width: (hashes % WIDTH) as u16,
            });
        }
    }
    out
}

/// The bytes of a hash tile: `width` hashes of tree level `8·L` from index `256·N`.
pub fn tile_bytes(src: &impl HashSource, id: &TileId) -> Result<Vec<u8>, ProofError> {
    let level = id.tree_level();
    let start = id.index * WIDTH;
    let mut out = Vec::with_capacity(usize::from(id.width) * 32);
    for i in 0..u64::from(id.width) {
        out.extend_from_slice(&src.node(level, start + i)?);
    }
    Ok(out)
}

/// Splits tile bytes into hashes (the length must be a multiple of 32, at most 256 hashes).
pub fn tile_hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(32) || bytes.len() > 32 * WIDTH as usize {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

/// An entry bundle: each entry as a big-endian uint16 length and its bytes.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        let n = u16::try_from(e.len()).ok()?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(e);
    }
    Some(out)
}

/// Parses an entry bundle (refuses truncation and more than 256 entries).
pub fn parse_bundle(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 || out.len() == WIDTH as usize {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let e = b.get(2..2 + n)?;
        out.push(e);
        b = &b[2 + n..];
    }
    Some(out)
}

/// A [`HashSource`] over tiles: any complete-subtree hash is rebuilt from the one tile that
/// holds its level's hashes (levels between tile levels are hashed up from the tile).
pub struct TileSource<F: Fn(u8, u64) -> Option<Vec<Hash>>> {
    /// Fetches the full or partial tile (level, index) as hashes.
    pub fetch: F,
}

impl<F: Fn(u8, u64) -> Option<Vec<Hash>>> HashSource for TileSource<F> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::Missing { level, index };
        let tl = level / HEIGHT;
        let r = u32::from(level % HEIGHT);
        // The node covers 2^r hashes of tree level 8·tl, starting at index << r.
        let first = index.checked_shl(r).ok_or(missing.clone())?;
        let tile = first / WIDTH;
        let hashes = (self.fetch)(tl, tile).ok_or(missing.clone())?;
        let off = (first % WIDTH) as usize;
        let mut row: Vec<Hash> = hashes
            .get(off..off + (1usize << r))
            .ok_or(missing)?
            .to_vec();
        while row.len() > 1 {
            row = row
                .chunks_exact(2)
                .map(|p| crate::merkle::node_hash(&p[0], &p[1]))
                .collect();
        }
        Ok(row[0])
    }
}
