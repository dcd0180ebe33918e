//! C2SP tlog-checkpoint note bodies.

use crate::merkle::Hash;
use base64::Engine as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A checkpoint body: origin, tree size, root hash, and optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
    /// Extension lines (opaque; not recommended).
    pub extensions: Vec<String>,
}

/// Why a checkpoint body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint: {0}")]
pub struct CheckpointError(pub String);

fn cerr(m: &str) -> CheckpointError {
    CheckpointError(m.to_string())
}

impl Checkpoint {
    /// The note text: each line newline-terminated.
    pub fn body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a note text (as returned by [`crate::note::open`]).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| cerr("the text must end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(cerr("origin, size and root hash lines are required"));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(cerr("the origin is empty"));
        }
        let size: u64 = lines[1]
            .parse()
            .map_err(|_| cerr("the size is not a decimal number"))?;
        if lines[1] != size.to_string() {
            return Err(cerr("the size has leading zeroes or a sign"));
        }
        let root = B64
            .decode(lines[2])
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| cerr("the root hash is not 32 bytes of base64"))?;
        if B64.encode(root) != lines[2] {
            return Err(cerr("the root hash is not canonical base64"));
        }
        if lines[3..].iter().any(|l| l.is_empty()) {
            return Err(cerr("extension lines must not be empty"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|l| l.to_string()).collect(),
        })
    }
}
