//! The storage conformance suite. Every backend's tests call [`run_all`] (or the individual
//! checks) so that SQLite and PostgreSQL are held to exactly the same contract.
//!
//! Each check panics with a message naming the broken guarantee; they are test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::{CertRow, Storage, WriteOp};
use std::sync::Arc;

fn put(k: &str, v: &[u8]) -> WriteOp {
    WriteOp::Put {
        key: k.to_string(),
        value: v.to_vec(),
    }
}

/// Runs every check in order against a fresh, empty store.
pub async fn run_all(s: Arc<dyn Storage>) {
    get_put_delete_roundtrip(&*s).await;
    list_returns_immediate_children_sorted(&*s).await;
    batch_is_atomic_when_an_op_is_invalid(&*s).await;
    binary_values_roundtrip_exactly(&*s).await;
    cert_index_queries_by_expiry_serial_and_revocation(&*s).await;
    concurrent_writers_are_group_committed(s.clone()).await;
}

pub async fn get_put_delete_roundtrip(s: &dyn Storage) {
    assert_eq!(s.get("t1/missing").await.unwrap(), None);
    s.write(vec![put("t1/a", b"1")]).await.unwrap();
    assert_eq!(s.get("t1/a").await.unwrap().as_deref(), Some(&b"1"[..]));
    s.write(vec![put("t1/a", b"2")]).await.unwrap();
    assert_eq!(
        s.get("t1/a").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "put must replace"
    );
    s.write(vec![WriteOp::Delete { key: "t1/a".into() }])
        .await
        .unwrap();
    assert_eq!(s.get("t1/a").await.unwrap(), None);
    // Deleting an absent key is not an error.
    s.write(vec![WriteOp::Delete { key: "t1/a".into() }])
        .await
        .unwrap();
}

pub async fn list_returns_immediate_children_sorted(s: &dyn Storage) {
    s.write(vec![
        put("t2/b", b""),
        put("t2/a", b""),
        put("t2/dir/x", b""),
        put("t2/dir/y/z", b""),
        put("t20/other", b""),
        put("t2", b"not a child"),
    ])
    .await
    .unwrap();
    assert_eq!(s.list("t2/").await.unwrap(), vec!["a", "b", "dir/"]);
    assert_eq!(s.list("t2/dir/").await.unwrap(), vec!["x", "y/"]);
    assert!(s.list("t2/nothing/").await.unwrap().is_empty());
    // Prefix characters that are SQL wildcards must match literally.
    s.write(vec![put("t2%/x", b""), put("t2_/y", b"")])
        .await
        .unwrap();
    assert_eq!(s.list("t2%/").await.unwrap(), vec!["x"]);
    assert_eq!(s.list("t2_/").await.unwrap(), vec!["y"]);
}

pub async fn batch_is_atomic_when_an_op_is_invalid(s: &dyn Storage) {
    let err = s.write(vec![put("t3/ok", b"1"), put("", b"bad key")]).await;
    assert!(err.is_err(), "an invalid op must fail the batch");
    assert_eq!(
        s.get("t3/ok").await.unwrap(),
        None,
        "a failed batch must leave no partial state"
    );
    // The store is still usable afterwards.
    s.write(vec![put("t3/ok", b"1")]).await.unwrap();
    assert!(s.get("t3/ok").await.unwrap().is_some());
}

pub async fn binary_values_roundtrip_exactly(s: &dyn Storage) {
    let v: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    s.write(vec![put("t4/blob", &v)]).await.unwrap();
    assert_eq!(s.get("t4/blob").await.unwrap().unwrap(), v);
    s.write(vec![put("t4/empty", b"")]).await.unwrap();
    assert_eq!(s.get("t4/empty").await.unwrap().unwrap(), b"");
    let unicode = "t4/ünï/κλειδί";
    s.write(vec![put(unicode, b"u")]).await.unwrap();
    assert!(s.get(unicode).await.unwrap().is_some());
}

fn cert(mount: &str, serial: &str, not_after: i64) -> CertRow {
    CertRow {
        mount: mount.into(),
        serial: serial.into(),
        issuer_id: "iss-1".into(),
        not_after,
        revoked_at: None,
        value: serial.as_bytes().to_vec(),
    }
}

pub async fn cert_index_queries_by_expiry_serial_and_revocation(s: &dyn Storage) {
    let m = "pki-conf/";
    let mut ops = Vec::new();
    for i in 0..50i64 {
        ops.push(WriteOp::PutCert(cert(m, &format!("{i:02x}:aa"), 1_000 + i)));
    }
    ops.push(WriteOp::PutCert(cert("other/", "00:aa", 1)));
    s.write(ops).await.unwrap();

    let got = s.get_cert(m, "05:aa").await.unwrap().unwrap();
    assert_eq!(got.not_after, 1_005);
    assert_eq!(got.value, b"05:aa");
    assert_eq!(s.get_cert(m, "ff:ff").await.unwrap(), None);

    let page1 = s.list_certs(m, None, 20).await.unwrap();
    assert_eq!(page1.len(), 20);
    assert_eq!(page1[0], "00:aa");
    let page2 = s
        .list_certs(m, page1.last().map(String::as_str), 100)
        .await
        .unwrap();
    assert_eq!(page2.len(), 30, "pagination must continue after the cursor");
    assert_eq!(page2[0], "14:aa");

    let exp = s.certs_expiring_before(m, 1_010, 100).await.unwrap();
    assert_eq!(exp.len(), 10, "expiry range must not leak other mounts");
    assert!(exp.windows(2).all(|w| w[0].not_after <= w[1].not_after));

    s.write(vec![
        WriteOp::RevokeCert {
            mount: m.into(),
            serial: "07:aa".into(),
            revoked_at: 77,
        },
        WriteOp::RevokeCert {
            mount: m.into(),
            serial: "03:aa".into(),
            revoked_at: 33,
        },
    ])
    .await
    .unwrap();
    let revoked = s.revoked_certs(m, None, 10).await.unwrap();
    assert_eq!(
        revoked,
        vec![("03:aa".to_string(), 33), ("07:aa".to_string(), 77)]
    );
    assert_eq!(
        s.revoked_since(m, 40, 10).await.unwrap(),
        vec![("07:aa".to_string(), 77)],
        "revoked_since is a time range"
    );
    assert_eq!(s.revoked_since(m, 0, 10).await.unwrap().len(), 2);
    assert!(s.revoked_since("other/", 0, 10).await.unwrap().is_empty());
    // A second revocation keeps the first revocation time.
    s.write(vec![WriteOp::RevokeCert {
        mount: m.into(),
        serial: "03:aa".into(),
        revoked_at: 99,
    }])
    .await
    .unwrap();
    assert_eq!(
        s.get_cert(m, "03:aa").await.unwrap().unwrap().revoked_at,
        Some(33)
    );
    s.write(vec![WriteOp::DeleteCert {
        mount: m.into(),
        serial: "03:aa".into(),
    }])
    .await
    .unwrap();
    assert_eq!(s.revoked_certs(m, None, 10).await.unwrap().len(), 1);
}

pub async fn concurrent_writers_are_group_committed(s: Arc<dyn Storage>) {
    let before = s.stats();
    let writers = 64;
    let each = 20;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                s.write(vec![put(&format!("t6/{w}/{i}"), b"v")])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for w in 0..writers {
        assert_eq!(
            s.list(&format!("t6/{w}/")).await.unwrap().len(),
            each,
            "every acknowledged write must be readable"
        );
    }
    let after = s.stats();
    let writes = after.writes - before.writes;
    let txs = after.transactions - before.transactions;
    assert_eq!(writes, (writers * each) as u64);
    assert!(
        txs < writes,
        "group commit expected: {writes} writes took {txs} transactions"
    );
}
