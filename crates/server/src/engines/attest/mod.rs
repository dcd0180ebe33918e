//! Remote attestation (mount type `attest`): a device registry of TPMs (EK certificate
//! chained to a manufacturer CA, AK bound to the EK by credential activation), and
//! challenge/response attestation whose verdict names every failed rule. Reference values
//! for measured firmware are the signed provenance in a provenance mount, judged by a
//! firmware policy (the `custos fw verify` one).
//!
//! | path | operations |
//! |---|---|
//! | `config` | read, write: manufacturer CAs, attestation policy, firmware policy, provenance mount, nonce TTL |
//! | `devices` | list |
//! | `devices/<id>` | write (enrol: answers the credential to activate), read (record and status), delete |
//! | `devices/<id>/activate` | write: the credential the TPM recovered |
//! | `devices/<id>/nonce` | write: a fresh nonce for the next quote |
//! | `devices/<id>/quote` | write: quote, signature and event log → verdict |
//! | `devices/<id>/installs` | write: an install `custos fw install` made (raises the floor) |
//! | `devices/<id>/quarantine` | write: quarantine with a `reason` (idempotent) |
//! | `devices/<id>/release` | write: release with a `reason`; needs a TRUSTED verdict newer than the quarantine |
//! | `devices/<id>/attest-now` | write: ask the device to attest now and wait (`timeout`) for the verdict |
//! | `devices/<id>/requests` | read: the device's agent waits here (`wait`) for an attestation request |
//! | `recall` | write: quarantine every listed device (`devices`), or a whole `device_class` |
//! | `signer-alert` | write: a monitor alert naming a `signer`: classes with `signer_alert` quarantine its devices |
//! | `fleet` | read: devices filtered (`class`, `state`, `version`, `expiring_within`, `signer`) and paged (`after`, `limit`) |
//! | `fleet/counts`, `fleet/outliers` | read |
//! | `webhook` | read: the outbox (pending events, last error) |
//! | `rollouts` | list; write: an image (`image_sha256`) to a `device_class` in waves (`canary`, `waves` %, `deadline`) |
//! | `rollouts/<id>` | read; `…/advance` and `…/halt` (`reason`) write |
//! | `posture` | read: the supply-chain assessment (`expiring_within`, `key_max_age`) |
//!
//! Statuses: PENDING (enrolled, not activated), UNATTESTED, TRUSTED, UNTRUSTED, STALE (the
//! last TRUSTED verdict is older than the class's `interval`); the fleet view adds
//! QUARANTINED and calls the first two UNKNOWN.

mod config;
mod devices;
mod fleet;
mod posture;
mod quarantine;
mod quote;
mod rollout;
mod webhook;

pub use quarantine::Holds;

use crate::core::barrier::View;
use crate::core::engine::Sys;
use crate::core::engine::{Ctx, Engine, PathSpec};
use crate::core::services::{CertIssuer, DeviceCerts, PostureSource, ProvenanceStore, TrustLog};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation::*;
use custos_attest::verify::LastQuote;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Outstanding nonces kept at most (one per device; expired ones are dropped first).
const MAX_NONCES: usize = 200_000;
/// Lock stripes for device records.
const STRIPES: usize = 64;
/// Seconds a firmware reference decision is reused while its inputs are unchanged.
const REFERENCE_TTL: i64 = 60;
/// Reference decisions kept at most.
const MAX_REFERENCES: usize = 10_000;

/// What a reference decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefKey {
    /// The configuration it was made under.
    pub config: u64,
    /// The device class.
    pub class: String,
    /// SHA-256 of the image's bundles as stored.
    pub bundles: Vec<u8>,
    /// SHA-256 of the CRL judged against.
    pub crl: Vec<u8>,
}

/// A device, as the registry stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The device ID.
    pub id: String,
    /// Its class (the attestation and firmware policies' class).
    pub device_class: String,
    /// Hardware IDs.
    pub hardware_ids: Vec<String>,
    /// The NF instance IDs that run on it.
    pub nf_instance_ids: Vec<String>,
    /// Serials of the certificates that belong to it.
    pub cert_serials: Vec<String>,
    /// The EK's TPM2B_PUBLIC, hex.
    pub ek_public: String,
    /// SHA-256 of the EK's public area, hex.
    pub ek_sha256: String,
    /// The EK certificate's issuer.
    pub ek_issuer: String,
    /// The EK certificate's serial.
    pub ek_serial: String,
    /// TPM manufacturer, model and version from the EK certificate.
    pub tpm: Vec<String>,
    /// The AK's TPM2B_PUBLIC, hex.
    pub ak_public: String,
    /// The AK's Name, hex.
    pub ak_name: String,
    /// Waiting for credential activation.
    pub pending: Option<devices::Pending>,
    /// When activated (Unix seconds).
    pub enrolled_at: Option<i64>,
    /// The anti-rollback floor: the highest security version installed.
    pub floor: u64,
    /// Reported installs, newest last.
    pub installs: Vec<devices::Install>,
    /// The last accepted quote's clock.
    pub last_quote: Option<LastQuote>,
    /// The last verdict.
    pub verdict: Option<Value>,
    /// When the device last attested TRUSTED.
    pub last_trusted_at: Option<i64>,
    /// Display names of the tokens its logins make (`approle-du-0017`): refused while it
    /// is quarantined.
    #[serde(default)]
    pub logins: Vec<String>,
    /// Quarantined, why and since when.
    #[serde(default)]
    pub quarantine: Option<quarantine::Hold>,
    /// The earliest expiry of its unrevoked certificates in the device PKI mount, as last
    /// seen (at its last attestation).
    #[serde(default)]
    pub cert_not_after: Option<i64>,
}

impl Record {
    /// The status at `now`, given the class's attestation interval.
    pub fn status(&self, now: i64, interval: Option<u64>) -> &'static str {
        if self.pending.is_some() {
            return "PENDING";
        }
        let Some(v) = &self.verdict else {
            return "UNATTESTED";
        };
        if v.get("status").and_then(Value::as_str) != Some("TRUSTED") {
            return "UNTRUSTED";
        }
        match (self.last_trusted_at, interval) {
            (Some(t), Some(i)) if now - t > i as i64 => "STALE",
            _ => "TRUSTED",
        }
    }
}

/// The attestation engine.
pub struct AttestEngine {
    log: Arc<dyn TrustLog>,
    provenance: Arc<dyn ProvenanceStore>,
    certs: Arc<dyn CertIssuer>,
    /// `<mount uuid>/<device>` → (nonce, expiry).
    nonces: Mutex<HashMap<String, (Vec<u8>, i64)>>,
    /// Parsed configurations by mount uuid, with the stored form they came from.
    configs: Mutex<HashMap<String, Arc<config::Parsed>>>,
    /// Firmware reference decisions, with when they were made.
    references: Mutex<HashMap<RefKey, (i64, Option<custos_attest::verify::ReferenceImage>)>>,
    /// Bumped at every configuration load or write (reference decisions follow it).
    generation: std::sync::atomic::AtomicU64,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// The certificates bound to devices (revoked by a quarantine).
    device_certs: Arc<dyn DeviceCerts>,
    /// The identities of quarantined devices (the [`crate::core::services::Quarantine`]
    /// other engines consult).
    holds: Arc<Holds>,
    /// Each mount's fleet view, by mount uuid.
    fleets: std::sync::RwLock<HashMap<String, fleet::Slot>>,
    /// The core's handle, from the first unseal.
    sys: std::sync::OnceLock<Sys>,
    /// Wakes the webhook sender.
    wake: tokio::sync::Notify,
    /// Attestation requests waiting for their device, by `<mount uuid>/<device>`.
    requests: tokio::sync::watch::Sender<HashMap<String, u64>>,
    /// The webhook sender runs.
    sender: std::sync::atomic::AtomicBool,
    /// Itself (the webhook sender holds it).
    me: std::sync::Weak<AttestEngine>,
    /// The running rollout of each device, by `<mount uuid>/<device>`.
    rollout_devices: std::sync::RwLock<HashMap<String, String>>,
    /// Serialises rollout steps.
    rollout_lock: tokio::sync::Mutex<()>,
    /// The other engines' parts of the posture report.
    posture: Vec<Arc<dyn PostureSource>>,
}

impl AttestEngine {
    /// An attestation engine logging to `log`, judging firmware by `provenance`, with CRLs
    /// from `certs`.
    pub fn new(
        log: Arc<dyn TrustLog>,
        provenance: Arc<dyn ProvenanceStore>,
        certs: Arc<dyn CertIssuer>,
        device_certs: Arc<dyn DeviceCerts>,
        posture: Vec<Arc<dyn PostureSource>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| AttestEngine {
            posture,
            me: me.clone(),
            rollout_devices: std::sync::RwLock::new(HashMap::new()),
            rollout_lock: tokio::sync::Mutex::new(()),
            device_certs,
            holds: Arc::new(Holds::default()),
            fleets: std::sync::RwLock::new(HashMap::new()),
            sys: std::sync::OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            requests: tokio::sync::watch::channel(HashMap::new()).0,
            sender: std::sync::atomic::AtomicBool::new(false),
            log,
            provenance,
            certs,
            nonces: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            references: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(1),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    /// The quarantine list other engines consult.
    pub fn holds(&self) -> Arc<Holds> {
        self.holds.clone()
    }

    /// Serialises changes to one device's record.
    async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let h = id.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.stripes[h % STRIPES].lock().await
    }

    /// The mount's configuration (parsed once, until it is written again).
    async fn config(&self, view: &View) -> ApiResult<Arc<config::Parsed>> {
        let key = view.prefix().to_string();
        if let Some(c) = self.configs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let stored: config::Stored = view.get_json("config").await?.ok_or_else(|| {
            ApiError::bad("the attestation mount has no config yet: write <mount>/config first")
        })?;
        let mut p = config::Parsed::parse(stored)?;
        p.generation = self.next_generation();
        let p = Arc::new(p);
        if let Ok(mut m) = self.configs.lock() {
            m.insert(key, p.clone());
        }
        Ok(p)
    }

    fn next_generation(&self) -> u64 {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A reference decision made under `key` less than [`REFERENCE_TTL`] seconds ago.
    #[allow(clippy::option_option)]
    fn cached_reference(
        &self,
        key: &RefKey,
        now: i64,
    ) -> Option<Option<custos_attest::verify::ReferenceImage>> {
        let m = self.references.lock().ok()?;
        let (at, r) = m.get(key)?;
        (now - at < REFERENCE_TTL).then(|| r.clone())
    }

    fn cache_reference(
        &self,
        key: RefKey,
        now: i64,
        r: Option<custos_attest::verify::ReferenceImage>,
    ) {
        if let Ok(mut m) = self.references.lock() {
            if m.len() >= MAX_REFERENCES {
                m.retain(|_, (at, _)| now - *at < REFERENCE_TTL);
                if m.len() >= MAX_REFERENCES {
                    m.clear();
                }
            }
            m.insert(key, (now, r));
        }
    }

    fn nonce_key(ctx: &Ctx<'_>, id: &str) -> String {
        format!("{}/{id}", ctx.mount.uuid)
    }

    fn put_nonce(&self, ctx: &Ctx<'_>, id: &str, n: Vec<u8>, expires: i64) {
        if let Ok(mut m) = self.nonces.lock() {
            if m.len() >= MAX_NONCES {
                let t = now();
                m.retain(|_, (_, e)| *e >= t);
            }
            if m.len() < MAX_NONCES {
                m.insert(Self::nonce_key(ctx, id), (n, expires));
            }
        }
    }

    /// Takes (and so spends) the device's nonce, if it has one that has not expired.
    fn take_nonce(&self, ctx: &Ctx<'_>, id: &str) -> Option<Vec<u8>> {
        let (n, e) = self.nonces.lock().ok()?.remove(&Self::nonce_key(ctx, id))?;
        (e >= now()).then_some(n)
    }

    fn forget_nonce(&self, ctx: &Ctx<'_>, id: &str) {
        if let Ok(mut m) = self.nonces.lock() {
            m.remove(&Self::nonce_key(ctx, id));
        }
    }
}

/// The device's record, if any.
async fn find(view: &View, id: &str) -> ApiResult<Option<Record>> {
    view.get_json::<Record>(&format!("device/{id}")).await
}

/// The device's record; 404 without one.
async fn record(view: &View, id: &str) -> ApiResult<Record> {
    find(view, id).await?.ok_or(ApiError::NotFound)
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    crate::core::now_unix()
}

/// A device ID: 1 to 128 of `[A-Za-z0-9._-]`.
fn device_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A required base64 field of at most `max` decoded bytes.
fn b64(req: &Request, k: &str, max: usize) -> ApiResult<Vec<u8>> {
    use base64::Engine as _;
    let s = req
        .data
        .get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad(format!("{k}: required (base64)")))?;
    if s.len() > max.div_ceil(3) * 4 + 4 {
        return Err(ApiError::bad(format!("{k}: larger than {max} bytes")));
    }
    let b = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| ApiError::bad(format!("{k}: not base64: {e}")))?;
    if b.len() > max {
        return Err(ApiError::bad(format!("{k}: larger than {max} bytes")));
    }
    Ok(b)
}

#[async_trait::async_trait]
impl Engine for AttestEngine {
    fn route(&self, sub: &str) -> Option<PathSpec> {
        let parts: Vec<&str> = sub.split('/').collect();
        Some(match parts.as_slice() {
            ["config"] => PathSpec::new(&[Read, Create, Update]),
            ["devices"] | [""] => PathSpec::new(&[List]),
            ["devices", id] if device_id(id) => PathSpec::new(&[Read, Create, Update, Delete]),
            ["devices", id, "activate" | "nonce" | "quote" | "installs" | "quarantine" | "release"
            | "attest-now"]
                if device_id(id) =>
            {
                PathSpec::new(&[Create, Update])
            }
            ["devices", id, "requests"] if device_id(id) => PathSpec::new(&[Read]),
            ["recall" | "signer-alert"] => PathSpec::new(&[Create, Update]),
            ["fleet"] | ["fleet", "counts" | "outliers"] | ["webhook"] => PathSpec::new(&[Read]),
            ["posture"] => PathSpec::new(&[Read]),
            ["rollouts"] => PathSpec::new(&[List, Create, Update]),
            ["rollouts", id] if device_id(id) => PathSpec::new(&[Read]),
            ["rollouts", id, "advance" | "halt"] if device_id(id) => {
                PathSpec::new(&[Create, Update])
            }
            _ => return None,
        })
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        let parts: Vec<&str> = ctx.sub.split('/').collect();
        match (parts.as_slice(), req.op) {
            (["config"], Read) => Ok(Response::data(self.config(&ctx.view).await?.to_json())),
            (["config"], _) => {
                let old = ctx.view.get_json::<config::Stored>("config").await?;
                let mut p = config::Parsed::update(old, &req.data)?;
                p.generation = self.next_generation();
                ctx.view.put_json("config", &p.stored).await?;
                if let Ok(mut m) = self.configs.lock() {
                    m.insert(ctx.view.prefix().to_string(), Arc::new(p));
                }
                Ok(Response::empty())
            }
            (["devices"] | [""], _) => devices::list(ctx).await,
            (["devices", id], op) => {
                devices::check_id(id)?;
                match op {
                    Read => devices::read(self, ctx, id).await,
                    Delete => devices::remove(self, ctx, id).await,
                    _ => devices::enrol(self, ctx, id, req).await,
                }
            }
            (["devices", id, "activate"], _) => devices::activate(self, ctx, id, req).await,
            (["devices", id, "nonce"], _) => quote::nonce(self, ctx, id).await,
            (["devices", id, "quote"], _) => quote::quote(self, ctx, id, req).await,
            (["devices", id, "installs"], _) => devices::report_install(self, ctx, id, req).await,
            (["devices", id, "quarantine"], _) => {
                let why = quarantine::reason(req)?;
                let v = quarantine::quarantine(
                    self,
                    ctx.mount,
                    &ctx.view,
                    id,
                    &why,
                    &ctx.requester(),
                    None,
                )
                .await?;
                Ok(Response::data(v))
            }
            (["devices", id, "release"], _) => {
                let why = quarantine::reason(req)?;
                let v = quarantine::release(self, ctx.mount, &ctx.view, id, &why, &ctx.requester())
                    .await?;
                Ok(Response::data(v))
            }
            (["devices", id, "attest-now"], _) => quote::attest_now(self, ctx, id, req).await,
            (["devices", id, "requests"], _) => quote::wait_request(self, ctx, id, req).await,
            (["recall"], _) => devices::recall(self, ctx, req).await,
            (["signer-alert"], _) => {
                let why = quarantine::reason(req)?;
                let signer = req
                    .data
                    .get("signer")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty() && s.len() <= 512)
                    .ok_or_else(|| ApiError::bad("signer: required (a key ID or identity)"))?;
                let v = quarantine::signer_alert(
                    self,
                    ctx.mount,
                    &ctx.view,
                    signer,
                    &why,
                    &ctx.requester(),
                )
                .await?;
                Ok(Response::data(v))
            }
            (["fleet"], _) => fleet::list(self, ctx, req).await,
            (["fleet", "counts"], _) => fleet::counts(self, ctx).await,
            (["fleet", "outliers"], _) => fleet::outliers(self, ctx).await,
            (["webhook"], _) => Ok(Response::data(webhook::status(&ctx.view).await?)),
            (["rollouts", ..], _) => rollout::handle(self, ctx, &parts, req).await,
            (["posture"], _) => posture::report(self, ctx, req).await,
            _ => Err(ApiError::NoRoute(ctx.sub.to_string())),
        }
    }

    async fn unseal(&self, sys: &Sys) -> ApiResult<()> {
        let _ = self.sys.set(sys.clone());
        if !self.sender.swap(true, std::sync::atomic::Ordering::AcqRel) {
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(webhook::run(me, sys.clone()));
            }
        }
        // Quarantines hold from the first request on: loaded before the core serves.
        for m in sys.mounts().await? {
            let view = sys.view(&m)?;
            for id in view.list("quarantined/").await? {
                if let Some(r) = find(&view, &id).await? {
                    self.holds.hold(&m.path, &r);
                }
            }
            self.load_rollouts(&m, &view).await?;
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        fleet::gauges(self)
    }

    /// STALE devices past their grace period are quarantined (classes that say so).
    async fn periodic(&self, sys: &Sys) -> ApiResult<()> {
        for m in sys.mounts().await? {
            let view = sys.view(&m)?;
            if view.get_json::<config::Stored>("config").await?.is_none() {
                continue;
            }
            rollout::tick(self, &m, &view).await?;
            let n = quarantine::sweep_stale(self, &m, &view).await?;
            if n > 0 {
                tracing::warn!(mount = %m.path, devices = n, "stale devices quarantined");
            }
        }
        Ok(())
    }

    fn seal(&self) {
        self.holds.clear();
        if let Ok(mut r) = self.rollout_devices.write() {
            r.clear();
        }
        if let Ok(mut m) = self.fleets.write() {
            m.clear();
        }
        if let Ok(mut m) = self.nonces.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.references.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.configs.lock() {
            m.clear();
        }
    }

    async fn unmount(
        &self,
        _sys: &crate::core::engine::Sys,
        m: &crate::core::mounts::MountEntry,
    ) -> ApiResult<()> {
        let prefix = format!("{}/", m.uuid);
        if let Ok(mut n) = self.nonces.lock() {
            n.retain(|k, _| !k.starts_with(&prefix));
        }
        if let Ok(mut c) = self.configs.lock() {
            c.retain(|k, _| !k.contains(&m.uuid));
        }
        if let Ok(mut f) = self.fleets.write() {
            f.remove(&m.uuid);
        }
        if let Ok(mut r) = self.rollout_devices.write() {
            r.retain(|k, _| !k.starts_with(&prefix));
        }
        Ok(())
    }
}
