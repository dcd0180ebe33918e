//! Every malformed, oversized, unknown or unauthorised request gets Vault's JSON error with a
//! precise message and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::dev_server;
use serde_json::{json, Value};

fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

async fn policy_count(s: &custos_testkit::TestServer) -> usize {
    let (_, v) = s
        .api
        .call("LIST", "sys/policies/acl", Some("root"), None)
        .await;
    v["data"]["keys"].as_array().unwrap().len()
}

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let s = dev_server().await;
    let (st, v) = s
        .api
        .raw(
            "PUT",
            "secret/app",
            Some("root"),
            Some(b"{\"password\": ".to_vec()),
        )
        .await;
    assert_eq!(st, 400);
    assert!(errors(&v).contains("failed to parse JSON input"), "{v}");
    let (st, _) = s.api.call("GET", "secret/app", Some("root"), None).await;
    assert_eq!(st, 404, "nothing may have been written");
    let (st, v) = s
        .api
        .raw("PUT", "secret/app", Some("root"), Some(b"[1,2]".to_vec()))
        .await;
    assert_eq!(st, 400);
    assert!(errors(&v).contains("must be a JSON object"), "{v}");
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_writes_nothing() {
    let s = dev_server().await;
    let big = format!("{{\"v\":\"{}\"}}", "a".repeat(33 * 1024 * 1024));
    let (st, v) = s
        .api
        .raw("PUT", "secret/big", Some("root"), Some(big.into_bytes()))
        .await;
    assert_eq!(st, 413);
    assert!(errors(&v).contains("limit is 33554432 bytes"), "{v}");
    let (st, _) = s.api.call("GET", "secret/big", Some("root"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn unknown_path_is_404_with_the_route_named() {
    let s = dev_server().await;
    for p in [
        "nosuchmount/x",
        "sys/nosuch",
        "auth/token/nosuch",
        "auth/approle/login",
    ] {
        let (st, v) = s.api.call("GET", p, Some("root"), None).await;
        assert_eq!(st, 404, "{p}");
        assert!(
            errors(&v).contains(&format!("no handler for route \"{p}\"")),
            "{p}: {v}"
        );
    }
}

#[tokio::test]
async fn wrong_method_is_405() {
    let s = dev_server().await;
    for (m, p) in [
        ("DELETE", "sys/health"),
        ("GET", "sys/unseal"),
        ("PATCH", "sys/mounts"),
        ("GET", "auth/token/create"),
        ("TRACE", "sys/health"),
    ] {
        let (st, v) = s.api.call(m, p, Some("root"), None).await;
        assert_eq!(st, 405, "{m} {p}: {v}");
    }
}

#[tokio::test]
async fn missing_or_invalid_token_is_403() {
    let s = dev_server().await;
    // Each kind of 403 says which it is (never which policies exist).
    let (st, v) = s.api.call("GET", "sys/mounts", None, None).await;
    assert_eq!(st, 403);
    assert_eq!(
        errors(&v),
        "permission denied: no token was sent (X-Vault-Token or Authorization: Bearer)"
    );
    let (st, v) = s
        .api
        .call("GET", "sys/mounts", Some("cst.not-a-token"), None)
        .await;
    assert_eq!(st, 403);
    assert_eq!(
        errors(&v),
        "permission denied: the token is unknown, expired or revoked"
    );
    let (st, _) = s
        .api
        .call("PUT", "secret/x", None, Some(json!({"a": "b"})))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s.api.call("GET", "secret/x", Some("root"), None).await;
    assert_eq!(st, 404, "the refused write left no state");
}

#[tokio::test]
async fn expired_token_is_403() {
    let s = dev_server().await;
    let (st, v) = s
        .api
        .call(
            "POST",
            "auth/token/create",
            Some("root"),
            Some(json!({"ttl": "1s", "policies": ["default"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let t = v["auth"]["client_token"].as_str().unwrap().to_string();
    let (st, _) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (st, v) = s
        .api
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(st, 403, "{v}");
}

#[tokio::test]
async fn policy_with_hcl_syntax_error_is_400_naming_the_line_and_not_stored() {
    let s = dev_server().await;
    let before = policy_count(&s).await;
    let hcl = "path \"secret/*\" {\n  capabilities = [\"read\"]\n}\n\npath \"secret/x\" {\n  capabilities = [\"read\"\n}\n";
    let (st, v) = s
        .api
        .call(
            "PUT",
            "sys/policies/acl/broken",
            Some("root"),
            Some(json!({"policy": hcl})),
        )
        .await;
    assert_eq!(st, 400);
    let msg = errors(&v);
    assert!(msg.contains("line 7"), "{msg}");
    assert_eq!(policy_count(&s).await, before);
    let (st, _) = s
        .api
        .call("GET", "sys/policies/acl/broken", Some("root"), None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn semantically_invalid_policy_is_400() {
    let s = dev_server().await;
    let (st, v) = s
        .api
        .call(
            "PUT",
            "sys/policies/acl/p",
            Some("root"),
            Some(json!({"policy": "path \"a\" { capabilities = [\"fly\"] }"})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(errors(&v).contains("unknown capability"), "{v}");
    let (st, v) = s
        .api
        .call("PUT", "sys/policies/acl/p", Some("root"), Some(json!({})))
        .await;
    assert_eq!(st, 400);
    assert!(errors(&v).contains("\"policy\""), "{v}");
}

/// Sends raw bytes (no client-side URL normalisation) and returns the status line.
async fn raw_http(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn hostile_paths_and_encodings_are_rejected() {
    let s = dev_server().await;
    for p in [
        "secret/../sys/seal",
        "secret/%2e%2e/sys/seal",
        "secret/./x",
        "secret/a%00b",
        "secret/%zz",
    ] {
        let req = format!(
            "PUT /v1/{p} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: root\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{{\"a\":\"b\"}}"
        );
        let status = raw_http(&s.api.base, &req).await;
        assert!(status.contains(" 400 "), "{p}: {status}");
    }
    assert!(
        !s.core.sealed(),
        "a path-traversal must never reach sys/seal"
    );
}

#[tokio::test]
async fn bad_field_types_are_400_and_create_no_token() {
    let s = dev_server().await;
    for body in [
        json!({"ttl": "forever"}),
        json!({"num_uses": -1}),
        json!({"policies": [1]}),
        json!({"renewable": "maybe"}),
        json!({"bogus": 1}),
        json!({"type": "batch"}),
    ] {
        let (st, v) = s
            .api
            .call(
                "POST",
                "auth/token/create",
                Some("root"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    let (st, v) = s
        .api
        .call("LIST", "auth/token/accessors", Some("root"), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["data"]["keys"].as_array().unwrap().len(),
        1,
        "only the root token exists"
    );
}

#[tokio::test]
async fn mount_and_audit_validation() {
    let s = dev_server().await;
    let cases = [
        ("sys/mounts/x", json!({"type": "nonsense"}), "not available"),
        ("sys/mounts/sys", json!({"type": "kv"}), "reserved"),
        ("sys/mounts/secret", json!({"type": "kv"}), "already in use"),
        (
            "sys/mounts/k2",
            json!({"type": "kv", "options": {"version": "2"}}),
            "only version 1",
        ),
        ("sys/audit/f", json!({"type": "syslog"}), "not supported"),
        (
            "sys/audit/f",
            json!({"type": "file"}),
            "file_path is required",
        ),
        (
            "sys/audit/f",
            json!({"type": "file", "options": {"file_path": "/nonexistent-dir/x.log"}}),
            "cannot open audit file",
        ),
    ];
    for (p, b, want) in cases {
        let (st, v) = s.api.call("PUT", p, Some("root"), Some(b)).await;
        assert_eq!(st, 400, "{p}: {v}");
        assert!(errors(&v).contains(want), "{p}: {v}");
    }
    let (_, v) = s.api.call("GET", "sys/audit", Some("root"), None).await;
    assert!(
        v["data"].as_object().unwrap().is_empty(),
        "no device was enabled"
    );
}
