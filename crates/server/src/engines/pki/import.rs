//! Bringing CA certificates in: `intermediate/set-signed`, `config/ca`,
//! `issuers/import/{bundle,cert}` and `intermediate/cross-sign`.

use super::*;

pub(super) fn is_ca(x: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    x.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
}

pub(super) fn split_pem_certs(bundle: &str) -> ApiResult<Vec<String>> {
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

pub(super) async fn set_signed(
    a: &Pk<'_>,
    m: &MountEntry,
    req: &Request,
    requester: &str,
) -> ApiResult<Response> {
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
    log_ca(a, m, &der, "intermediate.set-signed", requester).await?;
    a.write(ops).await?;
    invalidate(a, m);
    Ok(Response::data(
        json!({"imported_issuers": [issuer_id], "imported_keys": [], "mapping": {issuer_id.clone(): key_id}, "existing_issuers": [], "existing_keys": []}),
    ))
}

/// Imports CA certificates (and, for bundles, private keys) from PEM. Certificates are matched
/// to keys by public key; a certificate whose key is absent becomes a verify-only issuer.
pub(super) async fn import_bundle(
    a: &Pk<'_>,
    m: &MountEntry,
    req: &Request,
    allow_keys: bool,
    requester: &str,
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
    let mut new_cas = Vec::new();
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
        new_cas.push(der);
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
    for der in &new_cas {
        log_ca(a, m, der, "import", requester).await?;
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
pub(super) async fn cross_sign_csr(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
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
