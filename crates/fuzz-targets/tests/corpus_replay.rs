//! Every fuzz target's committed corpus (`fuzz/corpus/<target>/`), replayed on stable Rust
//! through the same entry points cargo-fuzz drives, so the parsers of outside bytes are
//! exercised in every CI run, nightly or not. A target without a seed corpus fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn every_fuzz_target_replays_its_committed_corpus_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut total = 0;
    for target in custos_fuzz_targets::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target needs a seed corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            assert!(custos_fuzz_targets::run(target, &data));
            // Truncations and single-byte flips of each seed too: the cheap neighbours a
            // fuzzer finds first.
            for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
                custos_fuzz_targets::run(target, &data[..cut.min(data.len())]);
            }
            for i in (0..data.len()).step_by(data.len() / 16 + 1) {
                let mut d = data.clone();
                d[i] ^= 0x5a;
                custos_fuzz_targets::run(target, &d);
            }
        }
        total += files.len();
    }
    assert!(total >= custos_fuzz_targets::TARGETS.len());
}

#[test]
fn every_cargo_fuzz_target_calls_its_shared_entry_point() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for target in custos_fuzz_targets::TARGETS {
        let src = std::fs::read_to_string(dir.join(format!("{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{target}.rs: {e}"));
        assert!(
            src.contains(&format!("custos_fuzz_targets::{target}(")),
            "fuzz/fuzz_targets/{target}.rs must call custos_fuzz_targets::{target}"
        );
    }
}
