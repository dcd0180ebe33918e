//! Shared by the `custos fw` and `log` tests: the argument list of `fw sign` for a standard
//! firmware predicate, with any flag's value replaced; a log written in the C2SP layout.
#![allow(dead_code)] // each test crate uses its part

use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::entry::{ChangeOp, Entry, Event};
use custos_tlog::merkle::{self, leaf_hash, MemoryTree};
use custos_tlog::note::{self, Signer};
use custos_tlog::tile::{self, TileId, WIDTH};
use std::path::{Path, PathBuf};
use std::process::Output;

pub const CLASS: &str = "gnb-du-x1";
pub const BUILDER: &str = "https://ci.acme.example/builders/firmware@v1";

/// `fw sign <image> --out <out> <key…>` with the standard predicate; `overrides` replace the
/// value of a listed flag (clap refuses a flag given twice).
pub fn sign_args(image: &str, out: &str, key: &[&str], overrides: &[(&str, &str)]) -> Vec<String> {
    let mut args: Vec<String> = ["fw", "sign", image, "--out", out]
        .iter()
        .chain(key)
        .map(|s| s.to_string())
        .collect();
    for (flag, value) in [
        ("--vendor", "acme"),
        ("--device-class", CLASS),
        ("--version", "5.2.0"),
        ("--security-version", "5"),
        ("--not-after", "180d"),
        ("--builder-id", BUILDER),
        (
            "--source-repo",
            "git+https://git.acme.example/ran/du-firmware",
        ),
        ("--commit", "7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c"),
        ("--internal", "{\"buildHost\": \"b7.build.acme.internal\"}"),
    ] {
        let v = overrides
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(value, |(_, v)| *v);
        args.push(flag.into());
        args.push(v.into());
    }
    args
}

/// Writes a log of `entries` signed by `signer` into `dir` in the C2SP layout.
pub fn write_log(dir: &Path, signer: &Signer, entries: &[Vec<u8>]) -> PathBuf {
    let mut tree = MemoryTree::new();
    for e in entries {
        tree.push(leaf_hash(e));
    }
    let size = entries.len() as u64;
    for id in tile::tiles_for(size) {
        let p = dir.join(id.path());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, tile::tile_bytes(&tree, &id).unwrap()).unwrap();
    }
    for (n, chunk) in entries.chunks(WIDTH as usize).enumerate() {
        let id = TileId {
            level: None,
            index: n as u64,
            width: chunk.len() as u16,
        };
        let p = dir.join(id.path());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            p,
            tile::encode_bundle(chunk.iter().map(Vec::as_slice)).unwrap(),
        )
        .unwrap();
    }
    let body = Checkpoint {
        origin: signer.verifier().name.clone(),
        size,
        root: merkle::root(&tree, size).unwrap(),
        extensions: vec![],
    }
    .body();
    let note = note::assemble(&body, &[signer.sign(&body, 0)]);
    let p = dir.join("checkpoint");
    std::fs::write(&p, note).unwrap();
    p
}

/// Log entry `i` of a synthetic log: an ACL policy write at a fixed time.
pub fn policy_entry(i: usize) -> Vec<u8> {
    Entry::new(
        1_800_000_000 + i as u64,
        Event::PolicyChanged {
            name: format!("p{i}"),
            op: ChangeOp::Write,
            policy_sha256: None,
            requester: "root".into(),
        },
    )
    .encode()
    .unwrap()
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `custos args…` in `dir` against `base` with `token`; panics with its stderr on
/// failure; answers its stdout.
pub fn custos_ok(bin: &str, dir: &Path, base: &str, token: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("CUSTOS_ADDR", base)
        .env("CUSTOS_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}
