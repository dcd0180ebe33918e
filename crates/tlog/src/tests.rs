#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Known answers: transparency-dev/merkle's RFC 6962 vectors (roots of every prefix of the
//! eight reference leaves, inclusion and consistency proofs), the C2SP tlog-tiles index
//! encoding and tile counts, and Go's golang.org/x/mod/sumdb/note signing vectors.

use crate::checkpoint::Checkpoint;
use crate::merkle::*;
use crate::note::{self, NoteError, Signer, Verifier, TYPE_COSIGNATURE, TYPE_ED25519};
use crate::tile::{self, TileId};
use crate::witness::{self, Refusal, Seen};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| hex::decode(x).unwrap())
    .collect()
}

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn tree() -> MemoryTree {
    let mut t = MemoryTree::new();
    for l in leaves() {
        t.push(leaf_hash(&l));
    }
    t
}

#[test]
fn rfc6962_roots_of_every_prefix_match_the_reference_vectors() {
    let t = tree();
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(root(&t, size as u64).unwrap(), h(want), "size {size}");
    }
    assert_eq!(empty_root(), h(ROOTS[0]));
    // Domain separation: a leaf hash is never a node hash of the same bytes.
    assert_ne!(leaf_hash(&[0u8; 64]), node_hash(&[0; 32], &[0; 32]));
}

#[test]
fn rfc6962_inclusion_proofs_match_the_reference_vectors_and_verify() {
    let t = tree();
    let cases: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let ls = leaves();
    for (i, n, want) in cases {
        let p = inclusion_proof(&t, *i, *n).unwrap();
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(p, want, "leaf {i} of {n}");
        let r = h(ROOTS[*n as usize]);
        verify_inclusion(&leaf_hash(&ls[*i as usize]), *i, *n, &p, &r).unwrap();
    }
    // Every (index, size) pair: the proof verifies, and any tampering is caught.
    for n in 1..=8u64 {
        let r = root(&t, n).unwrap();
        for i in 0..n {
            let lh = leaf_hash(&ls[i as usize]);
            let p = inclusion_proof(&t, i, n).unwrap();
            verify_inclusion(&lh, i, n, &p, &r).unwrap();
            assert!(verify_inclusion(&lh, i, n, &p, &h(ROOTS[0])).is_err());
            if n > 1 {
                assert!(verify_inclusion(&lh, (i + 1) % n, n, &p, &r).is_err());
                let mut bad = p.clone();
                bad[0][0] ^= 1;
                assert!(verify_inclusion(&lh, i, n, &bad, &r).is_err());
                assert!(verify_inclusion(&lh, i, n, &p[..p.len() - 1], &r).is_err());
            }
            let mut long = p.clone();
            long.push([0; 32]);
            assert!(verify_inclusion(&lh, i, n, &long, &r).is_err());
        }
        assert_eq!(
            inclusion_proof(&t, n, n).unwrap_err(),
            ProofError::IndexOutOfRange { index: n, size: n }
        );
    }
}

#[test]
fn rfc6962_consistency_proofs_match_the_reference_vectors_and_verify() {
    let t = tree();
    let cases: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (m, n, want) in cases {
        let p = consistency_proof(&t, *m, *n).unwrap();
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(p, want, "{m} -> {n}");
    }
    for n in 1..=8u64 {
        for m in 1..=n {
            let (rm, rn) = (root(&t, m).unwrap(), root(&t, n).unwrap());
            let p = consistency_proof(&t, m, n).unwrap();
            verify_consistency(m, n, &rm, &rn, &p).unwrap();
            // A fork: another old root, or a tampered hash, is never consistent.
            let mut fork = rm;
            fork[5] ^= 0x80;
            assert!(
                verify_consistency(m, n, &fork, &rn, &p).is_err(),
                "{m}->{n}"
            );
            if !p.is_empty() {
                let mut bad = p.clone();
                let last = bad.len() - 1;
                bad[last][0] ^= 1;
                assert!(verify_consistency(m, n, &rm, &rn, &bad).is_err());
                assert!(verify_consistency(m, n, &rm, &rn, &p[1..]).is_err());
            }
        }
    }
    assert!(consistency_proof(&t, 5, 3).is_err());
    assert!(verify_consistency(5, 3, &[0; 32], &[0; 32], &[]).is_err());
}

#[test]
fn proofs_agree_with_a_recomputed_tree_at_scale() {
    let mut t = MemoryTree::new();
    let n = 1000u64;
    for i in 0..n {
        t.push(leaf_hash(&i.to_be_bytes()));
    }
    for size in [1u64, 2, 255, 256, 257, 511, 999, 1000] {
        let r = root(&t, size).unwrap();
        for i in [0, size / 3, size - 1] {
            let p = inclusion_proof(&t, i, size).unwrap();
            verify_inclusion(&leaf_hash(&i.to_be_bytes()), i, size, &p, &r).unwrap();
        }
        for old in [1u64, size / 2 + 1, size] {
            let old = old.min(size);
            let p = consistency_proof(&t, old, size).unwrap();
            verify_consistency(old, size, &root(&t, old).unwrap(), &r, &p).unwrap();
        }
    }
}

#[test]
fn c2sp_tile_index_encoding_and_paths_round_trip() {
    assert_eq!(tile::encode_index(1_234_067), "x001/x234/067");
    assert_eq!(tile::encode_index(0), "000");
    assert_eq!(tile::encode_index(999), "999");
    assert_eq!(tile::encode_index(1000), "x001/000");
    for (path, level, index, width) in [
        ("tile/0/x001/x234/067", Some(0), 1_234_067, 256),
        ("tile/1/000.p/17", Some(1), 0, 17),
        ("tile/entries/x001/234.p/255", None, 1234, 255),
        ("tile/63/005", Some(63), 5, 256),
    ] {
        let id = TileId::parse(path).unwrap();
        assert_eq!(
            (id.level, id.index, id.width),
            (level, index, width),
            "{path}"
        );
        assert_eq!(id.path(), path);
    }
    for bad in [
        "tile/0/1234067",
        "tile/0/x1/234",
        "tile/00/000",
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/017",
        "tile/0/x000/001",
        "tile/0/001/002",
        "tile/0/x001/x234",
        "tile/-1/000",
        "tile/0/000/",
        "tile/0",
        "tiles/0/000",
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
    ] {
        assert!(TileId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn c2sp_tile_counts_for_a_tree_of_70000() {
    // The spec's example: 273 full level-0 tiles, a partial of width 112, one full level-1
    // tile, a partial level-1 tile of width 17 and a partial level-2 tile of width 1.
    let t = tile::tiles_for(70_000);
    let count = |l: u8, full: bool| {
        t.iter()
            .filter(|x| x.level == Some(l) && (x.width == 256) == full)
            .count()
    };
    assert_eq!(count(0, true), 273);
    assert_eq!(count(1, true), 1);
    assert_eq!(count(2, true), 0);
    let partial: Vec<(u8, u16)> = t
        .iter()
        .filter(|x| x.width < 256)
        .map(|x| (x.level.unwrap(), x.width))
        .collect();
    assert_eq!(partial, vec![(0, 112), (1, 17), (2, 1)]);
    // A tree of 256: one full level-0 tile and a level-1 partial of width 1.
    let t = tile::tiles_for(256);
    assert_eq!(t.len(), 2);
    assert!(t[1].level == Some(1) && t[1].width == 1);
    for id in tile::tiles_for(70_000) {
        assert!(id.exists_at(70_000), "{}", id.path());
    }
    assert!(!TileId::parse("tile/0/273.p/111").unwrap().exists_at(70_000));
    assert!(!TileId::parse("tile/0/274").unwrap().exists_at(70_000));
}

#[test]
fn tiles_rebuild_every_proof() {
    let mut t = MemoryTree::new();
    for i in 0..70_000u64 {
        t.push(leaf_hash(&i.to_le_bytes()));
    }
    let size = 70_000;
    let served: std::collections::HashMap<(u8, u64), Vec<Hash>> = tile::tiles_for(size)
        .into_iter()
        .map(|id| {
            let b = tile::tile_bytes(&t, &id).unwrap();
            assert_eq!(b.len(), 32 * usize::from(id.width));
            (
                (id.level.unwrap(), id.index),
                tile::tile_hashes(&b).unwrap(),
            )
        })
        .collect();
    let src = tile::TileSource {
        fetch: |l: u8, n: u64| served.get(&(l, n)).cloned(),
    };
    let r = root(&t, size).unwrap();
    assert_eq!(root(&src, size).unwrap(), r);
    for i in [0u64, 255, 256, 65_535, 65_536, 69_999] {
        assert_eq!(
            inclusion_proof(&src, i, size).unwrap(),
            inclusion_proof(&t, i, size).unwrap()
        );
    }
    assert_eq!(
        consistency_proof(&src, 12_345, size).unwrap(),
        consistency_proof(&t, 12_345, size).unwrap()
    );
}

#[test]
fn entry_bundles_round_trip_and_refuse_truncation() {
    let e: Vec<&[u8]> = vec![b"a", b"", b"hello"];
    let b = tile::encode_bundle(e.iter().copied()).unwrap();
    assert_eq!(b, [0, 1, b'a', 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(tile::parse_bundle(&b).unwrap(), e);
    for cut in 1..b.len() {
        if cut != 3 && cut != 5 {
            assert!(tile::parse_bundle(&b[..cut]).is_none(), "{cut}");
        }
    }
    assert!(tile::encode_bundle([&vec![0u8; 65_536][..]]).is_none());
}

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn signed_note_matches_go_sumdb_note_byte_for_byte() {
    let s = Signer::parse_skey(PETER_SKEY).unwrap();
    assert_eq!(s.verifier().vkey(), PETER_VKEY);
    assert_eq!(s.verifier().key_id, 0xc74f20a3);
    assert_eq!(
        note::assemble(PETER_TEXT, &[s.sign(PETER_TEXT, 0)]),
        PETER_NOTE
    );
    let v = Verifier::parse(PETER_VKEY).unwrap();
    let o = note::open(PETER_NOTE, std::slice::from_ref(&v)).unwrap();
    assert_eq!(o.text, PETER_TEXT);
    // An unknown key's signature is ignored; with no known key, the note is refused.
    let both = format!("{PETER_NOTE}{ENOCH_SIG}");
    assert_eq!(
        note::open(&both, std::slice::from_ref(&v))
            .unwrap()
            .signed_by,
        vec![(0, None)]
    );
    assert_eq!(
        note::open(&both, &[]).unwrap_err(),
        NoteError::NoVerifiedSignature
    );
    // A bad signature from a known key rejects the whole note.
    let bad = PETER_NOTE.replacen("x08go/ZJ", "x08go/ZK", 1);
    assert!(matches!(
        note::open(&bad, std::slice::from_ref(&v)).unwrap_err(),
        NoteError::InvalidSignature(_)
    ));
    // Go's malformed notes.
    for m in [
        PETER_TEXT.to_string(),
        format!("{PETER_TEXT}\n"),
        PETER_NOTE[..PETER_NOTE.len() - 1].to_string(),
        format!("\x01{PETER_NOTE}"),
        format!("{PETER_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        format!("{PETER_NOTE}Unexpected line.\n"),
        format!("{PETER_TEXT}\n{}", PETER_NOTE[PETER_TEXT.len() + 1..].repeat(101)),
    ] {
        assert!(
            matches!(note::open(&m, std::slice::from_ref(&v)), Err(NoteError::Malformed(_))),
            "{m:?}"
        );
    }
    // Mangled verifier keys are refused (Go's TestNewVerifier).
    let b = PETER_VKEY.as_bytes();
    for i in 0..b.len() {
        let mut x = b.to_vec();
        x[i] = x[i].wrapping_add(1);
        if let Ok(s) = String::from_utf8(x) {
            assert!(Verifier::parse(&s).is_err(), "{s}");
        }
    }
    assert!(
        Verifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
}

#[test]
fn checkpoint_bodies_are_exact_and_strict() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse(body).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20_852_163);
    assert_eq!(cp.body(), body);
    let ext = format!("{body}extension one\n");
    assert_eq!(Checkpoint::parse(&ext).unwrap().body(), ext);
    for bad in [
        "example.com/x\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        "example.com/x\n020852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2==\n",
        "example.com/x\n1\nCsUY\n",
        "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        "example.com/x\n1\n",
    ] {
        assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
    }
}

fn checkpoint(t: &MemoryTree, size: u64, log: &Signer) -> String {
    let body = Checkpoint {
        origin: "custos.example/log".into(),
        size,
        root: root(t, size).unwrap(),
        extensions: vec![],
    }
    .body();
    note::assemble(&body, &[log.sign(&body, 0)])
}

#[test]
fn witness_cosigns_consistent_checkpoints_and_refuses_a_split_view() {
    let (log, _) = Signer::generate("custos.example/log", TYPE_ED25519).unwrap();
    let (w, _) = Signer::generate("witness.example/w1", TYPE_COSIGNATURE).unwrap();
    let t = tree();
    let origin = "custos.example/log";
    let c5 = checkpoint(&t, 5, &log);
    let cp5 = witness::check(log.verifier(), origin, None, &c5, &[]).unwrap();
    let seen = Seen {
        size: 5,
        root: cp5.root,
    };
    let c8 = checkpoint(&t, 8, &log);
    let p = consistency_proof(&t, 5, 8).unwrap();
    let cp8 = witness::check(log.verifier(), origin, Some(seen), &c8, &p).unwrap();
    // The cosignature: type 0x04 key ID, timestamp, over cosignature/v1 + time + body.
    let cos = w.sign(&cp8.body(), 1_679_315_147);
    assert_eq!(cos.sig.len(), 72);
    assert_eq!(&cos.sig[..8], &1_679_315_147u64.to_be_bytes());
    let cosigned = format!("{c8}{}", cos.line());
    let o = note::open(&cosigned, &[log.verifier().clone(), w.verifier().clone()]).unwrap();
    assert_eq!(o.signed_by, vec![(0, None), (1, Some(1_679_315_147))]);
    assert_eq!(
        witness::cosigned_message(1_679_315_147, &cp8.body()),
        format!("cosignature/v1\ntime 1679315147\n{}", cp8.body())
    );

    // Split view: a log that forked after size 5 shows another tree of size 8.
    let mut fork = MemoryTree::new();
    for (i, l) in leaves().iter().enumerate() {
        fork.push(leaf_hash(if i == 6 { b"forged" } else { l }));
    }
    let f8 = checkpoint(&fork, 8, &log);
    let fp = consistency_proof(&fork, 5, 8).unwrap();
    let seen8 = Seen {
        size: 8,
        root: cp8.root,
    };
    assert_eq!(
        witness::check(log.verifier(), origin, Some(seen8), &f8, &[]).unwrap_err(),
        Refusal::Inconsistent { seen: 8, new: 8 }
    );
    // The forked tree is self-consistent from 5, so only a witness that saw 8 catches it.
    assert!(witness::check(log.verifier(), origin, Some(seen), &f8, &fp).is_ok());
    // Rollback, wrong origin and a checkpoint not signed by the log.
    assert!(matches!(
        witness::check(log.verifier(), origin, Some(seen8), &c5, &[]),
        Err(Refusal::Rollback { .. })
    ));
    assert!(matches!(
        witness::check(log.verifier(), "other.example/log", None, &c8, &[]),
        Err(Refusal::Origin(_))
    ));
    let (rogue, _) = Signer::generate("custos.example/log", TYPE_ED25519).unwrap();
    assert!(matches!(
        witness::check(
            log.verifier(),
            origin,
            None,
            &checkpoint(&t, 8, &rogue),
            &[]
        ),
        Err(Refusal::LogSignature(_))
    ));
}

/// C2SP tlog-witness: each refusal answers with the status code the spec names, checked in
/// the spec's order (404, 403, 400, 409 with the size, 422, 409 for another root).
#[test]
fn witness_answers_carry_the_c2sp_tlog_witness_status_codes() {
    use witness::{answer, AddCheckpoint, Answer};
    let (log, _) = Signer::generate("custos.example/log", TYPE_ED25519).unwrap();
    let t = tree();
    let c5 = checkpoint(&t, 5, &log);
    let c8 = checkpoint(&t, 8, &log);
    let cp5 = witness::check(log.verifier(), "custos.example/log", None, &c5, &[]).unwrap();
    let seen5 = Seen {
        size: 5,
        root: cp5.root,
    };
    let logs = [(log.verifier().clone(), Some(seen5))];
    let req = |old, proof: Vec<[u8; 32]>, checkpoint: &str| AddCheckpoint {
        old,
        proof,
        checkpoint: checkpoint.to_string(),
    };
    let p58 = consistency_proof(&t, 5, 8).unwrap();
    assert!(matches!(
        answer(&logs, &req(5, p58.clone(), &c8)),
        Answer::Cosign(_)
    ));
    // 404: a log the witness does not follow.
    let (other, _) = Signer::generate("other.example/log", TYPE_ED25519).unwrap();
    let body = Checkpoint {
        origin: "other.example/log".into(),
        size: 8,
        root: root(&t, 8).unwrap(),
        extensions: vec![],
    }
    .body();
    let o8 = note::assemble(&body, &[other.sign(&body, 0)]);
    assert_eq!(answer(&logs, &req(5, p58.clone(), &o8)), Answer::UnknownLog);
    // 403: not signed by the log's key (checked before the sizes).
    let (rogue, _) = Signer::generate("custos.example/log", TYPE_ED25519).unwrap();
    assert!(matches!(
        answer(&logs, &req(9, vec![], &checkpoint(&t, 8, &rogue))),
        Answer::Forbidden(_)
    ));
    // 400: old larger than the checkpoint's size (before the stale-size check).
    assert!(matches!(
        answer(&logs, &req(9, vec![], &c8)),
        Answer::Bad(m) if m.contains("larger than")
    ));
    // 409 with the witness's size: old is not what it last cosigned.
    assert_eq!(answer(&logs, &req(3, vec![], &c8)), Answer::Conflict(5));
    // 422: the consistency proof does not verify.
    let mut bad = p58.clone();
    bad[0][0] ^= 1;
    assert!(matches!(
        answer(&logs, &req(5, bad, &c8)),
        Answer::Unprocessable(_)
    ));
    // 409 without a size: the size last cosigned, with another root hash.
    let mut fork = MemoryTree::new();
    for (i, l) in leaves().iter().enumerate() {
        fork.push(leaf_hash(if i == 2 { b"forged" } else { l }));
    }
    assert!(matches!(
        answer(&logs, &req(5, vec![], &checkpoint(&fork, 5, &log))),
        Answer::ConflictingRoot(m) if m.contains("split view")
    ));
    // The same checkpoint again is cosigned again (idempotent for the log).
    assert!(matches!(
        answer(&logs, &req(5, vec![], &c5)),
        Answer::Cosign(_)
    ));
}
