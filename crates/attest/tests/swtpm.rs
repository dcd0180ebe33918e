//! Real TPMs judge the verifier: three swtpm devices (ECDSA, RSASSA and RSA-PSS attestation
//! keys) with EK certificates from a private manufacturer CA, measured with `tpm2_pcrextend`
//! as a boot loader would, quoted with `tpm2_quote`. Every quote Custos accepts,
//! `tpm2_checkquote` accepts too (and the refused ones it can judge, it refuses);
//! `tpm2_eventlog` parses the logs and replays them to the same PCRs; credentials made here
//! are activated by the TPM with `tpm2_activatecredential`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_attest::credential::{make_credential, tpm2_tools_file};
use custos_attest::ek::{pem_certificates, verify_ek_certificate};
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, MAX_LOG_BYTES};
use custos_attest::policy::Policy;
use custos_attest::tpm::{HashAlg, Public};
use custos_attest::verify::{
    appraise, rule, Evidence, Expected, LastQuote, NoReferences, ReferenceImage, References,
    Verdict,
};
use custos_testkit::tpm::{hex_of, AkKind, Manufacturer, Tpm};

const POLICY: &str = r#"
[[device_classes]]
name = "gnb-du-x1"
pcrs = [0, 1, 2, 3, 4, 5, 6, 7]
firmware_pcrs = [4]
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn boot(t: &Tpm, image: &[u8]) -> EventLog {
    custos_testkit::tpm::boot(t, image)
}

/// References: one image known, for the class.
struct OneImage(Vec<u8>, u64);

impl References for OneImage {
    fn image(&self, sha256: &[u8], class: &str) -> Option<ReferenceImage> {
        (sha256 == self.0 && class == "gnb-du-x1").then(|| ReferenceImage {
            version: "5.2.0".into(),
            security_version: self.1,
            signers: vec!["k1".into()],
            supplier: None,
            builder: None,
            denied: None,
        })
    }
}

struct Device {
    tpm: Tpm,
    ak: Public,
}

fn device(m: &Manufacturer, kind: AkKind) -> Device {
    let tpm = Tpm::new(m);
    tpm.create_keys(kind);
    let ak = Public::parse(&tpm.read("ak.pub")).unwrap();
    Device { tpm, ak }
}

fn checkquote(d: &Device, nonce: &[u8]) -> bool {
    d.tpm
        .offline(&[
            "tpm2_checkquote",
            "-u",
            "ak.pem",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            &hex_of(nonce),
        ])
        .status
        .success()
}

fn judge(
    d: &Device,
    nonce: &[u8],
    log: &[u8],
    refs: &dyn References,
    last: Option<LastQuote>,
) -> Verdict {
    judge_as(&d.ak, d, nonce, log, refs, last)
}

/// Appraises `quoted`'s last quote as if it came from the device whose AK is `ak`.
fn judge_as(
    ak: &Public,
    quoted: &Device,
    nonce: &[u8],
    log: &[u8],
    refs: &dyn References,
    last: Option<LastQuote>,
) -> Verdict {
    let policy = Policy::parse(POLICY).unwrap();
    appraise(
        &Evidence {
            attest: &quoted.tpm.read("quote.msg"),
            signature: &quoted.tpm.read("quote.sig"),
            event_log: log,
        },
        &Expected {
            ak,
            nonce,
            class: policy.class("gnb-du-x1").unwrap(),
            last,
            floor: 0,
            now: now(),
        },
        refs,
    )
}

#[test]
fn three_swtpm_devices_attest_and_every_verdict_agrees_with_tpm2_checkquote() {
    let m = Manufacturer::new();
    let devices = [
        device(&m, AkKind::Ecdsa),
        device(&m, AkKind::RsaSsa),
        device(&m, AkKind::RsaPss),
    ];
    let roots = pem_certificates(&m.root_pem());
    let issuers = pem_certificates(&m.issuer_pem());
    let image = b"du-5.2.0 firmware image".repeat(1000);
    let refs = OneImage(HashAlg::Sha256.digest(&[&image]), 7);
    let mut last_by_device = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let ek = Public::parse(&d.tpm.read("ek.pub")).unwrap();
        // Enrolment: the EK certificate chains to the manufacturer and certifies this EK.
        let info = verify_ek_certificate(&d.tpm.ek_cert(), &issuers, &roots, &ek, now()).unwrap();
        assert!(info.tpm.iter().any(|a| a.contains("swtpm")), "{info:?}");
        // The AK is in the same TPM: the TPM recovers a credential bound to the AK's name.
        let secret = *b"0123456789abcdef0123456789abcdef";
        let c = make_credential(&ek, &d.ak.name(), &secret).unwrap();
        assert_eq!(d.tpm.activate(&tpm2_tools_file(&c)).unwrap(), secret);
        assert_eq!(d.ak.name(), d.tpm.read("ak.name"), "our Name is the TPM's");

        let log = boot(&d.tpm, &image);
        let log_bytes = log.to_bytes();
        std::fs::write(d.tpm.path("eventlog.bin"), &log_bytes).unwrap();
        let nonce = format!("nonce-{i}-0123456789").into_bytes();
        d.tpm.quote("sha256:0,1,2,3,4,5,6,7", &nonce, "sha256");
        let v = judge(d, &nonce, &log_bytes, &refs, None);
        assert!(v.trusted, "device {i}: {:?}", v.failures);
        assert_eq!(v.firmware[0].source, "provenance");
        assert_eq!(v.firmware[0].version.as_deref(), Some("5.2.0"));
        // tpm2_checkquote agrees. It refuses valid RSA-PSS quotes (tpm2-tools 5.4), so
        // openssl judges those (salt length recovered from the signature).
        if i < 2 {
            assert!(
                checkquote(d, &nonce),
                "device {i}: tpm2_checkquote refused a quote Custos accepted"
            );
        } else {
            let sig = custos_attest::tpm::Signature::parse(&d.tpm.read("quote.sig")).unwrap();
            std::fs::write(d.tpm.path("quote.sig.raw"), &sig.parts[0]).unwrap();
            let o = d.tpm.offline(&[
                "openssl",
                "dgst",
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:-2",
                "-verify",
                "ak.pem",
                "-signature",
                "quote.sig.raw",
                "quote.msg",
            ]);
            assert!(
                o.status.success(),
                "openssl refused an RSA-PSS quote Custos accepted: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        // tpm2_eventlog parses our log and replays it to our PCRs.
        let o = d.tpm.offline(&["tpm2_eventlog", "eventlog.bin"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let yaml = String::from_utf8_lossy(&o.stdout).to_string();
        for (p, value) in &v.pcrs {
            assert!(
                yaml.contains(&format!("{p}  : 0x{value}"))
                    || yaml.contains(&format!("{p} : 0x{value}")),
                "device {i}: tpm2_eventlog's PCR {p} differs from {value}:\n{yaml}"
            );
        }
        last_by_device.push((nonce, v.clock.unwrap(), log_bytes));
    }

    // Attacks, each refused with its rule.
    let d = &devices[0];
    let (old_nonce, clock, log) = &last_by_device[0];
    // A replayed quote: the device answers a new nonce with the old quote.
    let fresh = b"a-fresh-nonce-for-this-round".to_vec();
    let v = judge(d, &fresh, log, &refs, None);
    assert_eq!(v.rules(), vec![rule::QUOTE_NONCE]);
    assert!(
        !checkquote(d, &fresh),
        "tpm2_checkquote accepted a replayed nonce"
    );
    // The same quote again, as the next attestation: the TPM clock did not advance.
    let last = LastQuote {
        clock: clock.clock,
        reset_count: clock.reset_count,
        restart_count: clock.restart_count,
        at: now() - 5,
    };
    let v = judge(d, old_nonce, log, &refs, Some(last));
    assert_eq!(v.rules(), vec![rule::CLOCK_STALE]);
    // A reset counter that went back.
    let v = judge(
        d,
        old_nonce,
        log,
        &refs,
        Some(LastQuote {
            reset_count: clock.reset_count + 1,
            ..last
        }),
    );
    assert_eq!(v.rules(), vec![rule::CLOCK_RESET_COUNTER]);
    // A quote from another device's AK, presented as device 0's.
    let other = &devices[1];
    let v = judge_as(
        &d.ak,
        other,
        &last_by_device[1].0,
        &last_by_device[1].2,
        &refs,
        None,
    );
    assert_eq!(v.rules(), vec![rule::QUOTE_SIGNATURE]);
    // An event log that does not match the PCRs (one event's digest changed).
    let mut forged = EventLog::parse(log).unwrap();
    forged.events[1] = Event::measure(
        4,
        EV_POST_CODE,
        &forged.banks,
        b"another image",
        b"du firmware",
    );
    let v = judge(d, old_nonce, &forged.to_bytes(), &refs, None);
    assert!(
        v.rules().contains(&rule::EVENTLOG_REPLAY),
        "{:?}",
        v.failures
    );
    // Truncated and oversized logs.
    let v = judge(d, old_nonce, &log[..log.len() - 3], &refs, None);
    assert_eq!(v.rules(), vec![rule::EVENTLOG_MALFORMED]);
    let v = judge(d, old_nonce, &vec![0u8; MAX_LOG_BYTES + 1], &refs, None);
    assert_eq!(v.rules(), vec![rule::EVENTLOG_MALFORMED]);
    // An image nobody signed.
    let v = judge(d, old_nonce, log, &NoReferences, None);
    assert_eq!(v.rules(), vec![rule::MEASUREMENT_UNKNOWN]);
    // A quote signed over SHA-1 (a legacy AK fixed to SHA-1, a fourth TPM): tpm2_checkquote
    // accepts it; Custos does not.
    let legacy = Tpm::new(&m);
    legacy.create_keys_hashing(AkKind::Ecdsa, "sha1");
    let legacy = Device {
        ak: Public::parse(&legacy.read("ak.pub")).unwrap(),
        tpm: legacy,
    };
    let log1 = boot(&legacy.tpm, &image).to_bytes();
    let n = b"sha1-nonce".to_vec();
    legacy.tpm.quote("sha256:0,1,2,3,4,5,6,7", &n, "sha1");
    let v = judge(&legacy, &n, &log1, &refs, None);
    assert_eq!(v.rules(), vec![rule::QUOTE_HASH], "{:?}", v.failures);
    assert!(
        legacy
            .tpm
            .offline(&[
                "tpm2_checkquote",
                "-u",
                "ak.pem",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-q",
                &hex_of(&n)
            ])
            .status
            .success(),
        "tpm2_checkquote is documented to accept SHA-1 quotes; if it stopped, drop this line"
    );
    // A quote that leaves out the firmware PCR.
    let n = b"short-selection".to_vec();
    d.tpm.quote("sha256:0,1,2,3", &n, "sha256");
    let v = judge(d, &n, log, &refs, None);
    assert_eq!(v.rules(), vec![rule::QUOTE_PCR_SELECTION]);
    assert!(
        checkquote(d, &n),
        "a valid quote of fewer PCRs is valid to tpm2_checkquote"
    );

    // Enrolment attacks: an EK certificate from a foreign manufacturer, and an AK that is
    // not in the TPM whose EK is presented (the credential cannot be activated).
    let foreign = Manufacturer::new();
    let stranger = Tpm::new(&foreign);
    stranger.create_keys(AkKind::Ecdsa);
    let ek_s = Public::parse(&stranger.read("ek.pub")).unwrap();
    let e = verify_ek_certificate(&stranger.ek_cert(), &issuers, &roots, &ek_s, now()).unwrap_err();
    assert!(e.to_string().contains("foreign CA"), "{e}");
    let ek0 = Public::parse(&devices[0].tpm.read("ek.pub")).unwrap();
    let e = verify_ek_certificate(&devices[1].tpm.ek_cert(), &issuers, &roots, &ek0, now())
        .unwrap_err();
    assert!(e.to_string().contains("another key"), "{e}");
    // Device 0's EK with device 1's AK name: device 0's TPM refuses to activate.
    let c = make_credential(&ek0, &devices[1].ak.name(), b"0123456789abcdef").unwrap();
    assert!(devices[0].tpm.activate(&tpm2_tools_file(&c)).is_err());
}
