//! OCSP requests are unauthenticated DER from the network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = custos_pki::ocsp::parse_request(data);
    let _ = custos_pki::der::parse_nf_types(data);
});
