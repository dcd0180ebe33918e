//! `custos fw` with a key held in a PKCS#11 token: SoftHSM2 (Debian `softhsm2`, installed by
//! the test command) gets a fresh token, `fw hsm-keygen` creates a non-extractable P-256 key
//! in it, `fw sign` signs through the token, and `fw verify` accepts. A wrong PIN or key label
//! is an error naming the problem.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::text;

use std::path::Path;
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn run(dir: &Path, prog: &str, args: &[&str], pin: &str) -> Output {
    Command::new(prog)
        .current_dir(dir)
        .args(args)
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .env("CUSTOS_PKCS11_PIN", pin)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (install softhsm2, or run scripts/test.sh)"))
}

#[test]
fn softhsm2_key_signs_and_verify_accepts() {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: install softhsm2 (scripts/test.sh does)"
    );
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("tokens")).unwrap();
    std::fs::write(
        dir.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            dir.display()
        ),
    )
    .unwrap();
    let o = run(
        dir,
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "custos-fw",
            "--so-pin",
            "12345678",
            "--pin",
            "246810",
        ],
        "",
    );
    assert!(o.status.success(), "{}", text(&o));
    let custos = env!("CARGO_BIN_EXE_custos");
    let hsm = [
        "--pkcs11-module",
        MODULE,
        "--pkcs11-token",
        "custos-fw",
        "--pkcs11-key",
        "release-2026",
    ];

    let mut args = vec!["fw", "hsm-keygen"];
    args.extend(hsm);
    let o = run(dir, custos, &args, "246810");
    assert!(o.status.success(), "{}", text(&o));
    let key_id = text(&o)
        .split_whitespace()
        .find(|w| w.len() == 64)
        .unwrap()
        .to_string();
    // The same label twice is refused.
    let o = run(dir, custos, &args, "246810");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));

    std::fs::write(dir.join("fw.img"), vec![0x5a; 1 << 20]).unwrap();
    let sign = |pin: &str, key: &str| {
        let a = common::sign_args(
            "fw.img",
            "b.json",
            &[
                "--pkcs11-module",
                MODULE,
                "--pkcs11-token",
                "custos-fw",
                "--pkcs11-key",
                key,
            ],
            &[],
        );
        run(
            dir,
            custos,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            pin,
        )
    };
    let o = sign("000000", "release-2026");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("login"),
        "a wrong PIN is named: {}",
        text(&o)
    );
    let o = sign("246810", "no-such-key");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no-such-key"), "{}", text(&o));
    let o = sign("246810", "release-2026");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&key_id), "{}", text(&o));

    std::fs::write(
        dir.join("policy.toml"),
        format!("[[suppliers]]\nname = \"acme\"\nkeys = [\"{key_id}\"]\n[[device_classes]]\nname = \"{}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{}\"]\n", common::CLASS, common::BUILDER),
    )
    .unwrap();
    let o = run(
        dir,
        custos,
        &[
            "fw",
            "verify",
            "fw.img",
            "--bundle",
            "b.json",
            "--policy",
            "policy.toml",
        ],
        "",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).starts_with("ACCEPT"), "{}", text(&o));
}
