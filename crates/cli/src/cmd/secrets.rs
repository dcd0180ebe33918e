//! `custos secrets enable|list|disable`.

use super::Cli;
use crate::client::CliResult;
use crate::output::{print, Format};
use clap::Subcommand;
use serde_json::{json, Map, Value};

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// Enable a secrets engine, e.g. `custos secrets enable pki` or `--path pki_int pki`.
    Enable {
        /// Engine type: pki, kv or provenance.
        engine: String,
        /// Mount path (defaults to the type).
        #[arg(long)]
        path: Option<String>,
        /// Maximum TTL of the mount, e.g. 87600h.
        #[arg(long)]
        max_lease_ttl: Option<String>,
        /// Default TTL of the mount.
        #[arg(long)]
        default_lease_ttl: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List mounted secrets engines.
    List,
    /// Disable a secrets engine and delete all its data.
    Disable {
        /// The mount path (e.g. pki).
        path: String,
    },
}

pub async fn run(cli: &Cli, c: &SecretsCmd) -> CliResult<()> {
    let client = cli.client()?;
    match c {
        SecretsCmd::Enable {
            engine,
            path,
            max_lease_ttl,
            default_lease_ttl,
            description,
        } => {
            let mut config = Map::new();
            if let Some(t) = max_lease_ttl {
                config.insert("max_lease_ttl".into(), json!(t));
            }
            if let Some(t) = default_lease_ttl {
                config.insert("default_lease_ttl".into(), json!(t));
            }
            let p = path.clone().unwrap_or_else(|| engine.clone());
            client
                .call(
                    "POST",
                    &format!("sys/mounts/{p}"),
                    Some(&json!({"type": engine, "description": description, "config": config})),
                )
                .await?;
            outln!(
                "Success! Enabled the {engine} secrets engine at: {}/",
                p.trim_end_matches('/')
            );
        }
        SecretsCmd::List => {
            let v = client.call("GET", "sys/mounts", None).await?;
            if cli.format == Format::Json {
                print(cli.format, &v);
            } else if let Some(d) = v.get("data").and_then(Value::as_object) {
                outln!("Path          Type      Description");
                for (p, m) in d {
                    outln!(
                        "{p:<13} {:<9} {}",
                        m.get("type").and_then(Value::as_str).unwrap_or(""),
                        m.get("description").and_then(Value::as_str).unwrap_or("")
                    );
                }
            }
        }
        SecretsCmd::Disable { path } => {
            client
                .call("DELETE", &format!("sys/mounts/{path}"), None)
                .await?;
            outln!("Success! Disabled the secrets engine (if it existed) at: {path}");
        }
    }
    Ok(())
}
