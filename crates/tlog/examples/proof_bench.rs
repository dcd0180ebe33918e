//! Proof generation and tree hashing rates, single core, against the machine's own limit
//! measured in the same run (raw RFC 6962 node hashes per second).
//!
//! `cargo run --release -p custos-tlog --example proof_bench -- [leaves]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_tlog::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_inclusion, MemoryTree,
};
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    // The limit: raw node hashes (64-byte SHA-256 inputs) per second on one core.
    let t = Instant::now();
    let mut h = [7u8; 32];
    let raw = 2_000_000u32;
    for _ in 0..raw {
        h = node_hash(&h, &h);
    }
    let raw_rate = f64::from(raw) / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut tree = MemoryTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let append = n as f64 / t.elapsed().as_secs_f64();
    let r = root(&tree, n).unwrap();

    // Inclusion proofs for pseudo-random leaves of the full tree.
    let count = 500_000u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ h[0] as u64;
    let t = Instant::now();
    let mut total = 0usize;
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        total += inclusion_proof(&tree, x % n, n).unwrap().len();
    }
    let proofs = count as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let checks = 200_000u64;
    for i in 0..checks {
        let idx = (i * 7919) % n;
        let p = inclusion_proof(&tree, idx, n).unwrap();
        verify_inclusion(&leaf_hash(&idx.to_be_bytes()), idx, n, &p, &r).unwrap();
    }
    let prove_verify = checks as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let cons = 100_000u64;
    for i in 1..=cons {
        consistency_proof(&tree, (i * 7) % n + 1, n).unwrap();
    }
    let cons_rate = cons as f64 / t.elapsed().as_secs_f64();

    println!("tree of {n} leaves, one core");
    println!("  raw node hashes        {raw_rate:>12.0}/s  (machine limit for hashing)");
    println!(
        "  appends (leaf+nodes)   {append:>12.0}/s  = {:.2} of raw (2 hashes per leaf: ceiling 0.5)",
        append / raw_rate
    );
    println!(
        "  inclusion proofs       {proofs:>12.0}/s  (avg {:.1} hashes each)",
        total as f64 / count as f64
    );
    println!("  proof + verify         {prove_verify:>12.0}/s");
    println!("  consistency proofs     {cons_rate:>12.0}/s");
}
