//! `custos agent` end to end, with the real binaries: a `custos server` process (TLS, keyfile
//! seal) and agent processes, judged by rustls (the mTLS stand-ins), by `custos pki lint`
//! and by the agents' own metrics endpoints.
//!
//! * Two NF stand-ins (an SMF serving, an AMF calling) keep mutual TLS going with 30-second
//!   SBA certificates across at least 3 renewals each, never failing a handshake; every
//!   renewal ran the reload command; every rendered certificate passes the SBA lint. The AMF
//!   agent logs in with the certificate it renders itself (cert login), the SMF with AppRole.
//! * CA outage: the server is killed for longer than the renewal margin; the agent keeps the
//!   last certificate in place, backs off (bounded attempts), and renews soon after the
//!   server returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{ok, openssl_test_pki, sba_pki, Api, SBA_DOMAIN as DOMAIN};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custos");
const SMF_ID: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";
const AMF_ID: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    cfg: PathBuf,
}

impl Server {
    fn spawn(cfg: &Path) -> Server {
        let child = Command::new(BIN)
            .args(["server", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server {
            child,
            cfg: cfg.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_up(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not come up on port {port}");
}

/// Starts a TLS server process with a keyfile seal (so a restart unseals itself),
/// initialises it and returns (server, api, root token).
async fn start_server(dir: &Path, port: u16) -> (Server, Api, String) {
    openssl_test_pki(dir);
    std::fs::write(dir.join("unseal.key"), "11".repeat(32)).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nbackend = \"sqlite\"\npath = \"{d}/custos.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_cert_file = \"{d}/server.pem\"\ntls_key_file = \"{d}/server.key\"\ntls_client_auth = \"request\"\n[seal]\ntype = \"keyfile\"\nkey_file = \"{d}/unseal.key\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let s = Server::spawn(&cfg);
    let api = Api::tls(port, dir, None);
    wait_up(port).await;
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let root = v["root_token"].as_str().unwrap().to_string();
    (s, api, root)
}

/// PKI with a 30-second SBA role, a policy allowing sign/issue on it, AppRole and cert login.
/// Returns (role_id, secret_id).
async fn setup_custos(api: &Api, root: &str) -> (String, String) {
    sba_pki(api, root, "30s").await;
    ok(api, root, "PUT", "sys/policies/acl/nf", json!({"policy": "path \"pki/sign/sba\" { capabilities = [\"update\"] }\npath \"pki/issue/sba\" { capabilities = [\"update\"] }\n"})).await;
    ok(
        api,
        root,
        "POST",
        "sys/auth/approle",
        json!({"type": "approle"}),
    )
    .await;
    ok(
        api,
        root,
        "POST",
        "auth/approle/role/smf",
        json!({"token_policies": "nf", "token_ttl": "10m"}),
    )
    .await;
    let rid = ok(api, root, "GET", "auth/approle/role/smf/role-id", json!({})).await["data"]
        ["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = ok(
        api,
        root,
        "POST",
        "auth/approle/role/smf/secret-id",
        json!({}),
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    (rid, sid)
}

fn agent_config(
    dir: &Path,
    nf: &str,
    id: &str,
    port: u16,
    auth: &str,
    health: u16,
    backoff: &str,
) -> PathBuf {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("rendered")).unwrap();
    let text = format!(
        r#"[server]
address = "https://127.0.0.1:{port}"
ca_cert = "{d}/../ca.pem"
timeout = "3s"

{auth}

[[certificate]]
name = "sbi"
role = "sba"
operation = "sign"
common_name = "{nf}.{DOMAIN}"
nf_instance_id = "{id}"
nf_type = "{NF}"
ttl = "30s"
cert_file = "{d}/tls/cert.pem"
key_file = "{d}/tls/key.pem"
chain_file = "{d}/tls/chain.pem"
ca_file = "{d}/tls/ca.pem"
bundle_file = "{d}/tls/bundle.pem"
command = ["sh", "-c", "cp \"$CUSTOS_CERT_FILE\" {d}/rendered/$(date +%s%N).pem && echo reloaded >> {d}/reloads.log"]
command_timeout = "5s"

{backoff}

[health]
address = "127.0.0.1:{health}"
"#,
        NF = nf.to_uppercase()
    );
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn spawn_agent(cfg: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .args(["agent", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn metric(health: u16, name: &str) -> Option<f64> {
    let body = reqwest::get(format!("http://127.0.0.1:{health}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn certs(p: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut BufReader::new(std::fs::File::open(p).unwrap()))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(p: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut BufReader::new(std::fs::File::open(p).unwrap()))
        .unwrap()
        .unwrap()
}

fn roots(p: &Path) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(p) {
        r.add(c).unwrap();
    }
    Arc::new(r)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(tls: &Path) -> Arc<rustls::ServerConfig> {
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(&tls.join("ca.pem")),
        provider(),
    )
    .build()
    .unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(v)
            .with_single_cert(certs(&tls.join("cert.pem")), key(&tls.join("key.pem")))
            .unwrap(),
    )
}

fn client_config(tls: &Path) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&tls.join("ca.pem")))
            .with_client_auth_cert(certs(&tls.join("cert.pem")), key(&tls.join("key.pem")))
            .unwrap(),
    )
}

fn serial_of(der: &[u8]) -> String {
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(der).unwrap();
    x.raw_serial_as_string()
}

/// The SMF stand-in: an mTLS server that reloads its certificate when its agent's reload
/// command has run, answering each "ping" with the serial of the client certificate it saw.
fn smf_standin(
    dir: PathBuf,
    port: u16,
    stop: Arc<AtomicBool>,
    seen_clients: Arc<Mutex<Vec<String>>>,
) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    l.set_nonblocking(true).unwrap();
    let reloads = dir.join("reloads.log");
    let mut loaded = (lines(&reloads), server_config(&dir.join("tls")));
    while !stop.load(Ordering::Relaxed) {
        let n = lines(&reloads);
        if n != loaded.0 {
            loaded = (n, server_config(&dir.join("tls")));
        }
        let Ok((sock, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ServerConnection::new(loaded.1.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut line = String::new();
        if BufReader::new(&mut tls).read_line(&mut line).is_ok() && line == "ping\n" {
            let peer = tls
                .conn
                .peer_certificates()
                .map(|c| serial_of(&c[0]))
                .unwrap_or_default();
            seen_clients.lock().unwrap().push(peer.clone());
            let _ = writeln!(tls, "pong {peer}");
            let _ = tls.flush();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nf_agents_keep_mtls_up_across_three_renewals_of_30s_sba_certificates() {
    let top = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, api, root) = start_server(top.path(), port).await;
    let (rid, sid) = setup_custos(&api, &root).await;

    // The AMF logs in with its own SBA certificate; it is bootstrapped with one issued here.
    let v = ok(&api, &root, "GET", "pki/cert/ca", json!({})).await;
    let ca = v["data"]["certificate"].as_str().unwrap().to_string();
    ok(
        &api,
        &root,
        "POST",
        "sys/auth/cert",
        json!({"type": "cert"}),
    )
    .await;
    ok(&api, &root, "POST", "auth/cert/certs/nf", json!({"certificate": ca, "allowed_uri_sans": [format!("urn:uuid:{AMF_ID}")], "token_policies": "nf", "token_ttl": "10m"})).await;
    let amf = top.path().join("amf");
    let smf = top.path().join("smf");
    std::fs::create_dir_all(amf.join("tls")).unwrap();
    std::fs::create_dir_all(&smf).unwrap();
    let boot = ok(
        &api,
        &root,
        "POST",
        "pki/issue/sba",
        json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": AMF_ID, "nf_type": "AMF"}),
    )
    .await;
    std::fs::write(
        amf.join("tls/cert.pem"),
        boot["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        amf.join("tls/key.pem"),
        boot["data"]["private_key"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(amf.join("tls/ca.pem"), &ca).unwrap();

    std::fs::write(smf.join("role_id"), &rid).unwrap();
    std::fs::write(smf.join("secret_id"), &sid).unwrap();
    let (hs, ha) = (free_port(), free_port());
    let smf_cfg = agent_config(&smf, "smf", SMF_ID, port, &format!("[auto_auth]\nmethod = \"approle\"\nrole_id_file = \"{0}/role_id\"\nsecret_id_file = \"{0}/secret_id\"\n[[auto_auth.sink]]\npath = \"{0}/token\"\n", smf.display()), hs, "");
    let amf_cfg = agent_config(
        &amf,
        "amf",
        AMF_ID,
        port,
        "[auto_auth]\nmethod = \"cert\"\ncertificate = \"sbi\"\nrole = \"nf\"\n",
        ha,
        "",
    );
    let mut smf_agent = spawn_agent(&smf_cfg, &smf.join("agent.log"));
    let mut amf_agent = spawn_agent(&amf_cfg, &amf.join("agent.log"));

    // The SMF's first certificate is rendered at start; the AMF reuses its bootstrap one.
    let t0 = Instant::now();
    while lines(&smf.join("reloads.log")) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "SMF agent rendered nothing: {}",
            std::fs::read_to_string(smf.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lines(&amf.join("reloads.log")),
        0,
        "a valid certificate on disk is reused, not re-issued"
    );
    let token_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(smf.join("token")).unwrap().permissions(),
    );
    assert_eq!(token_mode & 0o777, 0o600, "token sink");

    let nf_port = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let seen_clients = Arc::new(Mutex::new(Vec::new()));
    let srv = {
        let (smf, stop, seen) = (smf.clone(), stop.clone(), seen_clients.clone());
        std::thread::spawn(move || smf_standin(smf, nf_port, stop, seen))
    };
    // The AMF stand-in: a new mTLS connection every 300 ms, reloading its certificate
    // when its agent's reload command has run.
    let failures = Arc::new(AtomicUsize::new(0));
    let seen_servers = Arc::new(Mutex::new(Vec::<String>::new()));
    let cli = {
        let (amf, stop, failures, seen) = (
            amf.clone(),
            stop.clone(),
            failures.clone(),
            seen_servers.clone(),
        );
        std::thread::spawn(move || {
            let reloads = amf.join("reloads.log");
            let mut loaded = (lines(&reloads), client_config(&amf.join("tls")));
            let name = rustls::pki_types::ServerName::try_from(format!("smf.{DOMAIN}")).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            while !stop.load(Ordering::Relaxed) {
                let n = lines(&reloads);
                if n != loaded.0 {
                    loaded = (n, client_config(&amf.join("tls")));
                }
                let r = (|| -> Result<String, String> {
                    let sock = std::net::TcpStream::connect(("127.0.0.1", nf_port))
                        .map_err(|e| e.to_string())?;
                    sock.set_read_timeout(Some(Duration::from_secs(5)))
                        .map_err(|e| e.to_string())?;
                    let conn = rustls::ClientConnection::new(loaded.1.clone(), name.clone())
                        .map_err(|e| e.to_string())?;
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    tls.write_all(b"ping\n").map_err(|e| e.to_string())?;
                    tls.flush().map_err(|e| e.to_string())?;
                    let mut line = String::new();
                    BufReader::new(&mut tls)
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    let srv = tls
                        .conn
                        .peer_certificates()
                        .map(|c| serial_of(&c[0]))
                        .unwrap_or_default();
                    if !line.starts_with("pong ") {
                        return Err(format!("bad answer {line:?}"));
                    }
                    Ok(srv)
                })();
                match r {
                    Ok(s) => seen.lock().unwrap().push(s),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("handshake/exchange failed: {e}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Wait for 3 renewals of each (the SMF's first render is not a renewal).
    let t0 = Instant::now();
    loop {
        let (s, a) = (
            lines(&smf.join("reloads.log")),
            lines(&amf.join("reloads.log")),
        );
        if s >= 4 && a >= 3 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "renewals: smf {s}, amf {a}\nsmf log: {}\namf log: {}",
            std::fs::read_to_string(smf.join("agent.log")).unwrap_or_default(),
            std::fs::read_to_string(amf.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    cli.join().unwrap();
    srv.join().unwrap();

    let distinct = |v: &Mutex<Vec<String>>| {
        let mut v = v.lock().unwrap().clone();
        v.dedup();
        v.into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let exchanges = seen_servers.lock().unwrap().len();
    println!(
        "mTLS exchanges {exchanges}, failed {}, SMF certificates seen {}, AMF certificates seen {}",
        failures.load(Ordering::Relaxed),
        distinct(&seen_servers),
        distinct(&seen_clients)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no handshake may fail across renewals"
    );
    assert!(
        distinct(&seen_servers) >= 4,
        "the SMF stand-in served 4 certificates"
    );
    assert!(
        distinct(&seen_clients) >= 4,
        "the AMF stand-in presented 4 certificates (bootstrap + 3)"
    );

    // Every rendered certificate passes the TS 33.310 SBA lint.
    for nf in [&smf, &amf] {
        let files: Vec<PathBuf> = std::fs::read_dir(nf.join("rendered"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(files.len() >= 3);
        let out = Command::new(BIN)
            .args(["pki", "lint"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lint: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Metrics and health; then graceful shutdown on SIGTERM.
    assert!(
        metric(hs, "custos_agent_renewals_total{certificate=\"sbi\"}")
            .await
            .unwrap()
            >= 4.0
    );
    assert!(
        metric(ha, "custos_agent_certificate_expiry_timestamp_seconds")
            .await
            .unwrap()
            > 0.0
    );
    let h = reqwest::get(format!("http://127.0.0.1:{hs}/healthz"))
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    for a in [&mut smf_agent, &mut amf_agent] {
        Command::new("kill")
            .args(["-TERM", &a.id().to_string()])
            .status()
            .unwrap();
    }
    for a in [&mut smf_agent, &mut amf_agent] {
        let t0 = Instant::now();
        loop {
            if let Some(st) = a.try_wait().unwrap() {
                assert!(st.success(), "agent exit {st}");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "agent did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let log = std::fs::read_to_string(smf.join("agent.log")).unwrap();
    assert!(
        !log.contains(&sid) && !log.contains(&rid),
        "no credential in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_keeps_the_certificate_backs_off_and_renews_after_return() {
    let top = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut server, api, root) = start_server(top.path(), port).await;
    let (rid, sid) = setup_custos(&api, &root).await;
    let smf = top.path().join("smf");
    std::fs::create_dir_all(&smf).unwrap();
    std::fs::write(smf.join("role_id"), &rid).unwrap();
    std::fs::write(smf.join("secret_id"), &sid).unwrap();
    let hs = free_port();
    let cfg = agent_config(&smf, "smf", SMF_ID, port, &format!("[auto_auth]\nmethod = \"approle\"\nrole_id_file = \"{0}/role_id\"\nsecret_id_file = \"{0}/secret_id\"\n", smf.display()), hs, "[backoff]\nmin = \"1s\"\nmax = \"4s\"\n");
    let mut agent = spawn_agent(&cfg, &smf.join("agent.log"));
    let t0 = Instant::now();
    while lines(&smf.join("reloads.log")) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no first render");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = std::fs::read_to_string(smf.join("tls/cert.pem")).unwrap();

    // Down for 40 s: past the renewal point (~17-20 s) and past expiry (30 s).
    server.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        std::fs::read_to_string(smf.join("tls/cert.pem")).unwrap(),
        first,
        "the last certificate stays in place, even expired"
    );
    assert_eq!(lines(&smf.join("reloads.log")), 1);
    let attempts = metric(
        hs,
        "custos_agent_renewal_failures_total{certificate=\"sbi\"}",
    )
    .await
    .unwrap();
    println!(
        "renewal attempts during a {:.0} s outage: {attempts}",
        down.elapsed().as_secs_f64()
    );
    assert!(
        (1.0..=15.0).contains(&attempts),
        "bounded backoff, not a spin: {attempts} attempts"
    );
    let h = reqwest::get(format!("http://127.0.0.1:{hs}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        h.status().as_u16(),
        503,
        "health reports the expired certificate"
    );
    let log = std::fs::read_to_string(smf.join("agent.log")).unwrap();
    assert!(
        log.contains("HAS EXPIRED"),
        "loud log as expiry passes: {log}"
    );

    // Back: renewed within 60 s (in practice within the 4 s backoff cap).
    let _server = Server::spawn(&server.cfg);
    let back = Instant::now();
    while lines(&smf.join("reloads.log")) < 2 {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "not renewed within 60 s of the server's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "renewed {:.1} s after the server returned",
        back.elapsed().as_secs_f64()
    );
    assert_ne!(
        std::fs::read_to_string(smf.join("tls/cert.pem")).unwrap(),
        first
    );
    let h = reqwest::get(format!("http://127.0.0.1:{hs}/healthz"))
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A PKI mount without `config/urls` (the SBA profile needs a CRL distribution point)
/// refuses every sign: the agent names it a configuration error, not an outage, at
/// `/healthz` and in its log, and retries at its slowest backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_is_named_a_configuration_error_at_healthz() {
    let top = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, api, root) = start_server(top.path(), port).await;
    let (rid, sid) = setup_custos(&api, &root).await;
    ok(
        &api,
        &root,
        "POST",
        "pki/config/urls",
        json!({"crl_distribution_points": []}),
    )
    .await;
    let amf = top.path().join("amf");
    std::fs::create_dir_all(&amf).unwrap();
    std::fs::write(amf.join("role_id"), &rid).unwrap();
    std::fs::write(amf.join("secret_id"), &sid).unwrap();
    let hs = free_port();
    let cfg = agent_config(&amf, "smf", SMF_ID, port, &format!("[auto_auth]\nmethod = \"approle\"\nrole_id_file = \"{0}/role_id\"\nsecret_id_file = \"{0}/secret_id\"\n", amf.display()), hs, "[backoff]\nmin = \"1s\"\nmax = \"30s\"\n");
    let mut agent = spawn_agent(&cfg, &amf.join("agent.log"));
    let t0 = Instant::now();
    let body = loop {
        assert!(t0.elapsed() < Duration::from_secs(20), "no health answer");
        if let Ok(h) = reqwest::get(format!("http://127.0.0.1:{hs}/healthz")).await {
            let st = h.status().as_u16();
            let b = h.text().await.unwrap();
            if b.contains("configuration error") {
                assert_eq!(st, 503, "{b}");
                break b;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.contains("certificate sbi: missing: configuration error (not an outage)"),
        "{body}"
    );
    assert!(body.contains("refused (400)"), "{body}");
    // The slowest backoff (30 s): one attempt in the next 5 s at most.
    let before = metric(
        hs,
        "custos_agent_renewal_failures_total{certificate=\"sbi\"}",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = metric(
        hs,
        "custos_agent_renewal_failures_total{certificate=\"sbi\"}",
    )
    .await
    .unwrap();
    assert!(after - before <= 1.0, "{before} -> {after}");
    let log = std::fs::read_to_string(amf.join("agent.log")).unwrap();
    assert!(log.contains("configuration error, not an outage"), "{log}");
    let _ = agent.kill();
    let _ = agent.wait();

    // `--once` (an init container): the same refusal is an exit, not a wait.
    let once = |cfg: PathBuf| async move {
        let t0 = Instant::now();
        let o = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["agent", "--once", "--config"])
                .arg(cfg)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (o, t0.elapsed())
    };
    let (o, took) = once(cfg.clone()).await;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate \"sbi\": refused (400)"), "{err}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // Fixed, it renders once, runs the reload command and exits 0.
    ok(
        &api,
        &root,
        "POST",
        "pki/config/urls",
        json!({"crl_distribution_points": [format!("{}/v1/pki/crl", api.base)]}),
    )
    .await;
    let (o, _) = once(cfg.clone()).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(amf.join("tls/cert.pem").exists());
    assert_eq!(lines(&amf.join("reloads.log")), 1);
    // Run again with a fresh certificate on disk: nothing to do, nothing reloaded.
    let (o, _) = once(cfg).await;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("not yet due for renewal"), "{err}");
    assert_eq!(lines(&amf.join("reloads.log")), 1);
}
