//! `custos audit verify` on a real log written by the server: intact, one edited line, one
//! deleted line and one swapped pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::process::Command;

fn verify(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_catches_edit_delete_and_swap_in_a_server_written_log() {
    let s = custos_testkit::dev_server().await;
    let log = s.dir.path().join("audit.log");
    let (st, _) = s
        .api
        .call(
            "PUT",
            "sys/audit/file",
            Some("root"),
            Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
        )
        .await;
    assert_eq!(st, 204);
    for i in 0..5 {
        s.api
            .call(
                "PUT",
                &format!("secret/k{i}"),
                Some("root"),
                Some(json!({"v": i})),
            )
            .await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12);

    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("12 lines, chain intact"), "{out}");

    let write = |name: &str, ls: &[String]| {
        let p = s.dir.path().join(name);
        std::fs::write(&p, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        p
    };
    let base: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    let mut edited = base.clone();
    edited[4] = edited[4].replacen("\"operation\":\"create\"", "\"operation\":\"read\"", 1);
    assert_ne!(edited[4], base[4]);
    let (code, out) = verify(&write("edited.log", &edited));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 5: edited"), "{out}");

    let mut deleted = base.clone();
    deleted.remove(6);
    let (code, out) = verify(&write("deleted.log", &deleted));
    assert_eq!(code, 1);
    assert!(out.contains("line 7: 1 line(s) removed"), "{out}");

    let mut swapped = base.clone();
    swapped.swap(2, 3);
    let (code, out) = verify(&write("swapped.log", &swapped));
    assert_eq!(code, 1);
    assert!(out.contains("line 3: reordered"), "{out}");
}

#[test]
fn audit_verify_on_a_missing_file_names_it_and_fails() {
    let (code, out) = verify(std::path::Path::new("/nonexistent/audit.log"));
    assert_eq!(code, 1);
    assert!(out.contains("/nonexistent/audit.log"), "{out}");
}

/// Fail closed: once the only audit device cannot write (here the kernel refuses to grow the
/// file past RLIMIT_FSIZE with EFBIG), requests fail with 500 and change nothing, and the
/// failed line is cut back so the log still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_closed_when_the_audit_device_cannot_write() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    // bash's `ulimit -f` counts 1024-byte blocks: 8 MiB; SIGXFSZ ignored so writes get EFBIG.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 8192; exec {} server --dev --dev-root-token-id root --dev-listen-address 127.0.0.1:{port}",
            env!("CARGO_BIN_EXE_custos")
        ))
        .env("TMPDIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = custos_testkit::Api::new(&format!("http://127.0.0.1:{port}"));
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "dev server did not start");
    let (st, v) = api
        .call(
            "PUT",
            "sys/audit/file",
            Some("root"),
            Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    // A 9 MiB value: its audit line cannot fit under the 8 MiB file-size limit.
    let big = "x".repeat(9 * 1024 * 1024);
    let (st, v) = api
        .call("PUT", "secret/huge", Some("root"), Some(json!({"v": big})))
        .await;
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["errors"][0], "internal error");
    let (st, _) = api.call("GET", "secret/huge", Some("root"), None).await;
    assert_eq!(st, 404, "the unaudited write must not have happened");
    let _ = child.kill();
    let _ = child.wait();
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "a failed write must not leave a torn line: {out}");
}
