//! HTTP/1.1 over a unix socket and over TLS, written by hand so the tests
//! see exactly the bytes a client sends and the server answers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// A status and the body parsed as JSON (`Null` if it is not JSON).
pub type Reply = (u16, serde_json::Value);

/// Parses a raw HTTP/1.1 response; `None` if there is none.
pub fn parse(response: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(response);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Writes `request` (head and body) and reads to the end; a connection the
/// server closes early gives what arrived, maybe nothing.
async fn exchange(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    head: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut response = Vec::new();
    if stream.write_all(head.as_bytes()).await.is_ok() {
        // The server may answer an oversized body before reading it all.
        let _ = stream.write_all(body).await;
        let _ = stream.read_to_end(&mut response).await;
    }
    response
}

fn head(method: &str, target: &str, headers: &[(&str, &str)], length: usize) -> String {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one request on a new connection to a unix socket; the raw answer.
pub async fn unix_send(socket: &Path, method: &str, target: &str, body: &str) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    exchange(
        &mut stream,
        &head(method, target, &[], body.len()),
        body.as_bytes(),
    )
    .await
}

/// Sends one request to a unix socket and parses the answer.
pub async fn unix_call(socket: &Path, method: &str, target: &str, body: &str) -> Reply {
    let response = unix_send(socket, method, target, body).await;
    parse(&response).unwrap_or_else(|| panic!("no response to {method} {target}"))
}

/// A TLS client trusting only `ca`, for `localhost`.
pub fn tls_connector(ca: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(client))
}

/// POSTs as the Python SDK does: over TLS to `localhost`, with an
/// absolute-form target `https://localhost/{path}`.
pub async fn https_post(
    connector: &tokio_rustls::TlsConnector,
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");
    let target = format!("https://localhost/{path}");
    let response = exchange(
        &mut stream,
        &head("POST", &target, headers, body.len()),
        body.as_bytes(),
    )
    .await;
    parse(&response).unwrap_or_else(|| panic!("no response to POST {path}"))
}

/// GETs `path` over plain HTTP; the status and the body text.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let response = exchange(&mut stream, &head("GET", path, &[], 0), b"").await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no response to GET {path}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}
