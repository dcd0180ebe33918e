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
