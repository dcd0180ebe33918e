//! Devices with in-memory TPMs (`custos_attest::soft`, ECC EKs) for tests that need many of
//! them: a manufacturer CA that certifies their EKs, and enrolment over the HTTP API (EK
//! certificate, then credential activation).

use crate::Api;
use custos_attest::soft::SoftTpm;
use serde_json::{json, Value};

/// A TPM manufacturer: a CA that certifies each soft TPM's EK.
pub struct SoftManufacturer {
    /// The CA certificate (PEM), for `attest/config` `manufacturer_ca_pem`.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Default for SoftManufacturer {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftManufacturer {
    /// A fresh CA.
    pub fn new() -> SoftManufacturer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test TPM manufacturer");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        SoftManufacturer {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// The EK certificate of `t` (DER).
    pub fn ek_certificate(&self, t: &SoftTpm) -> Vec<u8> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&t.ek_spki().unwrap()).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(vec![
            2, 23, 133, 8, 1,
        ])];
        p.signed_by(&spki, &self.issuer).unwrap().der().to_vec()
    }

    /// Enrols a new soft TPM as device `id` of `class` in the `attest` mount (with `extra`
    /// enrolment fields: nf_instance_ids, logins, …) and activates it.
    pub async fn enrol(
        &self,
        api: &Api,
        root: &str,
        id: &str,
        class: &str,
        extra: Value,
    ) -> SoftTpm {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD;
        let tpm = SoftTpm::new_ecc().unwrap();
        let mut body = json!({
            "device_class": class,
            "ek_public": b.encode(tpm.ek_public()),
            "ek_certificate": b.encode(self.ek_certificate(&tpm)),
            "ak_public": b.encode(tpm.ak_public()),
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let (st, v) = api
            .call(
                "PUT",
                &format!("attest/devices/{id}"),
                Some(root),
                Some(body),
            )
            .await;
        assert_eq!(st, 200, "enrol {id}: {v}");
        let field = |k: &str| b.decode(v["data"][k].as_str().unwrap()).unwrap();
        let secret = tpm
            .activate(&field("credential_blob"), &field("encrypted_secret"))
            .unwrap();
        let (st, v) = api
            .call(
                "PUT",
                &format!("attest/devices/{id}/activate"),
                Some(root),
                Some(json!({"credential": b.encode(&secret)})),
            )
            .await;
        assert_eq!(st, 200, "activate {id}: {v}");
        tpm
    }
}
