//! Event log segments: the events of one partition from one batch, as one sled
//! value, checksummed so that a damaged one is found, named and set aside
//! instead of read as garbage.
//!
//! A segment is `version (u8 = 2), crc32 of the rest (u32 LE), then per event:
//! offset (i64 LE), length (u32 LE), the encoded event`. Stores older than
//! layout 2 wrote the entries alone; they are rewritten when the store opens.

use thiserror::Error;

const VERSION: u8 = 2;
const HEADER: usize = 5;

/// Why a segment cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SegmentError {
    #[error("segment is empty or has unknown version {0}")]
    Version(u8),
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("entry at byte {0} runs past the end of the segment")]
    Truncated(usize),
}

/// Builds one segment.
#[derive(Debug, Default)]
pub struct SegmentWriter {
    buf: Vec<u8>,
}

impl SegmentWriter {
    pub fn new() -> SegmentWriter {
        let mut buf = Vec::with_capacity(4096);
        buf.push(VERSION);
        buf.extend_from_slice(&[0; 4]);
        SegmentWriter { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() <= HEADER
    }

    /// Bytes the segment would take with one more event of `len` bytes.
    pub fn len_with(&self, len: usize) -> usize {
        self.buf.len() + 12 + len
    }

    pub fn push(&mut self, offset: i64, event: &[u8]) {
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf
            .extend_from_slice(&(event.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(event);
    }

    /// The finished segment (its checksum filled in).
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf[HEADER..]);
        self.buf[1..HEADER].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// The (offset, encoded event) entries of a segment, checksum verified.
pub fn entries(value: &[u8]) -> Result<Vec<(i64, &[u8])>, SegmentError> {
    let version = value.first().copied().unwrap_or(0);
    if version != VERSION || value.len() < HEADER {
        return Err(SegmentError::Version(version));
    }
    let stored = u32::from_le_bytes(value[1..HEADER].try_into().unwrap_or([0; 4]));
    let body = &value[HEADER..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(SegmentError::Checksum { stored, computed });
    }
    raw_entries(body).map_err(|at| SegmentError::Truncated(at + HEADER))
}

/// The entries of a segment body without a header (as older stores wrote
/// them); `Err(byte)` where one runs past the end.
pub fn raw_entries(mut b: &[u8]) -> Result<Vec<(i64, &[u8])>, usize> {
    let total = b.len();
    let mut out = Vec::new();
    while !b.is_empty() {
        let at = total - b.len();
        let head = b.get(..12).ok_or(at)?;
        let offset = i64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(head[8..].try_into().unwrap_or([0; 4])) as usize;
        let body = b.get(12..12 + len).ok_or(at)?;
        out.push((offset, body));
        b = &b[12 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_found() {
        let mut w = SegmentWriter::new();
        assert!(w.is_empty());
        w.push(7, b"{\"a\":1}");
        w.push(8, b"");
        w.push(9, b"xyz");
        let seg = w.finish();
        let got = entries(&seg).unwrap();
        assert_eq!(
            got,
            vec![(7, &b"{\"a\":1}"[..]), (8, &b""[..]), (9, &b"xyz"[..])]
        );
        for i in 0..seg.len() {
            let mut bad = seg.clone();
            bad[i] ^= 0x40;
            assert!(entries(&bad).is_err(), "a flipped byte {i} is found");
        }
        assert_eq!(entries(&seg[..3]), Err(SegmentError::Version(2)));
        assert_eq!(entries(b""), Err(SegmentError::Version(0)));
        let mut legacy = Vec::new();
        legacy.extend_from_slice(&5i64.to_le_bytes());
        legacy.extend_from_slice(&2u32.to_le_bytes());
        legacy.extend_from_slice(b"ok");
        assert_eq!(raw_entries(&legacy), Ok(vec![(5, &b"ok"[..])]));
        assert_eq!(raw_entries(&legacy[..13]), Err(0));
    }
}
