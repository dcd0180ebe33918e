//! Producer-side verification throughput against the machine's own P-256 verify limit,
//! measured in the same run, on one core:
//!   cargo run --release -p custos-sba-auth --example verify_bench
//! Prints tokens verified per second by `Verifier::verify` (header, signature, claims,
//! sub/aud/scope/exp checks), the raw `ParsedPublicKey::verify_sig` rate on the same
//! signed bytes, and `openssl speed ecdsap256` verify/s when the CLI is present.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use custos_nrf::jws::{generate_pkcs8, jwks, Signer};
use custos_sba_auth::{NrfKeys, Verifier};
use std::time::{Duration, Instant};

fn rate(mut f: impl FnMut(), secs: f64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let nrf = "11111111-1111-4111-8111-111111111111";
    let amf = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
    let smf = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";
    let s = Signer::from_pkcs8(&generate_pkcs8().unwrap()).unwrap();
    let exp = 4_000_000_000u64;
    let tok = s
        .sign(&serde_json::json!({"iss": nrf, "sub": amf, "aud": "SMF", "scope": "nsmf-pdusession", "iat": 0, "exp": exp}))
        .unwrap();
    let v = Verifier::new(
        NrfKeys::from_jwks(jwks(&[s.jwk()]).to_string().as_bytes()).unwrap(),
        [nrf],
        "SMF",
        smf,
    );
    let now = 1_800_000_000;
    assert!(v.verify(&tok, amf, "nsmf-pdusession", now).is_ok());
    let parts: Vec<&str> = tok.split('.').collect();
    let signed = format!("{}.{}", parts[0], parts[1]);
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    let jwk = s.jwk();
    let dec = |k: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[k].as_str().unwrap())
            .unwrap()
    };
    let mut point = vec![4u8];
    point.extend(dec("x"));
    point.extend(dec("y"));
    let pk = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    )
    .unwrap();
    let raw = rate(|| pk.verify_sig(signed.as_bytes(), &sig).unwrap(), 3.0);
    let full = rate(
        || {
            v.verify(&tok, amf, "nsmf-pdusession", now).unwrap();
        },
        3.0,
    );
    println!("raw P-256 verify (aws-lc, 1 core): {raw:.0}/s");
    println!(
        "Verifier::verify (1 core):        {full:.0}/s = {:.2} of the raw verify limit",
        full / raw
    );
    if let Ok(out) = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", "ecdsap256"])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = text.lines().find(|l| l.contains("ecdsa (nistp256)")) {
            let verify: f64 = l
                .split_whitespace()
                .last()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            println!(
                "openssl speed ecdsap256 verify (1 core): {verify:.0}/s; Verifier = {:.2} of it",
                full / verify
            );
        }
    }
}
