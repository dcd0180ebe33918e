//! ES256 access tokens (TS 33.210 6.3.3 JWS profile: ES256, `kid` supported, never `none`,
//! never an embedded `jwk`) and the JWKS that publishes the NRF's public keys.

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Signing failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// The stored key is not a P-256 PKCS#8 key.
    #[error("the NRF signing key is not a valid P-256 PKCS#8 key")]
    BadKey,
    /// The crypto library failed.
    #[error("signing failed")]
    Sign,
}

/// One NRF signing key.
pub struct Signer {
    kid: String,
    key: EcdsaKeyPair,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A new P-256 key as PKCS#8 DER, for the barrier to keep.
pub fn generate_pkcs8() -> Result<Zeroizing<Vec<u8>>, JwsError> {
    let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| JwsError::Sign)?;
    let der = k.to_pkcs8v1().map_err(|_| JwsError::Sign)?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

impl Signer {
    /// Loads a key. The `kid` is the RFC 7638 thumbprint of its public JWK, so it names the
    /// key itself and cannot be reused for another.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Signer, JwsError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| JwsError::BadKey)?;
        let (x, y) = xy(key.public_key().as_ref()).ok_or(JwsError::BadKey)?;
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = b64(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        Ok(Signer {
            kid,
            key,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        })
    }

    /// The key ID put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let (x, y) = xy(self.key.public_key().as_ref()).unwrap_or_default();
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": self.kid, "use": "sig", "alg": "ES256"})
    }

    /// Signs `claims` as a compact JWS: `{"alg":"ES256","typ":"JWT","kid":…}`.
    pub fn sign(&self, claims: &Value) -> Result<String, JwsError> {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| JwsError::Sign)?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

/// (x, y) base64url of an uncompressed P-256 point.
fn xy(point: &[u8]) -> Option<(String, String)> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some((b64(&point[1..33]), b64(&point[33..])))
}

/// A JWKS document of the given public JWKs.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_token_verifies_with_its_published_jwk_and_kid_is_the_thumbprint() {
        let s = Signer::from_pkcs8(&generate_pkcs8().unwrap()).unwrap();
        let t = s.sign(&json!({"sub": "x"})).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let dec = |p: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap()
        };
        let h: Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["kid"], s.kid());
        assert!(h.get("jwk").is_none());
        let jwk = s.jwk();
        let mut point = vec![4u8];
        point.extend(dec(jwk["x"].as_str().unwrap()));
        point.extend(dec(jwk["y"].as_str().unwrap()));
        let pk = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            point,
        );
        pk.verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &dec(parts[2]),
        )
        .unwrap();
        // Same key, same kid; another key, another kid.
        let again = Signer::from_pkcs8(s.key.to_pkcs8v1().unwrap().as_ref()).unwrap();
        assert_eq!(again.kid(), s.kid());
        let other = Signer::from_pkcs8(&generate_pkcs8().unwrap()).unwrap();
        assert_ne!(other.kid(), s.kid());
        assert_eq!(Signer::from_pkcs8(b"junk").unwrap_err(), JwsError::BadKey);
    }
}
