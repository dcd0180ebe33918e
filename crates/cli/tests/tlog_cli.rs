//! `custos log verify|mirror` and the log's receipts in firmware bundles, through the binary:
//! offline inclusion, tile audits that find one altered byte, and consistency checks that
//! catch a log which dropped an entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{dev_server, ok};
use custos_tlog::note::{self, Signer, TYPE_ED25519};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{policy_entry, sign_args, text, write_log, BUILDER, CLASS};

fn custos(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custos"));
    c.current_dir(dir).args(args).env_remove("CUSTOS_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        custos(&dir, &args, &env)
    })
    .await
    .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

async fn log_key(api: &custos_testkit::Api) -> String {
    let (_, v) = api.call("GET", "sys/tlog/key", None, None).await;
    v["data"]["vkey"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn fw_sign_register_fills_the_receipt_and_fw_verify_takes_the_logs_time_offline() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    ok(
        api,
        root,
        "POST",
        "sys/mounts/provenance",
        json!({"type": "provenance"}),
    )
    .await;
    let vkey = log_key(api).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("fw.img"), b"logged firmware image").unwrap();
    let env = [("CUSTOS_ADDR", api.base.as_str()), ("CUSTOS_TOKEN", root)];
    let o = run(
        dir,
        &["fw", "keygen", "--alg", "ed25519", "--out", "k.pem"],
        &[],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let kid = text(&o)
        .split_whitespace()
        .find(|w| w.len() == 64)
        .unwrap()
        .to_string();
    let mut args = sign_args(
        "fw.img",
        "fw.bundle",
        &["--key", "k.pem", "--register", "provenance"],
        &[],
    );
    args.extend(["--hardware-id".into(), "rev-b".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(dir, &a, &env).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(dir.join("fw.bundle")).unwrap()).unwrap();
    assert_eq!(bundle["tlogEntries"].as_array().unwrap().len(), 1);

    // Offline: the server is not asked again.
    let policy = |extra: &str| {
        std::fs::write(
            dir.join("policy.toml"),
            format!("[[suppliers]]\nname = \"acme\"\nkeys = [\"{kid}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\n{extra}"),
        )
        .unwrap();
    };
    std::fs::write(
        dir.join("state.json"),
        json!({"device_class": CLASS, "hardware_id": "rev-b"}).to_string(),
    )
    .unwrap();
    let verify = [
        "fw",
        "verify",
        "fw.img",
        "--bundle",
        "fw.bundle",
        "--policy",
        "policy.toml",
        "--state",
        "state.json",
        "--json",
    ];
    policy(&format!("[tlog]\nkey = \"{vkey}\"\nrequired = true\n"));
    let o = run(dir, &verify, &[]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["facts"]["time_source"], "tlog", "{v}");

    let o = run(
        dir,
        &["log", "verify", "--key", &vkey, "--bundle", "fw.bundle"],
        &[],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("fw.sign"), "{}", text(&o));

    // A receipt for other envelopes, a forged entry, or a missing receipt: denied by name.
    let mut forged = bundle.clone();
    let r = &mut forged["tlogEntries"][0];
    let mut e: Value =
        serde_json::from_slice(&base64_decode(r["entry"].as_str().unwrap())).unwrap();
    e["event"]["envelopes"][0]["payload_sha256"] = json!("00".repeat(32));
    r["entry"] = json!(base64_encode(e.to_string().as_bytes()));
    std::fs::write(dir.join("fw.bundle"), forged.to_string()).unwrap();
    let o = run(dir, &verify, &[]).await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("tlog.inclusion"), "{}", text(&o));
    let o = run(
        dir,
        &["log", "verify", "--key", &vkey, "--bundle", "fw.bundle"],
        &[],
    )
    .await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("NOT VERIFIED"), "{}", text(&o));

    let mut bare = bundle.clone();
    bare["tlogEntries"] = json!([]);
    std::fs::write(dir.join("fw.bundle"), bare.to_string()).unwrap();
    let o = run(dir, &verify, &[]).await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("no transparency-log receipt"),
        "{}",
        text(&o)
    );
    // Another log's key: the receipt does not verify.
    std::fs::write(dir.join("fw.bundle"), bundle.to_string()).unwrap();
    let (other, _) = Signer::generate("custos.local/log", TYPE_ED25519).unwrap();
    policy(&format!(
        "[tlog]\nkey = \"{}\"\nrequired = true\n",
        other.verifier().vkey()
    ));
    let o = run(dir, &verify, &[]).await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("tlog.inclusion"), "{}", text(&o));
    // A witness threshold the checkpoint does not meet.
    let (w, _) = Signer::generate("witness.example", note::TYPE_COSIGNATURE).unwrap();
    policy(&format!(
        "[tlog]\nkey = \"{vkey}\"\nwitnesses = [\"{}\"]\nwitness_threshold = 1\n",
        w.verifier().vkey()
    ));
    let o = run(dir, &verify, &[]).await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("witness"), "{}", text(&o));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[tokio::test]
async fn log_verify_audits_a_mirror_and_finds_one_altered_tile_or_entry_byte() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    for i in 0..270 {
        ok(
            api,
            root,
            "PUT",
            &format!("sys/policies/acl/m{i}"),
            json!({"policy": "path \"a\" { capabilities = [\"read\"] }"}),
        )
        .await;
    }
    let vkey = log_key(api).await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let env = [("CUSTOS_ADDR", api.base.as_str())];
    let o = run(dir, &["log", "mirror", "m"], &env).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let audit = [
        "log",
        "verify",
        "--key",
        &vkey,
        "--checkpoint",
        "m/checkpoint",
        "--tiles",
        "m",
    ];
    let o = run(dir, &audit, &[]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("all 270 entries"), "{}", text(&o));
    // Entry types are listed as an operator reads them, not as Rust debug output.
    assert!(!text(&o).contains("[(\""), "{}", text(&o));
    assert!(
        text(&o).contains(": 270)") || text(&o).contains(", "),
        "{}",
        text(&o)
    );
    let o = run(
        dir,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--checkpoint",
            "m/checkpoint",
            "--online",
        ],
        &env,
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));

    for (file, at) in [
        ("m/tile/0/000", 5usize),
        ("m/tile/0/001.p/14", 40),
        ("m/tile/1/000.p/1", 0),
        ("m/tile/entries/000", 100),
        ("m/tile/entries/001.p/14", 3),
    ] {
        let copy = dir.join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&dir.join("m"), &copy);
        flip(&dir.join(file.replacen("m/", "copy/", 1)), at);
        let o = run(
            dir,
            &[
                "log",
                "verify",
                "--key",
                &vkey,
                "--checkpoint",
                "copy/checkpoint",
                "--tiles",
                "copy",
            ],
            &[],
        )
        .await;
        assert_eq!(code(&o), 1, "{file}: {}", text(&o));
        assert!(text(&o).contains("TAMPERED"), "{file}: {}", text(&o));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), p).unwrap();
        }
    }
}

#[tokio::test]
async fn a_checkpoint_that_drops_an_entry_is_inconsistent_with_the_one_before() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (signer, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    let vkey = signer.verifier().vkey();
    let entry = policy_entry;
    let honest: Vec<Vec<u8>> = (0..40).map(entry).collect();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    write_log(&dir.join("a"), &signer, &honest);
    // Later the log signs a bigger tree without entry 17 (which it wants to hide).
    let mut rewritten: Vec<Vec<u8>> = (0..45).map(entry).collect();
    rewritten.remove(17);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    write_log(&dir.join("b"), &signer, &rewritten);
    // Each checkpoint on its own is well signed and its tiles are intact …
    for m in ["a", "b"] {
        let o = run(
            dir,
            &[
                "log",
                "verify",
                "--key",
                &vkey,
                "--checkpoint",
                &format!("{m}/checkpoint"),
                "--tiles",
                m,
            ],
            &[],
        )
        .await;
        assert_eq!(code(&o), 0, "{m}: {}", text(&o));
    }
    // … but the newer one is not an extension of the older.
    let o = run(
        dir,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--old",
            "a/checkpoint",
            "--checkpoint",
            "b/checkpoint",
            "--tiles",
            "b",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("INCONSISTENT"), "{}", text(&o));
    // An honest extension passes.
    let grown: Vec<Vec<u8>> = (0..45).map(entry).collect();
    std::fs::create_dir_all(dir.join("c")).unwrap();
    write_log(&dir.join("c"), &signer, &grown);
    let o = run(
        dir,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--old",
            "a/checkpoint",
            "--checkpoint",
            "c/checkpoint",
            "--tiles",
            "c",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Bad invocations are usage errors naming the problem.
    let o = run(
        dir,
        &[
            "log",
            "verify",
            "--key",
            "not-a-key",
            "--checkpoint",
            "a/checkpoint",
            "--tiles",
            "a",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--key"), "{}", text(&o));
    let o = run(
        dir,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--checkpoint",
            "a/checkpoint",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&o), 2, "{}", text(&o));
}
