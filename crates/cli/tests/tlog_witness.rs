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
    let cfg = custos_server::engines::EngineSettings {
        tlog_witnesses: vec![
            custos_server::config::TlogWitness {
                url: format!("http://127.0.0.1:{p1}"),
                key: k1.clone(),
            },
            custos_server::config::TlogWitness {
                url: format!("http://127.0.0.1:{p2}"),
                key: k2.clone(),
            },
        ],
        ..Default::default()
    };
    let data = tempfile::tempdir().unwrap();
    let (running, root, _) = custos_server::start_dev_with(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        Some("root"),
        custos_server::CoreConfig::default(),
        cfg,
    )
    .await
    .unwrap();
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
