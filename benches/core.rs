//! Micro-benchmarks of the hot paths: `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use devicehub::auth::device_key::{self, NewDeviceKey};
use devicehub::auth::token::{mint_hs256, TokenRequest, TokenVerifier, VerificationKey};
use devicehub::devices::{Millis, NewDevice};
use devicehub::store::{Embedded, ListQuery};
use serde_json::{json, Value};

const SECRET: &[u8] = b"bench-secret-0123456789abcdef0123456789";

fn token() -> String {
    mint_hs256(
        SECRET,
        &TokenRequest {
            tenant_id: "acme",
            scope: "devices:read",
            ttl_secs: 3600,
            subject: Some("bench"),
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(VerificationKey::Hs256(SECRET.to_vec()), None, None)
}

fn tokens(c: &mut Criterion) {
    let token = token();
    c.bench_function("token: verify, first time", |b| {
        b.iter_batched(
            verifier,
            |v| v.verify(black_box(&token)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let warm = verifier();
    warm.verify(&token).unwrap();
    c.bench_function("token: verify, cached", |b| {
        b.iter(|| warm.verify(black_box(&token)).unwrap())
    });
    let key = NewDeviceKey::generate().unwrap().key;
    c.bench_function("device key: shape check and SHA-256", |b| {
        b.iter(|| {
            assert!(device_key::is_well_formed(black_box(&key)));
            device_key::hash(black_box(&key))
        })
    });
}

fn bodies(c: &mut Criterion) {
    let body = json!({
        "name": "  Checkout Scanner 12 ",
        "locationIds": ["store-berlin-mitte", "store-berlin-mitte", "warehouse-leipzig"],
        "status": "active",
        "pimEnabled": true,
        "pimSegmentIds": ["seg_fresh", "seg_bakery"]
    })
    .to_string();
    c.bench_function("body: JSON parse and field rules", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(body.as_bytes())).unwrap();
            NewDevice::parse(value.as_object().unwrap()).unwrap()
        })
    });
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&dir.path().join("bench.redb")).unwrap();
    let rt = actix_web::rt::System::new();
    let mut ids = Vec::new();
    rt.block_on(async {
        for i in 0..1000 {
            let new = NewDevice::parse(
                json!({"name": format!("Device {i}"), "locationIds": ["loc-1"]})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let key = NewDeviceKey::generate().unwrap();
            ids.push(
                store
                    .create("acme", new, key.hash, Millis::now(), None, None)
                    .await
                    .unwrap()
                    .id,
            );
        }
    });
    let id = ids[500].clone();
    c.bench_function("store: get one device", |b| {
        b.iter(|| store.get("acme", black_box(&id)).unwrap())
    });
    let query = ListQuery {
        limit: Some(100),
        ..Default::default()
    };
    c.bench_function("store: list 100 devices", |b| {
        b.iter(|| store.list("acme", black_box(&query)).unwrap())
    });
    let device = store.get("acme", &id).unwrap();
    c.bench_function("device: serialise to JSON", |b| {
        b.iter(|| serde_json::to_vec(black_box(&device)).unwrap())
    });
}

criterion_group!(benches, tokens, bodies, store);
criterion_main!(benches);
