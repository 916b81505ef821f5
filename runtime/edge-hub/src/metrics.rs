//! The hub's counters in the Prometheus text format on `metrics_listen`
//! (`GET /metrics`), under edgeHub's metric names, so IoT Edge's
//! metrics-collector module and dashboards built for edgeHub read them
//! unchanged. Like edgeHub's, every sample carries `iothub`, `edge_device`
//! and `instance_number` (a random id per start, so a restart that resets
//! the counters is visible).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::hub::{EndpointStats, HubStats};

/// The exposition format's content type.
const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The most scrapes served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a scraper may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `edgehub_queue_length` of one endpoint, labelled by priority as edgeHub
/// labels it: a sample per priority with messages queued, or one of 0 at
/// priority 0 (the default) for an empty endpoint, so that every endpoint
/// has a series.
/// The entries `endpoint`'s queue dropped, by reason: `ttl_expiry` as on
/// edgeHub, and the evictions edgeHub does not have (`quota` to stay under
/// `store_limit`, `disk_full` while the disk is full).
fn dropped_samples(text: &mut Exposition, endpoint: &str, queue: &EndpointStats) {
    let name = "edgehub_messages_dropped_total";
    for (reason, count) in [
        ("ttl_expiry", queue.expired),
        ("quota", queue.dropped_quota),
        ("disk_full", queue.dropped_disk_full),
    ] {
        text.sample(name, &[("reason", reason), ("endpoint", endpoint)], count);
    }
}

fn queue_length_samples(text: &mut Exposition, endpoint: &str, queue: &EndpointStats) {
    let name = "edgehub_queue_length";
    if queue.depth == 0 {
        text.sample(name, &[("endpoint", endpoint), ("priority", "0")], 0);
        return;
    }
    for (priority, depth) in queue.by_priority.iter().enumerate() {
        if *depth > 0 {
            let priority = priority.to_string();
            text.sample(
                name,
                &[("endpoint", endpoint), ("priority", &priority)],
                *depth,
            );
        }
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until a restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Builds an exposition text: families with `# HELP` and `# TYPE`, then
/// their samples, each with the common labels first.
pub struct Exposition {
    text: String,
    common: Vec<(String, String)>,
}

impl Exposition {
    /// A text whose every sample carries `common` labels.
    pub fn new(common: &[(&str, &str)]) -> Self {
        Self {
            text: String::new(),
            common: common
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    /// Starts the family `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.text.push('{');
        let all = self
            .common
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(labels.iter().copied());
        for (index, (label, value)) in all.enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{label}=\"{}\"", escape(value));
        }
        let _ = writeln!(self.text, "}} {value}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// Renders the current exposition text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, render: Render) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&render, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn handle<B>(render: &Render, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = if request.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "the metrics are at /metrics\n".to_owned(),
        )
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        (StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned())
    } else {
        (StatusCode::OK, render())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
    response
}

/// Direct method calls by caller and target, for
/// `edgehub_direct_methods_total`.
#[derive(Debug, Default)]
pub struct MethodCounts {
    calls: Mutex<BTreeMap<(String, String), u64>>,
}

impl MethodCounts {
    /// Counts a call from `from` to `to` (`{device}/{module}`, or `edged`
    /// for `edged method invoke`).
    pub fn record(&self, from: &str, to: &str) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.entry((from.to_owned(), to.to_owned())).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Who the samples are about: edgeHub's common labels.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The IoT Hub host name (`iothub`).
    pub iothub: String,
    /// The device id (`edge_device`).
    pub device: String,
    /// A random id of this start (`instance_number`).
    pub instance: String,
}

impl Instance {
    /// The labels of `config`'s device, with a new random instance id.
    pub fn new(iothub: &str, device: &str) -> Self {
        let mut bytes = [0_u8; 16];
        // Without randomness the instance id is only less unique; the
        // counters are still right.
        let _ = getrandom::fill(&mut bytes);
        Self {
            iothub: iothub.to_owned(),
            device: device.to_owned(),
            instance: hex::encode(bytes),
        }
    }
}

/// The exposition text of the hub's counters, under edgeHub's names where
/// edgeHub has the metric (`edgehub_*`) and edged's own for the store
/// (`edged_hub_*`). Module ids are `{device}/{module}` as edgeHub writes
/// them; queues are named by endpoint (`{module}/{input}`, `$upstream`).
pub fn render(stats: &HubStats, methods: &MethodCounts, instance: &Instance) -> String {
    let mut text = Exposition::new(&[
        ("iothub", &instance.iothub),
        ("edge_device", &instance.device),
        ("instance_number", &instance.instance),
    ]);
    let id = |module: &str| format!("{}/{module}", instance.device);

    let name = "edgehub_messages_received_total";
    text.family(
        name,
        Kind::Counter,
        "Total number of messages received from clients",
    );
    for (module, module_stats) in &stats.modules {
        text.sample(name, &[("id", &id(module))], module_stats.messages_in);
    }
    let name = "edgehub_messages_sent_total";
    text.family(
        name,
        Kind::Counter,
        "Total number of messages sent to clients (acknowledged by them)",
    );
    for (module, module_stats) in &stats.modules {
        text.sample(name, &[("to", &id(module))], module_stats.messages_out);
    }
    // edgeHub labels the twin operations a module makes on the hub itself
    // with `source`/`target` "edge_hub" (its cloud proxy counts its own
    // calls to IoT Hub under "upstream"); every twin operation here is the
    // hub's own.
    let name = "edgehub_gettwin_total";
    text.family(name, Kind::Counter, "Total number of GetTwin calls");
    for (module, module_stats) in &stats.modules {
        text.sample(
            name,
            &[("source", "edge_hub"), ("id", &id(module))],
            module_stats.twin_gets,
        );
    }
    let name = "edgehub_reported_properties_total";
    text.family(name, Kind::Counter, "Total reported property updates calls");
    for (module, module_stats) in &stats.modules {
        text.sample(
            name,
            &[("target", "edge_hub"), ("id", &id(module))],
            module_stats.reported_patches,
        );
    }
    let name = "edgehub_queue_length";
    text.family(
        name,
        Kind::Gauge,
        "Current length of the hub's queue for an endpoint",
    );
    for module_stats in stats.modules.values() {
        for (endpoint, queue) in &module_stats.queues {
            queue_length_samples(&mut text, endpoint, queue);
        }
    }
    queue_length_samples(&mut text, "$upstream", &stats.upstream);
    let name = "edgehub_messages_dropped_total";
    text.family(
        name,
        Kind::Counter,
        "Total number of messages removed because of reason",
    );
    for module_stats in stats.modules.values() {
        for (endpoint, queue) in &module_stats.queues {
            dropped_samples(&mut text, endpoint, queue);
        }
    }
    dropped_samples(&mut text, "$upstream", &stats.upstream);
    for (module, module_stats) in &stats.modules {
        text.sample(
            name,
            &[("reason", "store_full"), ("from", &id(module))],
            module_stats.dropped_store_full,
        );
    }
    let name = "edgehub_messages_unack_total";
    text.family(
        name,
        Kind::Counter,
        "Total number of QoS 1 messages not acknowledged because the store is full",
    );
    for (module, module_stats) in &stats.modules {
        text.sample(
            name,
            &[("reason", "store_full"), ("from", &id(module))],
            module_stats.refused_store_full,
        );
    }
    let name = "edgehub_connected_clients";
    text.family(
        name,
        Kind::Gauge,
        "Current number of connected clients to edge hub",
    );
    let connected = stats
        .modules
        .values()
        .filter(|module| module.connected)
        .count();
    text.sample(name, &[], u64::try_from(connected).unwrap_or(u64::MAX));
    let name = "edgehub_direct_methods_total";
    text.family(name, Kind::Counter, "Total number of direct methods sent");
    for ((from, to), count) in methods.snapshot() {
        text.sample(name, &[("from", &from), ("to", &to)], count);
    }
    let name = "edged_hub_store_bytes";
    text.family(
        name,
        Kind::Gauge,
        "Bytes the store holds, counted against its limit",
    );
    text.sample(name, &[], stats.store.stored_bytes);
    let name = "edged_hub_store_limit_bytes";
    text.family(name, Kind::Gauge, "The store's size limit");
    text.sample(name, &[], stats.store.limit_bytes);
    let name = "edged_hub_store_commits_total";
    text.family(
        name,
        Kind::Counter,
        "Store transactions committed, by whether they were fsynced",
    );
    text.sample(name, &[("durable", "true")], stats.store.durable_commits);
    text.sample(
        name,
        &[("durable", "false")],
        stats
            .store
            .commits
            .saturating_sub(stats.store.durable_commits),
    );
    text.finish()
}

/// Checks that `text` follows the exposition grammar: comment lines are
/// `# HELP name text` or `# TYPE name counter|gauge`, sample lines
/// `name{label="value",…} number` with valid names and escapes, and every
/// sample belongs to the family declared before it. Returns the first bad
/// line. Used by the tests here and by edged's.
pub fn check_exposition(text: &str) -> Result<(), String> {
    let mut family: Option<&str> = None;
    for line in text.lines() {
        let bad = || Err(format!("not exposition format: {line:?}"));
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) if is_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some("counter" | "gauge")) if is_metric_name(name) => {
                    family = Some(name);
                }
                _ => return bad(),
            }
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            return bad();
        };
        if !is_metric_name(name) || family != Some(name) {
            return bad();
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            return bad();
        };
        if value.parse::<f64>().is_err() || !labels_are_valid(labels) {
            return bad();
        }
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn labels_are_valid(labels: &str) -> bool {
    let mut rest = labels;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_metric_name(name) || name.contains(':') {
            return false;
        }
        // The value runs to the first unescaped quote.
        let mut escaped = false;
        let mut end = None;
        for (index, character) in after.char_indices() {
            match (escaped, character) {
                (true, '\\' | '"' | 'n') => escaped = false,
                (true, _) => return false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(index);
                    break;
                }
                (false, '\n') => return false,
                (false, _) => {}
            }
        }
        let Some(end) = end else {
            return false;
        };
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expositions_follow_the_grammar_and_escape_values() {
        let mut text = Exposition::new(&[("iothub", "hub.example"), ("edge_device", "dev1")]);
        text.family(
            "edgehub_messages_received_total",
            Kind::Counter,
            "Messages received",
        );
        text.sample(
            "edgehub_messages_received_total",
            &[("id", "dev1/sensor"), ("route_output", "out \"1\"\\\n")],
            7,
        );
        text.family(
            "edgehub_connected_clients",
            Kind::Gauge,
            "Connected clients",
        );
        text.sample("edgehub_connected_clients", &[], 2);
        let text = text.finish();
        check_exposition(&text).expect("valid");
        assert!(text.contains(
            "edgehub_messages_received_total{iothub=\"hub.example\",edge_device=\"dev1\",id=\"dev1/sensor\",route_output=\"out \\\"1\\\"\\\\\\n\"} 7\n"
        ), "{text}");
        assert!(text.contains("# TYPE edgehub_connected_clients gauge\n"));
    }

    #[test]
    fn hub_counters_render_under_edgehub_names() {
        use crate::hub::{EndpointStats, ModuleStats};
        let mut stats = HubStats::default();
        stats.modules.insert(
            "filter".to_owned(),
            ModuleStats {
                connected: true,
                messages_in: 3,
                messages_out: 5,
                refused_store_full: 2,
                dropped_store_full: 1,
                twin_gets: 11,
                reported_patches: 12,
                queues: [(
                    "filter/in".to_owned(),
                    EndpointStats {
                        depth: 4,
                        expired: 6,
                        dropped_quota: 7,
                        dropped_disk_full: 0,
                        by_priority: [1, 0, 3, 0, 0, 0, 0, 0, 0, 0],
                    },
                )]
                .into(),
            },
        );
        stats.upstream = EndpointStats {
            depth: 0,
            expired: 8,
            dropped_quota: 0,
            dropped_disk_full: 13,
            by_priority: [0; 10],
        };
        stats.store.commits = 10;
        stats.store.durable_commits = 9;
        let methods = MethodCounts::default();
        methods.record("dev1/sensor", "dev1/filter");
        methods.record("dev1/sensor", "dev1/filter");
        let instance = Instance {
            iothub: "hub".to_owned(),
            device: "dev1".to_owned(),
            instance: "i1".to_owned(),
        };
        let text = render(&stats, &methods, &instance);
        check_exposition(&text).expect("valid");
        let common = "iothub=\"hub\",edge_device=\"dev1\",instance_number=\"i1\"";
        for line in [
            format!("edgehub_messages_received_total{{{common},id=\"dev1/filter\"}} 3"),
            format!("edgehub_messages_sent_total{{{common},to=\"dev1/filter\"}} 5"),
            format!("edgehub_gettwin_total{{{common},source=\"edge_hub\",id=\"dev1/filter\"}} 11"),
            format!(
                "edgehub_reported_properties_total{{{common},target=\"edge_hub\",id=\"dev1/filter\"}} 12"
            ),
            format!("edgehub_queue_length{{{common},endpoint=\"filter/in\",priority=\"0\"}} 1"),
            format!("edgehub_queue_length{{{common},endpoint=\"filter/in\",priority=\"2\"}} 3"),
            format!("edgehub_queue_length{{{common},endpoint=\"$upstream\",priority=\"0\"}} 0"),
            format!(
                "edgehub_messages_dropped_total{{{common},reason=\"ttl_expiry\",endpoint=\"filter/in\"}} 6"
            ),
            format!(
                "edgehub_messages_dropped_total{{{common},reason=\"quota\",endpoint=\"filter/in\"}} 7"
            ),
            format!(
                "edgehub_messages_dropped_total{{{common},reason=\"disk_full\",endpoint=\"$upstream\"}} 13"
            ),
            format!(
                "edgehub_messages_dropped_total{{{common},reason=\"store_full\",from=\"dev1/filter\"}} 1"
            ),
            format!(
                "edgehub_messages_unack_total{{{common},reason=\"store_full\",from=\"dev1/filter\"}} 2"
            ),
            format!("edgehub_connected_clients{{{common}}} 1"),
            format!(
                "edgehub_direct_methods_total{{{common},from=\"dev1/sensor\",to=\"dev1/filter\"}} 2"
            ),
            format!("edged_hub_store_commits_total{{{common},durable=\"false\"}} 1"),
        ] {
            assert!(text.lines().any(|found| found == line), "{line}\n{text}");
        }
    }

    #[test]
    fn the_checker_finds_bad_lines() {
        for bad in [
            "# TYPE x summary",
            "x{} 1",
            "# TYPE x counter\ny{} 1",
            "# TYPE x counter\nx{a=\"1\"} one",
            "# TYPE x counter\nx{a=\"1} 1",
            "# TYPE x counter\nx{1a=\"1\"} 1",
            "# TYPE x counter\nx{a=\"\\q\"} 1",
            "# TYPE x counter\nx{a=\"1\"b=\"2\"} 1",
            "# TYPE 9x counter",
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?}");
        }
        check_exposition("# TYPE x counter\nx{a=\"1\",b=\"\"} 1\nx{} 0").expect("valid");
    }
}
