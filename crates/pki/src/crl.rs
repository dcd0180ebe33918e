//! CRLs written in one pass (RFC 5280 5): revoked entries are encoded as they stream in
//! from the revocation index, straight into the buffer that becomes the signed CRL, so a
//! CRL of a million entries costs its own size in memory and no per-entry allocation.
//! Full CRLs and delta CRLs (with the critical deltaCRLIndicator, 5.2.4) share the writer.

use crate::der;
use crate::PkiError;
use rcgen::{KeyPair, SigningKey as _};

/// Room kept in front of the TBSCertList for the outer SEQUENCE header, written last (its
/// length depends on the signature's).
const OUTER: usize = 6;

/// A CRL being written: entries first, then [`CrlBuilder::finish`].
pub struct CrlBuilder {
    entries: Vec<u8>,
    count: u64,
}

fn push_len(n: usize, out: &mut Vec<u8>) {
    der::len(n, out);
}

fn two(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// UTCTime before 2050, GeneralizedTime from then on, without allocating.
fn push_time(unix: i64, out: &mut Vec<u8>) {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let y = t.year().max(0) as u32;
    if y < 2050 {
        out.extend_from_slice(&[0x17, 13]);
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, y / 100);
    }
    two(out, y % 100);
    two(out, u32::from(u8::from(t.month())));
    two(out, u32::from(t.day()));
    two(out, u32::from(t.hour()));
    two(out, u32::from(t.minute()));
    two(out, u32::from(t.second()));
    out.push(b'Z');
}

/// A DER INTEGER of unsigned big-endian bytes (leading zeroes dropped, sign byte added).
fn push_uint(bytes: &[u8], out: &mut Vec<u8>) {
    let b = {
        let skip = bytes.iter().take_while(|x| **x == 0).count();
        &bytes[skip.min(bytes.len().saturating_sub(1))..]
    };
    let pad = b.first().is_some_and(|x| x & 0x80 != 0) || b.is_empty();
    out.push(0x02);
    push_len(b.len() + usize::from(pad), out);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(b);
}

impl Default for CrlBuilder {
    fn default() -> Self {
        CrlBuilder::new()
    }
}

impl CrlBuilder {
    /// An empty CRL.
    pub fn new() -> CrlBuilder {
        CrlBuilder {
            entries: Vec::new(),
            count: 0,
        }
    }

    /// Adds a revoked certificate (serial as unsigned big-endian bytes, at most 20 of them
    /// once leading zeroes are dropped, as RFC 5280 4.1.2.2 allows).
    pub fn push(&mut self, serial: &[u8], revoked_at: i64) -> Result<(), PkiError> {
        let significant = serial.iter().skip_while(|x| **x == 0).count();
        if significant > 20 {
            return Err(PkiError::Crypto(format!(
                "serial of {significant} bytes is longer than RFC 5280 allows"
            )));
        }
        // Written in place: the SEQUENCE's content (an INTEGER of at most 21 bytes and a time
        // of at most 17) is under 128 bytes, so its length is one byte, patched at the end.
        self.entries.extend_from_slice(&[0x30, 0]);
        let at = self.entries.len();
        push_uint(serial, &mut self.entries);
        push_time(revoked_at, &mut self.entries);
        let n = self.entries.len() - at;
        debug_assert!(n < 0x80);
        self.entries[at - 1] = n as u8;
        self.count += 1;
        Ok(())
    }

    /// Entries added.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Signs the CRL with the issuer's key. `delta_base`: the CRL number of the full CRL
    /// this delta CRL updates (None: a full CRL). The authority key identifier is the
    /// issuer certificate's subject key identifier (else SHA-1 of its key).
    pub fn finish(
        self,
        this_update: i64,
        next_update: i64,
        crl_number: u64,
        delta_base: Option<u64>,
        issuer_der: &[u8],
        key: &KeyPair,
    ) -> Result<Vec<u8>, PkiError> {
        use x509_parser::prelude::*;
        let (_, ix) = X509Certificate::from_der(issuer_der)
            .map_err(|e| PkiError::Crypto(format!("issuer certificate: {e}")))?;
        let sig_alg = crate::ocsp::signature_algorithm(crate::csr::key_info(ix.public_key()))?;
        let key_id = ix
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| {
                crate::ocsp::HashAlg::Sha1.digest(&ix.public_key().subject_public_key.data)
            });
        let mut exts = vec![
            extension(&[2, 5, 29, 35], false, der::seq(&[der::tlv(0x80, &key_id)])),
            extension(&[2, 5, 29, 20], false, uint(&crl_number.to_be_bytes())),
        ];
        if let Some(base) = delta_base {
            exts.push(extension(&[2, 5, 29, 27], true, uint(&base.to_be_bytes())));
        }
        let exts = der::tlv(0xa0, &der::seq(&exts));
        // TBSCertList fields before and after the entries.
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(&[0x02, 0x01, 0x01]); // version v2
        head.extend_from_slice(&sig_alg);
        head.extend_from_slice(ix.subject().as_raw());
        push_time(this_update, &mut head);
        push_time(next_update, &mut head);
        let mut list_hdr = Vec::new();
        if self.count > 0 {
            list_hdr.push(0x30);
            push_len(self.entries.len(), &mut list_hdr);
        }
        let tbs_body = head.len() + list_hdr.len() + self.entries.len() + exts.len();
        let mut tbs_hdr = vec![0x30];
        push_len(tbs_body, &mut tbs_hdr);
        // One buffer: [room for the outer header][TBS][algorithm][signature].
        let tbs_len = tbs_hdr.len() + tbs_body;
        let mut out = Vec::with_capacity(OUTER + tbs_len + sig_alg.len() + 160);
        out.resize(OUTER, 0);
        out.extend_from_slice(&tbs_hdr);
        out.extend_from_slice(&head);
        out.extend_from_slice(&list_hdr);
        let mut entries = self.entries;
        out.append(&mut entries);
        drop(entries);
        out.extend_from_slice(&exts);
        let sig = key
            .sign(&out[OUTER..])
            .map_err(|e| PkiError::Crypto(e.to_string()))?;
        out.extend_from_slice(&sig_alg);
        out.push(0x03);
        push_len(sig.len() + 1, &mut out);
        out.push(0);
        out.extend_from_slice(&sig);
        let mut outer = vec![0x30];
        push_len(out.len() - OUTER, &mut outer);
        let start = OUTER - outer.len();
        out[start..OUTER].copy_from_slice(&outer);
        out.drain(..start);
        Ok(out)
    }
}

fn uint(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    push_uint(b, &mut v);
    v
}

fn extension(oid: &[u64], critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![der::oid(oid)];
    if critical {
        parts.push(vec![0x01, 0x01, 0xff]);
    }
    parts.push(der::tlv(0x04, &value));
    der::seq(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn issuer() -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "CRL test CA");
        let cert = p.self_signed(&key).unwrap();
        (cert.der().to_vec(), key)
    }

    #[test]
    fn rfc5280_crl_parses_verifies_and_lists_every_entry_in_order() {
        let (ca, key) = issuer();
        let mut b = CrlBuilder::new();
        let serials: Vec<Vec<u8>> = (0u32..5000)
            .map(|i| {
                let mut s = vec![0x80u8; 20];
                s[16..].copy_from_slice(&i.to_be_bytes());
                s
            })
            .chain([vec![0, 0, 1], vec![0x7f]])
            .collect();
        for (i, s) in serials.iter().enumerate() {
            b.push(s, 1_700_000_000 + i as i64).unwrap();
        }
        let der = b
            .finish(1_700_000_000, 2_600_000_000, 7, None, &ca, &key)
            .unwrap();
        let (rest, crl) = CertificateRevocationList::from_der(&der).unwrap();
        assert!(rest.is_empty());
        let (_, cax) = X509Certificate::from_der(&ca).unwrap();
        crl.verify_signature(cax.public_key()).unwrap();
        assert_eq!(crl.crl_number().map(|n| n.to_u64_digits()), Some(vec![7]));
        let got: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(got.len(), serials.len());
        assert_eq!(
            got[3].raw_serial()[1..],
            serials[3][..],
            "with the sign byte"
        );
        assert_eq!(got[5000].raw_serial(), &[1u8][..]);
        assert_eq!(got[4999].revocation_date.timestamp(), 1_700_004_999);
        // nextUpdate past 2049 is a GeneralizedTime (RFC 5280 5.1.2.5).
        assert_eq!(crl.next_update().unwrap().timestamp(), 2_600_000_000);
    }

    #[test]
    fn empty_crl_omits_the_revoked_list_and_delta_crl_marks_its_base_critical() {
        let (ca, key) = issuer();
        let der = CrlBuilder::new()
            .finish(1_700_000_000, 1_700_086_400, 2, Some(1), &ca, &key)
            .unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        let delta = crl
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.5.29.27")
            .expect("deltaCRLIndicator");
        assert!(delta.critical);
    }

    #[test]
    fn an_oversized_serial_is_refused_not_truncated() {
        let mut b = CrlBuilder::new();
        assert!(b.push(&[1u8; 21], 0).is_err());
        assert!(b.push(&[0u8, 1, 2], 0).is_ok());
        assert_eq!(b.len(), 1);
    }
}
