//! Direct methods: a request for a module goes to its connection, which
//! sends it on `$iothub/methods/POST/{name}/?$rid=` and answers through the
//! request's one-shot channel when the module responds.
//!
//! The correlation of `$rid`s with callers lives in the MQTT connection
//! (`mqtt::connection`): it numbers the requests it sends, keeps each
//! caller's responder under its number, and answers it when
//! `$iothub/methods/res/{status}/?$rid=` comes back. So everything about a
//! call ends with the connection: a module that disconnects (or
//! unsubscribes) drops its responders and its queued requests, and their
//! callers get [`MethodError::Closed`]; a caller that times out drops its
//! end, and the late response is ignored. A response over 128 KB fails the
//! call with `Closed` too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// The largest method payload, as on IoT Hub.
pub const MAXIMUM_PAYLOAD_BYTES: usize = 128 * 1024;

/// How many requests may wait for a module's connection to send them.
const QUEUED_REQUESTS: usize = 16;

/// A method call on its way to a module.
#[derive(Debug)]
pub struct MethodRequest {
    /// The method name.
    pub name: String,
    /// The request payload (JSON).
    pub payload: Vec<u8>,
    /// Where the module's response goes.
    pub respond: oneshot::Sender<MethodResponse>,
}

/// A module's answer to a method call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResponse {
    /// The status the module returned.
    pub status: i32,
    /// The response payload (JSON).
    pub payload: Vec<u8>,
}

/// Why a method call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The module is not connected or has not subscribed to methods.
    #[error("the module is not connected or does not listen for direct methods")]
    NotConnected,
    /// The module did not answer in time.
    #[error("the module did not answer within the timeout")]
    Timeout,
    /// The payload is over 128 KB.
    #[error("the method payload is over the limit of {MAXIMUM_PAYLOAD_BYTES} bytes")]
    TooLarge,
    /// The module's connection went away before it answered.
    #[error("the module's connection closed before it answered")]
    Closed,
}

/// Routes method calls to the connections of the modules that listen.
#[derive(Debug, Default)]
pub struct MethodRouter {
    listeners: Mutex<HashMap<String, mpsc::Sender<MethodRequest>>>,
}

impl MethodRouter {
    /// Starts delivering `module`'s method calls to the returned receiver
    /// (replacing an earlier listener).
    pub fn attach(&self, module: &str) -> mpsc::Receiver<MethodRequest> {
        let (sender, receiver) = mpsc::channel(QUEUED_REQUESTS);
        self.lock().insert(module.to_owned(), sender);
        receiver
    }

    /// Stops delivering `module`'s method calls.
    pub fn detach(&self, module: &str) {
        self.lock().remove(module);
    }

    /// Calls `name` on `module` and waits up to `timeout` for its answer.
    pub async fn invoke(
        &self,
        module: &str,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<MethodResponse, MethodError> {
        if payload.len() > MAXIMUM_PAYLOAD_BYTES {
            return Err(MethodError::TooLarge);
        }
        let sender = self
            .lock()
            .get(module)
            .cloned()
            .ok_or(MethodError::NotConnected)?;
        let (respond, response) = oneshot::channel();
        let request = MethodRequest {
            name: name.to_owned(),
            payload,
            respond,
        };
        let exchange = async {
            sender
                .send(request)
                .await
                .map_err(|_| MethodError::NotConnected)?;
            response.await.map_err(|_| MethodError::Closed)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| MethodError::Timeout)?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<MethodRequest>>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_reaches_the_listener_and_returns_its_answer() {
        let router = MethodRouter::default();
        assert_eq!(
            router
                .invoke("m", "f", b"{}".to_vec(), Duration::from_secs(1))
                .await,
            Err(MethodError::NotConnected)
        );
        let mut requests = router.attach("m");
        let responder = tokio::spawn(async move {
            let request = requests.recv().await.expect("a request");
            assert_eq!(request.name, "f");
            let _ = request.respond.send(MethodResponse {
                status: 200,
                payload: request.payload,
            });
        });
        let response = router
            .invoke("m", "f", b"[1]".to_vec(), Duration::from_secs(5))
            .await
            .expect("answered");
        assert_eq!(response.status, 200);
        assert_eq!(response.payload, b"[1]");
        responder.await.expect("responder");
        assert_eq!(
            router
                .invoke(
                    "m",
                    "f",
                    vec![b' '; MAXIMUM_PAYLOAD_BYTES + 1],
                    Duration::from_secs(1)
                )
                .await,
            Err(MethodError::TooLarge)
        );
    }

    #[tokio::test]
    async fn a_listener_that_goes_away_fails_its_calls() {
        let router = MethodRouter::default();
        let mut requests = router.attach("m");
        let call = router.invoke("m", "f", Vec::new(), Duration::from_secs(5));
        let listener = async {
            let request = requests.recv().await.expect("a request");
            // The connection ends without answering.
            drop(request);
            drop(requests);
        };
        let (result, ()) = tokio::join!(call, listener);
        assert_eq!(result, Err(MethodError::Closed));
        // The receiver is gone, so the next call cannot be queued.
        assert_eq!(
            router
                .invoke("m", "f", Vec::new(), Duration::from_secs(1))
                .await,
            Err(MethodError::NotConnected)
        );
        let _requests = router.attach("m");
        router.detach("m");
        assert_eq!(
            router
                .invoke("m", "f", Vec::new(), Duration::from_secs(1))
                .await,
            Err(MethodError::NotConnected)
        );
    }

    #[tokio::test]
    async fn a_new_listener_replaces_the_old_one() {
        let router = MethodRouter::default();
        let mut old = router.attach("m");
        let mut new = router.attach("m");
        let call = router.invoke("m", "f", Vec::new(), Duration::from_secs(5));
        let listener = async {
            let request = new.recv().await.expect("the new listener gets it");
            let _ = request.respond.send(MethodResponse {
                status: 200,
                payload: Vec::new(),
            });
        };
        let (result, ()) = tokio::join!(call, listener);
        assert_eq!(result.map(|response| response.status), Ok(200));
        assert!(old.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_unanswered_call_times_out() {
        let router = MethodRouter::default();
        let _requests = router.attach("m");
        assert_eq!(
            router
                .invoke("m", "f", Vec::new(), Duration::from_millis(20))
                .await,
            Err(MethodError::Timeout)
        );
    }
}
