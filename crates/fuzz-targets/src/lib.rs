//! # custos-fuzz-targets
//!
//! One function per fuzz target: each feeds arbitrary bytes to the parsers of one kind of
//! outside input and must never panic. `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, nightly)
//! calls [`run`] with the same name, and `tests/corpus_replay.rs` replays every committed
//! corpus file (`fuzz/corpus/<name>/`) through it on stable, in CI.
#![forbid(unsafe_code)]

use base64::Engine as _;

/// Every target's name.
pub const TARGETS: [&str; 16] = [
    "acl_policy",
    "audit_verify",
    "barrier_open",
    "pki_csr",
    "pki_lint",
    "pki_ocsp_request",
    "pki_ocsp_response",
    "tlog_parsers",
    "tlog_witness_request",
    "tlog_entry_receipt",
    "monitor_rules",
    "provenance_inputs",
    "nrf_requests",
    "jwt_header",
    "attest_quote",
    "attest_eventlog",
];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "acl_policy" => acl_policy(data),
        "audit_verify" => audit_verify(data),
        "barrier_open" => barrier_open(data),
        "pki_csr" => pki_csr(data),
        "pki_lint" => pki_lint(data),
        "pki_ocsp_request" => pki_ocsp_request(data),
        "pki_ocsp_response" => pki_ocsp_response(data),
        "tlog_parsers" => tlog_parsers(data),
        "tlog_witness_request" => tlog_witness_request(data),
        "tlog_entry_receipt" => tlog_entry_receipt(data),
        "monitor_rules" => monitor_rules(data),
        "provenance_inputs" => provenance_inputs(data),
        "nrf_requests" => nrf_requests(data),
        "jwt_header" => jwt_header(data),
        "attest_quote" => attest_quote(data),
        "attest_eventlog" => attest_eventlog(data),
        _ => return false,
    }
    true
}

/// Policy documents come from API clients: parsing and evaluating must never panic.
pub fn acl_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = custos_acl::parse_policy("fuzz", text) {
        let acl = custos_acl::Acl::new([&p]);
        for path in ["secret/a", "sys/seal", "a/b/c", "", "x/+/y"] {
            let _ = acl.check(path, custos_acl::Operation::Update, true, None);
            let _ = acl.capabilities(path);
        }
    }
}

/// `custos audit verify` reads files an attacker may have edited.
pub fn audit_verify(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_audit::verify(text);
        if let Some(last) = text.lines().last() {
            let _ = custos_audit::Chain::from_last_line(last);
        }
    }
}

/// Stored ciphertexts and unseal shares are outside bytes too (a tampered database, a typo'd
/// share): opening and combining must fail cleanly.
pub fn barrier_open(data: &[u8]) {
    let key = [7u8; 32];
    let _ = custos_barrier::open_with_key(&key, "core/keyring", data);
    let n = data.len() / 3;
    if n > 1 {
        let shares: Vec<&[u8]> = data.chunks(n).collect();
        let _ = custos_barrier::shamir::combine(&shares);
    }
}

/// CSRs arrive from any client of sign/:role (PEM or base64 DER).
pub fn pki_csr(data: &[u8]) {
    let as_b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = custos_pki::csr::parse_csr(&as_b64);
    let _ = custos_pki::csr::parse_ca_csr(&as_b64);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_pki::csr::parse_csr(text);
    }
}

/// `custos pki lint` reads certificates from anyone (another CA's included).
pub fn pki_lint(data: &[u8]) {
    let _ = custos_pki::lint::lint_sba(data);
    if let Ok(ders) = custos_pki::lint::cert_ders(data) {
        for d in ders {
            let _ = custos_pki::lint::lint_sba(&d);
        }
    }
}

/// OCSP requests are unauthenticated DER from the network (and nfTypes DER).
pub fn pki_ocsp_request(data: &[u8]) {
    let _ = custos_pki::ocsp::parse_request(data);
    let _ = custos_pki::der::parse_nf_types(data);
}

const OCSP_CA: &[u8] = include_bytes!("ocsp-ca.der");
const OCSP_LEAF: &[u8] = include_bytes!("ocsp-leaf.der");

/// OCSP responses come from a responder or a stapled file: `fw verify` checks them against a
/// fixed CA and leaf (made with the OpenSSL CLI).
pub fn pki_ocsp_response(data: &[u8]) {
    let _ = custos_pki::ocsp::check_response(data, OCSP_LEAF, OCSP_CA, 1_800_000_000);
}

/// Transparency-log inputs from the network: tile paths, signed notes, checkpoint bodies,
/// entry bundles and tiles (a monitor or `log verify` reads them from an untrusted mirror).
pub fn tlog_parsers(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = custos_tlog::tile::TileId::parse(s) {
            assert_eq!(
                id.path(),
                s,
                "a tile path parses only in its canonical form"
            );
        }
        let _ = custos_tlog::note::parse(s);
        let _ = custos_tlog::checkpoint::Checkpoint::parse(s);
        let _ = custos_tlog::note::Verifier::parse(s);
    }
    let _ = custos_tlog::tile::parse_bundle(data);
    let _ = custos_tlog::tile::tile_hashes(data);
}

/// A witness reads `add-checkpoint` bodies from any log client, and decides on them.
pub fn tlog_witness_request(data: &[u8]) {
    use custos_tlog::note::{Signer, TYPE_ED25519};
    if let Ok(req) = custos_tlog::witness::AddCheckpoint::parse(data) {
        assert_eq!(
            custos_tlog::witness::AddCheckpoint::parse(req.encode().as_bytes()).ok(),
            Some(req.clone()),
            "an accepted request round-trips"
        );
        if let Ok(log) = Signer::from_seed("fuzz.example/log", TYPE_ED25519, &[9u8; 32]) {
            let _ = custos_tlog::witness::answer(&[(log.verifier().clone(), None)], &req);
        }
    }
}

/// Log entries and receipts come from a server or a mirror a verifier does not trust.
pub fn tlog_entry_receipt(data: &[u8]) {
    if let Ok(e) = custos_tlog::entry::Entry::parse(data) {
        let _ = e.encode();
        let _ = e.event.kind();
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = custos_tlog::receipt::Receipt::parse(&v);
    }
}

/// The monitor's rules file is operator input, but checked strictly.
pub fn monitor_rules(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_tlog::monitor::Rules::parse(text);
    }
}

/// `fw verify` and `fw install` read bundles, envelopes, statements, policies and device
/// state files that arrive with an image.
pub fn provenance_inputs(data: &[u8]) {
    let _ = custos_provenance::bundle::Bundle::parse(data);
    let _ = custos_provenance::dsse::Envelope::parse(data);
    let _ = custos_provenance::statement::Statement::parse(data);
    let _ = custos_provenance::policy::DeviceState::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_provenance::policy::Policy::parse(text);
    }
}

/// NFs send profiles (JSON) and token requests (forms) over the SBI.
pub fn nrf_requests(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = custos_nrf::profile::Profile::parse("5a0c1e2d-0000-4000-8000-000000000001", &v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let pairs: Vec<(String, String)> = text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let _ = custos_nrf::token::parse(&pairs);
        let _ = custos_nrf::discovery::parse(&pairs);
    }
}

/// JWT logins: the header is screened before any key is touched; JWKS documents come from
/// an identity provider's URL.
pub fn jwt_header(data: &[u8]) {
    let _ = custos_auth::jwt::KeySet::from_jwks(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let allowed = vec!["ES256".to_string(), "RS256".to_string()];
        let _ = custos_auth::jwt::header(text, &allowed);
    }
}

/// A device's quote: TPMS_ATTEST, TPMT_SIGNATURE and TPMT_PUBLIC parsers, then a full
/// appraisal with the bytes split into quote, signature and event log. Never panics.
pub fn attest_quote(data: &[u8]) {
    use custos_attest::tpm::{Attest, Public, Signature};
    let _ = Attest::parse(data);
    let _ = Signature::parse(data);
    let _ = Public::parse(data);
    if data.len() < 4 {
        return;
    }
    let a = usize::from(data[0]) * 4 % data.len();
    let s = a + (usize::from(data[1]) * 2 % (data.len() - a).max(1));
    let (quote, rest) = data.split_at(a);
    let (sig, log) = rest.split_at(s - a);
    // swtpm's ECDSA P-256 AK.
    const AK: &[u8] = &[
        0x00, 0x58, 0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00,
        0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10, 0x00, 0x20, 0x32, 0xeb, 0xa2, 0x99, 0x49, 0x0b,
        0x4d, 0x49, 0x8d, 0xef, 0x45, 0xcf, 0xa6, 0x03, 0xc4, 0x87, 0x71, 0x0b, 0xd8, 0x89, 0xb6,
        0xcf, 0x32, 0x4b, 0xb7, 0x0a, 0x29, 0x7c, 0x23, 0x77, 0xb8, 0x8e, 0x00, 0x20, 0x7c, 0xd2,
        0xa2, 0x47, 0x27, 0xd2, 0x74, 0xc4, 0xe6, 0x79, 0x9f, 0x12, 0x11, 0x94, 0x8c, 0xef, 0xed,
        0xc4, 0x0e, 0x86, 0x7f, 0xba, 0xce, 0xe2, 0x50, 0xfd, 0x33, 0x44, 0x66, 0xff, 0xa0, 0x43,
    ];
    let (Ok(ak), Ok(policy)) = (
        Public::parse(AK),
        custos_attest::policy::Policy::parse("[[device_classes]]\nname = \"x\"\n"),
    ) else {
        return;
    };
    let v = custos_attest::verify::appraise(
        &custos_attest::verify::Evidence {
            attest: quote,
            signature: sig,
            event_log: log,
        },
        &custos_attest::verify::Expected {
            ak: &ak,
            nonce: b"fuzz",
            class: &policy.classes[0],
            last: None,
            floor: 0,
            now: 0,
        },
        &custos_attest::verify::NoReferences,
    );
    assert!(!v.trusted, "random bytes were trusted");
}

/// A measured-boot event log: parse and replay. Never panics.
pub fn attest_eventlog(data: &[u8]) {
    if let Ok(l) = custos_attest::eventlog::EventLog::parse(data) {
        let _ = l.replay();
        let again = custos_attest::eventlog::EventLog::parse(&l.to_bytes());
        assert!(again.is_ok(), "a parsed log did not re-parse");
    }
}
