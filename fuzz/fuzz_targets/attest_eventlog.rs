//! See `custos_fuzz_targets::attest_eventlog` (the entry point the stable corpus replay shares).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    custos_fuzz_targets::attest_eventlog(data);
});
