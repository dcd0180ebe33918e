//! `custos bench --attest`: remote attestation against the machine's own limits.
//! * verdicts per second in process on every core: quote signature, nonce, a 101-event log
//!   replayed, PCR digest, policy and reference lookup, beside `openssl speed ecdsap256`'s
//!   verify rate (one ECDSA verify is the floor of a verdict's cost);
//! * attestations per second over HTTP (nonce, then quote with the event log) from --clients
//!   devices of an in-process server on SQLite, judged against a provenance store with a
//!   signed release, p50 and p99 of the pair, beside the `sys/health` ceiling;
//! * the cost of a fleet of 10,000 devices attesting every 60 s, from the process's CPU time
//!   per attestation (client work included, so an upper bound).
//!
//! The devices are software TPMs ([`custos_attest::soft`]) with EK certificates from a
//! manufacturer CA made here; they exercise the server exactly as swtpm devices do.

use super::bench::BenchArgs;
use crate::client::{CliError, CliResult, Client};
use base64::Engine as _;
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, EV_SEPARATOR};
use custos_attest::policy::Policy;
use custos_attest::soft::SoftTpm;
use custos_attest::tpm::{HashAlg, PcrSelection, Public};
use custos_attest::verify::{appraise, Evidence, Expected, ReferenceImage};
use custos_provenance::keys::Signer as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

pub(super) const CLASS: &str = "gnb-du-x1";

/// The boot every bench device reports: 100 events across PCRs 0-7, then the firmware.
pub(super) fn boot_log(image: &[u8]) -> EventLog {
    let banks = [HashAlg::Sha256];
    let mut events: Vec<Event> = (0..92u32)
        .map(|i| {
            Event::measure(
                (i % 8) as u8,
                0x0000_000D,
                &banks,
                &i.to_be_bytes(),
                b"boot component",
            )
        })
        .filter(|e| e.pcr != 4)
        .collect();
    events.push(Event::measure(
        4,
        EV_POST_CODE,
        &banks,
        image,
        b"du firmware",
    ));
    while events.len() < 101 {
        let pcr = (events.len() % 8) as u8;
        let pcr = if pcr == 4 { 5 } else { pcr };
        events.push(Event::measure(pcr, EV_SEPARATOR, &banks, &[0; 4], &[0; 4]));
    }
    EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events,
    }
}

fn selection() -> Vec<PcrSelection> {
    vec![PcrSelection {
        hash: HashAlg::Sha256,
        pcrs: (0..8).collect(),
    }]
}

fn pcr_values(log: &EventLog) -> Vec<Vec<u8>> {
    let p = log.replay();
    (0..8).map(|i| p[&HashAlg::Sha256][i].clone()).collect()
}

fn quote(t: &mut SoftTpm, nonce: &[u8], pcrs: &[Vec<u8>]) -> CliResult<(Vec<u8>, Vec<u8>)> {
    let v: Vec<&[u8]> = pcrs.iter().map(Vec::as_slice).collect();
    t.quote(nonce, &selection(), &v).map_err(other)
}

/// Verdicts per second on every core.
fn in_process(secs: f64) -> CliResult<f64> {
    let image = b"du firmware".repeat(1000);
    let log = boot_log(&image);
    let bytes = log.to_bytes();
    let mut t = SoftTpm::new().map_err(other)?;
    let (q, s) = quote(&mut t, b"bench-nonce", &pcr_values(&log))?;
    let ak = Public::parse(t.ak_public()).map_err(other)?;
    let policy =
        Policy::parse(&format!("[[device_classes]]\nname = \"{CLASS}\"\n")).map_err(other)?;
    let refs: BTreeMap<Vec<u8>, ReferenceImage> = BTreeMap::from([(
        HashAlg::Sha256.digest(&[&image]),
        ReferenceImage {
            version: "5.2.0".into(),
            security_version: 7,
            signers: vec!["k1".into()],
            supplier: None,
            builder: None,
            denied: None,
        },
    )]);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..cores {
            let (q, s, bytes, ak, policy, refs, done) =
                (&q, &s, &bytes, &ak, &policy, &refs, done.clone());
            sc.spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let v = appraise(
                        &Evidence {
                            attest: q,
                            signature: s,
                            event_log: bytes,
                        },
                        &Expected {
                            ak,
                            nonce: b"bench-nonce",
                            class: &policy.classes[0],
                            last: None,
                            floor: 0,
                            now: 0,
                        },
                        refs,
                    );
                    if v.trusted {
                        n += 1;
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// A manufacturer CA and the EK certificate of each device.
pub(super) struct Manufacturer {
    /// The CA certificate (PEM).
    pub(super) pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Manufacturer {
    pub(super) fn new() -> CliResult<Manufacturer> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(other)?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "bench TPM manufacturer");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).map_err(other)?;
        Ok(Manufacturer {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        })
    }

    pub(super) fn ek_certificate(&self, t: &SoftTpm) -> CliResult<Vec<u8>> {
        let spki =
            rcgen::SubjectPublicKeyInfo::from_der(&t.ek_spki().map_err(other)?).map_err(other)?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(vec![
            2, 23, 133, 8, 1,
        ])];
        Ok(p.signed_by(&spki, &self.issuer)
            .map_err(other)?
            .der()
            .to_vec())
    }
}

pub(super) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// This process's CPU seconds (user + system), from /proc.
pub(super) fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A benchmark device: an in-memory TPM enrolled in the attestation mount.
pub(super) struct Device {
    pub(super) id: String,
    pub(super) tpm: SoftTpm,
}

async fn enrol(c: &Client, m: &Manufacturer, i: usize) -> CliResult<Device> {
    let tpm = tokio::task::spawn_blocking(SoftTpm::new)
        .await
        .map_err(other)?
        .map_err(other)?;
    enrol_tpm(c, m, tpm, format!("bench-{i:05}"), json!({})).await
}

/// Enrols `tpm` as device `id` of the bench class (with `extra` enrolment fields) and
/// activates it.
pub(super) async fn enrol_tpm(
    c: &Client,
    m: &Manufacturer,
    tpm: SoftTpm,
    id: String,
    extra: Value,
) -> CliResult<Device> {
    let mut body = json!({
        "device_class": CLASS,
        "ek_public": b64(tpm.ek_public()),
        "ek_certificate": b64(&m.ek_certificate(&tpm)?),
        "ak_public": b64(tpm.ak_public()),
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let v = c
        .call("PUT", &format!("attest/devices/{id}"), Some(&body))
        .await?;
    let field = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v["data"][k].as_str().unwrap_or_default())
            .map_err(other)
    };
    let secret = tpm
        .activate(&field("credential_blob")?, &field("encrypted_secret")?)
        .map_err(other)?;
    c.call(
        "PUT",
        &format!("attest/devices/{id}/activate"),
        Some(&json!({"credential": b64(&secret)})),
    )
    .await?;
    Ok(Device { id, tpm })
}

/// Registers a signed release of `image` in the provenance store; the firmware policy that
/// trusts it.
pub(super) async fn release(c: &Client, image: &[u8]) -> CliResult<String> {
    let der =
        custos_provenance::keys::FileSigner::generate(custos_provenance::keys::KeyAlg::EcdsaP256)
            .map_err(other)?;
    let key = custos_provenance::keys::FileSigner::from_pkcs8_der(&der).map_err(other)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let ts = custos_provenance::statement::to_rfc3339;
    let req = custos_provenance::SignRequest {
        image_name: "du.img".into(),
        digests: BTreeMap::from([
            (
                "sha256".to_string(),
                hex::encode(HashAlg::Sha256.digest(&[image])),
            ),
            (
                "sha512".to_string(),
                hex::encode(HashAlg::Sha512.digest(&[image])),
            ),
        ]),
        slsa: custos_provenance::statement::SlsaInputs {
            builder_id: "https://ci.acme.example/builders/firmware@v1".into(),
            build_type: "https://custos.dev/firmware-build/v1".into(),
            source_repo: "git+https://git.acme.example/ran/du-firmware".into(),
            commit: "7d2c9b1e".into(),
            dependencies: Vec::new(),
            invocation_id: String::new(),
            started_on: ts(now),
            finished_on: ts(now),
            internal: Value::Null,
        },
        firmware: custos_provenance::statement::Firmware {
            vendor: "acme".into(),
            device_class: CLASS.into(),
            hardware_ids: Vec::new(),
            version: "5.2.0".into(),
            security_version: 7,
            channel: "stable".into(),
            not_after: ts(now + 86_400 * 180),
        },
        signed_at: now,
    };
    let b = custos_provenance::sign_bundle(&req, &[&key], Vec::new()).map_err(other)?;
    c.call(
        "PUT",
        "provenance/bundles",
        Some(&json!({"bundle": serde_json::to_value(&b).map_err(other)?})),
    )
    .await?;
    Ok(format!(
        "[[suppliers]]\nname = \"acme\"\nkeys = [\"{}\"]\n[[device_classes]]\nname = \"{CLASS}\"\nsuppliers = [\"acme\"]\nbuilders = [\"https://ci.acme.example/builders/firmware@v1\"]\n",
        key.key_id()
    ))
}

pub async fn run(a: &BenchArgs) -> CliResult<()> {
    let secs = a.duration as f64;
    let ecdsa = tokio::task::spawn_blocking(super::bench::openssl_ecdsa_rates)
        .await
        .map_err(other)?;
    let verdicts = tokio::task::spawn_blocking(move || in_process(secs))
        .await
        .map_err(other)??;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    outln!(
        "machine: {cores} cores; openssl speed ecdsap256: {}",
        match ecdsa {
            Some((s, v)) => format!("{s:.0} sign/s, {v:.0} verify/s per core"),
            None => "not available".into(),
        }
    );
    outln!(
        "in process: {verdicts:.0} verdicts/s on {cores} cores (quote + 101-event log + policy){}",
        ecdsa.map_or(String::new(), |(_, v)| format!(
            "; {:.2} of the ECDSA verify ceiling ({:.0}/s on {cores} cores)",
            verdicts / (v * cores as f64),
            v * cores as f64
        ))
    );

    // Over HTTP: an in-process server.
    let dir = tempfile::tempdir().map_err(|source| CliError::Io {
        what: "bench dir".into(),
        source,
    })?;
    let core_config = custos_server::CoreConfig {
        limits: custos_server::config::Limits {
            login_rate: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().map_err(other)?;
    let (server, root, _) =
        custos_server::start_dev_with(dir.path(), addr, None, core_config, Default::default())
            .await
            .map_err(other)?;
    let c = Client::new(
        &format!("http://{}", server.addr),
        Some(root.to_string()),
        None,
    )?;
    c.call(
        "PUT",
        "sys/mounts/provenance",
        Some(&json!({"type": "provenance"})),
    )
    .await?;
    c.call("PUT", "sys/mounts/attest", Some(&json!({"type": "attest"})))
        .await?;
    let image = b"du firmware".repeat(1000);
    let fw_policy = release(&c, &image).await?;
    let m = Manufacturer::new()?;
    c.call(
        "PUT",
        "attest/config",
        Some(&json!({
            "manufacturer_ca_pem": m.pem,
            "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\n"),
            "firmware_policy": fw_policy,
            "provenance_mount": "provenance",
        })),
    )
    .await?;
    let clients = a.clients.max(1);
    let mut devices = Vec::new();
    for i in 0..clients {
        devices.push(enrol(&c, &m, i).await?);
    }
    let log = boot_log(&image);
    let log_b64 = Arc::new(b64(&log.to_bytes()));
    let pcrs = Arc::new(pcr_values(&log));
    // The HTTP ceiling of this machine, same clients.
    let health = http_rate(&c, clients, Duration::from_secs_f64(secs.min(3.0))).await?;

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut tasks = Vec::new();
    for mut d in devices {
        let (c, done, errors, lat, log_b64, pcrs) = (
            c.clone(),
            done.clone(),
            errors.clone(),
            lat.clone(),
            log_b64.clone(),
            pcrs.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r: CliResult<bool> = async {
                    let v = c
                        .call(
                            "PUT",
                            &format!("attest/devices/{}/nonce", d.id),
                            Some(&json!({})),
                        )
                        .await?;
                    let n = hex::decode(v["data"]["nonce"].as_str().unwrap_or_default())
                        .map_err(other)?;
                    let (q, s) = quote(&mut d.tpm, &n, &pcrs)?;
                    let v = c
                        .call(
                            "PUT",
                            &format!("attest/devices/{}/quote", d.id),
                            Some(&json!({
                                "quote": b64(&q), "signature": b64(&s), "event_log": *log_b64,
                            })),
                        )
                        .await?;
                    Ok(v["data"]["status"] == "TRUSTED")
                }
                .await;
                match r {
                    Ok(true) => {
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(other)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let n = done.load(Ordering::Relaxed);
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(other(format!(
            "{} attestations failed or were not TRUSTED",
            errors.load(Ordering::Relaxed)
        )));
    }
    let mut l = lat.lock().map_err(other)?.clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let rate = n as f64 / elapsed;
    outln!(
        "over HTTP: {rate:.0} attestations/s from {clients} devices (nonce + quote with a 101-event log, TRUSTED against the provenance store), p50 {:.1} ms, p99 {:.1} ms; {:.2} of the sys/health ceiling ({health:.0} requests/s, 2 requests per attestation)",
        pct(0.50),
        pct(0.99),
        rate * 2.0 / health
    );
    let per = if n > 0 { cpu / n as f64 } else { 0.0 };
    outln!(
        "fleet: 10,000 devices every 60 s = 167 attestations/s ≈ {:.1}% of one core ({:.0} µs of CPU per attestation, client included: an upper bound)",
        per * 10_000.0 / 60.0 * 100.0,
        per * 1e6
    );
    server.shutdown().await;
    Ok(())
}

async fn http_rate(c: &Client, clients: usize, dur: Duration) -> CliResult<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, done) = (c.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if c.call("GET", "sys/health", None).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(other)?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
