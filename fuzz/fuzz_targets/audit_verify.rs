//! `custos audit verify` reads files an attacker may have edited.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_audit::verify(text);
        if let Some(last) = text.lines().last() {
            let _ = custos_audit::Chain::from_last_line(last);
        }
    }
});
