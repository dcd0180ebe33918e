//! The software TPM the benchmark uses agrees with the verifier: credentials made for its
//! AK activate (and only for its AK), and its quotes appraise TRUSTED.
#![allow(clippy::unwrap_used)]

use custos_attest::credential::make_credential;
use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE};
use custos_attest::policy::Policy;
use custos_attest::soft::SoftTpm;
use custos_attest::tpm::{pcr_digest, HashAlg, PcrSelection, Public};
use custos_attest::verify::{appraise, Evidence, Expected, NoReferences};

#[test]
fn a_software_tpm_activates_its_own_credentials_and_its_quotes_verify() {
    let mut t = SoftTpm::new().unwrap();
    let ek = Public::parse(t.ek_public()).unwrap();
    let ak = Public::parse(t.ak_public()).unwrap();
    assert!(ak.is_attestation_key());
    let c = make_credential(&ek, &ak.name(), b"secret-credential-32-bytes-long!").unwrap();
    assert_eq!(
        t.activate(&c.credential_blob, &c.secret).unwrap(),
        b"secret-credential-32-bytes-long!"
    );
    let mut other = ak.name();
    other[3] ^= 1;
    let c = make_credential(&ek, &other, b"x").unwrap();
    assert!(t.activate(&c.credential_blob, &c.secret).is_err());

    let banks = [HashAlg::Sha256];
    let image = b"image";
    let log = EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events: (0..100)
            .map(|i| Event::measure((i % 8) as u8, EV_POST_CODE, &banks, &[i as u8], b"e"))
            .chain([Event::measure(4, EV_POST_CODE, &banks, image, b"fw")])
            .collect(),
    };
    let pcrs = log.replay();
    let sel = vec![PcrSelection {
        hash: HashAlg::Sha256,
        pcrs: (0..8).collect(),
    }];
    let values: Vec<&[u8]> = (0..8)
        .map(|p| pcrs[&HashAlg::Sha256][p].as_slice())
        .collect();
    let (q, s) = t.quote(b"nonce", &sel, &values).unwrap();
    assert_eq!(
        custos_attest::tpm::Attest::parse(&q).unwrap().pcr_digest,
        pcr_digest(HashAlg::Sha256, &sel, |_, p| Some(
            pcrs[&HashAlg::Sha256][usize::from(p)].clone()
        ))
        .unwrap()
    );
    let allowed: Vec<String> = (0..100u32)
        .filter(|i| i % 8 == 4)
        .map(|i| hex::encode(HashAlg::Sha256.digest(&[&[i as u8]])))
        .chain([hex::encode(HashAlg::Sha256.digest(&[image]))])
        .collect();
    let policy = Policy::parse(&format!(
        "[[device_classes]]\nname = \"x\"\nallowed_digests = {allowed:?}\n"
    ))
    .unwrap();
    let v = appraise(
        &Evidence {
            attest: &q,
            signature: &s,
            event_log: &log.to_bytes(),
        },
        &Expected {
            ak: &ak,
            nonce: b"nonce",
            class: &policy.classes[0],
            last: None,
            floor: 0,
            now: 0,
        },
        &NoReferences,
    );
    assert!(v.trusted, "{:?}", v.failures);
}

/// An ECC P-256 EK (what makes fleets of thousands cheap to enrol in a benchmark): the
/// verifier's ECDH MakeCredential and the software TPM's KDFe activation agree, for its AK
/// only.
#[test]
fn an_ecc_ek_activates_credentials_made_by_ecdh() {
    let t = SoftTpm::new_ecc().unwrap();
    let ek = Public::parse(t.ek_public()).unwrap();
    let ak = Public::parse(t.ak_public()).unwrap();
    let c = make_credential(&ek, &ak.name(), b"secret-credential-32-bytes-long!").unwrap();
    assert_eq!(
        t.activate(&c.credential_blob, &c.secret).unwrap(),
        b"secret-credential-32-bytes-long!"
    );
    let mut other = ak.name();
    other[3] ^= 1;
    let c = make_credential(&ek, &other, b"x").unwrap();
    assert!(t.activate(&c.credential_blob, &c.secret).is_err());
    assert_eq!(t.ek_spki().unwrap().len(), 91);
}
