//! Client Credentials Assertion (TS 33.501 13.3.8; carried in the `3gpp-Sbi-Client-Credentials`
//! header, TS 29.500 5.2.3.2.x): a JWT the consumer signs with its own certificate's key.
//!
//! The NRF checks: the `x5c` chain's leaf was issued by a trusted NF CA and is within its
//! validity; the signature verifies with the leaf's key (ES256); `sub` is the NF instance ID
//! in the leaf; `aud` contains "NRF"; `exp` is in the future and `iat` not in it. On top of
//! mutual TLS, the server also requires `sub` to be the TLS peer.

use crate::identity::{self, NfIdentity};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use x509_parser::prelude::*;

/// Why an assertion is refused (an `invalid_client` AccessTokenErr).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcaError {
    /// Not a compact JWS with JSON parts.
    #[error("the client credentials assertion is not a well-formed JWS")]
    Malformed,
    /// Header problems (alg, x5c).
    #[error("client credentials assertion header: {0}")]
    Header(String),
    /// The certificate is not from a trusted CA, not valid now, or names no NF.
    #[error("client credentials assertion certificate: {0}")]
    Certificate(String),
    /// The signature does not verify with the certificate's key.
    #[error("the client credentials assertion signature does not verify")]
    Signature,
    /// A claim is wrong.
    #[error("client credentials assertion claim {0}")]
    Claim(String),
}

fn b64u(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
    x5u: Option<Value>,
}

/// A verified assertion: who signed it, and the serial of its certificate (for the caller's
/// revocation check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The NF named by the signing certificate (= `sub`).
    pub identity: NfIdentity,
    /// Serial of the signing certificate.
    pub serial: Vec<u8>,
}

/// Verifies `jwt` at `now` against the trusted CA certificates `cas` (DER).
pub fn verify(jwt: &str, cas: &[Vec<u8>], now: i64) -> Result<Verified, CcaError> {
    if jwt.len() > 32 * 1024 {
        return Err(CcaError::Malformed);
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h64, c64, s64] = parts.as_slice() else {
        return Err(CcaError::Malformed);
    };
    let h: Header = b64u(h64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(CcaError::Malformed)?;
    if h.alg != "ES256" {
        return Err(CcaError::Header(format!(
            "alg {:?}: only ES256 is accepted",
            h.alg
        )));
    }
    if h.x5u.is_some() {
        return Err(CcaError::Header(
            "x5u (a remote certificate URL) is not fetched; send x5c".into(),
        ));
    }
    let leaf_der = h
        .x5c
        .first()
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .ok_or_else(|| CcaError::Header("x5c with the signing certificate is required".into()))?;
    let (_, leaf) = X509Certificate::from_der(&leaf_der)
        .map_err(|_| CcaError::Certificate("x5c[0] is not valid X.509".into()))?;
    let trusted = cas.iter().any(|ca| {
        X509Certificate::from_der(ca).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == leaf.issuer().as_raw()
                && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    });
    if !trusted {
        return Err(CcaError::Certificate(
            "not issued by a trusted NF CA".into(),
        ));
    }
    let v = leaf.validity();
    if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
        return Err(CcaError::Certificate("outside its validity period".into()));
    }
    let identity =
        identity::from_cert(&leaf_der).map_err(|e| CcaError::Certificate(e.to_string()))?;
    let sig = b64u(s64).ok_or(CcaError::Malformed)?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        leaf.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(format!("{h64}.{c64}").as_bytes(), &sig)
        .map_err(|_| CcaError::Signature)?;
    let c: Value = b64u(c64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(CcaError::Malformed)?;
    let sub = c
        .get("sub")
        .and_then(Value::as_str)
        .and_then(crate::canonical_uuid);
    if sub.as_deref() != Some(identity.instance_id.as_str()) {
        return Err(CcaError::Claim(
            "sub is not the NF instance ID of the signing certificate".into(),
        ));
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == "NRF",
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some("NRF")),
        _ => false,
    };
    if !aud_ok {
        return Err(CcaError::Claim("aud does not contain \"NRF\"".into()));
    }
    let exp = c
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| CcaError::Claim("exp is required".into()))?;
    if exp <= now {
        return Err(CcaError::Claim("exp has passed".into()));
    }
    let iat = c
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| CcaError::Claim("iat is required".into()))?;
    if iat > now + 60 {
        return Err(CcaError::Claim("iat is in the future".into()));
    }
    Ok(Verified {
        identity,
        serial: leaf.raw_serial().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AMF: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
    const NOW: i64 = 1_900_000_000;

    struct Pki {
        ca_der: Vec<u8>,
        leaf_der: Vec<u8>,
        leaf_key: rcgen::KeyPair,
    }

    fn pki(id: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        cp.distinguished_name
            .push(rcgen::DnType::CommonName, "NF CA");
        let ca = cp.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(cp, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["amf1.example".to_string()]).unwrap();
        lp.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(format!("urn:uuid:{id}")).unwrap(),
        ));
        lp.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                custos_pki::sba::NF_TYPES_OID,
                custos_pki::der::nf_types(&["AMF".to_string()]),
            ));
        lp.not_before = rcgen::date_time_ymd(2030, 1, 1);
        lp.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_der: ca.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key,
        }
    }

    fn cca(p: &Pki, claims: Value) -> String {
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let x5c = base64::engine::general_purpose::STANDARD.encode(&p.leaf_der);
        let h = enc(json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]})
            .to_string()
            .as_bytes());
        let input = format!("{h}.{}", enc(claims.to_string().as_bytes()));
        let k = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &p.leaf_key.serialize_der(),
        )
        .unwrap();
        let sig = k
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", enc(sig.as_ref()))
    }

    fn claims() -> Value {
        json!({"sub": AMF, "aud": ["NRF"], "iat": NOW, "exp": NOW + 300})
    }

    #[test]
    fn ts33501_13_3_8_valid_assertion_names_its_signer() {
        let p = pki(AMF);
        let v = verify(&cca(&p, claims()), std::slice::from_ref(&p.ca_der), NOW).unwrap();
        assert_eq!(v.identity.instance_id, AMF);
    }

    #[test]
    fn mismatched_sub_expired_foreign_ca_and_tampering_are_refused() {
        let p = pki(AMF);
        let cas = [p.ca_der.clone()];
        let mut c = claims();
        c["sub"] = json!("5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11");
        assert!(matches!(
            verify(&cca(&p, c), &cas, NOW),
            Err(CcaError::Claim(_))
        ));
        let mut c = claims();
        c["exp"] = json!(NOW - 1);
        assert!(matches!(
            verify(&cca(&p, c), &cas, NOW),
            Err(CcaError::Claim(_))
        ));
        let mut c = claims();
        c["aud"] = json!("SMF");
        assert!(matches!(
            verify(&cca(&p, c), &cas, NOW),
            Err(CcaError::Claim(_))
        ));
        let other = pki(AMF);
        assert!(matches!(
            verify(&cca(&p, claims()), &[other.ca_der], NOW),
            Err(CcaError::Certificate(_))
        ));
        assert!(
            matches!(
                verify(&cca(&p, claims()), &cas, 2_000_000_000),
                Err(CcaError::Certificate(_))
            ),
            "certificate expired"
        );
        let t = cca(&p, claims());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"sub": AMF, "aud": "NRF", "iat": NOW, "exp": NOW + 9999}).to_string());
        assert_eq!(
            verify(&format!("{}.{forged}.{}", parts[0], parts[2]), &cas, NOW),
            Err(CcaError::Signature)
        );
        assert_eq!(verify("a.b", &cas, NOW), Err(CcaError::Malformed));
    }
}
