//! The transparency log's core, without I/O.
//!
//! - [`merkle`]: RFC 6962 leaf and node hashes, tree roots, inclusion and consistency proofs
//!   computed from any store of complete-subtree hashes, and their verification (RFC 9162
//!   2.1.3.2 and 2.1.4.2).
//! - [`tile`]: C2SP tlog-tiles: the `x001/x234/067` index encoding, tile and entry-bundle
//!   paths, tile contents, and entry bundles.
//! - [`edge`]: the tree as C2SP hash tiles: the right edge in memory (what appending and
//!   the root need), full tiles in storage, and which tiles a proof needs.
//! - [`note`]: C2SP signed-note: parsing, Ed25519 signing and verification, key IDs, and
//!   verifier keys (`name+hash+base64`).
//! - [`checkpoint`]: C2SP tlog-checkpoint bodies.
//! - [`entry`]: the documented format of Custos log entries (one JSON object per trust event).
//! - [`receipt`]: an entry with its inclusion proof and signed checkpoint, checked offline
//!   against the log key and a k-of-n witness threshold.
//! - [`monitor`]: the monitor's rules file and the alerts each entry raises (unknown signers,
//!   builders outside their device classes, signing outside maintenance windows, bursts per
//!   identity, NF types a role should not produce).
//! - [`witness`]: C2SP tlog-cosignature (Ed25519, type 0x04) and the witness's rule: cosign
//!   only a checkpoint consistent with every one it has seen.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod edge;
pub mod entry;
pub mod merkle;
pub mod monitor;
pub mod note;
pub mod receipt;
pub mod tile;
pub mod witness;

#[cfg(test)]
mod tests;
