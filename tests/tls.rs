//! HTTPS: certificates made by the test (a local CA, or a self-signed one),
//! HTTP/1.1 and HTTP/2 by ALPN, start-up errors naming the key, and the
//! healthcheck over https.

mod common;
#[path = "support/binary.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use devicehub::config::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{command, free_port, run, Server};

struct Pki {
    /// The local CA's certificate, what devices would trust.
    ca: PathBuf,
    /// The server's chain (leaf, then the CA) and key.
    files: TlsFiles,
}

/// A local CA and a certificate it issued for 127.0.0.1 and localhost: the
/// "box on a LAN with no internet" set-up of docs/OPERATIONS.md.
fn local_ca(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "devicehub test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_pem = ca.as_ref().pem();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca_pem),
        files: TlsFiles {
            cert: write("chain.pem", &format!("{}{ca_pem}", leaf.pem())),
            key: write("key.pem", &leaf_key.serialize_pem()),
        },
    }
}

/// A self-signed certificate for 127.0.0.1, as pinned on devices.
fn self_signed(dir: &Path, name: &str) -> TlsFiles {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    TlsFiles { cert, key }
}

/// A TLS connection to `addr` trusting only `ca`, offering `alpn`.
fn connect(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in <CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

fn https_get_healthz(addr: SocketAddr, ca: &Path) -> String {
    let mut stream = connect(addr, ca, &[b"http/1.1"]);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut bytes = Vec::new();
    // The server may close without close_notify once it has answered.
    let _ = stream.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn https_serves_http1_and_http2_by_alpn_and_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let pki = local_ca(dir.path());
    let files = pki.files.clone();
    let app = common::spawn_app_with(move |s| s.tls = Some(files));

    let answer = https_get_healthz(app.addr, &pki.ca);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");

    let h2 = connect(app.addr, &pki.ca, &[b"h2", b"http/1.1"]);
    assert_eq!(h2.conn.alpn_protocol(), Some(&b"h2"[..]));
    drop(h2);

    // A whole HTTP/2 exchange, by a client devices could use.
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert"])
        .arg(&pki.ca)
        .args([
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("https://127.0.0.1:{}/healthz", app.addr.port()))
        .output()
        .expect("curl is needed for the HTTP/2 test");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // HTTPS only: a plain request gets no HTTP answer.
    let plain = common::try_raw(
        app.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(plain.is_err() || plain.unwrap().status != 200);
}

/// Starts a server in-process with `files` and returns its error.
fn start_error(files: TlsFiles) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings_in(dir.path());
    settings.tls = Some(files);
    let db = settings.storage_path.clone();
    let error = actix_web::rt::System::new().block_on(async move {
        match devicehub::startup::start(&settings).await {
            Ok(_) => panic!("started with bad TLS files"),
            Err(e) => e.to_string(),
        }
    });
    assert!(
        !db.exists(),
        "nothing is created before the TLS files are checked"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
    error
}

#[test]
fn bad_tls_files_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = self_signed(dir.path(), "good");
    let other = self_signed(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let with = |cert: &Path, key: &Path| TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };

    let cases = [
        (
            with(&missing, &good.key),
            "server.tls_cert_file: cannot read",
        ),
        (
            with(&good.cert, &missing),
            "server.tls_key_file: cannot read",
        ),
        (with(&garbage, &good.key), "server.tls_cert_file:"),
        // A key where the certificate should be, and the reverse.
        (with(&good.key, &good.key), "server.tls_cert_file:"),
        (with(&good.cert, &good.cert), "server.tls_key_file:"),
        // A key that is not the certificate's.
        (with(&good.cert, &other.key), "server.tls_key_file:"),
    ];
    for (files, expected) in cases {
        let shown = format!("{files:?}");
        let error = start_error(files);
        assert!(error.starts_with(expected), "{shown}: {error}");
        assert!(!error.contains("PRIVATE KEY"), "no key material: {error}");
    }
}

fn tls_command(dir: &Path, bind: &str, files: &TlsFiles) -> Command {
    let mut cmd = command(dir, bind);
    cmd.env("DEVICEHUB__SERVER__TLS_CERT_FILE", &files.cert)
        .env("DEVICEHUB__SERVER__TLS_KEY_FILE", &files.key);
    cmd
}

#[test]
fn the_binary_says_https_and_its_healthcheck_trusts_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let files = self_signed(dir.path(), "box");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let server = Server::start(tls_command(dir.path(), &bind, &files), "https");
    assert!(
        server
            .ready
            .contains(&format!("listening on https://{bind}")),
        "{}",
        server.ready
    );
    // A self-signed certificate, pinned: devices trust exactly this file.
    let answer = https_get_healthz(server.addr, &files.cert);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let out = run(tls_command(dir.path(), &bind, &files).arg("healthcheck"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("https://{bind}/healthz")));
    let wildcard = format!("0.0.0.0:{port}");
    let out = run(tls_command(dir.path(), &wildcard, &files).arg("healthcheck"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another certificate than the server's: refused, in one line.
    let other = self_signed(dir.path(), "other");
    let out = run(tls_command(dir.path(), &bind, &other).arg("healthcheck"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("https://{bind}/healthz")),
        "{stderr}"
    );
    assert!(stderr.contains("certificate"), "{stderr}");

    // A plain-HTTP healthcheck against the HTTPS port fails too.
    let out = run(command(dir.path(), &bind).arg("healthcheck"));
    assert!(!out.status.success());
}

#[test]
fn the_binary_refuses_half_a_tls_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let files = self_signed(dir.path(), "box");
    for (set, unset) in [
        ("DEVICEHUB__SERVER__TLS_CERT_FILE", "server.tls_key_file"),
        ("DEVICEHUB__SERVER__TLS_KEY_FILE", "server.tls_cert_file"),
    ] {
        let out = run(command(dir.path(), "127.0.0.1:0").env(set, &files.cert));
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(unset), "{stderr}");
    }
}

#[test]
fn the_demo_banner_links_to_https_when_tls_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let files = self_signed(dir.path(), "box");
    let mut cmd = tls_command(dir.path(), "127.0.0.1:0", &files);
    cmd.arg("serve").arg("--demo");
    let server = Server::start(cmd, "https");
    let link = server.wait_for_stdout("/#token=");
    assert!(
        link.trim()
            .starts_with(&format!("https://{}/#token=", server.addr)),
        "{link}"
    );
}
