//! `custos attest …`: enrol a device's TPM, answer its credential challenge, submit quotes,
//! read the registry, and verify a saved quote offline. The files are what tpm2-tools writes
//! (`tpm2_createek -u`, `tpm2_createak -u`, `tpm2_quote -m/-s`, the EK certificate from NV)
//! and what a Linux kernel exposes (`binary_bios_measurements`).

use super::Cli;
use crate::client::{CliError, CliResult};
use crate::output::print;
use base64::Engine as _;
use clap::{Args, Subcommand};
use custos_attest::policy::Policy;
use custos_attest::tpm::Public;
use custos_attest::verify::{appraise, Evidence, Expected, ReferenceImage};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AttestCmd {
    /// Enrol a device's TPM: the EK certificate must chain to the configured manufacturer CA;
    /// writes the credential its TPM must activate (tpm2_activatecredential -i).
    Enrol(EnrolArgs),
    /// Finish an enrolment with the credential the TPM recovered.
    Activate {
        /// The device ID.
        device: String,
        /// The file tpm2_activatecredential -o wrote.
        #[arg(long)]
        credential: PathBuf,
        #[command(flatten)]
        m: Mount,
    },
    /// Ask a fresh nonce for a device's next quote (prints it in hex, for tpm2_quote -q).
    Nonce {
        /// The device ID.
        device: String,
        #[command(flatten)]
        m: Mount,
    },
    /// Submit a quote: exit 0 TRUSTED, 1 UNTRUSTED or refused (every rule listed).
    Quote(QuoteArgs),
    /// The registry: every device with its status, or one device in full.
    Status {
        /// One device.
        device: Option<String>,
        #[command(flatten)]
        m: Mount,
    },
    /// Verify a saved quote offline against an AK, a nonce and the policies: exit 0
    /// TRUSTED, 1 UNTRUSTED (every rule listed), 2 error.
    Verify(VerifyArgs),
    /// Stand in for a boot loader (tests, development): append a SHA-256 measurement of an
    /// image to an event log (created if absent) and print the tpm2_pcrextend argument.
    Measure {
        /// The image measured.
        image: PathBuf,
        /// The event log to append to.
        #[arg(long)]
        log: PathBuf,
        /// The PCR.
        #[arg(long, default_value_t = 4)]
        pcr: u8,
    },
}

/// Which attestation mount, and how to reach it.
#[derive(Args)]
pub struct Mount {
    /// The attestation mount.
    #[arg(long, default_value = "attest")]
    pub(crate) mount: String,
    #[command(flatten)]
    pub(crate) conn: super::Conn,
}

#[derive(Args)]
pub struct EnrolArgs {
    /// The device ID.
    device: String,
    /// The device class (as the attestation and firmware policies name it).
    #[arg(long)]
    class: String,
    /// The EK's public area (TPM2B_PUBLIC, `tpm2_createek -u`).
    #[arg(long)]
    ek_public: PathBuf,
    /// The EK certificate (DER or PEM, from the TPM's NV index).
    #[arg(long)]
    ek_cert: PathBuf,
    /// The AK's public area (TPM2B_PUBLIC, `tpm2_createak -u`).
    #[arg(long)]
    ak_public: PathBuf,
    /// A hardware ID of the board (repeatable).
    #[arg(long)]
    hardware_id: Vec<String>,
    /// An NF instance ID that runs on the device (repeatable).
    #[arg(long)]
    nf_instance_id: Vec<String>,
    /// A certificate serial that belongs to the device (repeatable).
    #[arg(long)]
    cert_serial: Vec<String>,
    /// Where to write the credential for tpm2_activatecredential -i.
    #[arg(long)]
    credential_out: PathBuf,
    #[command(flatten)]
    m: Mount,
}

#[derive(Args)]
pub struct QuoteArgs {
    /// The device ID.
    device: String,
    #[command(flatten)]
    files: EvidenceFiles,
    #[command(flatten)]
    m: Mount,
}

/// The evidence, as tpm2_quote and the kernel write it.
#[derive(Args)]
pub struct EvidenceFiles {
    /// TPMS_ATTEST (`tpm2_quote -m`).
    #[arg(long)]
    quote: PathBuf,
    /// TPMT_SIGNATURE (`tpm2_quote -s`).
    #[arg(long)]
    signature: PathBuf,
    /// The measured-boot event log (binary_bios_measurements).
    #[arg(long)]
    event_log: PathBuf,
}

impl EvidenceFiles {
    /// (quote, signature, event log) bytes, each within its limit.
    fn read(&self) -> CliResult<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        Ok((
            read(&self.quote, 4096)?,
            read(&self.signature, 4096)?,
            read(&self.event_log, custos_attest::eventlog::MAX_LOG_BYTES)?,
        ))
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The AK's public area (TPM2B_PUBLIC).
    #[arg(long)]
    ak_public: PathBuf,
    #[command(flatten)]
    files: EvidenceFiles,
    /// The nonce the quote must carry, hex.
    #[arg(long)]
    nonce: String,
    /// The attestation policy (TOML).
    #[arg(long)]
    policy: PathBuf,
    /// The device class.
    #[arg(long)]
    class: String,
    /// The firmware policy (TOML, as fw verify) that judges measured images.
    #[arg(long)]
    firmware_policy: Option<PathBuf>,
    /// Provenance bundles of the images that may have been measured (repeatable).
    #[arg(long)]
    bundle: Vec<PathBuf>,
    /// The device's anti-rollback floor.
    #[arg(long, default_value_t = 0)]
    floor: u64,
}

impl AttestCmd {
    /// The connection options (offline `verify` has none).
    pub fn conn(&self) -> Option<&super::Conn> {
        match self {
            AttestCmd::Enrol(a) => Some(&a.m.conn),
            AttestCmd::Quote(a) => Some(&a.m.conn),
            AttestCmd::Activate { m, .. }
            | AttestCmd::Nonce { m, .. }
            | AttestCmd::Status { m, .. } => Some(&m.conn),
            AttestCmd::Verify(_) | AttestCmd::Measure { .. } => None,
        }
    }
}

fn read(p: &Path, max: usize) -> CliResult<Vec<u8>> {
    let b = std::fs::read(p).map_err(|source| CliError::Io {
        what: format!("reading {}", p.display()),
        source,
    })?;
    if b.len() > max {
        return Err(CliError::Usage(format!(
            "{}: larger than {max} bytes",
            p.display()
        )));
    }
    Ok(b)
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn path(m: &Mount, rest: &str) -> String {
    format!("{}/{rest}", m.mount.trim_matches('/'))
}

pub async fn run(cli: &Cli, c: &AttestCmd) -> CliResult<()> {
    let client = || cli.client();
    match c {
        AttestCmd::Enrol(a) => {
            let v = client()?
                .call(
                    "PUT",
                    &path(&a.m, &format!("devices/{}", a.device)),
                    Some(&json!({
                        "device_class": a.class,
                        "ek_public": b64(&read(&a.ek_public, 4096)?),
                        "ek_certificate": b64(&read(&a.ek_cert, 16384)?),
                        "ak_public": b64(&read(&a.ak_public, 4096)?),
                        "hardware_ids": a.hardware_id,
                        "nf_instance_ids": a.nf_instance_id,
                        "cert_serials": a.cert_serial,
                    })),
                )
                .await?;
            let file = base64::engine::general_purpose::STANDARD
                .decode(
                    v["data"]["tpm2_tools_credential"]
                        .as_str()
                        .unwrap_or_default(),
                )
                .map_err(|e| CliError::Other(format!("the server's credential: {e}")))?;
            super::fw::write_durably(&a.credential_out, &file, 0o600)?;
            if cli.format == crate::output::Format::Json {
                print(cli.format, &v);
                return Ok(());
            }
            outln!(
                "device {} is PENDING: its EK certificate chains to {}.\n\
                 Activate the credential on the device's TPM (the AK must be in the TPM whose EK was presented):\n  \
                 tpm2_activatecredential -c ak.ctx -C ek.ctx -i {} -o secret.bin -P session:…\n\
                 then: custos attest activate {} --credential secret.bin (within {} s)",
                a.device,
                v["data"]["ek_issuer"].as_str().unwrap_or("?"),
                a.credential_out.display(),
                a.device,
                v["data"]["activate_within"]
            );
            Ok(())
        }
        AttestCmd::Activate {
            device,
            credential,
            m,
        } => {
            let secret = zeroize::Zeroizing::new(read(credential, 64)?);
            let v = client()?
                .call(
                    "PUT",
                    &path(m, &format!("devices/{device}/activate")),
                    Some(&json!({"credential": b64(&secret)})),
                )
                .await?;
            status_one(cli, &v);
            Ok(())
        }
        AttestCmd::Nonce { device, m } => {
            let v = client()?
                .call(
                    "PUT",
                    &path(m, &format!("devices/{device}/nonce")),
                    Some(&json!({})),
                )
                .await?;
            if cli.format == crate::output::Format::Json {
                print(cli.format, &v);
            } else {
                outln!("{}", v["data"]["nonce"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        AttestCmd::Quote(a) => {
            let v = client()?
                .call(
                    "PUT",
                    &path(&a.m, &format!("devices/{}/quote", a.device)),
                    Some(&{
                        let (q, s, l) = a.files.read()?;
                        json!({"quote": b64(&q), "signature": b64(&s), "event_log": b64(&l)})
                    }),
                )
                .await?;
            if cli.format == crate::output::Format::Json {
                print(cli.format, &v);
            } else {
                say_verdict(&v["data"]);
            }
            if v["data"]["status"] == "TRUSTED" {
                Ok(())
            } else {
                Err(CliError::Denied)
            }
        }
        AttestCmd::Status { device: Some(d), m } => {
            let v = client()?
                .call("GET", &path(m, &format!("devices/{d}")), None)
                .await?;
            status_one(cli, &v);
            Ok(())
        }
        AttestCmd::Status { device: None, m } => {
            let c = client()?;
            let ids = c.call("LIST", &path(m, "devices"), None).await?;
            let mut rows = Vec::new();
            for id in ids["data"]["keys"].as_array().cloned().unwrap_or_default() {
                let id = id.as_str().unwrap_or_default().to_string();
                let v = c
                    .call("GET", &path(m, &format!("devices/{id}")), None)
                    .await?;
                rows.push(v["data"].clone());
            }
            if cli.format == crate::output::Format::Json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
                return Ok(());
            }
            outln!(
                "{:<24} {:<14} {:<11} {:<21} {:>5}  failed rules",
                "device",
                "class",
                "status",
                "last trusted",
                "floor"
            );
            for r in rows {
                outln!(
                    "{:<24} {:<14} {:<11} {:<21} {:>5}  {}",
                    r["id"].as_str().unwrap_or(""),
                    r["device_class"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["last_trusted"].as_str().unwrap_or("never"),
                    r["floor"],
                    r["verdict"]["rules"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        AttestCmd::Verify(a) => verify(cli, a),
        AttestCmd::Measure { image, log, pcr } => measure(image, log, *pcr),
    }
}

fn measure(image: &Path, log: &Path, pcr: u8) -> CliResult<()> {
    use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE};
    use custos_attest::tpm::HashAlg;
    if pcr >= 24 {
        return Err(CliError::Usage("--pcr: PCRs are 0..23".into()));
    }
    let mut l = match std::fs::read(log) {
        Ok(b) => {
            EventLog::parse(&b).map_err(|e| CliError::Usage(format!("{}: {e}", log.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => EventLog {
            banks: vec![HashAlg::Sha256],
            startup_locality: 0,
            events: Vec::new(),
        },
        Err(source) => {
            return Err(CliError::Io {
                what: format!("reading {}", log.display()),
                source,
            })
        }
    };
    if l.banks != [HashAlg::Sha256] {
        return Err(CliError::Usage(format!(
            "{}: records banks other than sha256 alone",
            log.display()
        )));
    }
    let sha256 = super::fw::hash_file(image, &["sha256"], None)?
        .remove("sha256")
        .unwrap_or_default();
    let digest = hex::decode(&sha256).map_err(|e| CliError::Other(e.to_string()))?;
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    l.events.push(Event {
        pcr,
        kind: EV_POST_CODE,
        digests: BTreeMap::from([(HashAlg::Sha256, digest)]),
        data: name.into_bytes(),
    });
    super::fw::write_durably(log, &l.to_bytes(), 0o644)?;
    outln!("{pcr}:sha256={sha256}");
    Ok(())
}

fn status_one(cli: &Cli, v: &Value) {
    if cli.format == crate::output::Format::Json {
        print(cli.format, v);
        return;
    }
    let d = &v["data"];
    outln!(
        "device {} ({}): {}",
        d["id"].as_str().unwrap_or(""),
        d["device_class"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or("")
    );
    outln!("  EK issuer: {}", d["ek_issuer"].as_str().unwrap_or(""));
    outln!("  AK name:   {}", d["ak_name"].as_str().unwrap_or(""));
    outln!("  floor:     {}", d["floor"]);
    if let Some(t) = d["last_trusted"].as_str() {
        outln!("  last TRUSTED: {t}");
    }
    if d["verdict"].is_object() {
        outln!("  last verdict:");
        say_verdict(&d["verdict"]);
    }
}

fn say_verdict(v: &Value) {
    match v["at"].as_str().filter(|s| !s.is_empty()) {
        Some(at) => outln!("{} at {at}", v["status"].as_str().unwrap_or("")),
        None => outln!("{}", v["status"].as_str().unwrap_or("")),
    }
    for f in v["firmware"].as_array().cloned().unwrap_or_default() {
        outln!(
            "  PCR {} measured {} ({}{})",
            f["pcr"],
            f["sha256"].as_str().unwrap_or(""),
            f["source"].as_str().unwrap_or(""),
            f["version"]
                .as_str()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default()
        );
    }
    for f in v["failures"].as_array().cloned().unwrap_or_default() {
        outln!(
            "  - {}: {}",
            f["rule"].as_str().unwrap_or(""),
            f["detail"].as_str().unwrap_or("")
        );
    }
}

fn verify(cli: &Cli, a: &VerifyArgs) -> CliResult<()> {
    let text = |p: &Path| -> CliResult<String> {
        String::from_utf8(read(p, 1 << 20)?)
            .map_err(|_| CliError::Usage(format!("{}: not UTF-8", p.display())))
    };
    let ak = Public::parse(&read(&a.ak_public, 4096)?)
        .map_err(|e| CliError::Usage(format!("--ak-public: {e}")))?;
    let policy = Policy::parse(&text(&a.policy)?).map_err(|e| CliError::Usage(e.to_string()))?;
    let class = policy
        .class(&a.class)
        .ok_or_else(|| CliError::Usage(format!("--class {}: not in the policy", a.class)))?;
    let nonce = hex::decode(&a.nonce).map_err(|_| CliError::Usage("--nonce: not hex".into()))?;
    let (attest, signature, event_log) = a.files.read()?;
    let mut refs: BTreeMap<Vec<u8>, ReferenceImage> = BTreeMap::new();
    if let Some(fp) = &a.firmware_policy {
        let fw = custos_attest::references::for_measurements(
            custos_provenance::policy::Policy::parse(&text(fp)?)
                .map_err(|e| CliError::Usage(format!("--firmware-policy: {e}")))?,
        );
        let mut bundles = Vec::new();
        for b in &a.bundle {
            bundles.push(
                custos_provenance::bundle::Bundle::parse(&read(
                    b,
                    custos_provenance::bundle::MAX_BUNDLE_BYTES,
                )?)
                .map_err(|e| CliError::Usage(format!("{}: {e}", b.display())))?,
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for d in custos_attest::verify::firmware_digests(&event_log, class) {
            if let Some(r) = custos_attest::references::appraise_bundles(
                &hex::encode(&d),
                &bundles,
                &fw,
                &a.class,
                &[],
                now,
            ) {
                refs.insert(d, r);
            }
        }
    } else if !a.bundle.is_empty() {
        return Err(CliError::Usage("--bundle needs --firmware-policy".into()));
    }
    let v = appraise(
        &Evidence {
            attest: &attest,
            signature: &signature,
            event_log: &event_log,
        },
        &Expected {
            ak: &ak,
            nonce: &nonce,
            class,
            last: None,
            floor: a.floor,
            now: 0,
        },
        &refs,
    );
    let status = if v.trusted { "TRUSTED" } else { "UNTRUSTED" };
    let out =
        json!({"status": status, "failures": v.failures, "firmware": v.firmware, "pcrs": v.pcrs});
    if cli.format == crate::output::Format::Json {
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        say_verdict(&out);
    }
    if v.trusted {
        Ok(())
    } else {
        Err(CliError::Denied)
    }
}
