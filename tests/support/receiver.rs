//! A local webhook receiver for tests: it records every request it gets and
//! answers each with the next planned reply (200 once the plan is used up).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn event_id(&self) -> String {
        self.header("devicehub-event-id")
            .unwrap_or_default()
            .to_string()
    }
}

pub enum Reply {
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// Answer 200 only once the test sends on (or drops) the sender.
    Hold(mpsc::Receiver<()>),
}

pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<VecDeque<Reply>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A receiver on a port chosen earlier (for a server started before it).
    pub fn on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let plan: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let (g, p) = (got.clone(), plan.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (g, p) = (g.clone(), p.clone());
                std::thread::spawn(move || serve(stream, &g, &p));
            }
        });
        Receiver { addr, got, plan }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn plan(&self, reply: Reply) {
        self.plan.lock().unwrap().push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived (up to `limit`).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests arrived",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(mut stream: TcpStream, got: &Mutex<Vec<Received>>, plan: &Mutex<VecDeque<Reply>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let body = bytes[head_end..head_end + length].to_vec();
    let reply = plan.lock().unwrap().pop_front();
    got.lock().unwrap().push(Received {
        path,
        headers,
        body,
    });
    let answer = match reply {
        None => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string(),
        Some(Reply::Status(code)) => format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n"),
        Some(Reply::Redirect(to)) => {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
        }
        Some(Reply::Hold(release)) => {
            let _ = release.recv();
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
        }
    };
    let _ = stream.write_all(answer.as_bytes());
}

/// Whether `signature` (a `Devicehub-Signature` value) signs `body` with `secret`.
pub fn verifies(secret: &str, signature: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == v1
}
