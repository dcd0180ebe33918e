//! `custos fw` end to end through the binary: keygen, sign (file keys and keyless against a
//! real server), verify with exit codes 0/1/2, install (installer run, durable state,
//! idempotent, failed installer leaves the state), and the attack list, each denied with the
//! named rule and the state file untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{sign_args, text, BUILDER, CLASS};

fn custos(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custos"));
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn keygen(dir: &Path, alg: &str, name: &str) -> String {
    let o = custos(dir, &["fw", "keygen", "--alg", alg, "--out", name], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = text(&o);
    t.split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap()
        .to_string()
}

fn sign(dir: &Path, image: &str, out: &str, key: &[&str], overrides: &[(&str, &str)]) -> Output {
    let mut args = sign_args(image, out, key, overrides);
    args.extend(["--hardware-id".to_string(), "rev-b".to_string()]);
    custos(
        dir,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
}

fn policy(dir: &Path, keys: &[&str], extra: &str) -> PathBuf {
    let keys = keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let p = dir.join("policy.toml");
    std::fs::write(
        &p,
        format!(
            "[[suppliers]]\nname = \"acme\"\nkeys = [{keys}]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\nmin_security_version = 3\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn state(dir: &Path, sv: u64) -> PathBuf {
    let p = dir.join("state.json");
    std::fs::write(
        &p,
        json!({"device_class": CLASS, "hardware_id": "rev-b", "installed": {"digest": {"sha256": "00".repeat(32)}, "version": "5.1.0", "security_version": sv, "installed_at": "2026-11-01T00:00:00Z"}, "max_security_version": sv}).to_string(),
    )
    .unwrap();
    p
}

fn verify(dir: &Path, image: &str, bundle: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "fw",
        "verify",
        image,
        "--bundle",
        bundle,
        "--policy",
        "policy.toml",
        "--state",
        "state.json",
    ];
    args.extend_from_slice(extra);
    custos(dir, &args, &[])
}

fn install(dir: &Path, image: &str, bundle: &str, installer: &str) -> Output {
    custos(
        dir,
        &[
            "fw",
            "install",
            image,
            "--bundle",
            bundle,
            "--policy",
            "policy.toml",
            "--state",
            "state.json",
            "--installer",
            installer,
        ],
        &[],
    )
}

fn denied_by(o: &Output, rule: &str) {
    assert_eq!(code(o), 1, "{}", text(o));
    assert!(
        text(o).contains(&format!("- {rule}:")),
        "expected rule {rule}: {}",
        text(o)
    );
}

#[test]
fn file_keys_sign_verify_install_and_every_attack_is_denied_with_the_state_untouched() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let image: Vec<u8> = (0..3_000_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    std::fs::write(dir.join("fw.img"), &image).unwrap();
    let ed = keygen(dir, "ed25519", "ed.pem");
    let p256 = keygen(dir, "ecdsa-p256", "p256.pem");
    let rogue = keygen(dir, "ed25519", "rogue.pem");
    policy(dir, &[&ed, &p256], "");
    let st = state(dir, 4);
    let before = std::fs::read(&st).unwrap();

    for (key, bundle) in [("ed.pem", "ed.bundle"), ("p256.pem", "p256.bundle")] {
        let o = sign(dir, "fw.img", bundle, &["--key", key], &[]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let o = verify(dir, "fw.img", bundle, &[]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert!(text(&o).starts_with("ACCEPT"), "{}", text(&o));
    }
    let o = verify(dir, "fw.img", "ed.bundle", &["--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["accept"], true);
    assert_eq!(v["facts"]["supplier"], "acme");
    assert_eq!(v["facts"]["security_version"], 5);

    // A flipped byte in the image.
    let mut bad = image.clone();
    bad[1_234_567] ^= 0x40;
    std::fs::write(dir.join("flipped.img"), &bad).unwrap();
    denied_by(
        &verify(dir, "flipped.img", "ed.bundle", &[]),
        "subject.digest",
    );
    // An edited payload.
    let mut b: Value =
        serde_json::from_slice(&std::fs::read(dir.join("ed.bundle")).unwrap()).unwrap();
    let fw = b["dsseEnvelopes"][1]["payload"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let mut stmt: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&fw)
            .unwrap(),
    )
    .unwrap();
    stmt["predicate"]["securityVersion"] = json!(9);
    b["dsseEnvelopes"][1]["payload"] =
        json!(base64::engine::general_purpose::STANDARD.encode(stmt.to_string()));
    std::fs::write(dir.join("edited.bundle"), b.to_string()).unwrap();
    denied_by(
        &verify(dir, "fw.img", "edited.bundle", &[]),
        "signature.valid",
    );
    // A wrong payloadType.
    let mut b: Value =
        serde_json::from_slice(&std::fs::read(dir.join("ed.bundle")).unwrap()).unwrap();
    b["dsseEnvelopes"][0]["payloadType"] = json!("application/json");
    std::fs::write(dir.join("retyped.bundle"), b.to_string()).unwrap();
    denied_by(
        &verify(dir, "fw.img", "retyped.bundle", &[]),
        "signature.valid",
    );
    // A signature by an unpinned supplier key.
    sign(dir, "fw.img", "rogue.bundle", &["--key", "rogue.pem"], &[]);
    denied_by(&verify(dir, "fw.img", "rogue.bundle", &[]), "signer.pinned");
    let _ = rogue;
    // A builder not allowed for the device class.
    let o = sign(
        dir,
        "fw.img",
        "builder.bundle",
        &["--key", "ed.pem"],
        &[("--builder-id", "https://laptop.example/alice")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    denied_by(
        &verify(dir, "fw.img", "builder.bundle", &[]),
        "builder.allowed",
    );
    // An image for another device class, a lower security version, an expired image.
    for (flag, value, file, rule) in [
        (
            "--device-class",
            "upf-edge",
            "class.bundle",
            "device_class.match",
        ),
        ("--security-version", "3", "old.bundle", "anti_rollback"),
        (
            "--not-after",
            "2020-01-01T00:00:00Z",
            "expired.bundle",
            "image.expired",
        ),
    ] {
        let o = sign(dir, "fw.img", file, &["--key", "ed.pem"], &[(flag, value)]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        denied_by(&verify(dir, "fw.img", file, &[]), rule);
    }
    // A revoked key.
    policy(
        dir,
        &[&ed, &p256],
        &format!("[revocation]\nrevoked_keys = [\"{ed}\"]\n"),
    );
    denied_by(&verify(dir, "fw.img", "ed.bundle", &[]), "signer.revoked");
    policy(dir, &[&ed, &p256], "");
    // Duplicate signatures counted twice toward a threshold of two.
    policy(dir, &[&ed, &p256], "[verify]\nthreshold = 2\n");
    let mut b: Value =
        serde_json::from_slice(&std::fs::read(dir.join("ed.bundle")).unwrap()).unwrap();
    for e in b["dsseEnvelopes"].as_array_mut().unwrap() {
        let s = e["signatures"][0].clone();
        e["signatures"].as_array_mut().unwrap().push(s);
    }
    std::fs::write(dir.join("dup.bundle"), b.to_string()).unwrap();
    denied_by(
        &verify(dir, "fw.img", "dup.bundle", &[]),
        "signature.threshold",
    );
    policy(dir, &[&ed, &p256], "");
    // A truncated or oversized bundle: an error (2) naming the bundle.
    let full = std::fs::read(dir.join("ed.bundle")).unwrap();
    std::fs::write(dir.join("cut.bundle"), &full[..full.len() / 2]).unwrap();
    let o = verify(dir, "fw.img", "cut.bundle", &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("cut.bundle"), "{}", text(&o));
    let mut big = full.clone();
    big.resize(5 << 20, b' ');
    std::fs::write(dir.join("big.bundle"), &big).unwrap();
    let o = verify(dir, "fw.img", "big.bundle", &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("larger than"), "{}", text(&o));
    // Usage errors: a missing file, a broken policy.
    let o = verify(dir, "nope.img", "ed.bundle", &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    std::fs::write(dir.join("policy.toml"), "[[suppliers]]\nname = 1\n").unwrap();
    let o = verify(dir, "fw.img", "ed.bundle", &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("policy"), "{}", text(&o));
    policy(dir, &[&ed, &p256], "");

    // Every denial above left the state file as it was; install through a denied image too.
    let o = install(dir, "flipped.img", "ed.bundle", "touch installer-ran");
    denied_by(&o, "subject.digest");
    assert!(
        !dir.join("installer-ran").exists(),
        "a denied image never reaches the installer"
    );
    assert_eq!(std::fs::read(&st).unwrap(), before);

    // A failing installer: exit 1, state unchanged.
    let o = install(
        dir,
        "fw.img",
        "ed.bundle",
        "echo flashing failed >&2; exit 3",
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("unchanged"), "{}", text(&o));
    assert_eq!(std::fs::read(&st).unwrap(), before);

    // A good install: the installer gets the verified copy; then the state records it.
    let o = install(
        dir,
        "fw.img",
        "ed.bundle",
        "cp \"$CUSTOS_FW_IMAGE\" slot-a.img && test \"$CUSTOS_FW_SECURITY_VERSION\" = 5",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read(dir.join("slot-a.img")).unwrap(), image);
    let s: Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
    assert_eq!(s["installed"]["security_version"], 5);
    assert_eq!(s["max_security_version"], 5);
    // Idempotent: the same image again is a no-op success (the installer does not run).
    let o = install(dir, "fw.img", "ed.bundle", "touch ran-again");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("already installed"), "{}", text(&o));
    assert!(!dir.join("ran-again").exists());
    // Mark it known-good.
    let o = custos(dir, &["fw", "mark-good", "--state", "state.json"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let s: Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
    assert_eq!(s["known_good"]["security_version"], 5);
    // No staged copies are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".custos-fw"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Keyless: the build system holds only a token; Custos issues a 10-minute code-signing
/// certificate for a key generated in the signing process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_signature_verifies_and_a_revoked_signing_certificate_is_denied() {
    use custos_testkit::{dev_server, ok, pki_root, policy_token};
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    let ca_pem = pki_root(api, root, "Acme code signing CA").await;
    // Certificates name the OCSP responder (AIA), which `fw verify` asks with fetch_ocsp.
    ok(
        api,
        root,
        "POST",
        "pki/config/urls",
        json!({"ocsp_servers": format!("{}/v1/pki/ocsp", api.base)}),
    )
    .await;
    ok(api, root, "POST", "pki/roles/codesign", json!({
        "key_type": "ec", "allow_any_name": true, "require_cn": false, "enforce_hostnames": false,
        "server_flag": false, "client_flag": false, "code_signing_flag": true,
        "allowed_uri_sans": BUILDER, "max_ttl": "10m", "ttl": "10m", "no_store": false,
    })).await;
    // The build system's token may only sign with that role.
    let token = policy_token(
        api,
        root,
        "builder",
        "path \"pki/sign/codesign\" { capabilities = [\"update\"] }",
    )
    .await;

    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    std::fs::write(dir.join("fw.img"), b"keyless firmware image").unwrap();
    let addr = api_base(api);
    let run = |args: Vec<String>| {
        let dir = dir.clone();
        let addr = addr.clone();
        let token = token.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                custos(
                    &dir,
                    &a,
                    &[("CUSTOS_ADDR", &addr), ("CUSTOS_TOKEN", &token)],
                )
            })
            .await
            .unwrap()
        }
    };
    let o = run(keyless_sign_args("keyless.bundle")).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let b: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keyless.bundle")).unwrap()).unwrap();
    let chain = b["verificationMaterial"]["certificateChain"]
        .as_array()
        .unwrap();
    assert_eq!(chain.len(), 2);
    let (_, leaf) =
        x509_parser::pem::parse_x509_pem(chain[0].as_str().unwrap().as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(life <= 600 + 60, "a 10-minute certificate (got {life} s)");
    assert!(
        leaf.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .code_signing
    );

    let fp = {
        let (_, p) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &p.contents,
        ))
    };
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[suppliers]]\nname = \"acme\"\nca_certificates = [\"{fp}\"]\nidentities = [\"{BUILDER}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\n[revocation]\nrequire_crl = true\ncrl_files = [\"crl.der\"]\n"),
    )
    .unwrap();
    state(&dir, 4);
    let fetch_crl = || async {
        let r = reqwest::get(format!("{addr}/v1/pki/crl")).await.unwrap();
        std::fs::write(dir.join("crl.der"), r.bytes().await.unwrap()).unwrap();
    };
    fetch_crl().await;
    let o = run(verify_keyless()).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("signed keyless"), "{}", text(&o));
    // The same decision from OCSP alone: the CLI asks the responder in the certificate.
    let ocsp_policy = |dir: &std::path::Path| {
        let p = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
        let p = p.replace(
            "require_crl = true\ncrl_files = [\"crl.der\"]\n",
            "require_ocsp = true\nfetch_ocsp = true\n",
        );
        std::fs::write(dir.join("ocsp-policy.toml"), p).unwrap();
    };
    ocsp_policy(&dir);
    let verify_ocsp = || {
        let mut a = verify_keyless();
        let i = a.iter().position(|x| x == "policy.toml").unwrap();
        a[i] = "ocsp-policy.toml".into();
        a
    };
    let o = run(verify_ocsp()).await;
    assert_eq!(code(&o), 0, "{}", text(&o));

    // Revoke the signing certificate: the same bundle is now denied.
    let serial = leaf
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ok(
        api,
        root,
        "POST",
        "pki/revoke",
        json!({"serial_number": serial}),
    )
    .await;
    fetch_crl().await;
    let o = run(verify_keyless()).await;
    denied_by(&o, "signer.revoked");
    let o = run(verify_ocsp()).await;
    denied_by(&o, "signer.revoked");
    assert!(text(&o).contains("OCSP"), "{}", text(&o));

    // A builder identity the role does not allow gets no certificate at all.
    let mut args = keyless_sign_args("other.bundle");
    let i = args.iter().position(|a| a == BUILDER).unwrap();
    args[i] = "https://ci.acme.example/builders/other@v1".into();
    let o = run(args).await;
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("allowed_uri_sans"), "{}", text(&o));
}

fn api_base(api: &custos_testkit::Api) -> String {
    api.base.clone()
}

fn keyless_sign_args(out: &str) -> Vec<String> {
    sign_args(
        "fw.img",
        out,
        &["--keyless", "--mount", "pki", "--role", "codesign"],
        &[],
    )
}

fn verify_keyless() -> Vec<String> {
    [
        "fw",
        "verify",
        "fw.img",
        "--bundle",
        "keyless.bundle",
        "--policy",
        "policy.toml",
        "--state",
        "state.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `fw init-state` writes the state file `fw verify --state` and `fw install` read, with the
/// running image hashed and its security version as the anti-rollback floor; it never
/// overwrites a device's state.
#[test]
fn init_state_creates_the_device_state_and_its_anti_rollback_floor() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let kid = keygen(dir, "ed25519", "k.pem");
    policy(dir, &[&kid], "");
    std::fs::write(dir.join("running.img"), b"the image in flash today").unwrap();
    let args = [
        "fw",
        "init-state",
        "--state",
        "state.json",
        "--device-class",
        CLASS,
        "--hardware-id",
        "rev-b",
        "--image",
        "running.img",
        "--version",
        "5.1.0",
        "--security-version",
        "7",
    ];
    let o = custos(dir, &args, &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let want = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        b"the image in flash today",
    ));
    assert_eq!(st["installed"]["digest"]["sha256"], want.as_str());
    assert_eq!(st["installed"]["version"], "5.1.0");
    assert_eq!(st["max_security_version"], 7);
    assert_eq!(st["hardware_id"], "rev-b");
    let before = std::fs::read(dir.join("state.json")).unwrap();
    let o = custos(dir, &args, &[]);
    assert_ne!(code(&o), 0);
    assert!(text(&o).contains("not overwriting"), "{}", text(&o));
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), before);

    // Security version 5 is below the floor of 7; 8 installs.
    std::fs::write(dir.join("old.img"), b"an older image").unwrap();
    let o = sign(dir, "old.img", "old.json", &["--key", "k.pem"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    denied_by(&verify(dir, "old.img", "old.json", &[]), "anti_rollback");
    std::fs::write(dir.join("new.img"), b"a newer image").unwrap();
    let o = sign(
        dir,
        "new.img",
        "new.json",
        &["--key", "k.pem"],
        &[("--security-version", "8"), ("--version", "5.3.0")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = install(dir, "new.img", "new.json", "true");
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["installed"]["version"], "5.3.0");
    assert_eq!(st["max_security_version"], 8);
}
