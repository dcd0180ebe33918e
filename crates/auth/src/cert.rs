//! TLS client-certificate login: a role ("certs/:name" in Vault) trusts CA certificates and
//! constrains the client certificate's names. The TLS handshake proved possession of the key;
//! this module proves the certificate chains to the role's CA, is within its validity, is a
//! client certificate, and carries allowed names. Revocation is checked by the server.

use crate::jwt::list_pems;
use crate::params::TokenParams;
use crate::{glob, AuthError};
use custos_pki::fields::{list_of, str_of};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

/// `auth/<cert>/certs/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertRole {
    /// `certificate`: trusted CA certificates (PEM).
    pub certificates: Vec<String>,
    /// `allowed_common_names` (globs).
    pub allowed_common_names: Vec<String>,
    /// `allowed_dns_sans` (globs).
    pub allowed_dns_sans: Vec<String>,
    /// `allowed_uri_sans` (globs), e.g. `urn:uuid:*` for SBA certificates.
    pub allowed_uri_sans: Vec<String>,
    /// `display_name`.
    pub display_name: String,
    /// The token a login gets.
    pub token: TokenParams,
}

const ROLE_FIELDS: &[&str] = &[
    "certificate",
    "allowed_common_names",
    "allowed_dns_sans",
    "allowed_uri_sans",
    "allowed_names",
    "display_name",
];

impl CertRole {
    /// Creates or updates a role from a write.
    pub fn update(&mut self, d: &Map<String, Value>) -> Result<(), AuthError> {
        if let Some(k) = d.keys().find(|k| {
            !ROLE_FIELDS.contains(&k.as_str()) && !crate::params::FIELDS.contains(&k.as_str())
        }) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        if d.contains_key("certificate") {
            let pems = list_pems(d, "certificate")?;
            for (i, p) in pems.iter().enumerate() {
                let der = der_of(p).ok_or_else(|| {
                    AuthError::invalid(format!("certificate {}: not a PEM certificate", i + 1))
                })?;
                let (_, x) = X509Certificate::from_der(&der).map_err(|_| {
                    AuthError::invalid(format!(
                        "certificate {}: not a valid X.509 certificate",
                        i + 1
                    ))
                })?;
                if !x.is_ca() {
                    return Err(AuthError::invalid(format!(
                        "certificate {}: is not a CA certificate (basicConstraints CA:TRUE)",
                        i + 1
                    )));
                }
            }
            self.certificates = pems;
        }
        let names = |k: &str, slot: &mut Vec<String>| -> Result<(), AuthError> {
            if d.contains_key(k) {
                *slot = list_of(d, k)?;
            }
            Ok(())
        };
        names("allowed_common_names", &mut self.allowed_common_names)?;
        names("allowed_names", &mut self.allowed_common_names)?;
        names("allowed_dns_sans", &mut self.allowed_dns_sans)?;
        names("allowed_uri_sans", &mut self.allowed_uri_sans)?;
        if d.contains_key("display_name") {
            self.display_name = str_of(d, "display_name")?;
        }
        self.token.update(d)?;
        if self.certificates.is_empty() {
            return Err(AuthError::invalid(
                "certificate: a trusted CA certificate is required",
            ));
        }
        Ok(())
    }

    /// The role as read back.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("certificate".into(), json!(self.certificates.join("")));
        m.insert(
            "allowed_common_names".into(),
            json!(self.allowed_common_names),
        );
        m.insert("allowed_dns_sans".into(), json!(self.allowed_dns_sans));
        m.insert("allowed_uri_sans".into(), json!(self.allowed_uri_sans));
        m.insert("display_name".into(), json!(self.display_name));
        self.token.to_json(&mut m);
        Value::Object(m)
    }

    /// Checks a client certificate (DER) against this role; returns its facts on success.
    pub fn check(&self, leaf_der: &[u8], now: i64) -> Result<ClientCert, AuthError> {
        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|_| AuthError::invalid("client certificate is not valid X.509"))?;
        let v = leaf.validity();
        if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
            return Err(AuthError::denied(
                "client certificate is outside its validity period",
            ));
        }
        if leaf.is_ca() {
            return Err(AuthError::denied(
                "a CA certificate cannot be used to log in",
            ));
        }
        if let Ok(Some(eku)) = leaf.extended_key_usage() {
            if !(eku.value.client_auth || eku.value.any) {
                return Err(AuthError::denied(
                    "client certificate lacks the clientAuth extended key usage",
                ));
            }
        }
        let mut issuer = None;
        for p in &self.certificates {
            let Some(der) = der_of(p) else { continue };
            let Ok((_, ca)) = X509Certificate::from_der(&der) else {
                continue;
            };
            if ca.subject().as_raw() == leaf.issuer().as_raw()
                && leaf.verify_signature(Some(ca.public_key())).is_ok()
            {
                let cv = ca.validity();
                if now < cv.not_before.timestamp() || now > cv.not_after.timestamp() {
                    return Err(AuthError::denied("the trusted CA certificate has expired"));
                }
                issuer = Some(der);
                break;
            }
        }
        let issuer_der = issuer.ok_or_else(|| {
            AuthError::denied("client certificate was not issued by a CA this role trusts")
        })?;
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        let (mut dns, mut uris) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        let any = |pats: &[String], vals: &[String]| {
            pats.is_empty() || vals.iter().any(|v| pats.iter().any(|p| glob(p, v)))
        };
        if !any(&self.allowed_common_names, std::slice::from_ref(&cn)) {
            return Err(AuthError::denied(
                "client certificate common name is not allowed by the role",
            ));
        }
        if !any(&self.allowed_dns_sans, &dns) {
            return Err(AuthError::denied(
                "no DNS SAN of the client certificate is allowed by the role",
            ));
        }
        if !any(&self.allowed_uri_sans, &uris) {
            return Err(AuthError::denied(
                "no URI SAN of the client certificate is allowed by the role",
            ));
        }
        Ok(ClientCert {
            issuer_name: leaf.issuer().as_raw().to_vec(),
            serial: leaf.raw_serial().to_vec(),
            common_name: cn,
            uris,
            issuer_der,
        })
    }
}

/// Facts about an accepted client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// Subject CN.
    pub common_name: String,
    /// URI SANs (an SBA certificate's `urn:uuid:` NF instance ID among them).
    pub uris: Vec<String>,
    /// DER of the CA certificate that signed it.
    pub issuer_der: Vec<u8>,
    /// DER of its issuer name (to match CRLs).
    pub issuer_name: Vec<u8>,
}

fn der_of(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let stop = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}
