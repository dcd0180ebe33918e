//! Policy documents: `path "<pattern>" { capabilities = [...] ... }`.

use crate::pattern::Pattern;
use crate::{Denial, PolicyError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Capability {
    /// Create a new entry.
    Create = 1,
    /// Read.
    Read = 2,
    /// Update.
    Update = 4,
    /// Patch.
    Patch = 8,
    /// Delete.
    Delete = 16,
    /// List.
    List = 32,
    /// Access root-protected paths.
    Sudo = 64,
    /// Overrides everything: no access.
    Deny = 128,
}

const ALL: [(Capability, &str); 8] = [
    (Capability::Create, "create"),
    (Capability::Read, "read"),
    (Capability::Update, "update"),
    (Capability::Patch, "patch"),
    (Capability::Delete, "delete"),
    (Capability::List, "list"),
    (Capability::Sudo, "sudo"),
    (Capability::Deny, "deny"),
];

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u16);

impl Caps {
    /// Whether `c` is in the set.
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c as u16 != 0
    }
    /// Set union; `deny` absorbs everything else.
    pub fn union(self, o: Caps) -> Caps {
        let u = Caps(self.0 | o.0);
        if u.contains(Capability::Deny) {
            Caps(Capability::Deny as u16)
        } else {
            u
        }
    }
    /// True if no capability is granted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Capability names in Vault's order.
    pub fn names(self) -> Vec<&'static str> {
        ALL.iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect()
    }
    fn parse(name: &str) -> Option<Capability> {
        ALL.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }
}

/// Parameter constraints of one path rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamRules {
    allowed: Option<BTreeMap<String, Vec<Value>>>,
    denied: BTreeMap<String, Vec<Value>>,
    required: Vec<String>,
}

fn glob_match(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::String(p), Value::String(s)) => {
            if p == "*" {
                true
            } else if let Some(suf) = p.strip_prefix('*') {
                s.ends_with(suf)
            } else if let Some(pre) = p.strip_suffix('*') {
                s.starts_with(pre)
            } else {
                p == s
            }
        }
        (Value::String(p), other) => p == "*" || other.to_string().trim_matches('"') == p.as_str(),
        (p, other) => p == other,
    }
}

fn any_value_matches(list: &[Value], v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|i| list.iter().any(|p| glob_match(p, i))),
        _ => list.iter().any(|p| glob_match(p, v)),
    }
}

fn all_values_match(list: &[Value], v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|i| list.iter().any(|p| glob_match(p, i))),
        _ => list.iter().any(|p| glob_match(p, v)),
    }
}

impl ParamRules {
    pub(crate) fn merge(&mut self, o: &ParamRules) {
        match (&mut self.allowed, &o.allowed) {
            (Some(a), Some(b)) => {
                for (k, v) in b {
                    match a.get_mut(k) {
                        Some(existing) if existing.is_empty() || v.is_empty() => existing.clear(),
                        Some(existing) => existing.extend(v.iter().cloned()),
                        None => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (None, Some(b)) => self.allowed = Some(b.clone()),
            _ => {}
        }
        for (k, v) in &o.denied {
            match self.denied.get_mut(k) {
                Some(existing) if existing.is_empty() || v.is_empty() => existing.clear(),
                Some(existing) => existing.extend(v.iter().cloned()),
                None => {
                    self.denied.insert(k.clone(), v.clone());
                }
            }
        }
        for r in &o.required {
            if !self.required.contains(r) {
                self.required.push(r.clone());
            }
        }
    }

    /// Checks request parameters against the rule (Vault semantics).
    pub fn check(&self, params: &Map<String, Value>) -> Result<(), Denial> {
        for r in &self.required {
            if !params.contains_key(r) {
                return Err(Denial::ParameterRequired(r.clone()));
            }
        }
        for (k, v) in params {
            let denied = self.denied.get(k).or_else(|| self.denied.get("*"));
            if let Some(list) = denied {
                if list.is_empty() || any_value_matches(list, v) {
                    return Err(Denial::ParameterDenied(k.clone()));
                }
            }
            if let Some(allowed) = &self.allowed {
                if allowed.is_empty() {
                    continue;
                }
                match allowed.get(k).or_else(|| allowed.get("*")) {
                    None => return Err(Denial::ParameterNotAllowed(k.clone())),
                    Some(list) if !list.is_empty() && !all_values_match(list, v) => {
                        return Err(Denial::ParameterNotAllowed(k.clone()))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// One `path` block.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRule {
    /// The path pattern.
    pub pattern: Pattern,
    /// Granted capabilities.
    pub caps: Caps,
    /// Parameter constraints.
    pub params: ParamRules,
}

/// A named, parsed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Policy name.
    pub name: String,
    /// Its path rules, in document order.
    pub rules: Vec<PathRule>,
}

fn param_map(
    pattern: &str,
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, Vec<Value>>, PolicyError> {
    let obj = v.as_object().ok_or_else(|| {
        PolicyError::Invalid(format!("path {pattern:?}: {key} must be a map of lists"))
    })?;
    let mut out = BTreeMap::new();
    for (k, list) in obj {
        let items = match list {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        out.insert(k.clone(), items);
    }
    Ok(out)
}

fn rule_from_map(pattern: &str, body: &Map<String, Value>) -> Result<PathRule, PolicyError> {
    let pat = Pattern::parse(pattern).map_err(PolicyError::Invalid)?;
    let mut caps = Caps::default();
    let mut params = ParamRules::default();
    for (key, v) in body {
        match key.as_str() {
            "capabilities" => {
                let list = v.as_array().ok_or_else(|| {
                    PolicyError::Invalid(format!("path {pattern:?}: capabilities must be a list"))
                })?;
                for c in list {
                    let name = c.as_str().unwrap_or_default();
                    let cap = Caps::parse(name).ok_or_else(|| {
                        PolicyError::Invalid(format!("path {pattern:?}: unknown capability {c}"))
                    })?;
                    caps = caps.union(Caps(cap as u16));
                }
            }
            // Vault's deprecated single-word form.
            "policy" => {
                let names: &[&str] = match v.as_str().unwrap_or_default() {
                    "deny" => &["deny"],
                    "read" => &["read", "list"],
                    "write" => &["create", "read", "update", "delete", "list"],
                    "sudo" => &["create", "read", "update", "delete", "list", "sudo"],
                    other => {
                        return Err(PolicyError::Invalid(format!(
                            "path {pattern:?}: unknown policy value {other:?}"
                        )))
                    }
                };
                for n in names {
                    if let Some(c) = Caps::parse(n) {
                        caps = caps.union(Caps(c as u16));
                    }
                }
            }
            "allowed_parameters" => params.allowed = Some(param_map(pattern, key, v)?),
            "denied_parameters" => params.denied = param_map(pattern, key, v)?,
            "required_parameters" => {
                let list = v.as_array().ok_or_else(|| {
                    PolicyError::Invalid(format!(
                        "path {pattern:?}: required_parameters must be a list"
                    ))
                })?;
                params.required = list
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        PolicyError::Invalid(format!(
                            "path {pattern:?}: required_parameters must be strings"
                        ))
                    })?;
            }
            "min_wrapping_ttl" | "max_wrapping_ttl" | "description" => {}
            other => {
                return Err(PolicyError::Invalid(format!(
                    "path {pattern:?}: invalid key {other:?}"
                )))
            }
        }
    }
    Ok(PathRule {
        pattern: pat,
        caps,
        params,
    })
}

/// `(path pattern, rule body)` pairs in document order.
type RawBlocks = Vec<(String, Map<String, Value>)>;

fn hcl_blocks(text: &str) -> Result<RawBlocks, PolicyError> {
    let body = hcl::parse(text).map_err(|e| match e {
        hcl::Error::Parse(p) => PolicyError::Syntax {
            line: p.location().line(),
            column: p.location().column(),
            message: p.message().to_string(),
        },
        other => PolicyError::Invalid(other.to_string()),
    })?;
    let mut out = Vec::new();
    for attr in body.attributes() {
        if attr.key() != "name" {
            return Err(PolicyError::Invalid(format!(
                "unexpected top-level attribute {:?}",
                attr.key()
            )));
        }
    }
    for block in body.blocks() {
        if block.identifier() != "path" {
            return Err(PolicyError::Invalid(format!(
                "unexpected block {:?}: only \"path\" blocks are allowed",
                block.identifier()
            )));
        }
        let [label] = block.labels() else {
            return Err(PolicyError::Invalid(
                "a path block needs exactly one label, the path".into(),
            ));
        };
        let mut m = Map::new();
        for attr in block.body().attributes() {
            let v: hcl::Value = attr.expr().clone().into();
            let j = serde_json::to_value(&v).map_err(|e| PolicyError::Invalid(e.to_string()))?;
            m.insert(attr.key().to_string(), j);
        }
        if block.body().blocks().next().is_some() {
            return Err(PolicyError::Invalid(format!(
                "path {:?}: nested blocks are not allowed",
                label.as_str()
            )));
        }
        out.push((label.as_str().to_string(), m));
    }
    Ok(out)
}

fn json_blocks(text: &str) -> Result<RawBlocks, PolicyError> {
    let v: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json {
        line: e.line(),
        message: e.to_string(),
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| PolicyError::Invalid("policy JSON must be an object".into()))?;
    let mut out = Vec::new();
    for (k, val) in obj {
        if k != "path" {
            if k == "name" {
                continue;
            }
            return Err(PolicyError::Invalid(format!(
                "unexpected top-level key {k:?}"
            )));
        }
        let items: Vec<&Value> = match val {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let paths = item
                .as_object()
                .ok_or_else(|| PolicyError::Invalid("\"path\" must map paths to rules".into()))?;
            for (p, body) in paths {
                let body = body.as_object().ok_or_else(|| {
                    PolicyError::Invalid(format!("path {p:?}: rule must be an object"))
                })?;
                out.push((p.clone(), body.clone()));
            }
        }
    }
    Ok(out)
}

/// Parses a policy document (HCL, or JSON when it starts with `{`).
pub fn parse_policy(name: &str, text: &str) -> Result<Policy, PolicyError> {
    let blocks = if text.trim_start().starts_with('{') {
        json_blocks(text)?
    } else {
        hcl_blocks(text)?
    };
    let rules = blocks
        .iter()
        .map(|(p, m)| rule_from_map(p, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        name: name.to_string(),
        rules,
    })
}
