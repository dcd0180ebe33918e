//! `custos fw keygen|sign|verify|install|mark-good`: firmware provenance on the build side and
//! on the device. Decisions are `custos-provenance`'s; this module streams images, reads and
//! writes files durably, talks to Custos for keyless certificates, and runs the installer.
//!
//! Exit codes of `verify` and `install`: 0 ACCEPT (installed), 1 DENY (or installer failed),
//! 2 usage or error.

use super::Cli;
use crate::client::{CliError, CliResult};
use clap::{Args, Subcommand, ValueEnum};
use custos_provenance::bundle::{Bundle, MAX_BUNDLE_BYTES};
use custos_provenance::keys::{FileSigner, KeyAlg, Signer};
use custos_provenance::policy::{DeviceState, Installed, Policy};
use custos_provenance::statement::{self, Firmware, ResourceDescriptor, SlsaInputs};
use custos_provenance::verify::{evaluate, Evidence, Verdict};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FwCmd {
    /// Generate a signing key: PKCS#8 PEM (mode 0600) plus `<out>.pub`; prints the key ID
    /// that a policy pins.
    Keygen {
        /// Key algorithm.
        #[arg(long, value_enum, default_value_t = Alg::EcdsaP256)]
        alg: Alg,
        /// Private key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate a P-256 signing key inside a PKCS#11 token (non-extractable); prints its key ID.
    /// The user PIN comes from CUSTOS_PKCS11_PIN.
    HsmKeygen {
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Sign an image (streamed): writes a bundle with SLSA provenance and firmware statements.
    Sign(Box<SignArgs>),
    /// Verify an image: 0 ACCEPT, 1 DENY (every failed rule listed), 2 usage or error.
    Verify(VerifyArgs),
    /// Verify, run the installer, and only after it succeeds record the image in the state.
    Install(InstallArgs),
    /// Verify a bare DSSE envelope (JSON) against public keys: prints the payload type and
    /// the keys that signed; 0 valid, 1 invalid, 2 usage or error.
    VerifyEnvelope {
        /// The envelope file.
        envelope: PathBuf,
        /// Public key PEM files (repeatable).
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// Distinct keys that must have signed.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// Write the verified payload to this file.
        #[arg(long)]
        payload_out: Option<PathBuf>,
    },
    /// Mark the installed image known-good: the target of a later rollback.
    MarkGood {
        /// Device state file.
        #[arg(long)]
        state: PathBuf,
    },
    /// Create a device's state file (what `fw verify --state` and `fw install` read): its
    /// class, hardware ID, and the image it runs now (hashed from --image) with its version
    /// and security version, which becomes the anti-rollback floor. Refuses to overwrite.
    InitState(InitStateArgs),
}

#[derive(Args)]
pub struct InitStateArgs {
    /// The state file to create (JSON; see README "Firmware provenance").
    #[arg(long)]
    state: PathBuf,
    /// The device class (what policies and bundles name, e.g. gnb-du-x1).
    #[arg(long)]
    device_class: String,
    /// The board's hardware ID, when bundles must list it.
    #[arg(long)]
    hardware_id: Option<String>,
    /// The image the device runs now: hashed (SHA-256, SHA-512) and recorded as installed.
    #[arg(long, requires = "version")]
    image: Option<PathBuf>,
    /// The running image's version.
    #[arg(long, requires = "image")]
    version: Option<String>,
    /// The anti-rollback floor: the running image's security version (or, without --image,
    /// the lowest any image may have).
    #[arg(long, default_value_t = 0)]
    security_version: u64,
}

/// A key in a PKCS#11 token.
#[derive(Args, Clone)]
pub struct HsmArgs {
    /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long = "pkcs11-module")]
    module: PathBuf,
    /// Token label.
    #[arg(long = "pkcs11-token")]
    token: String,
    /// Key label.
    #[arg(long = "pkcs11-key")]
    key: String,
}

fn hsm_pin() -> CliResult<zeroize::Zeroizing<String>> {
    std::env::var("CUSTOS_PKCS11_PIN")
        .map(zeroize::Zeroizing::new)
        .map_err(|_| err("set CUSTOS_PKCS11_PIN to the token's user PIN"))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Alg {
    Ed25519,
    EcdsaP256,
}

#[derive(Args)]
pub struct SignArgs {
    /// The image.
    image: PathBuf,
    #[command(flatten)]
    conn: super::Conn,
    /// Bundle file to write.
    #[arg(long)]
    out: PathBuf,
    /// Sign with this PKCS#8 key file (Ed25519 or ECDSA P-256).
    #[arg(long, conflicts_with_all = ["keyless", "pkcs11_module"])]
    key: Option<PathBuf>,
    /// Sign with a key in a PKCS#11 token (with --pkcs11-token and --pkcs11-key; the PIN
    /// comes from CUSTOS_PKCS11_PIN).
    #[arg(long = "pkcs11-module", conflicts_with = "keyless", requires_all = ["pkcs11_token", "pkcs11_key"])]
    pkcs11_module: Option<PathBuf>,
    /// PKCS#11: the token's label.
    #[arg(long = "pkcs11-token")]
    pkcs11_token: Option<String>,
    /// PKCS#11: the key's label.
    #[arg(long = "pkcs11-key")]
    pkcs11_key: Option<String>,
    /// Keyless: a fresh local key and a 10-minute code-signing certificate from Custos
    /// (`pki/sign/<role>`, authenticated with CUSTOS_TOKEN); the key never leaves this process.
    #[arg(long)]
    keyless: bool,
    /// Keyless: the PKI mount.
    #[arg(long, default_value = "pki")]
    mount: String,
    /// Register the bundle in this provenance mount (authenticated with CUSTOS_TOKEN): the
    /// server logs the signing event and the bundle gets its transparency-log receipt.
    #[arg(long)]
    register: Option<String>,
    /// Keyless: the code-signing role.
    #[arg(long, default_value = "codesign")]
    role: String,
    /// The supplier (a policy's supplier name).
    #[arg(long)]
    vendor: String,
    /// The device class the image is for (e.g. gnb-du-x1).
    #[arg(long)]
    device_class: String,
    /// Hardware IDs the image supports (repeatable).
    #[arg(long)]
    hardware_id: Vec<String>,
    /// The release's version (e.g. 5.2.0).
    #[arg(long)]
    version: String,
    /// The anti-rollback counter.
    #[arg(long)]
    security_version: u64,
    /// Release channel.
    #[arg(long, default_value = "stable")]
    channel: String,
    /// RFC 3339 time, or a lifetime from now such as 180d.
    #[arg(long)]
    not_after: String,
    /// SLSA builder ID (keyless: also the certificate's URI SAN).
    #[arg(long)]
    builder_id: String,
    /// SLSA buildType URI.
    #[arg(long, default_value = "https://custos.dev/firmware-build/v1")]
    build_type: String,
    /// Source repository URI (e.g. git+https://…).
    #[arg(long)]
    source_repo: String,
    /// Source commit the image was built from.
    #[arg(long)]
    commit: String,
    /// Lineage: `<uri>@sha256:<hex>` for a parent image or component (repeatable).
    #[arg(long)]
    dependency: Vec<String>,
    /// SLSA invocation ID (the CI job's).
    #[arg(long, default_value = "")]
    invocation_id: String,
    /// Build host and other internal parameters, as a JSON object.
    #[arg(long)]
    internal: Option<String>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image.
    image: PathBuf,
    // With the policy's `fetch_ocsp`, CUSTOS_CACERT also trusts the OCSP responder.
    #[command(flatten)]
    conn: super::Conn,
    /// The bundle `fw sign` wrote.
    #[arg(long)]
    bundle: PathBuf,
    /// Policy (TOML).
    #[arg(long)]
    policy: PathBuf,
    /// Device state (JSON); enables the device-class and anti-rollback rules.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Extra CRL files (DER or PEM) for keyless signing certificates.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// OCSP response files (DER) about the keyless signing certificate, e.g. stapled by the
    /// distribution channel; with the policy's `fetch_ocsp`, the responder is also asked.
    #[arg(long)]
    ocsp: Vec<PathBuf>,
    /// Allow an image below the installed security version, down to the policy's emergency
    /// floor.
    #[arg(long)]
    emergency: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct InstallArgs {
    #[command(flatten)]
    v: VerifyArgs,
    /// Installer command, run with `sh -c`; CUSTOS_FW_IMAGE names the verified copy of the
    /// image, CUSTOS_FW_VERSION and CUSTOS_FW_SECURITY_VERSION describe it.
    #[arg(long)]
    installer: String,
    /// Also mark the new image known-good.
    #[arg(long)]
    mark_good: bool,
}

fn err(what: impl Into<String>) -> CliError {
    CliError::Usage(what.into())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> CliError {
    move |source| CliError::Usage(format!("{what}: {source}"))
}

/// Reads at most `max` bytes; a larger file is an error naming it.
fn read_limited(p: &Path, max: usize, what: &str) -> CliResult<Vec<u8>> {
    let f = std::fs::File::open(p).map_err(io(format!("{what} {}", p.display())))?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io(format!("{what} {}", p.display())))?;
    if buf.len() > max {
        return Err(err(format!(
            "{what} {}: larger than {max} bytes",
            p.display()
        )));
    }
    Ok(buf)
}

/// Streams `path` once through a fixed 1 MiB buffer, computing the `algs` digests, and copies
/// it to `copy` if given. Memory stays constant whatever the image size. One thread: measured
/// here, handing buffers to a hashing thread is slower (the hasher then reads lines another
/// core just wrote) than hashing each buffer while it is still in this core's cache.
pub(crate) fn hash_file(
    path: &Path,
    algs: &[&str],
    mut copy: Option<&mut std::fs::File>,
) -> CliResult<BTreeMap<String, String>> {
    use aws_lc_rs::digest::{Context, SHA256, SHA512};
    let mut f = std::fs::File::open(path).map_err(io(format!("image {}", path.display())))?;
    let mut ctxs: Vec<(String, Context)> = algs
        .iter()
        .map(|a| {
            let alg = if *a == "sha512" { &SHA512 } else { &SHA256 };
            (a.to_string(), Context::new(alg))
        })
        .collect();
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = crate::progress::bytes(len, &format!("hashing {}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(format!("reading image {}: {e}", path.display()))),
        };
        for (_, c) in &mut ctxs {
            c.update(&buf[..n]);
        }
        if let Some(out) = copy.as_deref_mut() {
            out.write_all(&buf[..n])
                .map_err(io("staging the image".into()))?;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(ctxs
        .into_iter()
        .map(|(a, c)| (a, hex::encode(c.finish().as_ref())))
        .collect())
}

/// Writes `bytes` to `path` durably: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A reader sees the old or the new file, never a mix.
pub(crate) fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let what = format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(what.clone()))?;
    f.write_all(bytes).map_err(io(what.clone()))?;
    f.sync_all().map_err(io(what.clone()))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(what.clone()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(what))?;
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl FwCmd {
    /// The connection options, on the subcommands that may talk to a server (keyless signing
    /// and registration; OCSP for verify and install).
    pub fn conn(&self) -> Option<&super::Conn> {
        match self {
            FwCmd::Sign(a) => Some(&a.conn),
            FwCmd::Verify(a) => Some(&a.conn),
            FwCmd::Install(a) => Some(&a.v.conn),
            _ => None,
        }
    }
}

pub async fn run(cli: &Cli, c: &FwCmd) -> CliResult<()> {
    match c {
        FwCmd::Keygen { alg, out } => keygen(*alg, out, cli.format),
        FwCmd::HsmKeygen { hsm } => {
            let k = custos_pkcs11::Pkcs11Signer::generate(
                &hsm.module,
                &hsm.token,
                &hsm_pin()?,
                &hsm.key,
            )
            .map_err(|e| err(e.to_string()))?;
            outln!(
                "P-256 key {:?} generated in token {:?} (non-extractable)",
                hsm.key,
                hsm.token
            );
            outln!("key ID (pin this in the policy): {}", k.key_id());
            Ok(())
        }
        FwCmd::Sign(a) => sign(cli, a).await,
        FwCmd::Verify(a) => {
            let inputs = read_inputs(cli, a).await?;
            let (v, _) = verify(a, inputs, None)?;
            report(&v, a.json);
            if v.accept {
                Ok(())
            } else {
                Err(CliError::Denied)
            }
        }
        FwCmd::Install(a) => install(a, read_inputs(cli, &a.v).await?),
        FwCmd::VerifyEnvelope {
            envelope,
            key,
            threshold,
            payload_out,
        } => {
            let env = custos_provenance::dsse::Envelope::parse(&read_limited(
                envelope,
                custos_provenance::dsse::MAX_ENVELOPE_BYTES,
                "envelope",
            )?)
            .map_err(|e| err(format!("{}: {e}", envelope.display())))?;
            let mut keys = Vec::new();
            for k in key {
                keys.push(
                    custos_provenance::keys::PublicKey::from_pem(&read_limited(
                        k,
                        64 << 10,
                        "key",
                    )?)
                    .map_err(|e| err(format!("{}: {e}", k.display())))?,
                );
            }
            match env.verify(&keys, *threshold) {
                Ok(v) => {
                    outln!("VALID: payloadType {}", v.payload_type);
                    for id in &v.key_ids {
                        outln!("  signed by {id}");
                    }
                    if let Some(p) = payload_out {
                        write_durably(p, &v.payload, 0o644)?;
                    }
                    Ok(())
                }
                Err(e) => {
                    outln!("INVALID: {e}");
                    Err(CliError::Denied)
                }
            }
        }
        FwCmd::InitState(a) => init_state(a),
        FwCmd::MarkGood { state } => {
            let mut st = DeviceState::parse(&read_limited(state, 1 << 20, "state")?)
                .map_err(|e| err(e.to_string()))?;
            let Some(i) = st.installed.clone() else {
                return Err(err("nothing is installed"));
            };
            st.known_good = Some(i.clone());
            write_durably(state, &state_json(&st)?, 0o644)?;
            outln!(
                "known-good: {} (security version {})",
                i.version,
                i.security_version
            );
            Ok(())
        }
    }
}

fn init_state(a: &InitStateArgs) -> CliResult<()> {
    if a.state.exists() {
        return Err(err(format!(
            "{} exists; not overwriting a device's state",
            a.state.display()
        )));
    }
    if a.device_class.trim().is_empty() {
        return Err(CliError::Usage("--device-class: must not be empty".into()));
    }
    let installed = match (&a.image, &a.version) {
        (Some(image), Some(version)) => Some(Installed {
            digest: hash_file(image, &["sha256", "sha512"], None)?,
            version: version.clone(),
            security_version: a.security_version,
            installed_at: statement::to_rfc3339(now()),
        }),
        _ => None,
    };
    let st = DeviceState {
        device_class: a.device_class.clone(),
        hardware_id: a.hardware_id.clone(),
        known_good: installed.clone(),
        installed,
        max_security_version: a.security_version,
    };
    write_durably(&a.state, &state_json(&st)?, 0o644)?;
    outln!(
        "{}: device class {}, anti-rollback floor {}{}",
        a.state.display(),
        st.device_class,
        st.floor(),
        st.installed
            .as_ref()
            .map(|i| format!(
                ", running {} (sha256 {})",
                i.version,
                i.digest.get("sha256").map(String::as_str).unwrap_or("")
            ))
            .unwrap_or_default()
    );
    Ok(())
}

fn keygen(alg: Alg, out: &Path, format: crate::output::Format) -> CliResult<()> {
    let alg = match alg {
        Alg::Ed25519 => KeyAlg::Ed25519,
        Alg::EcdsaP256 => KeyAlg::EcdsaP256,
    };
    if out.exists() {
        return Err(err(format!(
            "{} exists; not overwriting a key",
            out.display()
        )));
    }
    let der = FileSigner::generate(alg).map_err(|e| err(e.to_string()))?;
    let s = FileSigner::from_pkcs8_der(&der).map_err(|e| err(e.to_string()))?;
    write_durably(
        out,
        custos_provenance::keys::pkcs8_pem(&der).as_bytes(),
        0o600,
    )?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    write_durably(
        Path::new(&pub_path),
        s.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    if format == crate::output::Format::Json {
        outln!(
            "{}",
            serde_json::json!({
                "key_id": s.key_id(),
                "algorithm": alg.to_string(),
                "private_key_file": out.display().to_string(),
                "public_key_file": Path::new(&pub_path).display().to_string(),
            })
        );
        return Ok(());
    }
    outln!("{alg} key written to {}", out.display());
    outln!("key ID (pin this in the policy): {}", s.key_id());
    Ok(())
}

fn parse_not_after(s: &str, now: i64) -> CliResult<String> {
    if statement::rfc3339(s).is_some() {
        return Ok(s.to_string());
    }
    custos_provenance::policy::parse_age(s)
        .map(|d| statement::to_rfc3339(now + d))
        .ok_or_else(|| err("--not-after: an RFC 3339 time or a lifetime like 180d"))
}

fn dependency(s: &str) -> CliResult<ResourceDescriptor> {
    let (uri, d) = s
        .rsplit_once("@sha256:")
        .ok_or_else(|| err(format!("--dependency {s:?}: expected <uri>@sha256:<hex>")))?;
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(format!(
            "--dependency {s:?}: the sha256 must be 64 hex digits"
        )));
    }
    Ok(ResourceDescriptor {
        uri: uri.to_string(),
        name: String::new(),
        digest: BTreeMap::from([("sha256".to_string(), d.to_ascii_lowercase())]),
    })
}

async fn sign(cli: &Cli, a: &SignArgs) -> CliResult<()> {
    let started = now();
    let digests = hash_file(&a.image, &["sha256", "sha512"], None)?;
    let internal = match &a.internal {
        None => serde_json::Value::Null,
        Some(j) => serde_json::from_str::<serde_json::Value>(j)
            .ok()
            .filter(|v| v.is_object())
            .ok_or_else(|| err("--internal must be a JSON object"))?,
    };
    let req = custos_provenance::SignRequest {
        image_name: a
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        digests,
        slsa: SlsaInputs {
            builder_id: a.builder_id.clone(),
            build_type: a.build_type.clone(),
            source_repo: a.source_repo.clone(),
            commit: a.commit.clone(),
            dependencies: a
                .dependency
                .iter()
                .map(|d| dependency(d))
                .collect::<CliResult<_>>()?,
            invocation_id: a.invocation_id.clone(),
            started_on: statement::to_rfc3339(started),
            finished_on: statement::to_rfc3339(now()),
            internal,
        },
        firmware: Firmware {
            vendor: a.vendor.clone(),
            device_class: a.device_class.clone(),
            hardware_ids: a.hardware_id.clone(),
            version: a.version.clone(),
            security_version: a.security_version,
            channel: a.channel.clone(),
            not_after: parse_not_after(&a.not_after, now())?,
        },
        signed_at: now(),
    };
    Firmware::parse(&serde_json::to_value(&req.firmware).unwrap_or_default())
        .map_err(|e| err(format!("firmware predicate: {e}")))?;
    let (signer, chain): (Box<dyn Signer>, Vec<String>) = if a.keyless {
        let (s, c) = keyless_signer(cli, a).await?;
        (Box::new(s), c)
    } else if let (Some(module), Some(token), Some(key)) =
        (&a.pkcs11_module, &a.pkcs11_token, &a.pkcs11_key)
    {
        let s = custos_pkcs11::Pkcs11Signer::open(module, token, &hsm_pin()?, key)
            .map_err(|e| err(e.to_string()))?;
        (Box::new(s), Vec::new())
    } else {
        let Some(k) = &a.key else {
            return Err(err(
                "give --key <file>, --pkcs11-module/--pkcs11-token/--pkcs11-key, or --keyless",
            ));
        };
        let pem = zeroize::Zeroizing::new(read_limited(k, 64 << 10, "key")?);
        let s =
            FileSigner::from_pkcs8_pem(&pem).map_err(|e| err(format!("{}: {e}", k.display())))?;
        (Box::new(s), Vec::new())
    };
    let mut b = custos_provenance::sign_bundle(&req, &[signer.as_ref()], chain)
        .map_err(|e| err(format!("signing: {e}")))?;
    let mut registered = None;
    if let Some(mount) = &a.register {
        // Registration logs the signing event; the receipt makes `fw verify` work offline
        // with the log's integrated time as the signing time.
        let body = serde_json::json!({ "bundle": serde_json::to_value(&b).map_err(|e| err(e.to_string()))? });
        let v = cli
            .client()?
            .call(
                "POST",
                &format!("{}/bundles", mount.trim_end_matches('/')),
                Some(&body),
            )
            .await?;
        let receipts = v["data"]["tlog_entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if receipts.is_empty() {
            return Err(err(
                "the server registered the bundle but returned no log receipt",
            ));
        }
        registered = Some(format!(
            "registered at {}/bundles; the bundle carries the log receipt (entry {})",
            mount.trim_end_matches('/'),
            receipts
                .iter()
                .filter_map(|r| r.get("index"))
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        b.tlog_entries = receipts;
    }
    write_durably(&a.out, b.to_json().as_bytes(), 0o644)?;
    outln!(
        "signed {} (sha256 {}) as {}: {}",
        req.image_name,
        req.digests.get("sha256").map(String::as_str).unwrap_or(""),
        if a.keyless {
            "keyless"
        } else if a.pkcs11_module.is_some() {
            "PKCS#11 key"
        } else {
            "key"
        },
        a.out.display()
    );
    outln!("signer key ID: {}", signer.key_id());
    if let Some(r) = registered {
        outln!("{r}");
    }
    Ok(())
}

/// A fresh P-256 key and a 10-minute code-signing certificate for it from `pki/sign/<role>`;
/// only the CSR leaves the process.
async fn keyless_signer(cli: &Cli, a: &SignArgs) -> CliResult<(FileSigner, Vec<String>)> {
    let der = FileSigner::generate(KeyAlg::EcdsaP256).map_err(|e| err(e.to_string()))?;
    let signer = FileSigner::from_pkcs8_der(&der).map_err(|e| err(e.to_string()))?;
    let kp = rcgen::KeyPair::try_from(der.as_slice()).map_err(|e| err(e.to_string()))?;
    let mut p =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    let csr = p
        .serialize_request(&kp)
        .and_then(|c| c.pem())
        .map_err(|e| err(format!("CSR: {e}")))?;
    let client = cli.client()?;
    let v = client
        .call(
            "POST",
            &format!("{}/sign/{}", a.mount.trim_matches('/'), a.role),
            Some(&serde_json::json!({
                "csr": csr,
                "uri_sans": a.builder_id,
                "ttl": "10m",
            })),
        )
        .await?;
    let d = &v["data"];
    let cert = d["certificate"]
        .as_str()
        .ok_or_else(|| err("the PKI answer has no certificate"))?;
    let ca = d["issuing_ca"]
        .as_str()
        .ok_or_else(|| err("the PKI answer has no issuing_ca"))?;
    Ok((signer, vec![format!("{cert}\n"), format!("{ca}\n")]))
}

/// What `verify` reads besides the image.
struct Inputs {
    policy: Policy,
    bundle: Bundle,
    state: Option<DeviceState>,
    crls: Vec<Vec<u8>>,
    ocsp: Vec<Vec<u8>>,
}

async fn read_inputs(cli: &Cli, a: &VerifyArgs) -> CliResult<Inputs> {
    let policy_text = String::from_utf8(read_limited(&a.policy, 1 << 20, "policy")?)
        .map_err(|_| err("policy: not UTF-8"))?;
    let policy = Policy::parse(&policy_text).map_err(|e| err(format!("policy: {e}")))?;
    let bundle = Bundle::parse(&read_limited(&a.bundle, MAX_BUNDLE_BYTES, "bundle")?)
        .map_err(|e| err(format!("bundle {}: {e}", a.bundle.display())))?;
    let state = match &a.state {
        Some(p) => Some(
            DeviceState::parse(&read_limited(p, 1 << 20, "state")?)
                .map_err(|e| err(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut crls = Vec::new();
    let files: Vec<PathBuf> = policy
        .revocation
        .crl_files
        .iter()
        .map(PathBuf::from)
        .chain(a.crl.iter().cloned())
        .collect();
    for f in files {
        let raw = read_limited(&f, 64 << 20, "CRL")?;
        let der = match x509_parser::pem::parse_x509_pem(&raw) {
            Ok((_, p)) if p.label == "X509 CRL" => p.contents,
            _ => raw,
        };
        crls.push(der);
    }
    let mut ocsp = Vec::new();
    for f in &a.ocsp {
        ocsp.push(read_limited(
            f,
            custos_pki::ocsp::MAX_RESPONSE_BYTES,
            "OCSP response",
        )?);
    }
    if policy.revocation.fetch_ocsp {
        ocsp.extend(fetch_ocsp(cli, &bundle).await);
    }
    Ok(Inputs {
        policy,
        bundle,
        state,
        crls,
        ocsp,
    })
}

/// Asks the OCSP responders named in the keyless signing certificate's AIA about it. Failures
/// are reported on stderr and leave no evidence (the policy decides whether that denies).
async fn fetch_ocsp(cli: &Cli, bundle: &Bundle) -> Vec<Vec<u8>> {
    let chain = &bundle.verification_material.certificate_chain;
    let ders: Vec<Vec<u8>> = chain
        .iter()
        .take(2)
        .filter_map(|p| x509_parser::pem::parse_x509_pem(p.as_bytes()).ok())
        .map(|(_, b)| b.contents)
        .collect();
    let [leaf, ca] = ders.as_slice() else {
        return Vec::new();
    };
    let urls: Vec<String> = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, c)) => c
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) => Some(
                    aia.accessdescs
                        .iter()
                        .filter(|d| d.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1")
                        .filter_map(|d| match &d.access_location {
                            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    if urls.is_empty() {
        eprintln!("custos: fetch_ocsp: the signing certificate names no OCSP responder");
        return Vec::new();
    }
    let Ok(req) = custos_pki::ocsp::build_request(leaf, ca) else {
        return Vec::new();
    };
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(path) = cli.conn().and_then(|c| c.cacert.as_deref()) {
        if let Some(c) = std::fs::read(path)
            .ok()
            .and_then(|p| reqwest::Certificate::from_pem(&p).ok())
        {
            b = b.add_root_certificate(c);
        }
    }
    let Ok(http) = b.build() else {
        return Vec::new();
    };
    for url in urls {
        let r = http
            .post(&url)
            .header("content-type", "application/ocsp-request")
            .body(req.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) if b.len() <= custos_pki::ocsp::MAX_RESPONSE_BYTES => return vec![b.to_vec()],
                Ok(_) => eprintln!("custos: fetch_ocsp: {url}: response too large"),
                Err(e) => eprintln!("custos: fetch_ocsp: {url}: {e}"),
            },
            Ok(r) => eprintln!("custos: fetch_ocsp: {url}: HTTP {}", r.status()),
            Err(e) => eprintln!("custos: fetch_ocsp: {url}: {e}"),
        }
    }
    Vec::new()
}

/// Verifies; with `stage`, the image is copied there while hashed (install runs the
/// installer on that copy, so the file checked is the file installed).
fn verify(
    a: &VerifyArgs,
    inputs: Inputs,
    stage: Option<&mut std::fs::File>,
) -> CliResult<(Verdict, BTreeMap<String, String>)> {
    let Inputs {
        policy,
        bundle,
        state,
        crls,
        ocsp,
    } = inputs;
    let mut algs: Vec<&str> = policy.verify.digests.iter().map(String::as_str).collect();
    if !algs.contains(&"sha256") {
        algs.push("sha256");
    }
    let image = hash_file(&a.image, &algs, stage)?;
    let v = evaluate(&Evidence {
        image: &image,
        bundle: &bundle,
        policy: &policy,
        state: state.as_ref(),
        crls: &crls,
        ocsp: &ocsp,
        now: now(),
        emergency: a.emergency,
    });
    Ok((v, image))
}

fn report(v: &Verdict, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    if v.accept {
        let f = &v.facts;
        outln!(
            "ACCEPT: {} {} (security version {}) for {}, supplier {}, builder {}",
            f.version.as_deref().unwrap_or("?"),
            f.signer_identity
                .as_deref()
                .map_or("signed by key", |_| "signed keyless"),
            f.security_version
                .map(|s| s.to_string())
                .unwrap_or_default(),
            f.device_class.as_deref().unwrap_or("?"),
            f.supplier.as_deref().unwrap_or("?"),
            f.builder_id.as_deref().unwrap_or("?"),
        );
    } else {
        outln!("DENY: {} rule(s) failed", v.failures.len());
        for f in &v.failures {
            outln!("  - {}: {}", f.rule, f.detail);
        }
    }
}

fn state_json(st: &DeviceState) -> CliResult<Vec<u8>> {
    serde_json::to_vec_pretty(st).map_err(|e| err(e.to_string()))
}

fn install(a: &InstallArgs, inputs: Inputs) -> CliResult<()> {
    let Some(state_path) = &a.v.state else {
        return Err(err("install needs --state"));
    };
    let dir = state_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut staged = tempfile::Builder::new()
        .prefix(".custos-fw-staged-")
        .tempfile_in(dir)
        .map_err(io(format!("staging in {}", dir.display())))?;
    let (v, image) = verify(&a.v, inputs, Some(staged.as_file_mut()))?;
    report(&v, a.v.json);
    if !v.accept {
        return Err(CliError::Denied);
    }
    staged
        .as_file()
        .sync_all()
        .map_err(io("staging the image".into()))?;
    let mut st = DeviceState::parse(&read_limited(state_path, 1 << 20, "state")?)
        .map_err(|e| err(e.to_string()))?;
    let sv = v.facts.security_version.unwrap_or(0);
    let version = v.facts.version.clone().unwrap_or_default();
    if st
        .installed
        .as_ref()
        .is_some_and(|i| i.digest.get("sha256") == image.get("sha256"))
    {
        outln!("already installed: {version}; nothing to do");
        return Ok(());
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&a.installer)
        .env("CUSTOS_FW_IMAGE", staged.path())
        .env("CUSTOS_FW_VERSION", &version)
        .env("CUSTOS_FW_SECURITY_VERSION", sv.to_string())
        .env(
            "CUSTOS_FW_SHA256",
            image.get("sha256").cloned().unwrap_or_default(),
        )
        .status()
        .map_err(io("running the installer".into()))?;
    if !status.success() {
        return Err(CliError::Other(format!(
            "the installer failed ({status}); the device state is unchanged"
        )));
    }
    let entry = Installed {
        digest: image,
        version: version.clone(),
        security_version: sv,
        installed_at: statement::to_rfc3339(now()),
    };
    st.max_security_version = st.max_security_version.max(sv);
    if a.mark_good {
        st.known_good = Some(entry.clone());
    }
    st.installed = Some(entry);
    write_durably(state_path, &state_json(&st)?, 0o644)?;
    outln!("installed {version} (security version {sv}); state recorded");
    Ok(())
}
