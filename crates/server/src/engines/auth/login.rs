//! Logins: each method's credential check (AppRole role and secret IDs, JWT/OIDC and
//! Kubernetes tokens against fetched or configured keys, TLS client certificates with live
//! revocation), returning the identity the core turns into a token; and the JWKS cache.

use super::*;

/// Fetched key sets per mount, with the time of the last fetch (for refresh rate limiting).
#[derive(Default)]
pub(super) struct JwksCache {
    pub(super) sets: Mutex<HashMap<String, (KeySet, Instant)>>,
}

/// A JWKS is re-fetched at most this often, whatever `kid`s tokens name.
pub(super) const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

/// And at least this often.
pub(super) const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Largest key document accepted.
pub(super) const MAX_KEY_DOC: usize = 256 * 1024;

pub(super) async fn fetch(url: &str, ca_pem: &str) -> ApiResult<Vec<u8>> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if !ca_pem.is_empty() {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|_| ApiError::bad("jwks_ca_pem: not a valid PEM certificate"))?;
        b = b.tls_certs_only([ca]);
    }
    let client = b.build().map_err(ApiError::internal)?;
    let unreachable = |e: String| ApiError::LoginDenied(format!("fetching keys from {url}: {e}"));
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !r.status().is_success() {
        return Err(unreachable(format!("HTTP {}", r.status())));
    }
    let body = r.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if body.len() > MAX_KEY_DOC {
        return Err(unreachable("document too large".into()));
    }
    Ok(body.to_vec())
}

pub(super) async fn jwks_url_of(cfg: &JwtConfig) -> ApiResult<String> {
    if !cfg.jwks_url.is_empty() {
        return Ok(cfg.jwks_url.clone());
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        cfg.oidc_discovery_url.trim_end_matches('/')
    );
    let doc: Value = serde_json::from_slice(&fetch(&url, &cfg.ca_pem).await?)
        .map_err(|_| ApiError::LoginDenied("OIDC discovery document is not JSON".into()))?;
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::LoginDenied("OIDC discovery document has no jwks_uri".into()))
}

/// The mount's keys: configured PEMs, or the cached JWKS (fetched when absent or stale, or
/// when `want_kid` is unknown and the last fetch is older than [`JWKS_MIN_REFRESH`]).
pub(super) async fn keys_for(
    a: &Au<'_>,
    m: &MountEntry,
    cfg: &JwtConfig,
    want_kid: Option<&str>,
) -> ApiResult<KeySet> {
    if !cfg.jwt_validation_pubkeys.is_empty() {
        return Ok(KeySet::from_pems(&cfg.jwt_validation_pubkeys)?);
    }
    let cached = a
        .shared
        .jwks
        .sets
        .lock()
        .map_err(|_| ApiError::internal(std::io::Error::other("jwks cache poisoned")))?
        .get(&m.uuid)
        .cloned();
    if let Some((set, at)) = &cached {
        let fresh = at.elapsed() < JWKS_MAX_AGE;
        let kid_ok = want_kid.is_none_or(|k| set.has_kid(k));
        if fresh && (kid_ok || at.elapsed() < JWKS_MIN_REFRESH) {
            return Ok(set.clone());
        }
    }
    let url = jwks_url_of(cfg).await?;
    let set = KeySet::from_jwks(&fetch(&url, &cfg.ca_pem).await?)?;
    if let Ok(mut c) = a.shared.jwks.sets.lock() {
        c.insert(m.uuid.clone(), (set.clone(), Instant::now()));
    }
    Ok(set)
}

pub(super) fn forget_keys(a: &Au<'_>, m: &MountEntry) {
    if let Ok(mut c) = a.shared.jwks.sets.lock() {
        c.remove(&m.uuid);
    }
}

/// Verifies a JWT against the mount's keys, refreshing the JWKS once for an unknown `kid`.
pub(super) async fn verified_claims(
    a: &Au<'_>,
    m: &MountEntry,
    cfg: &JwtConfig,
    token: &str,
) -> ApiResult<Map<String, Value>> {
    let h = jwt::header(token, &cfg.jwt_supported_algs)?;
    let keys = keys_for(a, m, cfg, h.kid.as_deref()).await?;
    match jwt::verify(token, &h, &keys) {
        Err(AuthError::UnknownKid(k)) => Err(ApiError::LoginDenied(format!(
            "no key with kid {k:?} is known, also after refreshing the JWKS"
        ))),
        r => Ok(r?),
    }
}

pub(super) fn meta_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, String)>,
) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect()
}

/// Logins (no token). Every outcome is audited by the caller.
pub(super) async fn login(a: &Au<'_>, m: &MountEntry, req: &Request) -> ApiResult<Login> {
    match m.kind.as_str() {
        "approle" => {
            let role_id = login_field(req, "role_id")?;
            let denied = || ApiError::LoginDenied("invalid role or secret ID".into());
            let name: String = a
                .get_json(&format!("role_id/{}", hex_id(&role_id)))
                .await?
                .ok_or_else(denied)?;
            let role: AppRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(denied)?;
            let remote = req.remote_addr.map(|r| r.ip());
            let mut meta = meta_map([("role_name", name.clone())]);
            let mut token_params = role.token.clone();
            if role.bind_secret_id {
                let secret = login_field(req, "secret_id")?;
                let key = format!("secret_id/{name}/{}", secret_hash(a, &secret)?);
                // Uses are counted under one lock so a single-use secret ID logs in once.
                let _g = a.shared.use_lock.lock().await;
                let mut s: SecretId = a.get_json(&key).await?.ok_or_else(denied)?;
                s.check(&role, now_unix(), remote).map_err(|_| denied())?;
                let mut ops = Vec::new();
                if s.num_uses == 1 {
                    ops.push(Plain::Delete(key.clone()));
                    ops.push(Plain::Delete(format!(
                        "secret_id_accessor/{name}/{}",
                        s.accessor
                    )));
                } else if s.num_uses > 1 {
                    s.num_uses -= 1;
                    ops.push(Plain::Put(key.clone(), serde_json::to_vec(&s)?));
                }
                if !ops.is_empty() {
                    a.write(ops).await?;
                }
                for (k, v) in &s.metadata {
                    meta.insert(k.clone(), v.clone());
                }
                if !s.token_bound_cidrs.is_empty() {
                    token_params.bound_cidrs = s.token_bound_cidrs.clone();
                }
            } else {
                custos_auth::params::check_source(
                    &role.secret_id_bound_cidrs,
                    remote,
                    "secret_id_bound_cidrs",
                )?;
            }
            Ok(Login {
                params: token_params,
                display_name: format!("approle-{name}"),
                meta,
            })
        }
        "jwt" | "oidc" => {
            let cfg: JwtConfig = a
                .get_json("config")
                .await?
                .ok_or_else(|| ApiError::bad("this JWT method is not configured yet"))?;
            let mut name = req.str_field("role").unwrap_or_default();
            if name.is_empty() {
                name = cfg.default_role.clone();
            }
            if name.is_empty() {
                return Err(ApiError::bad("missing required field \"role\""));
            }
            let token = login_field(req, "jwt")?;
            let role: JwtRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(|| ApiError::bad(format!("role {name:?} could not be found")))?;
            let claims = verified_claims(a, m, &cfg, &token).await?;
            let mut rules = role.rules.clone();
            rules.bound_issuer = cfg.bound_issuer.clone();
            rules.require_exp = true;
            let id = jwt::check_claims(&claims, &rules, now_unix())?;
            // Claim mappings first; the role name and the verified issuer are set last so that
            // no claim can stand in for them (PKI `provenance_extensions` copies `issuer`).
            let mut meta = meta_map(id.metadata.iter().map(|(k, v)| (k.as_str(), v.clone())));
            meta.insert("role".into(), json!(name.clone()));
            if let Some(iss) = claims.get("iss").and_then(|v| v.as_str()) {
                meta.insert("issuer".into(), json!(iss));
            }
            Ok(Login {
                params: role.token.clone(),
                display_name: format!("{}-{}", m.kind, id.user),
                meta,
            })
        }
        "kubernetes" => {
            let cfg: KubeConfig = a
                .get_json("config")
                .await?
                .ok_or_else(|| ApiError::bad("this Kubernetes method is not configured yet"))?;
            let name = login_field(req, "role")?;
            let token = login_field(req, "jwt")?;
            let role: KubeRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(|| ApiError::bad(format!("role {name:?} could not be found")))?;
            let sa = if cfg.pem_keys.is_empty() && cfg.jwks_url.is_empty() {
                token_review(&cfg, &token, &role.audience).await?
            } else {
                // Offline: the same verification as the JWT method, with the cluster's keys.
                let keys = JwtConfig {
                    jwt_validation_pubkeys: cfg.pem_keys.clone(),
                    jwks_url: cfg.jwks_url.clone(),
                    ca_pem: cfg.kubernetes_ca_cert.clone(),
                    jwt_supported_algs: ["RS256", "ES256"].iter().map(|s| s.to_string()).collect(),
                    ..JwtConfig::default()
                };
                let claims = verified_claims(a, m, &keys, &token).await?;
                let sa = service_account(&claims)?;
                jwt::check_claims(&claims, &role.claim_rules(&cfg, sa.legacy), now_unix())?;
                sa
            };
            role.check(&sa)?;
            let meta = meta_map([
                ("role", name.clone()),
                ("service_account_name", sa.name.clone()),
                ("service_account_namespace", sa.namespace.clone()),
                ("service_account_uid", sa.uid.clone()),
            ]);
            Ok(Login {
                params: role.token.clone(),
                display_name: format!("kubernetes-{}-{}", sa.namespace, sa.name),
                meta,
            })
        }
        "cert" => cert_login(a, req).await,
        other => Err(ApiError::bad(format!("auth type {other:?} has no login"))),
    }
}

/// Certificate login: the TLS handshake proved the client holds the key of `peer_certs[0]`;
/// a role (`name`, or the first that accepts it, in name order) must trust its issuer and
/// names, and neither it nor its issuer may be revoked (Custos's own PKI mounts, and CRLs
/// uploaded at `crls/:name`).
pub(super) async fn cert_login(a: &Au<'_>, req: &Request) -> ApiResult<Login> {
    let leaf = req.peer_certs.first().ok_or_else(|| {
        ApiError::bad(
            "no client certificate was presented: certificate login needs a TLS connection \
             with a client certificate (listener tls_client_auth = \"request\")",
        )
    })?;
    let wanted = req.str_field("name").filter(|n| !n.is_empty());
    let names = match &wanted {
        Some(n) => vec![n.clone()],
        None => {
            let mut v: Vec<String> = a
                .list("role/")
                .await?
                .into_iter()
                .filter(|k| !k.contains('/'))
                .collect();
            v.sort();
            v
        }
    };
    let now = now_unix();
    let mut reason = None;
    let mut hit = None;
    for name in names {
        let Some(role) = a.get_json::<CertRole>(&format!("role/{name}")).await? else {
            if wanted.is_some() {
                return Err(ApiError::bad(format!("role {name:?} could not be found")));
            }
            continue;
        };
        match role.check(leaf, now) {
            Ok(c) => {
                hit = Some((name, role, c));
                break;
            }
            Err(e) => reason = Some(e),
        }
    }
    let (name, role, c) = match (hit, reason) {
        (Some(h), _) => h,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => {
            return Err(ApiError::LoginDenied(
                "no certificate role is configured".into(),
            ))
        }
    };
    if let Some(why) = a
        .shared
        .revocation
        .revoked_by_issuer(&c.issuer_der, &c.serial)
        .await?
    {
        return Err(ApiError::LoginDenied(why));
    }
    let serial = custos_pki::issue::serial_hex(&c.serial);
    for crl in a.list("crl/").await? {
        if let Some(l) = a.get_json::<StoredCrl>(&format!("crl/{crl}")).await? {
            if l.issuer == hex::encode(&c.issuer_name) && l.serials.binary_search(&serial).is_ok() {
                return Err(ApiError::LoginDenied(format!(
                    "client certificate {serial} is revoked (CRL {crl:?})"
                )));
            }
        }
    }
    let mut meta = meta_map([
        ("cert_name", name.clone()),
        ("common_name", c.common_name.clone()),
        ("serial_number", serial),
    ]);
    if let Some(id) = c.uris.iter().find_map(|u| u.strip_prefix("urn:uuid:")) {
        meta.insert("nf_instance_id".into(), Value::String(id.to_string()));
    }
    let display = if role.display_name.is_empty() {
        c.common_name.clone()
    } else {
        role.display_name.clone()
    };
    Ok(Login {
        params: role.token.clone(),
        display_name: format!("cert-{display}"),
        meta,
    })
}

/// Asks the Kubernetes API server whether `token` is valid (TokenReview), authenticating as
/// `token_reviewer_jwt`, or as the caller's own token when none is configured (a projected
/// token with the `system:auth-delegator` role can review itself, as with Vault).
pub(super) async fn token_review(
    cfg: &KubeConfig,
    token: &str,
    audience: &str,
) -> ApiResult<ServiceAccount> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if !cfg.kubernetes_ca_cert.is_empty() {
        let ca = reqwest::Certificate::from_pem(cfg.kubernetes_ca_cert.as_bytes())
            .map_err(|_| ApiError::bad("kubernetes_ca_cert: not a valid PEM certificate"))?;
        b = b.tls_certs_only([ca]);
    }
    let client = b.build().map_err(ApiError::internal)?;
    let bearer = if cfg.token_reviewer_jwt.is_empty() {
        token
    } else {
        cfg.token_reviewer_jwt.as_str()
    };
    let url = format!(
        "{}/apis/authentication.k8s.io/v1/tokenreviews",
        cfg.kubernetes_host.trim_end_matches('/')
    );
    let unreachable = |e: String| ApiError::LoginDenied(format!("TokenReview at {url}: {e}"));
    let r = client
        .post(&url)
        .bearer_auth(bearer)
        .json(&custos_auth::kube::token_review_request(token, audience))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if body.len() > MAX_KEY_DOC {
        return Err(unreachable("answer too large".into()));
    }
    if !status.is_success() {
        return Err(unreachable(format!(
            "HTTP {status} (is the reviewer allowed to create tokenreviews?)"
        )));
    }
    let v: Value =
        serde_json::from_slice(&body).map_err(|_| unreachable("answer is not JSON".into()))?;
    Ok(custos_auth::kube::service_account_from_review(
        &v, audience,
    )?)
}
