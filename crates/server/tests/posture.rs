//! The posture report: findings from the PKI (a certificate about to expire; a legacy
//! RSA-1024 CA signed with SHA-1, imported), judged by OpenSSL-made certificates, each with
//! its rule and the object it names; bad input is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{dev_server, ok, openssl};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_names_expiring_certificates_and_weak_legacy_cas() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    for (p, t) in [("pki", "pki"), ("attest", "attest")] {
        ok(
            api,
            root,
            "POST",
            &format!("sys/mounts/{p}"),
            json!({"type": t}),
        )
        .await;
    }
    ok(
        api,
        root,
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "NF CA", "key_type": "ec", "ttl": "8760h"}),
    )
    .await;
    ok(
        api,
        root,
        "POST",
        "pki/roles/short",
        json!({"allow_any_name": true, "key_type": "ec", "ttl": "1h", "max_ttl": "1h"}),
    )
    .await;
    let cert = ok(
        api,
        root,
        "POST",
        "pki/issue/short",
        json!({"common_name": "amf1.example"}),
    )
    .await;
    let serial = cert["data"]["serial_number"].as_str().unwrap().to_string();
    // A legacy trust anchor: RSA-1024, self-signed with SHA-1, as OpenSSL makes it.
    let d = tempfile::tempdir().unwrap();
    openssl(
        d.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-sha1",
            "-nodes",
            "-keyout",
            "legacy.key",
            "-out",
            "legacy.pem",
            "-subj",
            "/CN=legacy CA",
            "-days",
            "3650",
        ],
    );
    let pem = std::fs::read_to_string(d.path().join("legacy.pem")).unwrap();
    let (st, v) = api
        .call(
            "POST",
            "pki/issuers/import/cert",
            Some(root),
            Some(json!({"pem_bundle": pem})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let legacy = v["data"]["imported_issuers"][0]
        .as_str()
        .unwrap()
        .to_string();

    let r = ok(
        api,
        root,
        "GET",
        "attest/posture?expiring_within=30d",
        json!({}),
    )
    .await;
    let findings = r["data"]["findings"].as_array().unwrap().clone();
    let has = |rule: &str, obj: &str| {
        findings
            .iter()
            .any(|f| f["rule"] == rule && f["object"].as_str().unwrap().contains(obj))
    };
    assert!(has("cert.expiring", &serial), "{r}");
    assert!(has("ca.weak_key", &legacy), "{r}");
    assert!(has("ca.weak_signature", &legacy), "{r}");
    // The CA Custos made is not named.
    assert_eq!(r["data"]["counts"]["ca.weak_key"], 1, "{r}");
    // Nothing expires within a second but what already has.
    let r = ok(
        api,
        root,
        "GET",
        "attest/posture?expiring_within=1s",
        json!({}),
    )
    .await;
    assert!(
        !r["data"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "cert.expiring"),
        "{r}"
    );
    // Bad input.
    let (st, v) = api
        .call(
            "GET",
            "attest/posture?expiring_within=soon",
            Some(root),
            None,
        )
        .await;
    assert_eq!(st, 400, "{v}");
}
