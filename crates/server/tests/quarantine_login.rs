//! A quarantined device's identities are refused everywhere the core and PKI answer: its
//! AppRole login (after the method accepted the secret), certificates naming its NF instance
//! ID, whoever asks; release needs a TRUSTED verdict newer than the quarantine; bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_testkit::soft::SoftManufacturer;
use custos_testkit::{dev_server, ok, sba_pki, SBA_DOMAIN};
use serde_json::json;

const NF: &str = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_device_cannot_log_in_or_get_certificates_until_released() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    for (p, t) in [("provenance", "provenance"), ("attest", "attest")] {
        ok(
            api,
            root,
            "POST",
            &format!("sys/mounts/{p}"),
            json!({"type": t}),
        )
        .await;
    }
    ok(
        api,
        root,
        "POST",
        "sys/auth/approle",
        json!({"type": "approle"}),
    )
    .await;
    sba_pki(api, root, "1h").await;
    let m = SoftManufacturer::new();
    ok(api, root, "POST", "attest/config", json!({
        "manufacturer_ca_pem": m.pem,
        "policy": "[[device_classes]]\nname = \"du\"\n",
        "firmware_policy": "[[suppliers]]\nname = \"acme\"\nkeys = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n[[device_classes]]\nname = \"du\"\nsuppliers = [\"acme\"]\nbuilders = [\"https://ci.example/b\"]\n",
        "provenance_mount": "provenance",
        "device_pki_mount": "pki",
    })).await;
    m.enrol(
        api,
        root,
        "du-7",
        "du",
        json!({"nf_instance_ids": [NF], "logins": ["approle-du-7"]}),
    )
    .await;
    ok(
        api,
        root,
        "POST",
        "auth/approle/role/du-7",
        json!({"token_policies": ["default"]}),
    )
    .await;
    let role_id = ok(
        api,
        root,
        "GET",
        "auth/approle/role/du-7/role-id",
        json!({}),
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = ok(
        api,
        root,
        "POST",
        "auth/approle/role/du-7/secret-id",
        json!({}),
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let login = json!({"role_id": role_id, "secret_id": secret_id});
    let (st, v) = api
        .call("POST", "auth/approle/login", None, Some(login.clone()))
        .await;
    assert_eq!(st, 200, "{v}");
    let cert = ok(api, root, "POST", "pki/issue/sba", json!({"common_name": format!("amf1.{SBA_DOMAIN}"), "nf_instance_id": NF, "nf_type": "AMF"})).await;
    let serial = cert["data"]["serial_number"].as_str().unwrap().to_string();

    // Bad input first: no reason; an unknown device.
    let (st, _) = api
        .call(
            "POST",
            "attest/devices/du-7/quarantine",
            Some(root),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = api
        .call(
            "POST",
            "attest/devices/du-8/quarantine",
            Some(root),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(st, 404);

    let q = ok(
        api,
        root,
        "POST",
        "attest/devices/du-7/quarantine",
        json!({"reason": "operator: suspicious traffic"}),
    )
    .await;
    assert_eq!(q["data"]["revoked"], json!([serial]), "{q}");
    // The login method accepts the secret; the core refuses the device's identity.
    let (st, v) = api
        .call("POST", "auth/approle/login", None, Some(login.clone()))
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("quarantined: device du-7"),
        "{v}"
    );
    // No certificate names its NF instance ID, whoever asks.
    let (st, v) = api.call("POST", "pki/issue/sba", Some(root), Some(json!({"common_name": format!("amf1.{SBA_DOMAIN}"), "nf_instance_id": NF, "nf_type": "AMF"}))).await;
    assert_eq!(st, 403, "{v}");
    let c = ok(api, root, "GET", &format!("pki/cert/{serial}"), json!({})).await;
    assert!(c["data"]["revocation_time"].as_i64().unwrap() > 0, "{c}");
    // The fleet says so.
    let f = ok(
        api,
        root,
        "GET",
        "attest/fleet?state=QUARANTINED",
        json!({}),
    )
    .await;
    assert_eq!(f["data"]["devices"][0]["device"], "du-7", "{f}");
    let counts = ok(api, root, "GET", "attest/fleet/counts", json!({})).await;
    assert_eq!(counts["data"]["by_state"]["QUARANTINED"], 1, "{counts}");
    let metrics = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", api.base))
        .header("X-Vault-Token", root)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("class=\"du\",state=\"QUARANTINED\"} 1"),
        "{metrics}"
    );
    // Release without a fresh TRUSTED verdict: refused, nothing changes.
    let (st, v) = api
        .call(
            "POST",
            "attest/devices/du-7/release",
            Some(root),
            Some(json!({"reason": "cleared"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = api
        .call("POST", "auth/approle/login", None, Some(login))
        .await;
    assert_eq!(st, 403);
    // Deleting the device lets its identities go.
    ok(api, root, "DELETE", "attest/devices/du-7", json!({})).await;
    let (st, v) = api.call("POST", "pki/issue/sba", Some(root), Some(json!({"common_name": format!("amf1.{SBA_DOMAIN}"), "nf_instance_id": NF, "nf_type": "AMF"}))).await;
    assert_eq!(st, 200, "{v}");
}
