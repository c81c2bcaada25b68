//! Request bodies as the server reads them: JSON, then the field rules of a
//! registration and of a PATCH. Nothing may panic; an accepted body must hold
//! the rules.
#![no_main]

use devicehub::devices::{is_tag, DevicePatch, NewDevice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(new) = NewDevice::parse(&body) {
        let name = new.name.as_str();
        assert!(!name.is_empty() && name.chars().count() <= 200 && name.trim() == name);
        assert!(new.location_ids.to_vec().iter().all(|t| is_tag(t)));
    }
    if let Ok(patch) = DevicePatch::parse(&body) {
        if let Some(tags) = patch.pim_segment_ids {
            assert!(tags.to_vec().iter().all(|t| is_tag(t)));
        }
    }
});
