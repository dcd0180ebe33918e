//! The server's transparency log: every trust event is appended by the server, served as C2SP
//! tiles and signed checkpoints, and provable with receipts that verify offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use custos_testkit::{dev_server, ok, pki_root, Api};
use custos_tlog::entry::{Entry, Event};
use custos_tlog::merkle::{self, leaf_hash, Hash};
use custos_tlog::note::Verifier;
use custos_tlog::receipt::{self, Receipt, Trust};
use custos_tlog::tile::{self, TileId, TileSource};
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn get_bytes(api: &Api, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = reqwest::get(format!("{}/v1/{path}", api.base))
        .await
        .unwrap();
    let st = r.status().as_u16();
    let cc = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    (st, cc, r.bytes().await.unwrap().to_vec())
}

async fn trust(api: &Api) -> Trust {
    let (st, v) = api.call("GET", "sys/tlog/key", None, None).await;
    assert_eq!(st, 200, "{v}");
    Trust {
        log: Verifier::parse(v["data"]["vkey"].as_str().unwrap()).unwrap(),
        witnesses: vec![],
        threshold: 0,
    }
}

async fn entries(api: &Api, trust: &Trust) -> Vec<Entry> {
    let (_, _, note) = get_bytes(api, "sys/tlog/checkpoint").await;
    let (cp, _) = receipt::open_checkpoint(std::str::from_utf8(&note).unwrap(), trust).unwrap();
    let mut out = Vec::new();
    for i in 0..cp.size {
        let (st, v) = api
            .call("GET", &format!("sys/tlog/entry/{i}"), None, None)
            .await;
        assert_eq!(st, 200, "{v}");
        let r = Receipt::parse(&v["data"]).unwrap();
        out.push(r.verify(trust).unwrap().entry);
    }
    out
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

fn der_of(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(body).unwrap()
}

#[tokio::test]
async fn every_issuance_revocation_role_and_policy_change_is_logged_with_an_offline_receipt() {
    let s = dev_server().await;
    let (api, root) = (&s.api, s.root_token.as_str());
    let t = trust(api).await;
    pki_root(api, root, "Log CA").await;
    ok(
        api,
        root,
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "example.net", "allow_subdomains": true, "key_type": "ec"}),
    )
    .await;
    let issued = ok(
        api,
        root,
        "POST",
        "pki/issue/web",
        json!({"common_name": "a.example.net"}),
    )
    .await;
    let serial = issued["data"]["serial_number"]
        .as_str()
        .unwrap()
        .to_string();
    let cert = der_of(issued["data"]["certificate"].as_str().unwrap());
    ok(
        api,
        root,
        "POST",
        "pki/revoke",
        json!({"serial_number": serial}),
    )
    .await;
    ok(
        api,
        root,
        "PUT",
        "sys/policies/acl/ops",
        json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    ok(api, root, "DELETE", "sys/policies/acl/ops", json!({})).await;
    ok(api, root, "DELETE", "pki/roles/web", json!({})).await;

    let log = entries(api, &t).await;
    let kinds: Vec<&str> = log.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds,
        [
            "pki.ca",
            "pki.role",
            "pki.issue",
            "pki.revoke",
            "acl.policy",
            "acl.policy",
            "pki.role"
        ]
    );
    // The root CA is logged (op, subject) before anything it issues.
    assert!(
        matches!(&log[0].event, Event::CaCertificate { op, subject, is_ca: true, .. } if op == "root.generate" && subject.contains("Log CA"))
    );
    match &log[2].event {
        Event::CertIssued {
            mount,
            role,
            serial: sn,
            cert_sha256,
            requester,
            ..
        } => {
            assert_eq!(mount, "pki/");
            assert_eq!(role, "web");
            assert_eq!(sn, &serial);
            assert_eq!(
                cert_sha256,
                &sha256_hex(&cert),
                "the entry names the certificate by its SHA-256"
            );
            assert_eq!(requester, "root");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&log[3].event, Event::CertRevoked { serial: sn, .. } if sn == &serial));
    // Nothing secret is logged: no private key, no certificate body.
    let key_line = issued["data"]["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap();
    for e in &log {
        let text = String::from_utf8(e.encode().unwrap()).unwrap();
        assert!(!text.contains("PRIVATE KEY") && !text.contains("CERTIFICATE"));
        assert!(!text.contains(&key_line[..40]) && !text.contains(&B64.encode(&cert)[..40]));
    }
}

#[tokio::test]
async fn tiles_rebuild_the_signed_root_and_cache_headers_follow_c2sp() {
    let s = dev_server().await;
    let (api, root) = (&s.api, s.root_token.as_str());
    let t = trust(api).await;
    // 300 entries: one full entry bundle and level-0 tile, and partial ones.
    for i in 0..300 {
        ok(
            api,
            root,
            "PUT",
            &format!("sys/policies/acl/p{i}"),
            json!({"policy": "path \"secret/x\" { capabilities = [\"read\"] }"}),
        )
        .await;
    }
    let (st, cc, note) = get_bytes(api, "sys/tlog/checkpoint").await;
    assert_eq!(st, 200);
    assert_eq!(cc.as_deref(), Some("no-cache"));
    let (cp, _) = receipt::open_checkpoint(std::str::from_utf8(&note).unwrap(), &t).unwrap();
    assert_eq!(cp.size, 300);

    let mut hashes: std::collections::HashMap<(u8, u64), Vec<Hash>> = Default::default();
    for id in tile::tiles_for(cp.size) {
        let (st, cc, body) = get_bytes(api, &format!("sys/tlog/{}", id.path())).await;
        assert_eq!(st, 200, "{}", id.path());
        let want = if id.width == 256 {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        assert_eq!(cc.as_deref(), Some(want), "{}", id.path());
        hashes.insert(
            (id.level.unwrap(), id.index),
            tile::tile_hashes(&body).unwrap(),
        );
    }
    let src = TileSource {
        fetch: |level: u8, index: u64| hashes.get(&(level, index)).cloned(),
    };
    assert_eq!(merkle::root(&src, cp.size).unwrap(), cp.root);

    // Entry bundles hash to the level-0 tiles.
    let mut leaves = Vec::new();
    for (n, w) in [(0u64, 256u16), (1, 44)] {
        let id = TileId {
            level: None,
            index: n,
            width: w,
        };
        let (st, _, body) = get_bytes(api, &format!("sys/tlog/{}", id.path())).await;
        assert_eq!(st, 200);
        for e in tile::parse_bundle(&body).unwrap() {
            Entry::parse(e).unwrap();
            leaves.push(leaf_hash(e));
        }
    }
    assert_eq!(leaves.len(), 300);
    let mut flat = hashes[&(0, 0)].clone();
    flat.extend(hashes[&(0, 1)].clone());
    assert_eq!(leaves, flat);

    // A partial tile narrower than the current one is a prefix of it; wider ones and tiles
    // beyond the tree are 404; non-canonical paths are 400.
    let (st, _, narrow) = get_bytes(api, "sys/tlog/tile/0/001.p/10").await;
    assert_eq!(st, 200);
    assert_eq!(
        tile::tile_hashes(&narrow).unwrap(),
        hashes[&(0, 1)][..10].to_vec()
    );
    assert_eq!(get_bytes(api, "sys/tlog/tile/0/001.p/45").await.0, 404);
    assert_eq!(get_bytes(api, "sys/tlog/tile/0/002").await.0, 404);
    assert_eq!(
        get_bytes(api, "sys/tlog/tile/entries/x000/001").await.0,
        400
    );
    assert_eq!(get_bytes(api, "sys/tlog/tile/0/1").await.0, 400);

    // Proof API: inclusion and consistency proofs that verify against the checkpoint.
    let (st, v) = api
        .call(
            "GET",
            "sys/tlog/proof/inclusion?index=257&size=300",
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let proof = receipt::decode_hashes(
        &serde_json::from_value::<Vec<String>>(v["data"]["inclusion_proof"].clone()).unwrap(),
    )
    .unwrap();
    merkle::verify_inclusion(&leaves[257], 257, 300, &proof, &cp.root).unwrap();
    let (st, v) = api
        .call("GET", "sys/tlog/proof/consistency?old=256", None, None)
        .await;
    assert_eq!(st, 200, "{v}");
    let proof = receipt::decode_hashes(
        &serde_json::from_value::<Vec<String>>(v["data"]["consistency_proof"].clone()).unwrap(),
    )
    .unwrap();
    let old_root = merkle::root(&src, 256).unwrap();
    merkle::verify_consistency(256, 300, &old_root, &cp.root, &proof).unwrap();
    for bad in [
        "sys/tlog/proof/inclusion?index=300",
        "sys/tlog/proof/inclusion?index=1&size=301",
        "sys/tlog/proof/inclusion?index=-1",
        "sys/tlog/proof/consistency?old=301",
    ] {
        let (st, v) = api.call("GET", bad, None, None).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(
        api.call("GET", "sys/tlog/entry/300", None, None).await.0,
        404
    );
    assert_eq!(
        api.call("POST", "sys/tlog/checkpoint", None, Some(json!({})))
            .await
            .0,
        405
    );
}

#[tokio::test]
async fn the_log_survives_restart_and_keeps_its_key_and_entries() {
    let s = dev_server().await;
    let (api, root) = (&s.api, s.root_token.as_str());
    let t = trust(api).await;
    for i in 0..5 {
        ok(
            api,
            root,
            "PUT",
            &format!("sys/policies/acl/r{i}"),
            json!({"policy": "path \"a\" { capabilities = [\"read\"] }"}),
        )
        .await;
    }
    let before = entries(api, &t).await;
    // Seal and unseal: the log is rebuilt from storage and must match its checkpoint.
    ok(api, root, "PUT", "sys/seal", json!({})).await;
    assert_eq!(get_bytes(api, "sys/tlog/checkpoint").await.0, 503);
    let (st, v) = api
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": s.unseal_key})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        trust(api).await.log,
        t.log,
        "the checkpoint key is kept in the barrier"
    );
    ok(
        api,
        root,
        "PUT",
        "sys/policies/acl/r5",
        json!({"policy": "path \"a\" { capabilities = [\"read\"] }"}),
    )
    .await;
    let after = entries(api, &t).await;
    assert_eq!(after.len(), 6);
    assert_eq!(after[..5], before[..]);
}

/// Without `tlog_origin`, each log derives an origin of its own from the cluster name and
/// its key, so one witness can serve two logs (it tells them apart by origin).
#[tokio::test]
async fn two_logs_without_a_configured_origin_get_distinct_ones() {
    let (a, b) = (dev_server().await, dev_server().await);
    let origin = |v: serde_json::Value| v["data"]["origin"].as_str().unwrap().to_string();
    let oa = origin(a.api.call("GET", "sys/tlog/key", None, None).await.1);
    let ob = origin(b.api.call("GET", "sys/tlog/key", None, None).await.1);
    assert_ne!(oa, ob);
    for o in [&oa, &ob] {
        let id = o.strip_prefix("custos.local/custos/").unwrap();
        assert!(
            id.len() == 8 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{o}"
        );
    }
    // The checkpoint's first line is that origin.
    let (_, _, note) = get_bytes(&a.api, "sys/tlog/checkpoint").await;
    assert!(String::from_utf8(note)
        .unwrap()
        .starts_with(&format!("{oa}\n")));
}
