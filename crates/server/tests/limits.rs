//! Configured limits: request timeout (a stalled client gets 504, not a held worker) and
//! body size (413), both answered with Vault's JSON error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::config_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "[storage]\nbackend = \"sqlite\"\npath = \"{dir}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[limits]\nrequest_timeout = \"1s\"\nmax_request_bytes = 1024\n";

async fn exchange(addr: std::net::SocketAddr, req: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("server must answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_times_out_with_504() {
    let (r, _dir) = config_server(CONFIG, None).await;
    let started = std::time::Instant::now();
    let resp = exchange(
        r.addr,
        b"PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"secret_",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert!(resp.contains("timed out after 1 seconds"), "{resp}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(
        !r.core.initialized(),
        "the timed-out request changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_body_limit_is_enforced_with_or_without_content_length() {
    let (r, _dir) = config_server(CONFIG, None).await;
    let body = format!(
        "{{\"secret_shares\": 1, \"secret_threshold\": 1, \"pad\": \"{}\"}}",
        "a".repeat(2000)
    );
    let req = format!(
        "PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = exchange(r.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("limit is 1024 bytes"), "{resp}");
    // Chunked, so no Content-Length to check up front: the limit applies while reading.
    let req = format!("PUT /v1/sys/init HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let resp = exchange(r.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(!r.core.initialized());
}
