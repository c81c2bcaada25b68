//! Sends one delivery: an HTTP/1.1 POST over tokio, with rustls for https.
//! It is small on purpose: the host is resolved here, each address checked
//! (API.md §7), and the connection made to the checked address itself, so
//! a second DNS answer cannot point it elsewhere (DNS rebinding). One
//! request per connection (`Connection: close`); only the status line and
//! headers of the answer are read; redirects are never followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole attempt (resolve, connect, TLS, send, answer) must fit in this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's head that is read.
const HEAD_MAX: usize = 16 * 1024;

/// A webhook URL, checked: `http` or `https`, a host, no credentials.
#[derive(Debug, Clone)]
pub struct Target {
    text: String,
    url: url::Url,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, &'static str> {
        // A URI (RFC 3986) as sent: anything else percent-encoded, a
        // non-ASCII host in its punycode form.
        let uri_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
        if !text.bytes().all(uri_char) {
            return Err("must be a URI: ASCII letters, digits and -._~:/?#[]@!$&'()*+,;=% only (percent-encode the rest; a non-ASCII host in its xn-- form)");
        }
        let url = url::Url::parse(text).map_err(|_| "must be an absolute http or https URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must use http or https");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials");
        }
        Ok(Target {
            text: text.to_string(),
            url,
        })
    }

    fn https(&self) -> bool {
        self.url.scheme() == "https"
    }

    fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The `Host` header: the host, and the port unless it is the default.
    fn host_header(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_string(),
        }
    }

    /// The addresses to try: an IP literal as it is, a name resolved.
    async fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let port = self.port();
        match self.url.host() {
            Some(url::Host::Ipv4(ip)) => Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(url::Host::Ipv6(ip)) => Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map(|found| found.collect())
                .map_err(|e| format!("dns: {e}")),
            None => Err("dns: the URL names no host".into()),
        }
    }
}

impl std::fmt::Display for Target {
    /// The URL as it was given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why an address may not be sent to, or None when it may.
pub fn refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_unspecified() {
        Some("unspecified address")
    } else if link_local {
        Some("link-local address")
    } else if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        Some("multicast or broadcast address")
    } else if ip.is_loopback() && !allow_loopback {
        Some("loopback address (webhooks.allow_loopback is off)")
    } else {
        None
    }
}

/// What one attempt got: the answer's status, or why there was none (or
/// why a status is not a delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub took: Duration,
}

/// POSTs `body` to `target` with `headers`, within `TIMEOUT`.
pub async fn post(
    target: &Target,
    headers: &[(&str, String)],
    body: &[u8],
    allow_loopback: bool,
) -> Outcome {
    let started = Instant::now();
    let sent =
        actix_web::rt::time::timeout(TIMEOUT, attempt(target, headers, body, allow_loopback)).await;
    let (status, error) = match sent {
        Err(_) => (None, Some("timeout".to_string())),
        Ok(Err(e)) => (None, Some(e)),
        Ok(Ok(status)) if (300..400).contains(&status) => {
            (Some(status), Some("redirect not followed".to_string()))
        }
        Ok(Ok(status)) => (Some(status), None),
    };
    Outcome {
        status,
        error,
        took: started.elapsed(),
    }
}

async fn attempt(
    target: &Target,
    headers: &[(&str, String)],
    body: &[u8],
    allow_loopback: bool,
) -> Result<u16, String> {
    let addresses = target.addresses().await?;
    let mut refused = None;
    let address = addresses
        .iter()
        .find(|a| match refusal(a.ip(), allow_loopback) {
            Some(why) => {
                refused.get_or_insert(format!("refused address {}: {why}", a.ip()));
                false
            }
            None => true,
        });
    let Some(address) = address else {
        return Err(refused.unwrap_or_else(|| "dns: no address found".into()));
    };
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: devicehub/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.path_and_query(),
        target.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    if !target.https() {
        return exchange(stream, &request).await;
    }
    let name = match target.url.host() {
        Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string()),
        _ => Ok(ServerName::IpAddress(address.ip().into())),
    }
    .map_err(|e| format!("tls: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    exchange(tls, &request).await
}

/// Writes the request and reads the answer's head; returns its status.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("connection: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut parsed_headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                return response.code.ok_or_else(|| "bad response".to_string())
            }
            Ok(httparse::Status::Partial) if head.len() < HEAD_MAX => {}
            Ok(httparse::Status::Partial) => return Err("bad response: head too long".into()),
            Err(e) => return Err(format!("bad response: {e}")),
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("connection: {e}"))?;
        if n == 0 {
            return Err("connection: closed before an answer".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The TLS client: the ring provider and the Mozilla root certificates
/// (webpki-roots), built once.
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            Arc::new(config.unwrap_or_else(|_| {
                // The ring provider supports the default versions; this
                // branch only keeps start-up free of a panic path.
                ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3 with ring")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
            }))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_refused_by_kind() {
        let no = |ip: &str, loopback| refusal(ip.parse().unwrap(), loopback);
        assert!(no("169.254.169.254", true).unwrap().contains("link-local"));
        assert!(no("fe80::1", true).unwrap().contains("link-local"));
        assert!(no("febf::1", true).unwrap().contains("link-local"));
        assert!(no("0.0.0.0", true).unwrap().contains("unspecified"));
        assert!(no("::", true).unwrap().contains("unspecified"));
        assert!(no("127.0.0.1", false).unwrap().contains("loopback"));
        assert!(no("::1", false).unwrap().contains("loopback"));
        assert!(no("::ffff:127.0.0.1", false).unwrap().contains("loopback"));
        assert!(no("::ffff:169.254.1.1", true)
            .unwrap()
            .contains("link-local"));
        assert!(no("224.0.0.1", true).is_some());
        assert_eq!(no("127.0.0.1", true), None);
        assert_eq!(no("10.1.2.3", false), None);
        assert_eq!(no("192.168.1.20", false), None);
        assert_eq!(no("2001:db8::1", false), None);
        assert_eq!(no("fec0::1", false), None);
    }

    #[test]
    fn targets_keep_their_text_and_know_where_to_go() {
        let t = Target::parse("https://hooks.example:8443/in?x=1").unwrap();
        assert_eq!(t.to_string(), "https://hooks.example:8443/in?x=1");
        assert_eq!(t.port(), 8443);
        assert_eq!(t.host_header(), "hooks.example:8443");
        assert_eq!(t.path_and_query(), "/in?x=1");
        let plain = Target::parse("http://[::1]").unwrap();
        assert_eq!(
            (plain.port(), plain.path_and_query()),
            (80, "/".to_string())
        );
        assert!(Target::parse("https://u:p@x.example/").is_err());
        assert!(Target::parse("file:///etc/passwd").is_err());
        assert!(Target::parse("/relative").is_err());
        assert!(Target::parse("https://\u{cf}/").is_err(), "a URI is ASCII");
        assert!(Target::parse("http://x.example/a b").is_err());
        assert!(Target::parse("http://xn--tda.example/a%20b").is_ok());
    }
}
