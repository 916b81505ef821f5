//! What an operator sees of the upstream connection: its state, the last
//! failure and why, and the counters of what went up and came down.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The phase the connection is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Resolving, connecting, handshaking or waiting for CONNACK.
    Connecting {
        /// Failures in a row before this attempt.
        failures: u32,
    },
    /// Connected since then.
    Connected {
        /// When CONNACK came.
        since: SystemTime,
    },
    /// Waiting after a failure before the next attempt.
    Waiting {
        /// When the next attempt starts.
        until: SystemTime,
        /// Failures in a row.
        failures: u32,
    },
}

/// Which step of a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A credential file is missing, unreadable or malformed.
    Credentials,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection.
    Tcp,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The cloud refused the CONNECT (CONNACK return code).
    Refused,
    /// The connection attempt took longer than the connect timeout.
    Timeout,
    /// An established connection failed or was closed.
    Lost,
    /// The peer broke the MQTT protocol.
    Protocol,
}

impl FailureKind {
    /// The name `edged status` and the metrics show.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Credentials => "credentials",
            FailureKind::Dns => "dns",
            FailureKind::Tcp => "tcp",
            FailureKind::Tls => "tls",
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Lost => "lost",
            FailureKind::Protocol => "protocol",
        }
    }
}

/// A failed connection or attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFailure {
    /// When.
    pub at: SystemTime,
    /// Which step.
    pub kind: FailureKind,
    /// What happened, for the operator.
    pub message: String,
}

/// A snapshot of the upstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// `host:port`.
    pub endpoint: String,
    /// The current phase.
    pub state: LinkState,
    /// The last failure, kept after the link recovers so that a flapping
    /// link can be diagnosed.
    pub last_failure: Option<LinkFailure>,
    /// Connections that reached CONNACK.
    pub connections: u64,
    /// Telemetry messages published (a message sent again after a
    /// reconnect counts again).
    pub messages_sent: u64,
    /// Telemetry messages the cloud acknowledged.
    pub messages_acknowledged: u64,
    /// Telemetry messages sent again after a reconnect, because the
    /// previous connection ended before the cloud acknowledged them: the
    /// at-least-once window, where the cloud may see a message twice.
    pub messages_resent: u64,
    /// Messages in flight now.
    pub in_flight: usize,
    /// The in-flight window.
    pub window: usize,
    /// Desired-property patches that came from the cloud.
    pub desired_patches_received: u64,
    /// Direct method calls that came from the cloud.
    pub method_calls_received: u64,
    /// Reported-property patches the cloud acknowledged.
    pub reported_patches_sent: u64,
}

/// The status, shared by the connection task and its readers.
#[derive(Debug)]
pub(crate) struct StatusCell {
    status: Mutex<UpstreamStatus>,
}

impl StatusCell {
    pub(crate) fn new(endpoint: String, window: usize) -> Self {
        Self {
            status: Mutex::new(UpstreamStatus {
                endpoint,
                state: LinkState::Connecting { failures: 0 },
                last_failure: None,
                connections: 0,
                messages_sent: 0,
                messages_acknowledged: 0,
                messages_resent: 0,
                in_flight: 0,
                window,
                desired_patches_received: 0,
                method_calls_received: 0,
                reported_patches_sent: 0,
            }),
        }
    }

    pub(crate) fn snapshot(&self) -> UpstreamStatus {
        self.lock().clone()
    }

    /// Changes the status under its lock.
    pub(crate) fn update(&self, change: impl FnOnce(&mut UpstreamStatus)) {
        change(&mut self.lock());
    }

    pub(crate) fn connecting(&self, failures: u32) {
        self.update(|status| status.state = LinkState::Connecting { failures });
    }

    pub(crate) fn connected(&self) {
        self.update(|status| {
            status.state = LinkState::Connected {
                since: SystemTime::now(),
            };
            status.connections += 1;
        });
    }

    pub(crate) fn failed(&self, kind: FailureKind, message: String, wait: Duration, failures: u32) {
        self.update(|status| {
            let now = SystemTime::now();
            status.last_failure = Some(LinkFailure {
                at: now,
                kind,
                message,
            });
            status.in_flight = 0;
            status.state = LinkState::Waiting {
                until: now + wait,
                failures,
            };
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UpstreamStatus> {
        self.status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
