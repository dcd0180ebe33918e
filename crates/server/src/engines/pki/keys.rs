//! Managed keys: `keys/generate/*`, `keys/import`, `key/:ref`.

use super::*;

pub(super) fn key_json(k: &KeyEntry) -> Value {
    json!({"key_id": k.key_id, "key_name": k.key_name, "key_type": k.key_type})
}

pub(super) async fn find_key(a: &Pk<'_>, kref: &str) -> ApiResult<KeyEntry> {
    if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{kref}")).await? {
        return Ok(k);
    }
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            if !k.key_name.is_empty() && k.key_name == kref {
                return Ok(k);
            }
        }
    }
    Err(ApiError::NotFound)
}

pub(super) async fn list_keys(a: &Pk<'_>) -> ApiResult<Response> {
    let mut keys = Vec::new();
    let mut info = Map::new();
    for id in a.list("key/").await? {
        if let Some(k) = a.get_json::<KeyEntry>(&format!("key/{id}")).await? {
            info.insert(
                id.clone(),
                json!({"key_name": k.key_name, "key_type": k.key_type}),
            );
            keys.push(id);
        }
    }
    if keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Response::data(json!({"keys": keys, "key_info": info})))
}

pub(super) async fn delete_key(a: &Pk<'_>, kref: &str) -> ApiResult<Response> {
    let k = find_key(a, kref).await?;
    for id in a.list("issuer/").await? {
        if let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? {
            if e.key_id == k.key_id {
                return Err(ApiError::bad(format!(
                    "key {} is used by issuer {}; delete the issuer first",
                    k.key_id, e.issuer_name
                )));
            }
        }
    }
    a.write(vec![Plain::Delete(format!("key/{}", k.key_id))])
        .await?;
    Ok(Response::empty())
}

pub(super) async fn store_key(
    a: &Pk<'_>,
    name: String,
    kt: &str,
    pem_text: &str,
) -> ApiResult<String> {
    if !name.is_empty() {
        valid_name("key_name", &name)?;
        if find_key(a, &name).await.is_ok() {
            return Err(ApiError::bad(format!(
                "key_name {name:?} is already in use"
            )));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let entry = KeyEntry {
        key_id: id.clone(),
        key_name: name,
        key_type: kt.into(),
        private_key: pem_text.to_string(),
    };
    a.write(vec![Plain::Put(
        format!("key/{id}"),
        Zeroizing::new(serde_json::to_vec(&entry)?).to_vec(),
    )])
    .await?;
    Ok(id)
}

/// `keys/generate/{internal,exported}`: a managed key with no issuer yet.
pub(super) async fn generate_key_only(
    a: &Pk<'_>,
    kind: &str,
    req: &Request,
) -> ApiResult<Response> {
    if kind != "internal" && kind != "exported" {
        return Err(ApiError::bad(format!(
            "unknown type {kind:?}: use internal or exported"
        )));
    }
    let (kt, bits) = key_type_bits(&req.data)?;
    let key = tokio::task::spawn_blocking(move || issue::generate_key(kt, bits))
        .await
        .map_err(ApiError::internal)??;
    let pem_text = Zeroizing::new(key.serialize_pem());
    let id = store_key(
        a,
        fields::str_of(&req.data, "key_name")?,
        kt.name(),
        &pem_text,
    )
    .await?;
    let mut data = json!({"key_id": id, "key_name": fields::str_of(&req.data, "key_name")?, "key_type": kt.name()});
    if kind == "exported" {
        data["private_key"] = json!(pem_text.as_str());
    }
    Ok(Response::data(data))
}

/// `keys/import`: a PKCS#8 PEM private key.
pub(super) async fn import_key(a: &Pk<'_>, req: &Request) -> ApiResult<Response> {
    let text = Zeroizing::new(fields::str_of(&req.data, "pem_bundle")?);
    if text.trim().is_empty() {
        return Err(ApiError::bad("pem_bundle: is required"));
    }
    let kp = rcgen::KeyPair::from_pem(&text).map_err(|_| ApiError::bad("pem_bundle: not a private key this build can use (PKCS#8 \"PRIVATE KEY\": EC P-256/P-384, Ed25519 or RSA)"))?;
    let kt = if kp.algorithm() == &rcgen::PKCS_ED25519 {
        "ed25519"
    } else if kp.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256
        || kp.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384
    {
        "ec"
    } else {
        "rsa"
    };
    let pk8 = Zeroizing::new(kp.serialize_pem());
    let id = store_key(a, fields::str_of(&req.data, "key_name")?, kt, &pk8).await?;
    Ok(Response::data(json!({"key_id": id, "key_type": kt})))
}
