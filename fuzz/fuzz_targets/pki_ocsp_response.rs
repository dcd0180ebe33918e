//! OCSP responses come from a responder or a stapled file: `fw verify` checks them against a
//! fixed CA and leaf (fuzz/fixtures, made with the OpenSSL CLI).
#![no_main]
use libfuzzer_sys::fuzz_target;

const CA: &[u8] = include_bytes!("../fixtures/ocsp-ca.der");
const LEAF: &[u8] = include_bytes!("../fixtures/ocsp-leaf.der");

fuzz_target!(|data: &[u8]| {
    let _ = custos_pki::ocsp::check_response(data, LEAF, CA, 1_800_000_000);
});
