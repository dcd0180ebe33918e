//! Nnrf_NFDiscovery (TS 29.510 6.2.3.2.3.1): which registered profiles a requester may see.

use crate::identity::NfIdentity;
use crate::profile::{Profile, Snssai};
use serde_json::Value;

/// Why a discovery query is refused (400 with the parameter named).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct QueryError {
    /// The query parameter.
    pub param: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(param: &str, reason: impl Into<String>) -> QueryError {
    QueryError {
        param: param.into(),
        reason: reason.into(),
    }
}

/// The query parameters this NRF acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `target-nf-type` (required).
    pub target_nf_type: String,
    /// `requester-nf-type` (required; must be a type of the caller's certificate).
    pub requester_nf_type: String,
    /// `service-names` (any of).
    pub service_names: Vec<String>,
    /// `target-nf-instance-id`.
    pub target_nf_instance_id: Option<String>,
    /// `requester-nf-instance-id` (must be the caller's).
    pub requester_nf_instance_id: Option<String>,
    /// `snssais` (any of).
    pub snssais: Vec<Snssai>,
    /// `requester-nf-instance-fqdn`.
    pub requester_fqdn: Option<String>,
    /// `limit`: at most this many profiles in the answer.
    pub limit: Option<usize>,
}

/// Parameters that may appear more than once (exploded arrays).
const MULTI: &[&str] = &["service-names", "snssais"];

/// Parses decoded query pairs. Parameters this NRF does not act on are ignored, as TS 29.510
/// lets an NRF do for optional discovery parameters.
pub fn parse(pairs: &[(String, String)]) -> Result<Query, QueryError> {
    let mut q = Query::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !MULTI.contains(&k.as_str()) && !seen.insert(k.as_str()) {
            return Err(bad(k, "must not be repeated"));
        }
        match k.as_str() {
            "target-nf-type" | "requester-nf-type" => {
                if !crate::is_nf_type(v) {
                    return Err(bad(k, format!("{v:?} is not an NFType")));
                }
                if k == "target-nf-type" {
                    q.target_nf_type = v.clone();
                } else {
                    q.requester_nf_type = v.clone();
                }
            }
            "service-names" => {
                // Exploded (repeated) or comma-separated.
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    if !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(bad(k, format!("{s:?} is not a service name")));
                    }
                    q.service_names.push(s.to_string());
                }
            }
            "target-nf-instance-id" | "requester-nf-instance-id" => {
                let id = crate::canonical_uuid(v).ok_or_else(|| bad(k, "must be a UUID"))?;
                if k == "target-nf-instance-id" {
                    q.target_nf_instance_id = Some(id);
                } else {
                    q.requester_nf_instance_id = Some(id);
                }
            }
            "snssais" => {
                let parsed: Value = serde_json::from_str(v)
                    .map_err(|_| bad(k, "must be JSON: an S-NSSAI object or an array of them"))?;
                let items = match parsed {
                    Value::Array(a) => a,
                    o => vec![o],
                };
                for s in &items {
                    q.snssais.push(crate::profile::snssai(s).ok_or_else(|| {
                        bad(
                            k,
                            "an S-NSSAI needs sst 0..255 and an optional 6-hex-digit sd",
                        )
                    })?);
                }
            }
            "requester-nf-instance-fqdn" => q.requester_fqdn = Some(v.to_ascii_lowercase()),
            "limit" => {
                q.limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(k, "must be a positive integer"))?,
                )
            }
            _ => {}
        }
    }
    if q.target_nf_type.is_empty() {
        return Err(bad("target-nf-type", "is required"));
    }
    if q.requester_nf_type.is_empty() {
        return Err(bad("requester-nf-type", "is required"));
    }
    Ok(q)
}

/// Checks the query against the caller's certificate (TS 33.501 13.3.1: what the NF says
/// about itself must match its certificate).
pub fn check_caller(q: &Query, caller: &NfIdentity) -> Result<(), QueryError> {
    if !caller.has_type(&q.requester_nf_type) {
        return Err(bad(
            "requester-nf-type",
            "is not an NF type of the client certificate",
        ));
    }
    if let Some(id) = &q.requester_nf_instance_id {
        if id != &caller.instance_id {
            return Err(bad(
                "requester-nf-instance-id",
                "is not the client certificate's NF instance ID",
            ));
        }
    }
    Ok(())
}

fn slice_ok(q: &Query, p: &Profile) -> bool {
    q.snssais.is_empty()
        || p.snssais.is_empty()
        || q.snssais.iter().any(|s| {
            p.snssais
                .iter()
                .any(|t| t.sst == s.sst && (s.sd.is_none() || t.sd == s.sd))
        })
}

/// Whether `p` is returned for `q`: registered, of the target type (and instance), serving a
/// requested slice, allowing the requester's type and domain, and exposing a requested
/// service that allows the requester.
pub fn matches(q: &Query, p: &Profile) -> bool {
    let fqdn = q.requester_fqdn.as_deref();
    p.is_available()
        && p.nf_type == q.target_nf_type
        && q.target_nf_instance_id
            .as_ref()
            .is_none_or(|id| id == &p.id)
        && p.allowed.permits(&q.requester_nf_type, fqdn)
        && slice_ok(q, p)
        && (q.service_names.is_empty()
            || p.services.iter().any(|s| {
                s.status == "REGISTERED"
                    && q.service_names.contains(&s.name)
                    && s.allowed.permits(&q.requester_nf_type, fqdn)
            }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn smf(extra: Value) -> Profile {
        let mut d = json!({"nfInstanceId": SMF, "nfType": "SMF", "nfStatus": "REGISTERED", "fqdn": "smf1.example",
            "sNssais": [{"sst": 1, "sd": "000001"}],
            "nfServices": [{"serviceInstanceId": "1", "serviceName": "nsmf-pdusession", "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.2.0"}], "scheme": "https", "nfServiceStatus": "REGISTERED"}]});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        Profile::parse(SMF, &d).unwrap()
    }

    #[test]
    fn discovery_honours_type_service_slice_status_and_allowed_nf_types() {
        let q = parse(&pairs(&[
            ("target-nf-type", "SMF"),
            ("requester-nf-type", "AMF"),
            ("service-names", "nsmf-pdusession"),
            ("snssais", r#"{"sst":1,"sd":"000001"}"#),
        ]))
        .unwrap();
        assert!(matches(&q, &smf(json!({}))));
        assert!(!matches(&q, &smf(json!({"allowedNfTypes": ["NEF"]}))));
        assert!(!matches(&q, &smf(json!({"nfStatus": "SUSPENDED"}))));
        assert!(!matches(&q, &smf(json!({"sNssais": [{"sst": 2}]}))));
        let q2 = parse(&pairs(&[
            ("target-nf-type", "SMF"),
            ("requester-nf-type", "AMF"),
            ("service-names", "nsmf-event-exposure"),
        ]))
        .unwrap();
        assert!(!matches(&q2, &smf(json!({}))));
        let q3 = parse(&pairs(&[
            ("target-nf-type", "UDM"),
            ("requester-nf-type", "AMF"),
        ]))
        .unwrap();
        assert!(!matches(&q3, &smf(json!({}))));
    }

    #[test]
    fn required_and_malformed_parameters_are_named() {
        let e = |p: &[(&str, &str)]| parse(&pairs(p)).unwrap_err().param;
        assert_eq!(e(&[("requester-nf-type", "AMF")]), "target-nf-type");
        assert_eq!(e(&[("target-nf-type", "SMF")]), "requester-nf-type");
        assert_eq!(
            e(&[("target-nf-type", "SMF"), ("requester-nf-type", "X")]),
            "requester-nf-type"
        );
        assert_eq!(
            e(&[
                ("target-nf-type", "SMF"),
                ("requester-nf-type", "AMF"),
                ("target-nf-instance-id", "../x")
            ]),
            "target-nf-instance-id"
        );
        assert_eq!(
            e(&[
                ("target-nf-type", "SMF"),
                ("requester-nf-type", "AMF"),
                ("snssais", "{")
            ]),
            "snssais"
        );
        assert_eq!(
            e(&[
                ("target-nf-type", "SMF"),
                ("target-nf-type", "AMF"),
                ("requester-nf-type", "AMF")
            ]),
            "target-nf-type"
        );
    }

    #[test]
    fn requester_nf_type_must_match_the_certificate() {
        let q = parse(&pairs(&[
            ("target-nf-type", "SMF"),
            ("requester-nf-type", "NEF"),
        ]))
        .unwrap();
        let amf = NfIdentity {
            instance_id: "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22".into(),
            nf_types: vec!["AMF".into()],
            fqdns: vec![],
        };
        assert_eq!(
            check_caller(&q, &amf).unwrap_err().param,
            "requester-nf-type"
        );
    }
}
