//! Canonical, length-prefixed binary encoding.
//!
//! Proofs and digests are computed over this encoding, never over JSON or
//! `Debug` output, so that two different values can never encode to the same
//! bytes (every variable-length field carries its length).

use crate::error::{Error, Result};

/// Appends fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A string with a 16-bit length prefix. Callers validate lengths when
    /// values are created, so truncation cannot happen here.
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.u16(s.len() as u16).raw(s.as_bytes())
    }

    pub(crate) fn count(&mut self, n: usize) -> &mut Self {
        debug_assert!(n <= u16::MAX as usize);
        self.u16(n as u16)
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads fields back, failing on any truncation.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::MalformedToken("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.raw(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.raw(n)?).map_err(|_| Error::MalformedToken("invalid UTF-8"))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
}
