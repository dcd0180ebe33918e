//! `custos server`.

use crate::client::{CliError, CliResult};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// Development mode: in-memory-style temporary storage, initialised, unsealed, plain HTTP.
    #[arg(long)]
    pub dev: bool,
    /// Production configuration file (TOML).
    #[arg(long, conflicts_with = "dev")]
    pub config: Option<PathBuf>,
    /// Dev mode: use this root token id instead of a random one.
    #[arg(long, requires = "dev")]
    pub dev_root_token_id: Option<String>,
    /// Dev mode: listen address.
    #[arg(long, requires = "dev", default_value = "127.0.0.1:8200")]
    pub dev_listen_address: String,
    /// Dev mode: the NRF's mutual-TLS SBI listener (serves once pki/roles/nrf exists), or
    /// `none`. A port in use is a warning in dev mode, not an error.
    #[arg(long, requires = "dev", default_value = "127.0.0.1:29510")]
    pub dev_sbi_address: String,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "CUSTOS_LOG", default_value = "info")]
    pub log_level: String,
}

pub async fn run(a: &ServerArgs) -> CliResult<()> {
    super::init_logging(&a.log_level)?;
    if a.dev {
        let addr: SocketAddr = a
            .dev_listen_address
            .parse()
            .map_err(|e| CliError::Usage(format!("--dev-listen-address: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix("custos-dev-")
            .tempdir()
            .map_err(|source| CliError::Io {
                what: "creating dev data dir".into(),
                source,
            })?;
        let sbi = dev_sbi(&a.dev_sbi_address)?;
        let settings = custos_server::engines::EngineSettings {
            sbi: sbi.map(custos_server::config::SbiConfig::dev),
            ..Default::default()
        };
        let (running, root, share) = custos_server::start_dev_with(
            dir.path(),
            addr,
            a.dev_root_token_id.as_deref(),
            custos_server::CoreConfig::default(),
            settings,
        )
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
        let sbi_line = match sbi {
            Some(s) => format!(
                "NRF SBI:       https://{s} (mutual TLS; serves once the NF CA at pki/ has \
                 config/urls and a role nrf: README \"NRF security services\")\n"
            ),
            None => String::new(),
        };
        outln!(
            "==> Custos server started in DEV mode. Do not run dev mode in production.\n\n\
             Listening on:  http://{}\n\
             {sbi_line}\
             Storage:       {} (deleted on exit)\n\
             Unseal Key:    {}\n\
             Root Token:    {}\n\n\
             export CUSTOS_ADDR='http://{}'\n",
            running.addr,
            dir.path().display(),
            share,
            root.as_str(),
            running.addr
        );
        wait(running).await;
        drop(dir);
        return Ok(());
    }
    let path = a
        .config
        .as_ref()
        .ok_or_else(|| CliError::Usage("server needs --config FILE or --dev".into()))?;
    let cfg = custos_server::Config::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    let running = custos_server::start(&cfg)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let scheme = if cfg.listener.tls_disable {
        "http"
    } else {
        "https"
    };
    outln!(
        "==> Custos server started.\n    Listening on: {scheme}://{}\n    Initialized: {}\n    Sealed: {}",
        running.addr,
        running.core.initialized(),
        running.core.sealed()
    );
    wait(running).await;
    Ok(())
}

/// The dev SBI address: `none` turns it off; a port already in use (another dev server) is
/// said once and leaves the SBI off, since dev mode's point is to start.
fn dev_sbi(arg: &str) -> CliResult<Option<SocketAddr>> {
    if arg == "none" {
        return Ok(None);
    }
    let addr: SocketAddr = arg
        .parse()
        .map_err(|e| CliError::Usage(format!("--dev-sbi-address: {e}")))?;
    match std::net::TcpListener::bind(addr) {
        // Port 0 asks for any free port: keep the one the probe got.
        Ok(l) => Ok(l.local_addr().ok()),
        Err(e) => {
            eprintln!(
                "==> the NRF SBI listener is off: cannot bind {addr} ({e}); pass --dev-sbi-address"
            );
            Ok(None)
        }
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully (stop accepting, finish
/// in-flight requests, final log entries, seal) and returns, so the process exits 0. A
/// second signal exits at once.
async fn wait(mut running: custos_server::Running) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("==> cannot install signal handlers; serving until killed");
        let _ = (&mut running.task).await;
        return;
    };
    tokio::select! {
        _ = &mut running.task => return,
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!(
        "==> shutting down: no new connections; finishing in-flight requests (a second signal exits at once)"
    );
    tokio::select! {
        _ = running.shutdown() => eprintln!("==> stopped"),
        _ = term.recv() => std::process::exit(143),
        _ = int.recv() => std::process::exit(130),
    }
}
