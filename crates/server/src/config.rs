//! Server configuration (TOML), validated completely before any port is bound.

use crate::duration::parse_duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("config: {0}")]
    Parse(String),
    /// A setting has an invalid value.
    #[error("config: {setting}: {reason}")]
    Invalid {
        /// Dotted setting name, e.g. `listener.tls_cert_file`.
        setting: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Where data lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// Embedded SQLite file.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
    /// PostgreSQL (HA).
    Postgresql {
        /// Connection URL or key=value string.
        url: String,
        /// Schema to hold the tables.
        #[serde(default = "default_schema")]
        schema: String,
    },
}

fn default_schema() -> String {
    "custos".into()
}

/// Client-certificate policy of a TLS listener. Safe default: none requested.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Do not ask for a client certificate.
    #[default]
    None,
    /// Ask. With `tls_client_ca_file`, a presented certificate must chain to it; without,
    /// any certificate is accepted at the TLS layer and the `cert` login method judges it.
    Request,
    /// Require a valid client certificate.
    Require,
}

/// The API listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind.
    pub address: String,
    /// Must be set to true to serve plain HTTP; otherwise TLS files are required.
    #[serde(default)]
    pub tls_disable: bool,
    /// PEM certificate chain.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Client-certificate policy.
    #[serde(default)]
    pub tls_client_auth: ClientAuth,
}

/// How the unseal key is held.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SealConfig {
    /// Shamir shares held by operators (default).
    Shamir,
    /// A 32-byte key in a file (hex, base64 or raw): auto-unseal for tests and single nodes.
    Keyfile {
        /// The key file.
        key_file: PathBuf,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_bytes: Option<usize>,
    request_timeout: Option<String>,
    login_rate: Option<f64>,
    login_burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTtl {
    default_lease_ttl: Option<String>,
    max_lease_ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    unauthenticated_metrics_access: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSbi {
    address: String,
    pki_mount: String,
    role: String,
    nf_instance_id: String,
    fqdn: String,
    token_ttl: Option<String>,
    heartbeat: Option<String>,
    #[serde(default)]
    ip_sans: Vec<String>,
    retired_key_margin: Option<String>,
}

/// The SBI listener of the NRF services (TS 29.510): mutual TLS only, its certificate issued
/// from `pki_mount`/`role` and renewed in process, client certificates chained to that
/// mount's CA and checked for revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbiConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// PKI mount (the NF CA) that issues the SBI certificate and every NF certificate.
    pub pki_mount: String,
    /// Role for the NRF's own SBA certificate.
    pub role: String,
    /// The NRF's NF instance ID (the `iss` of its tokens).
    pub nf_instance_id: String,
    /// The NRF's FQDN (its certificate's common name and DNS SAN).
    pub fqdn: String,
    /// Access-token lifetime, seconds.
    pub token_ttl: u64,
    /// The heartBeatTimer the NRF imposes, seconds.
    pub heartbeat: u64,
    /// IP SANs for the NRF's certificate (NFs that reach it by address).
    pub ip_sans: Vec<std::net::IpAddr>,
    /// After a key rotation the old public key stays in the JWKS for `token_ttl` plus this
    /// many seconds: the `exp` leeway producers allow (default 30, as `custos-sba-auth`).
    pub retired_key_margin: u64,
}

impl SbiConfig {
    /// Dev mode's SBI: the NF CA is the `pki` mount and the NRF's certificate comes from its
    /// `nrf` role (README "NRF security services"), for `nrf.5gc.mnc001.mcc262.3gppnetwork.org`
    /// and 127.0.0.1, with a fresh NF instance ID.
    pub fn dev(addr: SocketAddr) -> Self {
        SbiConfig {
            addr,
            pki_mount: "pki/".into(),
            role: "nrf".into(),
            nf_instance_id: uuid::Uuid::new_v4().to_string(),
            fqdn: "nrf.5gc.mnc001.mcc262.3gppnetwork.org".into(),
            token_ttl: 3600,
            heartbeat: 60,
            ip_sans: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            retired_key_margin: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    storage: StorageConfig,
    listener: ListenerConfig,
    seal: Option<SealConfig>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    ttl: RawTtl,
    #[serde(default)]
    telemetry: RawTelemetry,
    cluster_name: Option<String>,
    tlog_origin: Option<String>,
    #[serde(default)]
    tlog_witnesses: Vec<RawWitness>,
    tlog_witness_threshold: Option<usize>,
    sbi: Option<RawSbi>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    url: String,
    key: String,
}

/// A witness the log asks for cosignatures (C2SP tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogWitness {
    /// Its base URL (`<url>/add-checkpoint`).
    pub url: String,
    /// Its cosigner key (`name+hash+base64`, type 4).
    pub key: String,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body accepted (Vault's default is 32 MiB).
    pub max_request_bytes: usize,
    /// Per-request timeout in seconds (Vault's default is 90 s).
    pub request_timeout_secs: u64,
    /// Logins per second per (auth mount, role, source address); 0 disables the limit.
    pub login_rate: f64,
    /// Burst of logins allowed above `login_rate`.
    pub login_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 32 * 1024 * 1024,
            request_timeout_secs: 90,
            login_rate: 20.0,
            login_burst: 50,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Storage.
    pub storage: StorageConfig,
    /// API listener.
    pub listener: ListenerConfig,
    /// Parsed listener address.
    pub listen_addr: SocketAddr,
    /// Seal.
    pub seal: SealConfig,
    /// Limits.
    pub limits: Limits,
    /// Default token/lease TTL, seconds.
    pub default_lease_ttl: u64,
    /// Maximum token/lease TTL, seconds.
    pub max_lease_ttl: u64,
    /// Serve `sys/metrics` without a token.
    pub unauthenticated_metrics_access: bool,
    /// Reported by sys/health.
    pub cluster_name: String,
    /// The transparency log's origin when it is created (a schema-less URL, e.g.
    /// `custos.example.net/log`); empty when not configured: the log then derives a unique
    /// one from the cluster name and its key (`custos.local/<cluster>/<8 hex>`).
    pub tlog_origin: String,
    /// Witnesses that cosign the log's checkpoints.
    pub tlog_witnesses: Vec<TlogWitness>,
    /// How many of them must cosign a checkpoint before `sys/tlog/checkpoint` serves it
    /// (default: all of them); `sys/tlog/head` serves the newest one at once.
    pub tlog_witness_threshold: usize,
    /// The NRF's SBI listener, if configured.
    pub sbi: Option<SbiConfig>,
}

/// 768h, Vault's default for both TTLs.
pub const DEFAULT_TTL: u64 = 768 * 3600;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text. Checks that files named exist and are readable.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError::Parse(e.message().to_string() + &span_hint(text, e.span()))
        })?;
        let listen_addr: SocketAddr = raw
            .listener
            .address
            .parse()
            .map_err(|e| invalid("listener.address", format!("{e}")))?;
        let l = &raw.listener;
        if l.tls_disable {
            if l.tls_cert_file.is_some() || l.tls_key_file.is_some() {
                return Err(invalid(
                    "listener.tls_disable",
                    "is true but TLS files are also set; choose one",
                ));
            }
            if l.tls_client_auth != ClientAuth::None {
                return Err(invalid(
                    "listener.tls_client_auth",
                    "needs TLS (tls_disable is true)",
                ));
            }
        } else {
            let cert = l.tls_cert_file.as_ref().ok_or_else(|| {
                invalid(
                    "listener.tls_cert_file",
                    "is required unless tls_disable = true",
                )
            })?;
            let key = l.tls_key_file.as_ref().ok_or_else(|| {
                invalid(
                    "listener.tls_key_file",
                    "is required unless tls_disable = true",
                )
            })?;
            readable("listener.tls_cert_file", cert)?;
            readable("listener.tls_key_file", key)?;
            if l.tls_client_auth == ClientAuth::Require && l.tls_client_ca_file.is_none() {
                return Err(invalid(
                    "listener.tls_client_ca_file",
                    "is required when tls_client_auth is require",
                ));
            }
            if let Some(ca) = &l.tls_client_ca_file {
                readable("listener.tls_client_ca_file", ca)?;
            }
        }
        match &raw.storage {
            StorageConfig::Sqlite { path } => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !parent.is_dir() {
                    return Err(invalid(
                        "storage.path",
                        format!("directory {} does not exist", parent.display()),
                    ));
                }
            }
            StorageConfig::Postgresql { url, schema } => {
                if url.trim().is_empty() {
                    return Err(invalid("storage.url", "is empty"));
                }
                if schema.is_empty()
                    || !schema
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(invalid(
                        "storage.schema",
                        "must be a lower-case SQL identifier",
                    ));
                }
            }
        }
        let seal = raw.seal.unwrap_or(SealConfig::Shamir);
        if let SealConfig::Keyfile { key_file } = &seal {
            readable("seal.key_file", key_file)?;
            crate::seal::read_key_file(key_file).map_err(|e| invalid("seal.key_file", e))?;
        }
        let mut limits = Limits::default();
        if let Some(n) = raw.limits.max_request_bytes {
            if n == 0 {
                return Err(invalid("limits.max_request_bytes", "must be positive"));
            }
            limits.max_request_bytes = n;
        }
        if let Some(t) = &raw.limits.request_timeout {
            limits.request_timeout_secs =
                parse_duration(t).map_err(|e| invalid("limits.request_timeout", e))?;
            if limits.request_timeout_secs == 0 {
                return Err(invalid("limits.request_timeout", "must be positive"));
            }
        }
        if let Some(r) = raw.limits.login_rate {
            if !r.is_finite() || r < 0.0 {
                return Err(invalid(
                    "limits.login_rate",
                    "must be a non-negative number (0 disables the limit)",
                ));
            }
            limits.login_rate = r;
        }
        if let Some(b) = raw.limits.login_burst {
            if b == 0 {
                return Err(invalid("limits.login_burst", "must be positive"));
            }
            limits.login_burst = b;
        }
        let ttl = |v: &Option<String>, name: &'static str| -> Result<u64, ConfigError> {
            match v {
                None => Ok(DEFAULT_TTL),
                Some(s) => parse_duration(s).map_err(|e| invalid(name, e)),
            }
        };
        let default_lease_ttl = ttl(&raw.ttl.default_lease_ttl, "ttl.default_lease_ttl")?;
        let max_lease_ttl = ttl(&raw.ttl.max_lease_ttl, "ttl.max_lease_ttl")?;
        if default_lease_ttl > max_lease_ttl {
            return Err(invalid(
                "ttl.default_lease_ttl",
                "must not exceed ttl.max_lease_ttl",
            ));
        }
        let sbi = match &raw.sbi {
            None => None,
            Some(r) => {
                let addr = r
                    .address
                    .parse()
                    .map_err(|_| invalid("sbi.address", "must be host:port"))?;
                if addr == listen_addr {
                    return Err(invalid("sbi.address", "must differ from listener.address"));
                }
                let id = r.nf_instance_id.to_ascii_lowercase();
                let uuid_ok = id.len() == 36
                    && id.bytes().enumerate().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => c == b'-',
                        _ => c.is_ascii_hexdigit(),
                    });
                if !uuid_ok {
                    return Err(invalid("sbi.nf_instance_id", "must be a UUID"));
                }
                if r.fqdn.is_empty() || r.fqdn.contains(|c: char| c.is_whitespace() || c == '/') {
                    return Err(invalid("sbi.fqdn", "must be the NRF's FQDN"));
                }
                if r.pki_mount.trim_matches('/').is_empty() || r.role.is_empty() {
                    return Err(invalid("sbi.pki_mount", "pki_mount and role are required"));
                }
                let d = |v: &Option<String>,
                         name: &'static str,
                         def: u64|
                 -> Result<u64, ConfigError> {
                    let n = match v {
                        None => def,
                        Some(s) => parse_duration(s).map_err(|e| invalid(name, e))?,
                    };
                    if n == 0 {
                        return Err(invalid(name, "must be positive"));
                    }
                    Ok(n)
                };
                let mut ip_sans = Vec::new();
                for ip in &r.ip_sans {
                    ip_sans.push(ip.parse().map_err(|_| {
                        invalid("sbi.ip_sans", format!("{ip:?} is not an IP address"))
                    })?);
                }
                Some(SbiConfig {
                    ip_sans,
                    addr,
                    pki_mount: format!("{}/", r.pki_mount.trim_matches('/')),
                    role: r.role.clone(),
                    nf_instance_id: id,
                    fqdn: r.fqdn.to_ascii_lowercase(),
                    token_ttl: d(&r.token_ttl, "sbi.token_ttl", 3600)?,
                    heartbeat: d(&r.heartbeat, "sbi.heartbeat", 60)?,
                    retired_key_margin: d(&r.retired_key_margin, "sbi.retired_key_margin", 30)?,
                })
            }
        };
        let mut tlog_witnesses = Vec::new();
        for w in &raw.tlog_witnesses {
            let v = custos_tlog::note::Verifier::parse(&w.key)
                .map_err(|e| invalid("tlog_witnesses.key", e.to_string()))?;
            if v.kind != custos_tlog::note::TYPE_COSIGNATURE {
                return Err(invalid(
                    "tlog_witnesses.key",
                    "must be a cosignature key (type 4)",
                ));
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid("tlog_witnesses.url", "must be an http(s) URL"));
            }
            tlog_witnesses.push(TlogWitness {
                url: w.url.trim_end_matches('/').to_string(),
                key: w.key.clone(),
            });
        }
        let tlog_witness_threshold = match raw.tlog_witness_threshold {
            None => tlog_witnesses.len(),
            Some(n) if (1..=tlog_witnesses.len()).contains(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "tlog_witness_threshold",
                    format!(
                        "must be from 1 to the number of tlog_witnesses ({}), not {n}",
                        tlog_witnesses.len()
                    ),
                ))
            }
        };
        // Unset: empty, and the log derives one of its own at creation.
        let raw_origin_set = raw.tlog_origin.is_some();
        let tlog_origin = raw.tlog_origin.unwrap_or_default();
        if raw_origin_set
            && (tlog_origin.is_empty()
                || tlog_origin.len() > 255
                || !tlog_origin
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'+'))
        {
            return Err(invalid(
                "tlog_origin",
                "a schema-less URL of printable ASCII, without spaces or '+' (1 to 255 bytes)",
            ));
        }
        Ok(Config {
            sbi,
            storage: raw.storage,
            listener: raw.listener,
            listen_addr,
            seal,
            limits,
            default_lease_ttl,
            max_lease_ttl,
            unauthenticated_metrics_access: raw.telemetry.unauthenticated_metrics_access,
            cluster_name: raw.cluster_name.unwrap_or_else(|| "custos".into()),
            tlog_origin,
            tlog_witnesses,
            tlog_witness_threshold,
        })
    }
}

fn readable(setting: &'static str, p: &std::path::Path) -> Result<(), ConfigError> {
    std::fs::File::open(p)
        .map(|_| ())
        .map_err(|e| invalid(setting, format!("cannot read {}: {e}", p.display())))
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    const BASE: &str = "[storage]\nbackend = \"sqlite\"\npath = \"/tmp/custos-test.db\"\n";

    #[test]
    fn plain_http_needs_explicit_tls_disable() {
        let e = err(&format!("{BASE}[listener]\naddress = \"127.0.0.1:8200\"\n"));
        assert!(e.contains("listener.tls_cert_file"), "{e}");
        let ok = Config::parse(&format!(
            "{BASE}[listener]\naddress = \"127.0.0.1:8200\"\ntls_disable = true\n"
        ))
        .unwrap();
        assert_eq!(ok.seal, SealConfig::Shamir);
        assert_eq!(ok.limits, Limits::default());
    }

    #[test]
    fn each_bad_setting_is_named() {
        let l = "[listener]\naddress = \"127.0.0.1:8200\"\ntls_disable = true\n";
        assert!(err(&format!(
            "{BASE}[listener]\naddress = \"nope\"\ntls_disable = true\n"
        ))
        .contains("listener.address"));
        assert!(
            err(&format!("{BASE}{l}[limits]\nrequest_timeout = \"ten\"\n"))
                .contains("limits.request_timeout")
        );
        assert!(err(&format!(
            "{BASE}{l}[seal]\ntype = \"keyfile\"\nkey_file = \"/nonexistent\"\n"
        ))
        .contains("seal.key_file"));
        assert!(err(&format!(
            "{BASE}{l}[ttl]\ndefault_lease_ttl = \"10h\"\nmax_lease_ttl = \"1h\"\n"
        ))
        .contains("ttl.default_lease_ttl"));
        assert!(err(&format!("{BASE}{l}bogus = 1\n")).contains("bogus"));
        // More cosignatures required than witnesses configured.
        assert!(err(&format!("tlog_witness_threshold = 1\n{BASE}{l}"))
            .contains("tlog_witness_threshold"));
        assert!(err(&format!(
            "[storage]\nbackend = \"sqlite\"\npath = \"/no/such/dir/x.db\"\n{l}"
        ))
        .contains("storage.path"));
        assert!(err(&format!(
            "[storage]\nbackend = \"postgresql\"\nurl = \"x\"\nschema = \"Bad;\"\n{l}"
        ))
        .contains("storage.schema"));
    }
}
