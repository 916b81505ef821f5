//! Crash safety of the store: a child process (this test binary, run again
//! with `EDGE_HUB_CRASH_DIR`) publishes at full speed and prints every
//! message the hub acknowledged; the parent kills it with SIGKILL, opens
//! the store again and checks that every acknowledged message is there, in
//! order per queue. The failpoint tests stop the child just before and just
//! after a commit. The eviction tests flood a store much smaller than the
//! flood, whose upstream messages also expire, and kill the child while it
//! evicts and sweeps; the store it leaves must pass the store's
//! consistency check.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_hub::{FileKeys, Hub, HubConfig, HubDeployment, HubMessage, Qos};
use edge_route::RouteTableEntry;

/// Where the child keeps its hub; set only in the child.
const DIR_ENV: &str = "EDGE_HUB_CRASH_DIR";
/// What the child does: `flood`, `one` or `evict`.
const MODE_ENV: &str = "EDGE_HUB_CRASH_MODE";
/// How many tasks publish at once in the flood.
const PUBLISHERS: usize = 8;

/// The store limit of the eviction tests: a few hundred of the flood's
/// messages.
const EVICTION_LIMIT: u64 = 256 * 1024;

fn config_with_limit(dir: &Path, limit: u64) -> HubConfig {
    HubConfig {
        device_id: "device1".to_owned(),
        iothub_hostname: "hub.example".to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: None,
        dir: dir.join("hub"),
        store_limit_bytes: limit,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(7200),
        max_connections: 100,
        leaf_devices: Vec::new(),
    }
}

fn open(dir: &Path) -> Hub {
    open_with_limit(dir, 1 << 30)
}

fn open_with_limit(dir: &Path, limit: u64) -> Hub {
    let config = config_with_limit(dir, limit);
    let keys = FileKeys::open(&config.dir.join("keys")).expect("keys");
    Hub::open(&config, Arc::new(keys)).expect("hub")
}

fn route(name: &str, text: &str) -> RouteTableEntry {
    RouteTableEntry {
        name: name.to_owned(),
        route: text.to_owned(),
        priority: 0,
        time_to_live_secs: 0,
    }
}

/// `s` sends to `r` (checked), to `c` (consumed and acknowledged while the
/// flood runs, so acknowledgements share the commits) and upstream.
async fn deploy(hub: &Hub) {
    hub.deploy(HubDeployment {
        routes: vec![
            route(
                "r",
                "FROM /messages/modules/s/* INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            ),
            route(
                "c",
                "FROM /messages/modules/s/* INTO BrokeredEndpoint(\"/modules/c/inputs/in\")",
            ),
            route("up", "FROM /messages/modules/s/* INTO $upstream"),
        ],
        modules: vec!["s".to_owned(), "r".to_owned(), "c".to_owned()],
        desired: BTreeMap::new(),
        default_time_to_live: None,
    })
    .await
    .expect("deploy");
}

fn message(publisher: usize, sequence: u64) -> HubMessage {
    HubMessage {
        body: format!("{publisher}:{sequence}").into_bytes(),
        ..HubMessage::default()
    }
}

/// Prints `ack PUBLISHER SEQUENCE` as one write, flushed.
fn report(publisher: usize, sequence: u64) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ack {publisher} {sequence}");
    let _ = stdout.flush();
}

/// The child: runs only when the parent starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash tests; they run it"]
async fn crash_child() {
    let dir = std::env::var(DIR_ENV).expect("run by the crash tests");
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    let hub = if mode == "evict" {
        open_with_limit(Path::new(&dir), EVICTION_LIMIT)
    } else {
        open(Path::new(&dir))
    };
    if mode == "evict" {
        deploy_expiring(&hub).await;
        flood(&hub).await;
        return;
    }
    if mode == "one" {
        hub.publish("s", Some("out"), message(0, 0), Qos::AtLeastOnce)
            .await
            .expect("publish");
        report(0, 0);
        return;
    }
    deploy(&hub).await;
    let consumer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut inputs = hub.open_inputs("c");
            while let Some(delivery) = inputs.next().await {
                inputs.ack(delivery.id);
            }
        })
    };
    flood(&hub).await;
    consumer.abort();
}

/// Publishes from [`PUBLISHERS`] tasks at once, printing every
/// acknowledgement, until the process is killed.
async fn flood(hub: &Hub) {
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for sequence in 0.. {
                    hub.publish(
                        "s",
                        Some("out"),
                        message(publisher, sequence),
                        Qos::AtLeastOnce,
                    )
                    .await
                    .expect("publish");
                    report(publisher, sequence);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
}

/// `s` sends to `r` and upstream; upstream messages live one second, so
/// the sweep removes them while eviction makes room for new ones.
async fn deploy_expiring(hub: &Hub) {
    let mut upstream = route("up", "FROM /messages/modules/s/* INTO $upstream");
    upstream.time_to_live_secs = 1;
    upstream.priority = 5;
    hub.deploy(HubDeployment {
        routes: vec![
            route(
                "r",
                "FROM /messages/modules/s/* INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            ),
            upstream,
        ],
        modules: vec!["s".to_owned(), "r".to_owned()],
        desired: BTreeMap::new(),
        default_time_to_live: None,
    })
    .await
    .expect("deploy");
}

fn child(dir: &Path, mode: &str, failpoint: Option<&str>) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(MODE_ENV, mode)
        .env_remove(edge_failpoint::ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(failpoint) = failpoint {
        command.env(edge_failpoint::ENV, failpoint);
    }
    command
}

fn parse_ack(line: &str) -> Option<(usize, u64)> {
    let mut words = line.strip_prefix("ack ")?.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Every message left in `module`'s queue, as (publisher, sequence).
async fn drain(hub: &Hub, module: &str) -> Vec<(usize, u64)> {
    let mut inputs = hub.open_inputs(module);
    let mut found = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(500), inputs.next()).await
    {
        let body = String::from_utf8(delivery.message.body.clone()).expect("text body");
        let (publisher, sequence) = body.split_once(':').expect("publisher:sequence");
        found.push((
            publisher.parse().expect("publisher"),
            sequence.parse().expect("sequence"),
        ));
        inputs.ack(delivery.id);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut process = child(dir.path(), "flood", None)
        .spawn()
        .expect("the child starts");
    let stdout = process.stdout.take().expect("child stdout");
    let mut acknowledged = HashSet::new();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    // Kill it mid-flood: after a good number of acknowledgements, so the
    // store holds several thousand messages and commits are in flight.
    while acknowledged.len() < 5000 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(ack) = parse_ack(&line) {
                    acknowledged.insert(ack);
                }
            }
            _ => break,
        }
    }
    let flood = started.elapsed();
    process.kill().expect("SIGKILL");
    // Lines the child wrote before it died still count: each was printed
    // only after its publish was acknowledged.
    for line in lines.map_while(Result::ok) {
        if let Some(ack) = parse_ack(&line) {
            acknowledged.insert(ack);
        }
    }
    let status = process.wait().expect("child status");
    assert!(!status.success(), "the child was killed: {status:?}");
    assert!(
        acknowledged.len() >= 1000,
        "the child acknowledged only {} messages before it was killed",
        acknowledged.len()
    );

    let hub = open(dir.path());
    let depth = hub.stats().modules["r"].queues["r/in"].depth;
    let found = drain(&hub, "r").await;
    // The persisted queue depth agrees with the queue.
    assert_eq!(depth, u64::try_from(found.len()).expect("count"));
    let present: HashSet<(usize, u64)> = found.iter().copied().collect();
    let lost: Vec<_> = acknowledged.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages were lost, such as {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // FIFO per queue: each publisher's messages come in the order it sent
    // them, with no gaps before its last acknowledged one.
    let mut last: BTreeMap<usize, u64> = BTreeMap::new();
    for (publisher, sequence) in &found {
        let expected = last.get(publisher).map_or(0, |previous| previous + 1);
        assert_eq!(
            *sequence, expected,
            "publisher {publisher}'s messages are out of order"
        );
        last.insert(*publisher, *sequence);
    }
    eprintln!(
        "acknowledged {} messages in {:.1} s before SIGKILL; {} in the queue after reopening",
        acknowledged.len(),
        flood.as_secs_f64(),
        found.len(),
    );
}

/// Runs the `one` child with `failpoint` armed; returns the child's stdout
/// and stderr.
fn run_to_failpoint(dir: &Path, failpoint: &str) -> (String, String) {
    let output = child(dir, "one", Some(failpoint))
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "the child did not stop at {failpoint}: {stdout} {stderr}"
    );
    assert!(
        stderr.contains(&format!("failpoint {failpoint} reached")),
        "{failpoint} was not reached: {stderr}"
    );
    assert!(
        !stdout.lines().any(|line| parse_ack(line).is_some()),
        "a publish was acknowledged although the process stopped at {failpoint}"
    );
    (stdout, stderr)
}

async fn deployed(dir: &Path) {
    let hub = open(dir);
    deploy(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_commit_stores_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    deployed(dir.path()).await;
    run_to_failpoint(dir.path(), "hub.store.before_commit");
    let hub = open(dir.path());
    assert!(drain(&hub, "r").await.is_empty());
    assert_eq!(hub.stats().totals.queued, 0);
    // The store works on.
    hub.publish("s", Some("out"), message(1, 0), Qos::AtLeastOnce)
        .await
        .expect("publish after the crash");
    assert_eq!(drain(&hub, "r").await, vec![(1, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_commit_keeps_the_unacknowledged_message() {
    let dir = tempfile::tempdir().expect("temporary directory");
    deployed(dir.path()).await;
    run_to_failpoint(dir.path(), "hub.store.after_commit_before_ack");
    let hub = open(dir.path());
    // The sender never heard back and will send it again: at least once.
    assert_eq!(drain(&hub, "r").await, vec![(0, 0)]);
    assert_eq!(hub.stats().upstream.depth, 1);
}

/// Checks the store the child left (as redb recovers it) and that the depth
/// the hub counts is the queue it delivers.
async fn assert_consistent(dir: &Path) {
    let violations =
        edge_hub::store::check_file(&dir.join("hub/store.redb")).expect("the store opens");
    assert!(violations.is_empty(), "{violations:#?}");
    let hub = open_with_limit(dir, EVICTION_LIMIT);
    let depth = hub.stats().modules["r"].queues["r/in"].depth;
    let found = drain(&hub, "r").await;
    assert_eq!(depth, u64::try_from(found.len()).expect("count"));
    // The store works on: evictions make room for a new message.
    hub.publish("s", Some("out"), message(9, 0), Qos::AtLeastOnce)
        .await
        .expect("publish after the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_a_batch_that_evicts_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = child(
        dir.path(),
        "evict",
        Some("hub.store.before_commit_of_drops"),
    )
    .output()
    .expect("the child runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failpoint hub.store.before_commit_of_drops reached"),
        "{stderr}"
    );
    let acknowledged = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| parse_ack(line).is_some())
        .count();
    assert!(
        acknowledged > 100,
        "the store filled up after {acknowledged} messages"
    );
    assert_consistent(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_evicting_and_sweeping_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut process = child(dir.path(), "evict", None)
        .spawn()
        .expect("the child starts");
    let stdout = process.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    // Many times what the store holds, and past the upstream messages' time
    // to live, so the kill lands among evictions and sweeps.
    let mut acknowledged = 0;
    while (acknowledged < 6000 || started.elapsed() < Duration::from_millis(1500))
        && started.elapsed() < Duration::from_secs(60)
    {
        match lines.next() {
            Some(Ok(line)) if parse_ack(&line).is_some() => acknowledged += 1,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    process.kill().expect("SIGKILL");
    let status = process.wait().expect("child status");
    assert!(!status.success(), "the child was killed: {status:?}");
    assert!(acknowledged >= 6000, "only {acknowledged} acknowledged");
    assert_consistent(dir.path()).await;
}
