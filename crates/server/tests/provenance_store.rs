//! The provenance store (`provenance/` mount): registering bundles (their own signatures are
//! checked; bad input stores nothing), lookup by image digest, lineage, signers and signing
//! events, and privacy: operational tokens see digests and versions, only a policy on
//! `details/` shows suppliers, builders and build hosts, and nothing is plaintext at rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_provenance::keys::{FileSigner, KeyAlg, Signer};
use custos_provenance::statement::{Firmware, ResourceDescriptor, SlsaInputs};
use custos_provenance::{sign_bundle, SignRequest};
use custos_testkit::{dev_server, ok, policy_token};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const BUILD_HOST: &str = "b7.build.acme.internal";

fn digests(image: &[u8]) -> BTreeMap<String, String> {
    use aws_lc_rs::digest::{digest, SHA256, SHA512};
    BTreeMap::from([
        ("sha256".to_string(), hex::encode(digest(&SHA256, image))),
        ("sha512".to_string(), hex::encode(digest(&SHA512, image))),
    ])
}

fn bundle(s: &dyn Signer, image: &[u8], version: &str, parents: &[&str]) -> Value {
    let req = SignRequest {
        image_name: "img".into(),
        digests: digests(image),
        slsa: SlsaInputs {
            builder_id: "https://ci.acme.example/builders/firmware@v1".into(),
            build_type: "https://acme.example/fw-build/v1".into(),
            source_repo: "git+https://git.acme.example/ran/du-firmware".into(),
            commit: "7d2c9b1e".into(),
            dependencies: parents
                .iter()
                .map(|p| ResourceDescriptor {
                    uri: "oci://registry.acme.example/du-base".into(),
                    name: "base".into(),
                    digest: BTreeMap::from([("sha256".to_string(), p.to_string())]),
                })
                .collect(),
            invocation_id: "build-1".into(),
            started_on: String::new(),
            finished_on: String::new(),
            internal: json!({"buildHost": BUILD_HOST}),
        },
        firmware: Firmware {
            vendor: "acme".into(),
            device_class: "gnb-du-x1".into(),
            hardware_ids: vec![],
            version: version.into(),
            security_version: 5,
            channel: "stable".into(),
            not_after: "2030-01-01T00:00:00Z".into(),
        },
        signed_at: 1_800_000_000,
    };
    serde_json::to_value(sign_bundle(&req, &[s], vec![]).unwrap()).unwrap()
}

fn sha(image: &[u8]) -> String {
    digests(image)["sha256"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_register_and_are_found_by_digest_with_lineage_signers_and_privacy() {
    let srv = dev_server().await;
    let (api, root) = (&srv.api, srv.root_token.as_str());
    ok(
        api,
        root,
        "POST",
        "sys/mounts/provenance",
        json!({"type": "provenance"}),
    )
    .await;
    let s = FileSigner::from_pkcs8_der(&FileSigner::generate(KeyAlg::EcdsaP256).unwrap()).unwrap();
    let (component, base, app) = (
        &b"component"[..],
        &b"base image"[..],
        &b"application image"[..],
    );
    let base_b = bundle(&s, base, "1.0.0", &[&sha(component)]);
    let app_b = bundle(&s, app, "5.2.0", &[&sha(base)]);

    let v = ok(
        api,
        root,
        "POST",
        "provenance/bundles",
        json!({"bundle": base_b}),
    )
    .await;
    assert_eq!(v["data"]["registered"], true);
    let v = ok(
        api,
        root,
        "POST",
        "provenance/bundles",
        json!({"bundle": app_b.to_string()}),
    )
    .await;
    assert_eq!(
        v["data"]["registered"], true,
        "a bundle may also come as a JSON string"
    );
    let v = ok(
        api,
        root,
        "POST",
        "provenance/bundles",
        json!({"bundle": app_b}),
    )
    .await;
    assert_eq!(v["data"]["registered"], false, "re-registering is a no-op");

    // Bad input: a precise 400 and nothing stored.
    let mut tampered = app_b.clone();
    tampered["dsseEnvelopes"][1]["payload"] = json!("e30=");
    let other = bundle(&s, app, "9.9.9", &[]);
    for (bad, why) in [
        (json!({"bundle": "{\"mediaType\": "}), "truncated"),
        (json!({"bundle": 42}), "not a bundle"),
        (json!({}), "missing"),
        (json!({"bundle": tampered}), "edited envelope"),
        (json!({"bundle": other}), "same image, other facts"),
    ] {
        let (st, v) = api
            .call("POST", "provenance/bundles", Some(root), Some(bad))
            .await;
        assert_eq!(st, 400, "{why}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().starts_with("bundle"),
            "{why}: {v}"
        );
    }
    let v = ok(api, root, "LIST", "provenance/images", json!({})).await;
    let mut want = vec![sha(base), sha(app)];
    want.sort();
    assert_eq!(v["data"]["keys"], json!(want), "only the two good bundles");
    let (st, _) = api
        .call("GET", "provenance/images/not-a-digest", Some(root), None)
        .await;
    assert_eq!(st, 404);

    // An operational consumer: digests, device class and versions; no supplier details.
    let fleet = policy_token(api, root, "fleet", "path \"provenance/images\" { capabilities = [\"list\"] }\npath \"provenance/images/*\" { capabilities = [\"read\"] }\npath \"provenance/lineage/*\" { capabilities = [\"read\"] }").await;
    let sc = policy_token(
        api,
        root,
        "supply-chain",
        "path \"provenance/details/*\" { capabilities = [\"read\", \"list\"] }",
    )
    .await;
    let v = ok(
        api,
        &fleet,
        "GET",
        &format!("provenance/images/{}", sha(app)),
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["version"], "5.2.0");
    assert_eq!(v["data"]["security_version"], 5);
    assert_eq!(v["data"]["digest"]["sha512"], digests(app)["sha512"]);
    let text = v.to_string();
    for private in ["acme", BUILD_HOST, "ci.acme.example", "git.acme.example"] {
        assert!(
            !text.contains(private),
            "{private} visible to an operational token: {text}"
        );
    }
    for path in [
        format!("provenance/details/images/{}", sha(app)),
        format!("provenance/details/bundles/{}", sha(app)),
    ] {
        let (st, _) = api.call("GET", &path, Some(&fleet), None).await;
        assert_eq!(st, 403, "{path}");
    }
    // Lineage: application → base → component (registered, registered, unknown).
    let v = ok(
        api,
        &fleet,
        "GET",
        &format!("provenance/lineage/{}", sha(app)),
        json!({}),
    )
    .await;
    let l = &v["data"];
    assert_eq!(l["version"], "5.2.0");
    assert_eq!(l["parents"][0]["sha256"], sha(base));
    assert_eq!(l["parents"][0]["version"], "1.0.0");
    assert_eq!(
        l["parents"][0]["parents"][0],
        json!({"sha256": sha(component), "registered": false})
    );

    // Supply-chain auditors see the details, signers and events.
    let v = ok(
        api,
        &sc,
        "GET",
        &format!("provenance/details/images/{}", sha(app)),
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["vendor"], "acme");
    assert_eq!(v["data"]["internal_parameters"]["buildHost"], BUILD_HOST);
    assert_eq!(v["data"]["signer_keys"], json!([s.key_id()]));
    let v = ok(api, &sc, "LIST", "provenance/details/signers", json!({})).await;
    assert_eq!(v["data"]["keys"], json!([s.key_id()]));
    let v = ok(
        api,
        &sc,
        "GET",
        &format!("provenance/details/signers/{}", s.key_id()),
        json!({}),
    )
    .await;
    let events = v["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    assert_eq!(events[1]["image"], sha(app));
    let v = ok(
        api,
        &sc,
        "GET",
        &format!("provenance/details/bundles/{}", sha(app)),
        json!({}),
    )
    .await;
    // Stored as registered, plus the transparency-log receipt of its signing event.
    let stored = &v["data"]["bundles"][0];
    assert_eq!(
        stored["tlogEntries"].as_array().unwrap().len(),
        1,
        "{stored}"
    );
    let mut bare = stored.clone();
    bare["tlogEntries"] = json!([]);
    assert_eq!(bare, app_b);

    // At rest, everything went through the barrier: no detail is readable in the files.
    for f in std::fs::read_dir(srv.dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        for private in [BUILD_HOST.as_bytes(), b"git.acme.example", b"gnb-du-x1"] {
            assert!(
                !bytes.windows(private.len()).any(|w| w == private),
                "{} found in plaintext at rest",
                String::from_utf8_lossy(private)
            );
        }
    }
}
