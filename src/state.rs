//! What every request handler shares.

use std::sync::Arc;

use crate::auth::token::TokenVerifier;
use crate::config::LimitSettings;
use crate::http::ListGate;
use crate::idempotency::InFlight;
use crate::store::Store;
use crate::webhooks::worker::DeliverySettings;

pub struct AppState {
    pub store: Arc<Store>,
    pub tokens: TokenVerifier,
    pub limits: LimitSettings,
    /// Admission for unlimited (streamed) lists.
    pub lists: ListGate,
    /// `Idempotency-Key`s whose request is under way.
    pub idempotency: InFlight,
    /// `webhooks.*`: test deliveries follow the same address rules.
    pub webhooks: DeliverySettings,
}
