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

/// Largest `add-checkpoint` request body accepted.
pub const MAX_ADD_CHECKPOINT: usize = 64 << 10;

/// A C2SP tlog-witness `add-checkpoint` request: the size the log believes the witness last
/// saw, the consistency proof from it, and the signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// `old <size>`.
    pub old: u64,
    /// Consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body: `old N\n`, one base64 hash per line, an empty line, the note.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let mut s = format!("old {}\n", self.old);
        for h in &self.proof {
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses a request body strictly (what is wrong is named).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, String> {
        use base64::Engine as _;
        if body.len() > MAX_ADD_CHECKPOINT {
            return Err(format!(
                "the body is larger than {MAX_ADD_CHECKPOINT} bytes"
            ));
        }
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or("no empty line before the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or("the first line must be \"old <size>\"")?;
        if old.is_empty() || (old.len() > 1 && old.starts_with('0')) {
            return Err("the old size is not a canonical decimal".into());
        }
        let old: u64 = old
            .parse()
            .map_err(|_| "the old size is not a decimal".to_string())?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == 63 {
                return Err("the proof has more than 63 hashes".into());
            }
            let h = base64::engine::general_purpose::STANDARD
                .decode(l)
                .ok()
                .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                .ok_or("a proof line is not a base64 SHA-256 hash")?;
            proof.push(h);
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: checkpoint.to_string(),
        })
    }
}

/// What a witness answers to an `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Cosign; record this as seen first.
    Cosign(Checkpoint),
    /// 409: the request's `old` is not the witness's size (the body is the witness's size).
    Conflict(u64),
    /// 409: the checkpoint has the size the witness cosigned but another root hash (a
    /// split view at equal size).
    ConflictingRoot(String),
    /// 404: the witness does not follow this log.
    UnknownLog,
    /// 403: the log's signature does not verify.
    Forbidden(String),
    /// 422: the consistency proof does not verify (a split view).
    Unprocessable(String),
    /// 400: malformed, or `old` larger than the checkpoint's size.
    Bad(String),
}

/// The witness's decision for one request, in C2SP tlog-witness's order: an unknown origin
/// is 404; no valid signature from the log's key is 403 (a malformed body or checkpoint
/// 400); `old` larger than the checkpoint's size is 400; `old` other than the size last
/// cosigned is 409 with that size; a consistency proof that does not verify is 422; the
/// size last cosigned with another root hash is 409.
pub fn answer(logs: &[(Verifier, Option<Seen>)], req: &AddCheckpoint) -> Answer {
    let origin = match req.checkpoint.split_once('\n') {
        Some((o, _)) => o,
        None => return Answer::Bad("the checkpoint has no origin line".into()),
    };
    let Some((log, seen)) = logs.iter().find(|(v, _)| v.name == origin) else {
        return Answer::UnknownLog;
    };
    let opened = match note::open(&req.checkpoint, std::slice::from_ref(log)) {
        Ok(o) => o,
        Err(note::NoteError::Malformed(e)) => return Answer::Bad(e.to_string()),
        Err(e) => return Answer::Forbidden(Refusal::LogSignature(e).to_string()),
    };
    let cp = match Checkpoint::parse(opened.text) {
        Ok(cp) => cp,
        Err(e) => return Answer::Bad(e.to_string()),
    };
    if cp.origin != origin {
        return Answer::Bad(Refusal::Origin(cp.origin).to_string());
    }
    if req.old > cp.size {
        return Answer::Bad(format!(
            "old {} is larger than the checkpoint's size {}",
            req.old, cp.size
        ));
    }
    let have = seen.map_or(0, |s| s.size);
    if req.old != have {
        return Answer::Conflict(have);
    }
    match seen {
        Some(s) if s.size == cp.size && s.root != cp.root => Answer::ConflictingRoot(format!(
            "split view: a checkpoint of size {} with another root hash was already cosigned",
            cp.size
        )),
        _ => match check(log, origin, *seen, &req.checkpoint, &req.proof) {
            Ok(cp) => Answer::Cosign(cp),
            Err(Refusal::LogSignature(e)) => Answer::Forbidden(e.to_string()),
            Err(Refusal::Format(e)) => Answer::Bad(e.to_string()),
            Err(Refusal::Origin(o)) => Answer::Bad(format!("origin {o:?}")),
            Err(e) => Answer::Unprocessable(e.to_string()),
        },
    }
}
