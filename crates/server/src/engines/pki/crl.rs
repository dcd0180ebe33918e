//! CRLs: full and delta, built in one pass over the revocation index and cached per issuer.
//!
//! **Off the revocation path.** A revocation writes the certificate row and its log entry,
//! and bumps the mount's generation; nothing else. A CRL is rebuilt when it is next fetched
//! and stale (one build at a time per issuer: concurrent fetchers wait for it and share it),
//! and by the engine's minute tick, which rebuilds every stale CRL and every CRL within a
//! third of its validity (at least an hour) of its `nextUpdate`, so fetchers are normally
//! served from the cache and no relying party ever holds an expired CRL.
//!
//! **One pass, bounded memory.** Entries stream from the `(mount, serial)` revocation index
//! a page at a time straight into the DER the CRL is ([`custos_pki::crl::CrlBuilder`]):
//! a CRL costs about its own size in memory while it is built.

use super::*;
use custos_pki::crl::CrlBuilder;

/// Revocation-index rows read per storage call while building.
const PAGE: usize = 10_000;

/// Seconds before `nextUpdate` from which a CRL is rebuilt: a third of its validity, at
/// least an hour.
fn refresh_window(validity: i64) -> i64 {
    (validity / 3).max(3600)
}

pub(super) async fn raw_crl(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: Option<&str>,
    as_pem: bool,
) -> ApiResult<Response> {
    let iref = iref
        .filter(|r| *r != "pem" && *r != "der")
        .unwrap_or("default");
    let der = crl(a, m, iref, false).await?;
    Ok(crl_response(der, as_pem))
}

/// A CRL as its raw body: PEM or DER.
fn crl_response(der: bytes::Bytes, as_pem: bool) -> Response {
    if as_pem {
        raw((
            "application/pem-certificate-chain",
            pem("X509 CRL", &der).into_bytes(),
        ))
    } else {
        raw(("application/pkix-crl", der))
    }
}

/// The cached CRL of `key` if it is current: built at generation `gen` and not yet due.
fn cached(a: &Pk<'_>, key: &str, gen: u64, now: i64) -> Option<bytes::Bytes> {
    let c = a.issuers.crls.read().ok()?;
    let c = c.get(key)?;
    (c.generation == gen && c.next_update - now > refresh_window(c.next_update - c.built_at))
        .then(|| c.der.clone())
}

/// The one-build-at-a-time lock of an issuer's CRL.
fn build_lock(a: &Pk<'_>, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut l = a
        .issuers
        .crl_builds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.entry(key.to_string())
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

/// The current CRL of an issuer: the cached one if no revocation happened since it was built
/// and it is not due, else a new one (`force`: always a new one).
pub(super) async fn crl(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: &str,
    force: bool,
) -> ApiResult<bytes::Bytes> {
    let issuer = load_issuer(a, m, iref).await?;
    require_usage(&issuer, "crl-signing")?;
    let key = format!("{}/{}", m.uuid, issuer.entry.issuer_id);
    if !force {
        if let Some(der) = cached(a, &key, generation(a, m), now_unix()) {
            return Ok(der);
        }
    }
    let lock = build_lock(a, &key);
    let _building = lock.lock().await;
    // Built by another fetcher while this one waited?
    let gen = generation(a, m);
    if !force {
        if let Some(der) = cached(a, &key, gen, now_unix()) {
            return Ok(der);
        }
    }
    build(a, &issuer, &key, gen).await
}

/// Builds, signs and caches a full CRL (its number stored first, so numbers never repeat).
async fn build(a: &Pk<'_>, issuer: &Arc<Loaded>, key: &str, gen: u64) -> ApiResult<bytes::Bytes> {
    let cfg = crl_config(a).await?;
    let expiry = fields::parse_duration(cfg.get("expiry").and_then(Value::as_str).unwrap_or("72h"))
        .unwrap_or(72 * 3600) as i64;
    let now = now_unix();
    let mut b = CrlBuilder::new();
    let mut after: Option<String> = None;
    loop {
        let page = a.revoked_certs(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0.clone());
        let full = page.len() == PAGE;
        for (s, t) in page {
            b.push(&serial_bytes(&s)?, t)?;
        }
        if !full {
            break;
        }
    }
    let num_key = format!("crl-number/{}", issuer.entry.issuer_id);
    let number: u64 = a.get_json::<u64>(&num_key).await?.unwrap_or(0) + 1;
    a.put_json(&num_key, &number).await?;
    let iss = issuer.clone();
    let next = now + expiry;
    let der = tokio::task::spawn_blocking(move || {
        b.finish(now - 30, next, number, None, &iss.der, iss.signer.key())
    })
    .await
    .map_err(ApiError::internal)??;
    let der = bytes::Bytes::from(der);
    a.put_json(
        &format!("crl-base/{}", issuer.entry.issuer_id),
        &json!({"number": number, "built_at": now}),
    )
    .await?;
    if let Ok(mut c) = a.issuers.crls.write() {
        c.insert(
            key.to_string(),
            CachedCrl {
                generation: gen,
                der: der.clone(),
                next_update: next,
                built_at: now,
            },
        );
    }
    Ok(der)
}

/// The minute tick: rebuilds, in the background of every request, each CRL that is stale or
/// due, and builds each crl-signing issuer's first one after an unseal.
pub(super) async fn refresh(a: &Pk<'_>, m: &MountEntry) -> ApiResult<()> {
    let gen = generation(a, m);
    let now = now_unix();
    for id in a.list("issuer/").await? {
        let Ok(issuer) = load_issuer(a, m, &id).await else {
            continue;
        };
        // A revoked issuer keeps signing its CRL (see `issuer/:ref/revoke`).
        if require_usage(&issuer, "crl-signing").is_err() {
            continue;
        }
        let key = format!("{}/{}", m.uuid, issuer.entry.issuer_id);
        if cached(a, &key, gen, now).is_some() {
            continue;
        }
        let lock = build_lock(a, &key);
        let _building = lock.lock().await;
        if cached(a, &key, generation(a, m), now_unix()).is_none() {
            build(a, &issuer, &key, generation(a, m)).await?;
        }
    }
    Ok(())
}

/// The delta CRL of an issuer: revocations since the last full CRL (its base), from the
/// `(mount, revoked_at)` index. Needs `enable_delta` in `config/crl`, as in Vault.
pub(super) async fn delta_crl(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: &str,
    as_pem: bool,
) -> ApiResult<Response> {
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
    let mut builder = CrlBuilder::new();
    for (s, t) in a.revoked_since(since, 1_000_000).await? {
        builder.push(&serial_bytes(&s)?, t)?;
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
    let der = builder.finish(
        now - 30,
        now + interval as i64 + 3600,
        number,
        Some(base_number),
        &issuer.der,
        issuer.signer.key(),
    )?;
    Ok(crl_response(der.into(), as_pem))
}
