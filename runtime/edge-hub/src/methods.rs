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
//!
//! A call for a module that is not connected (or does not listen for
//! methods) fails at once with [`MethodError::NotConnected`], unless its
//! [`CallTimeouts::connect`] lets it wait for the module to attach, as
//! edgeHub queues a call until its `connectTimeoutInSeconds` passes. A
//! module that reconnects attaches again when it subscribes (or its
//! persistent session is restored), so a call made while it reconnects
//! reaches the new connection if it comes within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

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

/// How long a method call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    /// For the module to connect and listen for methods when it does not
    /// (IoT Hub's `connectTimeoutInSeconds`); zero fails the call at once.
    pub connect: Duration,
    /// For the module's answer, from when the call reached its connection
    /// (IoT Hub's `responseTimeoutInSeconds`).
    pub response: Duration,
}

impl CallTimeouts {
    /// Waits `response` for the answer, and not at all for a module that is
    /// not connected.
    pub fn answer_within(response: Duration) -> Self {
        Self {
            connect: Duration::ZERO,
            response,
        }
    }
}

/// Routes method calls to the connections of the modules that listen.
#[derive(Debug, Default)]
pub struct MethodRouter {
    listeners: Mutex<HashMap<String, mpsc::Sender<MethodRequest>>>,
    /// Wakes the calls waiting for a module to attach.
    attached: Notify,
}

impl MethodRouter {
    /// Starts delivering `module`'s method calls to the returned receiver
    /// (replacing an earlier listener).
    pub fn attach(&self, module: &str) -> mpsc::Receiver<MethodRequest> {
        let (sender, receiver) = mpsc::channel(QUEUED_REQUESTS);
        self.lock().insert(module.to_owned(), sender);
        self.attached.notify_waiters();
        receiver
    }

    /// Stops delivering `module`'s method calls.
    pub fn detach(&self, module: &str) {
        self.lock().remove(module);
    }

    /// Calls `name` on `module`: waits up to `timeouts.connect` for the
    /// module to listen if it does not, then up to `timeouts.response` for
    /// its answer.
    pub async fn invoke(
        &self,
        module: &str,
        name: &str,
        payload: Vec<u8>,
        timeouts: CallTimeouts,
    ) -> Result<MethodResponse, MethodError> {
        if payload.len() > MAXIMUM_PAYLOAD_BYTES {
            return Err(MethodError::TooLarge);
        }
        let (respond, response) = oneshot::channel();
        let mut request = MethodRequest {
            name: name.to_owned(),
            payload,
            respond,
        };
        let connect_deadline = Instant::now() + timeouts.connect;
        loop {
            let attached = self.attached.notified();
            tokio::pin!(attached);
            attached.as_mut().enable();
            let listener = self.lock().get(module).cloned();
            if let Some(sender) = listener {
                // Queuing waits while the connection has 16 calls queued;
                // that wait counts against the response timeout.
                match tokio::time::timeout(timeouts.response, sender.send(request)).await {
                    Err(_) => return Err(MethodError::Timeout),
                    Ok(Ok(())) => break,
                    // The connection ended since it attached: the call
                    // waits for the next one as for a module not connected.
                    Ok(Err(mpsc::error::SendError(returned))) => request = returned,
                }
            }
            if Instant::now() >= connect_deadline
                || tokio::time::timeout_at(connect_deadline, attached)
                    .await
                    .is_err()
            {
                return Err(MethodError::NotConnected);
            }
        }
        tokio::time::timeout(timeouts.response, response)
            .await
            .map_err(|_| MethodError::Timeout)?
            .map_err(|_| MethodError::Closed)
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
                .invoke(
                    "m",
                    "f",
                    b"{}".to_vec(),
                    CallTimeouts::answer_within(Duration::from_secs(1))
                )
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
            .invoke(
                "m",
                "f",
                b"[1]".to_vec(),
                CallTimeouts::answer_within(Duration::from_secs(5)),
            )
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
                    CallTimeouts::answer_within(Duration::from_secs(1))
                )
                .await,
            Err(MethodError::TooLarge)
        );
    }

    #[tokio::test]
    async fn a_listener_that_goes_away_fails_its_calls() {
        let router = MethodRouter::default();
        let mut requests = router.attach("m");
        let call = router.invoke(
            "m",
            "f",
            Vec::new(),
            CallTimeouts::answer_within(Duration::from_secs(5)),
        );
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
                .invoke(
                    "m",
                    "f",
                    Vec::new(),
                    CallTimeouts::answer_within(Duration::from_secs(1))
                )
                .await,
            Err(MethodError::NotConnected)
        );
        let _requests = router.attach("m");
        router.detach("m");
        assert_eq!(
            router
                .invoke(
                    "m",
                    "f",
                    Vec::new(),
                    CallTimeouts::answer_within(Duration::from_secs(1))
                )
                .await,
            Err(MethodError::NotConnected)
        );
    }

    #[tokio::test]
    async fn a_new_listener_replaces_the_old_one() {
        let router = MethodRouter::default();
        let mut old = router.attach("m");
        let mut new = router.attach("m");
        let call = router.invoke(
            "m",
            "f",
            Vec::new(),
            CallTimeouts::answer_within(Duration::from_secs(5)),
        );
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
    async fn a_call_waits_its_connect_timeout_for_the_module_to_listen() {
        let router = std::sync::Arc::new(MethodRouter::default());
        let timeouts = CallTimeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(10),
        };
        let call = {
            let router = router.clone();
            tokio::spawn(async move { router.invoke("m", "f", b"1".to_vec(), timeouts).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!call.is_finished(), "the call waits for the module");
        // A listener that went away before the call reached it (the
        // module is reconnecting) makes the call wait for the next one.
        drop(router.attach("m"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!call.is_finished(), "the call waits for the next listener");
        let mut requests = router.attach("m");
        let request = requests.recv().await.expect("the call arrives");
        let _ = request.respond.send(MethodResponse {
            status: 200,
            payload: request.payload,
        });
        let response = call.await.expect("no panic").expect("answered");
        assert_eq!(response.payload, b"1");

        // Without a module, the call fails once the connect timeout passed,
        // and not before.
        router.detach("m");
        let started = Instant::now();
        let timeouts = CallTimeouts {
            connect: Duration::from_millis(300),
            response: Duration::from_secs(10),
        };
        assert_eq!(
            router.invoke("m", "f", Vec::new(), timeouts).await,
            Err(MethodError::NotConnected)
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_unanswered_call_times_out() {
        let router = MethodRouter::default();
        let _requests = router.attach("m");
        assert_eq!(
            router
                .invoke(
                    "m",
                    "f",
                    Vec::new(),
                    CallTimeouts::answer_within(Duration::from_millis(20))
                )
                .await,
            Err(MethodError::Timeout)
        );
    }
}
