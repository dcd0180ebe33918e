//! A minimal DER writer for the extensions rcgen cannot emit as the SBA profile needs them
//! (critical SAN with a non-empty subject, nfTypes, AIA), and a reader for nfTypes.

/// Encodes a length.
pub(crate) fn len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A tag-length-value.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SEQUENCE of already-encoded items.
pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// An OBJECT IDENTIFIER from its arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    if arcs.len() >= 2 {
        base128(arcs[0] * 40 + arcs[1], &mut body);
        for a in &arcs[2..] {
            base128(*a, &mut body);
        }
    }
    tlv(0x06, &body)
}

fn base128(mut v: u64, out: &mut Vec<u8>) {
    let mut tmp = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        tmp.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    tmp.reverse();
    out.extend_from_slice(&tmp);
}

/// UTCTime before 2050, GeneralizedTime from then on (RFC 5280 4.1.2.5).
pub fn time(unix: i64) -> Vec<u8> {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (m, d, h, mi, se) = (
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
    if t.year() < 2050 {
        tlv(
            0x17,
            format!("{:02}{m:02}{d:02}{h:02}{mi:02}{se:02}Z", t.year() % 100).as_bytes(),
        )
    } else {
        generalized_time(unix)
    }
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ`.
pub fn generalized_time(unix: i64) -> Vec<u8> {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let s = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    tlv(0x18, s.as_bytes())
}

/// One GeneralName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneralName {
    /// dNSName \[2\].
    Dns(String),
    /// uniformResourceIdentifier \[6\].
    Uri(String),
    /// iPAddress \[7\].
    Ip(std::net::IpAddr),
    /// rfc822Name \[1\].
    Email(String),
}

impl GeneralName {
    /// DER of the GeneralName (context-specific, implicit).
    pub fn der(&self) -> Vec<u8> {
        match self {
            GeneralName::Email(s) => tlv(0x81, s.as_bytes()),
            GeneralName::Dns(s) => tlv(0x82, s.as_bytes()),
            GeneralName::Uri(s) => tlv(0x86, s.as_bytes()),
            GeneralName::Ip(std::net::IpAddr::V4(a)) => tlv(0x87, &a.octets()),
            GeneralName::Ip(std::net::IpAddr::V6(a)) => tlv(0x87, &a.octets()),
        }
    }
}

/// subjectAltName extension value: GeneralNames.
pub fn general_names(names: &[GeneralName]) -> Vec<u8> {
    seq(&names.iter().map(GeneralName::der).collect::<Vec<_>>())
}

/// nfTypes extension value (RFC 9310): SEQUENCE OF IA5String.
pub fn nf_types(types: &[String]) -> Vec<u8> {
    seq(&types
        .iter()
        .map(|t| tlv(0x16, t.as_bytes()))
        .collect::<Vec<_>>())
}

/// Parses an nfTypes extension value. Returns None if it is not a SEQUENCE OF IA5String.
pub fn parse_nf_types(mut d: &[u8]) -> Option<Vec<String>> {
    let (tag, body, rest) = read_tlv(d)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    d = body;
    let mut out = Vec::new();
    while !d.is_empty() {
        let (t, b, r) = read_tlv(d)?;
        if t != 0x16 || !b.is_ascii() {
            return None;
        }
        out.push(String::from_utf8(b.to_vec()).ok()?);
        d = r;
    }
    Some(out)
}

/// Reads one TLV: (tag, content, rest). Bounds-checked; never panics.
pub fn read_tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *d.first()?;
    let first = *d.get(1)? as usize;
    let (n, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let k = first & 0x7f;
        if k == 0 || k > 4 {
            return None;
        }
        let mut n = 0usize;
        for i in 0..k {
            n = (n << 8) | *d.get(2 + i)? as usize;
        }
        (n, 2 + k)
    };
    let end = hdr.checked_add(n)?;
    let body = d.get(hdr..end)?;
    Some((tag, body, d.get(end..)?))
}

/// authorityInfoAccess value with OCSP and caIssuers URLs.
pub fn authority_info_access(ocsp: &[String], ca_issuers: &[String]) -> Vec<u8> {
    let mut items = Vec::new();
    for u in ocsp {
        items.push(seq(&[
            oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1]),
            GeneralName::Uri(u.clone()).der(),
        ]));
    }
    for u in ca_issuers {
        items.push(seq(&[
            oid(&[1, 3, 6, 1, 5, 5, 7, 48, 2]),
            GeneralName::Uri(u.clone()).der(),
        ]));
    }
    seq(&items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_encoding_matches_known_values() {
        // id-pe-nfType 1.3.6.1.5.5.7.1.34 (RFC 9310).
        assert_eq!(
            oid(&[1, 3, 6, 1, 5, 5, 7, 1, 34]),
            vec![0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 1, 34]
        );
        // 2.5.29.17 (subjectAltName).
        assert_eq!(oid(&[2, 5, 29, 17]), vec![0x06, 0x03, 0x55, 0x1d, 0x11]);
        // A multi-byte arc: 1.2.840.113549.
        assert_eq!(
            oid(&[1, 2, 840, 113549]),
            vec![0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
    }

    #[test]
    fn long_lengths_roundtrip() {
        let big = vec![7u8; 300];
        let enc = tlv(0x04, &big);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (t, b, r) = read_tlv(&enc).unwrap();
        assert_eq!((t, b.len(), r.len()), (0x04, 300, 0));
    }

    #[test]
    fn nf_types_roundtrip_and_garbage_is_rejected() {
        let v = nf_types(&["AMF".into(), "SMF".into()]);
        assert_eq!(parse_nf_types(&v).unwrap(), vec!["AMF", "SMF"]);
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x16],
            &[0x31, 0x00],
            &[0x30, 0x02, 0x04, 0x00],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(parse_nf_types(bad).is_none(), "{bad:?}");
        }
    }
}
