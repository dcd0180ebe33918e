//! Command-line definitions; one module per subcommand group.

mod agent;
mod audit;
mod bench;
mod bench_nrf;
mod bench_tlog;
mod fw;
mod generic;
mod log;
mod monitor;
mod operator;
mod pki;
mod policy;
mod secrets;
mod server;
mod token;
mod witness;

use crate::client::{CliError, CliResult, Client};
use crate::output::Format;
use clap::{Parser, Subcommand};

/// Custos: the trust service for a 5G core (Vault-compatible PKI, tokens, policies, audit).
#[derive(Parser)]
#[command(name = "custos", version, about, long_about = None)]
pub struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "CUSTOS_ADDR",
        default_value = "http://127.0.0.1:8200"
    )]
    pub address: String,
    /// Token for authenticated calls.
    #[arg(long, global = true, env = "CUSTOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signs the server's TLS certificate.
    #[arg(long, global = true, env = "CUSTOS_CACERT")]
    pub cacert: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Server(server::ServerArgs),
    /// Keep certificates fresh: log in, issue or sign, render atomically, renew, reload.
    Agent(agent::AgentArgs),
    /// Initialise, unseal, seal, rotate.
    #[command(subcommand)]
    Operator(operator::OperatorCmd),
    /// Show seal status.
    Status,
    /// Create, look up, renew and revoke tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Manage ACL policies.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Manage audit devices and verify audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Enable, list and disable secrets engines (kv, pki, provenance).
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// PKI helpers: issue, sign, revoke, fetch CRLs, and lint certificates against the 3GPP SBA profile.
    #[command(subcommand)]
    Pki(pki::PkiCmd),
    /// Read a path.
    Read(generic::PathArgs),
    /// Write to a path (k=v pairs; v may be @file or - for stdin).
    Write(generic::PathArgs),
    /// List keys under a path.
    List(generic::PathArgs),
    /// Delete a path.
    Delete(generic::PathArgs),
    /// Firmware provenance: sign images, verify before install, install with anti-rollback.
    #[command(subcommand)]
    Fw(fw::FwCmd),
    /// The transparency log: verify inclusion, audit tiles and check consistency offline;
    /// mirror the log.
    #[command(subcommand)]
    Log(log::LogCmd),
    /// Tail the transparency log through its tiles and raise alerts from a rules file
    /// (JSON lines on stdout, a webhook, Prometheus counters).
    Monitor(monitor::MonitorArgs),
    /// A transparency-log witness: cosign checkpoints, refuse split views.
    #[command(subcommand)]
    Witness(witness::WitnessCmd),
    /// Drive the HTTP API with concurrent clients and report ops/s, p50 and p99.
    Bench(bench::BenchArgs),
}

/// Logs to stderr with a tracing EnvFilter (`--log-level`).
pub fn init_logging(level: &str) -> CliResult<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| CliError::Usage(format!("--log-level: {e}")))?;
    // Colours only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
    Ok(())
}

impl Cli {
    pub fn client(&self) -> CliResult<Client> {
        Client::new(&self.address, self.token.clone(), self.cacert.as_deref())
    }
}

/// Parses `k=v` arguments into a JSON object. `v` may be `@file` or `-` (stdin).
pub fn kv_args(args: &[String]) -> CliResult<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("argument {a:?} must be key=value")))?;
        if k.is_empty() {
            return Err(CliError::Usage(format!("argument {a:?} has an empty key")));
        }
        let v = if let Some(f) = v.strip_prefix('@') {
            std::fs::read_to_string(f).map_err(|source| CliError::Io {
                what: format!("reading {f}"),
                source,
            })?
        } else if v == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|source| {
                CliError::Io {
                    what: "reading stdin".into(),
                    source,
                }
            })?;
            s
        } else {
            v.to_string()
        };
        m.insert(k.to_string(), serde_json::Value::String(v));
    }
    Ok(m)
}

pub async fn run(cli: Cli) -> CliResult<()> {
    match &cli.cmd {
        Command::Server(a) => server::run(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Operator(c) => operator::run(&cli, c).await,
        Command::Status => operator::status(&cli).await,
        Command::Token(c) => token::run(&cli, c).await,
        Command::Policy(c) => policy::run(&cli, c).await,
        Command::Audit(c) => audit::run(&cli, c).await,
        Command::Secrets(c) => secrets::run(&cli, c).await,
        Command::Pki(c) => pki::run(&cli, c).await,
        Command::Read(a) => generic::read(&cli, a).await,
        Command::Write(a) => generic::write(&cli, a).await,
        Command::List(a) => generic::list(&cli, a).await,
        Command::Delete(a) => generic::delete(&cli, a).await,
        Command::Fw(c) => fw::run(&cli, c).await,
        Command::Log(c) => log::run(&cli, c).await,
        Command::Monitor(a) => monitor::run(&cli, a).await,
        Command::Witness(c) => witness::run(c).await,
        Command::Bench(a) => bench::run(&cli, a).await,
    }
}
