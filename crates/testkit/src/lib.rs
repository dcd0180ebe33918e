//! # custos-testkit
//!
//! In-process Custos servers for integration tests, on real storage (SQLite in a temporary
//! directory, or the PostgreSQL named by `CUSTOS_TEST_PG_URL`), and a raw HTTP client that
//! returns status and JSON body without interpreting them.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod soft;
pub mod tpm;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
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

/// Runs the OpenSSL CLI in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI is required");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates with the OpenSSL CLI: ca.pem/ca.key, server.pem/server.key (SAN 127.0.0.1),
/// client.pem/client.key (clientAuth, an SBA-style `urn:uuid:` URI SAN).
pub fn openssl_test_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Custos Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    for (name, eku, san) in [
        ("server", "serverAuth", "IP:127.0.0.1"),
        (
            "client",
            "clientAuth",
            "URI:urn:uuid:4947a69a-f61b-4bc1-b9da-47c9c5d14b64",
        ),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName={san}\nextendedKeyUsage={eku}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// A TLS server (SQLite, `tls_client_auth = "request"` with no client CA, so any client
/// certificate reaches the `cert` login method), initialised 1-of-1 and unsealed. TLS
/// material comes from [`openssl_test_pki`] in `dir`. Returns the server, a client that
/// trusts its certificate (`identity`: an optional PEM cert+key to present) and the root token.
pub async fn tls_server(
    dir: tempfile::TempDir,
    extra: &str,
) -> (custos_server::Running, tempfile::TempDir, Api, String) {
    openssl_test_pki(dir.path());
    let cfg = format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{{dir}}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_cert_file = \"{{dir}}/server.pem\"\ntls_key_file = \"{{dir}}/server.key\"\ntls_client_auth = \"request\"\n{extra}"
    );
    let (r, dir) = config_server(&cfg, Some(dir)).await;
    let api = Api::tls(r.addr.port(), dir.path(), None);
    let (st, v) = api
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let key = v["keys"][0].as_str().unwrap().to_string();
    let root = v["root_token"].as_str().unwrap().to_string();
    let (st, v) = api
        .call("PUT", "sys/unseal", None, Some(json!({"key": key})))
        .await;
    assert_eq!(st, 200, "{v}");
    (r, dir, api, root)
}

impl Api {
    /// A client of `https://127.0.0.1:port` trusting `dir/ca.pem`, presenting `identity`
    /// (PEM certificate followed by its key) if given.
    pub fn tls(port: u16, dir: &Path, identity: Option<&[u8]>) -> Self {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .tls_certs_only([ca]);
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem).unwrap());
        }
        Api {
            base: format!("https://127.0.0.1:{port}"),
            http: b.build().unwrap(),
        }
    }
}

/// The SBA domain test certificates use.
pub const SBA_DOMAIN: &str = "5gc.mnc001.mcc262.3gppnetwork.org";

/// Sends a call that must succeed (200 or 204) and returns its body.
pub async fn ok(api: &Api, token: &str, method: &str, path: &str, body: Value) -> Value {
    let (st, v) = api.call(method, path, Some(token), Some(body)).await;
    assert!(st == 200 || st == 204, "{method} {path}: {st} {v}");
    v
}

/// Writes the ACL policy `name` (HCL) and returns a new token that carries only it.
pub async fn policy_token(api: &Api, root: &str, name: &str, hcl: &str) -> String {
    ok(
        api,
        root,
        "PUT",
        &format!("sys/policies/acl/{name}"),
        json!({ "policy": hcl }),
    )
    .await;
    let t = ok(
        api,
        root,
        "POST",
        "auth/token/create",
        json!({"policies": [name]}),
    )
    .await;
    t["auth"]["client_token"].as_str().unwrap().to_string()
}

/// A `pki` mount (max TTL 10 years) with an EC root CA named `cn`; returns its certificate.
pub async fn pki_root(api: &Api, root: &str, cn: &str) -> String {
    ok(
        api,
        root,
        "POST",
        "sys/mounts/pki",
        json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
    )
    .await;
    let v = ok(
        api,
        root,
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": cn, "key_type": "ec", "ttl": "8760h"}),
    )
    .await;
    v["data"]["certificate"].as_str().unwrap().to_string()
}

/// A `pki` mount with an EC root, a CRL distribution point and a `3gpp-sba` role `sba`
/// (certificates of `role_ttl`, not backdated). Returns the CA certificate (PEM).
pub async fn sba_pki(api: &Api, root: &str, role_ttl: &str) -> String {
    let ca = pki_root(api, root, "NF CA").await;
    ok(
        api,
        root,
        "POST",
        "pki/config/urls",
        json!({"crl_distribution_points": [format!("{}/v1/pki/crl", api.base)]}),
    )
    .await;
    ok(api, root, "POST", "pki/roles/sba", json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": SBA_DOMAIN, "allow_subdomains": true, "country": "DE", "organization": SBA_DOMAIN, "ttl": role_ttl, "max_ttl": "1h", "not_before_duration": "0s"})).await;
    ca
}
