//! CA issuers: root and intermediate generation, signing intermediates, issuer lookup,
//! update, revocation and deletion.

use super::*;

pub(super) async fn default_issuer_id(a: &Pk<'_>) -> ApiResult<Option<String>> {
    let v: Option<Value> = a.get_json("config/issuers").await?;
    Ok(
        v.and_then(|v| v.get("default").and_then(Value::as_str).map(str::to_string))
            .filter(|s| !s.is_empty()),
    )
}

pub(super) async fn resolve_issuer_id(a: &Pk<'_>, reference: &str) -> ApiResult<String> {
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

pub(super) async fn load_issuer(
    a: &Pk<'_>,
    m: &MountEntry,
    reference: &str,
) -> ApiResult<Arc<Loaded>> {
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

pub(super) fn require_usage(l: &Loaded, usage: &str) -> ApiResult<()> {
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

pub(super) async fn load_issuer_entry(a: &Pk<'_>, reference: &str) -> ApiResult<IssuerEntry> {
    let id = resolve_issuer_id(a, reference)
        .await
        .map_err(|_| ApiError::NotFound)?;
    a.get_json(&format!("issuer/{id}"))
        .await?
        .ok_or(ApiError::NotFound)
}

pub(super) fn issuer_json(e: &IssuerEntry) -> Value {
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

pub(super) fn subject_from(d: &Map<String, Value>) -> ApiResult<SubjectFields> {
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

pub(super) async fn generate_root(
    a: &Pk<'_>,
    m: &MountEntry,
    kind: &str,
    req: &Request,
    requester: &str,
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
    log_ca(a, m, cert.der(), "root.generate", requester).await?;
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

pub(super) async fn delete_root(a: &Pk<'_>, m: &MountEntry) -> ApiResult<Response> {
    let mut ops = Vec::new();
    for p in ["issuer/", "key/"] {
        for k in a.list(p).await? {
            ops.push(Plain::Delete(format!("{p}{k}")));
        }
    }
    ops.push(Plain::Delete("config/issuers".to_string()));
    a.write(ops).await?;
    invalidate(a, m);
    Ok(Response::empty())
}

pub(super) fn key_type_bits(d: &Map<String, Value>) -> ApiResult<(KeyType, u32)> {
    let k = fields::str_of(d, "key_type")?;
    let kt = KeyType::parse(if k.is_empty() { "rsa" } else { &k })?;
    if kt == KeyType::Any {
        return Err(ApiError::bad("key_type: \"any\" is not valid for a CA key"));
    }
    Ok((kt, kt.bits(fields::int_of(d, "key_bits", 0)?)?))
}

pub(super) async fn generate_intermediate(
    a: &Pk<'_>,
    kind: &str,
    req: &Request,
) -> ApiResult<Response> {
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

pub(super) async fn sign_intermediate(
    a: &Pk<'_>,
    m: &MountEntry,
    iref: &str,
    req: &Request,
    requester: &str,
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
    log_ca(a, m, &der, "sign-intermediate", requester).await?;
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

pub(super) const USAGES: &[&str] = &[
    "read-only",
    "issuing-certificates",
    "crl-signing",
    "ocsp-signing",
];

pub(super) async fn update_issuer(
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
pub(super) async fn revoke_issuer(a: &Pk<'_>, m: &MountEntry, iref: &str) -> ApiResult<Response> {
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

pub(super) async fn delete_issuer(a: &Pk<'_>, m: &MountEntry, iref: &str) -> ApiResult<Response> {
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
