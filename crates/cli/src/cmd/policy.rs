//! `custos policy write|read|list|delete`.

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::{print, print_list, Format};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Write a policy from a file ("-" for stdin).
    Write {
        /// The policy's name.
        name: String,
        /// HCL or JSON policy file (`-` for stdin).
        file: String,
    },
    /// Print a policy.
    Read {
        /// The policy's name.
        name: String,
    },
    /// List policies.
    List,
    /// Delete a policy.
    Delete {
        /// The policy's name.
        name: String,
    },
}

pub async fn run(cli: &Cli, c: &PolicyCmd) -> CliResult<()> {
    let client = cli.client()?;
    match c {
        PolicyCmd::Write { name, file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|source| {
                    CliError::Io {
                        what: "reading stdin".into(),
                        source,
                    }
                })?;
                s
            } else {
                std::fs::read_to_string(file).map_err(|source| CliError::Io {
                    what: format!("reading {file}"),
                    source,
                })?
            };
            client
                .call(
                    "PUT",
                    &format!("sys/policies/acl/{name}"),
                    Some(&json!({"policy": text})),
                )
                .await?;
            outln!("Success! Uploaded policy: {name}");
        }
        PolicyCmd::Read { name } => {
            let v = client
                .call("GET", &format!("sys/policies/acl/{name}"), None)
                .await?;
            if cli.format == Format::Json {
                print(cli.format, &v);
            } else {
                outln!(
                    "{}",
                    v.pointer("/data/policy")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
            }
        }
        PolicyCmd::List => {
            let v = client.call("LIST", "sys/policies/acl", None).await?;
            print_list(cli.format, &v);
        }
        PolicyCmd::Delete { name } => {
            client
                .call("DELETE", &format!("sys/policies/acl/{name}"), None)
                .await?;
            outln!("Success! Deleted policy: {name}");
        }
    }
    Ok(())
}
