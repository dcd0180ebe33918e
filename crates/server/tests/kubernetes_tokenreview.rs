//! Kubernetes login through the TokenReview API when only `kubernetes_host` is configured.
//! The API server here is a stand-in that implements `authentication.k8s.io/v1` TokenReview
//! for a fixed set of tokens, checks the reviewer's bearer credential and echoes audiences,
//! as kube-apiserver does; it records every review so the test can see what Custos sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const REVIEWER: &str = "reviewer-token";

async fn apiserver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        axum::routing::post(move |h: HeaderMap, Json(body): Json<Value>| {
            let seen = s2.clone();
            async move {
                if h.get("authorization").and_then(|v| v.to_str().ok())
                    != Some(&format!("Bearer {REVIEWER}"))
                {
                    return (StatusCode::FORBIDDEN, Json(json!({"kind": "Status", "code": 403})));
                }
                seen.lock().unwrap().push(body.clone());
                let token = body["spec"]["token"].as_str().unwrap_or("");
                let auds = body["spec"]["audiences"].clone();
                let status = match token {
                    "amf-token" => json!({"authenticated": true, "user": {"username": "system:serviceaccount:5gc:amf", "uid": "u-1"}, "audiences": auds}),
                    "smf-token" => json!({"authenticated": true, "user": {"username": "system:serviceaccount:5gc:smf", "uid": "u-2"}, "audiences": auds}),
                    "human-token" => json!({"authenticated": true, "user": {"username": "alice"}, "audiences": auds}),
                    "wrong-aud" => json!({"authenticated": true, "user": {"username": "system:serviceaccount:5gc:amf"}, "audiences": ["other"]}),
                    _ => json!({"authenticated": false, "error": "invalid bearer token"}),
                };
                (StatusCode::CREATED, Json(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenreview_login_binds_service_account_namespace_and_audience() {
    let s = custos_testkit::dev_server().await;
    let api = &s.api;
    let (host, seen) = apiserver().await;
    let call = |p: &'static str, b: Value| api.call("POST", p, Some("root"), Some(b));
    assert_eq!(
        call("sys/auth/kubernetes", json!({"type": "kubernetes"}))
            .await
            .0,
        204
    );
    let (st, v) = call(
        "auth/kubernetes/config",
        json!({"kubernetes_host": host, "token_reviewer_jwt": REVIEWER}),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = call("auth/kubernetes/role/amf", json!({"bound_service_account_names": "amf", "bound_service_account_namespaces": "5gc", "audience": "custos", "token_policies": "nf"})).await;
    assert_eq!(st, 204, "{v}");
    let login = |jwt: &str| {
        api.call(
            "POST",
            "auth/kubernetes/login",
            None,
            Some(json!({"role": "amf", "jwt": jwt})),
        )
    };

    let (st, v) = login("amf-token").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["auth"]["metadata"]["service_account_name"], "amf");
    assert_eq!(v["auth"]["metadata"]["service_account_uid"], "u-1");
    assert!(v["auth"]["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("nf")));
    let review = seen.lock().unwrap()[0].clone();
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(review["spec"]["audiences"], json!(["custos"]));

    for (jwt, why) in [
        ("smf-token", "service account"),
        ("human-token", "not a service account"),
        ("wrong-aud", "audience"),
        ("forged", "rejected the token"),
    ] {
        let (st, v) = login(jwt).await;
        assert_eq!(st, 403, "{jwt}: {v}");
        assert!(v.to_string().contains(why), "{jwt}: {v}");
    }

    // A reviewer credential the API server refuses: 403 naming TokenReview, never a token.
    call(
        "auth/kubernetes/config",
        json!({"kubernetes_host": host, "token_reviewer_jwt": "stale"}),
    )
    .await;
    let (st, v) = login("amf-token").await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v.to_string().contains("TokenReview") && !v.to_string().contains("stale"),
        "{v}"
    );
    // API server unreachable: 403 with the reason.
    call(
        "auth/kubernetes/config",
        json!({"kubernetes_host": "http://127.0.0.1:1"}),
    )
    .await;
    let (st, _) = login("amf-token").await;
    assert_eq!(st, 403);
}
