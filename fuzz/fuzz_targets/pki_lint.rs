//! `custos pki lint` reads certificates from anyone (another CA's included).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = custos_pki::lint::lint_sba(data);
    if let Ok(ders) = custos_pki::lint::cert_ders(data) {
        for d in ders {
            let _ = custos_pki::lint::lint_sba(&d);
        }
    }
});
