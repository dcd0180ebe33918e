//! `custos bench --fleet`: the fleet view and the closed loop at scale, against an in-process
//! dev server. --devices software TPMs (ECC EKs: enrolment costs an ECDH, not an RSA key
//! generation) are enrolled and attest once (2% measuring an unsigned image); then:
//! * `attest/fleet` with filters, and `attest/fleet/counts`: p50/p99 over HTTP;
//! * the verdict-to-quarantine path: an UNTRUSTED quote of a device of a class that
//!   quarantines on UNTRUSTED, with an SBA certificate bound to it, answered only after the
//!   hold is in place (the NRF and logins refuse from then on) and the certificate revoked:
//!   p50/p99 of that request, under a background load of TRUSTED attestations;
//! * a recall of 1,000 devices, each with a certificate to revoke.

use super::bench::BenchArgs;
use super::bench_attest::{b64, boot_log, other, release, Manufacturer, CLASS};
use crate::client::{CliResult, Client};
use custos_attest::soft::SoftTpm;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const DOMAIN: &str = "5gc.mnc001.mcc262.3gppnetwork.org";
/// Devices with a certificate: the recall and the verdict-to-quarantine samples.
const WITH_CERTS: usize = 1_200;
const RECALL: usize = 1_000;

struct Device {
    id: String,
    tpm: SoftTpm,
}

fn nf_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

async fn enrol(c: &Client, m: &Manufacturer, i: usize) -> CliResult<Device> {
    let tpm = SoftTpm::new_ecc().map_err(other)?;
    let id = format!("du-{i:06}");
    let mut body = json!({
        "device_class": CLASS,
        "ek_public": b64(tpm.ek_public()),
        "ek_certificate": b64(&m.ek_certificate(&tpm)?),
        "ak_public": b64(tpm.ak_public()),
    });
    if i < WITH_CERTS {
        body["nf_instance_ids"] = json!([nf_id(i)]);
    }
    let v = c
        .call("PUT", &format!("attest/devices/{id}"), Some(&body))
        .await?;
    let field = |k: &str| {
        use base64::Engine as _;
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

async fn attest(
    c: &Client,
    d: &mut Device,
    log_b64: &str,
    log: &custos_attest::eventlog::EventLog,
) -> CliResult<Value> {
    let n = c
        .call(
            "PUT",
            &format!("attest/devices/{}/nonce", d.id),
            Some(&json!({})),
        )
        .await?;
    let nonce = hex::decode(n["data"]["nonce"].as_str().unwrap_or_default()).map_err(other)?;
    let (q, s) = d.tpm.quote_log(&nonce, log).map_err(other)?;
    c.call(
        "PUT",
        &format!("attest/devices/{}/quote", d.id),
        Some(&json!({"quote": b64(&q), "signature": b64(&s), "event_log": log_b64})),
    )
    .await
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn timed(c: &Client, path: &str, n: usize) -> CliResult<(f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.call("GET", path, None).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((pct(&mut ms, 0.5), pct(&mut ms, 0.99)))
}

pub async fn run(a: &BenchArgs) -> CliResult<()> {
    let n = a.devices.max(WITH_CERTS + 100);
    let dir = tempfile::tempdir().map_err(other)?;
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
    let base = format!("http://{}", server.addr);
    let c = Client::new(&base, Some(root.to_string()), None)?;
    for (p, t) in [
        ("provenance", "provenance"),
        ("attest", "attest"),
        ("pki", "pki"),
    ] {
        c.call("PUT", &format!("sys/mounts/{p}"), Some(&json!({"type": t})))
            .await?;
    }
    c.call(
        "PUT",
        "pki/root/generate/internal",
        Some(&json!({"common_name": "NF CA", "key_type": "ec", "ttl": "8760h"})),
    )
    .await?;
    c.call(
        "PUT",
        "pki/config/urls",
        Some(&json!({"crl_distribution_points": [format!("{base}/v1/pki/crl")]})),
    )
    .await?;
    c.call("PUT", "pki/roles/sba", Some(&json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": true, "country": "DE", "organization": DOMAIN, "ttl": "1h", "max_ttl": "1h"}))).await?;
    let image = b"du firmware".repeat(1000);
    let fw_policy = release(&c, &image).await?;
    let m = Manufacturer::new()?;
    c.call(
        "PUT",
        "attest/config",
        Some(&json!({
            "manufacturer_ca_pem": m.pem,
            "policy": format!("[[device_classes]]\nname = \"{CLASS}\"\nquarantine_on = [\"untrusted\"]\n"),
            "firmware_policy": fw_policy,
            "provenance_mount": "provenance",
            "device_pki_mount": "pki",
        })),
    )
    .await?;

    // The fleet: enrolled and attested by 2 × cores clients.
    let good = boot_log(&image);
    let bad = boot_log(b"an image nobody signed");
    let (good_b64, bad_b64) = (
        Arc::new(b64(&good.to_bytes())),
        Arc::new(b64(&bad.to_bytes())),
    );
    let (good, bad) = (Arc::new(good), Arc::new(bad));
    let cores = std::thread::available_parallelism().map_or(2, |x| x.get());
    let workers = (cores * 8).max(8);
    let next = Arc::new(AtomicU64::new(0));
    let m = Arc::new(m);
    let t0 = Instant::now();
    outln!("enrolling and attesting {n} devices with {workers} clients…");
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, m, next) = (c.clone(), m.clone(), next.clone());
        let (good, bad, good_b64, bad_b64) =
            (good.clone(), bad.clone(), good_b64.clone(), bad_b64.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<_, crate::client::CliError>(kept);
                }
                let mut d = enrol(&c, &m, i).await?;
                let odd = i >= WITH_CERTS && i % 50 == 7;
                let (l, lb) = if odd { (&bad, &bad_b64) } else { (&good, &good_b64) };
                attest(&c, &mut d, lb, l).await?;
                if i < WITH_CERTS {
                    c.call("PUT", "pki/issue/sba", Some(&json!({"common_name": format!("amf{i}.{DOMAIN}"), "nf_instance_id": nf_id(i), "nf_type": "AMF"}))).await?;
                    kept.push(d);
                }
                if i % 10_000 == 9_999 {
                    outln!("  {} devices in {:.0} s", i + 1, t0.elapsed().as_secs_f64());
                }
            }
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.extend(t.await.map_err(other)??);
    }
    kept.sort_by(|x, y| x.id.cmp(&y.id));
    let setup = t0.elapsed().as_secs_f64();
    outln!(
        "fleet: {n} devices enrolled and attested in {setup:.0} s ({:.0} devices/s, 4 requests each)",
        n as f64 / setup
    );

    // Fleet reads.
    for (what, path) in [
        (
            "list, class + state, 100 per page",
            format!("attest/fleet?class={CLASS}&state=TRUSTED&limit=100"),
        ),
        (
            "list, state QUARANTINED (the 2% that measured an unsigned image), 100 per page",
            "attest/fleet?state=QUARANTINED&limit=100".to_string(),
        ),
        (
            "list, version + a page deep in the fleet",
            format!("attest/fleet?version=5.2.0&after=du-{:06}&limit=100", n / 2),
        ),
        (
            "list, certificates expiring within 30d",
            "attest/fleet?expiring_within=30d&limit=100".to_string(),
        ),
        (
            "counts by state, class, version",
            "attest/fleet/counts".to_string(),
        ),
    ] {
        let (p50, p99) = timed(&c, &path, 200).await?;
        outln!("{what}: p50 {p50:.2} ms, p99 {p99:.2} ms (200 requests, {n} devices)");
    }

    // The verdict-to-quarantine path under a background load of TRUSTED attestations.
    let stop = Arc::new(AtomicBool::new(false));
    let load_done = Arc::new(AtomicU64::new(0));
    let mut bg = Vec::new();
    let samples: Vec<Device> = kept.drain(RECALL..).collect();
    let mut loaders: Vec<Device> = Vec::new();
    for i in 0..4 {
        loaders.push(enrol(&c, &m, n + i).await?);
    }
    let t_load = Instant::now();
    for mut d in loaders {
        let (c, stop, done, good, good_b64) = (
            c.clone(),
            stop.clone(),
            load_done.clone(),
            good.clone(),
            good_b64.clone(),
        );
        bg.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if attest(&c, &mut d, &good_b64, &good).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut ms = Vec::new();
    let mut revoked = 0;
    for mut d in samples {
        let t = Instant::now();
        let v = attest(&c, &mut d, &bad_b64, &bad).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        revoked += v["data"]["quarantine"]["revoked"]
            .as_array()
            .map_or(0, Vec::len);
    }
    stop.store(true, Ordering::Relaxed);
    for t in bg {
        let _ = t.await;
    }
    let load_rate = load_done.load(Ordering::Relaxed) as f64 / t_load.elapsed().as_secs_f64();
    outln!(
        "verdict to quarantine (hold in place, {revoked} certificates revoked, answered after both): p50 {:.1} ms, p99 {:.1} ms over {} devices, under {load_rate:.0} TRUSTED attestations/s of background load",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.99),
        ms.len()
    );

    // A recall.
    let ids: Vec<String> = kept.iter().map(|d| d.id.clone()).collect();
    let t = Instant::now();
    let v = c
        .call(
            "POST",
            "attest/recall",
            Some(&json!({"devices": ids, "reason": "bench: a class-wide recall"})),
        )
        .await?;
    let secs = t.elapsed().as_secs_f64();
    outln!(
        "recall of {} devices (each a certificate revoked, logged and held): {secs:.2} s ({:.0} devices/s)",
        v["data"]["quarantined"],
        RECALL as f64 / secs
    );
    let crl_t = Instant::now();
    let crl = reqwest::get(format!("{base}/v1/pki/crl"))
        .await
        .map_err(other)?
        .bytes()
        .await
        .map_err(other)?;
    outln!(
        "CRL after the recall: {} bytes, built in {:.0} ms",
        crl.len(),
        crl_t.elapsed().as_secs_f64() * 1000.0
    );
    drop(server);
    Ok(())
}
