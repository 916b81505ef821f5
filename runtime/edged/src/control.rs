//! The hub's control socket, `{hub dir}/control.sock`: how edged processes
//! other than `edged run` (status, twin show, method invoke, module env, an
//! apply from a shell) reach the hub the daemon serves.
//!
//! The socket is the daemon's (mode 0600: root on a device), so only its
//! user may ask. The protocol is one JSON request line, answered by one
//! JSON line, `{"ok": …}` or `{"error": "…"}`, after which the daemon closes
//! the connection. Requests are at most [`MAX_REQUEST_BYTES`] and must
//! arrive within [`READ_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served
//! at once, so a stuck client cannot tie the daemon up.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edge_hub::CallTimeouts;
use edge_init::status::HubReport;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::hub::{MethodOutcome, ModuleEnvironment, ModuleHub, Place};
use crate::runtime::Loaded;

/// The socket's file name in the hub directory.
pub const SOCKET: &str = "control.sock";
/// The largest request accepted.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest direct method timeout a client may ask for; the answer
/// comes after it, so the client's read waits a little longer.
const MAX_METHOD_TIMEOUT: Duration = Duration::from_secs(300);

/// One request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Deploy the deployment installed in `dir` (a slot's deployment
    /// directory), or none.
    Deploy {
        /// The deployment directory, holding `bundle.json`.
        dir: Option<PathBuf>,
    },
    /// A module's environment.
    Environment {
        /// The module.
        module: String,
        /// Where its socket path is seen from.
        place: Place,
    },
    /// Which container runs a module.
    SetContainer {
        /// The module.
        module: String,
        /// The container id.
        container_id: Option<String>,
    },
    /// The hub's report for `edged status`.
    Report,
    /// A module twin.
    Twin {
        /// The module.
        module: String,
    },
    /// A direct method.
    Invoke {
        /// The module.
        module: String,
        /// The method name.
        method: String,
        /// Its payload.
        payload: Value,
        /// How long to wait for the answer, in milliseconds.
        timeout_ms: u64,
        /// How long to wait for the module to connect, in milliseconds
        /// (absent from an older client: not at all).
        #[serde(default)]
        connect_timeout_ms: u64,
    },
}

/// The daemon's side: serves requests on the socket with the hub it runs.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `{hub_dir}/control.sock` (replacing a socket a daemon before
    /// this one left) and serves it on a thread of its own.
    pub fn start(hub_dir: &Path, hub: Arc<dyn ModuleHub>) -> Result<Self> {
        let path = hub_dir.join(SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::state("remove", &path)(error)),
        }
        let listener = UnixListener::bind(&path).map_err(Error::state("bind", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::state("restrict", &path))?;
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("hub-control".to_owned())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::SeqCst);
                        let _ = answer(&stream, Err("the daemon is busy; retry".to_owned()));
                        continue;
                    }
                    let hub = Arc::clone(&hub);
                    let active = Arc::clone(&active);
                    let spawned = std::thread::Builder::new()
                        .name("hub-control-request".to_owned())
                        .spawn(move || {
                            serve(&stream, hub.as_ref());
                            active.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        tracing::warn!("cannot start a thread for a control request");
                    }
                }
            })
            .map_err(|error| Error::Hub(format!("cannot start the control thread: {error}")))?;
        Ok(Self { path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    /// A daemon that stops removes its socket, so that clients say "not
    /// running" rather than "connection refused".
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request, runs it, answers.
fn serve(stream: &UnixStream, hub: &dyn ModuleHub) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new(stream.take(MAX_REQUEST_BYTES)).read_line(&mut line);
    let outcome = match read {
        Err(error) => Err(format!("cannot read the request: {error}")),
        Ok(_) if !line.ends_with('\n') => Err(format!(
            "the request is not one line of at most {MAX_REQUEST_BYTES} bytes"
        )),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(error) => Err(format!("not a control request: {error}")),
            // A hub error's message is sent without the "hub: " its
            // display adds, which the client's error adds again.
            Ok(request) => run(hub, request).map_err(|error| match error {
                Error::Hub(message) => message,
                other => other.to_string(),
            }),
        },
    };
    if let Err(error) = answer(stream, outcome) {
        tracing::debug!("cannot answer a control request: {error}");
    }
}

fn answer(
    mut stream: &UnixStream,
    outcome: std::result::Result<Value, String>,
) -> std::io::Result<()> {
    let response = match outcome {
        Ok(value) => json!({ "ok": value }),
        Err(message) => json!({ "error": message }),
    };
    stream.write_all(format!("{response}\n").as_bytes())
}

fn to_value(value: impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|error| Error::Hub(format!("cannot encode: {error}")))
}

/// Runs a request against the hub.
fn run(hub: &dyn ModuleHub, request: Request) -> Result<Value> {
    match request {
        Request::Deploy { dir } => {
            let loaded = dir.map(|dir| load(&dir)).transpose()?;
            hub.deploy(loaded.as_ref())?;
            Ok(Value::Null)
        }
        Request::Environment { module, place } => to_value(hub.environment(&module, place)?),
        Request::SetContainer {
            module,
            container_id,
        } => {
            hub.set_container(&module, container_id)?;
            Ok(Value::Null)
        }
        Request::Report => to_value(hub.report()?),
        Request::Twin { module } => hub.twin(&module),
        Request::Invoke {
            module,
            method,
            payload,
            timeout_ms,
            connect_timeout_ms,
        } => {
            let timeouts = CallTimeouts {
                connect: Duration::from_millis(connect_timeout_ms).min(MAX_METHOD_TIMEOUT),
                response: Duration::from_millis(timeout_ms).min(MAX_METHOD_TIMEOUT),
            };
            to_value(hub.invoke(&module, &method, payload, timeouts)?)
        }
    }
}

/// Loads a deployment directory's manifest and modules, as the slot holds
/// them (the client verified the bundle when it installed it).
fn load(dir: &Path) -> Result<Loaded> {
    let path = dir.join(edge_bundle::manifest::MANIFEST_PATH);
    let bytes = std::fs::read(&path).map_err(Error::state("read", &path))?;
    let manifest = edge_bundle::BundleManifest::from_canonical_bytes(&bytes)
        .map_err(|error| Error::CorruptState(format!("{}: {error}", path.display())))?;
    let modules = crate::deployment::modules(&manifest)?;
    Ok(Loaded {
        dir: dir.to_owned(),
        manifest,
        modules,
    })
}

/// The client's side: the hub of the `edged run` whose socket this is.
pub struct RemoteHub {
    path: PathBuf,
}

impl RemoteHub {
    /// The hub served on `{hub_dir}/control.sock`; whether it answers is
    /// known at the first request.
    pub fn new(hub_dir: &Path) -> Self {
        Self {
            path: hub_dir.join(SOCKET),
        }
    }

    /// Whether a daemon answers on the socket.
    pub fn answers(&self) -> bool {
        UnixStream::connect(&self.path).is_ok()
    }

    fn call(&self, request: &Request, wait: Duration) -> Result<Value> {
        let not_running = |error: std::io::Error| {
            Error::HubNotRunning(format!(
                "nothing answers on {} ({error})",
                self.path.display()
            ))
        };
        let mut stream = UnixStream::connect(&self.path).map_err(not_running)?;
        let failed = |error: std::io::Error| {
            Error::Hub(format!(
                "the control socket {}: {error}",
                self.path.display()
            ))
        };
        let line = serde_json::to_string(request)
            .map_err(|error| Error::Hub(format!("cannot encode the request: {error}")))?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(failed)?;
        stream.set_read_timeout(Some(wait)).map_err(failed)?;
        let mut response = String::new();
        BufReader::new(stream.take(64 << 20))
            .read_line(&mut response)
            .map_err(failed)?;
        let mut response: Value = serde_json::from_str(&response)
            .map_err(|error| Error::Hub(format!("the daemon's answer is not JSON ({error})")))?;
        if let Some(error) = response.get("error").and_then(Value::as_str) {
            // The daemon's refusal may quote what the operator typed (a
            // module or method name): control characters are shown escaped,
            // never sent to the terminal.
            return Err(Error::Hub(edge_bundle::display::escaped_message(error)));
        }
        Ok(response
            .get_mut("ok")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    fn call_as<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let value = self.call(request, Duration::from_secs(60))?;
        serde_json::from_value(value)
            .map_err(|error| Error::Hub(format!("unexpected answer from the daemon: {error}")))
    }
}

impl ModuleHub for RemoteHub {
    fn deploy(&self, deployment: Option<&Loaded>) -> Result<()> {
        let request = Request::Deploy {
            dir: deployment.map(|loaded| loaded.dir.clone()),
        };
        self.call(&request, Duration::from_secs(120)).map(drop)
    }

    fn environment(&self, module: &str, place: Place) -> Result<Option<ModuleEnvironment>> {
        self.call_as(&Request::Environment {
            module: module.to_owned(),
            place,
        })
    }

    fn set_container(&self, module: &str, container_id: Option<String>) -> Result<()> {
        let request = Request::SetContainer {
            module: module.to_owned(),
            container_id,
        };
        self.call(&request, Duration::from_secs(60)).map(drop)
    }

    fn report(&self) -> Result<HubReport> {
        self.call_as(&Request::Report)
    }

    fn twin(&self, module: &str) -> Result<Value> {
        self.call(
            &Request::Twin {
                module: module.to_owned(),
            },
            Duration::from_secs(60),
        )
    }

    fn invoke(
        &self,
        module: &str,
        method: &str,
        payload: Value,
        timeouts: CallTimeouts,
    ) -> Result<MethodOutcome> {
        let milliseconds =
            |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let request = Request::Invoke {
            module: module.to_owned(),
            method: method.to_owned(),
            payload,
            timeout_ms: milliseconds(timeouts.response),
            connect_timeout_ms: milliseconds(timeouts.connect),
        };
        let value = self.call(
            &request,
            timeouts.connect.min(MAX_METHOD_TIMEOUT)
                + timeouts.response.min(MAX_METHOD_TIMEOUT)
                + Duration::from_secs(10),
        )?;
        serde_json::from_value(value)
            .map_err(|error| Error::Hub(format!("unexpected answer from the daemon: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A hub that answers from fixed data and records what it was told, to
    /// test the protocol on both ends of a real socket.
    #[derive(Default)]
    struct Recorded {
        containers: Mutex<Vec<(String, Option<String>)>>,
    }

    impl ModuleHub for Recorded {
        fn deploy(&self, deployment: Option<&Loaded>) -> Result<()> {
            match deployment {
                None => Ok(()),
                Some(_) => Err(Error::Hub("unexpected deployment".to_owned())),
            }
        }

        fn environment(&self, module: &str, place: Place) -> Result<Option<ModuleEnvironment>> {
            Ok((module == "sink").then(|| ModuleEnvironment {
                variables: vec![(
                    "IOTEDGE_WORKLOADURI".to_owned(),
                    crate::hub::workload_uri(Path::new("/h/workload/sink"), place),
                )],
                socket_dir: PathBuf::from("/h/workload/sink"),
                gateway_hostname: "edged".to_owned(),
            }))
        }

        fn set_container(&self, module: &str, container_id: Option<String>) -> Result<()> {
            self.containers
                .lock()
                .unwrap()
                .push((module.to_owned(), container_id));
            Ok(())
        }

        fn report(&self) -> Result<HubReport> {
            Ok(HubReport {
                running: true,
                modules: Default::default(),
                upstream_queue: 0,
                upstream: None,
                dropped: Default::default(),
            })
        }

        fn twin(&self, module: &str) -> Result<Value> {
            Ok(json!({"desired": {"module": module}, "reported": {}}))
        }

        fn invoke(
            &self,
            module: &str,
            _: &str,
            _: Value,
            _: CallTimeouts,
        ) -> Result<MethodOutcome> {
            Err(Error::Hub(format!("module {module} is not connected")))
        }
    }

    #[test]
    fn requests_round_trip_and_errors_carry_their_message() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Arc::new(Recorded::default());
        let server = ControlServer::start(dir.path(), hub.clone()).unwrap();
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let remote = RemoteHub::new(dir.path());
        assert!(remote.answers());
        assert!(remote.report().unwrap().running);
        assert_eq!(remote.twin("sink").unwrap()["desired"]["module"], "sink");
        let environment = remote.environment("sink", Place::Process).unwrap().unwrap();
        assert_eq!(
            environment.variables[0].1,
            "unix:///h/workload/sink/workload.sock"
        );
        assert_eq!(remote.environment("other", Place::Container).unwrap(), None);
        remote
            .set_container("sink", Some("abc".to_owned()))
            .unwrap();
        assert_eq!(
            hub.containers.lock().unwrap().as_slice(),
            &[("sink".to_owned(), Some("abc".to_owned()))]
        );
        remote.deploy(None).unwrap();
        let error = remote
            .invoke(
                "sink",
                "m",
                json!({}),
                CallTimeouts::answer_within(Duration::from_secs(1)),
            )
            .unwrap_err();
        assert!(
            matches!(&error, Error::Hub(message) if message == "module sink is not connected"),
            "{error}"
        );
        // A refusal quoting a name with control characters reaches the
        // terminal escaped.
        let error = remote
            .invoke(
                "si\u{1b}[31mnk\n",
                "m",
                json!({}),
                CallTimeouts::answer_within(Duration::from_secs(1)),
            )
            .unwrap_err();
        let Error::Hub(message) = &error else {
            panic!("{error}")
        };
        assert!(
            !message.contains('\u{1b}') && !message.contains('\n'),
            "{message:?}"
        );

        // Garbage and oversized requests get a refusal, not a hang or a crash.
        let mut stream = UnixStream::connect(server.path()).unwrap();
        stream.write_all(b"{\"op\":\"nope\"}\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("not a control request"), "{answer}");
        // An oversized one is cut off at the limit: the refusal may be lost
        // to the reset of the unread rest, but the daemon serves on.
        let mut stream = UnixStream::connect(server.path()).unwrap();
        let _ = stream.write_all(&vec![b'x'; (MAX_REQUEST_BYTES + 10) as usize]);
        let mut answer = String::new();
        if stream.read_to_string(&mut answer).is_ok() {
            assert!(answer.contains("not one line"), "{answer}");
        }
        assert!(remote.report().unwrap().running);

        drop(server);
        let error = remote.report().unwrap_err();
        assert!(matches!(error, Error::HubNotRunning(_)), "{error}");
        assert_eq!(error.exit_code(), 11);
    }
}
