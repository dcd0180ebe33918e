//! Mount settings and roles: `config/urls`, `config/crl`, `roles/:name`, and the parsed
//! role and URL cache.

use super::*;

pub(super) async fn urls(a: &Pk<'_>, m: &MountEntry) -> ApiResult<Urls> {
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

pub(super) async fn cached_role(a: &Pk<'_>, m: &MountEntry, name: &str) -> ApiResult<Arc<Role>> {
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

pub(super) fn fill_parsed(a: &Pk<'_>, key: String, v: Parsed, epoch: u64) {
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
pub(super) fn forget_parsed(a: &Pk<'_>, m: &MountEntry) {
    let prefix = format!("{}/", m.uuid);
    if let Ok(mut c) = a.issuers.parsed.write() {
        a.issuers
            .parsed_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        c.retain(|k, _| !k.starts_with(&prefix));
    }
}

pub(super) async fn write_urls(a: &Pk<'_>, m: &MountEntry, req: &Request) -> ApiResult<Response> {
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

pub(super) async fn crl_config(a: &Pk<'_>) -> ApiResult<Value> {
    Ok(a.get_json("config/crl").await?.unwrap_or_else(
        || json!({"expiry": "72h", "disable": false, "auto_rebuild": false, "enable_delta": false}),
    ))
}

pub(super) async fn write_crl_config(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
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

pub(super) async fn write_role(
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
