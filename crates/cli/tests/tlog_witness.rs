//! Witnesses (`custos witness serve`, real processes): the server collects their
//! cosignatures; verifiers demand k of n; a witness refuses a split view, a stale size and an
//! unknown log, and remembers what it cosigned across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::Api;
use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::entry::{ChangeOp, Entry, Event};
use custos_tlog::merkle::{self, leaf_hash, MemoryTree};
use custos_tlog::note::{self, Signer, Verifier, TYPE_ED25519};
use custos_tlog::receipt::{Receipt, Trust};
use custos_tlog::witness::AddCheckpoint;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};

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

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(dir: &Path, name: &str, file: &str) -> String {
    let o = Command::new(bin())
        .current_dir(dir)
        .args(["witness", "keygen", "--name", name, "--out", file])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

async fn serve_witness(dir: &Path, key: &str, state: &str, port: u16, logs: &[&str]) -> Proc {
    let mut args = vec!["witness", "serve", "--key", key, "--state", state];
    let listen = format!("127.0.0.1:{port}");
    args.extend(["--listen", &listen]);
    for l in logs {
        args.extend(["--log", l]);
    }
    let child = Command::new(bin())
        .current_dir(dir)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Proc(child)
}

/// A dev server whose log asks the witnesses at these ports (with these cosigner keys);
/// returns it, its data directory and the root token.
async fn dev_with_witnesses(
    witnesses: &[(u16, &str)],
) -> (custos_server::Running, tempfile::TempDir, String) {
    let settings = custos_server::engines::EngineSettings {
        tlog_witnesses: witnesses
            .iter()
            .map(|(port, key)| custos_server::config::TlogWitness {
                url: format!("http://127.0.0.1:{port}"),
                key: key.to_string(),
            })
            .collect(),
        ..Default::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (running, root, _) = custos_server::start_dev_with(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        Some("root"),
        custos_server::CoreConfig::default(),
        settings,
    )
    .await
    .unwrap();
    (running, data, root.to_string())
}

async fn post(port: u16, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/add-checkpoint"))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn entry(i: usize) -> Vec<u8> {
    Entry::new(
        1_800_000_000,
        Event::PolicyChanged {
            name: format!("p{i}"),
            op: ChangeOp::Write,
            policy_sha256: None,
            requester: "root".into(),
        },
    )
    .encode()
    .unwrap()
}

fn signed(signer: &Signer, tree: &MemoryTree, size: u64) -> String {
    let body = Checkpoint {
        origin: signer.verifier().name.clone(),
        size,
        root: merkle::root(tree, size).unwrap(),
        extensions: vec![],
    }
    .body();
    note::assemble(&body, &[signer.sign(&body, 0)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_refuses_a_split_view_a_stale_size_and_an_unknown_log_and_remembers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let wkey = keygen(dir, "w1.example", "w1.key");
    let (log, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    let vkey = log.verifier().vkey();
    let port = free_port();
    let w = serve_witness(dir, "w1.key", "w1.state", port, &[&vkey]).await;
    let wv = Verifier::parse(&wkey).unwrap();

    let mut honest = MemoryTree::new();
    for i in 0..40 {
        honest.push(leaf_hash(&entry(i)));
    }
    let a = signed(&log, &honest, 40);
    let (st, line) = post(
        port,
        AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: a.clone(),
        }
        .encode(),
    )
    .await;
    assert_eq!(st, 200, "{line}");
    // The answer is a tlog-cosignature line over exactly the checkpoint body.
    let cosigned = format!("{a}{line}");
    let opened = note::open(&cosigned, &[log.verifier().clone(), wv.clone()]).unwrap();
    assert_eq!(opened.signed_by.len(), 2);

    // The log shows others a tree without entry 17: not consistent with what was cosigned.
    let mut forked = MemoryTree::new();
    for i in (0..46).filter(|i| *i != 17) {
        forked.push(leaf_hash(&entry(i)));
    }
    let b = signed(&log, &forked, 45);
    let proof = merkle::consistency_proof(&forked, 40, 45).unwrap();
    let (st, msg) = post(
        port,
        AddCheckpoint {
            old: 40,
            proof,
            checkpoint: b,
        }
        .encode(),
    )
    .await;
    assert_eq!(st, 422, "{msg}");
    assert!(msg.contains("split view"), "{msg}");
    // A stale size: 409 with the witness's size.
    let (st, msg) = post(
        port,
        AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: a.clone(),
        }
        .encode(),
    )
    .await;
    assert_eq!((st, msg.trim()), (409, "40"));
    // An unknown log, a forged signature, malformed bodies.
    let (other, _) = Signer::generate("other.example/log", TYPE_ED25519).unwrap();
    let (st, _) = post(
        port,
        AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: signed(&other, &honest, 40),
        }
        .encode(),
    )
    .await;
    assert_eq!(st, 404);
    let (imposter, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    let (st, _) = post(
        port,
        AddCheckpoint {
            old: 40,
            proof: vec![],
            checkpoint: signed(&imposter, &honest, 40),
        }
        .encode(),
    )
    .await;
    assert_eq!(st, 403);
    for body in ["", "old 01\n\n", "old x\n\nfoo", "old 40\nnot-base64\n\n"] {
        let (st, _) = post(port, body.to_string()).await;
        assert_eq!(st, 400, "{body:?}");
    }
    // An honest extension is cosigned; after a restart the witness still knows size 45.
    for i in 40..45 {
        honest.push(leaf_hash(&entry(i)));
    }
    let c = signed(&log, &honest, 45);
    let proof = merkle::consistency_proof(&honest, 40, 45).unwrap();
    let (st, _) = post(
        port,
        AddCheckpoint {
            old: 40,
            proof,
            checkpoint: c.clone(),
        }
        .encode(),
    )
    .await;
    assert_eq!(st, 200);
    drop(w);
    let _w = serve_witness(dir, "w1.key", "w1.state", port, &[&vkey]).await;
    let (st, msg) = post(
        port,
        AddCheckpoint {
            old: 40,
            proof: vec![],
            checkpoint: c,
        }
        .encode(),
    )
    .await;
    assert_eq!((st, msg.trim()), (409, "45"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_collects_cosignatures_and_verifiers_can_require_two_of_two() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let k1 = keygen(dir, "w1.example", "w1.key");
    let k2 = keygen(dir, "w2.example", "w2.key");
    let (p1, p2) = (free_port(), free_port());
    let (running, _data, root) = dev_with_witnesses(&[(p1, &k1), (p2, &k2)]).await;
    let api = Api::new(&format!("http://{}", running.addr));
    let (_, k) = api.call("GET", "sys/tlog/key", None, None).await;
    let vkey = k["data"]["vkey"].as_str().unwrap().to_string();
    let _w1 = serve_witness(dir, "w1.key", "w1.state", p1, &[&vkey]).await;
    let _w2 = serve_witness(dir, "w2.key", "w2.state", p2, &[&vkey]).await;
    let (st, v) = api
        .call(
            "PUT",
            "sys/policies/acl/ops",
            Some(&root),
            Some(json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let trust = Trust {
        log: Verifier::parse(&vkey).unwrap(),
        witnesses: vec![Verifier::parse(&k1).unwrap(), Verifier::parse(&k2).unwrap()],
        threshold: 2,
    };
    let mut ok = false;
    for _ in 0..200 {
        let (_, v) = api.call("GET", "sys/tlog/entry/0", None, None).await;
        if let Ok(r) = Receipt::parse(&v["data"]).and_then(|r| r.verify(&trust)) {
            assert_eq!(r.witness_times.len(), 2);
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "no receipt with two cosignatures");
    let note = reqwest::get(format!("{}/v1/sys/tlog/checkpoint", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        note.lines().filter(|l| l.starts_with('\u{2014}')).count(),
        3,
        "{note}"
    );
    // Three of two is impossible; a third, unknown witness does not count.
    let (w3, _) = Signer::generate("w3.example", note::TYPE_COSIGNATURE).unwrap();
    let strict = Trust {
        witnesses: vec![trust.witnesses[0].clone(), w3.verifier().clone()],
        threshold: 2,
        ..trust.clone()
    };
    let (_, v) = api.call("GET", "sys/tlog/entry/0", None, None).await;
    let err = Receipt::parse(&v["data"])
        .unwrap()
        .verify(&strict)
        .unwrap_err();
    assert!(err.to_string().contains("1 of the required 2"), "{err}");
    drop(running);
}

/// A `custos monitor` process with its stdout collected line by line.
struct Monitor {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Monitor {
    fn spawn(dir: &Path, args: &[&str], addr: &str) -> Monitor {
        use std::io::BufRead as _;
        let mut child = Command::new(bin())
            .current_dir(dir)
            .args(args)
            .env("CUSTOS_ADDR", addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Monitor { child, lines }
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(p: &Proc, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Policy writes, one every 25 ms, for `secs` seconds.
async fn steady_writes(api: &Api, root: &str, tag: &str, secs: u64) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut i = 0;
    while std::time::Instant::now() < end {
        let (st, v) = api
            .call(
                "PUT",
                &format!("sys/policies/acl/{tag}{i}"),
                Some(root),
                Some(json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
            )
            .await;
        assert_eq!(st, 204, "{v}");
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The server serves at `sys/tlog/checkpoint` only checkpoints its witness cosigned (the
/// newest one at `sys/tlog/head`), and the monitor treats a missing cosignature as "not
/// yet": steady writes with the witness paused for 2 s raise nothing; a witness silent past
/// the grace period raises exactly one `log.witness` alert; a forged cosignature raises one
/// `log.checkpoint` alert at once, without waiting for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_waits_for_a_slow_witness_and_alerts_once_on_a_silent_one_or_a_forged_cosignature(
) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let wkey = keygen(dir, "w1.example", "w1.key");
    let port = free_port();
    let (running, _data, root) = dev_with_witnesses(&[(port, &wkey)]).await;
    let addr = format!("http://{}", running.addr);
    let api = Api::new(&addr);
    let (_, k) = api.call("GET", "sys/tlog/key", None, None).await;
    let vkey = k["data"]["vkey"].as_str().unwrap().to_string();
    let witness = serve_witness(dir, "w1.key", "w1.state", port, &[&vkey]).await;
    steady_writes(&api, &root, "warmup", 1).await;
    std::fs::write(dir.join("rules.toml"), "").unwrap();
    let args = [
        "monitor",
        "--log-key",
        &vkey,
        "--witness",
        &wkey,
        "--witnesses-required",
        "1",
        "--witness-grace",
        "5",
        "--interval",
        "1",
        "--rules",
        "rules.toml",
        "--state",
        "monitor.json",
    ];
    let monitor = Monitor::spawn(dir, &args, &addr);

    // Steady writes for 10 s; the witness stops answering for 2 s in the middle.
    let writes = steady_writes(&api, &root, "steady", 10);
    let pause = async {
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        signal(&witness, "-STOP");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        signal(&witness, "-CONT");
    };
    tokio::join!(writes, pause);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(monitor.alerts(), Vec::<serde_json::Value>::new());
    // What the log serves at checkpoint carries the witness's cosignature; head is newest.
    let served = reqwest::get(format!("{addr}/v1/sys/tlog/checkpoint"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let trust = Trust {
        log: Verifier::parse(&vkey).unwrap(),
        witnesses: vec![Verifier::parse(&wkey).unwrap()],
        threshold: 1,
    };
    custos_tlog::receipt::open_checkpoint(&served, &trust).unwrap();

    // Silent past the grace period (5 s): exactly one alert, and none more after it returns.
    signal(&witness, "-STOP");
    steady_writes(&api, &root, "silent", 9).await;
    let a = monitor.alerts();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["rule"], "log.witness", "{a:?}");
    assert_eq!(a[0]["severity"], "critical", "{a:?}");
    signal(&witness, "-CONT");
    steady_writes(&api, &root, "back", 3).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(monitor.alerts().len(), 1, "{:?}", monitor.alerts());
    drop(monitor);

    // A forged cosignature (the witness's key ID, a signature that does not verify): one
    // alert on the first poll, although the grace period is long.
    let mirror = dir.join("mirror");
    let o = Command::new(bin())
        .args(["log", "mirror", mirror.to_str().unwrap()])
        .env("CUSTOS_ADDR", &addr)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cp = std::fs::read_to_string(mirror.join("checkpoint")).unwrap();
    let (body, sigs) = note::parse(&cp).unwrap();
    let wv = Verifier::parse(&wkey).unwrap();
    let mut forged = sigs
        .iter()
        .find(|s| s.name == wv.name && s.key_id == wv.key_id)
        .expect("the mirrored checkpoint is cosigned")
        .clone();
    let last = forged.sig.len() - 1;
    forged.sig[last] ^= 1;
    let others: Vec<_> = sigs
        .into_iter()
        .filter(|s| !(s.name == wv.name && s.key_id == wv.key_id))
        .chain([forged])
        .collect();
    std::fs::write(mirror.join("checkpoint"), note::assemble(body, &others)).unwrap();
    let mut once = args.to_vec();
    let grace = ["--witness-grace", "600", "--once", "--state", "forged.json"];
    once.truncate(7);
    once.extend(["--rules", "rules.toml", "--tiles", mirror.to_str().unwrap()]);
    once.extend(grace);
    let o = Command::new(bin())
        .current_dir(dir)
        .args(&once)
        .output()
        .unwrap();
    let a: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["rule"], "log.checkpoint", "{a:?}");
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid signature"),
        "{a:?}"
    );
    drop(witness);
    drop(running);
}

/// C2SP tlog-witness status codes from the witness process: 409 for the size it cosigned
/// with another root, 400 for an old size larger than the checkpoint's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_answers_409_for_another_root_at_its_size_and_400_for_old_beyond_the_checkpoint()
{
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    keygen(dir, "w1.example", "w1.key");
    let (log, _) = Signer::generate("evil.example/log", TYPE_ED25519).unwrap();
    let vkey = log.verifier().vkey();
    let port = free_port();
    let _w = serve_witness(dir, "w1.key", "w1.state", port, &[&vkey]).await;
    let mut honest = MemoryTree::new();
    let mut forked = MemoryTree::new();
    for i in 0..40 {
        honest.push(leaf_hash(&entry(i)));
        forked.push(leaf_hash(&entry(if i == 7 { 1000 } else { i })));
    }
    let add = |old, checkpoint: String| AddCheckpoint {
        old,
        proof: vec![],
        checkpoint,
    };
    let (st, _) = post(port, add(0, signed(&log, &honest, 40)).encode()).await;
    assert_eq!(st, 200);
    let (st, msg) = post(port, add(40, signed(&log, &forked, 40)).encode()).await;
    assert_eq!(st, 409, "{msg}");
    assert!(msg.contains("split view"), "{msg}");
    let (st, msg) = post(port, add(41, signed(&log, &honest, 40)).encode()).await;
    assert_eq!(st, 400, "{msg}");
    assert!(msg.contains("larger than"), "{msg}");
}
