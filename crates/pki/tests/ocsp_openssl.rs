//! OCSP responses made by OpenSSL's responder (`openssl ocsp -index`), checked by
//! `custos_pki::ocsp::check_response`: the issuer signing directly, a delegated responder
//! (id-kp-OCSPSigning, RFC 6960 4.2.2.2), revoked and unknown answers, and forgeries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_pki::ocsp::{check_response, CertStatus};
use std::path::Path;
use std::process::Command;

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh and the openssl CLI are required");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn der_of_pem(dir: &Path, name: &str) -> Vec<u8> {
    let pem = std::fs::read(dir.join(name)).unwrap();
    x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
}

const SETUP: &str = r#"
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj "/CN=OCSP Test CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for n in a b c resp; do key $n; done
printf 'extendedKeyUsage=codeSigning\n' > leaf.ext
printf 'extendedKeyUsage=OCSPSigning\n' > resp.ext
openssl x509 -req -in a.csr -CA ca.pem -CAkey ca.key -set_serial 0x0a -out a.pem -days 1 -extfile leaf.ext 2>/dev/null
openssl x509 -req -in b.csr -CA ca.pem -CAkey ca.key -set_serial 0x0b -out b.pem -days 1 -extfile leaf.ext 2>/dev/null
openssl x509 -req -in c.csr -CA ca.pem -CAkey ca.key -set_serial 0x0c -out c.pem -days 1 -extfile leaf.ext 2>/dev/null
openssl x509 -req -in resp.csr -CA ca.pem -CAkey ca.key -set_serial 0x0d -out resp.pem -days 1 -extfile resp.ext 2>/dev/null
printf 'V\t301231000000Z\t\t0A\tunknown\t/CN=a\nR\t301231000000Z\t250101000000Z\t0B\tunknown\t/CN=b\n' > index.txt
for n in a b c; do
  openssl ocsp -issuer ca.pem -cert $n.pem -no_nonce -reqout $n.req
  openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin $n.req -respout $n-ca.der -ndays 1
done
openssl ocsp -sha256 -issuer ca.pem -cert a.pem -no_nonce -reqout a256.req
openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin a256.req -respout a256.der -ndays 1
openssl ocsp -index index.txt -rsigner resp.pem -rkey resp.key -CA ca.pem -reqin a.req -respout a-delegated.der -ndays 1
openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin a.req -respout a-nonext.der
# A "responder" without id-kp-OCSPSigning: the leaf c, answering that b is good.
printf 'V\t301231000000Z\t\t0B\tunknown\t/CN=b\n' > forged.txt
openssl ocsp -index forged.txt -rsigner c.pem -rkey c.key -CA ca.pem -reqin b.req -respout b-forged.der -ndays 1
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn openssl_responder_answers_are_checked_rfc6960() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(dir, SETUP);
    let ca = der_of_pem(dir, "ca.pem");
    let (a, b, c) = (
        der_of_pem(dir, "a.pem"),
        der_of_pem(dir, "b.pem"),
        der_of_pem(dir, "c.pem"),
    );
    let resp = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let t = now();

    // Signed by the issuer; SHA-1 and SHA-256 CertIDs.
    for f in ["a-ca.der", "a256.der"] {
        let r = check_response(&resp(f), &a, &ca, t).unwrap();
        assert_eq!(r.status, CertStatus::Good, "{f}");
        assert!(r.next_update.is_some_and(|n| n > t), "{f}");
    }
    // Signed by a delegated responder.
    assert_eq!(
        check_response(&resp("a-delegated.der"), &a, &ca, t)
            .unwrap()
            .status,
        CertStatus::Good
    );
    // Revoked, with its time (2025-01-01T00:00:00Z), and unknown.
    assert_eq!(
        check_response(&resp("b-ca.der"), &b, &ca, t)
            .unwrap()
            .status,
        CertStatus::Revoked(1_735_689_600)
    );
    assert_eq!(
        check_response(&resp("c-ca.der"), &c, &ca, t)
            .unwrap()
            .status,
        CertStatus::Unknown
    );
    // Without nextUpdate: fresh for an hour, then stale.
    assert!(check_response(&resp("a-nonext.der"), &a, &ca, t).is_ok());
    let e = check_response(&resp("a-nonext.der"), &a, &ca, t + 7200).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    // Replayed after nextUpdate: stale.
    let e = check_response(&resp("a-ca.der"), &a, &ca, t + 3 * 86400).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    // An answer about another certificate is no answer about this one.
    let e = check_response(&resp("a-ca.der"), &b, &ca, t).unwrap_err();
    assert!(e.to_string().contains("does not answer"), "{e}");
    // A certificate without id-kp-OCSPSigning cannot vouch for a revoked one.
    let e = check_response(&resp("b-forged.der"), &b, &ca, t).unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    // Any flipped byte: refused, never a panic, never "good" for a changed answer.
    let good = resp("b-ca.der");
    for i in 0..good.len() {
        let mut x = good.clone();
        x[i] ^= 0x01;
        if let Ok(r) = check_response(&x, &b, &ca, t) {
            assert_eq!(r.status, CertStatus::Revoked(1_735_689_600), "byte {i}");
        }
    }
    // Truncations and an oversized body.
    for cut in 0..good.len() {
        assert!(
            check_response(&good[..cut], &b, &ca, t).is_err(),
            "cut {cut}"
        );
    }
    assert!(check_response(&vec![0x30; 70_000], &b, &ca, t).is_err());
}

/// Our request, answered by OpenSSL's responder, and parsed by our own request parser.
#[test]
fn built_requests_are_answered_by_openssl_and_parse_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(dir, SETUP);
    let (ca, b) = (der_of_pem(dir, "ca.pem"), der_of_pem(dir, "b.pem"));
    let req = custos_pki::ocsp::build_request(&b, &ca).unwrap();
    let parsed = custos_pki::ocsp::parse_request(&req).unwrap();
    assert_eq!(parsed.cert_ids.len(), 1);
    assert_eq!(parsed.cert_ids[0].serial, vec![0x0b]);
    std::fs::write(dir.join("ours.req"), &req).unwrap();
    sh(
        dir,
        "openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin ours.req -respout ours.der -ndays 1",
    );
    let r = check_response(
        &std::fs::read(dir.join("ours.der")).unwrap(),
        &b,
        &ca,
        now(),
    )
    .unwrap();
    assert_eq!(r.status, CertStatus::Revoked(1_735_689_600));
}
