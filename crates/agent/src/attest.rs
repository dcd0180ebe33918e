//! The `[attest]` block: the agent proves to Custos what its device runs. On a schedule (and
//! on `POST /attest` at the health address) it asks a nonce, has the TPM quote the boot PCRs
//! with it, and sends the quote with the measured-boot event log; it enrols the device's TPM
//! itself the first time (EK certificate, AK credential activation) when `enrol = true`, and
//! reports the installs `custos fw install` recorded in the device's state file.
//!
//! ```toml
//! [attest]
//! device = "du-0017"                     # the device ID in the attestation mount
//! device_class = "gnb-du-x1"
//! mount = "attest"                       # default
//! tcti = "device:/dev/tpmrm0"            # default; or "swtpm:host=…,port=…", "tabrmd:"
//! state_dir = "/var/lib/custos-agent/tpm"   # the AK's blobs (mode 0600)
//! event_log = "/sys/kernel/security/tpm0/binary_bios_measurements"   # default
//! pcrs = [0, 1, 2, 3, 4, 5, 6, 7]        # default
//! interval = "60s"                       # default
//! enrol = true                           # enrol and activate the TPM if not enrolled
//! fw_state = "/var/lib/fw/state.json"    # report installs recorded there
//! hardware_ids = ["rev-b"]
//! nf_instance_ids = ["4947a69a-f61b-4bc1-b9da-47c9c5d14b64"]
//! ```
//!
//! Talking to the TPM needs a `custos` built with the `tpm` feature (tss-esapi, libtss2).

use crate::config::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The parsed `[attest]` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestConfig {
    /// The device ID.
    pub device: String,
    /// The device class (for enrolment).
    pub device_class: String,
    /// The attestation mount.
    pub mount: String,
    /// The TCTI (tss-esapi's syntax).
    pub tcti: String,
    /// Where the AK's blobs live.
    pub state_dir: PathBuf,
    /// The event log file.
    pub event_log: PathBuf,
    /// PCRs quoted (SHA-256 bank).
    pub pcrs: Vec<u8>,
    /// Between attestations.
    pub interval: Duration,
    /// Enrol the TPM when the device is not enrolled.
    pub enrol: bool,
    /// The device's firmware state file, whose installs are reported.
    pub fw_state: Option<PathBuf>,
    /// Hardware IDs sent at enrolment.
    pub hardware_ids: Vec<String>,
    /// NF instance IDs sent at enrolment.
    pub nf_instance_ids: Vec<String>,
}

/// `[attest]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAttest {
    device: String,
    device_class: String,
    mount: Option<String>,
    tcti: Option<String>,
    state_dir: PathBuf,
    event_log: Option<PathBuf>,
    pcrs: Option<Vec<u8>>,
    interval: Option<String>,
    #[serde(default)]
    enrol: bool,
    fw_state: Option<PathBuf>,
    #[serde(default)]
    hardware_ids: Vec<String>,
    #[serde(default)]
    nf_instance_ids: Vec<String>,
}

fn bad(k: &str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("attest.{k}"),
        reason: why.into(),
    }
}

impl RawAttest {
    /// Validates; relative paths are taken from `abs`.
    pub(crate) fn parse(self, abs: impl Fn(&Path) -> PathBuf) -> Result<AttestConfig, ConfigError> {
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        };
        if !id_ok(&self.device) || self.device == "." || self.device == ".." {
            return Err(bad("device", "1 to 128 letters, digits, '.', '_' or '-'"));
        }
        if self.device_class.trim().is_empty() {
            return Err(bad("device_class", "required"));
        }
        let mut pcrs = self.pcrs.unwrap_or_else(|| (0..8).collect());
        pcrs.sort_unstable();
        pcrs.dedup();
        if pcrs.is_empty() || pcrs.iter().any(|p| *p >= 24) {
            return Err(bad("pcrs", "one or more PCRs from 0 to 23"));
        }
        let interval = match &self.interval {
            None => Duration::from_secs(60),
            Some(s) => Duration::from_secs(
                custos_pki::fields::parse_duration(s)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("interval", format!("{s:?} is not a duration like 60s")))?,
            ),
        };
        let tcti = self.tcti.unwrap_or_else(|| "device:/dev/tpmrm0".into());
        if !["device:", "swtpm:", "tabrmd", "mssim:"]
            .iter()
            .any(|p| tcti.starts_with(p))
        {
            return Err(bad(
                "tcti",
                "device:<path>, swtpm:host=…,port=…, tabrmd: or mssim:…",
            ));
        }
        Ok(AttestConfig {
            device: self.device,
            device_class: self.device_class,
            mount: self
                .mount
                .unwrap_or_else(|| "attest".into())
                .trim_matches('/')
                .to_string(),
            tcti,
            state_dir: abs(&self.state_dir),
            event_log: self.event_log.map(|p| abs(&p)).unwrap_or_else(|| {
                PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements")
            }),
            pcrs,
            interval,
            enrol: self.enrol,
            fw_state: self.fw_state.map(|p| abs(&p)),
            hardware_ids: self.hardware_ids,
            nf_instance_ids: self.nf_instance_ids,
        })
    }
}
