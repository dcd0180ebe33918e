//! The NRF engine (a system engine at `sys/nrf/`, present when `[sbi]` is configured): the
//! NF registry and access-token service on its own mutual-TLS SBI listener ([`sbi`]), and
//! its management API on the Vault API under ACL: `keys` (read), `keys/rotate` (sudo),
//! `nf-instances` (list) and `nf-instances/<id>` (the administrative override of the
//! ownership rule).
//!
//! From other engines it needs only narrow services: the PKI issues its SBI certificate
//! ([`CertIssuer`]) and answers revocation ([`RevocationLookup`]); key rotations go to the
//! transparency log ([`TrustLog`]); quarantined devices' NFs ([`Quarantine`]) get no token,
//! are hidden from discovery, and their connections are closed.

mod registry;
mod sbi;

use crate::config::SbiConfig;
use crate::core::engine::{Ctx, Engine, PathSpec, Sys};
use crate::core::services::{CertIssuer, Quarantine, RevocationLookup, TrustLog};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation::*;
use serde_json::Value;
use std::sync::Arc;

pub(crate) use registry::Nrf;

/// The NRF engine.
pub struct NrfEngine {
    nrf: Arc<Nrf>,
}

impl NrfEngine {
    /// An NRF serving `cfg`'s SBI listener.
    pub fn new(
        cfg: SbiConfig,
        log: Arc<dyn TrustLog>,
        revocation: Arc<dyn RevocationLookup>,
        issuer: Arc<dyn CertIssuer>,
        quarantine: Arc<dyn Quarantine>,
    ) -> Self {
        NrfEngine {
            nrf: Nrf::new(cfg, log, revocation, issuer, quarantine),
        }
    }
}

/// Starts the SBI listener and its certificate and heartbeat tasks.
pub async fn start(
    engine: Arc<NrfEngine>,
) -> Result<tokio::task::JoinHandle<()>, crate::listener::ListenError> {
    sbi::start(engine.nrf.clone()).await
}

#[async_trait::async_trait]
impl Engine for NrfEngine {
    fn storage_root(&self) -> &'static str {
        "nrf/"
    }

    fn route(&self, sub: &str) -> Option<PathSpec> {
        const RW: &[custos_acl::Operation] = &[Read, Create, Update, Delete];
        Some(match sub {
            "keys" => PathSpec::new(&[Read]),
            "keys/rotate" => PathSpec::new(&[Update]).sudo(),
            "nf-instances" => PathSpec::new(&[List, Read]),
            _ => {
                let id = sub.strip_prefix("nf-instances/")?;
                if id.is_empty() {
                    return None;
                }
                PathSpec::new(RW).existence()
            }
        })
    }

    async fn exists(&self, ctx: &Ctx<'_>) -> ApiResult<bool> {
        match ctx.sub.strip_prefix("nf-instances/") {
            Some(id) => Ok(self.nrf.admin_get(&ctx.view, id).await?.is_some()),
            None => Ok(true),
        }
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        let (n, a) = (&self.nrf, &ctx.view);
        let by = ctx.requester();
        match ctx.sub {
            "keys" => Ok(Response::data(n.key_status())),
            "keys/rotate" => Ok(Response::data(n.rotate_key(a).await?)),
            "nf-instances" => Response::list(n.admin_list(a).await?),
            sub => {
                let id = sub
                    .strip_prefix("nf-instances/")
                    .ok_or(ApiError::MethodNotAllowed)?;
                match req.op {
                    Read => n
                        .admin_get(a, id)
                        .await?
                        .map(Response::data)
                        .ok_or(ApiError::NotFound),
                    Create | Update => {
                        let (replaced, doc) =
                            n.admin_put(a, id, Value::Object(req.data.clone())).await?;
                        tracing::info!(nf = %id, replaced, by = %by, "NF profile written through the management API");
                        Ok(Response::data(doc))
                    }
                    Delete => {
                        if n.admin_delete(a, id).await? {
                            tracing::info!(nf = %id, by = %by, "NF profile deleted through the management API");
                        }
                        Ok(Response::empty())
                    }
                    _ => Err(ApiError::MethodNotAllowed),
                }
            }
        }
    }

    /// The SBI listener serves once it has its certificate from the configured PKI role.
    fn readiness(&self) -> Option<(bool, String)> {
        Some(self.nrf.readiness())
    }

    async fn unseal(&self, sys: &Sys) -> ApiResult<()> {
        let _ = self.nrf.sys.set(sys.clone());
        Ok(())
    }

    /// The registry and the signing key are dropped; they are loaded again after unseal.
    fn seal(&self) {
        self.nrf.unload();
    }
}
