//! Stored ciphertexts and unseal shares are outside bytes too (a tampered database, a typo'd
//! share): opening and combining must fail cleanly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = [7u8; 32];
    let _ = custos_barrier::open_with_key(&key, "core/keyring", data);
    let n = data.len() / 3;
    if n > 1 {
        let shares: Vec<&[u8]> = data.chunks(n).collect();
        let _ = custos_barrier::shamir::combine(&shares);
    }
});
