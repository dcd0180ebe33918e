//! `custos bench --tlog`: the transparency log on an in-process server (SQLite, real fsync).
//! * durable appends from --clients concurrent producers (the path PKI issuance and every
//!   other trust event takes), with the batches per commit and the fsync probe beside it;
//! * inclusion-proof generation in process (both cores) and served over HTTP;
//! * tile and entry-bundle requests over HTTP, with `sys/health` as the HTTP ceiling.

use super::bench::BenchArgs;
use crate::client::{CliError, CliResult, Client};
use custos_tlog::entry::{ChangeOp, Event};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Requests/s and bytes/s of GETs from `clients` tasks for `dur`, paths chosen by `path(i, n)`.
async fn http_rate(
    c: &Client,
    clients: usize,
    dur: Duration,
    path: Arc<dyn Fn(usize, usize) -> String + Send + Sync>,
) -> CliResult<(f64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (c, done, errors, path, bytes) = (
            c.clone(),
            done.clone(),
            errors.clone(),
            path.clone(),
            bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                match c.get_bytes(&path(i, n), 1 << 20).await {
                    Ok(Some(b)) => {
                        bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(other)?;
    }
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(other(format!(
            "{} requests failed",
            errors.load(Ordering::Relaxed)
        )));
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        done.load(Ordering::Relaxed) as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs,
    ))
}

pub async fn run(a: &BenchArgs) -> CliResult<()> {
    let tmp = tempfile::Builder::new()
        .prefix("custos-bench-tlog-")
        .tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|source| CliError::Io {
            what: "creating bench dir".into(),
            source,
        })?;
    let (running, root, _) = custos_server::start_dev_with(
        tmp.path(),
        "127.0.0.1:0".parse().map_err(other)?,
        None,
        custos_server::CoreConfig::default(),
        custos_server::engines::EngineSettings::default(),
    )
    .await
    .map_err(other)?;
    let core = running.core.clone();
    let log = running.engines.tlog.clone();
    let client = Client::new(
        &format!("http://{}", running.addr),
        Some(root.to_string()),
        None,
    )?;
    let fsync = super::bench::fsync_rate(tmp.path(), 2.0)?;
    let dur = Duration::from_secs(a.duration);

    // 1. Durable appends.
    let producers = a.clients.max(1);
    let tx0 = core.store_stats().transactions;
    let size0 = log.size().map_err(other)?;
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut tasks = Vec::new();
    for i in 0..producers {
        let (log, lat) = (log.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                log.append(Event::PolicyChanged {
                    name: format!("bench-{i}-{n}"),
                    op: ChangeOp::Write,
                    policy_sha256: Some("ab".repeat(32)),
                    requester: "bench".into(),
                })
                .await
                .map_err(|e| e.to_string())?;
                mine.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                n += 1;
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(other)?.map_err(other)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let appended = log.size().map_err(other)? - size0;
    let commits = core.store_stats().transactions - tx0;
    let mut l = lat.lock().map_err(|_| other("poisoned"))?.clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |v| f64::from(*v) / 1000.0)
    };
    let appends = appended as f64 / secs;
    outln!(
        "transparency log, in-process server on SQLite ({} s per measure)",
        a.duration
    );
    outln!("  machine: fsync (write+fdatasync, 1 thread) {fsync:.0}/s");
    outln!(
        "  durable appends, {producers} producers: {appends:.0} entries/s, p50 {:.1} ms, p99 {:.1} ms; {commits} commits ({:.0}/s, {:.0} entries each, {:.2} of the fsync probe)",
        pct(0.5),
        pct(0.99),
        commits as f64 / secs,
        appended as f64 / commits.max(1) as f64,
        commits as f64 / secs / fsync
    );

    // 2. Inclusion proofs, generated in process (tiles beyond the edge come from storage
    // through the log's bounded cache).
    let size = log.size().map_err(other)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..threads * 4 {
        let (log, count) = (log.clone(), count.clone());
        hs.push(tokio::spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
            while start.elapsed() < dur {
                for _ in 0..100 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if log.inclusion(x % size, size).await.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for h in hs {
        h.await.map_err(|_| other("proof task panicked"))?;
    }
    let proofs = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    outln!(
        "  inclusion proofs generated ({} tasks, tree of {size}): {proofs:.0}/s ({} hashes each)",
        threads * 4,
        64 - size.leading_zeros()
    );

    // 3. Served over HTTP, against the HTTP stack's own ceiling.
    let clients = a.clients.clamp(1, 256);
    let (health, _) =
        http_rate(&client, clients, dur, Arc::new(|_, _| "sys/health".into())).await?;
    let (served_proofs, _) = http_rate(
        &client,
        clients,
        dur,
        Arc::new(move |i, n| {
            format!(
                "sys/tlog/proof/inclusion?index={}&size={size}",
                (i as u64 * 7919 + n as u64 * 104_729) % size
            )
        }),
    )
    .await?;
    let full = (size / 256).max(1);
    let (tiles, tile_bytes) = http_rate(
        &client,
        clients,
        dur,
        Arc::new(move |i, n| {
            let id = custos_tlog::tile::TileId {
                level: Some(0),
                index: (i as u64 * 31 + n as u64) % full,
                width: 256,
            };
            format!("sys/tlog/{}", id.path())
        }),
    )
    .await?;
    let (bundles, bundle_bytes) = http_rate(
        &client,
        clients,
        dur,
        Arc::new(move |i, n| {
            let id = custos_tlog::tile::TileId {
                level: None,
                index: (i as u64 * 31 + n as u64) % full,
                width: 256,
            };
            format!("sys/tlog/{}", id.path())
        }),
    )
    .await?;
    outln!("  HTTP, {clients} clients: sys/health {health:.0}/s (the HTTP ceiling here)");
    outln!(
        "  served inclusion proofs {served_proofs:.0}/s ({:.2} of health); level-0 tiles {tiles:.0}/s ({:.2}, {:.0} MB/s); entry bundles {bundles:.0}/s ({:.2}, {:.0} MB/s)",
        served_proofs / health,
        tiles / health,
        tile_bytes / 1e6,
        bundles / health,
        bundle_bytes / 1e6
    );
    drop(running);
    Ok(())
}
