//! The transparency log under crashes, with a real `custos server` process:
//! * kill -9 ten times under load from several clients: every acknowledged entry is in the
//!   log with a valid inclusion proof, and every checkpoint seen is consistent with the next;
//! * a log restored from an old snapshot (a simulated crash that lost its disk) and grown
//!   again forks, and `custos log verify` reports the fork.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::Api;
use custos_tlog::entry::{Entry, Event};
use custos_tlog::note::Verifier;
use custos_tlog::receipt::{Receipt, Trust};
use custos_tlog::tile;
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_custos")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Srv {
    child: Child,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn config(dir: &Path, port: u16) -> PathBuf {
    std::fs::write(dir.join("unseal.key"), "22".repeat(32)).unwrap();
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nbackend = \"sqlite\"\npath = \"{d}/custos.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{d}/unseal.key\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

async fn start(cfg: &Path, api: &Api) -> Srv {
    let child = Command::new(bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if matches!(
            try_put(api, "sys/health", None).await,
            Some(200 | 405 | 501)
        ) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Srv { child }
}

/// A config-file server (keyfile seal) in `dir`, started and initialised: its config, a
/// client, the process and the root token.
async fn started_and_initialized(dir: &Path) -> (PathBuf, Api, Srv, String) {
    let port = free_port();
    let cfg = config(dir, port);
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let srv = start(&cfg, &api).await;
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let root = v["root_token"].as_str().unwrap().to_string();
    (cfg, api, srv, root)
}

/// A request that may fail (the server is being killed): the status, or `None`.
async fn try_put(api: &Api, path: &str, token: Option<&str>) -> Option<u16> {
    let c = reqwest::Client::new();
    let url = format!("{}/v1/{path}", api.base);
    let rb = match token {
        Some(t) => c
            .put(url)
            .header("X-Vault-Token", t)
            .json(&json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
        None => c.get(url),
    };
    rb.send().await.ok().map(|r| r.status().as_u16())
}

async fn checkpoint(api: &Api) -> Option<String> {
    let r = reqwest::get(format!("{}/v1/sys/tlog/checkpoint", api.base))
        .await
        .ok()?;
    (r.status() == 200).then_some(())?;
    r.text().await.ok()
}

fn custos(dir: &Path, addr: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env("CUSTOS_ADDR", addr)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Pseudo-random from the clock (no seed to manage; the test must pass for any value).
fn jitter(lo: u64, hi: u64) -> u64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + n % (hi - lo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_ten_times_under_load_loses_no_acknowledged_entry_and_never_forks() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (cfg, api, srv, root) = started_and_initialized(dir).await;
    let (_, k) = api.call("GET", "sys/tlog/key", None, None).await;
    let vkey = k["data"]["vkey"].as_str().unwrap().to_string();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut seen: Vec<String> = Vec::new();
    let mut srv = Some(srv);
    for round in 0..10 {
        if srv.is_none() {
            srv = Some(start(&cfg, &api).await);
        }
        seen.extend(checkpoint(&api).await);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..8 {
            let (api, root, acked, stop) = (
                Api::new(&api.base),
                root.clone(),
                acked.clone(),
                stop.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("r{round}c{c}n{i}");
                    i += 1;
                    match try_put(&api, &format!("sys/policies/acl/{name}"), Some(&root)).await {
                        Some(204) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Some(_) => {}
                        None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    }
                }
            }));
        }
        // Let load build, take a checkpoint mid-flight, then kill at a random point.
        tokio::time::sleep(std::time::Duration::from_millis(jitter(150, 400))).await;
        seen.extend(checkpoint(&api).await);
        tokio::time::sleep(std::time::Duration::from_millis(jitter(50, 400))).await;
        srv.take().unwrap().kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
    }
    let _srv = start(&cfg, &api).await;
    seen.extend(checkpoint(&api).await);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load produced {} acknowledged writes",
        acked.len()
    );

    // Every tile and entry hashes to the final signed root.
    let addr = api.base.clone();
    let o = custos(dir, &addr, &["log", "mirror", "m"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = custos(
        dir,
        &addr,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--checkpoint",
            "m/checkpoint",
            "--tiles",
            "m",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Every acknowledged write is logged.
    let note = std::fs::read_to_string(dir.join("m/checkpoint")).unwrap();
    let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    let mut logged = HashSet::new();
    for n in 0..size.div_ceil(256) {
        let w = (size - n * 256).min(256) as u16;
        let id = tile::TileId {
            level: None,
            index: n,
            width: w,
        };
        let b = std::fs::read(dir.join("m").join(id.path())).unwrap();
        for e in tile::parse_bundle(&b).unwrap() {
            if let Event::PolicyChanged { name, .. } = Entry::parse(e).unwrap().event {
                logged.insert(name);
            }
        }
    }
    let missing: Vec<_> = acked.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not logged: {missing:?}"
    );
    // Receipts verify for a sample, from the server's proof API.
    let trust = Trust {
        log: Verifier::parse(&vkey).unwrap(),
        witnesses: vec![],
        threshold: 0,
    };
    for i in [0, size / 3, size / 2, size - 1] {
        let (st, v) = api
            .call("GET", &format!("sys/tlog/entry/{i}"), None, None)
            .await;
        assert_eq!(st, 200, "{v}");
        Receipt::parse(&v["data"]).unwrap().verify(&trust).unwrap();
    }
    // Every checkpoint ever published is consistent with the next one.
    assert!(seen.len() >= 20, "{} checkpoints seen", seen.len());
    eprintln!(
        "crash test: {} acknowledged writes over 10 kill -9 rounds, log size {size}, {} checkpoints checked",
        acked.len(),
        seen.len()
    );
    for (i, pair) in seen.windows(2).enumerate() {
        std::fs::write(dir.join("a.note"), &pair[0]).unwrap();
        std::fs::write(dir.join("b.note"), &pair[1]).unwrap();
        let o = custos(
            dir,
            &addr,
            &[
                "log",
                "verify",
                "--key",
                &vkey,
                "--old",
                "a.note",
                "--checkpoint",
                "b.note",
                "--tiles",
                "m",
            ],
        );
        assert!(
            o.status.success(),
            "checkpoints {i} → {}: {}",
            i + 1,
            text(&o)
        );
    }
}

fn snapshot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["custos.db", "custos.db-wal", "custos.db-shm"] {
        let p = from.join(f);
        if p.exists() {
            std::fs::copy(&p, to.join(f)).unwrap();
        } else {
            let _ = std::fs::remove_file(to.join(f));
        }
    }
}

#[tokio::test]
async fn a_log_restored_from_an_old_disk_forks_and_log_verify_reports_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = free_port();
    let cfg = config(dir, port);
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let srv = start(&cfg, &api).await;
    let (_, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    let root = v["root_token"].as_str().unwrap().to_string();
    let (_, k) = api.call("GET", "sys/tlog/key", None, None).await;
    let vkey = k["data"]["vkey"].as_str().unwrap().to_string();
    let write = |name: String| {
        let (api, root) = (Api::new(&api.base), root.clone());
        async move {
            let (st, v) = api
                .call(
                    "PUT",
                    &format!("sys/policies/acl/{name}"),
                    Some(&root),
                    Some(json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
                )
                .await;
            assert_eq!(st, 204, "{v}");
        }
    };
    for i in 0..5 {
        write(format!("a{i}")).await;
    }
    srv.kill9();
    snapshot(dir, &dir.join("old"));
    let srv = start(&cfg, &api).await;
    for i in 0..5 {
        write(format!("b{i}")).await;
    }
    let published = checkpoint(&api).await.unwrap();
    srv.kill9();
    // The disk is replaced by the old copy; the log grows again with other entries.
    snapshot(&dir.join("old"), dir);
    let _srv = start(&cfg, &api).await;
    for i in 0..7 {
        write(format!("c{i}")).await;
    }
    let forked = checkpoint(&api).await.unwrap();
    std::fs::write(dir.join("published.note"), &published).unwrap();
    std::fs::write(dir.join("forked.note"), &forked).unwrap();
    let o = custos(
        dir,
        &api.base,
        &[
            "log",
            "verify",
            "--key",
            &vkey,
            "--old",
            "published.note",
            "--checkpoint",
            "forked.note",
            "--online",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("INCONSISTENT"), "{}", text(&o));
}

/// SIGTERM under load: the server stops accepting, finishes what is in flight and exits 0;
/// every write acknowledged before is there after a restart (none was cut mid-write), and
/// the log's last entry before the exit records the audit device's final chain head under a
/// signed checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_0_and_loses_nothing_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (cfg, api, srv, root) = started_and_initialized(dir).await;
    for (path, body) in [
        ("sys/mounts/kv", json!({"type": "kv"})),
        (
            "sys/audit/file",
            json!({"type": "file", "options": {"file_path": format!("{}/audit.log", dir.display())}}),
        ),
    ] {
        let (st, v) = api.call("PUT", path, Some(&root), Some(body)).await;
        assert_eq!(st, 204, "{path}: {v}");
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (acked, root, base) = (acked.clone(), root.clone(), api.base.clone());
        writers.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            for i in 0.. {
                let key = format!("w{w}-{i}");
                let r = c
                    .put(format!("{base}/v1/kv/{key}"))
                    .header("X-Vault-Token", &root)
                    .json(&json!({ "v": key }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 204 => acked.lock().unwrap().push(key),
                    Ok(r) => panic!("{key}: {}", r.status()),
                    // Refused or closed once the server stops accepting.
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut srv = srv;
    let t0 = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = srv.child.wait().unwrap();
        std::mem::forget(srv);
        s
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(35));
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let audit_lines = std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .count() as u64;

    // Restarted (keyfile seal: unsealed at once): every acknowledged write is there.
    let _srv = start(&cfg, &api).await;
    let c = reqwest::Client::new();
    for key in &acked {
        let r = c
            .get(format!("{}/v1/kv/{key}", api.base))
            .header("X-Vault-Token", &root)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged {key} is missing");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"]["v"], key.as_str());
    }
    // The log's newest audit.head entry is the device's head at exit.
    let mut last = None;
    for i in 0.. {
        let r = reqwest::get(format!("{}/v1/sys/tlog/entry/{i}", api.base))
            .await
            .unwrap();
        if r.status() != 200 {
            break;
        }
        let v: serde_json::Value = r.json().await.unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"]["entry"].as_str().unwrap())
            .unwrap();
        if let Event::AuditHead { lines, .. } = Entry::parse(&bytes).unwrap().event {
            last = Some(lines);
        }
    }
    assert_eq!(last, Some(audit_lines), "the final audit head is logged");
}
