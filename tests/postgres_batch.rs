//! PostgreSQL's group commit (`store/postgres/batch.rs`): many changes at
//! once, from many clients, keep the contract of one change at a time:
//! `If-Match` has one winner, every change has its own version, ETag and
//! event, and the event feed's `previousAttributes` chain agrees with the
//! devices' final state.
//!
//! These need a cluster (`DEVICEHUB_TEST_PG_CLUSTER` or
//! `DEVICEHUB_TEST_POSTGRES`, set by `scripts/test.sh`); without one they
//! skip, except under `CI=true`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier};

use common::{fresh_database, pg_cluster, spawn_app_with, token_for, TestApp};
use serde_json::{json, Value};

fn app_on_postgres(test: &str) -> Option<Arc<TestApp>> {
    let base = pg_cluster(test)?;
    let app = spawn_app_with(|settings| {
        settings.postgres = Some(devicehub::config::PostgresSettings {
            url: fresh_database(&base),
            ca_file: None,
        });
    });
    assert!(app.postgres_url.is_some());
    Some(Arc::new(app))
}

fn admin(tenant: &str) -> String {
    token_for(tenant, "devices:read admin")
}

fn patch(
    app: &TestApp,
    tenant: &str,
    id: &str,
    if_match: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let auth = format!("Bearer {}", admin(tenant));
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(tag) = if_match {
        headers.push(("If-Match", tag));
    }
    let body = body.to_string();
    let response = app.request(
        "PATCH",
        &format!("/api/tenant/devices/{id}"),
        &headers,
        Some(body.as_bytes()),
    );
    let etag = response.header("etag").map(str::to_string);
    let mut json = response.json();
    if let Some(etag) = etag {
        json["etag"] = Value::from(etag);
    }
    (response.status, json)
}

/// The version an answer's ETag was made from (`"<id>-<version>"`).
fn version(answer: &Value) -> u64 {
    let tag = answer["etag"].as_str().expect("an ETag");
    let (_, version) = tag.trim_matches('"').rsplit_once('-').unwrap();
    version.parse().unwrap()
}

/// Every event of `tenant`, a page at a time.
fn all_events(app: &TestApp, tenant: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let query = match out.last() {
            Some(last) => format!("?limit=100&startingAfter={}", last["id"].as_str().unwrap()),
            None => "?limit=100".to_string(),
        };
        let page = app.get(
            &format!("/api/tenant/events{query}"),
            &token_for(tenant, "devices:read"),
        );
        assert_eq!(page.status, 200);
        let data = page.json()["data"].as_array().unwrap().clone();
        if data.is_empty() {
            return out;
        }
        out.extend(data);
    }
}

#[test]
fn fifty_patches_with_one_etag_have_exactly_one_winner() {
    let Some(app) = app_on_postgres("fifty_patches_with_one_etag_have_exactly_one_winner") else {
        return;
    };
    let (device, _) = app.register(&admin("acme"), json!({"name": "Scanner"}));
    let id = device["id"].as_str().unwrap().to_string();
    let path = format!("/api/tenant/devices/{id}");
    let etag = app
        .get(&path, &admin("acme"))
        .header("etag")
        .unwrap()
        .to_string();

    let gate = Arc::new(Barrier::new(50));
    let racers: Vec<_> = (0..50)
        .map(|n| {
            let (app, gate, id, etag) = (app.clone(), gate.clone(), id.clone(), etag.clone());
            std::thread::spawn(move || {
                gate.wait();
                patch(
                    &app,
                    "acme",
                    &id,
                    Some(&etag),
                    &json!({"name": format!("Racer {n}")}),
                )
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (status, body) in &answers {
        if *status != 200 {
            assert_eq!(*status, 412, "{body}");
            assert_eq!(body["error"]["code"], "precondition_failed", "{body}");
        }
    }
    let winner = winners[0];
    assert_eq!(version(winner), 2);

    let now = app.get(&path, &admin("acme"));
    assert_eq!(now.json()["data"], winner["data"]);
    assert_eq!(now.header("etag"), winner["etag"].as_str());
    let events = all_events(&app, "acme");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["device.created", "device.updated"]);
    assert_eq!(events[1]["data"]["object"], winner["data"]);
    assert_eq!(
        events[1]["data"]["previousAttributes"],
        json!({"name": "Scanner"})
    );
}

#[test]
fn two_hundred_concurrent_patches_agree_with_the_event_feed() {
    let Some(app) = app_on_postgres("two_hundred_concurrent_patches_agree_with_the_event_feed")
    else {
        return;
    };
    let tenants = ["acme", "globex"];
    // Four devices per tenant; a revoked one in each, whose PATCHes are
    // refused among the others' and change nothing.
    let mut devices: Vec<(&str, String)> = Vec::new();
    let mut revoked: Vec<(&str, String)> = Vec::new();
    for tenant in tenants {
        for n in 0..4 {
            let (device, _) =
                app.register(&admin(tenant), json!({"name": format!("{tenant} {n}")}));
            devices.push((tenant, device["id"].as_str().unwrap().to_string()));
        }
        let (device, _) = app.register(&admin(tenant), json!({"name": "gone"}));
        let id = device["id"].as_str().unwrap().to_string();
        let path = format!("/api/tenant/devices/{id}");
        assert_eq!(app.send("DELETE", &path, &admin(tenant)).status, 200);
        revoked.push((tenant, id));
    }

    // 20 clients, 10 PATCHes each, every one a real change; each client
    // also tries a revoked device (409) once.
    let gate = Arc::new(Barrier::new(20));
    let clients: Vec<_> = (0..20)
        .map(|client| {
            let (app, gate) = (app.clone(), gate.clone());
            let devices = devices.clone();
            let revoked = revoked[client % 2].clone();
            std::thread::spawn(move || {
                gate.wait();
                let mut answers = Vec::new();
                for round in 0..10 {
                    let (tenant, id) = &devices[(client + round) % devices.len()];
                    let body = json!({
                        "name": format!("c{client} r{round}"),
                        "locationIds": [format!("loc-{client}"), format!("r{round}")],
                    });
                    let (status, answer) = patch(&app, tenant, id, None, &body);
                    assert_eq!(status, 200, "{answer}");
                    answers.push((tenant.to_string(), id.clone(), answer));
                    if round == 5 {
                        let (tenant, id) = &revoked;
                        let (status, answer) =
                            patch(&app, tenant, id, None, &json!({"name": "back"}));
                        assert_eq!(status, 409, "{answer}");
                    }
                }
                answers
            })
        })
        .collect();
    let answers: Vec<(String, String, Value)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(answers.len(), 200);

    // Each device's answers hold each version from 2 up once, and the last
    // one is the device as it is now.
    let mut by_device: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut per_tenant: BTreeMap<String, usize> = BTreeMap::new();
    for (tenant, id, answer) in answers {
        *per_tenant.entry(tenant.clone()).or_default() += 1;
        by_device.entry((tenant, id)).or_default().push(answer);
    }
    assert_eq!(by_device.len(), devices.len());
    for ((tenant, id), mut answers) in by_device {
        answers.sort_by_key(version);
        let versions: Vec<u64> = answers.iter().map(version).collect();
        let expected: Vec<u64> = (2..2 + answers.len() as u64).collect();
        assert_eq!(versions, expected, "{id}");
        let etags: HashSet<&str> = answers
            .iter()
            .map(|a| a["etag"].as_str().unwrap())
            .collect();
        assert_eq!(etags.len(), answers.len(), "one ETag per version");
        let now = app.get(&format!("/api/tenant/devices/{id}"), &admin(&tenant));
        let last = answers.last().unwrap();
        assert_eq!(now.json()["data"], last["data"]);
        assert_eq!(now.header("etag"), last["etag"].as_str());

        // The device's events: created, then one update per answer, in
        // version order, each update's previousAttributes the object of
        // the event before it.
        let events: Vec<Value> = all_events(&app, &tenant)
            .into_iter()
            .filter(|e| e["deviceId"] == id.as_str())
            .collect();
        assert_eq!(events.len(), 1 + answers.len(), "{id}");
        assert_eq!(events[0]["type"], "device.created");
        for (k, pair) in events.windows(2).enumerate() {
            let (before, event) = (&pair[0], &pair[1]);
            assert_eq!(event["type"], "device.updated");
            assert_eq!(event["data"]["object"], answers[k]["data"], "{id}");
            let previous = &event["data"]["previousAttributes"];
            assert_eq!(previous["name"], before["data"]["object"]["name"], "{id}");
            assert_eq!(
                previous["locationIds"], before["data"]["object"]["locationIds"],
                "{id}"
            );
        }
    }

    // The whole feed of each tenant: ids increasing, one event per
    // registration, revocation and change, and nothing for the refusals.
    for tenant in tenants {
        let events = all_events(&app, tenant);
        let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{tenant}: ids increase"
        );
        assert_eq!(events.len(), 5 + 1 + per_tenant[tenant], "{tenant}");
        let (_, gone) = revoked.iter().find(|(t, _)| *t == tenant).unwrap();
        let gone_events = events
            .iter()
            .filter(|e| e["deviceId"] == gone.as_str())
            .count();
        assert_eq!(gone_events, 2, "created and revoked only");
        let stats = app.get("/api/tenant/stats", &admin(tenant));
        assert_eq!(stats.status, 200);
        let counts = &stats.json()["data"];
        assert_eq!(
            (&counts["total"], &counts["revoked"]),
            (&json!(5), &json!(1)),
            "{counts}"
        );
    }
}
