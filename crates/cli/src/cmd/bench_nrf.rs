//! `custos bench --nrf`: access tokens per second from the NRF's SBI listener over mutual TLS
//! with HTTP/2, against the machine's ES256 signing limit measured in the same run; then
//! discovery latency (p50/p99) with `--profiles` NF profiles registered.

use super::bench::BenchArgs;
use crate::client::{CliError, CliResult, Client};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const DOMAIN: &str = "5gc.mnc001.mcc262.3gppnetwork.org";
pub(super) const NRF: &str = "11111111-1111-4111-8111-111111111111";
pub(super) const AMF: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
pub(super) const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn free_port() -> CliResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(other)?
        .port())
}

/// A client presenting an SBA certificate for `nf_type`/`id`, trusting `ca`.
pub(super) async fn nf_client(
    mgmt: &Client,
    ca: &str,
    sbi: std::net::SocketAddr,
    nf_type: &str,
    id: &str,
) -> CliResult<reqwest::Client> {
    let v = mgmt
        .call(
            "POST",
            "pki/issue/sba",
            Some(&json!({"common_name": format!("{}1.{DOMAIN}", nf_type.to_lowercase()), "nf_instance_id": id, "nf_type": nf_type})),
        )
        .await?;
    let d = &v["data"];
    let pem = format!(
        "{}\n{}\n",
        d["certificate"].as_str().unwrap_or_default(),
        d["private_key"].as_str().unwrap_or_default()
    );
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).map_err(other)?])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).map_err(other)?)
        .resolve(&format!("nrf.{DOMAIN}"), sbi)
        .http2_prior_knowledge()
        .build()
        .map_err(other)
}

pub async fn run(a: &BenchArgs) -> CliResult<()> {
    let tmp = tempfile::tempdir().map_err(other)?;
    let d = tmp.path().display();
    std::fs::write(tmp.path().join("unseal.key"), "33".repeat(32)).map_err(other)?;
    let port = free_port()?;
    let text = format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{d}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{d}/unseal.key\"\n[sbi]\naddress = \"127.0.0.1:{port}\"\npki_mount = \"pki\"\nrole = \"sba\"\nnf_instance_id = \"{NRF}\"\nfqdn = \"nrf.{DOMAIN}\"\nheartbeat = \"1h\"\n"
    );
    let cfg = custos_server::Config::parse(&text).map_err(other)?;
    let running = custos_server::start(&cfg).await.map_err(other)?;
    let base = format!("http://{}", running.addr);
    let init = Client::new(&base, None, None)?
        .call("PUT", "sys/init", Some(&json!({})))
        .await?;
    let root = init["root_token"].as_str().unwrap_or_default().to_string();
    let m = Client::new(&base, Some(root), None)?;
    m.call(
        "POST",
        "sys/mounts/pki",
        Some(&json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    )
    .await?;
    let r = m
        .call(
            "POST",
            "pki/root/generate/internal",
            Some(&json!({"common_name": "Bench NF CA", "key_type": "ec", "ttl": "8760h"})),
        )
        .await?;
    let ca = r["data"]["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    m.call(
        "POST",
        "pki/config/urls",
        Some(&json!({"crl_distribution_points": [format!("{base}/v1/pki/crl")]})),
    )
    .await?;
    m.call("POST", "pki/roles/sba", Some(&json!({"profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": true, "country": "DE", "organization": DOMAIN, "ttl": "24h"}))).await?;
    let sbi: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().map_err(other)?;
    let url = |p: &str| format!("https://nrf.{DOMAIN}:{port}{p}");
    let smf = nf_client(&m, &ca, sbi, "SMF", SMF).await?;
    // The SBI listener comes up once its own certificate is issued (within a second or two).
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        return Err(other("the SBI listener did not come up"));
    }
    let conns = a.clients.clamp(1, 4);
    let mut amfs = Vec::new();
    for _ in 0..conns {
        amfs.push(nf_client(&m, &ca, sbi, "AMF", AMF).await?);
    }
    amfs[0]
        .put(url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))
        .json(&json!({"nfInstanceId": AMF, "nfType": "AMF", "nfStatus": "REGISTERED", "ipv4Addresses": ["10.0.0.1"]}))
        .send()
        .await
        .map_err(other)?;
    let form = format!(
        "grant_type=client_credentials&nfInstanceId={AMF}&nfType=AMF&targetNfType=SMF&scope=nsmf-pdusession"
    );
    let form = Arc::new(form);
    let (sign, _) = tokio::task::spawn_blocking(super::bench::openssl_ecdsa_rates)
        .await
        .ok()
        .flatten()
        .unwrap_or((0.0, 0.0));
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let c = amfs[i % conns].clone();
        let (form, u) = (form.clone(), url("/oauth2/token"));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let ok = match c
                    .post(&u)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.as_str().to_string())
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t0.elapsed().as_micros() as u32);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let start = Instant::now();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.map_err(other)?;
        all.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64().max(a.duration as f64);
    all.sort_unstable();
    let pct = |p: f64| percentile_ms(&all, p);
    let rate = (all.len() as u64 - errors) as f64 / secs;
    outln!(
        "nrf-token: {rate:.0} tokens/s over mTLS + HTTP/2 ({} clients on {conns} connections), p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
        a.clients,
        pct(0.5),
        pct(0.99)
    );
    if sign > 0.0 {
        outln!(
            "machine limit (same run): openssl speed ecdsap256 {sign:.0} sign/s per core; 2 cores {:.0}/s; ratio {:.2}",
            2.0 * sign,
            rate / (2.0 * sign)
        );
    }
    discovery(a, &m, &amfs[0], &url("/nnrf-disc/v1/nf-instances")).await?;
    running.task.abort();
    Ok(())
}

const TYPES: &[&str] = &[
    "AMF", "SMF", "UPF", "UDM", "AUSF", "PCF", "NSSF", "UDR", "NEF", "CHF",
];

/// Registers `--profiles` NF profiles (through the management API's administrative path, so
/// no certificate per NF is needed), spread over ten NF types and four S-NSSAIs, then
/// measures two discovery shapes from the AMF over mutual TLS.
async fn discovery(a: &BenchArgs, m: &Client, amf: &reqwest::Client, url: &str) -> CliResult<()> {
    let t0 = Instant::now();
    let m = Arc::new(m.clone());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = a.profiles;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (m, next) = (m.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), CliError>(());
                }
                let (id, p) = bench_profile(i);
                m.call("PUT", &format!("sys/nrf/nf-instances/{id}"), Some(&p))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(other)??;
    }
    let reg = t0.elapsed().as_secs_f64();
    outln!(
        "nrf-register: {total} profiles in {reg:.1} s ({:.0}/s, durable, management API)",
        total as f64 / reg
    );
    let by_slice = format!(
        "{url}?target-nf-type=SMF&requester-nf-type=AMF&service-names=nsmf-pdusession&snssais=%7B%22sst%22%3A1%2C%22sd%22%3A%22000002%22%7D"
    );
    let (one_id, _) = bench_profile(1);
    let one =
        format!("{url}?target-nf-type=SMF&requester-nf-type=AMF&target-nf-instance-id={one_id}");
    let limited = format!("{url}?target-nf-type=SMF&requester-nf-type=AMF&limit=5");
    for (name, u) in [
        ("type+service+S-NSSAI", by_slice),
        ("type, limit 5", limited),
        ("instance id", one),
    ] {
        let deadline = Instant::now() + Duration::from_secs(a.duration.clamp(1, 10));
        let mut tasks = Vec::new();
        for _ in 0..a.clients.clamp(1, 16) {
            let (c, u) = (amf.clone(), u.clone());
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut errors, mut hits) = (Vec::new(), 0u64, 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    // The first answer is parsed (to count the hits); later ones are only
                    // read, so the client does not compete with the server for the CPU.
                    match c.get(&u).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(b) if lat.is_empty() => {
                                hits = serde_json::from_slice::<serde_json::Value>(&b)
                                    .ok()
                                    .and_then(|v| v["nfInstances"].as_array().map(Vec::len))
                                    .unwrap_or(0);
                            }
                            Ok(_) => {}
                            Err(_) => errors += 1,
                        },
                        _ => errors += 1,
                    }
                    lat.push(t.elapsed().as_micros() as u32);
                }
                (lat, errors, hits)
            }));
        }
        let start = Instant::now();
        let (mut all, mut errors, mut hits) = (Vec::new(), 0, 0);
        for t in tasks {
            let (l, e, h) = t.await.map_err(other)?;
            all.extend(l);
            errors += e;
            hits = h;
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| percentile_ms(&all, p);
        outln!(
            "nrf-discovery ({name}; {total} profiles, {hits} in each answer): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
            all.len() as f64 / secs,
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}

/// The `i`th benchmark profile: type `TYPES[i % 10]`, S-NSSAI sd `i / 10 % 4`, one service.
fn bench_profile(i: usize) -> (String, serde_json::Value) {
    let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
    let t = TYPES[i % TYPES.len()];
    let service = format!("n{}-svc", t.to_lowercase());
    let service = if t == "SMF" {
        "nsmf-pdusession".to_string()
    } else {
        service
    };
    let p = json!({
        "nfInstanceId": id, "nfType": t, "nfStatus": "REGISTERED",
        "fqdn": format!("{}{i}.{DOMAIN}", t.to_lowercase()),
        "ipv4Addresses": [format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)],
        "sNssais": [{"sst": 1, "sd": format!("{:06x}", i / 10 % 4)}],
        "nfServices": [{"serviceInstanceId": "1", "serviceName": service,
            "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}],
            "scheme": "https", "nfServiceStatus": "REGISTERED"}],
    });
    (id, p)
}

/// The `p` quantile (0–1) of sorted latencies in microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}
