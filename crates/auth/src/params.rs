//! The `token_*` fields shared by every role of every login method (Vault's `tokenutil`), and
//! CIDR bindings.

use crate::AuthError;
use custos_pki::fields::{bool_of, duration_of, int_of, list_of};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// An IPv4 or IPv6 network, `10.0.0.0/8` or a bare address (a /32 or /128).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr[/prefix]`; host bits must be zero, as Vault requires.
    pub fn parse(s: &str) -> Result<Cidr, AuthError> {
        let bad = || AuthError::invalid(format!("{s:?} is not a valid CIDR block"));
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?,
            None => max,
        };
        let c = Cidr { addr, prefix };
        if c.masked(addr) != addr {
            return Err(AuthError::invalid(format!(
                "{s:?}: address has bits set beyond the /{prefix} prefix"
            )));
        }
        Ok(c)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v) & m).into())
            }
            IpAddr::V6(v) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v) & m).into())
            }
        }
    }

    /// Whether this whole network lies inside `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl TryFrom<String> for Cidr {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        Cidr::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        format!("{}/{}", c.addr, c.prefix)
    }
}

/// Parses a list field of CIDR blocks.
pub fn cidrs_of(d: &Map<String, Value>, k: &str) -> Result<Vec<Cidr>, AuthError> {
    list_of(d, k)?
        .iter()
        .map(|s| Cidr::parse(s).map_err(|e| AuthError::invalid(format!("{k}: {e}"))))
        .collect()
}

/// Refuses `remote` unless it lies in one of `cidrs` (an empty list allows any source).
pub fn check_source(cidrs: &[Cidr], remote: Option<IpAddr>, what: &str) -> Result<(), AuthError> {
    if cidrs.is_empty() {
        return Ok(());
    }
    match remote {
        Some(ip) if cidrs.iter().any(|c| c.contains(ip)) => Ok(()),
        _ => Err(AuthError::denied(format!(
            "source address is not allowed by {what}"
        ))),
    }
}

/// What a successful login's token gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenParams {
    /// `token_policies` (alias `policies`).
    pub policies: Vec<String>,
    /// `token_ttl`, seconds (0: the system default).
    pub ttl: u64,
    /// `token_max_ttl`, seconds (0: the system maximum).
    pub max_ttl: u64,
    /// `token_period`, seconds: a periodic token renews to this TTL without a maximum.
    pub period: u64,
    /// `token_num_uses` (0: unlimited).
    pub num_uses: i64,
    /// `token_bound_cidrs`: the token works only from these networks.
    pub bound_cidrs: Vec<Cidr>,
    /// `token_no_default_policy`.
    pub no_default_policy: bool,
}

/// The names this module reads from a role request.
pub const FIELDS: &[&str] = &[
    "token_policies",
    "policies",
    "token_ttl",
    "ttl",
    "token_max_ttl",
    "max_ttl",
    "token_period",
    "period",
    "token_num_uses",
    "token_bound_cidrs",
    "bound_cidrs",
    "token_no_default_policy",
    "token_type",
    // hvac repeats the role name from the path in the body.
    "name",
    "role_name",
];

impl TokenParams {
    /// Updates from a role write; fields absent from `d` keep their value. The legacy names
    /// (`policies`, `ttl`, `max_ttl`, `period`, `bound_cidrs`) are accepted as Vault does.
    pub fn update(&mut self, d: &Map<String, Value>) -> Result<(), AuthError> {
        let pick = |new: &str, old: &str| {
            if d.contains_key(new) {
                Some(new.to_string())
            } else if d.contains_key(old) {
                Some(old.to_string())
            } else {
                None
            }
        };
        if let Some(k) = pick("token_policies", "policies") {
            let mut p: Vec<String> = list_of(d, &k)?
                .into_iter()
                .map(|s| s.to_lowercase())
                .collect();
            if p.iter().any(|x| x == "root") {
                return Err(AuthError::invalid(format!(
                    "{k}: the root policy cannot be granted by a login method"
                )));
            }
            p.sort();
            p.dedup();
            self.policies = p;
        }
        if let Some(k) = pick("token_ttl", "ttl") {
            self.ttl = duration_of(d, &k)?;
        }
        if let Some(k) = pick("token_max_ttl", "max_ttl") {
            self.max_ttl = duration_of(d, &k)?;
        }
        if let Some(k) = pick("token_period", "period") {
            self.period = duration_of(d, &k)?;
        }
        if d.contains_key("token_num_uses") {
            let n = int_of(d, "token_num_uses", 0)?;
            if n < 0 {
                return Err(AuthError::invalid("token_num_uses: must not be negative"));
            }
            self.num_uses = n;
        }
        if let Some(k) = pick("token_bound_cidrs", "bound_cidrs") {
            self.bound_cidrs = cidrs_of(d, &k)?;
        }
        if d.contains_key("token_no_default_policy") {
            self.no_default_policy = bool_of(d, "token_no_default_policy", false)?;
        }
        if let Some(t) = d.get("token_type").and_then(Value::as_str) {
            if !matches!(t, "" | "default" | "service") {
                return Err(AuthError::invalid(format!(
                    "token_type: {t:?} is not supported; logins issue service tokens"
                )));
            }
        }
        if self.max_ttl > 0 && self.ttl > self.max_ttl {
            return Err(AuthError::invalid(
                "token_ttl: must not be greater than token_max_ttl",
            ));
        }
        Ok(())
    }

    /// The fields as a role read shows them.
    pub fn to_json(&self, out: &mut Map<String, Value>) {
        let cidrs: Vec<String> = self.bound_cidrs.iter().cloned().map(String::from).collect();
        for (k, v) in [
            ("token_policies", json!(self.policies)),
            ("policies", json!(self.policies)),
            ("token_ttl", json!(self.ttl)),
            ("token_max_ttl", json!(self.max_ttl)),
            ("token_period", json!(self.period)),
            ("token_num_uses", json!(self.num_uses)),
            ("token_bound_cidrs", json!(cidrs)),
            ("token_no_default_policy", json!(self.no_default_policy)),
            ("token_type", json!("default")),
        ] {
            out.insert(k.into(), v);
        }
    }
}
