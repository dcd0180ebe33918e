//! `custos agent --config agent.toml`: see the `custos-agent` crate.

use crate::client::{CliError, CliResult};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct AgentArgs {
    /// The agent configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Render every certificate once (or keep a fresh one on disk), run the reload commands
    /// and exit; non-zero if one could not be rendered (an init container's mode).
    #[arg(long)]
    pub once: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

pub async fn run(a: &AgentArgs) -> CliResult<()> {
    super::init_logging(&a.log_level)?;
    let text = std::fs::read_to_string(&a.config).map_err(|source| CliError::Io {
        what: format!("reading {}", a.config.display()),
        source,
    })?;
    let base = a
        .config
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut cfg = custos_agent::config::AgentConfig::parse(&text, &base)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.config.display())))?;
    cfg.exit_after_render |= a.once;
    custos_agent::run(cfg, shutdown_signal())
        .await
        .map_err(|e| CliError::Other(e.to_string()))
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
