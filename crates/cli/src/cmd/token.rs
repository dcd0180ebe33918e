//! `custos token create|lookup|renew|revoke`.

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::print;
use clap::Subcommand;
use serde_json::{json, Map, Value};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a child token (or an orphan with --orphan).
    Create {
        /// Policy to attach (repeatable).
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Initial TTL, e.g. 1h.
        #[arg(long)]
        ttl: Option<String>,
        /// Hard cap on the lifetime, across renewals.
        #[arg(long)]
        explicit_max_ttl: Option<String>,
        /// Make a periodic token renewed by this period.
        #[arg(long)]
        period: Option<String>,
        /// Number of uses (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        use_limit: i64,
        /// Create an orphan token (no parent).
        #[arg(long)]
        orphan: bool,
        /// Whether the token may be renewed.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        renewable: bool,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Metadata key=value (repeatable).
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Do not attach the default policy.
        #[arg(long)]
        no_default_policy: bool,
        /// Print only this field, bare (e.g. `token` for the new token), as Vault's -field.
        #[arg(long, value_name = "NAME")]
        field: Option<String>,
    },
    /// Look up a token (your own if none given).
    Lookup {
        /// The token (or accessor) to look up.
        #[arg(value_name = "TOKEN")]
        target: Option<String>,
        /// Treat the argument as an accessor.
        #[arg(long)]
        accessor: bool,
    },
    /// Renew a token (your own if none given).
    Renew {
        /// The token (or accessor) to renew.
        #[arg(value_name = "TOKEN")]
        target: Option<String>,
        /// Requested increment, e.g. 1h.
        #[arg(long)]
        increment: Option<String>,
        /// Treat the argument as an accessor.
        #[arg(long)]
        accessor: bool,
    },
    /// Revoke a token and its children (your own with --self).
    Revoke {
        /// The token (or accessor) to revoke.
        #[arg(value_name = "TOKEN")]
        target: Option<String>,
        /// Revoke the calling token.
        #[arg(long = "self")]
        this: bool,
        /// Treat the argument as an accessor.
        #[arg(long)]
        accessor: bool,
        /// "orphan" keeps the children alive as orphans.
        #[arg(long, value_parser = ["tree", "orphan"], default_value = "tree")]
        mode: String,
    },
}

pub async fn run(cli: &Cli, c: &TokenCmd) -> CliResult<()> {
    let client = cli.client()?;
    let v = match c {
        TokenCmd::Create {
            policies,
            ttl,
            explicit_max_ttl,
            period,
            use_limit,
            orphan,
            renewable,
            display_name,
            metadata,
            no_default_policy,
            field,
        } => {
            let mut b = Map::new();
            if !policies.is_empty() {
                b.insert("policies".into(), json!(policies));
            }
            for (k, v) in [
                ("ttl", ttl),
                ("explicit_max_ttl", explicit_max_ttl),
                ("period", period),
                ("display_name", display_name),
            ] {
                if let Some(v) = v {
                    b.insert(k.into(), json!(v));
                }
            }
            b.insert("num_uses".into(), json!(use_limit));
            b.insert("renewable".into(), json!(renewable));
            b.insert("no_default_policy".into(), json!(no_default_policy));
            if !metadata.is_empty() {
                b.insert("meta".into(), Value::Object(super::kv_args(metadata)?));
            }
            let path = if *orphan {
                "auth/token/create-orphan"
            } else {
                "auth/token/create"
            };
            let v = client.call("POST", path, Some(&Value::Object(b))).await?;
            if let Some(name) = field {
                let f = crate::output::field(&v, name).ok_or_else(|| {
                    CliError::Other(format!("field {name:?} is not present in the response"))
                })?;
                crate::output::print_field(f);
                return Ok(());
            }
            v
        }
        TokenCmd::Lookup { target, accessor } => match (target, accessor) {
            (None, false) => client.call("GET", "auth/token/lookup-self", None).await?,
            (Some(t), false) => {
                client
                    .call("POST", "auth/token/lookup", Some(&json!({"token": t})))
                    .await?
            }
            (Some(a), true) => {
                client
                    .call(
                        "POST",
                        "auth/token/lookup-accessor",
                        Some(&json!({"accessor": a})),
                    )
                    .await?
            }
            (None, true) => {
                return Err(CliError::Usage(
                    "--accessor needs an accessor argument".into(),
                ))
            }
        },
        TokenCmd::Renew {
            target,
            increment,
            accessor,
        } => {
            let mut b = Map::new();
            if let Some(i) = increment {
                b.insert("increment".into(), json!(i));
            }
            let path = match (target, accessor) {
                (None, false) => "auth/token/renew-self",
                (Some(t), false) => {
                    b.insert("token".into(), json!(t));
                    "auth/token/renew"
                }
                (Some(a), true) => {
                    b.insert("accessor".into(), json!(a));
                    "auth/token/renew-accessor"
                }
                (None, true) => {
                    return Err(CliError::Usage(
                        "--accessor needs an accessor argument".into(),
                    ))
                }
            };
            client.call("POST", path, Some(&Value::Object(b))).await?
        }
        TokenCmd::Revoke {
            target,
            this,
            accessor,
            mode,
        } => {
            let (path, body) = match (target, this, accessor) {
                (None, true, _) => ("auth/token/revoke-self", json!({})),
                (Some(a), false, true) => ("auth/token/revoke-accessor", json!({"accessor": a})),
                (Some(t), false, false) if mode == "orphan" => {
                    ("auth/token/revoke-orphan", json!({"token": t}))
                }
                (Some(t), false, false) => ("auth/token/revoke", json!({"token": t})),
                _ => {
                    return Err(CliError::Usage(
                        "give a token (or accessor with --accessor), or --self".into(),
                    ))
                }
            };
            client.call("POST", path, Some(&body)).await?;
            outln!("Success! Revoked token (if it existed)");
            return Ok(());
        }
    };
    print(cli.format, &v);
    Ok(())
}
