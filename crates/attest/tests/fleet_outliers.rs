//! Fleet view at scale, judged by construction: in 1,000 synthetic devices the outliers are
//! exactly the ones planted (an odd image, an image no provenance names, a class running
//! other than its known-good), and counts add up.
#![allow(clippy::unwrap_used)]

use custos_attest::fleet::{rule, Entry, Filter, Fleet, Image, State};
use custos_attest::policy::Policy;
use std::collections::{BTreeSet, HashMap};

fn entry(id: String, class: &str, img: &str, source: &str) -> Entry {
    Entry {
        id,
        class: class.into(),
        hardware_ids: vec![],
        nf_instance_ids: vec![],
        pending: false,
        verdict: Some(source != "unknown"),
        verdict_at: Some(1_000),
        last_trusted_at: Some(1_000),
        quarantine: None,
        measured: Some(Image {
            sha256: img.into(),
            version: Some(
                if img.starts_with('a') {
                    "5.2.0"
                } else {
                    "5.1.9"
                }
                .into(),
            ),
            security_version: Some(7),
            signers: vec!["k1".into()],
            source: source.into(),
        }),
        installed: None,
        cert_not_after: None,
    }
}

#[test]
fn outliers_in_a_fleet_of_1000_are_exactly_the_planted_ones() {
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let policy = Policy::parse(&format!(
        "[[device_classes]]\nname = \"du\"\n[[device_classes]]\nname = \"cu\"\nknown_good = \"{a}\"\n"
    ))
    .unwrap();
    let mut f = Fleet::new();
    let mut planted = BTreeSet::new();
    for i in 0..1000 {
        let id = format!("dev-{i:04}");
        let class = if i % 2 == 0 { "du" } else { "cu" };
        let e = match i {
            // A DU on another signed image than its class's majority.
            17 | 402 | 998 => entry(id.clone(), class, &b, "provenance"),
            // An image no provenance statement names.
            123 | 777 => entry(id.clone(), class, &c, "unknown"),
            _ => entry(id.clone(), class, &a, "provenance"),
        };
        if [17, 402, 998, 123, 777].contains(&i) {
            planted.insert(id);
        }
        f.upsert(e);
    }
    let got = f.outliers(&policy, &HashMap::new());
    let names: BTreeSet<String> = got.iter().map(|o| o.device.clone()).collect();
    assert_eq!(names, planted);
    let by: HashMap<&str, &Vec<&str>> = got.iter().map(|o| (o.device.as_str(), &o.rules)).collect();
    assert_eq!(by["dev-0402"], &vec![rule::MINORITY]);
    assert_eq!(by["dev-0017"], &vec![rule::MINORITY, rule::NOT_KNOWN_GOOD]);
    assert_eq!(
        by["dev-0777"],
        &vec![rule::MINORITY, rule::NOT_KNOWN_GOOD, rule::NO_PROVENANCE]
    );
    let counts = f.counts(&policy, 1_000);
    assert_eq!(counts.total, 1000);
    assert_eq!(counts.by_state[&State::Untrusted], 2);
    assert_eq!(counts.by_class_version["du"]["5.1.9"], 2);
    let odd = f.list(
        &policy,
        &Filter {
            version: Some("5.1.9".into()),
            ..Filter::default()
        },
        None,
        1000,
        1_000,
    );
    assert_eq!(odd.devices.len(), 5);
}
