//! The dashboard in real headless Chromium (Debian's chromium and
//! chromium-driver, over WebDriver): sign in, list, filter, register and read
//! the key once, edit, the 412 conflict, rotate, revoke, the read-only view.

mod common;
mod webdriver;

use common::{token_for, TestApp};
use serde_json::{json, Value};
use webdriver::Browser;

fn admin() -> String {
    token_for("acme", "devices:read admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

fn rows(browser: &Browser) -> Vec<(String, String, String)> {
    // One script call for the whole table: a command per cell would take
    // minutes over a thousand rows.
    let found = browser.script(
        "return Array.from(document.querySelectorAll('#device-table tbody tr[data-id]')).map(r => \
         [r.dataset.id, r.dataset.status, (r.querySelector('.cell-name') || {}).innerText || ''])",
        json!([]),
    );
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cell = |i: usize| r[i].as_str().unwrap_or_default().trim().to_string();
            (cell(0), cell(1), cell(2))
        })
        .collect()
}

fn wait_rows(
    browser: &Browser,
    what: &str,
    check: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    browser.wait_for(what, || {
        let now = rows(browser);
        check(&now).then_some(now)
    })
}

/// The page logged no error of its own. The browser logs each refused
/// request (a 412, a 401) as a failed resource load: those are expected.
fn assert_no_page_errors(browser: &Browser) {
    let errors: Vec<String> = browser
        .console_errors()
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// Waits until the input `css` holds `expected`.
fn wait_for_value(browser: &Browser, css: &str, expected: &str) {
    let script = format!("return document.querySelector('{css}').value");
    browser.wait_for(&format!("{css} to read {expected:?}"), || {
        (browser.script(&script, json!([])) == json!(expected)).then_some(())
    });
}

fn row_of(browser: &Browser, id: &str) -> webdriver::Element {
    browser.find(&format!("#device-table tbody tr[data-id='{id}']"))
}

fn device(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/tenant/devices/{id}"), &reader())
        .json()["data"]
        .clone()
}

#[test]
fn the_dashboard_end_to_end() {
    let app = common::spawn_app();
    let (scanner, scanner_key) = app.register(
        &admin(),
        json!({"name": "Checkout Scanner 1", "locationIds": ["store-a"]}),
    );
    app.register(
        &admin(),
        json!({"name": "Shelf Gateway", "locationIds": ["store-b"], "status": "inactive"}),
    );
    app.register(&admin(), json!({"name": "Kiosk", "locationIds": ["store-a"], "pimEnabled": true, "pimSegmentIds": ["seg-1"]}));
    let base = format!("http://{}", app.addr);
    let browser = Browser::start();

    // Signed in from the demo-style URL; the token leaves the address bar.
    browser.goto(&format!("{base}/#token={}", admin()));
    browser.wait_for("the tenant", || {
        (browser.text("#tenant") == "acme").then_some(())
    });
    assert!(browser.text("#scopes").contains("admin"));
    assert_eq!(browser.script("return location.hash", json!([])), json!(""));
    assert_eq!(
        browser.script(
            "return sessionStorage.length > 0 && localStorage.length === 0",
            json!([])
        ),
        json!(true),
        "the token is kept in sessionStorage only"
    );
    let listed = wait_rows(&browser, "three rows", |r| r.len() == 3);
    assert_eq!(listed[0].2, "Checkout Scanner 1", "creation order");
    std::fs::create_dir_all("target").unwrap();
    std::fs::write("target/dashboard.png", browser.screenshot_png()).unwrap();

    // Filters: status on the server, name search in the page.
    browser.click("#status-filter option[value='inactive']");
    wait_rows(&browser, "only inactive rows", |r| {
        r.len() == 1 && r[0].1 == "inactive"
    });
    browser.click("#status-filter option[value='']");
    wait_rows(&browser, "all rows again", |r| r.len() == 3);
    browser.type_into("#search", "kiosk");
    wait_rows(&browser, "the search hit", |r| {
        r.len() == 1 && r[0].2 == "Kiosk"
    });
    browser.clear("#search");
    browser.type_into("#search", " ");
    browser.clear("#search");
    wait_rows(&browser, "all rows after clearing the search", |r| {
        r.len() == 3
    });

    // Keyboard: the dialog takes the focus, and Escape closes it.
    browser.click("#register-open");
    browser.find("#register-dialog");
    browser.wait_for("focus inside the dialog", || {
        (browser.script(
            "return document.activeElement && document.activeElement.closest('#register-dialog') !== null",
            json!([]),
        ) == json!(true))
        .then_some(())
    });
    browser.type_into("#reg-name", "\u{E00C}");
    browser.wait_for("Escape to close the dialog", || {
        (!browser.shown("#register-dialog")).then_some(())
    });

    // Register: bad input is stopped in the form, good input shows the key once.
    browser.click("#register-open");
    browser.find("#register-dialog");
    browser.type_into("#reg-locations", "has space");
    browser.click("#reg-submit");
    browser.wait_for("field errors", || {
        (!browser.text("#reg-name-error").is_empty()
            && !browser.text("#reg-locations-error").is_empty())
        .then_some(())
    });
    assert_eq!(
        app.get("/api/tenant/devices", &reader()).json()["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    browser.type_into("#reg-name", "Forklift Terminal");
    browser.clear("#reg-locations");
    browser.type_into("#reg-locations", "store-c, store-c");
    browser.click("#reg-submit");
    let key = browser.wait_for("the new key", || {
        let text = browser.text("#key-value");
        text.starts_with("dhk_").then_some(text)
    });
    assert_eq!(
        app.get("/api/device/me", &key).json()["data"]["name"],
        "Forklift Terminal"
    );
    browser.click("#key-done");
    let listed = wait_rows(&browser, "the new row", |r| r.len() == 4);
    let forklift = listed
        .iter()
        .find(|r| r.2 == "Forklift Terminal")
        .unwrap()
        .0
        .clone();
    assert_eq!(device(&app, &forklift)["locationIds"], json!(["store-c"]));
    assert!(
        !browser.shown("#key-dialog"),
        "the key is gone once dismissed"
    );

    // Edit.
    let row = row_of(&browser, scanner["id"].as_str().unwrap());
    browser.click_element(&browser.within(&row, ".edit")[0]);
    browser.find("#edit-dialog");
    wait_for_value(&browser, "#edit-name", "Checkout Scanner 1");
    browser.clear("#edit-name");
    browser.type_into("#edit-name", "Checkout Scanner 1A");
    browser.click("#edit-submit");
    let scanner_id = scanner["id"].as_str().unwrap().to_string();
    wait_rows(&browser, "the renamed row", |r| {
        r.iter()
            .any(|x| x.0 == scanner_id && x.2 == "Checkout Scanner 1A")
    });
    assert_eq!(device(&app, &scanner_id)["name"], "Checkout Scanner 1A");

    // Someone else changes the device while the form is open: 412, then reload.
    let row = row_of(&browser, &scanner_id);
    browser.click_element(&browser.within(&row, ".edit")[0]);
    browser.find("#edit-dialog");
    wait_for_value(&browser, "#edit-name", "Checkout Scanner 1A");
    let elsewhere = app.send_json(
        "PATCH",
        &format!("/api/tenant/devices/{scanner_id}"),
        &admin(),
        &json!({"name": "Changed Elsewhere"}),
    );
    assert_eq!(elsewhere.status, 200);
    browser.clear("#edit-name");
    browser.type_into("#edit-name", "Mine");
    browser.click("#edit-submit");
    browser.find("#edit-conflict");
    assert_eq!(
        device(&app, &scanner_id)["name"],
        "Changed Elsewhere",
        "the stale edit changed nothing"
    );
    browser.click("#edit-reload");
    wait_for_value(&browser, "#edit-name", "Changed Elsewhere");
    browser.script("document.querySelector('#edit-dialog').close()", json!([]));

    // Rotate: a new key, shown once; the old one stops at once.
    let row = row_of(&browser, &scanner_id);
    browser.click_element(&browser.within(&row, ".rotate")[0]);
    browser.find("#confirm-dialog");
    browser.click("#confirm-ok");
    let new_key = browser.wait_for("the rotated key", || {
        let text = browser.text("#key-value");
        (text.starts_with("dhk_") && text != key).then_some(text)
    });
    browser.click("#key-done");
    assert_eq!(app.get("/api/device/me", &scanner_key).status, 401);
    assert_eq!(app.get("/api/device/me", &new_key).status, 200);

    // Revoke: the confirmation names the device; the row reads as final.
    let row = row_of(&browser, &scanner_id);
    browser.click_element(&browser.within(&row, ".revoke")[0]);
    assert!(browser
        .text("#confirm-message")
        .contains("Changed Elsewhere"));
    browser.click("#confirm-ok");
    wait_rows(&browser, "the revoked row", |r| {
        r.iter().any(|x| x.0 == scanner_id && x.1 == "revoked")
    });
    let row = row_of(&browser, &scanner_id);
    assert!(browser
        .within(&row, ".edit, .rotate, .revoke")
        .iter()
        .all(|b| !browser.displayed(b)));
    assert_eq!(device(&app, &scanner_id)["status"], "revoked");
    assert_eq!(
        app.get("/api/device/me", &new_key).error_code(),
        "device_revoked"
    );

    assert_no_page_errors(&browser);

    // Read-only: the same list, no write controls at all.
    browser.click("#signout");
    browser.find("#signin");
    browser.type_into("#token-input", &reader());
    browser.click("#signin-button");
    wait_rows(&browser, "the list for the reader", |r| r.len() == 4);
    assert!(!browser.text("#scopes").contains("admin"));
    assert!(!browser.shown("#register-open"));
    assert!(!browser.shown("#device-table .edit, #device-table .rotate, #device-table .revoke"));

    // A tablet-width window still shows the table.
    browser.set_window(768, 1024);
    assert!(browser.shown("#device-table"));

    // A bad token is refused with the server's message.
    browser.click("#signout");
    browser.type_into("#token-input", "not-a-token");
    browser.click("#signin-button");
    browser.wait_for("a sign-in error", || {
        (!browser.text("#signin-error").is_empty()).then_some(())
    });
    assert_no_page_errors(&browser);
}

#[test]
fn a_large_fleet_pages_smoothly() {
    let app = common::spawn_app();
    let rt = actix_web::rt::System::new();
    // 1,050 devices straight into the store (through the HTTP stack this
    // would only make the test slower).
    rt.block_on(async {
        for i in 0..1050 {
            let new = devicehub::devices::NewDevice::parse(
                json!({"name": format!("Device {i:04}")})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let key = devicehub::auth::device_key::NewDeviceKey::generate().unwrap();
            app.store
                .create(
                    "acme",
                    new,
                    key.hash,
                    devicehub::devices::Millis::now(),
                    None,
                    None,
                )
                .await
                .unwrap();
        }
    });
    let browser = Browser::start();
    browser.goto(&format!("http://{}/#token={}", app.addr, reader()));
    let first = wait_rows(&browser, "the first page", |r| !r.is_empty());
    assert!(
        first.len() < 1050,
        "the first page is a page, not everything"
    );
    let mut seen = first.len();
    while browser.shown("#load-more") {
        browser.click("#load-more");
        seen = wait_rows(&browser, "another page", |r| r.len() > seen).len();
    }
    assert_eq!(seen, 1050);
    assert!(
        browser.text("#device-count").contains("1050")
            || browser.text("#device-count").contains("1,050")
    );
}
