//! The narrow services engines offer each other, wired in the composition root.
//!
//! Each trait is the whole of what one engine may ask of another: the provider implements
//! it, the user receives an `Arc<dyn …>` at construction. Neither knows the other's type.
//!
//! | trait | offered by | used by |
//! |---|---|---|
//! | [`TrustLog`] | the transparency log | the core (ACL policy changes), PKI, provenance, NRF |
//! | [`RevocationLookup`] | PKI | certificate login, the NRF's SBI listener |
//! | [`CertIssuer`] | PKI | the NRF (its own SBI server certificate); attestation (the CRL of keyless signing certificates) |
//! | [`ProvenanceStore`] | provenance | attestation (reference values for measured firmware) |
//! | [`DeviceCerts`] | PKI | attestation (the certificates bound to a device: expiry, quarantine) |
//! | [`PostureSource`] | PKI, provenance | attestation (the posture report) |
//! | [`Quarantine`] | attestation | the core (logins), PKI (issuance), the NRF (tokens, discovery, connections) |

use crate::core::barrier::Scoped;
use crate::error::ApiResult;
use custos_tlog::entry::Event;
use custos_tlog::receipt::Receipt;
use serde_json::{Map, Value};
use std::time::Duration;

/// The sink of trust events: the transparency log. A successful `append` means the event is
/// durable and covered by a published checkpoint.
#[async_trait::async_trait]
pub trait TrustLog: Send + Sync {
    /// Appends `event`; returns its index once durable.
    async fn append(&self, event: Event) -> ApiResult<u64>;

    /// Appends `event` and commits `with` (the state change it records) in the same
    /// transaction: both are durable, or neither is. One commit where two would be.
    async fn append_with(&self, event: Event, with: Scoped) -> ApiResult<u64>;

    /// An inclusion receipt for `index`; with witnesses configured, waits up to `wait` for a
    /// cosigned checkpoint that covers it.
    async fn receipt(&self, index: u64, wait: Duration) -> ApiResult<Receipt>;
}

/// Revocation as Custos's own PKI knows it.
#[async_trait::async_trait]
pub trait RevocationLookup: Send + Sync {
    /// If a PKI mount holds the CA `issuer_der`, why the certificate `serial` (or that CA)
    /// is revoked, if it is. Certificates of CAs no mount holds are not judged (`None`).
    async fn revoked_by_issuer(
        &self,
        issuer_der: &[u8],
        serial: &[u8],
    ) -> ApiResult<Option<String>>;

    /// Whether the certificate `serial` is revoked in the PKI mount at `mount_path`
    /// (`false` for an unknown mount or serial).
    async fn revoked_in_mount(&self, mount_path: &str, serial: &[u8]) -> ApiResult<bool>;
}

/// Issuing from a PKI role on the server's own behalf (no token, no ACL: configuration
/// names the mount and role).
#[async_trait::async_trait]
pub trait CertIssuer: Send + Sync {
    /// `issue/<role>` on the PKI mount at `mount_path` with the request fields `data`;
    /// answers the response `data` (certificate, private_key, issuing_ca, ca_chain, …).
    async fn issue(
        &self,
        mount_path: &str,
        role: &str,
        data: Map<String, Value>,
    ) -> ApiResult<Map<String, Value>>;

    /// The current CRL (DER) of the default issuer of the PKI mount at `mount_path`.
    async fn crl(&self, mount_path: &str) -> ApiResult<Vec<u8>>;
}

/// Signed provenance by image digest, as a provenance store holds it.
#[async_trait::async_trait]
pub trait ProvenanceStore: Send + Sync {
    /// The bundles (JSON, as registered: signatures checked, receipts attached) for the image
    /// whose SHA-256 is `sha256` in the provenance mount at `mount_path`; empty when none
    /// are, or no such mount exists.
    async fn bundles(&self, mount_path: &str, sha256: &str) -> ApiResult<Vec<Value>>;
}

/// A certificate bound to a device (its serial, or an NF instance ID in its `urn:uuid:` SAN).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoundCert {
    /// Serial, as the PKI names it (`3a:5f:…`).
    pub serial: String,
    /// Expiry (Unix seconds).
    pub not_after: i64,
    /// Revoked (Unix seconds), if it is.
    pub revoked_at: Option<i64>,
}

/// The certificates of a PKI mount that belong to a device.
#[async_trait::async_trait]
pub trait DeviceCerts: Send + Sync {
    /// The certificates in the PKI mount at `mount_path` whose serial is in `serials` or whose
    /// `urn:uuid:` SAN names one of `nf_instance_ids` (empty for an unknown mount).
    async fn bound(
        &self,
        mount_path: &str,
        nf_instance_ids: &[String],
        serials: &[String],
    ) -> ApiResult<Vec<BoundCert>>;

    /// Revokes every unexpired, unrevoked certificate [`DeviceCerts::bound`] finds, each
    /// logged as a revocation by `requester`; answers their serials. The CRL and OCSP say so
    /// from the moment this returns.
    async fn revoke_bound(
        &self,
        mount_path: &str,
        nf_instance_ids: &[String],
        serials: &[String],
        requester: &str,
    ) -> ApiResult<Vec<String>>;
}

/// Who is asking, as a quarantine can name it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// NF instance IDs (a certificate's `urn:uuid:` SANs, a token's `nf_instance_id`).
    pub nf_instance_ids: &'a [&'a str],
    /// A certificate serial (any of `3a:5f…`, `3A5F…`).
    pub cert_serial: Option<&'a str>,
    /// A token's display name (`approle-du-0017`).
    pub display_name: Option<&'a str>,
}

/// The devices cut off from the core: whoever belongs to one is refused tokens, logins,
/// certificates and discovery. Answers from memory (it is asked on hot paths).
pub trait Quarantine: Send + Sync {
    /// Why `who` is refused (its device is quarantined, and the reason), if it is.
    fn refusal(&self, who: &Subject<'_>) -> Option<String>;

    /// A counter that moves at every quarantine and release: holders of long-lived
    /// connections re-check their peer when it does.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// No device is quarantined (servers and tests without an attestation engine).
pub struct NoQuarantine(tokio::sync::watch::Sender<u64>);

impl Default for NoQuarantine {
    fn default() -> Self {
        NoQuarantine(tokio::sync::watch::channel(0).0)
    }
}

impl Quarantine for NoQuarantine {
    fn refusal(&self, _who: &Subject<'_>) -> Option<String> {
        None
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// A service wired after its user was built (the PKI is built before the attestation engine
/// that quarantines, which needs the PKI): empty until set, then fixed.
pub struct Late<T: ?Sized>(std::sync::OnceLock<std::sync::Arc<T>>);

impl<T: ?Sized> Default for Late<T> {
    fn default() -> Self {
        Late(std::sync::OnceLock::new())
    }
}

impl<T: ?Sized> Late<T> {
    /// Sets it (once; later calls are ignored).
    pub fn set(&self, v: std::sync::Arc<T>) {
        let _ = self.0.set(v);
    }

    /// It, once set.
    pub fn get(&self) -> Option<&std::sync::Arc<T>> {
        self.0.get()
    }
}

/// One finding of the posture report: the rule, the object it names, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule (`cert.expiring`, `ca.weak_key`, …).
    pub rule: String,
    /// What it names (`pki/ cert 3a:5f:…`, `provenance/ signer 9f86…`).
    pub object: String,
    /// Why.
    pub detail: String,
}

/// What an engine contributes to the posture report ("regular supply chain assessment").
#[async_trait::async_trait]
pub trait PostureSource: Send + Sync {
    /// Findings at `now`: certificates expiring within `expiring_within` seconds, keys older
    /// than `key_max_age` seconds (when given), weak keys and algorithms.
    async fn findings(
        &self,
        expiring_within: i64,
        key_max_age: Option<i64>,
        now: i64,
    ) -> ApiResult<Vec<Finding>>;
}
