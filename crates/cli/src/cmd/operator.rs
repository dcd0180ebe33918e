//! `custos operator init|unseal|seal|rotate` and `custos status`.

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::print;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Initialise a new server: prints the unseal key shares and the root token.
    Init {
        /// Number of shares to split the unseal key into.
        #[arg(long, default_value_t = 5)]
        key_shares: u8,
        /// Shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        key_threshold: u8,
    },
    /// Submit one unseal key share (prompted from stdin if omitted).
    Unseal {
        /// The share (hex or base64).
        key: Option<String>,
        /// Discard the shares submitted so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the server: every key leaves memory.
    Seal,
    /// Add a new barrier encryption key (old data stays readable).
    Rotate,
}

pub async fn run(cli: &Cli, c: &OperatorCmd) -> CliResult<()> {
    let client = cli.client()?;
    match c {
        OperatorCmd::Init {
            key_shares,
            key_threshold,
        } => {
            let v = client
                .call(
                    "PUT",
                    "sys/init",
                    Some(&json!({"secret_shares": key_shares, "secret_threshold": key_threshold})),
                )
                .await?;
            if cli.format == crate::output::Format::Json {
                print(cli.format, &v);
                return Ok(());
            }
            if let Some(keys) = v.get("keys_base64").and_then(Value::as_array) {
                for (i, k) in keys.iter().enumerate() {
                    outln!("Unseal Key {}: {}", i + 1, k.as_str().unwrap_or_default());
                }
            }
            outln!(
                "\nInitial Root Token: {}",
                v.get("root_token")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            outln!(
                "\nCustos initialized with {key_shares} key shares and a key threshold of {key_threshold}.\n\
                 Store the shares apart; {key_threshold} of them are needed after every restart to unseal."
            );
            Ok(())
        }
        OperatorCmd::Unseal { key, reset } => {
            let body = if *reset && key.is_none() {
                json!({"reset": true})
            } else {
                let k = match key {
                    Some(k) => k.clone(),
                    None => {
                        eprint!("Unseal Key (hex or base64; input is echoed, so prefer a trusted terminal): ");
                        let mut s = String::new();
                        std::io::stdin()
                            .read_line(&mut s)
                            .map_err(|source| CliError::Io {
                                what: "reading share".into(),
                                source,
                            })?;
                        s.trim().to_string()
                    }
                };
                json!({"key": k, "reset": reset})
            };
            let progress = |v: &Value| v.get("progress").and_then(Value::as_u64);
            let before = if *reset {
                None
            } else {
                client
                    .call("GET", "sys/seal-status", None)
                    .await
                    .ok()
                    .and_then(|v| progress(&v))
            };
            let v = client.call("PUT", "sys/unseal", Some(&body)).await?;
            print(cli.format, &v);
            // The server ignores a share it already holds (as Vault does); say so, or the
            // operator counts it towards the threshold.
            let sealed = v.get("sealed").and_then(Value::as_bool) == Some(true);
            if sealed && before.is_some() && before == progress(&v) {
                eprintln!(
                    "note: this share was already given in this unseal attempt and was ignored (progress {}/{})",
                    before.unwrap_or(0),
                    v.get("t").and_then(Value::as_u64).unwrap_or(0)
                );
            }
            Ok(())
        }
        OperatorCmd::Seal => {
            client.call("PUT", "sys/seal", None).await?;
            outln!("Success! Custos is sealed.");
            Ok(())
        }
        OperatorCmd::Rotate => {
            client.call("PUT", "sys/rotate", None).await?;
            let v = client.call("GET", "sys/key-status", None).await?;
            print(cli.format, &v);
            Ok(())
        }
    }
}

pub async fn status(cli: &Cli) -> CliResult<()> {
    let v = cli.client()?.call("GET", "sys/seal-status", None).await?;
    print(cli.format, &v);
    // Like Vault: exit 2 when sealed, so scripts can tell.
    if v.get("sealed").and_then(Value::as_bool) == Some(true) {
        return Err(CliError::Usage("Custos is sealed".into()));
    }
    Ok(())
}
