//! A small Vault-protocol HTTP client used by every command.

use serde_json::Value;
use std::time::Duration;

/// CLI errors. Each names the problem; `exit_code` follows the usual convention.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error.
    #[error("{method} {url}: code {status}: {}", if !.errors.is_empty() { .errors.join("; ") } else if *.status == 404 { format!("nothing found at {}", url.split_once("/v1/").map_or(url.as_str(), |(_, p)| p)) } else { "(no error message)".to_string() })]
    Api {
        method: String,
        url: String,
        status: u16,
        errors: Vec<String>,
    },
    /// Transport failure: the underlying cause is named (refused, certificate, protocol).
    #[error("cannot reach {url}: {}", transport_cause(.url, .source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Other(String),
    /// A policy decision said no; the reasons were printed (exit 1).
    #[error("denied by policy")]
    Denied,
}

/// The innermost causes of a transport error, worded for an operator: a refused connection,
/// a certificate the CLI does not trust (and what to set), or plain HTTP sent to a TLS
/// listener.
fn transport_cause(url: &str, e: &reqwest::Error) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !chain.iter().any(|x: &String| x.contains(&t)) {
            chain.push(t);
        }
        cur = c.source();
    }
    let all = chain.join(": ").to_lowercase();
    let hint = if all.contains("connection refused") {
        "connection refused: nothing listens there (is the server running, and is CUSTOS_ADDR's port right?)".to_string()
    } else if all.contains("causedasendentity") {
        "the server's TLS certificate is a CA certificate (basicConstraints CA:TRUE), which TLS refuses as a server's: issue the listener a leaf certificate (CA:FALSE, extendedKeyUsage serverAuth)".to_string()
    } else if all.contains("expired") && all.contains("certificate") {
        "the server's TLS certificate has expired: renew the listener's certificate".to_string()
    } else if all.contains("not valid for name") {
        "the server's TLS certificate does not name this address: use a host name or IP address it was issued for".to_string()
    } else if all.contains("unknownissuer")
        || all.contains("unknown issuer")
        || all.contains("certificate") && all.contains("invalid")
    {
        "the server's TLS certificate is not trusted: set CUSTOS_CACERT (or --cacert) to the CA that signed it".to_string()
    } else if url.starts_with("http://")
        && (all.contains("invalid http version")
            || all.contains("connection closed before message completed")
            || all.contains("invalid") && all.contains("parse"))
    {
        "the server did not answer plain HTTP; it speaks HTTPS: use https:// in CUSTOS_ADDR"
            .to_string()
    } else if url.starts_with("https://")
        && (all.contains("wrong version number")
            || all.contains("invalidcontenttype")
            || all.contains("corrupt message")
            || all.contains("received corrupt message"))
    {
        "the server does not speak TLS there: use http:// in CUSTOS_ADDR".to_string()
    } else if all.contains("timed out") {
        "timed out".to_string()
    } else {
        String::new()
    };
    let detail = chain.last().cloned().unwrap_or_default();
    if hint.is_empty() {
        chain.join(": ")
    } else {
        format!("{hint} ({detail})")
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// Connection settings (from flags or CUSTOS_ADDR / CUSTOS_TOKEN / CUSTOS_CACERT).
#[derive(Clone)]
pub struct Client {
    pub addr: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: &str, token: Option<String>, cacert: Option<&str>) -> CliResult<Self> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(512);
        if let Some(path) = cacert {
            let pem = std::fs::read(path).map_err(|source| CliError::Io {
                what: format!("CUSTOS_CACERT {path}"),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| CliError::Usage(format!("CUSTOS_CACERT {path}: {e}")))?;
            b = b.tls_certs_only([cert]);
        }
        let http = b
            .build()
            .map_err(|e| CliError::Other(format!("cannot build HTTP client: {e}")))?;
        let addr = addr.trim_end_matches('/').to_string();
        if !addr.starts_with("http://") && !addr.starts_with("https://") {
            return Err(CliError::Usage(format!(
                "address {addr:?} must start with http:// or https://"
            )));
        }
        Ok(Client { addr, token, http })
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// Sends a request; returns the JSON body (Null for 204). Errors carry Vault's `errors`.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let (v, _) = self.call_status(method, path, body, false).await?;
        Ok(v)
    }

    /// GETs a raw body (tiles, checkpoints) of at most `limit` bytes; `None` for 404.
    pub async fn get_bytes(&self, path: &str, limit: usize) -> CliResult<Option<Vec<u8>>> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut rb = self.http.get(&url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Vault-Token", t);
        }
        let resp = rb.send().await.map_err(|source| CliError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let body = resp.bytes().await.map_err(|source| CliError::Transport {
            url: url.clone(),
            source,
        })?;
        if status >= 400 {
            return Err(CliError::Api {
                method: "GET".into(),
                url,
                status,
                errors: vec![String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()],
            });
        }
        if body.len() > limit {
            return Err(CliError::Other(format!(
                "GET {url}: the body is larger than {limit} bytes"
            )));
        }
        Ok(Some(body.to_vec()))
    }

    /// Like `call`, but with `allow_any_status` returns non-2xx bodies instead of failing.
    pub async fn call_status(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        allow_any_status: bool,
    ) -> CliResult<(Value, u16)> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| CliError::Usage(format!("bad method {method}")))?;
        let mut rb = self.http.request(m, &url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|source| CliError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| CliError::Transport {
            url: url.clone(),
            source,
        })?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 && !allow_any_status {
            let errors = v
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            return Err(CliError::Api {
                method: method.into(),
                url,
                status,
                errors,
            });
        }
        Ok((v, status))
    }
}
