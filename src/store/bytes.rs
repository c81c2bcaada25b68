//! The fields of the stored binary forms (device records in `record.rs`,
//! events in `events::compact`): little-endian numbers, and strings and
//! lists prefixed by their length or count. Lengths are `u16` in events and
//! `u32` in device records. `Reader` never reads past the end: a damaged
//! value reads as `None`.

use super::indexes::status_code;
use super::{StoreError, StoreResult};
use crate::devices::DeviceStatus;

/// Appends a length or count as `N` bytes (2 or 4).
fn put_len<const N: usize>(out: &mut Vec<u8>, len: usize) -> StoreResult<()> {
    let fits = |len: &u32| N == 4 || *len <= u32::from(u16::MAX);
    let len = u32::try_from(len)
        .ok()
        .filter(fits)
        .ok_or_else(|| StoreError::Internal("a field too long to store".into()))?;
    out.extend_from_slice(&len.to_le_bytes()[..N]);
    Ok(())
}

/// A string after its length in `N` bytes (2 or 4).
pub(super) fn put_str<const N: usize>(out: &mut Vec<u8>, text: &str) -> StoreResult<()> {
    put_len::<N>(out, text.len())?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// A list of strings after its count, each as `put_str`, in `N` bytes.
pub(super) fn put_list<const N: usize>(out: &mut Vec<u8>, items: &[String]) -> StoreResult<()> {
    put_len::<N>(out, items.len())?;
    for item in items {
        put_str::<N>(out, item)?;
    }
    Ok(())
}

/// The bytes of a value not yet read.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A length or count written in `N` bytes (2 or 4).
    fn len<const N: usize>(&mut self) -> Option<usize> {
        let b = self.take(N)?;
        match N {
            2 => Some(usize::from(u16::from_le_bytes([b[0], b[1]]))),
            _ => usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok(),
        }
    }

    /// The raw bytes of a string written by `put_str::<N>`.
    pub(super) fn bytes<const N: usize>(&mut self) -> Option<&'a [u8]> {
        let len = self.len::<N>()?;
        self.take(len)
    }

    pub(super) fn str<const N: usize>(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes::<N>()?).ok()
    }

    pub(super) fn list<const N: usize>(&mut self) -> Option<Vec<String>> {
        let count = self.len::<N>()?;
        // Each string takes at least its length: a count the bytes left
        // cannot hold is damage, refused before anything is reserved.
        if count > self.0.len() / N {
            return None;
        }
        (0..count)
            .map(|_| self.str::<N>().map(str::to_owned))
            .collect()
    }

    pub(super) fn status(&mut self) -> Option<DeviceStatus> {
        let code = self.u8()?;
        DeviceStatus::ALL
            .into_iter()
            .find(|s| status_code(*s) == code)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
