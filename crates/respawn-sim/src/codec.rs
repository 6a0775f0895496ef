//! Little-endian byte writer and a bounds-checked reader for snapshots.
//! The reader never panics and never trusts a length it has not checked.

/// Why bytes were refused as a snapshot or a journal batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    BadMagic,
    UnsupportedVersion { found: u16, supported: u16 },
    LengthMismatch { declared: u64, actual: u64 },
    ChecksumMismatch { stored: u32, computed: u32 },
    Truncated(&'static str),
    Invalid(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => write!(f, "not a Respawn zone snapshot (bad magic bytes)"),
            DecodeError::UnsupportedVersion { found, supported } => {
                write!(f, "snapshot format version {found} is not supported (this build reads version {supported})")
            }
            DecodeError::LengthMismatch { declared, actual } => {
                write!(f, "snapshot payload is {actual} bytes but its header declares {declared}")
            }
            DecodeError::ChecksumMismatch { stored, computed } => {
                write!(f, "snapshot is corrupt: checksum {computed:08x} does not match stored {stored:08x}")
            }
            DecodeError::Truncated(what) => write!(f, "snapshot is truncated while reading {what}"),
            DecodeError::Invalid(why) => write!(f, "snapshot content is invalid: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
}

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.u64(what)?)),
            other => Err(DecodeError::Invalid(format!("{what}: option tag {other}"))),
        }
    }
    pub(crate) fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid(format!("{what}: not UTF-8")))
    }

    /// A element count, refused if the remaining bytes cannot hold that many
    /// elements of at least `min_size` bytes (so a forged count cannot make us
    /// allocate gigabytes).
    pub(crate) fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size) > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }
}
