//! Properties of the parsers of device-supplied bytes: arbitrary input never panics (it is an
//! error or a value), and what we serialise parses back to the same value.
#![allow(clippy::unwrap_used)]

use custos_attest::eventlog::{Event, EventLog};
use custos_attest::policy::Policy;
use custos_attest::tpm::{Attest, ClockInfo, HashAlg, PcrSelection, Public, SigScheme, Signature};
use custos_attest::verify::{appraise, Evidence, Expected, NoReferences};
use proptest::prelude::*;

fn hash() -> impl Strategy<Value = HashAlg> {
    prop_oneof![
        Just(HashAlg::Sha1),
        Just(HashAlg::Sha256),
        Just(HashAlg::Sha384),
        Just(HashAlg::Sha512)
    ]
}

fn selection() -> impl Strategy<Value = Vec<PcrSelection>> {
    proptest::collection::btree_map(
        hash(),
        proptest::collection::btree_set(0u8..24, 0..24),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(hash, pcrs)| PcrSelection {
                hash,
                pcrs: pcrs.into_iter().collect(),
            })
            .collect()
    })
}

fn attest() -> impl Strategy<Value = Attest> {
    (
        proptest::collection::vec(any::<u8>(), 0..=66),
        proptest::collection::vec(any::<u8>(), 0..=64),
        any::<(u64, u32, u32, bool, u64)>(),
        selection(),
        proptest::collection::vec(any::<u8>(), 0..=64),
    )
        .prop_map(
            |(signer, nonce, (clock, reset, restart, safe, fw), sel, digest)| Attest {
                qualified_signer: signer,
                extra_data: nonce,
                clock: ClockInfo {
                    clock,
                    reset_count: reset,
                    restart_count: restart,
                    safe,
                },
                firmware_version: fw,
                pcr_select: sel,
                pcr_digest: digest,
            },
        )
}

fn event(banks: Vec<HashAlg>) -> impl Strategy<Value = Event> {
    (
        0u8..24,
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(move |(pcr, kind, seed, data)| Event {
            pcr,
            kind,
            digests: banks.iter().map(|h| (*h, h.digest(&[&seed]))).collect(),
            // A StartupLocality event would change the log's locality, not round-trip as data.
            data: if data.starts_with(b"StartupLocality") {
                Vec::new()
            } else {
                data
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Attest::parse(&b);
        let _ = Signature::parse(&b);
        let _ = Public::parse(&b);
        let _ = EventLog::parse(&b);
    }

    #[test]
    fn arbitrary_evidence_never_panics_the_appraisal(
        a in proptest::collection::vec(any::<u8>(), 0..512),
        s in proptest::collection::vec(any::<u8>(), 0..512),
        l in proptest::collection::vec(any::<u8>(), 0..1024),
        good_prefix in any::<bool>(),
    ) {
        // Half the cases start as a real quote header, to get past the magic.
        let mut a = a;
        if good_prefix {
            let mut p = vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18];
            p.extend(a);
            a = p;
        }
        let ak = Public::parse(&hex::decode(AK).unwrap()).unwrap();
        let policy = Policy::parse("[[device_classes]]\nname = \"x\"\n").unwrap();
        let v = appraise(
            &Evidence { attest: &a, signature: &s, event_log: &l },
            &Expected { ak: &ak, nonce: b"n", class: &policy.classes[0], last: None, floor: 0, now: 0 },
            &NoReferences,
        );
        prop_assert!(!v.trusted);
    }

    #[test]
    fn a_quote_round_trips(a in attest()) {
        prop_assert_eq!(Attest::parse(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn a_signature_round_trips(
        ecdsa in any::<bool>(),
        h in hash(),
        r in proptest::collection::vec(any::<u8>(), 0..=66),
        s in proptest::collection::vec(any::<u8>(), 0..=66),
    ) {
        let sig = Signature {
            scheme: if ecdsa { SigScheme::Ecdsa } else { SigScheme::RsaPss },
            hash: h,
            parts: if ecdsa { vec![r, s] } else { vec![r] },
        };
        prop_assert_eq!(Signature::parse(&sig.to_bytes()).unwrap(), sig);
    }

    #[test]
    fn an_event_log_round_trips(
        events in proptest::collection::vec(event(vec![HashAlg::Sha1, HashAlg::Sha256]), 0..40),
    ) {
        let log = EventLog { banks: vec![HashAlg::Sha1, HashAlg::Sha256], startup_locality: 0, events };
        let again = EventLog::parse(&log.to_bytes()).unwrap();
        prop_assert_eq!(again.replay(), log.replay());
        prop_assert_eq!(again, log);
    }
}

/// An ECDSA P-256 AK's TPM2B_PUBLIC from swtpm (`tpm2_createak -G ecc -u`).
const AK: &str = "00580023000b00050072000000100018000b00030010002032eba299490b4d498def45cfa603c487710bd889b6cf324bb70a297c2377b88e00207cd2a24727d274c4e6799f1211948cefedc40e867fbacee250fd334466ffa043";
