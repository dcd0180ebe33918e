//! # custos-testkit
//!
//! In-process Custos servers for integration tests, on real storage (SQLite in a temporary
//! directory, or the PostgreSQL named by `CUSTOS_TEST_PG_URL`), and a raw HTTP client that
//! returns status and JSON body without interpreting them.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::sync::Arc;

/// The PostgreSQL URL for tests: `CUSTOS_TEST_PG_URL`, else the local default.
pub fn pg_url() -> String {
    std::env::var("CUSTOS_TEST_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Drops and returns a fresh schema name on the test PostgreSQL.
pub async fn fresh_pg_schema(tag: &str) -> String {
    let schema = format!("custos_it_{tag}_{}", std::process::id());
    let url = pg_url();
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL tests need a server (set CUSTOS_TEST_PG_URL or run scripts/test.sh); {url:?}: {e}")
        });
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    schema
}

/// A raw API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Sends `method path` with an optional token and raw body; returns (status, JSON or Null).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}/v1/{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.raw(
            method,
            path,
            token,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }
}

/// A running in-process server.
pub struct TestServer {
    pub api: Api,
    pub core: Arc<custos_server::Core>,
    pub dir: tempfile::TempDir,
    pub root_token: String,
    pub unseal_key: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A dev-mode server (SQLite, initialised, unsealed, `secret/` KV mount) with root token "root".
pub async fn dev_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let (running, root, share) =
        custos_server::start_dev(dir.path(), "127.0.0.1:0".parse().unwrap(), Some("root"))
            .await
            .unwrap();
    TestServer {
        api: Api::new(&format!("http://{}", running.addr)),
        core: running.core,
        dir,
        root_token: root.to_string(),
        unseal_key: share,
        task: running.task,
    }
}

/// A server started from config text; `{dir}` in the text is replaced by a fresh temp dir.
/// Returns the server (possibly uninitialised and sealed) and the dir.
pub async fn config_server(
    text: &str,
    dir: Option<tempfile::TempDir>,
) -> (custos_server::Running, tempfile::TempDir) {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let text = text.replace("{dir}", &dir.path().display().to_string());
    let cfg = custos_server::Config::parse(&text).unwrap();
    (custos_server::start(&cfg).await.unwrap(), dir)
}
