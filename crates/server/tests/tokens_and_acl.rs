//! Token semantics (TTL, renewal, use limits, revocation trees, policy subsets) and ACL
//! enforcement on every request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{dev_server, TestServer};
use serde_json::{json, Value};

async fn create(s: &TestServer, parent: &str, body: Value) -> Value {
    let (st, v) = s
        .api
        .call("POST", "auth/token/create", Some(parent), Some(body))
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

fn tok(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap().to_string()
}

async fn policy(s: &TestServer, name: &str, hcl: &str) {
    let (st, v) = s
        .api
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some("root"),
            Some(json!({"policy": hcl})),
        )
        .await;
    assert_eq!(st, 204, "{v}");
}

#[tokio::test]
async fn token_lacking_a_path_gets_403_and_200_where_its_policy_allows() {
    let s = dev_server().await;
    policy(
        &s,
        "app-read",
        r#"path "secret/app/*" { capabilities = ["read", "list"] }"#,
    )
    .await;
    s.api
        .call(
            "PUT",
            "secret/app/db",
            Some("root"),
            Some(json!({"password": "x"})),
        )
        .await;
    s.api
        .call(
            "PUT",
            "secret/other/db",
            Some("root"),
            Some(json!({"password": "y"})),
        )
        .await;
    let t = tok(&create(&s, "root", json!({"policies": ["app-read"]})).await);
    let (st, v) = s.api.call("GET", "secret/app/db", Some(&t), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["password"], "x");
    let (st, v) = s.api.call("GET", "secret/other/db", Some(&t), None).await;
    assert_eq!(
        (st, v["errors"][0].as_str()),
        (
            403,
            Some("permission denied: no policy of this token grants read on secret/other/db")
        )
    );
    let (st, _) = s
        .api
        .call(
            "PUT",
            "secret/app/db",
            Some(&t),
            Some(json!({"password": "z"})),
        )
        .await;
    assert_eq!(st, 403, "read-only policy must not write");
    let (_, v) = s.api.call("GET", "secret/app/db", Some("root"), None).await;
    assert_eq!(
        v["data"]["password"], "x",
        "the refused write changed nothing"
    );
    let (st, _) = s.api.call("LIST", "secret/app", Some(&t), None).await;
    assert_eq!(st, 200);
    let (st, _) = s.api.call("GET", "sys/mounts", Some(&t), None).await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn create_capability_is_distinct_from_update() {
    let s = dev_server().await;
    policy(
        &s,
        "upd",
        r#"path "secret/*" { capabilities = ["update", "read"] }"#,
    )
    .await;
    s.api
        .call(
            "PUT",
            "secret/exists",
            Some("root"),
            Some(json!({"v": "1"})),
        )
        .await;
    let t = tok(&create(&s, "root", json!({"policies": ["upd"]})).await);
    let (st, _) = s
        .api
        .call("PUT", "secret/exists", Some(&t), Some(json!({"v": "2"})))
        .await;
    assert_eq!(st, 204, "update of an existing key");
    let (st, _) = s
        .api
        .call("PUT", "secret/new", Some(&t), Some(json!({"v": "2"})))
        .await;
    assert_eq!(st, 403, "creating needs the create capability");
}

#[tokio::test]
async fn sudo_paths_need_sudo() {
    let s = dev_server().await;
    policy(
        &s,
        "ops",
        r#"path "sys/audit/*" { capabilities = ["update", "create"] }
path "sys/rotate" { capabilities = ["update"] }"#,
    )
    .await;
    let t = tok(&create(&s, "root", json!({"policies": ["ops"]})).await);
    let (st, v) = s.api.call("PUT", "sys/rotate", Some(&t), None).await;
    assert_eq!(st, 403);
    assert!(v["errors"][0].as_str().unwrap().contains("sudo"), "{v}");
    policy(
        &s,
        "ops",
        r#"path "sys/rotate" { capabilities = ["update", "sudo"] }"#,
    )
    .await;
    let (st, _) = s.api.call("PUT", "sys/rotate", Some(&t), None).await;
    assert_eq!(st, 204, "policy changes take effect immediately");
}

#[tokio::test]
async fn child_token_policies_must_be_a_subset_of_the_parent() {
    let s = dev_server().await;
    policy(
        &s,
        "a",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    policy(&s, "b", r#"path "secret/*" { capabilities = ["read"] }"#).await;
    let parent = tok(&create(&s, "root", json!({"policies": ["a"]})).await);
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/create",
            Some(&parent),
            Some(json!({"policies": ["b"]})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("subset"));
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/create",
            Some(&parent),
            Some(json!({"policies": ["root"]})),
        )
        .await;
    assert_eq!(st, 400, "privilege escalation to root: {v}");
    let (st, v) = s
        .api
        .call("POST", "auth/token/create", Some(&parent), Some(json!({})))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["auth"]["policies"], json!(["a", "default"]));
    let (st, _) = s
        .api
        .call(
            "POST",
            "auth/token/create",
            Some(&parent),
            Some(json!({"no_parent": true})),
        )
        .await;
    assert_eq!(st, 400, "non-root may not create orphans via no_parent");
}

#[tokio::test]
async fn ttl_is_capped_by_max_and_explicit_max_with_warnings() {
    let s = dev_server().await;
    let v = create(
        &s,
        "root",
        json!({"policies": ["default"], "ttl": "10000h"}),
    )
    .await;
    assert_eq!(v["auth"]["lease_duration"], 768 * 3600);
    assert!(v["warnings"][0].as_str().unwrap().contains("capped"), "{v}");
    let v = create(
        &s,
        "root",
        json!({"policies": ["default"], "ttl": "2h", "explicit_max_ttl": "1h"}),
    )
    .await;
    assert_eq!(v["auth"]["lease_duration"], 3600);
    let t = tok(&v);
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "5h"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["auth"]["lease_duration"].as_i64().unwrap() <= 3600,
        "renewal respects explicit_max_ttl: {v}"
    );
}

#[tokio::test]
async fn lookup_renew_and_revoke_self() {
    let s = dev_server().await;
    let v = create(&s, "root", json!({"policies": ["default"], "ttl": "1h", "meta": {"nf": "amf"}, "display_name": "amf-1"})).await;
    let t = tok(&v);
    let (st, v) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 200);
    let d = &v["data"];
    assert_eq!(d["id"], t.as_str());
    assert_eq!(d["policies"], json!(["default"]));
    assert_eq!(d["meta"]["nf"], "amf");
    assert_eq!(d["display_name"], "token-amf-1");
    assert!(d["ttl"].as_i64().unwrap() > 3500);
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "2h"})),
        )
        .await;
    assert_eq!(st, 200);
    assert!(v["auth"]["lease_duration"].as_i64().unwrap() > 7100, "{v}");
    let (st, _) = s
        .api
        .call("POST", "auth/token/revoke-self", Some(&t), None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 403, "revoked token no longer works");
}

#[tokio::test]
async fn non_renewable_token_cannot_renew() {
    let s = dev_server().await;
    let t = tok(&create(
        &s,
        "root",
        json!({"policies": ["default"], "renewable": false}),
    )
    .await);
    let (st, v) = s
        .api
        .call("POST", "auth/token/renew-self", Some(&t), None)
        .await;
    assert_eq!(st, 400);
    assert!(v["errors"][0].as_str().unwrap().contains("not renewable"));
}

#[tokio::test]
async fn revoking_a_parent_revokes_the_whole_tree_but_not_orphans() {
    let s = dev_server().await;
    policy(
        &s,
        "maker",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let parent = tok(&create(&s, "root", json!({"policies": ["maker"]})).await);
    let child = tok(&create(&s, &parent, json!({})).await);
    let grandchild = tok(&create(&s, &child, json!({})).await);
    let orphan = tok(&create(
        &s,
        "root",
        json!({"policies": ["default"], "no_parent": true}),
    )
    .await);
    let (st, _) = s
        .api
        .call(
            "POST",
            "auth/token/revoke",
            Some("root"),
            Some(json!({"token": parent})),
        )
        .await;
    assert_eq!(st, 204);
    for t in [&parent, &child, &grandchild] {
        let (st, _) = s
            .api
            .call("GET", "auth/token/lookup-self", Some(t), None)
            .await;
        assert_eq!(st, 403);
    }
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&orphan), None)
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn revoke_orphan_keeps_children_alive() {
    let s = dev_server().await;
    policy(
        &s,
        "maker",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let parent = tok(&create(&s, "root", json!({"policies": ["maker"]})).await);
    let child = tok(&create(&s, &parent, json!({})).await);
    let (st, _) = s
        .api
        .call(
            "POST",
            "auth/token/revoke-orphan",
            Some("root"),
            Some(json!({"token": parent})),
        )
        .await;
    assert_eq!(st, 204);
    let (st, v) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&child), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["orphan"], true);
}

#[tokio::test]
async fn use_limited_token_dies_after_its_last_use() {
    let s = dev_server().await;
    let t = tok(&create(&s, "root", json!({"policies": ["default"], "num_uses": 2})).await);
    let (st, v) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!((st, v["data"]["num_uses"].as_i64()), (200, Some(2)));
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn accessor_operations() {
    let s = dev_server().await;
    let v = create(&s, "root", json!({"policies": ["default"]})).await;
    let (t, acc) = (tok(&v), v["auth"]["accessor"].as_str().unwrap().to_string());
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some("root"),
            Some(json!({"accessor": acc})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["data"]["id"], "",
        "lookup by accessor never reveals the token"
    );
    let (_, v) = s
        .api
        .call("LIST", "auth/token/accessors", Some("root"), None)
        .await;
    assert!(v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k == acc.as_str()));
    let (st, _) = s
        .api
        .call(
            "POST",
            "auth/token/revoke-accessor",
            Some("root"),
            Some(json!({"accessor": acc})),
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn bearer_header_is_accepted() {
    let s = dev_server().await;
    let r = reqwest::Client::new()
        .get(format!("{}/v1/auth/token/lookup-self", s.api.base))
        .header("Authorization", "Bearer root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn capabilities_self_reports_the_merged_acl() {
    let s = dev_server().await;
    policy(
        &s,
        "p",
        r#"path "secret/+/cfg" { capabilities = ["read"] }
path "secret/team/cfg" { capabilities = ["update"] }"#,
    )
    .await;
    let t = tok(&create(&s, "root", json!({"policies": ["p"]})).await);
    let (st, v) = s
        .api
        .call(
            "POST",
            "sys/capabilities-self",
            Some(&t),
            Some(json!({"paths": ["secret/x/cfg", "secret/team/cfg", "sys/seal"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["secret/x/cfg"], json!(["read"]));
    assert_eq!(v["data"]["secret/team/cfg"], json!(["update"]));
    assert_eq!(v["data"]["sys/seal"], json!(["deny"]));
}

#[tokio::test]
async fn allowed_parameters_are_enforced_end_to_end() {
    let s = dev_server().await;
    policy(
        &s,
        "p",
        r#"path "secret/cfg" {
  capabilities = ["create", "update"]
  allowed_parameters = { "region" = ["eu-*"] }
}"#,
    )
    .await;
    let t = tok(&create(&s, "root", json!({"policies": ["p"]})).await);
    let (st, _) = s
        .api
        .call(
            "PUT",
            "secret/cfg",
            Some(&t),
            Some(json!({"region": "eu-west"})),
        )
        .await;
    assert_eq!(st, 204);
    let (st, v) = s
        .api
        .call(
            "PUT",
            "secret/cfg",
            Some(&t),
            Some(json!({"region": "us-east"})),
        )
        .await;
    assert_eq!(st, 403);
    assert!(v["errors"][0].as_str().unwrap().contains("region"), "{v}");
}

#[tokio::test]
async fn sweeper_removes_expired_tokens_from_storage() {
    let s = dev_server().await;
    let v = create(&s, "root", json!({"policies": ["default"], "ttl": "1s"})).await;
    let acc = v["auth"]["accessor"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let n = s.core.sweep_expired_now().await.unwrap();
    assert_eq!(n, 1);
    let (_, v) = s
        .api
        .call("LIST", "auth/token/accessors", Some("root"), None)
        .await;
    assert!(!v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k == acc.as_str()));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = dev_server().await;
    s.api.call("GET", "sys/health", None, None).await;
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", s.api.base))
        .header("X-Vault-Token", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let body = r.text().await.unwrap();
    assert!(body.contains("# TYPE custos_http_requests_total counter"));
    assert!(body.contains("custos_http_requests_total{method=\"GET\",code=\"200\"}"));
    assert!(body.contains("custos_core_unsealed 1"));
    let (st, _) = s
        .api
        .call("GET", "sys/metrics?format=prometheus", None, None)
        .await;
    assert_eq!(st, 403, "metrics need a token unless configured otherwise");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_a_limited_token_are_counted_exactly() {
    let s = dev_server().await;
    let t = tok(&create(&s, "root", json!({"policies": ["default"], "num_uses": 5})).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = s.api.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            api.call("GET", "auth/token/lookup-self", Some(&t), None)
                .await
                .0
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 5,
        "a 5-use token must serve exactly 5 requests under concurrency"
    );
}
