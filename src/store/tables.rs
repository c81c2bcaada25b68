//! Every redb table devicehub keeps. Keys put the tenant first, so that one
//! tenant's rows are one contiguous range. The secondary tables
//! (`KEY_INDEX`, `STATUS_INDEX`, `LOCATION_INDEX`, `NAME_INDEX`, `TENANT_COUNTS`) are
//! written in the same transaction as the device they describe.

use redb::TableDefinition;

/// key: setting name (`"schema_version"`) · value: its number.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// key: (tenant_id, device_id) · value: the device record (`DeviceRecord`),
/// binary; JSON in records not rewritten since layout 4 (`record.rs`).
/// Device ids are `dev_` + ULID, so a tenant's range is in creation order.
pub const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");

/// key: SHA-256 of a device API key · value: (tenant_id, device_id).
/// A revoked device keeps its entry so that its key can be told
/// `device_revoked`.
pub const KEY_INDEX: TableDefinition<&[u8; 32], (&str, &str)> = TableDefinition::new("key_index");

/// key: (tenant_id, device_id) · value: Unix milliseconds of the last check-in
/// written to disk (at most once a minute per device; newer ones live in memory).
pub const LAST_SEEN: TableDefinition<(&str, &str), u64> = TableDefinition::new("last_seen");

/// key: (tenant_id, status code, device_id) · value: nothing. One entry per
/// device, under its current status (`status_code`), so a page filtered by
/// status reads only matching devices, in creation order.
pub const STATUS_INDEX: TableDefinition<(&str, u8, &str), ()> =
    TableDefinition::new("status_index");

/// key: (tenant_id, location_id, device_id) · value: nothing. One entry per
/// location a device is assigned to.
pub const LOCATION_INDEX: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("location_index");

/// key: (tenant_id, device_id) · value: the device's name in lower case
/// (`str::to_lowercase`), UTF-8. A search by name (`q`) reads this compact table
/// instead of decoding every device record, and only reads the records of
/// the devices whose names match.
pub const NAME_INDEX: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("name_index");

/// key: (tenant_id, status code) · value: how many of the tenant's devices
/// have that status. Exact: kept in the write transaction.
pub const TENANT_COUNTS: TableDefinition<(&str, u8), u64> = TableDefinition::new("tenant_counts");

/// key: (tenant_id, SHA-256 of an Idempotency-Key) · value: Unix ms when
/// the answer was stored (8 bytes, big-endian), the request's fingerprint
/// (32 bytes), then the answer sealed under a key derived from the
/// Idempotency-Key (`idempotency.rs`). Written in the same transaction as the
/// change it answers.
pub const IDEMPOTENCY: TableDefinition<(&str, &[u8; 32]), &[u8]> =
    TableDefinition::new("idempotency");

/// key: (stored at, Unix ms; tenant_id; key id) · value: nothing. The
/// `IDEMPOTENCY` entries in the order they expire, for pruning.
pub const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str, &[u8; 32]), ()> =
    TableDefinition::new("idempotency_expiry");

/// key: (tenant_id, event_id) · value: the event's type code (one byte,
/// `EventType::code`; with the high bit set in the compact form), the length
/// of the id of the device's event before it (one byte) and that id, then
/// the event: in the compact form (`events::compact`, what changes write)
/// its fields in binary, rendered to JSON when read; in the JSON form (what
/// `import` and the first event builds write) the event as clients see it. Event
/// ids are `evt_` + ULID and increase in commit order within a tenant, so a
/// tenant's range is its change feed, oldest first, and its oldest events
/// are the first to expire. A device's events are a chain: the device
/// record names its last event, each event the one before.
pub const EVENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("events");

/// key: (tenant_id, webhook_id) · value: the webhook as stored, JSON
/// (`WebhookRecord`: its fields, signing secret, and delivery state: the
/// cursor, failures so far and when to try again).
pub const WEBHOOKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("webhooks");

/// key: (tenant_id, webhook_id, sequence number) · value: one delivery
/// attempt, JSON (`Delivery`). The newest 100 per webhook are kept.
pub const WEBHOOK_DELIVERIES: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("webhook_deliveries");

/// The layout version this build reads and writes. Version 1 (the first
/// release) had no status, location or count tables; version 2 had no event or
/// webhook tables; version 3 had no name index; version 4 stored every device
/// record as JSON (this build reads those and writes the binary form, so a
/// record moves to it when its device next changes, and an older build,
/// which could not read it, refuses the file). All are upgraded in place.
pub const SCHEMA_VERSION: u64 = 5;
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Set in a snapshot, which leaves out the tables built from `DEVICES` (the
/// key, status, location and name indexes and the counts): opening it
/// builds them and removes the mark (`restore` does, on its copy).
pub const INDEXES_OMITTED_KEY: &str = "indexes_omitted";

/// Past every device id (ids are ASCII): the upper end of a tenant's range.
pub const ID_MAX: &str = "\u{10FFFF}";
