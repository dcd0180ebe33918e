//! Certificate login (`auth/cert`) over a real TLS listener: an NF holding an SBA certificate
//! from Custos's own PKI logs in with nothing else; revoked, foreign, expired-CA and
//! name-mismatched certificates are refused; login endpoints are rate-limited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{ok, openssl, sba_pki, tls_server, Api, SBA_DOMAIN as DOMAIN};
use serde_json::json;

const NF_ID: &str = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64";

/// A PKI mount with an SBA role, the cert method trusting its CA for `urn:uuid:*` names with
/// policy `nf-renew`. Returns the CA PEM.
async fn setup(api: &Api, root: &str) -> String {
    let ca = sba_pki(api, root, "1h").await;
    ok(api, root, "POST", "sys/auth/cert", json!({"type": "cert"})).await;
    ok(api, root, "POST", "auth/cert/certs/nf", json!({"certificate": ca, "allowed_uri_sans": ["urn:uuid:*"], "token_policies": ["nf-renew"], "token_ttl": "10m"})).await;
    ca
}

async fn issue(api: &Api, root: &str) -> (String, Vec<u8>) {
    let v = ok(
        api,
        root,
        "POST",
        "pki/issue/sba",
        json!({"common_name": format!("amf1.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"}),
    )
    .await;
    let d = &v["data"];
    let pem = format!(
        "{}\n{}\n",
        d["certificate"].as_str().unwrap(),
        d["private_key"].as_str().unwrap()
    );
    (
        d["serial_number"].as_str().unwrap().to_string(),
        pem.into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificate_is_refused_and_a_valid_sba_certificate_logs_in() {
    let (r, dir, api, root) = tls_server(tempfile::tempdir().unwrap(), "").await;
    setup(&api, &root).await;
    let (serial, identity) = issue(&api, &root).await;
    let nf = Api::tls(r.addr.port(), dir.path(), Some(&identity));

    let (st, v) = nf
        .call("POST", "auth/cert/login", None, Some(json!({})))
        .await;
    assert_eq!(st, 200, "{v}");
    let auth = &v["auth"];
    assert_eq!(auth["policies"], json!(["default", "nf-renew"]));
    assert_eq!(auth["lease_duration"], 600);
    assert_eq!(auth["metadata"]["nf_instance_id"], NF_ID);
    assert_eq!(auth["metadata"]["serial_number"], serial);
    let tok = auth["client_token"].as_str().unwrap();
    let (st, v) = nf
        .call("GET", "auth/token/lookup-self", Some(tok), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["display_name"], format!("cert-amf1.{DOMAIN}"));

    // Revoked in Custos's own PKI: refused at once (no CRL upload or cache delay).
    ok(
        &api,
        &root,
        "POST",
        "pki/revoke",
        json!({"serial_number": serial}),
    )
    .await;
    let (st, v) = nf
        .call(
            "POST",
            "auth/cert/login",
            Some(""),
            Some(json!({"name": "nf"})),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(v.to_string().contains("revoked"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_unnamed_and_missing_certificates_are_refused_with_the_reason() {
    let (r, dir, api, root) = tls_server(tempfile::tempdir().unwrap(), "").await;
    setup(&api, &root).await;
    let port = r.addr.port();

    // No client certificate: 400 naming what is needed.
    let (st, v) = api
        .call("POST", "auth/cert/login", None, Some(json!({})))
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("no client certificate"), "{v}");

    // A certificate from another CA (the OpenSSL test CA), whatever its names: 403.
    let mut foreign = std::fs::read(dir.path().join("client.pem")).unwrap();
    foreign.extend(std::fs::read(dir.path().join("client.key")).unwrap());
    let (st, v) = Api::tls(port, dir.path(), Some(&foreign))
        .call("POST", "auth/cert/login", None, Some(json!({})))
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v.to_string()
            .contains("not issued by a CA this role trusts"),
        "{v}"
    );

    // Our CA, but the role wants another name pattern.
    ok(
        &api,
        &root,
        "POST",
        "auth/cert/certs/nf",
        json!({"allowed_uri_sans": ["urn:uuid:00000000-*"]}),
    )
    .await;
    let (_, identity) = issue(&api, &root).await;
    let (st, v) = Api::tls(port, dir.path(), Some(&identity))
        .call("POST", "auth/cert/login", None, Some(json!({"name": "nf"})))
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(v.to_string().contains("URI SAN"), "{v}");

    // Unknown role named: 400. Role without a CA: 400 and nothing stored.
    let (st, _) = Api::tls(port, dir.path(), Some(&identity))
        .call(
            "POST",
            "auth/cert/login",
            None,
            Some(json!({"name": "ghost"})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, v) = api
        .call(
            "POST",
            "auth/cert/certs/empty",
            Some(&root),
            Some(json!({"allowed_uri_sans": "x"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = api
        .call("GET", "auth/cert/certs/empty", Some(&root), None)
        .await;
    assert_eq!(st, 404);
    let (st, v) = api
        .call(
            "POST",
            "auth/cert/certs/leafca",
            Some(&root),
            Some(json!({"certificate": String::from_utf8_lossy(&identity)})),
        )
        .await;
    assert_eq!(st, 400, "a leaf is not a CA: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_listed_on_an_uploaded_crl_is_refused() {
    let (r, dir, api, root) = tls_server(tempfile::tempdir().unwrap(), "").await;
    let d = dir.path();
    // The external CA is OpenSSL's test CA; it revokes its client certificate in its own CRL.
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n",
    )
    .unwrap();
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    ok(
        &api,
        &root,
        "POST",
        "sys/auth/cert",
        json!({"type": "cert"}),
    )
    .await;
    ok(
        &api,
        &root,
        "POST",
        "auth/cert/certs/ext",
        json!({"certificate": ca_pem, "token_policies": "ext"}),
    )
    .await;
    let mut id = std::fs::read(d.join("client.pem")).unwrap();
    id.extend(std::fs::read(d.join("client.key")).unwrap());
    let client = Api::tls(r.addr.port(), d, Some(&id));
    let (st, v) = client
        .call("POST", "auth/cert/login", None, Some(json!({})))
        .await;
    assert_eq!(st, 200, "{v}");

    openssl(
        d,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-keyfile",
            "ca.key",
            "-cert",
            "ca.pem",
            "-revoke",
            "client.pem",
        ],
    );
    openssl(
        d,
        &[
            "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-gencrl", "-out",
            "ca.crl",
        ],
    );
    let crl = std::fs::read_to_string(d.join("ca.crl")).unwrap();
    // Garbage is refused and stores nothing.
    let (st, _) = api
        .call(
            "POST",
            "auth/cert/crls/ext",
            Some(&root),
            Some(json!({"crl": "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = api
        .call("GET", "auth/cert/crls/ext", Some(&root), None)
        .await;
    assert_eq!(st, 404);
    ok(
        &api,
        &root,
        "POST",
        "auth/cert/crls/ext",
        json!({"crl": crl}),
    )
    .await;
    let (st, v) = client
        .call("POST", "auth/cert/login", None, Some(json!({})))
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(v.to_string().contains("CRL"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_from_one_source_gets_429_with_retry_after() {
    let (r, dir, api, root) = tls_server(
        tempfile::tempdir().unwrap(),
        "[limits]\nlogin_rate = 1\nlogin_burst = 3\n",
    )
    .await;
    ok(
        &api,
        &root,
        "POST",
        "sys/auth/approle",
        json!({"type": "approle"}),
    )
    .await;
    ok(
        &api,
        &root,
        "POST",
        "auth/approle/role/r",
        json!({"token_policies": "x"}),
    )
    .await;
    let body = json!({"role_id": "not-the-role-id", "secret_id": "guess"});
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            api.call("POST", "auth/approle/login", None, Some(body.clone()))
                .await
                .0,
        );
    }
    assert_eq!(codes, [403, 403, 403, 429, 429]);
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(dir.path().join("ca.pem")).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let resp = c
        .post(format!(
            "https://127.0.0.1:{}/v1/auth/approle/login",
            r.addr.port()
        ))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Another role's bucket is separate.
    let (st, _) = api
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": "other", "secret_id": "x"})),
        )
        .await;
    assert_eq!(st, 403);
}
