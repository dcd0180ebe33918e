//! The NRF's state: the registry of NF profiles (loaded from the barrier once per unseal,
//! indexed by NF type), the ES256 signing keys and their rotation, heartbeats, and the SBI
//! listener's own certificate (issued from the configured PKI role and renewed at 2/3 of
//! its life).

// Helpers return the finished refusal (`Result<_, Response>`), which every handler sends
// as is; boxing it would only add an allocation on the error path.

use crate::config::SbiConfig;
use crate::core::barrier::{Plain, View};
use crate::core::engine::Sys;
use crate::core::now_unix;
use crate::core::services::{CertIssuer, Quarantine, RevocationLookup, Subject, TrustLog};
use crate::error::ApiError;
use custos_nrf::jws::Signer;
use custos_nrf::profile::Profile;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub(crate) struct TlsState {
    pub(super) config: Arc<rustls::ServerConfig>,
    pub(super) renew_at: i64,
    /// The NF CA certificates (DER): trust anchors for client credentials assertions.
    pub(super) cas: Vec<Vec<u8>>,
    /// The SBI certificate chain and key the config was built from (rebuilt with each CRL).
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    /// SHA-256 of the CRL the client verifier checks.
    crl_sha: Vec<u8>,
}

/// The SBI server config: client certificates must chain to the NF CA (`cas`) and must not
/// be on its CRL, which rustls enforces in the handshake and answers with the TLS alert
/// `certificate_revoked`, so an NF can tell revocation from a network fault.
fn sbi_config(
    chain: &[rustls::pki_types::CertificateDer<'static>],
    key: &rustls::pki_types::PrivateKeyDer<'static>,
    crl: &[u8],
) -> Result<rustls::ServerConfig, ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in chain.iter().skip(1) {
        roots.add(c.clone()).map_err(ApiError::internal)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if !crl.is_empty() {
        verifier = verifier
            .with_crls([rustls::pki_types::CertificateRevocationListDer::from(
                crl.to_vec(),
            )])
            // The CRL is the issuing CA's; a chain through another CA is judged by the
            // revocation check against the certificate inventory after the handshake.
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = verifier.build().map_err(ApiError::internal)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ApiError::internal)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(ApiError::internal)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Rebuilds the SBI config when the NF CA's CRL changed (a revocation): new handshakes with a
/// revoked certificate then fail with `certificate_revoked`. The PKI serves its CRL from a
/// cache until a revocation bumps it, so the check is cheap.
pub(super) async fn refresh_crl(nrf: &Nrf) -> Result<(), ApiError> {
    let current = nrf
        .tls
        .read()
        .ok()
        .and_then(|t| t.as_ref().map(|t| t.crl_sha.clone()));
    let Some(current) = current else {
        return Ok(());
    };
    let crl = nrf.issuer.crl(&nrf.cfg.pki_mount).await?;
    let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &crl)
        .as_ref()
        .to_vec();
    if sha == current {
        return Ok(());
    }
    if let Ok(mut t) = nrf.tls.write() {
        if let Some(t) = t.as_mut() {
            t.config = Arc::new(sbi_config(&t.chain, &t.key, &crl)?);
            t.crl_sha = sha;
        }
    }
    tracing::info!("SBI client verifier rebuilt with the NF CA's new CRL");
    Ok(())
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct StoredKeys {
    /// PKCS#8 of the current key, hex.
    pub(super) current: String,
    /// Retired public keys, published until their last token expires.
    pub(super) retired: Vec<(Value, i64)>,
}

impl Drop for StoredKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.current);
    }
}

/// What is loaded from the barrier for one unsealed core.
pub(crate) struct Loaded {
    /// The unsealed period it was loaded in ([`View::epoch`]).
    pub(super) epoch: usize,
    pub(super) profiles: HashMap<String, Arc<Profile>>,
    /// The same profiles by NF type, each list sorted by instance ID: discovery and token
    /// requests name a target type, so they read one list instead of the whole registry.
    pub(super) by_type: HashMap<String, Vec<Arc<Profile>>>,
    pub(super) signer: Arc<Signer>,
    pub(super) retired: Vec<(Value, i64)>,
}

impl Loaded {
    pub(super) fn index(&mut self, id: &str, p: Option<Arc<Profile>>) {
        if let Some(old) = self.profiles.remove(id) {
            if let Some(v) = self.by_type.get_mut(&old.nf_type) {
                v.retain(|q| q.id != id);
            }
        }
        if let Some(p) = p {
            let v = self.by_type.entry(p.nf_type.clone()).or_default();
            let at = v.partition_point(|q| q.id.as_str() < id);
            v.insert(at, p.clone());
            self.profiles.insert(id.to_string(), p);
        }
    }
}

/// NRF state shared by the listener, its tasks and handlers.
pub(crate) struct Nrf {
    pub(crate) cfg: SbiConfig,
    /// The engine's handle on the core, from the first unseal on.
    pub(crate) sys: std::sync::OnceLock<Sys>,
    /// Why the SBI listener cannot serve yet (`None`: it can).
    pub(super) unready: RwLock<Option<String>>,
    pub(super) log: Arc<dyn TrustLog>,
    pub(super) revocation: Arc<dyn RevocationLookup>,
    pub(super) issuer: Arc<dyn CertIssuer>,
    /// Quarantined devices' NFs: no tokens, hidden from discovery, connections closed.
    pub(super) quarantine: Arc<dyn Quarantine>,
    pub(super) tls: RwLock<Option<TlsState>>,
    pub(super) loaded: RwLock<Option<Loaded>>,
    pub(super) beats: Mutex<HashMap<String, Instant>>,
    /// Serialises registry writes (memory follows storage in commit order).
    pub(super) write: tokio::sync::Mutex<()>,
}

impl Nrf {
    pub(crate) fn new(
        cfg: SbiConfig,
        log: Arc<dyn TrustLog>,
        revocation: Arc<dyn RevocationLookup>,
        issuer: Arc<dyn CertIssuer>,
        quarantine: Arc<dyn Quarantine>,
    ) -> Arc<Nrf> {
        Arc::new(Nrf {
            cfg,
            sys: std::sync::OnceLock::new(),
            unready: RwLock::new(None),
            log,
            revocation,
            issuer,
            quarantine,
            tls: RwLock::new(None),
            loaded: RwLock::new(None),
            beats: Mutex::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Why the NF `id` (or the certificate `serial`) is quarantined, if it is: its
    /// registration is then suspended (kept, not served).
    pub(super) fn suspended(&self, id: &str, serial: Option<&str>) -> Option<String> {
        self.quarantine.refusal(&Subject {
            nf_instance_ids: &[id],
            cert_serial: serial,
            display_name: None,
        })
    }

    pub(super) fn profile(&self, id: &str) -> Option<Arc<Profile>> {
        self.loaded.read().ok()?.as_ref()?.profiles.get(id).cloned()
    }

    /// The registered profiles of one NF type, sorted by instance ID.
    pub(super) fn profiles_of_type(&self, nf_type: &str) -> Vec<Arc<Profile>> {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.as_ref().and_then(|l| l.by_type.get(nf_type).cloned()))
            .unwrap_or_default()
    }

    pub(super) fn profiles(&self) -> Vec<Arc<Profile>> {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.profiles.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// Whether the SBI listener serves, and why not (for `sys/health`).
    pub(super) fn readiness(&self) -> (bool, String) {
        let has_tls = self.tls.read().map(|t| t.is_some()).unwrap_or(false);
        let why = self
            .unready
            .read()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "starting".into());
        if has_tls {
            (true, String::new())
        } else {
            (false, why)
        }
    }

    pub(super) fn set_unready(&self, why: Option<String>) {
        if let Ok(mut w) = self.unready.write() {
            *w = why;
        }
    }

    /// The NRF's storage while unsealed.
    pub(crate) fn view(&self) -> Result<View, ApiError> {
        self.sys.get().ok_or(ApiError::Sealed)?.root_view()
    }

    /// Drops the registry and the signing key (sealing).
    pub(crate) fn unload(&self) {
        if let Ok(mut l) = self.loaded.write() {
            *l = None;
        }
    }

    pub(super) fn signer(&self) -> Option<Arc<Signer>> {
        Some(self.loaded.read().ok()?.as_ref()?.signer.clone())
    }

    /// Loads the registry and keys for the current unsealed core (once per unseal).
    pub(super) async fn ensure_loaded(&self, a: &View) -> Result<(), ApiError> {
        let fresh = self
            .loaded
            .read()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.epoch == a.epoch()))
            .unwrap_or(false);
        if fresh {
            return Ok(());
        }
        let _g = self.write.lock().await;
        let mut profiles = HashMap::new();
        for id in a.list("profile/").await? {
            if let Some(doc) = a.get_json::<Value>(&format!("profile/{id}")).await? {
                match Profile::parse(&id, &doc) {
                    Ok(p) => {
                        profiles.insert(p.id.clone(), Arc::new(p));
                    }
                    Err(e) => {
                        tracing::error!(nf = %id, error = %e, "stored NF profile no longer validates; skipped")
                    }
                }
            }
        }
        let mut keys: StoredKeys = a.get_json("signing").await?.unwrap_or_default();
        if keys.current.is_empty() {
            let k = custos_nrf::jws::generate_pkcs8().map_err(ApiError::internal)?;
            keys.current = hex::encode(&k[..]);
            a.write(vec![Plain::Put(
                "signing".into(),
                serde_json::to_vec(&keys)?,
            )])
            .await?;
            tracing::info!("NRF signing key created");
        }
        let der = zeroize::Zeroizing::new(hex::decode(&keys.current).map_err(ApiError::internal)?);
        let signer = Arc::new(Signer::from_pkcs8(&der).map_err(ApiError::internal)?);
        let now = Instant::now();
        if let Ok(mut b) = self.beats.lock() {
            b.clear();
            for id in profiles.keys() {
                b.insert(id.clone(), now);
            }
        }
        let mut loaded = Loaded {
            epoch: a.epoch(),
            profiles: HashMap::new(),
            by_type: HashMap::new(),
            signer,
            retired: keys.retired.clone(),
        };
        for (id, p) in profiles {
            loaded.index(&id, Some(p));
        }
        if let Ok(mut l) = self.loaded.write() {
            *l = Some(loaded);
        }
        Ok(())
    }

    /// Stores a profile (or deletes it, `None`) durably, then updates memory.
    pub(super) async fn put(&self, a: &View, id: &str, p: Option<Profile>) -> Result<(), ApiError> {
        let key = format!("profile/{id}");
        match &p {
            Some(p) => {
                a.write(vec![Plain::Put(key, serde_json::to_vec(&p.doc)?)])
                    .await?
            }
            None => a.write(vec![Plain::Delete(key)]).await?,
        }
        if let Ok(mut l) = self.loaded.write() {
            if let Some(l) = l.as_mut() {
                l.index(id, p.map(Arc::new));
            }
        }
        Ok(())
    }

    /// Replaces the signing key. The old public key stays in the JWKS until every token it
    /// signed has expired (plus producers' leeway); keys retired longer ago are dropped.
    pub(crate) async fn rotate_key(&self, a: &View) -> Result<Value, ApiError> {
        self.ensure_loaded(a).await?;
        let _g = self.write.lock().await;
        let mut keys: StoredKeys = a.get_json("signing").await?.unwrap_or_default();
        let old = {
            let der =
                zeroize::Zeroizing::new(hex::decode(&keys.current).map_err(ApiError::internal)?);
            Signer::from_pkcs8(&der).map_err(ApiError::internal)?
        };
        let now = now_unix();
        let ttl = i64::try_from(
            self.cfg
                .token_ttl
                .saturating_add(self.cfg.retired_key_margin),
        )
        .unwrap_or(i64::MAX / 4);
        keys.retired.retain(|(_, until)| *until > now);
        keys.retired.push((old.jwk(), now.saturating_add(ttl)));
        let k = custos_nrf::jws::generate_pkcs8().map_err(ApiError::internal)?;
        let signer = Arc::new(Signer::from_pkcs8(&k).map_err(ApiError::internal)?);
        keys.current = hex::encode(&k[..]);
        a.write(vec![Plain::Put(
            "signing".into(),
            serde_json::to_vec(&keys)?,
        )])
        .await?;
        if let Ok(mut l) = self.loaded.write() {
            if let Some(l) = l.as_mut() {
                l.signer = signer.clone();
                l.retired = keys.retired.clone();
            }
        }
        tracing::info!(kid = %signer.kid(), retired = %old.kid(), "NRF signing key rotated");
        self.log
            .append(custos_tlog::entry::Event::NrfKeyRotated {
                kid: signer.kid().to_string(),
                retired_kid: old.kid().to_string(),
            })
            .await?;
        Ok(self.key_status())
    }

    /// The signing keys: the current `kid` and the retired ones with the time they leave
    /// the JWKS.
    pub(crate) fn key_status(&self) -> Value {
        let l = self.loaded.read().ok();
        let Some(l) = l.as_ref().and_then(|l| l.as_ref()) else {
            return json!({});
        };
        let now = now_unix();
        let retired: Vec<Value> = l
            .retired
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(k, until)| json!({"kid": k["kid"], "published_until": crate::core::rfc3339(*until)}))
            .collect();
        json!({"current_kid": l.signer.kid(), "retired": retired})
    }

    /// Administrative registration (the management API, under ACL): the same validation as
    /// the SBI, without the certificate-ownership rule. Returns whether it replaced a profile.
    pub(crate) async fn admin_put(
        &self,
        a: &View,
        id: &str,
        mut doc: Value,
    ) -> Result<(bool, Value), ApiError> {
        self.ensure_loaded(a).await?;
        let id = custos_nrf::canonical_uuid(id)
            .ok_or_else(|| ApiError::bad("nf_instance_id: must be a UUID"))?;
        if doc.is_object() {
            doc["heartBeatTimer"] = json!(self.cfg.heartbeat);
        }
        let p = Profile::parse(&id, &doc).map_err(|e| ApiError::bad(e.to_string()))?;
        let _g = self.write.lock().await;
        let existed = self.profile(&id).is_some();
        let out = p.doc.clone();
        self.put(a, &id, Some(p)).await?;
        self.beat(&id);
        Ok((existed, out))
    }

    /// Administrative deregistration; false if there was no such profile.
    pub(crate) async fn admin_delete(&self, a: &View, id: &str) -> Result<bool, ApiError> {
        self.ensure_loaded(a).await?;
        let Some(id) = custos_nrf::canonical_uuid(id) else {
            return Ok(false);
        };
        let _g = self.write.lock().await;
        if self.profile(&id).is_none() {
            return Ok(false);
        }
        self.put(a, &id, None).await?;
        Ok(true)
    }

    /// A registered profile, for the management API.
    pub(crate) async fn admin_get(&self, a: &View, id: &str) -> Result<Option<Value>, ApiError> {
        self.ensure_loaded(a).await?;
        Ok(custos_nrf::canonical_uuid(id)
            .and_then(|id| self.profile(&id))
            .map(|p| {
                let mut doc = p.doc.clone();
                // A quarantined NF's registration is kept but suspended.
                if let Some(why) = self.suspended(&p.id, None) {
                    doc["nfStatus"] = json!("SUSPENDED");
                    doc["custosQuarantine"] = json!(why);
                }
                doc
            }))
    }

    /// The registered instance IDs, sorted.
    pub(crate) async fn admin_list(&self, a: &View) -> Result<Vec<String>, ApiError> {
        self.ensure_loaded(a).await?;
        let mut ids: Vec<String> = self.profiles().iter().map(|p| p.id.clone()).collect();
        ids.sort();
        Ok(ids)
    }

    pub(super) fn beat(&self, id: &str) {
        if let Ok(mut b) = self.beats.lock() {
            b.insert(id.to_string(), Instant::now());
        }
    }

    /// The JWKS: the current key and retired keys whose tokens may still be valid.
    pub(super) fn jwks(&self) -> Value {
        let now = now_unix();
        let l = self.loaded.read().ok();
        let Some(l) = l.as_ref().and_then(|l| l.as_ref()) else {
            return custos_nrf::jws::jwks(&[]);
        };
        let mut keys = vec![l.signer.jwk()];
        keys.extend(
            l.retired
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(k, _)| k.clone()),
        );
        custos_nrf::jws::jwks(&keys)
    }
}

/// Makes sure the SBI certificate exists and is fresh; builds the TLS config.
pub(super) async fn refresh_tls(nrf: &Nrf) -> Result<(), ApiError> {
    let due = nrf
        .tls
        .read()
        .ok()
        .map(|t| t.as_ref().is_none_or(|t| now_unix() >= t.renew_at))
        .unwrap_or(true);
    if !due {
        return Ok(());
    }
    nrf.view()?;
    let mut d = Map::new();
    d.insert("common_name".into(), json!(nrf.cfg.fqdn));
    d.insert("nf_instance_id".into(), json!(nrf.cfg.nf_instance_id));
    d.insert("nf_type".into(), json!("NRF"));
    if !nrf.cfg.ip_sans.is_empty() {
        let ips: Vec<String> = nrf.cfg.ip_sans.iter().map(|i| i.to_string()).collect();
        d.insert("ip_sans".into(), json!(ips.join(",")));
    }
    let data = nrf
        .issuer
        .issue(&nrf.cfg.pki_mount, &nrf.cfg.role, d)
        .await?;
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut chain_pem = field("certificate");
    let cas: Vec<String> = data
        .get("ca_chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for c in &cas {
        chain_pem.push('\n');
        chain_pem.push_str(c);
    }
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)?;
    let key_pem = zeroize::Zeroizing::new(field("private_key"));
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(std::io::Error::other("issue returned no key")))?;
    let cas: Vec<Vec<u8>> = certs.iter().skip(1).map(|c| c.as_ref().to_vec()).collect();
    // Without a CRL yet (none can be built), the inventory check after the handshake alone
    // refuses revoked certificates.
    let crl = nrf.issuer.crl(&nrf.cfg.pki_mount).await.unwrap_or_default();
    let cfg = sbi_config(&certs, &key, &crl)?;
    let crl_sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &crl)
        .as_ref()
        .to_vec();
    let nb = now_unix();
    let na = data
        .get("expiration")
        .and_then(Value::as_i64)
        .unwrap_or(nb + 3600);
    let renew_at = nb + (na - nb) * 2 / 3;
    if let Ok(mut t) = nrf.tls.write() {
        *t = Some(TlsState {
            config: Arc::new(cfg),
            renew_at,
            cas,
            chain: certs,
            key,
            crl_sha,
        });
    }
    tracing::info!(serial = %field("serial_number"), not_after = %crate::core::rfc3339(na), "SBI certificate issued");
    Ok(())
}

/// Marks profiles whose heartbeats stopped as SUSPENDED (TS 29.510 5.2.2.3.2): after 1.5
/// heartbeat intervals without a heartbeat.
pub(super) async fn sweep_heartbeats(nrf: &Nrf) -> Result<(), ApiError> {
    let Ok(a) = nrf.view() else {
        return Ok(());
    };
    let limit = Duration::from_millis(nrf.cfg.heartbeat * 1500);
    let stale: Vec<Arc<Profile>> = {
        let beats = nrf
            .beats
            .lock()
            .map_err(|_| ApiError::internal(std::io::Error::other("beats poisoned")))?;
        nrf.profiles()
            .into_iter()
            .filter(|p| p.status == "REGISTERED")
            .filter(|p| beats.get(&p.id).is_none_or(|t| t.elapsed() > limit))
            .collect()
    };
    for p in stale {
        let _g = nrf.write.lock().await;
        let mut doc = p.doc.clone();
        doc["nfStatus"] = json!("SUSPENDED");
        let next = Profile::parse(&p.id, &doc).map_err(|e| ApiError::bad(e.to_string()))?;
        nrf.put(&a, &p.id, Some(next)).await?;
        tracing::warn!(nf = %p.id, nf_type = %p.nf_type, "heartbeats stopped: NF marked SUSPENDED");
    }
    Ok(())
}
