//! Atomic renders and reading back what is on disk.
//!
//! A certificate block's files are swapped together, the way the kubelet updates secret
//! volumes: each render writes every file into a fresh generation directory
//! `.custos-<block>-<gen>/` (each file written, fsynced, given its mode), fsyncs it, then
//! renames a symlink `.custos-<block>` onto it. The files the user named are symlinks to
//! `.custos-<block>/<file>`, so one `rename(2)` moves all of them from the old key and
//! certificate to the new pair: no reader that opens a path ever sees a half-written file,
//! and every path flips at the same instant. (A reader that opens the certificate before a
//! swap and the key after it can still pair them wrongly; that is why a block can also render
//! `bundle_file`, one file with both, and why the reload command runs only after the swap.)
//! Older generations are removed after the swap; a process that has them open keeps reading.

use crate::config::{CertConfig, Part};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

/// What a successful issue/sign returned.
pub struct Material {
    /// Leaf certificate (PEM).
    pub cert: String,
    /// Issuing chain, issuing CA first (PEM each).
    pub chain: Vec<String>,
    /// The private key (PEM).
    pub key: Zeroizing<String>,
}

impl Material {
    fn part(&self, p: Part) -> Zeroizing<String> {
        let nl = |s: &str| {
            let mut s = s.trim_end().to_string();
            s.push('\n');
            s
        };
        Zeroizing::new(match p {
            Part::Cert => nl(&self.cert),
            Part::Key => nl(&self.key),
            Part::Chain => self.chain.iter().map(|c| nl(c)).collect(),
            Part::Ca => self.chain.last().map(|c| nl(c)).unwrap_or_default(),
            Part::Bundle => {
                let mut s = nl(&self.cert);
                for c in &self.chain {
                    s.push_str(&nl(c));
                }
                s.push_str(&nl(&self.key));
                s
            }
        })
    }
}

fn link_name(c: &CertConfig) -> String {
    format!(".custos-{}", c.name)
}

fn file_name(p: &Path) -> std::io::Result<&str> {
    p.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other(format!("{p:?} has no file name")))
}

fn sync_dir(d: &Path) -> std::io::Result<()> {
    std::fs::File::open(d)?.sync_all()
}

/// Points `at` to `target` atomically (a temporary symlink renamed over it).
fn swap_link(dir: &Path, at: &str, target: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!("{at}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, dir.join(at))
}

/// Renders `m` into the block's files atomically (see the module docs).
pub fn render(c: &CertConfig, m: &Material) -> std::io::Result<()> {
    let dir = c.dir().to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let link = link_name(c);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let gen_name = format!("{link}-{nanos:x}");
    let gen = dir.join(&gen_name);
    std::fs::create_dir(&gen)?;
    std::fs::set_permissions(&gen, std::fs::Permissions::from_mode(0o755))?;
    for (path, mode, part) in c.outputs() {
        let name = file_name(&path)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(gen.join(name))?;
        // The umask may have narrowed the mode at creation; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(m.part(part).as_bytes())?;
        f.sync_all()?;
    }
    sync_dir(&gen)?;
    swap_link(&dir, &link, Path::new(&gen_name))?;
    for (path, _, _) in c.outputs() {
        let name = file_name(&path)?;
        let want = PathBuf::from(&link).join(name);
        if std::fs::read_link(&path).ok().as_deref() != Some(want.as_path()) {
            swap_link(&dir, name, &want)?;
        }
    }
    sync_dir(&dir)?;
    // Old generations go; the current one stays.
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&format!("{link}-")) && n != gen_name.as_str() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// Facts about a certificate on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// Validity.
    pub not_before: i64,
    /// Expiry.
    pub not_after: i64,
    /// Serial, colon-hex.
    pub serial: String,
}

/// Why files on disk cannot be reused.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// Missing or unreadable.
    #[error("cannot read {0:?}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Not a certificate / key.
    #[error("{0}")]
    Invalid(String),
}

/// Parses a PEM certificate's validity and serial.
pub fn cert_facts(pem: &str) -> Result<OnDisk, Unusable> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| Unusable::Invalid("not a PEM certificate".into()))?;
    let (_, x) = X509Certificate::from_der(&p.contents)
        .map_err(|_| Unusable::Invalid("not a valid X.509 certificate".into()))?;
    Ok(OnDisk {
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        serial: custos_pki::issue::serial_hex(x.raw_serial()),
    })
}

/// Reads the block's certificate and key and checks they can be reused: they parse, the key
/// belongs to the certificate, it has not expired, and it carries the names configured now
/// (a changed common name or NF instance ID means a new certificate).
pub fn load_existing(c: &CertConfig, now: i64) -> Result<OnDisk, Unusable> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Unusable::Read(p.into(), e));
    let cert = read(&c.cert_file)?;
    let key = Zeroizing::new(read(&c.key_file)?);
    let (_, p) = x509_parser::pem::parse_x509_pem(cert.as_bytes())
        .map_err(|_| Unusable::Invalid("certificate file is not PEM".into()))?;
    let (_, x) = X509Certificate::from_der(&p.contents)
        .map_err(|_| Unusable::Invalid("certificate file is not valid X.509".into()))?;
    let kp = rcgen::KeyPair::from_pem(&key)
        .map_err(|_| Unusable::Invalid("key file is not a PEM private key".into()))?;
    if rcgen::PublicKeyData::subject_public_key_info(&kp) != x.public_key().raw {
        return Err(Unusable::Invalid(
            "the key file does not belong to the certificate".into(),
        ));
    }
    if x.validity().not_after.timestamp() <= now {
        return Err(Unusable::Invalid("the certificate has expired".into()));
    }
    let cn = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("");
    if !c.common_name.is_empty() && cn != c.common_name {
        return Err(Unusable::Invalid(format!(
            "the certificate's common name {cn:?} is not the configured {:?}",
            c.common_name
        )));
    }
    if let Some(id) = &c.nf_instance_id {
        let want = format!("urn:uuid:{id}");
        let has = x
            .subject_alternative_name()
            .ok()
            .flatten()
            .is_some_and(|san| {
                san.value
                    .general_names
                    .iter()
                    .any(|n| matches!(n, GeneralName::URI(u) if u.eq_ignore_ascii_case(&want)))
            });
        if !has {
            return Err(Unusable::Invalid(format!(
                "the certificate does not carry the configured NF instance ID {id}"
            )));
        }
    }
    cert_facts(&cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    fn block(dir: &Path) -> CertConfig {
        let t = format!(
            "[server]\naddress = \"http://127.0.0.1:1\"\n[auto_auth]\nmethod = \"token\"\ntoken_file = \"t\"\n[[certificate]]\nname = \"sbi\"\nrole = \"r\"\ncommon_name = \"amf.example\"\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\nca_file = \"{0}/ca.pem\"\nbundle_file = \"{0}/bundle.pem\"\n",
            dir.display()
        );
        AgentConfig::parse(&t, dir).unwrap().certificates.remove(0)
    }

    fn material(cn: &str) -> Material {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.self_signed(&key).unwrap();
        Material {
            cert: cert.pem(),
            chain: vec![cert.pem()],
            key: Zeroizing::new(key.serialize_pem()),
        }
    }

    #[test]
    fn render_swaps_every_file_at_once_and_keeps_modes() {
        let d = tempfile::tempdir().unwrap();
        let c = block(d.path());
        let m1 = material("amf.example");
        render(&c, &m1).unwrap();
        let first = load_existing(&c, 0).unwrap();
        let m2 = material("amf.example");
        render(&c, &m2).unwrap();
        let second = load_existing(&c, 0).unwrap();
        assert_ne!(first.serial, second.serial);
        assert_eq!(
            std::fs::read_to_string(&c.cert_file).unwrap().trim(),
            m2.cert.trim()
        );
        let meta = std::fs::metadata(&c.key_file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let meta = std::fs::metadata(&c.cert_file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        // One generation left; user paths are symlinks through the swap link.
        let gens = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".custos-sbi-"))
            .count();
        assert_eq!(gens, 1);
        assert_eq!(
            std::fs::read_link(&c.key_file).unwrap(),
            PathBuf::from(".custos-sbi/key.pem")
        );
        let bundle = std::fs::read_to_string(c.bundle_file.as_ref().unwrap()).unwrap();
        assert!(bundle.contains("PRIVATE KEY") && bundle.contains(m2.cert.trim()));
    }

    #[test]
    fn mismatched_changed_or_garbage_files_are_not_reused() {
        let d = tempfile::tempdir().unwrap();
        let c = block(d.path());
        assert!(matches!(load_existing(&c, 0), Err(Unusable::Read(..))));
        render(&c, &material("other.example")).unwrap();
        let e = load_existing(&c, 0).unwrap_err().to_string();
        assert!(e.contains("common name"), "{e}");
        render(&c, &material("amf.example")).unwrap();
        // Replace the key behind the agent's back: a mismatched pair is refused.
        let gen = std::fs::read_link(d.path().join(".custos-sbi")).unwrap();
        let k = d.path().join(gen).join("key.pem");
        std::fs::write(&k, material("amf.example").key.as_bytes()).unwrap();
        let e = load_existing(&c, 0).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        std::fs::write(&k, "garbage").unwrap();
        assert!(load_existing(&c, 0).is_err());
        render(&c, &material("amf.example")).unwrap();
        let e = load_existing(&c, i64::MAX / 2).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn a_plain_file_left_by_another_tool_is_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let c = block(d.path());
        std::fs::write(&c.cert_file, "old").unwrap();
        render(&c, &material("amf.example")).unwrap();
        assert!(load_existing(&c, 0).is_ok());
    }
}
