//! TCG PC Client Platform Firmware Profile event logs, crypto-agile format: what the Linux
//! kernel exposes as `/sys/kernel/security/tpm0/binary_bios_measurements` and `tpm2_eventlog`
//! reads. The first event is a SHA-1 `TCG_PCR_EVENT` carrying the "Spec ID Event03" that
//! lists the banks; every later one is a `TCG_PCR_EVENT2` with one digest per bank. All
//! integers are little-endian.
//!
//! [`EventLog::replay`] recomputes the PCRs: from zeros (PCR 0 from the locality in a
//! `StartupLocality` event), `PCR = H(PCR || digest)` for every event but `EV_NO_ACTION`.

use crate::tpm::{HashAlg, PCR_COUNT};
use crate::wire::Reader;
use crate::Error;
use std::collections::BTreeMap;

/// The largest event log accepted (a real UEFI log is 10–100 KiB).
pub const MAX_LOG_BYTES: usize = 1 << 20;
/// The most events accepted.
pub const MAX_EVENTS: usize = 10_000;
/// The largest single event's data.
pub const MAX_EVENT_DATA: usize = 64 << 10;

/// `EV_NO_ACTION`: informational, not extended into any PCR.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_POST_CODE`: a firmware image measured by the platform (the type our boot loaders use
/// for a network element's firmware image).
pub const EV_POST_CODE: u32 = 0x0000_0001;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a UEFI application (boot loader, kernel) measured.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_IPL`: a boot loader's measurement of what it loads.
pub const EV_IPL: u32 = 0x0000_000D;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The PCR extended.
    pub pcr: u8,
    /// The event type (`EV_*`).
    pub kind: u32,
    /// One digest per bank.
    pub digests: BTreeMap<HashAlg, Vec<u8>>,
    /// The event data (what was measured, or a description of it).
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The banks the Spec ID event declares, with their digest sizes.
    pub banks: Vec<HashAlg>,
    /// The locality the platform started in (PCR 0's initial value), from a
    /// `StartupLocality` event; 0 when absent.
    pub startup_locality: u8,
    /// Every event after the Spec ID event, in order.
    pub events: Vec<Event>,
}

/// Replayed PCR values per bank.
pub type Pcrs = BTreeMap<HashAlg, [Vec<u8>; PCR_COUNT]>;

impl EventLog {
    /// Parses a crypto-agile event log. A SHA-1-only (TPM 1.2 format) log, a size over
    /// [`MAX_LOG_BYTES`], a truncated event or an unknown bank is refused.
    pub fn parse(b: &[u8]) -> Result<EventLog, Error> {
        if b.len() > MAX_LOG_BYTES {
            return Err(Error::Malformed {
                what: "event log",
                detail: format!("{} bytes; the limit is {MAX_LOG_BYTES}", b.len()),
            });
        }
        let mut r = Reader::new(b, "event log");
        // TCG_PCR_EVENT (SHA-1 format) holding the Spec ID event.
        let pcr = r.u32_le()?;
        let kind = r.u32_le()?;
        let _sha1 = r.bytes(20)?;
        let size = r.u32_le()? as usize;
        if size > MAX_EVENT_DATA {
            return Err(r.bad(format!("first event: {size} bytes of data")));
        }
        let spec = r.bytes(size)?;
        if pcr != 0 || kind != EV_NO_ACTION || !spec.starts_with(b"Spec ID Event03\0") {
            return Err(r.bad(
                "the first event is not the crypto-agile Spec ID Event03 (a TPM 1.2 SHA-1 log is not accepted)".into(),
            ));
        }
        let mut s = Reader::new(&spec[16..], "Spec ID event");
        let _platform_class = s.u32_le()?;
        let _minor = s.u8()?;
        let _major = s.u8()?;
        let _errata = s.u8()?;
        let _uintn = s.u8()?;
        let n = s.u32_le()?;
        if n == 0 || n > 8 {
            return Err(s.bad(format!("{n} algorithms declared")));
        }
        let mut sizes: BTreeMap<u16, usize> = BTreeMap::new();
        let mut banks = Vec::new();
        for _ in 0..n {
            let id = s.u16_le()?;
            let size = usize::from(s.u16_le()?);
            // Banks we cannot hash are skipped in replay, but their sizes let us parse.
            if let Some(h) = HashAlg::from_id(id) {
                if h.size() != size {
                    return Err(s.bad(format!("{} declared with {size}-byte digests", h.name())));
                }
                banks.push(h);
            }
            if size > 64 || sizes.insert(id, size).is_some() {
                return Err(s.bad(format!("algorithm 0x{id:04x} declared twice or too large")));
            }
        }
        if banks.is_empty() {
            return Err(s.bad(
                "no SHA-1, SHA-256, SHA-384 or SHA-512 bank declared: nothing to replay".into(),
            ));
        }
        let mut events = Vec::new();
        let mut startup_locality = 0;
        while r.remaining() > 0 {
            if events.len() >= MAX_EVENTS {
                return Err(r.bad(format!("more than {MAX_EVENTS} events")));
            }
            let at = r.pos();
            let pcr = r.u32_le()?;
            let kind = r.u32_le()?;
            if pcr as usize >= PCR_COUNT {
                return Err(r.bad(format!("event at byte {at}: PCR {pcr}")));
            }
            let count = r.u32_le()?;
            if count as usize != sizes.len() {
                return Err(r.bad(format!(
                    "event at byte {at}: {count} digests, {} banks declared",
                    sizes.len()
                )));
            }
            let mut digests = BTreeMap::new();
            for _ in 0..count {
                let id = r.u16_le()?;
                let size = *sizes.get(&id).ok_or_else(|| {
                    r.bad(format!(
                        "event at byte {at}: undeclared algorithm 0x{id:04x}"
                    ))
                })?;
                let d = r.bytes(size)?;
                if let Some(h) = HashAlg::from_id(id) {
                    if digests.insert(h, d.to_vec()).is_some() {
                        return Err(r.bad(format!("event at byte {at}: {} twice", h.name())));
                    }
                }
            }
            let size = r.u32_le()? as usize;
            if size > MAX_EVENT_DATA {
                return Err(r.bad(format!("event at byte {at}: {size} bytes of data")));
            }
            let data = r.bytes(size)?.to_vec();
            if kind == EV_NO_ACTION && data.starts_with(b"StartupLocality\0") && data.len() == 17 {
                startup_locality = data[16];
            }
            events.push(Event {
                pcr: pcr as u8,
                kind,
                digests,
                data,
            });
        }
        Ok(EventLog {
            banks,
            startup_locality,
            events,
        })
    }

    /// The PCR values this log produces, per declared bank.
    pub fn replay(&self) -> Pcrs {
        let mut out = Pcrs::new();
        for &h in &self.banks {
            let mut pcrs: [Vec<u8>; PCR_COUNT] = std::array::from_fn(|_| vec![0u8; h.size()]);
            if let Some(last) = pcrs[0].last_mut() {
                *last = self.startup_locality;
            }
            for e in &self.events {
                if e.kind == EV_NO_ACTION {
                    continue;
                }
                if let Some(d) = e.digests.get(&h) {
                    let p = &mut pcrs[usize::from(e.pcr)];
                    *p = h.digest(&[p, d]);
                }
            }
            out.insert(h, pcrs);
        }
        out
    }

    /// The wire form: a log this module parses to the same value (for tests, and for the
    /// stand-in boot loaders of the swtpm tests).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend(0u32.to_le_bytes()); // platform class: client
        spec.extend([0, 2, 0, 2]); // minor 0, major 2, errata 0, uintnSize 2 (64-bit)
        spec.extend((self.banks.len() as u32).to_le_bytes());
        for h in &self.banks {
            spec.extend(h.id().to_le_bytes());
            spec.extend((h.size() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        b.extend(0u32.to_le_bytes());
        b.extend(EV_NO_ACTION.to_le_bytes());
        b.extend([0u8; 20]);
        b.extend((spec.len() as u32).to_le_bytes());
        b.extend(spec);
        for e in &self.events {
            b.extend(u32::from(e.pcr).to_le_bytes());
            b.extend(e.kind.to_le_bytes());
            b.extend((self.banks.len() as u32).to_le_bytes());
            for h in &self.banks {
                b.extend(h.id().to_le_bytes());
                match e.digests.get(h) {
                    Some(d) if d.len() == h.size() => b.extend(d),
                    _ => b.extend(vec![0u8; h.size()]),
                }
            }
            b.extend((e.data.len() as u32).to_le_bytes());
            b.extend(&e.data);
        }
        b
    }
}

impl Event {
    /// An event measuring `data`'s digests in every bank of `banks` (what a boot loader
    /// does before it runs an image: the digest of the image, the image's name as data).
    pub fn measure(pcr: u8, kind: u32, banks: &[HashAlg], image: &[u8], data: &[u8]) -> Event {
        Event {
            pcr,
            kind,
            digests: banks.iter().map(|h| (*h, h.digest(&[image]))).collect(),
            data: data.to_vec(),
        }
    }
}
