//! `custos witness keygen|serve`: a C2SP tlog-witness for Custos logs (or any log that signs
//! Ed25519 checkpoints).

use crate::client::{CliError, CliResult};
use clap::Subcommand;
use custos_tlog::note::{Signer, Verifier, TYPE_COSIGNATURE, TYPE_ED25519};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum WitnessCmd {
    /// Create a cosigner key; prints the verifier key that logs and verifiers configure.
    Keygen {
        /// The witness's name (a schema-less URL, e.g. witness.example.net).
        #[arg(long)]
        name: String,
        /// Key file to write (mode 0600; refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve `POST /add-checkpoint` (C2SP tlog-witness): cosign checkpoints consistent with
    /// everything cosigned before. Refusals: unknown log 404, not signed by the log 403,
    /// malformed or old larger than the checkpoint 400, stale old size 409 (with the size),
    /// proof that does not verify 422, same size with another root 409.
    Serve {
        /// The witness's own signing key FILE (from `witness keygen --out`). Not the log's
        /// key: logs are named with --log.
        #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
        key: PathBuf,
        /// A log's checkpoint key (`origin+hash+base64`; repeatable).
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
        /// The state file: the last checkpoint cosigned per log (written durably).
        #[arg(long)]
        state: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8210")]
        listen: SocketAddr,
        /// Log filter.
        #[arg(long, env = "CUSTOS_LOG", default_value = "info")]
        log_level: String,
    },
}

pub async fn run(c: &WitnessCmd) -> CliResult<()> {
    match c {
        WitnessCmd::Keygen { name, out } => {
            if out.exists() {
                return Err(CliError::Other(format!(
                    "{} exists; not overwriting a key",
                    out.display()
                )));
            }
            let (s, seed) = Signer::generate(name, TYPE_COSIGNATURE)
                .map_err(|e| CliError::Usage(format!("--name: {e}")))?;
            let skey = Signer::skey(name, TYPE_COSIGNATURE, &seed)
                .map_err(|e| CliError::Other(e.to_string()))?;
            super::fw::write_durably(out, skey.as_bytes(), 0o600)?;
            outln!("{}", s.verifier().vkey());
            Ok(())
        }
        WitnessCmd::Serve {
            key,
            logs,
            state,
            listen,
            log_level,
        } => {
            super::init_logging(log_level)?;
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(key).map_err(|source| {
                CliError::Io {
                    what: format!("reading {}", key.display()),
                    source,
                }
            })?);
            let signer = Signer::parse_skey(text.trim())
                .map_err(|e| CliError::Usage(format!("--key {}: {e}", key.display())))?;
            if signer.verifier().kind != TYPE_COSIGNATURE {
                return Err(CliError::Usage(format!(
                    "--key {}: not a cosignature key (type 4)",
                    key.display()
                )));
            }
            let mut vs = Vec::new();
            for l in logs {
                let v =
                    Verifier::parse(l).map_err(|e| CliError::Usage(format!("--log {l}: {e}")))?;
                if v.kind != TYPE_ED25519 {
                    return Err(CliError::Usage(format!(
                        "--log {l}: not an Ed25519 checkpoint key (type 1)"
                    )));
                }
                vs.push(v);
            }
            let (addr, task) =
                custos_server::witness::start(custos_server::witness::WitnessConfig {
                    listen: *listen,
                    signer,
                    logs: vs,
                    state_file: state.clone(),
                })
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            tracing::info!(%addr, "witness listening");
            task.await
                .map_err(|e| CliError::Other(format!("witness stopped: {e}")))
        }
    }
}
