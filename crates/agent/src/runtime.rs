//! The running agent: one login task, one task per certificate block, a health endpoint.

use crate::config::{AgentConfig, AuthMethod, CertConfig, Operation};
use crate::metrics::BlockMetrics;
pub use crate::metrics::Metrics;
use crate::render::{self, Material};
use crate::schedule::{random_unit, stagger_slot, Backoff, Plan};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use zeroize::Zeroizing;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad TLS material or client set-up.
    #[error("{0}")]
    Setup(String),
    /// The health listener could not bind.
    #[error("health.address {0}: {1}")]
    Health(SocketAddr, std::io::Error),
    /// `exit_after_render`: a certificate could not be rendered.
    #[error("{0}")]
    NotRendered(String),
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What went wrong talking to Custos.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Network, TLS or 5xx: retry with backoff.
    Unreachable(String),
    /// 403: the token is no longer good; log in again.
    Denied(String),
    /// Another 4xx: the request itself is refused (role, names, TTL); retry with backoff
    /// too, as an operator may fix the role, but it is logged as a configuration problem.
    Refused(u16, String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "Custos unreachable: {m}"),
            CallError::Denied(m) => write!(f, "permission denied: {m}"),
            CallError::Refused(s, m) => write!(f, "refused ({s}): {m}"),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: AgentConfig,
    pub(crate) http: reqwest::Client,
    token: watch::Sender<Option<Arc<Zeroizing<String>>>>,
    pub(crate) relogin: Notify,
    pub(crate) metrics: Metrics,
    /// `POST /attest` at the health address: attest now.
    pub(crate) attest_now: Arc<Notify>,
    /// Moved when certificates must check their revocation now (a quarantine verdict).
    pub(crate) recheck: watch::Sender<u64>,
}

fn client(
    cfg: &AgentConfig,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.server.timeout)
        .connect_timeout(cfg.server.timeout)
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(ca) = &cfg.server.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("server.ca_cert {ca:?}: {e}"))?;
        let c = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("server.ca_cert {ca:?}: {e}"))?;
        b = b.tls_certs_only([c]);
    }
    if let Some(i) = identity {
        b = b.identity(i);
    }
    b.build().map_err(|e| {
        let mut m = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            m.push_str(&format!(": {s}"));
            src = s.source();
        }
        m
    })
}

pub(crate) fn errors_of(v: &Value) -> String {
    v.get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value, CallError> {
    let mut rb = http.post(format!("{base}/v1/{path}")).json(body);
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    let r = rb
        .send()
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let status = r.status().as_u16();
    let v: Value = r
        .json()
        .await
        .map_err(|e| CallError::Unreachable(format!("HTTP {status}: {e}")))?;
    classify(status, v)
}

/// A Custos answer by status: success, a stale token (403), an outage (5xx, 429: retry with
/// backoff), or a refusal of the request as configured (another 4xx).
pub(crate) fn classify(status: u16, v: Value) -> Result<Value, CallError> {
    match status {
        200..=299 => Ok(v),
        // A quarantined device: no new token fixes it, only an operator's release.
        403 if errors_of(&v).contains("quarantined: ") => {
            Err(CallError::Refused(403, errors_of(&v)))
        }
        403 => Err(CallError::Denied(errors_of(&v))),
        500..=599 | 429 => Err(CallError::Unreachable(format!(
            "HTTP {status}: {}",
            errors_of(&v)
        ))),
        s => Err(CallError::Refused(s, errors_of(&v))),
    }
}

fn read_secret(p: &std::path::Path) -> Result<Zeroizing<String>, CallError> {
    let s = Zeroizing::new(
        std::fs::read_to_string(p)
            .map_err(|e| CallError::Refused(0, format!("reading {p:?}: {e}")))?,
    );
    Ok(Zeroizing::new(s.trim().to_string()))
}

/// One login. Returns the token and its lease (0: no expiry).
async fn login(s: &Shared) -> Result<(Zeroizing<String>, u64), CallError> {
    let a = &s.cfg.auth;
    let base = &s.cfg.server.address;
    let path = format!("auth/{}/login", a.mount_path);
    let mut body = Map::new();
    let mut http = s.http.clone();
    match &a.method {
        AuthMethod::Token { token_file } => return Ok((read_secret(token_file)?, 0)),
        AuthMethod::AppRole {
            role_id_file,
            secret_id_file,
        } => {
            body.insert("role_id".into(), json!(read_secret(role_id_file)?.as_str()));
            if let Some(f) = secret_id_file {
                body.insert("secret_id".into(), json!(read_secret(f)?.as_str()));
            }
        }
        AuthMethod::Jwt { role, jwt_file } => {
            body.insert("role".into(), json!(role));
            body.insert("jwt".into(), json!(read_secret(jwt_file)?.as_str()));
        }
        AuthMethod::Cert {
            role,
            cert_file,
            key_file,
        } => {
            if let Some(r) = role {
                body.insert("name".into(), json!(r));
            }
            let mut pem = Zeroizing::new(
                std::fs::read(cert_file)
                    .map_err(|e| CallError::Refused(0, format!("reading {cert_file:?}: {e}")))?,
            );
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key_file)
                    .map_err(|e| CallError::Refused(0, format!("reading {key_file:?}: {e}")))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| CallError::Refused(0, format!("client certificate: {e}")))?;
            http = client(&s.cfg, Some(id))
                .map_err(|e| CallError::Refused(0, format!("client certificate: {e}")))?;
        }
    }
    let body = Value::Object(body);
    let v = call(&http, base, &path, None, &body).await?;
    let auth = v.get("auth").cloned().unwrap_or(Value::Null);
    let tok = auth
        .get("client_token")
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::Unreachable("login answer has no auth.client_token".into()))?;
    let ttl = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok((Zeroizing::new(tok.to_string()), ttl))
}

fn write_sink(path: &std::path::Path, mode: u32, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("token")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Logs in, publishes the token, re-logs in at 2/3 of its lease or when a request was
/// denied, with backoff on failure.
/// Logs in and keeps the token fresh until `stop`. With `exit_after_render` a refused login,
/// or [`ONCE_ATTEMPTS`] failed ones, ends it with the error.
async fn auth_task(s: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let mut backoff = Backoff::new(s.cfg.backoff.min, s.cfg.backoff.max);
    let mut failures = 0;
    loop {
        let wait = match login(&s).await {
            Ok((tok, ttl)) => {
                s.metrics.logins.fetch_add(1, Relaxed);
                backoff.reset();
                for (p, mode) in &s.cfg.auth.sinks {
                    if let Err(e) = write_sink(p, *mode, &tok) {
                        tracing::error!(sink = %p.display(), error = %e, "cannot write token sink");
                    }
                }
                tracing::info!(method = %s.cfg.auth.mount_path, lease_secs = ttl, "logged in");
                s.token.send_replace(Some(Arc::new(tok)));
                if ttl == 0 {
                    None
                } else {
                    Some(Duration::from_secs(ttl * 2 / 3).max(Duration::from_secs(1)))
                }
            }
            Err(e) => {
                s.metrics.login_failures.fetch_add(1, Relaxed);
                failures += 1;
                if s.cfg.exit_after_render
                    && (!matches!(e, CallError::Unreachable(_)) || failures >= ONCE_ATTEMPTS)
                {
                    return Err(format!("login at auth/{}: {e}", s.cfg.auth.mount_path));
                }
                let d = backoff.next_delay(random_unit());
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "login failed");
                Some(d)
            }
        };
        let relogin = s.relogin.notified();
        tokio::select! {
            _ = async { match wait { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
            _ = relogin => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// The request body of an issue or sign.
fn request_body(c: &CertConfig, csr: Option<&str>) -> Value {
    let mut b = Map::new();
    let mut put = |k: &str, v: Value| {
        b.insert(k.into(), v);
    };
    if !c.common_name.is_empty() {
        put("common_name", json!(c.common_name));
    }
    if !c.alt_names.is_empty() {
        put("alt_names", json!(c.alt_names.join(",")));
    }
    if !c.ip_sans.is_empty() {
        put("ip_sans", json!(c.ip_sans.join(",")));
    }
    if !c.uri_sans.is_empty() {
        put("uri_sans", json!(c.uri_sans.join(",")));
    }
    if let Some(t) = &c.ttl {
        put("ttl", json!(t));
    }
    if let Some(id) = &c.nf_instance_id {
        put("nf_instance_id", json!(id));
    }
    if let Some(t) = &c.nf_type {
        put("nf_type", json!(t));
    }
    if let Some(csr) = csr {
        put("csr", json!(csr));
    } else {
        put("private_key_format", json!("pkcs8"));
    }
    Value::Object(b)
}

fn local_key(c: &CertConfig) -> Result<rcgen::KeyPair, CallError> {
    let alg = match (c.key_type.as_str(), c.key_bits) {
        ("ec", 384) => &rcgen::PKCS_ECDSA_P384_SHA384,
        ("ed25519", _) => &rcgen::PKCS_ED25519,
        ("rsa", 2048) => &rcgen::PKCS_RSA_SHA256,
        ("rsa", 3072) => &rcgen::PKCS_RSA_SHA384,
        ("rsa", _) => &rcgen::PKCS_RSA_SHA512,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    if c.key_type == "rsa" {
        let size = match c.key_bits {
            2048 => rcgen::RsaKeySize::_2048,
            3072 => rcgen::RsaKeySize::_3072,
            _ => rcgen::RsaKeySize::_4096,
        };
        return rcgen::KeyPair::generate_rsa_for(alg, size)
            .map_err(|e| CallError::Refused(0, format!("generating the key: {e}")));
    }
    rcgen::KeyPair::generate_for(alg)
        .map_err(|e| CallError::Refused(0, format!("generating the key: {e}")))
}

/// Obtains a new certificate for the block.
async fn obtain(s: &Shared, c: &CertConfig, token: &str) -> Result<Material, CallError> {
    let (path, key, csr) = match c.operation {
        Operation::Issue => (format!("{}/issue/{}", c.mount, c.role), None, None),
        Operation::Sign => {
            let k = local_key(c)?;
            let csr = custos_pki::issue::leaf_csr(&c.common_name, &k)
                .map_err(|e| CallError::Refused(0, format!("building the CSR: {e}")))?;
            (format!("{}/sign/{}", c.mount, c.role), Some(k), Some(csr))
        }
    };
    let v = call(
        &s.http,
        &s.cfg.server.address,
        &path,
        Some(token),
        &request_body(c, csr.as_deref()),
    )
    .await?;
    let d = v.get("data").cloned().unwrap_or(Value::Null);
    let field = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
    let cert = field("certificate")
        .ok_or_else(|| CallError::Unreachable("answer has no data.certificate".into()))?;
    let mut chain: Vec<String> = d
        .get("ca_chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if chain.is_empty() {
        chain.extend(field("issuing_ca"));
    }
    let key = match key {
        Some(k) => Zeroizing::new(k.serialize_pem()),
        None => Zeroizing::new(
            field("private_key")
                .ok_or_else(|| CallError::Unreachable("answer has no data.private_key".into()))?,
        ),
    };
    Ok(Material { cert, chain, key })
}

/// Runs the block's command after a render; logs the outcome, kills it at the timeout.
async fn reload(s: &Shared, c: &CertConfig) {
    let Some((prog, args)) = c.command.split_first() else {
        return;
    };
    let start = Instant::now();
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env("CUSTOS_CERT_FILE", &c.cert_file)
        .env("CUSTOS_KEY_FILE", &c.key_file)
        .env("CUSTOS_CERTIFICATE", &c.name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let outcome = match cmd.spawn() {
        Err(e) => Err(format!("cannot start: {e}")),
        Ok(mut child) => match tokio::time::timeout(c.command_timeout, child.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(()),
            Ok(Ok(st)) => Err(format!("exited with {st}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "timed out after {:?} and was killed",
                    c.command_timeout
                ))
            }
        },
    };
    let ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => {
            tracing::info!(certificate = %c.name, command = %prog, ms, "reload command succeeded")
        }
        Err(e) => {
            s.metrics
                .block(&c.name)
                .reload_failures
                .fetch_add(1, Relaxed);
            tracing::error!(certificate = %c.name, command = %prog, ms, error = %e, "reload command failed");
        }
    }
}

/// Waits for a token (or shutdown).
pub(crate) async fn current_token(
    s: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> Option<Arc<Zeroizing<String>>> {
    let mut rx = s.token.subscribe();
    loop {
        if let Some(t) = rx.borrow_and_update().clone() {
            return Some(t);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return None },
            _ = stop.changed() => return None,
        }
    }
}

/// Keeps one certificate block fresh until `stop`. With `exit_after_render` it returns after
/// the first render (or at once when the certificate on disk is not yet due), and an error
/// when Custos refuses the request as configured or after [`ONCE_ATTEMPTS`] failures.
async fn cert_task(
    s: Arc<Shared>,
    c: CertConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let once = s.cfg.exit_after_render;
    let plan = Plan {
        renew_fraction: c.renew_fraction,
        stagger: c.stagger,
        jitter: c.jitter,
    };
    let instance = c
        .nf_instance_id
        .clone()
        .unwrap_or_else(|| format!("{}/{}", c.name, c.common_name));
    let slot = stagger_slot(&instance);
    let m = s.metrics.block(&c.name);
    let mut backoff = Backoff::new(s.cfg.backoff.min, s.cfg.backoff.max);
    let mut current = match render::load_existing(&c, now_unix()) {
        Ok(d) => {
            tracing::info!(certificate = %c.name, serial = %d.serial, not_after = %custos_pki::fields::rfc3339(d.not_after), "reusing the certificate on disk");
            m.not_after.store(d.not_after, Relaxed);
            Some(d)
        }
        Err(e) => {
            tracing::info!(certificate = %c.name, reason = %e, "no reusable certificate on disk; obtaining one");
            None
        }
    };
    let mut next = current
        .as_ref()
        .map(|d| plan.renew_at(d.not_before, d.not_after, slot, random_unit()))
        .unwrap_or(0.0);
    if once && current.is_some() && next > now_unix() as f64 {
        tracing::info!(certificate = %c.name, "the certificate on disk is not yet due for renewal; leaving it");
        return Ok(());
    }
    let mut attempts = 0;
    let mut recheck = s.recheck.subscribe();
    loop {
        let serial = current.as_ref().map(|d| d.serial.clone());
        let due = crate::revocation::wait_due(
            &s,
            &c.name,
            &c.mount,
            serial.as_deref(),
            next,
            &mut recheck,
            &mut stop,
        );
        if !due.await {
            return Ok(());
        }
        let Some(token) = current_token(&s, &mut stop).await else {
            return Ok(());
        };
        // From here to the end of the reload, shutdown waits: a render is never cut short.
        let result = obtain(&s, &c, &token).await;
        match result.and_then(|mat| {
            render::render(&c, &mat)
                .map_err(|e| CallError::Refused(0, format!("rendering files: {e}")))?;
            render::cert_facts(&mat.cert).map_err(|e| CallError::Refused(0, e.to_string()))
        }) {
            Ok(d) => {
                backoff.reset();
                if let Ok(mut e) = m.last_error.lock() {
                    *e = None;
                }
                m.renewals.fetch_add(1, Relaxed);
                m.not_after.store(d.not_after, Relaxed);
                next = plan.renew_at(d.not_before, d.not_after, slot, random_unit());
                tracing::info!(certificate = %c.name, serial = %d.serial, not_after = %custos_pki::fields::rfc3339(d.not_after), renew_in_s = (next - now_unix() as f64).round(), "certificate rendered");
                current = Some(d);
                reload(&s, &c).await;
                if once {
                    return Ok(());
                }
            }
            Err(e) => {
                m.failures.fetch_add(1, Relaxed);
                attempts += 1;
                if once && (matches!(e, CallError::Refused(..)) || attempts >= ONCE_ATTEMPTS) {
                    return Err(format!("certificate {:?}: {e}", c.name));
                }
                if matches!(e, CallError::Denied(_)) {
                    s.token.send_if_modified(|t| {
                        let stale = t.as_ref().is_some_and(|t| Arc::ptr_eq(t, &token));
                        if stale {
                            *t = None;
                        }
                        stale
                    });
                    s.relogin.notify_one();
                }
                // A 4xx other than 403 is the server refusing this request as configured (no
                // such role, a mount without config/urls, names the role does not allow): a
                // configuration error, not an outage. It is named as such, in the log and at
                // /healthz, and retried at the slowest backoff: only an operator fixes it.
                let config_error = matches!(e, CallError::Refused(..));
                let delay = if config_error {
                    s.cfg.backoff.max
                } else {
                    backoff.next_delay(random_unit())
                };
                if let Ok(mut last) = m.last_error.lock() {
                    *last = Some(if config_error {
                        format!("configuration error (not an outage): {e}")
                    } else {
                        e.to_string()
                    });
                }
                next = now_unix() as f64 + delay.as_secs_f64();
                let left = current.as_ref().map(|d| d.not_after - now_unix());
                if config_error && e.to_string().contains("quarantined: ") {
                    tracing::error!(certificate = %c.name, error = %e, retry_in_s = delay.as_secs(), "QUARANTINED: Custos refuses this device certificates until an operator releases it");
                    continue;
                }
                if config_error {
                    tracing::error!(certificate = %c.name, mount = %c.mount, role = %c.role, error = %e, retry_in_s = delay.as_secs(), "configuration error, not an outage: Custos refuses this request as the mount and role are set up (check the role exists and allows these names, and that the mount has config/urls); retrying slowly");
                    continue;
                }
                match left {
                    Some(l) if l <= 0 => {
                        tracing::error!(certificate = %c.name, error = %e, retry_in_s = delay.as_secs(), "renewal failed and the certificate in place HAS EXPIRED; keeping it until a new one arrives")
                    }
                    Some(l)
                        if (l as f64)
                            < plan.window(
                                current.as_ref().map_or(0, |d| d.not_before),
                                current.as_ref().map_or(0, |d| d.not_after),
                            ) / 2.0 =>
                    {
                        tracing::error!(certificate = %c.name, error = %e, expires_in_s = l, retry_in_s = delay.as_secs(), "renewal failing and the certificate expires soon")
                    }
                    _ => {
                        tracing::warn!(certificate = %c.name, error = %e, retry_in_s = delay.as_secs(), "renewal failed; the certificate in place stays")
                    }
                }
            }
        }
    }
}

async fn health(s: Arc<Shared>, l: tokio::net::TcpListener, mut stop: watch::Receiver<bool>) {
    use axum::routing::get;
    let s2 = s.clone();
    let s3 = s.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = s.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        s.metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let s = s2.clone();
                async move {
                    let now = now_unix();
                    let problems = s.metrics.problems(now);
                    let mut body = String::new();
                    let status = if s.metrics.healthy(now) {
                        body.push_str("ok\n");
                        axum::http::StatusCode::OK
                    } else {
                        body.push_str("a certificate is missing or expired\n");
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    for p in problems {
                        body.push_str(&p);
                        body.push('\n');
                    }
                    (status, body)
                }
            }),
        );
    let now = s3.attest_now.clone();
    let app = app.route(
        "/attest",
        axum::routing::post(move || {
            let now = now.clone();
            async move {
                now.notify_one();
                (axum::http::StatusCode::ACCEPTED, "attestation requested\n")
            }
        }),
    );
    let _ = axum::serve(l, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

/// Runs the agent until `shutdown` resolves; then waits for any render and reload command in
/// progress to finish.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let http = client(&cfg, None).map_err(AgentError::Setup)?;
    let metrics = Metrics {
        blocks: cfg
            .certificates
            .iter()
            .map(|c| (c.name.clone(), BlockMetrics::default()))
            .collect(),
        attest_enabled: cfg.attest.is_some(),
        ..Default::default()
    };
    #[cfg(not(feature = "tpm"))]
    if cfg.attest.is_some() {
        return Err(AgentError::Setup(
            "[attest] needs a custos built with TPM support (cargo build --features tpm; libtss2)"
                .into(),
        ));
    }
    let (token, _) = watch::channel(None);
    let s = Arc::new(Shared {
        cfg: cfg.clone(),
        http,
        token,
        relogin: Notify::new(),
        metrics,
        attest_now: Arc::new(Notify::new()),
        recheck: watch::channel(0).0,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    if cfg.exit_after_render {
        return render_once(s, stop_tx, stop_rx).await;
    }
    // A health address that cannot be bound is an error before any work starts.
    let health_l = match cfg.health {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| AgentError::Health(a, e))?,
        ),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let a = auth_task(s.clone(), stop_rx.clone());
    tasks.spawn(async move {
        let _ = a.await;
    });
    for c in &cfg.certificates {
        let t = cert_task(s.clone(), c.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let _ = t.await;
        });
    }
    #[cfg(feature = "tpm")]
    if let Some(a) = cfg.attest.clone() {
        tasks.spawn(crate::attestation::requests(
            s.clone(),
            a.clone(),
            s.attest_now.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(crate::attestation::task(
            s.clone(),
            a,
            s.attest_now.clone(),
            stop_rx.clone(),
        ));
    }
    if let Some(l) = health_l {
        tasks.spawn(health(s.clone(), l, stop_rx.clone()));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let grace = cfg
        .certificates
        .iter()
        .map(|c| c.command_timeout)
        .max()
        .unwrap_or_default()
        + cfg.server.timeout * 2;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Failed attempts (outages, expired logins) before `exit_after_render` gives up on a block.
const ONCE_ATTEMPTS: u32 = 5;

/// How long `exit_after_render` waits in all: a login that keeps failing leaves no block able
/// to try, so this bounds it.
const ONCE_DEADLINE: Duration = Duration::from_secs(120);

/// `exit_after_render`: every block once, then stop; the first failure is the error.
async fn render_once(
    s: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut auth = tokio::spawn(auth_task(s.clone(), stop_rx.clone()));
    let mut blocks = tokio::task::JoinSet::new();
    for c in &s.cfg.certificates {
        blocks.spawn(cert_task(s.clone(), c.clone(), stop_rx.clone()));
    }
    let all = async {
        let mut first_err = None;
        while let Some(r) = blocks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(format!("a certificate task failed: {e}"));
                }
            }
        }
        first_err
    };
    let r = tokio::select! {
        r = tokio::time::timeout(ONCE_DEADLINE, all) => match r {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(AgentError::NotRendered(e)),
            Err(_) => Err(AgentError::NotRendered(format!(
                "not every certificate was rendered within {} s: see the log above",
                ONCE_DEADLINE.as_secs()
            ))),
        },
        a = &mut auth => match a {
            Ok(Err(e)) => Err(AgentError::NotRendered(e)),
            _ => Err(AgentError::NotRendered("the login task ended".into())),
        },
    };
    let _ = stop_tx.send(true);
    auth.abort();
    r
}
