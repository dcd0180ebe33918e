//! `custos monitor`: tail the transparency log through its tiles and raise alerts.
//!
//! Each poll fetches the signed checkpoint and checks it against the log key (and witness
//! threshold); re-hashes the tiles it needs up to the signed root; proves the new checkpoint
//! consistent with the last one verified; then reads the new entries from their bundles, checks
//! each against its leaf hash, and applies the rules (`custos_tlog::monitor`). Alerts go to
//! stdout as JSON lines, to a webhook (retried with backoff; undelivered alerts wait in the
//! state file for the next poll), and to Prometheus counters.
//!
//! The state file holds the position (last verified checkpoint and next entry), the burst
//! windows and the webhook outbox, written durably (tmp file, fsync, rename). Alerts are
//! printed before the position that passes them is saved, so a crash repeats an alert rather
//! than losing it; each alert carries its entry index for de-duplication. A log that breaks
//! (a checkpoint that does not verify, a missing tile, tiles that do not hash to the root, a
//! fork or a rollback) raises one `log.*` alert, and the monitor does not move past it.

use super::log::{read_text, trust, Tiles, TrustArgs};
use super::Cli;
use crate::client::{CliError, CliResult};
use clap::Args;
use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::merkle::{self, leaf_hash, Hash, ProofError};
use custos_tlog::monitor::{self as rules, Alert, BurstState, Rules};
use custos_tlog::note;
use custos_tlog::receipt::{self, ReceiptError, Trust};
use custos_tlog::tile::{self, TileId, TileSource, HEIGHT, WIDTH};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest state file read.
const MAX_STATE: u64 = 256 << 20;
/// Alerts kept for the webhook before the oldest are dropped (and counted).
const MAX_OUTBOX: usize = 100_000;
/// Tiles kept between polls (full tiles never change).
const MAX_CACHED_TILES: usize = 8192;
/// Entry bundles processed between saves of the position.
const SAVE_EVERY: u64 = 16;

#[derive(Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub conn: super::Conn,
    #[command(flatten)]
    trust: TrustArgs,
    /// The rules file (TOML: [signing], [burst], [issuance]); its format, with an example of
    /// every setting, is documented in crates/tlog/src/monitor.rs (`custos_tlog::monitor`),
    /// and README's monitor section has a working one.
    #[arg(long)]
    rules: PathBuf,
    /// The state file: position, burst windows and undelivered webhook alerts.
    #[arg(long)]
    state: PathBuf,
    /// Read a mirror directory (`custos log mirror` layout) instead of the server.
    #[arg(long)]
    tiles: Option<PathBuf>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Poll once, deliver, and exit (exit 1 if alerts could not be delivered).
    #[arg(long)]
    once: bool,
    /// With a new state file, start at the current checkpoint instead of entry 0.
    #[arg(long)]
    start_at_head: bool,
    /// POST each alert as JSON to this URL.
    #[arg(long)]
    webhook: Option<String>,
    /// Attempts per alert and poll (backoff 250 ms doubling to 8 s) before it waits for the
    /// next poll.
    #[arg(long, default_value_t = 5)]
    webhook_attempts: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// How long a checkpoint the log signed may wait for the --witnesses-required
    /// cosignatures before that raises one `log.witness` alert. Until then a missing
    /// cosignature means "not yet": the monitor holds its position and stays quiet. A
    /// cosignature that does not verify alerts at once.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    witness_grace: u64,
}

/// A checkpoint the log signed that the required witnesses have not cosigned yet.
struct AwaitingWitnesses {
    /// Its size: any cosigned checkpoint at least this large settles it.
    size: u64,
    since: std::time::Instant,
    alerted: bool,
}

/// The last checkpoint verified.
#[derive(Serialize, Deserialize, Clone)]
struct Seen {
    size: u64,
    /// Base64.
    root: String,
    note: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct State {
    /// The log key this state belongs to.
    key: String,
    checkpoint: Option<Seen>,
    /// The next entry to evaluate.
    next: u64,
    burst: BurstState,
    outbox: VecDeque<Alert>,
    outbox_dropped: u64,
    /// The last log-integrity alert, as rule|verified size|next (not raised again while the
    /// monitor is held there).
    last_integrity: Option<String>,
    /// Alerts raised, by rule.
    alerts: BTreeMap<String, u64>,
    /// Entries evaluated.
    entries: u64,
}

fn load_state(path: &Path, key: &str) -> CliResult<State> {
    let io = |source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                key: key.to_string(),
                ..State::default()
            })
        }
        Err(e) => return Err(io(e)),
    };
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_STATE + 1), &mut b).map_err(io)?;
    if b.len() as u64 > MAX_STATE {
        return Err(CliError::Other(format!(
            "{}: larger than {MAX_STATE} bytes",
            path.display()
        )));
    }
    let st: State = serde_json::from_slice(&b).map_err(|e| {
        CliError::Other(format!(
            "{}: not a monitor state file ({e}); refusing to start over from it",
            path.display()
        ))
    })?;
    if st.key != key {
        return Err(CliError::Usage(format!(
            "--state {} belongs to the log key {}, not --key; use a new state file",
            path.display(),
            st.key
        )));
    }
    Ok(st)
}

fn save_state(path: &Path, st: &State) -> CliResult<()> {
    let b = serde_json::to_vec(st).map_err(|e| CliError::Other(e.to_string()))?;
    super::fw::write_durably(path, &b, 0o600)
}

/// Counters served at `/metrics`.
#[derive(Default)]
struct Metrics {
    alerts: BTreeMap<String, u64>,
    entries: u64,
    log_size: u64,
    next: u64,
    polls: u64,
    poll_errors: u64,
    webhook_delivered: u64,
    webhook_failures: u64,
    webhook_pending: u64,
    webhook_dropped: u64,
}

impl Metrics {
    fn render(&self) -> String {
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in rows {
                o.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "custos_monitor_alerts_total",
            "counter",
            "Alerts raised, by rule.",
            rules::ALL_RULES
                .iter()
                .map(|r| {
                    (
                        format!("{{rule=\"{r}\"}}"),
                        self.alerts.get(*r).copied().unwrap_or(0),
                    )
                })
                .collect(),
        );
        for (name, kind, help, v) in [
            (
                "custos_monitor_entries_total",
                "counter",
                "Log entries evaluated.",
                self.entries,
            ),
            (
                "custos_monitor_log_size",
                "gauge",
                "Size of the last verified checkpoint.",
                self.log_size,
            ),
            (
                "custos_monitor_position",
                "gauge",
                "The next entry to evaluate.",
                self.next,
            ),
            (
                "custos_monitor_polls_total",
                "counter",
                "Polls completed.",
                self.polls,
            ),
            (
                "custos_monitor_poll_errors_total",
                "counter",
                "Polls that failed (log unreachable, state not writable).",
                self.poll_errors,
            ),
            (
                "custos_monitor_webhook_delivered_total",
                "counter",
                "Alerts delivered to the webhook.",
                self.webhook_delivered,
            ),
            (
                "custos_monitor_webhook_failures_total",
                "counter",
                "Failed webhook attempts.",
                self.webhook_failures,
            ),
            (
                "custos_monitor_webhook_pending",
                "gauge",
                "Alerts waiting for the webhook.",
                self.webhook_pending,
            ),
            (
                "custos_monitor_webhook_dropped_total",
                "counter",
                "Alerts dropped from a full webhook outbox.",
                self.webhook_dropped,
            ),
        ] {
            metric(name, kind, help, vec![(String::new(), v)]);
        }
        o
    }
}

/// Why tiles cannot give an answer: an alert, not an operational error.
enum Fault {
    /// A tile or bundle the checkpoint needs is missing.
    Missing(String),
    /// Tiles that cannot be what the checkpoint says.
    Bad(String),
}

type TileCache = HashMap<(u8, u64, u16), Vec<Hash>>;

/// The width of hash tile (`level`, `index`) in the tree of `size`, if it exists.
fn tile_width(size: u64, level: u8, index: u64) -> Option<u16> {
    let shift = u32::from(level) * u32::from(HEIGHT);
    let hashes = if shift >= 64 { 0 } else { size >> shift };
    let full = hashes / WIDTH;
    if index < full {
        Some(WIDTH as u16)
    } else if index == full && hashes % WIDTH != 0 {
        u16::try_from(hashes % WIDTH).ok()
    } else {
        None
    }
}

/// The cached tiles of the tree of `size` as a hash source.
struct Cached<'c> {
    size: u64,
    cache: &'c TileCache,
}

impl merkle::HashSource for Cached<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        TileSource {
            fetch: |l: u8, i: u64| {
                tile_width(self.size, l, i).and_then(|w| self.cache.get(&(l, i, w)).cloned())
            },
        }
        .node(level, index)
    }
}

/// The tiles of one tree size, fetched as the Merkle computations ask for them.
struct TreeTiles<'c> {
    size: u64,
    cache: &'c mut TileCache,
}

impl TreeTiles<'_> {
    fn width(&self, level: u8, index: u64) -> Option<u16> {
        tile_width(self.size, level, index)
    }

    async fn tile(
        &mut self,
        src: &Tiles<'_>,
        level: u8,
        index: u64,
    ) -> CliResult<Result<Vec<Hash>, Fault>> {
        let Some(width) = self.width(level, index) else {
            return Ok(Err(Fault::Bad(format!(
                "tile {level}/{index} is outside the tree of size {}",
                self.size
            ))));
        };
        if let Some(h) = self.cache.get(&(level, index, width)) {
            return Ok(Ok(h.clone()));
        }
        let id = TileId {
            level: Some(level),
            index,
            width,
        };
        let Some(b) = src.fetch(&id).await? else {
            return Ok(Err(Fault::Missing(id.path())));
        };
        let Some(h) = tile::tile_hashes(&b).filter(|h| h.len() == usize::from(width)) else {
            return Ok(Err(Fault::Bad(format!(
                "{} does not hold {width} hashes",
                id.path()
            ))));
        };
        if self.cache.len() >= MAX_CACHED_TILES {
            self.cache.clear();
        }
        self.cache.insert((level, index, width), h.clone());
        Ok(Ok(h))
    }

    /// Runs `f` over the tiles, fetching each tile it finds missing.
    async fn compute<T>(
        &mut self,
        src: &Tiles<'_>,
        f: impl Fn(&Cached<'_>) -> Result<T, ProofError>,
    ) -> CliResult<Result<T, Fault>> {
        loop {
            let r = f(&Cached {
                size: self.size,
                cache: self.cache,
            });
            match r {
                Ok(v) => return Ok(Ok(v)),
                Err(ProofError::Missing { level, index }) => {
                    let tl = level / HEIGHT;
                    let first = index.checked_shl(u32::from(level % HEIGHT));
                    let Some(ti) = first.map(|f| f / WIDTH) else {
                        return Ok(Err(Fault::Bad(format!(
                            "node {level}/{index} is out of range"
                        ))));
                    };
                    if self
                        .width(tl, ti)
                        .is_some_and(|w| self.cache.contains_key(&(tl, ti, w)))
                    {
                        return Ok(Err(Fault::Bad(format!(
                            "tile {tl}/{ti} does not hold node {level}/{index}"
                        ))));
                    }
                    if let Err(fault) = self.tile(src, tl, ti).await? {
                        return Ok(Err(fault));
                    }
                }
                Err(e) => return Ok(Err(Fault::Bad(e.to_string()))),
            }
        }
    }
}

struct Monitor<'a> {
    a: &'a MonitorArgs,
    src: Tiles<'a>,
    trust: Trust,
    rules: Rules,
    st: State,
    cache: TileCache,
    metrics: Arc<Mutex<Metrics>>,
    /// The oldest signed checkpoint still waiting for its cosignatures (in memory: a
    /// restart starts the grace period again).
    awaiting: Option<AwaitingWitnesses>,
    /// The last webhook warning and when it was logged.
    webhook_warned: Option<(String, std::time::Instant)>,
}

fn b64(h: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

impl Monitor<'_> {
    fn save(&self) -> CliResult<()> {
        save_state(&self.a.state, &self.st)
    }

    fn emit(&mut self, alert: Alert) -> CliResult<()> {
        let line = serde_json::to_string(&alert).map_err(|e| CliError::Other(e.to_string()))?;
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .map_err(|source| CliError::Io {
                    what: "writing an alert to stdout".into(),
                    source,
                })?;
        }
        *self.st.alerts.entry(alert.rule.clone()).or_default() += 1;
        if self.a.webhook.is_some() {
            if self.st.outbox.len() >= MAX_OUTBOX {
                self.st.outbox.pop_front();
                self.st.outbox_dropped += 1;
            }
            self.st.outbox.push_back(alert);
        }
        Ok(())
    }

    /// Raises a log-integrity alert once per rule for as long as the monitor is held at the
    /// same position (a forked log that keeps growing is one alert, not one per poll); the
    /// position stays.
    fn integrity(&mut self, rule: &str, message: String) -> CliResult<()> {
        let at = self.st.checkpoint.as_ref().map_or(0, |c| c.size);
        let key = format!("{rule}|{at}|{}", self.st.next);
        if self.st.last_integrity.as_deref() != Some(key.as_str()) {
            self.emit(Alert::log(rule, message))?;
            self.st.last_integrity = Some(key);
            self.save()?;
        }
        Ok(())
    }

    fn fault(&mut self, f: Fault, size: u64) -> CliResult<()> {
        match f {
            Fault::Missing(path) => self.integrity(
                rules::LOG_GAP,
                format!("{path} is missing from the log of size {size}"),
            ),
            Fault::Bad(m) => self.integrity(rules::LOG_TAMPERED, format!("size {size}: {m}")),
        }
    }

    /// A checkpoint of `size`, signed by the log, lacks the required cosignatures: "not
    /// yet" until the grace period is over, then one `log.witness` alert.
    fn await_witnesses(&mut self, size: u64, why: &str) -> CliResult<()> {
        let grace = Duration::from_secs(self.a.witness_grace);
        let w = self.awaiting.get_or_insert(AwaitingWitnesses {
            size,
            since: std::time::Instant::now(),
            alerted: false,
        });
        if w.alerted || w.since.elapsed() < grace {
            return Ok(());
        }
        w.alerted = true;
        let message = format!(
            "the log's checkpoint of size {} has waited {} s for the required {} witness cosignature(s): {why}",
            w.size,
            grace.as_secs(),
            self.trust.threshold
        );
        self.emit(Alert::log(rules::LOG_WITNESS, message))?;
        self.save()
    }

    /// A checkpoint of `size` verified with its cosignatures: what waited for that is settled.
    fn witnessed(&mut self, size: u64) {
        if self.awaiting.as_ref().is_some_and(|w| w.size <= size) {
            self.awaiting = None;
        }
    }

    /// With witnesses required, the log's head (newest signed checkpoint, `sys/tlog/head`)
    /// must be cosigned within the grace period too: a log that serves only cosigned
    /// checkpoints would otherwise hide a silent witness behind a stale one.
    async fn watch_head(&mut self, cosigned: u64) -> CliResult<()> {
        if self.trust.threshold == 0 {
            return Ok(());
        }
        let Some(note) = self.src.head().await? else {
            return Ok(());
        };
        let log_only = Trust {
            log: self.trust.log.clone(),
            witnesses: Vec::new(),
            threshold: 0,
        };
        let head = String::from_utf8(note)
            .ok()
            .and_then(|t| receipt::open_checkpoint(&t, &log_only).ok());
        match head {
            Some((h, _)) if h.size > cosigned => self.await_witnesses(
                h.size,
                &format!("the newest cosigned checkpoint has size {cosigned}"),
            ),
            Some(_) => Ok(()),
            None => self.integrity(
                rules::LOG_CHECKPOINT,
                "the log's head (sys/tlog/head) does not verify against the log key".into(),
            ),
        }
    }

    async fn poll(&mut self) -> CliResult<()> {
        let Some(note) = self.src.checkpoint().await? else {
            return Err(CliError::Other("the log has no checkpoint".into()));
        };
        let Ok(text) = String::from_utf8(note) else {
            return self.integrity(rules::LOG_CHECKPOINT, "the checkpoint is not text".into());
        };
        let cp = match receipt::open_checkpoint(&text, &self.trust) {
            Ok((cp, _)) => cp,
            // Signed by the log, short of cosignatures: not yet (within the grace period).
            Err(ReceiptError::Witnesses { found, required }) => {
                let size = note::parse(&text)
                    .ok()
                    .and_then(|(body, _)| Checkpoint::parse(body).ok())
                    .map_or(0, |c| c.size);
                return self.await_witnesses(
                    size,
                    &format!("it carries {found} of the required {required}"),
                );
            }
            Err(e) => {
                return self.integrity(
                    rules::LOG_CHECKPOINT,
                    format!("the checkpoint does not verify: {e}"),
                )
            }
        };
        self.witnessed(cp.size);
        self.watch_head(cp.size).await?;
        let old = self.st.checkpoint.clone();
        let old_root = match &old {
            Some(o) => Some(
                receipt::decode_hashes(std::slice::from_ref(&o.root))
                    .ok()
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| {
                        CliError::Other(format!(
                            "{}: the stored root is malformed",
                            self.a.state.display()
                        ))
                    })?,
            ),
            None => None,
        };
        if let (Some(o), Some(root)) = (&old, &old_root) {
            if cp.size < o.size {
                return self.integrity(
                    rules::LOG_INCONSISTENT,
                    format!(
                        "the log's checkpoint has size {}, smaller than the size {} already verified (history was rolled back)",
                        cp.size, o.size
                    ),
                );
            }
            if cp.size == o.size {
                if cp.root != *root {
                    return self.integrity(
                        rules::LOG_INCONSISTENT,
                        format!("two different roots for size {} (the log forked)", cp.size),
                    );
                }
                if self.st.next >= cp.size {
                    self.st.last_integrity = None;
                    return Ok(());
                }
            }
        } else if self.a.start_at_head {
            self.st.next = cp.size;
        }

        let mut tiles = TreeTiles {
            size: cp.size,
            cache: &mut self.cache,
        };
        let size = cp.size;
        let root = match tiles.compute(&self.src, |s| merkle::root(s, size)).await? {
            Ok(r) => r,
            Err(f) => return self.fault(f, size),
        };
        if root != cp.root {
            return self.integrity(
                rules::LOG_TAMPERED,
                format!("the tiles hash to a root other than the checkpoint's (size {size})"),
            );
        }
        if let (Some(o), Some(old_root)) = (&old, &old_root) {
            if o.size > 0 && o.size < size {
                let old_size = o.size;
                let proof = match tiles
                    .compute(&self.src, |s| merkle::consistency_proof(s, old_size, size))
                    .await?
                {
                    Ok(p) => p,
                    Err(f) => return self.fault(f, size),
                };
                if merkle::verify_consistency(old_size, size, old_root, &cp.root, &proof).is_err() {
                    return self.integrity(
                        rules::LOG_INCONSISTENT,
                        format!(
                            "the checkpoint of size {size} is not an extension of the one of size {old_size} verified before (the log forked or rewrote history)"
                        ),
                    );
                }
            }
        }
        self.st.checkpoint = Some(Seen {
            size,
            root: b64(&cp.root),
            note: text,
        });
        self.save()?;

        let mut n = self.st.next / WIDTH;
        let mut since_save = 0;
        while n * WIDTH < size {
            let width = (size - n * WIDTH).min(WIDTH);
            let id = TileId {
                level: None,
                index: n,
                width: u16::try_from(width).unwrap_or(WIDTH as u16),
            };
            let Some(bundle) = self.src.fetch(&id).await? else {
                return self.fault(Fault::Missing(id.path()), size);
            };
            let Some(entries) = tile::parse_bundle(&bundle).filter(|e| e.len() as u64 == width)
            else {
                return self.integrity(
                    rules::LOG_GAP,
                    format!(
                        "{} does not hold the {width} entries the checkpoint of size {size} needs",
                        id.path()
                    ),
                );
            };
            let mut tiles = TreeTiles {
                size,
                cache: &mut self.cache,
            };
            let leaves = match tiles.tile(&self.src, 0, n).await? {
                Ok(l) => l,
                Err(f) => return self.fault(f, size),
            };
            let from = (self.st.next - n * WIDTH) as usize;
            for (i, e) in entries.iter().enumerate().skip(from) {
                let index = n * WIDTH + i as u64;
                if leaves.get(i) != Some(&leaf_hash(e)) {
                    return self.integrity(
                        rules::LOG_TAMPERED,
                        format!("entry {index} does not hash to its leaf in the tiles"),
                    );
                }
                for alert in rules::evaluate(&self.rules, &mut self.st.burst, index, e) {
                    self.emit(alert)?;
                }
                self.st.entries += 1;
            }
            self.st.next = n * WIDTH + width;
            since_save += 1;
            if since_save == SAVE_EVERY {
                self.save()?;
                since_save = 0;
            }
            n += 1;
        }
        self.st.last_integrity = None;
        self.save()
    }

    /// A webhook failure, with its cause, at most once a minute for the same cause (the
    /// alerts stay in the outbox; the metrics count every failure).
    fn webhook_warning(&mut self, why: String) {
        let now = std::time::Instant::now();
        let quiet = self
            .webhook_warned
            .as_ref()
            .is_some_and(|(w, t)| *w == why && now.duration_since(*t) < Duration::from_secs(60));
        if !quiet {
            tracing::warn!(pending = self.st.outbox.len(), "{why}");
            self.webhook_warned = Some((why, now));
        }
    }

    /// Delivers the outbox in order; stops at the first alert that still fails.
    async fn deliver(&mut self, http: &reqwest::Client, url: &str) -> CliResult<()> {
        let mut delivered = 0;
        while let Some(alert) = self.st.outbox.front().cloned() {
            let mut delay = Duration::from_millis(250);
            let mut ok = false;
            for attempt in 0..self.a.webhook_attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
                match http.post(url).json(&alert).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok = true;
                        break;
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        let body: String = body.chars().take(200).collect();
                        self.webhook_warning(format!(
                            "the webhook refused an alert: HTTP {status} {}",
                            body.trim()
                        ));
                    }
                    Err(e) => {
                        let mut cause = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(c) = src {
                            cause = format!("{cause}: {c}");
                            src = c.source();
                        }
                        self.webhook_warning(format!("the webhook is unreachable: {cause}"));
                    }
                }
                if let Ok(mut m) = self.metrics.lock() {
                    m.webhook_failures += 1;
                }
            }
            if !ok {
                break;
            }
            self.st.outbox.pop_front();
            delivered += 1;
            if let Ok(mut m) = self.metrics.lock() {
                m.webhook_delivered += 1;
            }
        }
        if delivered > 0 {
            self.save()?;
        }
        Ok(())
    }

    fn publish(&self) {
        if let Ok(mut m) = self.metrics.lock() {
            m.alerts = self.st.alerts.clone();
            m.entries = self.st.entries;
            m.log_size = self.st.checkpoint.as_ref().map_or(0, |c| c.size);
            m.next = self.st.next;
            m.webhook_pending = self.st.outbox.len() as u64;
            m.webhook_dropped = self.st.outbox_dropped;
        }
    }
}

async fn serve_metrics(addr: SocketAddr, metrics: Arc<Mutex<Metrics>>) -> CliResult<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                let body = m.lock().map(|m| m.render()).unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Io {
            what: format!("binding --metrics {addr}"),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

pub async fn run(cli: &Cli, a: &MonitorArgs) -> CliResult<()> {
    // Alerts go to stdout; this log (start, warnings, a debug heartbeat) to stderr.
    super::init_logging(&std::env::var("CUSTOS_LOG").unwrap_or_else(|_| "info".into()))?;
    let trust = trust(&a.trust)?;
    let rules = Rules::parse(&read_text(&a.rules)?)
        .map_err(|e| CliError::Usage(format!("--rules {}: {e}", a.rules.display())))?;
    if let Some(u) = &a.webhook {
        reqwest::Url::parse(u).map_err(|e| CliError::Usage(format!("--webhook {u}: {e}")))?;
    }
    let st = load_state(&a.state, &a.trust.key)?;
    let client;
    let src = match &a.tiles {
        Some(d) => Tiles::Dir(d),
        None => {
            client = cli.client()?;
            Tiles::Server(&client)
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::Other(format!("webhook client: {e}")))?;
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    if let Some(addr) = a.metrics {
        serve_metrics(addr, metrics.clone()).await?;
    }
    let mut m = Monitor {
        a,
        src,
        trust,
        rules,
        st,
        cache: HashMap::new(),
        metrics,
        awaiting: None,
        webhook_warned: None,
    };
    tracing::info!(
        log = %m.trust.log.name,
        next_entry = m.st.next,
        verified_size = m.st.checkpoint.as_ref().map_or(0, |c| c.size),
        rules = %a.rules.display(),
        witnesses_required = m.trust.threshold,
        "monitor started"
    );
    m.publish();
    loop {
        let polled = m.poll().await;
        if let Ok(mut x) = m.metrics.lock() {
            match &polled {
                Ok(()) => x.polls += 1,
                Err(_) => x.poll_errors += 1,
            }
        }
        if let Some(url) = &a.webhook {
            m.deliver(&http, url).await?;
        }
        m.publish();
        if a.once {
            polled?;
            if !m.st.outbox.is_empty() {
                return Err(CliError::Other(format!(
                    "{} alert(s) could not be delivered to the webhook; they are kept in {}",
                    m.st.outbox.len(),
                    a.state.display()
                )));
            }
            return Ok(());
        }
        match polled {
            Err(e) => tracing::error!(error = %e, "poll failed"),
            Ok(()) => tracing::debug!(
                next_entry = m.st.next,
                verified_size = m.st.checkpoint.as_ref().map_or(0, |c| c.size),
                "poll done"
            ),
        }
        tokio::time::sleep(Duration::from_secs(a.interval.max(1))).await;
    }
}
