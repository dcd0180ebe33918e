//! `custos witness`: a C2SP tlog-witness. `POST /add-checkpoint` verifies the log's signature
//! and consistency from the last checkpoint it cosigned for that log, records the new one
//! durably, and only then returns its tlog-cosignature. A checkpoint inconsistent with one it
//! has cosigned (a split view) is refused with 422; a stale `old` gets 409 and the size.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use custos_tlog::merkle::Hash;
use custos_tlog::note::{Signer, Verifier};
use custos_tlog::witness::{self, AddCheckpoint, Answer, Seen};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A witness's settings.
pub struct WitnessConfig {
    /// Listen address (plain HTTP; put it behind TLS where the network needs it).
    pub listen: SocketAddr,
    /// The cosigner key (`PRIVATE+KEY+name+hash+base64`, type 4).
    pub signer: Signer,
    /// The logs it follows (their checkpoint keys).
    pub logs: Vec<Verifier>,
    /// Where it records what it cosigned (JSON; written durably before answering).
    pub state_file: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredState {
    /// origin → (size, base64 root).
    logs: BTreeMap<String, (u64, String)>,
}

struct Witness {
    signer: Signer,
    logs: Vec<Verifier>,
    state_file: PathBuf,
    state: tokio::sync::Mutex<StoredState>,
}

/// Why a witness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The state file is unreadable or corrupt.
    #[error("witness state {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn load_state(path: &Path) -> Result<StoredState, WitnessError> {
    let bad = |reason: String| WitnessError::State {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(path) {
        Ok(b) => {
            let s: StoredState = serde_json::from_slice(&b).map_err(|e| bad(e.to_string()))?;
            for (o, (_, root)) in &s.logs {
                B64.decode(root)
                    .ok()
                    .filter(|r| r.len() == 32)
                    .ok_or_else(|| bad(format!("the root recorded for {o} is not 32 bytes")))?;
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredState::default()),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn seen(s: &StoredState, origin: &str) -> Option<Seen> {
    let (size, root) = s.logs.get(origin)?;
    let root: Hash = B64.decode(root).ok()?.try_into().ok()?;
    Some(Seen { size: *size, root })
}

fn text(status: StatusCode, body: String) -> Response {
    (status, body).into_response()
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let req = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    // One request at a time: the check and the durable record must not interleave.
    let mut st = w.state.lock().await;
    let logs: Vec<(Verifier, Option<Seen>)> = w
        .logs
        .iter()
        .map(|v| (v.clone(), seen(&st, &v.name)))
        .collect();
    match witness::answer(&logs, &req) {
        Answer::Cosign(cp) => {
            let prev = st
                .logs
                .insert(cp.origin.clone(), (cp.size, B64.encode(cp.root)));
            let bytes = match serde_json::to_vec(&*st) {
                Ok(b) => b,
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            };
            if let Err(e) = write_durably(&w.state_file, &bytes) {
                // Not recorded: not cosigned, and memory goes back to what the disk holds.
                match prev {
                    Some(p) => st.logs.insert(cp.origin.clone(), p),
                    None => st.logs.remove(&cp.origin),
                };
                tracing::error!(error = %e, "witness state not written");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the witness could not record the checkpoint\n".into(),
                );
            }
            let ts = u64::try_from(crate::core::now_unix()).unwrap_or(0);
            let line = w.signer.sign(&cp.body(), ts).line();
            tracing::info!(origin = %cp.origin, size = cp.size, "cosigned");
            text(StatusCode::OK, line)
        }
        Answer::Conflict(size) => {
            let mut r = text(StatusCode::CONFLICT, format!("{size}\n"));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/x.tlog.size"));
            r
        }
        Answer::ConflictingRoot(e) => {
            tracing::warn!(error = %e, "refused to cosign");
            text(StatusCode::CONFLICT, format!("{e}\n"))
        }
        Answer::UnknownLog => text(StatusCode::NOT_FOUND, "unknown log\n".into()),
        Answer::Forbidden(e) => text(StatusCode::FORBIDDEN, format!("{e}\n")),
        Answer::Unprocessable(e) => {
            tracing::warn!(error = %e, "refused to cosign");
            text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"))
        }
        Answer::Bad(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Starts the witness; returns its address and the serving task.
pub async fn start(
    cfg: WitnessConfig,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WitnessError> {
    let state = load_state(&cfg.state_file)?;
    let w = Arc::new(Witness {
        signer: cfg.signer,
        logs: cfg.logs,
        state_file: cfg.state_file,
        state: tokio::sync::Mutex::new(state),
    });
    let app = axum::Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(
            witness::MAX_ADD_CHECKPOINT,
        ))
        .with_state(w);
    let l = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| WitnessError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = l.local_addr().map_err(|source| WitnessError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let task = tokio::spawn(crate::listener::serve(l, None, app));
    Ok((addr, task))
}
