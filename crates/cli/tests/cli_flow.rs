//! The `custos` binary end to end against `custos server --config`: init, unseal, status,
//! tokens, policies, generic read/write/list/delete, audit, and error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::{Command, Output, Stdio};

struct Server {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_custos")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_config_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("custos.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\nbackend = \"sqlite\"\npath = \"{}/custos.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n", dir.path().display()),
    )
    .unwrap();
    let child = Command::new(bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    Server {
        child,
        addr: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn custos(s: &Server, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("CUSTOS_ADDR", &s.addr)
        .env_remove("CUSTOS_TOKEN");
    if let Some(t) = token {
        c.env("CUSTOS_TOKEN", t);
    }
    c.output().unwrap()
}

fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn operator_token_policy_and_generic_commands_work_end_to_end() {
    let s = start_config_server();
    let st = custos(&s, None, &["status"]);
    assert_eq!(st.status.code(), Some(2), "status exits 2 while sealed");

    let init = json_out(&custos(
        &s,
        None,
        &[
            "operator",
            "init",
            "--key-shares",
            "3",
            "--key-threshold",
            "2",
            "--format",
            "json",
        ],
    ));
    let keys: Vec<String> = init["keys_base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    let root = init["root_token"].as_str().unwrap().to_string();
    // The same share twice counts once, and the operator is told so.
    let first = custos(&s, None, &["operator", "unseal", &keys[0]]);
    assert!(first.status.success());
    assert!(!String::from_utf8_lossy(&first.stderr).contains("ignored"));
    let again = custos(&s, None, &["operator", "unseal", &keys[0]]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(
            "this share was already given in this unseal attempt and was ignored (progress 1/2)"
        ),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(custos(&s, None, &["operator", "unseal", &keys[1]])
        .status
        .success());
    assert_eq!(custos(&s, None, &["status"]).status.code(), Some(0));

    let r = Some(root.as_str());
    // Times: RFC 3339 for a person, the API's number for scripts.
    let look = custos(&s, r, &["token", "lookup"]);
    let text = String::from_utf8_lossy(&look.stdout).to_string();
    let row = text
        .lines()
        .find(|l| l.starts_with("creation_time"))
        .unwrap_or_else(|| panic!("{text}"));
    let when = row.split_whitespace().last().unwrap();
    assert!(
        when.len() == 20 && when.ends_with('Z') && when.contains('T'),
        "{row}"
    );
    let j = json_out(&custos(&s, r, &["token", "lookup", "--format", "json"]));
    assert!(j["data"]["creation_time"].is_i64(), "{j}");
    assert!(custos(&s, r, &["write", "sys/mounts/kv", "type=kv"])
        .status
        .success());
    let w = custos(
        &s,
        r,
        &["write", "kv/amf", "db_password=s3cret", "region=eu"],
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let read = json_out(&custos(&s, r, &["read", "kv/amf", "--format", "json"]));
    assert_eq!(read["data"]["db_password"], "s3cret");
    let human = custos(&s, r, &["read", "kv/amf"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("db_password") && text.contains("s3cret"),
        "{text}"
    );
    let list = json_out(&custos(&s, r, &["list", "kv/", "--format", "json"]));
    assert_eq!(list["data"]["keys"][0], "amf");

    let pol = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pol.path(),
        "path \"kv/amf\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    assert!(custos(
        &s,
        r,
        &["policy", "write", "amf", pol.path().to_str().unwrap()]
    )
    .status
    .success());
    let pl = String::from_utf8_lossy(&custos(&s, r, &["policy", "list"]).stdout).to_string();
    assert!(
        pl.contains("amf") && pl.contains("default") && pl.contains("root"),
        "{pl}"
    );
    let pr = String::from_utf8_lossy(&custos(&s, r, &["policy", "read", "amf"]).stdout).to_string();
    assert!(pr.contains("kv/amf"));

    let tok = json_out(&custos(
        &s,
        r,
        &[
            "token", "create", "--policy", "amf", "--ttl", "1h", "--format", "json",
        ],
    ));
    let child = tok["auth"]["client_token"].as_str().unwrap().to_string();
    assert!(custos(&s, Some(&child), &["read", "kv/amf"])
        .status
        .success());
    let denied = custos(&s, Some(&child), &["write", "kv/amf", "x=y"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("code 403"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let look = json_out(&custos(
        &s,
        Some(&child),
        &["token", "lookup", "--format", "json"],
    ));
    assert_eq!(
        look["data"]["policies"],
        serde_json::json!(["amf", "default"])
    );
    assert!(
        custos(&s, Some(&child), &["token", "renew", "--increment", "2h"])
            .status
            .success()
    );
    assert!(custos(&s, r, &["token", "revoke", &child]).status.success());
    assert_eq!(
        custos(&s, Some(&child), &["read", "kv/amf"]).status.code(),
        Some(1)
    );

    let log = s._dir.path().join("audit.log");
    let fp = format!("file_path={}", log.display());
    assert!(custos(&s, r, &["audit", "enable", "file", &fp])
        .status
        .success());
    assert!(String::from_utf8_lossy(&custos(&s, r, &["audit", "list"]).stdout).contains("file/"));
    assert!(custos(&s, r, &["delete", "kv/amf"]).status.success());
    assert!(custos(&s, r, &["audit", "verify", log.to_str().unwrap()])
        .status
        .success());
    assert!(custos(&s, r, &["operator", "rotate"]).status.success());
    assert!(custos(&s, r, &["policy", "delete", "amf"]).status.success());
    assert!(custos(&s, r, &["operator", "seal"]).status.success());
    assert_eq!(custos(&s, None, &["status"]).status.code(), Some(2));
}

#[test]
fn bad_config_is_refused_before_binding_with_a_one_line_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, format!("[storage]\nbackend = \"sqlite\"\npath = \"{}/x.db\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n[limits]\nrequest_timeout = \"soon\"\n", dir.path().display())).unwrap();
    let out = Command::new(bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("listener.tls_cert_file") || err.contains("limits.request_timeout"),
        "{err}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the port must not have been bound"
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "no storage may be created"
    );
}

#[test]
fn cli_errors_name_the_problem_and_exit_non_zero() {
    let out = Command::new(bin())
        .args(["read", "sys/health"])
        .env("CUSTOS_ADDR", "ftp://nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with http"));
    let out = Command::new(bin())
        .args(["read", "sys/health"])
        .env("CUSTOS_ADDR", format!("http://127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    let out = Command::new(bin())
        .args(["write", "secret/x", "novalue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be key=value"));
}

fn run_at(addr: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("CUSTOS_ADDR", addr)
        .env("CUSTOS_TOKEN", "root")
        .output()
        .unwrap()
}

fn must(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_cli_issues_lints_revokes_and_flags_a_free5gc_style_certificate() {
    let s = custos_testkit::dev_server().await;
    let addr = s.api.base.clone();
    let dir = s.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let d = "5gc.mnc001.mcc262.3gppnetwork.org";
        must(run_at(
            &addr,
            &["secrets", "enable", "--max-lease-ttl", "87600h", "pki"],
        ));
        must(run_at(
            &addr,
            &[
                "write",
                "pki/root/generate/internal",
                "common_name=Root",
                "key_type=ec",
                "ttl=87600h",
            ],
        ));
        must(run_at(
            &addr,
            &[
                "write",
                "pki/config/urls",
                &format!("crl_distribution_points={addr}/v1/pki/crl"),
            ],
        ));
        must(run_at(
            &addr,
            &[
                "write",
                "pki/roles/amf",
                "profile=3gpp-sba",
                "key_type=ec",
                &format!("allowed_domains={d}"),
                "allow_subdomains=true",
                "country=DE",
                &format!("organization={d}"),
                "max_ttl=720h",
            ],
        ));
        let issued = must(run_at(
            &addr,
            &[
                "pki",
                "issue",
                "amf",
                "--common-name",
                &format!("amf1.{d}"),
                "--nf-instance-id",
                "4947a69a-f61b-4bc1-b9da-47c9c5d14b64",
                "--nf-type",
                "AMF",
                "--out-dir",
                dir.to_str().unwrap(),
            ],
        ));
        assert!(
            issued.contains("wrote cert.pem, key.pem, ca.pem"),
            "{issued}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(dir.join("key.pem"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        }
        let lint_ok = run_at(
            &addr,
            &["pki", "lint", dir.join("cert.pem").to_str().unwrap()],
        );
        assert_eq!(
            lint_ok.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&lint_ok.stdout)
        );

        // A free5GC-style certificate: 10 years, no keyUsage/EKU, the NF type as DNS SAN.
        let o = |args: &[&str]| custos_testkit::openssl(&dir, args);
        o(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "f5ca.key",
            "-out",
            "f5ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=free5GC CA",
        ]);
        o(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "f5.key",
            "-out",
            "f5.csr",
            "-subj",
            "/CN=AMF",
        ]);
        std::fs::write(dir.join("f5.ext"), "subjectAltName=DNS:amf\n").unwrap();
        o(&[
            "x509",
            "-req",
            "-in",
            "f5.csr",
            "-CA",
            "f5ca.pem",
            "-CAkey",
            "f5ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-out",
            "f5.pem",
            "-extfile",
            "f5.ext",
        ]);
        let bad = run_at(
            &addr,
            &["pki", "lint", dir.join("f5.pem").to_str().unwrap()],
        );
        assert_eq!(bad.status.code(), Some(1));
        let text = String::from_utf8_lossy(&bad.stdout).to_string();
        for want in [
            "keyUsage extension is missing",
            "extendedKeyUsage extension is missing",
            "validity is 3650 days",
            "\"amf\" is an NF type name",
            "nfTypes",
            "urn:uuid",
            "TS 33.310 6.1.3c",
        ] {
            assert!(text.contains(want), "lint output lacks {want:?}:\n{text}");
        }
        let serial = {
            let r = Command::new("openssl")
                .args(["x509", "-in", "cert.pem", "-noout", "-serial"])
                .current_dir(&dir)
                .output()
                .unwrap();
            let hex = String::from_utf8_lossy(&r.stdout)
                .trim()
                .trim_start_matches("serial=")
                .to_lowercase();
            let padded = if hex.len() % 2 == 1 {
                format!("0{hex}")
            } else {
                hex
            };
            padded
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        must(run_at(&addr, &["pki", "revoke", &serial]));
        must(run_at(
            &addr,
            &["pki", "crl", "--out", dir.join("crl.pem").to_str().unwrap()],
        ));
        let crl = Command::new("openssl")
            .args(["crl", "-in", "crl.pem", "-noout", "-text"])
            .current_dir(&dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&crl.stdout).to_string()
    })
    .await
    .unwrap();
    assert!(out.contains("Revoked Certificates:"), "{out}");
}

#[test]
fn pki_lint_on_garbage_is_a_usage_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.pem");
    std::fs::write(
        &p,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let o = Command::new(bin())
        .args(["pki", "lint", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.pem"));
}

/// `--field NAME` (and Vault's single-dash `-field=NAME`) prints one value bare, so scripts
/// need no JSON parsing: an AppRole's role ID and a fresh secret ID, the login's token; an
/// absent field is an error naming it, with exit 1.
#[test]
fn field_prints_one_value_bare_for_scripts() {
    let s = start_config_server();
    let init = json_out(&custos(
        &s,
        None,
        &[
            "operator",
            "init",
            "--key-shares",
            "1",
            "--key-threshold",
            "1",
            "--format",
            "json",
        ],
    ));
    let key = init["keys_base64"][0].as_str().unwrap().to_string();
    let root = init["root_token"].as_str().unwrap().to_string();
    assert!(custos(&s, None, &["operator", "unseal", &key])
        .status
        .success());
    let r = Some(root.as_str());
    let ok = |args: &[&str]| -> String {
        let o = custos(&s, r, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    ok(&["write", "sys/auth/approle", "type=approle"]);
    ok(&["write", "auth/approle/role/amf", "token_policies=default"]);
    let role_id = ok(&["read", "--field=role_id", "auth/approle/role/amf/role-id"]);
    assert_eq!(role_id.trim().len(), 36, "{role_id:?}");
    assert!(!role_id.contains('"') && role_id.ends_with('\n'));
    assert_eq!(
        ok(&["read", "-field=role_id", "auth/approle/role/amf/role-id"]),
        role_id
    );
    assert_eq!(
        ok(&["read", "-field", "role_id", "auth/approle/role/amf/role-id"]),
        role_id
    );
    let secret_id = ok(&[
        "write",
        "--field",
        "secret_id",
        "auth/approle/role/amf/secret-id",
    ]);
    let token = ok(&[
        "write",
        "-field=token",
        "auth/approle/login",
        &format!("role_id={}", role_id.trim()),
        &format!("secret_id={}", secret_id.trim()),
    ]);
    assert!(token.starts_with("cst."), "{token:?}");
    // A 404 says what was not found.
    let o = custos(&s, r, &["read", "auth/approle/role/nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing found at auth/approle/role/nope"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let policies = ok(&["read", "--field=policies", "auth/token/lookup-self"]);
    assert_eq!(policies.trim(), r#"["root"]"#);
    let o = custos(
        &s,
        r,
        &["read", "--field=nope", "auth/approle/role/amf/role-id"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("field \"nope\" is not present"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Transport errors name their cause and what to do: a closed port, a TLS certificate the CLI
/// does not trust, plain HTTP sent to a TLS listener (and TLS sent to a plain one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_name_the_cause_and_the_fix() {
    let err = |addr: String, extra: &[(&str, String)]| {
        let mut c = Command::new(bin());
        c.args(["read", "sys/health"])
            .env("CUSTOS_ADDR", addr)
            .env_remove("CUSTOS_CACERT");
        for (k, v) in extra {
            c.env(k, v);
        }
        async move {
            let o = tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap();
            assert_eq!(o.status.code(), Some(1));
            String::from_utf8_lossy(&o.stderr).to_string()
        }
    };
    let e = err(format!("http://127.0.0.1:{}", free_port()), &[]).await;
    assert!(
        e.contains("connection refused: nothing listens there"),
        "{e}"
    );
    let (tls, dir, _, _) = custos_testkit::tls_server(tempfile::tempdir().unwrap(), "").await;
    let port = tls.addr.port();
    let e = err(format!("https://127.0.0.1:{port}"), &[]).await;
    assert!(e.contains("set CUSTOS_CACERT"), "{e}");
    let e = err(format!("http://127.0.0.1:{port}"), &[]).await;
    assert!(e.contains("it speaks HTTPS: use https://"), "{e}");
    // With the CA, the same address works.
    let o = Command::new(bin())
        .args(["read", "sys/health"])
        .env("CUSTOS_ADDR", format!("https://127.0.0.1:{port}"))
        .env("CUSTOS_CACERT", dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // TLS to a plain-HTTP listener.
    let plain = start_config_server();
    let e = err(plain.addr.replace("http://", "https://"), &[]).await;
    assert!(e.contains("does not speak TLS there: use http://"), "{e}");
}
