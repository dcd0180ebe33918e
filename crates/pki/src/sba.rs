//! 3GPP SBA vocabulary: NF types (TS 29.510 NFType, Rel-18) and the nfTypes extension.

/// OID of the nfTypes certificate extension, id-pe 34 (RFC 9310).
pub const NF_TYPES_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 34];

/// Every NFType value of TS 29.510 Rel-18 (`TS29510_Nnrf_NFManagement.yaml`, `NFType`).
pub const NF_TYPES: &[&str] = &[
    "NRF",
    "UDM",
    "AMF",
    "SMF",
    "AUSF",
    "NEF",
    "PCF",
    "SMSF",
    "NSSF",
    "UDR",
    "LMF",
    "GMLC",
    "5G_EIR",
    "SEPP",
    "UPF",
    "N3IWF",
    "AF",
    "UDSF",
    "BSF",
    "CHF",
    "NWDAF",
    "PCSCF",
    "CBCF",
    "HSS",
    "UCMF",
    "SOR_AF",
    "SPAF",
    "MME",
    "SCSAS",
    "SCEF",
    "SCP",
    "NSSAAF",
    "ICSCF",
    "SCSCF",
    "DRA",
    "IMS_AS",
    "AANF",
    "5G_DDNMF",
    "NSACF",
    "MFAF",
    "EASDF",
    "DCCF",
    "MB_SMF",
    "TSCTSF",
    "ADRF",
    "GBA_BSF",
    "CEF",
    "MB_UPF",
    "NSWOF",
    "PKMF",
    "MNPF",
    "SMS_GMSC",
    "SMS_IWMSC",
    "MBSF",
    "MBSTF",
    "PANF",
    "DCSF",
    "MRF",
    "MRFP",
    "MF",
    "SLPKMF",
];

/// Whether `t` is a TS 29.510 NFType value (exact, case-sensitive as on the wire).
pub fn is_nf_type(t: &str) -> bool {
    NF_TYPES.contains(&t)
}

/// Parses a comma-separated NF type list; returns the first unknown value as the error.
pub fn parse_nf_types(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !is_nf_type(t) {
            return Err(t.to_string());
        }
        if !out.iter().any(|x: &String| x == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// Parses an NF instance ID (a UUID, any case) into its canonical lower-case form.
pub fn parse_nf_instance_id(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s.trim())
        .ok()
        .filter(|_| s.trim().len() == 36)
        .map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf_type_list_matches_ts29510_and_rejects_lookalikes() {
        assert_eq!(NF_TYPES.len(), 61);
        assert!(is_nf_type("AMF") && is_nf_type("5G_EIR"));
        assert!(!is_nf_type("amf") && !is_nf_type("AMF ") && !is_nf_type(""));
        assert_eq!(parse_nf_types("AMF, SMF,AMF").unwrap(), vec!["AMF", "SMF"]);
        assert_eq!(parse_nf_types("AMF,FOO").unwrap_err(), "FOO");
    }

    #[test]
    fn nf_instance_id_must_be_a_hyphenated_uuid() {
        assert_eq!(
            parse_nf_instance_id("4947A69A-F61B-4BC1-B9DA-47C9C5D14B64").unwrap(),
            "4947a69a-f61b-4bc1-b9da-47c9c5d14b64"
        );
        for bad in [
            "",
            "../../etc/passwd",
            "4947a69af61b4bc1b9da47c9c5d14b64",
            "urn:uuid:4947a69a-f61b-4bc1-b9da-47c9c5d14b64",
        ] {
            assert!(parse_nf_instance_id(bad).is_none(), "{bad}");
        }
    }
}
