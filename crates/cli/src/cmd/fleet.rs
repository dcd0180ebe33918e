//! `custos fleet`: the orchestrator's calls on an attestation mount: the fleet's trust
//! state (list, counts, outliers), quarantine and release, recalls, attestation on demand,
//! monitor alerts naming a signer, and the webhook outbox.

use super::attest::{path, Mount};
use super::Cli;
use crate::client::CliResult;
use crate::output::Format;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum FleetCmd {
    /// Devices with their trust state, filtered and paged (a table, or --format json).
    List {
        /// Only this device class.
        #[arg(long)]
        class: Option<String>,
        /// Only this state: TRUSTED, UNTRUSTED, STALE, QUARANTINED, UNKNOWN.
        #[arg(long)]
        state: Option<String>,
        /// Only this firmware version.
        #[arg(long)]
        version: Option<String>,
        /// Only devices with a certificate expiring within this long (e.g. 30d).
        #[arg(long)]
        expiring_within: Option<String>,
        /// Only devices whose measured image this signer (key ID or identity) signed.
        #[arg(long)]
        signer: Option<String>,
        /// Start after this device ID (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
        /// Devices per page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        m: Mount,
    },
    /// Device counts by state, by class and state, and by class and version.
    Counts {
        #[command(flatten)]
        m: Mount,
    },
    /// Devices whose image differs from their class's majority or known-good image, or
    /// that run an image no provenance names.
    Outliers {
        #[command(flatten)]
        m: Mount,
    },
    /// Cut a device off: its certificates are revoked, the NRF refuses it, logins and
    /// issuance are refused (repeating it changes nothing).
    Quarantine {
        /// The device ID.
        device: String,
        /// Why (audited and logged).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        m: Mount,
    },
    /// Release a quarantined device; it needs a TRUSTED verdict newer than its quarantine.
    Release {
        /// The device ID.
        device: String,
        /// Why (audited and logged).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        m: Mount,
    },
    /// Quarantine many devices at once: those listed, or a whole device class.
    Recall {
        /// A device to quarantine (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Every device of this class instead.
        #[arg(long)]
        class: Option<String>,
        /// Why (audited and logged).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        m: Mount,
    },
    /// Ask a device's agent to attest now and wait for the verdict (exit 1 unless TRUSTED).
    AttestNow {
        /// The device ID.
        device: String,
        /// How long to wait for the verdict (e.g. 30s).
        #[arg(long, default_value = "30s")]
        timeout: String,
        #[command(flatten)]
        m: Mount,
    },
    /// A monitor alert names a signer: classes whose policy says `signer_alert` quarantine
    /// the devices running images it signed.
    SignerAlert {
        /// The signer (key ID or keyless identity).
        signer: String,
        /// The alert (audited and logged).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        m: Mount,
    },
    /// The webhook outbox: events not yet delivered, and the last delivery error.
    Webhook {
        #[command(flatten)]
        m: Mount,
    },
    /// Start a rollout of a signed image to a device class, in waves gated on installs and
    /// TRUSTED verdicts; a failed gate halts it and rolls the failed devices back.
    Rollout {
        /// The device class.
        class: String,
        /// The image's SHA-256 (as its provenance names it).
        image_sha256: String,
        /// Devices in the first (canary) wave.
        #[arg(long, default_value_t = 1)]
        canary: usize,
        /// A further wave, as the percentage of the class reached by its end (repeatable,
        /// increasing; the last wave takes the rest).
        #[arg(long = "wave")]
        waves: Vec<u32>,
        /// How long each wave has to pass its gate (e.g. 30m).
        #[arg(long, default_value = "30m")]
        deadline: String,
        #[command(flatten)]
        m: Mount,
    },
    /// The supply-chain assessment: certificates expiring, weak keys and SHA-1 in the PKI,
    /// signing keys past their rotation schedule, devices never attested, suppliers and
    /// builders whose images failed attestation; each finding with its rule and object.
    Posture {
        /// Certificates expiring within this long (e.g. 30d).
        #[arg(long, default_value = "30d")]
        expiring_within: String,
        /// Signing keys used for longer than this are past their rotation (e.g. 365d).
        #[arg(long)]
        key_max_age: Option<String>,
        #[command(flatten)]
        m: Mount,
    },
    /// A rollout's state (or every rollout's ID).
    Rollouts {
        /// One rollout.
        id: Option<String>,
        #[command(flatten)]
        m: Mount,
    },
    /// Step a rollout now (idempotent): what the registry says is applied to its gate.
    Advance {
        /// The rollout.
        id: String,
        #[command(flatten)]
        m: Mount,
    },
    /// Halt a rollout: no further wave starts; failed devices are rolled back.
    Halt {
        /// The rollout.
        id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        m: Mount,
    },
}

impl FleetCmd {
    /// The connection options.
    pub fn conn(&self) -> &super::Conn {
        match self {
            FleetCmd::List { m, .. }
            | FleetCmd::Counts { m }
            | FleetCmd::Outliers { m }
            | FleetCmd::Quarantine { m, .. }
            | FleetCmd::Release { m, .. }
            | FleetCmd::Recall { m, .. }
            | FleetCmd::AttestNow { m, .. }
            | FleetCmd::SignerAlert { m, .. }
            | FleetCmd::Webhook { m }
            | FleetCmd::Posture { m, .. }
            | FleetCmd::Rollout { m, .. }
            | FleetCmd::Rollouts { m, .. }
            | FleetCmd::Advance { m, .. }
            | FleetCmd::Halt { m, .. } => &m.conn,
        }
    }
}

fn print(cli: &Cli, v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(&v["data"]).unwrap_or_default()
    );
    let _ = cli;
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(cli: &Cli, c: &FleetCmd) -> CliResult<()> {
    let client = cli.client()?;
    match c {
        FleetCmd::List {
            class,
            state,
            version,
            expiring_within,
            signer,
            after,
            limit,
            m,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("class", class),
                ("state", state),
                ("version", version),
                ("expiring_within", expiring_within),
                ("signer", signer),
                ("after", after),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencoding(v)));
                }
            }
            let v = client
                .call(
                    "GET",
                    &format!("{}?{}", path(m, "fleet"), q.join("&")),
                    None,
                )
                .await?;
            if cli.format == Format::Json {
                print(cli, &v);
                return Ok(());
            }
            outln!(
                "{:<24} {:<14} {:<12} {:<10} {:<21} quarantine",
                "device",
                "class",
                "state",
                "version",
                "last verdict"
            );
            for d in v["data"]["devices"].as_array().cloned().unwrap_or_default() {
                outln!(
                    "{:<24} {:<14} {:<12} {:<10} {:<21} {}",
                    s(&d["device"]),
                    s(&d["device_class"]),
                    s(&d["state"]),
                    s(&d["version"]),
                    s(&d["last_verdict_at"]),
                    s(&d["quarantine"])
                );
            }
            if let Some(n) = v["data"]["next"].as_str() {
                outln!("(more: --after {n})");
            }
            Ok(())
        }
        FleetCmd::Counts { m } => {
            let v = client.call("GET", &path(m, "fleet/counts"), None).await?;
            if cli.format == Format::Json {
                print(cli, &v);
                return Ok(());
            }
            outln!("{} devices", s(&v["data"]["total"]));
            if let Some(o) = v["data"]["by_state"].as_object() {
                for (k, n) in o {
                    outln!("  {k:<12} {n}");
                }
            }
            if let Some(o) = v["data"]["by_class_version"].as_object() {
                for (class, versions) in o {
                    for (ver, n) in versions.as_object().cloned().unwrap_or_default() {
                        outln!("  {class:<14} {ver:<12} {n}");
                    }
                }
            }
            Ok(())
        }
        FleetCmd::Outliers { m } => {
            let v = client.call("GET", &path(m, "fleet/outliers"), None).await?;
            if cli.format == Format::Json {
                print(cli, &v);
                return Ok(());
            }
            outln!("{:<24} {:<14} {:<16} rules", "device", "class", "image");
            for o in v["data"]["outliers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                outln!(
                    "{:<24} {:<14} {:<16} {}",
                    s(&o["device"]),
                    s(&o["class"]),
                    s(&o["image"]).chars().take(16).collect::<String>(),
                    o["rules"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        FleetCmd::Quarantine { device, reason, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, &format!("devices/{device}/quarantine")),
                    Some(&json!({"reason": reason})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Release { device, reason, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, &format!("devices/{device}/release")),
                    Some(&json!({"reason": reason})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Recall {
            devices,
            class,
            reason,
            m,
        } => {
            let mut body = json!({"reason": reason});
            if !devices.is_empty() {
                body["devices"] = json!(devices);
            }
            if let Some(c) = class {
                body["device_class"] = json!(c);
            }
            let v = client.call("POST", &path(m, "recall"), Some(&body)).await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::AttestNow { device, timeout, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, &format!("devices/{device}/attest-now")),
                    Some(&json!({"timeout": timeout})),
                )
                .await?;
            print(cli, &v);
            if v["data"]["status"] != "TRUSTED" {
                std::process::exit(1);
            }
            Ok(())
        }
        FleetCmd::SignerAlert { signer, reason, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, "signer-alert"),
                    Some(&json!({"signer": signer, "reason": reason})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Webhook { m } => {
            let v = client.call("GET", &path(m, "webhook"), None).await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Rollout {
            class,
            image_sha256,
            canary,
            waves,
            deadline,
            m,
        } => {
            let v = client
                .call(
                    "POST",
                    &path(m, "rollouts"),
                    Some(&json!({"device_class": class, "image_sha256": image_sha256,
                        "canary": canary, "waves": waves, "deadline": deadline})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Posture {
            expiring_within,
            key_max_age,
            m,
        } => {
            let mut q = format!("expiring_within={}", urlencoding(expiring_within));
            if let Some(k) = key_max_age {
                q.push_str(&format!("&key_max_age={}", urlencoding(k)));
            }
            let v = client
                .call("GET", &format!("{}?{q}", path(m, "posture")), None)
                .await?;
            if cli.format == Format::Json {
                print(cli, &v);
                return Ok(());
            }
            let list = v["data"]["findings"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            outln!(
                "{} findings ({})",
                list.len(),
                s(&v["data"]["generated_at"])
            );
            outln!("{:<26} {:<48} detail", "rule", "object");
            for x in list {
                outln!(
                    "{:<26} {:<48} {}",
                    s(&x["rule"]),
                    s(&x["object"]),
                    s(&x["detail"])
                );
            }
            Ok(())
        }
        FleetCmd::Rollouts { id: None, m } => {
            let v = client.call("LIST", &path(m, "rollouts"), None).await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Rollouts { id: Some(id), m } => {
            let v = client
                .call("GET", &path(m, &format!("rollouts/{id}")), None)
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Advance { id, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, &format!("rollouts/{id}/advance")),
                    Some(&json!({})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
        FleetCmd::Halt { id, reason, m } => {
            let v = client
                .call(
                    "POST",
                    &path(m, &format!("rollouts/{id}/halt")),
                    Some(&json!({"reason": reason})),
                )
                .await?;
            print(cli, &v);
            Ok(())
        }
    }
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
