//! The core: seal state machine, the encrypted view of storage, and the request pipeline
//! (route → authenticate → authorise → audit request → handle → audit response).
//!
//! **Must never** import or name an engine (`tests/engine_boundaries.rs`): engines reach
//! the core through [`engine::Engine`], the core reaches them through the [`engine::Registry`]
//! the composition root (`engines/mod.rs`) builds.

pub mod audit_dev;
pub mod barrier;
pub mod duration;
pub mod engine;
pub mod error;
pub mod http;
pub mod listener;
pub mod logical;
pub mod metrics;
pub mod mounts;
mod policy;
pub(crate) mod ratelimit;
mod router;
pub mod seal;
pub mod services;
mod sys;
pub mod token;

use crate::audit_dev::AuditBroker;
use crate::config::{Limits, SealConfig};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::metrics::Metrics;
use crate::mounts::MountTable;
use crate::seal::{decode_share, StoredSealConfig, KEYRING_PATH, ROOT_KEY_PATH, SEAL_CONFIG_PATH};
use crate::token::TokenEntry;
use aws_lc_rs::hmac;
use barrier::{Barrier, Plain};
use custos_acl::Policy;
use custos_barrier::{shamir, Keyring, SecretKey, KEY_LEN};
use custos_store::{Storage, WriteOp};
use engine::{Registry, Sys};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use zeroize::Zeroizing;

/// Storage key of the token HMAC key (encrypted).
pub(crate) const TOKEN_KEY_PATH: &str = "core/token-hmac-key";

/// Settings the core needs (the subset of [`crate::config::Config`] that is not about I/O).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How the unseal key is held.
    pub seal: SealConfig,
    /// Request limits.
    pub limits: Limits,
    /// Default TTL for tokens.
    pub default_lease_ttl: u64,
    /// Max TTL for tokens.
    pub max_lease_ttl: u64,
    /// Serve metrics without a token.
    pub unauthenticated_metrics_access: bool,
    /// Cluster name for health.
    pub cluster_name: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            seal: SealConfig::Shamir,
            limits: Limits::default(),
            default_lease_ttl: crate::config::DEFAULT_TTL,
            max_lease_ttl: crate::config::DEFAULT_TTL,
            unauthenticated_metrics_access: false,
            cluster_name: "custos".into(),
        }
    }
}

/// Everything that exists only while unsealed. Sealing drops it and seals its barrier
/// (the keys are zeroized even if an engine still holds a view).
pub(crate) struct Active {
    pub(crate) barrier: Arc<Barrier>,
    pub(crate) token_key: hmac::Key,
    pub(crate) policies: RwLock<HashMap<String, Arc<Policy>>>,
    pub(crate) mounts: tokio::sync::RwLock<MountTable>,
    pub(crate) auth_mounts: tokio::sync::RwLock<MountTable>,
    pub(crate) audit: AuditBroker,
    /// Serialises use-count updates of limited-use tokens.
    pub(crate) use_lock: tokio::sync::Mutex<()>,
    /// Where trust events go (ACL policy changes are the core's own).
    pub(crate) trust_log: Arc<dyn services::TrustLog>,
}

impl std::ops::Deref for Active {
    type Target = Barrier;
    fn deref(&self) -> &Barrier {
        &self.barrier
    }
}

impl Active {
    fn new(
        store: Arc<dyn Storage>,
        keyring: Keyring,
        token_key: &[u8],
        trust_log: Arc<dyn services::TrustLog>,
    ) -> Self {
        Active {
            barrier: Arc::new(Barrier::new(store, keyring)),
            token_key: hmac::Key::new(hmac::HMAC_SHA256, token_key),
            policies: RwLock::new(HashMap::new()),
            mounts: tokio::sync::RwLock::new(MountTable::default_secrets()),
            auth_mounts: tokio::sync::RwLock::new(MountTable::default_auth()),
            audit: AuditBroker::default(),
            use_lock: tokio::sync::Mutex::new(()),
            trust_log,
        }
    }
}

fn poisoned() -> ApiError {
    ApiError::internal(std::io::Error::other("lock poisoned"))
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

enum State {
    Uninitialized,
    Sealed,
    /// Unsealed, engines still starting: requests see a sealed core, engines their storage.
    Unsealing(Arc<Active>),
    Active(Arc<Active>),
}

struct UnsealProgress {
    shares: Vec<Zeroizing<Vec<u8>>>,
    nonce: String,
}

/// The server core, shared by every listener.
pub struct Core {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) cfg: CoreConfig,
    state: RwLock<State>,
    seal_config: RwLock<Option<StoredSealConfig>>,
    unseal: tokio::sync::Mutex<UnsealProgress>,
    pub(crate) metrics: Metrics,
    pub(crate) started: i64,
    /// Login rate limit per (auth mount, role, source).
    pub(crate) login_limiter: crate::core::ratelimit::LoginLimiter,
    /// The engines, by type name.
    pub(crate) registry: Registry,
    /// One handle per registered engine (same order as `registry.engines`).
    pub(crate) sys: Vec<Sys>,
}

/// The result of `sys/init`.
pub struct InitResult {
    /// Unseal shares (empty for keyfile seals).
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// The initial root token.
    pub root_token: Zeroizing<String>,
}

impl Core {
    /// Opens the core over `store`. Reads the seal configuration; never unseals by itself
    /// (call [`Core::auto_unseal`] for keyfile seals).
    pub async fn new(
        store: Arc<dyn Storage>,
        cfg: CoreConfig,
        registry: Registry,
    ) -> Result<Arc<Self>, ApiError> {
        let sc: Option<StoredSealConfig> = match store.get(SEAL_CONFIG_PATH).await? {
            Some(b) => Some(serde_json::from_slice(&b)?),
            None => None,
        };
        let state = if sc.is_some() {
            State::Sealed
        } else {
            State::Uninitialized
        };
        let login_limiter = crate::core::ratelimit::LoginLimiter::new(
            cfg.limits.login_rate,
            cfg.limits.login_burst,
        );
        Ok(Arc::new_cyclic(|me: &Weak<Core>| Core {
            sys: registry
                .engines
                .iter()
                .map(|r| Sys::new(me.clone(), r))
                .collect(),
            registry,
            login_limiter,
            store,
            cfg,
            state: RwLock::new(state),
            seal_config: RwLock::new(sc),
            unseal: tokio::sync::Mutex::new(UnsealProgress {
                shares: Vec::new(),
                nonce: String::new(),
            }),
            metrics: Metrics::default(),
            started: now_unix(),
        }))
    }

    pub(crate) fn active(&self) -> Option<Arc<Active>> {
        match &*self.state.read().ok()? {
            State::Active(a) => Some(a.clone()),
            _ => None,
        }
    }

    /// The unsealed state as engines see it: also while their unseal hooks run.
    pub(crate) fn active_for_engines(&self) -> Option<Arc<Active>> {
        match &*self.state.read().ok()? {
            State::Active(a) | State::Unsealing(a) => Some(a.clone()),
            _ => None,
        }
    }

    /// Whether `sys/init` has run.
    pub fn initialized(&self) -> bool {
        self.seal_config
            .read()
            .map(|s| s.is_some())
            .unwrap_or(false)
    }

    /// Whether the core is sealed (uninitialized counts as sealed).
    pub fn sealed(&self) -> bool {
        self.active().is_none()
    }

    pub(crate) fn seal_params(&self) -> Option<StoredSealConfig> {
        self.seal_config.read().ok().and_then(|s| s.clone())
    }

    /// Initializes: creates the keyring, root key, unseal shares and the root token, in one
    /// atomic write. `root_token_id` fixes the root token (dev mode only).
    pub async fn init(
        &self,
        shares: u8,
        threshold: u8,
        root_token_id: Option<&str>,
    ) -> ApiResult<InitResult> {
        // Serialises init with itself and with unseal: two concurrent inits must not both
        // pass the check below and overwrite each other's root key.
        let _guard = self.unseal.lock().await;
        if self.initialized() {
            return Err(ApiError::bad("Custos is already initialized"));
        }
        let now = now_unix();
        let keyring = Keyring::generate(now)?;
        let (unseal_key, keys, kind, shares, threshold): (SecretKey, _, _, u8, u8) = match &self
            .cfg
            .seal
        {
            SealConfig::Shamir => {
                if shares == 0 || threshold == 0 || threshold > shares {
                    return Err(ApiError::bad(format!(
                            "invalid seal configuration: need 1 <= secret_threshold <= secret_shares <= 255 (got threshold {threshold}, shares {shares})"
                        )));
                }
                if threshold == 1 && shares > 1 {
                    return Err(ApiError::bad(
                            "invalid seal configuration: secret_threshold must be greater than 1 when secret_shares is greater than 1",
                        ));
                }
                let key = custos_barrier::generate_key()?;
                let parts = if shares == 1 {
                    let mut one = Zeroizing::new(key.to_vec());
                    one.push(1);
                    // A single "share" is the key itself plus x=1, so 1-of-1 works uniformly.
                    vec![one]
                } else {
                    shamir::split(key.as_ref(), threshold as usize, shares as usize)
                        .map_err(custos_barrier::BarrierError::from)?
                };
                (key, parts, "shamir", shares, threshold)
            }
            SealConfig::Keyfile { key_file } => {
                let key = crate::seal::read_key_file(key_file)
                    .map_err(|e| ApiError::internal(std::io::Error::other(e)))?;
                (key, Vec::new(), "keyfile", 1, 1)
            }
        };
        let sc = StoredSealConfig {
            kind: kind.into(),
            secret_shares: shares,
            secret_threshold: threshold,
            initialized_at: now,
        };
        let root_wrapped =
            custos_barrier::seal_with_key(&unseal_key, ROOT_KEY_PATH, keyring.root_key())?;
        let token_key = custos_barrier::generate_key()?;
        let active = Active::new(
            self.store.clone(),
            keyring,
            token_key.as_ref(),
            self.registry.trust_log.clone(),
        );
        let (root_token, root_entry) = TokenEntry::new_root(&active, root_token_id, now)?;
        let mut plain = vec![
            Plain::Put(TOKEN_KEY_PATH.into(), token_key.to_vec()),
            Plain::Put(
                policy::policy_key("default"),
                serde_json::to_vec(
                    &json!({"name": "default", "policy": custos_acl::DEFAULT_POLICY}),
                )?,
            ),
            Plain::Put(
                crate::mounts::MOUNTS_PATH.into(),
                serde_json::to_vec(&*active.mounts.read().await)?,
            ),
            Plain::Put(
                crate::mounts::AUTH_PATH.into(),
                serde_json::to_vec(&*active.auth_mounts.read().await)?,
            ),
        ];
        plain.extend(root_entry.storage_ops(&active)?);
        let mut ops = vec![
            WriteOp::Put {
                key: SEAL_CONFIG_PATH.into(),
                value: serde_json::to_vec(&sc)?,
            },
            WriteOp::Put {
                key: ROOT_KEY_PATH.into(),
                value: root_wrapped,
            },
            WriteOp::Put {
                key: KEYRING_PATH.into(),
                value: active.sealed_keyring()?,
            },
        ];
        for p in plain {
            ops.push(match p {
                Plain::Put(k, v) => {
                    let value = active.encrypt(&k, &v)?;
                    WriteOp::Put { key: k, value }
                }
                Plain::Delete(k) => WriteOp::Delete { key: k },
                Plain::Cert(row) => active.cert_op(row)?,
                Plain::DeleteCert(mount, serial) => WriteOp::DeleteCert { mount, serial },
            });
        }
        self.store.write(ops).await?;
        *self.seal_config.write().map_err(|_| poisoned())? = Some(sc);
        *self.state.write().map_err(|_| poisoned())? = State::Sealed;
        tracing::info!(kind, shares, threshold, "custos initialized");
        Ok(InitResult { keys, root_token })
    }

    /// Submits one unseal share. Returns `true` once unsealed. Duplicate shares are ignored;
    /// a wrong share makes the combination fail and resets progress.
    pub async fn submit_unseal_share(&self, share: Option<&str>, reset: bool) -> ApiResult<bool> {
        let sc = self
            .seal_params()
            .ok_or_else(|| ApiError::bad("Custos is not initialized"))?;
        if !self.sealed() {
            return Ok(true);
        }
        let mut progress = self.unseal.lock().await;
        if reset {
            progress.shares.clear();
            progress.nonce.clear();
            if share.is_none() {
                return Ok(false);
            }
        }
        let share = share.ok_or_else(|| {
            ApiError::bad("'key' must be specified in request body as JSON, or 'reset' set to true")
        })?;
        let share = decode_share(share).ok_or_else(|| {
            ApiError::bad(format!(
                "'key' must be a valid hex or base64 string of {} bytes",
                KEY_LEN + 1
            ))
        })?;
        if progress
            .shares
            .iter()
            .any(|s| bool::from(subtle::ConstantTimeEq::ct_eq(&s[..], &share[..])))
        {
            return Ok(false);
        }
        if progress.shares.is_empty() {
            progress.nonce = uuid::Uuid::new_v4().to_string();
        }
        progress.shares.push(share);
        if progress.shares.len() < sc.secret_threshold as usize {
            return Ok(false);
        }
        let shares = std::mem::take(&mut progress.shares);
        progress.nonce.clear();
        drop(progress);
        let key = if sc.secret_shares == 1 {
            let s = &shares[0];
            let mut k: SecretKey = Zeroizing::new([0u8; KEY_LEN]);
            k.copy_from_slice(&s[..KEY_LEN]);
            k
        } else {
            let refs: Vec<&[u8]> = shares.iter().map(|s| &s[..]).collect();
            let combined = shamir::combine(&refs).map_err(|e| {
                ApiError::bad(format!("invalid unseal key(s): {e}; progress reset"))
            })?;
            let mut k: SecretKey = Zeroizing::new([0u8; KEY_LEN]);
            k.copy_from_slice(&combined);
            k
        };
        self.unseal_with_key(&key).await.map_err(|e| match e {
            ApiError::Internal(inner)
                if inner
                    .downcast_ref::<custos_barrier::BarrierError>()
                    .is_some_and(|b| *b == custos_barrier::BarrierError::Authentication) =>
            {
                ApiError::bad("invalid unseal key(s): the shares do not reconstruct the unseal key; progress reset")
            }
            other => other,
        })?;
        Ok(true)
    }

    /// Current unseal progress: (shares received, nonce).
    pub async fn unseal_progress(&self) -> (usize, String) {
        let p = self.unseal.lock().await;
        (p.shares.len(), p.nonce.clone())
    }

    /// Unseals with the unseal key from the configured key file.
    pub async fn auto_unseal(&self) -> ApiResult<()> {
        let SealConfig::Keyfile { key_file } = &self.cfg.seal else {
            return Err(ApiError::bad("auto-unseal needs a keyfile seal"));
        };
        let key = crate::seal::read_key_file(key_file)
            .map_err(|e| ApiError::internal(std::io::Error::other(e)))?;
        self.unseal_with_key(&key).await
    }

    async fn unseal_with_key(&self, key: &[u8; KEY_LEN]) -> ApiResult<()> {
        if self.active_for_engines().is_some() {
            return Ok(());
        }
        let wrapped = self
            .store
            .get(ROOT_KEY_PATH)
            .await?
            .ok_or_else(|| ApiError::internal(std::io::Error::other("root key missing")))?;
        let root_bytes = custos_barrier::open_with_key(key, ROOT_KEY_PATH, &wrapped)?;
        if root_bytes.len() != KEY_LEN {
            return Err(ApiError::internal(std::io::Error::other(
                "root key corrupt",
            )));
        }
        let mut root: SecretKey = Zeroizing::new([0u8; KEY_LEN]);
        root.copy_from_slice(&root_bytes);
        let sealed_kr = self
            .store
            .get(KEYRING_PATH)
            .await?
            .ok_or_else(|| ApiError::internal(std::io::Error::other("keyring missing")))?;
        let keyring = Keyring::open(root, &sealed_kr)?;
        let tk_ct = self
            .store
            .get(TOKEN_KEY_PATH)
            .await?
            .ok_or_else(|| ApiError::internal(std::io::Error::other("token key missing")))?;
        let tk = Zeroizing::new(keyring.decrypt(TOKEN_KEY_PATH, &tk_ct)?);
        let active = Active::new(
            self.store.clone(),
            keyring,
            &tk,
            self.registry.trust_log.clone(),
        );
        if let Some(t) = active
            .get_json::<MountTable>(crate::mounts::MOUNTS_PATH)
            .await?
        {
            *active.mounts.write().await = t;
        }
        if let Some(t) = active
            .get_json::<MountTable>(crate::mounts::AUTH_PATH)
            .await?
        {
            *active.auth_mounts.write().await = t;
        }
        active.audit.load(&active).await?;
        let active = Arc::new(active);
        // Engines build their caches (the transparency log rebuilds its tree) while requests
        // still see a sealed core; a failing engine leaves the core sealed.
        *self.state.write().map_err(|_| poisoned())? = State::Unsealing(active.clone());
        for (r, sys) in self.registry.engines.iter().zip(&self.sys) {
            if let Err(e) = r.engine.unseal(sys).await {
                tracing::error!(engine = r.kind, error = %e, "engine failed to unseal; staying sealed");
                for r in &self.registry.engines {
                    r.engine.seal();
                }
                active.barrier.seal();
                *self.state.write().map_err(|_| poisoned())? = State::Sealed;
                return Err(e);
            }
        }
        *self.state.write().map_err(|_| poisoned())? = State::Active(active);
        tracing::info!("custos unsealed");
        Ok(())
    }

    /// Seals: every engine drops what it derived from unsealed data, and the keys are
    /// zeroized.
    pub fn seal(&self) -> ApiResult<()> {
        let mut st = self.state.write().map_err(|_| poisoned())?;
        if let State::Active(a) = &*st {
            for r in &self.registry.engines {
                r.engine.seal();
            }
            a.barrier.seal();
            *st = State::Sealed;
            tracing::info!("custos sealed");
        }
        Ok(())
    }

    /// The end of a graceful shutdown, once no request is in flight: every engine's shutdown
    /// hook runs (the transparency log records the audit chain heads a last time), then the
    /// core seals and its keys are zeroized.
    pub async fn shutdown(&self) {
        if self.sealed() {
            return;
        }
        for (r, sys) in self.registry.engines.iter().zip(&self.sys) {
            if let Err(e) = r.engine.shutdown(sys).await {
                tracing::warn!(engine = r.kind, error = %e, "engine shutdown step failed");
            }
        }
        if let Err(e) = self.seal() {
            tracing::warn!(error = %e, "sealing at shutdown failed");
        }
    }

    /// Runs every engine's periodic hook (the background task calls this every minute).
    pub(crate) async fn periodic(&self) {
        if self.sealed() {
            return;
        }
        for (r, sys) in self.registry.engines.iter().zip(&self.sys) {
            if let Err(e) = r.engine.periodic(sys).await {
                tracing::warn!(engine = r.kind, error = %e, "engine periodic task failed");
            }
        }
    }

    /// The `sys/seal-status` body.
    pub async fn seal_status(&self) -> Value {
        let sc = self.seal_params();
        let (progress, nonce) = self.unseal_progress().await;
        json!({
            "type": sc.as_ref().map(|s| s.kind.as_str()).unwrap_or("shamir"),
            "initialized": sc.is_some(),
            "sealed": self.sealed(),
            "t": sc.as_ref().map(|s| s.secret_threshold).unwrap_or(0),
            "n": sc.as_ref().map(|s| s.secret_shares).unwrap_or(0),
            "progress": progress,
            "nonce": nonce,
            "version": crate::VERSION,
            "build_date": "",
            "migration": false,
            "recovery_seal": false,
            "storage_type": self.store.backend(),
            "cluster_name": self.cfg.cluster_name,
            "cluster_id": "",
        })
    }

    /// Group-commit counters of the storage backend.
    pub fn store_stats(&self) -> custos_store::StoreStats {
        self.store.stats()
    }

    /// Revokes expired tokens now (the background sweeper calls the same code every minute).
    pub async fn sweep_expired_now(&self) -> ApiResult<usize> {
        let a = self.active().ok_or(ApiError::Sealed)?;
        a.sweep_expired(now_unix()).await
    }

    /// Runs one request through the whole pipeline.
    pub async fn handle(self: &Arc<Self>, req: Request) -> ApiResult<Response> {
        router::dispatch(self, req).await
    }
}
