#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use custos_nrf::jws::{generate_pkcs8, jwks, Signer};
use serde_json::{json, Value};

const NRF: &str = "11111111-1111-4111-8111-111111111111";
const AMF: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";
const NOW: u64 = 1_800_000_000;

fn nrf() -> Signer {
    Signer::from_pkcs8(&generate_pkcs8().unwrap()).unwrap()
}

fn verifier(s: &Signer) -> Verifier {
    let doc = jwks(&[s.jwk()]).to_string();
    Verifier::new(
        NrfKeys::from_jwks(doc.as_bytes()).unwrap(),
        [NRF],
        "SMF",
        SMF,
    )
}

fn claims() -> Value {
    json!({"iss": NRF, "sub": AMF, "aud": "SMF", "scope": "nsmf-pdusession", "iat": NOW, "exp": NOW + 3600})
}

fn with(k: &str, v: Value) -> Value {
    let mut c = claims();
    c[k] = v;
    c
}

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn ts33501_13_4_1_2_a_token_for_this_nf_from_the_tls_peer_is_accepted() {
    let s = nrf();
    let v = verifier(&s);
    let ok = v
        .verify(&s.sign(&claims()).unwrap(), AMF, "nsmf-pdusession", NOW)
        .unwrap();
    assert_eq!(ok.sub, AMF);
    // aud as an instance list naming this NF.
    let t = s.sign(&with("aud", json!([SMF]))).unwrap();
    assert!(v.verify(&t, AMF, "nsmf-pdusession", NOW).is_ok());
}

#[test]
fn token_replayed_from_another_certificate_fails_on_sub() {
    let s = nrf();
    let t = s.sign(&claims()).unwrap();
    assert_eq!(
        verifier(&s).verify(
            &t,
            "22222222-2222-4222-8222-222222222222",
            "nsmf-pdusession",
            NOW
        ),
        Err(SbaAuthError::Subject)
    );
}

#[test]
fn alg_none_hs256_and_foreign_kid_are_refused() {
    let s = nrf();
    let v = verifier(&s);
    let body = b64u(claims().to_string().as_bytes());
    let none = format!("{}.{body}.", b64u(br#"{"alg":"none","typ":"JWT"}"#));
    assert!(matches!(
        v.verify(&none, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::Header(_))
    ));
    // HS256 keyed with the NRF's public JWK: the classic key-confusion forgery.
    let h = b64u(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, s.kid()).as_bytes());
    let input = format!("{h}.{body}");
    let key =
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.jwk().to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let hs = format!("{input}.{}", b64u(tag.as_ref()));
    assert!(matches!(
        v.verify(&hs, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::Header(_))
    ));
    // A well-formed ES256 token from a key the NRF never published.
    let rogue = nrf().sign(&claims()).unwrap();
    assert_eq!(
        v.verify(&rogue, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::UnknownKid)
    );
    // The rogue key claiming the real kid: the signature fails.
    let forged_h = b64u(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, s.kid()).as_bytes());
    let rogue_parts: Vec<&str> = rogue.split('.').collect();
    let forged = format!("{forged_h}.{}.{}", rogue_parts[1], rogue_parts[2]);
    assert_eq!(
        v.verify(&forged, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::Signature)
    );
    // An embedded jwk is refused before any key is used.
    let jwk_h = b64u(format!(r#"{{"alg":"ES256","kid":"{}","jwk":{{}}}}"#, s.kid()).as_bytes());
    let t = format!("{jwk_h}.{body}.AAAA");
    assert!(matches!(
        v.verify(&t, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::Header(_))
    ));
}

#[test]
fn wrong_audience_issuer_scope_expiry_and_tampering_are_refused() {
    let s = nrf();
    let v = verifier(&s);
    let chk = |c: Value, service: &str, now: u64| v.verify(&s.sign(&c).unwrap(), AMF, service, now);
    assert_eq!(
        chk(with("aud", json!("UDM")), "nsmf-pdusession", NOW),
        Err(SbaAuthError::Audience)
    );
    assert_eq!(
        chk(with("aud", json!([AMF])), "nsmf-pdusession", NOW),
        Err(SbaAuthError::Audience)
    );
    assert_eq!(
        chk(
            with("iss", json!("33333333-3333-4333-8333-333333333333")),
            "nsmf-pdusession",
            NOW
        ),
        Err(SbaAuthError::Issuer)
    );
    assert_eq!(
        chk(claims(), "nsmf-event-exposure", NOW),
        Err(SbaAuthError::Scope("nsmf-event-exposure".into()))
    );
    assert_eq!(
        chk(claims(), "nsmf-pdusession", NOW + 3600 + 31),
        Err(SbaAuthError::Expired)
    );
    assert!(
        chk(claims(), "nsmf-pdusession", NOW + 3600 + 29).is_ok(),
        "within the leeway"
    );
    let t = s.sign(&claims()).unwrap();
    let p: Vec<&str> = t.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        p[0],
        b64u(
            with("scope", json!("nsmf-pdusession nudm-sdm"))
                .to_string()
                .as_bytes()
        ),
        p[2]
    );
    assert_eq!(
        v.verify(&tampered, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::Signature)
    );
    for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert_eq!(
            v.verify(junk, AMF, "nsmf-pdusession", NOW),
            Err(SbaAuthError::Malformed),
            "{junk}"
        );
    }
}

#[test]
fn jwks_keeps_only_p256_signing_keys() {
    let s = nrf();
    let doc = json!({"keys": [s.jwk(), {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"},
        {"kty": "EC", "crv": "P-384", "x": "", "y": "", "kid": "p384"}, {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]});
    assert_eq!(
        NrfKeys::from_jwks(doc.to_string().as_bytes())
            .unwrap()
            .len(),
        1
    );
    assert!(NrfKeys::from_jwks(b"not json").is_err());
}

#[tokio::test]
async fn layer_accepts_the_peer_and_answers_rfc6750_to_a_replay() {
    use tower::ServiceExt as _;
    let s = nrf();
    let app: axum::Router = axum::Router::new()
        .route(
            "/nsmf-pdusession/v1/sm-contexts",
            axum::routing::post(|req: axum::extract::Request| async move {
                req.extensions()
                    .get::<Verified>()
                    .map(|v| v.sub.clone())
                    .unwrap_or_default()
            }),
        )
        .layer(SbaAuthLayer::new(verifier(&s), "nsmf-pdusession"));
    let mut c = claims();
    c["exp"] = json!(now_unix() + 60);
    let tok = s.sign(&c).unwrap();
    let req = |peer: &str, auth: Option<&str>| {
        let mut r = http::Request::post("/nsmf-pdusession/v1/sm-contexts");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let mut r = r.body(axum::body::Body::empty()).unwrap();
        r.extensions_mut().insert(PeerNf(peer.into()));
        r
    };
    let ok = app
        .clone()
        .oneshot(req(AMF, Some(&format!("Bearer {tok}"))))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], AMF.as_bytes());
    let replay = app
        .clone()
        .oneshot(req(SMF, Some(&format!("Bearer {tok}"))))
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    let www = replay.headers()["www-authenticate"].to_str().unwrap();
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    let none = app.oneshot(req(AMF, None)).await.unwrap();
    assert_eq!(none.status(), 401);
}

#[test]
fn key_rotation_new_kid_is_unknown_until_the_nf_refreshes_the_jwks() {
    let old = nrf();
    let new = nrf();
    let v = verifier(&old);
    let t_old = old.sign(&claims()).unwrap();
    let t_new = new.sign(&claims()).unwrap();
    assert!(v.verify(&t_old, AMF, "nsmf-pdusession", NOW).is_ok());
    assert_eq!(
        v.verify(&t_new, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::UnknownKid)
    );
    // The NRF's JWKS after rotation: the new key and the retired one.
    let doc = jwks(&[new.jwk(), old.jwk()]).to_string();
    v.set_keys(NrfKeys::from_jwks(doc.as_bytes()).unwrap());
    for t in [&t_old, &t_new] {
        assert!(v.verify(t, AMF, "nsmf-pdusession", NOW).is_ok());
    }
    // Once the old key leaves the JWKS, its tokens are refused.
    let doc = jwks(&[new.jwk()]).to_string();
    v.set_keys(NrfKeys::from_jwks(doc.as_bytes()).unwrap());
    assert_eq!(
        v.verify(&t_old, AMF, "nsmf-pdusession", NOW),
        Err(SbaAuthError::UnknownKid)
    );
}
