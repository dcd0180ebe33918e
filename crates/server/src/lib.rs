//! # custos-server
//!
//! The Custos server: everything that touches the network, the disk and the clock.
//!
//! **Owns:** the [`core`] (seal state machine, the barrier and the scoped views engines get
//! of it, the token store, policy store, mount tables, audit devices, the router, the
//! Vault-compatible HTTP edge and the listeners, and the engine interface) and the
//! [`engines`] behind that interface (KV, PKI, provenance, login methods, the transparency
//! log, the NRF), built and wired in one composition root ([`engines::engines`]).
//!
//! **Delegates:** encryption and Shamir to `custos-barrier`, policy evaluation to
//! `custos-acl`, audit line format to `custos-audit`, persistence to `custos-store`, and
//! each engine's decisions to its pure crate (`custos-pki`, `custos-auth`, `custos-nrf`,
//! `custos-provenance`, `custos-tlog`).
//!
//! **Must never:** log a token, key or share; answer a request that no audit device could
//! record (once one is enabled); acknowledge a write before storage made it durable; let
//! the core import or name an engine.
#![forbid(unsafe_code)]
#![allow(missing_docs)]

pub mod config;
pub mod core;
pub mod engines;
pub mod witness;

// The core's modules, under the names the rest of the crate and its users know.
pub use crate::core::{
    audit_dev, duration, error, http, listener, logical, metrics, mounts, seal, token,
};

pub use crate::config::{Config, ConfigError, StorageConfig};
pub use crate::core::{Core, CoreConfig};

use std::net::SocketAddr;
use std::sync::Arc;

/// Version reported by health and seal-status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] custos_store::StoreError),
    /// The listener.
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    /// The core.
    #[error("core: {0}")]
    Core(#[from] error::ApiError),
}

/// Opens the configured storage backend.
pub async fn open_storage(
    cfg: &StorageConfig,
) -> Result<Arc<dyn custos_store::Storage>, StartError> {
    Ok(match cfg {
        StorageConfig::Sqlite { path } => Arc::new(custos_store_sqlite::SqliteStore::open(path)?),
        StorageConfig::Postgresql { url, schema } => {
            Arc::new(custos_store_postgres::PostgresStore::connect(url, schema).await?)
        }
    })
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The core.
    pub core: Arc<Core>,
    /// The engines the composition root built (in-process harnesses reach the log here).
    pub engines: engines::Engines,
    /// The serving task.
    pub task: tokio::task::JoinHandle<()>,
    /// Tells the listener to stop accepting (see [`Running::shutdown`]).
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Graceful shutdown: the listener stops accepting and every open connection finishes
    /// its in-flight requests (at most [`listener::DRAIN`]); then the engines finish (the
    /// transparency log records each audit device's chain head a last time, durably, under
    /// a signed checkpoint) and the core seals, dropping its keys. Every request answered
    /// before was durable when it was answered; none is cut mid-write.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // The serving task ends after the drain (and stops the engines' own listeners).
        let _ = self.task.await;
        self.core.shutdown().await;
    }
}

/// Completes once `stop` says true; never when the sender is merely dropped (a harness
/// that keeps only the serving task must keep serving).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves the API listener; when it ends (or the task is aborted) the engines' own listeners
/// (the NRF's SBI) stop with it.
async fn serve_with_side<F: std::future::Future>(
    api: F,
    side: Vec<tokio::task::JoinHandle<()>>,
) -> F::Output {
    struct Guard(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _g = Guard(side);
    api.await
}

fn core_config(cfg: &Config) -> CoreConfig {
    CoreConfig {
        seal: cfg.seal.clone(),
        limits: cfg.limits.clone(),
        default_lease_ttl: cfg.default_lease_ttl,
        max_lease_ttl: cfg.max_lease_ttl,
        unauthenticated_metrics_access: cfg.unauthenticated_metrics_access,
        cluster_name: cfg.cluster_name.clone(),
    }
}

/// Starts a server from a validated config: TLS material is loaded and the port bound
/// before storage is touched, so every configuration error surfaces before serving.
/// A keyfile seal unseals automatically; a Shamir seal starts sealed.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    let tls = listener::tls_config(&cfg.listener)?;
    let l = listener::bind(cfg.listen_addr).await?;
    let addr = l
        .local_addr()
        .map_err(|source| listener::ListenError::Bind {
            addr: cfg.listen_addr,
            source,
        })?;
    let store = open_storage(&cfg.storage).await?;
    let (registry, wired) = engines::engines(&engines::EngineSettings::from_config(cfg));
    let core = Core::new(store, core_config(cfg), registry).await?;
    if core.initialized() && matches!(cfg.seal, config::SealConfig::Keyfile { .. }) {
        core.auto_unseal().await?;
    }
    token::spawn_sweeper(core.clone(), std::time::Duration::from_secs(60));
    let side = engines::start_listeners(&wired).await?;
    let app = http::router(core.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let api = listener::serve_until(l, tls, app, stopped(rx));
    let task = tokio::spawn(serve_with_side(api, side));
    Ok(Running {
        addr,
        core,
        engines: wired,
        task,
        stop,
    })
}

/// Dev mode: SQLite in `dir`, initialised with one share, unsealed, a `secret/` KV mount.
pub async fn start_dev(
    dir: &std::path::Path,
    addr: SocketAddr,
    root_token_id: Option<&str>,
) -> Result<(Running, zeroize::Zeroizing<String>, String), StartError> {
    start_dev_with(
        dir,
        addr,
        root_token_id,
        CoreConfig::default(),
        engines::EngineSettings::default(),
    )
    .await
}

/// [`start_dev`] with explicit core and engine settings (benchmarks lift the login rate
/// limit; tests add witnesses).
pub async fn start_dev_with(
    dir: &std::path::Path,
    addr: SocketAddr,
    root_token_id: Option<&str>,
    core_config: CoreConfig,
    engine_settings: engines::EngineSettings,
) -> Result<(Running, zeroize::Zeroizing<String>, String), StartError> {
    let l = listener::bind(addr).await?;
    let bound = l
        .local_addr()
        .map_err(|source| listener::ListenError::Bind { addr, source })?;
    let store = open_storage(&StorageConfig::Sqlite {
        path: dir.join("custos.db"),
    })
    .await?;
    let (registry, wired) = engines::engines(&engine_settings);
    let core = Core::new(store, core_config, registry).await?;
    let init = core.init(1, 1, root_token_id).await?;
    let share = hex::encode(&init.keys[0][..]);
    core.submit_unseal_share(Some(&share), false).await?;
    let req = logical::Request {
        id: String::new(),
        op: custos_acl::Operation::Update,
        path: "sys/mounts/secret".into(),
        data: serde_json::json!({"type": "kv", "description": "key/value secret storage", "options": {"version": "1"}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        token: Some(init.root_token.clone()),
        remote_addr: None,
        head: false,
        raw_body: None,
        peer_certs: Vec::new(),
    };
    core.handle(req).await?;
    token::spawn_sweeper(core.clone(), std::time::Duration::from_secs(60));
    let side = engines::start_listeners(&wired).await?;
    let app = http::router(core.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve_with_side(
        listener::serve_until(l, None, app, stopped(rx)),
        side,
    ));
    Ok((
        Running {
            addr: bound,
            core,
            engines: wired,
            task,
            stop,
        },
        init.root_token,
        share,
    ))
}
