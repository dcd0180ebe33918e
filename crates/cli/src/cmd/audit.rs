//! `custos audit enable|list|disable|verify`.

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::{print, Format};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Enable an audit device, e.g. `custos audit enable file file_path=/var/log/custos/audit.log`.
    Enable {
        /// Device type (file).
        device_type: String,
        /// Options as key=value.
        options: Vec<String>,
        /// Mount path of the device (defaults to the type).
        #[arg(long)]
        path: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// List enabled devices.
    List(super::ConnOnly),
    /// Disable a device.
    Disable {
        /// The audit device's path (e.g. file).
        path: String,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Verify a chained audit log offline; reports the first edited, removed, inserted or
    /// reordered line. Exit 0 if intact, 1 if tampered.
    Verify {
        /// The audit log file to check.
        file: String,
    },
}

impl AuditCmd {
    /// The connection options, on the subcommands that talk to a server.
    pub fn conn(&self) -> Option<&super::Conn> {
        match self {
            AuditCmd::Enable { conn, .. } | AuditCmd::Disable { conn, .. } => Some(conn),
            AuditCmd::List(c) => Some(&c.conn),
            AuditCmd::Verify { .. } => None,
        }
    }
}

pub async fn run(cli: &Cli, c: &AuditCmd) -> CliResult<()> {
    match c {
        AuditCmd::Verify { file } => {
            let text = std::fs::read_to_string(file).map_err(|source| CliError::Io {
                what: format!("reading {file}"),
                source,
            })?;
            match custos_audit::verify(&text) {
                Ok(v) => {
                    if cli.format == Format::Json {
                        outln!(
                            "{}",
                            json!({"intact": true, "lines": v.lines, "head": v.head})
                        );
                    } else {
                        outln!("OK: {} lines, chain intact. Head: {}", v.lines, v.head);
                    }
                    Ok(())
                }
                Err(t) => {
                    if cli.format == Format::Json {
                        outln!("{}", json!({"intact": false, "problem": t.to_string()}));
                    }
                    Err(CliError::Other(format!("{file}: TAMPERED: {t}")))
                }
            }
        }
        AuditCmd::Enable {
            device_type,
            options,
            path,
            description,
            ..
        } => {
            let opts = super::kv_args(options)?;
            let p = path.clone().unwrap_or_else(|| device_type.clone());
            cli.client()?
                .call(
                    "PUT",
                    &format!("sys/audit/{p}"),
                    Some(
                        &json!({"type": device_type, "description": description, "options": opts}),
                    ),
                )
                .await?;
            outln!(
                "Success! Enabled the {device_type} audit device at: {}/",
                p.trim_end_matches('/')
            );
            Ok(())
        }
        AuditCmd::List(_) => {
            let v = cli.client()?.call("GET", "sys/audit", None).await?;
            if cli.format == Format::Json {
                print(cli.format, &v);
            } else if let Some(d) = v.get("data").and_then(Value::as_object) {
                outln!("Path    Type    Options");
                for (p, dev) in d {
                    outln!(
                        "{p}    {}    {}",
                        dev.get("type").and_then(Value::as_str).unwrap_or(""),
                        dev.get("options").cloned().unwrap_or(Value::Null)
                    );
                }
            }
            Ok(())
        }
        AuditCmd::Disable { path, .. } => {
            cli.client()?
                .call("DELETE", &format!("sys/audit/{path}"), None)
                .await?;
            outln!("Success! Disabled audit device (if it was enabled) at: {path}");
            Ok(())
        }
    }
}
