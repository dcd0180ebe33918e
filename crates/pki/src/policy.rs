//! Decides what a request may get under a role: names, SANs, validity, usages, and for the
//! `3gpp-sba` profile every TS 33.310 6.1.3c rule. Pure: the clock and issuer facts are
//! passed in.

use crate::csr::CsrInfo;
use crate::der::GeneralName;
use crate::fields::glob;
use crate::fields::{bool_of, duration_of, list_of, str_of};
use crate::role::{Profile, Role, SBA_MAX_VALIDITY};
use crate::sba;
use crate::PkiError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the issuer allows and the mount defaults.
#[derive(Debug, Clone)]
pub struct Context {
    /// Now, unix seconds.
    pub now: i64,
    /// Issuer's NotAfter, unix seconds.
    pub issuer_not_after: i64,
    /// `leaf_not_after_behavior`: truncate instead of error when the leaf would outlive the CA.
    pub truncate_to_issuer: bool,
    /// `leaf_not_after_behavior = permit`: allow leaves to outlive the CA.
    pub permit_beyond_issuer: bool,
    /// Mount default TTL (seconds).
    pub default_ttl: u64,
    /// Mount max TTL (seconds).
    pub max_ttl: u64,
    /// CRL distribution point URLs (`config/urls`).
    pub crl_urls: Vec<String>,
    /// The caller's login metadata (token `meta`), for roles with `provenance_extensions`.
    pub identity: BTreeMap<String, String>,
}

/// An approved certificate request.
#[derive(Debug, Clone, PartialEq)]
pub struct Approved {
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// Subject fields from the role: (C, O, OU, L, ST, street, postal).
    pub subject: SubjectFields,
    /// SANs in order.
    pub sans: Vec<GeneralName>,
    /// NotBefore / NotAfter (unix).
    pub not_before: i64,
    /// NotAfter (unix).
    pub not_after: i64,
    /// EKU names.
    pub ext_key_usage: Vec<String>,
    /// KU names.
    pub key_usage: Vec<String>,
    /// nfTypes extension content (SBA only).
    pub nf_types: Option<Vec<String>>,
    /// Signer-identity extensions (last OID arc under [`crate::identity::ARC`], value).
    pub identity_extensions: Vec<(u64, String)>,
    /// The profile applied.
    pub profile: Profile,
    /// Warnings for the response.
    pub warnings: Vec<String>,
}

/// Subject attributes that come from the role.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectFields {
    pub country: Vec<String>,
    pub organization: Vec<String>,
    pub ou: Vec<String>,
    pub locality: Vec<String>,
    pub province: Vec<String>,
    pub street_address: Vec<String>,
    pub postal_code: Vec<String>,
}

/// Request fields accepted by issue/sign.
pub const REQUEST_FIELDS: &[&str] = &[
    "common_name",
    "alt_names",
    "ip_sans",
    "uri_sans",
    "other_sans",
    "ttl",
    "format",
    "private_key_format",
    "exclude_cn_from_sans",
    "not_after",
    "remove_roots_from_chain",
    "user_ids",
    "key_type",
    "key_bits",
    "csr",
    "nf_instance_id",
    "nf_type",
    "serial_number",
    "issuer_ref",
];

/// RFC 1123 hostname check, with an optional leading `*.` label.
pub fn valid_hostname(name: &str) -> bool {
    let n = name.strip_prefix("*.").unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn name_allowed(role: &Role, name: &str) -> Result<(), String> {
    if name.contains('*') && !name.starts_with("*.") {
        return Err(format!(
            "{name:?}: a wildcard is only allowed as the whole leftmost label"
        ));
    }
    if name.starts_with("*.") && !role.allow_wildcard_certificates {
        return Err(format!(
            "{name:?}: wildcard certificates are not allowed by this role"
        ));
    }
    if role.enforce_hostnames && !valid_hostname(name) {
        return Err(format!("{name:?} is not a valid hostname"));
    }
    if role.allow_any_name {
        return Ok(());
    }
    if role.allow_localhost && (name == "localhost" || name == "localdomain") {
        return Ok(());
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    for d in &role.allowed_domains {
        if role.allow_bare_domains && name == d {
            return Ok(());
        }
        if role.allow_subdomains
            && base.len() > d.len()
            && base.ends_with(d.as_str())
            && base[..base.len() - d.len()].ends_with('.')
        {
            return Ok(());
        }
        if role.allow_subdomains && name.starts_with("*.") && base == d {
            return Ok(());
        }
        if role.allow_glob_domains && d.contains('*') && glob(d, name) {
            return Ok(());
        }
    }
    Err(format!("subject name {name:?} is not allowed by this role"))
}

fn ttl_fields(
    role: &Role,
    d: &Map<String, Value>,
    ctx: &Context,
    warnings: &mut Vec<String>,
) -> Result<(i64, i64), PkiError> {
    let not_before = ctx.now - role.not_before_duration as i64;
    let requested = duration_of(d, "ttl")?;
    let not_after_field = str_of(d, "not_after")?;
    let max = if role.max_ttl > 0 {
        role.max_ttl
    } else {
        ctx.max_ttl
    };
    let mut not_after = if !not_after_field.is_empty() {
        let t = time::OffsetDateTime::parse(
            &not_after_field,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| {
            PkiError::field(
                "not_after",
                "must be an RFC 3339 time such as 2027-01-02T15:04:05Z",
            )
        })?;
        t.unix_timestamp()
    } else {
        let ttl = if requested > 0 {
            requested
        } else if role.ttl > 0 {
            role.ttl
        } else {
            ctx.default_ttl.min(max)
        };
        if role.profile == Profile::Sba && ttl > SBA_MAX_VALIDITY {
            return Err(PkiError::Profile(format!("TS 33.310 6.1.3c: validity of SBA certificates is at most 3 years; requested ttl {ttl}s")));
        }
        let ttl = if ttl > max {
            warnings.push(format!(
                "TTL {ttl}s is greater than the role's max_ttl of {max}s; capping accordingly"
            ));
            max
        } else {
            ttl
        };
        ctx.now + ttl as i64
    };
    if not_after <= ctx.now {
        return Err(PkiError::field("not_after", "is in the past"));
    }
    if role.profile == Profile::Sba && not_after - not_before > SBA_MAX_VALIDITY as i64 {
        return Err(PkiError::Profile(
            "TS 33.310 6.1.3c: validity of SBA certificates is at most 3 years".into(),
        ));
    }
    if not_after > ctx.issuer_not_after && !ctx.permit_beyond_issuer {
        if ctx.truncate_to_issuer {
            warnings.push("NotAfter truncated to the issuer's NotAfter".into());
            not_after = ctx.issuer_not_after;
        } else {
            return Err(PkiError::field(
                "ttl",
                "the certificate would outlive its issuer (issuer leaf_not_after_behavior is err)",
            ));
        }
    }
    Ok((not_before, not_after))
}

/// Evaluates an issue (no CSR) or sign (with CSR) request.
pub fn evaluate(
    role: &Role,
    d: &Map<String, Value>,
    csr: Option<&CsrInfo>,
    ctx: &Context,
) -> Result<Approved, PkiError> {
    let mut warnings = Vec::new();
    if let Some(k) = d.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        warnings.push(format!(
            "Endpoint ignored these unrecognized parameters: [{k}]"
        ));
    }
    if !list_of(d, "other_sans")?.is_empty() {
        return Err(PkiError::field(
            "other_sans",
            "otherName SANs are not supported",
        ));
    }
    let mut cn = str_of(d, "common_name")?;
    let mut dns: Vec<String> = list_of(d, "alt_names")?;
    let mut ips: Vec<String> = list_of(d, "ip_sans")?;
    let mut uris: Vec<String> = list_of(d, "uri_sans")?;
    if let Some(c) = csr {
        if role.use_csr_common_name && cn.is_empty() {
            cn = c.common_name.clone().unwrap_or_default();
        }
        if role.use_csr_sans {
            dns.extend(c.dns.iter().cloned());
            ips.extend(c.ips.iter().map(|i| i.to_string()));
            uris.extend(c.uris.iter().cloned());
        }
    }
    let identity_extensions = if role.provenance_extensions {
        if let Some(b) = ctx
            .identity
            .get("build_signer_uri")
            .filter(|b| !b.is_empty())
        {
            // The builder identity comes from the login, not the request.
            if let Some(u) = uris.iter().find(|u| *u != b) {
                return Err(PkiError::NotAllowed(format!(
                    "URI SAN {u:?} is not the caller's build_signer_uri {b:?} \
                     (provenance_extensions=true)"
                )));
            }
            if uris.is_empty() {
                uris.push(b.clone());
            }
        }
        crate::identity::from_metadata(&ctx.identity)?
    } else {
        Vec::new()
    };
    let exclude_cn = bool_of(d, "exclude_cn_from_sans", false)?;
    if cn.is_empty() && role.require_cn && role.profile != Profile::Sba {
        return Err(PkiError::field("common_name", "is required by this role"));
    }
    let mut names: Vec<String> = Vec::new();
    if !cn.is_empty() && !exclude_cn && !cn.contains('@') {
        names.push(cn.clone());
    }
    for n in dns {
        let n = n.to_ascii_lowercase();
        if !names.iter().any(|x| x.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    }
    if !cn.is_empty() {
        name_allowed(role, &cn).map_err(PkiError::NotAllowed)?;
    }
    for n in &names {
        name_allowed(role, n).map_err(PkiError::NotAllowed)?;
    }
    let mut ip_addrs: Vec<IpAddr> = Vec::new();
    for ip in &ips {
        let a: IpAddr = ip
            .parse()
            .map_err(|_| PkiError::field("ip_sans", &format!("{ip:?} is not an IP address")))?;
        if !role.allow_ip_sans {
            return Err(PkiError::NotAllowed(format!(
                "IP SAN {ip} is not allowed by this role (allow_ip_sans=false)"
            )));
        }
        if !ip_addrs.contains(&a) {
            ip_addrs.push(a);
        }
    }
    for u in &uris {
        if !role.allowed_uri_sans.iter().any(|p| glob(p, u)) {
            return Err(PkiError::NotAllowed(format!(
                "URI SAN {u:?} is not allowed by this role's allowed_uri_sans"
            )));
        }
    }
    let mut sans: Vec<GeneralName> = Vec::new();
    let mut nf_types = None;
    if role.profile == Profile::Sba {
        let clause = "TS 33.310 6.1.3c";
        let id = str_of(d, "nf_instance_id")?;
        if id.is_empty() {
            return Err(PkiError::Profile(format!(
                "{clause}: nf_instance_id (a UUID) is required"
            )));
        }
        let id = sba::parse_nf_instance_id(&id).ok_or_else(|| {
            PkiError::Profile(format!("{clause}: nf_instance_id {id:?} is not a UUID"))
        })?;
        let types = str_of(d, "nf_type")?;
        if types.trim().is_empty() {
            return Err(PkiError::Profile(format!(
                "{clause}: nf_type is required (a TS 29.510 NFType value)"
            )));
        }
        let types = sba::parse_nf_types(&types).map_err(|t| {
            PkiError::Profile(format!("{clause}: {t:?} is not a TS 29.510 NFType value"))
        })?;
        if role.server_flag && names.is_empty() {
            return Err(PkiError::Profile(format!(
                "{clause}: a server certificate needs a DNS SAN FQDN; IP-only SANs are refused"
            )));
        }
        for n in &names {
            if !n.contains('.') {
                return Err(PkiError::Profile(format!(
                    "{clause}: DNS SAN {n:?} is not a fully qualified domain name"
                )));
            }
        }
        sans.push(GeneralName::Uri(format!("urn:uuid:{id}")));
        nf_types = Some(types);
    }
    sans.extend(names.iter().cloned().map(GeneralName::Dns));
    sans.extend(ip_addrs.into_iter().map(GeneralName::Ip));
    for u in uris {
        let g = GeneralName::Uri(u);
        if !sans.contains(&g) {
            sans.push(g);
        }
    }
    if role.profile == Profile::Sba && ctx.crl_urls.is_empty() {
        return Err(PkiError::Profile("TS 33.310 6.1.3c: cRLDistributionPoints is mandatory; set crl_distribution_points in config/urls first".into()));
    }
    let (not_before, not_after) = ttl_fields(role, d, ctx, &mut warnings)?;
    let mut eku = Vec::new();
    if role.server_flag {
        eku.push("ServerAuth".to_string());
    }
    if role.client_flag {
        eku.push("ClientAuth".to_string());
    }
    if role.code_signing_flag {
        eku.push("CodeSigning".to_string());
    }
    if role.email_protection_flag {
        eku.push("EmailProtection".to_string());
    }
    for e in &role.ext_key_usage {
        if !eku.contains(e) {
            eku.push(e.clone());
        }
    }
    Ok(Approved {
        common_name: (!cn.is_empty()).then_some(cn),
        subject: SubjectFields {
            country: role.country.clone(),
            organization: role.organization.clone(),
            ou: role.ou.clone(),
            locality: role.locality.clone(),
            province: role.province.clone(),
            street_address: role.street_address.clone(),
            postal_code: role.postal_code.clone(),
        },
        sans,
        not_before,
        not_after,
        ext_key_usage: eku,
        key_usage: role.key_usage.clone(),
        nf_types,
        identity_extensions,
        profile: role.profile,
        warnings,
    })
}
