//! `custos agent` with an `[attest]` block against an swtpm device (tss-esapi): it enrols the
//! TPM itself (EK certificate from NV, AK activated), reports the install `custos fw
//! init-state` recorded (the anti-rollback floor), attests TRUSTED on its schedule, and on
//! `POST /attest` after a tampered image is measured, attests UNTRUSTED naming the rule.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sign_args, CLASS};
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, EV_SEPARATOR};
use custos_attest::tpm::HashAlg;
use custos_testkit::tpm::{hex_of, Manufacturer, Tpm};
use custos_testkit::{dev_server, ok, Api};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custos");

fn custos(dir: &Path, api: &Api, token: &str, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("CUSTOS_ADDR", &api.base)
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

fn measure(t: &Tpm, events: &[Event]) {
    for e in events {
        t.extend(
            e.pcr,
            &hex_of(&e.digests[&HashAlg::Sha1]),
            &hex_of(&e.digests[&HashAlg::Sha256]),
        );
    }
}

async fn until(
    api: &Api,
    root: &str,
    want: impl Fn(&Value) -> bool,
    what: &str,
    log: &Path,
) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, v) = api
            .call("GET", "attest/devices/du-a", Some(root), None)
            .await;
        if st == 200 && want(&v["data"]) {
            return v["data"].clone();
        }
        if t0.elapsed() > Duration::from_secs(40) {
            panic!(
                "{what}: last answer {v}\nagent log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enrols_its_tpm_reports_installs_and_attests_on_schedule_and_on_demand() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
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
    let out = custos(
        dir,
        api,
        root,
        &["fw", "keygen", "--out", "release.pem", "--format", "json"],
    );
    let key: Value = serde_json::from_str(&out).unwrap();
    let image = b"du firmware 5.2.0".repeat(2048);
    std::fs::write(dir.join("du.img"), &image).unwrap();
    let mut args = sign_args(
        "du.img",
        "du.bundle",
        &["--key", "release.pem"],
        &[("--security-version", "7")],
    );
    args.extend(["--register".into(), "provenance".into()]);
    custos(
        dir,
        api,
        root,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    custos(
        dir,
        api,
        root,
        &[
            "fw",
            "init-state",
            "--state",
            "fw-state.json",
            "--device-class",
            CLASS,
            "--image",
            "du.img",
            "--version",
            "5.2.0",
            "--security-version",
            "7",
        ],
    );

    let m = Manufacturer::new();
    let t = Tpm::new(&m);
    ok(api, root, "POST", "attest/config", json!({
        "manufacturer_ca_pem": format!("{}{}", m.root_pem(), m.issuer_pem()),
        "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\n"),
        "firmware_policy": format!(
            "[[suppliers]]\nname = \"acme\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{}\"]\n",
            key["key_id"].as_str().unwrap(), common::BUILDER
        ),
        "provenance_mount": "provenance",
    })).await;

    // The boot, measured before the agent starts; the log where the kernel would keep it.
    let banks = [HashAlg::Sha1, HashAlg::Sha256];
    let mut events = vec![Event::measure(
        4,
        EV_POST_CODE,
        &banks,
        &image,
        b"du firmware",
    )];
    for pcr in 0..8 {
        events.push(Event::measure(pcr, EV_SEPARATOR, &banks, &[0; 4], &[0; 4]));
    }
    measure(&t, &events);
    let mut log = EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events,
    };
    std::fs::write(dir.join("eventlog.bin"), log.to_bytes()).unwrap();

    std::fs::write(dir.join("token"), root).unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(dir.join("agent.toml"), format!(
        "[server]\naddress = \"{}\"\n[auto_auth]\nmethod = \"token\"\ntoken_file = \"token\"\n\
         [attest]\ndevice = \"du-a\"\ndevice_class = \"{CLASS}\"\ntcti = \"{}\"\nstate_dir = \"tpm\"\n\
         event_log = \"eventlog.bin\"\ninterval = \"3s\"\nenrol = true\nfw_state = \"fw-state.json\"\n\
         hardware_ids = [\"rev-b\"]\n[health]\naddress = \"{health}\"\n",
        api.base, t.tcti()
    )).unwrap();
    let agent_log = dir.join("agent.log");
    let mut agent = Command::new(BIN)
        .args(["agent", "--config", "agent.toml"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();

    let v = until(
        api,
        root,
        |d| d["status"] == "TRUSTED",
        "the agent's device attests TRUSTED",
        &agent_log,
    )
    .await;
    assert_eq!(
        v["floor"], 7,
        "the install in the state file was reported: {v}"
    );
    assert_eq!(v["hardware_ids"], json!(["rev-b"]));
    assert_eq!(v["verdict"]["firmware"][0]["version"], "5.2.0");
    let first = v["verdict"]["at_unix"].as_i64().unwrap();
    // The AK blobs stay on the device, private.
    let mode = std::fs::metadata(dir.join("tpm/ak.priv"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // On its schedule, again.
    until(
        api,
        root,
        |d| d["verdict"]["at_unix"].as_i64().unwrap_or(0) > first,
        "a second attestation",
        &agent_log,
    )
    .await;

    // Something else is measured into the firmware PCR; on demand, the agent attests at once.
    let rogue = Event::measure(4, EV_POST_CODE, &banks, b"a tampered image", b"du firmware");
    measure(&t, std::slice::from_ref(&rogue));
    log.events.push(rogue);
    std::fs::write(dir.join("eventlog.bin"), log.to_bytes()).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{health}/attest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v = until(
        api,
        root,
        |d| d["status"] == "UNTRUSTED",
        "UNTRUSTED after the tampered measurement",
        &agent_log,
    )
    .await;
    assert_eq!(v["verdict"]["rules"], json!(["measurement.unknown"]), "{v}");
    let metrics = reqwest::get(format!("http://{health}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("custos_agent_attested_trusted 0"),
        "{metrics}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
