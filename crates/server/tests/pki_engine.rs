//! The PKI engine over HTTP, with OpenSSL as the judge of the certificates and CRLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{dev_server, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const DOMAIN: &str = "5gc.mnc001.mcc262.3gppnetwork.org";
const NF_ID: &str = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64";

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn ok(s: &TestServer, m: &str, p: &str, body: Value) -> Value {
    let (st, v) = s.api.call(m, p, Some("root"), Some(body)).await;
    assert!(st == 200 || st == 204, "{m} {p}: {st} {v}");
    v
}

async fn setup(s: &TestServer) -> String {
    ok(
        s,
        "POST",
        "sys/mounts/pki",
        json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
    )
    .await;
    let v = ok(s, "POST", "pki/root/generate/internal", json!({"common_name": "Custos Root CA", "key_type": "ec", "ttl": "87600h", "country": "DE", "organization": DOMAIN})).await;
    let crl_url = format!("{}/v1/pki/crl", s.api.base);
    ok(s, "POST", "pki/config/urls", json!({"crl_distribution_points": [crl_url], "ocsp_servers": [format!("{}/v1/pki/ocsp", s.api.base)]})).await;
    ok(s, "POST", "pki/roles/sba-amf", json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": true, "country": "DE", "organization": DOMAIN, "max_ttl": "720h", "ttl": "24h"})).await;
    v["data"]["certificate"].as_str().unwrap().to_string()
}

async fn cert_count(s: &TestServer) -> usize {
    let (st, v) = s.api.call("LIST", "pki/certs", Some("root"), None).await;
    if st == 404 {
        return 0;
    }
    v["data"]["keys"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sba_issue_produces_every_profile_element_as_openssl_sees_it() {
    let s = dev_server().await;
    let root = setup(&s).await;
    let v = ok(
        &s,
        "POST",
        "pki/issue/sba-amf",
        json!({"common_name": format!("amf1.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"}),
    )
    .await;
    let d = &v["data"];
    for f in [
        "certificate",
        "issuing_ca",
        "ca_chain",
        "private_key",
        "private_key_type",
        "serial_number",
        "expiration",
    ] {
        assert!(!d[f].is_null(), "missing {f}: {v}");
    }
    assert!(
        d["serial_number"].as_str().unwrap().split(':').count() >= 8,
        "serial of at least 64 bits"
    );
    let dir = s.dir.path();
    std::fs::write(dir.join("leaf.pem"), d["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("root.pem"), &root).unwrap();
    let (_, text) = openssl(dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    for want in [
        "X509v3 Subject Alternative Name: critical",
        "URI:urn:uuid:4947a69a-f61b-4bc1-b9da-47c9c5d14b64",
        &format!("DNS:amf1.{DOMAIN}"),
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "X509v3 CRL Distribution Points",
        "Authority Information Access",
        "OCSP - URI:",
        "1.3.6.1.5.5.7.1.34",
        &format!("C = DE, O = {DOMAIN}"),
        "ecdsa-with-SHA256",
    ] {
        assert!(
            text.contains(want),
            "openssl x509 -text lacks {want:?}:\n{text}"
        );
    }
    let (verified, out) = openssl(dir, &["verify", "-CAfile", "root.pem", "leaf.pem"]);
    assert!(verified, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_sign_shape_with_all_string_fields() {
    let s = dev_server().await;
    setup(&s).await;
    ok(&s, "POST", "pki/roles/web", json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "ec", "max_ttl": "2160h"})).await;
    let dir = s.dir.path();
    let (ok_gen, out) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "cm.key",
            "-out",
            "cm.csr",
            "-subj",
            "/CN=app.example.com",
            "-addext",
            "subjectAltName=DNS:app.example.com,DNS:api.example.com",
        ],
    );
    assert!(ok_gen, "{out}");
    let csr = std::fs::read_to_string(dir.join("cm.csr")).unwrap();
    // Exactly what cert-manager's Vault issuer sends: every value a string.
    let body = json!({"common_name": "app.example.com", "alt_names": "app.example.com,api.example.com", "ip_sans": "", "uri_sans": "", "ttl": "2160h", "csr": csr, "exclude_cn_from_sans": "true"});
    let (st, v) = s
        .api
        .call("POST", "pki/sign/web", Some("root"), Some(body))
        .await;
    assert_eq!(st, 200, "{v}");
    for f in ["certificate", "issuing_ca", "ca_chain"] {
        assert!(!v["data"][f].is_null(), "{f}");
    }
    assert!(
        v["data"]["private_key"].is_null(),
        "sign never returns a key"
    );
    std::fs::write(
        dir.join("cm.pem"),
        v["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (_, text) = openssl(dir, &["x509", "-in", "cm.pem", "-noout", "-text", "-dates"]);
    assert!(text.contains("DNS:api.example.com"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_crl_check_accepts_then_rejects_after_revocation() {
    let s = dev_server().await;
    let root = setup(&s).await;
    let v = ok(
        &s,
        "POST",
        "pki/issue/sba-amf",
        json!({"common_name": format!("amf1.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"}),
    )
    .await;
    let serial = v["data"]["serial_number"].as_str().unwrap().to_string();
    let dir = s.dir.path();
    std::fs::write(
        dir.join("leaf.pem"),
        v["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("root.pem"), &root).unwrap();
    let get_crl = |path: std::path::PathBuf| {
        let base = s.api.base.clone();
        async move {
            let r = reqwest::get(format!("{base}/v1/pki/crl/pem"))
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "CRL needs no token");
            std::fs::write(path, r.text().await.unwrap()).unwrap();
        }
    };
    get_crl(dir.join("crl1.pem")).await;
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-CRLfile",
            "crl1.pem",
            "leaf.pem",
        ],
    );
    assert!(good, "valid leaf with a current CRL: {out}");
    let (st, rv) = s
        .api
        .call(
            "POST",
            "pki/revoke",
            Some("root"),
            Some(json!({"serial_number": serial})),
        )
        .await;
    assert_eq!(st, 200, "{rv}");
    assert!(rv["data"]["revocation_time"].as_i64().unwrap() > 0);
    get_crl(dir.join("crl2.pem")).await;
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-CRLfile",
            "crl2.pem",
            "leaf.pem",
        ],
    );
    assert!(
        !good && out.contains("revoked"),
        "revoked leaf must fail: {out}"
    );
    let (_, v) = s
        .api
        .call("LIST", "pki/certs/revoked", Some("root"), None)
        .await;
    assert_eq!(v["data"]["keys"][0], serial.as_str());
    let (st, v) = s
        .api
        .call("GET", &format!("pki/cert/{serial}"), None, None)
        .await;
    assert_eq!(st, 200);
    assert!(v["data"]["revocation_time"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_a_reason_and_store_nothing() {
    let s = dev_server().await;
    setup(&s).await;
    ok(&s, "POST", "pki/roles/web", json!({"allowed_domains": "example.com", "allow_subdomains": true, "allow_wildcard_certificates": false, "key_type": "ec", "allow_ip_sans": true})).await;
    ok(
        &s,
        "POST",
        "pki/roles/rsa",
        json!({"allow_any_name": true, "key_type": "rsa", "key_bits": 2048}),
    )
    .await;
    let dir = s.dir.path();
    let gen = |name: &str, extra: &[&str], key: &[&str]| {
        let mut args = vec!["req", "-new", "-nodes", "-keyout"];
        let kf = format!("{name}.key");
        let cf = format!("{name}.csr");
        args.push(&kf);
        args.push("-out");
        args.push(&cf);
        args.extend_from_slice(key);
        args.extend_from_slice(&["-subj", "/CN=a.example.com"]);
        args.extend_from_slice(extra);
        let (ok, out) = openssl(dir, &args);
        assert!(ok, "{out}");
        std::fs::read_to_string(dir.join(&cf)).unwrap()
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let ca_csr = gen("ca", &["-addext", "basicConstraints=critical,CA:TRUE"], &ec);
    let small_rsa = gen("rsa1024", &[], &["-newkey", "rsa:1024"]);
    let good = gen("good", &[], &ec);
    let bad_sig = {
        let der_b64: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine as _;
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(der_b64)
            .unwrap();
        let n = der.len();
        der[n - 5] ^= 0x42;
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let before = cert_count(&s).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "pki/sign/web",
            json!({"csr": ca_csr, "common_name": "a.example.com"}),
            "CA:TRUE",
        ),
        (
            "pki/sign/web",
            json!({"csr": bad_sig, "common_name": "a.example.com"}),
            "signature does not verify",
        ),
        (
            "pki/sign/rsa",
            json!({"csr": small_rsa, "common_name": "a.example.com"}),
            "at least 2048",
        ),
        (
            "pki/sign/web",
            json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----", "common_name": "a.example.com"}),
            "csr",
        ),
        (
            "pki/issue/web",
            json!({"common_name": "evil.org"}),
            "not allowed",
        ),
        (
            "pki/issue/web",
            json!({"common_name": "*.example.com"}),
            "wildcard",
        ),
        (
            "pki/issue/sba-amf",
            json!({"ip_sans": "10.1.1.1", "nf_instance_id": NF_ID, "nf_type": "AMF"}),
            "IP-only",
        ),
        (
            "pki/issue/sba-amf",
            json!({"common_name": format!("amf.{DOMAIN}"), "nf_type": "AMF"}),
            "nf_instance_id",
        ),
        (
            "pki/issue/sba-amf",
            json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "TOASTER"}),
            "NFType",
        ),
        (
            "pki/issue/sba-amf",
            json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF", "ttl": "30000h"}),
            "3 years",
        ),
        (
            "pki/issue/sba-amf",
            json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": "../../etc", "nf_type": "AMF"}),
            "not a UUID",
        ),
        (
            "pki/issue/nosuchrole",
            json!({"common_name": "a.example.com"}),
            "unknown role",
        ),
        (
            "pki/roles/bad",
            json!({"key_type": "dsa"}),
            "unknown key type",
        ),
        (
            "pki/roles/bad",
            json!({"key_type": "rsa", "key_bits": 1024}),
            "2048",
        ),
        (
            "pki/roles/bad",
            json!({"profile": "3gpp-sba", "country": "DE"}),
            "organization",
        ),
    ];
    for (p, body, want) in cases {
        let (st, v) = s.api.call("POST", p, Some("root"), Some(body)).await;
        assert_eq!(st, 400, "{p}: {v}");
        let msg = v["errors"][0].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(want), "{p}: expected {want:?} in {msg:?}");
    }
    assert_eq!(
        cert_count(&s).await,
        before,
        "no certificate may be stored by a refused request"
    );
    let (st, _) = s.api.call("GET", "pki/roles/bad", Some("root"), None).await;
    assert_eq!(st, 404, "no refused role is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sba_issuance_is_refused_until_a_crl_distribution_point_is_configured() {
    let s = dev_server().await;
    ok(&s, "POST", "sys/mounts/pki", json!({"type": "pki"})).await;
    ok(
        &s,
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "R", "key_type": "ec"}),
    )
    .await;
    ok(&s, "POST", "pki/roles/sba", json!({"profile": "3gpp-sba", "key_type": "ec", "allow_any_name": true, "country": "DE", "organization": DOMAIN})).await;
    let (st, v) = s.api.call("POST", "pki/issue/sba", Some("root"), Some(json!({"common_name": format!("x.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "SMF"}))).await;
    assert_eq!(st, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("cRLDistributionPoints"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_ca_and_crl_but_not_issue() {
    let s = dev_server().await;
    setup(&s).await;
    for p in ["pki/ca/pem", "pki/crl/pem", "pki/crl", "pki/ca"] {
        let r = reqwest::get(format!("{}/v1/{p}", s.api.base))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{p}");
    }
    let (st, _) = s.api.call("LIST", "pki/issuers", None, None).await;
    assert_eq!(st, 200);
    let (st, _) = s
        .api
        .call("POST", "pki/issue/sba-amf", None, Some(json!({})))
        .await;
    assert_eq!(st, 403);
}
