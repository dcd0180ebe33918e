//! # custos-nrf
//!
//! The security half of an NRF, with no I/O:
//! * [`identity`]: who a TLS peer is, from its SBA certificate (TS 33.310 6.1.3c): the NF
//!   instance ID from the `urn:uuid:` SAN and the NF types from the nfTypes extension;
//! * [`profile`]: NFProfile validation (TS 29.510 6.1.6.2.2) and JSON Patch updates;
//! * [`discovery`]: which registered producers a requester may discover;
//! * [`token`]: AccessTokenReq parsing and authorization (TS 33.501 13.4.1, TS 29.510
//!   6.3.5), with the 3GPP error codes;
//! * [`jws`]: ES256 access tokens with `kid`, and the JWKS that publishes the keys.
//!
//! The rules the open-source cores get wrong are pinned here by tests named after them: the
//! caller's identity comes from its certificate, never from the request; scopes must be
//! services that allowed producers expose, NRF scopes included (free5GC CVE-2025-66719);
//! path IDs must be UUIDs (free5GC #947).
#![forbid(unsafe_code)]

pub mod cca;
pub mod discovery;
pub mod identity;
pub mod jws;
pub mod profile;
pub mod token;

/// Lower-case canonical UUID if `s` is one (8-4-4-4-12 hex), else None.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    ok.then(|| s.to_ascii_lowercase())
}

pub use custos_pki::sba::{is_nf_type, NF_TYPES};
