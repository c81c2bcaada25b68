//! The domain: a device, its fields' rules (API.md §3) and the change a PATCH
//! asks for. A value of these types that exists is valid.

mod fields;

pub use fields::{is_tag, DeviceName, TagList, NAME_MAX_CHARS, TAGS_MAX_ENTRIES, TAG_MAX_CHARS};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Active,
    Inactive,
    Revoked,
}

impl DeviceStatus {
    pub const ALL: [DeviceStatus; 3] = [
        DeviceStatus::Active,
        DeviceStatus::Inactive,
        DeviceStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Inactive => "inactive",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<DeviceStatus> {
        match text {
            "active" => Some(DeviceStatus::Active),
            "inactive" => Some(DeviceStatus::Inactive),
            "revoked" => Some(DeviceStatus::Revoked),
            _ => None,
        }
    }
}

/// A device id: `dev_` and a ULID. Ids sort in the order they were assigned.
pub mod id {
    pub const PREFIX: &str = "dev_";

    /// The ids `parse` accepts, as a regular expression: a canonical ULID's
    /// first character is 0-7 (its 128 bits leave 2 spare), the rest are
    /// Crockford base 32.
    pub const PATTERN: &str = "^dev_[0-7][0-9A-HJKMNP-TV-Z]{25}$";

    pub fn format(ulid: ulid::Ulid) -> String {
        format!("{PREFIX}{ulid}")
    }

    /// The ULID inside a well-formed id, or None.
    pub fn parse(text: &str) -> Option<ulid::Ulid> {
        parse_prefixed(PREFIX, text)
    }

    /// The ULID inside `prefix` + a canonical ULID (every id devicehub
    /// makes: devices, events, webhooks), or None.
    pub fn parse_prefixed(prefix: &str, text: &str) -> Option<ulid::Ulid> {
        let body = text.strip_prefix(prefix)?;
        if body.len() != ulid::ULID_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let ulid = ulid::Ulid::from_string(body).ok()?;
        // Only the canonical (upper-case) spelling names anything.
        (ulid.to_string() == body).then_some(ulid)
    }
}

/// Milliseconds since the Unix epoch, shown as RFC 3339 UTC with exactly three
/// fractional digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn now() -> Millis {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis(since.as_millis() as u64)
    }

    pub fn to_rfc3339(self) -> String {
        let text = self.rfc3339();
        // Only ASCII digits and separators are written.
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The RFC 3339 form (`YYYY-MM-DDTHH:MM:SS.mmmZ`) in a fixed buffer:
    /// worked out with integer arithmetic (days to a civil date, H. Hinnant's
    /// algorithm), no allocation and no formatting machinery, since every
    /// device answer shows two or three of these. Past 9999-12-31 it is
    /// that day's last millisecond.
    pub fn rfc3339(self) -> [u8; 24] {
        const LAST: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = self.0.min(LAST);
        let secs = ms / 1000;
        let (days, of_day) = (secs / 86_400, secs % 86_400);
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, of_day / 3_600);
        put(14, 2, of_day / 60 % 60);
        put(17, 2, of_day % 60);
        put(20, 3, ms % 1000);
        out
    }
}

/// Serializes a `Millis` as RFC 3339 text (`Millis::rfc3339`).
fn rfc3339_str<S: Serializer>(value: Millis, s: S) -> Result<S::Ok, S::Error> {
    let text = value.rfc3339();
    match std::str::from_utf8(&text) {
        Ok(text) => s.serialize_str(text),
        Err(_) => Err(serde::ser::Error::custom("a time that is not text")),
    }
}

pub fn as_rfc3339<S: Serializer>(value: &Millis, s: S) -> Result<S::Ok, S::Error> {
    rfc3339_str(*value, s)
}

pub fn opt_as_rfc3339<S: Serializer>(value: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(m) => rfc3339_str(*m, s),
        None => s.serialize_none(),
    }
}

/// A device as clients see it (the seed's fields plus `updatedAt` and
/// `lastSeenAt`), with the version its `ETag` is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub name: String,
    pub status: DeviceStatus,
    pub location_ids: Vec<String>,
    pub pim_enabled: bool,
    pub pim_segment_ids: Vec<String>,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: Millis,
    #[serde(serialize_with = "as_rfc3339")]
    pub updated_at: Millis,
    #[serde(serialize_with = "opt_as_rfc3339")]
    pub last_seen_at: Option<Millis>,
    /// Bumped by every write that changes the device; never shown.
    #[serde(skip)]
    pub version: u64,
}

impl Device {
    /// A strong entity tag: it changes exactly when the stored device does.
    /// Built by hand into one allocation of the right size (it is made for
    /// every answer that shows a device).
    pub fn etag(&self) -> String {
        let ulid = self.id.get(id::PREFIX.len()..).unwrap_or_default();
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut version = self.version;
        loop {
            at -= 1;
            digits[at] = b'0' + (version % 10) as u8;
            version /= 10;
            if version == 0 {
                break;
            }
        }
        let mut tag = String::with_capacity(ulid.len() + digits.len() - at + 3);
        tag.push('"');
        tag.push_str(ulid);
        tag.push('-');
        for digit in &digits[at..] {
            tag.push(char::from(*digit));
        }
        tag.push('"');
        tag
    }
}

/// An `If-Match` precondition (RFC 9110 §13.1.1, strong comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    pub fn parse(header: &str) -> IfMatch {
        if header.trim() == "*" {
            return IfMatch::Any;
        }
        IfMatch::Tags(
            header
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }

    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Any => true,
            // Weak tags (W/"...") never match under strong comparison.
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The body of a registration (POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub name: DeviceName,
    pub status: DeviceStatus,
    pub location_ids: TagList,
    pub pim_enabled: bool,
    pub pim_segment_ids: TagList,
}

/// The body of a PATCH: each field present is to be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePatch {
    pub name: Option<DeviceName>,
    pub status: Option<DeviceStatus>,
    pub location_ids: Option<TagList>,
    pub pim_enabled: Option<bool>,
    pub pim_segment_ids: Option<TagList>,
}

const FIELDS: &[&str] = &[
    "name",
    "locationIds",
    "status",
    "pimEnabled",
    "pimSegmentIds",
];

impl DevicePatch {
    pub fn parse(body: &Map<String, Value>) -> Result<DevicePatch, ApiError> {
        let field = known_fields(body, FIELDS)?;
        Ok(DevicePatch {
            name: field("name")?
                .map(|v| DeviceName::parse("name", v))
                .transpose()?,
            location_ids: field("locationIds")?
                .map(|v| TagList::parse("locationIds", v))
                .transpose()?,
            status: field("status")?.map(parse_settable_status).transpose()?,
            pim_enabled: field("pimEnabled")?
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| ApiError::invalid("pimEnabled", "must be a boolean"))
                })
                .transpose()?,
            pim_segment_ids: field("pimSegmentIds")?
                .map(|v| TagList::parse("pimSegmentIds", v))
                .transpose()?,
        })
    }

    /// Applies the patch; true when anything actually changed.
    pub fn apply(&self, device: &mut Device) -> bool {
        let mut changed = false;
        fn set<T: PartialEq + Clone>(slot: &mut T, value: Option<&T>, changed: &mut bool) {
            if let Some(v) = value {
                if slot != v {
                    *slot = v.clone();
                    *changed = true;
                }
            }
        }
        set(
            &mut device.name,
            self.name.as_ref().map(|n| n.as_str().to_string()).as_ref(),
            &mut changed,
        );
        set(&mut device.status, self.status.as_ref(), &mut changed);
        set(
            &mut device.location_ids,
            self.location_ids.as_ref().map(|l| l.to_vec()).as_ref(),
            &mut changed,
        );
        set(
            &mut device.pim_enabled,
            self.pim_enabled.as_ref(),
            &mut changed,
        );
        set(
            &mut device.pim_segment_ids,
            self.pim_segment_ids.as_ref().map(|l| l.to_vec()).as_ref(),
            &mut changed,
        );
        changed
    }
}

/// A body's field reader: refuses a field not in `known`, then gives each
/// field asked for (None when absent), refusing `null`.
pub fn known_fields<'a>(
    body: &'a Map<String, Value>,
    known: &[&str],
) -> Result<impl Fn(&str) -> Result<Option<&'a Value>, ApiError>, ApiError> {
    if let Some(unknown) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(unknown, "unknown field"));
    }
    Ok(move |name: &str| match body.get(name) {
        Some(Value::Null) => Err(ApiError::invalid(name, "must not be null")),
        other => Ok(other),
    })
}

impl NewDevice {
    pub fn parse(body: &Map<String, Value>) -> Result<NewDevice, ApiError> {
        let patch = DevicePatch::parse(body)?;
        let name = patch
            .name
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        Ok(NewDevice {
            name,
            status: patch.status.unwrap_or(DeviceStatus::Active),
            location_ids: patch.location_ids.unwrap_or_default(),
            pim_enabled: patch.pim_enabled.unwrap_or(false),
            pim_segment_ids: patch.pim_segment_ids.unwrap_or_default(),
        })
    }
}

/// The optional body of a key rotation: `{"gracePeriodSeconds": n}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRotation {
    /// How long the old key keeps working beside the new one.
    pub grace_period_seconds: u64,
}

/// The longest grace period a rotation may give the old key (7 days).
pub const MAX_GRACE_PERIOD_SECONDS: u64 = 604_800;

impl KeyRotation {
    pub fn parse(body: &Map<String, Value>) -> Result<KeyRotation, ApiError> {
        const FIELD: &str = "gracePeriodSeconds";
        if let Some(unknown) = body.keys().find(|k| k.as_str() != FIELD) {
            return Err(ApiError::invalid(unknown, "unknown field"));
        }
        let grace_period_seconds = match body.get(FIELD) {
            None => 0,
            // JSON has one number type: 60.0 is the integer 60, as JSON
            // Schema's `integer` says.
            Some(value) => value
                .as_u64()
                .or_else(|| {
                    value
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                        .map(|f| f as u64)
                })
                .filter(|n| *n <= MAX_GRACE_PERIOD_SECONDS)
                .ok_or_else(|| {
                    ApiError::invalid(
                        FIELD,
                        format!("must be a whole number of seconds from 0 to {MAX_GRACE_PERIOD_SECONDS}"),
                    )
                })?,
        };
        Ok(KeyRotation {
            grace_period_seconds,
        })
    }
}

fn parse_settable_status(value: &Value) -> Result<DeviceStatus, ApiError> {
    match value.as_str().map(DeviceStatus::parse) {
        Some(Some(DeviceStatus::Revoked)) => Err(ApiError::invalid(
            "status",
            "\"revoked\" can only be set by DELETE",
        )),
        Some(Some(status)) => Ok(status),
        _ => Err(ApiError::invalid(
            "status",
            "must be \"active\" or \"inactive\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn message(err: ApiError) -> String {
        match err {
            ApiError::InvalidRequest(m) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn timestamps_have_three_fraction_digits_and_z() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Millis(1_705_312_800_007).to_rfc3339(),
            "2024-01-15T10:00:00.007Z"
        );
    }

    /// What the `time` crate makes of `ms` (the formatting used before
    /// `Millis::rfc3339`).
    fn by_the_time_crate(ms: u64) -> String {
        match time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                ms % 1000
            ),
            Err(_) => "9999-12-31T23:59:59.999Z".to_string(),
        }
    }

    #[test]
    fn an_etag_is_the_ulid_and_the_version_quoted() {
        for version in [0, 1, 9, 10, 12_345, u64::MAX] {
            let device = Device {
                id: "dev_01HZX3A8ZQ3YJ4PQ8N6Y2M5V7T".into(),
                name: "n".into(),
                status: DeviceStatus::Active,
                location_ids: vec![],
                pim_enabled: false,
                pim_segment_ids: vec![],
                created_at: Millis(0),
                updated_at: Millis(0),
                last_seen_at: None,
                version,
            };
            assert_eq!(
                device.etag(),
                format!("\"01HZX3A8ZQ3YJ4PQ8N6Y2M5V7T-{version}\"")
            );
        }
    }

    #[test]
    fn timestamps_agree_with_the_calendar_everywhere() {
        let day = 86_400_000u64;
        // Around leap days, century rules (1900 is not a leap year, 2000 and
        // 2400 are), year ends, and the last representable millisecond.
        let mut cases = vec![
            0,
            1,
            999,
            day - 1,
            951_782_400_000,     // 2000-02-29
            4_107_542_400_000,   // 2100-03-01
            13_574_563_200_000,  // 2400-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000,
            u64::MAX,
        ];
        // Every day of 1970-2500 at a moving time of day, and a spread of
        // larger values.
        let mut ms = 0u64;
        while ms < 16_725_225_600_000 {
            cases.push(ms);
            ms += day + 3_723_457;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x % 260_000_000_000_000);
        }
        for ms in cases {
            assert_eq!(Millis(ms).to_rfc3339(), by_the_time_crate(ms), "{ms}");
        }
        let shown = serde_json::to_value(Device {
            id: "dev_01HZX3A8ZQ3YJ4PQ8N6Y2M5V7T".into(),
            name: "n".into(),
            status: DeviceStatus::Active,
            location_ids: vec![],
            pim_enabled: false,
            pim_segment_ids: vec![],
            created_at: Millis(1_705_312_800_007),
            updated_at: Millis(951_782_400_000),
            last_seen_at: Some(Millis(0)),
            version: 1,
        })
        .unwrap();
        assert_eq!(shown["createdAt"], "2024-01-15T10:00:00.007Z");
        assert_eq!(shown["updatedAt"], "2000-02-29T00:00:00.000Z");
        assert_eq!(shown["lastSeenAt"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_are_dev_and_a_canonical_ulid() {
        let u = ulid::Ulid::new();
        let text = id::format(u);
        assert!(text.starts_with("dev_"));
        assert_eq!(id::parse(&text), Some(u));
        assert_eq!(id::parse(&text.to_lowercase()), None);
        assert_eq!(id::parse("dev_abc123"), None);
        assert_eq!(id::parse(&text[4..]), None);
    }

    #[test]
    fn ids_have_the_documented_shape() {
        for _ in 0..200 {
            let text = id::format(ulid::Ulid::new());
            let body = text.strip_prefix("dev_").unwrap();
            assert_eq!(body.len(), 26);
            assert!(('0'..='7').contains(&body.chars().next().unwrap()));
            assert!(body
                .chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)));
        }
        // The largest ULID still fits the pattern's first character.
        assert!(id::format(ulid::Ulid::from(u128::MAX)).starts_with("dev_7"));
    }

    #[test]
    fn registration_defaults_and_requires_a_name() {
        let new = NewDevice::parse(&obj(json!({"name": "  Scanner 1 "}))).unwrap();
        assert_eq!(new.name.as_str(), "Scanner 1");
        assert_eq!(new.status, DeviceStatus::Active);
        assert!(!new.pim_enabled);
        assert!(new.location_ids.is_empty());
        assert_eq!(
            message(NewDevice::parse(&obj(json!({}))).unwrap_err()),
            "name: is required"
        );
    }

    #[test]
    fn patch_refuses_unknown_null_wrong_type_and_revoked() {
        let err = |v| message(DevicePatch::parse(&obj(v)).unwrap_err());
        assert_eq!(err(json!({"colour": "red"})), "colour: unknown field");
        assert_eq!(err(json!({"id": "dev_x"})), "id: unknown field");
        assert_eq!(err(json!({"name": null})), "name: must not be null");
        assert_eq!(
            err(json!({"pimEnabled": "yes"})),
            "pimEnabled: must be a boolean"
        );
        assert!(err(json!({"status": "revoked"})).starts_with("status:"));
        assert!(err(json!({"status": "ACTIVE"})).starts_with("status:"));
        assert_eq!(
            DevicePatch::parse(&Map::new()).unwrap(),
            DevicePatch::default()
        );
    }

    #[test]
    fn rotation_takes_an_optional_grace_period_of_at_most_a_week() {
        let parse = |v| KeyRotation::parse(&obj(v)).map(|r| r.grace_period_seconds);
        assert_eq!(parse(json!({})).unwrap(), 0);
        assert_eq!(parse(json!({"gracePeriodSeconds": 0})).unwrap(), 0);
        assert_eq!(
            parse(json!({"gracePeriodSeconds": 604800})).unwrap(),
            604_800
        );
        for bad in [
            json!({"gracePeriodSeconds": 604801}),
            json!({"gracePeriodSeconds": 604801.0}),
            json!({"gracePeriodSeconds": -0.5}),
            json!({"gracePeriodSeconds": -1}),
            json!({"gracePeriodSeconds": 1.5}),
            json!({"gracePeriodSeconds": "60"}),
            json!({"gracePeriodSeconds": null}),
        ] {
            assert!(
                message(parse(bad.clone()).unwrap_err()).starts_with("gracePeriodSeconds:"),
                "{bad}"
            );
        }
        assert_eq!(
            message(parse(json!({"grace": 5})).unwrap_err()),
            "grace: unknown field"
        );
    }

    #[test]
    fn if_match_compares_strongly() {
        assert!(IfMatch::parse("*").matches("\"x-1\""));
        assert!(IfMatch::parse("\"a-1\", \"x-1\"").matches("\"x-1\""));
        assert!(!IfMatch::parse("W/\"x-1\"").matches("\"x-1\""));
        assert!(!IfMatch::parse("x-1").matches("\"x-1\""));
    }

    #[test]
    fn apply_reports_only_real_changes() {
        let mut device = Device {
            id: id::format(ulid::Ulid::new()),
            name: "A".into(),
            status: DeviceStatus::Active,
            location_ids: vec!["loc_1".into()],
            pim_enabled: false,
            pim_segment_ids: vec![],
            created_at: Millis(1),
            updated_at: Millis(1),
            last_seen_at: None,
            version: 1,
        };
        let same = DevicePatch::parse(&obj(
            json!({"name": "A", "locationIds": ["loc_1", "loc_1"]}),
        ))
        .unwrap();
        assert!(!same.apply(&mut device));
        let change = DevicePatch::parse(&obj(json!({"pimEnabled": true}))).unwrap();
        assert!(change.apply(&mut device));
        assert!(device.pim_enabled);
    }
}
