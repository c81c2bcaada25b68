//! The built binary for the tests that start it (tests/binary.rs, ops.rs,
//! tls.rs, backup.rs):
//! a clean environment, a server whose log is collected, and its ready line
//! read in text or JSON format, over http or https.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_devicehub");
pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// A command with a clean DEVICEHUB_* environment, the test secret and
/// storage in `dir`, binding `bind`.
pub fn command(dir: &Path, bind: &str) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEVICEHUB") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("DEVICEHUB__SERVER__BIND", bind)
        .env("DEVICEHUB__STORAGE__PATH", dir.join("data/devicehub.redb"))
        .env("DEVICEHUB__AUTH__HS256_SECRET", SECRET)
        .env("RUST_LOG", "info");
    cmd
}

/// A port that was free a moment ago (for commands that need a fixed one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The ready line as logged.
    pub ready: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `cmd` and waits for the line saying `listening on <scheme>://`.
    pub fn start(mut cmd: Command, scheme: &str) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out_lines = stdout.clone();
        let child_stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(child_stdout).lines().map_while(Result::ok) {
                out_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        let needle = format!("listening on {scheme}://");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find(&needle) {
                    let rest = &line[at + needle.len()..];
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':'))
                        .collect();
                    let _ = tx.send((addr, line.clone()));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (addr, ready) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {scheme} ready line; log: {:?}", log.lock().unwrap()));
        Server {
            child,
            addr: addr.parse().unwrap(),
            ready,
            log,
            stdout,
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_nth(needle, 1);
    }

    /// Waits for the `count`th log line containing `needle`, and returns it.
    pub fn wait_for_log_nth(&self, needle: &str, count: usize) -> String {
        for _ in 0..1500 {
            let log = self.log.lock().unwrap();
            if let Some(line) = log.iter().filter(|l| l.contains(needle)).nth(count - 1) {
                return line.clone();
            }
            drop(log);
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {count} x {needle:?} in the log: {:?}",
            self.log.lock().unwrap()
        );
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "still running after {limit:?}; log: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a stdout line contains `needle` and returns it.
    pub fn wait_for_stdout(&self, needle: &str) -> String {
        for _ in 0..500 {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} on stdout: {:?}", self.stdout.lock().unwrap());
    }

    /// The line after `heading` on stdout, waiting for it to be printed.
    pub fn stdout_after(&self, heading: &str) -> String {
        for _ in 0..500 {
            {
                let lines = self.stdout.lock().unwrap();
                if let Some(i) = lines.iter().position(|l| l.contains(heading)) {
                    if let Some(next) = lines.get(i + 1) {
                        return next.trim().to_string();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {heading:?} on stdout: {:?}",
            self.stdout.lock().unwrap()
        );
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
