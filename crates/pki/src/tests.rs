use crate::csr::parse_csr;
use crate::issue::*;
use crate::lint::lint_sba;
use crate::policy::{evaluate, Context, SubjectFields};
use crate::role::{KeyType, Role};
use crate::PkiError;
use serde_json::{json, Map, Value};

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

const NOW: i64 = 1_795_000_000;

fn root() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = generate_key(KeyType::Ec, 256).unwrap();
    let c = CaParams {
        common_name: "Custos Test Root".into(),
        subject: SubjectFields {
            country: vec!["DE".into()],
            organization: vec!["5gc.mnc001.mcc262.3gppnetwork.org".into()],
            ..Default::default()
        },
        alt_names: vec![],
        not_before: NOW - 60,
        not_after: NOW + 10 * 365 * 86400,
        max_path_length: -1,
    };
    let cert = self_signed_root(&c, &key, &Urls::default(), &random_serial().unwrap()).unwrap();
    (cert, key)
}

fn issuer(
    cert: &rcgen::Certificate,
    key: rcgen::KeyPair,
) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    rcgen::Issuer::from_ca_cert_der(cert.der(), key).unwrap()
}

fn sba_role() -> Role {
    Role::from_fields(
        None,
        &map(json!({
            "profile": "3gpp-sba",
            "key_type": "ec",
            "allowed_domains": "5gc.mnc001.mcc262.3gppnetwork.org",
            "allow_subdomains": true,
            "country": "DE",
            "organization": "5gc.mnc001.mcc262.3gppnetwork.org",
            "max_ttl": "720h",
            "ttl": "24h",
            "allowed_uri_sans": "",
        })),
    )
    .unwrap()
    .0
}

fn ctx() -> Context {
    Context {
        now: NOW,
        issuer_not_after: NOW + 5 * 365 * 86400,
        truncate_to_issuer: false,
        permit_beyond_issuer: false,
        default_ttl: 768 * 3600,
        max_ttl: 768 * 3600,
        crl_urls: vec!["http://pki.example/v1/pki/crl".into()],
        identity: Default::default(),
    }
}

fn urls() -> Urls {
    Urls {
        crl_distribution_points: vec!["http://pki.example/v1/pki/crl".into()],
        ocsp_servers: vec!["http://pki.example/v1/pki/ocsp".into()],
        issuing_certificates: vec![],
    }
}

fn sba_request(id: &str, types: &str) -> Map<String, Value> {
    map(
        json!({"common_name": "amf1.5gc.mnc001.mcc262.3gppnetwork.org", "nf_instance_id": id, "nf_type": types}),
    )
}

#[test]
fn sba_leaf_has_every_profile_element_and_lints_clean() {
    let (ca, ca_key) = root();
    let iss = issuer(&ca, ca_key);
    let a = evaluate(
        &sba_role(),
        &sba_request("4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "AMF"),
        None,
        &ctx(),
    )
    .unwrap();
    let key = generate_key(KeyType::Ec, 256).unwrap();
    let cert = sign_leaf(&a, &key, &iss, &urls(), &random_serial().unwrap()).unwrap();
    let v = lint_sba(cert.der()).unwrap();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn free5gc_style_certificate_is_flagged_with_clauses() {
    // 10 years, no KU/EKU, NF type as DNS SAN, no nfTypes, no URI, no CRL DP.
    let (ca, ca_key) = root();
    let iss = issuer(&ca, ca_key);
    let mut p = rcgen::CertificateParams::new(vec!["amf".to_string()]).unwrap();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 3650 * 86400).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "AMF");
    let key = generate_key(KeyType::Ec, 256).unwrap();
    let cert = p.signed_by(&key, &iss).unwrap();
    let v = lint_sba(cert.der()).unwrap();
    let text: Vec<String> = v.iter().map(|x| x.message.clone()).collect();
    for want in [
        "validity is 3650 days",
        "keyUsage extension is missing",
        "extendedKeyUsage extension is missing",
        "is an NF type name",
        "nfTypes extension",
        "urn:uuid",
        "cRLDistributionPoints is missing",
        "no C (country)",
        "no O",
    ] {
        assert!(
            text.iter().any(|t| t.contains(want)),
            "missing {want:?} in {text:#?}"
        );
    }
    assert!(v.iter().all(|x| x.clause.contains("33.310")
        || x.clause.contains("9310")
        || x.clause.contains("29.510")));
}

#[test]
fn sba_request_without_nf_instance_id_is_refused() {
    let e = evaluate(
        &sba_role(),
        &map(json!({"common_name": "amf1.5gc.mnc001.mcc262.3gppnetwork.org", "nf_type": "AMF"})),
        None,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nf_instance_id"), "{e}");
}

#[test]
fn sba_request_with_unknown_nf_type_is_refused() {
    let e = evaluate(
        &sba_role(),
        &sba_request("4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "AMF,ROUTER"),
        None,
        &ctx(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"ROUTER\" is not a TS 29.510 NFType"),
        "{e}"
    );
}

#[test]
fn sba_validity_over_three_years_is_refused_even_if_asked() {
    let mut r = sba_request("4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "AMF");
    r.insert("ttl".into(), json!("27000h"));
    let e = evaluate(&sba_role(), &r, None, &ctx()).unwrap_err();
    assert!(e.to_string().contains("at most 3 years"), "{e}");
    let e = Role::from_fields(None, &map(json!({"profile": "3gpp-sba", "country": "DE", "organization": "x", "max_ttl": "30000h"}))).unwrap_err();
    assert!(e.to_string().contains("3 years"), "{e}");
}

#[test]
fn ip_only_sba_server_certificate_is_refused() {
    let r = map(
        json!({"ip_sans": "10.0.0.1", "nf_instance_id": "4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "nf_type": "SMF"}),
    );
    let e = evaluate(&sba_role(), &r, None, &ctx()).unwrap_err();
    assert!(e.to_string().contains("IP-only SANs are refused"), "{e}");
}

#[test]
fn sba_issuance_needs_a_crl_distribution_point() {
    let mut c = ctx();
    c.crl_urls.clear();
    let e = evaluate(
        &sba_role(),
        &sba_request("4947a69a-f61b-4bc1-b9da-47c9c5d14b64", "AMF"),
        None,
        &c,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cRLDistributionPoints"), "{e}");
}

#[test]
fn sba_role_needs_country_and_organization() {
    let e = Role::from_fields(
        None,
        &map(json!({"profile": "3gpp-sba", "organization": "x"})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("country"), "{e}");
    let e =
        Role::from_fields(None, &map(json!({"profile": "3gpp-sba", "country": "DE"}))).unwrap_err();
    assert!(e.to_string().contains("organization"), "{e}");
}

#[test]
fn san_outside_the_role_and_disallowed_wildcards_are_refused() {
    let role = Role::from_fields(None, &map(json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "allow_wildcard_certificates": false, "key_type": "ec"}))).unwrap().0;
    assert!(evaluate(
        &role,
        &map(json!({"common_name": "a.example.com"})),
        None,
        &ctx()
    )
    .is_ok());
    for bad in [
        "evil.com",
        "example.com.evil.com",
        "aexample.com",
        "*.example.com",
        "a.*.example.com",
    ] {
        let e = evaluate(&role, &map(json!({"common_name": bad})), None, &ctx());
        assert!(matches!(e, Err(PkiError::NotAllowed(_))), "{bad}: {e:?}");
    }
    let e = evaluate(
        &role,
        &map(json!({"common_name": "a.example.com", "alt_names": "b.example.com,evil.org"})),
        None,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("evil.org"));
    let e = evaluate(
        &role,
        &map(json!({"common_name": "a.example.com", "uri_sans": "spiffe://x/y"})),
        None,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("URI SAN"));
}

#[test]
fn ttl_beyond_max_ttl_is_clamped_with_a_warning() {
    let role = Role::from_fields(
        None,
        &map(json!({"allow_any_name": true, "max_ttl": "1h", "key_type": "ec"})),
    )
    .unwrap()
    .0;
    let a = evaluate(
        &role,
        &map(json!({"common_name": "x.example", "ttl": "2160h"})),
        None,
        &ctx(),
    )
    .unwrap();
    assert_eq!(a.not_after, NOW + 3600);
    assert!(
        a.warnings.iter().any(|w| w.contains("capping")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn bad_role_fields_are_refused() {
    for (f, v) in [
        ("key_type", json!("dsa")),
        ("key_bits", json!(1024)),
        ("ttl", json!("forever")),
        ("key_usage", json!(["Sudo"])),
        ("profile", json!("gsma")),
    ] {
        let mut m = map(json!({"key_type": "rsa"}));
        m.insert(f.into(), v);
        assert!(Role::from_fields(None, &m).is_err(), "{f}");
    }
}

fn csr_for(names: Vec<String>, ca: bool) -> (String, rcgen::KeyPair) {
    let key = generate_key(KeyType::Ec, 256).unwrap();
    let mut p = rcgen::CertificateParams::new(names).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "a.example.com");
    if ca {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    (p.serialize_request(&key).unwrap().pem().unwrap(), key)
}

#[test]
fn csr_requesting_ca_flag_is_refused() {
    let (pem, _) = csr_for(vec!["a.example.com".into()], true);
    let e = parse_csr(&pem).unwrap_err();
    assert!(e.to_string().contains("CA:TRUE"), "{e}");
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let (pem, _) = csr_for(vec!["a.example.com".into()], false);
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x55;
    use base64::Engine as _;
    let e = parse_csr(&base64::engine::general_purpose::STANDARD.encode(&bad)).unwrap_err();
    assert!(e.to_string().contains("signature does not verify"), "{e}");
    assert!(parse_csr(&base64::engine::general_purpose::STANDARD.encode(&der)).is_ok());
}

#[test]
fn malformed_csr_input_is_refused_without_panic() {
    for bad in [
        "",
        "-----BEGIN CERTIFICATE REQUEST-----\nzz\n-----END CERTIFICATE REQUEST-----",
        "AAAA",
        "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----",
        &"A".repeat(70_000),
    ] {
        assert!(parse_csr(bad).is_err(), "{bad:.20}");
    }
}

#[test]
fn csr_extensions_beyond_names_and_key_are_never_copied() {
    let (ca, ca_key) = root();
    let iss = issuer(&ca, ca_key);
    let key = generate_key(KeyType::Ec, 256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "a.example.com");
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let info = parse_csr(&pem).unwrap();
    let role = Role::from_fields(None, &map(json!({"allowed_domains": "example.com", "allow_subdomains": true, "require_cn": false, "key_type": "ec", "client_flag": false}))).unwrap().0;
    let a = evaluate(&role, &Map::new(), Some(&info), &ctx()).unwrap();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&info.spki_der).unwrap();
    let cert = sign_leaf(&a, &spki, &iss, &urls(), &random_serial().unwrap()).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(
        !ku.key_cert_sign(),
        "keyCertSign must not be copied from the CSR"
    );
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.code_signing);
}

#[test]
fn serials_are_random_positive_and_at_least_64_bits() {
    let a = random_serial().unwrap();
    let b = random_serial().unwrap();
    assert_ne!(a, b);
    assert!(a[0] & 0x80 == 0 && a[0] != 0);
    assert_eq!(serial_hex(&[0x0a, 0xff]), "0a:ff");
}

/// Property: every certificate issued under the SBA profile from a random valid request
/// passes the linter.
#[test]
fn every_sba_certificate_custos_issues_passes_lint() {
    let (ca, ca_key) = root();
    let iss = issuer(&ca, ca_key);
    let mut seed = [0u8; 4096];
    aws_lc_rs::rand::fill(&mut seed).unwrap();
    for i in 0..64 {
        let r = &seed[i * 32..i * 32 + 32];
        let id = uuid::Builder::from_random_bytes(r[..16].try_into().unwrap())
            .into_uuid()
            .to_string();
        let n = 1 + (r[16] % 3) as usize;
        let types: Vec<&str> = (0..n)
            .map(|k| crate::sba::NF_TYPES[(r[17 + k] as usize) % crate::sba::NF_TYPES.len()])
            .collect();
        let host = format!("nf{}.5gc.mnc001.mcc262.3gppnetwork.org", r[20]);
        let mut role = sba_role();
        role.server_flag = r[21] % 3 != 0;
        role.client_flag = !role.server_flag || r[22] % 2 == 0;
        role.key_bits = if r[23] % 2 == 0 { 256 } else { 384 };
        let ttl =
            3600 + (u32::from_be_bytes([0, r[24], r[25], r[26]]) as u64 % (720 * 3600 - 3600));
        let req = map(
            json!({"common_name": host, "nf_instance_id": id, "nf_type": types.join(","), "ttl": ttl}),
        );
        let a = evaluate(&role, &req, None, &ctx()).unwrap();
        let key = generate_key(KeyType::Ec, role.key_bits).unwrap();
        let cert = sign_leaf(&a, &key, &iss, &urls(), &random_serial().unwrap()).unwrap();
        let v = lint_sba(cert.der()).unwrap();
        assert!(v.is_empty(), "request {req:?} produced {v:#?}");
    }
}

/// Fulcio-style keyless certificates: the login identity, not the request, fills the
/// extensions and the URI SAN.
#[test]
fn provenance_extensions_come_from_the_login_identity_and_bind_the_uri_san() {
    let role = Role::from_fields(
        None,
        &map(json!({
            "key_type": "ec", "allow_any_name": true, "require_cn": false,
            "server_flag": false, "client_flag": false, "code_signing_flag": true,
            "allowed_uri_sans": "https://ci.acme.example/*", "ttl": "10m",
            "provenance_extensions": true,
        })),
    )
    .unwrap()
    .0;
    let builder = "https://ci.acme.example/builders/fw@v1";
    let mut cx = ctx();
    for (k, v) in [
        ("issuer", "https://idp.acme.example"),
        ("build_signer_uri", builder),
        ("source_repository_uri", "https://git.acme.example/fw"),
        ("source_repository_digest", "7d2c9b1e"),
        ("role", "builder"),
    ] {
        cx.identity.insert(k.into(), v.into());
    }
    // No URI SAN asked: the login's builder identity is used.
    let a = evaluate(&role, &map(json!({})), None, &cx).unwrap();
    assert_eq!(a.sans, vec![crate::der::GeneralName::Uri(builder.into())]);
    assert_eq!(
        a.identity_extensions,
        vec![
            (8, "https://idp.acme.example".to_string()),
            (9, builder.to_string()),
            (12, "https://git.acme.example/fw".to_string()),
            (13, "7d2c9b1e".to_string()),
        ]
    );
    // The certificate carries them, readable by a generic X.509 parser.
    let (ca, key) = root();
    let leaf_key = generate_key(KeyType::Ec, 256).unwrap();
    let cert = sign_leaf(&a, &leaf_key, &issuer(&ca, key), &urls(), &[1, 2, 3]).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    let found: Vec<(String, String)> = x
        .extensions()
        .iter()
        .filter_map(|e| {
            let k = crate::identity::key_of(&e.oid.to_id_string())?;
            Some((k.to_string(), crate::identity::parse_value(e.value)?))
        })
        .collect();
    assert_eq!(found.len(), 4);
    assert!(x
        .extensions()
        .iter()
        .filter(|e| crate::identity::key_of(&e.oid.to_id_string()).is_some())
        .all(|e| !e.critical));
    // Asking for another builder identity than the login proved is refused.
    let e = evaluate(
        &role,
        &map(json!({"uri_sans": "https://ci.acme.example/builders/other@v1"})),
        None,
        &cx,
    )
    .unwrap_err();
    assert!(e.to_string().contains("build_signer_uri"), "{e}");
    // Without provenance_extensions nothing from the login reaches the certificate.
    let plain = Role {
        provenance_extensions: false,
        ..role
    };
    let a = evaluate(&plain, &map(json!({"uri_sans": builder})), None, &cx).unwrap();
    assert!(a.identity_extensions.is_empty());
}
