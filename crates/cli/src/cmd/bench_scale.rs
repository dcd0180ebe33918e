//! `custos bench --scale`: a server in its own process (SQLite, keyfile seal) loaded with
//! --certs certificates, --revoke of them revoked, then a full CRL and a restart. A bench
//! mode (minutes to hours), never part of CI; `scripts/bench-scale.sh` runs it at 10M.
//!
//! Reported beside the machine's limits measured in the same run (the fsync rate of the
//! data directory, ECDSA P-256 signatures per second on one core, and the HTTP floor: one
//! client's `sys/health` latency), so figures compare across days.

use super::bench::BenchArgs;
use super::Cli;
use crate::client::{CliError, CliResult, Client};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Revocations timed one at a time after the concurrent phase.
const REVOKE_SEQ: usize = 2_000;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[(((v.len() - 1) as f64) * p).round() as usize] as f64 / 1000.0
}

/// Runs requests `range` spread over `clients` tasks; returns per-request latencies (µs).
async fn spread<F, Fut>(clients: usize, range: std::ops::Range<usize>, f: F) -> CliResult<Vec<u32>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = CliResult<Value>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let end = range.end;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t = Instant::now();
                f(i).await?;
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok::<_, CliError>(lat)
        }));
    }
    let mut all = Vec::with_capacity(end.saturating_sub(range.start));
    for t in tasks {
        all.extend(t.await.map_err(other)??);
    }
    Ok(all)
}

/// Resident memory of a process (KiB): anonymous (heap: what must stay small), file-backed
/// (the database's memory map: the kernel drops it under pressure), and the total.
#[derive(Default, Clone, Copy)]
struct Rss {
    anon: u64,
    file: u64,
    total: u64,
}

impl Rss {
    fn of(pid: u32) -> Rss {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| -> u64 {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Rss {
            anon: field("RssAnon:"),
            file: field("RssFile:") + field("RssShmem:"),
            total: field("VmRSS:"),
        }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "anonymous {} MiB, file-backed {} MiB (total {} MiB)",
            self.anon / 1024,
            self.file / 1024,
            self.total / 1024
        )
    }
}

/// ECDSA P-256 signatures per second on one core (aws-lc, in process).
fn ecdsa_sign_rate() -> f64 {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let Ok(k) = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING) else {
        return 0.0;
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            let _ = k.sign(&rng, b"custos bench");
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes in the database file and its WAL, and (read from the stopped server's file) the
/// certificate rows and the transparency log's keys.
fn sizes(dir: &std::path::Path) -> (u64, u64, u64, u64) {
    let len = |p: &str| std::fs::metadata(dir.join(p)).map(|m| m.len()).unwrap_or(0);
    let file = len("custos.db") + len("custos.db-wal");
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("custos.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return (file, 0, 0, 0);
    };
    let q = |sql: &str| -> u64 {
        db.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(0) as u64
    };
    let certs = q("SELECT count(*) FROM certs");
    let cert_bytes =
        q("SELECT sum(length(value) + length(serial) + length(mount) + 24) FROM certs");
    let log_bytes =
        q("SELECT sum(length(key) + length(value)) FROM kv WHERE key LIKE 'sys/tlog/%'");
    (file, certs, cert_bytes, log_bytes)
}

pub async fn run(_cli: &Cli, a: &BenchArgs) -> CliResult<()> {
    let dir = tempfile::Builder::new()
        .prefix("custos-scale-")
        .tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|source| CliError::Io {
            what: "scale dir".into(),
            source,
        })?;
    let key = dir.path().join("unseal.key");
    let mut kb = [0u8; 32];
    aws_lc_rs::rand::fill(&mut kb).map_err(|_| other("rng"))?;
    std::fs::write(&key, hex::encode(kb)).map_err(|source| CliError::Io {
        what: "key file".into(),
        source,
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| CliError::Io {
            what: "port".into(),
            source,
        })?
        .port();
    let cfg_path = dir.path().join("custos.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\nbackend = \"sqlite\"\npath = \"{}/custos.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{}\"\n",
            dir.path().display(),
            key.display()
        ),
    )
    .map_err(|source| CliError::Io {
        what: "config".into(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "current exe".into(),
        source,
    })?;
    let spawn = || {
        std::process::Command::new(&exe)
            .args([
                "server",
                "--config",
                cfg_path.to_str().unwrap_or_default(),
                "--log-level",
                "warn",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|source| CliError::Io {
                what: "spawning server".into(),
                source,
            })
    };
    let addr = format!("http://127.0.0.1:{port}");
    let wait_up = |c: Client| async move {
        for _ in 0..20_000 {
            if let Ok((_, st)) = c.call_status("GET", "sys/health", None, true).await {
                if st == 200 || st == 501 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(other("server did not come up"))
    };

    // The machine's limits, measured now.
    let fsync = super::bench::fsync_rate(dir.path(), 2.0)?;
    let sign = ecdsa_sign_rate();
    outln!(
        "scale run: {} certificates, {} revoked, {} clients; server in its own process (SQLite)",
        a.certs,
        a.revoke,
        a.clients
    );
    outln!("  machine: fsync {fsync:.0}/s ({:.2} ms each); ECDSA P-256 {sign:.0} signatures/s on one core", 1000.0 / fsync);

    let mut child = spawn()?;
    let anon = Client::new(&addr, None, None)?;
    wait_up(anon.clone()).await?;
    let init = anon.call("PUT", "sys/init", Some(&json!({}))).await?;
    let root = init["root_token"].as_str().unwrap_or_default().to_string();
    let c = Client::new(&addr, Some(root), None)?;
    let mut floor = spread(1, 0..2000, {
        let anon = anon.clone();
        move |_| {
            let anon = anon.clone();
            async move {
                anon.call_status("GET", "sys/health", None, true).await?;
                Ok(Value::Null)
            }
        }
    })
    .await?;
    let (floor50, floor99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99));
    outln!("  HTTP floor (sys/health, one client): p50 {floor50:.2} ms, p99 {floor99:.2} ms");
    c.call(
        "POST",
        "sys/mounts/pki",
        Some(&json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    )
    .await?;
    c.call(
        "POST",
        "pki/root/generate/internal",
        Some(&json!({"common_name": "scale root", "key_type": "ec", "ttl": "87600h"})),
    )
    .await?;
    c.call(
        "POST",
        "pki/config/urls",
        Some(&json!({"crl_distribution_points": [format!("{addr}/v1/pki/crl")]})),
    )
    .await?;
    c.call(
        "POST",
        "pki/roles/nf",
        Some(&json!({"allow_any_name": true, "key_type": "ec", "ttl": "720h", "max_ttl": "720h"})),
    )
    .await?;

    // Issue, with an estimate of the whole run after the first 1% (at least 2,000).
    let serials = Arc::new(std::sync::Mutex::new(Vec::with_capacity(a.revoke)));
    let issue = {
        let (c, s, want) = (c.clone(), serials.clone(), a.revoke);
        move |i: usize| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                let v = c
                    .call(
                        "POST",
                        "pki/issue/nf",
                        Some(&json!({"common_name": format!("nf{i}.example.org")})),
                    )
                    .await?;
                // Keep the first `want` serials (random, so spread over the serial space).
                if let (Ok(mut s), Some(x)) = (
                    s.lock(),
                    v.pointer("/data/serial_number").and_then(Value::as_str),
                ) {
                    if s.len() < want {
                        s.push(x.to_string());
                    }
                }
                Ok(Value::Null)
            }
        }
    };
    let t0 = Instant::now();
    let calib = a.certs.min((a.certs / 100).max(2000));
    spread(a.clients, 0..calib, issue.clone()).await?;
    let rate = calib as f64 / t0.elapsed().as_secs_f64();
    let est_issue = a.certs as f64 / rate;
    // Revocations ran at about the issuance rate in earlier runs.
    let est_total = est_issue + a.revoke as f64 / rate + 60.0;
    outln!(
        "  estimate: {rate:.0} issues/s over the first {calib}: issuing takes about {:.0} min, the whole run about {:.0} min",
        est_issue / 60.0,
        est_total / 60.0
    );
    spread(a.clients, calib..a.certs, issue).await?;
    let issue_secs = t0.elapsed().as_secs_f64();
    outln!(
        "  issued {} in {:.1} s ({:.0}/s, stored durably and logged; {:.3} of one core's ECDSA rate)",
        a.certs,
        issue_secs,
        a.certs as f64 / issue_secs,
        a.certs as f64 / issue_secs / sign
    );
    let list: Vec<String> = serials.lock().map(|s| s.clone()).unwrap_or_default();
    let list = Arc::new(list);

    // Two phases: throughput with --clients in flight (latency there is mostly queueing, by
    // Little's law), then the last REVOKE_SEQ one at a time: the cost of one revocation at
    // this scale, which is what must not grow with the number already revoked.
    let seq = REVOKE_SEQ.min(list.len());
    let par = list.len() - seq;
    let revoke = {
        let (c, l) = (c.clone(), list.clone());
        move |i: usize| {
            let (c, l) = (c.clone(), l.clone());
            async move {
                c.call("POST", "pki/revoke", Some(&json!({"serial_number": l[i]})))
                    .await
            }
        }
    };
    let t1 = Instant::now();
    let mut lat = spread(a.clients, 0..par, revoke.clone()).await?;
    let rev_secs = t1.elapsed().as_secs_f64();
    outln!(
        "  revoked {} with {} clients in {:.1} s ({:.0}/s): p50 {:.2} ms, p99 {:.2} ms",
        par,
        a.clients,
        rev_secs,
        par as f64 / rev_secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
    let mut lat = spread(1, par..list.len(), revoke).await?;
    let (r50, r99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    outln!(
        "  revoked the last {seq} one at a time ({par} already revoked): p50 {r50:.2} ms, p99 {r99:.2} ms ({:.1} fsync intervals at p99)",
        r99 * fsync / 1000.0
    );

    let t2 = Instant::now();
    c.call("GET", "pki/crl/rotate", None).await?;
    let crl_ms = t2.elapsed().as_secs_f64() * 1000.0;
    let t2 = Instant::now();
    let crl = c.get_bytes("pki/crl", 1 << 30).await?.unwrap_or_default();
    outln!(
        "  full CRL build ({} entries): {crl_ms:.0} ms; the CRL is {} KiB, served in {:.1} ms",
        list.len(),
        crl.len() / 1024,
        t2.elapsed().as_secs_f64() * 1000.0
    );
    outln!("  server memory before restart: {}", Rss::of(child.id()));

    let _ = child.kill();
    let _ = child.wait();
    let (file, certs, cert_bytes, log_bytes) = sizes(dir.path());
    let t3 = Instant::now();
    let mut child = spawn()?;
    wait_up(anon.clone()).await?;
    let up = t3.elapsed().as_secs_f64();
    let after_up = Rss::of(child.id());
    let t4 = Instant::now();
    c.call(
        "POST",
        "pki/issue/nf",
        Some(&json!({"common_name": "after-restart.example.org"})),
    )
    .await?;
    let first = t4.elapsed().as_secs_f64() * 1000.0;
    let m = c
        .get_bytes("sys/metrics?format=prometheus", 1 << 24)
        .await?
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    outln!(
        "  restart to serving (kill -9, spawn, unseal, sys/health 200): {:.0} ms; first issue after it {first:.1} ms",
        up * 1000.0
    );
    outln!(
        "  transparency log at restart: {} entries opened in {:.1} ms with {} storage reads",
        metric(&m, "custos_tlog_size").unwrap_or(0.0),
        metric(&m, "custos_tlog_open_seconds").unwrap_or(0.0) * 1000.0,
        metric(&m, "custos_tlog_open_reads").unwrap_or(0.0)
    );
    outln!("  server memory after restart: {after_up}");
    outln!(
        "  server memory after the first issue: {}",
        Rss::of(child.id())
    );
    let per = |b: u64| b as f64 / certs.max(1) as f64;
    outln!(
        "  database {} MiB for {certs} certificates: {:.0} bytes per certificate ({:.0} of them the certificate rows, {:.0} the transparency log)",
        file / (1024 * 1024),
        per(file),
        per(cert_bytes),
        per(log_bytes)
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
