//! Who may call: tenant access tokens (JWT, scopes) and device API keys.

pub mod device_key;
pub mod guard;
pub mod secret;
pub mod token;
