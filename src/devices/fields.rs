//! Field values that only exist when valid (API.md §3, "Field rules").

use serde_json::Value;

use crate::error::ApiError;

pub const NAME_MAX_CHARS: usize = 200;
pub const TAGS_MAX_ENTRIES: usize = 100;
pub const TAG_MAX_CHARS: usize = 64;

/// A display name: trimmed, 1-200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    pub fn parse(field: &str, value: &Value) -> Result<DeviceName, ApiError> {
        let text = value
            .as_str()
            .ok_or_else(|| ApiError::invalid(field, "must be a string"))?;
        DeviceName::new(text).map_err(|m| ApiError::invalid(field, m))
    }

    pub fn new(text: &str) -> Result<DeviceName, &'static str> {
        let trimmed = text.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > NAME_MAX_CHARS {
            return Err("must be 1-200 characters after trimming white space");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        if trimmed.chars().any(is_bidi_control) {
            return Err(
                "must not contain bidirectional embedding, override or isolate characters (U+202A-U+202E, U+2066-U+2069)",
            );
        }
        Ok(DeviceName(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The characters that reorder the text around them where a name is shown
/// (embeddings, overrides and isolates), as in CVE-2021-42574.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A list of location or PIM segment ids: at most 100 as sent, each 1-64
/// characters of `A-Z a-z 0-9 _ - . :`, duplicates dropped (first kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList(Vec<String>);

impl TagList {
    pub fn parse(field: &str, value: &Value) -> Result<TagList, ApiError> {
        let items = value
            .as_array()
            .ok_or_else(|| ApiError::invalid(field, "must be an array of strings"))?;
        if items.len() > TAGS_MAX_ENTRIES {
            return Err(ApiError::invalid(
                field,
                format!("must have at most {TAGS_MAX_ENTRIES} entries"),
            ));
        }
        let mut tags: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let tag = item
                .as_str()
                .ok_or_else(|| ApiError::invalid(format!("{field}[{i}]"), "must be a string"))?;
            if !is_tag(tag) {
                return Err(ApiError::invalid(
                    format!("{field}[{i}]"),
                    "must be 1-64 characters of A-Z a-z 0-9 _ - . :",
                ));
            }
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        Ok(TagList(tags))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.clone()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// Whether `text` is a valid location or segment id (also used for the
/// `locationId` list filter).
pub fn is_tag(text: &str) -> bool {
    (1..=TAG_MAX_CHARS).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name_err(v: Value) -> String {
        match DeviceName::parse("name", &v).unwrap_err() {
            ApiError::InvalidRequest(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded_in_characters() {
        assert_eq!(
            DeviceName::parse("name", &json!("\u{3000} Kasse 1\t\n"))
                .unwrap()
                .as_str(),
            "Kasse 1"
        );
        assert!(DeviceName::new(&"é".repeat(200)).is_ok());
        assert!(DeviceName::new(&"é".repeat(201)).is_err());
        assert!(name_err(json!("   ")).starts_with("name: must be 1-200"));
        assert_eq!(
            name_err(json!("a\u{7}b")),
            "name: must not contain control characters"
        );
        assert_eq!(name_err(json!(5)), "name: must be a string");
    }

    #[test]
    fn names_refuse_bidirectional_controls() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let err = name_err(json!(format!("Kasse {c}1")));
            assert!(
                err.starts_with("name: must not contain bidirectional"),
                "{c:?}: {err}"
            );
        }
        // Neighbours and the plain marks stay allowed.
        for c in [
            '\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}', '\u{200E}', '\u{200F}',
        ] {
            assert!(DeviceName::new(&format!("Kasse {c}1")).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn tag_lists_check_each_entry_and_drop_duplicates() {
        let tags = TagList::parse("locationIds", &json!(["b", "a", "b", "loc:1.x-y_z"])).unwrap();
        assert_eq!(tags.to_vec(), vec!["b", "a", "loc:1.x-y_z"]);
        let err = TagList::parse("locationIds", &json!(["ok", "ok", "bad space"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "locationIds[2]: must be 1-64 characters of A-Z a-z 0-9 _ - . :"
        );
        assert!(TagList::parse("x", &json!(["a".repeat(64)])).is_ok());
        assert!(TagList::parse("x", &json!(["a".repeat(65)])).is_err());
        assert!(TagList::parse("x", &json!([""])).is_err());
        assert!(TagList::parse("x", &json!(["ü"])).is_err());
        assert!(TagList::parse("x", &json!("loc")).is_err());
        assert!(TagList::parse("x", &json!([1])).is_err());
    }

    #[test]
    fn the_entry_limit_counts_entries_as_sent() {
        let hundred_same: Vec<&str> = vec!["a"; 100];
        assert_eq!(
            TagList::parse("x", &json!(hundred_same)).unwrap().to_vec(),
            vec!["a"]
        );
        let too_many: Vec<&str> = vec!["a"; 101];
        assert!(TagList::parse("x", &json!(too_many)).is_err());
    }
}
