//! The engine interface: what a secrets engine, a login method or a system engine declares
//! and implements, and the narrow handles the core gives it.
//!
//! Modelled on Vault's `sdk/framework` backend, in Rust's idiom:
//! * an engine **declares its paths** ([`Engine::route`]): for each path below its mount, the
//!   operations it serves, which of them need no token, whether it needs `sudo`, whether the
//!   router must run an existence check (create vs update for the ACL), and whether it is a
//!   login path (the core audits it, rate-limits it and mints the token);
//! * it **handles** requests given the request and a [`Ctx`]: the mount, the caller, a
//!   [`View`] of storage under its own mount, and a [`Sys`] handle (time settings, its own
//!   mounts, the audit heads, a keyed hash), never the core itself;
//! * it has **lifecycle hooks**: mount (initialise a new mount), unseal (build caches, open
//!   files), seal (drop them; keys in them are zeroized), unmount (remove what the generic
//!   removal of the mount's view does not), and a periodic tick (tidy, audit heads).
//!
//! The core never names an engine: the composition root (`engines/mod.rs`) builds a
//! [`Registry`] of engines by type name and hands it to [`crate::core::Core::new`]. What
//! engines need from each other goes through the narrow traits in [`crate::core::services`],
//! wired in the composition root.

use crate::core::barrier::View;
use crate::core::{Active, Core};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use custos_acl::Operation;
use serde_json::{Map, Value};
use std::sync::{Arc, Weak};

/// What the router needs to know about one path below a mount.
#[derive(Debug, Clone, Copy)]
pub struct PathSpec {
    /// The operations the path serves (others answer 405).
    pub ops: &'static [Operation],
    /// Operations served without a token (Vault's unauthenticated PKI reads).
    pub unauth_ops: &'static [Operation],
    /// Needs the `sudo` capability (root-protected).
    pub sudo: bool,
    /// Run [`Engine::exists`] to tell create from update for the ACL check.
    pub existence: bool,
    /// A login path: no token, rate-limited, audited by the core, answered by
    /// [`Engine::login`] with a token the core mints.
    pub login: bool,
}

impl PathSpec {
    /// A path serving `ops` to token holders.
    pub const fn new(ops: &'static [Operation]) -> Self {
        PathSpec {
            ops,
            unauth_ops: &[],
            sudo: false,
            existence: false,
            login: false,
        }
    }

    /// Every operation is served without a token.
    pub const fn open(mut self) -> Self {
        self.unauth_ops = self.ops;
        self
    }

    /// These operations are served without a token.
    pub const fn open_for(mut self, ops: &'static [Operation]) -> Self {
        self.unauth_ops = ops;
        self
    }

    /// Root-protected.
    pub const fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// With an existence check.
    pub const fn existence(mut self) -> Self {
        self.existence = true;
        self
    }

    /// A login path.
    pub const fn login(mut self) -> Self {
        self.login = true;
        self.unauth_ops = self.ops;
        self
    }
}

/// Which mount table an engine's mounts live in, and so how it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Secrets engines: mounted at `<path>/` with `sys/mounts/<path>`.
    Secrets,
    /// Login methods: mounted at `auth/<path>/` with `sys/auth/<path>`.
    Auth,
    /// A system engine: one instance at a fixed `sys/<name>/` prefix, present when the
    /// composition root registers it.
    System,
}

/// A successful login: what the core turns into a token.
#[derive(Debug)]
pub struct Login {
    /// The role's `token_*` settings.
    pub params: custos_auth::params::TokenParams,
    /// The token's display name.
    pub display_name: String,
    /// Token metadata (login identity).
    pub meta: Map<String, Value>,
}

/// One request as an engine sees it.
pub struct Ctx<'a> {
    /// The mount (for a system engine, a fixed entry named after its prefix).
    pub mount: &'a MountEntry,
    /// The path below the mount, without a trailing `/`.
    pub sub: &'a str,
    /// Storage under this mount (relative keys).
    pub view: View,
    /// The engine's handle on the core.
    pub sys: &'a Sys,
    /// The authenticated caller (`None` on unauthenticated paths).
    pub caller: Option<Caller<'a>>,
}

/// What an engine may know of the token holder calling it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The token's display name (`approle-amf`, `cert-amf01`, `root`).
    pub display_name: &'a str,
    /// The token's metadata: the login identity (JWT claims mapped by the role, the NF
    /// instance ID of a certificate login, …).
    pub meta: &'a Map<String, Value>,
}

impl<'a> Caller<'a> {
    pub(crate) fn of(t: &'a TokenEntry) -> Self {
        Caller {
            display_name: &t.display_name,
            meta: &t.meta,
        }
    }
}

impl Ctx<'_> {
    /// The display name of the caller, as the transparency log records it.
    pub fn requester(&self) -> String {
        self.caller
            .map_or_else(|| "custos".to_string(), |c| c.display_name.to_string())
    }
}

/// One engine type. The core holds engines only as `Arc<dyn Engine>`.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Where the engine's mounts keep their data: a mount's [`View`] is
    /// `<storage_root>/<mount uuid>/`, a system engine's is `<storage_root>` itself.
    fn storage_root(&self) -> &'static str {
        "logical/"
    }

    /// The path table: `sub` is the path below the mount, without a trailing `/`.
    fn route(&self, sub: &str) -> Option<PathSpec>;

    /// Existence check for paths declared with [`PathSpec::existence`].
    async fn exists(&self, _ctx: &Ctx<'_>) -> ApiResult<bool> {
        Ok(true)
    }

    /// Handles one request on a non-login path.
    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response>;

    /// Checks a login on a login path; the core mints the token.
    async fn login(&self, _ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Login> {
        Err(ApiError::bad("this engine has no login"))
    }

    /// The role part of a login's rate-limit bucket (bounded by the core).
    fn login_bucket(&self, _mount: &MountEntry, _req: &Request) -> String {
        String::new()
    }

    /// Validates `options` of `sys/mounts/<path>` and returns those to keep on the mount
    /// (by default none: the options are ignored).
    fn mount_options(&self, _options: &Value) -> ApiResult<Map<String, Value>> {
        Ok(Map::new())
    }

    /// After `sys/mounts/<path>` (or `sys/auth/<path>`) stored a new mount of this engine:
    /// initialise it. An error undoes the mount.
    async fn mount(&self, _sys: &Sys, _mount: &MountEntry) -> ApiResult<()> {
        Ok(())
    }

    /// After unseal, before any request is served.
    async fn unseal(&self, _sys: &Sys) -> ApiResult<()> {
        Ok(())
    }

    /// At seal: drop everything derived from unsealed data.
    fn seal(&self) {}

    /// Before a mount's entries under its view are deleted: remove anything else it owns
    /// (certificate rows) and drop its caches.
    async fn unmount(&self, _sys: &Sys, _mount: &MountEntry) -> ApiResult<()> {
        Ok(())
    }

    /// At a graceful shutdown, after the last request finished and before the core seals:
    /// make final records durable.
    async fn shutdown(&self, _sys: &Sys) -> ApiResult<()> {
        Ok(())
    }

    /// For engines that serve something beside the API (a listener of their own): whether
    /// it is ready, and if not, why (naming the setting to fix). Shown in `sys/health`.
    fn readiness(&self) -> Option<(bool, String)> {
        None
    }

    /// Prometheus text-format series of the engine's own (appended to `sys/metrics`).
    fn metrics(&self) -> String {
        String::new()
    }

    /// Once a minute while unsealed.
    async fn periodic(&self, _sys: &Sys) -> ApiResult<()> {
        Ok(())
    }
}

/// One registered engine.
pub(crate) struct Registered {
    pub(crate) kind: &'static str,
    pub(crate) table: Table,
    pub(crate) engine: Arc<dyn Engine>,
    /// For system engines: the fixed prefix below `sys/` (with a trailing `/`).
    pub(crate) prefix: &'static str,
}

/// The engines this server offers, by type name, in registration order (the order error
/// messages list them in). Built by the composition root.
pub struct Registry {
    pub(crate) engines: Vec<Registered>,
    pub(crate) trust_log: Arc<dyn crate::core::services::TrustLog>,
    /// Logins of quarantined devices are refused.
    pub(crate) quarantine: Arc<dyn crate::core::services::Quarantine>,
}

impl Registry {
    /// A registry whose trust events go to `trust_log`.
    pub fn new(trust_log: Arc<dyn crate::core::services::TrustLog>) -> Self {
        Registry {
            engines: Vec::new(),
            trust_log,
            quarantine: Arc::new(crate::core::services::NoQuarantine::default()),
        }
    }

    /// Refuses the logins of devices `q` holds in quarantine.
    pub fn quarantine(&mut self, q: Arc<dyn crate::core::services::Quarantine>) -> &mut Self {
        self.quarantine = q;
        self
    }

    /// Offers `engine` as the secrets engine type `kind`.
    pub fn secrets(&mut self, kind: &'static str, engine: Arc<dyn Engine>) -> &mut Self {
        self.push(kind, Table::Secrets, engine, "")
    }

    /// Offers `engine` as the login method type `kind`.
    pub fn auth(&mut self, kind: &'static str, engine: Arc<dyn Engine>) -> &mut Self {
        self.push(kind, Table::Auth, engine, "")
    }

    /// Mounts `engine` at the fixed path `sys/<prefix>` (`prefix` ends with `/`).
    pub fn system(
        &mut self,
        kind: &'static str,
        prefix: &'static str,
        engine: Arc<dyn Engine>,
    ) -> &mut Self {
        self.push(kind, Table::System, engine, prefix)
    }

    fn push(
        &mut self,
        kind: &'static str,
        table: Table,
        engine: Arc<dyn Engine>,
        prefix: &'static str,
    ) -> &mut Self {
        self.engines
            .retain(|r| !(r.kind == kind && r.table == table));
        self.engines.push(Registered {
            kind,
            table,
            engine,
            prefix,
        });
        self
    }

    pub(crate) fn find(&self, table: Table, kind: &str) -> Option<&Registered> {
        self.index(table, kind).map(|i| &self.engines[i])
    }

    /// The position of the engine of type `kind` in `table` (also its `Core::sys` handle's).
    pub(crate) fn index(&self, table: Table, kind: &str) -> Option<usize> {
        self.engines
            .iter()
            .position(|r| r.table == table && r.kind == kind)
    }

    /// Every registered type name (secrets engines, login methods, system engines), in
    /// registration order.
    pub fn type_names(&self) -> Vec<&'static str> {
        self.engines.iter().map(|r| r.kind).collect()
    }

    /// Type names of one table, in registration order.
    pub(crate) fn kinds(&self, table: Table) -> Vec<&'static str> {
        self.engines
            .iter()
            .filter(|r| r.table == table)
            .map(|r| r.kind)
            .collect()
    }
}

/// An engine's handle on the core: stable across seal and unseal (it resolves the current
/// unsealed state on every call, and answers [`ApiError::Sealed`] while sealed).
#[derive(Clone)]
pub struct Sys {
    core: Weak<Core>,
    kind: &'static str,
    table: Table,
    root: &'static str,
}

impl Sys {
    pub(crate) fn new(core: Weak<Core>, r: &Registered) -> Self {
        Sys {
            core,
            kind: r.kind,
            table: r.table,
            root: r.engine.storage_root(),
        }
    }

    fn active(&self) -> ApiResult<Arc<Active>> {
        self.core
            .upgrade()
            .and_then(|c| c.active_for_engines())
            .ok_or(ApiError::Sealed)
    }

    /// Storage under `mount` (which must be one of this engine's mounts).
    pub fn view(&self, mount: &MountEntry) -> ApiResult<View> {
        Ok(self.active()?.barrier.view(
            format!("{}{}/", self.root, mount.uuid),
            Some(mount.uuid.clone()),
        ))
    }

    /// A system engine's storage: everything under its storage root.
    pub fn root_view(&self) -> ApiResult<View> {
        if self.table != Table::System {
            return Err(ApiError::internal(std::io::Error::other(
                "only system engines have a root view",
            )));
        }
        Ok(self.active()?.barrier.view(self.root.to_string(), None))
    }

    /// Every mount of this engine's type.
    pub async fn mounts(&self) -> ApiResult<Vec<MountEntry>> {
        let a = self.active()?;
        let t = match self.table {
            Table::Secrets => a.mounts.read().await,
            Table::Auth => a.auth_mounts.read().await,
            Table::System => return Ok(Vec::new()),
        };
        Ok(t.entries
            .iter()
            .filter(|m| m.kind == self.kind)
            .cloned()
            .collect())
    }

    /// The server's default and maximum lease TTLs (seconds).
    pub fn lease_defaults(&self) -> (u64, u64) {
        self.core
            .upgrade()
            .map(|c| (c.cfg.default_lease_ttl, c.cfg.max_lease_ttl))
            .unwrap_or((crate::config::DEFAULT_TTL, crate::config::DEFAULT_TTL))
    }

    /// Each audit device's (path, lines written, chain head).
    pub async fn audit_heads(&self) -> ApiResult<Vec<(String, u64, String)>> {
        Ok(self.active()?.audit.heads().await)
    }

    /// HMAC-SHA256 under the barrier's token key, hex: how credentials (AppRole secret IDs)
    /// are stored without storing them.
    pub fn keyed_hash(&self, secret: &str) -> ApiResult<String> {
        let a = self.active()?;
        Ok(crate::token::hash_token(&a.token_key, secret))
    }
}
