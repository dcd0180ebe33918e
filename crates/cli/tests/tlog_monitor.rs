//! `custos monitor` against a real server and real logs: an unknown signer, a burst and an
//! off-policy NF-type issuance each raise exactly one alert (stdout, webhook with retry,
//! Prometheus counters) while benign activity raises none; the position survives a restart;
//! a forked, gapped or wrongly signed log raises one `log.*` alert and is not passed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{dev_server, ok, sba_pki, SBA_DOMAIN};
use custos_tlog::note::{Signer, TYPE_ED25519};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{policy_entry, sign_args, text, write_log, BUILDER, CLASS};

fn custos(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custos"));
    c.current_dir(dir).args(args).env_remove("CUSTOS_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = custos(dir, args, env);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// The alerts printed (JSON lines on stdout).
fn alerts(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn rule_names(a: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = a
        .iter()
        .map(|x| x["rule"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// A webhook that refuses the first delivery with 500 and records the rest.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0u32));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                let n = {
                    let mut c = c.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n == 1 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push(body.0);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), got, calls)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn monitor_raises_one_alert_each_for_an_unknown_signer_a_burst_and_an_off_policy_nf_type() {
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
    sba_pki(api, root, "1h").await;
    let vkey = api
        .call("GET", "sys/tlog/key", None, None)
        .await
        .1
        .pointer("/data/vkey")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let env = [("CUSTOS_ADDR", api.base.as_str()), ("CUSTOS_TOKEN", root)];
    let mut kids = Vec::new();
    for k in ["release.pem", "rogue.pem"] {
        let o = run(dir, &["fw", "keygen", "--alg", "ed25519", "--out", k], &[]).await;
        assert!(o.status.success(), "{}", text(&o));
        kids.push(
            text(&o)
                .split_whitespace()
                .find(|w| w.len() == 64)
                .unwrap()
                .to_string(),
        );
    }
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            r#"
[signing]
allowed_signers = ["{}"]
[signing.device_classes]
"{BUILDER}" = ["{CLASS}"]
[[signing.windows]]
start = "00:00"
end = "24:00"
[burst]
per_minute = 20
[issuance]
roles = {{ sba = ["AMF", "SMF"] }}
"#,
            kids[0]
        ),
    )
    .unwrap();
    let sign = |image: &str, key: &str| {
        std::fs::write(dir.join(image), format!("firmware image {image}")).unwrap();
        sign_args(
            image,
            &format!("{image}.bundle"),
            &["--key", key, "--register", "provenance"],
            &[],
        )
    };
    let issue = |token: &str, nf: &str, n: usize| {
        let (api, token, nf) = (api.clone(), token.to_string(), nf.to_string());
        async move {
            ok(
                &api,
                &token,
                "POST",
                "pki/issue/sba",
                json!({"common_name": format!("{}{n}.{SBA_DOMAIN}", nf.to_lowercase()), "nf_instance_id": format!("5a0c1e2d-0000-4000-8000-{n:012}"), "nf_type": nf}),
            )
            .await
        }
    };

    // Benign: the release key signs for its class, AMF and SMF certificates from the sba role,
    // a policy change, a revocation.
    let args = sign("good.img", "release.pem");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(dir, &a, &env).await;
    assert!(o.status.success(), "{}", text(&o));
    issue(root, "AMF", 1).await;
    let smf = issue(root, "SMF", 2).await;
    ok(
        api,
        root,
        "PUT",
        "sys/policies/acl/issuer",
        json!({"policy": "path \"pki/issue/sba\" { capabilities = [\"update\"] }"}),
    )
    .await;
    ok(
        api,
        root,
        "POST",
        "pki/revoke",
        json!({"serial_number": smf["data"]["serial_number"]}),
    )
    .await;
    let monitor = [
        "monitor",
        "--key",
        &vkey,
        "--rules",
        "rules.toml",
        "--state",
        "monitor.json",
    ];
    let mut once = monitor.to_vec();
    once.push("--once");
    let o = run(dir, &once, &env).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(alerts(&o.stdout), Vec::<Value>::new(), "{}", text(&o));
    let st: Value =
        serde_json::from_slice(&std::fs::read(dir.join("monitor.json")).unwrap()).unwrap();
    let benign = st["next"].as_u64().unwrap();
    assert!(benign >= 6, "{st}");

    // Off-policy: a key nobody allowed signs, the sba role produces an NRF certificate, and a
    // bot issues 25 certificates within a minute (plus a benign signature between them).
    let bot = ok(
        api,
        root,
        "POST",
        "auth/token/create",
        json!({"policies": ["issuer"], "display_name": "bot", "ttl": "1h"}),
    )
    .await;
    let bot = bot["auth"]["client_token"].as_str().unwrap().to_string();
    let args = sign("rogue.img", "rogue.pem");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(dir, &a, &env).await;
    assert!(o.status.success(), "{}", text(&o));
    issue(root, "NRF", 3).await;
    for n in 0..25 {
        issue(&bot, "AMF", 100 + n).await;
    }
    let args = sign("good2.img", "release.pem");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(dir, &a, &env).await;
    assert!(o.status.success(), "{}", text(&o));

    // A long-running monitor with a webhook (whose first delivery fails) and metrics.
    let (hook, got, calls) = webhook().await;
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut long = monitor.to_vec();
    long.extend([
        "--interval",
        "1",
        "--webhook",
        &hook,
        "--webhook-attempts",
        "3",
        "--metrics",
        &metrics,
    ]);
    let mut child = custos(dir, &long, &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while got.lock().unwrap().len() < 3 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    child.kill().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let printed = alerts(&out.stdout);
    assert_eq!(
        rule_names(&printed),
        ["burst", "issuance.nf_type", "signer.unknown"],
        "{}",
        text(&out)
    );
    let by = |r: &str| printed.iter().find(|a| a["rule"] == r).unwrap().clone();
    assert_eq!(by("signer.unknown")["identity"], kids[1].as_str());
    assert_eq!(by("signer.unknown")["severity"], "critical");
    assert_eq!(by("burst")["identity"], "requester:token-bot");
    assert!(by("issuance.nf_type")["message"]
        .as_str()
        .unwrap()
        .contains("NRF"));
    assert_eq!(by("issuance.nf_type")["event"]["type"], "pki.issue");
    // The webhook got the same three, in log order, after one refused attempt.
    let hooked = got.lock().unwrap().clone();
    assert_eq!(hooked, printed);
    assert_eq!(*calls.lock().unwrap(), 4);
    for (rule, n) in [
        ("signer.unknown", 1),
        ("burst", 1),
        ("issuance.nf_type", 1),
        ("signing.window", 0),
        ("log.inconsistent", 0),
    ] {
        let line = format!("custos_monitor_alerts_total{{rule=\"{rule}\"}} {n}\n");
        assert!(body.contains(&line), "{line}\n{body}");
    }
    assert!(
        body.contains("custos_monitor_webhook_delivered_total 3"),
        "{body}"
    );
    assert!(
        body.contains("custos_monitor_webhook_failures_total 1"),
        "{body}"
    );
    assert!(body.contains("custos_monitor_webhook_pending 0"), "{body}");

    // Restarted, it resumes where it stopped: nothing is raised twice.
    let o = run(dir, &once, &env).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(alerts(&o.stdout), Vec::<Value>::new(), "{}", text(&o));
    let st: Value =
        serde_json::from_slice(&std::fs::read(dir.join("monitor.json")).unwrap()).unwrap();
    assert!(st["next"].as_u64().unwrap() >= benign + 28, "{st}");
    assert_eq!(st["outbox"], json!([]));
}

#[tokio::test]
async fn monitor_refuses_bad_rules_and_a_state_file_of_another_log_by_name() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (signer, _) = Signer::generate("a.example/log", TYPE_ED25519).unwrap();
    let vkey = signer.verifier().vkey();
    std::fs::create_dir_all(dir.join("log")).unwrap();
    write_log(&dir.join("log"), &signer, &[]);
    let base = |rules: &str, state: &str| {
        vec![
            "monitor".to_string(),
            "--key".into(),
            vkey.clone(),
            "--rules".into(),
            rules.into(),
            "--state".into(),
            state.into(),
            "--tiles".into(),
            "log".into(),
            "--once".into(),
        ]
    };
    let go = |args: Vec<String>| async move {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(dir, &a, &[]).await
    };
    std::fs::write(dir.join("bad.toml"), "[burst]\nper_minute = 0\n").unwrap();
    let o = go(base("bad.toml", "s.json")).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("burst.per_minute"), "{}", text(&o));
    assert!(!dir.join("s.json").exists());
    std::fs::write(dir.join("ok.toml"), "").unwrap();
    std::fs::write(dir.join("s.json"), "{\"key\": \"other+1234abcd+AAAA\"}").unwrap();
    let o = go(base("ok.toml", "s.json")).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("belongs to the log key"), "{}", text(&o));
    std::fs::write(dir.join("s.json"), "{not json").unwrap();
    let o = go(base("ok.toml", "s.json")).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not a monitor state file"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(dir.join("s.json")).unwrap(), b"{not json");
    let mut a = base("ok.toml", "s2.json");
    a.extend(["--webhook".into(), "not a url".into()]);
    let o = go(a).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--webhook"), "{}", text(&o));
}

#[tokio::test]
async fn monitor_flags_a_fork_a_gap_and_a_foreign_signature_once_and_does_not_pass_them() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (signer, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    let vkey = signer.verifier().vkey();
    let entry = policy_entry;
    let serve = |entries: &[Vec<u8>], by: &Signer| {
        let _ = std::fs::remove_dir_all(dir.join("log"));
        std::fs::create_dir_all(dir.join("log")).unwrap();
        write_log(&dir.join("log"), by, entries);
    };
    std::fs::write(dir.join("rules.toml"), "[burst]\nper_minute = 1000\n").unwrap();
    let args = [
        "monitor",
        "--key",
        &vkey,
        "--rules",
        "rules.toml",
        "--state",
        "s.json",
        "--tiles",
        "log",
        "--once",
    ];
    let poll = || async {
        let o = run(dir, &args, &[]).await;
        assert!(o.status.success(), "{}", text(&o));
        let st: Value =
            serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
        (rule_names(&alerts(&o.stdout)), st["next"].as_u64().unwrap())
    };
    let honest: Vec<Vec<u8>> = (0..300).map(entry).collect();
    serve(&honest[..40], &signer);
    assert_eq!(poll().await, (vec![], 40));

    // The log drops entry 17 and grows: a fork, raised once, and the position stays; the
    // fork growing further is the same alert, not one per poll.
    let mut rewritten: Vec<Vec<u8>> = (0..46).map(entry).collect();
    rewritten.remove(17);
    serve(&rewritten[..44], &signer);
    assert_eq!(poll().await, (vec!["log.inconsistent".to_string()], 40));
    assert_eq!(poll().await, (vec![], 40));
    serve(&rewritten, &signer);
    assert_eq!(poll().await, (vec![], 40));
    // The honest log again: read on.
    serve(&honest[..45], &signer);
    assert_eq!(poll().await, (vec![], 45));

    // The same size with another root: a fork too.
    let mut other = honest[..45].to_vec();
    other[44] = entry(1000);
    serve(&other, &signer);
    assert_eq!(poll().await, (vec!["log.inconsistent".to_string()], 45));

    // Signed by a key that is not the log's.
    let (imposter, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    serve(&honest[..300], &imposter);
    assert_eq!(poll().await, (vec!["log.checkpoint".to_string()], 45));

    // The honest extension, but an entry bundle is missing: a gap.
    serve(&honest[..300], &signer);
    std::fs::remove_file(dir.join("log/tile/entries/001.p/44")).unwrap();
    assert_eq!(poll().await, (vec!["log.gap".to_string()], 256));
    // An entry altered in its bundle: it no longer hashes to its leaf.
    serve(&honest[..300], &signer);
    let p = dir.join("log/tile/entries/001.p/44");
    let mut b = std::fs::read(&p).unwrap();
    b[10] ^= 1;
    std::fs::write(&p, b).unwrap();
    assert_eq!(poll().await, (vec!["log.tampered".to_string()], 256));
    // A rollback to a smaller checkpoint.
    serve(&honest[..200], &signer);
    assert_eq!(poll().await, (vec!["log.inconsistent".to_string()], 256));
    // Whole again: read to the end, no alert.
    serve(&honest[..300], &signer);
    assert_eq!(poll().await, (vec![], 300));
}

/// The `pki.ca` events in the log, in order.
async fn ca_entries(api: &custos_testkit::Api) -> Vec<Value> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for i in 0.. {
        let (st, v) = api
            .call("GET", &format!("sys/tlog/entry/{i}"), None, None)
            .await;
        if st != 200 {
            break;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"]["entry"].as_str().unwrap())
            .unwrap();
        let e: Value = serde_json::from_slice(&bytes).unwrap();
        if e["event"]["type"] == "pki.ca" {
            out.push(e["event"].clone());
        }
    }
    out
}

/// SHA-256 (hex) of the DER inside a PEM certificate.
fn pem_sha256(pem: &str) -> String {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der))
}

/// Every CA certificate that enters a PKI mount is a log entry before it is stored (a new
/// root, an intermediate signed by it and set on another mount, an imported CA), found by
/// serial and DER digest; a monitor with `[ca] allowed` raises `ca.unlisted` for each entry
/// of a CA it was not told about, and nothing for the one it was.
#[tokio::test]
async fn every_ca_certificate_is_logged_and_the_monitor_flags_one_not_on_its_list() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    ok(api, root, "POST", "sys/mounts/pki", json!({"type": "pki"})).await;
    ok(
        api,
        root,
        "POST",
        "sys/mounts/pki_int",
        json!({"type": "pki"}),
    )
    .await;
    let r = ok(
        api,
        root,
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "Root CA", "key_type": "ec", "ttl": "8760h"}),
    )
    .await;
    let root_pem = r["data"]["certificate"].as_str().unwrap().to_string();
    let root_serial = r["data"]["serial_number"].as_str().unwrap().to_string();
    let csr = ok(
        api,
        root,
        "POST",
        "pki_int/intermediate/generate/internal",
        json!({"common_name": "Intermediate CA", "key_type": "ec"}),
    )
    .await["data"]["csr"]
        .as_str()
        .unwrap()
        .to_string();
    let s = ok(
        api,
        root,
        "POST",
        "pki/root/sign-intermediate",
        json!({"csr": csr, "common_name": "Intermediate CA", "ttl": "4380h"}),
    )
    .await;
    let int_pem = s["data"]["certificate"].as_str().unwrap().to_string();
    let int_serial = s["data"]["serial_number"].as_str().unwrap().to_string();
    ok(
        api,
        root,
        "POST",
        "pki_int/intermediate/set-signed",
        json!({"certificate": format!("{int_pem}\n{root_pem}")}),
    )
    .await;

    // The log's pki.ca entries, by serial and DER digest.
    let (_, k) = api.call("GET", "sys/tlog/key", None, None).await;
    let vkey = k["data"]["vkey"].as_str().unwrap().to_string();
    let cas = ca_entries(api).await;
    let summary: Vec<(String, String, String, String, bool)> = cas
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["mount"].as_str().unwrap().to_string(),
                e["serial"].as_str().unwrap().to_string(),
                e["cert_sha256"].as_str().unwrap().to_string(),
                e["is_ca"].as_bool().unwrap(),
            )
        })
        .collect();
    let (root_sha, int_sha) = (pem_sha256(&root_pem), pem_sha256(&int_pem));
    assert_eq!(
        summary,
        vec![
            (
                "root.generate".into(),
                "pki/".into(),
                root_serial.clone(),
                root_sha.clone(),
                true
            ),
            (
                "sign-intermediate".into(),
                "pki/".into(),
                int_serial.clone(),
                int_sha.clone(),
                true
            ),
            (
                "intermediate.set-signed".into(),
                "pki_int/".into(),
                int_serial,
                int_sha.clone(),
                true
            ),
        ]
    );
    assert!(cas[0]["subject"].as_str().unwrap().contains("CN=Root CA"));
    assert!(cas[1]["issuer"].as_str().unwrap().contains("CN=Root CA"));
    assert_eq!(cas[1]["requester"], "root");

    // Importing a CA logs it too; importing it again is not a new CA.
    ok(
        api,
        root,
        "POST",
        "sys/mounts/pki_ext",
        json!({"type": "pki"}),
    )
    .await;
    for _ in 0..2 {
        ok(
            api,
            root,
            "POST",
            "pki_ext/issuers/import/cert",
            json!({"pem_bundle": root_pem}),
        )
        .await;
    }

    // The monitor knows the root only: both entries of the intermediate, and the import of
    // the root into another mount is fine.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(
        dir.join("rules.toml"),
        format!("[ca]\nallowed = [\"{root_sha}\"]\n"),
    )
    .unwrap();
    let env = [("CUSTOS_ADDR", api.base.as_str())];
    let o = run(
        dir,
        &[
            "monitor",
            "--log-key",
            &vkey,
            "--rules",
            "rules.toml",
            "--state",
            "m.json",
            "--once",
        ],
        &env,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    // One line at start on stderr: the log, the position and the rules.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("monitor started") && err.contains("rules.toml"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI colours when stderr is not a terminal: {err}"
    );
    let a = alerts(&o.stdout);
    assert_eq!(rule_names(&a), ["ca.unlisted", "ca.unlisted"], "{a:?}");
    for x in &a {
        assert_eq!(x["event"]["cert_sha256"], int_sha.as_str());
        assert_eq!(x["severity"], "critical");
    }
    let imports: Vec<bool> = ca_entries(api)
        .await
        .iter()
        .filter(|e| e["op"] == "import")
        .map(|e| e["cert_sha256"] == root_sha.as_str())
        .collect();
    assert_eq!(imports, vec![true], "one import entry, the root's");
    // A rules file that lists something other than a digest is refused by name.
    std::fs::write(dir.join("bad.toml"), "[ca]\nallowed = [\"Root CA\"]\n").unwrap();
    let o = run(
        dir,
        &[
            "monitor",
            "--log-key",
            &vkey,
            "--rules",
            "bad.toml",
            "--state",
            "b.json",
            "--once",
        ],
        &env,
    )
    .await;
    assert!(!o.status.success());
    assert!(text(&o).contains("ca.allowed[0]"), "{}", text(&o));
}
