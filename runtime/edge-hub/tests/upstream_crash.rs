//! Power cuts on the upstream path. A child process (this test binary, run
//! again with `EDGE_HUB_UPSTREAM_CRASH_DIR`) opens a hub, starts the
//! upstream connection to a real mosquitto and publishes numbered messages
//! at full speed, printing each one the hub acknowledged; the parent kills
//! it with SIGKILL (or lets a failpoint abort it) at random moments while
//! the cloud is there, while it is away, and while the hub catches up with
//! a backlog, starts it again on the same directory, and at the end lets a
//! last child drain the queue. A recorder on the cloud side stays
//! subscribed whenever a child may publish. Then every acknowledged message
//! must have reached the cloud, the first arrivals of each priority queue
//! must be in order, and the duplicates after each kill must stay within
//! what the design allows (see [`Ledger::close_interval`]).
//!
//! The second test restarts the hub while the cloud is away, cleanly and
//! with SIGKILL, and checks that nothing is lost and that forwarding
//! restarts by itself when the cloud comes back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_hub::upstream::{LinkState, Upstream};
use edge_hub::{Hub, HubDeployment, HubMessage, Qos};
use test_mosquitto::{CloudClient, Mosquitto, Received};

mod upstream_common;
use upstream_common::{DEVICE, open_deployed, route, token_broker, token_config_for, wait_until};

/// Where the child keeps its hub; set only in the child.
const DIR_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_DIR";
/// The broker's device port and CA file, for the child.
const PORT_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_PORT";
const CA_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_CA";
/// The child's number: the first part of every message label it sends.
const CHILD_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_CHILD";
/// `flood` (publish until killed, or `COUNT_ENV` messages and then wait)
/// or `drain` (publish nothing, exit once the upstream queue is empty).
const MODE_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_MODE";
const COUNT_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_COUNT";
/// Replays a run of the random test: the seed it printed.
const SEED_ENV: &str = "EDGE_HUB_UPSTREAM_CRASH_SEED";

/// The in-flight window: small, so that the duplicate bound, which grows
/// with it, is tight.
const WINDOW: usize = 32;
/// Every fifth message is urgent (priority 0), the rest go at priority 5.
const URGENT_EVERY: u64 = 5;
/// How many SIGKILLs the random test deals at least (failpoint aborts come
/// on top).
const SIGKILLS: usize = 110;
const WAIT: Duration = Duration::from_secs(60);

/// A message: the number of the process that sent it and its sequence
/// number there. Labels order as the messages were queued, since each
/// process publishes one at a time and runs after the previous one died.
type Label = (u64, u64);

fn priority(label: Label) -> u8 {
    if label.1.is_multiple_of(URGENT_EVERY) {
        0
    } else {
        5
    }
}

async fn open_hub(dir: &Path) -> Hub {
    open_deployed(
        dir,
        HubDeployment {
            routes: vec![
                route(
                    "urgent",
                    "FROM /messages/modules/s/* WHERE urgent = 'true' INTO $upstream",
                    0,
                ),
                route(
                    "bulk",
                    "FROM /messages/modules/s/* WHERE NOT(urgent = 'true') INTO $upstream",
                    5,
                ),
            ],
            modules: vec!["s".to_owned()],
            desired: BTreeMap::new(),
            default_time_to_live: None,
        },
    )
    .await
}

fn start_upstream(hub: &Hub, dir: &Path, port: u16, ca_file: PathBuf) -> Upstream {
    let mut config = token_config_for(dir, port, ca_file);
    config.window = WINDOW;
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_maximum = Duration::from_millis(200);
    Upstream::start(hub.clone(), config)
}

async fn publish(hub: &Hub, label: Label) {
    let message = HubMessage {
        body: format!("{}:{}", label.0, label.1).into_bytes(),
        application_properties: vec![
            ("child".to_owned(), label.0.to_string()),
            ("n".to_owned(), label.1.to_string()),
            ("urgent".to_owned(), (priority(label) == 0).to_string()),
        ],
        ..HubMessage::default()
    };
    hub.publish("s", Some("out"), message, Qos::AtLeastOnce)
        .await
        .expect("publish");
}

/// The label of a telemetry publish; `None` for anything else (reported
/// properties, markers).
fn label(received: &Received) -> Option<Label> {
    let bag = received
        .topic
        .strip_prefix(&format!("devices/{DEVICE}/messages/events/"))?;
    let fields: HashMap<&str, &str> = bag
        .split('&')
        .filter_map(|field| field.split_once('='))
        .collect();
    Some((
        fields["child"].parse().expect("child"),
        fields["n"].parse().expect("n"),
    ))
}

/// Prints one line as one write, flushed, so that a SIGKILL never leaves
/// half a line.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The child: runs only when a test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the upstream crash tests; they run it"]
async fn upstream_crash_child() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("run by the crash tests"));
    let port = std::env::var(PORT_ENV)
        .expect("port")
        .parse()
        .expect("port");
    let ca_file = PathBuf::from(std::env::var(CA_ENV).expect("CA"));
    let child: u64 = std::env::var(CHILD_ENV)
        .expect("child")
        .parse()
        .expect("child");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let hub = open_hub(&dir).await;
    let upstream = Arc::new(start_upstream(&hub, &dir, port, ca_file));
    say("ready");
    if std::env::var(MODE_ENV).as_deref() == Ok("drain") {
        while hub.stats().upstream.depth > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        say(&format!("drained {}", upstream.status().messages_resent));
        return;
    }
    // Reports how many of the cloud's acknowledgements are durable: the
    // removal of an acknowledged entry is queued to the store's writer
    // before `messages_acknowledged` counts it, and a durable commit makes
    // everything queued before its batch was taken durable. The second
    // durable commit after the count was read took its batch after the
    // first one ended, so after the count was read. (A batch takes at most
    // 4,096 operations; with one publisher and a window of 32 fewer ever
    // wait.)
    let monitor = {
        let hub = hub.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            loop {
                let acknowledged = upstream.status().messages_acknowledged;
                let commits = hub.stats().store.durable_commits;
                while hub.stats().store.durable_commits < commits + 2 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                say(&format!("checkpointed {acknowledged}"));
            }
        })
    };
    let count = std::env::var(COUNT_ENV).map_or(u64::MAX, |count| count.parse().expect("count"));
    for n in 0..count {
        publish(&hub, (child, n)).await;
        say(&format!("ack {child} {n}"));
    }
    monitor.abort();
    std::future::pending::<()>().await;
}

/// What one child process printed.
#[derive(Debug, Default)]
struct Printed {
    acknowledged: Vec<Label>,
    /// The last `checkpointed` figure.
    checkpointed: u64,
    drained_resent: Option<u64>,
}

impl Printed {
    fn parse(lines: &[String]) -> Self {
        let mut printed = Self::default();
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["ack", child, n] => printed
                    .acknowledged
                    .push((child.parse().expect("child"), n.parse().expect("n"))),
                ["checkpointed", count] => printed.checkpointed = count.parse().expect("count"),
                ["drained", resent] => {
                    printed.drained_resent = Some(resent.parse().expect("resent"));
                }
                _ => {}
            }
        }
        printed
    }
}

/// A running child and the lines it printed so far.
struct Child {
    process: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    /// Where its stderr goes (a file, which never fills up as a pipe
    /// would).
    log: PathBuf,
}

impl Child {
    fn spawn(
        dir: &Path,
        broker: &Mosquitto,
        number: u64,
        mode: &str,
        count: Option<u64>,
        failpoint: Option<&str>,
    ) -> Self {
        let log = dir.join(format!("child-{number}.log"));
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "--ignored",
                "--exact",
                "upstream_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir)
            .env(PORT_ENV, broker.device_port().to_string())
            .env(CA_ENV, broker.ca_file())
            .env(CHILD_ENV, number.to_string())
            .env(MODE_ENV, mode)
            .env_remove(COUNT_ENV)
            .env_remove(edge_failpoint::ENV)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("child log"));
        if let Some(count) = count {
            command.env(COUNT_ENV, count.to_string());
        }
        if let Some(failpoint) = failpoint {
            command.env(edge_failpoint::ENV, failpoint);
        }
        let mut process = command.spawn().expect("the child starts");
        let stdout = process.stdout.take().expect("stdout");
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness starts the child's first line with
                // `test upstream_crash_child ... `.
                let line = line.rsplit("... ").next().unwrap_or_default();
                let _ = sender.send(line.to_owned());
            }
        });
        Self {
            process,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// Waits until the child printed a line starting with `prefix`.
    async fn wait_for(&mut self, prefix: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the child did not print {prefix:?} in time: {:?} {}",
                        self.seen,
                        self.stderr()
                    )
                })
                .unwrap_or_else(|| {
                    panic!(
                        "the child ended before printing {prefix:?}: {}",
                        self.stderr()
                    )
                });
            let found = line.starts_with(prefix);
            self.seen.push(line);
            if found {
                return;
            }
        }
    }

    /// Every line the child printed, once it ended.
    async fn lines_after_exit(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        let status = self.process.wait().expect("child status");
        let stderr = self.stderr();
        (status, std::mem::take(&mut self.seen), stderr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a power cut.
    async fn kill(mut self) -> Printed {
        self.process.kill().expect("SIGKILL");
        let _ = self.process.wait();
        let (status, lines, _) = self.lines_after_exit().await;
        assert!(!status.success(), "the child was killed: {status:?}");
        Printed::parse(&lines)
    }

    /// Waits for the child to end by itself.
    async fn end(mut self) -> (std::process::ExitStatus, Printed, String) {
        let deadline = Instant::now() + WAIT;
        while self.process.try_wait().expect("child status").is_none() {
            assert!(
                Instant::now() < deadline,
                "the child did not end in time: {:?} {}",
                self.seen,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, lines, stderr) = self.lines_after_exit().await;
        (status, Printed::parse(&lines), stderr)
    }
}

impl Drop for Child {
    /// A failing test leaves no child behind.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A small seeded generator (SplitMix64): the seed is printed, so that a
/// failing run can be replayed with `EDGE_HUB_UPSTREAM_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    fn within(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }

    fn millis(&mut self, range: std::ops::RangeInclusive<u64>) -> Duration {
        Duration::from_millis(self.within(range))
    }
}

/// The stand-in cloud, with a recorder subscribed whenever it runs.
struct Cloud {
    broker: Mosquitto,
    recorder: Option<CloudClient>,
}

impl Cloud {
    /// Starts the broker and its recorder; no device may publish yet.
    async fn start(dir: &Path) -> Self {
        let broker = token_broker(dir);
        let recorder = Some(broker.cloud_client().await);
        Self { broker, recorder }
    }

    fn is_up(&self) -> bool {
        self.recorder.is_some()
    }

    /// Telemetry that arrived so far, in order; nothing once the broker is
    /// stopped (everything was taken before).
    async fn arrived(&mut self) -> Vec<Label> {
        match &mut self.recorder {
            Some(recorder) => recorder
                .received_until_now(WAIT)
                .await
                .iter()
                .filter_map(label)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Takes what arrived, then kills the broker.
    async fn stop(&mut self) -> Vec<Label> {
        let arrived = self.arrived().await;
        self.recorder = None;
        self.broker.stop();
        arrived
    }

    /// Starts the broker turning the device away until the recorder is
    /// subscribed, so that nothing the broker acknowledges goes unrecorded.
    async fn start_again(&mut self) {
        self.broker.admit_devices(false);
        self.broker.start_again();
        self.recorder = Some(self.broker.cloud_client().await);
        self.broker.admit_devices(true);
    }
}

/// The figures of the random test, and its checks.
#[derive(Default)]
struct Ledger {
    /// Every telemetry arrival, in order.
    arrivals: Vec<Label>,
    /// How often each label arrived.
    seen: HashMap<Label, u64>,
    acknowledged: HashSet<Label>,
    /// The highest acknowledged sequence number per child.
    last_acknowledged: HashMap<u64, u64>,
    /// How many duplicates the kills so far may cause in all (see
    /// `close_interval`).
    allowance: u64,
    /// The most one kill added to it.
    max_allowance: u64,
    duplicates: u64,
    /// The most duplicates that arrived in one interval.
    max_duplicates: u64,
}

impl Ledger {
    /// Books one child's run: what it printed and what arrived from the
    /// marker after the previous child to the marker after this one.
    ///
    /// The duplicate bound. A message arrives again only if a later
    /// process sends it again, that is if it was still in the durable store
    /// at a kill although it had been sent. A kill of child `j` leaves at
    /// most this many such messages behind: (1) those in flight, at most
    /// the window, `WINDOW`; (2) those the cloud acknowledged and that were
    /// not yet durably removed, which are child `j`'s acknowledgements
    /// beyond the last `checkpointed` figure it printed; every acknowledged
    /// publish reached the recorder before the marker that closes the
    /// interval, so they are at most `arrivals − checkpointed`. Each such
    /// message costs one duplicate when a later process sends it again
    /// (the connections of these processes never drop, so none sends a
    /// message twice), or leaves it behind again at a later kill, where it
    /// is counted again. So the duplicates up to any interval are at most
    /// what the kills before it left behind: in a crash the hub resends at
    /// most the window and what was acknowledged since the last durable
    /// commit, never older checkpoints.
    fn close_interval(&mut self, arrived: &[Label], printed: &Printed) -> u64 {
        let mut duplicates = 0;
        for label in arrived {
            let count = self.seen.entry(*label).or_default();
            if *count > 0 {
                duplicates += 1;
            }
            *count += 1;
        }
        self.duplicates += duplicates;
        self.max_duplicates = self.max_duplicates.max(duplicates);
        assert!(
            self.duplicates <= self.allowance,
            "{} duplicates arrived, more than the {} the kills before allow",
            self.duplicates,
            self.allowance
        );
        let arrivals = u64::try_from(arrived.len()).expect("count");
        let left_behind =
            u64::try_from(WINDOW).expect("window") + arrivals.saturating_sub(printed.checkpointed);
        self.allowance += left_behind;
        self.max_allowance = self.max_allowance.max(left_behind);
        self.arrivals.extend_from_slice(arrived);
        for label in &printed.acknowledged {
            self.acknowledged.insert(*label);
            let last = self.last_acknowledged.entry(label.0).or_default();
            *last = (*last).max(label.1);
        }
        duplicates
    }

    /// None lost, nothing invented, each priority queue in order.
    fn check(&self) {
        let lost: Vec<_> = self
            .acknowledged
            .iter()
            .filter(|label| !self.seen.contains_key(label))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged messages never reached the cloud, such as {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        // A child publishes one message at a time, so at most the one
        // after its last acknowledged message can be stored unacknowledged.
        for (child, n) in self.seen.keys() {
            let limit = self.last_acknowledged.get(child).map_or(0, |last| last + 1);
            assert!(*n <= limit, "({child}, {n}) was never published");
        }
        let mut first = HashSet::new();
        let mut last: [Option<Label>; 2] = [None, None];
        for label in &self.arrivals {
            if !first.insert(*label) {
                continue;
            }
            let queue = usize::from(priority(*label) != 0);
            if let Some(previous) = last[queue] {
                assert!(
                    previous < *label,
                    "{label:?} arrived first after {previous:?} in priority {}",
                    priority(*label)
                );
            }
            last[queue] = Some(*label);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    /// The cloud is there: queuing and delivering at full speed.
    Online,
    /// The broker is stopped before the child starts: queuing only.
    Offline,
    /// The broker comes back before the child starts: catching up.
    CatchUp,
    /// The broker comes back while the child runs: it reconnects by itself
    /// and catches up.
    Reconnect,
    /// Killed right after the cloud acknowledged a burst.
    AfterBurst,
    /// A failpoint aborts the child at the N-th hit.
    Failpoint,
}

const FAILPOINTS: [&str; 3] = [
    "hub.upstream.after_puback",
    "hub.store.before_commit",
    "hub.store.after_commit_before_ack",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_power_cuts_lose_nothing_the_hub_acknowledged() {
    let started = Instant::now();
    let seed = std::env::var(SEED_ENV).map_or_else(
        |_| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).expect("random seed");
            u64::from_le_bytes(bytes)
        },
        |seed| seed.parse().expect("seed"),
    );
    eprintln!("upstream crash test: {SEED_ENV}={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cloud = Cloud::start(dir.path()).await;
    let mut ledger = Ledger::default();
    let mut kills: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut sigkills = 0;
    let mut number = 0;
    let mut pending_arrivals = Vec::new();
    while sigkills < SIGKILLS {
        number += 1;
        let phase = if cloud.is_up() {
            match rng.within(0..=7) {
                0..=2 => Phase::Online,
                3 => Phase::Offline,
                4..=5 => Phase::AfterBurst,
                _ => Phase::Failpoint,
            }
        } else {
            match rng.within(0..=4) {
                0 => Phase::Offline,
                1..=2 => Phase::CatchUp,
                _ => Phase::Reconnect,
            }
        };
        match phase {
            Phase::Offline if cloud.is_up() => pending_arrivals.extend(cloud.stop().await),
            Phase::CatchUp => cloud.start_again().await,
            _ => {}
        }
        let failpoint = (phase == Phase::Failpoint).then(|| {
            let point = FAILPOINTS[usize::try_from(rng.within(0..=2)).expect("index")];
            format!("{point}:at={}", rng.within(1..=200))
        });
        let mut child = Child::spawn(
            dir.path(),
            &cloud.broker,
            number,
            "flood",
            None,
            failpoint.as_deref(),
        );
        // A failpoint may stop the child before it is ready: the store
        // commits while the hub opens, too.
        if phase != Phase::Failpoint {
            child.wait_for("ready").await;
        }
        let printed = match phase {
            Phase::Online | Phase::Offline | Phase::CatchUp => {
                tokio::time::sleep(rng.millis(20..=400)).await;
                child.kill().await
            }
            Phase::Reconnect => {
                tokio::time::sleep(rng.millis(0..=200)).await;
                cloud.start_again().await;
                tokio::time::sleep(rng.millis(20..=400)).await;
                child.kill().await
            }
            Phase::AfterBurst => {
                let burst =
                    usize::try_from(rng.within(1..=4 * u64::try_from(WINDOW).expect("window")))
                        .expect("burst");
                let recorder = cloud.recorder.as_mut().expect("the cloud is up");
                while pending_arrivals.len() < burst {
                    let received = recorder.next(WAIT).await.expect("telemetry arrives");
                    pending_arrivals.extend(label(&received));
                }
                child.kill().await
            }
            Phase::Failpoint => {
                let (status, printed, stderr) = child.end().await;
                let point = failpoint.as_deref().expect("armed");
                assert!(!status.success(), "{point}: {status:?}");
                let name = point.split(':').next().expect("name");
                assert!(
                    stderr.contains(&format!("failpoint {name} reached")),
                    "{point} was not reached: {stderr}"
                );
                printed
            }
        };
        if phase != Phase::Failpoint {
            sigkills += 1;
        }
        *kills.entry(phase).or_default() += 1;
        pending_arrivals.extend(cloud.arrived().await);
        ledger.close_interval(&std::mem::take(&mut pending_arrivals), &printed);
    }
    if !cloud.is_up() {
        cloud.start_again().await;
    }
    number += 1;
    let drain = Child::spawn(dir.path(), &cloud.broker, number, "drain", None, None);
    let (status, printed, stderr) = drain.end().await;
    assert!(status.success(), "the last child drains: {stderr}");
    let arrived = cloud.arrived().await;
    let final_duplicates = ledger.close_interval(&arrived, &printed);
    // The counter covers resends within one process only; the last child's
    // connection never dropped, so it resent nothing, though the cloud may
    // have seen duplicates of what earlier processes sent.
    assert_eq!(printed.drained_resent, Some(0), "{printed:?}");
    ledger.check();
    eprintln!(
        "upstream crash test: {} kills ({sigkills} SIGKILLs) by phase {kills:?}; {} messages \
         acknowledged, {} arrivals of {} distinct messages, {} duplicates (allowed {}; {} caught \
         up by the last child), at most {} in one interval (one kill allowed at most {}), in \
         {:.1} s",
        number - 1,
        ledger.acknowledged.len(),
        ledger.arrivals.len(),
        ledger.seen.len(),
        ledger.duplicates,
        ledger.allowance,
        final_duplicates,
        ledger.max_duplicates,
        ledger.max_allowance,
        started.elapsed().as_secs_f64()
    );
}

/// Publishes `range` of `child`'s messages from this process.
async fn publish_range(hub: &Hub, child: u64, range: std::ops::Range<u64>) {
    for n in range {
        publish(hub, (child, n)).await;
    }
}

/// Takes telemetry from `cloud` until every label of `expected` arrived;
/// returns all arrivals in order.
async fn collect(cloud: &mut CloudClient, expected: &HashSet<Label>) -> Vec<Label> {
    let mut arrived = Vec::new();
    let mut missing = expected.clone();
    while !missing.is_empty() {
        let received = cloud.next(WAIT).await.unwrap_or_else(|| {
            panic!(
                "{} messages never arrived, such as {:?}",
                missing.len(),
                missing.iter().next()
            )
        });
        if let Some(label) = label(&received) {
            missing.remove(&label);
            arrived.push(label);
        }
    }
    arrived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_while_offline_lose_nothing_and_forwarding_restarts_by_itself() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cloud = Cloud::start(dir.path()).await;
    let _ = cloud.stop().await;
    let (port, ca_file) = (cloud.broker.device_port(), cloud.broker.ca_file());
    let mut expected = HashSet::new();

    // Queued while offline, then edged stops cleanly.
    {
        let hub = open_hub(dir.path()).await;
        let upstream = start_upstream(&hub, dir.path(), port, ca_file.clone());
        publish_range(&hub, 0, 0..40).await;
        wait_until("a failed attempt", || {
            upstream.status().last_failure.is_some()
        })
        .await;
        // The connection's task holds the hub: it must be gone before the
        // store can be opened again.
        upstream.stop().await;
    }
    expected.extend((0..40).map(|n| (0, n)));

    // Queued while offline, then the power goes.
    let mut child = Child::spawn(dir.path(), &cloud.broker, 1, "flood", Some(40), None);
    child.wait_for("ack 1 39").await;
    let printed = child.kill().await;
    assert_eq!(printed.acknowledged.len(), 40);
    expected.extend(printed.acknowledged);

    // Started again, still offline, more queued; then the cloud comes
    // back, and nothing but the running connection's own retries brings
    // the backlog up.
    let hub = open_hub(dir.path()).await;
    assert_eq!(
        hub.stats().upstream.depth,
        80,
        "both restarts kept the backlog"
    );
    let upstream = start_upstream(&hub, dir.path(), port, ca_file);
    publish_range(&hub, 2, 0..40).await;
    expected.extend((0..40).map(|n| (2, n)));
    // A few failed attempts first, so that the connection comes back from
    // its back-off rather than from its first try.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cloud.start_again().await;
    let recorder = cloud.recorder.as_mut().expect("the cloud is up");
    let arrived = collect(recorder, &expected).await;
    let mut first = Vec::new();
    for label in &arrived {
        if !first.contains(label) {
            first.push(*label);
        }
    }
    let mut sorted = first.clone();
    sorted.sort_by_key(|label| (priority(*label), *label));
    assert_eq!(first, sorted, "priority 0 first, each queue in order");
    wait_until("the queue to drain", || hub.stats().upstream.depth == 0).await;
    let status = upstream.status();
    assert!(status.last_failure.is_some(), "{status:?}");
    assert!(
        matches!(status.state, LinkState::Connected { .. }),
        "{status:?}"
    );

    // The link drops under load: what was in flight goes again on the next
    // connection, and the cloud sees no more duplicates than
    // `messages_resent` counts.
    let before = upstream.status();
    let flood = {
        let hub = hub.clone();
        tokio::spawn(async move { publish_range(&hub, 3, 0..600).await })
    };
    let recorder = cloud.recorder.as_mut().expect("the cloud is up");
    let mut arrived = Vec::new();
    while arrived.len() < 100 {
        let received = recorder.next(WAIT).await.expect("telemetry");
        arrived.extend(label(&received));
    }
    cloud.broker.admit_devices(false);
    wait_until("the broker to drop the device", || {
        !matches!(upstream.status().state, LinkState::Connected { .. })
    })
    .await;
    cloud.broker.admit_devices(true);
    flood.await.expect("flood");
    let expected: HashSet<Label> = (0..600).map(|n| (3, n)).collect();
    let recorder = cloud.recorder.as_mut().expect("the cloud is up");
    let pending: HashSet<Label> = expected
        .difference(&arrived.iter().copied().collect())
        .copied()
        .collect();
    arrived.extend(collect(recorder, &pending).await);
    wait_until("the queue to drain", || hub.stats().upstream.depth == 0).await;
    arrived.extend(cloud.arrived().await);
    let status = upstream.status();
    assert!(status.connections > before.connections, "{status:?}");
    let duplicates = arrived.len() - expected.len();
    let resent = status.messages_resent - before.messages_resent;
    assert!(
        u64::try_from(duplicates).expect("count") <= resent,
        "{duplicates} duplicates but {resent} counted as resent"
    );
    eprintln!("link dropped under load: {resent} resent, {duplicates} duplicates at the cloud");
}
