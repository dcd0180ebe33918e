//! Policy documents come from API clients: parsing and evaluating must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
