#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::bundle::Bundle;
use crate::dsse::{pae, Envelope};
use crate::keys::{FileSigner, KeyAlg, PublicKey};
use crate::policy::{DeviceState, Installed, Policy};
use crate::verify::{evaluate, Evidence, Verdict};
use base64::Engine as _;

/// The DSSE spec's test vector key (protocol.md "Test Vectors"), as a SubjectPublicKeyInfo.
const SPEC_KEY: &str = "3059301306072a8648ce3d020106082a8648ce3d0301070342000467cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d2380c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf74";

#[test]
fn dsse_pae_known_answer_from_the_spec() {
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
    assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
}

#[test]
fn dsse_spec_envelope_verifies_with_the_spec_key_and_fails_when_edited() {
    let key = PublicKey::from_spki_der(&hex::decode(SPEC_KEY).unwrap()).unwrap();
    let env = Envelope::parse(br#"{"payload": "aGVsbG8gd29ybGQ=",
 "payloadType": "http://example.com/HelloWorld",
 "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}"#).unwrap();
    let v = env.verify(std::slice::from_ref(&key), 1).unwrap();
    assert_eq!(v.payload, b"hello world");
    let mut e2 = env.clone();
    e2.payload_type = "http://example.com/HelloWorld2".into();
    assert!(e2.verify(std::slice::from_ref(&key), 1).is_err());
    let mut e3 = env;
    e3.payload = base64::engine::general_purpose::STANDARD.encode(b"hello world!");
    assert!(e3.verify(&[key], 1).is_err());
}

fn signer(alg: KeyAlg) -> FileSigner {
    FileSigner::from_pkcs8_der(&FileSigner::generate(alg).unwrap()).unwrap()
}

#[test]
fn dsse_round_trip_both_algorithms_and_both_base64_alphabets() {
    for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
        let s = signer(alg);
        let env = Envelope::sign("application/vnd.in-toto+json", b"{\"a\":1}", &[&s]).unwrap();
        let keys = [s.public_key().clone()];
        assert!(env.verify(&keys, 1).is_ok(), "{alg}");
        // URL-safe, unpadded encodings are accepted too.
        let mut url = env.clone();
        let raw = dsse::decode_b64(&url.signatures[0].sig).unwrap();
        url.signatures[0].sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        url.payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{\"a\":1}");
        assert!(url.verify(&keys, 1).is_ok(), "{alg} url-safe");
        // Another key does not verify it.
        assert!(env.verify(&[signer(alg).public_key().clone()], 1).is_err());
    }
}

#[test]
fn dsse_threshold_counts_distinct_keys_not_signatures() {
    let (a, b) = (signer(KeyAlg::Ed25519), signer(KeyAlg::EcdsaP256));
    let keys = [a.public_key().clone(), b.public_key().clone()];
    // The same key signing twice (and a copied signature) is one key.
    let mut env = Envelope::sign("t", b"x", &[&a, &a]).unwrap();
    env.signatures.push(env.signatures[0].clone());
    assert_eq!(
        env.verify(&keys, 2).unwrap_err(),
        dsse::DsseError::Threshold {
            valid: 1,
            threshold: 2
        }
    );
    let env = Envelope::sign("t", b"x", &[&a, &b]).unwrap();
    assert_eq!(env.verify(&keys, 2).unwrap().key_ids.len(), 2);
}

#[test]
fn envelope_parser_refuses_hostile_input() {
    assert!(matches!(
        Envelope::parse(&vec![b' '; dsse::MAX_ENVELOPE_BYTES + 1]),
        Err(dsse::DsseError::TooLarge)
    ));
    for bad in [
        &b"{"[..],
        br#"{"payload":"aGk=","payloadType":"t","signatures":[]}"#,
        br#"{"payload":"***","payloadType":"t","signatures":[{"sig":"AA"}]}"#,
        br#"{"payload":"aGk=","payloadType":"","signatures":[{"sig":"AA"}]}"#,
    ] {
        assert!(
            Envelope::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

const NOW: i64 = 1_800_000_000;
const CLASS: &str = "gnb-du-x1";
const BUILDER: &str = "https://ci.acme.example/builders/firmware@v1";

fn digests(image: &[u8]) -> BTreeMap<String, String> {
    use aws_lc_rs::digest::{digest, SHA256, SHA512};
    BTreeMap::from([
        ("sha256".to_string(), hex::encode(digest(&SHA256, image))),
        ("sha512".to_string(), hex::encode(digest(&SHA512, image))),
    ])
}

fn request(image: &[u8], security_version: u64) -> SignRequest {
    SignRequest {
        image_name: "du-fw.img".into(),
        digests: digests(image),
        slsa: statement::SlsaInputs {
            builder_id: BUILDER.into(),
            build_type: "https://acme.example/firmware-build/v1".into(),
            source_repo: "git+https://git.acme.example/ran/du-firmware".into(),
            commit: "7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c".into(),
            dependencies: vec![statement::ResourceDescriptor {
                uri: "oci://registry.acme.example/du-base".into(),
                name: "base".into(),
                digest: BTreeMap::from([("sha256".into(), "ab".repeat(32))]),
            }],
            invocation_id: "build-4711".into(),
            started_on: statement::to_rfc3339(NOW - 3600),
            finished_on: statement::to_rfc3339(NOW - 600),
            internal: serde_json::json!({"buildHost": "b7.build.acme.internal"}),
        },
        firmware: statement::Firmware {
            vendor: "acme".into(),
            device_class: CLASS.into(),
            hardware_ids: vec!["rev-b".into()],
            version: "5.2.0".into(),
            security_version,
            channel: "stable".into(),
            not_after: statement::to_rfc3339(NOW + 86_400 * 180),
        },
        signed_at: NOW - 300,
    }
}

fn policy(keys: &[&str], extra: &str) -> Policy {
    let keys = keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Policy::parse(&format!(
        r#"
[[suppliers]]
name = "acme"
keys = [{keys}]
[[suppliers]]
name = "globex"
keys = ["{}"]
[[device_classes]]
name = "{CLASS}"
suppliers = ["acme"]
builders = ["{BUILDER}"]
min_security_version = 3
emergency_floor = 4
[[device_classes]]
name = "upf-edge"
suppliers = ["acme", "globex"]
builders = ["{BUILDER}"]
{extra}
"#,
        "cd".repeat(32)
    ))
    .unwrap()
}

fn state(sv: u64) -> DeviceState {
    DeviceState {
        device_class: CLASS.into(),
        hardware_id: Some("rev-b".into()),
        installed: Some(Installed {
            digest: BTreeMap::new(),
            version: "5.1.0".into(),
            security_version: sv,
            installed_at: statement::to_rfc3339(NOW - 86_400),
        }),
        known_good: None,
        max_security_version: sv,
    }
}

fn judge(image: &[u8], b: &Bundle, p: &Policy, st: Option<&DeviceState>) -> Verdict {
    evaluate(&Evidence {
        image: &digests(image),
        bundle: b,
        policy: p,
        state: st,
        crls: &[],
        ocsp: &[],
        now: NOW,
        emergency: false,
    })
}

fn rules(v: &Verdict) -> Vec<&'static str> {
    v.failures.iter().map(|f| f.rule).collect()
}

const IMAGE: &[u8] = b"\x7fELF firmware image for the DU, version 5.2.0";

#[test]
fn a_good_image_is_accepted_with_its_facts() {
    for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
        let s = signer(alg);
        let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![]).unwrap();
        // Round trip through the file format.
        let b = Bundle::parse(b.to_json().as_bytes()).unwrap();
        let p = policy(&[&s.key_id()], "");
        let v = judge(IMAGE, &b, &p, Some(&state(4)));
        assert!(v.accept, "{alg}: {:?}", v.failures);
        assert_eq!(v.facts.supplier.as_deref(), Some("acme"));
        assert_eq!(v.facts.builder_id.as_deref(), Some(BUILDER));
        assert_eq!(v.facts.security_version, Some(5));
        assert_eq!(v.facts.signer_keys, vec![s.key_id()]);
    }
}

#[test]
fn attacks_are_denied_by_the_named_rule() {
    let s = signer(KeyAlg::EcdsaP256);
    let p = policy(&[&s.key_id()], "");
    let st = state(4);
    let good = sign_bundle(&request(IMAGE, 5), &[&s], vec![]).unwrap();

    // A flipped byte in the image.
    let mut flipped = IMAGE.to_vec();
    flipped[3] ^= 1;
    assert_eq!(
        rules(&judge(&flipped, &good, &p, Some(&st))),
        [
            "subject.digest",
            "subject.digest",
            "predicate.required",
            "predicate.required"
        ]
    );

    // An edited payload.
    let mut edited = good.clone();
    let mut stmt: serde_json::Value =
        serde_json::from_slice(&dsse::decode_b64(&edited.dsse_envelopes[1].payload).unwrap())
            .unwrap();
    stmt["predicate"]["securityVersion"] = serde_json::json!(99);
    edited.dsse_envelopes[1].payload =
        base64::engine::general_purpose::STANDARD.encode(stmt.to_string());
    assert_eq!(
        rules(&judge(IMAGE, &edited, &p, Some(&st))),
        ["signature.valid"]
    );

    // A wrong payloadType: changed after signing, or signed that way.
    let mut retyped = good.clone();
    retyped.dsse_envelopes[0].payload_type = "application/json".into();
    assert_eq!(
        rules(&judge(IMAGE, &retyped, &p, Some(&st))),
        ["signature.valid"]
    );
    let mut signed_wrong = good.clone();
    let payload = dsse::decode_b64(&good.dsse_envelopes[0].payload).unwrap();
    signed_wrong.dsse_envelopes[0] = Envelope::sign("application/json", &payload, &[&s]).unwrap();
    assert_eq!(
        rules(&judge(IMAGE, &signed_wrong, &p, Some(&st))),
        ["payload.type", "predicate.required"]
    );

    // A signature by an unpinned supplier key.
    let rogue = signer(KeyAlg::EcdsaP256);
    let b = sign_bundle(&request(IMAGE, 5), &[&rogue], vec![]).unwrap();
    assert_eq!(
        rules(&judge(IMAGE, &b, &p, Some(&st))),
        ["signer.pinned", "signer.pinned"]
    );

    // A builder not allowed for the device class.
    let mut r = request(IMAGE, 5);
    r.slsa.builder_id = "https://laptop.dev.acme.example/alice".into();
    let b = sign_bundle(&r, &[&s], vec![]).unwrap();
    assert_eq!(rules(&judge(IMAGE, &b, &p, Some(&st))), ["builder.allowed"]);

    // An image for another device class.
    let mut r = request(IMAGE, 5);
    r.firmware.device_class = "upf-edge".into();
    let b = sign_bundle(&r, &[&s], vec![]).unwrap();
    assert_eq!(
        rules(&judge(IMAGE, &b, &p, Some(&st))),
        ["device_class.match"]
    );

    // A lower security version (rollback), with and without the emergency floor.
    let b = sign_bundle(&request(IMAGE, 3), &[&s], vec![]).unwrap();
    assert_eq!(
        rules(&judge(IMAGE, &b, &p, Some(&state(5)))),
        ["anti_rollback"]
    );
    let b4 = sign_bundle(&request(IMAGE, 4), &[&s], vec![]).unwrap();
    let emergency = |b: &Bundle| {
        evaluate(&Evidence {
            image: &digests(IMAGE),
            bundle: b,
            policy: &p,
            state: Some(&state(5)),
            crls: &[],
            ocsp: &[],
            now: NOW,
            emergency: true,
        })
    };
    assert!(
        emergency(&b4).accept,
        "the floor (4) allows 4 in an emergency"
    );
    assert_eq!(
        rules(&emergency(&b)),
        ["anti_rollback"],
        "never below the floor"
    );

    // Below the policy minimum.
    let b = sign_bundle(&request(IMAGE, 2), &[&s], vec![]).unwrap();
    assert_eq!(
        rules(&judge(IMAGE, &b, &p, None)),
        ["security_version.minimum"]
    );

    // An expired image.
    let mut r = request(IMAGE, 5);
    r.firmware.not_after = statement::to_rfc3339(NOW - 1);
    let b = sign_bundle(&r, &[&s], vec![]).unwrap();
    assert_eq!(rules(&judge(IMAGE, &b, &p, Some(&st))), ["image.expired"]);

    // A revoked key.
    let mut revoked = p.clone();
    revoked.revocation.revoked_keys = vec![s.key_id()];
    assert_eq!(
        rules(&judge(IMAGE, &good, &revoked, Some(&st))),
        ["signer.revoked", "signer.revoked"]
    );

    // Duplicate signatures counted twice toward a threshold of two.
    let mut two = p.clone();
    two.verify.threshold = 2;
    let mut dup = sign_bundle(&request(IMAGE, 5), &[&s, &s], vec![]).unwrap();
    for e in &mut dup.dsse_envelopes {
        let copy = e.signatures[0].clone();
        e.signatures.push(copy);
    }
    assert_eq!(
        rules(&judge(IMAGE, &dup, &two, Some(&st))),
        ["signature.threshold", "signature.threshold"]
    );
    let other = signer(KeyAlg::Ed25519);
    let mut two_keys = policy(&[&s.key_id(), &other.key_id()], "");
    two_keys.verify.threshold = 2;
    let b = sign_bundle(&request(IMAGE, 5), &[&s, &other], vec![]).unwrap();
    assert!(
        judge(IMAGE, &b, &two_keys, Some(&st)).accept,
        "two distinct pinned keys meet 2"
    );

    // A supplier signing an image that claims another vendor.
    let mut r = request(IMAGE, 5);
    r.firmware.vendor = "globex".into();
    let b = sign_bundle(&r, &[&s], vec![]).unwrap();
    assert_eq!(rules(&judge(IMAGE, &b, &p, Some(&st))), ["supplier.vendor"]);
}

#[test]
fn truncated_or_oversized_bundles_are_refused() {
    let s = signer(KeyAlg::Ed25519);
    let json = sign_bundle(&request(IMAGE, 5), &[&s], vec![])
        .unwrap()
        .to_json();
    for cut in [1, json.len() / 2, json.len() - 2] {
        assert!(
            Bundle::parse(&json.as_bytes()[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let big = format!("{}{}", json, " ".repeat(bundle::MAX_BUNDLE_BYTES));
    assert_eq!(
        Bundle::parse(big.as_bytes()).unwrap_err(),
        bundle::BundleError::TooLarge
    );
    let other = json.replace(bundle::BUNDLE_MEDIA_TYPE, "application/json");
    assert!(Bundle::parse(other.as_bytes()).is_err());
    let extra = json.replacen('{', "{\"sneaky\": 1,", 1);
    assert!(
        Bundle::parse(extra.as_bytes()).is_err(),
        "unknown fields are refused"
    );
}

#[test]
fn policy_errors_name_the_setting() {
    let e = Policy::parse("[[suppliers]]\nname = \"a\"\nkeys = [\"XYZ\"]\n").unwrap_err();
    assert_eq!(e.what, "suppliers[0]");
    let e = Policy::parse(&format!("[[suppliers]]\nname = \"a\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"c\"\nsuppliers = [\"b\"]\nbuilders = [\"x\"]\n", "ab".repeat(32))).unwrap_err();
    assert_eq!(e.what, "device_classes[0].suppliers");
    let e = Policy::parse(&format!("[[suppliers]]\nname = \"a\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"c\"\nsuppliers = [\"a\"]\nbuilders = [\"x\"]\n[verify]\nmax_signature_age = \"soon\"\n", "ab".repeat(32))).unwrap_err();
    assert_eq!(e.what, "verify.max_signature_age");
}

/// Keyless: a 10-minute code-signing certificate from a pinned CA.
mod keyless {
    use super::*;
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, ExtendedKeyUsagePurpose, IsCa,
        KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SanType, SerialNumber,
    };

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Custos code signing CA");
        let cert = p.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        Ca { cert, key, der }
    }

    /// A leaf valid from `nb` for 10 minutes; returns (signer, leaf PEM, serial).
    fn leaf(ca: &Ca, nb: i64, code_signing: bool) -> (FileSigner, String, Vec<u8>) {
        leaf_with(ca, nb, code_signing, &[])
    }

    /// A leaf that also carries Fulcio-format identity extensions (last arc, value), encoded by
    /// the PKI's own writer.
    fn leaf_with(
        ca: &Ca,
        nb: i64,
        code_signing: bool,
        ext: &[(u64, &str)],
    ) -> (FileSigner, String, Vec<u8>) {
        let der = FileSigner::generate(KeyAlg::EcdsaP256).unwrap();
        let s = FileSigner::from_pkcs8_der(&der).unwrap();
        let kp = KeyPair::try_from(der.as_slice()).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(BUILDER.try_into().unwrap())];
        if code_signing {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        }
        p.not_before = time::OffsetDateTime::from_unix_timestamp(nb).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(nb + 600).unwrap();
        for (n, v) in ext {
            p.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &custos_pki::identity::oid(*n),
                    custos_pki::identity::value_der(v),
                ));
        }
        let serial = vec![0x42, (nb % 251) as u8, 7];
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert.der(), &ca.key).unwrap();
        let cert = p.signed_by(&kp, &issuer).unwrap();
        (s, cert.pem(), serial)
    }

    fn pem(der: &[u8]) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n")
    }

    fn keyless_policy(ca: &Ca, require_crl: bool) -> Policy {
        Policy::parse(&format!(
            "[[suppliers]]\nname = \"acme\"\nca_certificates = [\"{}\"]\nidentities = [\"{BUILDER}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\n[revocation]\nrequire_crl = {require_crl}\n",
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &ca.der))
        ))
        .unwrap()
    }

    fn crl(ca: &Ca, revoked: &[Vec<u8>]) -> Vec<u8> {
        let p = CertificateRevocationListParams {
            this_update: time::OffsetDateTime::from_unix_timestamp(NOW - 60).unwrap(),
            next_update: time::OffsetDateTime::from_unix_timestamp(NOW + 3600).unwrap(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: time::OffsetDateTime::from_unix_timestamp(NOW - 30).unwrap(),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert.der(), &ca.key).unwrap();
        p.signed_by(&issuer).unwrap().der().to_vec()
    }

    fn run(b: &Bundle, p: &Policy, crls: &[Vec<u8>]) -> Verdict {
        run_ocsp(b, p, crls, &[])
    }

    fn run_ocsp(b: &Bundle, p: &Policy, crls: &[Vec<u8>], ocsp: &[Vec<u8>]) -> Verdict {
        evaluate(&Evidence {
            image: &digests(IMAGE),
            bundle: b,
            policy: p,
            state: None,
            crls,
            ocsp,
            now: NOW,
            emergency: false,
        })
    }

    #[test]
    fn a_signature_made_while_the_ten_minute_certificate_was_valid_verifies_later() {
        let ca = ca();
        // Issued an hour ago, expired 50 minutes ago; signed 2 minutes after issuance.
        let (s, leaf_pem, _) = leaf(&ca, NOW - 3600, true);
        let mut r = request(IMAGE, 5);
        r.signed_at = NOW - 3600 + 120;
        let b = sign_bundle(&r, &[&s], vec![leaf_pem.clone(), pem(&ca.der)]).unwrap();
        let p = keyless_policy(&ca, true);
        let v = run(&b, &p, &[crl(&ca, &[])]);
        assert!(v.accept, "{:?}", v.failures);
        assert_eq!(v.facts.signer_identity.as_deref(), Some(BUILDER));

        // Claimed outside the certificate's life: denied.
        let mut r = request(IMAGE, 5);
        r.signed_at = NOW - 60;
        let late = sign_bundle(&r, &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        assert_eq!(
            rules(&run(&late, &p, &[crl(&ca, &[])])),
            ["certificate.validity"]
        );
        // Without a CRL when one is required: denied.
        assert_eq!(rules(&run(&b, &p, &[])), ["revocation.unavailable"]);
    }

    #[test]
    fn a_signature_from_a_revoked_signing_certificate_is_denied() {
        let ca = ca();
        let (s, leaf_pem, serial) = leaf(&ca, NOW - 400, true);
        let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        let p = keyless_policy(&ca, true);
        assert_eq!(
            rules(&run(&b, &p, &[crl(&ca, &[serial])])),
            ["signer.revoked"]
        );
        // A CRL from another CA neither revokes nor counts as available.
        let other = ca_other();
        assert_eq!(
            rules(&run(&b, &p, &[crl(&other, &[])])),
            ["revocation.unavailable"]
        );
    }

    fn ca_other() -> Ca {
        ca()
    }

    #[test]
    fn keyless_chain_rules() {
        let (ca, rogue) = (ca(), ca());
        let p = keyless_policy(&ca, false);
        // A certificate from an unpinned CA.
        let (s, leaf_pem, _) = leaf(&rogue, NOW - 400, true);
        let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![leaf_pem, pem(&rogue.der)]).unwrap();
        assert_eq!(rules(&run(&b, &p, &[])), ["signer.pinned"]);
        // A rogue leaf presented with the pinned CA.
        let (s, leaf_pem, _) = leaf(&rogue, NOW - 400, true);
        let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        assert_eq!(rules(&run(&b, &p, &[])), ["certificate.chain"]);
        // No codeSigning EKU.
        let (s, leaf_pem, _) = leaf(&ca, NOW - 400, false);
        let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        assert_eq!(rules(&run(&b, &p, &[])), ["certificate.chain"]);
        // A provenance that names another builder than the certificate.
        let (s, leaf_pem, _) = leaf(&ca, NOW - 400, true);
        let mut r = request(IMAGE, 5);
        r.slsa.builder_id = "https://ci.acme.example/builders/other@v1".into();
        let b = sign_bundle(&r, &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        let v = run(&b, &p, &[]);
        assert!(rules(&v).contains(&"builder.identity"), "{:?}", v.failures);
    }

    /// An OCSP response about `leaf_pem` signed by `ca` with the PKI's own responder code.
    fn ocsp(ca: &Ca, leaf_pem: &str, status: custos_pki::ocsp::CertStatus, at: i64) -> Vec<u8> {
        use custos_pki::ocsp as o;
        let leaf = x509_parser::pem::parse_x509_pem(leaf_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let req = o::parse_request(&o::build_request(&leaf, &ca.der).unwrap()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&ca.der).unwrap();
        let r = o::Responder {
            issuer_der: &ca.der,
            key_hash_sha1: o::HashAlg::Sha1.digest(&x.public_key().subject_public_key.data),
            key: &ca.key,
            sig_alg: o::signature_algorithm(custos_pki::csr::KeyInfo::Ec(256)).unwrap(),
        };
        o::build_response(&[(&req.cert_ids[0], status)], at, at + 3600, None, &r).unwrap()
    }

    /// RFC 6960 evidence for a keyless certificate: good accepts, revoked denies, and a stale
    /// or foreign answer is no answer when the policy requires one.
    #[test]
    fn ocsp_answers_about_the_signing_certificate_decide_revocation() {
        use custos_pki::ocsp::CertStatus;
        let ca = ca();
        let (s, leaf_pem, _) = leaf(&ca, NOW - 400, true);
        let b = sign_bundle(
            &request(IMAGE, 5),
            &[&s],
            vec![leaf_pem.clone(), pem(&ca.der)],
        )
        .unwrap();
        let mut p = keyless_policy(&ca, false);
        p.revocation.require_ocsp = true;
        let good = ocsp(&ca, &leaf_pem, CertStatus::Good, NOW - 60);
        let v = run_ocsp(&b, &p, &[], std::slice::from_ref(&good));
        assert!(v.accept, "{:?}", v.failures);
        let revoked = ocsp(&ca, &leaf_pem, CertStatus::Revoked(NOW - 100), NOW - 60);
        assert_eq!(
            rules(&run_ocsp(&b, &p, &[], &[revoked])),
            ["signer.revoked"]
        );
        let stale = ocsp(&ca, &leaf_pem, CertStatus::Good, NOW - 7200);
        let v = run_ocsp(&b, &p, &[], &[stale]);
        assert_eq!(rules(&v), ["revocation.unavailable"]);
        assert!(v.failures[0].detail.contains("stale"), "{:?}", v.failures);
        let other = ca_other();
        let foreign = ocsp(&other, &leaf_pem, CertStatus::Good, NOW - 60);
        assert_eq!(
            rules(&run_ocsp(&b, &p, &[], &[foreign])),
            ["revocation.unavailable"]
        );
        assert_eq!(
            rules(&run_ocsp(&b, &p, &[], &[])),
            ["revocation.unavailable"]
        );
        // Not required: no answer is fine, but a revoked answer still denies.
        p.revocation.require_ocsp = false;
        assert!(run_ocsp(&b, &p, &[], &[]).accept);
    }

    const SOURCE: &str = "git+https://git.acme.example/ran/du-firmware";
    const COMMIT: &str = "7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c";
    const IDP: &str = "https://idp.acme.example";

    fn pinned_policy(ca: &Ca, extensions: &str) -> Policy {
        Policy::parse(&format!(
            "[[suppliers]]\nname = \"acme\"\nca_certificates = [\"{}\"]\nidentities = [{{ uri = \"{BUILDER}\", extensions = {{ {extensions} }} }}]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"{BUILDER}\"]\n",
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &ca.der))
        ))
        .unwrap()
    }

    /// Fulcio-style: the CA records the login identity (OIDC issuer, source repository and
    /// commit) in the certificate; a policy can pin it, and the builder's own provenance must
    /// agree with it.
    #[test]
    fn login_identity_extensions_are_pinned_and_outrank_the_builders_provenance() {
        let ca = ca();
        let ext = [
            (8, IDP),
            (12, SOURCE),
            (13, COMMIT),
            (14, "refs/heads/main"),
        ];
        let (s, leaf_pem, _) = leaf_with(&ca, NOW - 400, true, &ext);
        let b = sign_bundle(
            &request(IMAGE, 5),
            &[&s],
            vec![leaf_pem.clone(), pem(&ca.der)],
        )
        .unwrap();
        let p = pinned_policy(
            &ca,
            &format!("issuer = \"{IDP}\", source_repository_ref = \"refs/heads/main\""),
        );
        let v = run(&b, &p, &[]);
        assert!(v.accept, "{:?}", v.failures);
        assert_eq!(v.facts.signer_extensions["issuer"], IDP);
        assert_eq!(
            v.facts.signer_extensions["source_repository_digest"],
            COMMIT
        );
        // Another ref (or another identity provider) than the policy pins.
        let p = pinned_policy(&ca, "source_repository_ref = \"refs/heads/dev\"");
        assert_eq!(rules(&run(&b, &p, &[])), ["certificate.identity"]);
        let p = pinned_policy(&ca, "issuer = \"https://evil.example\"");
        assert_eq!(rules(&run(&b, &p, &[])), ["certificate.identity"]);
        // A certificate without the extensions does not satisfy a pinned identity.
        let (s2, bare, _) = leaf(&ca, NOW - 400, true);
        let b2 = sign_bundle(&request(IMAGE, 5), &[&s2], vec![bare, pem(&ca.der)]).unwrap();
        let p = pinned_policy(&ca, &format!("issuer = \"{IDP}\""));
        assert_eq!(rules(&run(&b2, &p, &[])), ["certificate.identity"]);
        // The builder claims another commit than the one the login proved: denied.
        let mut r = request(IMAGE, 5);
        r.slsa.commit = "0".repeat(40);
        let forged = sign_bundle(&r, &[&s], vec![leaf_pem, pem(&ca.der)]).unwrap();
        let p = pinned_policy(&ca, "");
        assert_eq!(rules(&run(&forged, &p, &[])), ["source.identity"]);
        // An unknown extension name in the policy is refused, naming the setting.
        let e = Policy::parse(&format!(
            "[[suppliers]]\nname = \"a\"\nca_certificates = [\"{}\"]\nidentities = [{{ uri = \"x\", extensions = {{ hostname = \"h\" }} }}]\n",
            "ab".repeat(32)
        ))
        .unwrap_err();
        assert_eq!(e.what, "suppliers[0].identities");
    }
}

#[test]
fn record_splits_operational_facts_from_supplier_details_and_refuses_inconsistent_bundles() {
    let s = signer(KeyAlg::EcdsaP256);
    let b = sign_bundle(&request(IMAGE, 5), &[&s], vec![]).unwrap();
    let r = record::Record::from_bundle(&b).unwrap();
    assert_eq!(r.summary.device_class, CLASS);
    assert_eq!(r.summary.security_version, 5);
    assert_eq!(r.summary.parents, vec!["ab".repeat(32)]);
    assert_eq!(r.details.vendor, "acme");
    assert_eq!(r.details.builder_id, BUILDER);
    assert_eq!(
        r.details.internal_parameters["buildHost"],
        "b7.build.acme.internal"
    );
    assert_eq!(r.signer_ids(), vec![s.key_id()]);
    let summary = serde_json::to_string(&r.summary).unwrap();
    for private in ["acme", "b7.build", BUILDER, "git.acme.example"] {
        assert!(
            !summary.contains(private),
            "{private} leaked into the summary"
        );
    }
    // An edited envelope, and statements about two images, are refused.
    let mut edited = b.clone();
    edited.dsse_envelopes[1].payload = base64::engine::general_purpose::STANDARD.encode(b"{}");
    assert!(record::Record::from_bundle(&edited).is_err());
    let other = sign_bundle(&request(b"another image", 5), &[&s], vec![]).unwrap();
    let mut mixed = b.clone();
    mixed.dsse_envelopes[1] = other.dsse_envelopes[1].clone();
    let e = record::Record::from_bundle(&mixed).unwrap_err();
    assert!(e.0.contains("different images"), "{e}");
}

/// New Ed25519 keys are RFC 8410 PKCS#8 v1 (OpenSSL 3.0 and python `cryptography` refuse
/// v2 with the public key embedded); keys written before, in v2, still load, and both give
/// the same key as aws-lc's own parser.
#[test]
fn ed25519_keys_are_written_as_pkcs8_v1_and_v2_keys_still_load() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    let v1 = FileSigner::generate(KeyAlg::Ed25519).unwrap();
    // OneAsymmetricKey ::= SEQUENCE { version INTEGER (0 = v1), … }: 30 2e 02 01 00.
    assert_eq!(
        &v1[..5],
        &[0x30, 0x2e, 0x02, 0x01, 0x00],
        "{}",
        hex::encode(&v1[..])
    );
    FileSigner::from_pkcs8_der(&v1).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    assert_eq!(
        &v2.as_ref()[2..5],
        &[0x02, 0x01, 0x01],
        "aws-lc writes v2 by default"
    );
    let s = FileSigner::from_pkcs8_der(v2.as_ref()).unwrap();
    let k = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
    assert!(s.public_key().spki_der().ends_with(k.public_key().as_ref()));
}
