//! The file audit device: HMAC'd secrets, a verifiable chain, and fail-closed behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::dev_server;
use serde_json::{json, Value};

#[tokio::test]
async fn every_request_and_response_is_recorded_with_secrets_hmacd() {
    // Lines: enable test message + enable response + 3 requests x (request + response).
    let s = dev_server().await;
    let log = s.dir.path().join("audit.log");
    let (st, v) = s
        .api
        .call(
            "PUT",
            "sys/audit/file",
            Some("root"),
            Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let canary = "CANARY-audit-9c2e";
    s.api
        .call(
            "PUT",
            "secret/db",
            Some("root"),
            Some(json!({"password": canary})),
        )
        .await;
    let (_, tv) = s
        .api
        .call(
            "POST",
            "auth/token/create",
            Some("root"),
            Some(json!({"policies": ["default"]})),
        )
        .await;
    let child = tv["auth"]["client_token"].as_str().unwrap().to_string();
    s.api.call("GET", "secret/db", Some("root"), None).await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(canary), "secret value logged in clear");
    assert!(!text.contains(&child), "issued token logged in clear");
    assert!(
        !text.contains("\"client_token\":\"root\""),
        "root token logged in clear"
    );
    assert!(text.contains("\"client_token\":\"hmac-sha256:"));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{text}");
    let v = custos_audit::verify(&text).unwrap();
    assert_eq!(v.lines, 8);

    // The HMAC in the log is the one sys/audit-hash computes.
    let (_, h) = s
        .api
        .call(
            "POST",
            "sys/audit-hash/file",
            Some("root"),
            Some(json!({"input": canary})),
        )
        .await;
    let hash = h["data"]["hash"].as_str().unwrap();
    assert!(
        text.contains(hash),
        "HMAC of the secret should appear in the log"
    );
    let write_req = lines
        .iter()
        .find(|l| {
            l["type"] == "request"
                && l["request"]["path"] == "secret/db"
                && l["request"]["operation"] == "create"
        })
        .unwrap();
    assert_eq!(write_req["request"]["data"]["password"], hash);
}

#[tokio::test]
async fn device_that_cannot_write_is_refused_at_enable_and_not_recorded() {
    let s = dev_server().await;
    // /dev/full accepts open() and fails every write with ENOSPC.
    let (st, v) = s
        .api
        .call(
            "PUT",
            "sys/audit/full",
            Some("root"),
            Some(json!({"type": "file", "options": {"file_path": "/dev/full"}})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("failed the test message"),
        "{v}"
    );
    let (_, v) = s.api.call("GET", "sys/audit", Some("root"), None).await;
    assert!(v["data"].as_object().unwrap().is_empty(), "{v}");
    let (st, _) = s
        .api
        .call("PUT", "secret/x", Some("root"), Some(json!({"a": "b"})))
        .await;
    assert_eq!(st, 204, "no device is enabled, so requests proceed");
}

#[tokio::test]
async fn one_working_device_is_enough() {
    let s = dev_server().await;
    let log = s.dir.path().join("ok.log");
    s.api
        .call(
            "PUT",
            "sys/audit/good",
            Some("root"),
            Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
        )
        .await;
    let (st, _) = s
        .api
        .call("PUT", "secret/x", Some("root"), Some(json!({"a": "b"})))
        .await;
    assert_eq!(st, 204);
    let (_, v) = s.api.call("GET", "sys/audit", Some("root"), None).await;
    assert!(v["data"]["good/"].is_object(), "{v}");
}

#[tokio::test]
async fn chain_continues_across_device_reopen() {
    let s = dev_server().await;
    let log = s.dir.path().join("audit.log");
    let body = json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}});
    s.api
        .call("PUT", "sys/audit/a", Some("root"), Some(body.clone()))
        .await;
    s.api.call("GET", "sys/mounts", Some("root"), None).await;
    s.api
        .call("DELETE", "sys/audit/a", Some("root"), None)
        .await;
    s.api
        .call("PUT", "sys/audit/a", Some("root"), Some(body))
        .await;
    s.api.call("GET", "sys/mounts", Some("root"), None).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let v = custos_audit::verify(&text).unwrap();
    assert!(v.lines >= 6, "{text}");
}
