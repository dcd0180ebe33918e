//! Known answers: real measured-boot event logs (tpm2-tools' test fixtures, BSD-3-Clause, see
//! fixtures/LICENSE.tpm2-tools) replay to exactly the PCRs `tpm2_eventlog` printed for them;
//! and hostile logs are refused, never panic.
#![allow(clippy::unwrap_used)]

use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, MAX_LOG_BYTES};
use custos_attest::tpm::HashAlg;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// The `pcrs:` section of a `tpm2_eventlog` YAML: bank → PCR → value.
fn yaml_pcrs(name: &str) -> BTreeMap<String, BTreeMap<usize, String>> {
    let text = String::from_utf8(fixture(name)).unwrap();
    let mut out: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    let mut bank = None;
    let mut inside = false;
    for l in text.lines() {
        if l.starts_with("pcrs:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let t = l.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = Some(b.to_string());
        } else if let Some((k, v)) = t.split_once(':') {
            let v = v.trim().trim_start_matches("0x").to_lowercase();
            out.entry(bank.clone().unwrap())
                .or_default()
                .insert(k.trim().parse().unwrap(), v);
        }
    }
    out
}

#[test]
fn real_event_logs_replay_to_the_pcrs_tpm2_eventlog_computes() {
    for f in [
        "event-arch-linux.bin",
        "event-gce-ubuntu-2104-log.bin",
        "event-sd-boot-fedora37.bin",
    ] {
        let log = EventLog::parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let pcrs = log.replay();
        let want = yaml_pcrs(&format!("{f}.yaml"));
        assert!(!want.is_empty(), "{f}: no pcrs in the YAML");
        for (bank, values) in &want {
            let h = HashAlg::from_name(bank).unwrap();
            for (i, v) in values {
                assert_eq!(&hex::encode(&pcrs[&h][*i]), v, "{f}: {bank} PCR {i}");
            }
        }
    }
}

#[test]
fn a_reserialised_log_parses_to_the_same_events_and_pcrs() {
    for f in [
        "event-arch-linux.bin",
        "event-gce-ubuntu-2104-log.bin",
        "event-sd-boot-fedora37.bin",
    ] {
        let log = EventLog::parse(&fixture(f)).unwrap();
        let again = EventLog::parse(&log.to_bytes()).unwrap();
        assert_eq!(again.events, log.events, "{f}");
        assert_eq!(again.replay(), log.replay(), "{f}");
    }
}

#[test]
fn truncated_oversized_and_sha1_only_logs_are_refused_by_name() {
    let good = fixture("event-sd-boot-fedora37.bin");
    for cut in [1, 10, 40, good.len() / 2, good.len() - 1] {
        let e = EventLog::parse(&good[..cut]).unwrap_err().to_string();
        assert!(
            e.contains("truncated") || e.contains("Spec ID"),
            "cut {cut}: {e}"
        );
    }
    let mut big = good.clone();
    big.resize(MAX_LOG_BYTES + 1, 0);
    assert!(EventLog::parse(&big)
        .unwrap_err()
        .to_string()
        .contains("the limit is"));
    // Found by the fuzzer: a Spec ID event declaring only algorithms nobody can replay.
    let unknown_banks = fixture("fuzz-unknown-banks.bin");
    assert!(EventLog::parse(&unknown_banks)
        .unwrap_err()
        .to_string()
        .contains("nothing to replay"));
    // A TPM 1.2 log starts with an ordinary SHA-1 event, not the Spec ID event.
    let mut sha1 = good.clone();
    sha1[4] = 0x08; // EV_S_CRTM_VERSION
    assert!(EventLog::parse(&sha1)
        .unwrap_err()
        .to_string()
        .contains("Spec ID Event03"));
}

#[test]
fn a_boot_loaders_firmware_measurement_extends_its_pcr_as_the_tpm_does() {
    let banks = [HashAlg::Sha1, HashAlg::Sha256];
    let image = b"firmware image bytes";
    let log = EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events: vec![Event::measure(
            4,
            EV_POST_CODE,
            &banks,
            image,
            b"du-5.2.0.img",
        )],
    };
    let pcrs = EventLog::parse(&log.to_bytes()).unwrap().replay();
    let d = HashAlg::Sha256.digest(&[image]);
    let want = HashAlg::Sha256.digest(&[&[0u8; 32], &d]);
    assert_eq!(pcrs[&HashAlg::Sha256][4], want);
    assert_eq!(pcrs[&HashAlg::Sha256][3], vec![0u8; 32]);
}
