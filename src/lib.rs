//! devicehub: a device registry serving the Devices API over an embedded redb
//! database. `main.rs` only parses the command line; everything else is here.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod devices;
pub mod error;
pub mod events;
pub mod files;
pub mod healthcheck;
pub mod http;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod store;
pub mod tls;
pub mod webhooks;
