//! The NRF over its SBI listener, with real mutual TLS (reqwest/rustls clients presenting SBA
//! certificates issued by Custos's PKI): registration, discovery, access tokens verified by
//! the producer crate, and every attack the issue lists refused with nothing registered or
//! issued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::{config_server, ok, policy_token, sba_pki, Api, SBA_DOMAIN as DOMAIN};
use serde_json::{json, Value};
use std::time::Duration;

const NRF: &str = "11111111-1111-4111-8111-111111111111";
const AMF: &str = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22";
const SMF: &str = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11";
const UDM: &str = "0f7c6b9e-1d2a-4e3b-8c4d-5e6f7a8b9c0d";
const NEF: &str = "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b0a";

struct Nrf {
    _server: custos_server::Running,
    _dir: tempfile::TempDir,
    api: Api,
    root: String,
    sbi: std::net::SocketAddr,
    ca: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn nrf(heartbeat: &str) -> Nrf {
    nrf_with(heartbeat, "10m", "").await
}

/// An NRF with the given heartbeat and token lifetime, plus `extra` lines in `[sbi]`.
async fn nrf_with(heartbeat: &str, token_ttl: &str, extra: &str) -> Nrf {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("unseal.key"), "22".repeat(32)).unwrap();
    let port = free_port();
    let cfg = format!(
        "[storage]\nbackend = \"sqlite\"\npath = \"{{dir}}/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[seal]\ntype = \"keyfile\"\nkey_file = \"{{dir}}/unseal.key\"\n[sbi]\naddress = \"127.0.0.1:{port}\"\npki_mount = \"pki\"\nrole = \"sba\"\nnf_instance_id = \"{NRF}\"\nfqdn = \"nrf.{DOMAIN}\"\ntoken_ttl = \"{token_ttl}\"\nheartbeat = \"{heartbeat}\"\n{extra}"
    );
    let (r, dir) = config_server(&cfg, Some(dir)).await;
    let api = Api::new(&format!("http://{}", r.addr));
    let (st, v) = api.call("PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let root = v["root_token"].as_str().unwrap().to_string();
    // Until the PKI role exists, sys/health says the SBI listener is not ready, and why.
    let mut health = Value::Null;
    for _ in 0..100 {
        let (_, h) = api.call("GET", "sys/health", None, None).await;
        if h["engines"]["nrf"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("role = \"sba\""))
        {
            health = h;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health["engines"]["nrf"]["ready"], false, "{health}");
    let ca = sba_pki(&api, &root, "1h").await;
    let n = Nrf {
        _server: r,
        _dir: dir,
        api,
        root,
        sbi: format!("127.0.0.1:{port}").parse().unwrap(),
        ca,
    };
    // The SBI certificate is issued by the server itself once the PKI exists.
    let probe = n.nf("AMF", AMF, "1h").await;
    for _ in 0..100 {
        if probe.get(n.url("/oauth2/jwks")).send().await.is_ok() {
            let (_, h) = n.api.call("GET", "sys/health", None, None).await;
            assert_eq!(h["engines"]["nrf"], json!({"ready": true}), "{h}");
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("SBI listener never became ready");
}

impl Nrf {
    fn url(&self, p: &str) -> String {
        format!("https://nrf.{DOMAIN}:{}{p}", self.sbi.port())
    }

    fn client(&self, identity: Option<Vec<u8>>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.as_bytes()).unwrap()])
            .resolve(&format!("nrf.{DOMAIN}"), self.sbi)
            .timeout(Duration::from_secs(10));
        if let Some(i) = identity {
            b = b.identity(reqwest::Identity::from_pem(&i).unwrap());
        }
        b.build().unwrap()
    }

    /// Issues an SBA certificate for an NF and returns a client presenting it.
    async fn nf(&self, nf_type: &str, id: &str, ttl: &str) -> reqwest::Client {
        self.client(Some(self.cert(nf_type, id, ttl).await.1))
    }

    async fn cert(&self, nf_type: &str, id: &str, ttl: &str) -> (String, Vec<u8>) {
        let v = ok(&self.api, &self.root, "POST", "pki/issue/sba", json!({"common_name": format!("{}1.{DOMAIN}", nf_type.to_lowercase()), "nf_instance_id": id, "nf_type": nf_type, "ttl": ttl})).await;
        let d = &v["data"];
        let pem = format!(
            "{}\n{}\n",
            d["certificate"].as_str().unwrap(),
            d["private_key"].as_str().unwrap()
        );
        (
            d["serial_number"].as_str().unwrap().to_string(),
            pem.into_bytes(),
        )
    }
}

fn profile(id: &str, nf_type: &str, extra: Value) -> Value {
    let mut p = json!({"nfInstanceId": id, "nfType": nf_type, "nfStatus": "REGISTERED", "fqdn": format!("{}1.{DOMAIN}", nf_type.to_lowercase())});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// Registers the AMF (plain) and the SMF (exposing nsmf-pdusession, plus `smf_extra`).
async fn register_amf_smf(n: &Nrf, amf: &reqwest::Client, smf: &reqwest::Client, smf_extra: Value) {
    let (st, v) = register(n, amf, AMF, &profile(AMF, "AMF", json!({}))).await;
    assert!(st == 200 || st == 201, "{v}");
    let mut extra = json!({"nfServices": [service("nsmf-pdusession")]});
    for (k, val) in smf_extra.as_object().unwrap() {
        extra[k] = val.clone();
    }
    let (st, v) = register(n, smf, SMF, &profile(SMF, "SMF", extra)).await;
    assert!(st == 200 || st == 201, "{v}");
}

fn service(name: &str) -> Value {
    json!({"serviceInstanceId": name, "serviceName": name, "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}], "scheme": "https", "nfServiceStatus": "REGISTERED"})
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null), h)
}

async fn register(n: &Nrf, c: &reqwest::Client, id: &str, body: &Value) -> (u16, Value) {
    let (st, v, _) = send(
        c.put(n.url(&format!("/nnrf-nfm/v1/nf-instances/{id}")))
            .json(body),
    )
    .await;
    (st, v)
}

async fn token(
    n: &Nrf,
    c: &reqwest::Client,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let body = serde_urlencoded::to_string(form).unwrap();
    send(
        c.post(n.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

type Form = Vec<(&'static str, &'static str)>;

const TOKEN_FORM: &[(&str, &str)] = &[
    ("grant_type", "client_credentials"),
    ("nfInstanceId", AMF),
    ("nfType", "AMF"),
    ("targetNfType", "SMF"),
    ("scope", "nsmf-pdusession"),
];

fn form_with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = TOKEN_FORM
        .iter()
        .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    v.extend(over.iter().copied());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nf_registers_discovers_and_gets_a_token_the_producer_crate_accepts() {
    let n = nrf("60s").await;
    let amf = n.nf("AMF", AMF, "1h").await;
    let smf = n.nf("SMF", SMF, "1h").await;
    let (st, v) = register(
        &n,
        &amf,
        AMF,
        &profile(AMF, "AMF", json!({"heartBeatTimer": 5})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["heartBeatTimer"], 60, "the NRF imposes its heartbeat");
    assert_eq!(
        register(&n, &amf, AMF, &profile(AMF, "AMF", json!({})))
            .await
            .0,
        200,
        "replace"
    );
    let (st, v) = register(
        &n,
        &smf,
        SMF,
        &profile(
            SMF,
            "SMF",
            json!({"allowedNfTypes": ["AMF"], "nfServices": [service("nsmf-pdusession")]}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    let (st, v, _) = send(amf.get(n.url("/nnrf-disc/v1/nf-instances")).query(&[
        ("target-nf-type", "SMF"),
        ("requester-nf-type", "AMF"),
        ("service-names", "nsmf-pdusession"),
    ]))
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["validityPeriod"], 60);
    assert_eq!(v["nfInstances"][0]["nfInstanceId"], SMF);

    let (st, v, h) = token(&n, &amf, TOKEN_FORM).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["pragma"], "no-cache");
    let tok = v["access_token"].as_str().unwrap();

    // The SMF verifies it with the published JWKS: accepted from the AMF, refused from anyone else.
    let (_, jwks, _) = send(smf.get(n.url("/oauth2/jwks"))).await;
    let keys = custos_sba_auth::NrfKeys::from_jwks(jwks.to_string().as_bytes()).unwrap();
    let verifier = custos_sba_auth::Verifier::new(keys, [NRF], "SMF", SMF);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = verifier.verify(tok, AMF, "nsmf-pdusession", now).unwrap();
    assert_eq!(claims.iss, NRF);
    assert_eq!(
        verifier.verify(tok, NEF, "nsmf-pdusession", now),
        Err(custos_sba_auth::SbaAuthError::Subject)
    );

    // Heartbeat, then deregistration.
    let (st, _, _) = send(
        amf.patch(n.url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/nfStatus","value":"REGISTERED"}]"#),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _, _) = send(amf.delete(n.url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))).await;
    assert_eq!(st, 204);
    let (st, _, _) = send(amf.get(n.url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))).await;
    assert_eq!(st, 404);
    // Deregistered: no more tokens.
    let (_, v, _) = token(&n, &amf, TOKEN_FORM).await;
    assert_eq!(v["error"], "invalid_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_attack_is_refused_and_nothing_is_registered_or_issued() {
    let n = nrf("60s").await;
    let amf = n.nf("AMF", AMF, "1h").await;
    let smf = n.nf("SMF", SMF, "1h").await;
    let udm = n.nf("UDM", UDM, "1h").await;
    let nef = n.nf("NEF", NEF, "1h").await;
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    register(
        &n,
        &udm,
        UDM,
        &profile(
            UDM,
            "UDM",
            json!({"allowedNfTypes": ["SMF"], "nfServices": [service("nudm-sdm")]}),
        ),
    )
    .await;

    // No client certificate: no TLS session at all.
    assert!(n
        .client(None)
        .get(n.url("/oauth2/jwks"))
        .send()
        .await
        .is_err());

    let cases: Vec<(Form, &reqwest::Client, &str)> = vec![
        (form_with(&[("nfInstanceId", SMF)]), &amf, "invalid_client"),
        (form_with(&[("nfType", "SMF")]), &amf, "invalid_client"),
        (
            form_with(&[("nfInstanceId", NEF), ("nfType", "NEF")]),
            &nef,
            "invalid_client",
        ),
        (
            form_with(&[("scope", "nsmf-event-exposure")]),
            &amf,
            "invalid_scope",
        ),
        (
            form_with(&[("targetNfType", "NRF"), ("scope", "nsmf-pdusession")]),
            &amf,
            "invalid_scope",
        ),
        (
            form_with(&[("targetNfType", "UDM"), ("scope", "nudm-sdm")]),
            &amf,
            "unauthorized_client",
        ),
        (
            form_with(&[("grant_type", "password")]),
            &amf,
            "unsupported_grant_type",
        ),
    ];
    for (form, c, want) in cases {
        let (st, v, h) = token(&n, c, &form).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some(want)),
            "{form:?}: {v}"
        );
        assert_eq!(h["cache-control"], "no-store");
        assert!(v.get("access_token").is_none());
    }

    // Path games: not a UUID, traversal (encoded so the client does not normalise it).
    for bad in [
        "not-a-uuid",
        "..%2F..%2Fetc%2Fpasswd",
        "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c1",
    ] {
        let (st, v, _) = send(
            amf.put(n.url(&format!("/nnrf-nfm/v1/nf-instances/{bad}")))
                .json(&profile(AMF, "AMF", json!({}))),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert_eq!(v["cause"], "MANDATORY_IE_INCORRECT");
    }
    // Registering, changing or deleting another NF's profile.
    let hijack = profile(
        SMF,
        "SMF",
        json!({"nfServices": [service("nsmf-pdusession")], "fqdn": "evil.example"}),
    );
    let (st, _) = register(&n, &amf, SMF, &hijack).await;
    assert_eq!(st, 403);
    let (st, _, _) = send(amf.delete(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))).await;
    assert_eq!(st, 403);
    let (st, _, _) = send(
        amf.patch(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/fqdn","value":"evil.example"}]"#),
    )
    .await;
    assert_eq!(st, 403);
    // An NF registering itself under a type its certificate does not carry.
    let (st, v) = register(&n, &nef, NEF, &profile(NEF, "SMF", json!({}))).await;
    assert_eq!(st, 403, "{v}");
    let (_, v, _) = send(smf.get(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))).await;
    assert_eq!(
        v["fqdn"],
        format!("smf1.{DOMAIN}"),
        "the SMF's profile is unchanged"
    );
    let (_, v, _) = send(nef.get(n.url("/nnrf-nfm/v1/nf-instances"))).await;
    assert_eq!(
        v["_links"]["items"].as_array().unwrap().len(),
        3,
        "nothing else registered: {v}"
    );
    assert_eq!(v["totalItemCount"], 3);
    // TS 29.510 6.1.3.2.3.1 paging: the second page of two holds the third instance.
    let (st, v, _) = send(
        nef.get(n.url("/nnrf-nfm/v1/nf-instances"))
            .query(&[("page-size", "2"), ("page-number", "2")]),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["_links"]["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["totalItemCount"], 3);
    let (st, _, _) = send(
        nef.get(n.url("/nnrf-nfm/v1/nf-instances"))
            .query(&[("page-size", "0")]),
    )
    .await;
    assert_eq!(st, 400);
    // Discovery with a requester type the certificate does not carry.
    let (st, _, _) = send(
        amf.get(n.url("/nnrf-disc/v1/nf-instances"))
            .query(&[("target-nf-type", "UDM"), ("requester-nf-type", "SMF")]),
    )
    .await;
    assert_eq!(st, 403);
    // ... and a producer's allowedNfTypes hides it from others.
    let (_, v, _) = send(
        amf.get(n.url("/nnrf-disc/v1/nf-instances"))
            .query(&[("target-nf-type", "UDM"), ("requester-nf-type", "AMF")]),
    )
    .await;
    assert_eq!(v["nfInstances"], json!([]));

    // A revoked client certificate: refused on a new connection.
    let (serial, pem) = n.cert("AMF", AMF, "1h").await;
    ok(
        &n.api,
        &n.root,
        "POST",
        "pki/revoke",
        json!({"serial_number": serial}),
    )
    .await;
    assert!(
        n.client(Some(pem.clone()))
            .get(n.url("/oauth2/jwks"))
            .send()
            .await
            .is_err(),
        "revoked certificate"
    );
    // ... with the TLS alert certificate_revoked (from the NF CA's CRL, which the SBI
    // verifier takes up within a second), as OpenSSL's client reports it.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("nf.pem"), &pem).unwrap();
    std::fs::write(d.path().join("ca.pem"), &n.ca).unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        let out = tokio::task::spawn_blocking({
            let (dir, sbi) = (d.path().to_path_buf(), n.sbi);
            move || {
                let mut c = std::process::Command::new("openssl")
                    .current_dir(dir)
                    .args(["s_client", "-connect", &sbi.to_string(), "-servername"])
                    .arg(format!("nrf.{DOMAIN}"))
                    .args(["-cert", "nf.pem", "-key", "nf.pem", "-CAfile", "ca.pem"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                {
                    use std::io::Write as _;
                    let mut i = c.stdin.take().unwrap();
                    let _ = i.write_all(b"GET /oauth2/jwks HTTP/1.1\r\nHost: nrf\r\n\r\n");
                    std::thread::sleep(Duration::from_millis(300));
                }
                c.wait_with_output().unwrap()
            }
        })
        .await
        .unwrap();
        seen = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if seen.contains("certificate revoked") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("alert certificate revoked"), "{seen}");
    // An expired client certificate: refused by the handshake.
    let (_, pem) = n.cert("AMF", AMF, "1s").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        n.client(Some(pem))
            .get(n.url("/oauth2/jwks"))
            .send()
            .await
            .is_err(),
        "expired certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nf_is_suspended_and_no_longer_discovered() {
    let n = nrf("2s").await;
    let amf = n.nf("AMF", AMF, "1h").await;
    let smf = n.nf("SMF", SMF, "1h").await;
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    let q = [("target-nf-type", "SMF"), ("requester-nf-type", "AMF")];
    let found = |v: &Value| v["nfInstances"].as_array().map(|a| a.len()).unwrap_or(0);
    let (_, v, _) = send(amf.get(n.url("/nnrf-disc/v1/nf-instances")).query(&q)).await;
    assert_eq!(found(&v), 1);
    // The AMF keeps beating; the SMF goes silent for more than 1.5 intervals.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        send(
            amf.patch(n.url(&format!("/nnrf-nfm/v1/nf-instances/{AMF}")))
                .header("content-type", "application/json-patch+json")
                .body(r#"[{"op":"replace","path":"/nfStatus","value":"REGISTERED"}]"#),
        )
        .await;
    }
    let (_, v, _) = send(amf.get(n.url("/nnrf-disc/v1/nf-instances")).query(&q)).await;
    assert_eq!(found(&v), 0, "suspended: {v}");
    let (_, v, _) = send(smf.get(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))).await;
    assert_eq!(v["nfStatus"], "SUSPENDED");
    let (_, v, _) = token(&n, &amf, TOKEN_FORM).await;
    assert_eq!(
        v["error"], "invalid_scope",
        "no token for a suspended producer"
    );
    // The AMF itself stayed registered; the SMF comes back with a heartbeat.
    send(
        smf.patch(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/nfStatus","value":"REGISTERED"}]"#),
    )
    .await;
    let (_, v, _) = send(amf.get(n.url("/nnrf-disc/v1/nf-instances")).query(&q)).await;
    assert_eq!(found(&v), 1);
}

/// An SMF stand-in: a mutual-TLS producer that protects `nsmf-pdusession` with the
/// `custos-sba-auth` layer, keyed by the NRF's JWKS. Returns its address.
async fn smf_standin(cert_pem: &[u8], ca: &str, jwks: &Value) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut &cert_pem[..])
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let keys = custos_sba_auth::NrfKeys::from_jwks(jwks.to_string().as_bytes()).unwrap();
    let app = axum::Router::new()
        .route(
            "/nsmf-pdusession/v1/sm-contexts",
            axum::routing::post(|req: axum::extract::Request| async move {
                let who = req
                    .extensions()
                    .get::<custos_sba_auth::Verified>()
                    .map(|v| v.sub.clone())
                    .unwrap_or_default();
                (axum::http::StatusCode::CREATED, who)
            }),
        )
        .layer(custos_sba_auth::SbaAuthLayer::new(
            custos_sba_auth::Verifier::new(keys, [NRF], "SMF", SMF),
            "nsmf-pdusession",
        ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| custos_sba_auth::PeerNf::from_cert(c.as_ref()));
                let Some(peer) = peer else { return };
                let svc =
                    hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(peer)));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amf_discovers_smf_gets_a_token_and_calls_it_and_a_replay_from_another_nf_is_refused() {
    let n = nrf("60s").await;
    let (_, amf_pem) = n.cert("AMF", AMF, "1h").await;
    let (_, smf_pem) = n.cert("SMF", SMF, "1h").await;
    let (_, nef_pem) = n.cert("NEF", NEF, "1h").await;
    let (amf, smf) = (
        n.client(Some(amf_pem.clone())),
        n.client(Some(smf_pem.clone())),
    );
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    let (_, jwks, _) = send(smf.get(n.url("/oauth2/jwks"))).await;
    let smf_addr = smf_standin(&smf_pem, &n.ca, &jwks).await;

    // AMF: discover, get a token, call the SMF it found.
    let (_, found, _) = send(amf.get(n.url("/nnrf-disc/v1/nf-instances")).query(&[
        ("target-nf-type", "SMF"),
        ("requester-nf-type", "AMF"),
        ("service-names", "nsmf-pdusession"),
    ]))
    .await;
    let fqdn = found["nfInstances"][0]["fqdn"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, t, _) = token(&n, &amf, TOKEN_FORM).await;
    let tok = t["access_token"].as_str().unwrap();
    let call = |pem: Vec<u8>| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(n.ca.as_bytes()).unwrap()])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .resolve(&fqdn, smf_addr)
            .build()
            .unwrap()
    };
    let url = format!(
        "https://{fqdn}:{}/nsmf-pdusession/v1/sm-contexts",
        smf_addr.port()
    );
    let r = call(amf_pem)
        .post(&url)
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(
        r.text().await.unwrap(),
        AMF,
        "the SMF saw the AMF as the token's subject"
    );
    // The same token replayed by another NF (its own valid certificate): refused.
    let r = call(nef_pem)
        .post(&url)
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
}

/// A CCA signed by the NF whose PKCS#8 key and certificate are in `pem`.
fn cca(pem: &[u8], sub: &str, exp_in: i64) -> String {
    use base64::Engine as _;
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let cert = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap();
    let key = match rustls_pemfile::private_key(&mut &pem[..]).unwrap().unwrap() {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => panic!("want a PKCS#8 key"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let h = enc(json!({"alg": "ES256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(cert.as_ref())]}).to_string().as_bytes());
    let c = enc(
        json!({"sub": sub, "aud": ["NRF"], "iat": now - 5, "exp": now + exp_in})
            .to_string()
            .as_bytes(),
    );
    let input = format!("{h}.{c}");
    let k = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key,
    )
    .unwrap();
    let sig = k
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", enc(sig.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts33501_13_3_8_client_credentials_assertion_on_top_of_mtls() {
    let n = nrf("60s").await;
    let issue = |nf: &'static str, id: &'static str| {
        let (api, root) = (n.api.clone(), n.root.clone());
        async move {
            let v = ok(&api, &root, "POST", "pki/issue/sba", json!({"common_name": format!("{}1.{DOMAIN}", nf.to_lowercase()), "nf_instance_id": id, "nf_type": nf, "private_key_format": "pkcs8"})).await;
            format!(
                "{}\n{}\n",
                v["data"]["certificate"].as_str().unwrap(),
                v["data"]["private_key"].as_str().unwrap()
            )
            .into_bytes()
        }
    };
    let (amf_pem, smf_pem, nef_pem) = (
        issue("AMF", AMF).await,
        issue("SMF", SMF).await,
        issue("NEF", NEF).await,
    );
    let (amf, smf) = (n.client(Some(amf_pem.clone())), n.client(Some(smf_pem)));
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    let with_cca = |c: String| {
        let body = serde_urlencoded::to_string(TOKEN_FORM).unwrap();
        amf.post(n.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("3gpp-Sbi-Client-Credentials", c)
            .body(body)
    };
    let (st, v, _) = send(with_cca(cca(&amf_pem, AMF, 60))).await;
    assert_eq!(st, 200, "a valid CCA from the TLS peer: {v}");
    for (assertion, why) in [
        (cca(&amf_pem, SMF, 60), "sub"),
        (cca(&amf_pem, AMF, -10), "exp"),
        (cca(&nef_pem, NEF, 60), "another NF"),
        ("x.y.z".to_string(), "well-formed"),
    ] {
        let (st, v, _) = send(with_cca(assertion)).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some("invalid_client")),
            "{why}: {v}"
        );
        assert!(
            v["error_description"].as_str().unwrap().contains(why),
            "{why}: {v}"
        );
        assert!(v.get("access_token").is_none());
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn kid(token: &str) -> String {
    use base64::Engine;
    let h = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap().to_string()
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// TS 33.501 13.4.1 tokens stay verifiable across a signing-key rotation: the old public key
/// is published until the last token it signed has expired (plus producers' leeway), then
/// dropped. Rotation is a sudo operation on the management API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_keeps_the_old_key_published_until_its_last_token_expires() {
    let n = nrf_with("60s", "3s", "retired_key_margin = \"1s\"\n").await;
    let (amf, smf) = (n.nf("AMF", AMF, "1h").await, n.nf("SMF", SMF, "1h").await);
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    let (st, v, _) = token(&n, &amf, TOKEN_FORM).await;
    assert_eq!(st, 200, "{v}");
    let old = v["access_token"].as_str().unwrap().to_string();
    let k1 = kid(&old);

    // Without sudo, no rotation.
    let t = policy_token(
        &n.api,
        &n.root,
        "nrf-read",
        "path \"sys/nrf/*\" { capabilities = [\"read\", \"update\"] }",
    )
    .await;
    let (st, _) = n
        .api
        .call("POST", "sys/nrf/keys/rotate", Some(&t), Some(json!({})))
        .await;
    assert_eq!(st, 403);
    let v = ok(&n.api, &t, "GET", "sys/nrf/keys", json!({})).await;
    assert_eq!(v["data"]["current_kid"], k1.as_str(), "{v}");

    let v = ok(&n.api, &n.root, "POST", "sys/nrf/keys/rotate", json!({})).await;
    let k2 = v["data"]["current_kid"].as_str().unwrap().to_string();
    assert_ne!(k1, k2);
    assert_eq!(v["data"]["retired"][0]["kid"], k1.as_str(), "{v}");
    let (st, v, _) = token(&n, &amf, TOKEN_FORM).await;
    assert_eq!(st, 200, "{v}");
    let new = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(kid(&new), k2, "new tokens are signed with the new key");

    // Both tokens verify against the JWKS a producer fetches now.
    let (_, jwks, _) = send(smf.get(n.url("/oauth2/jwks"))).await;
    let mut kids = jwks_kids(&jwks);
    kids.sort();
    let mut want = vec![k1.clone(), k2.clone()];
    want.sort();
    assert_eq!(kids, want);
    let keys = custos_sba_auth::NrfKeys::from_jwks(jwks.to_string().as_bytes()).unwrap();
    let verifier = custos_sba_auth::Verifier::new(keys, [NRF], "SMF", SMF);
    for t in [&old, &new] {
        verifier
            .verify(t, AMF, "nsmf-pdusession", unix_now())
            .unwrap();
    }

    // token_ttl (3 s) + margin (1 s) later, the old key is gone and the new one stays.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, jwks, _) = send(smf.get(n.url("/oauth2/jwks"))).await;
    assert_eq!(jwks_kids(&jwks), vec![k2.clone()]);
    let v = ok(&n.api, &n.root, "GET", "sys/nrf/keys", json!({})).await;
    assert_eq!(v["data"]["retired"], json!([]));
}

/// "Only the NF whose certificate carries that instance ID and type may register, update or
/// delete it. An administrative policy may override this": a token whose ACL grants
/// `sys/nrf/nf-instances/*` manages any profile through the management API, with the same
/// validation; other tokens are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrative_policy_overrides_profile_ownership() {
    let n = nrf("60s").await;
    let (amf, smf) = (n.nf("AMF", AMF, "1h").await, n.nf("SMF", SMF, "1h").await);
    register_amf_smf(&n, &amf, &smf, json!({})).await;
    let admin = policy_token(&n.api, &n.root, "nrf-admin", "path \"sys/nrf/nf-instances/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }").await;
    let other = policy_token(
        &n.api,
        &n.root,
        "other",
        "path \"secret/*\" { capabilities = [\"read\"] }",
    )
    .await;
    let discover_smf = || async {
        let (st, v, _) = send(
            amf.get(n.url("/nnrf-disc/v1/nf-instances"))
                .query(&[("target-nf-type", "SMF"), ("requester-nf-type", "AMF")]),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        v["nfInstances"].as_array().unwrap().len()
    };
    assert_eq!(discover_smf().await, 1);

    // Without the policy: refused, nothing changes.
    let path = format!("sys/nrf/nf-instances/{SMF}");
    let (st, _) = n.api.call("DELETE", &path, Some(&other), None).await;
    assert_eq!(st, 403);
    let (st, _) = n
        .api
        .call(
            "PUT",
            &format!("sys/nrf/nf-instances/{UDM}"),
            Some(&other),
            Some(profile(UDM, "UDM", json!({}))),
        )
        .await;
    assert_eq!(st, 403);
    assert_eq!(discover_smf().await, 1);

    // With it: list, read, and delete another NF's profile.
    let v = ok(&n.api, &admin, "LIST", "sys/nrf/nf-instances", json!({})).await;
    assert_eq!(v["data"]["keys"], json!([SMF, AMF]));
    let v = ok(&n.api, &admin, "GET", &path, json!({})).await;
    assert_eq!(v["data"]["nfType"], "SMF");
    ok(&n.api, &admin, "DELETE", &path, json!({})).await;
    assert_eq!(discover_smf().await, 0);
    let (st, _, _) = send(smf.get(n.url(&format!("/nnrf-nfm/v1/nf-instances/{SMF}")))).await;
    assert_eq!(st, 404, "the SMF sees its profile gone");

    // Register one, with the SBI's validation: bad input is refused and stores nothing.
    for (bad, why) in [
        (
            json!({"nfInstanceId": SMF, "nfType": "SMF", "nfStatus": "REGISTERED"}),
            "no address",
        ),
        (
            profile(UDM, "SMF", json!({})),
            "body ID differs from the path",
        ),
        (profile(SMF, "NOT-A-TYPE", json!({})), "bad nfType"),
    ] {
        let (st, v) = n.api.call("PUT", &path, Some(&admin), Some(bad)).await;
        assert_eq!(st, 400, "{why}: {v}");
    }
    let (st, _) = n
        .api
        .call(
            "PUT",
            "sys/nrf/nf-instances/..%2fetc",
            Some(&admin),
            Some(profile(SMF, "SMF", json!({}))),
        )
        .await;
    assert!(st == 400 || st == 404, "{st}");
    assert_eq!(discover_smf().await, 0, "nothing was stored");
    let v = ok(
        &n.api,
        &admin,
        "PUT",
        &path,
        profile(
            SMF,
            "SMF",
            json!({"nfServices": [service("nsmf-pdusession")]}),
        ),
    )
    .await;
    assert_eq!(
        v["data"]["heartBeatTimer"], 60,
        "the NRF's heartbeat is imposed"
    );
    assert_eq!(discover_smf().await, 1);
}
