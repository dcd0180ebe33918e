//! Issuance: `issue/:role`, `sign/:role` and `sign-verbatim`, under the role's request
//! policy and the SBA profile; every certificate is logged before it is handed out.

use super::*;

pub(super) fn mount_ttls(a: &Pk<'_>, m: &MountEntry) -> (u64, u64) {
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

pub(super) fn check_csr_key(role: &Role, k: csr::KeyInfo) -> ApiResult<()> {
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

/// Refuses issuance for a quarantined device: by the NF instance IDs the certificate would
/// name, or by the caller's login (its token's display name, certificate serial, NF ID).
fn refuse_quarantined(a: &Pk<'_>, nf_ids: &[String], who: &Who) -> ApiResult<()> {
    let Some(q) = a.quarantine else {
        return Ok(());
    };
    let mut ids: Vec<&str> = nf_ids.iter().map(String::as_str).collect();
    if let Some(id) = who.identity.get("nf_instance_id") {
        ids.push(id);
    }
    let subject = Subject {
        nf_instance_ids: &ids,
        cert_serial: who.identity.get("serial_number").map(String::as_str),
        display_name: Some(&who.requester),
    };
    match q.refusal(&subject) {
        Some(why) => Err(ApiError::Quarantined(why)),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn issue_or_sign(
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
pub(super) async fn issue_with(
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
    // The NF instance IDs the certificate will name: a quarantined device gets none, and
    // each is indexed so that a quarantine finds the certificate.
    let nf_ids: Vec<String> = approved
        .sans
        .iter()
        .filter_map(|g| match g {
            custos_pki::der::GeneralName::Uri(u) => {
                u.strip_prefix("urn:uuid:").map(str::to_ascii_lowercase)
            }
            _ => None,
        })
        .collect();
    refuse_quarantined(a, &nf_ids, who)?;
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
    // Stored and logged in one transaction; handed out only once both are durable: no
    // certificate reaches anyone unlogged, and no stored certificate lacks its entry.
    let mut ops = Vec::new();
    if !role.no_store {
        let row = CertRow {
            mount: m.uuid.clone(),
            serial: serial_hex.clone(),
            issuer_id: issuer.entry.issuer_id.clone(),
            not_after,
            revoked_at: None,
            value: cert_der.clone(),
        };
        ops.push(Plain::Cert(row));
        for id in &nf_ids {
            ops.push(Plain::Put(
                nf_index_key(id, &serial_hex),
                serde_json::to_vec(&not_after)?,
            ));
        }
    }
    a.log()?
        .append_with(
            Event::CertIssued {
                mount: m.path.clone(),
                issuer: issuer.entry.issuer_id.clone(),
                role: role_name.to_string(),
                serial: serial_hex.clone(),
                not_after,
                cert_sha256: sha256_hex(&cert_der),
                nf_types,
                requester: who.requester.clone(),
            },
            a.scope(ops)?,
        )
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

pub(super) async fn sign_verbatim(
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
