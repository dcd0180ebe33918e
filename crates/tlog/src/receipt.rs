//! Receipts: an entry with its inclusion proof and a signed (optionally cosigned) checkpoint,
//! enough to check offline that the log holds the entry. Provenance bundles carry them in
//! `tlogEntries`; the server's `sys/tlog/entry/<index>` returns one.
//!
//! ```json
//! {"origin":"custos.example/log","index":41,"entry":"<base64 entry bytes>",
//!  "inclusion_proof":["<base64 hash>",…],"checkpoint":"<signed note>"}
//! ```

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryError};
use crate::merkle::{leaf_hash, verify_inclusion, Hash};
use crate::note::{self, NoteError, Verifier};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Longest inclusion proof (a tree of 2^64 leaves).
const MAX_PROOF: usize = 64;

/// A receipt, as serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The log's origin line.
    pub origin: String,
    /// The entry's index.
    pub index: u64,
    /// The entry bytes, base64.
    pub entry: String,
    /// Audit path from the leaf to the checkpoint's root, base64 hashes.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note the proof leads to.
    pub checkpoint: String,
}

/// Whom a verifier trusts: the log's key, and optionally `threshold` of `witnesses`.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The log's note verifier (its name is the origin).
    pub log: Verifier,
    /// Witness cosignature verifiers.
    pub witnesses: Vec<Verifier>,
    /// How many distinct witnesses must have cosigned.
    pub threshold: usize,
}

/// A receipt that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The parsed entry.
    pub entry: Entry,
    /// The entry bytes.
    pub bytes: Vec<u8>,
    /// The checkpoint it is included in.
    pub checkpoint: Checkpoint,
    /// Cosignature times of the witnesses that signed, oldest first.
    pub witness_times: Vec<u64>,
}

/// Why a receipt (or a checkpoint) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Structurally wrong (what is named).
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The entry bytes are not a Custos entry.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The checkpoint's signatures.
    #[error("checkpoint: {0}")]
    Signature(NoteError),
    /// The checkpoint is another log's.
    #[error("the checkpoint's origin {found:?} is not the trusted log {expected:?}")]
    Origin {
        /// What the checkpoint says.
        found: String,
        /// The trusted log.
        expected: String,
    },
    /// Fewer witnesses than required.
    #[error("{found} of the required {required} witness cosignatures")]
    Witnesses {
        /// Distinct trusted witnesses that cosigned.
        found: usize,
        /// The threshold.
        required: usize,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("the entry at index {index} is not included in the checkpoint of size {size}")]
    NotIncluded {
        /// Entry index.
        index: u64,
        /// Checkpoint size.
        size: u64,
    },
}

fn malformed(m: impl Into<String>) -> ReceiptError {
    ReceiptError::Malformed(m.into())
}

/// Decodes base64 hashes.
pub fn decode_hashes(list: &[String]) -> Result<Vec<Hash>, ReceiptError> {
    if list.len() > MAX_PROOF {
        return Err(malformed("the proof has more than 64 hashes"));
    }
    list.iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                .ok_or_else(|| malformed("a proof hash is not 32 bytes of base64"))
        })
        .collect()
}

/// Encodes hashes as base64 strings.
pub fn encode_hashes(list: &[Hash]) -> Vec<String> {
    list.iter().map(|h| B64.encode(h)).collect()
}

/// Opens a signed checkpoint: the log's signature, its origin, and the witness threshold.
/// Returns the checkpoint and the cosignature times of the trusted witnesses that signed.
pub fn open_checkpoint(note: &str, trust: &Trust) -> Result<(Checkpoint, Vec<u64>), ReceiptError> {
    let mut verifiers = Vec::with_capacity(1 + trust.witnesses.len());
    verifiers.push(trust.log.clone());
    verifiers.extend(trust.witnesses.iter().cloned());
    let opened = note::open(note, &verifiers).map_err(ReceiptError::Signature)?;
    if !opened.signed_by.iter().any(|(i, _)| *i == 0) {
        return Err(ReceiptError::Signature(NoteError::NoVerifiedSignature));
    }
    let cp = Checkpoint::parse(opened.text).map_err(|e| malformed(e.to_string()))?;
    if cp.origin != trust.log.name {
        return Err(ReceiptError::Origin {
            found: cp.origin,
            expected: trust.log.name.clone(),
        });
    }
    let mut times: Vec<u64> = opened
        .signed_by
        .iter()
        .filter(|(i, _)| *i > 0)
        .filter_map(|(_, t)| *t)
        .collect();
    times.sort_unstable();
    if times.len() < trust.threshold {
        return Err(ReceiptError::Witnesses {
            found: times.len(),
            required: trust.threshold,
        });
    }
    Ok((cp, times))
}

impl Receipt {
    /// Parses a receipt from JSON.
    pub fn parse(v: &serde_json::Value) -> Result<Receipt, ReceiptError> {
        serde_json::from_value(v.clone()).map_err(|e| malformed(e.to_string()))
    }

    /// Checks the receipt against `trust`: the checkpoint's signatures and origin, the
    /// witness threshold, the entry format, and the inclusion proof.
    pub fn verify(&self, trust: &Trust) -> Result<Verified, ReceiptError> {
        if self.origin != trust.log.name {
            return Err(ReceiptError::Origin {
                found: self.origin.clone(),
                expected: trust.log.name.clone(),
            });
        }
        let (checkpoint, witness_times) = open_checkpoint(&self.checkpoint, trust)?;
        let bytes = B64
            .decode(&self.entry)
            .map_err(|_| malformed("entry is not base64"))?;
        let entry = Entry::parse(&bytes)?;
        let proof = decode_hashes(&self.inclusion_proof)?;
        verify_inclusion(
            &leaf_hash(&bytes),
            self.index,
            checkpoint.size,
            &proof,
            &checkpoint.root,
        )
        .map_err(|_| ReceiptError::NotIncluded {
            index: self.index,
            size: checkpoint.size,
        })?;
        Ok(Verified {
            entry,
            bytes,
            checkpoint,
            witness_times,
        })
    }
}
