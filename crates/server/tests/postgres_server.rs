//! The whole server on PostgreSQL: init, unseal, tokens, policies and restart, the same
//! flows as on SQLite. Never skipped: without a server this test fails and says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{config_server, fresh_pg_schema, pg_url, Api};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_postgresql_initialises_unseals_restarts_and_keeps_data() {
    let schema = fresh_pg_schema("server").await;
    let cfg = format!(
        "[storage]\nbackend = \"postgresql\"\nurl = \"{}\"\nschema = \"{schema}\"\n\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n",
        pg_url().replace('"', "\\\"")
    );
    let (r, dir) = config_server(&cfg, None).await;
    let api = Api::new(&format!("http://{}", r.addr));
    let (st, v) = api
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let keys: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    let root = v["root_token"].as_str().unwrap().to_string();
    for k in &keys[..2] {
        api.call("PUT", "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    assert!(!r.core.sealed());
    let (_, st_v) = api.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(st_v["storage_type"], "postgresql");
    api.call(
        "POST",
        "sys/mounts/kv",
        Some(&root),
        Some(json!({"type": "kv"})),
    )
    .await;
    let (st, _) = api
        .call("PUT", "kv/nf", Some(&root), Some(json!({"id": "amf-1"})))
        .await;
    assert_eq!(st, 204);
    let (_, t) = api
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"policies": ["default"]})),
        )
        .await;
    let child = t["auth"]["client_token"].as_str().unwrap().to_string();
    r.task.abort();
    drop(r);

    let (r2, _dir) = config_server(&cfg, Some(dir)).await;
    let api = Api::new(&format!("http://{}", r2.addr));
    assert!(r2.core.sealed());
    for k in &keys[1..3] {
        api.call("PUT", "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    let (st, v) = api.call("GET", "kv/nf", Some(&root), None).await;
    assert_eq!((st, v["data"]["id"].as_str()), (200, Some("amf-1")));
    let (st, _) = api
        .call("GET", "auth/token/lookup-self", Some(&child), None)
        .await;
    assert_eq!(st, 200, "tokens survive restart on PostgreSQL");

    // The raw rows hold no plaintext secret.
    let (c, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = c
        .query(&format!("SELECT key, value FROM {schema}.kv"), &[])
        .await
        .unwrap();
    assert!(rows.len() > 5);
    for row in rows {
        let v: Vec<u8> = row.get(1);
        let s = String::from_utf8_lossy(&v);
        assert!(
            !s.contains("amf-1") && !s.contains(&child) && !s.contains(&root),
            "plaintext in row {}",
            row.get::<_, String>(0)
        );
    }
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
