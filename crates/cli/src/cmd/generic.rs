//! `custos read|write|list|delete PATH [k=v ...]`.

use super::Cli;
use crate::client::CliError;
use crate::client::CliResult;
use crate::output::{field, print, print_field, print_list};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct PathArgs {
    /// API path below /v1/, e.g. secret/app or sys/mounts.
    pub path: String,
    /// key=value pairs (value may be @file or - for stdin).
    pub data: Vec<String>,
    /// Print only this field, bare (no table, no quotes), as Vault's -field does: from
    /// `data`, else `auth` (token, token_accessor, token_policies…). Exit 1 if absent.
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    #[command(flatten)]
    pub conn: super::Conn,
}

/// Prints the response, or only `--field`.
fn show(cli: &Cli, a: &PathArgs, v: &Value) -> CliResult<()> {
    match &a.field {
        None => print(cli.format, v),
        Some(name) => match field(v, name) {
            Some(f) => print_field(f),
            None => {
                return Err(CliError::Other(format!(
                    "field {name:?} is not present in the response from {}",
                    a.path
                )))
            }
        },
    }
    Ok(())
}

fn with_query(path: &str, data: &[String]) -> CliResult<String> {
    if data.is_empty() {
        return Ok(path.to_string());
    }
    let m = super::kv_args(data)?;
    let q: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    Ok(format!("{path}?{}", q.join("&")))
}

pub async fn read(cli: &Cli, a: &PathArgs) -> CliResult<()> {
    let v = cli
        .client()?
        .call("GET", &with_query(&a.path, &a.data)?, None)
        .await?;
    show(cli, a, &v)
}

pub async fn write(cli: &Cli, a: &PathArgs) -> CliResult<()> {
    let body = Value::Object(super::kv_args(&a.data)?);
    let v = cli.client()?.call("PUT", &a.path, Some(&body)).await?;
    if v.is_null() && a.field.is_none() {
        outln!("Success! Data written to: {}", a.path);
        Ok(())
    } else {
        show(cli, a, &v)
    }
}

pub async fn list(cli: &Cli, a: &PathArgs) -> CliResult<()> {
    let v = cli.client()?.call("LIST", &a.path, None).await?;
    print_list(cli.format, &v);
    Ok(())
}

pub async fn delete(cli: &Cli, a: &PathArgs) -> CliResult<()> {
    cli.client()?
        .call("DELETE", &with_query(&a.path, &a.data)?, None)
        .await?;
    outln!("Success! Data deleted (if it existed) at: {}", a.path);
    Ok(())
}
