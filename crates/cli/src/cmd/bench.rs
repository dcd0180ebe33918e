//! `custos bench`: drives the HTTP API with N concurrent clients and reports ops/s, p50 and
//! p99, next to the machine's own limits measured in the same run:
//! * `fsync` — single-threaded write+fdatasync per second in the data directory: the rate a
//!   store without group commit could acknowledge durable writes at;
//! * `sys/health` — the HTTP stack's ceiling on this machine (no storage, no crypto).

use super::Cli;
use crate::client::{CliError, CliResult, Client};
use crate::output::Format;
use clap::Args;
use serde_json::{json, Value};
use std::io::{Seek, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: super::Conn,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per operation.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Operations to run, comma-separated: health, token-create, lookup-self, kv-write,
    /// kv-read, pki-issue (SBA profile, server keygen, stored), pki-sign (CSR, stored),
    /// login-approle, login-jwt (ES256). Remote servers need `limits.login_rate = 0` to
    /// measure logins beyond the per-source rate limit.
    #[arg(
        long,
        default_value = "health,token-create,lookup-self,pki-issue,pki-sign"
    )]
    pub ops: String,
    /// Bench the server at --address (with --token) instead of an in-process dev server.
    #[arg(long)]
    pub remote: bool,
    /// Directory for the in-process server's database and the fsync probe.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Scale run instead: a server in its own process loaded with --certs certificates,
    /// --revoke of them revoked (p50/p99), a full CRL build, a kill -9 restart (time to
    /// serving, anonymous and file-backed RSS) and the database bytes per certificate.
    /// Prints a run-time estimate after its first 1%; scripts/bench-scale.sh runs 10M.
    #[arg(long)]
    pub scale: bool,
    /// NRF run instead: an in-process server with its SBI listener; --clients AMF stand-ins
    /// request access tokens over mutual TLS with HTTP/2 (connections reused) for --duration.
    #[arg(long)]
    pub nrf: bool,
    /// NRF run: NF profiles registered before the discovery measurement.
    #[arg(long, default_value_t = 10_000)]
    pub profiles: usize,
    /// Transparency-log run instead: durable appends from --clients producers, inclusion
    /// proofs in process and over HTTP, tile and entry-bundle serving.
    #[arg(long)]
    pub tlog: bool,
    /// Attestation run instead: verdicts/s in process, attestations/s over HTTP from
    /// --clients software-TPM devices, and the CPU cost of a 10,000-device fleet.
    #[arg(long)]
    pub attest: bool,
    /// Fleet run instead: enrol and attest --devices software-TPM devices (ECC EKs), then
    /// time fleet lists with filters and counts (p50/p99), the verdict-to-quarantine path
    /// (certificates revoked) under attestation load, and a 1,000-device recall.
    #[arg(long)]
    pub fleet: bool,
    /// Fleet run: devices in the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    /// Scale run: certificates to issue.
    #[arg(long, default_value_t = 1_000_000)]
    pub certs: usize,
    /// Scale run: certificates to revoke.
    #[arg(long, default_value_t = 100_000)]
    pub revoke: usize,
}

struct Outcome {
    op: String,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    total: u64,
}

pub(crate) fn fsync_rate(dir: &std::path::Path, secs: f64) -> CliResult<f64> {
    let p = dir.join("fsync-probe.bin");
    let io = |source| CliError::Io {
        what: format!("fsync probe in {}", dir.display()),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&p)
        .map_err(io)?;
    let buf = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)?;
        n += 1;
    }
    let _ = std::fs::remove_file(&p);
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

const SBA_DOMAIN: &str = "5gc.mnc001.mcc262.3gppnetwork.org";

/// Mounts `bench-pki` with an EC P-256 root and an SBA role; returns a CSR for pki-sign.
async fn setup_pki(c: &Client) -> CliResult<String> {
    let _ = c.call("DELETE", "sys/mounts/bench-pki", None).await;
    c.call(
        "POST",
        "sys/mounts/bench-pki",
        Some(&json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    )
    .await?;
    c.call(
        "POST",
        "bench-pki/root/generate/internal",
        Some(&json!({"common_name": "bench root", "key_type": "ec", "ttl": "87600h"})),
    )
    .await?;
    c.call(
        "POST",
        "bench-pki/config/urls",
        Some(&json!({"crl_distribution_points": [format!("{}/v1/bench-pki/crl", c.addr)]})),
    )
    .await?;
    c.call("POST", "bench-pki/roles/nf", Some(&json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": SBA_DOMAIN, "allow_subdomains": true, "country": "DE", "organization": SBA_DOMAIN, "max_ttl": "720h", "ttl": "24h"}))).await?;
    let key = custos_pki::issue::generate_key(custos_pki::role::KeyType::Ec, 256)
        .map_err(|e| CliError::Other(e.to_string()))?;
    custos_pki::issue::leaf_csr(&format!("amf.{SBA_DOMAIN}"), &key)
        .map_err(|e| CliError::Other(e.to_string()))
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Mounts AppRole at `bench-approle` (role `nf`, unlimited secret ID) and JWT at
/// `bench-jwt` (an ES256 key generated here, role `nf`); returns the AppRole login body and
/// 256 distinct ES256 JWTs (1 h) for the JWT role.
async fn setup_logins(c: &Client) -> CliResult<(Value, Vec<String>)> {
    let other = |e: String| CliError::Other(e);
    for m in ["bench-approle", "bench-jwt"] {
        let _ = c.call("DELETE", &format!("sys/auth/{m}"), None).await;
    }
    c.call(
        "POST",
        "sys/auth/bench-approle",
        Some(&json!({"type": "approle"})),
    )
    .await?;
    c.call(
        "POST",
        "auth/bench-approle/role/nf",
        Some(&json!({"token_policies": "default", "token_ttl": "1h"})),
    )
    .await?;
    let rid = c
        .call("GET", "auth/bench-approle/role/nf/role-id", None)
        .await?;
    let sid = c
        .call(
            "POST",
            "auth/bench-approle/role/nf/secret-id",
            Some(&json!({})),
        )
        .await?;
    let approle = json!({
        "role_id": rid.pointer("/data/role_id").cloned().unwrap_or(Value::Null),
        "secret_id": sid.pointer("/data/secret_id").cloned().unwrap_or(Value::Null),
    });
    let key = custos_pki::issue::generate_key(custos_pki::role::KeyType::Ec, 256)
        .map_err(|e| other(e.to_string()))?;
    c.call("POST", "sys/auth/bench-jwt", Some(&json!({"type": "jwt"})))
        .await?;
    c.call(
        "POST",
        "auth/bench-jwt/config",
        Some(&json!({"jwt_validation_pubkeys": [key.public_key_pem()], "bound_issuer": "https://idp.bench", "jwt_supported_algs": ["ES256"]})),
    )
    .await?;
    c.call(
        "POST",
        "auth/bench-jwt/role/nf",
        Some(&json!({"role_type": "jwt", "bound_audiences": "custos", "user_claim": "sub", "token_policies": "default", "token_ttl": "1h"})),
    )
    .await?;
    let signer = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
    )
    .map_err(|e| other(format!("bench JWT key: {e}")))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let head = b64url(br#"{"alg":"ES256","typ":"JWT","kid":"bench"}"#);
    let mut jwts = Vec::new();
    for i in 0..256 {
        let claims = json!({"iss": "https://idp.bench", "aud": "custos", "sub": format!("nf-{i}"), "iat": now, "nbf": now, "exp": now + 3600});
        let input = format!("{head}.{}", b64url(claims.to_string().as_bytes()));
        let sig = signer
            .sign(&rng, input.as_bytes())
            .map_err(|e| other(format!("signing a bench JWT: {e}")))?;
        jwts.push(format!("{input}.{}", b64url(sig.as_ref())));
    }
    Ok((approle, jwts))
}

/// `openssl speed ecdsap256` (sign/s, verify/s) for one core, if the openssl CLI is present.
pub(crate) fn openssl_ecdsa_rates() -> Option<(f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("ecdsa (nistp256)"))?;
    // "256 bits ecdsa (nistp256)   0.0000s   0.0001s  45000.1  15000.2": sign/s is the
    // second-to-last column.
    let cols: Vec<&str> = line.split_whitespace().collect();
    let sign = cols.get(cols.len().checked_sub(2)?)?.parse().ok()?;
    let verify = cols.last()?.parse().ok()?;
    Some((sign, verify))
}

async fn drive(
    client: &Client,
    op: &str,
    clients: usize,
    dur: Duration,
    tokens: Arc<Vec<String>>,
    csr: Arc<String>,
    logins: Arc<(Value, Vec<String>)>,
) -> CliResult<Outcome> {
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let c = client.clone();
        let op = op.to_string();
        let tokens = tokens.clone();
        let csr = csr.clone();
        let logins = logins.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = match op.as_str() {
                    "health" => c.call("GET", "sys/health", None).await,
                    "token-create" => {
                        c.call(
                            "POST",
                            "auth/token/create",
                            Some(&json!({"policies": ["default"], "ttl": "1h"})),
                        )
                        .await
                    }
                    "lookup-self" => {
                        let t = &tokens[(i + n * clients) % tokens.len().max(1)];
                        c.with_token(t)
                            .call("GET", "auth/token/lookup-self", None)
                            .await
                    }
                    "kv-write" => {
                        c.call(
                            "PUT",
                            &format!("secret/bench/{i}/{n}"),
                            Some(&json!({"value": "x"})),
                        )
                        .await
                    }
                    "kv-read" => {
                        c.call("GET", &format!("secret/bench/{i}/{}", n % 64), None)
                            .await
                    }
                    "pki-issue" => {
                        let body = json!({"common_name": format!("amf{i}.{SBA_DOMAIN}"), "nf_instance_id": "4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "nf_type": "AMF"});
                        c.call("POST", "bench-pki/issue/nf", Some(&body)).await
                    }
                    "login-approle" => {
                        c.call("POST", "auth/bench-approle/login", Some(&logins.0))
                            .await
                    }
                    "login-jwt" => {
                        let jwt = &logins.1[(i + n * clients) % logins.1.len().max(1)];
                        c.call(
                            "POST",
                            "auth/bench-jwt/login",
                            Some(&json!({"role": "nf", "jwt": jwt})),
                        )
                        .await
                    }
                    "pki-sign" => {
                        let body = json!({"csr": csr.as_str(), "common_name": format!("amf.{SBA_DOMAIN}"), "nf_instance_id": "4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "nf_type": "AMF"});
                        c.call("POST", "bench-pki/sign/nf", Some(&body)).await
                    }
                    _ => Ok(Value::Null),
                };
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if r.is_err() {
                    errors += 1;
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t
            .await
            .map_err(|e| CliError::Other(format!("bench task failed: {e}")))?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64().max(dur.as_secs_f64());
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[idx.min(all.len() - 1)] as f64 / 1000.0
    };
    Ok(Outcome {
        op: op.to_string(),
        ops_per_sec: (all.len() as u64 - errors) as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        total: all.len() as u64,
    })
}

pub async fn run(cli: &Cli, a: &BenchArgs) -> CliResult<()> {
    if a.clients == 0 || a.duration == 0 {
        return Err(CliError::Usage(
            "--clients and --duration must be positive".into(),
        ));
    }
    if a.scale {
        return super::bench_scale::run(cli, a).await;
    }
    if a.nrf {
        return super::bench_nrf::run(a).await;
    }
    if a.attest {
        return super::bench_attest::run(a).await;
    }
    if a.fleet {
        return super::bench_fleet::run(a).await;
    }
    if a.tlog {
        return super::bench_tlog::run(a).await;
    }
    let tmp = tempfile::Builder::new()
        .prefix("custos-bench-")
        .tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|source| CliError::Io {
            what: "creating bench dir".into(),
            source,
        })?;
    let (client, _server) = if a.remote {
        (cli.client()?, None)
    } else {
        // Logins are measured at the server's capacity, not at its per-source rate limit.
        let mut cc = custos_server::CoreConfig::default();
        cc.limits.login_rate = 0.0;
        let (running, root, _) = custos_server::start_dev_with(
            tmp.path(),
            "127.0.0.1:0"
                .parse()
                .map_err(|_| CliError::Other("addr".into()))?,
            None,
            cc,
            custos_server::engines::EngineSettings::default(),
        )
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
        let c = Client::new(
            &format!("http://{}", running.addr),
            Some(root.to_string()),
            None,
        )?;
        (c, Some(running))
    };
    let fsync = fsync_rate(tmp.path(), 2.0)?;
    let dur = Duration::from_secs(a.duration);
    let mut tokens = Vec::new();
    let ops: Vec<&str> = a
        .ops
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for op in &ops {
        if ![
            "health",
            "token-create",
            "lookup-self",
            "kv-write",
            "kv-read",
            "pki-issue",
            "pki-sign",
            "login-approle",
            "login-jwt",
        ]
        .contains(op)
        {
            return Err(CliError::Usage(format!("--ops: unknown operation {op:?}")));
        }
    }
    if ops.contains(&"lookup-self") {
        for _ in 0..256 {
            let v = client
                .call(
                    "POST",
                    "auth/token/create",
                    Some(&json!({"policies": ["default"], "ttl": "1h"})),
                )
                .await?;
            if let Some(t) = v.pointer("/auth/client_token").and_then(Value::as_str) {
                tokens.push(t.to_string());
            }
        }
    }
    if ops.contains(&"kv-read") {
        for i in 0..a.clients {
            for n in 0..64 {
                client
                    .call(
                        "PUT",
                        &format!("secret/bench/{i}/{n}"),
                        Some(&json!({"value": "x"})),
                    )
                    .await?;
            }
        }
    }
    let csr = if ops.iter().any(|o| o.starts_with("pki-")) {
        setup_pki(&client).await?
    } else {
        String::new()
    };
    let ecdsa = if ops
        .iter()
        .any(|o| o.starts_with("pki-") || *o == "login-jwt")
    {
        tokio::task::spawn_blocking(openssl_ecdsa_rates)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let logins = if ops.iter().any(|o| o.starts_with("login-")) {
        setup_logins(&client).await?
    } else {
        (Value::Null, Vec::new())
    };
    let logins = Arc::new(logins);
    let csr = Arc::new(csr);
    let tokens = Arc::new(tokens);
    let mut results = Vec::new();
    let mut commit_factor = Vec::new();
    let bar = crate::progress::items(Some(ops.len() as u64), "");
    for op in &ops {
        bar.set_message(format!("{op} for {} s", a.duration));
        let before = _server.as_ref().map(|s| s.core.store_stats());
        results.push(
            drive(
                &client,
                op,
                a.clients,
                dur,
                tokens.clone(),
                csr.clone(),
                logins.clone(),
            )
            .await?,
        );
        if let (Some(b), Some(s)) = (before, _server.as_ref()) {
            let after = s.core.store_stats();
            let txs = after.transactions - b.transactions;
            if txs > 0 {
                commit_factor.push((
                    op.to_string(),
                    (after.writes - b.writes) as f64 / txs as f64,
                    txs,
                ));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let ceiling = results
        .iter()
        .find(|r| r.op == "health")
        .map(|r| r.ops_per_sec);
    if cli.format == Format::Json {
        let rows: Vec<Value> = results.iter().map(|r| json!({
            "op": r.op, "clients": a.clients, "ops_per_sec": r.ops_per_sec, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "errors": r.errors, "requests": r.total,
            "ratio_to_http_ceiling": ceiling.map(|c| r.ops_per_sec / c),
            "ratio_to_fsync_rate": r.ops_per_sec / fsync,
        })).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"fsync_per_sec": fsync, "results": rows}))
                .unwrap_or_default()
        );
        return Ok(());
    }
    outln!(
        "machine limits (same run): fsync+write 4KiB = {fsync:.0}/s in {}",
        tmp.path().display()
    );
    outln!(
        "{:<14} {:>7} {:>10} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "op",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "/ceiling",
        "/fsync"
    );
    for r in &results {
        outln!(
            "{:<14} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>10} {:>10.2}",
            r.op,
            a.clients,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            ceiling
                .map(|c| format!("{:.2}", r.ops_per_sec / c))
                .unwrap_or_else(|| "-".into()),
            r.ops_per_sec / fsync
        );
    }
    if let Some((sign, verify)) = ecdsa {
        for res in results.iter().filter(|r| r.op.starts_with("pki-")) {
            outln!(
                "{}: {:.2} of the 2-core ECDSA P-256 signing limit ({:.0}/s)",
                res.op,
                res.ops_per_sec / (2.0 * sign),
                2.0 * sign
            );
        }
        for res in results.iter().filter(|r| r.op == "login-jwt") {
            outln!(
                "{}: {:.2} of the 2-core ECDSA P-256 verify limit ({:.0}/s; a login is one verify plus a durable token write)",
                res.op,
                res.ops_per_sec / (2.0 * verify),
                2.0 * verify
            );
        }
    }
    for (op, f, t) in &commit_factor {
        outln!("group commit during {op}: {f:.1} writes per transaction ({t} transactions)");
    }
    outln!("(/ceiling = share of the sys/health rate, the HTTP stack's limit here; /fsync > 1 means group commit acknowledges more durable writes than the disk's raw fsync rate)");
    Ok(())
}
