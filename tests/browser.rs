//! The dashboard in real headless Chromium (Debian's chromium and
//! chromium-driver, over WebDriver): sign in, list newest first, stats,
//! server-side search, paging, filters in the URL, the detail drawer and
//! the device's history from the change feed, register and read the key once, edit, the 412 conflict, rotate, revoke,
//! the read-only view, `#token=` links, the expiry warning, phone and tablet
//! widths, dark mode, keyboard-only use, the Webhooks page (a local receiver
//! gets its test events), and axe-core with zero violations.
//!
//! Screenshots at 1440, 1024 and 390 px go to `target/screenshots/`, or to
//! the folder named by `DASHBOARD_SCREENSHOTS` (`DASHBOARD_SCREENSHOTS=docs`
//! refreshes the ones in the repository).

mod common;
#[path = "support/receiver.rs"]
mod receiver;
mod webdriver;

use std::time::Instant;

use common::{token_for, TestApp};
use receiver::{verifies, Receiver, Reply};
use serde_json::{json, Value};
use webdriver::{Browser, ARROW_DOWN, ARROW_UP, BACKSPACE, END, ENTER, ESCAPE, TAB};

/// axe-core, vendored (tests/vendor/README.md); injected by the tests only.
const AXE: &str = include_str!("vendor/axe.min.js");

fn admin() -> String {
    token_for("acme", "devices:read admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

fn token_with_ttl(tenant: &str, scope: &str, ttl_secs: u64) -> String {
    devicehub::auth::token::mint_hs256(
        common::SECRET.as_bytes(),
        &devicehub::auth::token::TokenRequest {
            tenant_id: tenant,
            scope,
            ttl_secs,
            subject: Some("tester"),
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

type Row = (String, String, String);

/// The rows in the table: (id, status, name), in display order.
fn rows(browser: &Browser) -> Vec<Row> {
    // One script call for the whole table: a command per cell is slow.
    let found = browser.script(
        "return Array.from(document.querySelectorAll('#device-table tbody tr[data-id]')).map(r => \
         [r.dataset.id, r.dataset.status, (r.querySelector('.open-details') || {}).textContent || ''])",
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

fn wait_rows(browser: &Browser, what: &str, check: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    browser.wait_for(what, || {
        let now = rows(browser);
        check(&now).then_some(now)
    })
}

fn names(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.2.as_str()).collect()
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

fn js(browser: &Browser, script: &str) -> Value {
    browser.script(script, json!([]))
}

/// Waits until `script` returns `expected`.
fn wait_js(browser: &Browser, what: &str, script: &str, expected: Value) {
    browser.wait_for(what, || (js(browser, script) == expected).then_some(()));
}

/// Waits until the input `css` holds `expected`.
fn wait_for_value(browser: &Browser, css: &str, expected: &str) {
    let script = format!("return document.querySelector(\"{css}\").value");
    wait_js(
        browser,
        &format!("{css} to read {expected:?}"),
        &script,
        json!(expected),
    );
}

/// Whether the focused element matches `css`.
fn focus_is(browser: &Browser, css: &str) -> bool {
    browser.script(
        "return document.activeElement !== null && document.activeElement.matches(arguments[0])",
        json!([css]),
    ) == json!(true)
}

fn wait_focus(browser: &Browser, css: &str) {
    browser.wait_for(&format!("the focus on {css}"), || {
        focus_is(browser, css).then_some(())
    });
}

fn focused(browser: &Browser) -> String {
    js(
        browser,
        "const a = document.activeElement; return a ? a.outerHTML.slice(0, 160) : 'none'",
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Presses Tab until the focus is on `css`; at most `max` presses.
fn tab_to(browser: &Browser, css: &str, max: usize) {
    tab_until(browser, css, max, false);
}

/// Presses Shift+Tab until the focus is on `css`; at most `max` presses.
fn tab_back_to(browser: &Browser, css: &str, max: usize) {
    tab_until(browser, css, max, true);
}

fn tab_until(browser: &Browser, css: &str, max: usize, back: bool) {
    for _ in 0..max {
        if focus_is(browser, css) {
            return;
        }
        if back {
            browser.shift_tab();
        } else {
            browser.keys(TAB);
        }
    }
    assert!(
        focus_is(browser, css),
        "{css} not reached with {max} tabs; focus on {}",
        focused(browser)
    );
}

/// The selector of a device's row, and of an element inside it.
fn row_css(id: &str) -> String {
    format!("#device-table tbody tr[data-id='{id}']")
}

fn in_row(id: &str, css: &str) -> String {
    format!("{} {css}", row_css(id))
}

fn device(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/tenant/devices/{id}"), &reader())
        .json()["data"]
        .clone()
}

fn stat(browser: &Browser, which: &str) -> String {
    browser.text(&format!("#stats [data-stat='{which}']"))
}

fn wait_stat(browser: &Browser, which: &str, expected: &str) {
    browser.wait_for(&format!("the {which} count to read {expected}"), || {
        (stat(browser, which) == expected).then_some(())
    });
}

/// Runs axe-core over the page as it is: zero violations, of every rule axe
/// runs by default (WCAG 2.x A and AA, and best practices).
fn assert_accessible(browser: &Browser, when: &str) {
    if js(browser, "return typeof window.axe === 'object'") != json!(true) {
        browser.script(&format!("{AXE}\n;return true;"), json!([]));
    }
    let violations = browser.script_async(
        "const done = arguments[arguments.length - 1];
         document.getAnimations().forEach(a => a.finish());
         axe.run(document, { resultTypes: ['violations'] })
           .then(r => done(r.violations.map(v => `${v.id} (${v.impact}): ${v.help}; at ` +
               v.nodes.slice(0, 4).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | '))))
           .catch(e => done(['axe did not run: ' + e]));",
        json!([]),
    );
    let list = violations.as_array().cloned().unwrap_or_default();
    assert!(list.is_empty(), "axe violations {when}: {list:#?}");
}

/// What axe does not check: input borders against the surface they sit on
/// at 3:1 or more (WCAG 1.4.11), and no `aria-label` on an element without
/// a role that allows one.
fn assert_borders_and_labels(browser: &Browser, when: &str) {
    let problems = js(
        browser,
        "const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
         const lum = c => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
           return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
         const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
         const surface = el => { for (let e = el.parentElement; e; e = e.parentElement) {
           const bg = getComputedStyle(e).backgroundColor; if (bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent') return bg; }
           return 'rgb(255, 255, 255)'; };
         const out = [];
         for (const i of document.querySelectorAll('input[type=text], input[type=search], input[type=url], select, textarea')) {
           if (!i.getClientRects().length) continue;
           const r = ratio(getComputedStyle(i).borderTopColor, surface(i));
           if (r < 3) out.push(`#${i.id} border ${r.toFixed(2)}:1`);
         }
         for (const e of document.querySelectorAll('div[aria-label]:not([role]), span[aria-label]:not([role]), p[aria-label]:not([role])')) {
           out.push(`aria-label on a role-less ${e.tagName}: ${e.outerHTML.slice(0, 80)}`);
         }
         return out;",
    );
    assert_eq!(problems, json!([]), "{when}");
}

/// Every visible control sits inside the viewport: nothing is out of reach
/// sideways.
fn assert_nothing_off_screen(browser: &Browser, when: &str) {
    let off = js(
        browser,
        "const w = document.documentElement.clientWidth; const out = [];
         if (document.documentElement.scrollWidth > w) out.push('page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + w);
         for (const b of document.querySelectorAll('main button, main input, main select, header button')) {
           const r = b.getBoundingClientRect();
           if (r.width === 0 && r.height === 0) continue;
           if (r.left < 0 || r.right > w) out.push(b.outerHTML.slice(0, 100) + ' at ' + r.left + '..' + r.right);
         }
         return out;",
    );
    assert_eq!(off, json!([]), "{when}");
}

fn screenshot(browser: &Browser, name: &str) {
    let dir =
        std::env::var("DASHBOARD_SCREENSHOTS").unwrap_or_else(|_| "target/screenshots".into());
    std::fs::create_dir_all(&dir).unwrap();
    // No caret, focus ring or passing toast in the picture.
    js(
        browser,
        "document.activeElement && document.activeElement.blur(); \
         document.querySelectorAll('.toast-item').forEach(t => t.remove()); return true",
    );
    browser.pointer_to(0, 0);
    std::fs::write(format!("{dir}/{name}"), browser.screenshot_png()).unwrap();
}

/// Seeds `n` devices straight into the store (through HTTP it would only
/// be slower); the writes are sent together, so they commit in few batches.
fn seed(app: &TestApp, tenant: &str, n: usize, body: impl Fn(usize) -> Value) {
    let rt = actix_web::rt::System::new();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let store = app.store.clone();
            let tenant = tenant.to_string();
            let new = devicehub::devices::NewDevice::parse(body(i).as_object().unwrap()).unwrap();
            tasks.push(actix_web::rt::spawn(async move {
                let key = devicehub::auth::device_key::NewDeviceKey::generate().unwrap();
                store
                    .create(
                        &tenant,
                        new,
                        key.hash,
                        devicehub::devices::Millis::now(),
                        None,
                        None,
                    )
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// The ids the API lists for `query` (the server's view, to compare with
/// what the dashboard shows).
fn api_ids(app: &TestApp, query: &str) -> Vec<String> {
    let response = app.get(&format!("/api/tenant/devices?{query}"), &reader());
    assert_eq!(response.status, 200, "{query}: {:?}", response.json());
    response.data_ids()
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.0.clone()).collect()
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
    let (kiosk, kiosk_key) = app.register(
        &admin(),
        json!({"name": "Kiosk", "locationIds": ["store-a", "store-c", "store-d", "store-e"],
               "pimEnabled": true, "pimSegmentIds": ["seg-1", "seg-2"]}),
    );
    // The kiosk checks in: it shows as online.
    assert_eq!(app.get("/api/device/me", &kiosk_key).status, 200);
    let scanner_id = scanner["id"].as_str().unwrap().to_string();
    let kiosk_id = kiosk["id"].as_str().unwrap().to_string();
    let base = format!("http://{}", app.addr);
    let browser = Browser::start();
    browser.set_viewport(1366, 900);

    // Signed in from the demo-style URL; the token leaves the address bar.
    browser.goto(&format!("{base}/#token={}", admin()));
    browser.wait_for("the tenant", || {
        (browser.text("#tenant") == "acme").then_some(())
    });
    assert!(browser.text("#scopes").contains("admin"));
    assert_eq!(js(&browser, "return location.hash"), json!(""));
    assert_eq!(
        js(
            &browser,
            "return sessionStorage.length > 0 && localStorage.length === 0"
        ),
        json!(true),
        "the token is kept in sessionStorage only"
    );

    // Newest first; counts from /stats; the online indicator.
    let listed = wait_rows(&browser, "three rows", |r| r.len() == 3);
    assert_eq!(
        names(&listed),
        ["Kiosk", "Shelf Gateway", "Checkout Scanner 1"]
    );
    wait_stat(&browser, "total", "3");
    assert_eq!(stat(&browser, "active"), "2");
    assert_eq!(stat(&browser, "inactive"), "1");
    assert_eq!(stat(&browser, "revoked"), "0");
    assert!(browser.shown(&in_row(&kiosk_id, ".seen-online")));
    assert!(browser.shown(&in_row(&scanner_id, ".seen-never")));
    assert!(
        !browser.shown("#expiry-warning-text"),
        "no warning for an hour-long token"
    );
    assert_accessible(&browser, "on the list");
    assert_borders_and_labels(&browser, "on the list");

    // "Rotate key" is named by its visible text (WCAG 2.5.3), and so is
    // every other row action.
    let rotate = browser.find(&in_row(&scanner_id, ".row-actions [data-action='rotate']"));
    // What is painted: the text outside the 1-pixel, clipped helper span.
    let painted = browser.script(
        "const b = document.querySelector(arguments[0]); \
         const hidden = Array.from(b.querySelectorAll('.vh')); \
         if (hidden.some(h => h.getBoundingClientRect().width > 1)) return 'a helper span is visible'; \
         return Array.from(b.childNodes).filter(n => !hidden.includes(n)).map(n => n.textContent).join('')",
        json!([in_row(&scanner_id, ".row-actions [data-action='rotate']")]),
    );
    assert_eq!(painted, json!("Rotate key"));
    let name = browser.accessible_name(&rotate);
    assert!(
        name.starts_with("Rotate key") && name.contains("Checkout Scanner 1"),
        "accessible name {name:?}"
    );

    // Filters: status on the server, from the select and from the counts.
    browser.click("#status-filter option[value='inactive']");
    wait_rows(&browser, "only inactive rows", |r| {
        r.len() == 1 && r[0].1 == "inactive"
    });
    assert!(js(&browser, "return location.search")
        .as_str()
        .unwrap()
        .contains("status=inactive"));
    browser.click("#stats button[data-status='']");
    wait_rows(&browser, "all rows again", |r| r.len() == 3);
    assert_eq!(js(&browser, "return location.search"), json!(""));

    // Search on the server (no row is filtered in the page).
    browser.type_into("#search", "kiosk");
    wait_rows(&browser, "the search hit", |r| {
        r.len() == 1 && r[0].2 == "Kiosk"
    });
    assert!(js(&browser, "return location.search")
        .as_str()
        .unwrap()
        .contains("q=kiosk"));
    browser.click("#clear-filters");
    wait_rows(&browser, "all rows after clearing", |r| r.len() == 3);
    assert_eq!(
        browser.script("return document.querySelector('#search').value", json!([])),
        json!("")
    );

    // Keyboard: the dialog takes the focus, and Escape closes it and gives
    // the focus back.
    browser.click("#register-open");
    browser.find("#register-dialog");
    wait_focus(&browser, "#reg-name");
    browser.keys(ESCAPE);
    browser.wait_for("Escape to close the dialog", || {
        (!browser.shown("#register-dialog")).then_some(())
    });
    wait_focus(&browser, "#register-open");

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
    assert_eq!(api_ids(&app, "").len(), 3, "nothing registered");
    browser.type_into("#reg-name", "Forklift Terminal");
    browser.clear("#reg-locations");
    browser.type_into("#reg-locations", "store-c, store-c");
    // The server's answer is lost on the way back: the form says so, once...
    js(
        &browser,
        "window.__fetch = window.fetch; window.fetch = async (u, o) => { \
           const r = await window.__fetch(u, o); \
           if (o && o.method === 'POST') { window.fetch = window.__fetch; throw new TypeError('lost'); } \
           return r; }; return true",
    );
    browser.click("#reg-submit");
    browser.wait_for("the form's error", || {
        browser
            .text("#reg-error")
            .contains("could not be reached")
            .then_some(())
    });
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length"
        ),
        json!(0),
        "one message: in the form"
    );
    assert_eq!(api_ids(&app, "").len(), 4, "the server did register it");
    // ...and sending it again gets that same answer: no second device.
    browser.click("#reg-submit");
    let key = browser.wait_for("the new key", || {
        let text = browser.text("#key-value");
        text.starts_with("dhk_").then_some(text)
    });
    assert_eq!(
        app.get("/api/device/me", &key).json()["data"]["name"],
        "Forklift Terminal"
    );
    // The new device is listed at once, on top, while the key is shown.
    let listed = wait_rows(&browser, "the new row on top", |r| {
        r.len() == 4 && r[0].2 == "Forklift Terminal"
    });
    let forklift = listed[0].0.clone();
    assert_eq!(api_ids(&app, "").len(), 4, "registered once");
    browser.wait_for("the success note", || {
        browser
            .text("#toast-status")
            .contains("Registered")
            .then_some(())
    });
    assert_eq!(device(&app, &forklift)["locationIds"], json!(["store-c"]));
    wait_stat(&browser, "total", "4");
    assert_accessible(&browser, "with the key dialog open");

    // Escape does not throw the one-time key away: it asks first.
    browser.keys(ESCAPE);
    browser.find("#key-confirm");
    assert!(browser.shown("#key-dialog"));
    assert_eq!(browser.text("#key-value"), key);
    wait_focus(&browser, "#key-back");
    browser.keys(ESCAPE);
    browser.wait_for("a second Escape to go back to the key", || {
        (!browser.shown("#key-confirm")).then_some(())
    });
    assert!(browser.shown("#key-dialog"));
    browser.keys(ESCAPE);
    browser.click("#key-discard");
    browser.wait_for("the key dialog to close", || {
        (!browser.shown("#key-dialog")).then_some(())
    });
    wait_focus(&browser, "#register-open");
    assert_eq!(
        js(
            &browser,
            "return document.querySelector('#key-value').textContent"
        ),
        json!("")
    );
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length"
        ),
        json!(0),
        "no error was shown"
    );

    // Edit; the focus returns to the Edit button.
    browser.click(&in_row(&scanner_id, ".row-actions [data-action='edit']"));
    browser.find("#edit-dialog");
    wait_for_value(&browser, "#edit-name", "Checkout Scanner 1");
    browser.clear("#edit-name");
    browser.type_into("#edit-name", "Checkout Scanner 1A");
    browser.click("#edit-submit");
    wait_rows(&browser, "the renamed row", |r| {
        r.iter()
            .any(|x| x.0 == scanner_id && x.2 == "Checkout Scanner 1A")
    });
    assert_eq!(device(&app, &scanner_id)["name"], "Checkout Scanner 1A");
    wait_focus(&browser, &in_row(&scanner_id, "[data-action='edit']"));

    // Someone else changes the device while the form is open: 412, then reload.
    browser.click(&in_row(&scanner_id, ".row-actions [data-action='edit']"));
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
    browser.click("#edit-cancel");
    wait_focus(&browser, &in_row(&scanner_id, "[data-action='edit']"));

    // Rotate: a new key, shown once; the old one stops at once; the focus
    // returns to the Rotate key button.
    browser.click(&in_row(&scanner_id, ".row-actions [data-action='rotate']"));
    browser.find("#confirm-dialog");
    assert_eq!(
        js(
            &browser,
            "return document.querySelector('#confirm-message bdi').textContent"
        ),
        json!("Changed Elsewhere"),
        "the name is isolated in the sentence"
    );
    browser.click("#confirm-ok");
    let new_key = browser.wait_for("the rotated key", || {
        let text = browser.text("#key-value");
        (text.starts_with("dhk_") && text != key).then_some(text)
    });
    browser.click("#key-done");
    wait_focus(&browser, &in_row(&scanner_id, "[data-action='rotate']"));
    assert_eq!(app.get("/api/device/me", &scanner_key).status, 401);
    assert_eq!(app.get("/api/device/me", &new_key).status, 200);
    // With a grace period, the old key keeps working beside the new one, and
    // the key dialog says until when.
    browser.click(&in_row(&kiosk_id, ".row-actions [data-action='rotate']"));
    browser.find("#grace");
    browser.click("#grace option[value='86400']");
    browser.click("#confirm-ok");
    let kiosk_new = browser.wait_for("the kiosk's new key", || {
        let text = browser.text("#key-value");
        (text.starts_with("dhk_") && text != new_key).then_some(text)
    });
    assert!(browser.text("#key-grace").contains("keeps working until"));
    browser.click("#key-done");
    let old = app.get("/api/device/me", &kiosk_key);
    assert_eq!(old.status, 200, "the old key works during its grace");
    assert_eq!(old.header("deprecation"), Some("true"));
    assert_eq!(app.get("/api/device/me", &kiosk_new).status, 200);

    // Revoke: the confirmation names the device; the row reads as final.
    browser.click(&in_row(&scanner_id, ".row-actions [data-action='revoke']"));
    assert!(browser
        .text("#confirm-message")
        .contains("Changed Elsewhere"));
    browser.click("#confirm-ok");
    wait_rows(&browser, "the revoked row", |r| {
        r.iter().any(|x| x.0 == scanner_id && x.1 == "revoked")
    });
    assert!(!browser.shown(&in_row(&scanner_id, ".row-actions button")));
    assert_eq!(device(&app, &scanner_id)["status"], "revoked");
    assert_eq!(
        app.get("/api/device/me", &new_key).error_code(),
        "device_revoked"
    );
    wait_stat(&browser, "revoked", "1");
    assert_accessible(&browser, "with a revoked row");

    // The detail drawer: every location and segment, the three times, and
    // a copyable id. Escape closes it and the focus goes back to the name.
    browser.click(&in_row(&kiosk_id, ".open-details"));
    browser.find("#drawer");
    assert_eq!(browser.text("#drawer-id"), kiosk_id);
    assert_eq!(browser.text("#drawer-name"), "Kiosk");
    let tags = js(
        &browser,
        "return Array.from(document.querySelectorAll('#drawer-locations .tag, #drawer-segments .tag')).map(t => t.textContent)",
    );
    assert_eq!(
        tags,
        json!(["store-a", "store-c", "store-d", "store-e", "seg-1", "seg-2"])
    );
    for field in [
        "#drawer-created time",
        "#drawer-updated time",
        "#drawer-seen time",
    ] {
        browser.find(field);
    }
    browser.click("#drawer-copy");
    browser.wait_for("a copy answer", || {
        (!browser.text("#drawer-copy-status").is_empty()).then_some(())
    });
    assert_accessible(&browser, "with the drawer open");
    browser.keys(ESCAPE);
    browser.wait_for("the drawer to close", || {
        (!browser.shown("#drawer")).then_some(())
    });
    wait_focus(&browser, &in_row(&kiosk_id, ".open-details"));

    // One error message, not two, and it goes once the problem is gone: the
    // list cannot be read (the network is down), then can again.
    js(
        &browser,
        "window.__fetch = window.fetch; window.fetch = (u, o) => String(u).includes('/api/') \
         ? Promise.reject(new TypeError('offline')) : window.__fetch(u, o); return true",
    );
    browser.click("#status-filter option[value='active']");
    browser.find("#list-error");
    assert!(browser
        .text("#list-error-text")
        .contains("could not be reached"));
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item, .empty:not([hidden])').length"
        ),
        json!(0),
        "the inline error is the only one"
    );
    // Trying again while the server is still out of reach: the counts fail
    // too, and say so in place, not in a second message.
    browser.click("#retry");
    browser.wait_for("the counts to say they are unavailable", || {
        (browser.text("#device-count") == "counts unavailable").then_some(())
    });
    assert!(browser.shown("#list-error"));
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length"
        ),
        json!(0)
    );
    js(&browser, "window.fetch = window.__fetch; return true");
    browser.click("#retry");
    browser.wait_for("the counts again", || {
        (browser.text("#device-count") == "4 devices").then_some(())
    });
    wait_rows(&browser, "the active rows", |r| {
        r.len() == 2 && r.iter().all(|x| x.1 == "active")
    });
    assert!(!browser.shown("#list-error"));
    // A failed look-up is reported once, in a toast that leaves as soon as the
    // same device reads fine again.
    js(
        &browser,
        "window.fetch = (u, o) => String(u).includes('/api/tenant/devices/') \
         ? Promise.reject(new TypeError('offline')) : window.__fetch(u, o); return true",
    );
    browser.click(&in_row(&kiosk_id, ".open-details"));
    browser.wait_for("an error toast", || {
        (js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length",
        ) == json!(1))
        .then_some(())
    });
    browser.keys(ESCAPE);
    js(&browser, "window.fetch = window.__fetch; return true");
    browser.click(&in_row(&kiosk_id, ".open-details"));
    browser.wait_for("the toast to leave", || {
        (js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length",
        ) == json!(0))
        .then_some(())
    });
    browser.keys(ESCAPE);
    browser.click("#stats button[data-status='']");
    wait_rows(&browser, "all four rows", |r| r.len() == 4);

    // Dark mode follows prefers-color-scheme, with the same contrast rules.
    browser.set_dark(true);
    assert_eq!(
        js(
            &browser,
            "return getComputedStyle(document.body).backgroundColor"
        ),
        json!("rgb(15, 19, 24)")
    );
    assert_accessible(&browser, "in dark mode");
    assert_borders_and_labels(&browser, "in dark mode");
    browser.set_dark(false);

    // A #token= link never replaces the session silently: it asks, naming
    // both tenants. Kept once (a link followed in this page)...
    let other = token_for("globex", "devices:read");
    browser.goto(&format!("{base}/#token={other}"));
    browser.find("#switch-dialog");
    let message = browser.text("#switch-message");
    assert!(
        message.contains("globex") && message.contains("acme"),
        "{message}"
    );
    assert_eq!(js(&browser, "return location.hash"), json!(""));
    assert_accessible(&browser, "with the switch dialog open");
    browser.click("#switch-keep");
    browser.wait_for("the dialog to close", || {
        (!browser.shown("#switch-dialog")).then_some(())
    });
    assert_eq!(browser.text("#tenant"), "acme");
    wait_rows(&browser, "acme's rows", |r| r.len() == 4);
    // ...and switched once (a link opened as a new page load).
    browser.goto(&format!("{base}/?order=asc#token={other}"));
    browser.find("#switch-dialog");
    assert_eq!(
        browser.text("#tenant"),
        "acme",
        "nothing changed before the answer"
    );
    browser.click("#switch-ok");
    browser.wait_for("the new tenant", || {
        (browser.text("#tenant") == "globex").then_some(())
    });
    browser.find("#empty-state");
    assert!(browser.text("#empty-message").contains("No devices"));

    // The expiry warning: a token with five minutes left says so.
    browser.click("#signout");
    browser.find("#signin");
    browser.type_into("#token-input", &token_with_ttl("acme", "devices:read", 300));
    browser.click("#signin-button");
    wait_rows(&browser, "the list", |r| r.len() == 4);
    let warning = browser.text("#expiry-warning-text");
    assert!(warning.contains("expires in"), "{warning}");
    assert!(browser.shown("#expiry-renew"));

    // Read-only: the same list, no write controls at all.
    browser.click("#signout");
    browser.find("#signin");
    assert!(!browser.shown("#expiry-warning-text"));
    browser.type_into("#token-input", &reader());
    browser.click("#signin-button");
    wait_rows(&browser, "the list for the reader", |r| r.len() == 4);
    assert!(!browser.text("#scopes").contains("admin"));
    assert!(!browser.shown("#register-open"));
    assert!(!browser.shown(
        "#device-table [data-action='edit'], #device-table [data-action='rotate'], #device-table [data-action='revoke']"
    ));
    assert_accessible(&browser, "read-only");

    // A bad token is refused with a message.
    browser.click("#signout");
    browser.type_into("#token-input", "not-a-token");
    browser.click("#signin-button");
    browser.wait_for("a sign-in error", || {
        (!browser.text("#signin-error").is_empty()).then_some(())
    });
    assert_accessible(&browser, "on the sign-in form");
    assert_borders_and_labels(&browser, "on the sign-in form");
    assert_no_page_errors(&browser);
}

#[test]
fn a_fleet_of_three_thousand_devices() {
    let app = common::spawn_app();
    let started = Instant::now();
    seed(&app, "acme", 3000, |i| {
        json!({
            "name": format!("Device {i:04}"),
            "locationIds": [format!("store-{:02}", i % 40)],
            "status": if i % 10 == 0 { "inactive" } else { "active" },
        })
    });
    eprintln!("seeded 3,000 devices in {:?}", started.elapsed());
    // Two devices through the API; one of them checks in.
    let (seen, seen_key) = app.register(
        &admin(),
        json!({"name": "Checked In A", "locationIds": ["store-01"]}),
    );
    let (unseen, _) = app.register(&admin(), json!({"name": "Checked In B"}));
    assert_eq!(app.get("/api/device/me", &seen_key).status, 200);
    let seen_id = seen["id"].as_str().unwrap().to_string();
    let unseen_id = unseen["id"].as_str().unwrap().to_string();

    let base = format!("http://{}", app.addr);
    let browser = Browser::start();
    browser.set_viewport(1440, 900);
    browser.goto(&format!("{base}/#token={}", admin()));

    // The first page is the server's newest page: a page, not the fleet.
    let newest = api_ids(&app, "order=desc&limit=50");
    let first = wait_rows(&browser, "the first page", |r| !r.is_empty());
    assert_eq!(ids(&first), newest);
    assert_eq!(first[0].2, "Checked In B");
    wait_stat(&browser, "total", "3,002");
    assert_eq!(stat(&browser, "inactive"), "300");
    assert!(browser.text("#page-info").contains("1–50 of 3,002"));
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#device-table tr').length"
        ),
        json!(51),
        "50 rows and the header"
    );
    assert!(browser.shown(&in_row(&seen_id, ".seen-online")));
    assert!(
        !browser.shown("#filters-toggle"),
        "every filter is in view: nothing to unfold"
    );
    screenshot(&browser, "dashboard-1440.png");

    // Paging: next, next, previous, and the first page again.
    browser.click("#page-next");
    let second = wait_rows(&browser, "the second page", |r| r.first() != first.first());
    let after = &newest[49];
    assert_eq!(
        ids(&second),
        api_ids(&app, &format!("order=desc&limit=50&startingAfter={after}"))
    );
    assert!(browser.text("#page-info").contains("51–100 of 3,002"));
    assert!(js(&browser, "return location.search")
        .as_str()
        .unwrap()
        .contains("after=dev_"));
    wait_focus(&browser, "#page-next");
    browser.click("#page-next");
    wait_rows(&browser, "the third page", |r| r.first() != second.first());
    assert!(browser.text("#page-info").contains("101–150"));
    browser.click("#page-prev");
    let back = wait_rows(&browser, "the second page again", |r| {
        r.first() == second.first()
    });
    assert_eq!(ids(&back), ids(&second));
    browser.click("#page-first");
    wait_rows(&browser, "the first page again", |r| ids(r) == newest);
    assert!(!browser.shown("#page-first"));
    assert!(
        js(
            &browser,
            "return document.querySelector('#page-prev').disabled"
        ) == json!(true)
    );

    // Search runs on the server: an old device is found without paging.
    browser.type_into("#search", "device 0007");
    let hit = wait_rows(&browser, "the search hit", |r| r.len() == 1);
    assert_eq!(hit[0].2, "Device 0007");
    // The page marks when a list shows and when the search was typed in, so
    // that a benchmark can read both from the Performance API.
    let marks = js(
        &browser,
        "const m = n => performance.getEntriesByName(n).map(e => e.detail.q); \
         return [m('devicehub:list-shown').at(-1), m('devicehub:search-input').at(-1)]",
    );
    assert_eq!(marks, json!(["device 0007", "device 0007"]));
    let delay = js(
        &browser,
        "const t = n => performance.getEntriesByName(n).at(-1).startTime; \
         return Math.round(t('devicehub:list-shown') - t('devicehub:search-input'))",
    );
    eprintln!(
        "search results shown {delay} ms after the last keystroke (3,002 devices, debug build)"
    );
    // Oldest first, and the status filter: the URL carries all of them.
    browser.clear("#search");
    browser.type_into("#search", "device 00");
    browser.click("#order option[value='asc']");
    browser.click("#stats button[data-status='inactive']");
    let filtered = wait_rows(&browser, "the inactive 00xx devices, oldest first", |r| {
        r.len() == 10 && r[0].2 == "Device 0000"
    });
    assert!(filtered.iter().all(|r| r.1 == "inactive"));
    let url = js(&browser, "return location.href")
        .as_str()
        .unwrap()
        .to_string();
    for part in ["q=device+00", "status=inactive", "order=asc"] {
        assert!(url.contains(part), "{url} has {part}");
    }
    // A reload (or a shared link) shows the same thing.
    browser.goto(&url);
    let again = wait_rows(&browser, "the same rows after a reload", |r| r.len() == 10);
    assert_eq!(ids(&again), ids(&filtered));
    wait_for_value(&browser, "#search", "device 00");
    wait_for_value(&browser, "#status-filter", "inactive");
    wait_for_value(&browser, "#order", "asc");
    assert_eq!(
        js(&browser, "return document.querySelector(\"#stats button[data-status='inactive']\").getAttribute('aria-pressed')"),
        json!("true")
    );

    // Not seen in 24 h: the device that checked in drops out.
    browser.click("#clear-filters");
    browser.click("#order option[value='desc']");
    browser.type_into("#search", "checked in");
    wait_rows(&browser, "both checked-in devices", |r| {
        names(r) == ["Checked In B", "Checked In A"]
    });
    browser.click("#stale-filter");
    wait_rows(&browser, "only the unseen one", |r| {
        ids(r) == [unseen_id.clone()]
    });
    assert!(js(&browser, "return location.search")
        .as_str()
        .unwrap()
        .contains("seen=stale"));
    browser.click("#clear-filters");
    wait_rows(&browser, "the newest page", |r| r.len() == 50);

    // Register: the device shows at once, on top of 3,000.
    browser.click("#register-open");
    browser.type_into("#reg-name", "Brand New Scanner");
    browser.click("#reg-submit");
    browser.find("#key-dialog");
    browser.click("#key-done");
    let top = wait_rows(&browser, "the new device on top", |r| {
        r[0].2 == "Brand New Scanner"
    });
    assert_eq!(top.len(), 50);
    wait_stat(&browser, "total", "3,003");

    // 1024 px: every action within reach (a menu per row).
    browser.set_viewport(1024, 800);
    assert_nothing_off_screen(&browser, "at 1024 px");
    assert!(browser.shown(&in_row(&top[1].0, ".row-menu-button")));
    assert_accessible(&browser, "at 1024 px");
    screenshot(&browser, "dashboard-1024.png");

    // 390 px: cards, and the row menu.
    browser.set_viewport(390, 844);
    assert_eq!(
        js(
            &browser,
            "return getComputedStyle(document.querySelector('#device-table tbody tr')).display"
        ),
        json!("grid"),
        "rows are cards"
    );
    assert_nothing_off_screen(&browser, "at 390 px");
    assert_accessible(&browser, "at 390 px");
    screenshot(&browser, "dashboard-390.png");
    // The filters besides the search fold away behind one button.
    assert!(!browser.shown("#status-filter"));
    browser.click("#filters-toggle");
    browser.find("#status-filter");
    assert_eq!(
        js(
            &browser,
            "return document.querySelector('#filters-toggle').getAttribute('aria-expanded')"
        ),
        json!("true")
    );
    assert_nothing_off_screen(&browser, "the open filters at 390 px");
    assert_accessible(&browser, "with the filters open at 390 px");
    browser.click("#filters-toggle");
    let target = top[1].0.clone();
    browser.click(&in_row(&target, ".row-menu-button"));
    browser.find("#row-menu");
    wait_focus(&browser, "#row-menu [data-action='details']");
    assert_eq!(
        js(
            &browser,
            &format!(
                "return document.querySelector(\"{}\").getAttribute('aria-expanded')",
                in_row(&target, ".row-menu-button")
            )
        ),
        json!("true")
    );
    assert_accessible(&browser, "with the row menu open");
    browser.keys(ARROW_DOWN);
    browser.keys(ARROW_DOWN);
    wait_focus(&browser, "#row-menu [data-action='rotate']");
    browser.keys(ENTER);
    browser.find("#confirm-dialog");
    browser.click("#confirm-cancel");
    wait_focus(&browser, &in_row(&target, ".row-menu-button"));
    browser.click(&in_row(&target, ".row-menu-button"));
    browser.click("#row-menu [data-action='details']");
    browser.find("#drawer");
    assert_eq!(browser.text("#drawer-id"), target);
    assert_nothing_off_screen(&browser, "the drawer at 390 px");
    browser.click("#drawer-close");
    wait_focus(&browser, &in_row(&target, ".row-menu-button"));
    assert_no_page_errors(&browser);
}

/// Every flow with the keyboard alone: skip link, search, register (the key
/// dialog and its Escape), the drawer, edit, rotate, revoke, the row menu and
/// paging; the focus always lands where the user expects it.
#[test]
fn every_flow_works_from_the_keyboard() {
    let app = common::spawn_app();
    seed(
        &app,
        "acme",
        120,
        |i| json!({"name": format!("Device {i:03}")}),
    );
    let browser = Browser::start();
    browser.set_viewport(1440, 900);
    browser.goto(&format!("http://{}/#token={}", app.addr, admin()));
    wait_rows(&browser, "the first page", |r| r.len() == 50);

    // The skip link comes before everything else, shows when focused, and
    // leads to the main content.
    tab_back_to(&browser, ".skip-link", 12);
    assert_eq!(
        js(
            &browser,
            "const l = document.querySelector('.skip-link'); const r = l.getBoundingClientRect(); \
            return r.top >= 0 && document.querySelector('body *:not(script):not(style)') === l"
        ),
        json!(true)
    );
    browser.keys(ENTER);
    wait_focus(&browser, "#main");

    // Register.
    tab_to(&browser, "#register-open", 10);
    browser.keys(ENTER);
    wait_focus(&browser, "#reg-name");
    browser.keys("Keyboard Kiosk");
    browser.keys(TAB);
    browser.keys("store-k");
    browser.keys(ENTER);
    browser.find("#key-dialog");
    wait_focus(&browser, "#key-copy");
    browser.keys(ESCAPE);
    wait_focus(&browser, "#key-back");
    browser.keys(TAB);
    wait_focus(&browser, "#key-discard");
    browser.keys(ENTER);
    browser.wait_for("the key dialog to close", || {
        (!browser.shown("#key-dialog")).then_some(())
    });
    wait_focus(&browser, "#register-open");
    let top = wait_rows(&browser, "the new device on top", |r| {
        r[0].2 == "Keyboard Kiosk"
    });
    let id = top[0].0.clone();
    assert_eq!(device(&app, &id)["locationIds"], json!(["store-k"]));

    // The counts filter by status (Enter), the checkbox by Space.
    tab_to(&browser, "#stats button[data-status='inactive']", 10);
    browser.keys(ENTER);
    wait_rows(&browser, "no inactive device", |r| r.is_empty());
    browser.find("#empty-state");
    tab_back_to(&browser, "#stats button[data-status='']", 5);
    browser.keys(" ");
    wait_rows(&browser, "every device", |r| r.len() == 50);
    tab_to(&browser, "#stale-filter", 12);
    browser.keys(" ");
    wait_js(
        &browser,
        "the stale filter in the URL",
        "return location.search",
        json!("?seen=stale"),
    );
    browser.keys(" ");
    wait_js(
        &browser,
        "no filter in the URL",
        "return location.search",
        json!(""),
    );

    // Search.
    tab_back_to(&browser, "#search", 10);
    browser.keys("keyboard");
    wait_rows(&browser, "the search hit", |r| ids(r) == [id.clone()]);

    // The drawer.
    tab_to(&browser, &in_row(&id, ".open-details"), 20);
    browser.keys(ENTER);
    browser.find("#drawer");
    wait_focus(&browser, "#drawer-close");
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&id, ".open-details"));

    // Edit.
    tab_to(&browser, &in_row(&id, "[data-action='edit']"), 5);
    browser.keys(ENTER);
    wait_focus(&browser, "#edit-name");
    browser.keys(END);
    browser.keys(" 2");
    browser.keys(ENTER);
    wait_rows(&browser, "the renamed row", |r| {
        r[0].2 == "Keyboard Kiosk 2"
    });
    wait_focus(&browser, &in_row(&id, "[data-action='edit']"));

    // Rotate: confirm, the key, Done; the focus comes back.
    tab_to(&browser, &in_row(&id, "[data-action='rotate']"), 5);
    browser.keys(ENTER);
    wait_focus(&browser, "#confirm-cancel");
    browser.keys(TAB);
    wait_focus(&browser, "#confirm-ok");
    browser.keys(ENTER);
    browser.find("#key-dialog");
    wait_focus(&browser, "#key-copy");
    browser.keys(TAB);
    wait_focus(&browser, "#key-done");
    browser.keys(ENTER);
    wait_focus(&browser, &in_row(&id, "[data-action='rotate']"));

    // Revoke.
    browser.keys(TAB);
    wait_focus(&browser, &in_row(&id, "[data-action='revoke']"));
    browser.keys(ENTER);
    wait_focus(&browser, "#confirm-cancel");
    browser.keys(TAB);
    browser.keys(ENTER);
    wait_rows(&browser, "the revoked row", |r| r[0].1 == "revoked");
    assert_eq!(device(&app, &id)["status"], "revoked");
    assert!(
        !focus_is(&browser, "body"),
        "the focus is not lost: {}",
        focused(&browser)
    );

    // The row menu at a narrower width.
    browser.set_viewport(1024, 800);
    tab_back_to(&browser, "#search", 30);
    browser.keys(&BACKSPACE.repeat(8));
    let listed = wait_rows(&browser, "the newest page", |r| r.len() == 50);
    let other = listed[1].0.clone();
    tab_to(&browser, &in_row(&other, ".row-menu-button"), 20);
    browser.keys(ENTER);
    wait_focus(&browser, "#row-menu [data-action='details']");
    browser.keys(ARROW_DOWN);
    wait_focus(&browser, "#row-menu [data-action='edit']");
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&other, ".row-menu-button"));
    assert!(!browser.shown("#row-menu"));
    browser.keys(ARROW_DOWN);
    wait_focus(&browser, "#row-menu [data-action='details']");
    browser.keys(ARROW_DOWN);
    browser.keys(ENTER);
    wait_focus(&browser, "#edit-name");
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&other, ".row-menu-button"));
    browser.keys(ARROW_UP);
    wait_focus(&browser, "#row-menu [data-action='revoke']");
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&other, ".row-menu-button"));

    // A list that arrives while a row's button has the focus (a filter from
    // the browser's history, answered late) leaves the focus on that button.
    let shown = "return performance.getEntriesByName('devicehub:list-shown').length";
    let before = js(&browser, shown).as_u64().unwrap();
    js(
        &browser,
        "window.realFetch = window.fetch; \
         window.fetch = (u, o) => String(u).includes('/api/tenant/devices?') \
           ? new Promise((r) => setTimeout(r, 600)).then(() => window.realFetch(u, o)) \
           : window.realFetch(u, o); \
         history.replaceState(history.state, '', '/?q=Device'); \
         window.dispatchEvent(new PopStateEvent('popstate')); return true",
    );
    wait_js(
        &browser,
        "the late list",
        &format!("{shown} > {before}"),
        json!(true),
    );
    assert!(
        focus_is(&browser, &in_row(&other, ".row-menu-button")),
        "the focus moved to {}",
        focused(&browser)
    );
    let before = js(&browser, shown).as_u64().unwrap();
    js(
        &browser,
        "window.fetch = window.realFetch; history.replaceState(history.state, '', '/'); \
         window.dispatchEvent(new PopStateEvent('popstate')); return true",
    );
    wait_js(
        &browser,
        "the unfiltered list",
        &format!("{shown} > {before}"),
        json!(true),
    );

    // Paging: the focus stays on Next while there is a next page.
    tab_to(&browser, "#page-next", 120);
    browser.keys(ENTER);
    wait_rows(&browser, "the second page", |r| {
        r.first().map(|x| &x.0) != Some(&id) && !r.iter().any(|x| x.0 == other)
    });
    wait_focus(&browser, "#page-next");
    browser.keys(ENTER);
    wait_rows(&browser, "the last page", |r| r.len() == 21);
    assert!(
        js(
            &browser,
            "return document.querySelector('#page-next').disabled"
        ) == json!(true)
    );
    assert!(
        !focus_is(&browser, "body"),
        "the focus is not lost at the last page: {}",
        focused(&browser)
    );

    // Sign out and in again.
    tab_back_to(&browser, "#signout", 200);
    browser.keys(ENTER);
    wait_focus(&browser, "#token-input");
    browser.keys(&reader());
    browser.keys(ENTER);
    browser.wait_for("the reader's session", || {
        (browser.text("#role") == "Read-only").then_some(())
    });
    wait_focus(&browser, "#devices-title");
    assert_no_page_errors(&browser);
}

/// An admin token of tenant acme whose `sub` is `subject` (or none).
fn admin_as(subject: Option<&str>) -> String {
    devicehub::auth::token::mint_hs256(
        common::SECRET.as_bytes(),
        &devicehub::auth::token::TokenRequest {
            tenant_id: "acme",
            scope: "devices:read admin",
            ttl_secs: 3600,
            subject,
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

/// The drawer's history as shown, top to bottom: [what, who, [[field, from,
/// to]…]] per entry.
fn history(browser: &Browser) -> Vec<Value> {
    js(
        browser,
        "return Array.from(document.querySelectorAll('#history-list > li')).map(li => [
           li.querySelector('h4').textContent,
           li.querySelector('.history-actor').textContent,
           Array.from(li.querySelectorAll('.history-change')).map(c => [
             c.querySelector('.history-field').textContent,
             c.querySelector('.history-from').textContent,
             c.querySelector('.history-to').textContent])])",
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn wait_history(browser: &Browser, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    browser.wait_for(what, || {
        let now = history(browser);
        check(&now).then_some(now)
    })
}

/// The feed requests the page made for one device, in order.
fn event_requests(browser: &Browser, id: &str) -> Vec<String> {
    browser
        .script(
            "return window.__eventUrls.filter(u => u.includes('deviceId=' + arguments[0]))",
            json!([id]),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

/// The drawer shows a device's history from the change feed: newest first,
/// who (or "unknown"), what, and each changed field from → to; names as
/// text; long histories read a page of 100 at a time, the newest 500 kept
/// and shown 20 at a time; the history catches up after edit, rotate and
/// revoke in the dashboard; keyboard, 390 px, dark mode and axe-core.
#[test]
fn the_drawer_shows_the_device_history() {
    let app = common::spawn_app();
    // Changed through the API by three actors: registered by "tester",
    // renamed and moved by "alice", revoked by a token without a subject.
    let html_name = "<img src=x onerror=\"window.__injected=1\"><b>Probe</b>";
    let (probe, _) = app.register(
        &admin(),
        json!({"name": html_name, "locationIds": ["store-a"]}),
    );
    let probe_id = probe["id"].as_str().unwrap().to_string();
    let probe_path = format!("/api/tenant/devices/{probe_id}");
    let renamed = app.send_json(
        "PATCH",
        &probe_path,
        &admin_as(Some("alice")),
        &json!({"name": "Probe <i>2</i>", "locationIds": ["store-a", "store-b"]}),
    );
    assert_eq!(renamed.status, 200);
    assert_eq!(app.send("DELETE", &probe_path, &admin_as(None)).status, 200);
    // 520 events: six pages of the feed, and more than the drawer keeps.
    let (busy, _) = app.register(&admin(), json!({"name": "Busy 0"}));
    let busy_id = busy["id"].as_str().unwrap().to_string();
    for i in 1..=519 {
        let r = app.send_json(
            "PATCH",
            &format!("/api/tenant/devices/{busy_id}"),
            &admin(),
            &json!({ "name": format!("Busy {i}") }),
        );
        assert_eq!(r.status, 200);
    }
    // Changed through the dashboard below.
    let (live, _) = app.register(&admin(), json!({"name": "Live Probe"}));
    let live_id = live["id"].as_str().unwrap().to_string();

    let browser = Browser::start();
    browser.set_viewport(1440, 900);
    browser.goto(&format!("http://{}/#token={}", app.addr, admin()));
    wait_rows(&browser, "three rows", |r| r.len() == 3);
    js(
        &browser,
        "window.__eventUrls = []; const f = window.fetch; window.fetch = (u, o) => { \
           if (String(u).includes('/api/tenant/events')) window.__eventUrls.push(String(u)); \
           return f(u, o); }; return true",
    );

    // Newest first, with who, what and from → to; the HTML-looking name is text.
    browser.click(&in_row(&probe_id, ".open-details"));
    browser.find("#drawer");
    let shown = wait_history(&browser, "the probe's three entries", |h| h.len() == 3);
    let quoted_html = format!("“{html_name}”");
    assert_eq!(
        shown,
        [
            json!(["Revoked", "unknown", [["Status", "active", "revoked"]]]),
            json!([
                "Updated",
                "alice",
                [
                    ["Name", quoted_html, "“Probe <i>2</i>”"],
                    ["Locations", "store-a", "store-a, store-b"],
                ]
            ]),
            json!(["Registered", "tester", []]),
        ]
    );
    assert_eq!(
        js(
            &browser,
            "return [document.querySelectorAll('#history-list img, #history-list b, #history-list i').length, \
             typeof window.__injected]"
        ),
        json!([0, "undefined"]),
        "names are text, never markup"
    );
    assert_eq!(browser.text("#history-status"), "3 changes, newest first.");
    // When: local time shown, the exact UTC time in the tooltip, in the
    // feed's order reversed.
    let feed = app.get(
        &format!("/api/tenant/events?deviceId={probe_id}"),
        &reader(),
    );
    let mut created: Vec<Value> = feed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["createdAt"].clone())
        .collect();
    created.reverse();
    let times = js(
        &browser,
        "return Array.from(document.querySelectorAll('#history-list > li time')).map(t => t.dateTime)",
    );
    assert_eq!(times, json!(created));
    let first = created[0].as_str().unwrap();
    let title = js(
        &browser,
        "return document.querySelector('#history-list > li time').title",
    );
    assert_eq!(
        title,
        json!(format!(
            "{} UTC",
            first.replace('T', " ").trim_end_matches('Z')
        ))
    );
    // A list under a heading, an entry a heading each.
    assert_eq!(
        js(
            &browser,
            "const ol = document.querySelector('#history-list'); \
             return [document.querySelector('#drawer h3').textContent, ol.tagName, \
               ol.getAttribute('aria-labelledby'), ol.querySelectorAll(':scope > li > h4').length]"
        ),
        json!(["History", "OL", "history-title", 3])
    );
    assert_accessible(&browser, "with the history open");
    browser.set_dark(true);
    assert_accessible(&browser, "with the history open in dark mode");
    browser.set_dark(false);
    assert_eq!(event_requests(&browser, &probe_id).len(), 1);
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&probe_id, ".open-details"));

    // A long history: read 100 at a time to the end, the newest 500 kept,
    // shown 20 at a time.
    browser.click(&in_row(&busy_id, ".open-details"));
    browser.find("#drawer");
    browser.wait_for("the whole history read", || {
        (browser.text("#history-status") == "520 changes, newest first.").then_some(())
    });
    let shown = history(&browser);
    assert_eq!(shown.len(), 20);
    assert_eq!(
        shown[0],
        json!(["Updated", "tester", [["Name", "“Busy 518”", "“Busy 519”"]]])
    );
    assert_eq!(shown[19][2][0][2], "“Busy 500”");
    let requests = event_requests(&browser, &busy_id);
    assert_eq!(requests.len(), 6, "{requests:?}");
    assert!(requests.iter().all(|u| u.contains("limit=100")));
    assert!(
        !requests[0].contains("startingAfter")
            && requests[1..]
                .iter()
                .all(|u| u.contains("startingAfter=evt_"))
    );
    // "Show older changes" from the keyboard: the focus goes to the first
    // entry it added.
    wait_focus(&browser, "#drawer-close");
    tab_to(&browser, "#history-more", 30);
    browser.keys(ENTER);
    wait_focus(&browser, "#history-list > li:nth-child(21)");
    assert_eq!(history(&browser)[20][2][0][2], "“Busy 499”");
    for _ in 0..30 {
        if !browser.shown("#history-more") {
            break;
        }
        browser.click("#history-more");
    }
    let all = history(&browser);
    assert_eq!(all.len(), 500);
    assert_eq!(
        all[499],
        json!(["Updated", "tester", [["Name", "“Busy 19”", "“Busy 20”"]]])
    );
    assert_eq!(
        browser.text("#history-dropped"),
        "20 older changes not shown: the drawer keeps the newest 500."
    );
    assert!(!focus_is(&browser, "body"), "the focus is not lost");
    // A phone: nothing sideways, still clean.
    browser.set_viewport(390, 844);
    assert_eq!(
        js(
            &browser,
            "const d = document.querySelector('#drawer'); return d.scrollWidth <= d.clientWidth"
        ),
        json!(true),
        "the drawer does not scroll sideways at 390 px"
    );
    assert_accessible(&browser, "with the history open at 390 px");
    browser.set_viewport(1440, 900);
    browser.keys(ESCAPE);
    wait_focus(&browser, &in_row(&busy_id, ".open-details"));

    // Changed through the dashboard: the history catches up each time,
    // reading only what came after the newest entry it has.
    browser.click(&in_row(&live_id, ".open-details"));
    browser.find("#drawer");
    wait_history(&browser, "the registration", |h| {
        h.len() == 1 && h[0][0] == "Registered"
    });
    browser.click("#drawer-actions [data-action='edit']");
    wait_for_value(&browser, "#edit-name", "Live Probe");
    browser.clear("#edit-name");
    browser.type_into("#edit-name", "Live Probe 2");
    browser.click("#edit-submit");
    let shown = wait_history(&browser, "the edit on top", |h| h.len() == 2);
    assert_eq!(
        shown[0],
        json!([
            "Updated",
            "tester",
            [["Name", "“Live Probe”", "“Live Probe 2”"]]
        ])
    );
    browser.click("#drawer-actions [data-action='rotate']");
    browser.click("#confirm-ok");
    browser.find("#key-dialog");
    browser.click("#key-done");
    let shown = wait_history(&browser, "the rotation on top", |h| h.len() == 3);
    assert_eq!(shown[0], json!(["Key rotated", "tester", []]));
    browser.click("#drawer-actions [data-action='revoke']");
    browser.click("#confirm-ok");
    let shown = wait_history(&browser, "the revocation on top", |h| h.len() == 4);
    assert_eq!(
        shown[0],
        json!(["Revoked", "tester", [["Status", "active", "revoked"]]])
    );
    assert_eq!(shown[3], json!(["Registered", "tester", []]));
    let requests = event_requests(&browser, &live_id);
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        requests[1..]
            .iter()
            .all(|u| u.contains("startingAfter=evt_")),
        "{requests:?}"
    );
    assert_accessible(&browser, "with the history of a revoked device");
    browser.keys(ESCAPE);

    // The feed cannot be read: the history says so in place, and tries again.
    js(
        &browser,
        "window.__fetch = window.fetch; window.fetch = (u, o) => String(u).includes('/api/tenant/events') \
         ? Promise.reject(new TypeError('offline')) : window.__fetch(u, o); return true",
    );
    browser.click(&in_row(&probe_id, ".open-details"));
    browser.find("#history-error");
    assert!(browser
        .text("#history-error-text")
        .contains("Could not load the history"));
    assert!(history(&browser).is_empty());
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length"
        ),
        json!(0),
        "one message: in the drawer"
    );
    js(&browser, "window.fetch = window.__fetch; return true");
    browser.click("#history-retry");
    wait_history(&browser, "the history after trying again", |h| h.len() == 3);
    assert!(!browser.shown("#history-error"));
    assert_no_page_errors(&browser);
}

/// The selector of an element in a webhook's card.
fn in_card(id: &str, css: &str) -> String {
    format!("#webhook-list li[data-id='{id}'] {css}")
}

/// The webhooks as the API lists them.
fn api_webhooks(app: &TestApp) -> Vec<Value> {
    let response = app.get("/api/tenant/webhooks", &admin());
    assert_eq!(response.status, 200);
    response.json()["data"].as_array().unwrap().clone()
}

/// The deliveries log as shown, top to bottom: [outcome, attempt, status,
/// event id] per attempt.
fn deliveries_shown(browser: &Browser) -> Vec<Value> {
    js(
        browser,
        "return Array.from(document.querySelectorAll('#wh-log > li')).map(li => [
           li.querySelector('h4').textContent,
           li.querySelector('.wh-delivery-attempt').textContent,
           li.querySelector('.wh-delivery-status').textContent,
           li.querySelector('.wh-delivery-event').textContent])",
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn wait_deliveries(browser: &Browser, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    browser.wait_for(what, || {
        let now = deliveries_shown(browser);
        check(&now).then_some(now)
    })
}

/// Whether `secret` is anywhere in the page, its storage or the selection.
fn secret_in_page(browser: &Browser, secret: &str) -> bool {
    browser.script(
        "const s = arguments[0]; \
         return document.documentElement.outerHTML.includes(s) \
           || JSON.stringify(Object.entries(sessionStorage)).includes(s) \
           || JSON.stringify(Object.entries(localStorage)).includes(s) \
           || String(window.getSelection()).includes(s)",
        json!([secret]),
    ) == json!(true)
}

/// The Webhooks page, reached from the navigation (keyboard included):
/// create with the API's field errors shown by their fields, the secret shown
/// once and then gone from the page, enable and disable, a test event to a
/// local receiver (signed with that secret) and its result, the deliveries
/// log with each attempt, a new secret, delete after a confirmation, text
/// never markup, 390 px, dark mode, axe-core, Back, and a read-only token
/// told that webhooks need an admin token.
#[test]
fn the_webhooks_page() {
    let app = common::spawn_app_with(|s| s.webhooks.allow_loopback = true);
    let receiver = Receiver::start();
    let url = receiver.url("/hook");
    let base = format!("http://{}", app.addr);
    let browser = Browser::start();
    browser.set_viewport(1440, 900);
    browser.goto(&format!("{base}/#token={}", admin()));
    browser.find("#empty-state");
    wait_focus(&browser, "#devices-title");

    // The navigation, from the keyboard.
    tab_back_to(&browser, "#nav a[data-view='webhooks']", 10);
    browser.keys(ENTER);
    wait_focus(&browser, "#webhooks-title");
    assert_eq!(
        js(&browser, "return location.search"),
        json!("?view=webhooks")
    );
    assert_eq!(
        js(
            &browser,
            "return [document.querySelector('#nav [aria-current=page]').dataset.view, document.title]"
        ),
        json!(["webhooks", "Webhooks · devicehub"])
    );
    assert!(!browser.shown("#devices"));
    browser.find("#webhooks-empty");
    assert_accessible(&browser, "on the empty webhooks page");

    // Add: the form's own check first...
    tab_to(&browser, "#webhook-new", 5);
    browser.keys(ENTER);
    wait_focus(&browser, "#wh-url");
    browser.keys(ENTER);
    browser.wait_for("the missing URL", || {
        (browser.text("#wh-url-error") == "Enter the URL that receives the events").then_some(())
    });
    wait_focus(&browser, "#wh-url");
    // ...then the API's errors, each by its field, with the focus on it.
    browser.type_into("#wh-url", "ftp://hooks.example/in");
    browser.click("#wh-submit");
    browser.wait_for("the API's URL error", || {
        (browser.text("#wh-url-error") == "url: must use http or https").then_some(())
    });
    wait_focus(&browser, "#wh-url");
    assert_eq!(
        js(
            &browser,
            "return document.querySelector('#wh-url').getAttribute('aria-invalid')"
        ),
        json!("true")
    );
    browser.clear("#wh-url");
    browser.type_into("#wh-url", &url);
    browser.click("#wh-events-some");
    browser.click("#wh-submit");
    browser.wait_for("no event type chosen", || {
        browser
            .text("#wh-events-error")
            .starts_with("Choose at least one event type")
            .then_some(())
    });
    assert!(!browser.shown("#wh-url-error"), "the URL error went");
    browser.click("#wh-type-created");
    browser.click("#wh-type-revoked");
    browser.type_into("#wh-description", &"d".repeat(201));
    browser.click("#wh-submit");
    browser.wait_for("the API's description error", || {
        (browser.text("#wh-description-error") == "description: must be at most 200 characters")
            .then_some(())
    });
    wait_focus(&browser, "#wh-description");
    assert!(!browser.shown("#wh-events-error"));
    assert_accessible(&browser, "with an error in the webhook form");
    assert_borders_and_labels(&browser, "the webhook form");
    assert!(api_webhooks(&app).is_empty(), "nothing was created");
    // Good input: the secret is shown once.
    let description = "<img src=x onerror=\"window.__injected=1\">SIEM <b>feed</b>";
    browser.clear("#wh-description");
    browser.type_into("#wh-description", description);
    browser.click("#wh-submit");
    let secret = browser.wait_for("the secret", || {
        let text = browser.text("#key-value");
        text.starts_with("whsec_").then_some(text)
    });
    assert_eq!(browser.text("#key-title"), "Webhook created");
    assert!(browser
        .text("#key-warning")
        .starts_with("You will not see this secret again."));
    assert!(browser.text("#key-for").contains(&url));
    assert_accessible(&browser, "with the secret shown");
    browser.click("#key-copy");
    browser.wait_for("a copy answer", || {
        (!browser.text("#key-copy-status").is_empty()).then_some(())
    });
    // Escape asks before the secret is thrown away.
    browser.keys(ESCAPE);
    browser.find("#key-confirm");
    assert!(browser.text("#key-confirm-text").contains("secret"));
    assert_eq!(browser.text("#key-back"), "Back to the secret");
    browser.click("#key-back");
    browser.click("#key-done");
    browser.wait_for("the secret dialog to close", || {
        (!browser.shown("#key-dialog")).then_some(())
    });
    wait_focus(&browser, "#webhook-new");
    assert!(!secret_in_page(&browser, &secret), "the secret is gone");

    // The card: every field, as text.
    let hooks = api_webhooks(&app);
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["url"], json!(url));
    assert_eq!(hook["events"], json!(["device.created", "device.revoked"]));
    assert_eq!(hook["description"], json!(description));
    assert_eq!(hook["enabled"], json!(true));
    let id = hook["id"].as_str().unwrap().to_string();
    let card = |css: &str| in_card(&id, css);
    assert_eq!(browser.text(&card(".wh-url")), url);
    assert_eq!(browser.text(&card(".wh-state")), "Enabled");
    assert_eq!(
        js(
            &browser,
            &format!(
                "const c = document.querySelector(\"{}\"); \
                 return [c.querySelector('.wh-description').textContent, \
                   Array.from(c.querySelectorAll('.wh-events .tag')).map(t => t.textContent), \
                   document.querySelectorAll('#webhook-list img, #webhook-list b').length, typeof window.__injected]",
                card("")
            )
        ),
        json!([
            description,
            ["device.created", "device.revoked"],
            0,
            "undefined"
        ]),
        "names and descriptions are text, never markup"
    );
    assert_eq!(browser.text("#webhook-count"), "1 webhook");
    let test_button = browser.find(&card("[data-action='test']"));
    let name = browser.accessible_name(&test_button);
    assert!(
        name.starts_with("Send test event") && name.contains(&url),
        "accessible name {name:?}"
    );

    // Send test event: the receiver gets it, signed with the secret shown.
    browser.click(&card("[data-action='test']"));
    browser.wait_for("the test result", || {
        browser
            .text(&card(".wh-result"))
            .starts_with("Test event delivered: HTTP 200")
            .then_some(())
    });
    let got = receiver.wait_for(1, std::time::Duration::from_secs(10));
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert!(verifies(
        &secret,
        got[0].header("devicehub-signature").unwrap(),
        &got[0].body
    ));
    let first_test = got[0].event_id();

    // The deliveries log: the attempt, and a failing one sent from there.
    browser.click(&card("[data-action='log']"));
    browser.find("#wh-drawer");
    wait_focus(&browser, "#wh-drawer-close");
    let shown = wait_deliveries(&browser, "the test delivery", |d| d.len() == 1);
    assert_eq!(
        shown,
        [json!(["Delivered", "attempt 1", "HTTP 200", first_test])]
    );
    assert_eq!(browser.text("#wh-log-status"), "1 attempt, newest first.");
    receiver.plan(Reply::Status(500));
    browser.click("#wh-drawer-test");
    browser.wait_for("the failed test's result", || {
        let text = browser.text("#wh-drawer-result");
        text.starts_with("Test event not delivered: the receiver answered HTTP 500")
            .then_some(())
    });
    let shown = wait_deliveries(&browser, "the failed test on top", |d| d.len() == 2);
    let got = receiver.wait_for(2, std::time::Duration::from_secs(10));
    assert_eq!(
        shown[0],
        json!(["Failed", "attempt 1", "HTTP 500", got[1].event_id()])
    );
    assert_accessible(&browser, "with the deliveries log");
    browser.set_dark(true);
    assert_accessible(&browser, "with the deliveries log in dark mode");
    browser.set_dark(false);
    browser.keys(ESCAPE);
    wait_focus(&browser, &card("[data-action='log']"));

    // Disable and enable again; the focus stays on the button.
    browser.click(&card("[data-action='toggle']"));
    browser.wait_for("the webhook disabled", || {
        (browser.text(&card(".wh-state")) == "Disabled").then_some(())
    });
    assert_eq!(api_webhooks(&app)[0]["enabled"], json!(false));
    assert!(browser
        .text(&card("[data-action='toggle']"))
        .starts_with("Enable"));
    wait_focus(&browser, &card("[data-action='toggle']"));
    assert_accessible(&browser, "with a disabled webhook");
    browser.keys(ENTER);
    browser.wait_for("the webhook enabled", || {
        (browser.text(&card(".wh-state")) == "Enabled").then_some(())
    });
    assert_eq!(api_webhooks(&app)[0]["enabled"], json!(true));
    wait_focus(&browser, &card("[data-action='toggle']"));
    // A real change is delivered, and the log shows its attempt.
    app.register(&admin(), json!({"name": "Hooked Scanner"}));
    let got = receiver.wait_for(3, std::time::Duration::from_secs(10));
    assert_eq!(got[2].json()["type"], "device.created");
    browser.click(&card("[data-action='log']"));
    browser.find("#wh-drawer");
    let shown = wait_deliveries(&browser, "the device's event on top", |d| d.len() == 3);
    assert_eq!(
        shown[0],
        json!(["Delivered", "attempt 1", "HTTP 200", got[2].event_id()])
    );
    browser.click("#wh-drawer-close");
    wait_focus(&browser, &card("[data-action='log']"));

    // A new secret: confirmed, shown once, and it signs from then on.
    browser.click(&card("[data-action='secret']"));
    browser.find("#confirm-dialog");
    assert!(browser.text("#confirm-message").contains(&url));
    browser.click("#confirm-ok");
    let new_secret = browser.wait_for("the new secret", || {
        let text = browser.text("#key-value");
        (text.starts_with("whsec_") && text != secret).then_some(text)
    });
    assert_eq!(browser.text("#key-title"), "New signing secret");
    browser.click("#key-done");
    wait_focus(&browser, &card("[data-action='secret']"));
    assert!(
        !secret_in_page(&browser, &new_secret),
        "the new secret is gone"
    );
    browser.click(&card("[data-action='test']"));
    // The click says "Sending…" at once; the answer rebuilds the card.
    browser.wait_for("the second test's result", || {
        browser
            .text(&card(".wh-result"))
            .starts_with("Test event delivered: HTTP 200")
            .then_some(())
    });
    let got = receiver.wait_for(4, std::time::Duration::from_secs(10));
    let signature = got[3].header("devicehub-signature").unwrap();
    assert!(verifies(&new_secret, signature, &got[3].body));
    assert!(!verifies(&secret, signature, &got[3].body));

    // A phone: nothing sideways, the form and the log fit.
    browser.set_viewport(390, 844);
    assert_nothing_off_screen(&browser, "the webhooks at 390 px");
    assert_accessible(&browser, "the webhooks at 390 px");
    screenshot(&browser, "webhooks-390.png");
    browser.click("#webhook-new");
    wait_focus(&browser, "#wh-url");
    let fits =
        "const d = document.querySelector(arguments[0]); return d.scrollWidth <= d.clientWidth";
    assert_eq!(
        browser.script(fits, json!(["#webhook-dialog"])),
        json!(true),
        "the form does not scroll sideways at 390 px"
    );
    assert_accessible(&browser, "the webhook form at 390 px");
    browser.keys(ESCAPE);
    wait_focus(&browser, "#webhook-new");
    browser.click(&card("[data-action='log']"));
    wait_deliveries(&browser, "the log at 390 px", |d| d.len() == 4);
    assert_eq!(
        browser.script(fits, json!(["#wh-drawer"])),
        json!(true),
        "the log does not scroll sideways at 390 px"
    );
    assert_accessible(&browser, "the deliveries log at 390 px");
    browser.click("#wh-drawer-close");
    browser.set_viewport(1440, 900);
    screenshot(&browser, "webhooks-1440.png");

    // Delete: asked first, naming the URL; Cancel keeps it.
    browser.click(&card("[data-action='delete']"));
    browser.find("#confirm-dialog");
    assert!(browser.text("#confirm-message").contains(&url));
    browser.click("#confirm-cancel");
    wait_focus(&browser, &card("[data-action='delete']"));
    assert_eq!(api_webhooks(&app).len(), 1);
    browser.click(&card("[data-action='delete']"));
    browser.click("#confirm-ok");
    browser.find("#webhooks-empty");
    assert!(api_webhooks(&app).is_empty());
    assert!(!browser.shown("#webhook-list li"));
    wait_focus(&browser, "#webhooks-title");
    browser.wait_for("the deletion's note", || {
        browser
            .text("#toast-status")
            .contains("Deleted the webhook")
            .then_some(())
    });

    // Devices and back: Back returns to the webhooks.
    browser.click("#nav a[data-view='devices']");
    wait_focus(&browser, "#devices-title");
    assert_eq!(js(&browser, "return location.search"), json!(""));
    wait_rows(&browser, "the device", |r| r.len() == 1);
    js(&browser, "history.back(); return true");
    wait_focus(&browser, "#webhooks-title");
    assert_eq!(
        js(&browser, "return location.search"),
        json!("?view=webhooks")
    );
    browser.find("#webhooks-empty");

    // Read-only: the page says webhooks need an admin token.
    assert_eq!(
        app.get("/api/tenant/webhooks", &reader()).error_code(),
        "insufficient_scope"
    );
    browser.click("#signout");
    browser.find("#signin");
    browser.type_into("#token-input", &reader());
    browser.click("#signin-button");
    browser.wait_for("the admin-token message", || {
        browser
            .text("#webhooks-denied")
            .starts_with("Webhooks need an admin token.")
            .then_some(())
    });
    wait_focus(&browser, "#webhooks-title");
    assert!(!browser.shown("#webhook-new"));
    assert!(!browser.shown("#webhooks-error"));
    assert!(!browser.shown("#webhooks-empty"));
    assert_eq!(
        js(
            &browser,
            "return document.querySelectorAll('#toast-alerts .toast-item').length"
        ),
        json!(0),
        "one message: on the page"
    );
    assert_accessible(&browser, "the webhooks page with a read-only token");
    assert_no_page_errors(&browser);
}
