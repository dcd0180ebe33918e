//! The device side against swtpm, judged by the verifier: the AK tss-esapi makes is an
//! attestation key whose Name survives reopening, the EK certificate read from NV chains to
//! the manufacturer, the TPM activates the verifier's credential, and its quotes are TRUSTED.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custos_attest::credential::make_credential;
use custos_attest::ek::{pem_certificates, verify_ek_certificate};
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, EV_SEPARATOR};
use custos_attest::policy::Policy;
use custos_attest::tpm::{HashAlg, Public};
use custos_attest::verify::{appraise, rule, Evidence, Expected, NoReferences};
use custos_testkit::tpm::{hex_of, Manufacturer, Tpm};
use custos_tpm::Device;

#[test]
fn tss_esapi_device_enrols_activates_and_quotes_as_the_verifier_expects() {
    let m = Manufacturer::new();
    let t = Tpm::new(&m);
    let state = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let mut d = Device::open(&t.tcti(), state.path()).unwrap();
    let ak = Public::parse(d.ak_public()).unwrap();
    assert!(ak.is_attestation_key());
    let ek = Public::parse(d.ek_public()).unwrap();
    let cert = d.ek_certificate().unwrap();
    verify_ek_certificate(
        &cert,
        &pem_certificates(&m.issuer_pem()),
        &pem_certificates(&m.root_pem()),
        &ek,
        now,
    )
    .unwrap();
    let c = make_credential(&ek, &ak.name(), b"0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(
        &d.activate(&c.credential_blob, &c.secret).unwrap()[..],
        b"0123456789abcdef0123456789abcdef"
    );
    // A credential for another AK name is refused by the TPM.
    let mut other = ak.name();
    other[5] ^= 1;
    let c = make_credential(&ek, &other, b"0123456789abcdef").unwrap();
    assert!(d.activate(&c.credential_blob, &c.secret).is_err());
    drop(d);

    // A boot measured with tpm2-tools while the device is closed (swtpm serves one client).
    let banks = [HashAlg::Sha1, HashAlg::Sha256];
    let image = b"du firmware".repeat(100);
    let mut events = vec![Event::measure(4, EV_POST_CODE, &banks, &image, b"du")];
    for pcr in 0..8 {
        events.push(Event::measure(pcr, EV_SEPARATOR, &banks, &[0; 4], &[0; 4]));
    }
    for e in &events {
        t.extend(
            e.pcr,
            &hex_of(&e.digests[&HashAlg::Sha1]),
            &hex_of(&e.digests[&HashAlg::Sha256]),
        );
    }
    let log = EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events,
    }
    .to_bytes();

    // Reopened: the same AK (its blobs are in the state directory).
    let mut d = Device::open(&t.tcti(), state.path()).unwrap();
    assert_eq!(Public::parse(d.ak_public()).unwrap().name(), ak.name());
    let nonce = b"nonce-from-the-verifier-32-bytes";
    let (attest, sig) = d.quote(nonce, &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let policy = Policy::parse(&format!(
        "[[device_classes]]\nname = \"du\"\nallowed_digests = [\"{}\"]\n",
        hex_of(&HashAlg::Sha256.digest(&[&image]))
    ))
    .unwrap();
    let v = appraise(
        &Evidence {
            attest: &attest,
            signature: &sig,
            event_log: &log,
        },
        &Expected {
            ak: &ak,
            nonce,
            class: &policy.classes[0],
            last: None,
            floor: 0,
            now,
        },
        &NoReferences,
    );
    assert!(v.trusted, "{:?}", v.failures);
    let v = appraise(
        &Evidence {
            attest: &attest,
            signature: &sig,
            event_log: &log,
        },
        &Expected {
            ak: &ak,
            nonce: b"another",
            class: &policy.classes[0],
            last: None,
            floor: 0,
            now,
        },
        &NoReferences,
    );
    assert_eq!(v.rules(), vec![rule::QUOTE_NONCE]);
}
