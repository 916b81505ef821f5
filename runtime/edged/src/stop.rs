//! Stop requests for `edged run`: SIGTERM (from systemd, `docker stop`,
//! an init shutting the device down) and SIGINT (Ctrl-C) end the daemon
//! between passes, so that it returns normally and drops what it holds: the
//! hub's listeners and control socket, and the state directory's lock.
//! Nothing acknowledged depends on that (QoS 1 messages are fsynced before
//! their PUBACK); a clean stop only spares the next start some redelivery
//! and a stale socket.

use std::sync::mpsc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// The signals that stop the daemon, watched by a thread of their own.
pub struct StopSignals {
    received: mpsc::Receiver<&'static str>,
}

impl StopSignals {
    /// Starts watching. The handlers are installed before this returns, so
    /// a signal that arrives right after is not missed.
    pub fn watch() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let (mut terminate, mut interrupt) = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        let (sender, received) = mpsc::channel();
        std::thread::Builder::new()
            .name("edged-signals".to_owned())
            .spawn(move || {
                let name = runtime.block_on(async {
                    tokio::select! {
                        _ = terminate.recv() => "SIGTERM",
                        _ = interrupt.recv() => "SIGINT",
                    }
                });
                let _ = sender.send(name);
            })?;
        Ok(Self { received })
    }

    /// Starts watching, or logs why it cannot (then SIGTERM ends edged at
    /// once, as it did before edged watched for it).
    pub fn watch_or_warn() -> Option<Self> {
        Self::watch()
            .inspect_err(|error| {
                tracing::warn!(
                    "cannot watch for stop signals ({error}); SIGTERM ends edged at once"
                )
            })
            .ok()
    }

    /// Sleeps for `delay`, or less when a stop signal arrives; returns the
    /// signal's name then.
    pub fn sleep(&self, delay: Duration) -> Option<&'static str> {
        match self.received.recv_timeout(delay) {
            Ok(name) => Some(name),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            // The watching thread cannot end without sending; if it did,
            // sleeping on keeps the daemon as it was without signals.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(delay);
                None
            }
        }
    }
}
