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

/// Root (mount `pki`) signs an SBA intermediate (mount `pki_int`, pathLen 0), which issues
/// SBA leaves. OpenSSL verifies the chain with both CRLs, then refuses the revoked leaf, and
/// completes an mTLS handshake between two issued NF certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_intermediate_leaf_chain_crl_checks_and_mtls_handshake() {
    let s = dev_server().await;
    let root = setup(&s).await;
    ok(
        &s,
        "POST",
        "sys/mounts/pki_int",
        json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}}),
    )
    .await;
    let v = ok(&s, "POST", "pki_int/intermediate/generate/internal", json!({"common_name": "Custos SBA Intermediate", "key_type": "ec", "country": "DE", "organization": DOMAIN})).await;
    let csr = v["data"]["csr"].as_str().unwrap().to_string();
    let v = ok(&s, "POST", "pki/root/sign-intermediate", json!({"csr": csr, "common_name": "Custos SBA Intermediate", "ttl": "43800h", "profile": "3gpp-sba", "country": "DE", "organization": DOMAIN})).await;
    let int_pem = v["data"]["certificate"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["ca_chain"].as_array().unwrap().len(), 2);
    let v = ok(
        &s,
        "POST",
        "pki_int/intermediate/set-signed",
        json!({"certificate": format!("{int_pem}\n{root}")}),
    )
    .await;
    assert_eq!(v["data"]["imported_issuers"].as_array().unwrap().len(), 1);
    ok(
        &s,
        "POST",
        "pki_int/config/urls",
        json!({"crl_distribution_points": [format!("{}/v1/pki_int/crl", s.api.base)]}),
    )
    .await;
    ok(&s, "POST", "pki_int/roles/nf", json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": true, "country": "DE", "organization": DOMAIN, "max_ttl": "720h"})).await;
    let issue = |cn: String, id: &'static str, t: &'static str| {
        let api = s.api.clone();
        async move {
            let (st, v) = api
                .call(
                    "POST",
                    "pki_int/issue/nf",
                    Some("root"),
                    Some(json!({"common_name": cn, "nf_instance_id": id, "nf_type": t})),
                )
                .await;
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    let amf = issue(
        format!("amf1.{DOMAIN}"),
        "4947a69a-f61b-4bc1-b9da-47c9c5d14b64",
        "AMF",
    )
    .await;
    let smf = issue(
        format!("smf1.{DOMAIN}"),
        "0b5f8e5a-1d2c-4e0e-9d8f-3c2b1a0f9e8d",
        "SMF",
    )
    .await;
    let dir = s.dir.path();
    let w = |n: &str, c: &str| std::fs::write(dir.join(n), c).unwrap();
    w("root.pem", &root);
    w("int.pem", &int_pem);
    w("amf.pem", amf["data"]["certificate"].as_str().unwrap());
    w("amf.key", amf["data"]["private_key"].as_str().unwrap());
    w("smf.pem", smf["data"]["certificate"].as_str().unwrap());
    w("smf.key", smf["data"]["private_key"].as_str().unwrap());
    w("chain.pem", &format!("{int_pem}\n{root}\n"));
    let (_, text) = openssl(dir, &["x509", "-in", "int.pem", "-noout", "-text"]);
    assert!(
        text.contains("CA:TRUE, pathlen:0"),
        "SBA intermediate must have pathLen 0:\n{text}"
    );
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    let crls = |name: &'static str| {
        let base = s.api.base.clone();
        let path = dir.join(name);
        async move {
            let mut all = String::new();
            for m in ["pki", "pki_int"] {
                all.push_str(
                    &reqwest::get(format!("{base}/v1/{m}/crl/pem"))
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap(),
                );
                all.push('\n');
            }
            std::fs::write(path, all).unwrap();
        }
    };
    crls("crls1.pem").await;
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "int.pem",
            "-CRLfile",
            "crls1.pem",
            "amf.pem",
        ],
    );
    assert!(
        good,
        "root -> intermediate -> leaf with current CRLs: {out}"
    );

    // mTLS between the two NFs with the issued certificates.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "amf.pem",
            "-key",
            "amf.key",
            "-CAfile",
            "chain.pem",
            "-Verify",
            "2",
            "-verify_return_error",
            "-naccept",
            "2",
            "-quiet",
        ])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut connected = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert!(connected, "s_server did not start");
    let client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "smf.pem",
            "-key",
            "smf.key",
            "-CAfile",
            "chain.pem",
            "-verify_return_error",
            "-servername",
            &format!("amf1.{DOMAIN}"),
            "-verify_hostname",
            &format!("amf1.{DOMAIN}"),
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let out = String::from_utf8_lossy(&client.stdout).to_string()
        + &String::from_utf8_lossy(&client.stderr);
    assert!(
        out.contains("Verify return code: 0 (ok)"),
        "mTLS handshake failed:\n{out}"
    );

    let serial = amf["data"]["serial_number"].as_str().unwrap();
    ok(
        &s,
        "POST",
        "pki_int/revoke",
        json!({"serial_number": serial}),
    )
    .await;
    crls("crls2.pem").await;
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "int.pem",
            "-CRLfile",
            "crls2.pem",
            "amf.pem",
        ],
    );
    assert!(
        !good && out.contains("revoked"),
        "revoked leaf must be refused: {out}"
    );
    let (good, _) = openssl(
        dir,
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "int.pem",
            "-CRLfile",
            "crls2.pem",
            "smf.pem",
        ],
    );
    assert!(good, "the other leaf stays valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidy_removes_expired_certificates_by_index_and_reports_status() {
    let s = dev_server().await;
    setup(&s).await;
    ok(
        &s,
        "POST",
        "pki/roles/short",
        json!({"allow_any_name": true, "key_type": "ec", "not_before_duration": "1s"}),
    )
    .await;
    let mut short = Vec::new();
    for i in 0..5 {
        let v = ok(
            &s,
            "POST",
            "pki/issue/short",
            json!({"common_name": format!("s{i}.example.com"), "ttl": "1s"}),
        )
        .await;
        short.push(v["data"]["serial_number"].as_str().unwrap().to_string());
    }
    ok(&s, "POST", "pki/revoke", json!({"serial_number": short[0]})).await;
    let keep = ok(
        &s,
        "POST",
        "pki/issue/short",
        json!({"common_name": "keep.example.com", "ttl": "1h"}),
    )
    .await;
    let keep = keep["data"]["serial_number"].as_str().unwrap().to_string();
    // Tidy removes a certificate once NotAfter + safety_buffer has passed (strictly, in whole
    // seconds, as Vault does): 1 s of validity + 1 s of buffer, plus a second of rounding.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;

    let (st, v) = s
        .api
        .call("POST", "pki/tidy", Some("root"), Some(json!({})))
        .await;
    assert_eq!(st, 400, "a tidy with nothing to do is refused: {v}");
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/tidy",
            Some("root"),
            Some(
                json!({"tidy_cert_store": true, "tidy_revoked_certs": true, "safety_buffer": "1s"}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let mut status = json!({});
    for _ in 0..100 {
        let (_, v) = s
            .api
            .call("GET", "pki/tidy-status", Some("root"), None)
            .await;
        status = v["data"].clone();
        if status["state"] == "Finished" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status["state"], "Finished", "{status}");
    assert_eq!(status["cert_store_deleted_count"], 4);
    assert_eq!(status["revoked_cert_deleted_count"], 1);
    let (_, v) = s.api.call("LIST", "pki/certs", Some("root"), None).await;
    let keys: Vec<&str> = v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&keep.as_str()), "unexpired certificates stay");
    assert!(
        short.iter().all(|x| !keys.contains(&x.as_str())),
        "expired ones are gone"
    );
    let (st, _) = s
        .api
        .call("LIST", "pki/certs/revoked", Some("root"), None)
        .await;
    assert_eq!(
        st, 404,
        "the tidied revoked entry left the revocation index and the CRL"
    );
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/config/auto-tidy",
            Some("root"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/config/auto-tidy",
            Some("root"),
            Some(json!({"enabled": true, "tidy_cert_store": true, "interval_duration": "1h"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["interval_duration"], 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ocsp_reports_good_then_revoked_with_nonce_and_several_serials() {
    let s = dev_server().await;
    let root = setup(&s).await;
    let dir = s.dir.path();
    std::fs::write(dir.join("root.pem"), &root).unwrap();
    let mut serials = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let v = ok(&s, "POST", "pki/issue/sba-amf", json!({"common_name": format!("amf{i}.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"})).await;
        std::fs::write(
            dir.join(format!("{name}.pem")),
            v["data"]["certificate"].as_str().unwrap(),
        )
        .unwrap();
        serials.push(v["data"]["serial_number"].as_str().unwrap().to_string());
    }
    let url = format!("{}/v1/pki/ocsp", s.api.base);
    let query = |dir: std::path::PathBuf, url: String| {
        tokio::task::spawn_blocking(move || {
            openssl(
                &dir,
                &[
                    "ocsp",
                    "-issuer",
                    "root.pem",
                    "-cert",
                    "a.pem",
                    "-cert",
                    "b.pem",
                    "-url",
                    &url,
                    "-CAfile",
                    "root.pem",
                    "-resp_text",
                ],
            )
        })
    };
    let (okq, out) = query(dir.to_path_buf(), url.clone()).await.unwrap();
    assert!(okq, "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(
        out.contains("a.pem: good") && out.contains("b.pem: good"),
        "{out}"
    );
    assert!(
        out.contains("OCSP Nonce"),
        "nonce must be echoed (RFC 8954): {out}"
    );
    assert!(!out.contains("WARNING: no nonce"), "{out}");

    ok(
        &s,
        "POST",
        "pki/revoke",
        json!({"serial_number": serials[0]}),
    )
    .await;
    let (_, out) = query(dir.to_path_buf(), url.clone()).await.unwrap();
    assert!(
        out.contains("a.pem: revoked") && out.contains("b.pem: good"),
        "{out}"
    );

    // GET form: base64 DER in the path.
    let (okr, out) = openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "root.pem",
            "-cert",
            "b.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    assert!(okr, "{out}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(dir.join("req.der")).unwrap());
    let enc = b64
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let r = reqwest::get(format!("{}/v1/pki/ocsp/{enc}", s.api.base))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/ocsp-response");
    std::fs::write(dir.join("resp.der"), r.bytes().await.unwrap()).unwrap();
    let (_, out) = openssl(
        dir,
        &[
            "ocsp",
            "-respin",
            "resp.der",
            "-issuer",
            "root.pem",
            "-cert",
            "b.pem",
            "-CAfile",
            "root.pem",
            "-no_nonce",
        ],
    );
    assert!(
        out.contains("b.pem: good") && out.contains("Response verify OK"),
        "{out}"
    );

    // Malformed: an OCSP error status, not a crash.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/ocsp-request")
        .body(vec![0x30, 0x03, 0x01, 0x02])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &[0x30, 0x03, 0x0a, 0x01, 0x01],
        "malformedRequest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_management_keys_import_and_cross_sign() {
    let s = dev_server().await;
    setup(&s).await;
    ok(
        &s,
        "POST",
        "pki/roles/web",
        json!({"allow_any_name": true, "key_type": "ec", "max_ttl": "876000h"}),
    )
    .await;
    let (_, v) = s.api.call("LIST", "pki/issuers", None, None).await;
    let iid = v["data"]["keys"][0].as_str().unwrap().to_string();

    // Rename and truncate leaves to the issuer's lifetime.
    let v = ok(
        &s,
        "POST",
        &format!("pki/issuer/{iid}"),
        json!({"issuer_name": "root-2026", "leaf_not_after_behavior": "truncate"}),
    )
    .await;
    assert_eq!(v["data"]["issuer_name"], "root-2026");
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/issue/web",
            Some("root"),
            Some(json!({"common_name": "long.example.com", "ttl": "200000h"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (_, iv) = s.api.call("GET", "pki/issuer/root-2026", None, None).await;
    let issuer_pem = iv["data"]["certificate"].as_str().unwrap().to_string();
    std::fs::write(s.dir.path().join("i.pem"), &issuer_pem).unwrap();
    let (_, ia) = openssl(
        s.dir.path(),
        &["x509", "-in", "i.pem", "-noout", "-enddate"],
    );
    std::fs::write(
        s.dir.path().join("l.pem"),
        v["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (_, la) = openssl(
        s.dir.path(),
        &["x509", "-in", "l.pem", "-noout", "-enddate"],
    );
    assert_eq!(ia, la, "truncate: the leaf ends when its issuer ends");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("truncated"),
        "{v}"
    );

    // Without a token, issuers can be read but not changed.
    let (st, _) = s
        .api
        .call(
            "POST",
            "pki/issuer/root-2026",
            None,
            Some(json!({"issuer_name": "x"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .api
        .call("DELETE", "pki/issuer/root-2026", None, None)
        .await;
    assert_eq!(st, 403);

    // A read-only issuer does not issue.
    ok(
        &s,
        "POST",
        "pki/issuer/root-2026",
        json!({"usage": "read-only,crl-signing,ocsp-signing"}),
    )
    .await;
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/issue/web",
            Some("root"),
            Some(json!({"common_name": "a.example.com"})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("issuing-certificates"),
        "{v}"
    );
    let (st, _) = s
        .api
        .call(
            "POST",
            "pki/issuer/root-2026",
            Some("root"),
            Some(json!({"usage": "sudo"})),
        )
        .await;
    assert_eq!(st, 400);

    // Keys are listed without private material; a key in use cannot be deleted.
    let (_, v) = s.api.call("LIST", "pki/keys", Some("root"), None).await;
    let kid = v["data"]["keys"][0].as_str().unwrap().to_string();
    let (_, v) = s
        .api
        .call("GET", &format!("pki/key/{kid}"), Some("root"), None)
        .await;
    assert!(v.to_string().find("PRIVATE KEY").is_none(), "{v}");
    let (st, _) = s
        .api
        .call("DELETE", &format!("pki/key/{kid}"), Some("root"), None)
        .await;
    assert_eq!(st, 400);

    // Export a CA from one mount and import the bundle into another, which then issues.
    ok(&s, "POST", "sys/mounts/src", json!({"type": "pki"})).await;
    let v = ok(
        &s,
        "POST",
        "src/root/generate/exported",
        // Longer than the leaf below: a root of exactly the mount's maximum TTL races the
        // clock (a leaf issued a second later would outlive it).
        json!({"common_name": "Exported Root", "key_type": "ec", "ttl": "8760h"}),
    )
    .await;
    let bundle = format!(
        "{}\n{}",
        v["data"]["certificate"].as_str().unwrap(),
        v["data"]["private_key"].as_str().unwrap()
    );
    ok(&s, "POST", "sys/mounts/dst", json!({"type": "pki"})).await;
    let v = ok(&s, "POST", "dst/config/ca", json!({"pem_bundle": bundle})).await;
    assert_eq!(v["data"]["imported_issuers"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"]["imported_keys"].as_array().unwrap().len(), 1);
    let v = ok(
        &s,
        "POST",
        "dst/issuers/import/bundle",
        json!({"pem_bundle": bundle}),
    )
    .await;
    assert_eq!(
        v["data"]["existing_issuers"].as_array().unwrap().len(),
        1,
        "re-import is idempotent"
    );
    ok(
        &s,
        "POST",
        "dst/roles/web",
        json!({"allow_any_name": true, "key_type": "ec"}),
    )
    .await;
    let v = ok(
        &s,
        "POST",
        "dst/issue/web",
        json!({"common_name": "imported.example.com"}),
    )
    .await;
    std::fs::write(
        s.dir.path().join("exp.pem"),
        v["data"]["issuing_ca"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        s.dir.path().join("imp.pem"),
        v["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (good, out) = openssl(s.dir.path(), &["verify", "-CAfile", "exp.pem", "imp.pem"]);
    assert!(good, "{out}");

    // Certificate-only import gives a verify-only issuer; keys are refused there; leaves are refused.
    ok(&s, "POST", "sys/mounts/vo", json!({"type": "pki"})).await;
    let (st, v) = s
        .api
        .call(
            "POST",
            "vo/issuers/import/cert",
            Some("root"),
            Some(json!({"pem_bundle": bundle})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let root_only = bundle
        .split("-----BEGIN PRIVATE KEY")
        .next()
        .unwrap()
        .to_string();
    ok(
        &s,
        "POST",
        "vo/issuers/import/cert",
        json!({"pem_bundle": root_only}),
    )
    .await;
    let (st, v) = s.api.call("POST", "vo/config/ca", Some("root"), Some(json!({"pem_bundle": std::fs::read_to_string(s.dir.path().join("imp.pem")).unwrap()}))).await;
    assert_eq!(st, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("only CA certificates"),
        "{v}"
    );
    let (st, _) = s.api.call("POST", "vo/config/ca", Some("root"), Some(json!({"pem_bundle": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"}))).await;
    assert_eq!(st, 400);

    // Cross-sign: a CSR from the existing key.
    let v = ok(
        &s,
        "POST",
        "pki/intermediate/cross-sign",
        json!({"key_ref": kid, "common_name": "Cross"}),
    )
    .await;
    assert!(v["data"]["csr"]
        .as_str()
        .unwrap()
        .contains("CERTIFICATE REQUEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_crl_lists_revocations_since_the_base_and_openssl_uses_it() {
    let s = dev_server().await;
    let root = setup(&s).await;
    let dir = s.dir.path();
    std::fs::write(dir.join("root.pem"), &root).unwrap();
    let (st, v) = s.api.call("GET", "pki/crl/delta", None, None).await;
    assert_eq!(st, 400, "disabled until config/crl enable_delta: {v}");
    ok(&s, "POST", "pki/config/crl", json!({"enable_delta": true})).await;
    let mut leaves = Vec::new();
    for i in 0..3 {
        let v = ok(&s, "POST", "pki/issue/sba-amf", json!({"common_name": format!("amf{i}.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"})).await;
        std::fs::write(
            dir.join(format!("l{i}.pem")),
            v["data"]["certificate"].as_str().unwrap(),
        )
        .unwrap();
        leaves.push(v["data"]["serial_number"].as_str().unwrap().to_string());
    }
    ok(
        &s,
        "POST",
        "pki/revoke",
        json!({"serial_number": leaves[0]}),
    )
    .await;
    // The delta repeats revocations from the base's own second; keep them apart.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let get = |p: &'static str, name: &'static str| {
        let (base, path) = (s.api.base.clone(), dir.join(name));
        async move {
            let r = reqwest::get(format!("{base}/v1/{p}")).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{p}");
            std::fs::write(path, r.text().await.unwrap()).unwrap();
        }
    };
    get("pki/crl/pem", "base.pem").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ok(
        &s,
        "POST",
        "pki/revoke",
        json!({"serial_number": leaves[1]}),
    )
    .await;
    get("pki/crl/delta/pem", "delta.pem").await;
    let (_, text) = openssl(dir, &["crl", "-in", "delta.pem", "-noout", "-text"]);
    assert!(
        text.contains("X509v3 Delta CRL Indicator: critical"),
        "{text}"
    );
    let hex1 = leaves[1].replace(':', "").to_uppercase();
    let hex0 = leaves[0].replace(':', "").to_uppercase();
    let flat = text.replace([' ', '\n'], "").to_uppercase();
    assert!(
        flat.contains(hex1.trim_start_matches('0')),
        "delta lists the new revocation:\n{text}"
    );
    assert!(
        !flat.contains(hex0.trim_start_matches('0')) || hex0.is_empty(),
        "delta omits what the base already has:\n{text}"
    );
    let (_, base_text) = openssl(dir, &["crl", "-in", "base.pem", "-noout", "-text"]);
    let base_no = base_text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let ind = text
        .lines()
        .skip_while(|l| !l.contains("Delta CRL Indicator"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(base_no, ind, "the indicator names the base CRL number");
    let (good, out) = openssl(
        dir,
        &["crl", "-in", "delta.pem", "-noout", "-CAfile", "root.pem"],
    );
    assert!(good && out.contains("verify OK"), "{out}");
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-use_deltas",
            "-CAfile",
            "root.pem",
            "-CRLfile",
            "base.pem",
            "-CRLfile",
            "delta.pem",
            "l1.pem",
        ],
    );
    assert!(
        !good && out.contains("revoked"),
        "base + delta must reject the newly revoked leaf: {out}"
    );
    let (good, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-use_deltas",
            "-CAfile",
            "root.pem",
            "-CRLfile",
            "base.pem",
            "-CRLfile",
            "delta.pem",
            "l2.pem",
        ],
    );
    assert!(good, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_issues_and_openssl_verifies() {
    let s = dev_server().await;
    let dir = s.dir.path();
    for (i, (kt, bits, alg)) in [
        ("ec", 256, "ecdsa-with-SHA256"),
        ("ec", 384, "ecdsa-with-SHA384"),
        ("ed25519", 0, "ED25519"),
        ("rsa", 2048, "sha256WithRSAEncryption"),
    ]
    .iter()
    .enumerate()
    {
        let mnt = format!("k{i}");
        ok(
            &s,
            "POST",
            &format!("sys/mounts/{mnt}"),
            json!({"type": "pki"}),
        )
        .await;
        let v = ok(
            &s,
            "POST",
            &format!("{mnt}/root/generate/internal"),
            json!({"common_name": format!("{kt} root"), "key_type": kt, "key_bits": bits}),
        )
        .await;
        std::fs::write(
            dir.join("r.pem"),
            v["data"]["certificate"].as_str().unwrap(),
        )
        .unwrap();
        ok(
            &s,
            "POST",
            &format!("{mnt}/roles/r"),
            json!({"allow_any_name": true, "key_type": kt, "key_bits": bits}),
        )
        .await;
        let v = ok(
            &s,
            "POST",
            &format!("{mnt}/issue/r"),
            // RSA keygen can take a second: a leaf with the root's own default TTL would
            // outlive the root, which the issuer's "err" behaviour correctly refuses.
            json!({"common_name": "x.example.com", "ttl": "1h"}),
        )
        .await;
        assert_eq!(v["data"]["private_key_type"], *kt);
        std::fs::write(
            dir.join("l.pem"),
            v["data"]["certificate"].as_str().unwrap(),
        )
        .unwrap();
        let (good, out) = openssl(dir, &["verify", "-CAfile", "r.pem", "l.pem"]);
        assert!(good, "{kt}/{bits}: {out}");
        let (_, text) = openssl(dir, &["x509", "-in", "l.pem", "-noout", "-text"]);
        assert!(text.contains(alg), "{kt}/{bits}: expected {alg}");
        // The CRL and the OCSP responses this issuer signs verify too, for every key type.
        let (st, crl) = s
            .api
            .raw("GET", &format!("{mnt}/crl/pem"), None, None)
            .await;
        assert_eq!(st, 200);
        std::fs::write(dir.join("c.pem"), crl.as_str().unwrap()).unwrap();
        let (good, out) = openssl(dir, &["crl", "-in", "c.pem", "-CAfile", "r.pem", "-noout"]);
        assert!(good && out.contains("verify OK"), "{kt}/{bits} CRL: {out}");
        let url = format!("{}/v1/{mnt}/ocsp", s.api.base);
        let d = dir.to_path_buf();
        let (good, out) = tokio::task::spawn_blocking(move || {
            openssl(
                &d,
                &[
                    "ocsp",
                    "-issuer",
                    "r.pem",
                    "-cert",
                    "l.pem",
                    "-url",
                    &url,
                    "-CAfile",
                    "r.pem",
                    "-resp_text",
                ],
            )
        })
        .await
        .unwrap();
        assert!(good, "{kt}/{bits} OCSP: {out}");
        assert!(
            out.contains("Response verify OK"),
            "{kt}/{bits} OCSP: {out}"
        );
        assert!(out.contains("l.pem: good"), "{kt}/{bits} OCSP: {out}");
        assert!(
            out.contains(alg),
            "{kt}/{bits} OCSP signed with {alg}: {out}"
        );
    }
    // Managed keys: generate, import, names unique, private key only when exported.
    ok(&s, "POST", "sys/mounts/km", json!({"type": "pki"})).await;
    let v = ok(
        &s,
        "POST",
        "km/keys/generate/internal",
        json!({"key_type": "ec", "key_name": "k1"}),
    )
    .await;
    assert!(v["data"]["private_key"].is_null());
    let v = ok(
        &s,
        "POST",
        "km/keys/generate/exported",
        json!({"key_type": "ec", "key_bits": 384}),
    )
    .await;
    let exported = v["data"]["private_key"].as_str().unwrap().to_string();
    let (st, _) = s
        .api
        .call(
            "POST",
            "km/keys/generate/internal",
            Some("root"),
            Some(json!({"key_type": "ec", "key_name": "k1"})),
        )
        .await;
    assert_eq!(st, 400, "duplicate key name");
    ok(&s, "POST", "sys/mounts/km2", json!({"type": "pki"})).await;
    let v = ok(
        &s,
        "POST",
        "km2/keys/import",
        json!({"pem_bundle": exported, "key_name": "imported"}),
    )
    .await;
    assert_eq!(v["data"]["key_type"], "ec");
    let (st, _) = s.api.call("POST", "km2/keys/import", Some("root"), Some(json!({"pem_bundle": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}))).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .api
        .call(
            "POST",
            "km/keys/generate/internal",
            Some("root"),
            Some(json!({"key_type": "dsa"})),
        )
        .await;
    assert_eq!(st, 400);
}

/// Roles and URL settings are cached parsed on the issue path: a change must apply at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_url_changes_apply_to_the_next_request() {
    let s = dev_server().await;
    setup(&s).await;
    ok(
        &s,
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "ec"}),
    )
    .await;
    ok(
        &s,
        "POST",
        "pki/issue/web",
        json!({"common_name": "a.example.com"}),
    )
    .await;
    ok(
        &s,
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "example.org"}),
    )
    .await;
    let (st, v) = s
        .api
        .call(
            "POST",
            "pki/issue/web",
            Some("root"),
            Some(json!({"common_name": "a.example.com"})),
        )
        .await;
    assert_eq!(st, 400, "the narrowed role must apply immediately: {v}");
    ok(
        &s,
        "POST",
        "pki/issue/web",
        json!({"common_name": "a.example.org"}),
    )
    .await;
    ok(&s, "DELETE", "pki/roles/web", json!({})).await;
    let (st, _) = s
        .api
        .call(
            "POST",
            "pki/issue/web",
            Some("root"),
            Some(json!({"common_name": "a.example.org"})),
        )
        .await;
    assert_eq!(st, 400, "a deleted role is gone at once");
    ok(
        &s,
        "POST",
        "pki/config/urls",
        json!({"crl_distribution_points": ["http://new.example/crl"]}),
    )
    .await;
    let v = ok(
        &s,
        "POST",
        "pki/issue/sba-amf",
        json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"}),
    )
    .await;
    std::fs::write(
        s.dir.path().join("u.pem"),
        v["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (_, text) = openssl(s.dir.path(), &["x509", "-in", "u.pem", "-noout", "-text"]);
    assert!(
        text.contains("http://new.example/crl"),
        "new CRL URL must be used at once:\n{text}"
    );
}

/// Vault's `issuer/:ref/revoke`: a compromised intermediate stops issuing at once, lands on
/// the CRL of the issuer that signed it (OpenSSL then rejects its leaves), keeps signing its
/// own CRL, and can never regain the issuing usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_issuer_stops_issuing_and_is_listed_on_its_signers_crl() {
    let s = dev_server().await;
    let root = setup(&s).await;
    let v = ok(&s, "POST", "pki/issuers/generate/intermediate/internal", json!({"common_name": "Custos SBA Intermediate", "key_type": "ec", "country": "DE", "organization": DOMAIN})).await;
    let csr = v["data"]["csr"].as_str().unwrap().to_string();
    let v = ok(&s, "POST", "pki/root/sign-intermediate", json!({"csr": csr, "common_name": "Custos SBA Intermediate", "ttl": "43800h", "profile": "3gpp-sba", "country": "DE", "organization": DOMAIN})).await;
    let int_pem = v["data"]["certificate"].as_str().unwrap().to_string();
    let v = ok(
        &s,
        "POST",
        "pki/intermediate/set-signed",
        json!({"certificate": int_pem}),
    )
    .await;
    let int_id = v["data"]["imported_issuers"][0]
        .as_str()
        .unwrap()
        .to_string();
    ok(&s, "POST", "pki/roles/via-int", json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": true, "country": "DE", "organization": DOMAIN, "max_ttl": "720h", "issuer_ref": int_id})).await;
    let req =
        json!({"common_name": format!("amf.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"});
    let leaf = ok(&s, "POST", "pki/issue/via-int", req.clone()).await["data"]["certificate"]
        .as_str()
        .unwrap()
        .to_string();

    // Unknown issuer: 404, nothing changes.
    let (st, _) = s
        .api
        .call(
            "POST",
            "pki/issuer/no-such-issuer/revoke",
            Some("root"),
            None,
        )
        .await;
    assert_eq!(st, 404);

    let v = ok(
        &s,
        "POST",
        &format!("pki/issuer/{int_id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["revoked"], true, "{v}");
    let t = v["data"]["revocation_time"].as_i64().unwrap();
    assert!(t > 0);
    let usage = v["data"]["usage"].as_str().unwrap();
    assert!(!usage.contains("issuing-certificates"), "{usage}");
    assert!(usage.contains("crl-signing"), "{usage}");

    // It issues nothing more, with the reason.
    let certs_before = cert_count(&s).await;
    let (st, v) = s
        .api
        .call("POST", "pki/issue/via-int", Some("root"), Some(req))
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("revoked"), "{v}");
    assert_eq!(cert_count(&s).await, certs_before);

    // Repeating the call changes nothing; the issuing usage cannot come back.
    let v = ok(
        &s,
        "POST",
        &format!("pki/issuer/{int_id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["revocation_time"].as_i64().unwrap(), t);
    let (st, v) = s
        .api
        .call(
            "POST",
            &format!("pki/issuer/{int_id}"),
            Some("root"),
            Some(json!({"usage": "read-only,issuing-certificates,crl-signing"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");

    // OpenSSL: the root's CRL lists the intermediate, so its leaf no longer verifies.
    let dir = tempfile::tempdir().unwrap();
    let get = |p: String| {
        let api = s.api.clone();
        async move {
            let (st, body) = api.raw("GET", &p, None, None).await;
            assert_eq!(st, 200, "{p}");
            body.as_str().unwrap().to_string()
        }
    };
    let root_crl = get("pki/issuer/default/crl/pem".into()).await;
    let int_crl = get(format!("pki/issuer/{int_id}/crl/pem")).await;
    std::fs::write(dir.path().join("root.pem"), &root).unwrap();
    std::fs::write(dir.path().join("int.pem"), &int_pem).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &leaf).unwrap();
    std::fs::write(
        dir.path().join("crls.pem"),
        format!("{root_crl}\n{int_crl}"),
    )
    .unwrap();
    let (_, text) = openssl(dir.path(), &["crl", "-in", "crls.pem", "-noout", "-text"]);
    let (_, int_serial) = openssl(dir.path(), &["x509", "-in", "int.pem", "-noout", "-serial"]);
    let int_serial = int_serial.trim().trim_start_matches("serial=").to_string();
    assert!(
        text.contains(&int_serial),
        "{int_serial} not on the root CRL:\n{text}"
    );
    let (verified, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "int.pem",
            "-CRLfile",
            "crls.pem",
            "leaf.pem",
        ],
    );
    assert!(!verified, "{out}");
    assert!(out.contains("revoked"), "{out}");
}

/// Revocation writes the certificate row and its log entry and nothing else: a CRL is built
/// when it is fetched stale (or by the minute tick), once per change however many fetch it
/// at the same moment, and served from the cache until the next revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_are_built_off_the_revocation_path_once_per_change_however_many_fetch() {
    use x509_parser::prelude::*;
    let s = dev_server().await;
    setup(&s).await;
    let mut serials = Vec::new();
    for i in 0..3 {
        let v = ok(
            &s,
            "POST",
            "pki/issue/sba-amf",
            json!({"common_name": format!("amf{i}.{DOMAIN}"), "nf_instance_id": NF_ID, "nf_type": "AMF"}),
        )
        .await;
        serials.push(v["data"]["serial_number"].as_str().unwrap().to_string());
    }
    let base = s.api.base.clone();
    let fetch = move || {
        let base = base.clone();
        async move {
            let r = reqwest::get(format!("{base}/v1/pki/crl")).await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().to_vec()
        }
    };
    let number_and_len = |der: &[u8]| {
        let (_, crl) = CertificateRevocationList::from_der(der).unwrap();
        (
            crl.crl_number().unwrap().to_u64_digits()[0],
            crl.iter_revoked_certificates().count(),
        )
    };
    let (n0, len0) = number_and_len(&fetch().await);
    assert_eq!(len0, 0);
    for serial in &serials[..2] {
        ok(&s, "POST", "pki/revoke", json!({"serial_number": serial})).await;
    }
    // Two revocations built nothing: the next fetch builds one CRL (number + 1) with both.
    assert_eq!(number_and_len(&fetch().await), (n0 + 1, 2));
    ok(
        &s,
        "POST",
        "pki/revoke",
        json!({"serial_number": serials[2]}),
    )
    .await;
    let mut fetches = Vec::new();
    for _ in 0..16 {
        fetches.push(tokio::spawn(fetch()));
    }
    let mut bodies = Vec::new();
    for f in fetches {
        bodies.push(f.await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "one build, shared");
    assert_eq!(number_and_len(&bodies[0]), (n0 + 2, 3));
    assert_eq!(
        fetch().await,
        bodies[0],
        "served from the cache until a change"
    );
}
