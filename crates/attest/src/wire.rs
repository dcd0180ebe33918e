//! Bounded readers and writers for the TPM's big-endian wire format (TPM 2.0 Part 2) and the
//! event log's little-endian one. Every read checks the remaining length first: a short or
//! hostile buffer is an error, never a panic.

use crate::Error;

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Malformed {
                what: self.what,
                detail: format!(
                    "truncated at byte {}: {n} more bytes needed, {} left",
                    self.pos,
                    self.remaining()
                ),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn u16_le(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32_le(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A TPM2B: a big-endian u16 size, then that many bytes (at most `max`).
    pub(crate) fn tpm2b(&mut self, max: usize, field: &str) -> Result<&'a [u8], Error> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(self.bad(format!("{field}: {n} bytes, more than the {max} allowed")));
        }
        self.bytes(n)
    }

    pub(crate) fn bad(&self, detail: String) -> Error {
        Error::Malformed {
            what: self.what,
            detail,
        }
    }

    /// Fails unless every byte was read: trailing bytes are an error (a second structure
    /// smuggled behind the first).
    pub(crate) fn end(&self) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(self.bad(format!(
                "{} unexpected bytes after the structure",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Big-endian writer (serialising for round-trip tests and for the server's MakeCredential).
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A TPM2B; the caller bounds `b` to u16.
    pub(crate) fn tpm2b(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.0
            .extend_from_slice(&b[..b.len().min(usize::from(u16::MAX))]);
    }
}
