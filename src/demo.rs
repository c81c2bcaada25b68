//! `serve --demo`: a convincing first five minutes for a sales demo. Seeds a
//! demo tenant into an empty database and prints, once, a dashboard URL that
//! signs in as admin plus a read-only token.

use std::net::SocketAddr;

use serde_json::json;

use crate::auth::device_key::NewDeviceKey;
use crate::auth::token::{mint_hs256, TokenRequest};
use crate::config::Settings;
use crate::devices::{Millis, NewDevice};
use crate::error::StartupError;
use crate::store::postgres::Postgres;
use crate::store::Store;

pub const TENANT: &str = "demo";
const TOKEN_TTL_SECS: u64 = 12 * 3600;

/// (name, location, status, PIM segments; empty = PIM off)
const FLEET: &[(&str, &str, &str, &[&str])] = &[
    (
        "Checkout Scanner 1",
        "store-berlin-mitte",
        "active",
        &["seg_fresh", "seg_bakery"],
    ),
    (
        "Checkout Scanner 2",
        "store-berlin-mitte",
        "active",
        &["seg_fresh"],
    ),
    ("Checkout Scanner 3", "store-berlin-mitte", "inactive", &[]),
    (
        "Handheld Stock Scanner",
        "store-berlin-mitte",
        "active",
        &[],
    ),
    (
        "Shelf Label Gateway",
        "store-berlin-mitte",
        "active",
        &["seg_beverages"],
    ),
    (
        "Checkout Scanner 1",
        "store-hamburg-altona",
        "active",
        &["seg_fresh"],
    ),
    ("Checkout Scanner 2", "store-hamburg-altona", "active", &[]),
    (
        "Price Check Kiosk",
        "store-hamburg-altona",
        "active",
        &["seg_beverages", "seg_household"],
    ),
    (
        "Handheld Stock Scanner",
        "store-hamburg-altona",
        "inactive",
        &[],
    ),
    (
        "Checkout Scanner 1",
        "store-munich-zentrum",
        "active",
        &["seg_fresh", "seg_dairy"],
    ),
    (
        "Self-Checkout Lane A",
        "store-munich-zentrum",
        "active",
        &[],
    ),
    (
        "Self-Checkout Lane B",
        "store-munich-zentrum",
        "active",
        &[],
    ),
    ("Old Handheld (lost)", "store-munich-zentrum", "active", &[]),
    ("Goods-In Scanner", "warehouse-leipzig", "active", &[]),
    ("Pallet Label Printer", "warehouse-leipzig", "inactive", &[]),
    (
        "Forklift Terminal 7",
        "warehouse-leipzig",
        "active",
        &["seg_logistics"],
    ),
];

/// The one device the demo shows as revoked.
const REVOKED: &str = "Old Handheld (lost)";

fn fail(e: crate::store::StoreError) -> StartupError {
    StartupError::new(format!("demo: cannot seed: {e}"))
}

/// Seeds the demo fleet if no device exists yet; says whether it did. On
/// PostgreSQL, under a lock: instances starting together seed it once.
pub async fn seed(store: &Store) -> Result<bool, StartupError> {
    let Store::Postgres(shared) = store else {
        return seed_if_empty(store).await;
    };
    let lock = shared.lock_demo().await.map_err(fail)?;
    let seeded = seed_if_empty(store).await;
    Postgres::unlock_demo(lock).await;
    seeded
}

async fn seed_if_empty(store: &Store) -> Result<bool, StartupError> {
    if !store.is_empty().await.map_err(fail)? {
        return Ok(false);
    }
    let now = Millis::now().0;
    let day = 86_400_000;
    for (i, (name, location, status, segments)) in FLEET.iter().enumerate() {
        let body = json!({
            "name": name,
            "locationIds": [location],
            "status": status,
            "pimEnabled": !segments.is_empty(),
            "pimSegmentIds": segments,
        });
        let new = body
            .as_object()
            .ok_or_else(|| StartupError::new("demo: bad fleet entry"))
            .and_then(|o| {
                NewDevice::parse(o).map_err(|e| StartupError::new(format!("demo: {e}")))
            })?;
        let key = NewDeviceKey::generate()
            .map_err(|e| StartupError::new(format!("demo: no randomness: {e}")))?;
        // Registered over the past weeks, in fleet order.
        let created = Millis(now - (40 - i as u64) * day + (i as u64 * 3_600_000));
        let device = store
            .create(TENANT, new, key.hash, created, None, None)
            .await
            .map_err(fail)?;
        if *name == REVOKED {
            store
                .revoke(TENANT, &device.id, Millis(now - 3 * day))
                .await
                .map_err(fail)?;
        } else if *status == "active" {
            // Recent check-ins, a few minutes to a few hours ago.
            let ago = 60_000 * (2 + (i as u64 * 37) % 300);
            store.touch(TENANT, &device.id, Millis(now - ago));
        }
    }
    Ok(true)
}

/// The banner printed once the server is ready: the only place a token is
/// ever printed.
pub fn banner(settings: &Settings, addr: SocketAddr) -> Result<String, StartupError> {
    if settings.auth.public_key_file.is_some() {
        return Err(StartupError::new(
            "--demo: auth.public_key_file is set, so devicehub cannot sign demo tokens; run the demo with the default HS256 secret",
        ));
    }
    let secret = crate::auth::secret::load_or_create(settings)?;
    let mint = |scope: &str, subject: &str| {
        mint_hs256(
            &secret,
            &TokenRequest {
                tenant_id: TENANT,
                scope,
                ttl_secs: TOKEN_TTL_SECS,
                subject: Some(subject),
                issuer: settings.auth.issuer.as_deref(),
                audience: settings.auth.audience.as_deref(),
            },
        )
    };
    let admin = mint("devices:read admin", "demo-admin")?;
    let reader = mint("devices:read", "demo-viewer")?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!(
        "\ndevicehub demo is ready (tenant \"{TENANT}\", tokens valid 12 h)\n\n  Dashboard (signed in as admin):\n    {scheme}://{host}/#token={admin}\n\n  Admin token:\n    {admin}\n\n  Read-only token (devices:read):\n    {reader}\n\n  Try: curl -H \"Authorization: Bearer <token>\" {scheme}://{host}/api/tenant/devices\n"
    ))
}
