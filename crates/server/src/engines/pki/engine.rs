//! The PKI engine behind the engine interface, and the services it offers other engines:
//! issuing for the server itself ([`CertIssuer`]) and revocation lookups ([`RevocationLookup`]).

use super::*;

impl Pki {
    /// A PKI engine whose issuances, revocations and role changes are logged to `log`.
    pub fn new(log: Arc<dyn TrustLog>) -> Self {
        Pki {
            log,
            issuers: Arc::default(),
            sys: std::sync::OnceLock::new(),
            quarantine: Late::default(),
        }
    }

    /// Wires the quarantine list: issuance to a quarantined device is refused.
    pub fn set_quarantine(&self, q: Arc<dyn Quarantine>) {
        self.quarantine.set(q);
    }

    pub(super) fn sys(&self) -> ApiResult<&Sys> {
        self.sys.get().ok_or(ApiError::Sealed)
    }

    /// The request handle for the mount `m`.
    fn pk<'a>(&'a self, sys: &'a Sys, m: &MountEntry) -> ApiResult<Pk<'a>> {
        Ok(Pk {
            view: sys.view(m)?,
            issuers: self.issuers.clone(),
            log: &self.log,
            sys,
            quarantine: self.quarantine.get(),
        })
    }

    /// The PKI mount a configuration names (the NRF's `[sbi] pki_mount`), and its handle.
    async fn named_mount(&self, mount_path: &str) -> ApiResult<(MountEntry, Pk<'_>)> {
        let sys = self.sys()?;
        let m = self
            .mount_at(sys, mount_path)
            .await?
            .ok_or_else(|| ApiError::bad(format!("no pki mount at {mount_path:?}")))?;
        let a = self.pk(sys, &m)?;
        Ok((m, a))
    }

    /// The mounted PKI engine at `mount_path`, if any.
    async fn mount_at(&self, sys: &Sys, mount_path: &str) -> ApiResult<Option<MountEntry>> {
        Ok(sys
            .mounts()
            .await?
            .into_iter()
            .find(|m| m.path == mount_path))
    }
}

#[async_trait::async_trait]
impl CertIssuer for Pki {
    /// The same checks as `issue/:role`, requested by the server itself.
    async fn issue(
        &self,
        mount_path: &str,
        role: &str,
        data: Map<String, Value>,
    ) -> ApiResult<Map<String, Value>> {
        let (m, a) = self.named_mount(mount_path).await?;
        let a = &a;
        let req = Request {
            id: String::new(),
            op: Update,
            path: format!("{mount_path}issue/{role}"),
            data,
            token: None,
            remote_addr: None,
            head: false,
            raw_body: None,
            peer_certs: Vec::new(),
        };
        let who = Who {
            identity: BTreeMap::new(),
            requester: "custos".into(),
        };
        let r = issue_or_sign(a, &m, role, None, &req, false, &who).await?;
        r.data
            .ok_or_else(|| ApiError::internal(std::io::Error::other("issue returned no data")))
    }

    /// Built lazily and cached until a revocation bumps the mount's generation.
    async fn crl(&self, mount_path: &str) -> ApiResult<Vec<u8>> {
        let (m, a) = self.named_mount(mount_path).await?;
        Ok(crl(&a, &m, "default", false).await?.to_vec())
    }
}

#[async_trait::async_trait]
impl RevocationLookup for Pki {
    async fn revoked_in_mount(&self, mount_path: &str, serial: &[u8]) -> ApiResult<bool> {
        let sys = self.sys()?;
        let Some(m) = self.mount_at(sys, mount_path).await? else {
            return Ok(false);
        };
        Ok(sys
            .view(&m)?
            .cert_status(&issue::serial_hex(serial))
            .await?
            .is_some_and(|r| r.revoked_at.is_some()))
    }

    async fn revoked_by_issuer(
        &self,
        issuer_der: &[u8],
        serial: &[u8],
    ) -> ApiResult<Option<String>> {
        let sys = self.sys()?;
        let serial = issue::serial_hex(serial);
        for m in &sys.mounts().await? {
            let a = sys.view(m)?;
            for id in a.list("issuer/").await? {
                let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? else {
                    continue;
                };
                if pem_to_der(&e.certificate).ok().as_deref() != Some(issuer_der) {
                    continue;
                }
                if e.revoked {
                    return Ok(Some(format!(
                        "the issuing CA {} of the client certificate is revoked",
                        e.issuer_id
                    )));
                }
                if let Some(row) = a.cert_status(&serial).await? {
                    if row.issuer_id == e.issuer_id && row.revoked_at.is_some() {
                        return Ok(Some(format!("client certificate {serial} is revoked")));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl DeviceCerts for Pki {
    async fn bound(
        &self,
        mount_path: &str,
        nf_instance_ids: &[String],
        serials: &[String],
    ) -> ApiResult<Vec<BoundCert>> {
        let sys = self.sys()?;
        let Some(m) = self.mount_at(sys, mount_path).await? else {
            return Ok(Vec::new());
        };
        bound_certs(&sys.view(&m)?, nf_instance_ids, serials).await
    }

    async fn revoke_bound(
        &self,
        mount_path: &str,
        nf_instance_ids: &[String],
        serials: &[String],
        requester: &str,
    ) -> ApiResult<Vec<String>> {
        let (m, a) = self.named_mount(mount_path).await?;
        let now = now_unix();
        let mut done = Vec::new();
        for c in bound_certs(&a, nf_instance_ids, serials).await? {
            if c.revoked_at.is_some() || c.not_after < now {
                continue;
            }
            revoke_serial(&a, &m, &c.serial, requester).await?;
            done.push(c.serial);
        }
        Ok(done)
    }
}

#[async_trait::async_trait]
impl Engine for Pki {
    fn storage_root(&self) -> &'static str {
        "pki/"
    }

    fn route(&self, sub: &str) -> Option<PathSpec> {
        route(sub.trim_end_matches('/'))
    }

    async fn exists(&self, ctx: &Ctx<'_>) -> ApiResult<bool> {
        match ctx.sub.trim_end_matches('/').strip_prefix("roles/") {
            Some(name) => ctx.view.exists(&format!("role/{name}")).await,
            None => Ok(true),
        }
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        let a = Pk {
            view: ctx.view.clone(),
            issuers: self.issuers.clone(),
            log: &self.log,
            sys: ctx.sys,
            quarantine: self.quarantine.get(),
        };
        handle(&a, ctx, req).await
    }

    async fn unseal(&self, sys: &Sys) -> ApiResult<()> {
        let _ = self.sys.set(sys.clone());
        self.issuers.clear();
        Ok(())
    }

    /// Parsed CA keys and built CRLs are dropped (the keys zeroize on drop).
    fn seal(&self) {
        self.issuers.clear();
    }

    /// The mount's certificate rows go too, a page at a time, and its caches.
    async fn unmount(&self, sys: &Sys, m: &MountEntry) -> ApiResult<()> {
        let v = sys.view(m)?;
        loop {
            let page = v.list_certs(None, 10_000).await?;
            if page.is_empty() {
                break;
            }
            v.write(
                page.into_iter()
                    .map(|serial| Plain::DeleteCert(String::new(), serial))
                    .collect(),
            )
            .await?;
        }
        let a = self.pk(sys, m)?;
        invalidate(&a, m);
        Ok(())
    }

    /// Auto-tidy: runs a tidy on every mount whose interval has passed.
    async fn periodic(&self, sys: &Sys) -> ApiResult<()> {
        for m in sys.mounts().await? {
            let a = self.pk(sys, &m)?;
            tidy::auto_tick(&a, &m).await?;
            super::crl::refresh(&a, &m).await?;
        }
        Ok(())
    }
}
