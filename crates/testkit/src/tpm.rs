//! Software TPMs for tests: swtpm devices with EK certificates from a private "manufacturer"
//! CA (swtpm_localca), driven with tpm2-tools. swtpm serves one client at a time and holds
//! three transient objects, so every command here runs alone and transient objects are
//! flushed after it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: the test command installs swtpm, swtpm-tools and tpm2-tools (apt-get install swtpm swtpm-tools tpm2-tools)"
    );
}

/// A TPM manufacturer: a private swtpm-localca whose root signs an intermediate that signs
/// EK certificates.
pub struct Manufacturer {
    dir: tempfile::TempDir,
}

impl Manufacturer {
    /// A fresh CA (created by swtpm_localca on the first device).
    pub fn new() -> Manufacturer {
        need("swtpm_setup");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).expect("mkdir");
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {0}/state\nsigningkey = {0}/state/signkey.pem\nissuercert = {0}/state/issuercert.pem\ncertserial = {0}/state/certserial\n",
                d.display()
            ),
        )
        .expect("write");
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = {0}/localca.conf\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha1,sha256\n",
                d.display()
            ),
        )
        .expect("write");
        Manufacturer { dir }
    }

    /// The root CA certificate (PEM); exists once a device was made.
    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/swtpm-localca-rootca-cert.pem"))
            .expect("root CA: make a device first")
    }

    /// The intermediate that signs EK certificates (PEM).
    pub fn issuer_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/issuercert.pem"))
            .expect("issuer CA: make a device first")
    }
}

impl Default for Manufacturer {
    fn default() -> Self {
        Self::new()
    }
}

/// The attestation key's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkKind {
    /// ECDSA P-256 with SHA-256.
    Ecdsa,
    /// RSA-2048, PKCS#1 v1.5 with SHA-256.
    RsaSsa,
    /// RSA-2048, PSS with SHA-256.
    RsaPss,
}

/// One swtpm device, its state directory and its files (ek.pub, ak.pub, …).
pub struct Tpm {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    scheme: std::cell::Cell<&'static str>,
}

fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for swtpm");
}

impl Tpm {
    /// Manufactures a TPM (EK and EK certificates from `m`, sha1 and sha256 banks) and
    /// starts it.
    pub fn new(m: &Manufacturer) -> Tpm {
        need("swtpm");
        need("tpm2_quote");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).expect("mkdir");
        std::fs::create_dir_all(d.join("certs")).expect("mkdir");
        let o = Command::new("swtpm_setup")
            .args(["--tpm2", "--createek", "--create-ek-cert", "--overwrite"])
            .arg("--tpmstate")
            .arg(d.join("state"))
            .arg("--config")
            .arg(m.dir.path().join("setup.conf"))
            .arg("--write-ek-cert-files")
            .arg(d.join("certs"))
            .output()
            .expect("swtpm_setup");
        assert!(
            o.status.success(),
            "swtpm_setup: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let (port, child) = start_swtpm(d, None);
        Tpm {
            dir,
            port,
            child,
            scheme: std::cell::Cell::new("ecdsa"),
        }
    }

    /// Power-cycles the TPM: PCRs return to their reset values and the reset count goes up,
    /// as at a reboot. Keys and NV survive; saved contexts of transient objects do not, so
    /// the AK is loaded again from `ak.priv`/`ak.pub` under the EK.
    pub fn reboot(&mut self) {
        self.power_cycle();
        self.run(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        let o = self.with_ek_session("tpm2_load -C ek.ctx -u ak.pub -r ak.priv -c ak.ctx");
        assert!(
            o.status.success(),
            "reloading the AK: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Tpm {
    /// Power-cycles the TPM on the same port (PCRs reset, keys and NV kept), loading nothing:
    /// for a device whose own software (the agent) keeps its keys.
    pub fn power_cycle(&mut self) {
        // An orderly shutdown first, as an operating system does.
        self.run(&["tpm2_shutdown"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (port, child) = start_swtpm(self.dir.path(), Some(self.port));
        assert_eq!(port, self.port, "swtpm came back on another port");
        self.child = child;
    }
}

/// Starts swtpm on the state in `d/state` (on `port` when given and free).
fn start_swtpm(d: &Path, port: Option<u16>) -> (u16, Child) {
    {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = match port {
                Some(p) if attempt == 0 => p,
                _ => free_port_pair(),
            };
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", d.join("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={}", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("swtpm");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (port, child);
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let out = child.wait_with_output().expect("swtpm output");
            last = String::from_utf8_lossy(&out.stderr).to_string();
        }
        panic!("swtpm did not start: {last}");
    }
}

impl Tpm {
    /// The TCTI string for this TPM (tss-esapi, tpm2-tools).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The device's working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Reads a file of the working directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Runs a tpm2-tools command against this TPM in its directory; the output, whatever
    /// the exit status. Transient objects are flushed afterwards.
    pub fn try_run(&self, args: &[&str]) -> Output {
        let o = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        if args[0] != "tpm2_flushcontext" && args[0] != "tpm2_pcrextend" {
            self.flush();
        }
        o
    }

    /// [`Tpm::try_run`] that must succeed.
    pub fn run(&self, args: &[&str]) -> Output {
        let o = self.try_run(args);
        assert!(
            o.status.success(),
            "{}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn flush(&self) {
        for f in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(f)
                .env(
                    "TPM2TOOLS_TCTI",
                    format!("swtpm:host=127.0.0.1,port={}", self.port),
                )
                .output();
        }
    }

    /// The RSA EK certificate swtpm_setup wrote (DER).
    pub fn ek_cert(&self) -> Vec<u8> {
        self.read("certs/ek-rsa2048.crt")
    }

    /// Creates the RSA EK (`ek.ctx`, `ek.pub`: TPM2B_PUBLIC) and an AK under it (`ak.ctx`,
    /// `ak.pub`: TPM2B_PUBLIC, `ak.pem`, `ak.name`).
    pub fn create_keys(&self, kind: AkKind) {
        self.create_keys_hashing(kind, "sha256");
    }

    /// [`Tpm::create_keys`] with an AK fixed to `hash` (`sha1` for a legacy device).
    pub fn create_keys_hashing(&self, kind: AkKind, hash: &str) {
        self.run(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        let (g, s) = match kind {
            AkKind::Ecdsa => ("ecc", "ecdsa"),
            AkKind::RsaSsa => ("rsa", "rsassa"),
            AkKind::RsaPss => ("rsa", "rsapss"),
        };
        self.scheme.set(s);
        self.run(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            g,
            "-g",
            hash,
            "-s",
            s,
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
            "-r",
            "ak.priv",
        ]);
        self.run(&[
            "tpm2_readpublic",
            "-c",
            "ak.ctx",
            "-f",
            "pem",
            "-o",
            "ak.pem",
        ]);
    }

    /// Extends `pcr` with these digests (hex), as a boot loader measuring something.
    pub fn extend(&self, pcr: u8, sha1: &str, sha256: &str) {
        self.run(&[
            "tpm2_pcrextend",
            &format!("{pcr}:sha1={sha1},sha256={sha256}"),
        ]);
    }

    /// Quotes `selection` (e.g. `sha256:0,1,2,3,4,5,6,7`) with `nonce`, signing over `hash`;
    /// writes `quote.msg`, `quote.sig`, `quote.pcrs` and returns (attest, signature).
    pub fn quote(&self, selection: &str, nonce: &[u8], hash: &str) -> (Vec<u8>, Vec<u8>) {
        self.run(&[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            selection,
            "-q",
            &hex_of(nonce),
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
            "-g",
            hash,
            "--scheme",
            self.scheme.get(),
        ]);
        (self.read("quote.msg"), self.read("quote.sig"))
    }

    /// `tpm2_activatecredential` of a `tpm2_makecredential`-format file with the EK (policy
    /// session, as an RSA EK requires); the recovered secret, or the tool's error.
    pub fn activate(&self, credential_file: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.in"), credential_file).expect("write");
        let _ = std::fs::remove_file(self.path("cred.out"));
        let o = self
            .with_ek_session("tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.in -o cred.out");
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).to_string());
        }
        Ok(self.read("cred.out"))
    }

    /// Runs `command` (a tpm2-tools line) with `-P session:s.ctx` appended: a policy session
    /// satisfying the EK's policy (PolicySecret of the endorsement hierarchy), which must live
    /// across the steps, so they run in one shell. Transient objects are flushed afterwards.
    fn with_ek_session(&self, command: &str) -> Output {
        let script = format!(
            "set -e
tpm2_startauthsession --policy-session -S s.ctx
tpm2_policysecret -S s.ctx -c e
{command} -P session:s.ctx
tpm2_flushcontext s.ctx"
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .expect("sh");
        self.flush();
        o
    }

    /// Runs a command that needs no TPM (tpm2_checkquote, tpm2_eventlog) in this device's
    /// directory.
    pub fn offline(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env_remove("TPM2TOOLS_TCTI")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
    }

    /// The directory as a path (for files a test writes there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lower-case hex.
pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A boot as a boot loader measures it: a CRTM event in PCR 0, `image` in PCR 4, separators
/// in PCRs 0-7, each extended into `t` (SHA-1 and SHA-256 banks) and recorded in the event log
/// returned.
pub fn boot(t: &Tpm, image: &[u8]) -> custos_attest::eventlog::EventLog {
    use custos_attest::eventlog::{Event, EventLog, EV_POST_CODE, EV_SEPARATOR};
    use custos_attest::tpm::HashAlg;
    let banks = [HashAlg::Sha1, HashAlg::Sha256];
    let mut events = vec![
        Event::measure(0, 0x0000_0008, &banks, b"custos test CRTM", b"CRTM 1.0"),
        Event::measure(4, EV_POST_CODE, &banks, image, b"du firmware"),
    ];
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
    EventLog {
        banks: banks.to_vec(),
        startup_locality: 0,
        events,
    }
}
