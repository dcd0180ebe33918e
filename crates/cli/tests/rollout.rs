//! Orchestrated rollouts against a real `custos server` process, five devices with
//! in-memory TPMs (custos_attest::soft: real EK certificates, credential activation, signed
//! quotes over the HTTP API), and an orchestrator that is a webhook receiver:
//! * a signed image goes to the class in waves (a canary, then the rest), each gated on the
//!   install reports and TRUSTED verdicts; the server is killed (-9) after the second wave was
//!   told, restarted, and the rollout resumes and completes without telling any device twice;
//! * a rollout whose canary measures another image than the one it reports installing halts
//!   after the canary, and the canary is told to roll back to the known-good image;
//! * images without provenance, or below the class's anti-rollback floor, are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::free_port;

use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, EV_SEPARATOR};
use custos_attest::soft::SoftTpm;
use custos_attest::tpm::HashAlg;
use custos_testkit::soft::SoftManufacturer;
use custos_testkit::Api;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custos");
const CLASS: &str = common::CLASS;

struct Srv(Child);

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(cfg: &Path, api: &Api) -> Srv {
    let child = Command::new(BIN)
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if reqwest::get(format!("{}/v1/sys/health", api.base))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Srv(child)
}

fn custos(dir: &Path, api: &Api, token: &str, args: &[&str]) -> String {
    common::custos_ok(BIN, dir, &api.base, token, args)
}

fn sha(b: &[u8]) -> String {
    hex::encode(HashAlg::Sha256.digest(&[b]))
}

fn boot_log(image: &[u8]) -> EventLog {
    let banks = [HashAlg::Sha256];
    let mut events = vec![Event::measure(
        4,
        EV_POST_CODE,
        &banks,
        image,
        b"du firmware",
    )];
    for pcr in 0..8 {
        events.push(Event::measure(pcr, EV_SEPARATOR, &banks, &[0; 4], &[0; 4]));
    }
    EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events,
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn call(api: &Api, root: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    api.call(method, path, Some(root), Some(body)).await
}

async fn ok(api: &Api, root: &str, method: &str, path: &str, body: Value) -> Value {
    let (st, v) = call(api, root, method, path, body).await;
    assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
    v
}

/// A device: an in-memory TPM enrolled in the attestation mount.
struct Device {
    id: String,
    tpm: SoftTpm,
}

impl Device {
    async fn enrol(api: &Api, root: &str, m: &SoftManufacturer, id: &str) -> Device {
        let tpm = m.enrol(api, root, id, CLASS, json!({})).await;
        Device { id: id.into(), tpm }
    }

    /// What an orchestrator does for an `install`: the device reports the install it made
    /// (`custos fw install`), reboots into `measured`, and attests.
    async fn install(
        &mut self,
        api: &Api,
        root: &str,
        reported: &[u8],
        version: &str,
        sv: u64,
        measured: &[u8],
    ) -> Value {
        ok(
            api,
            root,
            "PUT",
            &format!("attest/devices/{}/installs", self.id),
            json!({
                "image_sha256": sha(reported), "version": version, "security_version": sv,
            }),
        )
        .await;
        self.attest(api, root, measured).await
    }

    async fn attest(&mut self, api: &Api, root: &str, measured: &[u8]) -> Value {
        let n = ok(
            api,
            root,
            "PUT",
            &format!("attest/devices/{}/nonce", self.id),
            json!({}),
        )
        .await;
        let nonce = hex::decode(n["data"]["nonce"].as_str().unwrap()).unwrap();
        let log = boot_log(measured);
        let (q, s) = self.tpm.quote_log(&nonce, &log).unwrap();
        ok(
            api,
            root,
            "PUT",
            &format!("attest/devices/{}/quote", self.id),
            json!({
                "quote": b64(&q), "signature": b64(&s), "event_log": b64(&log.to_bytes()),
            }),
        )
        .await["data"]
            .clone()
    }
}

/// The orchestrator's webhook receiver: every event it was sent, in order.
fn receiver(port: u16) -> Arc<Mutex<Vec<Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        for sock in l.incoming() {
            let Ok(mut sock) = sock else { continue };
            let mut r = BufReader::new(sock.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    g.lock().unwrap().push(v);
                }
            }
            let _ = sock.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    got
}

/// Waits until the receiver holds `n` events of `kind`; answers them.
async fn events(got: &Arc<Mutex<Vec<Value>>>, kind: &str, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let v: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect();
        if v.len() >= n {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "waiting for {n} {kind} events, have {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Distinct event IDs per device for events of `kind`.
fn told(got: &Arc<Mutex<Vec<Value>>>, kind: &str) -> BTreeMap<String, usize> {
    let mut ids: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for e in got.lock().unwrap().iter().filter(|e| e["type"] == kind) {
        ids.entry(e["data"]["device"].as_str().unwrap().to_string())
            .or_default()
            .insert(e["id"].as_str().unwrap().to_string());
    }
    ids.into_iter().map(|(k, v)| (k, v.len())).collect()
}

fn sign(dir: &Path, api: &Api, root: &str, image: &str, version: &str, sv: &str) {
    let mut args = common::sign_args(
        image,
        &format!("{image}.bundle"),
        &["--key", "release.pem"],
        &[("--version", version), ("--security-version", sv)],
    );
    args.extend(["--register".into(), "provenance".into()]);
    custos(
        dir,
        api,
        root,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_go_in_gated_waves_survive_kill_9_and_a_bad_canary_is_rolled_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("unseal.key"), "22".repeat(32)).unwrap();
    let port = free_port();
    let cfg: PathBuf = dir.join("server.toml");
    std::fs::write(&cfg, format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{d}/custos.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{d}/unseal.key\"\n",
        d = dir.display()
    )).unwrap();
    let api = &Api::new(&format!("http://127.0.0.1:{port}"));
    let srv = start(&cfg, api).await;
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let root = v["root_token"].as_str().unwrap().to_string();
    let root = root.as_str();
    for (p, t) in [("provenance", "provenance"), ("attest", "attest")] {
        ok(
            api,
            root,
            "POST",
            &format!("sys/mounts/{p}"),
            json!({"type": t}),
        )
        .await;
    }
    let key: Value = serde_json::from_str(&custos(
        dir,
        api,
        root,
        &["fw", "keygen", "--out", "release.pem", "--format", "json"],
    ))
    .unwrap();
    let images: BTreeMap<&str, Vec<u8>> = [
        ("a.img", b"du firmware 5.2.0".repeat(512)),
        ("b.img", b"du firmware 6.0.0".repeat(512)),
        ("c.img", b"du firmware 6.1.0".repeat(512)),
        ("old.img", b"du firmware 4.0.0".repeat(512)),
        ("unsigned.img", b"nobody signed this".repeat(512)),
        ("tampered.img", b"a tampered image".repeat(512)),
    ]
    .into_iter()
    .collect();
    for (n, b) in &images {
        std::fs::write(dir.join(n), b).unwrap();
    }
    sign(dir, api, root, "a.img", "5.2.0", "7");
    sign(dir, api, root, "b.img", "6.0.0", "8");
    sign(dir, api, root, "c.img", "6.1.0", "9");
    sign(dir, api, root, "old.img", "4.0.0", "3");
    let hook_port = free_port();
    let got = receiver(hook_port);
    let m = SoftManufacturer::new();
    ok(api, root, "POST", "attest/config", json!({
        "manufacturer_ca_pem": m.pem,
        "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\nknown_good = \"{}\"\n", sha(&images["a.img"])),
        "firmware_policy": format!(
            "[[suppliers]]\nname = \"acme\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{}\"]\n",
            key["key_id"].as_str().unwrap(), common::BUILDER
        ),
        "provenance_mount": "provenance",
        "webhook_url": format!("http://127.0.0.1:{hook_port}/custos"),
        "webhook_secret": "an orchestrator's shared secret",
    })).await;
    let mut devs = Vec::new();
    for i in 0..5 {
        let mut dv = Device::enrol(api, root, &m, &format!("du-{i}")).await;
        let v = dv
            .install(api, root, &images["a.img"], "5.2.0", 7, &images["a.img"])
            .await;
        assert_eq!(v["status"], "TRUSTED", "{v}");
        devs.push(dv);
    }

    // Refused: no provenance; below the floor (every device reported security version 7).
    let (st, v) = call(
        api,
        root,
        "POST",
        "attest/rollouts",
        json!({"device_class": CLASS, "image_sha256": sha(&images["unsigned.img"])}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0].as_str().unwrap().contains("no provenance"),
        "{v}"
    );
    let (st, v) = call(
        api,
        root,
        "POST",
        "attest/rollouts",
        json!({"device_class": CLASS, "image_sha256": sha(&images["old.img"])}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("below the class's anti-rollback floor 7"),
        "{v}"
    );

    // A good image: the canary first.
    let r = ok(api, root, "POST", "attest/rollouts", json!({"device_class": CLASS, "image_sha256": sha(&images["b.img"]), "canary": 1, "deadline": "10m"})).await;
    let id = r["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["data"]["waves"].as_array().unwrap().len(), 2, "{r}");
    let first = events(&got, "install", 1).await;
    assert_eq!(first[0]["data"]["device"], "du-0");
    assert_eq!(first[0]["data"]["image_sha256"], sha(&images["b.img"]));
    // Repeating the step changes nothing.
    ok(
        api,
        root,
        "POST",
        &format!("attest/rollouts/{id}/advance"),
        json!({}),
    )
    .await;
    let v = devs[0]
        .install(api, root, &images["b.img"], "6.0.0", 8, &images["b.img"])
        .await;
    assert_eq!(v["status"], "TRUSTED", "{v}");
    // The canary passed its gate: the rest is told.
    events(&got, "install", 5).await;
    let s = ok(
        api,
        root,
        "GET",
        &format!("attest/rollouts/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(s["data"]["wave"], 1, "{s}");

    // kill -9 mid-rollout, and a restart.
    let mut srv = srv;
    srv.0.kill().unwrap();
    srv.0.wait().unwrap();
    let srv = start(&cfg, api).await;
    let s = ok(
        api,
        root,
        "GET",
        &format!("attest/rollouts/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(s["data"]["phase"], "RUNNING", "{s}");
    for dv in devs.iter_mut().skip(1) {
        let v = dv
            .install(api, root, &images["b.img"], "6.0.0", 8, &images["b.img"])
            .await;
        assert_eq!(v["status"], "TRUSTED", "{v}");
    }
    let s = ok(
        api,
        root,
        "GET",
        &format!("attest/rollouts/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(s["data"]["phase"], "COMPLETED", "{s}");
    // No device was told twice, across the restart (receivers drop repeats by event ID).
    let t = told(&got, "install");
    assert_eq!(t.len(), 5, "{t:?}");
    assert!(t.values().all(|n| *n == 1), "a step was repeated: {t:?}");
    // What the class now runs is its known-good image.
    let (st, v) = call(
        api,
        root,
        "POST",
        "attest/rollouts",
        json!({"device_class": CLASS, "image_sha256": sha(&images["b.img"])}),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("already the class's known-good"),
        "{v}"
    );

    // A bad canary: it reports installing c.img but measures something else.
    let r = ok(api, root, "POST", "attest/rollouts", json!({"device_class": CLASS, "image_sha256": sha(&images["c.img"]), "canary": 1, "waves": [50]})).await;
    let id2 = r["data"]["id"].as_str().unwrap().to_string();
    events(&got, "install", 6).await;
    let v = devs[0]
        .install(
            api,
            root,
            &images["c.img"],
            "6.1.0",
            9,
            &images["tampered.img"],
        )
        .await;
    assert_eq!(v["status"], "UNTRUSTED", "{v}");
    let s = ok(
        api,
        root,
        "GET",
        &format!("attest/rollouts/{id2}"),
        json!({}),
    )
    .await;
    assert_eq!(s["data"]["phase"], "HALTED", "{s}");
    assert!(
        s["data"]["halted"].as_str().unwrap().contains("du-0"),
        "{s}"
    );
    let rb = events(&got, "rollback", 1).await;
    assert_eq!(rb[0]["data"]["device"], "du-0");
    assert_eq!(
        rb[0]["data"]["image_sha256"],
        sha(&images["b.img"]),
        "back to known-good"
    );
    // Nobody after the canary was told.
    let t = told(&got, "install");
    assert_eq!(t.values().sum::<usize>(), 6, "{t:?}");
    // The orchestrator rolls the canary back; it attests TRUSTED on the known-good image.
    let v = devs[0]
        .install(api, root, &images["b.img"], "6.0.0", 8, &images["b.img"])
        .await;
    assert_eq!(v["status"], "TRUSTED", "{v}");
    drop(srv);
}
