//! # custos-acl
//!
//! Vault-compatible ACL policies.
//!
//! **Owns:** parsing policy documents (HCL, or the JSON form hvac sends for dict policies),
//! path patterns with `*` (trailing prefix glob) and `+` (one segment), Vault's priority rules
//! between matching patterns, merging several policies into one [`Acl`], and the
//! `allowed_parameters` / `denied_parameters` / `required_parameters` checks.
//!
//! **Must never:** do I/O or know about HTTP; it answers "may this token do this operation on
//! this path with these parameters", nothing else.
#![forbid(unsafe_code)]

mod pattern;
mod policy;

pub use pattern::{priority_cmp, Pattern};
pub use policy::{parse_policy, Capability, Caps, ParamRules, PathRule, Policy};

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Errors from parsing a policy document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The HCL is not syntactically valid.
    #[error("policy syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// The JSON form is not valid JSON.
    #[error("policy JSON is invalid at line {line}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// The document is well-formed but not a valid policy.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// The operation a request performs, mapped from the HTTP method (Vault's logical ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST/PUT on a path that does not exist yet (existence-checked paths only).
    Create,
    /// GET.
    Read,
    /// POST/PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// LIST or GET ?list=true.
    List,
}

impl Operation {
    fn cap(self) -> Capability {
        match self {
            Operation::Create => Capability::Create,
            Operation::Read => Capability::Read,
            Operation::Update => Capability::Update,
            Operation::Patch => Capability::Patch,
            Operation::Delete => Capability::Delete,
            Operation::List => Capability::List,
        }
    }
}

/// Why an ACL check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// No rule grants the capability (or a rule says `deny`).
    Capability,
    /// The path needs `sudo` and the rule does not grant it.
    Sudo,
    /// A parameter is not in `allowed_parameters` or its value is not allowed.
    ParameterNotAllowed(String),
    /// A parameter or value is in `denied_parameters`.
    ParameterDenied(String),
    /// A `required_parameters` entry is missing.
    ParameterRequired(String),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Capability => f.write_str("permission denied"),
            Denial::Sudo => f.write_str("permission denied: this path requires sudo"),
            Denial::ParameterNotAllowed(p) => {
                write!(f, "permission denied: parameter {p:?} is not allowed")
            }
            Denial::ParameterDenied(p) => write!(f, "permission denied: parameter {p:?} is denied"),
            Denial::ParameterRequired(p) => {
                write!(f, "permission denied: parameter {p:?} is required")
            }
        }
    }
}

/// The merged rules of all of a token's policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, PathRule>,
    globs: Vec<PathRule>,
}

fn merge_rule(into: &mut PathRule, from: &PathRule) {
    into.caps = into.caps.union(from.caps);
    into.params.merge(&from.params);
}

impl Acl {
    /// Builds the ACL of a token holding `policies`. A policy named `root` grants everything.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Self {
        let mut acl = Acl::default();
        let mut globs: BTreeMap<String, PathRule> = BTreeMap::new();
        for p in policies {
            if p.name == "root" {
                acl.root = true;
            }
            for r in &p.rules {
                let map = if r.pattern.is_exact() {
                    &mut acl.exact
                } else {
                    &mut globs
                };
                match map.get_mut(r.pattern.as_str()) {
                    Some(existing) => merge_rule(existing, r),
                    None => {
                        map.insert(r.pattern.as_str().to_string(), r.clone());
                    }
                }
            }
        }
        let mut g: Vec<PathRule> = globs.into_values().collect();
        // Highest priority first, so the first match wins.
        g.sort_by(|a, b| priority_cmp(&b.pattern, &a.pattern));
        acl.globs = g;
        acl
    }

    /// Whether the ACL is the root ACL.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The rule that governs `path`: an exact rule, else the highest-priority glob.
    pub fn rule_for(&self, path: &str) -> Option<&PathRule> {
        self.exact
            .get(path)
            .or_else(|| self.globs.iter().find(|r| r.pattern.matches(path)))
    }

    /// Capabilities granted on `path` (Vault's `sys/capabilities`), as names.
    pub fn capabilities(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        match self.rule_for(path) {
            Some(r) if !r.caps.is_empty() => r.caps.names(),
            _ => vec!["deny"],
        }
    }

    /// Checks one request. `params` are the request's body fields (Vault checks them without
    /// defaults applied); they are only checked for create/update/patch.
    pub fn check(
        &self,
        path: &str,
        op: Operation,
        needs_sudo: bool,
        params: Option<&Map<String, Value>>,
    ) -> Result<(), Denial> {
        if self.root {
            return Ok(());
        }
        let rule = self.rule_for(path).ok_or(Denial::Capability)?;
        if rule.caps.contains(Capability::Deny) || !rule.caps.contains(op.cap()) {
            return Err(Denial::Capability);
        }
        if needs_sudo && !rule.caps.contains(Capability::Sudo) {
            return Err(Denial::Sudo);
        }
        if matches!(op, Operation::Create | Operation::Update | Operation::Patch) {
            let empty = Map::new();
            rule.params.check(params.unwrap_or(&empty))?;
        }
        Ok(())
    }
}

/// Vault's built-in `default` policy (the parts that apply to Custos).
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to renew a lease via lease_id in the request body
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties
path "sys/leases/lookup" {
    capabilities = ["update"]
}
"#;

#[cfg(test)]
mod tests;
