//! The hub's HTTPS endpoint for module-to-module direct methods.
//!
//! A module's `invoke_method` does not go over MQTT: the SDK sends
//! `POST https://{gateway}/twins/{d}/modules/{m}/methods?api-version=…` to
//! port 443 of the gateway host, with its own SAS token in `Authorization`
//! and `x-ms-edge-moduleId: {d}/{caller}`, and reads the answer as IoT Hub
//! gives it: `{"status": n, "payload": …}`. The hub forwards the call to
//! the target module over its MQTT connection and returns its response; a
//! target that is not connected is IoT Hub's 404 (`errorCode` 404103,
//! DeviceNotOnline), one that does not answer in time 504 (504101).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::http::{HttpResponse, has_api_version, json_response};
use crate::methods::{MAXIMUM_PAYLOAD_BYTES, MethodError, MethodResponse};

/// The request body: the payload plus the method name and timeouts.
const MAX_BODY_BYTES: usize = MAXIMUM_PAYLOAD_BYTES + 4 * 1024;
/// IoT Hub's default response timeout.
const DEFAULT_RESPONSE_TIMEOUT: u64 = 30;
/// IoT Hub's largest response and connect timeouts.
const MAX_TIMEOUT: u64 = 300;
/// How long a TLS handshake and the request headers may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most HTTPS connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// The header naming the calling module.
const MODULE_ID_HEADER: &str = "x-ms-edge-moduleId";

/// A method call as the gateway passes it on.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    /// The method name.
    pub name: String,
    /// The request payload (JSON text).
    pub payload: Vec<u8>,
    /// How long to wait for the module's answer.
    pub response_timeout: Duration,
    /// How long to wait for the module to connect, if it is not.
    pub connect_timeout: Duration,
}

/// A boxed future, for the object-safe [`Backend`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the gateway needs from the hub.
pub trait Backend: Send + Sync + 'static {
    /// Checks `token` (the `Authorization` header) as `module`'s SAS token.
    fn authenticate<'a>(
        &'a self,
        module: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Calls `call.name` on `module` for `caller` (both module names of
    /// this device), waiting at most `call.connect_timeout` for `module` to
    /// connect if it is not, then at most `call.response_timeout`.
    fn invoke<'a>(
        &'a self,
        caller: &'a str,
        module: &'a str,
        call: &'a MethodCall,
    ) -> BoxFuture<'a, Result<MethodResponse, MethodError>>;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvokeBody {
    method_name: String,
    #[serde(default)]
    payload: serde_json::Value,
    response_timeout_in_seconds: Option<u64>,
    connect_timeout_in_seconds: Option<u64>,
}

/// An IoT Hub style error: the status, a six-digit `errorCode` whose first
/// three digits are the status, and a message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: u32,
    message: String,
}

impl Refusal {
    fn response(&self) -> HttpResponse {
        json_response(
            self.status,
            &json!({ "errorCode": self.code, "message": self.message }),
        )
    }
}

fn refusal(status: StatusCode, code: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn refuse(status: StatusCode, code: u32, message: impl Into<String>) -> HttpResponse {
    refusal(status, code, message).response()
}

/// Serves direct method calls for `device` on `listener` until the task is
/// aborted.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    device: String,
    backend: Arc<dyn Backend>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let device: Arc<str> = device.into();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "the gateway has {MAX_CONNECTIONS} connections; closing a new one");
            continue;
        };
        let acceptor = acceptor.clone();
        let backend = backend.clone();
        let device = device.clone();
        tokio::spawn(async move {
            serve_connection(acceptor, stream, peer, device, backend).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    device: Arc<str>,
    backend: Arc<dyn Backend>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "gateway TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "gateway TLS handshake timed out");
            return;
        }
    };
    let service = hyper::service::service_fn(move |request| {
        let device = device.clone();
        let backend = backend.clone();
        async move {
            Ok::<_, std::convert::Infallible>(handle(&device, backend.as_ref(), request).await)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "gateway connection ended with an error");
    }
}

/// The `(device, module)` of `/twins/{d}/modules/{m}/methods`, decoded (the
/// SDK encodes both with `quote_plus`).
fn target(path: &str) -> Option<(String, String)> {
    let decode = |segment: &str| {
        let spaced = segment.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["twins", device, "modules", module, "methods"] => Some((decode(device)?, decode(module)?)),
        _ => None,
    }
}

/// Parses and checks the request body.
fn parse_call(body: &[u8]) -> Result<MethodCall, Refusal> {
    let request: InvokeBody = serde_json::from_slice(body).map_err(|error| {
        refusal(
            StatusCode::BAD_REQUEST,
            400_001,
            format!("malformed method request: {error}"),
        )
    })?;
    let name = request.method_name;
    if name.is_empty() || name.len() > 128 || name.contains(['/', '?', '#']) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            400_027,
            "methodName must be 1 to 128 characters without '/', '?' or '#'",
        ));
    }
    let payload = serde_json::to_vec(&request.payload).unwrap_or_default();
    if payload.len() > MAXIMUM_PAYLOAD_BYTES {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            413_001,
            format!("the method payload is larger than {MAXIMUM_PAYLOAD_BYTES} bytes"),
        ));
    }
    let response = request
        .response_timeout_in_seconds
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
    let connect = request.connect_timeout_in_seconds.unwrap_or(0);
    if response == 0 || response > MAX_TIMEOUT || connect > MAX_TIMEOUT {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            400_027,
            format!(
                "timeouts must be at most {MAX_TIMEOUT} seconds, the response timeout at least 1"
            ),
        ));
    }
    Ok(MethodCall {
        name,
        payload,
        response_timeout: Duration::from_secs(response),
        connect_timeout: Duration::from_secs(connect),
    })
}

/// The module's answer as IoT Hub returns it: its status, and its payload
/// as JSON (a payload that is not JSON is returned as a string, so the
/// caller still gets it).
fn answer_body(answer: &MethodResponse) -> serde_json::Value {
    let payload = if answer.payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&answer.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&answer.payload).into_owned())
        })
    };
    json!({ "status": answer.status, "payload": payload })
}

async fn handle(device: &str, backend: &dyn Backend, request: Request<Incoming>) -> HttpResponse {
    let Some((target_device, module)) = target(request.uri().path()) else {
        return refuse(StatusCode::NOT_FOUND, 404_001, "no such endpoint");
    };
    if request.method() != Method::POST {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            405_001,
            "direct methods are invoked with POST",
        );
    }
    if !has_api_version(request.uri().query()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            400_001,
            "the api-version query parameter is required",
        );
    }
    let caller = match authenticate(device, backend, &request).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal.response(),
    };
    if target_device != device {
        return refuse(
            StatusCode::NOT_FOUND,
            404_001,
            format!("this hub serves device {device} only"),
        );
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                413_001,
                format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            );
        }
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                400_001,
                format!("cannot read the request: {error}"),
            );
        }
    };
    let call = match parse_call(&body) {
        Ok(call) => call,
        Err(refusal) => return refusal.response(),
    };
    let started = Instant::now();
    let outcome = backend.invoke(&caller, &module, &call).await;
    tracing::debug!(caller = %caller, module = %module, method = %call.name, elapsed = ?started.elapsed(), ok = outcome.is_ok(), "direct method call");
    match outcome {
        Ok(answer) => json_response(StatusCode::OK, &answer_body(&answer)),
        Err(MethodError::NotConnected) => refuse(
            StatusCode::NOT_FOUND,
            404_103,
            format!("module {module} is not connected (DeviceNotOnline)"),
        ),
        // The target went away before it answered: to the caller it is
        // offline, as IoT Hub reports a device that disconnected mid-call.
        Err(MethodError::Closed) => refuse(
            StatusCode::NOT_FOUND,
            404_103,
            format!("module {module} disconnected before it answered (DeviceNotOnline)"),
        ),
        Err(MethodError::Timeout) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            504_101,
            format!(
                "module {module} did not answer {} within {} s",
                call.name,
                call.response_timeout.as_secs()
            ),
        ),
        Err(MethodError::TooLarge) => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            413_001,
            format!("the method payload is larger than {MAXIMUM_PAYLOAD_BYTES} bytes"),
        ),
    }
}

/// Checks the caller's identity header and SAS token; returns its module.
async fn authenticate(
    device: &str,
    backend: &dyn Backend,
    request: &Request<Incoming>,
) -> Result<String, Refusal> {
    let unauthorized = |message: String| refusal(StatusCode::UNAUTHORIZED, 401_002, message);
    let caller = request
        .headers()
        .get(MODULE_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| unauthorized(format!("the {MODULE_ID_HEADER} header is missing")))?;
    let (caller_device, caller_module) = caller
        .split_once('/')
        .ok_or_else(|| unauthorized(format!("{MODULE_ID_HEADER} must be DEVICE/MODULE")))?;
    if caller_device != device {
        return Err(unauthorized(format!(
            "the caller must be a module of device {device}"
        )));
    }
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| unauthorized("the Authorization header is missing".to_owned()))?;
    backend
        .authenticate(caller_module, token)
        .await
        .map_err(|reason| {
            tracing::warn!(module = caller_module, %reason, "direct method caller refused");
            unauthorized(format!("the caller's SAS token is not valid: {reason}"))
        })?;
    Ok(caller_module.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_decoded_as_the_sdk_encodes_them() {
        assert_eq!(
            target("/twins/dev%201/modules/filter/methods"),
            Some(("dev 1".to_owned(), "filter".to_owned()))
        );
        assert_eq!(
            target("/twins/dev+1/modules/a%2Fb/methods"),
            Some(("dev 1".to_owned(), "a/b".to_owned()))
        );
        assert_eq!(target("/twins/dev/methods"), None);
        assert_eq!(target("/twins/dev/modules/m/methods/extra"), None);
        assert_eq!(target("/twins/%ff/modules/m/methods"), None);
    }

    #[test]
    fn calls_are_checked() {
        let call = parse_call(
            br#"{"methodName":"reset","payload":{"hard":true},"responseTimeoutInSeconds":5}"#,
        )
        .expect("a good call");
        assert_eq!(call.name, "reset");
        assert_eq!(call.payload, br#"{"hard":true}"#);
        assert_eq!(call.response_timeout, Duration::from_secs(5));
        assert_eq!(call.connect_timeout, Duration::ZERO);
        let defaults = parse_call(br#"{"methodName":"m"}"#).expect("defaults");
        assert_eq!(defaults.payload, b"null");
        assert_eq!(defaults.response_timeout, Duration::from_secs(30));
        for (body, status) in [
            (&br#"{"payload":1}"#[..], 400),
            (br#"{"methodName":""}"#, 400),
            (br#"{"methodName":"a/b"}"#, 400),
            (br#"{"methodName":"m","responseTimeoutInSeconds":0}"#, 400),
            (br#"{"methodName":"m","responseTimeoutInSeconds":301}"#, 400),
            (br#"{"methodName":"m","connectTimeoutInSeconds":999}"#, 400),
            (b"not json", 400),
        ] {
            let refused = parse_call(body).expect_err("refused");
            assert_eq!(
                refused.status.as_u16(),
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            r#"{{"methodName":"m","payload":"{}"}}"#,
            "x".repeat(MAXIMUM_PAYLOAD_BYTES)
        );
        assert_eq!(
            parse_call(big.as_bytes()).expect_err("too large").status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn answers_carry_status_and_json_payload() {
        let answer = |payload: &[u8]| {
            answer_body(&MethodResponse {
                status: 201,
                payload: payload.to_vec(),
            })
        };
        assert_eq!(
            answer(br#"{"ok":1}"#),
            json!({"status": 201, "payload": {"ok": 1}})
        );
        assert_eq!(answer(b""), json!({"status": 201, "payload": null}));
        assert_eq!(answer(b"plain"), json!({"status": 201, "payload": "plain"}));
    }
}
