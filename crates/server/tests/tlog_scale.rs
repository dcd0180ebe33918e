//! Start-up that does not grow with the transparency log: a log of 200,000 entries opens
//! from its checkpoint, its partial bundle and one partial hash tile per tile level (a
//! handful of reads, not one per bundle), and every checkpoint, proof and tile it serves
//! after the restart is byte-identical to before and to an independent RFC 6962 tree built
//! from its entries. A log stored before tiles were kept is converted once, then opens the
//! same way; a tampered edge tile makes the log refuse to run rather than fork.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_tlog::edge::tile_levels;
use custos_tlog::entry::{ChangeOp, Event};
use custos_tlog::merkle::{self, leaf_hash, MemoryTree};
use custos_tlog::tile::{self, TileId};
use serde_json::{json, Value};
use std::sync::Arc;

const N: u64 = 200_000;

struct Server {
    running: custos_server::Running,
    base: String,
    share: String,
}

fn client() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(reqwest::Client::new)
}

async fn get(base: &str, path: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(format!("{base}/v1/{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn put(base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = client().put(format!("{base}/v1/{path}")).json(&body);
    if let Some(t) = token {
        r = r.header("X-Vault-Token", t);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// An in-process server on SQLite in a fresh directory, root token `root`.
async fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let (running, _root, share) = custos_server::start_dev_with(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        Some("root"),
        custos_server::CoreConfig::default(),
        custos_server::engines::EngineSettings::default(),
    )
    .await
    .unwrap();
    let s = Server {
        base: format!("http://{}", running.addr),
        running,
        share,
    };
    (dir, s)
}

async fn restart(s: &Server) {
    let (st, v) = put(&s.base, "sys/seal", Some("root"), json!({})).await;
    assert!(st == 200 || st == 204, "{st} {v}");
    let (st, v) = put(&s.base, "sys/unseal", None, json!({"key": s.share})).await;
    assert_eq!(st, 200, "{v}");
}

/// Everything a verifier can ask for, as raw bytes: the checkpoint, inclusion proofs at the
/// head and at older sizes, consistency proofs, and hash tiles (full and partial).
async fn observe(s: &Server, size: u64) -> Vec<(String, Vec<u8>)> {
    let mut paths = vec!["sys/tlog/checkpoint".to_string()];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for k in 0..400u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sz = if k % 4 == 0 { size } else { 1 + x % size };
        let index = (x >> 11) % sz;
        paths.push(format!("sys/tlog/proof/inclusion?index={index}&size={sz}"));
        let old = 1 + (x >> 23) % sz;
        paths.push(format!("sys/tlog/proof/consistency?old={old}&new={sz}"));
    }
    for id in tile::tiles_for(size).into_iter().rev().take(12) {
        paths.push(format!("sys/tlog/{}", id.path()));
    }
    if size >= 18 * 256 {
        paths.push(format!(
            "sys/tlog/{}",
            TileId {
                level: Some(0),
                index: 17,
                width: 256
            }
            .path()
        ));
    }
    let mut out = Vec::new();
    for p in paths {
        let (st, b) = get(&s.base, &p).await;
        assert_eq!(st, 200, "{p}: {}", String::from_utf8_lossy(&b));
        // JSON answers carry a fresh request ID: compare their data.
        let b = match serde_json::from_slice::<Value>(&b) {
            Ok(v) => serde_json::to_vec(&v["data"]).unwrap(),
            Err(_) => b,
        };
        out.push((p, b));
    }
    out
}

/// The reference: an RFC 6962 tree over every entry, read back from the entry bundles.
async fn reference(s: &Server, size: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256) as u16;
        let id = TileId {
            level: None,
            index: n,
            width,
        };
        let (st, b) = get(&s.base, &format!("sys/tlog/{}", id.path())).await;
        assert_eq!(st, 200);
        for e in tile::parse_bundle(&b).unwrap() {
            t.push(leaf_hash(e));
        }
    }
    assert_eq!(t.size(), size);
    t
}

fn hashes_of(v: &Value, field: &str) -> Vec<[u8; 32]> {
    v["data"][field]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD
                .decode(h.as_str().unwrap())
                .unwrap();
            b.try_into().unwrap()
        })
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn metrics(s: &Server) -> String {
    let r = client()
        .get(format!("{}/v1/sys/metrics?format=prometheus", s.base))
        .header("X-Vault-Token", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_reads_o_log_n_tree_nodes_and_serves_byte_identical_proofs_after_restart() {
    let (dir, s) = start().await;
    let log = s.running.engines.tlog.clone();

    // 200,000 durable appends, generated in process.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..512 {
        let (log, next) = (log.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= N {
                    break;
                }
                log.append(Event::PolicyChanged {
                    name: format!("p{i}"),
                    op: ChangeOp::Write,
                    policy_sha256: None,
                    requester: "scale-test".into(),
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let size = log.size().unwrap();
    assert!(size >= N);

    let before = observe(&s, size).await;
    // Independent check: the served proofs are RFC 6962's over the served entries.
    let refr = reference(&s, size).await;
    for (p, b) in &before {
        let v: Value = match serde_json::from_slice::<Value>(b) {
            Ok(v) => json!({ "data": v }),
            Err(_) => continue,
        };
        if p.contains("inclusion") {
            let (i, sz) = (
                v["data"]["index"].as_u64().unwrap(),
                v["data"]["size"].as_u64().unwrap(),
            );
            assert_eq!(
                hashes_of(&v, "inclusion_proof"),
                merkle::inclusion_proof(&refr, i, sz).unwrap(),
                "{p}"
            );
        } else if p.contains("consistency") {
            let (o, n) = (
                v["data"]["old"].as_u64().unwrap(),
                v["data"]["new"].as_u64().unwrap(),
            );
            assert_eq!(
                hashes_of(&v, "consistency_proof"),
                merkle::consistency_proof(&refr, o, n).unwrap(),
                "{p}"
            );
        }
    }

    // Restart: seal (the log and its caches are dropped) and unseal (the log opens again).
    restart(&s).await;
    let (_, opened) = log.reads().unwrap();
    assert_eq!(opened.size, size);
    assert_eq!(opened.converted, 0);
    // The checkpoint, the tiled mark, the partial bundle (a list of its pieces and at most
    // 16 of them) and one partial tile per tile level above 0: O(log n), where rebuilding
    // the tree would read every one of the ~782 bundles.
    let bound = 3 + 16 + u64::from(tile_levels(size));
    assert!(
        opened.reads <= bound,
        "opening a log of {size} read {} keys (bound {bound})",
        opened.reads
    );
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "custos_tlog_open_reads") as u64, opened.reads);
    assert_eq!(metric(&m, "custos_tlog_size") as u64, size);
    let after = observe(&s, size).await;
    assert_eq!(before.len(), after.len());
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "{p} changed across the restart");
    }
    // The log keeps growing from the loaded edge: the next root is the reference's.
    log.append(Event::PolicyChanged {
        name: "after".into(),
        op: ChangeOp::Write,
        policy_sha256: None,
        requester: "scale-test".into(),
    })
    .await
    .unwrap();
    let grown = reference(&s, size + 1).await;
    let (_, note) = get(&s.base, "sys/tlog/checkpoint").await;
    let note = String::from_utf8(note).unwrap();
    let root_b64 = note.lines().nth(2).unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(root_b64)
            .unwrap(),
        merkle::root(&grown, size + 1).unwrap().to_vec()
    );

    // A log stored before hash tiles were kept (no tiles, no mark) is converted once at
    // unseal, then opens in O(log n) again; nothing it serves changes.
    let size = size + 1;
    let before = observe(&s, size).await;
    let (st, _) = put(&s.base, "sys/seal", Some("root"), json!({})).await;
    assert!(st == 200 || st == 204);
    {
        let db = rusqlite::Connection::open(dir.path().join("custos.db")).unwrap();
        let n = db
            .execute(
                "DELETE FROM kv WHERE key LIKE 'sys/tlog/tile/%' OR key = 'sys/tlog/tiled'",
                [],
            )
            .unwrap();
        assert!(n as u64 > size / 256, "full tiles were stored ({n})");
    }
    let (st, v) = put(&s.base, "sys/unseal", None, json!({"key": s.share})).await;
    assert_eq!(st, 200, "{v}");
    let (_, opened) = log.reads().unwrap();
    assert_eq!(opened.converted, size);
    assert_eq!(observe(&s, size).await, before);
    restart(&s).await;
    let (_, opened) = log.reads().unwrap();
    assert_eq!(opened.converted, 0);
    assert!(opened.reads <= 3 + 16 + u64::from(tile_levels(size)));
    assert_eq!(observe(&s, size).await, before);

    // A tampered edge tile: the log refuses to run (issuance, which must be logged, fails
    // closed) instead of extending a tree its checkpoint does not sign.
    let (st, _) = put(&s.base, "sys/seal", Some("root"), json!({})).await;
    assert!(st == 200 || st == 204);
    {
        let db = rusqlite::Connection::open(dir.path().join("custos.db")).unwrap();
        let key: String = db
            .query_row(
                "SELECT key FROM kv WHERE key LIKE 'sys/tlog/tile/1/%' ORDER BY key DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let other: Vec<u8> = db
            .query_row(
                "SELECT value FROM kv WHERE key LIKE 'sys/tlog/tile/0/%' ORDER BY key LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Another tile's (validly encrypted) value under this key: the barrier binds values
        // to keys, so this is refused either way; the log must not run on it.
        db.execute(
            "UPDATE kv SET value = ?1 WHERE key = ?2",
            rusqlite::params![other, key],
        )
        .unwrap();
    }
    let _ = put(&s.base, "sys/unseal", None, json!({"key": s.share})).await;
    let (st, b) = get(&s.base, "sys/tlog/checkpoint").await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
}

/// One entry per batch (a lone caller): each batch stores only its new entry as a piece of
/// the partial bundle, every 16th rewrites the pieces as one, the full bundle replaces them;
/// a restart joins the pieces back into exactly the entries the checkpoint covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_bundle_kept_in_pieces_reopens_exactly_and_in_bounded_reads() {
    let (dir, s) = start().await;
    let log = s.running.engines.tlog.clone();
    let pieces = |db: &rusqlite::Connection| -> i64 {
        db.query_row(
            "SELECT count(*) FROM kv WHERE key LIKE 'sys/tlog/part/%'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    for round in 0..3u64 {
        for i in 0..150u64 {
            log.append(Event::PolicyChanged {
                name: format!("r{round}-{i}"),
                op: ChangeOp::Write,
                policy_sha256: None,
                requester: "pieces-test".into(),
            })
            .await
            .unwrap();
            let db = rusqlite::Connection::open(dir.path().join("custos.db")).unwrap();
            assert!(pieces(&db) <= 16, "at most 16 pieces");
        }
        let size = log.size().unwrap();
        let before = observe(&s, size).await;
        let refr = reference(&s, size).await;
        restart(&s).await;
        let (_, opened) = log.reads().unwrap();
        assert!(
            opened.reads <= 3 + 16 + u64::from(tile_levels(size)),
            "{opened:?}"
        );
        assert_eq!(observe(&s, size).await, before);
        assert_eq!(
            merkle::root(&reference(&s, size).await, size).unwrap(),
            merkle::root(&refr, size).unwrap()
        );
    }
}
