//! Debian's `mosquitto` as the stand-in cloud of the hub's tests and
//! benchmarks.
//!
//! [`Mosquitto::start`] runs a broker on loopback with two TLS listeners:
//! the *device* listener, where edged connects and is authenticated the way
//! the test asks ([`DeviceAuth`]: a password file or client certificates
//! from the test's own CA), and the *service* listener, anonymous, where the
//! test's [`CloudClient`] plays IoT Hub's side: it records what the device
//! publishes and publishes desired patches and method calls to it. The
//! broker can be stopped, killed and started again on the same ports, to
//! take the cloud away and bring it back. With a password file, the broker
//! can also turn the devices away while it runs ([`Mosquitto::admit_devices`]),
//! so that a test connects its recorder before any device can publish.
//!
//! mosquitto drops to the `mosquitto` user when started as root, so its
//! directory is made readable by everyone (the keys are test keys).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
pub use test_pki::{Authority, Issued};
use tokio::sync::mpsc;

/// The host name the broker's certificate names, and what clients dial.
pub const HOST: &str = "localhost";

/// How the device listener authenticates.
#[derive(Clone, Debug)]
pub enum DeviceAuth {
    /// User names and passwords (a SAS token is a password to mosquitto).
    Passwords(Vec<(String, String)>),
    /// A client certificate from the test CA; its common name is the user
    /// name.
    ClientCertificates,
}

/// A running (or stopped) broker.
pub struct Mosquitto {
    dir: PathBuf,
    child: Option<Child>,
    /// The network namespace it runs in (`ip netns exec`), if not the
    /// test's own.
    netns: Option<String>,
    device_port: u16,
    service_port: u16,
    authority: Arc<Authority>,
    auth: DeviceAuth,
}

impl Mosquitto {
    /// Starts a broker in `dir` (created) with the device listener
    /// authenticating by `auth`; returns once both listeners accept.
    pub fn start(dir: &Path, authority: Arc<Authority>, auth: DeviceAuth) -> Self {
        Self::start_in(dir, authority, auth, None)
    }

    /// [`Mosquitto::start`] inside the network namespace `netns` (for
    /// clients that dial fixed ports, such as the Azure IoT SDKs): the
    /// broker is ready when its log says it runs, since its ports cannot be
    /// reached from here.
    pub fn start_in_netns(
        dir: &Path,
        authority: Arc<Authority>,
        auth: DeviceAuth,
        netns: &str,
    ) -> Self {
        Self::start_in(dir, authority, auth, Some(netns.to_owned()))
    }

    fn start_in(
        dir: &Path,
        authority: Arc<Authority>,
        auth: DeviceAuth,
        netns: Option<String>,
    ) -> Self {
        fs::create_dir_all(dir).expect("the broker's directory");
        let server = authority.server(&[HOST]);
        fs::write(dir.join("ca.pem"), authority.ca_pem()).expect("ca.pem");
        fs::write(dir.join("server.pem"), &server.certificate_pem).expect("server.pem");
        fs::write(dir.join("server.key"), &server.key_pem).expect("server.key");
        let device_port = free_port();
        let service_port = free_port();
        let device_auth = match &auth {
            DeviceAuth::Passwords(users) => {
                let file = dir.join("passwords");
                write_passwords(&file, users);
                format!("allow_anonymous false\npassword_file {}\n", file.display())
            }
            DeviceAuth::ClientCertificates => {
                "allow_anonymous false\nrequire_certificate true\nuse_identity_as_username true\n"
                    .to_owned()
            }
        };
        let tls = |dir: &Path| {
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                dir.join("ca.pem").display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            )
        };
        // Queues without limit: a test counts every message, and mosquitto
        // otherwise drops QoS 1 messages past 1,000 queued for a client.
        let config = format!(
            "per_listener_settings true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\n\
             listener {device_port} 127.0.0.1\n{}{device_auth}\
             listener {service_port} 127.0.0.1\n{}allow_anonymous true\n",
            tls(dir),
            tls(dir)
        );
        fs::write(dir.join("mosquitto.conf"), config).expect("mosquitto.conf");
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
        let mut mosquitto = Self {
            dir: dir.to_owned(),
            child: None,
            netns,
            device_port,
            service_port,
            authority,
            auth,
        };
        mosquitto.start_again();
        mosquitto
    }

    /// The port edged connects to.
    pub fn device_port(&self) -> u16 {
        self.device_port
    }

    /// The anonymous port of the cloud side (load generators, recorders).
    pub fn service_port(&self) -> u16 {
        self.service_port
    }

    /// The CA file that verifies the broker.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the broker (again) on the same ports.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let log = fs::File::create(self.dir.join("mosquitto.log")).expect("log file");
        // `ip netns exec` executes the broker in place, so the child is the
        // broker itself, to signal and to kill.
        let mut command = match &self.netns {
            None => Command::new("mosquitto"),
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "mosquitto"]);
                command
            }
        };
        let child = command
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        self.child = Some(child);
        match &self.netns {
            None => {
                for port in [self.device_port, self.service_port] {
                    wait_for_port(port, &self.dir);
                }
            }
            Some(_) => wait_for_log(&self.dir, " running"),
        }
    }

    /// Lets the devices of the password file connect (`true`, the
    /// default) or turns every device away (`false`): the broker forgets
    /// the passwords, so it refuses new connections and closes the devices'
    /// open ones, while the service listener and its clients stay. Applied
    /// by reloading the running broker (SIGHUP), which takes effect a moment
    /// later, or at the next start. Only for [`DeviceAuth::Passwords`].
    pub fn admit_devices(&mut self, admit: bool) {
        let DeviceAuth::Passwords(users) = &self.auth else {
            panic!("only a broker with a password file can turn devices away");
        };
        let users: &[(String, String)] = if admit { users } else { &[] };
        write_passwords(&self.dir.join("passwords"), users);
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg("-HUP")
                .arg(child.id().to_string())
                .status()
                .expect("kill");
            assert!(status.success(), "the broker did not take SIGHUP");
        }
    }

    /// Stops the broker (SIGKILL: the cloud vanishes without a goodbye).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A cloud-side client on the service listener that records what
    /// arrives on `devices/#` and `$iothub/#`.
    pub async fn cloud_client(&self) -> CloudClient {
        CloudClient::connect(self.service_port, self.authority.ca_pem()).await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the password file the broker reads: `users` and nothing else.
fn write_passwords(file: &Path, users: &[(String, String)]) {
    // Written beside and renamed, so that a reload never reads half a file.
    let next = file.with_extension("next");
    fs::write(&next, "").expect("password file");
    for (user, password) in users {
        let status = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&next)
            .arg(user)
            .arg(password)
            .status()
            .expect("mosquitto_passwd is installed (apt-get install mosquitto)");
        assert!(status.success(), "mosquitto_passwd failed");
    }
    let _ = Command::new("chmod").arg("a+r").arg(&next).status();
    fs::rename(&next, file).expect("password file");
}

/// A port nothing listens on now (another process may take it before the
/// broker binds it, which a retry of the test survives).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto does not listen on {port}; its log: {}",
            fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the broker's log has `text` (its start-up line says it
/// runs once its listeners are open).
fn wait_for_log(dir: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start; its log: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A publish the cloud side received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// IoT Hub's side of the link, played on the service listener.
pub struct CloudClient {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl CloudClient {
    async fn connect(port: u16, ca_pem: &str) -> Self {
        // Each client its own id: a second connection with the same one
        // would take the first one's session over.
        static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options =
            MqttOptions::new(format!("cloud-{}-{number}", std::process::id()), HOST, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_inflight(1000);
        options.set_max_packet_size(1 << 20, 1 << 20);
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            client_tls(ca_pem),
        ))));
        let (client, mut events) = AsyncClient::new(options, 4096);
        wait_for_connack(&mut events).await;
        for filter in ["devices/#", "$iothub/#"] {
            client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let (sender, received) = mpsc::unbounded_channel();
        let (subscribed, mut suback) = mpsc::channel(2);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = sender.send(Received {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), suback.recv())
                .await
                .expect("the broker answers the subscriptions");
        }
        Self {
            client,
            received,
            task,
        }
    }

    /// The next publish, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next publish whose topic starts with `prefix`, skipping others;
    /// `None` after `timeout`.
    pub async fn next_on(&mut self, prefix: &str, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let received = self.next(left).await?;
            if received.topic.starts_with(prefix) {
                return Some(received);
            }
        }
    }

    /// Every publish that arrives before a marker this client sends through
    /// the broker now; the marker itself is not returned. The broker hands
    /// a subscriber what it accepted in order, so once the marker is back,
    /// everything the broker acknowledged to anyone before it was sent is
    /// here.
    pub async fn received_until_now(&mut self, timeout: Duration) -> Vec<Received> {
        static MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("$iothub/test-marker/{}/{number}", std::process::id());
        self.publish(&marker, Vec::new()).await;
        let mut received = Vec::new();
        loop {
            let next = self
                .next(timeout)
                .await
                .expect("the marker comes back through the broker");
            if next.topic == marker {
                return received;
            }
            received.push(next);
        }
    }

    /// Publishes `payload` on `topic` with QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }
}

impl Drop for CloudClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for_connack(events: &mut EventLoop) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return,
            Ok(_) => {}
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the cloud client cannot connect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A TLS client configuration trusting `ca_pem`.
pub fn client_tls(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(certificate.expect("the CA PEM parses"))
            .expect("the CA is a valid root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
