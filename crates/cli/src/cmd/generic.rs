//! `custos read|write|list|delete PATH [k=v ...]`.

use super::Cli;
use crate::client::CliResult;
use crate::output::{print, print_list};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct PathArgs {
    /// API path below /v1/, e.g. secret/app or sys/mounts.
    pub path: String,
    /// key=value pairs (value may be @file or - for stdin).
    pub data: Vec<String>,
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
    print(cli.format, &v);
    Ok(())
}

pub async fn write(cli: &Cli, a: &PathArgs) -> CliResult<()> {
    let body = Value::Object(super::kv_args(&a.data)?);
    let v = cli.client()?.call("PUT", &a.path, Some(&body)).await?;
    if v.is_null() {
        outln!("Success! Data written to: {}", a.path);
    } else {
        print(cli.format, &v);
    }
    Ok(())
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
