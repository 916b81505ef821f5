//! Router throughput: 50 routes, property-only conditions and `$body` conditions on 1 KB JSON
//! bodies, single thread. Run with `cargo bench -p edge-route`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use edge_route::{Message, RouteTableEntry, Router};

const ROUTE_COUNT: usize = 50;

fn property_routes() -> Vec<RouteTableEntry> {
    (0..ROUTE_COUNT)
        .map(|index| RouteTableEntry {
            name: format!("property{index:02}"),
            route: format!(
                "FROM /messages/modules/sensor{}/* WHERE level = 'critical' AND $connectionDeviceId = 'device{}' INTO $upstream",
                index % 5,
                index % 7
            ),
            priority: (index % 10) as u8,
            time_to_live_secs: 0,
        })
        .collect()
}

fn body_routes() -> Vec<RouteTableEntry> {
    (0..ROUTE_COUNT)
        .map(|index| RouteTableEntry {
            name: format!("body{index:02}"),
            route: format!(
                "FROM /messages/* WHERE $body.machine.temperature > {} AND $body.ambient.humidity < 80 INTO BrokeredEndpoint(\"/modules/sink{}/inputs/in\")",
                index,
                index % 3
            ),
            priority: (index % 10) as u8,
            time_to_live_secs: 0,
        })
        .collect()
}

fn property_message() -> Message {
    let mut message = Message::new("/messages/modules/sensor2/outputs/alerts");
    message.set_application_property("level", Some("critical".to_owned()));
    message.set_application_property("region", Some("emea".to_owned()));
    message.set_system_property("connectionDeviceId", Some("device3".to_owned()));
    message.set_system_property("messageId", Some("42".to_owned()));
    message
}

fn body_message() -> Message {
    let mut padding = String::new();
    while padding.len() < 880 {
        padding.push_str("lorem ipsum dolor sit amet ");
    }
    let body = format!(
        r#"{{"machine":{{"temperature":21.5,"pressure":1.2}},"ambient":{{"temperature":20.1,"humidity":40}},"timeCreated":"2024-01-01 10:00:00","tags":["a","b","c"],"notes":"{padding}"}}"#
    );
    assert!(
        (1000..1100).contains(&body.len()),
        "body is {} bytes",
        body.len()
    );
    let mut message = Message::new("/messages/modules/sensor1/outputs/telemetry");
    message.set_system_property("contentType", Some("application/json".to_owned()));
    message.set_system_property("contentEncoding", Some("utf-8".to_owned()));
    message.set_body(body.into_bytes());
    message
}

fn measure(label: &str, router: &Router, message: &Message) {
    let mut matches = Vec::with_capacity(ROUTE_COUNT);
    let mut routed = 0usize;
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..1000 {
            matches.clear();
            router.route_into(black_box(message), &mut matches);
            routed += matches.len();
        }
        iterations += 1000;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{label}: {:.0} messages/s ({ROUTE_COUNT} routes, {} matches per message)",
        iterations as f64 / elapsed,
        routed as u64 / iterations
    );
}

fn main() {
    // `cargo bench -p edge-route -- body` runs only the benchmarks whose label contains "body".
    let filter = std::env::args()
        .skip(1)
        .find(|argument| !argument.starts_with('-'));
    let selected = |label: &str| {
        filter
            .as_deref()
            .is_none_or(|filter| label.contains(filter))
    };
    if selected("property-only conditions") {
        let router = Router::new(&property_routes()).expect("property routes compile");
        measure("property-only conditions", &router, &property_message());
    }
    if selected("1 KB JSON body conditions") {
        let router = Router::new(&body_routes()).expect("body routes compile");
        measure("1 KB JSON body conditions", &router, &body_message());
    }
}
