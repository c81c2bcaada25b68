//! The device record's stored form (the value of `DEVICES`).
//!
//! This build writes a binary form: the tag byte `BINARY`, then the fields
//! in a fixed order. Strings are a little-endian `u32` length and their
//! UTF-8 bytes; numbers are little-endian `u64`; lists are a `u32` count and
//! their strings; `flags` holds the one boolean and which optional fields
//! follow. The name comes first, so a search can judge a record by its name
//! without decoding it (`list::stored_name`).
//!
//! ```text
//! 0x01 name status:u8 flags:u8 created:u64 updated:u64 version:u64
//!      location_ids pim_segment_ids key_hash
//!      [prev_key_hash] [prev_key_expires:u64] [last_event]
//! ```
//!
//! Files of layout 4 and earlier hold records as JSON, which always start
//! with `{`: `decode` reads both, and a record is written in the binary form
//! the next time its device changes. Reading a record is then a walk over its
//! bytes instead of a JSON parse (about 7,400 instructions of a GET's 43,000,
//! `docs/PERFORMANCE.md`).

use super::bytes::{put_list, put_str, Reader};
use super::indexes::status_code;
use super::{DeviceRecord, StoreError, StoreResult};
#[cfg(test)]
use crate::devices::DeviceStatus;

/// The first byte of a record in the binary form (JSON starts with `{`).
pub(super) const BINARY: u8 = 0x01;

const PIM_ENABLED: u8 = 1;
const PREV_KEY_HASH: u8 = 1 << 1;
const PREV_KEY_EXPIRES: u8 = 1 << 2;
const LAST_EVENT: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = PIM_ENABLED | PREV_KEY_HASH | PREV_KEY_EXPIRES | LAST_EVENT;

impl DeviceRecord {
    pub(super) fn decode(bytes: &[u8]) -> StoreResult<DeviceRecord> {
        match bytes.split_first() {
            Some((&BINARY, rest)) => read(rest).ok_or_else(|| {
                StoreError::Internal("undecodable device record: a damaged binary record".into())
            }),
            _ => serde_json::from_slice(bytes)
                .map_err(|e| StoreError::Internal(format!("undecodable device record: {e}"))),
        }
    }

    pub(super) fn encode(&self) -> StoreResult<Vec<u8>> {
        let strings = self.name.len()
            + self.key_hash.len()
            + self.location_ids.iter().map(String::len).sum::<usize>()
            + self.pim_segment_ids.iter().map(String::len).sum::<usize>()
            + self.prev_key_hash.as_ref().map_or(0, String::len)
            + self.last_event.as_ref().map_or(0, String::len);
        let fields = 8 + self.location_ids.len() + self.pim_segment_ids.len();
        let mut out = Vec::with_capacity(3 + 4 * 8 + 4 * fields + strings);
        out.push(BINARY);
        put_str::<4>(&mut out, &self.name)?;
        out.push(status_code(self.status));
        let mut flags = 0;
        for (present, flag) in [
            (self.pim_enabled, PIM_ENABLED),
            (self.prev_key_hash.is_some(), PREV_KEY_HASH),
            (self.prev_key_expires_ms.is_some(), PREV_KEY_EXPIRES),
            (self.last_event.is_some(), LAST_EVENT),
        ] {
            if present {
                flags |= flag;
            }
        }
        out.push(flags);
        for n in [self.created_ms, self.updated_ms, self.version] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_list::<4>(&mut out, &self.location_ids)?;
        put_list::<4>(&mut out, &self.pim_segment_ids)?;
        put_str::<4>(&mut out, &self.key_hash)?;
        if let Some(hash) = &self.prev_key_hash {
            put_str::<4>(&mut out, hash)?;
        }
        if let Some(ends) = self.prev_key_expires_ms {
            out.extend_from_slice(&ends.to_le_bytes());
        }
        if let Some(event) = &self.last_event {
            put_str::<4>(&mut out, event)?;
        }
        Ok(out)
    }
}

/// The name's bytes in a binary record, read without decoding the rest.
pub(super) fn binary_name(record: &[u8]) -> Option<&[u8]> {
    match record.split_first() {
        Some((&BINARY, rest)) => Reader(rest).bytes::<4>(),
        _ => None,
    }
}

/// Reads a binary record after its tag byte.
fn read(bytes: &[u8]) -> Option<DeviceRecord> {
    let mut r = Reader(bytes);
    let name = r.str::<4>()?.to_owned();
    let status = r.status()?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let created_ms = r.u64()?;
    let updated_ms = r.u64()?;
    let version = r.u64()?;
    let location_ids = r.list::<4>()?;
    let pim_segment_ids = r.list::<4>()?;
    let key_hash = r.str::<4>()?.to_owned();
    let has = |flag: u8| flags & flag != 0;
    let prev_key_hash = if has(PREV_KEY_HASH) {
        Some(r.str::<4>()?.to_owned())
    } else {
        None
    };
    let prev_key_expires_ms = if has(PREV_KEY_EXPIRES) {
        Some(r.u64()?)
    } else {
        None
    };
    let last_event = if has(LAST_EVENT) {
        Some(r.str::<4>()?.to_owned())
    } else {
        None
    };
    r.is_empty().then_some(DeviceRecord {
        name,
        status,
        location_ids,
        pim_enabled: has(PIM_ENABLED),
        pim_segment_ids,
        created_ms,
        updated_ms,
        version,
        key_hash,
        prev_key_hash,
        prev_key_expires_ms,
        last_event,
    })
}

/// Turns the store into what a layout 4 build left: every device record
/// rewritten as JSON, and the version set to 4. Returns the records.
#[cfg(test)]
pub(super) fn as_layout_4(txn: &redb::WriteTransaction) -> StoreResult<usize> {
    use redb::ReadableTable;
    let mut devices = txn.open_table(super::tables::DEVICES)?;
    let mut rows = Vec::new();
    for row in devices.range::<(&str, &str)>(..)? {
        let (key, value) = row?;
        let (tenant, id) = key.value();
        let json = serde_json::to_vec(&DeviceRecord::decode(value.value())?)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        rows.push((tenant.to_string(), id.to_string(), json));
    }
    for (tenant, id, json) in &rows {
        devices.insert((tenant.as_str(), id.as_str()), json.as_slice())?;
    }
    txn.open_table(super::tables::META)?
        .insert(super::tables::SCHEMA_VERSION_KEY, 4)?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DeviceRecord {
        DeviceRecord {
            name: "Front \"scanner\" \u{e9}".into(),
            status: DeviceStatus::Inactive,
            location_ids: vec!["loc-1".into(), "loc-\u{202e}2".into()],
            pim_enabled: true,
            pim_segment_ids: vec!["seg-a".into()],
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_123,
            version: 7,
            key_hash: "ab".repeat(32),
            prev_key_hash: Some("cd".repeat(32)),
            prev_key_expires_ms: Some(1_700_000_060_000),
            last_event: Some("evt_01HZZZZZZZZZZZZZZZZZZZZZZZ".into()),
        }
    }

    fn same(a: &DeviceRecord, b: &DeviceRecord) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    #[test]
    fn a_record_reads_back_as_written_with_and_without_its_optional_fields() {
        let full = record();
        let bare = DeviceRecord {
            pim_enabled: false,
            location_ids: vec![],
            pim_segment_ids: vec![],
            prev_key_hash: None,
            prev_key_expires_ms: None,
            last_event: None,
            status: DeviceStatus::Revoked,
            ..record()
        };
        for original in [full, bare] {
            let bytes = original.encode().unwrap();
            assert_eq!(bytes[0], BINARY);
            let back = DeviceRecord::decode(&bytes).unwrap();
            assert!(same(&original, &back), "{original:?} != {back:?}");
        }
    }

    #[test]
    fn a_json_record_of_an_earlier_layout_still_reads() {
        let original = record();
        let json = serde_json::to_vec(&original).unwrap();
        assert_eq!(json[0], b'{');
        assert!(same(&original, &DeviceRecord::decode(&json).unwrap()));
    }

    #[test]
    fn a_damaged_binary_record_is_refused_not_misread() {
        let bytes = record().encode().unwrap();
        // Cut anywhere: every prefix is refused.
        for cut in 1..bytes.len() {
            assert!(DeviceRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A byte too many, an unknown status or flag, a count past the end.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DeviceRecord::decode(&longer).is_err());
        let name_len = 4 + record().name.len();
        let mut status = bytes.clone();
        status[1 + name_len] = 9;
        assert!(DeviceRecord::decode(&status).is_err());
        let mut flags = bytes.clone();
        flags[2 + name_len] |= 0x80;
        assert!(DeviceRecord::decode(&flags).is_err());
        let mut count = bytes.clone();
        let lists = 3 + name_len + 24;
        count[lists..lists + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(DeviceRecord::decode(&count).is_err());
        // Not UTF-8 in the name.
        let mut utf8 = bytes;
        utf8[5] = 0xff;
        assert!(DeviceRecord::decode(&utf8).is_err());
    }

    #[test]
    fn the_name_is_read_from_the_raw_bytes() {
        let bytes = record().encode().unwrap();
        assert_eq!(binary_name(&bytes), Some(record().name.as_bytes()));
        assert_eq!(binary_name(b"{\"name\":\"x\"}"), None);
    }
}
