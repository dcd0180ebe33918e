//! # custos-sba-auth
//!
//! For producer NFs (an SMF, a UDM, …): accept a call only with a valid NRF access token that
//! was issued **to the NF on the other end of this TLS connection** (TS 33.501 13.4.1.2).
//!
//! [`Verifier::verify`] checks, in this order, and names the first failure:
//! 1. the JWS header: `alg` is exactly `ES256` (no `none`, no HS*, no RSA), a `kid` is
//!    present, and no `jwk`/`jku`/`x5u`/`crit` header smuggles in other keys;
//! 2. the signature, with the NRF key of that `kid` (keys come from the NRF's JWKS);
//! 3. `iss` is one of the NRF instance IDs this NF trusts;
//! 4. `aud` is this NF's type, or an array holding its instance ID;
//! 5. **`sub` equals the NF instance ID in the peer's client certificate** (`urn:uuid:` SAN);
//!    a token replayed from another connection fails here;
//! 6. `scope` names the service being called;
//! 7. `exp` has not passed (with a leeway).
//!
//! [`SbaAuthLayer`] does this for every request of a tower/axum service. It reads the bearer
//! token from `Authorization` and the peer's instance ID from a [`PeerNf`] request extension,
//! which the NF's TLS accept loop inserts once per connection (see [`PeerNf::from_cert`]).
//! Refusals are RFC 6750 answers: 401 `invalid_token`, 403 `insufficient_scope`.
//!
//! The crate's `README.md` is the guide for NF authors: wiring, key refresh across NRF key
//! rotation ([`Verifier::set_keys`]), and what each refusal means.
//!
//! ```no_run
//! use custos_sba_auth::{NrfKeys, SbaAuthLayer, Verifier};
//! # fn jwks_json() -> &'static [u8] { b"{\"keys\":[]}" }
//! let keys = NrfKeys::from_jwks(jwks_json()).unwrap();
//! let v = Verifier::new(keys, ["11111111-1111-4111-8111-111111111111"], "SMF",
//!                       "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11");
//! let app: axum::Router = axum::Router::new()
//!     .route("/nsmf-pdusession/v1/sm-contexts", axum::routing::post(|| async { "created" }))
//!     .layer(SbaAuthLayer::new(v, "nsmf-pdusession"));
//! ```
#![forbid(unsafe_code)]

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SbaAuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer access token")]
    Missing,
    /// Not a compact JWS with JSON header and claims.
    #[error("the access token is not a well-formed JWS")]
    Malformed,
    /// The header asks for something other than ES256 with a `kid`.
    #[error("the access token header is not accepted: {0}")]
    Header(String),
    /// `kid` names no key of the trusted NRFs.
    #[error("the access token's kid is not a key of a trusted NRF")]
    UnknownKid,
    /// The signature does not verify.
    #[error("the access token signature does not verify")]
    Signature,
    /// `iss` is not a trusted NRF.
    #[error("the access token was not issued by a trusted NRF")]
    Issuer,
    /// `aud` is not this NF.
    #[error("the access token is not for this NF (aud)")]
    Audience,
    /// `sub` is not the TLS peer.
    #[error("the access token was issued to another NF than the TLS peer (sub)")]
    Subject,
    /// No peer certificate identity on the connection.
    #[error("the connection has no client certificate naming an NF instance")]
    NoPeer,
    /// `scope` lacks the service.
    #[error("the access token's scope does not include {0}")]
    Scope(String),
    /// `exp` is in the past.
    #[error("the access token has expired")]
    Expired,
}

impl SbaAuthError {
    /// HTTP status and RFC 6750 error code.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            SbaAuthError::Scope(_) => (403, "insufficient_scope"),
            SbaAuthError::Missing => (401, "invalid_request"),
            _ => (401, "invalid_token"),
        }
    }
}

/// Public keys of the trusted NRFs, by `kid`.
#[derive(Debug, Default)]
pub struct NrfKeys {
    keys: HashMap<String, ParsedPublicKey>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    y: String,
    #[serde(default)]
    kid: String,
    #[serde(default, rename = "use")]
    use_: String,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

impl NrfKeys {
    /// Reads a JWKS document, keeping the P-256 signing keys that have a `kid`.
    pub fn from_jwks(doc: &[u8]) -> Result<NrfKeys, SbaAuthError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let set: Set = serde_json::from_slice(doc).map_err(|_| SbaAuthError::Malformed)?;
        let mut keys = HashMap::new();
        for k in set.keys {
            if k.kty != "EC" || k.crv != "P-256" || k.kid.is_empty() || k.use_ == "enc" {
                continue;
            }
            let (Some(x), Some(y)) = (b64(&k.x), b64(&k.y)) else {
                continue;
            };
            if x.len() != 32 || y.len() != 32 {
                continue;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend(x);
            point.extend(y);
            if let Ok(pk) = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point) {
                keys.insert(k.kid, pk);
            }
        }
        Ok(NrfKeys { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The claims of an accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The NRF that issued it.
    pub iss: String,
    /// The consumer NF instance ID (= the TLS peer).
    pub sub: String,
    /// Granted scope tokens.
    pub scope: Vec<String>,
    /// Expiry, unix seconds.
    pub exp: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    jwk: Option<serde::de::IgnoredAny>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Aud,
    scope: String,
    exp: u64,
}

/// Verifies access tokens for one producer NF.
#[derive(Debug)]
pub struct Verifier {
    /// Swapped whole by [`Verifier::set_keys`] when the NF refreshes the JWKS.
    keys: std::sync::RwLock<Arc<NrfKeys>>,
    issuers: Vec<String>,
    nf_type: String,
    instance_id: String,
    /// Seconds of clock skew tolerated on `exp`.
    pub leeway: u64,
}

impl Verifier {
    /// A verifier for the NF `instance_id` of type `nf_type`, trusting tokens from the NRF
    /// instance IDs `issuers` signed with `keys`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        keys: NrfKeys,
        issuers: I,
        nf_type: &str,
        instance_id: &str,
    ) -> Verifier {
        Verifier {
            keys: std::sync::RwLock::new(Arc::new(keys)),
            issuers: issuers
                .into_iter()
                .map(|s| s.into().to_ascii_lowercase())
                .collect(),
            nf_type: nf_type.to_string(),
            instance_id: instance_id.to_ascii_lowercase(),
            leeway: 30,
        }
    }

    /// Replaces the NRF keys (after fetching the JWKS again), without stopping verification.
    /// Fetch it periodically and when a token names an unknown `kid`
    /// ([`SbaAuthError::UnknownKid`]): the NRF publishes a new key the moment it rotates and
    /// keeps the old one until the last token it signed has expired.
    pub fn set_keys(&self, keys: NrfKeys) {
        let mut g = self.keys.write().unwrap_or_else(|p| p.into_inner());
        *g = Arc::new(keys);
    }

    fn current_keys(&self) -> Arc<NrfKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Verifies `token` for a call to `service` from the peer NF `peer_instance_id`.
    pub fn verify(
        &self,
        token: &str,
        peer_instance_id: &str,
        service: &str,
        now: u64,
    ) -> Result<Verified, SbaAuthError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SbaAuthError::Malformed);
        };
        if token.len() > 16 * 1024 {
            return Err(SbaAuthError::Malformed);
        }
        let header: Header = b64(h64)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(SbaAuthError::Malformed)?;
        if header.alg != "ES256" {
            return Err(SbaAuthError::Header(format!(
                "alg {:?}: only ES256 is accepted",
                header.alg
            )));
        }
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() {
            return Err(SbaAuthError::Header(
                "embedded or remote keys (jwk, jku, x5u) are not accepted".into(),
            ));
        }
        if header.crit.is_some() {
            return Err(SbaAuthError::Header("crit is not supported".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| SbaAuthError::Header("kid is required".into()))?;
        let keys = self.current_keys();
        let key = keys.keys.get(&kid).ok_or(SbaAuthError::UnknownKid)?;
        let sig = b64(s64).ok_or(SbaAuthError::Malformed)?;
        let signed = &token[..h64.len() + 1 + c64.len()];
        key.verify_sig(signed.as_bytes(), &sig)
            .map_err(|_| SbaAuthError::Signature)?;
        let c: Claims = b64(c64)
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or(SbaAuthError::Malformed)?;
        if !self.issuers.iter().any(|i| i.eq_ignore_ascii_case(&c.iss)) {
            return Err(SbaAuthError::Issuer);
        }
        let aud_ok = match &c.aud {
            Aud::One(t) => t == &self.nf_type || t.eq_ignore_ascii_case(&self.instance_id),
            Aud::Many(ids) => ids
                .iter()
                .any(|i| i.eq_ignore_ascii_case(&self.instance_id)),
        };
        if !aud_ok {
            return Err(SbaAuthError::Audience);
        }
        if !c.sub.eq_ignore_ascii_case(peer_instance_id) {
            return Err(SbaAuthError::Subject);
        }
        let granted: Vec<String> = c.scope.split(' ').map(str::to_string).collect();
        if !granted
            .iter()
            .any(|s| s == service || s.split(':').next() == Some(service))
        {
            return Err(SbaAuthError::Scope(service.to_string()));
        }
        if now > c.exp.saturating_add(self.leeway) {
            return Err(SbaAuthError::Expired);
        }
        Ok(Verified {
            iss: c.iss,
            sub: c.sub.to_ascii_lowercase(),
            scope: granted,
            exp: c.exp,
        })
    }
}

/// The NF instance ID of the TLS peer, inserted as a request extension by the NF's accept
/// loop (once per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNf(pub String);

impl PeerNf {
    /// From the peer's (chain-verified) client certificate.
    pub fn from_cert(der: &[u8]) -> Option<PeerNf> {
        custos_nrf::identity::from_cert(der)
            .ok()
            .map(|i| PeerNf(i.instance_id))
    }
}

/// Tower layer: every request needs a token for `service` from the TLS peer.
#[derive(Clone)]
pub struct SbaAuthLayer {
    verifier: Arc<Verifier>,
    service: Arc<str>,
}

impl SbaAuthLayer {
    /// Protects a service named `service` (e.g. `nsmf-pdusession`).
    pub fn new(verifier: Verifier, service: &str) -> Self {
        Self::shared(Arc::new(verifier), service)
    }

    /// Like [`SbaAuthLayer::new`], keeping a handle on the verifier so that the NF can
    /// [`Verifier::set_keys`] when it refreshes the JWKS.
    pub fn shared(verifier: Arc<Verifier>, service: &str) -> Self {
        SbaAuthLayer {
            verifier,
            service: service.into(),
        }
    }
}

impl<S> tower::Layer<S> for SbaAuthLayer {
    type Service = SbaAuth<S>;
    fn layer(&self, inner: S) -> SbaAuth<S> {
        SbaAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SbaAuthLayer`] builds. Accepted requests carry [`Verified`] as an extension.
#[derive(Clone)]
pub struct SbaAuth<S> {
    inner: S,
    layer: SbaAuthLayer,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks one request's token; the verified claims on success.
pub fn check_request<B>(
    req: &http::Request<B>,
    v: &Verifier,
    service: &str,
) -> Result<Verified, SbaAuthError> {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .ok_or(SbaAuthError::Missing)?;
    let peer = req
        .extensions()
        .get::<PeerNf>()
        .ok_or(SbaAuthError::NoPeer)?;
    v.verify(token.trim(), &peer.0, service, now_unix())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for SbaAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: From<String> + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match check_request(&req, &self.layer.verifier, &self.layer.service) {
            Ok(v) => {
                req.extensions_mut().insert(v);
                let fut = self.inner.call(req);
                Box::pin(fut)
            }
            Err(e) => {
                let (status, code) = e.status();
                let desc = e.to_string().replace('"', "'");
                let body = serde_json::json!({
                    "title": "Unauthorized", "status": status, "detail": e.to_string(), "cause": code,
                })
                .to_string();
                let mut r = http::Response::new(RB::from(body));
                *r.status_mut() =
                    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::UNAUTHORIZED);
                if let Ok(h) = http::HeaderValue::from_str(&format!(
                    "Bearer error=\"{code}\", error_description=\"{desc}\""
                )) {
                    r.headers_mut().insert(http::header::WWW_AUTHENTICATE, h);
                }
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/problem+json"),
                );
                Box::pin(async move { Ok(r) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
