//! The NRF's SBI listener (TS 29.510 over TS 33.501 13.1 mutual TLS): Nnrf_NFManagement,
//! Nnrf_NFDiscovery and Nnrf_AccessToken. Decisions are `custos-nrf`'s; this module does the
//! I/O: the listener and its certificate, the registry in the barrier, heartbeats, signing.
//!
//! * **TLS**: mutual TLS only, HTTP/2 and HTTP/1.1. The server certificate is an SBA
//!   certificate issued from `[sbi] pki_mount`/`role` by the server itself once the PKI is
//!   set up and unsealed, and renewed at 2/3 of its life; client certificates must chain to
//!   the same mount's CA. Revocation is checked against the mount's certificate inventory at
//!   connection set-up (a revoked certificate gets no HTTP at all) and again on requests of
//!   connections older than [`RECHECK`].
//! * **Identity**: the caller is the NF its certificate names (`urn:uuid:` SAN, nfTypes), not
//!   what a body or query says.
//! * **Storage** (the NRF's view, `nrf/` in the barrier): profiles at `profile/<id>`, signing
//!   keys at `signing`; a success answer means the write is durable ([`super::registry`]).

// Helpers return the finished refusal (`Result<_, Response>`), which every handler sends
// as is; boxing it would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

use super::registry::*;
use crate::core::barrier::View;
use crate::core::now_unix;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use custos_nrf::identity::{self, NfIdentity};
use custos_nrf::profile::Profile;
use custos_nrf::{discovery, token};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections older than this re-check their client certificate's revocation per request.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// Discovery results are valid this long (SearchResult.validityPeriod, seconds).
const VALIDITY_PERIOD: u64 = 60;

/// Per-connection facts about the TLS peer.
#[derive(Clone)]
pub(crate) struct Peer {
    identity: Result<NfIdentity, identity::IdentityError>,
    serial: Vec<u8>,
    since: Instant,
}

#[derive(Clone)]
struct Sbi {
    nrf: Arc<Nrf>,
}

fn problem(
    status: u16,
    cause: &str,
    detail: impl Into<String>,
    param: Option<(&str, String)>,
) -> Response {
    let detail = detail.into();
    let mut body = json!({
        "title": StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error"),
        "status": status,
        "detail": detail,
        "cause": cause,
    });
    if let Some((p, r)) = param {
        body["invalidParams"] = json!([{"param": p, "reason": r}]);
    }
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "SBI internal error");
    problem(500, "SYSTEM_FAILURE", "internal error", None)
}

/// Starts the SBI listener and its certificate and heartbeat tasks.
pub(crate) async fn start(
    nrf: Arc<Nrf>,
) -> Result<tokio::task::JoinHandle<()>, crate::listener::ListenError> {
    let l = crate::listener::bind(nrf.cfg.addr).await?;
    let n2 = nrf.clone();
    let maintain = async move {
        let mut last_err = String::new();
        loop {
            let r = refresh_tls(&n2).await;
            if r.is_ok() {
                if let Err(e) = refresh_crl(&n2).await {
                    tracing::debug!(error = %e, "the NF CA's CRL could not be read");
                }
            }
            if let Ok(a) = n2.view() {
                if let Err(e) = n2.ensure_loaded(&a).await {
                    tracing::error!(error = %e, "loading the NRF registry");
                }
                if let Err(e) = sweep_heartbeats(&n2).await {
                    tracing::error!(error = %e, "heartbeat sweep");
                }
            }
            let why = match &r {
                Ok(()) => None,
                Err(ApiError::Sealed) => Some("Custos is sealed".to_string()),
                Err(e) => Some(format!(
                    "no SBI certificate from [sbi] pki_mount = {:?}, role = {:?}: {e} (create that PKI role, allowing the NRF's fqdn and ip_sans, and config/urls with a CRL distribution point)",
                    n2.cfg.pki_mount, n2.cfg.role
                )),
            };
            match &r {
                Err(ApiError::Sealed) | Ok(()) => {}
                // A configuration error, not an outage: said once, naming the settings,
                // and shown in sys/health until it is fixed. A warning rather than an
                // error: right after `operator init`, and on every dev server, the NF CA
                // is simply not set up yet.
                Err(e) if e.to_string() != last_err => {
                    last_err = e.to_string();
                    tracing::warn!(mount = %n2.cfg.pki_mount, role = %n2.cfg.role, error = %last_err, "the SBI listener refuses connections until it can issue its certificate: create the PKI role [sbi] role names on [sbi] pki_mount, with config/urls");
                }
                Err(_) => {}
            }
            n2.set_unready(why);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let st = Sbi { nrf };
    let app = router(st.clone());
    // One task: aborting it stops both the listener and the maintenance loop.
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = serve(l, st, app) => {}
            _ = maintain => {}
        }
    }))
}

async fn serve(listener: tokio::net::TcpListener, st: Sbi, app: axum::Router) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(cfg) = st
            .nrf
            .tls
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.config.clone()))
        else {
            continue;
        };
        let (app, st) = (app.clone(), st.clone());
        tokio::spawn(async move {
            let acc = tokio_rustls::TlsAcceptor::from(cfg);
            let tls = match tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "SBI TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let Some(leaf) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
            else {
                return;
            };
            let serial = x509_parser::parse_x509_certificate(&leaf)
                .map(|(_, x)| x.raw_serial().to_vec())
                .unwrap_or_default();
            let identity = identity::from_cert(&leaf);
            let serial_hex = custos_pki::issue::serial_hex(&serial);
            let held = |st: &Sbi| {
                identity
                    .as_ref()
                    .ok()
                    .and_then(|id| st.nrf.suspended(&id.instance_id, Some(&serial_hex)))
            };
            let quarantined_at_start = held(&st).is_some();
            // While sealed nothing is checked here: every request then answers 503. A
            // quarantined NF's revoked certificate still gets HTTP: every request is refused
            // with the quarantine's reason (an AccessTokenErr for tokens).
            if !quarantined_at_start
                && st.nrf.view().is_ok()
                && st
                    .nrf
                    .revocation
                    .revoked_in_mount(&st.nrf.cfg.pki_mount, &serial)
                    .await
                    .unwrap_or(true)
            {
                tracing::info!(peer = %addr, "SBI client certificate is revoked; connection closed");
                return;
            }
            let mut changes = st.nrf.quarantine.changes();
            let peer = Peer {
                identity: identity.clone(),
                serial,
                since: Instant::now(),
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            builder.http2().max_concurrent_streams(256);
            let svc = TowerToHyperService::new(app.layer(Extension(peer)));
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    c = changes.changed() => {
                        if c.is_err() {
                            let _ = conn.await;
                            return;
                        }
                        // Quarantined since the connection opened: it is closed now.
                        if !quarantined_at_start && held(&st).is_some() {
                            tracing::warn!(peer = %addr, "SBI connection of a quarantined NF closed");
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn router(st: Sbi) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/nnrf-nfm/v1/nf-instances", get(list))
        .route(
            "/nnrf-nfm/v1/nf-instances/{id}",
            get(get_profile)
                .put(register)
                .patch(update)
                .delete(deregister),
        )
        .route("/nnrf-disc/v1/nf-instances", get(discover))
        .route("/oauth2/token", post(access_token))
        .route("/oauth2/jwks", get(jwks))
        .fallback(|| async {
            problem(
                404,
                "RESOURCE_URI_STRUCTURE_NOT_FOUND",
                "no such SBI resource",
                None,
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            custos_nrf::profile::MAX_PROFILE_BYTES,
        ))
        .with_state(st)
}

/// The unsealed core and the caller's identity, or the answer refusing the request.
async fn caller(st: &Sbi, peer: &Peer) -> Result<(View, NfIdentity), Response> {
    let a = st
        .nrf
        .view()
        .map_err(|_| problem(503, "NF_CONGESTION", "Custos is sealed", None))?;
    st.nrf.ensure_loaded(&a).await.map_err(internal)?;
    let id = peer
        .identity
        .clone()
        .map_err(|e| problem(403, "CLIENT_CERTIFICATE_NOT_AN_NF", e.to_string(), None))?;
    if let Some(why) = quarantined(st, peer) {
        return Err(problem(403, "NF_QUARANTINED", why, None));
    }
    if peer.since.elapsed() > RECHECK
        && st
            .nrf
            .revocation
            .revoked_in_mount(&st.nrf.cfg.pki_mount, &peer.serial)
            .await
            .map_err(internal)?
    {
        return Err(problem(
            403,
            "CLIENT_CERTIFICATE_REVOKED",
            "the client certificate is revoked",
            None,
        ));
    }
    Ok((a, id))
}

/// Why the peer's NF is quarantined, if it is.
fn quarantined(st: &Sbi, peer: &Peer) -> Option<String> {
    let id = peer.identity.as_ref().ok()?;
    st.nrf.suspended(
        &id.instance_id,
        Some(&custos_pki::issue::serial_hex(&peer.serial)),
    )
}

fn path_id(id: &str) -> Result<String, Response> {
    custos_nrf::canonical_uuid(id).ok_or_else(|| {
        problem(
            400,
            "MANDATORY_IE_INCORRECT",
            "nfInstanceID must be a UUID",
            Some(("nfInstanceID", "not a UUID".into())),
        )
    })
}

/// Only the NF named by the certificate may change its own profile.
fn owner(id: &NfIdentity, instance: &str) -> Result<(), Response> {
    if id.instance_id != instance {
        return Err(problem(
            403,
            "NF_INSTANCE_MISMATCH",
            "only the NF whose certificate carries this NF instance ID may manage its profile",
            None,
        ));
    }
    Ok(())
}

/// A call on `/nf-instances/{id}`: the unsealed core, the caller, and the canonical ID, which
/// must be the caller's own.
async fn owner_call(
    st: &Sbi,
    peer: &Peer,
    id: &str,
) -> Result<(View, NfIdentity, String), Response> {
    let (a, who) = caller(st, peer).await?;
    let id = path_id(id)?;
    owner(&who, &id)?;
    Ok((a, who, id))
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            400,
            "INVALID_MSG_FORMAT",
            format!("body is not JSON: {e}"),
            None,
        )
    })
}

fn profile_problem(e: custos_nrf::profile::ProfileError) -> Response {
    problem(
        400,
        "MANDATORY_IE_INCORRECT",
        e.to_string(),
        Some((&e.field, e.reason.clone())),
    )
}

async fn register(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (a, who, id) = match owner_call(&st, &peer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut doc = match json_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if doc.is_object() {
        // The NRF imposes its heartbeat interval, and answers with it (TS 29.510 5.2.2.2.2).
        doc["heartBeatTimer"] = json!(st.nrf.cfg.heartbeat);
    }
    let p = match Profile::parse(&id, &doc) {
        Ok(p) => p,
        Err(e) => return profile_problem(e),
    };
    if !who.has_type(&p.nf_type) {
        return problem(
            403,
            "NF_TYPE_MISMATCH",
            format!(
                "nfType {} is not an NF type of the client certificate",
                p.nf_type
            ),
            None,
        );
    }
    let _g = st.nrf.write.lock().await;
    let existed = st.nrf.profile(&id).is_some();
    if let Err(e) = st.nrf.put(&a, &id, Some(p.clone())).await {
        return internal(e);
    }
    st.nrf.beat(&id);
    tracing::info!(nf = %id, nf_type = %p.nf_type, "NF registered");
    let mut r = (
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(p.doc),
    )
        .into_response();
    if !existed {
        if let Ok(v) = HeaderValue::from_str(&format!("/nnrf-nfm/v1/nf-instances/{id}")) {
            r.headers_mut().insert("location", v);
        }
    }
    r
}

async fn get_profile(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Response {
    let id = match owner_call(&st, &peer, &id).await {
        Ok((_, _, id)) => id,
        Err(r) => return r,
    };
    match st.nrf.profile(&id) {
        Some(p) => Json(p.doc.clone()).into_response(),
        None => problem(404, "RESOURCE_NOT_FOUND", "no such NF instance", None),
    }
}

async fn update(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (a, _, id) = match owner_call(&st, &peer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json-patch+json") {
        return problem(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "NFUpdate needs application/json-patch+json",
            None,
        );
    }
    let patch = match json_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let _g = st.nrf.write.lock().await;
    let Some(cur) = st.nrf.profile(&id) else {
        return problem(404, "RESOURCE_NOT_FOUND", "no such NF instance", None);
    };
    let mut next = match cur.patched(&patch) {
        Ok(p) => p,
        Err(e) => return profile_problem(e),
    };
    if next.doc.get("heartBeatTimer") != Some(&json!(st.nrf.cfg.heartbeat)) {
        next.doc["heartBeatTimer"] = json!(st.nrf.cfg.heartbeat);
    }
    if next.doc != cur.doc {
        if let Err(e) = st.nrf.put(&a, &id, Some(next)).await {
            return internal(e);
        }
    }
    st.nrf.beat(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn deregister(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Response {
    let (a, _, id) = match owner_call(&st, &peer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let _g = st.nrf.write.lock().await;
    if st.nrf.profile(&id).is_none() {
        return problem(404, "RESOURCE_NOT_FOUND", "no such NF instance", None);
    }
    if let Err(e) = st.nrf.put(&a, &id, None).await {
        return internal(e);
    }
    tracing::info!(nf = %id, "NF deregistered");
    StatusCode::NO_CONTENT.into_response()
}

async fn list(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = caller(&st, &peer).await {
        return r;
    }
    let mut nf_type = None;
    let (mut limit, mut page, mut page_size) = (usize::MAX, 1usize, None);
    for (k, v) in &q {
        let positive = || {
            v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                problem(
                    400,
                    "MANDATORY_IE_INCORRECT",
                    format!("{k} must be a positive integer"),
                    Some((k, v.clone())),
                )
            })
        };
        let r = match k.as_str() {
            "nf-type" if custos_nrf::is_nf_type(v) => {
                nf_type = Some(v.clone());
                Ok(())
            }
            "nf-type" => Err(problem(
                400,
                "MANDATORY_IE_INCORRECT",
                "nf-type is not an NFType",
                Some(("nf-type", v.clone())),
            )),
            "limit" => positive().map(|n| limit = n),
            "page-number" => positive().map(|n| page = n),
            "page-size" => positive().map(|n| page_size = Some(n)),
            _ => Ok(()),
        };
        if let Err(r) = r {
            return r;
        }
    }
    let mut ids: Vec<String> = st
        .nrf
        .profiles()
        .iter()
        .filter(|p| nf_type.as_ref().is_none_or(|t| &p.nf_type == t))
        .map(|p| p.id.clone())
        .collect();
    ids.sort();
    ids.truncate(limit);
    let total = ids.len();
    let skip = page_size.map_or(0, |s| s.saturating_mul(page - 1));
    let items: Vec<Value> = ids
        .iter()
        .skip(skip)
        .take(page_size.unwrap_or(usize::MAX))
        .map(|id| json!({"href": format!("/nnrf-nfm/v1/nf-instances/{id}")}))
        .collect();
    // UriList: `_links` holds `self` and, when there are any, the `items` (LinksValueSchema
    // does not allow an empty array); totalItemCount counts all pages.
    let mut links = json!({"self": {"href": "/nnrf-nfm/v1/nf-instances"}});
    if !items.is_empty() {
        links["items"] = Value::Array(items);
    }
    // TS 29.510 6.1.3.2.3.1: the collection is a HAL document.
    let mut r = Json(json!({"_links": links, "totalItemCount": total})).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/3gppHal+json"),
    );
    r
}

async fn discover(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let who = match caller(&st, &peer).await {
        Ok((_, w)) => w,
        Err(r) => return r,
    };
    let query = match discovery::parse(&q).and_then(|query| {
        discovery::check_caller(&query, &who)?;
        Ok(query)
    }) {
        Ok(q) => q,
        Err(e) => {
            let status = if e.param.starts_with("requester-") {
                403
            } else {
                400
            };
            return problem(
                status,
                if status == 403 {
                    "NF_TYPE_MISMATCH"
                } else {
                    "MANDATORY_IE_INCORRECT"
                },
                e.to_string(),
                Some((&e.param, e.reason.clone())),
            );
        }
    };
    let mut query = query;
    if query.requester_fqdn.is_none() {
        query.requester_fqdn = st
            .nrf
            .profile(&who.instance_id)
            .and_then(|p| p.fqdn.clone());
    }
    let candidates = match &query.target_nf_instance_id {
        Some(id) => st.nrf.profile(id).into_iter().collect(),
        None => st.nrf.profiles_of_type(&query.target_nf_type),
    };
    // SearchResult, assembled from each profile's stored serialization: no per-request
    // clone or re-encoding of the documents.
    let mut body = format!("{{\"validityPeriod\":{VALIDITY_PERIOD},\"nfInstances\":[");
    for (i, p) in candidates
        .iter()
        .filter(|p| discovery::matches(&query, p))
        .filter(|p| st.nrf.suspended(&p.id, None).is_none())
        .take(query.limit.unwrap_or(usize::MAX))
        .enumerate()
    {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&p.json);
    }
    body.push_str("]}");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn token_err(e: &token::TokenError) -> Response {
    let body = json!({"error": e.code.as_str(), "error_description": e.description});
    let mut r = (StatusCode::BAD_REQUEST, Json(body)).into_response();
    no_store(r.headers_mut());
    r
}

fn no_store(h: &mut HeaderMap) {
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
}

async fn access_token(
    State(st): State<Sbi>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // TS 29.510 AccessTokenErr for a quarantined NF, whatever it asks.
    if let Some(why) = quarantined(&st, &peer) {
        tracing::info!(error = %why, "access token refused: quarantined");
        return token_err(&token::TokenError {
            code: token::ErrorCode::InvalidClient,
            description: why,
        });
    }
    let (_, who) = match caller(&st, &peer).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // TS 33.501 13.3.8: a client credentials assertion on top of mutual TLS must be valid
    // and signed by the same NF as the TLS peer.
    if let Some(h) = headers.get("3gpp-sbi-client-credentials") {
        let cas = st
            .nrf
            .tls
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.cas.clone()))
            .unwrap_or_default();
        let refuse = |d: String| {
            token_err(&token::TokenError {
                code: token::ErrorCode::InvalidClient,
                description: d,
            })
        };
        let cca = match h
            .to_str()
            .map_err(|_| "not ASCII".to_string())
            .and_then(|t| {
                custos_nrf::cca::verify(t.trim(), &cas, now_unix()).map_err(|e| e.to_string())
            }) {
            Ok(v) => v,
            Err(e) => return refuse(e),
        };
        match st
            .nrf
            .revocation
            .revoked_in_mount(&st.nrf.cfg.pki_mount, &cca.serial)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                return refuse("the client credentials assertion's certificate is revoked".into())
            }
            Err(e) => return internal(e),
        }
        if cca.identity.instance_id != who.instance_id {
            return refuse(
                "the client credentials assertion was signed by another NF than the TLS peer"
                    .into(),
            );
        }
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return problem(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "AccessTokenReq is application/x-www-form-urlencoded",
            None,
        );
    }
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return token_err(&token::TokenError {
                code: token::ErrorCode::InvalidRequest,
                description: "the body is not a valid form".into(),
            })
        }
    };
    let req = match token::parse(&form) {
        Ok(r) => r,
        Err(e) => return token_err(&e),
    };
    let requester = st.nrf.profile(&req.nf_instance_id);
    let producers: Vec<Arc<Profile>> = match (&req.target_nf_instance_id, &req.target_nf_type) {
        (Some(id), _) => st.nrf.profile(id).into_iter().collect(),
        (None, Some(t)) => st.nrf.profiles_of_type(t),
        (None, None) => Vec::new(),
    };
    // A quarantined producer is no target: no token is minted for it.
    let refs: Vec<&Profile> = producers
        .iter()
        .filter(|p| st.nrf.suspended(&p.id, None).is_none())
        .map(|p| p.as_ref())
        .collect();
    let now = now_unix().max(0) as u64;
    let cx = token::Context {
        nrf_instance_id: &st.nrf.cfg.nf_instance_id,
        ttl: st.nrf.cfg.token_ttl,
        now,
        requester: requester.as_deref(),
        producers: &refs,
    };
    let claims = match token::authorize(&req, &who, &cx) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(requester = %who.instance_id, error = %e, "access token refused");
            return token_err(&e);
        }
    };
    let Some(signer) = st.nrf.signer() else {
        return internal("no signing key");
    };
    let tok = match signer.sign(&claims) {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let body = json!({
        "access_token": tok,
        "token_type": "Bearer",
        "expires_in": st.nrf.cfg.token_ttl,
        "scope": claims["scope"],
    });
    let mut r = Json(body).into_response();
    no_store(r.headers_mut());
    r
}

async fn jwks(State(st): State<Sbi>, Extension(peer): Extension<Peer>) -> Response {
    if let Err(r) = caller(&st, &peer).await {
        return r;
    }
    Json(st.nrf.jwks()).into_response()
}
