//! The direct-method gateway over real TLS with the hub's certificate:
//! requests as the Python SDK sends them (absolute-form target, SAS token,
//! `x-ms-edge-moduleId`), and IoT Hub's answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_hub::certs::{CaKeySource, Certificates};
use edge_hub::gateway::{Backend, BoxFuture, MethodCall, serve};
use edge_hub::{MethodError, MethodResponse};
use tokio::net::TcpListener;

mod common;
use common::{Reply, https_post, tls_connector};

/// A hub stand-in: `good-token` authenticates `sensor`; module `echo`
/// answers with its payload, `slow` never answers, anything else is not
/// connected.
#[derive(Default)]
struct TestBackend {
    calls: Mutex<Vec<(String, MethodCall)>>,
}

impl Backend for TestBackend {
    fn authenticate<'a>(
        &'a self,
        module: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        let outcome = if module == "sensor" && token == "SharedAccessSignature good-token" {
            Ok(())
        } else {
            Err("signature mismatch".to_owned())
        };
        Box::pin(std::future::ready(outcome))
    }

    fn invoke<'a>(
        &'a self,
        caller: &'a str,
        module: &'a str,
        call: &'a MethodCall,
    ) -> BoxFuture<'a, Result<MethodResponse, MethodError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .expect("lock")
                .push((module.to_owned(), call.clone()));
            match module {
                "echo" if caller == "sensor" => Ok(MethodResponse {
                    status: 200,
                    payload: call.payload.clone(),
                }),
                "slow" => Err(MethodError::Timeout),
                _ => Err(MethodError::NotConnected),
            }
        })
    }
}

struct Gateway {
    address: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    backend: Arc<TestBackend>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certificates =
            Certificates::open(dir.path(), "localhost", &CaKeySource::File).expect("certificates");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let backend = Arc::new(TestBackend::default());
        let task = tokio::spawn(serve(
            listener,
            certificates.server_config().expect("TLS"),
            "dev1".to_owned(),
            backend.clone(),
        ));
        Self {
            address,
            connector: tls_connector(certificates.ca_der()),
            backend,
            _dir: dir,
            task,
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        https_post(&self.connector, self.address, path, headers, body).await
    }
}

/// A path, headers, body and the expected status.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16);

const CALLER: [(&str, &str); 2] = [
    ("Authorization", "SharedAccessSignature good-token"),
    ("x-ms-edge-moduleId", "dev1/sensor"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_forwarded_and_answered_as_iot_hub_does() {
    let gateway = Gateway::start().await;
    let body = r#"{"methodName":"reset","payload":{"hard":true},"responseTimeoutInSeconds":7,"connectTimeoutInSeconds":0}"#;
    let path = "twins/dev1/modules/echo/methods?api-version=2020-09-30";
    let (status, reply) = gateway.post(path, &CALLER, body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        serde_json::json!({"status": 200, "payload": {"hard": true}})
    );
    let calls = gateway.backend.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "echo");
    assert_eq!(calls[0].1.name, "reset");
    assert_eq!(calls[0].1.response_timeout, Duration::from_secs(7));

    let (status, reply) = gateway
        .post(
            "twins/dev1/modules/absent/methods?api-version=1",
            &CALLER,
            body,
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["errorCode"], 404103);
    let (status, reply) = gateway
        .post(
            "twins/dev1/modules/slow/methods?api-version=1",
            &CALLER,
            body,
        )
        .await;
    assert_eq!(status, 504, "{reply}");
    assert_eq!(reply["errorCode"], 504101);

    // The connect timeout goes to the hub, whose method router waits for
    // the target (its own tests show the wait); the gateway calls once.
    let waiting = r#"{"methodName":"m","connectTimeoutInSeconds":1}"#;
    let before = gateway.backend.calls.lock().expect("lock").len();
    let (status, _) = gateway
        .post(
            "twins/dev1/modules/absent/methods?api-version=1",
            &CALLER,
            waiting,
        )
        .await;
    assert_eq!(status, 404);
    let calls = gateway.backend.calls.lock().expect("lock");
    assert_eq!(calls.len() - before, 1);
    assert_eq!(
        calls.last().map(|(_, call)| call.connect_timeout),
        Some(Duration::from_secs(1))
    );
    drop(calls);
    gateway.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callers_and_requests_are_refused() {
    let gateway = Gateway::start().await;
    let body = r#"{"methodName":"reset","payload":null}"#;
    let path = "twins/dev1/modules/echo/methods?api-version=1";
    let cases: Vec<Case<'_>> = vec![
        (path, vec![CALLER[1]], body.to_owned(), 401),
        (path, vec![CALLER[0]], body.to_owned(), 401),
        (
            path,
            vec![("Authorization", "SharedAccessSignature forged"), CALLER[1]],
            body.to_owned(),
            401,
        ),
        (
            path,
            vec![CALLER[0], ("x-ms-edge-moduleId", "dev2/sensor")],
            body.to_owned(),
            401,
        ),
        (
            "twins/dev1/modules/echo/methods",
            CALLER.to_vec(),
            body.to_owned(),
            400,
        ),
        (
            "twins/dev2/modules/echo/methods?api-version=1",
            CALLER.to_vec(),
            body.to_owned(),
            404,
        ),
        (
            "twins/dev1/methods?api-version=1",
            CALLER.to_vec(),
            body.to_owned(),
            404,
        ),
        (path, CALLER.to_vec(), "{".to_owned(), 400),
        (
            path,
            CALLER.to_vec(),
            format!(
                r#"{{"methodName":"m","payload":"{}"}}"#,
                "x".repeat(200 * 1024)
            ),
            413,
        ),
    ];
    for (path, headers, body, expected) in cases {
        let (status, reply) = gateway.post(path, &headers, &body).await;
        assert_eq!(status, expected, "{path} {headers:?}: {reply}");
    }
    assert!(
        gateway.backend.calls.lock().expect("lock").is_empty(),
        "no refused request reached a module"
    );
    gateway.task.abort();
}
