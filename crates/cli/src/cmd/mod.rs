//! Command-line definitions; one module per subcommand group.

mod agent;
mod attest;
mod audit;
mod bench;
mod bench_attest;
mod bench_fleet;
mod bench_nrf;
mod bench_scale;
mod bench_tlog;
mod fleet;
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
use clap::{Args, Parser, Subcommand};

/// Custos: the trust service for a 5G core (Vault-compatible PKI, tokens, policies, audit).
#[derive(Parser)]
#[command(name = "custos", version, about, long_about = None)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    pub cmd: Command,
}

/// How to reach Custos: on the commands that talk to a server, and only there.
#[derive(Args, Clone, Debug)]
pub struct Conn {
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
}

impl Conn {
    /// An API client for this address, token and CA.
    pub fn client(&self) -> CliResult<Client> {
        Client::new(&self.address, self.token.clone(), self.cacert.as_deref())
    }
}

/// A command group whose every subcommand talks to a server.
#[derive(Args)]
pub struct Online<T: Subcommand> {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: T,
}

/// A command that takes only the connection options.
#[derive(Args)]
pub struct ConnOnly {
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Server(server::ServerArgs),
    /// Keep certificates fresh: log in, issue or sign, render atomically, renew, reload.
    Agent(agent::AgentArgs),
    /// Initialise, unseal, seal, rotate.
    Operator(Online<operator::OperatorCmd>),
    /// Show seal status.
    Status(ConnOnly),
    /// Create, look up, renew and revoke tokens.
    Token(Online<token::TokenCmd>),
    /// Manage ACL policies.
    Policy(Online<policy::PolicyCmd>),
    /// Manage audit devices and verify audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Enable, list and disable secrets engines (kv, pki, provenance).
    Secrets(Online<secrets::SecretsCmd>),
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
    Log(Online<log::LogCmd>),
    /// Tail the transparency log through its tiles and raise alerts from a rules file
    /// (JSON lines on stdout, a webhook, Prometheus counters).
    Monitor(monitor::MonitorArgs),
    /// Remote attestation: enrol TPMs, submit quotes, read device status, verify a saved
    /// quote offline.
    #[command(subcommand)]
    Attest(attest::AttestCmd),
    /// The fleet's trust state and the closed loop: list, counts, outliers, quarantine,
    /// release, recall, attestation on demand, signer alerts, the webhook outbox, rollouts
    /// and the posture report.
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
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
    /// The connection options of the command being run (none for offline commands).
    pub fn conn(&self) -> Option<&Conn> {
        match &self.cmd {
            Command::Status(c) => Some(&c.conn),
            Command::Operator(g) => Some(&g.conn),
            Command::Token(g) => Some(&g.conn),
            Command::Policy(g) => Some(&g.conn),
            Command::Secrets(g) => Some(&g.conn),
            Command::Log(g) => Some(&g.conn),
            Command::Read(a) | Command::Write(a) | Command::List(a) | Command::Delete(a) => {
                Some(&a.conn)
            }
            Command::Audit(c) => c.conn(),
            Command::Pki(c) => c.conn(),
            Command::Fw(c) => c.conn(),
            Command::Attest(c) => c.conn(),
            Command::Fleet(c) => Some(c.conn()),
            Command::Monitor(a) => Some(&a.conn),
            Command::Bench(a) => Some(&a.conn),
            Command::Server(_) | Command::Agent(_) | Command::Witness(_) => None,
        }
    }

    /// An API client for the command's connection options.
    pub fn client(&self) -> CliResult<Client> {
        self.conn()
            .ok_or_else(|| CliError::Usage("this command does not talk to a server".into()))?
            .client()
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
        Command::Operator(g) => operator::run(&cli, &g.cmd).await,
        Command::Status(_) => operator::status(&cli).await,
        Command::Token(g) => token::run(&cli, &g.cmd).await,
        Command::Policy(g) => policy::run(&cli, &g.cmd).await,
        Command::Audit(c) => audit::run(&cli, c).await,
        Command::Secrets(g) => secrets::run(&cli, &g.cmd).await,
        Command::Pki(c) => pki::run(&cli, c).await,
        Command::Read(a) => generic::read(&cli, a).await,
        Command::Write(a) => generic::write(&cli, a).await,
        Command::List(a) => generic::list(&cli, a).await,
        Command::Delete(a) => generic::delete(&cli, a).await,
        Command::Fw(c) => fw::run(&cli, c).await,
        Command::Attest(c) => attest::run(&cli, c).await,
        Command::Fleet(c) => fleet::run(&cli, c).await,
        Command::Log(g) => log::run(&cli, &g.cmd).await,
        Command::Monitor(a) => monitor::run(&cli, a).await,
        Command::Witness(c) => witness::run(c).await,
        Command::Bench(a) => bench::run(&cli, a).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Cli;
    use clap::CommandFactory;

    /// Every option and argument of every command says in one line what it is for.
    #[test]
    fn every_option_of_every_command_has_a_one_line_description() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_name() == "help" {
                    continue;
                }
                if s.get_about().is_none() {
                    missing.push(format!("{path} {} (the command itself)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "custos", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:#?}");
    }

    /// `custos --help` lists every command group.
    #[test]
    fn top_level_help_lists_every_command_group() {
        let help = Cli::command().render_help().to_string();
        for g in [
            "server", "agent", "operator", "status", "token", "policy", "audit", "secrets", "pki",
            "read", "write", "list", "delete", "fw", "attest", "log", "monitor", "witness",
            "bench",
        ] {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{g} "))),
                "{g} missing from:\n{help}"
            );
        }
    }

    /// --address, --token and --cacert appear on the commands that talk to a server, and
    /// not on those that never do (a server, an agent, a witness, offline checks).
    #[test]
    fn connection_options_only_on_commands_that_talk_to_a_server() {
        fn find<'a>(c: &'a clap::Command, path: &[&str]) -> &'a clap::Command {
            match path.split_first() {
                None => c,
                Some((first, rest)) => find(c.find_subcommand(first).unwrap(), rest),
            }
        }
        let mut root = Cli::command();
        root.build();
        let has = |path: &str| {
            let c = find(&root, &path.split(' ').collect::<Vec<_>>());
            let ids: Vec<&str> = c.get_arguments().map(|a| a.get_id().as_str()).collect();
            ["address", "token", "cacert"].map(|o| ids.contains(&o))
        };
        for online in [
            "status",
            "read",
            "write",
            "list",
            "delete",
            "operator unseal",
            "token create",
            "policy write",
            "secrets enable",
            "audit enable",
            "pki issue",
            "fw sign",
            "fw verify",
            "log mirror",
            "log verify",
            "monitor",
            "bench",
        ] {
            assert_eq!(has(online), [true; 3], "{online}");
        }
        for offline in [
            "server",
            "agent",
            "witness serve",
            "witness keygen",
            "pki lint",
            "audit verify",
            "fw keygen",
            "fw init-state",
            "fw mark-good",
            "fw verify-envelope",
        ] {
            assert_eq!(has(offline), [false; 3], "{offline}");
        }
    }
}
