//! `custos pki issue|sign|revoke|crl|lint`.

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::Format;
use clap::Subcommand;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum PkiCmd {
    /// Issue a certificate (server-generated key) and write cert.pem, key.pem and ca.pem.
    Issue {
        /// The role.
        role: String,
        /// PKI mount path.
        #[arg(long, default_value = "pki")]
        mount: String,
        /// Common name (the NF's FQDN for the SBA profile).
        #[arg(long)]
        common_name: Option<String>,
        /// Comma-separated DNS SANs.
        #[arg(long)]
        alt_names: Option<String>,
        /// Comma-separated IP SANs.
        #[arg(long)]
        ip_sans: Option<String>,
        /// Comma-separated URI SANs.
        #[arg(long)]
        uri_sans: Option<String>,
        /// Lifetime, e.g. 24h (at most the role's max_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// SBA profile: the NF instance ID (UUID).
        #[arg(long)]
        nf_instance_id: Option<String>,
        /// SBA profile: NF type(s), comma-separated (e.g. AMF).
        #[arg(long)]
        nf_type: Option<String>,
        /// Directory for cert.pem, key.pem (mode 0600) and ca.pem.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Sign a CSR (the key never leaves the caller) and write the certificate.
    Sign {
        /// The role that decides what may be signed.
        role: String,
        /// PEM CSR file.
        #[arg(long)]
        csr: PathBuf,
        /// The PKI mount.
        #[arg(long, default_value = "pki")]
        mount: String,
        /// Common name (else the CSR's, if the role uses it).
        #[arg(long)]
        common_name: Option<String>,
        /// Lifetime, e.g. 24h (at most the role's max_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// SBA profile: the NF instance ID (UUID).
        #[arg(long)]
        nf_instance_id: Option<String>,
        /// SBA profile: NF type(s), comma-separated (e.g. AMF).
        #[arg(long)]
        nf_type: Option<String>,
        /// Output certificate file.
        #[arg(long, default_value = "cert.pem")]
        out: PathBuf,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Revoke a certificate by serial number.
    Revoke {
        /// Serial number, colon-separated hex as `pki issue` prints it.
        serial: String,
        /// The PKI mount.
        #[arg(long, default_value = "pki")]
        mount: String,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Fetch the current CRL (PEM).
    Crl {
        /// The PKI mount.
        #[arg(long, default_value = "pki")]
        mount: String,
        /// Output file ("-" for stdout).
        #[arg(long, default_value = "-")]
        out: String,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Check certificates (PEM or DER file) against a profile; lists every violation with its
    /// clause. Exit 0 if all conform, 1 if any violation, 2 on error.
    Lint {
        /// Certificate file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Profile to check.
        #[arg(long, value_parser = ["3gpp-sba"], default_value = "3gpp-sba")]
        profile: String,
    },
}

fn write_file(path: &Path, data: &str, secret: bool) -> CliResult<()> {
    let io = |source| CliError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.create(true).write(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = secret;
    let mut f = o.open(path).map_err(io)?;
    std::io::Write::write_all(&mut f, data.as_bytes()).map_err(io)?;
    std::io::Write::write_all(&mut f, b"\n").map_err(io)?;
    f.sync_all().map_err(io)
}

fn opt(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.into(), json!(v));
    }
}

fn chain_text(d: &Value) -> String {
    d.get("ca_chain")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl PkiCmd {
    /// The connection options, on the subcommands that talk to a server.
    pub fn conn(&self) -> Option<&super::Conn> {
        match self {
            PkiCmd::Issue { conn, .. }
            | PkiCmd::Sign { conn, .. }
            | PkiCmd::Revoke { conn, .. }
            | PkiCmd::Crl { conn, .. } => Some(conn),
            PkiCmd::Lint { .. } => None,
        }
    }
}

pub async fn run(cli: &Cli, c: &PkiCmd) -> CliResult<()> {
    match c {
        PkiCmd::Lint { files, .. } => lint(cli, files),
        PkiCmd::Issue {
            role,
            mount,
            common_name,
            alt_names,
            ip_sans,
            uri_sans,
            ttl,
            nf_instance_id,
            nf_type,
            out_dir,
            ..
        } => {
            let mut b = Map::new();
            opt(&mut b, "common_name", common_name);
            opt(&mut b, "alt_names", alt_names);
            opt(&mut b, "ip_sans", ip_sans);
            opt(&mut b, "uri_sans", uri_sans);
            opt(&mut b, "ttl", ttl);
            opt(&mut b, "nf_instance_id", nf_instance_id);
            opt(&mut b, "nf_type", nf_type);
            let v = cli
                .client()?
                .call(
                    "POST",
                    &format!("{mount}/issue/{role}"),
                    Some(&Value::Object(b)),
                )
                .await?;
            let d = &v["data"];
            write_file(
                &out_dir.join("key.pem"),
                d["private_key"].as_str().unwrap_or_default(),
                true,
            )?;
            write_file(
                &out_dir.join("cert.pem"),
                d["certificate"].as_str().unwrap_or_default(),
                false,
            )?;
            write_file(&out_dir.join("ca.pem"), &chain_text(d), false)?;
            if cli.format == Format::Json {
                outln!(
                    "{}",
                    json!({"serial_number": d["serial_number"], "expiration": d["expiration"], "dir": out_dir})
                );
            } else {
                outln!(
                    "Issued serial {} (expires {}); wrote cert.pem, key.pem, ca.pem to {}",
                    d["serial_number"].as_str().unwrap_or(""),
                    d["expiration"]
                        .as_i64()
                        .map(crate::output::rfc3339)
                        .unwrap_or_default(),
                    out_dir.display()
                );
            }
            Ok(())
        }
        PkiCmd::Sign {
            role,
            csr,
            mount,
            common_name,
            ttl,
            nf_instance_id,
            nf_type,
            out,
            ..
        } => {
            let text = std::fs::read_to_string(csr).map_err(|source| CliError::Io {
                what: format!("reading {}", csr.display()),
                source,
            })?;
            let mut b = Map::new();
            b.insert("csr".into(), json!(text));
            opt(&mut b, "common_name", common_name);
            opt(&mut b, "ttl", ttl);
            opt(&mut b, "nf_instance_id", nf_instance_id);
            opt(&mut b, "nf_type", nf_type);
            let v = cli
                .client()?
                .call(
                    "POST",
                    &format!("{mount}/sign/{role}"),
                    Some(&Value::Object(b)),
                )
                .await?;
            write_file(
                out,
                v["data"]["certificate"].as_str().unwrap_or_default(),
                false,
            )?;
            outln!(
                "Signed serial {}; wrote {}",
                v["data"]["serial_number"].as_str().unwrap_or(""),
                out.display()
            );
            Ok(())
        }
        PkiCmd::Revoke { serial, mount, .. } => {
            let v = cli
                .client()?
                .call(
                    "POST",
                    &format!("{mount}/revoke"),
                    Some(&json!({"serial_number": serial})),
                )
                .await?;
            outln!(
                "Revoked {serial} at {}",
                v["data"]["revocation_time_rfc3339"].as_str().unwrap_or("")
            );
            Ok(())
        }
        PkiCmd::Crl { mount, out, .. } => {
            let (v, _) = cli
                .client()?
                .call_status("GET", &format!("{mount}/crl/pem"), None, false)
                .await?;
            let text = v.as_str().unwrap_or_default().to_string();
            if out == "-" {
                outln!("{text}");
            } else {
                write_file(Path::new(out), &text, false)?;
            }
            Ok(())
        }
    }
}

fn lint(cli: &Cli, files: &[PathBuf]) -> CliResult<()> {
    let mut any = false;
    let mut report = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|source| CliError::Io {
            what: format!("reading {}", f.display()),
            source,
        })?;
        let ders = custos_pki::lint::cert_ders(&bytes)
            .map_err(|e| CliError::Usage(format!("{}: {e}", f.display())))?;
        for (i, der) in ders.iter().enumerate() {
            let v = custos_pki::lint::lint_sba(der)
                .map_err(|e| CliError::Usage(format!("{}: {e}", f.display())))?;
            any |= !v.is_empty();
            if cli.format == Format::Json {
                report.push(json!({"file": f, "index": i, "violations": v}));
            } else if v.is_empty() {
                outln!(
                    "{} [{i}]: conforms to 3gpp-sba (TS 33.310 6.1.3c)",
                    f.display()
                );
            } else {
                outln!(
                    "{} [{i}]: {} violation(s) of 3gpp-sba",
                    f.display(),
                    v.len()
                );
                for x in &v {
                    outln!("  - [{}] {}", x.clause, x.message);
                }
            }
        }
    }
    if cli.format == Format::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    if any {
        return Err(CliError::Other(
            "certificate(s) do not conform to the profile".into(),
        ));
    }
    Ok(())
}
