//! `devicehub healthcheck`: one `GET /healthz` to the configured server, over
//! plain HTTP or HTTPS, answered 200 within 2 s or a one-line reason. A bare
//! HTTP/1.1 request over a `TcpStream` keeps it free of an HTTP client crate.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::config::Settings;
use crate::error::StartupError;

/// The whole check, connection included, must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where the healthcheck connects: the bind address, with a wildcard
/// (`0.0.0.0`, `::`) replaced by the loopback address of its family.
pub fn target(settings: &Settings) -> Result<SocketAddr, StartupError> {
    let mut addr = settings.bind;
    if addr.port() == 0 {
        return Err(StartupError::new(
            "server.bind: port 0 picks a free port at start-up, so the healthcheck cannot know it; set a fixed port",
        ));
    }
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Ok(addr)
}

/// Asks `/healthz`; `Ok` carries a line for stdout, `Err` the reason it failed.
pub fn check(settings: &Settings) -> Result<String, StartupError> {
    let addr = target(settings)?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/healthz");
    let tls = match &settings.tls {
        Some(files) => Some(Arc::new(crate::tls::pinned_client_config(&files.cert)?)),
        None => None,
    };
    let deadline = Instant::now() + TIMEOUT;
    let status = ask(addr, tls, deadline).map_err(|e| {
        let why = if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else {
            e.to_string()
        };
        StartupError::new(format!("healthcheck: {url}: {why}"))
    })?;
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(format!("healthy: {url} answered {status}"))
    } else {
        Err(StartupError::new(format!(
            "healthcheck: {url} answered {status}"
        )))
    }
}

/// Sends the request and returns the response's status line.
fn ask(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: devicehub-healthcheck\r\nConnection: close\r\n\r\n"
    );
    match tls {
        None => exchange(tcp.try_clone()?, &tcp, request.as_bytes(), deadline),
        Some(config) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let stream = rustls::StreamOwned::new(conn, tcp.try_clone()?);
            exchange(stream, &tcp, request.as_bytes(), deadline)
        }
    }
}

/// Writes `request` to `stream` and reads until the status line is complete,
/// keeping every socket wait within `deadline`.
fn exchange(
    mut stream: impl Read + Write,
    socket: &TcpStream,
    request: &[u8],
    deadline: Instant,
) -> std::io::Result<String> {
    socket.set_write_timeout(Some(remaining(deadline)?))?;
    socket.set_read_timeout(Some(remaining(deadline)?))?;
    stream.write_all(request)?;
    stream.flush()?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() > 4096 {
            return Err(std::io::Error::other("the answer is not HTTP"));
        }
        socket.set_read_timeout(Some(remaining(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "the connection closed before an answer",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    if !line.starts_with("HTTP/1.") {
        return Err(std::io::Error::other("the answer is not HTTP"));
    }
    Ok(line)
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bind: &str) -> Settings {
        Settings {
            bind: bind.parse().unwrap(),
            ..Settings::default()
        }
    }

    #[test]
    fn a_wildcard_bind_is_asked_on_loopback() {
        assert_eq!(
            target(&settings("0.0.0.0:8080")).unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            target(&settings("[::]:8080")).unwrap().to_string(),
            "[::1]:8080"
        );
        assert_eq!(
            target(&settings("10.1.2.3:8443")).unwrap().to_string(),
            "10.1.2.3:8443"
        );
        let zero = target(&settings("127.0.0.1:0")).unwrap_err().to_string();
        assert!(zero.starts_with("server.bind:"), "{zero}");
    }
}
