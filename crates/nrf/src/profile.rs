//! NFProfile validation (TS 29.510 6.1.6.2.2 NFProfile, 6.1.6.2.3 NFService) and updates.
//!
//! The profile is kept as the JSON the NF registered (3GPP adds fields every release, and an
//! NRF must hand them back), after checking every field this NRF acts on: identity, status,
//! addresses, access rules (`allowedNfTypes`, `allowedNfDomains`), slices and services.

use serde_json::{Map, Value};
use std::net::{Ipv4Addr, Ipv6Addr};

/// NFStatus / NFServiceStatus values.
pub const STATUSES: &[&str] = &[
    "REGISTERED",
    "SUSPENDED",
    "UNDISCOVERABLE",
    "CANARY_RELEASE",
];

/// NFProfile members that are not part of the registered profile: the write-only
/// indications an NF sends about what it understands in the answer, and the read-only one
/// only the NRF sets (TS 29.510 6.1.6.2.2). They are neither stored nor echoed.
const NOT_STORED: &[&str] = &[
    "nfProfileChangesSupportInd",
    "nfProfilePartialUpdateChangesSupportInd",
    "nfProfileChangesInd",
];

/// Largest accepted profile document (bytes of JSON).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// Why a profile (or a patch) is refused; becomes a 400 ProblemDetails naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ProfileError {
    /// JSON path of the offending field, e.g. `nfServices[0].versions`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ProfileError {
    ProfileError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An S-NSSAI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snssai {
    /// Slice/service type, 0..=255.
    pub sst: u8,
    /// Slice differentiator, 6 hex digits (lower case), if any.
    pub sd: Option<String>,
}

/// Access rules shared by profiles and services.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// `allowedNfTypes` (empty: any).
    pub nf_types: Vec<String>,
    /// `allowedNfDomains` as anchored patterns (empty: any).
    pub nf_domains: Vec<regex::Regex>,
}

impl Allowed {
    /// Whether a requester of `nf_type`, with FQDN `fqdn` if known, may see or call this.
    pub fn permits(&self, nf_type: &str, fqdn: Option<&str>) -> bool {
        let type_ok = self.nf_types.is_empty() || self.nf_types.iter().any(|t| t == nf_type);
        let domain_ok = self.nf_domains.is_empty()
            || fqdn.is_some_and(|f| self.nf_domains.iter().any(|r| r.is_match(f)));
        type_ok && domain_ok
    }
}

/// A service instance of a profile.
#[derive(Debug, Clone)]
pub struct Service {
    /// `serviceInstanceId`.
    pub instance_id: String,
    /// `serviceName`, e.g. `nsmf-pdusession`.
    pub name: String,
    /// `nfServiceStatus`.
    pub status: String,
    /// Service-level access rules.
    pub allowed: Allowed,
}

/// A validated NFProfile with the facts the NRF acts on.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The registered document.
    pub doc: Value,
    /// `doc` serialized once, for answers that carry many profiles (discovery).
    pub json: std::sync::Arc<str>,
    /// `nfInstanceId`, lower case.
    pub id: String,
    /// `nfType`.
    pub nf_type: String,
    /// `nfStatus`.
    pub status: String,
    /// `fqdn`, lower case.
    pub fqdn: Option<String>,
    /// `heartBeatTimer` as registered (the NRF may impose its own).
    pub heartbeat: Option<u64>,
    /// Profile-level access rules.
    pub allowed: Allowed,
    /// `sNssais` (empty: not restricted).
    pub snssais: Vec<Snssai>,
    /// Services, from `nfServices` and `nfServiceList`.
    pub services: Vec<Service>,
}

fn string_list(m: &Map<String, Value>, k: &str, at: &str) -> Result<Vec<String>, ProfileError> {
    match m.get(k) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err(bad(format!("{at}{k}"), "must not be empty (minItems 1)"));
            }
            a.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("{at}{k}[{i}]"), "must be a string"))
                })
                .collect()
        }
        Some(_) => Err(bad(format!("{at}{k}"), "must be an array")),
    }
}

fn allowed(m: &Map<String, Value>, at: &str) -> Result<Allowed, ProfileError> {
    let nf_types = string_list(m, "allowedNfTypes", at)?;
    if let Some(t) = nf_types.iter().find(|t| !crate::is_nf_type(t)) {
        return Err(bad(
            format!("{at}allowedNfTypes"),
            format!("{t:?} is not an NFType"),
        ));
    }
    let mut nf_domains = Vec::new();
    for (i, p) in string_list(m, "allowedNfDomains", at)?.iter().enumerate() {
        if p.len() > 256 {
            return Err(bad(
                format!("{at}allowedNfDomains[{i}]"),
                "pattern longer than 256 characters",
            ));
        }
        let r = regex::RegexBuilder::new(&format!("^(?:{p})$"))
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| {
                bad(
                    format!("{at}allowedNfDomains[{i}]"),
                    "not a valid regular expression",
                )
            })?;
        nf_domains.push(r);
    }
    Ok(Allowed {
        nf_types,
        nf_domains,
    })
}

fn status(m: &Map<String, Value>, k: &str, at: &str) -> Result<String, ProfileError> {
    match m.get(k).and_then(Value::as_str) {
        Some(s) if STATUSES.contains(&s) => Ok(s.to_string()),
        Some(s) => Err(bad(
            format!("{at}{k}"),
            format!("{s:?} is not one of {}", STATUSES.join(", ")),
        )),
        None => Err(bad(format!("{at}{k}"), "is required (a string)")),
    }
}

fn uint(m: &Map<String, Value>, k: &str, lo: u64, hi: u64) -> Result<Option<u64>, ProfileError> {
    match m.get(k) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(bad(k, format!("must be an integer from {lo} to {hi}"))),
        },
    }
}

fn valid_fqdn(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 253
        && f.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn service(v: &Value, at: &str) -> Result<Service, ProfileError> {
    let m = v
        .as_object()
        .ok_or_else(|| bad(at, "must be an NFService object"))?;
    let at = format!("{at}.");
    let s = |k: &str| -> Result<String, ProfileError> {
        match m.get(k).and_then(Value::as_str) {
            Some(x) if !x.is_empty() => Ok(x.to_string()),
            _ => Err(bad(format!("{at}{k}"), "is required (a non-empty string)")),
        }
    };
    let instance_id = s("serviceInstanceId")?;
    let name = s("serviceName")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(bad(
            format!("{at}serviceName"),
            "must be a 3GPP service name such as nsmf-pdusession",
        ));
    }
    match m.get("versions") {
        Some(Value::Array(a)) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                let ok = v.get("apiVersionInUri").and_then(Value::as_str).is_some()
                    && v.get("apiFullVersion").and_then(Value::as_str).is_some();
                if !ok {
                    return Err(bad(
                        format!("{at}versions[{i}]"),
                        "needs apiVersionInUri and apiFullVersion strings",
                    ));
                }
            }
        }
        _ => {
            return Err(bad(
                format!("{at}versions"),
                "is required (a non-empty array)",
            ))
        }
    }
    match m.get("scheme").and_then(Value::as_str) {
        Some("http" | "https") => {}
        _ => return Err(bad(format!("{at}scheme"), "must be \"http\" or \"https\"")),
    }
    Ok(Service {
        instance_id,
        name,
        status: status(m, "nfServiceStatus", &at)?,
        allowed: allowed(m, &at)?,
    })
}

impl Profile {
    /// Validates a registration body for the instance `path_id`.
    pub fn parse(path_id: &str, body: &Value) -> Result<Profile, ProfileError> {
        let id = crate::canonical_uuid(path_id)
            .ok_or_else(|| bad("nfInstanceId", "the path must end in a UUID"))?;
        let m = body
            .as_object()
            .ok_or_else(|| bad("NFProfile", "the body must be a JSON object"))?;
        match m.get("nfInstanceId").and_then(Value::as_str) {
            Some(b) if crate::canonical_uuid(b).as_deref() == Some(id.as_str()) => {}
            Some(_) => {
                return Err(bad(
                    "nfInstanceId",
                    "must equal the nfInstanceId in the path",
                ))
            }
            None => return Err(bad("nfInstanceId", "is required")),
        }
        let nf_type = match m.get("nfType").and_then(Value::as_str) {
            Some(t) if crate::is_nf_type(t) => t.to_string(),
            Some(t) => return Err(bad("nfType", format!("{t:?} is not an NFType"))),
            None => return Err(bad("nfType", "is required")),
        };
        let st = status(m, "nfStatus", "")?;
        let fqdn = match m.get("fqdn") {
            None => None,
            Some(Value::String(f)) if valid_fqdn(f) => Some(f.to_ascii_lowercase()),
            Some(_) => return Err(bad("fqdn", "must be a valid FQDN")),
        };
        let v4 = string_list(m, "ipv4Addresses", "")?;
        if let Some(a) = v4.iter().find(|a| a.parse::<Ipv4Addr>().is_err()) {
            return Err(bad(
                "ipv4Addresses",
                format!("{a:?} is not an IPv4 address"),
            ));
        }
        let v6 = string_list(m, "ipv6Addresses", "")?;
        if let Some(a) = v6.iter().find(|a| a.parse::<Ipv6Addr>().is_err()) {
            return Err(bad(
                "ipv6Addresses",
                format!("{a:?} is not an IPv6 address"),
            ));
        }
        if fqdn.is_none() && v4.is_empty() && v6.is_empty() {
            return Err(bad(
                "fqdn",
                "one of fqdn, ipv4Addresses or ipv6Addresses is required",
            ));
        }
        let heartbeat = uint(m, "heartBeatTimer", 1, 86_400)?;
        uint(m, "priority", 0, 65_535)?;
        uint(m, "capacity", 0, 65_535)?;
        uint(m, "load", 0, 100)?;
        let mut snssais = Vec::new();
        if let Some(v) = m.get("sNssais") {
            let a = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad("sNssais", "must be a non-empty array"))?;
            for (i, s) in a.iter().enumerate() {
                snssais.push(snssai(s).ok_or_else(|| {
                    bad(
                        format!("sNssais[{i}]"),
                        "needs sst 0..255 and an optional 6-hex-digit sd",
                    )
                })?);
            }
        }
        let mut services = Vec::new();
        if let Some(v) = m.get("nfServices") {
            let a = v
                .as_array()
                .ok_or_else(|| bad("nfServices", "must be an array"))?;
            for (i, s) in a.iter().enumerate() {
                services.push(service(s, &format!("nfServices[{i}]"))?);
            }
        }
        if let Some(v) = m.get("nfServiceList") {
            let o = v.as_object().ok_or_else(|| {
                bad(
                    "nfServiceList",
                    "must be a map of serviceInstanceId to NFService",
                )
            })?;
            for (k, s) in o {
                let svc = service(s, &format!("nfServiceList.{k}"))?;
                if &svc.instance_id != k {
                    return Err(bad(
                        format!("nfServiceList.{k}"),
                        "key must equal serviceInstanceId",
                    ));
                }
                services.push(svc);
            }
        }
        let mut ids: Vec<&str> = services.iter().map(|s| s.instance_id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("nfServices", "serviceInstanceId values must be unique"));
        }
        let mut doc = body.clone();
        if let Some(o) = doc.as_object_mut() {
            for k in NOT_STORED {
                o.remove(*k);
            }
        }
        Ok(Profile {
            json: doc.to_string().into(),
            doc,
            id,
            nf_type,
            status: st,
            fqdn,
            heartbeat,
            allowed: allowed(m, "")?,
            snssais,
            services,
        })
    }

    /// Applies a JSON Patch (RFC 6902; TS 29.510 NFUpdate) and re-validates. The instance
    /// ID and NF type cannot change; on any error the profile is unchanged.
    pub fn patched(&self, patch: &Value) -> Result<Profile, ProfileError> {
        let ops: json_patch::Patch = serde_json::from_value(patch.clone())
            .map_err(|e| bad("PatchItem", format!("not a JSON Patch document: {e}")))?;
        let mut doc = self.doc.clone();
        json_patch::patch(&mut doc, &ops).map_err(|e| bad("PatchItem", e.to_string()))?;
        let next = Profile::parse(&self.id, &doc)?;
        if next.nf_type != self.nf_type {
            return Err(bad(
                "nfType",
                "cannot be changed by an update; deregister first",
            ));
        }
        Ok(next)
    }

    /// Whether the profile can be discovered or targeted now.
    pub fn is_available(&self) -> bool {
        self.status == "REGISTERED"
    }
}

/// Parses an S-NSSAI object (`{"sst": 1, "sd": "0000ff"}`).
pub fn snssai(v: &Value) -> Option<Snssai> {
    let sst = u8::try_from(v.get("sst")?.as_u64()?).ok()?;
    let sd = match v.get("sd") {
        None => None,
        Some(Value::String(s)) if s.len() == 6 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(s.to_ascii_lowercase())
        }
        Some(_) => return None,
    };
    Some(Snssai { sst, sd })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";

    pub(crate) fn smf() -> Value {
        json!({
            "nfInstanceId": SMF, "nfType": "SMF", "nfStatus": "REGISTERED",
            "fqdn": "smf1.5gc.mnc001.mcc262.3gppnetwork.org", "heartBeatTimer": 30,
            "sNssais": [{"sst": 1, "sd": "0000FF"}],
            "allowedNfTypes": ["AMF", "NEF"],
            "nfServices": [{"serviceInstanceId": "1", "serviceName": "nsmf-pdusession",
                "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.2.0"}],
                "scheme": "https", "nfServiceStatus": "REGISTERED"}]
        })
    }

    #[test]
    fn ts29510_write_only_and_read_only_indications_are_not_stored() {
        let mut d = smf();
        d["nfProfileChangesSupportInd"] = json!(true);
        d["nfProfilePartialUpdateChangesSupportInd"] = json!(true);
        d["nfProfileChangesInd"] = json!(true);
        let p = Profile::parse(SMF, &d).unwrap();
        assert_eq!(p.doc, smf());
    }

    #[test]
    fn valid_profile_keeps_its_document_and_facts() {
        let p = Profile::parse(&SMF.to_uppercase(), &smf()).unwrap();
        assert_eq!(p.id, SMF);
        assert_eq!(p.services[0].name, "nsmf-pdusession");
        assert_eq!(
            p.snssais,
            vec![Snssai {
                sst: 1,
                sd: Some("0000ff".into())
            }]
        );
        assert!(p.allowed.permits("AMF", None) && !p.allowed.permits("UDM", None));
        assert_eq!(p.doc, smf());
    }

    /// free5GC #947: a path-traversal nfInstanceId panicked the NRF. Here it is a named 400.
    #[test]
    fn free5gc_947_non_uuid_and_traversal_instance_ids_are_refused() {
        for id in [
            "../../etc/passwd",
            "",
            "5b0d6c53",
            "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c1z",
        ] {
            assert_eq!(
                Profile::parse(id, &smf()).unwrap_err().field,
                "nfInstanceId"
            );
        }
        let other = "00000000-0000-4000-8000-000000000000";
        assert_eq!(
            Profile::parse(other, &smf()).unwrap_err().field,
            "nfInstanceId"
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"nfType": "TOASTER"}), "nfType"),
            (json!({"nfStatus": "ONLINE"}), "nfStatus"),
            (json!({"fqdn": "bad..name"}), "fqdn"),
            (json!({"heartBeatTimer": 0}), "heartBeatTimer"),
            (json!({"load": 101}), "load"),
            (json!({"ipv4Addresses": ["300.1.1.1"]}), "ipv4Addresses"),
            (json!({"allowedNfTypes": ["HACKER"]}), "allowedNfTypes"),
            (
                json!({"allowedNfDomains": ["(unclosed"]}),
                "allowedNfDomains[0]",
            ),
            (json!({"sNssais": [{"sst": 256}]}), "sNssais[0]"),
            (
                json!({"nfServices": [{"serviceInstanceId": "1", "serviceName": "x", "versions": [], "scheme": "https", "nfServiceStatus": "REGISTERED"}]}),
                "nfServices[0].versions",
            ),
            (
                json!({"nfServices": [{"serviceInstanceId": "1", "serviceName": "x", "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1"}], "scheme": "ftp", "nfServiceStatus": "REGISTERED"}]}),
                "nfServices[0].scheme",
            ),
        ];
        for (over, field) in cases {
            let mut d = smf();
            for (k, v) in over.as_object().unwrap() {
                d[k] = v.clone();
            }
            assert_eq!(Profile::parse(SMF, &d).unwrap_err().field, field, "{over}");
        }
        let mut d = smf();
        d.as_object_mut().unwrap().remove("fqdn");
        assert_eq!(Profile::parse(SMF, &d).unwrap_err().field, "fqdn");
        assert_eq!(
            Profile::parse(SMF, &json!([1])).unwrap_err().field,
            "NFProfile"
        );
    }

    #[test]
    fn heartbeat_patch_applies_and_bad_patches_change_nothing() {
        let p = Profile::parse(SMF, &smf()).unwrap();
        let q = p
            .patched(&json!([{"op": "replace", "path": "/nfStatus", "value": "SUSPENDED"}]))
            .unwrap();
        assert_eq!(q.status, "SUSPENDED");
        for patch in [
            json!([{"op": "replace", "path": "/nfType", "value": "AMF"}]),
            json!([{"op": "replace", "path": "/nfInstanceId", "value": "00000000-0000-4000-8000-000000000000"}]),
            json!([{"op": "remove", "path": "/nope"}]),
            json!({"op": "replace"}),
            json!([{"op": "replace", "path": "/nfStatus", "value": "BROKEN"}]),
        ] {
            assert!(p.patched(&patch).is_err(), "{patch}");
        }
        assert_eq!(p.doc, smf());
    }

    #[test]
    fn allowed_nf_domains_are_anchored_patterns() {
        let mut d = smf();
        d["allowedNfDomains"] = json!([".*\\.mnc001\\.mcc262\\.3gppnetwork\\.org"]);
        let p = Profile::parse(SMF, &d).unwrap();
        assert!(p
            .allowed
            .permits("AMF", Some("amf1.5gc.mnc001.mcc262.3gppnetwork.org")));
        assert!(!p
            .allowed
            .permits("AMF", Some("amf1.mnc001.mcc262.3gppnetwork.org.evil.com")));
        assert!(
            !p.allowed.permits("AMF", None),
            "domain rules need a known requester FQDN"
        );
    }
}
