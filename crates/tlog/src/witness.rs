//! C2SP tlog-cosignature (Ed25519, v1) and the witness's decision.

use crate::checkpoint::Checkpoint;
use crate::merkle::{verify_consistency, Hash};
use crate::note::{self, Verifier};

/// The message an Ed25519 cosignature signs: `cosignature/v1\ntime <t>\n` + checkpoint body.
pub fn cosigned_message(ts: u64, body: &str) -> String {
    format!("cosignature/v1\ntime {ts}\n{body}")
}

/// What a witness has last cosigned for a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
}

/// Why a witness refuses to cosign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the variants' fields are named by their messages
pub enum Refusal {
    /// The log's signature is missing or bad.
    #[error("the checkpoint is not validly signed by the log: {0}")]
    LogSignature(note::NoteError),
    /// The checkpoint body is malformed.
    #[error("{0}")]
    Format(crate::checkpoint::CheckpointError),
    /// Another log's checkpoint.
    #[error("the checkpoint's origin {0:?} is not the log's")]
    Origin(String),
    /// Smaller than one already cosigned.
    #[error("the checkpoint (size {new}) is older than one already cosigned (size {seen})")]
    Rollback { seen: u64, new: u64 },
    /// Not consistent with one already cosigned.
    #[error("split view: the checkpoint of size {new} is not consistent with the one of size {seen} already cosigned")]
    Inconsistent { seen: u64, new: u64 },
}

/// Checks a signed checkpoint from the log against what the witness has seen: the log's
/// signature, the origin, no rollback, and a consistency proof from the last cosigned tree.
/// On `Ok` the caller durably records the returned checkpoint as seen, then cosigns it.
pub fn check(
    log: &Verifier,
    origin: &str,
    seen: Option<Seen>,
    signed_checkpoint: &str,
    proof: &[Hash],
) -> Result<Checkpoint, Refusal> {
    let opened =
        note::open(signed_checkpoint, std::slice::from_ref(log)).map_err(Refusal::LogSignature)?;
    let cp = Checkpoint::parse(opened.text).map_err(Refusal::Format)?;
    if cp.origin != origin {
        return Err(Refusal::Origin(cp.origin));
    }
    if let Some(s) = seen {
        if cp.size < s.size {
            return Err(Refusal::Rollback {
                seen: s.size,
                new: cp.size,
            });
        }
        verify_consistency(s.size, cp.size, &s.root, &cp.root, proof).map_err(|_| {
            Refusal::Inconsistent {
                seen: s.size,
                new: cp.size,
            }
        })?;
    }
    Ok(cp)
}
