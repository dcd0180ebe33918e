//! Nnrf_AccessToken (TS 29.510 6.3.5; TS 33.501 13.4.1): parse an AccessTokenReq, decide
//! whether the caller may have the token, and build its claims.
//!
//! The caller is who its certificate says ([`NfIdentity`]); `nfInstanceId` and `nfType` in
//! the form must agree with it. The requester must be registered. Every requested service
//! must be exposed by a producer of the target that allows the requester, and the NRF's own
//! services (`nnrf-nfm`, `nnrf-disc`) are no exception: asking for `targetNfType=NRF` cannot
//! widen a scope (the free5GC CVE-2025-66719 pattern).

use crate::identity::NfIdentity;
use crate::profile::Profile;
use serde_json::{json, Value};

/// AccessTokenErr `error` values (TS 29.510 6.3.5.2.4, RFC 6749 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request.
    InvalidRequest,
    /// The client is not who it claims, or is unknown.
    InvalidClient,
    /// Not used by client credentials (kept for completeness).
    InvalidGrant,
    /// The client may not have this token.
    UnauthorizedClient,
    /// Not `client_credentials`.
    UnsupportedGrantType,
    /// The scope names services the target does not offer.
    InvalidScope,
}

impl ErrorCode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
        }
    }
}

/// A refusal: the code and a description for `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct TokenError {
    /// AccessTokenErr code.
    pub code: ErrorCode,
    /// Human-readable reason (never a credential).
    pub description: String,
}

fn err(code: ErrorCode, d: impl Into<String>) -> TokenError {
    TokenError {
        code,
        description: d.into(),
    }
}

/// Form fields TS 29.510 defines for AccessTokenReq (Rel-18).
const FIELDS: &[&str] = &[
    "grant_type",
    "nfInstanceId",
    "nfType",
    "targetNfType",
    "scope",
    "targetNfInstanceId",
    "requesterPlmn",
    "requesterPlmnList",
    "requesterSnssaiList",
    "requesterFqdn",
    "requesterSnpnList",
    "targetPlmn",
    "targetSnpn",
    "targetSnssaiList",
    "targetNsiList",
    "targetNfSetId",
    "targetNfServiceSetId",
    "hnrfAccessTokenUri",
    "sourceNfInstanceId",
    "vendorId",
    "analyticsIds",
    "requesterInterIndList",
    "sourceVendorId",
];

/// Array fields a form carries as repeated keys: `targetNsiList` is `style: form, explode:
/// true` in TS 29.510's encoding object, and the others are arrays without an encoding entry,
/// which OpenAPI 3.0 also explodes. Every other field appears at most once (the object and
/// list fields with `contentType: application/json` are one JSON value each).
const REPEATABLE: &[&str] = &["targetNsiList", "analyticsIds", "requesterInterIndList"];

/// A parsed AccessTokenReq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `nfInstanceId` (lower case).
    pub nf_instance_id: String,
    /// `nfType`, if sent.
    pub nf_type: Option<String>,
    /// `targetNfType`, if sent.
    pub target_nf_type: Option<String>,
    /// `targetNfInstanceId` (lower case), if sent.
    pub target_nf_instance_id: Option<String>,
    /// Scope tokens, in request order, deduplicated.
    pub scope: Vec<String>,
}

/// Parses the decoded form pairs of `POST /oauth2/token`.
pub fn parse(form: &[(String, String)]) -> Result<TokenRequest, TokenError> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in form {
        if !FIELDS.contains(&k.as_str()) {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("unknown parameter {k:?}"),
            ));
        }
        if !seen.insert(k.as_str()) && !REPEATABLE.contains(&k.as_str()) {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("parameter {k:?} is repeated"),
            ));
        }
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        Some("client_credentials") => {}
        Some(g) => {
            return Err(err(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {g:?}: only client_credentials is supported"),
            ))
        }
        None => return Err(err(ErrorCode::InvalidRequest, "grant_type is required")),
    }
    let nf_instance_id = get("nfInstanceId")
        .ok_or_else(|| err(ErrorCode::InvalidRequest, "nfInstanceId is required"))
        .and_then(|v| {
            crate::canonical_uuid(v)
                .ok_or_else(|| err(ErrorCode::InvalidRequest, "nfInstanceId must be a UUID"))
        })?;
    let nf_type_of = |k: &str| -> Result<Option<String>, TokenError> {
        match get(k) {
            None => Ok(None),
            Some(t) if crate::is_nf_type(t) => Ok(Some(t.to_string())),
            Some(t) => Err(err(
                ErrorCode::InvalidRequest,
                format!("{k}: {t:?} is not an NFType"),
            )),
        }
    };
    let nf_type = nf_type_of("nfType")?;
    let target_nf_type = nf_type_of("targetNfType")?;
    let target_nf_instance_id = match get("targetNfInstanceId") {
        None => None,
        Some(v) => Some(crate::canonical_uuid(v).ok_or_else(|| {
            err(
                ErrorCode::InvalidRequest,
                "targetNfInstanceId must be a UUID",
            )
        })?),
    };
    let raw = get("scope").ok_or_else(|| err(ErrorCode::InvalidRequest, "scope is required"))?;
    let ok = !raw.is_empty()
        && raw.split(' ').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
        });
    if !ok || raw.len() > 4096 {
        return Err(err(
            ErrorCode::InvalidScope,
            "scope must be service names separated by single spaces",
        ));
    }
    let mut scope: Vec<String> = Vec::new();
    for t in raw.split(' ') {
        if !scope.iter().any(|s| s == t) {
            scope.push(t.to_string());
        }
    }
    if target_nf_type.is_none() && target_nf_instance_id.is_none() {
        return Err(err(
            ErrorCode::InvalidRequest,
            "targetNfType or targetNfInstanceId is required",
        ));
    }
    Ok(TokenRequest {
        nf_instance_id,
        nf_type,
        target_nf_type,
        target_nf_instance_id,
        scope,
    })
}

/// The services an NRF itself exposes, for `targetNfType=NRF`.
pub const NRF_SERVICES: &[&str] = &["nnrf-nfm", "nnrf-disc"];

/// What the decision needs to know about the NRF and the registry.
pub struct Context<'a> {
    /// This NRF's instance ID (the `iss`).
    pub nrf_instance_id: &'a str,
    /// Token lifetime, seconds.
    pub ttl: u64,
    /// Now, unix seconds.
    pub now: u64,
    /// The requester's registered profile, if any.
    pub requester: Option<&'a Profile>,
    /// Candidate producers: every registered profile of the target type, or the one target
    /// instance.
    pub producers: &'a [&'a Profile],
}

/// The service name a scope token refers to (`nsmf-pdusession`, or the part before the
/// first `:` of an additional scope such as `nnrf-disc:nf-instances:read-complete-profile`).
fn service_of(scope: &str) -> &str {
    scope.split(':').next().unwrap_or(scope)
}

/// Decides a token request from the caller `caller`; returns the claims to sign.
pub fn authorize(
    req: &TokenRequest,
    caller: &NfIdentity,
    cx: &Context<'_>,
) -> Result<Value, TokenError> {
    if req.nf_instance_id != caller.instance_id {
        return Err(err(
            ErrorCode::InvalidClient,
            "nfInstanceId is not the NF instance ID of the client certificate",
        ));
    }
    if let Some(t) = &req.nf_type {
        if !caller.has_type(t) {
            return Err(err(
                ErrorCode::InvalidClient,
                format!("nfType {t} is not an NF type of the client certificate"),
            ));
        }
    }
    let requester = cx.requester.filter(|p| p.is_available()).ok_or_else(|| {
        err(
            ErrorCode::InvalidClient,
            "the requester is not registered with this NRF",
        )
    })?;
    if !caller.has_type(&requester.nf_type) {
        return Err(err(
            ErrorCode::InvalidClient,
            "the registered profile's nfType is not in the client certificate",
        ));
    }
    let rtype = requester.nf_type.as_str();
    let rfqdn = requester.fqdn.as_deref();
    let scope = req.scope.join(" ");
    let nrf_target = req.target_nf_type.as_deref() == Some("NRF")
        || req.target_nf_instance_id.as_deref() == Some(cx.nrf_instance_id);
    let aud = if nrf_target {
        if let Some(bad) = req
            .scope
            .iter()
            .find(|s| !NRF_SERVICES.contains(&service_of(s)))
        {
            return Err(err(
                ErrorCode::InvalidScope,
                format!("the NRF does not expose {bad:?}; it offers only nnrf-nfm and nnrf-disc"),
            ));
        }
        json!("NRF")
    } else {
        if cx.producers.is_empty() {
            return Err(err(
                ErrorCode::InvalidScope,
                "no registered producer matches targetNfType/targetNfInstanceId",
            ));
        }
        for p in cx.producers {
            if let Some(t) = &req.target_nf_type {
                if &p.nf_type != t {
                    return Err(err(
                        ErrorCode::InvalidRequest,
                        "targetNfType does not match the targetNfInstanceId's profile",
                    ));
                }
            }
        }
        for s in &req.scope {
            let name = service_of(s);
            let exposing: Vec<&&Profile> = cx
                .producers
                .iter()
                .filter(|p| p.is_available())
                .filter(|p| {
                    p.services
                        .iter()
                        .any(|v| v.name == name && v.status == "REGISTERED")
                })
                .collect();
            if exposing.is_empty() {
                return Err(err(
                    ErrorCode::InvalidScope,
                    format!("no producer of the target exposes the service {name:?}"),
                ));
            }
            let allowed = exposing.iter().any(|p| {
                p.allowed.permits(rtype, rfqdn)
                    && p.services
                        .iter()
                        .any(|v| v.name == name && v.allowed.permits(rtype, rfqdn))
            });
            if !allowed {
                return Err(err(
                    ErrorCode::UnauthorizedClient,
                    format!("producers of {name:?} do not allow NF type {rtype} (allowedNfTypes/allowedNfDomains)"),
                ));
            }
        }
        match &req.target_nf_instance_id {
            Some(id) => json!([id]),
            None => json!(req.target_nf_type.clone().unwrap_or_default()),
        }
    };
    Ok(json!({
        "iss": cx.nrf_instance_id,
        "sub": caller.instance_id,
        "aud": aud,
        "scope": scope,
        "iat": cx.now,
        "exp": cx.now + cx.ttl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    const NRF: &str = "11111111-1111-4111-8111-111111111111";
    const AMF: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
    const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn amf_id() -> NfIdentity {
        NfIdentity {
            instance_id: AMF.into(),
            nf_types: vec!["AMF".into()],
            fqdns: vec![],
        }
    }

    fn amf_profile() -> Profile {
        Profile::parse(AMF, &json!({"nfInstanceId": AMF, "nfType": "AMF", "nfStatus": "REGISTERED", "ipv4Addresses": ["10.0.0.1"]})).unwrap()
    }

    fn smf_profile(allowed: &[&str]) -> Profile {
        let mut d = json!({"nfInstanceId": SMF, "nfType": "SMF", "nfStatus": "REGISTERED", "fqdn": "smf1.example",
            "nfServices": [{"serviceInstanceId": "1", "serviceName": "nsmf-pdusession", "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.2.0"}], "scheme": "https", "nfServiceStatus": "REGISTERED"}]});
        if !allowed.is_empty() {
            d["allowedNfTypes"] = json!(allowed);
        }
        Profile::parse(SMF, &d).unwrap()
    }

    fn decide(f: &[(&str, &str)], caller: &NfIdentity, smf: &Profile) -> Result<Value, TokenError> {
        let req = parse(&form(f))?;
        let amf = amf_profile();
        let producers = [smf];
        let cx = Context {
            nrf_instance_id: NRF,
            ttl: 3600,
            now: 1_800_000_000,
            requester: (caller.instance_id == AMF).then_some(&amf),
            producers: &producers,
        };
        authorize(&req, caller, &cx)
    }

    const BASE: &[(&str, &str)] = &[
        ("grant_type", "client_credentials"),
        ("nfInstanceId", AMF),
        ("nfType", "AMF"),
        ("targetNfType", "SMF"),
        ("scope", "nsmf-pdusession"),
    ];

    fn with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> = BASE
            .iter()
            .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        v.extend(over.iter().filter(|(_, val)| !val.is_empty()).copied());
        v
    }

    #[test]
    fn ts33501_13_4_1_claims_iss_sub_aud_scope_exp() {
        let c = decide(BASE, &amf_id(), &smf_profile(&["AMF"])).unwrap();
        assert_eq!(c["iss"], NRF);
        assert_eq!(c["sub"], AMF);
        assert_eq!(c["aud"], "SMF");
        assert_eq!(c["scope"], "nsmf-pdusession");
        assert_eq!(c["exp"], 1_800_003_600u64);
        let c = decide(
            &with(&[("targetNfInstanceId", SMF)]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap();
        assert_eq!(
            c["aud"],
            json!([SMF]),
            "instance-specific requests name the instance"
        );
    }

    #[test]
    fn ts29510_form_encoding_repeats_only_exploded_arrays() {
        let mut f = BASE.to_vec();
        f.extend([("targetNsiList", "nsi-1"), ("targetNsiList", "nsi-2")]);
        assert!(decide(&f, &amf_id(), &smf_profile(&[])).is_ok());
        let mut f = BASE.to_vec();
        f.push(("scope", "nudm-sdm"));
        let e = decide(&f, &amf_id(), &smf_profile(&[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains("repeated"), "{}", e.description);
    }

    #[test]
    fn identity_mismatches_with_the_certificate_are_invalid_client() {
        let smf = smf_profile(&[]);
        let e = decide(&with(&[("nfInstanceId", SMF)]), &amf_id(), &smf).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient);
        let e = decide(&with(&[("nfType", "UDM")]), &amf_id(), &smf).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient);
        let stranger = NfIdentity {
            instance_id: "22222222-2222-4222-8222-222222222222".into(),
            nf_types: vec!["AMF".into()],
            fqdns: vec![],
        };
        let e = decide(
            &with(&[("nfInstanceId", "22222222-2222-4222-8222-222222222222")]),
            &stranger,
            &smf,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient, "unregistered requester");
    }

    #[test]
    fn scopes_must_be_exposed_and_allowed() {
        let e = decide(
            &with(&[("scope", "nudm-sdm")]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        let e = decide(BASE, &amf_id(), &smf_profile(&["NEF"])).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::UnauthorizedClient,
            "allowedNfTypes excludes AMF"
        );
        let e = decide(
            &with(&[("scope", "nsmf-pdusession nudm-sdm")]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::InvalidScope,
            "every scope token is checked"
        );
    }

    /// free5GC CVE-2025-66719: `targetNfType=NRF` returned any requested scope.
    #[test]
    fn cve_2025_66719_nrf_target_cannot_widen_the_scope() {
        let e = decide(
            &with(&[("targetNfType", "NRF"), ("scope", "nsmf-pdusession")]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        let e = decide(
            &with(&[("targetNfType", "NRF"), ("scope", "nnrf-disc nudm-sdm")]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        let c = decide(
            &with(&[("targetNfType", "NRF"), ("scope", "nnrf-disc")]),
            &amf_id(),
            &smf_profile(&[]),
        )
        .unwrap();
        assert_eq!(c["aud"], "NRF");
    }

    #[test]
    fn malformed_requests_get_precise_codes() {
        let cases: Vec<(Vec<(&str, &str)>, ErrorCode)> = vec![
            (
                with(&[("grant_type", "password")]),
                ErrorCode::UnsupportedGrantType,
            ),
            (
                with(&[("nfInstanceId", "../../etc")]),
                ErrorCode::InvalidRequest,
            ),
            (
                with(&[("targetNfType", "TOASTER")]),
                ErrorCode::InvalidRequest,
            ),
            (with(&[("scope", "a  b")]), ErrorCode::InvalidScope),
            (with(&[("scope", "x;rm")]), ErrorCode::InvalidScope),
            (
                with(&[("targetNfInstanceId", "nope")]),
                ErrorCode::InvalidRequest,
            ),
            (
                BASE.iter()
                    .filter(|(k, _)| *k != "scope")
                    .copied()
                    .collect(),
                ErrorCode::InvalidRequest,
            ),
            (
                BASE.iter()
                    .filter(|(k, _)| *k != "targetNfType")
                    .copied()
                    .collect(),
                ErrorCode::InvalidRequest,
            ),
            (
                {
                    let mut v = BASE.to_vec();
                    v.push(("scope", "x"));
                    v
                },
                ErrorCode::InvalidRequest,
            ),
            (
                {
                    let mut v = BASE.to_vec();
                    v.push(("client_secret", "x"));
                    v
                },
                ErrorCode::InvalidRequest,
            ),
        ];
        for (f, code) in cases {
            assert_eq!(parse(&form(&f)).unwrap_err().code, code, "{f:?}");
        }
    }
}
