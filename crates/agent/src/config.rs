//! `agent.toml`: parsed and validated before anything runs. Every error names the setting.

use custos_pki::fields::parse_duration;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: the dotted setting and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// Dotted setting name, e.g. `certificate[0].key_file`.
    pub setting: String,
    /// Why.
    pub reason: String,
}

fn err(setting: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        reason: reason.into(),
    }
}

/// A file mode: an integer (`0o600` in TOML) or an octal string (`"0600"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawMode {
    Int(u32),
    Str(String),
}

fn mode(setting: &str, m: &Option<RawMode>, default: u32) -> Result<u32, ConfigError> {
    let v = match m {
        None => return Ok(default),
        Some(RawMode::Int(i)) => *i,
        Some(RawMode::Str(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| err(setting, format!("{s:?} is not an octal file mode")))?,
    };
    if v > 0o777 {
        return Err(err(
            setting,
            "must be a permission mode between 0 and 0o777",
        ));
    }
    Ok(v)
}

fn dur(setting: &str, v: &Option<String>, default: u64) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) => parse_duration(s)
            .map(Duration::from_secs)
            .map_err(|e| err(setting, e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    auto_auth: RawAuth,
    #[serde(default)]
    certificate: Vec<RawCert>,
    #[serde(default)]
    backoff: RawBackoff,
    health: Option<RawHealth>,
    #[serde(default)]
    exit_after_render: bool,
    attest: Option<crate::attest::RawAttest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    address: String,
    ca_cert: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: String,
    mount_path: Option<String>,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    role: Option<String>,
    jwt_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    certificate: Option<String>,
    #[serde(default)]
    sink: Vec<RawSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    path: PathBuf,
    mode: Option<RawMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    name: String,
    mount: Option<String>,
    role: String,
    operation: Option<String>,
    common_name: Option<String>,
    #[serde(default)]
    alt_names: Vec<String>,
    #[serde(default)]
    ip_sans: Vec<String>,
    #[serde(default)]
    uri_sans: Vec<String>,
    ttl: Option<String>,
    nf_instance_id: Option<String>,
    nf_type: Option<String>,
    key_type: Option<String>,
    key_bits: Option<u32>,
    cert_file: PathBuf,
    key_file: PathBuf,
    chain_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    bundle_file: Option<PathBuf>,
    cert_mode: Option<RawMode>,
    key_mode: Option<RawMode>,
    renew_fraction: Option<f64>,
    stagger: Option<f64>,
    jitter: Option<f64>,
    command: Option<Vec<String>>,
    command_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    min: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    address: String,
}

/// Where the agent finds Custos.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base URL, `http(s)://host:port`.
    pub address: String,
    /// Extra trust anchor (PEM) for an `https` address.
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// How the agent logs in.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthMethod {
    /// `auth/<mount>/login` with `role_id` and `secret_id` read from files.
    AppRole {
        /// File holding the role ID.
        role_id_file: PathBuf,
        /// File holding the secret ID (optional: roles with `bind_secret_id = false`).
        secret_id_file: Option<PathBuf>,
    },
    /// `auth/<mount>/login` with a JWT read from a file at every login.
    Jwt {
        /// Role.
        role: String,
        /// File holding the JWT (re-read at each login, as projected tokens rotate).
        jwt_file: PathBuf,
    },
    /// TLS client-certificate login.
    Cert {
        /// Role name (optional: the server tries every role).
        role: Option<String>,
        /// Client certificate and key (PEM); for a `certificate` block, its rendered files.
        cert_file: PathBuf,
        /// Key.
        key_file: PathBuf,
    },
    /// A fixed token from a file (no login).
    Token {
        /// The file.
        token_file: PathBuf,
    },
}

/// `auto_auth`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Method and its credentials.
    pub method: AuthMethod,
    /// Mount path below `auth/`.
    pub mount_path: String,
    /// Token files written after each login.
    pub sinks: Vec<(PathBuf, u32)>,
}

/// `issue` (server generates the key) or `sign` (the key is generated here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `<mount>/issue/<role>`.
    Issue,
    /// `<mount>/sign/<role>` with a locally generated key.
    Sign,
}

/// One `[[certificate]]` block.
#[derive(Debug, Clone)]
pub struct CertConfig {
    /// Unique name (metrics label, file prefix).
    pub name: String,
    /// PKI mount path.
    pub mount: String,
    /// PKI role.
    pub role: String,
    /// Issue or sign.
    pub operation: Operation,
    /// Request fields.
    pub common_name: String,
    /// DNS/email SANs.
    pub alt_names: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// Requested lifetime (`None`: the role's).
    pub ttl: Option<String>,
    /// SBA: NF instance ID (UUID).
    pub nf_instance_id: Option<String>,
    /// SBA: NF type.
    pub nf_type: Option<String>,
    /// Local key for `sign`: `ec` (256/384), `ed25519` or `rsa` (2048+).
    pub key_type: String,
    /// Key size.
    pub key_bits: u32,
    /// Output files.
    pub cert_file: PathBuf,
    /// Private key output.
    pub key_file: PathBuf,
    /// Issuing chain output.
    pub chain_file: Option<PathBuf>,
    /// CA bundle output.
    pub ca_file: Option<PathBuf>,
    /// Certificate, chain and key in one file: the one consistent read.
    pub bundle_file: Option<PathBuf>,
    /// Mode of public files.
    pub cert_mode: u32,
    /// Mode of the key and bundle files.
    pub key_mode: u32,
    /// Renew at this fraction of the lifetime.
    pub renew_fraction: f64,
    /// Per-instance deterministic spread, as a fraction of the lifetime.
    pub stagger: f64,
    /// Random spread, as a fraction of the lifetime.
    pub jitter: f64,
    /// Run after each render (argv, no shell).
    pub command: Vec<String>,
    /// Kill the command after this long.
    pub command_timeout: Duration,
}

impl CertConfig {
    /// The directory all output files share (checked at load).
    pub fn dir(&self) -> &Path {
        self.cert_file.parent().unwrap_or(Path::new("."))
    }

    /// (file, mode, content kind) of every output.
    pub fn outputs(&self) -> Vec<(PathBuf, u32, Part)> {
        let mut v = vec![
            (self.cert_file.clone(), self.cert_mode, Part::Cert),
            (self.key_file.clone(), self.key_mode, Part::Key),
        ];
        if let Some(p) = &self.chain_file {
            v.push((p.clone(), self.cert_mode, Part::Chain));
        }
        if let Some(p) = &self.ca_file {
            v.push((p.clone(), self.cert_mode, Part::Ca));
        }
        if let Some(p) = &self.bundle_file {
            v.push((p.clone(), self.key_mode, Part::Bundle));
        }
        v
    }
}

/// What a rendered file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The leaf certificate.
    Cert,
    /// Its private key.
    Key,
    /// The issuing chain (without the leaf).
    Chain,
    /// The root / issuing CA.
    Ca,
    /// Leaf, chain and key.
    Bundle,
}

/// Retry pacing while Custos is unreachable.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Cap.
    pub max: Duration,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server.
    pub server: ServerConfig,
    /// Login.
    pub auth: AuthConfig,
    /// Certificates to keep fresh.
    pub certificates: Vec<CertConfig>,
    /// Backoff.
    pub backoff: BackoffConfig,
    /// Health/metrics listener.
    pub health: Option<SocketAddr>,
    /// Render every certificate once (or keep a fresh one on disk), run the reload commands,
    /// and exit: an init container's mode (Vault Agent's `exit_after_auth`). `--once` sets it.
    pub exit_after_render: bool,
    /// Remote attestation of this device (`[attest]`).
    pub attest: Option<crate::attest::AttestConfig>,
}

fn fraction(
    setting: &str,
    v: Option<f64>,
    default: f64,
    lo: f64,
    hi: f64,
) -> Result<f64, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v >= lo && v <= hi) {
        return Err(err(setting, format!("must be between {lo} and {hi}")));
    }
    Ok(v)
}

impl AgentConfig {
    /// Parses and validates `agent.toml` text. Relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // The line, as the server's config errors give it: a TOML error's message alone
            // does not say where.
            let line = e
                .span()
                .map(|r| {
                    let l = text[..r.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {l})")
                })
                .unwrap_or_default();
            err("agent.toml", format!("{}{line}", e.message()))
        })?;
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let a = raw.server.address.trim_end_matches('/').to_string();
        if !(a.starts_with("http://") || a.starts_with("https://")) || a.len() < 10 {
            return Err(err("server.address", "must be an http:// or https:// URL"));
        }
        let server = ServerConfig {
            address: a,
            ca_cert: raw.server.ca_cert.as_deref().map(abs),
            timeout: dur("server.timeout", &raw.server.timeout, 10)?,
        };
        let mut certificates = Vec::new();
        let mut names = HashSet::new();
        for (i, c) in raw.certificate.iter().enumerate() {
            let s = |k: &str| format!("certificate[{i}].{k}");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(err(s("name"), "use letters, digits, '-' and '_'"));
            }
            if !names.insert(c.name.clone()) {
                return Err(err(s("name"), format!("{:?} is used twice", c.name)));
            }
            let operation = match c.operation.as_deref().unwrap_or("sign") {
                "issue" => Operation::Issue,
                "sign" => Operation::Sign,
                o => return Err(err(s("operation"), format!("{o:?}: use issue or sign"))),
            };
            let key_type = c.key_type.clone().unwrap_or_else(|| "ec".into());
            let key_bits = match (key_type.as_str(), c.key_bits) {
                ("ec", None) => 256,
                ("ec", Some(b @ (256 | 384))) => b,
                ("ed25519", None | Some(0)) => 0,
                ("rsa", None) => 2048,
                ("rsa", Some(b @ (2048 | 3072 | 4096))) => b,
                (t, b) => {
                    return Err(err(
                        s("key_bits"),
                        format!("{t}/{b:?}: use ec 256|384, ed25519, or rsa 2048|3072|4096"),
                    ))
                }
            };
            let cert_file = abs(&c.cert_file);
            let dir = cert_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let mut files = vec![cert_file.clone(), abs(&c.key_file)];
            files.extend(
                [&c.chain_file, &c.ca_file, &c.bundle_file]
                    .into_iter()
                    .flatten()
                    .map(|p| abs(p)),
            );
            let mut seen = HashSet::new();
            for f in &files {
                if f.parent() != Some(dir.as_path()) {
                    return Err(err(
                        s("key_file"),
                        "all output files of a block must be in one directory, so that a \
                         render swaps them together atomically",
                    ));
                }
                let n = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if n.is_empty() || n.starts_with('.') {
                    return Err(err(s("cert_file"), format!("{f:?}: not a plain file name")));
                }
                if !seen.insert(f.clone()) {
                    return Err(err(s("cert_file"), format!("{f:?} is named twice")));
                }
            }
            if let Some(id) = &c.nf_instance_id {
                if !is_uuid(id) {
                    return Err(err(s("nf_instance_id"), "must be a UUID"));
                }
            }
            let command = c.command.clone().unwrap_or_default();
            if c.command.is_some() && command.first().is_none_or(|p| p.is_empty()) {
                return Err(err(s("command"), "must name a program"));
            }
            let cn = c.common_name.clone().unwrap_or_default();
            if cn.is_empty() && c.alt_names.is_empty() && c.nf_instance_id.is_none() {
                return Err(err(
                    s("common_name"),
                    "give a common_name, alt_names or an nf_instance_id",
                ));
            }
            let renew_fraction =
                fraction(&s("renew_fraction"), c.renew_fraction, 2.0 / 3.0, 0.1, 0.95)?;
            let stagger = fraction(&s("stagger"), c.stagger, 0.1, 0.0, 0.5)?;
            let jitter = fraction(&s("jitter"), c.jitter, 0.02, 0.0, 0.2)?;
            if renew_fraction - stagger - jitter < 0.05 {
                return Err(err(
                    s("stagger"),
                    "renew_fraction - stagger - jitter must leave at least 5% of the lifetime",
                ));
            }
            certificates.push(CertConfig {
                name: c.name.clone(),
                mount: c
                    .mount
                    .clone()
                    .unwrap_or_else(|| "pki".into())
                    .trim_matches('/')
                    .into(),
                role: c.role.clone(),
                operation,
                common_name: cn,
                alt_names: c.alt_names.clone(),
                ip_sans: c.ip_sans.clone(),
                uri_sans: c.uri_sans.clone(),
                ttl: c.ttl.clone(),
                nf_instance_id: c.nf_instance_id.clone(),
                nf_type: c.nf_type.clone(),
                key_type,
                key_bits,
                cert_file,
                key_file: abs(&c.key_file),
                chain_file: c.chain_file.as_deref().map(abs),
                ca_file: c.ca_file.as_deref().map(abs),
                bundle_file: c.bundle_file.as_deref().map(abs),
                cert_mode: mode(&s("cert_mode"), &c.cert_mode, 0o644)?,
                key_mode: mode(&s("key_mode"), &c.key_mode, 0o600)?,
                renew_fraction,
                stagger,
                jitter,
                command,
                command_timeout: dur(&s("command_timeout"), &c.command_timeout, 30)?,
            });
        }
        if certificates.is_empty() && raw.auto_auth.sink.is_empty() && raw.attest.is_none() {
            return Err(err(
                "certificate",
                "nothing to do: configure a [[certificate]] block, an auto_auth sink or [attest]",
            ));
        }
        let auth = auth_config(&raw.auto_auth, &certificates, &abs)?;
        let backoff = BackoffConfig {
            min: dur("backoff.min", &raw.backoff.min, 1)?,
            max: dur("backoff.max", &raw.backoff.max, 60)?,
        };
        if backoff.min.is_zero() || backoff.max < backoff.min {
            return Err(err("backoff.max", "need 0 < min <= max"));
        }
        let health = match &raw.health {
            None => None,
            Some(h) => Some(
                h.address
                    .parse()
                    .map_err(|_| err("health.address", "must be host:port"))?,
            ),
        };
        Ok(AgentConfig {
            server,
            auth,
            certificates,
            backoff,
            health,
            exit_after_render: raw.exit_after_render,
            attest: match raw.attest {
                None => None,
                Some(a) => Some(a.parse(abs)?),
            },
        })
    }
}

fn auth_config(
    r: &RawAuth,
    certs: &[CertConfig],
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<AuthConfig, ConfigError> {
    let need = |v: &Option<PathBuf>, k: &str| {
        v.as_deref().map(abs).ok_or_else(|| {
            err(
                format!("auto_auth.{k}"),
                format!("is required for method {:?}", r.method),
            )
        })
    };
    let role = |req: bool| -> Result<Option<String>, ConfigError> {
        match (&r.role, req) {
            (Some(x), _) if !x.is_empty() => Ok(Some(x.clone())),
            (_, true) => Err(err(
                "auto_auth.role",
                format!("is required for method {:?}", r.method),
            )),
            _ => Ok(None),
        }
    };
    let method =
        match r.method.as_str() {
            "approle" => AuthMethod::AppRole {
                role_id_file: need(&r.role_id_file, "role_id_file")?,
                secret_id_file: r.secret_id_file.as_deref().map(abs),
            },
            "jwt" | "oidc" => AuthMethod::Jwt {
                role: role(true)?.unwrap_or_default(),
                jwt_file: need(&r.jwt_file, "jwt_file")?,
            },
            "kubernetes" => AuthMethod::Jwt {
                role: role(true)?.unwrap_or_default(),
                jwt_file: r.jwt_file.as_deref().map(abs).unwrap_or_else(|| {
                    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
                }),
            },
            "cert" => {
                let (cert_file, key_file) = match &r.certificate {
                    Some(name) => {
                        let c = certs.iter().find(|c| &c.name == name).ok_or_else(|| {
                            err(
                                "auto_auth.certificate",
                                format!("no certificate block is named {name:?}"),
                            )
                        })?;
                        (c.cert_file.clone(), c.key_file.clone())
                    }
                    None => (
                        need(&r.client_cert, "client_cert")?,
                        need(&r.client_key, "client_key")?,
                    ),
                };
                AuthMethod::Cert {
                    role: role(false)?,
                    cert_file,
                    key_file,
                }
            }
            "token" => AuthMethod::Token {
                token_file: need(&r.token_file, "token_file")?,
            },
            m => {
                return Err(err(
                    "auto_auth.method",
                    format!("{m:?}: use approle, jwt, oidc, kubernetes, cert or token"),
                ))
            }
        };
    let mount_path = r
        .mount_path
        .clone()
        .unwrap_or_else(|| r.method.clone())
        .trim_start_matches("auth/")
        .trim_matches('/')
        .to_string();
    let mut sinks = Vec::new();
    for (i, s) in r.sink.iter().enumerate() {
        sinks.push((
            abs(&s.path),
            mode(&format!("auto_auth.sink[{i}].mode"), &s.mode, 0o600)?,
        ));
    }
    Ok(AuthConfig {
        method,
        mount_path,
        sinks,
    })
}

/// 8-4-4-4-12 hex.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[server]\naddress = \"http://127.0.0.1:8200\"\n[auto_auth]\nmethod = \"approle\"\nrole_id_file = \"rid\"\nsecret_id_file = \"sid\"\n";
    const CERT: &str = "[[certificate]]\nname = \"sbi\"\nrole = \"sba\"\ncommon_name = \"amf.example\"\ncert_file = \"/run/nf/cert.pem\"\nkey_file = \"/run/nf/key.pem\"\n";

    fn parse(t: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(t, Path::new("/etc/custos"))
    }

    #[test]
    fn defaults_follow_the_issue_two_thirds_and_sign_with_a_local_key() {
        let c = parse(&format!("{BASE}{CERT}")).unwrap();
        let b = &c.certificates[0];
        assert_eq!(b.operation, Operation::Sign);
        assert!((b.renew_fraction - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!((b.cert_mode, b.key_mode), (0o644, 0o600));
        assert_eq!(b.mount, "pki");
        assert_eq!(c.auth.mount_path, "approle");
        assert_eq!(
            c.auth.method,
            AuthMethod::AppRole {
                role_id_file: "/etc/custos/rid".into(),
                secret_id_file: Some("/etc/custos/sid".into())
            }
        );
        assert_eq!(c.backoff.max, Duration::from_secs(60));
    }

    #[test]
    fn files_split_across_directories_are_refused_as_they_cannot_swap_atomically() {
        let t = format!("{BASE}{}", CERT.replace("/run/nf/key.pem", "/etc/key.pem"));
        assert_eq!(parse(&t).unwrap_err().setting, "certificate[0].key_file");
    }

    #[test]
    fn every_bad_setting_is_named() {
        let cases = [
            (format!("{BASE}{CERT}unknown = 1\n"), "agent.toml"),
            (
                format!("{BASE}{CERT}").replace("http://127.0.0.1:8200", "ftp://x"),
                "server.address",
            ),
            (
                format!("{BASE}{CERT}key_mode = 0o1777\n"),
                "certificate[0].key_mode",
            ),
            (
                format!("{BASE}{CERT}key_mode = \"rw\"\n"),
                "certificate[0].key_mode",
            ),
            (
                format!("{BASE}{CERT}renew_fraction = 1.5\n"),
                "certificate[0].renew_fraction",
            ),
            (
                format!("{BASE}{CERT}nf_instance_id = \"../etc\"\n"),
                "certificate[0].nf_instance_id",
            ),
            (
                format!("{BASE}{CERT}operation = \"steal\"\n"),
                "certificate[0].operation",
            ),
            (
                format!("{BASE}{CERT}key_type = \"rsa\"\nkey_bits = 1024\n"),
                "certificate[0].key_bits",
            ),
            (
                format!("{BASE}{CERT}command = []\n"),
                "certificate[0].command",
            ),
            (format!("{BASE}{CERT}{CERT}"), "certificate[1].name"),
            (BASE.replace("approle", "magic") + CERT, "auto_auth.method"),
            (
                BASE.replace("role_id_file = \"rid\"\n", "") + CERT,
                "auto_auth.role_id_file",
            ),
            (BASE.to_string(), "certificate"),
            (
                format!("{BASE}{CERT}[backoff]\nmin = \"10s\"\nmax = \"1s\"\n"),
                "backoff.max",
            ),
            (
                format!("{BASE}{CERT}[health]\naddress = \"nowhere\"\n"),
                "health.address",
            ),
        ];
        for (t, setting) in cases {
            let e = parse(&t).expect_err(&t);
            assert_eq!(e.setting, setting, "{t}: {e}");
        }
    }

    /// A TOML error names its line, as the server's config errors do.
    #[test]
    fn a_toml_error_names_the_line() {
        let t = format!("{BASE}{CERT}unknown = 1\n");
        let line = t.lines().count();
        let e = parse(&t).unwrap_err().to_string();
        assert!(e.contains(&format!("(line {line})")), "{e}");
        let e = parse("[server]\naddress = \"http://x:1\"\n[auto_auth\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(line 3)"), "{e}");
    }

    /// `exit_after_render` (Vault Agent's `exit_after_auth`) is read from the file.
    #[test]
    fn exit_after_render_is_read_and_off_by_default() {
        assert!(!parse(&format!("{BASE}{CERT}")).unwrap().exit_after_render);
        let t = format!("exit_after_render = true\n{BASE}{CERT}");
        assert!(parse(&t).unwrap().exit_after_render);
    }

    #[test]
    fn cert_login_can_use_a_blocks_own_rendered_files() {
        let t = format!("[server]\naddress = \"https://custos:8200\"\n[auto_auth]\nmethod = \"cert\"\ncertificate = \"sbi\"\n{CERT}");
        let c = parse(&t).unwrap();
        assert_eq!(
            c.auth.method,
            AuthMethod::Cert {
                role: None,
                cert_file: "/run/nf/cert.pem".into(),
                key_file: "/run/nf/key.pem".into()
            }
        );
        let bad = t.replace("certificate = \"sbi\"", "certificate = \"nope\"");
        assert_eq!(parse(&bad).unwrap_err().setting, "auto_auth.certificate");
    }
}
