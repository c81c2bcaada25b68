//! Every redb table devicehub keeps. Keys put the tenant first, so that one
//! tenant's devices are one contiguous range.

use redb::TableDefinition;

/// key: setting name (`"schema_version"`) · value: its number.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// key: (tenant_id, device_id) · value: the device record, JSON (`DeviceRecord`).
/// Device ids are `dev_` + ULID, so a tenant's range is in creation order.
pub const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");

/// key: SHA-256 of a device API key · value: (tenant_id, device_id).
/// Secondary index of `DEVICES`, written in the same transaction. A revoked
/// device keeps its entry so that its key can be told `device_revoked`.
pub const KEY_INDEX: TableDefinition<&[u8; 32], (&str, &str)> = TableDefinition::new("key_index");

/// key: (tenant_id, device_id) · value: Unix milliseconds of the last check-in
/// written to disk (at most once a minute per device; newer ones live in memory).
pub const LAST_SEEN: TableDefinition<(&str, &str), u64> = TableDefinition::new("last_seen");

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
