//! Signer-identity extensions for code-signing certificates, in Fulcio's format (OID arc
//! `1.3.6.1.4.1.57264.1`, the "v2" extensions whose values are DER UTF8Strings), so sigstore
//! tooling can read them too.
//!
//! The CA copies these values from the caller's **login metadata** (JWT claims mapped by the
//! auth role's `claim_mappings`, the verified `iss`, or an AppRole secret ID's metadata), never
//! from the request: a verifier trusts them exactly as far as it trusts the CA and the identity
//! provider. A role turns them on with `provenance_extensions=true`.

use crate::der::tlv;
use crate::PkiError;
use std::collections::BTreeMap;

/// The Fulcio extension arc; each extension is this plus one number.
pub const ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 57264, 1];

/// Metadata key → the last arc of its extension's OID (Fulcio's numbering, 8–22).
pub const EXTENSIONS: &[(&str, u64)] = &[
    ("issuer", 8),
    ("build_signer_uri", 9),
    ("build_signer_digest", 10),
    ("runner_environment", 11),
    ("source_repository_uri", 12),
    ("source_repository_digest", 13),
    ("source_repository_ref", 14),
    ("source_repository_identifier", 15),
    ("source_repository_owner_uri", 16),
    ("source_repository_owner_identifier", 17),
    ("build_config_uri", 18),
    ("build_config_digest", 19),
    ("build_trigger", 20),
    ("run_invocation_uri", 21),
    ("source_repository_visibility_at_signing", 22),
];

/// Largest value copied into a certificate.
pub const MAX_VALUE_BYTES: usize = 1024;

/// The OID arcs of the extension numbered `n`.
pub fn oid(n: u64) -> Vec<u64> {
    let mut v = ARC.to_vec();
    v.push(n);
    v
}

/// The metadata key of a Fulcio extension OID (dotted), if it is one of [`EXTENSIONS`].
pub fn key_of(dotted: &str) -> Option<&'static str> {
    let n: u64 = dotted.strip_prefix("1.3.6.1.4.1.57264.1.")?.parse().ok()?;
    EXTENSIONS.iter().find(|(_, m)| *m == n).map(|(k, _)| *k)
}

/// The extensions (last arc, value) that `meta` supports, in OID order. Values that are empty
/// are skipped; values that are too long or hold control characters are refused, naming the key.
pub fn from_metadata(meta: &BTreeMap<String, String>) -> Result<Vec<(u64, String)>, PkiError> {
    let mut out = Vec::new();
    for (key, n) in EXTENSIONS {
        let Some(v) = meta.get(*key).filter(|v| !v.is_empty()) else {
            continue;
        };
        if v.len() > MAX_VALUE_BYTES || v.chars().any(char::is_control) {
            return Err(PkiError::NotAllowed(format!(
                "login metadata {key:?} cannot go in a certificate: it must be at most \
                 {MAX_VALUE_BYTES} bytes without control characters"
            )));
        }
        out.push((*n, v.clone()));
    }
    Ok(out)
}

/// The DER content of one extension: a UTF8String.
pub fn value_der(v: &str) -> Vec<u8> {
    tlv(0x0c, v.as_bytes())
}

/// Decodes an extension value written by [`value_der`].
pub fn parse_value(der: &[u8]) -> Option<String> {
    match crate::der::read_tlv(der)? {
        (0x0c, body, []) => String::from_utf8(body.to_vec()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fulcio_oids_match_the_published_numbering() {
        // docs/oid-info.md in sigstore/fulcio: .8 Issuer (V2), .9 Build Signer URI,
        // .12 Source Repository URI, .13 Source Repository Digest, .22 visibility.
        assert_eq!(key_of("1.3.6.1.4.1.57264.1.8"), Some("issuer"));
        assert_eq!(key_of("1.3.6.1.4.1.57264.1.9"), Some("build_signer_uri"));
        assert_eq!(
            key_of("1.3.6.1.4.1.57264.1.12"),
            Some("source_repository_uri")
        );
        assert_eq!(
            key_of("1.3.6.1.4.1.57264.1.13"),
            Some("source_repository_digest")
        );
        assert_eq!(
            key_of("1.3.6.1.4.1.57264.1.22"),
            Some("source_repository_visibility_at_signing")
        );
        // .1–.6 are the deprecated raw-string extensions; they are never written.
        assert_eq!(key_of("1.3.6.1.4.1.57264.1.1"), None);
        assert_eq!(key_of("1.3.6.1.4.1.57264.1.8.1"), None);
    }

    #[test]
    fn values_are_der_utf8strings_and_round_trip() {
        assert_eq!(value_der("ab"), vec![0x0c, 2, b'a', b'b']);
        assert_eq!(
            parse_value(&value_der("https://x/y")).as_deref(),
            Some("https://x/y")
        );
        assert_eq!(
            parse_value(&[0x13, 1, b'a']),
            None,
            "PrintableString is not v2"
        );
        assert_eq!(parse_value(&[0x0c, 1, b'a', 0]), None, "trailing bytes");
    }

    #[test]
    fn hostile_metadata_is_refused_by_name() {
        let mut m = BTreeMap::new();
        m.insert("source_repository_uri".to_string(), "x\ny".to_string());
        let e = from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("source_repository_uri"), "{e}");
        m.insert(
            "source_repository_uri".into(),
            "a".repeat(MAX_VALUE_BYTES + 1),
        );
        assert!(from_metadata(&m).is_err());
        m.insert(
            "source_repository_uri".into(),
            "https://git.example/fw".into(),
        );
        m.insert("role".into(), "builder".into());
        m.insert("issuer".into(), String::new());
        assert_eq!(
            from_metadata(&m).unwrap(),
            vec![(12, "https://git.example/fw".to_string())]
        );
    }
}
