//! The `pki` secrets engine: Vault's paths over `custos-pki`.
//!
//! Storage (all encrypted): `pki/<mount uuid>/issuer/<id>`, `…/key/<id>` (the private key),
//! `…/role/<name>`, `…/config/urls`, `…/config/issuers`, `…/crl-number/<issuer>`; issued
//! certificates are rows of the indexed `certs` table (serial, issuer, expiry, revocation).
//! Revocation updates one row (O(log n)) and logs it; CRLs are rebuilt off that path (see
//! [`crl`]).

mod config;
mod crl;
mod engine;
mod import;
mod issuance;
mod issuers;
mod keys;
mod posture;
mod revocation;
mod tidy;

use crate::core::barrier::{Plain, View};
use crate::core::engine::{Ctx, Engine, PathSpec, Sys};
use crate::core::now_unix;
use crate::core::services::{
    BoundCert, CertIssuer, DeviceCerts, Late, Quarantine, RevocationLookup, Subject, TrustLog,
};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use base64::Engine as _;
use custos_acl::Operation::{self, *};
use custos_pki::issue::{self, CaParams, Urls};
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

use config::*;
use crl::*;
use import::*;
use issuance::*;
use issuers::*;
use keys::*;
use revocation::*;
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
    der: bytes::Bytes,
    next_update: i64,
    built_at: i64,
}

/// The PKI engine: every mount of type `pki`.
pub struct Pki {
    log: Arc<dyn TrustLog>,
    issuers: Arc<IssuerCache>,
    /// Set at the first unseal: background callers (certificate login, the NRF) reach the
    /// mounts through it.
    sys: std::sync::OnceLock<Sys>,
    /// Quarantined devices get no certificates (wired after the attestation engine exists).
    quarantine: Late<dyn Quarantine>,
}

/// One request's handle on one PKI mount: its storage view, the engine's caches and the log.
pub(crate) struct Pk<'a> {
    view: View,
    pub(crate) issuers: Arc<IssuerCache>,
    log: &'a Arc<dyn TrustLog>,
    sys: &'a Sys,
    quarantine: Option<&'a Arc<dyn Quarantine>>,
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
    /// One CRL build at a time per `<mount uuid>/<issuer id>`.
    crl_builds: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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

/// Who is asking: login metadata (for `provenance_extensions` roles) and the display name
/// the transparency log records.
pub(crate) struct Who {
    identity: BTreeMap<String, String>,
    requester: String,
}

use crate::core::sha256_hex;

/// Logs a CA certificate that enters this mount (`pki.ca`) and waits until the entry is
/// durable. Called *before* the issuer is stored: a CA may be logged and then fail to store,
/// but never exist unlogged (a rogue intermediate is the worst issuance of all).
async fn log_ca(
    a: &Pk<'_>,
    m: &MountEntry,
    der: &[u8],
    op: &str,
    requester: &str,
) -> ApiResult<()> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| ApiError::bad("certificate: not a valid X.509 certificate"))?;
    let cut = |s: String| s.chars().take(1024).collect::<String>();
    a.log()?
        .append(Event::CaCertificate {
            mount: m.path.clone(),
            op: op.into(),
            serial: issue::serial_hex(x.raw_serial()),
            subject: cut(x.subject().to_string()),
            issuer: cut(x.issuer().to_string()),
            not_after: x.validity().not_after.timestamp(),
            cert_sha256: sha256_hex(der),
            is_ca: import::is_ca(&x),
            requester: requester.into(),
        })
        .await?;
    Ok(())
}

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
            generate_root(a, m, kind, req, &who.requester).await
        }
        (["root"], Delete) => delete_root(a, m).await,
        (["intermediate", "generate", kind] | ["issuers", "generate", "intermediate", kind], _) => {
            generate_intermediate(a, kind, req).await
        }
        (["root", "sign-intermediate"], _) => {
            sign_intermediate(a, m, "default", req, &who.requester).await
        }
        (["issuer", iref, "sign-intermediate"], _) => {
            sign_intermediate(a, m, iref, req, &who.requester).await
        }
        (["intermediate", "set-signed"], _) => set_signed(a, m, req, &who.requester).await,
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
            import_bundle(a, m, req, true, &who.requester).await
        }
        (["issuers", "import", "cert"], _) => import_bundle(a, m, req, false, &who.requester).await,
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

fn raw(r: (&'static str, impl Into<bytes::Bytes>)) -> Response {
    Response {
        raw: Some((r.0, r.1.into())),
        ..Default::default()
    }
}
