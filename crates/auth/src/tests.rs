#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::jwt::{check_claims, header, verify, ClaimRules, KeySet};
use crate::kube::{service_account, KubeRole};
use crate::params::Cidr;
use crate::AuthError;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

const NOW: i64 = 1_800_000_000;

struct Signer {
    enc: EncodingKey,
    pub_pem: String,
    alg: Algorithm,
}

fn ec_signer() -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Signer {
        enc: EncodingKey::from_ec_der(&kp.serialize_der()),
        pub_pem: kp.public_key_pem(),
        alg: Algorithm::ES256,
    }
}

fn rsa_signer() -> Signer {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
    let rk = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
    Signer {
        enc: EncodingKey::from_rsa_der(kp_der_pkcs1(&kp).as_ref()),
        pub_pem: rk.public_key_pem(),
        alg: Algorithm::RS256,
    }
}

fn kp_der_pkcs1(kp: &aws_lc_rs::rsa::KeyPair) -> Vec<u8> {
    // jsonwebtoken's RSA EncodingKey takes PKCS#1 DER.
    aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(kp)
        .map(|d| pkcs1_from_pkcs8(d.as_ref()))
        .unwrap()
}

/// PKCS#8 PrivateKeyInfo → the inner PKCS#1 RSAPrivateKey (the OCTET STRING's content).
fn pkcs1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::der::parse_der;
    let (_, seq) = parse_der(der).unwrap();
    let items = seq.as_sequence().unwrap();
    items[2].as_slice().unwrap().to_vec()
}

fn sign(s: &Signer, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(s.alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, &s.enc).unwrap()
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "sub": "nf-amf-1", "aud": "custos",
           "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10,
           "nf_type": "AMF", "plmn": "262-01"})
}

fn rules() -> ClaimRules {
    ClaimRules {
        bound_issuer: "https://issuer.example".into(),
        bound_audiences: vec!["custos".into()],
        user_claim: "sub".into(),
        require_exp: true,
        ..ClaimRules::default()
    }
}

fn allowed() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn login(token: &str, keys: &KeySet, r: &ClaimRules) -> Result<String, AuthError> {
    let h = header(token, &allowed())?;
    let c = verify(token, &h, keys)?;
    Ok(check_claims(&c, r, NOW)?.user)
}

#[test]
fn es256_and_rs256_tokens_verify_against_their_own_keys() {
    for s in [ec_signer(), rsa_signer()] {
        let keys = KeySet::from_pems(std::slice::from_ref(&s.pub_pem)).unwrap();
        let t = sign(&s, None, &claims());
        assert_eq!(login(&t, &keys, &rules()).unwrap(), "nf-amf-1");
    }
}

#[test]
fn alg_none_is_refused_before_any_key_is_used() {
    let s = ec_signer();
    let keys = KeySet::from_pems(std::slice::from_ref(&s.pub_pem)).unwrap();
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&claims())
        );
        let e = login(&t, &keys, &rules()).unwrap_err();
        assert!(
            matches!(&e, AuthError::Denied(m) if m.contains("none")),
            "{e}"
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let s = rsa_signer();
    let keys = KeySet::from_pems(std::slice::from_ref(&s.pub_pem)).unwrap();
    // The classic key-confusion forgery: HMAC keyed with the public key's PEM bytes.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(s.pub_pem.as_bytes()),
    )
    .unwrap();
    let e = login(&forged, &keys, &rules()).unwrap_err();
    assert!(
        matches!(&e, AuthError::Denied(m) if m.contains("symmetric")),
        "{e}"
    );
}

#[test]
fn a_key_is_only_used_with_its_own_algorithm_family() {
    let ec = ec_signer();
    let rsa = rsa_signer();
    // Only the RSA key is configured; an ES256 token finds no usable key.
    let keys = KeySet::from_pems(std::slice::from_ref(&rsa.pub_pem)).unwrap();
    let e = login(&sign(&ec, None, &claims()), &keys, &rules()).unwrap_err();
    assert!(matches!(e, AuthError::Denied(_)), "{e}");
    // A token signed by a different key of the right family fails verification.
    let other = rsa_signer();
    let e = login(&sign(&other, None, &claims()), &keys, &rules()).unwrap_err();
    assert_eq!(e, AuthError::denied("token signature verification failed"));
}

#[test]
fn rfc7519_time_claims_expired_and_not_yet_valid_are_refused() {
    let s = ec_signer();
    let keys = KeySet::from_pems(std::slice::from_ref(&s.pub_pem)).unwrap();
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    assert!(login(&sign(&s, None, &c), &keys, &rules())
        .unwrap_err()
        .to_string()
        .contains("expired"));
    // Within the leeway (60 s skew + 150 s) an expired token still passes, as in Vault.
    c["exp"] = json!(NOW - 100);
    assert!(login(&sign(&s, None, &c), &keys, &rules()).is_ok());
    let mut c = claims();
    c["nbf"] = json!(NOW + 3600);
    assert!(login(&sign(&s, None, &c), &keys, &rules())
        .unwrap_err()
        .to_string()
        .contains("nbf"));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert!(login(&sign(&s, None, &c), &keys, &rules())
        .unwrap_err()
        .to_string()
        .contains("no expiry"));
}

#[test]
fn wrong_audience_issuer_subject_and_bound_claims_are_refused() {
    let s = ec_signer();
    let keys = KeySet::from_pems(std::slice::from_ref(&s.pub_pem)).unwrap();
    let t = sign(&s, None, &claims());
    let mut r = rules();
    r.bound_audiences = vec!["other".into()];
    assert!(login(&t, &keys, &r)
        .unwrap_err()
        .to_string()
        .contains("aud"));
    let mut r = rules();
    r.bound_issuer = "https://evil.example".into();
    assert!(login(&t, &keys, &r)
        .unwrap_err()
        .to_string()
        .contains("iss"));
    let mut r = rules();
    r.bound_subject = "nf-smf-1".into();
    assert!(login(&t, &keys, &r)
        .unwrap_err()
        .to_string()
        .contains("sub"));
    let mut r = rules();
    r.bound_claims.insert("nf_type".into(), vec!["SMF".into()]);
    assert!(login(&t, &keys, &r)
        .unwrap_err()
        .to_string()
        .contains("nf_type"));
    // Globs only when bound_claims_type = glob.
    r.bound_claims.insert("nf_type".into(), vec!["A*".into()]);
    assert!(login(&t, &keys, &r).is_err());
    r.bound_claims_glob = true;
    assert!(login(&t, &keys, &r).is_ok());
    // A token with an audience but a role that binds none is refused (Vault's rule).
    let mut r = rules();
    r.bound_audiences.clear();
    r.bound_subject = "nf-amf-1".into();
    assert!(login(&t, &keys, &r)
        .unwrap_err()
        .to_string()
        .contains("bound_audiences"));
}

#[test]
fn unknown_kid_is_reported_so_the_jwks_can_be_refreshed() {
    let s = ec_signer();
    let jwk = {
        let keys = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.enc, Algorithm::ES256).unwrap();
        let mut v = serde_json::to_value(keys).unwrap();
        v["kid"] = json!("k1");
        v
    };
    let keys = KeySet::from_jwks(&serde_json::to_vec(&json!({"keys": [jwk]})).unwrap()).unwrap();
    assert!(keys.has_kid("k1"));
    assert_eq!(
        login(&sign(&s, Some("k1"), &claims()), &keys, &rules()).unwrap(),
        "nf-amf-1"
    );
    assert_eq!(
        login(&sign(&s, Some("k2"), &claims()), &keys, &rules()).unwrap_err(),
        AuthError::UnknownKid("k2".into())
    );
}

#[test]
fn jwks_keys_pinned_to_hmac_or_for_encryption_are_never_used() {
    let doc = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "e"}
    ]});
    let e = KeySet::from_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert!(e.to_string().contains("no usable"), "{e}");
}

#[test]
fn malformed_and_oversized_tokens_are_invalid_not_panics() {
    for t in ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.x"] {
        assert!(header(t, &allowed()).is_err(), "{t}");
    }
    let huge = "a".repeat(crate::jwt::MAX_TOKEN_BYTES + 1);
    assert!(header(&huge, &allowed())
        .unwrap_err()
        .to_string()
        .contains("larger"));
}

fn sa_claims(ns: &str, name: &str) -> Map<String, Value> {
    json!({"iss": "https://kubernetes.default.svc", "aud": ["custos"], "exp": NOW + 600,
           "sub": format!("system:serviceaccount:{ns}:{name}"),
           "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "u-1"}}})
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn kubernetes_role_refuses_other_service_accounts_and_namespaces() {
    let mut role = KubeRole::default();
    role.update(
        json!({"bound_service_account_names": "amf", "bound_service_account_namespaces": "5gc-*", "token_policies": "nf"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let ok = service_account(&sa_claims("5gc-core", "amf")).unwrap();
    assert!(!ok.legacy);
    role.check(&ok).unwrap();
    let e = role
        .check(&service_account(&sa_claims("5gc-core", "smf")).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("service account"), "{e}");
    let e = role
        .check(&service_account(&sa_claims("default", "amf")).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("namespace"), "{e}");
    // A sub that disagrees with the kubernetes.io claim is refused.
    let mut c = sa_claims("5gc-core", "amf");
    c["sub"] = json!("system:serviceaccount:5gc-core:smf");
    assert!(service_account(&c).is_err());
    // Legacy secret-based tokens.
    let legacy = json!({"iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:5gc-core:amf",
        "kubernetes.io/serviceaccount/namespace": "5gc-core",
        "kubernetes.io/serviceaccount/service-account.name": "amf"});
    let sa = service_account(legacy.as_object().unwrap()).unwrap();
    assert!(sa.legacy);
    role.check(&sa).unwrap();
    // Both wildcards at once would bind every account of the cluster.
    let mut r = KubeRole::default();
    assert!(r
        .update(
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"})
                .as_object()
                .unwrap()
        )
        .is_err());
}

#[test]
fn cidr_blocks_parse_strictly_and_match_v4_v6_and_mapped_addresses() {
    let c = Cidr::parse("10.1.0.0/16").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("10.2.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
    assert!(Cidr::parse("10.1.0.1/16").is_err(), "host bits set");
    assert!(Cidr::parse("10.1.0.0/33").is_err());
    assert!(Cidr::parse("nonsense").is_err());
    let v6 = Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8::1".parse().unwrap()));
    assert!(!v6.contains("10.1.2.3".parse().unwrap()));
    assert!(Cidr::parse("10.1.2.0/24").unwrap().within(&c));
    assert!(!Cidr::parse("10.0.0.0/8").unwrap().within(&c));
}

#[test]
fn approle_secret_ids_cannot_widen_the_roles_limits() {
    use crate::approle::{AppRole, SecretId};
    let mut role = AppRole::new("rid".into());
    role.update(
        json!({"secret_id_ttl": "10m", "secret_id_num_uses": 3, "secret_id_bound_cidrs": "10.0.0.0/8", "token_policies": "nf"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let s = SecretId::new(
        &role,
        json!({"ttl": "1h", "num_uses": 0}).as_object().unwrap(),
        "acc".into(),
        NOW,
    )
    .unwrap();
    assert_eq!(s.expiration_time, NOW + 600);
    assert_eq!(s.num_uses, 3);
    assert!(SecretId::new(
        &role,
        json!({"cidr_list": "192.168.0.0/16"}).as_object().unwrap(),
        "a".into(),
        NOW
    )
    .is_err());
    s.check(&role, NOW, Some("10.2.3.4".parse().unwrap()))
        .unwrap();
    assert!(s
        .check(&role, NOW, Some("192.168.1.1".parse().unwrap()))
        .is_err());
    assert!(s
        .check(&role, NOW + 600, Some("10.2.3.4".parse().unwrap()))
        .is_err());
    // A role ID alone is not a credential.
    let mut open = AppRole::new("x".into());
    assert!(open
        .update(json!({"bind_secret_id": false}).as_object().unwrap())
        .is_err());
    // The root policy is never granted by a login.
    let mut r = AppRole::new("y".into());
    assert!(r
        .update(json!({"token_policies": "root"}).as_object().unwrap())
        .is_err());
}
