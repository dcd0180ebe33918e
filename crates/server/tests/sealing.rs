//! Seal/unseal, Shamir thresholds, restart behaviour, encryption at rest and key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{config_server, Api};
use serde_json::{json, Value};

const SHAMIR_CONFIG: &str = r#"
[storage]
backend = "sqlite"
path = "{dir}/custos.db"

[listener]
address = "127.0.0.1:0"
tls_disable = true
"#;

async fn start(dir: Option<tempfile::TempDir>) -> (custos_server::Running, tempfile::TempDir, Api) {
    let (r, d) = config_server(SHAMIR_CONFIG, dir).await;
    let api = Api::new(&format!("http://{}", r.addr));
    (r, d, api)
}

async fn init_3_of_5(api: &Api) -> (Vec<String>, String) {
    let (st, v) = api
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 5, "secret_threshold": 3})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (keys, v["root_token"].as_str().unwrap().to_string())
}

async fn unseal(api: &Api, key: &str) -> (u16, Value) {
    api.call("PUT", "sys/unseal", None, Some(json!({"key": key})))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_config_server_restarts_sealed_and_threshold_shares_unseal_it() {
    let (r, dir, api) = start(None).await;
    let (keys, root) = init_3_of_5(&api).await;
    let (_, v) = api.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(v["sealed"], true, "init leaves the server sealed");
    assert_eq!((v["t"].as_u64(), v["n"].as_u64()), (Some(3), Some(5)));
    for k in &keys[..3] {
        unseal(&api, k).await;
    }
    let (st, _) = api
        .call("PUT", "secret-kv/x", Some(&root), Some(json!({"a": 1})))
        .await;
    assert_eq!(st, 404, "no kv mount yet");
    let (st, v) = api
        .call(
            "POST",
            "sys/mounts/kv",
            Some(&root),
            Some(json!({"type": "kv"})),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let (st, _) = api
        .call(
            "PUT",
            "kv/app",
            Some(&root),
            Some(json!({"password": "p1"})),
        )
        .await;
    assert_eq!(st, 204);
    r.task.abort();
    drop(r);

    let (r2, _dir, api) = start(Some(dir)).await;
    assert!(r2.core.sealed(), "a restarted server must come up sealed");
    let (st, v) = api.call("GET", "kv/app", Some(&root), None).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["errors"][0], "Custos is sealed");

    // T-1 shares: still sealed.
    unseal(&api, &keys[4]).await;
    let (_, v) = unseal(&api, &keys[1]).await;
    assert_eq!(
        (v["sealed"].as_bool(), v["progress"].as_u64()),
        (Some(true), Some(2))
    );

    // A repeated share does not count.
    let (_, v) = unseal(&api, &keys[1]).await;
    assert_eq!(
        (v["sealed"].as_bool(), v["progress"].as_u64()),
        (Some(true), Some(2)),
        "duplicate share counted"
    );

    // A wrong (well-formed) share as the third: refused, progress reset, still sealed.
    let mut wrong = hex::decode(&keys[0]).unwrap();
    wrong[0] ^= 0xff;
    let (st, v) = unseal(&api, &hex::encode(&wrong)).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("invalid unseal key"),
        "{v}"
    );
    let (_, v) = api.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (v["sealed"].as_bool(), v["progress"].as_u64()),
        (Some(true), Some(0))
    );

    // Malformed share: 400, nothing counted.
    let (st, _) = unseal(&api, "zz").await;
    assert_eq!(st, 400);

    // Any three distinct real shares unseal, and data is intact.
    for k in [&keys[0], &keys[2]] {
        unseal(&api, k).await;
    }
    let (_, v) = unseal(&api, &keys[4]).await;
    assert_eq!(v["sealed"], false, "{v}");
    let (st, v) = api.call("GET", "kv/app", Some(&root), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["password"], "p1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_server_answers_503_except_init_status_unseal_health() {
    let (r, _dir, api) = start(None).await;
    let (_, root) = init_3_of_5(&api).await;
    assert!(r.core.sealed());
    for (m, p) in [
        ("GET", "sys/seal-status"),
        ("GET", "sys/health"),
        ("GET", "sys/init"),
    ] {
        let (st, _) = api.call(m, p, None, None).await;
        assert!(st == 200 || st == 503 && p == "sys/health", "{p}: {st}");
    }
    let (st, v) = api.call("GET", "sys/health", None, None).await;
    assert_eq!((st, v["sealed"].as_bool()), (503, Some(true)));
    let (st, _) = api
        .call("GET", "sys/health?sealedcode=299", None, None)
        .await;
    assert_eq!(st, 299, "sealedcode overrides the sealed status code");
    let (st, _) = api
        .call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert_eq!(st, 200);
    for (m, p) in [
        ("GET", "sys/mounts"),
        ("POST", "auth/token/create"),
        ("GET", "sys/policies/acl"),
        ("GET", "kv/x"),
        ("PUT", "sys/seal"),
        ("GET", "sys/leader"),
        ("GET", "sys/metrics"),
    ] {
        let (st, _) = api.call(m, p, Some(&root), None).await;
        assert_eq!(st, 503, "{m} {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_known_secret_appears_in_the_raw_database_bytes() {
    let (_r, dir, api) = start(None).await;
    let (keys, root) = init_3_of_5(&api).await;
    for k in &keys[..3] {
        unseal(&api, k).await;
    }
    let canary = "CANARY-s3cr3t-6f1d2a9e";
    api.call(
        "POST",
        "sys/mounts/kv",
        Some(&root),
        Some(json!({"type": "kv"})),
    )
    .await;
    let (st, _) = api
        .call(
            "PUT",
            "kv/db",
            Some(&root),
            Some(json!({"password": canary})),
        )
        .await;
    assert_eq!(st, 204);
    let (_, v) = api
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"policies": ["default"]})),
        )
        .await;
    let child = v["auth"]["client_token"].as_str().unwrap().to_string();
    let accessor = v["auth"]["accessor"].as_str().unwrap().to_string();
    let policy_marker = "POLICYMARKER-bb81";
    api.call("PUT", &format!("sys/policies/acl/{}", "p1"), Some(&root), Some(json!({"policy": format!("path \"{policy_marker}/*\" {{ capabilities = [\"read\"] }}")}))).await;

    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("custos.db")
        {
            raw.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(raw.len() > 4096, "database files were read");
    let hay = String::from_utf8_lossy(&raw);
    for (what, needle) in [
        ("kv secret", canary),
        ("root token", root.as_str()),
        ("child token", child.as_str()),
        ("accessor", accessor.as_str()),
        ("policy text", policy_marker),
    ] {
        assert!(
            !hay.contains(needle),
            "{what} found in plaintext in the database"
        );
    }
    for k in &keys {
        assert!(!hay.contains(k.as_str()), "an unseal share is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyfile_seal_auto_unseals_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("unseal.key"), hex::encode([0x5au8; 32])).unwrap();
    let cfg =
        format!("{SHAMIR_CONFIG}\n[seal]\ntype = \"keyfile\"\nkey_file = \"{{dir}}/unseal.key\"\n");
    let (r, dir) = config_server(&cfg, Some(dir)).await;
    let api = Api::new(&format!("http://{}", r.addr));
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["keys"].as_array().unwrap().is_empty(),
        "keyfile seals hand out no shares"
    );
    assert!(!r.core.sealed(), "keyfile seal unseals right after init");
    r.task.abort();
    drop(r);
    let (r2, _d) = config_server(&cfg, Some(dir)).await;
    assert!(!r2.core.sealed(), "keyfile seal unseals on restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_adds_a_term_and_old_data_stays_readable_after_restart() {
    let (r, dir, api) = start(None).await;
    let (keys, root) = init_3_of_5(&api).await;
    for k in &keys[..3] {
        unseal(&api, k).await;
    }
    api.call(
        "POST",
        "sys/mounts/kv",
        Some(&root),
        Some(json!({"type": "kv"})),
    )
    .await;
    api.call("PUT", "kv/old", Some(&root), Some(json!({"v": "before"})))
        .await;
    let (st, _) = api.call("PUT", "sys/rotate", Some(&root), None).await;
    assert_eq!(st, 204);
    let (_, v) = api.call("GET", "sys/key-status", Some(&root), None).await;
    assert_eq!(v["data"]["term"], 2);
    api.call("PUT", "kv/new", Some(&root), Some(json!({"v": "after"})))
        .await;
    r.task.abort();
    drop(r);
    let (_r2, _d, api) = start(Some(dir)).await;
    for k in &keys[2..5] {
        unseal(&api, k).await;
    }
    let (_, a) = api.call("GET", "kv/old", Some(&root), None).await;
    let (_, b) = api.call("GET", "kv/new", Some(&root), None).await;
    assert_eq!(
        (a["data"]["v"].as_str(), b["data"]["v"].as_str()),
        (Some("before"), Some("after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_validates_parameters_and_runs_once() {
    let (_r, _dir, api) = start(None).await;
    for body in [
        json!({"secret_shares": 3, "secret_threshold": 4}),
        json!({"secret_shares": 0, "secret_threshold": 0}),
        json!({"secret_shares": 3, "secret_threshold": 1}),
        json!({"secret_shares": 300, "secret_threshold": 2}),
        json!({"secret_shares": 3}),
    ] {
        let (st, v) = api.call("PUT", "sys/init", None, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    let (_, v) = api.call("GET", "sys/init", None, None).await;
    assert_eq!(v["initialized"], false, "failed inits leave nothing behind");
    init_3_of_5(&api).await;
    let (st, v) = api
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(v["errors"][0]
        .as_str()
        .unwrap()
        .contains("already initialized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inits_let_exactly_one_win() {
    let (_r, _dir, api) = start(None).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": 3, "secret_threshold": 2})),
            )
            .await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        if st == 200 {
            winners.push(v);
        } else {
            assert_eq!(st, 400, "{v}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one init may succeed");
    // The winner's shares really unseal the server.
    let keys = winners[0]["keys"].as_array().unwrap();
    for k in &keys[..2] {
        unseal(&api, k.as_str().unwrap()).await;
    }
    let (_, v) = api.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(v["sealed"], false);
}
