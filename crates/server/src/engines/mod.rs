//! The engines, and the composition root: the one place that knows every engine. Each
//! folder is one engine (a secrets engine, a login method or a system engine) behind
//! [`crate::core::engine::Engine`]; an engine may use the engine interface, its barrier
//! [`crate::core::barrier::View`] and the narrow services of [`crate::core::services`], and
//! never imports another engine. [`engines`] builds them, wires the services they offer each
//! other, and registers them by type name in the [`Registry`] the core is built with.
//!
//! **Adding an engine** touches this file and nothing else outside the engine's folder: its
//! `pub mod` line and its registration line in [`engines`].

pub mod attest;
pub mod auth;
pub mod kv;
pub mod nrf;
pub mod pki;
pub mod provenance;
pub mod tlog;

use crate::config::{Config, SbiConfig, TlogWitness};
use crate::core::engine::Registry;
use crate::core::services::{
    CertIssuer, DeviceCerts, PostureSource, ProvenanceStore, Quarantine, RevocationLookup, TrustLog,
};
use std::sync::Arc;

/// What the engines are configured with (the parts of [`Config`] that are theirs).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The transparency log's origin, used when the log is created (empty: derived from the
    /// cluster name and the log's key, e.g. `custos.local/core-east/3f9a01bc`).
    pub tlog_origin: String,
    /// The cluster name (a derived log origin carries it).
    pub cluster_name: String,
    /// Witnesses asked to cosign each new checkpoint.
    pub tlog_witnesses: Vec<TlogWitness>,
    /// Cosignatures a checkpoint needs before it is served at `sys/tlog/checkpoint`
    /// (0: all the witnesses).
    pub tlog_witness_threshold: usize,
    /// The NRF's SBI listener, when configured.
    pub sbi: Option<SbiConfig>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            tlog_origin: String::new(),
            cluster_name: "custos".into(),
            tlog_witnesses: Vec::new(),
            tlog_witness_threshold: 0,
            sbi: None,
        }
    }
}

impl EngineSettings {
    /// The engine settings of a server config.
    pub fn from_config(cfg: &Config) -> Self {
        EngineSettings {
            tlog_origin: cfg.tlog_origin.clone(),
            cluster_name: cfg.cluster_name.clone(),
            tlog_witnesses: cfg.tlog_witnesses.clone(),
            tlog_witness_threshold: cfg.tlog_witness_threshold,
            sbi: cfg.sbi.clone(),
        }
    }
}

/// Engines the server keeps handles to beyond the registry: listeners of their own, and
/// in-process harnesses (`custos bench --tlog`).
#[derive(Clone)]
pub struct Engines {
    /// The transparency log.
    pub tlog: Arc<tlog::TlogEngine>,
    /// The NRF, when `[sbi]` is configured.
    pub nrf: Option<Arc<nrf::NrfEngine>>,
}

/// Builds every engine and the registry the core is built with.
pub fn engines(settings: &EngineSettings) -> (Registry, Engines) {
    let tlog = Arc::new(
        tlog::TlogEngine::new(
            settings.tlog_origin.clone(),
            settings.tlog_witnesses.clone(),
        )
        .with_witness_threshold(settings.tlog_witness_threshold)
        .with_cluster(&settings.cluster_name),
    );
    let log: Arc<dyn TrustLog> = tlog.clone();
    let pki = Arc::new(pki::Pki::new(log.clone()));
    let revocation: Arc<dyn RevocationLookup> = pki.clone();
    let issuer: Arc<dyn CertIssuer> = pki.clone();

    let mut r = Registry::new(log.clone());
    r.secrets("kv", Arc::new(kv::Kv));
    r.secrets("pki", pki.clone());
    let provenance = Arc::new(provenance::Provenance::new(log.clone()));
    let provenance_store: Arc<dyn ProvenanceStore> = provenance.clone();
    r.secrets("provenance", provenance.clone());
    let device_certs: Arc<dyn DeviceCerts> = pki.clone();
    let posture: Vec<Arc<dyn PostureSource>> = vec![pki.clone(), provenance.clone()];
    let attest = attest::AttestEngine::new(
        log.clone(),
        provenance_store,
        issuer.clone(),
        device_certs,
        posture,
    );
    // The closed loop: what the attestation engine quarantines, PKI, logins and the NRF refuse.
    let quarantine: Arc<dyn Quarantine> = attest.holds();
    pki.set_quarantine(quarantine.clone());
    r.quarantine(quarantine.clone());
    r.secrets("attest", attest);
    for (kind, method) in auth::methods(revocation.clone()) {
        r.auth(kind, method);
    }
    r.system("tlog", "tlog/", tlog.clone());
    let nrf = settings.sbi.as_ref().map(|cfg| {
        let n = Arc::new(nrf::NrfEngine::new(
            cfg.clone(),
            log,
            revocation,
            issuer,
            quarantine.clone(),
        ));
        r.system("nrf", "nrf/", n.clone());
        n
    });
    (r, Engines { tlog, nrf })
}

/// Starts the listeners engines run beside the API listener (the NRF's SBI).
pub async fn start_listeners(
    engines: &Engines,
) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::listener::ListenError> {
    let mut tasks = Vec::new();
    if let Some(n) = &engines.nrf {
        tasks.push(nrf::start(n.clone()).await?);
    }
    Ok(tasks)
}
