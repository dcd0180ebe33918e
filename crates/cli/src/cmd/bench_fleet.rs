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
use super::bench_attest::{b64, boot_log, enrol_tpm, other, release, Device, Manufacturer, CLASS};
use super::bench_nrf::{nf_client, AMF, DOMAIN, NRF, SMF};
use crate::client::{CliResult, Client};
use custos_attest::soft::SoftTpm;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Background access-token requests per second during the verdict-to-quarantine samples.
const TOKEN_RATE: u64 = 1_000;
/// Devices with a certificate: the recall and the verdict-to-quarantine samples.
const WITH_CERTS: usize = 1_200;
const RECALL: usize = 1_000;

fn nf_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Enrols device `i` with a fresh ECC-EK soft TPM (the first WITH_CERTS with an NF ID).
async fn enrol(c: &Client, m: &Manufacturer, i: usize) -> CliResult<Device> {
    let tpm = SoftTpm::new_ecc().map_err(other)?;
    let extra = if i < WITH_CERTS {
        json!({"nf_instance_ids": [nf_id(i)]})
    } else {
        json!({})
    };
    enrol_tpm(c, m, tpm, format!("du-{i:06}"), extra).await
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
    // A server with the NRF's SBI listener: the background load is access-token requests.
    let tmp = tempfile::tempdir().map_err(other)?;
    let d = tmp.path().display();
    std::fs::write(tmp.path().join("unseal.key"), "44".repeat(32)).map_err(other)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(other)?
        .port();
    let text = format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{d}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{d}/unseal.key\"\n[sbi]\naddress = \"127.0.0.1:{port}\"\npki_mount = \"pki\"\nrole = \"sba\"\nnf_instance_id = \"{NRF}\"\nfqdn = \"nrf.{DOMAIN}\"\nheartbeat = \"1h\"\n"
    );
    let cfg = custos_server::Config::parse(&text).map_err(other)?;
    let server = custos_server::start(&cfg).await.map_err(other)?;
    let base = format!("http://{}", server.addr);
    let init = Client::new(&base, None, None)?
        .call("PUT", "sys/init", Some(&json!({})))
        .await?;
    let root = init["root_token"].as_str().unwrap_or_default().to_string();
    let c = Client::new(&base, Some(root), None)?;
    for (p, t) in [
        ("provenance", "provenance"),
        ("attest", "attest"),
        ("pki", "pki"),
    ] {
        c.call("PUT", &format!("sys/mounts/{p}"), Some(&json!({"type": t})))
            .await?;
    }
    let ca = c
        .call(
            "PUT",
            "pki/root/generate/internal",
            Some(&json!({"common_name": "NF CA", "key_type": "ec", "ttl": "8760h"})),
        )
        .await?["data"]["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
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

    // The machine's limits, in the same run: an empty request (sys/health) over the same
    // client, and the fsync rate of the storage directory (what recalls and quarantines wait on).
    let (h50, h99) = timed(&c, "sys/health", 200).await?;
    let tmp_path = tmp.path().to_path_buf();
    let fsync = tokio::task::spawn_blocking(move || super::bench::fsync_rate(&tmp_path, 2.0))
        .await
        .map_err(other)??;
    outln!("machine: sys/health p50 {h50:.2} ms, p99 {h99:.2} ms (one client); fsync {fsync:.0}/s in the storage directory");
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

    // The verdict-to-quarantine path under a background load of access-token requests.
    let samples: Vec<Device> = kept.drain(RECALL..).collect();
    let sbi: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().map_err(other)?;
    let url = |p: &str| format!("https://nrf.{DOMAIN}:{port}{p}");
    let smf = nf_client(&c, &ca, sbi, "SMF", SMF).await?;
    let smf_profile = json!({"nfInstanceId": SMF, "nfType": "SMF", "nfStatus": "REGISTERED", "fqdn": format!("smf1.{DOMAIN}"),
        "nfServices": [{"serviceInstanceId": "1", "serviceName": "nsmf-pdusession", "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}], "scheme": "https", "nfServiceStatus": "REGISTERED"}]});
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = smf
            .put(url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))
            .json(&smf_profile)
            .send()
            .await
        {
            up = r.status().is_success();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !up {
        return Err(other("the SBI listener did not come up"));
    }
    let amf = nf_client(&c, &ca, sbi, "AMF", AMF).await?;
    amf.put(url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))
        .json(&json!({"nfInstanceId": AMF, "nfType": "AMF", "nfStatus": "REGISTERED", "ipv4Addresses": ["10.0.0.1"]}))
        .send()
        .await
        .map_err(other)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tok_ok, tok_fail) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let form = format!(
        "grant_type=client_credentials&nfInstanceId={AMF}&nfType=AMF&targetNfType=SMF&scope=nsmf-pdusession"
    );
    let t_load = Instant::now();
    let mut bg = Vec::new();
    for k in 0..4u32 {
        let (amf, stop, okc, failc, form, u) = (
            amf.clone(),
            stop.clone(),
            tok_ok.clone(),
            tok_fail.clone(),
            form.clone(),
            url("/oauth2/token"),
        );
        bg.push(tokio::spawn(async move {
            // Paced: TOKEN_RATE / 4 per task, on a fixed schedule.
            let every = std::time::Duration::from_micros(4_000_000 / TOKEN_RATE);
            let mut next = tokio::time::Instant::now() + every * k / 4;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next).await;
                next += every;
                let ok = match amf
                    .post(&u)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    okc.fetch_add(1, Ordering::Relaxed);
                } else {
                    failc.fetch_add(1, Ordering::Relaxed);
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
    let load_rate = tok_ok.load(Ordering::Relaxed) as f64 / t_load.elapsed().as_secs_f64();
    outln!(
        "verdict to quarantine (hold in place, so the NRF refuses; {revoked} certificates revoked; answered after both): p50 {:.1} ms, p99 {:.1} ms over {} devices, under {load_rate:.0} access-token requests/s of background load ({} failed)",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.99),
        ms.len(),
        tok_fail.load(Ordering::Relaxed)
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
    server.task.abort();
    Ok(())
}
