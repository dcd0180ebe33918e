//! C2SP signed-note: text, a blank line, and signature lines `— <name> base64(keyID‖sig)`.
//! Ed25519 note keys (type 0x01) and Ed25519 cosignature keys (type 0x04).

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Most signature lines examined (the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// Largest note accepted.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Signature type byte of Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type byte of timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature).
pub const TYPE_COSIGNATURE: u8 = 0x04;

/// Why a note or key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note's syntax is wrong (what is named).
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key string is wrong.
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    /// A known key's signature does not verify (`name+keyid`).
    #[error("invalid signature for key {0}")]
    InvalidSignature(String),
    /// No known key signed the note.
    #[error("note has no verifiable signatures")]
    NoVerifiedSignature,
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (first four bytes of the signature field).
    pub key_id: u32,
    /// The signature bytes after the key ID.
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// The line, newline-terminated.
    pub fn line(&self) -> String {
        let mut b = self.key_id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.sig);
        format!("\u{2014} {} {}\n", self.name, B64.encode(b))
    }
}

/// `SHA-256(name || 0x0A || type || key)[:4]`, big-endian.
pub fn key_id(name: &str, kind: u8, key: &[u8]) -> u32 {
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    c.update(name.as_bytes());
    c.update(b"\n");
    c.update(&[kind]);
    c.update(key);
    let d = c.finish();
    let b = d.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Splits a signed note into its text (with the final newline) and signature lines.
pub fn parse(msg: &str) -> Result<(&str, Vec<NoteSignature>), NoteError> {
    let m = NoteError::Malformed;
    if msg.len() > MAX_NOTE_BYTES {
        return Err(m("larger than 1 MiB"));
    }
    if msg.chars().any(|c| c < '\u{20}' && c != '\n') {
        return Err(m("control characters"));
    }
    let split = msg
        .rfind("\n\n")
        .ok_or(m("no blank line before the signatures"))?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    let body = sigs
        .strip_suffix('\n')
        .ok_or(m("signature lines must end with a newline"))?;
    let mut out = Vec::new();
    for line in body.split('\n') {
        if out.len() == MAX_SIGNATURES {
            return Err(m("too many signatures"));
        }
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(m("a signature line must start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(m("signature line without a name"))?;
        if !valid_name(name) {
            return Err(m("bad key name"));
        }
        let raw = B64.decode(b64).map_err(|_| m("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(m("signature too short"));
        }
        out.push(NoteSignature {
            name: name.to_string(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            sig: raw[4..].to_vec(),
        });
    }
    Ok((text, out))
}

/// A verifier: a named Ed25519 public key, as a note key (0x01) or a cosigner (0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// Key name.
    pub name: String,
    /// Signature type byte ([`TYPE_ED25519`] or [`TYPE_COSIGNATURE`]).
    pub kind: u8,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Key ID derived from name, type and key.
    pub key_id: u32,
}

impl Verifier {
    /// A verifier for `name` and `public_key` of signature type `kind`.
    pub fn new(name: &str, kind: u8, public_key: [u8; 32]) -> Result<Verifier, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey("bad name"));
        }
        if kind != TYPE_ED25519 && kind != TYPE_COSIGNATURE {
            return Err(NoteError::BadKey("unknown signature type"));
        }
        Ok(Verifier {
            name: name.to_string(),
            kind,
            public_key,
            key_id: key_id(name, kind, &public_key),
        })
    }

    /// Parses a verifier key `name+hash+base64(type||key)`; the hash must match.
    pub fn parse(vkey: &str) -> Result<Verifier, NoteError> {
        let bad = NoteError::BadKey;
        let mut it = vkey.splitn(3, '+');
        let (Some(name), Some(hash), Some(b64)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected name+hash+key"));
        };
        if hash.len() != 8
            || !hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad("the key hash must be 8 lower-case hex digits"));
        }
        let raw = B64.decode(b64).map_err(|_| bad("key is not base64"))?;
        let (kind, key) = raw.split_first().ok_or(bad("empty key"))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let v = Verifier::new(name, *kind, key)?;
        if format!("{:08x}", v.key_id) != hash {
            return Err(bad("the key hash does not match the key"));
        }
        Ok(v)
    }

    /// The verifier key string.
    pub fn vkey(&self) -> String {
        let mut b = vec![self.kind];
        b.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(b))
    }

    /// Verifies `sig` over `text`. Cosignatures are `u64 timestamp || Ed25519` over
    /// `cosignature/v1\ntime <t>\n` + text; returns the timestamp for them.
    pub fn verify(&self, text: &str, sig: &[u8]) -> Result<Option<u64>, NoteError> {
        let invalid = || NoteError::InvalidSignature(format!("{}+{:08x}", self.name, self.key_id));
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, &self.public_key);
        if self.kind != TYPE_COSIGNATURE {
            return key
                .verify(text.as_bytes(), sig)
                .map(|_| None)
                .map_err(|_| invalid());
        }
        let (ts, ed) = sig.split_at_checked(8).ok_or_else(invalid)?;
        let ts = u64::from_be_bytes(ts.try_into().map_err(|_| invalid())?);
        if ed.len() != 64 || ts > i64::MAX as u64 {
            return Err(invalid());
        }
        key.verify(crate::witness::cosigned_message(ts, text).as_bytes(), ed)
            .map(|_| Some(ts))
            .map_err(|_| invalid())
    }
}

/// A verified note: its text and the verifiers (with cosignature timestamps) that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The note text (what was signed).
    pub text: &'a str,
    /// (verifier index in the list given to [`open`], cosignature timestamp).
    pub signed_by: Vec<(usize, Option<u64>)>,
}

/// Opens a note: signatures from unknown keys are ignored; a signature from a known key that
/// fails to verify rejects the note; at least one known key must have signed.
pub fn open<'a>(msg: &'a str, verifiers: &[Verifier]) -> Result<Opened<'a>, NoteError> {
    let (text, sigs) = parse(msg)?;
    let mut signed_by: Vec<(usize, Option<u64>)> = Vec::new();
    for s in &sigs {
        let Some(i) = verifiers
            .iter()
            .position(|v| v.name == s.name && v.key_id == s.key_id)
        else {
            continue;
        };
        let ts = verifiers[i].verify(text, &s.sig)?;
        if !signed_by.iter().any(|(j, _)| *j == i) {
            signed_by.push((i, ts));
        }
    }
    if signed_by.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(Opened { text, signed_by })
}

/// An Ed25519 signer for notes (0x01) or cosignatures (0x04). The seed is zeroized on drop.
pub struct Signer {
    verifier: Verifier,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("vkey", &self.verifier.vkey())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, kind: u8, seed: &[u8]) -> Result<Signer, NoteError> {
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::BadKey("an Ed25519 seed is 32 bytes"))?;
        let public: [u8; 32] = key
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::BadKey("public key"))?;
        Ok(Signer {
            verifier: Verifier::new(name, kind, public)?,
            key,
        })
    }

    /// A fresh key; returns the signer and its seed (to be stored encrypted).
    pub fn generate(name: &str, kind: u8) -> Result<(Signer, Zeroizing<Vec<u8>>), NoteError> {
        let mut seed = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| NoteError::BadKey("no randomness"))?;
        Ok((Signer::from_seed(name, kind, &seed)?, seed))
    }

    /// Go's `PRIVATE+KEY+name+hash+base64(type||seed)` signer key string for `seed`.
    pub fn skey(name: &str, kind: u8, seed: &[u8]) -> Result<Zeroizing<String>, NoteError> {
        let s = Signer::from_seed(name, kind, seed)?;
        let mut raw = Zeroizing::new(vec![kind]);
        raw.extend_from_slice(seed);
        Ok(Zeroizing::new(format!(
            "PRIVATE+KEY+{name}+{:08x}+{}",
            s.verifier.key_id,
            B64.encode(&*raw)
        )))
    }

    /// Parses Go's `PRIVATE+KEY+name+hash+base64(type||seed)` signer key (type 1 or 4).
    pub fn parse_skey(skey: &str) -> Result<Signer, NoteError> {
        let bad = NoteError::BadKey;
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(bad("expected PRIVATE+KEY+name+hash+key"))?;
        let mut it = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(b64)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected PRIVATE+KEY+name+hash+key"));
        };
        let raw = Zeroizing::new(B64.decode(b64).map_err(|_| bad("key is not base64"))?);
        let (kind, seed) = raw.split_first().ok_or(bad("empty key"))?;
        if !(*kind == TYPE_ED25519 || *kind == TYPE_COSIGNATURE) || seed.len() != 32 {
            return Err(bad(
                "only Ed25519 note (type 1) or cosignature (type 4) keys with a 32-byte seed",
            ));
        }
        let s = Signer::from_seed(name, *kind, seed)?;
        if format!("{:08x}", s.verifier.key_id) != hash {
            return Err(bad("the key hash does not match the key"));
        }
        Ok(s)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A note signature over `text` (for a cosigner: at time `ts`).
    pub fn sign(&self, text: &str, ts: u64) -> NoteSignature {
        let sig = if self.verifier.kind == TYPE_COSIGNATURE {
            let mut b = ts.to_be_bytes().to_vec();
            b.extend_from_slice(
                self.key
                    .sign(crate::witness::cosigned_message(ts, text).as_bytes())
                    .as_ref(),
            );
            b
        } else {
            self.key.sign(text.as_bytes()).as_ref().to_vec()
        };
        NoteSignature {
            name: self.verifier.name.clone(),
            key_id: self.verifier.key_id,
            sig,
        }
    }
}

/// Text plus signature lines: a complete signed note.
pub fn assemble(text: &str, sigs: &[NoteSignature]) -> String {
    let mut s = String::with_capacity(text.len() + 1 + sigs.len() * 100);
    s.push_str(text);
    s.push('\n');
    for sig in sigs {
        s.push_str(&sig.line());
    }
    s
}
