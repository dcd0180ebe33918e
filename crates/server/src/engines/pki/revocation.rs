//! Revocation and status: `revoke`, certificate reads and lists, OCSP (CRLs: [`super::crl`]).

use super::*;

pub(super) async fn revoke(
    a: &Pk<'_>,
    m: &MountEntry,
    req: &Request,
    who: &str,
) -> ApiResult<Response> {
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
    let now = revoke_row(a, m, row, who).await?;
    Ok(Response::data(
        json!({"revocation_time": now, "revocation_time_rfc3339": crate::core::rfc3339(now), "state": "revoked"}),
    ))
}

/// Marks `row` revoked and logs the revocation in one transaction, then marks the mount's
/// CRLs stale (they are rebuilt off this path); answers the revocation time.
pub(super) async fn revoke_row(
    a: &Pk<'_>,
    m: &MountEntry,
    row: CertRow,
    who: &str,
) -> ApiResult<i64> {
    let now = now_unix();
    let serial = row.serial.clone();
    let mut new_row = row;
    new_row.revoked_at = Some(now);
    let logged = a
        .log()?
        .append_with(
            Event::CertRevoked {
                mount: m.path.clone(),
                serial,
                requester: who.to_string(),
            },
            a.scope(vec![Plain::Cert(new_row)])?,
        )
        .await;
    // Bumped whatever the outcome: an unknown outcome may have committed.
    bump_generation(&a.issuers, m);
    logged?;
    Ok(now)
}

/// Revokes the stored certificate `serial` (already revoked: nothing changes).
pub(super) async fn revoke_serial(
    a: &Pk<'_>,
    m: &MountEntry,
    serial: &str,
    who: &str,
) -> ApiResult<()> {
    let row = a
        .get_cert(serial)
        .await?
        .ok_or_else(|| ApiError::bad(format!("certificate with serial {serial} not found")))?;
    if row.revoked_at.is_none() {
        revoke_row(a, m, row, who).await?;
    }
    Ok(())
}

/// The index of certificates by the NF instance IDs in their `urn:uuid:` SANs.
pub(super) fn nf_index_key(nf_instance_id: &str, serial: &str) -> String {
    format!("nf/{}/{serial}", nf_instance_id.to_ascii_lowercase())
}

/// The certificates of the view's mount bound to these NF instance IDs or serials. Index
/// rows whose certificate is gone (tidied) are dropped on the way.
pub(super) async fn bound_certs(
    v: &View,
    nf_instance_ids: &[String],
    serials: &[String],
) -> ApiResult<Vec<BoundCert>> {
    let mut want: Vec<String> = Vec::new();
    for s in serials {
        if let Ok(s) = norm_serial(s) {
            want.push(s);
        }
    }
    let mut stale = Vec::new();
    for id in nf_instance_ids {
        let id = id.to_ascii_lowercase();
        if id.contains('/') || id.is_empty() {
            continue;
        }
        for s in v.list(&format!("nf/{id}/")).await? {
            if v.cert_status(&s).await?.is_none() {
                stale.push(Plain::Delete(nf_index_key(&id, &s)));
            } else {
                want.push(s);
            }
        }
    }
    if !stale.is_empty() {
        v.write(stale).await?;
    }
    want.sort();
    want.dedup();
    let mut out = Vec::new();
    for s in want {
        if let Some(r) = v.cert_status(&s).await? {
            out.push(BoundCert {
                serial: s,
                not_after: r.not_after,
                revoked_at: r.revoked_at,
            });
        }
    }
    Ok(out)
}

pub(super) async fn list_certs(a: &Pk<'_>, revoked: bool, req: &Request) -> ApiResult<Response> {
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

pub(super) async fn read_cert(a: &Pk<'_>, serial: &str, rest: &[&str]) -> ApiResult<Response> {
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

pub(super) async fn ca(a: &Pk<'_>, sub: &str) -> ApiResult<Response> {
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

pub(super) async fn list_issuers(a: &Pk<'_>) -> ApiResult<Response> {
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

pub(super) fn ocsp_bytes(b: Vec<u8>) -> Response {
    raw(("application/ocsp-response", b))
}

/// OCSP responder: good / revoked / unknown per CertID, signed by the issuing CA, nonce echoed.
pub(super) async fn ocsp(a: &Pk<'_>, m: &MountEntry, der: &[u8]) -> ApiResult<Response> {
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
