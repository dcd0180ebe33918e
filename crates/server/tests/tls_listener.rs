//! TLS listener: rustls with ALPN h2/http1.1, optional and required client certificates.
//! The test PKI is generated with the OpenSSL CLI (a real, independent implementation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::openssl_test_pki as test_pki;
use std::path::Path;

fn config(mode: &str) -> String {
    format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{{dir}}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_cert_file = \"{{dir}}/server.pem\"\ntls_key_file = \"{{dir}}/server.key\"\ntls_client_ca_file = \"{{dir}}/ca.pem\"\ntls_client_auth = \"{mode}\"\n"
    )
}

fn client(dir: &Path, with_cert: bool, h2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    // A bounded wait: a refused TLS 1.3 client certificate can surface only after the
    // client has sent its request, and an answer that never comes must fail, not hang.
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(10));
    if with_cert {
        let mut pem = std::fs::read(dir.join("client.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("client.key")).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    if !h2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http11_with_optional_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    test_pki(dir.path());
    let (r, dir) = custos_testkit::config_server(&config("request"), Some(dir)).await;
    let url = format!("https://127.0.0.1:{}/v1/sys/health", r.addr.port());
    let resp = client(dir.path(), false, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN must select h2"
    );
    assert_eq!(resp.status().as_u16(), 501, "uninitialised server");
    let resp = client(dir.path(), false, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let resp = client(dir.path(), true, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        501,
        "a valid client certificate is accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_refuses_clients_without_one() {
    let dir = tempfile::tempdir().unwrap();
    test_pki(dir.path());
    let (r, dir) = custos_testkit::config_server(&config("require"), Some(dir)).await;
    let url = format!("https://127.0.0.1:{}/v1/sys/health", r.addr.port());
    assert!(
        client(dir.path(), false, true)
            .get(&url)
            .send()
            .await
            .is_err(),
        "handshake without a client certificate must fail"
    );
    let mut last = None;
    for _ in 0..3 {
        match client(dir.path(), true, true).get(&url).send().await {
            Ok(resp) => {
                assert_eq!(resp.status().as_u16(), 501);
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("a client with a certificate was not served: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_h2_prior_knowledge() {
    let s = custos_testkit::dev_server().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .get(format!("{}/v1/sys/health", s.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_material_fails_before_serving_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let text = config("none").replace("{dir}", &dir.path().display().to_string());
    let cfg = custos_server::Config::parse(&text).unwrap();
    let err = custos_server::start(&cfg).await.err().unwrap().to_string();
    assert!(err.contains("listener.tls_cert_file"), "{err}");
}
