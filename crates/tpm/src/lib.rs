//! The device side of remote attestation, over the TPM Software Stack (tss-esapi): the
//! endorsement key (EK, from the TCG default template, as `tpm2_createek` makes it), an
//! attestation key (AK: ECDSA P-256 with SHA-256, restricted, under the EK) kept as blobs in
//! a state directory so its Name never changes, credential activation, and quotes.
//!
//! Each [`Device::open`] opens the TPM for one round and [`Device`]'s drop flushes what it
//! loaded and closes it: a TPM without a resource manager (swtpm, a bare `/dev/tpm0`) serves
//! one client and holds three transient objects, and the agent must not hold them between
//! rounds.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Private, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

/// What went wrong, naming the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not one tss-esapi knows.
    #[error("tcti {0:?}: {1}")]
    Tcti(String, String),
    /// A TPM command failed.
    #[error("TPM: {step}: {source}")]
    Tpm {
        /// What was being done.
        step: &'static str,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// The AK blobs in the state directory could not be read or written.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An argument the TPM cannot take (a nonce too long, a PCR out of range).
    #[error("{0}")]
    Input(String),
}

fn tpm(step: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tpm { step, source }
}

/// An open TPM with its EK and AK loaded.
pub struct Device {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    ak_public: Vec<u8>,
    ek_public: Vec<u8>,
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TpmError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TpmError::State {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_state(path: &Path) -> Result<Option<Vec<u8>>, TpmError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TpmError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl Device {
    /// Opens the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`, `tabrmd:`),
    /// makes the EK and loads the AK kept in `state_dir` (`ak.pub`, `ak.priv`), creating it
    /// on first use.
    pub fn open(tcti: &str, state_dir: &Path) -> Result<Device, TpmError> {
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| TpmError::Tcti(tcti.to_string(), e.to_string()))?;
        let mut ctx = Context::new(conf).map_err(tpm("opening the TPM"))?;
        let ek = ek::create_ek_object_2(
            &mut ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            None,
        )
        .map_err(tpm("creating the EK"))?;
        let (pub_path, priv_path) = (state_dir.join("ak.pub"), state_dir.join("ak.priv"));
        let (public, private) = match (read_state(&pub_path)?, read_state(&priv_path)?) {
            (Some(p), Some(k)) => (
                Public::unmarshall(&p).map_err(tpm("reading ak.pub"))?,
                Private::try_from(k).map_err(tpm("reading ak.priv"))?,
            ),
            _ => {
                let r = ak::create_ak(
                    &mut ctx,
                    ek,
                    HashingAlgorithm::Sha256,
                    SignatureSchemeAlgorithm::EcDsa,
                    None,
                    None,
                )
                .map_err(tpm("creating the AK"))?;
                std::fs::create_dir_all(state_dir).map_err(|source| TpmError::State {
                    path: state_dir.to_path_buf(),
                    source,
                })?;
                write_private(&priv_path, r.out_private.value())?;
                write_private(
                    &pub_path,
                    &r.out_public.marshall().map_err(tpm("writing ak.pub"))?,
                )?;
                (r.out_public, r.out_private)
            }
        };
        let ak_public = public.marshall().map_err(tpm("marshalling the AK"))?;
        let ak = ak::load_ak(&mut ctx, ek, None, private, public).map_err(tpm("loading the AK"))?;
        let (ek_pub, _, _) = ctx.read_public(ek).map_err(tpm("reading the EK"))?;
        let ek_public = ek_pub.marshall().map_err(tpm("marshalling the EK"))?;
        Ok(Device {
            ctx,
            ek,
            ak,
            ak_public,
            ek_public,
        })
    }

    /// The AK's TPMT_PUBLIC (what the verifier enrols; its Name is over these bytes).
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// The EK's TPMT_PUBLIC.
    pub fn ek_public(&self) -> &[u8] {
        &self.ek_public
    }

    /// The RSA-2048 EK certificate from the TPM's NV index (DER).
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>, TpmError> {
        ek::retrieve_ek_pubcert(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )
        .map_err(tpm("reading the EK certificate from NV"))
    }

    /// `TPM2_ActivateCredential`: recovers the credential the verifier made for this AK and
    /// EK (`credential_blob` and `secret` as TPM2B structures, with their sizes).
    pub fn activate(
        &mut self,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let body = |b: &[u8], what: &str| -> Result<Vec<u8>, TpmError> {
            match b {
                [hi, lo, rest @ ..]
                    if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() =>
                {
                    Ok(rest.to_vec())
                }
                _ => Err(TpmError::Input(format!("{what}: not a TPM2B structure"))),
            }
        };
        let id = IdObject::try_from(body(credential_blob, "credential_blob")?)
            .map_err(tpm("reading the credential"))?;
        let sec = EncryptedSecret::try_from(body(secret, "encrypted_secret")?)
            .map_err(tpm("reading the secret"))?;
        let session = self.ek_policy_session()?;
        let (ak, ek) = (self.ak, self.ek);
        let r = self
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak, ek, id, sec)
            });
        let _ = self
            .ctx
            .flush_context(ObjectHandle::from(SessionHandle::from(session)));
        let d = r.map_err(tpm("activating the credential"))?;
        Ok(Zeroizing::new(d.value().to_vec()))
    }

    /// A policy session satisfying the EK's policy (PolicySecret of the endorsement
    /// hierarchy), as the default EK template requires.
    fn ek_policy_session(&mut self) -> Result<AuthSession, TpmError> {
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm("starting the EK's policy session"))?
            .ok_or_else(|| TpmError::Input("the TPM returned no session".into()))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(session, attrs, mask)
            .map_err(tpm("setting the session's attributes"))?;
        let policy = PolicySession::try_from(session).map_err(tpm("the EK's policy session"))?;
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(tpm("PolicySecret(endorsement)"))?;
        Ok(session)
    }

    /// `TPM2_Quote` of `pcrs` in the SHA-256 bank with `nonce` as qualifying data: the
    /// TPMS_ATTEST and TPMT_SIGNATURE, marshalled as `tpm2_quote -m/-s` writes them.
    pub fn quote(&mut self, nonce: &[u8], pcrs: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let mut slots = Vec::new();
        for &p in pcrs {
            if p >= 24 {
                return Err(TpmError::Input(format!("PCR {p}: PCRs are 0..23")));
            }
            slots.push(PcrSlot::try_from(1u32 << p).map_err(tpm("selecting PCRs"))?);
        }
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(tpm("selecting PCRs"))?;
        let data = Data::try_from(nonce.to_vec()).map_err(|_| {
            TpmError::Input(format!("a nonce of {} bytes is too long", nonce.len()))
        })?;
        let ak = self.ak;
        let (attest, sig) = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(ak, data, SignatureScheme::Null, selection)
            })
            .map_err(tpm("quoting"))?;
        Ok((
            attest.marshall().map_err(tpm("marshalling the quote"))?,
            sig.marshall().map_err(tpm("marshalling the signature"))?,
        ))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.ctx.flush_context(self.ak.into());
        let _ = self.ctx.flush_context(self.ek.into());
    }
}

/// The measured-boot event log the kernel exposes.
pub const KERNEL_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// Reads an event log of at most `max` bytes.
pub fn read_event_log(path: &Path, max: usize) -> Result<Vec<u8>, TpmError> {
    use std::io::Read;
    let io = |source| TpmError::State {
        path: path.to_path_buf(),
        source,
    };
    let mut b = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(max as u64 + 1)
        .read_to_end(&mut b)
        .map_err(io)?;
    if b.len() > max {
        return Err(TpmError::Input(format!(
            "{}: larger than {max} bytes",
            path.display()
        )));
    }
    Ok(b)
}
