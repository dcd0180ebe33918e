//! The `pki` secrets engine: Vault's paths over `custos-pki`.
//!
//! Storage (all encrypted): `pki/<mount uuid>/issuer/<id>`, `…/key/<id>` (the private key),
//! `…/role/<name>`, `…/config/urls`, `…/config/issuers`, `…/crl-number/<issuer>`; issued
//! certificates are rows of the indexed `certs` table (serial, issuer, expiry, revocation).
//! Revocation updates one row (O(log n)); the CRL is rebuilt lazily from the revocation
//! index, a page at a time, the next time it is fetched.

mod tidy;

use crate::core::barrier::{Plain, View};
use crate::core::engine::{Ctx, Engine, PathSpec, Sys};
use crate::core::now_unix;
use crate::core::services::{CertIssuer, RevocationLookup, TrustLog};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use base64::Engine as _;
use custos_acl::Operation::{self, *};
use custos_pki::issue::{self, CaParams, Revoked, Urls};
use custos_pki::policy::{Context, SubjectFields};
use custos_pki::role::{KeyType, Role};
use custos_pki::{csr, fields, PkiError};
use custos_store::CertRow;
use custos_tlog::entry::{ChangeOp, Event};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

impl From<PkiError> for ApiError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Crypto(m) => ApiError::internal(std::io::Error::other(m)),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// A parsed issuer ready to sign.
pub(crate) struct Loaded {
    entry: IssuerEntry,
    der: Vec<u8>,
    signer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

struct CachedCrl {
    generation: u64,
    der: Vec<u8>,
    next_update: i64,
}

/// The PKI engine: every mount of type `pki`.
pub struct Pki {
    log: Arc<dyn TrustLog>,
    issuers: Arc<IssuerCache>,
    /// Set at the first unseal: background callers (certificate login, the NRF) reach the
    /// mounts through it.
    sys: std::sync::OnceLock<Sys>,
}

/// One request's handle on one PKI mount: its storage view, the engine's caches and the log.
pub(crate) struct Pk<'a> {
    view: View,
    pub(crate) issuers: Arc<IssuerCache>,
    log: &'a Arc<dyn TrustLog>,
    sys: &'a Sys,
}

impl std::ops::Deref for Pk<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        &self.view
    }
}

impl Pk<'_> {
    fn log(&self) -> ApiResult<&Arc<dyn TrustLog>> {
        Ok(self.log)
    }
}

/// In-memory PKI state of the unsealed core: parsed issuers and built CRLs.
#[derive(Default)]
pub(crate) struct IssuerCache {
    issuers: RwLock<HashMap<String, Arc<Loaded>>>,
    crls: RwLock<HashMap<String, CachedCrl>>,
    generation: RwLock<HashMap<String, u64>>,
    /// Parsed roles and URL settings, per `<mount uuid>/...`.
    parsed: RwLock<HashMap<String, Parsed>>,
    /// Bumped by every invalidation; a fill that raced one is dropped (no stale re-insert).
    parsed_epoch: std::sync::atomic::AtomicU64,
    /// Tidy runs, per mount uuid.
    pub(crate) tidy: std::sync::Mutex<HashMap<String, tidy::TidyStatus>>,
}

impl IssuerCache {
    /// Drops every parsed issuer (their keys zeroize) and every cached CRL and role.
    fn clear(&self) {
        if let Ok(mut c) = self.issuers.write() {
            c.clear();
        }
        if let Ok(mut c) = self.crls.write() {
            c.clear();
        }
        if let Ok(mut c) = self.parsed.write() {
            c.clear();
        }
        self.parsed_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct IssuerEntry {
    issuer_id: String,
    issuer_name: String,
    key_id: String,
    certificate: String,
    ca_chain: Vec<String>,
    serial_number: String,
    not_after: i64,
    leaf_not_after_behavior: String,
    usage: String,
    key_type: String,
    /// Set by `issuer/:ref/revoke`; never cleared.
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    revocation_time: i64,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    key_id: String,
    key_name: String,
    key_type: String,
    private_key: String,
}

impl Drop for KeyEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_key);
    }
}

/// A route; if `public`, every one of its operations is unauthenticated (Vault's
/// unauthenticated PKI paths).
const fn ri(ops: &'static [Operation], public: bool) -> PathSpec {
    let p = PathSpec::new(ops);
    if public {
        p.open()
    } else {
        p
    }
}

fn route(sub: &str) -> Option<PathSpec> {
    let parts: Vec<&str> = sub.split('/').collect();
    Some(match parts.as_slice() {
        ["root", "generate", "internal" | "exported"]
        | ["issuers", "generate", "root", "internal" | "exported"] => ri(&[Update], false),
        ["root"] => ri(&[Delete], false),
        ["intermediate", "generate", "internal" | "exported"]
        | ["issuers", "generate", "intermediate", "internal" | "exported"] => ri(&[Update], false),
        ["root", "sign-intermediate"] | ["issuer", _, "sign-intermediate"] => ri(&[Update], false),
        ["intermediate", "set-signed"] => ri(&[Update], false),
        ["config", "urls"] | ["config", "issuers"] | ["config", "crl"] => {
            ri(&[Read, Update], false)
        }
        ["roles"] => ri(&[List, Read], false),
        ["roles", _] => PathSpec::new(&[Read, Create, Update, Delete]).existence(),
        ["issue", _]
        | ["sign", _]
        | ["sign-verbatim"]
        | ["sign-verbatim", _]
        | ["issuer", _, "issue", _]
        | ["issuer", _, "sign", _] => ri(&[Update], false),
        ["revoke"] => ri(&[Update], false),
        ["tidy"] | ["tidy-cancel"] => ri(&[Update], false),
        ["tidy-status"] => ri(&[Read], false),
        ["config", "auto-tidy"] => ri(&[Read, Update], false),
        ["certs"] | ["certs", "revoked"] => ri(&[List, Read], false),
        ["cert", _] | ["cert", _, "raw"] | ["cert", _, "raw", "pem"] => ri(&[Read], true),
        ["crl"] | ["crl", "pem"] | ["ca"] | ["ca", "pem"] | ["ca_chain"] => ri(&[Read], true),
        ["crl", "rotate"] | ["crl", "rotate-delta"] => ri(&[Read], false),
        ["crl", "delta"]
        | ["crl", "delta", "pem"]
        | ["issuer", _, "crl", "delta"]
        | ["issuer", _, "crl", "delta", "pem" | "der"] => ri(&[Read], true),
        ["issuers"] => ri(&[List, Read], true),
        ["ocsp"] => ri(&[Update], true),
        ["ocsp", ..] => ri(&[Read], true),
        ["issuer", _] => PathSpec::new(&[Read, Update, Patch, Delete]).open_for(&[Read]),
        ["keys"] => ri(&[List, Read], false),
        ["keys", "generate", "internal" | "exported"] | ["keys", "import"] => ri(&[Update], false),
        ["key", _] => ri(&[Read, Delete], false),
        ["config", "ca"] | ["issuers", "import", "bundle" | "cert"] => ri(&[Update], false),
        ["intermediate", "cross-sign"] => ri(&[Update], false),
        ["issuer", _, "revoke"] => ri(&[Update], false),
        ["issuer", _, "pem" | "der" | "json"]
        | ["issuer", _, "crl"]
        | ["issuer", _, "crl", "pem" | "der"] => ri(&[Read], true),
        _ => return None,
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----"));
    s
}

fn pem_to_der(p: &str) -> ApiResult<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(p.as_bytes())
        .map_err(|_| ApiError::bad("malformed PEM"))?;
    Ok(block.contents)
}

fn serial_bytes(s: &str) -> ApiResult<Vec<u8>> {
    let clean: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    let v = hex::decode(&clean)
        .map_err(|_| ApiError::bad(format!("serial_number {s:?} is not colon-separated hex")))?;
    if v.is_empty() || v.len() > 20 {
        return Err(ApiError::bad("serial_number must be 1 to 20 bytes"));
    }
    Ok(v)
}

fn norm_serial(s: &str) -> ApiResult<String> {
    Ok(issue::serial_hex(&serial_bytes(s)?))
}

fn valid_name(field: &str, n: &str) -> ApiResult<()> {
    if n.is_empty()
        || n.len() > 128
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad(format!(
            "{field}: must be 1 to 128 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

async fn urls(a: &Pk<'_>, m: &MountEntry) -> ApiResult<Urls> {
    let key = format!("{}/urls", m.uuid);
    if let Some(Parsed::Urls(u)) = a
        .issuers
        .parsed
        .read()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok((*u).clone());
    }
    let epoch = a
        .issuers
        .parsed_epoch
        .load(std::sync::atomic::Ordering::Acquire);
    let u: Urls = a.get_json("config/urls").await?.unwrap_or_default();
    fill_parsed(a, key, Parsed::Urls(Arc::new(u.clone())), epoch);
    Ok(u)
}

/// Parsed per-mount settings, so the issue path decodes no JSON for them.
#[derive(Clone)]
pub(crate) enum Parsed {
    Role(Arc<Role>),
    Urls(Arc<Urls>),
}

async fn cached_role(a: &Pk<'_>, m: &MountEntry, name: &str) -> ApiResult<Arc<Role>> {
    let key = format!("{}/role/{name}", m.uuid);
    if let Some(Parsed::Role(r)) = a
        .issuers
        .parsed
        .read()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(r);
    }
    let epoch = a
        .issuers
        .parsed_epoch
        .load(std::sync::atomic::Ordering::Acquire);
    let r: Role = a
        .get_json(&format!("role/{name}"))
        .await?
        .ok_or_else(|| ApiError::bad(format!("unknown role: {name}")))?;
    let r = Arc::new(r);
    fill_parsed(a, key, Parsed::Role(r.clone()), epoch);
    Ok(r)
}

fn fill_parsed(a: &Pk<'_>, key: String, v: Parsed, epoch: u64) {
    if let Ok(mut c) = a.issuers.parsed.write() {
        if a.issuers
            .parsed_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            == epoch
        {
            c.insert(key, v);
        }
    }
}

/// Drops the parsed roles and settings of a mount (after any write to them).
fn forget_parsed(a: &Pk<'_>, m: &MountEntry) {
    let prefix = format!("{}/", m.uuid);
    if let Ok(mut c) = a.issuers.parsed.write() {
        a.issuers
            .parsed_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        c.retain(|k, _| !k.starts_with(&prefix));
    }
}

async fn default_issuer_id(a: &Pk<'_>) -> ApiResult<Option<String>> {
    let v: Option<Value> = a.get_json("config/issuers").await?;
    Ok(
        v.and_then(|v| v.get("default").and_then(Value::as_str).map(str::to_string))
            .filter(|s| !s.is_empty()),
    )
}

async fn resolve_issuer_id(a: &Pk<'_>, reference: &str) -> ApiResult<String> {
    if reference.is_empty() || reference == "default" {
        return default_issuer_id(a).await?.ok_or_else(|| {
            ApiError::bad("no default issuer is configured: generate or import a CA first")
        });
    }
    if a.exists(&format!("issuer/{reference}")).await? {
        return Ok(reference.to_string());
    }
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            if e.issuer_name == reference {
                return Ok(id);
            }
        }
    }
    Err(ApiError::bad(format!("unknown issuer {reference:?}")))
}

async fn load_issuer(a: &Pk<'_>, m: &MountEntry, reference: &str) -> ApiResult<Arc<Loaded>> {
    let id = resolve_issuer_id(a, reference).await?;
    let cache_key = format!("{}/{id}", m.uuid);
    if let Some(l) = a
        .issuers
        .issuers
        .read()
        .ok()
        .and_then(|c| c.get(&cache_key).cloned())
    {
        return Ok(l);
    }
    let entry: IssuerEntry = a
        .get_json(&format!("issuer/{id}"))
        .await?
        .ok_or_else(|| ApiError::bad(format!("unknown issuer {id:?}")))?;
    let key: KeyEntry = a
        .get_json(&format!("key/{}", entry.key_id))
        .await?
        .ok_or_else(|| {
            ApiError::bad(format!(
                "issuer {id} has no private key in this mount; it can verify but not sign"
            ))
        })?;
    let kp = rcgen::KeyPair::from_pem(&key.private_key)
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let der = pem_to_der(&entry.certificate)?;
    let signer = rcgen::Issuer::from_ca_cert_der(&der.clone().into(), kp)
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let l = Arc::new(Loaded { entry, der, signer });
    if let Ok(mut c) = a.issuers.issuers.write() {
        c.insert(cache_key, l.clone());
    }
    Ok(l)
}

impl Pki {
    /// A PKI engine whose issuances, revocations and role changes are logged to `log`.
    pub fn new(log: Arc<dyn TrustLog>) -> Self {
        Pki {
            log,
            issuers: Arc::default(),
            sys: std::sync::OnceLock::new(),
        }
    }

    fn sys(&self) -> ApiResult<&Sys> {
        self.sys.get().ok_or(ApiError::Sealed)
    }

    /// The request handle for the mount `m`.
    fn pk<'a>(&'a self, sys: &'a Sys, m: &MountEntry) -> ApiResult<Pk<'a>> {
        Ok(Pk {
            view: sys.view(m)?,
            issuers: self.issuers.clone(),
            log: &self.log,
            sys,
        })
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
        let sys = self.sys()?;
        let m = self
            .mount_at(sys, mount_path)
            .await?
            .ok_or_else(|| ApiError::bad(format!("no pki mount at {mount_path:?}")))?;
        let a = &self.pk(sys, &m)?;
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
        }
        Ok(())
    }
}

fn invalidate(a: &Pk<'_>, m: &MountEntry) {
    forget_parsed(a, m);
    let prefix = format!("{}/", m.uuid);
    if let Ok(mut c) = a.issuers.issuers.write() {
        c.retain(|k, _| !k.starts_with(&prefix));
    }
    if let Ok(mut c) = a.issuers.crls.write() {
        c.retain(|k, _| !k.starts_with(&prefix));
    }
}

pub(crate) fn bump_generation(issuers: &IssuerCache, m: &MountEntry) {
    if let Ok(mut g) = issuers.generation.write() {
        *g.entry(m.uuid.clone()).or_default() += 1;
    }
}

fn generation(a: &Pk<'_>, m: &MountEntry) -> u64 {
    a.issuers
        .generation
        .read()
        .ok()
        .and_then(|g| g.get(&m.uuid).copied())
        .unwrap_or(0)
}

fn mount_ttls(a: &Pk<'_>, m: &MountEntry) -> (u64, u64) {
    let max = if m.config.max_lease_ttl > 0 {
        m.config.max_lease_ttl
    } else {
        a.sys.lease_defaults().1
    };
    let def = if m.config.default_lease_ttl > 0 {
        m.config.default_lease_ttl
    } else {
        a.sys.lease_defaults().0
    };
    (def.min(max), max)
}

/// Who is asking: login metadata (for `provenance_extensions` roles) and the display name
/// the transparency log records.
pub(crate) struct Who {
    identity: BTreeMap<String, String>,
    requester: String,
}

use crate::core::sha256_hex;

async fn handle(a: &Pk<'_>, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (m, caller) = (ctx.mount, ctx.caller);
    // The caller's login metadata: the signer identity for `provenance_extensions` roles.
    let identity: BTreeMap<String, String> = caller
        .map(|c| {
            c.meta
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let who = Who {
        identity,
        requester: ctx.requester(),
    };
    let id = &who;
    let parts: Vec<&str> = ctx.sub.trim_end_matches('/').split('/').collect();
    match (parts.as_slice(), req.op) {
        (["tidy"], _) => tidy::start(a, m, &req.data, false).await,
        (["ocsp"], _) => {
            let der = req.raw_body.clone().ok_or_else(|| {
                ApiError::bad("OCSP requests must be sent as application/ocsp-request")
            })?;
            ocsp(a, m, &der).await
        }
        (["ocsp", rest @ ..], _) => {
            let b64 = rest.join("/");
            match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                Ok(der) => ocsp(a, m, &der).await,
                Err(_) => Ok(ocsp_bytes(custos_pki::ocsp::error_response(1))),
            }
        }
        (["tidy-status"], _) => Ok(Response::data(tidy::status(a, m))),
        (["tidy-cancel"], _) => Ok(Response::data(tidy::cancel(a, m))),
        (["config", "auto-tidy"], Read) => Ok(Response::data(tidy::auto_config(a, m).await?)),
        (["config", "auto-tidy"], _) => tidy::write_auto_config(a, m, &req.data).await,
        (["root", "generate", kind] | ["issuers", "generate", "root", kind], _) => {
            generate_root(a, m, kind, req).await
        }
        (["root"], Delete) => delete_root(a, m).await,
        (["intermediate", "generate", kind] | ["issuers", "generate", "intermediate", kind], _) => {
            generate_intermediate(a, kind, req).await
        }
        (["root", "sign-intermediate"], _) => sign_intermediate(a, m, "default", req).await,
        (["issuer", iref, "sign-intermediate"], _) => sign_intermediate(a, m, iref, req).await,
        (["intermediate", "set-signed"], _) => set_signed(a, m, req).await,
        (["config", "urls"], Read) => Ok(Response::data(serde_json::to_value(urls(a, m).await?)?)),
        (["config", "urls"], _) => write_urls(a, m, req).await,
        (["config", "issuers"], Read) => Ok(Response::data(
            json!({"default": default_issuer_id(a).await?.unwrap_or_default(), "default_follows_latest_issuer": false}),
        )),
        (["config", "issuers"], _) => {
            let reference = fields::str_of(&req.data, "default")?;
            let id = resolve_issuer_id(a, &reference).await?;
            a.put_json("config/issuers", &json!({"default": id}))
                .await?;
            Ok(Response::data(
                json!({"default": id, "default_follows_latest_issuer": false}),
            ))
        }
        (["config", "crl"], Read) => Ok(Response::data(crl_config(a).await?)),
        (["config", "crl"], _) => write_crl_config(a, req).await,
        (["roles"], _) => Response::list(a.list("role/").await?),
        (["roles", name], Read) => {
            let r: Role = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(r.to_json()))
        }
        (["roles", name], Delete) => {
            a.write(vec![Plain::Delete(format!("role/{name}"))]).await?;
            forget_parsed(a, m);
            a.log()?
                .append(Event::RoleChanged {
                    mount: m.path.clone(),
                    role: name.to_string(),
                    op: ChangeOp::Delete,
                    config_sha256: None,
                    requester: who.requester.clone(),
                })
                .await?;
            Ok(Response::empty())
        }
        (["roles", name], _) => write_role(a, m, name, req, &who.requester).await,
        (["issue", role], _) => issue_or_sign(a, m, role, None, req, false, id).await,
        (["sign", role], _) => issue_or_sign(a, m, role, None, req, true, id).await,
        (["issuer", iref, "issue", role], _) => {
            issue_or_sign(a, m, role, Some(iref), req, false, id).await
        }
        (["issuer", iref, "sign", role], _) => {
            issue_or_sign(a, m, role, Some(iref), req, true, id).await
        }
        (["sign-verbatim"] | ["sign-verbatim", _], _) => {
            sign_verbatim(a, m, parts.get(1).copied(), req, id).await
        }
        (["revoke"], _) => revoke(a, m, req, &who.requester).await,
        (["certs"], _) => list_certs(a, false, req).await,
        (["certs", "revoked"], _) => list_certs(a, true, req).await,
        (["cert", "ca"], _)
        | (["ca", "pem"], _)
        | (["ca"], _)
        | (["ca_chain"], _)
        | (["cert", "ca_chain"], _) => ca(a, ctx.sub.trim_end_matches('/')).await,
        (["cert", "crl"], _) => {
            let der = crl(a, m, "default", false).await?;
            Ok(Response::data(
                json!({"certificate": pem("X509 CRL", &der), "revocation_time": 0}),
            ))
        }
        (["cert", serial, rest @ ..], _) => read_cert(a, serial, rest).await,
        (["crl"], _) | (["issuer", _, "crl", "der"], _) => {
            raw_crl(a, m, parts.get(1).copied(), false).await
        }
        (["crl", "pem"], _) | (["issuer", _, "crl"], _) | (["issuer", _, "crl", "pem"], _) => {
            raw_crl(a, m, parts.get(1).copied(), true).await
        }
        (["crl", "delta"], _) => delta_crl(a, m, "default", false).await,
        (["crl", "delta", "pem"], _) => delta_crl(a, m, "default", true).await,
        (["issuer", iref, "crl", "delta"], _) | (["issuer", iref, "crl", "delta", "pem"], _) => {
            delta_crl(a, m, iref, true).await
        }
        (["issuer", iref, "crl", "delta", "der"], _) => delta_crl(a, m, iref, false).await,
        (["crl", "rotate-delta"], _) => {
            delta_crl(a, m, "default", false).await?;
            Ok(Response::data(json!({"success": true})))
        }
        (["crl", "rotate"], _) => {
            crl(a, m, "default", true).await?;
            Ok(Response::data(json!({"success": true})))
        }
        (["issuers"], _) => list_issuers(a).await,
        (["issuer", iref], Update | Patch | Create) => update_issuer(a, m, iref, req).await,
        (["issuer", iref], Delete) => delete_issuer(a, m, iref).await,
        (["issuer", iref, "revoke"], _) => revoke_issuer(a, m, iref).await,
        (["keys", "generate", kind], _) => generate_key_only(a, kind, req).await,
        (["keys", "import"], _) => import_key(a, req).await,
        (["keys"], _) => list_keys(a).await,
        (["key", kref], Read) => Ok(Response::data(key_json(&find_key(a, kref).await?))),
        (["key", kref], Delete) => delete_key(a, kref).await,
        (["config", "ca"] | ["issuers", "import", "bundle"], _) => {
            import_bundle(a, m, req, true).await
        }
        (["issuers", "import", "cert"], _) => import_bundle(a, m, req, false).await,
        (["intermediate", "cross-sign"], _) => cross_sign_csr(a, req).await,
        (["issuer", iref], _) | (["issuer", iref, "json"], _) => {
            let l = load_issuer_entry(a, iref).await?;
            Ok(Response::data(issuer_json(&l)))
        }
        (["issuer", iref, fmt @ ("pem" | "der")], _) => {
            let l = load_issuer_entry(a, iref).await?;
            let der = pem_to_der(&l.certificate)?;
            Ok(raw(if *fmt == "pem" {
                (
                    "application/pem-certificate-chain",
                    l.certificate.clone().into_bytes(),
                )
            } else {
                ("application/pkix-cert", der)
            }))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn raw(r: (&'static str, Vec<u8>)) -> Response {
    Response {
        raw: Some(r),
        ..Default::default()
    }
}

fn require_usage(l: &Loaded, usage: &str) -> ApiResult<()> {
    if l.entry.revoked && usage == "issuing-certificates" {
        Err(ApiError::bad(format!(
            "issuer {} is revoked and cannot issue certificates",
            l.entry.issuer_name
        )))
    } else if l.entry.usage.split(',').any(|u| u.trim() == usage) {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "issuer {} does not have the {usage} usage",
            l.entry.issuer_name
        )))
    }
}

async fn load_issuer_entry(a: &Pk<'_>, reference: &str) -> ApiResult<IssuerEntry> {
    let id = resolve_issuer_id(a, reference)
        .await
        .map_err(|_| ApiError::NotFound)?;
    a.get_json(&format!("issuer/{id}"))
        .await?
        .ok_or(ApiError::NotFound)
}

fn issuer_json(e: &IssuerEntry) -> Value {
    json!({
        "issuer_id": e.issuer_id,
        "issuer_name": e.issuer_name,
        "key_id": e.key_id,
        "certificate": e.certificate,
        "ca_chain": e.ca_chain,
        "serial_number": e.serial_number,
        "leaf_not_after_behavior": e.leaf_not_after_behavior,
        "usage": e.usage,
        "manual_chain": Value::Null,
        "revoked": e.revoked,
        "revocation_time": e.revocation_time,
        "revocation_time_rfc3339": if e.revoked { crate::core::rfc3339(e.revocation_time) } else { String::new() },
    })
}

async fn write_urls(a: &Pk<'_>, m: &MountEntry, req: &Request) -> ApiResult<Response> {
    let mut u = urls(a, m).await?;
    for (field, slot) in [
        ("issuing_certificates", &mut u.issuing_certificates),
        ("crl_distribution_points", &mut u.crl_distribution_points),
        ("ocsp_servers", &mut u.ocsp_servers),
    ] {
        if req.data.contains_key(field) {
            let list = fields::list_of(&req.data, field)?;
            for url in &list {
                if !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("ldap://"))
                    || url.len() > 2048
                    || url.contains(char::is_whitespace)
                {
                    return Err(ApiError::bad(format!(
                        "{field}: {url:?} is not a valid http(s) or ldap URL"
                    )));
                }
            }
            *slot = list;
        }
    }
    a.put_json("config/urls", &u).await?;
    invalidate(a, m);
    Ok(Response::data(serde_json::to_value(u)?))
}

async fn crl_config(a: &Pk<'_>) -> ApiResult<Value> {
    Ok(a.get_json("config/crl").await?.unwrap_or_else(
        || json!({"expiry": "72h", "disable": false, "auto_rebuild": false, "enable_delta": false}),
    ))
}

async fn write_crl_config(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
    let mut c = crl_config(a).await?;
    if req.data.contains_key("expiry") {
        let secs = fields::duration_of(&req.data, "expiry")?;
        if secs == 0 {
            return Err(ApiError::bad("expiry: must be positive"));
        }
        c["expiry"] = json!(fields::str_of(&req.data, "expiry")?);
    }
    for k in ["disable", "auto_rebuild", "enable_delta"] {
        if req.data.contains_key(k) {
            c[k] = json!(fields::bool_of(&req.data, k, false)?);
        }
    }
    if c["disable"] == json!(true) {
        return Err(ApiError::bad("disable: turning CRLs off is not supported"));
    }
    a.put_json("config/crl", &c).await?;
    Ok(Response::data(c))
}

async fn write_role(
    a: &Pk<'_>,
    m: &MountEntry,
    name: &str,
    req: &Request,
    who: &str,
) -> ApiResult<Response> {
    valid_name("role name", name)?;
    let key = format!("role/{name}");
    let existing: Option<Role> = a.get_json(&key).await?;
    let (role, warnings) = Role::from_fields(existing.as_ref(), &req.data)?;
    let stored = Zeroizing::new(serde_json::to_vec(&role)?);
    a.write(vec![Plain::Put(key, stored.to_vec())]).await?;
    forget_parsed(a, m);
    a.log()?
        .append(Event::RoleChanged {
            mount: m.path.clone(),
            role: name.to_string(),
            op: ChangeOp::Write,
            config_sha256: Some(sha256_hex(&stored)),
            requester: who.to_string(),
        })
        .await?;
    let mut r = Response::data(role.to_json());
    r.warnings = warnings;
    Ok(r)
}

fn subject_from(d: &Map<String, Value>) -> ApiResult<SubjectFields> {
    Ok(SubjectFields {
        country: fields::list_of(d, "country")?,
        organization: fields::list_of(d, "organization")?,
        ou: fields::list_of(d, "ou")?,
        locality: fields::list_of(d, "locality")?,
        province: fields::list_of(d, "province")?,
        street_address: fields::list_of(d, "street_address")?,
        postal_code: fields::list_of(d, "postal_code")?,
    })
}

async fn generate_root(
    a: &Pk<'_>,
    m: &MountEntry,
    kind: &str,
    req: &Request,
) -> ApiResult<Response> {
    let d = &req.data;
    let cn = fields::str_of(d, "common_name")?;
    if cn.is_empty() {
        return Err(ApiError::bad("common_name: is required"));
    }
    let (kt, bits) = key_type_bits(d)?;
    let now = now_unix();
    let (_, max) = mount_ttls(a, m);
    let ttl = match fields::duration_of(d, "ttl")? {
        0 => max,
        t => t,
    };
    let mut alt = Vec::new();
    for n in fields::list_of(d, "alt_names")? {
        alt.push(custos_pki::der::GeneralName::Dns(n));
    }
    let params = CaParams {
        common_name: cn,
        subject: subject_from(d)?,
        alt_names: alt,
        not_before: now - 30,
        not_after: now + ttl as i64,
        max_path_length: fields::int_of(d, "max_path_length", -1)?,
    };
    let issuer_name = fields::str_of(d, "issuer_name")?;
    if !issuer_name.is_empty() {
        valid_name("issuer_name", &issuer_name)?;
    }
    let u = urls(a, m).await?;
    let serial = issue::random_serial()?;
    let (cert, key) = tokio::task::spawn_blocking(move || -> Result<_, PkiError> {
        let key = issue::generate_key(kt, bits)?;
        let cert = issue::self_signed_root(&params, &key, &u, &serial)?;
        Ok((cert, key))
    })
    .await
    .map_err(ApiError::internal)??;
    let issuer_id = uuid::Uuid::new_v4().to_string();
    let key_id = uuid::Uuid::new_v4().to_string();
    let key_pem = Zeroizing::new(key.serialize_pem());
    let cert_pem = cert.pem().trim().to_string();
    let (_, x) = x509_parser::parse_x509_certificate(cert.der())
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let entry = IssuerEntry {
        issuer_id: issuer_id.clone(),
        issuer_name: if issuer_name.is_empty() {
            format!("issuer-{}", &issuer_id[..8])
        } else {
            issuer_name
        },
        key_id: key_id.clone(),
        certificate: cert_pem.clone(),
        ca_chain: vec![cert_pem.clone()],
        serial_number: issue::serial_hex(&serial),
        not_after: x.validity().not_after.timestamp(),
        leaf_not_after_behavior: "err".into(),
        usage: "read-only,issuing-certificates,crl-signing,ocsp-signing".into(),
        key_type: kt.name().into(),
        revoked: false,
        revocation_time: 0,
    };
    let key_entry = KeyEntry {
        key_id: key_id.clone(),
        key_name: String::new(),
        key_type: kt.name().into(),
        private_key: key_pem.to_string(),
    };
    let mut ops = vec![
        Plain::Put(format!("issuer/{issuer_id}"), serde_json::to_vec(&entry)?),
        Plain::Put(
            format!("key/{key_id}"),
            Zeroizing::new(serde_json::to_vec(&key_entry)?).to_vec(),
        ),
    ];
    if default_issuer_id(a).await?.is_none() {
        ops.push(Plain::Put(
            "config/issuers".to_string(),
            serde_json::to_vec(&json!({"default": issuer_id}))?,
        ));
    }
    a.write(ops).await?;
    invalidate(a, m);
    let mut data = json!({
        "certificate": cert_pem,
        "issuing_ca": cert_pem,
        "ca_chain": [cert_pem],
        "serial_number": entry.serial_number,
        "expiration": entry.not_after,
        "issuer_id": issuer_id,
        "issuer_name": entry.issuer_name,
        "key_id": key_id,
        "key_name": "",
    });
    match kind {
        "exported" => {
            data["private_key"] = json!(key_pem.as_str());
            data["private_key_type"] = json!(kt.name());
        }
        "internal" => {}
        other => {
            return Err(ApiError::bad(format!(
                "unknown type {other:?}: use internal or exported"
            )))
        }
    }
    Ok(Response::data(data))
}

async fn delete_root(a: &Pk<'_>, m: &MountEntry) -> ApiResult<Response> {
    let mut ops = Vec::new();
    for p in ["issuer/", "key/"] {
        for k in a.list(&format!("{p}")).await? {
            ops.push(Plain::Delete(format!("{p}{k}")));
        }
    }
    ops.push(Plain::Delete("config/issuers".to_string()));
    a.write(ops).await?;
    invalidate(a, m);
    Ok(Response::empty())
}

fn check_csr_key(role: &Role, k: csr::KeyInfo) -> ApiResult<()> {
    let sba = role.profile == custos_pki::role::Profile::Sba;
    match k {
        csr::KeyInfo::Rsa(b) if b < 2048 => {
            return Err(ApiError::bad(format!(
                "RSA keys must be at least 2048 bits; the CSR has {b}"
            )))
        }
        csr::KeyInfo::Other => {
            return Err(ApiError::bad(
                "the CSR's key algorithm is not supported (use RSA, EC P-256/P-384 or Ed25519)",
            ))
        }
        _ => {}
    }
    if sba
        && !matches!(
            k,
            csr::KeyInfo::Ec(256) | csr::KeyInfo::Ec(384) | csr::KeyInfo::Rsa(_)
        )
    {
        return Err(ApiError::bad("TS 33.310 6.1.3c: SBA keys must be EC P-256/P-384 (or RSA >= 2048 where the role allows it)"));
    }
    if role.key_type != KeyType::Any {
        if k.key_type() != Some(role.key_type) {
            return Err(ApiError::bad(format!(
                "role requires key type {}; the CSR has {k:?}",
                role.key_type.name()
            )));
        }
        let ok = match k {
            csr::KeyInfo::Rsa(b) => b >= role.key_bits,
            csr::KeyInfo::Ec(b) => b == role.key_bits,
            _ => true,
        };
        if !ok {
            return Err(ApiError::bad(format!(
                "role requires {} key_bits {}; the CSR has {k:?}",
                role.key_type.name(),
                role.key_bits
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn issue_or_sign(
    a: &Pk<'_>,
    m: &MountEntry,
    role_name: &str,
    issuer_ref: Option<&str>,
    req: &Request,
    sign: bool,
    who: &Who,
) -> ApiResult<Response> {
    let role = cached_role(a, m, role_name).await?;
    let csr_info = if sign {
        let text = fields::str_of(&req.data, "csr")?;
        if text.is_empty() {
            return Err(ApiError::bad("csr: is required"));
        }
        let info = csr::parse_csr(&text)?;
        check_csr_key(&role, info.key)?;
        Some(info)
    } else {
        if role.key_type == KeyType::Any {
            return Err(ApiError::bad(
                "role key_type is \"any\": use sign with a CSR instead of issue",
            ));
        }
        None
    };
    let issuer = load_issuer(a, m, issuer_ref.unwrap_or(&role.issuer_ref)).await?;
    require_usage(&issuer, "issuing-certificates")?;
    issue_with(a, m, (&role, role_name), &issuer, csr_info, req, who).await
}

#[allow(clippy::too_many_arguments)]
async fn issue_with(
    a: &Pk<'_>,
    m: &MountEntry,
    (role, role_name): (&Role, &str),
    issuer: &Arc<Loaded>,
    csr_info: Option<csr::CsrInfo>,
    req: &Request,
    who: &Who,
) -> ApiResult<Response> {
    let u = urls(a, m).await?;
    let (default_ttl, max_ttl) = mount_ttls(a, m);
    let ctx = Context {
        now: now_unix(),
        issuer_not_after: issuer.entry.not_after,
        truncate_to_issuer: issuer.entry.leaf_not_after_behavior == "truncate",
        permit_beyond_issuer: issuer.entry.leaf_not_after_behavior == "permit",
        default_ttl,
        max_ttl,
        crl_urls: u.crl_distribution_points.clone(),
        identity: who.identity.clone(),
    };
    let approved = custos_pki::policy::evaluate(role, &req.data, csr_info.as_ref(), &ctx)?;
    let format = fields::str_of(&req.data, "format")?;
    if !matches!(format.as_str(), "" | "pem" | "der" | "pem_bundle") {
        return Err(ApiError::bad("format: must be pem, der or pem_bundle"));
    }
    let warnings = approved.warnings.clone();
    let nf_types = approved.nf_types.clone().unwrap_or_default();
    let validity = (approved.not_before, approved.not_after);
    let serial = issue::random_serial()?;
    let (kt, bits) = (role.key_type, role.key_bits);
    let iss = issuer.clone();
    let spki = csr_info.as_ref().map(|c| c.spki_der.clone());
    let work = move || -> Result<(Vec<u8>, Option<Zeroizing<String>>), PkiError> {
        match spki {
            Some(spki) => {
                let pk = rcgen::SubjectPublicKeyInfo::from_der(&spki)
                    .map_err(|e| PkiError::field("csr", &e.to_string()))?;
                Ok((
                    issue::sign_leaf(&approved, &pk, &iss.signer, &u, &serial)?
                        .der()
                        .to_vec(),
                    None,
                ))
            }
            None => {
                let key = issue::generate_key(kt, bits)?;
                let cert = issue::sign_leaf(&approved, &key, &iss.signer, &u, &serial)?;
                Ok((
                    cert.der().to_vec(),
                    Some(Zeroizing::new(key.serialize_pem())),
                ))
            }
        }
    };
    // EC and Ed25519 keygen+signing take tens of microseconds: cheaper inline than a hop to
    // the blocking pool. RSA key generation can take a second and must not stall a worker.
    let rsa_work = kt == KeyType::Rsa && csr_info.is_none() || issuer.entry.key_type == "rsa";
    let (cert_der, key_pem) = if rsa_work {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)??
    } else {
        work()?
    };
    let serial_hex = issue::serial_hex(&serial);
    let cert_pem = pem("CERTIFICATE", &cert_der);
    // The policy decided the validity; the certificate carries exactly these seconds.
    let (not_before, not_after) = validity;
    if !role.no_store {
        let row = CertRow {
            mount: m.uuid.clone(),
            serial: serial_hex.clone(),
            issuer_id: issuer.entry.issuer_id.clone(),
            not_after,
            revoked_at: None,
            value: cert_der.clone(),
        };
        a.write(vec![Plain::Cert(row)]).await?;
    }
    // Handed out only once its log entry is durable: no certificate reaches anyone unlogged.
    a.log()?
        .append(Event::CertIssued {
            mount: m.path.clone(),
            issuer: issuer.entry.issuer_id.clone(),
            role: role_name.to_string(),
            serial: serial_hex.clone(),
            not_after,
            cert_sha256: sha256_hex(&cert_der),
            nf_types,
            requester: who.requester.clone(),
        })
        .await?;
    let ca_pem = issuer.entry.certificate.clone();
    let (certificate, issuing_ca) = match format.as_str() {
        "der" => (
            json!(base64::engine::general_purpose::STANDARD.encode(&cert_der)),
            json!(base64::engine::general_purpose::STANDARD.encode(&issuer.der)),
        ),
        "pem_bundle" => (json!(format!("{cert_pem}\n{ca_pem}")), json!(ca_pem)),
        _ => (json!(cert_pem), json!(ca_pem)),
    };
    let mut data = json!({
        "certificate": certificate,
        "issuing_ca": issuing_ca,
        "ca_chain": issuer.entry.ca_chain,
        "serial_number": serial_hex,
        "expiration": not_after,
        "not_before": not_before,
    });
    if let Some(k) = key_pem {
        data["private_key"] = json!(k.as_str());
        data["private_key_type"] = json!(role.key_type.name());
    }
    let mut r = Response::data(data);
    r.warnings = warnings;
    Ok(r)
}

async fn sign_verbatim(
    a: &Pk<'_>,
    m: &MountEntry,
    role_name: Option<&str>,
    req: &Request,
    who: &Who,
) -> ApiResult<Response> {
    // Without a role: Vault's sign-verbatim takes the CSR's names as they are (any name), with
    // server and client usage; a role, if named, still bounds TTL and usages.
    let text = fields::str_of(&req.data, "csr")?;
    if text.is_empty() {
        return Err(ApiError::bad("csr: is required"));
    }
    let info = csr::parse_csr(&text)?;
    let base_role = match role_name {
        Some(n) => a
            .get_json::<Role>(&format!("role/{n}"))
            .await?
            .ok_or_else(|| ApiError::bad(format!("unknown role: {n}")))?,
        None => Role::default(),
    };
    let role = Role {
        allow_any_name: true,
        enforce_hostnames: false,
        allowed_uri_sans: vec!["*".into()],
        require_cn: false,
        key_type: KeyType::Any,
        use_csr_common_name: true,
        use_csr_sans: true,
        profile: custos_pki::role::Profile::None,
        ..base_role
    };
    check_csr_key(&role, info.key)?;
    let issuer = load_issuer(a, m, &role.issuer_ref).await?;
    let name = role_name.unwrap_or("sign-verbatim");
    issue_with(a, m, (&role, name), &issuer, Some(info), req, who).await
}

async fn revoke(a: &Pk<'_>, m: &MountEntry, req: &Request, who: &str) -> ApiResult<Response> {
    let serial_field = fields::str_of(&req.data, "serial_number")?;
    let cert_field = fields::str_of(&req.data, "certificate")?;
    let (serial, row) = match (serial_field.is_empty(), cert_field.is_empty()) {
        (false, true) => {
            let s = norm_serial(&serial_field)?;
            let row = a
                .get_cert(&s)
                .await?
                .ok_or_else(|| ApiError::bad(format!("certificate with serial {s} not found")))?;
            (s, row)
        }
        (true, false) => {
            // "Bring your own certificate": it must have been signed by one of our issuers.
            let der = pem_to_der(&cert_field)?;
            let (_, x) = x509_parser::parse_x509_certificate(&der)
                .map_err(|_| ApiError::bad("certificate: not a valid X.509 certificate"))?;
            let s = issue::serial_hex(x.raw_serial());
            let mut issuer_id = None;
            for id in a.list("issuer/").await? {
                if let Ok(l) = load_issuer(a, m, &id).await {
                    if let Ok((_, ix)) = x509_parser::parse_x509_certificate(&l.der) {
                        if x.verify_signature(Some(ix.public_key())).is_ok() {
                            issuer_id = Some(id);
                            break;
                        }
                    }
                }
            }
            let issuer_id = issuer_id.ok_or_else(|| {
                ApiError::bad("certificate: was not issued by any issuer of this mount")
            })?;
            let row = match a.get_cert(&s).await? {
                Some(r) => r,
                None => CertRow {
                    mount: m.uuid.clone(),
                    serial: s.clone(),
                    issuer_id,
                    not_after: x.validity().not_after.timestamp(),
                    revoked_at: None,
                    value: der.clone(),
                },
            };
            (s, row)
        }
        _ => {
            return Err(ApiError::bad(
                "exactly one of serial_number or certificate is required",
            ))
        }
    };
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            if e.serial_number == serial {
                return Err(ApiError::bad(
                    "adding a CA to a CRL is not allowed; revoke the issuer instead",
                ));
            }
        }
    }
    if let Some(t) = row.revoked_at {
        return Ok(Response::data(
            json!({"revocation_time": t, "revocation_time_rfc3339": crate::core::rfc3339(t), "state": "revoked"}),
        ));
    }
    let now = now_unix();
    let mut new_row = row.clone();
    new_row.revoked_at = Some(now);
    a.write(vec![Plain::Cert(new_row)]).await?;
    bump_generation(&a.issuers, m);
    a.log()?
        .append(Event::CertRevoked {
            mount: m.path.clone(),
            serial: serial.clone(),
            requester: who.to_string(),
        })
        .await?;
    Ok(Response::data(
        json!({"revocation_time": now, "revocation_time_rfc3339": crate::core::rfc3339(now), "state": "revoked"}),
    ))
}

async fn list_certs(a: &Pk<'_>, revoked: bool, req: &Request) -> ApiResult<Response> {
    let after = fields::str_of(&req.data, "after")?;
    let limit = fields::int_of(&req.data, "limit", 100_000)?.clamp(1, 100_000) as usize;
    let after = (!after.is_empty()).then_some(after.as_str());
    let keys = if revoked {
        a.revoked_certs(after, limit)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    } else {
        a.list_certs(after, limit).await?
    };
    Response::list(keys)
}

async fn read_cert(a: &Pk<'_>, serial: &str, rest: &[&str]) -> ApiResult<Response> {
    let s = norm_serial(serial).map_err(|_| ApiError::NotFound)?;
    let row = a.get_cert(&s).await?.ok_or(ApiError::NotFound)?;
    // The stored record is the certificate's DER.
    let cert = pem("CERTIFICATE", &row.value);
    match rest {
        ["raw"] => Ok(raw(("application/pkix-cert", row.value.clone()))),
        ["raw", "pem"] => Ok(raw((
            "application/pem-certificate-chain",
            cert.into_bytes(),
        ))),
        _ => Ok(Response::data(json!({
            "certificate": cert,
            "revocation_time": row.revoked_at.unwrap_or(0),
            "revocation_time_rfc3339": row.revoked_at.map(crate::core::rfc3339).unwrap_or_default(),
            "issuer_id": row.issuer_id,
            "serial_number": s,
            "expiration": row.not_after,
        }))),
    }
}

async fn ca(a: &Pk<'_>, sub: &str) -> ApiResult<Response> {
    let e = load_issuer_entry(a, "default").await?;
    Ok(match sub {
        "ca" => raw(("application/pkix-cert", pem_to_der(&e.certificate)?)),
        "ca/pem" => raw((
            "application/pem-certificate-chain",
            e.certificate.clone().into_bytes(),
        )),
        "ca_chain" => raw((
            "application/pem-certificate-chain",
            e.ca_chain.join("\n").into_bytes(),
        )),
        _ => Response::data(
            json!({"certificate": e.certificate, "ca_chain": e.ca_chain, "issuer_id": e.issuer_id}),
        ),
    })
}

async fn list_issuers(a: &Pk<'_>) -> ApiResult<Response> {
    let mut keys = Vec::new();
    let mut info = Map::new();
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            info.insert(id.clone(), json!({"issuer_name": e.issuer_name, "is_default": false, "serial_number": e.serial_number}));
            keys.push(id);
        }
    }
    if keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Response::data(json!({"keys": keys, "key_info": info})))
}

async fn raw_crl(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: Option<&str>,
    as_pem: bool,
) -> ApiResult<Response> {
    let iref = iref
        .filter(|r| *r != "pem" && *r != "der")
        .unwrap_or("default");
    let der = crl(a, m, iref, false).await?;
    Ok(if as_pem {
        raw((
            "application/pem-certificate-chain",
            pem("X509 CRL", &der).into_bytes(),
        ))
    } else {
        raw(("application/pkix-crl", der))
    })
}

/// Returns the current CRL of an issuer, rebuilding it if revocations happened since it was
/// built, if it is close to expiry, or if `force`.
async fn crl(a: &Pk<'_>, m: &MountEntry, iref: &str, force: bool) -> ApiResult<Vec<u8>> {
    let issuer = load_issuer(a, m, iref).await?;
    require_usage(&issuer, "crl-signing")?;
    let key = format!("{}/{}", m.uuid, issuer.entry.issuer_id);
    let gen = generation(a, m);
    let now = now_unix();
    if !force {
        if let Some(c) = a.issuers.crls.read().ok().and_then(|c| {
            c.get(&key)
                .map(|c| (c.generation, c.der.clone(), c.next_update))
        }) {
            if c.0 == gen && c.2 - now > 3600 {
                return Ok(c.1);
            }
        }
    }
    let cfg = crl_config(a).await?;
    let expiry = fields::parse_duration(cfg.get("expiry").and_then(Value::as_str).unwrap_or("72h"))
        .unwrap_or(72 * 3600);
    // Stream the revocation index a page at a time.
    let mut revoked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = a.revoked_certs(after.as_deref(), 10_000).await?;
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.0.clone());
        for (s, t) in page {
            revoked.push(Revoked {
                serial: serial_bytes(&s)?,
                revoked_at: t,
            });
        }
    }
    let num_key = format!("crl-number/{}", issuer.entry.issuer_id);
    let number: u64 = a.get_json::<u64>(&num_key).await?.unwrap_or(0) + 1;
    a.put_json(&num_key, &number).await?;
    let iss = issuer.clone();
    let next = now + expiry as i64;
    let der = tokio::task::spawn_blocking(move || {
        issue::sign_crl(&revoked, now - 30, next, number, &iss.signer).map(|c| c.der().to_vec())
    })
    .await
    .map_err(ApiError::internal)??;
    a.put_json(
        &format!("crl-base/{}", issuer.entry.issuer_id),
        &json!({"number": number, "built_at": now}),
    )
    .await?;
    if let Ok(mut c) = a.issuers.crls.write() {
        c.insert(
            key,
            CachedCrl {
                generation: gen,
                der: der.clone(),
                next_update: next,
            },
        );
    }
    Ok(der)
}

fn key_type_bits(d: &Map<String, Value>) -> ApiResult<(KeyType, u32)> {
    let k = fields::str_of(d, "key_type")?;
    let kt = KeyType::parse(if k.is_empty() { "rsa" } else { &k })?;
    if kt == KeyType::Any {
        return Err(ApiError::bad("key_type: \"any\" is not valid for a CA key"));
    }
    Ok((kt, kt.bits(fields::int_of(d, "key_bits", 0)?)?))
}

async fn generate_intermediate(a: &Pk<'_>, kind: &str, req: &Request) -> ApiResult<Response> {
    if kind != "internal" && kind != "exported" {
        return Err(ApiError::bad(format!(
            "unknown type {kind:?}: use internal or exported"
        )));
    }
    let d = &req.data;
    let cn = fields::str_of(d, "common_name")?;
    if cn.is_empty() {
        return Err(ApiError::bad("common_name: is required"));
    }
    let (kt, bits) = key_type_bits(d)?;
    let subject = subject_from(d)?;
    let (csr_pem, key) = tokio::task::spawn_blocking(move || -> Result<_, PkiError> {
        let key = issue::generate_key(kt, bits)?;
        Ok((issue::intermediate_csr(&cn, &subject, &key)?, key))
    })
    .await
    .map_err(ApiError::internal)??;
    let key_id = uuid::Uuid::new_v4().to_string();
    let key_pem = Zeroizing::new(key.serialize_pem());
    let entry = KeyEntry {
        key_id: key_id.clone(),
        key_name: fields::str_of(d, "key_name")?,
        key_type: kt.name().into(),
        private_key: key_pem.to_string(),
    };
    a.write(vec![Plain::Put(
        format!("key/{key_id}"),
        Zeroizing::new(serde_json::to_vec(&entry)?).to_vec(),
    )])
    .await?;
    let mut data = json!({"csr": csr_pem, "key_id": key_id, "key_name": entry.key_name});
    if kind == "exported" {
        data["private_key"] = json!(key_pem.as_str());
        data["private_key_type"] = json!(kt.name());
    }
    Ok(Response::data(data))
}

async fn sign_intermediate(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: &str,
    req: &Request,
) -> ApiResult<Response> {
    let d = &req.data;
    let text = fields::str_of(d, "csr")?;
    if text.is_empty() {
        return Err(ApiError::bad("csr: is required"));
    }
    let info = csr::parse_ca_csr(&text)?;
    if matches!(info.key, csr::KeyInfo::Other) {
        return Err(ApiError::bad("the CSR's key algorithm is not supported"));
    }
    let use_csr = fields::bool_of(d, "use_csr_values", false)?;
    let mut cn = fields::str_of(d, "common_name")?;
    if cn.is_empty() && use_csr {
        cn = info.common_name.clone().unwrap_or_default();
    }
    if cn.is_empty() {
        return Err(ApiError::bad(
            "common_name: is required (or set use_csr_values)",
        ));
    }
    let issuer = load_issuer(a, m, iref).await?;
    let now = now_unix();
    let (_, max) = mount_ttls(a, m);
    let ttl = match fields::duration_of(d, "ttl")? {
        0 => max,
        t => t,
    };
    let not_after = (now + ttl as i64).min(issuer.entry.not_after);
    let sba = fields::str_of(d, "profile")? == "3gpp-sba";
    let max_path_length = if sba {
        0
    } else {
        fields::int_of(d, "max_path_length", -1)?
    };
    let params = CaParams {
        common_name: cn,
        subject: subject_from(d)?,
        alt_names: vec![],
        not_before: now - 30,
        not_after,
        max_path_length,
    };
    let u = urls(a, m).await?;
    let serial = issue::random_serial()?;
    let iss = issuer.clone();
    let spki = info.spki_der.clone();
    let der = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, PkiError> {
        let pk = rcgen::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| PkiError::field("csr", &e.to_string()))?;
        Ok(
            issue::sign_intermediate(&params, &pk, &iss.signer, &u, &serial)?
                .der()
                .to_vec(),
        )
    })
    .await
    .map_err(ApiError::internal)??;
    let serial_hex = issue::serial_hex(&serial);
    let cert_pem = pem("CERTIFICATE", &der);
    let row = CertRow {
        mount: m.uuid.clone(),
        serial: serial_hex.clone(),
        issuer_id: issuer.entry.issuer_id.clone(),
        not_after,
        revoked_at: None,
        value: der.clone(),
    };
    a.write(vec![Plain::Cert(row)]).await?;
    let mut chain = vec![cert_pem.clone()];
    chain.extend(issuer.entry.ca_chain.iter().cloned());
    Ok(Response::data(json!({
        "certificate": cert_pem,
        "issuing_ca": issuer.entry.certificate,
        "ca_chain": chain,
        "serial_number": serial_hex,
        "expiration": not_after,
    })))
}

fn is_ca(x: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    x.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
}

fn split_pem_certs(bundle: &str) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(bundle.as_bytes()) {
        let block = block.map_err(|_| ApiError::bad("certificate: malformed PEM"))?;
        if block.label == "CERTIFICATE" {
            x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|_| ApiError::bad("certificate: not a valid X.509 certificate"))?;
            out.push(pem("CERTIFICATE", &block.contents));
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad("certificate: no PEM CERTIFICATE block found"));
    }
    Ok(out)
}

async fn set_signed(a: &Pk<'_>, m: &MountEntry, req: &Request) -> ApiResult<Response> {
    let bundle = fields::str_of(&req.data, "certificate")?;
    let certs = split_pem_certs(&bundle)?;
    let der = pem_to_der(&certs[0])?;
    let (_, x) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| ApiError::bad("certificate: not a valid X.509 certificate"))?;
    if !is_ca(&x) {
        return Err(ApiError::bad(
            "certificate: is not a CA certificate (basicConstraints CA:TRUE missing)",
        ));
    }
    let cert_pub = x.public_key().subject_public_key.data.to_vec();
    let mut key_id = None;
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            if let Ok(kp) = rcgen::KeyPair::from_pem(&k.private_key) {
                if kp.public_key_raw() == cert_pub.as_slice() {
                    key_id = Some((id, k.key_type.clone()));
                    break;
                }
            }
        }
    }
    let (key_id, key_type) = key_id.ok_or_else(|| ApiError::bad("certificate: its public key matches no key generated in this mount (run intermediate/generate first)"))?;
    let issuer_id = uuid::Uuid::new_v4().to_string();
    let entry = IssuerEntry {
        issuer_id: issuer_id.clone(),
        issuer_name: format!("issuer-{}", &issuer_id[..8]),
        key_id: key_id.clone(),
        certificate: certs[0].clone(),
        ca_chain: certs.clone(),
        serial_number: issue::serial_hex(x.raw_serial()),
        not_after: x.validity().not_after.timestamp(),
        leaf_not_after_behavior: "err".into(),
        usage: "read-only,issuing-certificates,crl-signing,ocsp-signing".into(),
        key_type,
        revoked: false,
        revocation_time: 0,
    };
    let mut ops = vec![Plain::Put(
        format!("issuer/{issuer_id}"),
        serde_json::to_vec(&entry)?,
    )];
    if default_issuer_id(a).await?.is_none() {
        ops.push(Plain::Put(
            "config/issuers".to_string(),
            serde_json::to_vec(&json!({"default": issuer_id}))?,
        ));
    }
    a.write(ops).await?;
    invalidate(a, m);
    Ok(Response::data(
        json!({"imported_issuers": [issuer_id], "imported_keys": [], "mapping": {issuer_id.clone(): key_id}, "existing_issuers": [], "existing_keys": []}),
    ))
}

fn ocsp_bytes(b: Vec<u8>) -> Response {
    raw(("application/ocsp-response", b))
}

/// OCSP responder: good / revoked / unknown per CertID, signed by the issuing CA, nonce echoed.
async fn ocsp(a: &Pk<'_>, m: &MountEntry, der: &[u8]) -> ApiResult<Response> {
    use custos_pki::ocsp::{
        build_response, error_response, parse_request, CertStatus, HashAlg, Responder,
    };
    let req = match parse_request(der) {
        Ok(r) => r,
        Err(_) => return Ok(ocsp_bytes(error_response(1))),
    };
    // Each issuer of the mount, with its name/key hashes under both CertID hash algorithms.
    let mut issuers = Vec::new();
    for id in a.list("issuer/").await? {
        let Ok(l) = load_issuer(a, m, &id).await else {
            continue;
        };
        let Ok((_, x)) = x509_parser::parse_x509_certificate(&l.der) else {
            continue;
        };
        let name = x.subject().as_raw().to_vec();
        let key = x.public_key().subject_public_key.data.to_vec();
        let info = csr::key_info(x.public_key());
        issuers.push((l.clone(), name, key, info));
    }
    let mut statuses = Vec::with_capacity(req.cert_ids.len());
    let mut responder = None;
    for cid in &req.cert_ids {
        let hit = issuers.iter().find(|(_, name, key, _)| {
            let h: HashAlg = cid.hash;
            h.digest(name) == cid.issuer_name_hash && h.digest(key) == cid.issuer_key_hash
        });
        let status = match hit {
            None => CertStatus::Unknown,
            Some((l, _, _, _)) if require_usage(l, "ocsp-signing").is_err() => CertStatus::Unknown,
            Some((l, _, key, info)) => {
                if responder.is_none() {
                    responder = Some((l.clone(), key.clone(), *info));
                }
                let serial = issue::serial_hex(&cid.serial);
                match a.cert_status(&serial).await? {
                    Some(row) if row.issuer_id == l.entry.issuer_id => match row.revoked_at {
                        Some(t) => CertStatus::Revoked(t),
                        None => CertStatus::Good,
                    },
                    _ => CertStatus::Unknown,
                }
            }
        };
        statuses.push((cid, status));
    }
    let Some((l, key_bits, info)) = responder else {
        // Not authoritative for any requested certificate.
        return Ok(ocsp_bytes(error_response(6)));
    };
    let now = now_unix();
    let r = Responder {
        issuer_der: &l.der,
        key_hash_sha1: HashAlg::Sha1.digest(&key_bits),
        key: l.signer.key(),
        sig_alg: custos_pki::ocsp::signature_algorithm(info)?,
    };
    let body = build_response(
        &statuses,
        now,
        now + 12 * 3600,
        req.nonce_extension.as_deref(),
        &r,
    )?;
    Ok(ocsp_bytes(body))
}

const USAGES: &[&str] = &[
    "read-only",
    "issuing-certificates",
    "crl-signing",
    "ocsp-signing",
];

async fn update_issuer(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: &str,
    req: &Request,
) -> ApiResult<Response> {
    let mut e = load_issuer_entry(a, iref)
        .await
        .map_err(|_| ApiError::bad(format!("unknown issuer {iref:?}")))?;
    let d = &req.data;
    if d.contains_key("issuer_name") {
        let n = fields::str_of(d, "issuer_name")?;
        valid_name("issuer_name", &n)?;
        for id in a.list("issuer/").await? {
            if let Some(o) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
                if o.issuer_name == n && o.issuer_id != e.issuer_id {
                    return Err(ApiError::bad(format!(
                        "issuer_name {n:?} is already in use"
                    )));
                }
            }
        }
        e.issuer_name = n;
    }
    if d.contains_key("leaf_not_after_behavior") {
        let b = fields::str_of(d, "leaf_not_after_behavior")?;
        if !matches!(b.as_str(), "err" | "truncate" | "permit") {
            return Err(ApiError::bad(
                "leaf_not_after_behavior: must be err, truncate or permit",
            ));
        }
        e.leaf_not_after_behavior = b;
    }
    if d.contains_key("usage") {
        let u = fields::list_of(d, "usage")?;
        if let Some(bad) = u.iter().find(|x| !USAGES.contains(&x.as_str())) {
            return Err(ApiError::bad(format!(
                "usage: unknown value {bad:?} (allowed: {})",
                USAGES.join(", ")
            )));
        }
        if e.revoked && u.iter().any(|x| x == "issuing-certificates") {
            return Err(ApiError::bad(format!(
                "usage: issuer {} is revoked and cannot regain issuing-certificates",
                e.issuer_name
            )));
        }
        e.usage = u.join(",");
    }
    if d.contains_key("manual_chain") {
        let refs = fields::list_of(d, "manual_chain")?;
        let mut chain = vec![e.certificate.clone()];
        for r in refs.iter().filter(|r| r.as_str() != "self") {
            let other = load_issuer_entry(a, r)
                .await
                .map_err(|_| ApiError::bad(format!("manual_chain: unknown issuer {r:?}")))?;
            chain.push(other.certificate);
        }
        e.ca_chain = if refs.is_empty() {
            vec![e.certificate.clone()]
        } else {
            chain
        };
    }
    a.put_json(&format!("issuer/{}", e.issuer_id), &e).await?;
    invalidate(a, m);
    Ok(Response::data(issuer_json(&e)))
}

/// `issuer/:ref/revoke` (Vault): the issuer loses its issuing usage for good (it keeps
/// signing CRLs and OCSP responses, so relying parties still learn about its leaves), and if
/// another issuer of this mount signed its certificate, that certificate is marked revoked
/// there, in the same transaction, so it appears on the signer's CRL. Repeating the call is a
/// no-op that returns the issuer as stored.
async fn revoke_issuer(a: &Pk<'_>, m: &MountEntry, iref: &str) -> ApiResult<Response> {
    let mut e = load_issuer_entry(a, iref).await?;
    if e.revoked {
        return Ok(Response::data(issuer_json(&e)));
    }
    let der = pem_to_der(&e.certificate)?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        ApiError::internal(std::io::Error::other(format!(
            "stored issuer certificate: {e}"
        )))
    })?;
    let now = now_unix();
    let mut ops = Vec::new();
    // A self-signed root is on no CRL; anything else is listed by the issuer that signed it.
    if x.subject().as_raw() != x.issuer().as_raw() || x.verify_signature(None).is_err() {
        for id in a.list("issuer/").await? {
            if id == e.issuer_id {
                continue;
            }
            let Ok(signer) = load_issuer(a, m, &id).await else {
                continue;
            };
            let Ok((_, sx)) = x509_parser::parse_x509_certificate(&signer.der) else {
                continue;
            };
            if x.verify_signature(Some(sx.public_key())).is_err() {
                continue;
            }
            let mut row = match a.get_cert(&e.serial_number).await? {
                Some(r) => r,
                None => CertRow {
                    mount: m.uuid.clone(),
                    serial: e.serial_number.clone(),
                    issuer_id: id.clone(),
                    not_after: x.validity().not_after.timestamp(),
                    revoked_at: None,
                    value: der.clone(),
                },
            };
            row.revoked_at = Some(row.revoked_at.unwrap_or(now));
            ops.push(Plain::Cert(row));
            break;
        }
    }
    e.revoked = true;
    e.revocation_time = now;
    e.usage = e
        .usage
        .split(',')
        .map(str::trim)
        .filter(|u| *u != "issuing-certificates")
        .collect::<Vec<_>>()
        .join(",");
    ops.push(Plain::Put(
        format!("issuer/{}", e.issuer_id),
        serde_json::to_vec(&e)?,
    ));
    a.write(ops).await?;
    invalidate(a, m);
    bump_generation(&a.issuers, m);
    Ok(Response::data(issuer_json(&e)))
}

async fn delete_issuer(a: &Pk<'_>, m: &MountEntry, iref: &str) -> ApiResult<Response> {
    let Ok(e) = load_issuer_entry(a, iref).await else {
        return Ok(Response::empty());
    };
    let mut ops = vec![Plain::Delete(format!("issuer/{}", e.issuer_id))];
    if default_issuer_id(a).await?.as_deref() == Some(e.issuer_id.as_str()) {
        ops.push(Plain::Delete("config/issuers".to_string()));
    }
    a.write(ops).await?;
    invalidate(a, m);
    Ok(Response::empty())
}

fn key_json(k: &KeyEntry) -> Value {
    json!({"key_id": k.key_id, "key_name": k.key_name, "key_type": k.key_type})
}

async fn find_key(a: &Pk<'_>, kref: &str) -> ApiResult<KeyEntry> {
    if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{kref}")).await? {
        return Ok(k);
    }
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            if !k.key_name.is_empty() && k.key_name == kref {
                return Ok(k);
            }
        }
    }
    Err(ApiError::NotFound)
}

async fn list_keys(a: &Pk<'_>) -> ApiResult<Response> {
    let mut keys = Vec::new();
    let mut info = Map::new();
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            info.insert(
                id.clone(),
                json!({"key_name": k.key_name, "key_type": k.key_type}),
            );
            keys.push(id);
        }
    }
    if keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Response::data(json!({"keys": keys, "key_info": info})))
}

async fn delete_key(a: &Pk<'_>, kref: &str) -> ApiResult<Response> {
    let k = find_key(a, kref).await?;
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            if e.key_id == k.key_id {
                return Err(ApiError::bad(format!(
                    "key {} is used by issuer {}; delete the issuer first",
                    k.key_id, e.issuer_name
                )));
            }
        }
    }
    a.write(vec![Plain::Delete(format!("key/{}", k.key_id))])
        .await?;
    Ok(Response::empty())
}

/// Imports CA certificates (and, for bundles, private keys) from PEM. Certificates are matched
/// to keys by public key; a certificate whose key is absent becomes a verify-only issuer.
async fn import_bundle(
    a: &Pk<'_>,
    m: &MountEntry,
    req: &Request,
    allow_keys: bool,
) -> ApiResult<Response> {
    let field = if req.data.contains_key("pem_bundle") {
        "pem_bundle"
    } else {
        "certificate"
    };
    let bundle = fields::str_of(&req.data, field)?;
    if bundle.trim().is_empty() {
        return Err(ApiError::bad("pem_bundle: is required"));
    }
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut keys: Vec<(rcgen::KeyPair, Zeroizing<String>)> = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(bundle.as_bytes()) {
        let block = block.map_err(|_| ApiError::bad("pem_bundle: malformed PEM"))?;
        match block.label.as_str() {
            "CERTIFICATE" => certs.push(block.contents),
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                if !allow_keys {
                    return Err(ApiError::bad("issuers/import/cert accepts certificates only; use issuers/import/bundle for keys"));
                }
                let pem_text = Zeroizing::new(pem(&block.label, &block.contents));
                let kp = rcgen::KeyPair::from_pem(&pem_text).map_err(|_| {
                    ApiError::bad(format!(
                        "pem_bundle: {} could not be parsed (use PKCS#8 \"PRIVATE KEY\")",
                        block.label
                    ))
                })?;
                let pk8 = Zeroizing::new(kp.serialize_pem());
                keys.push((kp, pk8));
            }
            other => {
                return Err(ApiError::bad(format!(
                    "pem_bundle: unexpected PEM block {other:?}"
                )))
            }
        }
    }
    if certs.is_empty() && keys.is_empty() {
        return Err(ApiError::bad("pem_bundle: no certificates or keys found"));
    }
    // Validate every certificate before storing anything.
    let mut parsed = Vec::new();
    for der in &certs {
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| ApiError::bad("pem_bundle: a certificate is not valid X.509"))?;
        if !is_ca(&x) {
            return Err(ApiError::bad(
                "pem_bundle: only CA certificates can be imported as issuers",
            ));
        }
        parsed.push((
            der.clone(),
            x.public_key().subject_public_key.data.to_vec(),
            issue::serial_hex(x.raw_serial()),
            x.validity().not_after.timestamp(),
            csr::key_info(x.public_key()),
        ));
    }
    let mut existing_keys = HashMap::new();
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            if let Ok(kp) = rcgen::KeyPair::from_pem(&k.private_key) {
                existing_keys.insert(kp.public_key_raw().to_vec(), id);
            }
        }
    }
    let mut existing_certs = HashMap::new();
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            existing_certs.insert(pem_to_der(&e.certificate)?, id);
        }
    }
    let mut ops = Vec::new();
    let (mut imported_keys, mut existing_keys_out, mut imported_issuers, mut existing_issuers) =
        (vec![], vec![], vec![], vec![]);
    let mut key_of: HashMap<Vec<u8>, String> = existing_keys.clone();
    for (kp, pk8) in &keys {
        let pubk = kp.public_key_raw().to_vec();
        if let Some(id) = existing_keys.get(&pubk) {
            existing_keys_out.push(id.clone());
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let info = match kp.algorithm() {
            a if a == &rcgen::PKCS_ECDSA_P384_SHA384 => "ec",
            a if a == &rcgen::PKCS_ECDSA_P256_SHA256 => "ec",
            a if a == &rcgen::PKCS_ED25519 => "ed25519",
            _ => "rsa",
        };
        let entry = KeyEntry {
            key_id: id.clone(),
            key_name: String::new(),
            key_type: info.into(),
            private_key: pk8.to_string(),
        };
        ops.push(Plain::Put(
            format!("key/{id}"),
            Zeroizing::new(serde_json::to_vec(&entry)?).to_vec(),
        ));
        key_of.insert(pubk, id.clone());
        imported_keys.push(id);
    }
    let mut mapping = Map::new();
    let mut first_new = None;
    for (der, pubk, serial, not_after, info) in parsed {
        if let Some(id) = existing_certs.get(&der) {
            existing_issuers.push(id.clone());
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let key_id = key_of.get(&pubk).cloned().unwrap_or_default();
        let cert_pem = pem("CERTIFICATE", &der);
        let entry = IssuerEntry {
            issuer_id: id.clone(),
            issuer_name: format!("issuer-{}", &id[..8]),
            key_id: key_id.clone(),
            certificate: cert_pem.clone(),
            ca_chain: vec![cert_pem],
            serial_number: serial,
            not_after,
            leaf_not_after_behavior: "err".into(),
            usage: "read-only,issuing-certificates,crl-signing,ocsp-signing".into(),
            key_type: info
                .key_type()
                .map(|k| k.name().to_string())
                .unwrap_or_default(),
            revoked: false,
            revocation_time: 0,
        };
        ops.push(Plain::Put(
            format!("issuer/{id}"),
            serde_json::to_vec(&entry)?,
        ));
        mapping.insert(id.clone(), json!(key_id));
        if first_new.is_none() && !key_id.is_empty() {
            first_new = Some(id.clone());
        }
        imported_issuers.push(id);
    }
    if default_issuer_id(a).await?.is_none() {
        if let Some(id) = &first_new {
            ops.push(Plain::Put(
                "config/issuers".to_string(),
                serde_json::to_vec(&json!({"default": id}))?,
            ));
        }
    }
    if !ops.is_empty() {
        a.write(ops).await?;
    }
    invalidate(a, m);
    Ok(Response::data(json!({
        "imported_issuers": imported_issuers,
        "imported_keys": imported_keys,
        "existing_issuers": existing_issuers,
        "existing_keys": existing_keys_out,
        "mapping": mapping,
    })))
}

/// `intermediate/cross-sign`: a CSR from an existing key, for another CA to sign.
async fn cross_sign_csr(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
    let d = &req.data;
    let kref = fields::str_of(d, "key_ref")?;
    let cn = fields::str_of(d, "common_name")?;
    if kref.is_empty() || cn.is_empty() {
        return Err(ApiError::bad("key_ref and common_name are required"));
    }
    let k = find_key(a, &kref)
        .await
        .map_err(|_| ApiError::bad(format!("key_ref: unknown key {kref:?}")))?;
    let kp = rcgen::KeyPair::from_pem(&k.private_key)
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let csr = issue::intermediate_csr(&cn, &subject_from(d)?, &kp)?;
    Ok(Response::data(json!({"csr": csr, "key_id": k.key_id})))
}

/// The delta CRL of an issuer: revocations since the last full CRL (its base), from the
/// `(mount, revoked_at)` index. Needs `enable_delta` in `config/crl`, as in Vault.
async fn delta_crl(a: &Pk<'_>, m: &MountEntry, iref: &str, as_pem: bool) -> ApiResult<Response> {
    let cfg = crl_config(a).await?;
    if cfg.get("enable_delta") != Some(&json!(true)) {
        return Err(ApiError::bad(
            "delta CRLs are disabled: set enable_delta=true in config/crl",
        ));
    }
    let issuer = load_issuer(a, m, iref).await?;
    require_usage(&issuer, "crl-signing")?;
    let base_key = format!("crl-base/{}", issuer.entry.issuer_id);
    if a.get_json::<Value>(&base_key).await?.is_none() {
        crl(a, m, iref, true).await?;
    }
    let b: Value = a
        .get_json(&base_key)
        .await?
        .unwrap_or_else(|| json!({"number": 0, "built_at": 0}));
    let base_number = b["number"].as_u64().unwrap_or(0);
    // Revocations from the base's build second on: the same second may repeat an entry the
    // base already has, which RFC 5280 allows; nothing later can be missed.
    let since = b["built_at"].as_i64().unwrap_or(0) - 1;
    let mut revoked = Vec::new();
    for (s, t) in a.revoked_since(since, 1_000_000).await? {
        revoked.push(Revoked {
            serial: serial_bytes(&s)?,
            revoked_at: t,
        });
    }
    let num_key = format!("crl-number/{}", issuer.entry.issuer_id);
    let number: u64 = a.get_json::<u64>(&num_key).await?.unwrap_or(0) + 1;
    a.put_json(&num_key, &number).await?;
    let now = now_unix();
    let interval = fields::parse_duration(
        cfg.get("delta_rebuild_interval")
            .and_then(Value::as_str)
            .unwrap_or("15m"),
    )
    .unwrap_or(900);
    let der = issue::sign_delta_crl(
        &revoked,
        now - 30,
        now + interval as i64 + 3600,
        number,
        base_number,
        &issuer.der,
        issuer.signer.key(),
    )?;
    Ok(if as_pem {
        raw((
            "application/pem-certificate-chain",
            pem("X509 CRL", &der).into_bytes(),
        ))
    } else {
        raw(("application/pkix-crl", der))
    })
}

async fn store_key(a: &Pk<'_>, name: String, kt: &str, pem_text: &str) -> ApiResult<String> {
    if !name.is_empty() {
        valid_name("key_name", &name)?;
        if find_key(a, &name).await.is_ok() {
            return Err(ApiError::bad(format!(
                "key_name {name:?} is already in use"
            )));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let entry = KeyEntry {
        key_id: id.clone(),
        key_name: name,
        key_type: kt.into(),
        private_key: pem_text.to_string(),
    };
    a.write(vec![Plain::Put(
        format!("key/{id}"),
        Zeroizing::new(serde_json::to_vec(&entry)?).to_vec(),
    )])
    .await?;
    Ok(id)
}

/// `keys/generate/{internal,exported}`: a managed key with no issuer yet.
async fn generate_key_only(a: &Pk<'_>, kind: &str, req: &Request) -> ApiResult<Response> {
    if kind != "internal" && kind != "exported" {
        return Err(ApiError::bad(format!(
            "unknown type {kind:?}: use internal or exported"
        )));
    }
    let (kt, bits) = key_type_bits(&req.data)?;
    let key = tokio::task::spawn_blocking(move || issue::generate_key(kt, bits))
        .await
        .map_err(ApiError::internal)??;
    let pem_text = Zeroizing::new(key.serialize_pem());
    let id = store_key(
        a,
        fields::str_of(&req.data, "key_name")?,
        kt.name(),
        &pem_text,
    )
    .await?;
    let mut data = json!({"key_id": id, "key_name": fields::str_of(&req.data, "key_name")?, "key_type": kt.name()});
    if kind == "exported" {
        data["private_key"] = json!(pem_text.as_str());
    }
    Ok(Response::data(data))
}

/// `keys/import`: a PKCS#8 PEM private key.
async fn import_key(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
    let text = Zeroizing::new(fields::str_of(&req.data, "pem_bundle")?);
    if text.trim().is_empty() {
        return Err(ApiError::bad("pem_bundle: is required"));
    }
    let kp = rcgen::KeyPair::from_pem(&text).map_err(|_| ApiError::bad("pem_bundle: not a private key this build can use (PKCS#8 \"PRIVATE KEY\": EC P-256/P-384, Ed25519 or RSA)"))?;
    let kt = if kp.algorithm() == &rcgen::PKCS_ED25519 {
        "ed25519"
    } else if kp.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256
        || kp.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384
    {
        "ec"
    } else {
        "rsa"
    };
    let pk8 = Zeroizing::new(kp.serialize_pem());
    let id = store_key(a, fields::str_of(&req.data, "key_name")?, kt, &pk8).await?;
    Ok(Response::data(json!({"key_id": id, "key_type": kt})))
}
