//! The closed loop, end to end: two network elements, each an swtpm device with a real
//! `custos agent` that holds its SBA certificate and attests; Custos's NRF serves both. One
//! element measures a tampered image: its class's policy quarantines it on the UNTRUSTED
//! verdict, and within a second `openssl verify -crl_check` and `openssl ocsp` call its
//! certificate revoked, the NRF refuses it a token with an AccessTokenErr and drops it from
//! discovery, and its agent reports the refusal. The other element's token requests never
//! fail. Release needs a fresh TRUSTED verdict, is audited, and the agent renews.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::free_port;

use common::{sign_args, CLASS};
use custos_testkit::tpm::{boot, Manufacturer, Tpm};
use custos_testkit::{config_server, ok, sba_pki, Api, SBA_DOMAIN as DOMAIN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custos");
const NRF: &str = "11111111-1111-4111-8111-111111111111";
const GOOD: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22"; // an AMF on du-good
const BAD: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11"; // an SMF on du-bad
const UDM: &str = "0f7c6b9e-1d2a-4e3b-8c4d-5e6f7a8b9c0d"; // a producer on no device

fn custos(dir: &Path, api: &Api, token: &str, args: &[&str]) -> String {
    common::custos_ok(BIN, dir, &api.base, token, args)
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// One network element: its TPM, its agent and the files the agent renders.
struct Element {
    name: &'static str,
    dir: PathBuf,
    tpm: Tpm,
    agent: Child,
    health: std::net::SocketAddr,
}

impl Drop for Element {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Element {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn identity(&self) -> Vec<u8> {
        let mut pem = std::fs::read(self.dir.join("tls/cert.pem")).unwrap();
        pem.extend(std::fs::read(self.dir.join("tls/key.pem")).unwrap());
        pem
    }

    fn serial(&self) -> String {
        let pem = std::fs::read(self.dir.join("tls/cert.pem")).unwrap();
        let der = rustls_pemfile_der(&pem);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        custos_pki::issue::serial_hex(x.raw_serial())
    }

    async fn healthz(&self) -> String {
        reqwest::get(format!("http://{}/healthz", self.health))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn rustls_pemfile_der(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn start_element(
    root_dir: &Path,
    tpm: Tpm,
    api: &Api,
    root: &str,
    name: &'static str,
    nf_id: &str,
    nf_type: &str,
    image: &[u8],
) -> Element {
    let dir = root_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let log = boot(&tpm, image);
    std::fs::write(dir.join("eventlog.bin"), log.to_bytes()).unwrap();
    std::fs::write(dir.join("token"), root).unwrap();
    let health: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "[server]\naddress = \"{}\"\n[auto_auth]\nmethod = \"token\"\ntoken_file = \"token\"\n\
             [backoff]\nmin = \"1s\"\nmax = \"2s\"\n\
             [[certificate]]\nname = \"sbi\"\nrole = \"sba\"\noperation = \"sign\"\n\
             common_name = \"{}.{DOMAIN}\"\nnf_instance_id = \"{nf_id}\"\nnf_type = \"{nf_type}\"\nttl = \"30m\"\n\
             cert_file = \"{d}/tls/cert.pem\"\nkey_file = \"{d}/tls/key.pem\"\nca_file = \"{d}/tls/ca.pem\"\n\
             [attest]\ndevice = \"{name}\"\ndevice_class = \"{CLASS}\"\ntcti = \"{}\"\nstate_dir = \"tpm\"\n\
             event_log = \"eventlog.bin\"\ninterval = \"60s\"\nenrol = true\n\
             nf_instance_ids = [\"{nf_id}\"]\n[health]\naddress = \"{health}\"\n",
            api.base,
            nf_type.to_lowercase(),
            tpm.tcti()
        ),
    )
    .unwrap();
    let agent = Command::new(BIN)
        .args(["agent", "--config", "agent.toml"])
        .current_dir(&dir)
        .env("RUST_LOG", "info,custos_agent=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let _ = api;
    Element {
        name,
        dir,
        tpm,
        agent,
        health,
    }
}

async fn device(api: &Api, root: &str, id: &str) -> Value {
    api.call("GET", &format!("attest/devices/{id}"), Some(root), None)
        .await
        .1["data"]
        .clone()
}

async fn until<F: Fn(&Value) -> bool>(
    api: &Api,
    root: &str,
    e: &Element,
    want: F,
    what: &str,
) -> Value {
    let t0 = Instant::now();
    loop {
        let d = device(api, root, e.name).await;
        if want(&d) && e.dir.join("tls/cert.pem").exists() {
            return d;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            panic!("{what}: last record {d}\nagent log:\n{}", e.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Sbi {
    addr: std::net::SocketAddr,
    ca: String,
}

impl Sbi {
    fn url(&self, p: &str) -> String {
        format!("https://nrf.{DOMAIN}:{}{p}", self.addr.port())
    }

    fn client(&self, identity: &[u8]) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.as_bytes()).unwrap()])
            .resolve(&format!("nrf.{DOMAIN}"), self.addr)
            .identity(reqwest::Identity::from_pem(identity).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn register(&self, c: &reqwest::Client, id: &str, nf_type: &str) {
        let mut p = json!({"nfInstanceId": id, "nfType": nf_type, "nfStatus": "REGISTERED", "fqdn": format!("{}.{DOMAIN}", nf_type.to_lowercase())});
        if nf_type != "AMF" {
            let svc = if nf_type == "SMF" {
                "nsmf-pdusession"
            } else {
                "nudm-sdm"
            };
            p["nfServices"] = json!([{"serviceInstanceId": svc, "serviceName": svc, "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}], "scheme": "https", "nfServiceStatus": "REGISTERED"}]);
        }
        let r = c
            .put(self.url(&format!("/nnrf-nfm/v1/nf-instances/{id}")))
            .json(&p)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn token(
        &self,
        c: &reqwest::Client,
        id: &str,
        nf_type: &str,
        target: &str,
        scope: &str,
    ) -> (u16, Value) {
        let form = [
            ("grant_type", "client_credentials"),
            ("nfInstanceId", id),
            ("nfType", nf_type),
            ("targetNfType", target),
            ("scope", scope),
        ];
        match c
            .post(self.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
        {
            Ok(r) => {
                let st = r.status().as_u16();
                (st, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"transport": e.to_string()})),
        }
    }

    async fn discover(&self, c: &reqwest::Client, target: &str, requester: &str) -> Vec<String> {
        let r = c
            .get(self.url(&format!(
                "/nnrf-disc/v1/nf-instances?target-nf-type={target}&requester-nf-type={requester}"
            )))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["nfInstances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nfInstanceId"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_element_is_cut_off_everywhere_within_a_second_and_released_after_a_trusted_verdict(
) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("unseal.key"), "22".repeat(32)).unwrap();
    let port = free_port();
    let cfg = format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{{dir}}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{{dir}}/unseal.key\"\n[sbi]\naddress = \"127.0.0.1:{port}\"\npki_mount = \"pki\"\nrole = \"sba\"\nnf_instance_id = \"{NRF}\"\nfqdn = \"nrf.{DOMAIN}\"\ntoken_ttl = \"10m\"\nheartbeat = \"10m\"\n"
    );
    let sd = tempfile::tempdir().unwrap();
    std::fs::write(sd.path().join("unseal.key"), "22".repeat(32)).unwrap();
    let (server, _sd) = config_server(&cfg, Some(sd)).await;
    let api = &Api::new(&format!("http://{}", server.addr));
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let root = v["root_token"].as_str().unwrap().to_string();
    let root = root.as_str();
    ok(api, root, "PUT", "sys/audit/file", json!({"type": "file", "options": {"file_path": dir.join("audit.log").display().to_string()}})).await;
    let ca = sba_pki(api, root, "30m").await;
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    for (path, kind) in [("provenance", "provenance"), ("attest", "attest")] {
        ok(
            api,
            root,
            "POST",
            &format!("sys/mounts/{path}"),
            json!({"type": kind}),
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
    let image = b"du firmware 5.2.0".repeat(2048);
    std::fs::write(dir.join("du.img"), &image).unwrap();
    let mut args = sign_args("du.img", "du.bundle", &["--key", "release.pem"], &[]);
    args.extend(["--register".into(), "provenance".into()]);
    custos(
        dir,
        api,
        root,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let m = Manufacturer::new();
    let (tg, tb) = (Tpm::new(&m), Tpm::new(&m));
    ok(api, root, "POST", "attest/config", json!({
        "manufacturer_ca_pem": format!("{}{}", m.root_pem(), m.issuer_pem()),
        "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\nquarantine_on = [\"untrusted\"]\n"),
        "firmware_policy": format!(
            "[[suppliers]]\nname = \"acme\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{}\"]\n",
            key["key_id"].as_str().unwrap(), common::BUILDER
        ),
        "provenance_mount": "provenance",
        "device_pki_mount": "pki",
    })).await;
    // The orchestrator's webhook receiver is down for now.
    let hook_port = free_port();
    ok(
        api,
        root,
        "POST",
        "attest/config",
        json!({
            "webhook_url": format!("http://127.0.0.1:{hook_port}/custos"),
            "webhook_secret": "an orchestrator's shared secret",
        }),
    )
    .await;

    let good = start_element(dir, tg, api, root, "du-good", GOOD, "AMF", &image);
    let mut bad = start_element(dir, tb, api, root, "du-bad", BAD, "SMF", &image);
    for e in [&good, &bad] {
        until(
            api,
            root,
            e,
            |d| d["status"] == "TRUSTED",
            "attests TRUSTED",
        )
        .await;
    }
    let sbi = Sbi {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        ca: ca.clone(),
    };
    // A producer on no device, and both elements registered with the NRF.
    let v = ok(api, root, "POST", "pki/issue/sba", json!({"common_name": format!("udm.{DOMAIN}"), "nf_instance_id": UDM, "nf_type": "UDM", "ttl": "30m"})).await;
    let udm_pem = format!(
        "{}\n{}\n",
        v["data"]["certificate"].as_str().unwrap(),
        v["data"]["private_key"].as_str().unwrap()
    );
    let udm = sbi.client(udm_pem.as_bytes());
    let good_c = sbi.client(&good.identity());
    let bad_c = sbi.client(&bad.identity());
    let t0 = Instant::now();
    loop {
        // The SBI listener serves once its own certificate is issued.
        if good_c.get(sbi.url("/oauth2/jwks")).send().await.is_ok() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "SBI never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sbi.register(&udm, UDM, "UDM").await;
    sbi.register(&good_c, GOOD, "AMF").await;
    sbi.register(&bad_c, BAD, "SMF").await;
    assert_eq!(
        sbi.discover(&good_c, "SMF", "AMF").await,
        vec![BAD.to_string()]
    );
    let (st, v) = sbi.token(&bad_c, BAD, "SMF", "UDM", "nudm-sdm").await;
    assert_eq!(st, 200, "{v}");
    let bad_serial = bad.serial();
    std::fs::copy(bad.dir.join("tls/cert.pem"), dir.join("bad-cert.pem")).unwrap();

    // The TRUSTED element asks for tokens all along, on its connection.
    let stop = Arc::new(AtomicBool::new(false));
    let (oks, fails) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let bg = {
        let (stop, oks, fails) = (stop.clone(), oks.clone(), fails.clone());
        let c = good_c.clone();
        let sbi = Sbi {
            addr: sbi.addr,
            ca: ca.clone(),
        };
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let (st, v) = sbi.token(&c, GOOD, "AMF", "UDM", "nudm-sdm").await;
                if st == 200 {
                    oks.fetch_add(1, Relaxed);
                } else {
                    eprintln!("good element's token request failed: {st} {v}");
                    fails.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The bad element measures a tampered image; its agent attests on request.
    let rogue = custos_attest::eventlog::Event::measure(
        4,
        custos_attest::eventlog::EV_POST_CODE,
        &[
            custos_attest::tpm::HashAlg::Sha1,
            custos_attest::tpm::HashAlg::Sha256,
        ],
        b"a tampered image",
        b"du firmware",
    );
    bad.tpm.extend(
        4,
        &custos_testkit::tpm::hex_of(&rogue.digests[&custos_attest::tpm::HashAlg::Sha1]),
        &custos_testkit::tpm::hex_of(&rogue.digests[&custos_attest::tpm::HashAlg::Sha256]),
    );
    let mut log = custos_attest::eventlog::EventLog::parse(
        &std::fs::read(bad.dir.join("eventlog.bin")).unwrap(),
    )
    .unwrap();
    log.events.push(rogue);
    std::fs::write(bad.dir.join("eventlog.bin"), log.to_bytes()).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/attest", bad.health))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v = until(api, root, &bad, |d| d["status"] == "UNTRUSTED", "UNTRUSTED").await;
    let seen = Instant::now();
    assert_eq!(v["verdict"]["rules"], json!(["measurement.unknown"]), "{v}");

    // Within a second of the verdict: revoked (CRL and OCSP), no token, not discovered.
    let checks = loop {
        let crl = reqwest::get(format!("{}/v1/pki/crl/pem", api.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        std::fs::write(dir.join("crl.pem"), &crl).unwrap();
        let (verified, vout) = openssl(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "bad-cert.pem",
            ],
        );
        let (_, oout) = openssl(
            dir,
            &[
                "ocsp",
                "-issuer",
                "ca.pem",
                "-cert",
                "bad-cert.pem",
                "-url",
                &format!("{}/v1/pki/ocsp", api.base),
                "-CAfile",
                "ca.pem",
                "-no_nonce",
            ],
        );
        let (tst, tok) = sbi.token(&bad_c, BAD, "SMF", "UDM", "nudm-sdm").await;
        let found = sbi.discover(&good_c, "SMF", "AMF").await;
        let checks = vec![
            (
                !verified && vout.contains("certificate revoked"),
                format!("openssl verify: {vout}"),
            ),
            (oout.contains(": revoked"), format!("openssl ocsp: {oout}")),
            (
                (tst == 400 && tok["error"] == "invalid_client") || tst == 0,
                format!("token: {tst} {tok}"),
            ),
            (found.is_empty(), format!("discovery: {found:?}")),
        ];
        if checks.iter().all(|(ok, _)| *ok) {
            break checks;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(1),
            "not cut off within 1 s: {checks:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cut_off = seen.elapsed();
    eprintln!("cut off {cut_off:?} after the UNTRUSTED verdict was seen: {checks:?}");
    assert!(cut_off < Duration::from_secs(1));
    // Its existing connection was closed; a new one is served, and refused with the reason.
    let fresh = sbi.client(&bad.identity());
    let (tst, tok) = sbi.token(&fresh, BAD, "SMF", "UDM", "nudm-sdm").await;
    assert_eq!(tst, 400, "{tok}");
    assert_eq!(tok["error"], "invalid_client");
    assert!(
        tok["error_description"]
            .as_str()
            .unwrap()
            .contains("quarantined"),
        "{tok}"
    );
    // The registration is suspended, not deleted.
    let p = ok(
        api,
        root,
        "GET",
        &format!("sys/nrf/nf-instances/{BAD}"),
        json!({}),
    )
    .await;
    assert_eq!(p["data"]["nfStatus"], "SUSPENDED", "{p}");
    // Its agent reports the refusal.
    let t0 = Instant::now();
    loop {
        let h = bad.healthz().await;
        if h.contains("quarantined") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "agent never reported: {h}\n{}",
            bad.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bad.log().contains("QUARANTINED"), "{}", bad.log());
    let rec = device(api, root, "du-bad").await;
    assert_eq!(rec["quarantine"]["revoked"], json!([bad_serial]), "{rec}");
    // Bad input: an unknown device; a recall naming both a list and a class.
    let (st, _) = api
        .call(
            "POST",
            "attest/devices/no-such-device/quarantine",
            Some(root),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, v) = api
        .call(
            "POST",
            "attest/recall",
            Some(root),
            Some(json!({"reason": "x", "devices": ["du-good"], "device_class": CLASS})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = api
        .call(
            "POST",
            "attest/devices/du-bad/quarantine",
            Some(root),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    // The receiver is down: the outbox keeps the event, with why.
    let t0 = Instant::now();
    loop {
        let w = ok(api, root, "GET", "attest/webhook", json!({})).await;
        if w["data"]["pending"] == 1
            && w["data"]["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It comes up: the event arrives, signed; openssl checks the HMAC.
    let listener = std::net::TcpListener::bind(("127.0.0.1", hook_port)).unwrap();
    let got = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        let (mut sock, _) = listener.accept().unwrap();
        let mut r = BufReader::new(sock.try_clone().unwrap());
        let mut headers = HashMap::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let n: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; n];
        r.read_exact(&mut body).unwrap();
        sock.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .unwrap();
        (headers, body)
    });
    let (headers, body) = tokio::task::spawn_blocking(move || got.join().unwrap())
        .await
        .unwrap();
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "isolate", "{event}");
    assert_eq!(event["data"]["device"], "du-bad");
    let signed = format!(
        "{}.{}",
        headers["x-custos-timestamp"],
        String::from_utf8_lossy(&body)
    );
    std::fs::write(dir.join("signed.txt"), signed).unwrap();
    let (_, mac) = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-hmac",
            "an orchestrator's shared secret",
            "-r",
            "signed.txt",
        ],
    );
    let mac = mac.split_whitespace().next().unwrap().to_string();
    assert_eq!(headers["x-custos-signature"], format!("sha256={mac}"));
    let t0 = Instant::now();
    while ok(api, root, "GET", "attest/webhook", json!({})).await["data"]["pending"] != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "delivered events stay in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idempotent: quarantining again changes nothing.
    let again = ok(
        api,
        root,
        "POST",
        "attest/devices/du-bad/quarantine",
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(again["data"]["changed"], false);

    // Release is refused without a TRUSTED verdict newer than the quarantine.
    let (st, v) = api
        .call(
            "POST",
            "attest/devices/du-bad/release",
            Some(root),
            Some(json!({"reason": "reflashed"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("no TRUSTED verdict"),
        "{v}"
    );

    // The element is reflashed and rebooted; the operator asks for an attestation now.
    bad.tpm.power_cycle();
    let log = boot(&bad.tpm, &image);
    std::fs::write(bad.dir.join("eventlog.bin"), log.to_bytes()).unwrap();
    let (st, v) = api
        .call(
            "POST",
            "attest/devices/du-bad/attest-now",
            Some(root),
            Some(json!({"timeout": "20s"})),
        )
        .await;
    assert_eq!(st, 200, "{v}\n{}", bad.log());
    assert_eq!(v["data"]["status"], "TRUSTED", "{v}");
    let v = ok(
        api,
        root,
        "POST",
        "attest/devices/du-bad/release",
        json!({"reason": "reflashed"}),
    )
    .await;
    assert_eq!(v["data"]["changed"], true, "{v}");
    // The agent renews through its normal path; the new certificate works everywhere.
    let t0 = Instant::now();
    while bad.serial() == bad_serial {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no renewal after release:\n{}",
            bad.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed = sbi.client(&bad.identity());
    let (st, v) = sbi.token(&renewed, BAD, "SMF", "UDM", "nudm-sdm").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        sbi.discover(&good_c, "SMF", "AMF").await,
        vec![BAD.to_string()]
    );
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(
        audit.contains("attest/devices/du-bad/release"),
        "the release is audited"
    );

    stop.store(true, Relaxed);
    bg.await.unwrap();
    eprintln!(
        "the TRUSTED element's token requests: {} succeeded, {} failed",
        oks.load(Relaxed),
        fails.load(Relaxed)
    );
    assert!(oks.load(Relaxed) > 10);
    assert_eq!(fails.load(Relaxed), 0, "the TRUSTED element kept working");
    drop(good);
}
