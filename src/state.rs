//! What every request handler shares.

use std::sync::Arc;

use crate::auth::token::TokenVerifier;
use crate::store::Store;

pub struct AppState {
    pub store: Arc<Store>,
    pub tokens: TokenVerifier,
}
