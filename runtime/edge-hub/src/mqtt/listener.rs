//! The MQTT/TLS listener: accepts connections up to the configured maximum,
//! gives each ten seconds for the TLS handshake and its CONNECT, and serves
//! it on a task of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Packet};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::connection::{self, Closed, Connection, Outgoing, Shared};
use crate::hub::Hub;

/// How long a new connection has for its TLS handshake and CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves MQTT over TLS on `listener` until the returned future is dropped,
/// which also closes every connection it serves. `tls` is the hub's server
/// configuration (its certificate issued by the device CA); at most
/// `hub.config().max_connections` connections are served at once, and
/// connections past that are closed as soon as they are accepted.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, hub: Hub) {
    let limit = Arc::new(Semaphore::new(hub.config().max_connections));
    let shared = Arc::new(Shared {
        hub,
        clients: super::session::Clients::default(),
    });
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        // Logged at 1, 2, 4, 8, … refusals, so that a
                        // connection flood does not flood the log too.
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(
                                %peer,
                                refused,
                                limit = shared.hub.config().max_connections,
                                "MQTT connection refused: the connection limit is reached"
                            );
                        }
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        serve_connection(shared, acceptor, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of file descriptors, typically: wait a little
                    // rather than spin, and go on.
                    tracing::warn!(%error, "cannot accept an MQTT connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // Deliveries and acknowledgements are small packets that must not wait
    // for Nagle's algorithm.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let mut buffer = BytesMut::new();
    let handshake = async {
        let mut stream = acceptor.accept(stream).await.map_err(Closed::Io)?;
        let connect = connection::read_connect(&mut stream, &mut buffer).await?;
        Ok::<_, Closed>((stream, connect))
    };
    let (mut stream, connect) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(closed)) => {
            tracing::info!(%peer, reason = %closed, "MQTT connection closed before CONNECT");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "MQTT connection closed: no CONNECT within {CONNECT_TIMEOUT:?}");
            return;
        }
    };
    let peer_certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|certificate| certificate.to_vec());
    let identity = match connection::authenticate(
        &shared.hub,
        &connect,
        peer_certificate.as_deref(),
    )
    .await
    {
        Ok(identity) => identity,
        Err((code, reason)) => {
            tracing::warn!(%peer, client = %connect.client_id, ?code, %reason, "MQTT connection refused");
            let mut connack = BytesMut::new();
            if Packet::ConnAck(ConnAck::new(code, false))
                .write(&mut connack, usize::MAX)
                .is_ok()
            {
                let refuse = async {
                    stream.write_all(&connack).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, refuse).await;
            }
            return;
        }
    };
    let client = identity.client_id.clone();
    let module = identity.module.clone();
    let (reader, writer) = tokio::io::split(stream);
    let (outgoing, writing) = Outgoing::start(writer);
    let closed = Connection::serve(shared, identity, &connect, reader, buffer, outgoing).await;
    match &closed {
        Closed::Disconnected | Closed::Replaced | Closed::TokenExpired => {
            tracing::info!(%peer, %client, %module, reason = %closed, "client disconnected");
        }
        _ => tracing::warn!(%peer, %client, %module, reason = %closed, "client connection closed"),
    }
    // What was queued (PUBACKs of stored messages) still goes out.
    let _ = tokio::time::timeout(connection::WRITE_TIMEOUT, writing).await;
}
