//! Remote attestation end to end: swtpm devices enrolled with their EK certificates (from a
//! private manufacturer CA) and AKs activated by `tpm2_activatecredential`; images signed
//! with `custos fw sign --register` and measured with `tpm2_pcrextend` as a boot loader
//! would; quotes from `tpm2_quote`. A device running a signed image attests TRUSTED; a
//! tampered, unpinned, rolled-back or revoked image attests UNTRUSTED with its rule; forged
//! or replayed evidence is refused and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{sign_args, BUILDER, CLASS};
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE};
use custos_attest::tpm::HashAlg;
use custos_testkit::tpm::{AkKind, Manufacturer, Tpm};
use custos_testkit::{dev_server, ok, pki_root, Api};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_custos");

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn custos(dir: &Path, api: &Api, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("CUSTOS_ADDR", &api.base)
        .env("CUSTOS_TOKEN", token)
        .env_remove("CUSTOS_CACERT")
        .output()
        .unwrap()
}

fn must(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn boot(t: &Tpm, image: &[u8]) -> Vec<u8> {
    custos_testkit::tpm::boot(t, image).to_bytes()
}

async fn call(api: &Api, root: &str, path: &str, body: Value) -> (u16, Value) {
    api.call("POST", path, Some(root), Some(body)).await
}

fn error_text(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// Enrols `t` as `id` and activates its AK with the TPM; the activation answer.
async fn enrol(api: &Api, root: &str, id: &str, t: &Tpm) -> (u16, Value) {
    let (st, v) = call(
        api,
        root,
        &format!("attest/devices/{id}"),
        json!({
            "device_class": CLASS,
            "hardware_ids": ["rev-b"],
            "ek_public": b64(&t.read("ek.pub")),
            "ek_certificate": b64(&t.ek_cert()),
            "ak_public": b64(&t.read("ak.pub")),
        }),
    )
    .await;
    if st != 200 {
        return (st, v);
    }
    assert_eq!(v["data"]["status"], "PENDING");
    let file = base64::engine::general_purpose::STANDARD
        .decode(v["data"]["tpm2_tools_credential"].as_str().unwrap())
        .unwrap();
    let secret = t
        .activate(&file)
        .expect("the TPM activates its own credential");
    call(
        api,
        root,
        &format!("attest/devices/{id}/activate"),
        json!({"credential": b64(&secret)}),
    )
    .await
}

async fn nonce(api: &Api, root: &str, id: &str) -> Vec<u8> {
    let (st, v) = call(api, root, &format!("attest/devices/{id}/nonce"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    hex::decode(v["data"]["nonce"].as_str().unwrap()).unwrap()
}

async fn submit(api: &Api, root: &str, id: &str, t: &Tpm, log: &[u8]) -> (u16, Value) {
    call(
        api,
        root,
        &format!("attest/devices/{id}/quote"),
        json!({
            "quote": b64(&t.read("quote.msg")),
            "signature": b64(&t.read("quote.sig")),
            "event_log": b64(log),
        }),
    )
    .await
}

/// A fresh nonce, a quote of PCRs 0-7 with it, and the verdict.
async fn attest(api: &Api, root: &str, id: &str, t: &Tpm, log: &[u8]) -> (u16, Value) {
    let n = nonce(api, root, id).await;
    t.quote("sha256:0,1,2,3,4,5,6,7", &n, "sha256");
    submit(api, root, id, t, log).await
}

fn rules(v: &Value) -> Vec<String> {
    serde_json::from_value(v["data"]["rules"].clone()).unwrap()
}

async fn device(api: &Api, root: &str, id: &str) -> Value {
    let (st, v) = api
        .call("GET", &format!("attest/devices/{id}"), Some(root), None)
        .await;
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_attest_trusted_or_untrusted_by_rule_and_forged_evidence_changes_nothing() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();

    // Keyless signing certificates from a PKI role, with a CRL; the provenance store.
    let ca_pem = pki_root(api, root, "Acme code signing CA").await;
    ok(
        api,
        root,
        "POST",
        "pki/config/urls",
        json!({"crl_distribution_points": [format!("{}/v1/pki/crl", api.base)]}),
    )
    .await;
    ok(api, root, "POST", "pki/roles/codesign", json!({
        "key_type": "ec", "allow_any_name": true, "require_cn": false, "enforce_hostnames": false,
        "server_flag": false, "client_flag": false, "code_signing_flag": true,
        "allowed_uri_sans": BUILDER, "max_ttl": "10m", "ttl": "10m",
    })).await;
    ok(
        api,
        root,
        "POST",
        "sys/mounts/provenance",
        json!({"type": "provenance"}),
    )
    .await;
    ok(
        api,
        root,
        "POST",
        "sys/mounts/attest",
        json!({"type": "attest"}),
    )
    .await;

    // Images and their signatures: a pinned key, an unpinned one, keyless.
    let key_id = |name: &str| -> String {
        let out = must(custos(
            dir,
            api,
            root,
            &["fw", "keygen", "--out", name, "--format", "json"],
        ));
        serde_json::from_str::<Value>(&out).unwrap()["key_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let pinned = key_id("release.pem");
    let _unpinned = key_id("rogue.pem");
    type Image<'a> = (&'a str, &'a [u8], &'a str, &'a str, &'a [&'a str]);
    let images: [Image; 4] = [
        (
            "good.img",
            b"du 5.2.0",
            "5.2.0",
            "7",
            &["--key", "release.pem"],
        ),
        (
            "rogue.img",
            b"du 5.2.1 rogue",
            "5.2.1",
            "7",
            &["--key", "rogue.pem"],
        ),
        (
            "old.img",
            b"du 5.1.0",
            "5.1.0",
            "4",
            &["--key", "release.pem"],
        ),
        (
            "keyless.img",
            b"du 5.3.0 keyless",
            "5.3.0",
            "8",
            &["--keyless", "--role", "codesign"],
        ),
    ];
    for (name, bytes, version, sv, key) in images {
        let image = bytes.repeat(4096);
        std::fs::write(dir.join(name), &image).unwrap();
        let mut args = sign_args(
            name,
            &format!("{name}.bundle"),
            key,
            &[("--version", version), ("--security-version", sv)],
        );
        args.extend(["--register".into(), "provenance".into()]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        must(custos(dir, api, root, &a));
    }
    let image = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let ca_der = custos_attest::ek::pem_certificates(&ca_pem).remove(0);
    let ca_sha = hex::encode(HashAlg::Sha256.digest(&[&ca_der]));
    let firmware_policy = format!(
        "[[suppliers]]\nname = \"acme\"\nkeys = [\"{pinned}\"]\nca_certificates = [\"{ca_sha}\"]\nidentities = [\"{BUILDER}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\n"
    );

    // Three TPMs from one manufacturer.
    let m = Manufacturer::new();
    let mut tpms: Vec<Tpm> = [AkKind::Ecdsa, AkKind::RsaSsa, AkKind::RsaPss]
        .into_iter()
        .map(|k| {
            let t = Tpm::new(&m);
            t.create_keys(k);
            t
        })
        .collect();
    let (st, v) = call(
        api,
        root,
        "attest/config",
        json!({
            "manufacturer_ca_pem": format!("{}{}", m.root_pem(), m.issuer_pem()),
            "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\ninterval = \"5s\"\n"),
            "firmware_policy": firmware_policy,
            "provenance_mount": "provenance",
            "revocation_pki_mount": "pki",
        }),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    for (i, t) in tpms.iter().enumerate() {
        let (st, v) = enrol(api, root, &format!("du-{i}"), t).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["status"], "UNATTESTED");
    }

    // du-0 boots the signed release: TRUSTED; it reports the install (floor 7).
    let log0 = boot(&tpms[0], &image("good.img"));
    let (st, v) = attest(api, root, "du-0", &tpms[0], &log0).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], "TRUSTED", "{v}");
    assert_eq!(v["data"]["firmware"][0]["version"], "5.2.0");
    let trusted_at = v["data"]["at_unix"].clone();
    let digest = hex::encode(HashAlg::Sha256.digest(&[&image("good.img")]));
    let (st, v) = call(
        api,
        root,
        "attest/devices/du-0/installs",
        json!({"image_sha256": digest, "version": "5.2.0", "security_version": 7}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["floor"], 7);

    // Forged evidence is refused and changes nothing.
    let _ = nonce(api, root, "du-0").await;
    let (st, v) = submit(api, root, "du-0", &tpms[0], &log0).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("quote.nonce"), "{v}");
    // Another device's AK signs a quote over du-0's nonce.
    let n = nonce(api, root, "du-0").await;
    let log1 = boot(&tpms[1], &image("good.img"));
    tpms[1].quote("sha256:0,1,2,3,4,5,6,7", &n, "sha256");
    let (st, v) = submit(api, root, "du-0", &tpms[1], &log1).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("quote.signature"), "{v}");
    // An event log that does not give the quoted PCRs; a truncated one; an oversized one.
    let mut forged = EventLog::parse(&log0).unwrap();
    forged.events[1] = Event::measure(
        4,
        EV_POST_CODE,
        &forged.banks,
        &image("good.img")[1..],
        b"du firmware",
    );
    let (st, v) = attest(api, root, "du-0", &tpms[0], &forged.to_bytes()).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("eventlog.replay"), "{v}");
    let (st, v) = attest(api, root, "du-0", &tpms[0], &log0[..log0.len() - 5]).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("eventlog.malformed"), "{v}");
    let (st, v) = attest(api, root, "du-0", &tpms[0], &vec![0u8; 2 << 20]).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("event_log: larger than"), "{v}");
    let now = device(api, root, "du-0").await;
    assert_eq!(
        now["verdict"]["at_unix"], trusted_at,
        "refused evidence changed the record"
    );
    assert_eq!(now["verdict"]["status"], "TRUSTED");

    // du-1 boots an image signed by an unpinned key: UNTRUSTED, measurement.untrusted.
    let (st, v) = submit_fresh(api, root, "du-1", &mut tpms[1], &image("rogue.img")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], "UNTRUSTED");
    assert_eq!(rules(&v), vec!["measurement.untrusted"], "{v}");
    // du-2 boots a tampered image (signed by nobody): measurement.unknown.
    let mut tampered = image("good.img");
    tampered[100] ^= 1;
    let (st, v) = submit_fresh(api, root, "du-2", &mut tpms[2], &tampered).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rules(&v), vec!["measurement.unknown"], "{v}");
    // du-0 reboots into the older release, below its floor: measurement.rollback.
    let (st, v) = submit_fresh(api, root, "du-0", &mut tpms[0], &image("old.img")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rules(&v), vec!["measurement.rollback"], "{v}");
    // du-2 reboots into the keyless release: TRUSTED; its signing certificate is revoked:
    // the next attestation is UNTRUSTED, measurement.revoked.
    let (st, v) = submit_fresh(api, root, "du-2", &mut tpms[2], &image("keyless.img")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], "TRUSTED", "{v}");
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keyless.img.bundle")).unwrap()).unwrap();
    let leaf_pem = bundle["verificationMaterial"]["certificateChain"][0]
        .as_str()
        .unwrap()
        .to_string();
    let leaf = custos_attest::ek::pem_certificates(&leaf_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    ok(
        api,
        root,
        "POST",
        "pki/revoke",
        json!({"serial_number": cert.raw_serial_as_string()}),
    )
    .await;
    let log2 = log_of(&tpms[2]);
    let (st, v) = attest(api, root, "du-2", &tpms[2], &log2).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rules(&v), vec!["measurement.revoked"], "{v}");

    // Enrolment attacks, nothing stored: an EK certificate from a foreign manufacturer; an
    // AK that is not in the TPM whose EK is presented; an AK that signs with SHA-1.
    let foreign = Tpm::new(&Manufacturer::new());
    foreign.create_keys(AkKind::Ecdsa);
    let (st, v) = enrol(api, root, "foreign", &foreign).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("foreign CA"), "{v}");
    let (st, _) = api
        .call("GET", "attest/devices/foreign", Some(root), None)
        .await;
    assert_eq!(st, 404);
    let (st, v) = call(
        api,
        root,
        "attest/devices/mixed",
        json!({
            "device_class": CLASS,
            "ek_public": b64(&tpms[1].read("ek.pub")),
            "ek_certificate": b64(&tpms[1].ek_cert()),
            "ak_public": b64(&foreign.read("ak.pub")),
        }),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        error_text(&v).contains("already enrolled as device du-1"),
        "{v}"
    );
    let spare = Tpm::new(&m);
    spare.create_keys(AkKind::Ecdsa);
    let (st, v) = call(
        api,
        root,
        "attest/devices/mixed",
        json!({
            "device_class": CLASS,
            "ek_public": b64(&spare.read("ek.pub")),
            "ek_certificate": b64(&spare.ek_cert()),
            "ak_public": b64(&foreign.read("ak.pub")),
        }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let file = base64::engine::general_purpose::STANDARD
        .decode(v["data"]["tpm2_tools_credential"].as_str().unwrap())
        .unwrap();
    assert!(
        spare.activate(&file).is_err(),
        "a TPM activated a credential for another TPM's AK"
    );
    for _ in 0..3 {
        let (st, v) = call(
            api,
            root,
            "attest/devices/mixed/activate",
            json!({"credential": b64(&[7u8; 32])}),
        )
        .await;
        assert_eq!(st, 400, "{v}");
    }
    let (st, _) = api
        .call("GET", "attest/devices/mixed", Some(root), None)
        .await;
    assert_eq!(
        st, 404,
        "three wrong activations drop the pending enrolment"
    );
    // Two pending enrolments of one EK: the first activated wins; the second is refused, and
    // deleting it leaves the first's claim on the EK.
    let twin = |id: &'static str| {
        let body = json!({
            "device_class": CLASS,
            "ek_public": b64(&spare.read("ek.pub")),
            "ek_certificate": b64(&spare.ek_cert()),
            "ak_public": b64(&spare.read("ak.pub")),
        });
        async move { call(api, root, &format!("attest/devices/{id}"), body).await }
    };
    let (st1, v1) = twin("twin-a").await;
    let (st2, v2) = twin("twin-b").await;
    assert_eq!((st1, st2), (200, 200), "{v1} {v2}");
    let secret = |v: &Value| {
        let f = base64::engine::general_purpose::STANDARD
            .decode(v["data"]["tpm2_tools_credential"].as_str().unwrap())
            .unwrap();
        spare.activate(&f).unwrap()
    };
    let (s1, s2) = (secret(&v1), secret(&v2));
    let (st, v) = call(
        api,
        root,
        "attest/devices/twin-a/activate",
        json!({"credential": b64(&s1)}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(
        api,
        root,
        "attest/devices/twin-b/activate",
        json!({"credential": b64(&s2)}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        error_text(&v).contains("already enrolled as device twin-a"),
        "{v}"
    );
    let (st, _) = api
        .call("DELETE", "attest/devices/twin-b", Some(root), None)
        .await;
    assert_eq!(st, 204);
    let (st, v) = twin("twin-c").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        error_text(&v).contains("already enrolled as device twin-a"),
        "{v}"
    );
    let (st, _) = api
        .call("DELETE", "attest/devices/twin-a", Some(root), None)
        .await;
    assert_eq!(st, 204);
    let legacy = Tpm::new(&m);
    legacy.create_keys_hashing(AkKind::Ecdsa, "sha1");
    let (st, v) = enrol(api, root, "legacy", &legacy).await;
    assert_eq!(st, 400, "{v}");
    assert!(error_text(&v).contains("SHA-1"), "{v}");

    // Status: TRUSTED goes STALE when the class's interval passes without a new quote.
    let (st, v) = submit_fresh(api, root, "du-1", &mut tpms[1], &image("good.img")).await;
    assert_eq!(
        (st, v["data"]["status"].as_str()),
        (200, Some("TRUSTED")),
        "{v}"
    );
    assert_eq!(device(api, root, "du-1").await["status"], "TRUSTED");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(device(api, root, "du-1").await["status"], "STALE");
    let (st, v) = api.call("LIST", "attest/devices", Some(root), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["keys"], json!(["du-0", "du-1", "du-2"]));

    // The operator's view, and a saved quote verified offline with the same policies.
    let table = must(custos(dir, api, root, &["attest", "status"]));
    assert!(
        table.lines().any(|l| l.starts_with("du-0")
            && l.contains("UNTRUSTED")
            && l.contains("measurement.rollback")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("du-1") && l.contains("STALE")),
        "{table}"
    );
    tpms[1].quote("sha256:0,1,2,3,4,5,6,7", b"offline-nonce", "sha256");
    std::fs::write(
        dir.join("attest-policy.toml"),
        format!("[[device_classes]]\nname = \"{CLASS}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("fw-policy.toml"), &firmware_policy).unwrap();
    for f in ["ak.pub", "quote.msg", "quote.sig", "boot.log"] {
        std::fs::write(dir.join(format!("du-1.{f}")), tpms[1].read(f)).unwrap();
    }
    let offline = |nonce: &str| {
        let nonce = hex::encode(nonce);
        custos(
            dir,
            api,
            root,
            &[
                "attest",
                "verify",
                "--ak-public",
                "du-1.ak.pub",
                "--quote",
                "du-1.quote.msg",
                "--signature",
                "du-1.quote.sig",
                "--event-log",
                "du-1.boot.log",
                "--nonce",
                &nonce,
                "--policy",
                "attest-policy.toml",
                "--class",
                CLASS,
                "--firmware-policy",
                "fw-policy.toml",
                "--bundle",
                "good.img.bundle",
                "--floor",
                "7",
            ],
        )
    };
    let o = offline("offline-nonce");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("TRUSTED"));
    let o = offline("another-nonce");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("- quote.nonce:"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Every enrolment, status change and install is in the transparency log.
    must(custos(dir, api, root, &["log", "mirror", "mirror"]));
    let vkey = must(custos(
        dir,
        api,
        root,
        &["read", "--field", "vkey", "sys/tlog/key"],
    ));
    let out = must(custos(
        dir,
        api,
        root,
        &[
            "log",
            "verify",
            "--log-key",
            vkey.trim(),
            "--checkpoint",
            "mirror/checkpoint",
            "--tiles",
            "mirror",
        ],
    ));
    // du-0, du-1, du-2 and twin-a enrolled; twin-a removed.
    assert!(out.contains("attest.device: 5"), "{out}");
    assert!(out.contains("attest.install: 1"), "{out}");
    assert!(out.contains("attest.status: "), "{out}");
}

/// The event log of the current boot (the one the last `boot` wrote).
fn log_of(t: &Tpm) -> Vec<u8> {
    t.read("boot.log")
}

/// Reboots `t`, boots `image` (keeping the log as `boot.log`) and attests.
async fn submit_fresh(api: &Api, root: &str, id: &str, t: &mut Tpm, image: &[u8]) -> (u16, Value) {
    t.reboot();
    let log = boot(t, image);
    std::fs::write(t.path("boot.log"), &log).unwrap();
    attest(api, root, id, t, &log).await
}
