//! Shared by the integration tests: a real server on 127.0.0.1 and a free
//! port over a temporary database, and a small HTTP/1.1 client that sends
//! exactly the bytes a test asks for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use devicehub::auth::token::{mint_hs256, TokenRequest};
use devicehub::config::{AuthSettings, Settings};
use devicehub::store::Store;
use serde_json::Value;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub dir: tempfile::TempDir,
    /// The app's database when the tests run on PostgreSQL.
    pub postgres_url: Option<String>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

/// The PostgreSQL cluster the tests run on, when `DEVICEHUB_TEST_POSTGRES`
/// names one (`scripts/test.sh` starts a throwaway cluster and sets it). Then
/// every app gets a fresh database there, and the same tests run on
/// PostgreSQL instead of the redb file.
pub fn test_postgres() -> Option<String> {
    std::env::var("DEVICEHUB_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The cluster for the tests that need PostgreSQL whatever store the others
/// run on (`DEVICEHUB_TEST_PG_CLUSTER`, or `DEVICEHUB_TEST_POSTGRES`). None,
/// and the test skips, when there is none, except under `CI=true`, where
/// that fails: CI cannot pass without running them.
pub fn pg_cluster(test: &str) -> Option<String> {
    let url = std::env::var("DEVICEHUB_TEST_PG_CLUSTER")
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(test_postgres);
    if url.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the PostgreSQL tests: run them with scripts/test.sh, which starts a cluster"
        );
        eprintln!(
            "{test}: DEVICEHUB_TEST_PG_CLUSTER is not set: skipped (scripts/test.sh sets it)"
        );
    }
    url
}

/// A new, empty database in the cluster at `base`; its URL.
pub fn fresh_database(base: &str) -> String {
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    block_on(async {
        let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("DEVICEHUB_TEST_POSTGRES: cannot connect: {e}"));
        actix_web::rt::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let (server, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{server}/{name}")
}

/// True, saying so, when the tests run on PostgreSQL: for the tests of the
/// redb file itself (its snapshots, faults and restarts), which then skip.
pub fn redb_only(test: &str) -> bool {
    let on_postgres = test_postgres().is_some();
    if on_postgres {
        eprintln!("{test}: a test of the redb file, skipped on PostgreSQL");
    }
    on_postgres
}

pub fn settings_in(dir: &std::path::Path) -> Settings {
    Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        storage_path: dir.join("devicehub.redb"),
        postgres: test_postgres().map(|base| devicehub::config::PostgresSettings {
            url: fresh_database(&base),
            ca_file: None,
        }),
        limits: Default::default(),
        auth: AuthSettings {
            hs256_secret: Some(SECRET.to_string()),
            ..Default::default()
        },
        ..Settings::default()
    }
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

pub fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    adjust(&mut settings);
    spawn_app_in(dir, settings).unwrap_or_else(|e| panic!("server did not start: {e}"))
}

pub fn spawn_app_in(dir: tempfile::TempDir, settings: Settings) -> Result<TestApp, String> {
    let postgres_url = settings.postgres.as_ref().map(|p| p.url.clone());
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match devicehub::startup::start(&settings).await {
                Ok(running) => {
                    let _ = tx.send(Ok((running.addr, running.server.handle(), running.store)));
                    let _ = running.server.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        })
    });
    let (addr, handle, store) = rx.recv().unwrap()?;
    Ok(TestApp {
        addr,
        store,
        dir,
        postgres_url,
        handle,
        thread: Some(thread),
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // The stop future must be driven by a runtime of its own.
        let _ = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(false));
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The server's worker threads let go of their state (and so of the
        // database) a moment after the server future ends: wait for that, so
        // that whoever reopens the file next finds it free.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.store) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn token_for(tenant: &str, scope: &str) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &TokenRequest {
            tenant_id: tenant,
            scope,
            ttl_secs: 3600,
            subject: Some("tester"),
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of an error envelope, checking the envelope's shape.
    pub fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let body = self.json();
        let error = body["error"].as_object().expect("an error envelope");
        assert!(error["message"].is_string());
        assert_eq!(error.len(), 2, "exactly code and message: {body}");
        error["code"].as_str().unwrap().to_string()
    }

    /// The ids of a list answer's `data`, in order.
    pub fn data_ids(&self) -> Vec<String> {
        self.json()["data"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|d| d["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Sends one raw request and reads the whole response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    try_raw(addr, request).unwrap_or_else(|e| panic!("request to {addr} failed: {e}"))
}

/// Like `raw`, but says what went wrong instead of panicking.
pub fn try_raw(addr: SocketAddr, request: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    // Read until the response is whole (by its length or last chunk): some
    // peers (chromedriver) keep the connection open despite `close`.
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if response_complete(&bytes) {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&bytes)
}

/// A kept-alive connection: one request, one whole response, again.
pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream })
    }

    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Result<Response, String> {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !response_complete(&bytes) {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        parse_response(&bytes)
    }
}

fn response_complete(bytes: &[u8]) -> bool {
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..split]).to_lowercase();
    let body = &bytes[split + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn parse_response(bytes: &[u8]) -> Result<Response, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head in {:?}", String::from_utf8_lossy(bytes)))?;
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

impl TestApp {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        raw(self.addr, &bytes)
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &auth)], None)
    }

    pub fn send_json(&self, method: &str, path: &str, token: &str, body: &Value) -> Response {
        let auth = format!("Bearer {token}");
        self.request(
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn send(&self, method: &str, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request(method, path, &[("Authorization", &auth)], None)
    }

    /// Registers a device and returns it with its key.
    pub fn register(&self, token: &str, body: Value) -> (Value, String) {
        let response = self.send_json("POST", "/api/tenant/devices", token, &body);
        assert_eq!(
            response.status,
            201,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
        let json = response.json();
        (
            json["data"].clone(),
            json["apiKey"].as_str().unwrap().to_string(),
        )
    }
}

/// Runs a store call (async) from a plain test thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    actix_web::rt::System::new().block_on(future)
}

impl TestApp {
    /// Everything the database holds, as bytes: the redb file, or every
    /// devicehub table's rows as text.
    pub fn database_bytes(&self) -> Vec<u8> {
        let Some(url) = self.postgres_url.clone() else {
            return std::fs::read(self.dir.path().join("devicehub.redb")).unwrap();
        };
        block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            actix_web::rt::spawn(connection);
            let tables = client
                .query(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE 'devicehub%'",
                    &[],
                )
                .await
                .unwrap();
            let mut out = Vec::new();
            for table in tables {
                let name: String = table.get(0);
                let rows = client
                    .query(&format!("SELECT t::text FROM {name} t"), &[])
                    .await
                    .unwrap();
                for row in rows {
                    out.extend_from_slice(row.get::<_, String>(0).as_bytes());
                    out.push(b'\n');
                }
            }
            out
        })
    }

    /// The embedded store under this app (tests of the redb file itself).
    pub fn embedded(&self) -> &devicehub::store::Embedded {
        self.store
            .embedded()
            .expect("this test needs the embedded store")
    }
}
