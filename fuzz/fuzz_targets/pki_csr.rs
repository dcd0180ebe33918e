//! CSRs arrive from any client of sign/:role (PEM or base64 DER).
#![no_main]
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let as_b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = custos_pki::csr::parse_csr(&as_b64);
    let _ = custos_pki::csr::parse_ca_csr(&as_b64);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_pki::csr::parse_csr(text);
    }
});
