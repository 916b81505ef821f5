//! A full disk, for real: the hub's directory is on a small tmpfs, filled
//! by a filler file and the `$upstream` backlog until a commit fails with
//! ENOSPC. The store must stay consistent, keep routing between local
//! modules, say so once in the log, and take its reserve back and accept
//! messages up to its limit once space is freed. Mounting needs root; the
//! test says so and passes without it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_tmpfs::Tmpfs;

use edge_hub::{FileKeys, Hub, HubConfig, HubDeployment, HubMessage, Qos, WhenFull};
use edge_route::RouteTableEntry;

/// The tmpfs the hub's directory is on.
const FILE_SYSTEM_BYTES: u64 = 16 * 1024 * 1024;
/// What the filler leaves for the store.
const LEFT_FOR_THE_STORE: u64 = 6 * 1024 * 1024;
/// The store limit: far above the file system, so the disk fills first;
/// the reserve is then 1/64 of the file system, 256 KiB.
const STORE_LIMIT: u64 = 128 * 1024 * 1024;
const MESSAGE_BYTES: usize = 4096;
/// The log line the store writes when the disk fills up.
const DISK_FULL_LOG: &str = "the disk holding the hub store is full";

/// Log output, shared with the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn count(&self, text: &str) -> usize {
        let bytes = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        String::from_utf8_lossy(&bytes).matches(text).count()
    }
}

fn config(dir: &Path) -> HubConfig {
    HubConfig {
        device_id: "device1".to_owned(),
        iothub_hostname: "hub.example".to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: None,
        dir: dir.join("hub"),
        store_limit_bytes: STORE_LIMIT,
        when_full: WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(7200),
        max_connections: 100,
        leaf_devices: Vec::new(),
    }
}

fn open(dir: &Path) -> Hub {
    let config = config(dir);
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

/// `s` sends upstream (the backlog while offline); `l` sends to local
/// module `r`.
async fn deploy(hub: &Hub) {
    hub.deploy(HubDeployment {
        routes: vec![
            route("up", "FROM /messages/modules/s/* INTO $upstream"),
            route(
                "local",
                "FROM /messages/modules/l/* INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            ),
        ],
        modules: vec!["s".to_owned(), "l".to_owned(), "r".to_owned()],
        desired: BTreeMap::new(),
        default_time_to_live: None,
    })
    .await
    .expect("deploy");
}

fn message(bytes: usize, sequence: u64) -> HubMessage {
    let mut body = format!("{sequence}:").into_bytes();
    body.resize(bytes, b'x');
    HubMessage {
        body,
        ..HubMessage::default()
    }
}

/// Fills the file system at `dir` with `filler` up to ENOSPC, then gives
/// back `leave` bytes.
fn fill(filler: &Path, leave: u64) {
    let mut file = std::fs::File::create(filler).expect("filler");
    let chunk = vec![0xa5; 64 * 1024];
    let mut written = 0u64;
    while file.write_all(&chunk).is_ok() {
        written += 64 * 1024;
    }
    drop(file);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(filler)
        .expect("filler");
    file.set_len(written.saturating_sub(leave))
        .expect("shrink the filler");
    file.sync_all().expect("sync the filler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_local_routing_and_recovers_by_itself() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let temporary = tempfile::tempdir().expect("temporary directory");
    let mount = match Tmpfs::mount(&temporary.path().join("disk"), FILE_SYSTEM_BYTES) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!(
                "skipped: a full disk needs a tmpfs mount, and this test cannot mount ({why})"
            );
            return;
        }
    };
    let dir = mount.path().to_owned();
    let reserve = dir.join("hub/store.reserve");
    let hub = open(&dir);
    deploy(&hub).await;
    assert_eq!(
        std::fs::metadata(&reserve).expect("the reserve").len(),
        STORE_LIMIT.min(FILE_SYSTEM_BYTES) / 64
    );
    let filler = dir.join("filler");
    fill(&filler, LEFT_FOR_THE_STORE);

    // The backlog grows until the disk refuses a commit.
    let mut accepted = 0u64;
    let refusal = loop {
        match hub
            .publish(
                "s",
                None,
                message(MESSAGE_BYTES, accepted),
                Qos::AtLeastOnce,
            )
            .await
        {
            Ok(()) => accepted += 1,
            Err(refusal) => break refusal,
        }
        assert!(accepted < 100_000, "the disk never filled up");
    };
    eprintln!("{accepted} upstream messages accepted before: {refusal}");
    assert!(accepted > 100, "only {accepted} messages fit");
    assert!(!reserve.exists(), "the store released its reserve");
    assert_eq!(log.count(DISK_FULL_LOG), 1);

    // Local routing goes on, on the reserve's room.
    let mut inputs = hub.open_inputs("r");
    let local = 300;
    let consumer = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < local {
            let delivery = tokio::time::timeout(Duration::from_secs(10), inputs.next())
                .await
                .expect("a local delivery in time")
                .expect("the stream");
            received.push(String::from_utf8_lossy(&delivery.message.body[..8]).into_owned());
            inputs.ack(delivery.id);
        }
        received
    });
    for sequence in 0..u64::try_from(local).expect("count") {
        hub.publish("l", None, message(1024, sequence), Qos::AtLeastOnce)
            .await
            .expect("a local message is accepted while the disk is full");
    }
    let received = consumer.await.expect("consumer");
    assert_eq!(received.len(), local);
    assert!(received[local - 1].starts_with("299:"), "{received:?}");
    let stats = hub.stats();
    assert_eq!(stats.upstream.depth, accepted, "the backlog is intact");
    assert_eq!(stats.totals.dropped_disk_full, 0);
    assert_eq!(stats.totals.dropped_quota, 0);
    // The full disk was reported once, not per refusal.
    assert_eq!(log.count(DISK_FULL_LOG), 1);
    // An idle hub on a full disk does not spin: once the acknowledgements
    // are flushed (within a second), no commits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let commits = hub.stats().store.commits;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.stats().store.commits, commits);

    // Space returns: the store takes its reserve back by itself and
    // accepts the backlog's growth again.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reserve.exists() {
        assert!(
            Instant::now() < deadline,
            "the store did not take its reserve back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for sequence in 0..50 {
        hub.publish(
            "s",
            None,
            message(MESSAGE_BYTES, accepted + sequence),
            Qos::AtLeastOnce,
        )
        .await
        .expect("accepted once space returned");
    }
    assert_eq!(hub.stats().upstream.depth, accepted + 50);
    drop(hub);

    // The store as the full disk left it is consistent, and opens again
    // with its backlog.
    let violations = edge_hub::store::check_file(&dir.join("hub/store.redb")).expect("check");
    assert!(violations.is_empty(), "{violations:#?}");
    let hub = open(&dir);
    assert_eq!(hub.stats().upstream.depth, accepted + 50);
    assert_eq!(hub.stats().totals.dropped_disk_full, 0);
}
