//! `edged status`: the device's state as the typed document
//! [`edge_init::status::StatusReport`] (IoT Edge's reported-properties
//! shape), which the OS image's init reads back through the same type.

use edge_bundle::display::escaped_message;
use edge_init::status::{
    DeploymentReport, HubReport, InstalledReport, ModuleReport, ModuleSettings, PullReport,
    SCHEMA_VERSION, StatusReport, SupervisionFailure, TransactionPhase, TransactionReport,
    UpdateReport, UpdateResult, UpstreamReport,
};

use crate::runtime::{Loaded, ModuleStatus};
use crate::state::{self, Installed, Phase, State};

/// Builds the status document from the state record, the active deployment
/// (or why it cannot be loaded), its modules' states and the daemon's
/// supervision failure, if any.
pub fn report(
    state: &State,
    active: std::result::Result<Option<&Loaded>, String>,
    modules: &[(String, ModuleStatus)],
    supervision: Option<SupervisionFailure>,
) -> StatusReport {
    let (active, unusable) = match active {
        Ok(active) => (active, None),
        Err(why) => (None, Some(why)),
    };
    let installed = state.active.as_ref();
    StatusReport {
        schema_version: SCHEMA_VERSION.to_owned(),
        last_desired_status: edge_init::status::DesiredStatus {
            code: state.last_desired_status.code,
            description: state.last_desired_status.description.clone(),
        },
        last_desired_version: installed.map(|active| active.version),
        deployment: DeploymentReport {
            name: installed.map(|active| active.deployment.clone()),
            version: installed.map(|active| active.version),
            slot: installed.map(|active| active.slot.name().to_owned()),
            manifest_digest: installed.map(|active| active.manifest_digest.clone()),
            committed_version: state.committed_version,
            transaction: state.transaction.as_ref().map(transaction_report),
            unusable,
            expires: active.and_then(|loaded| loaded.manifest.expires.clone()),
            expired: active
                .and_then(|loaded| loaded.manifest.expires_at())
                .is_some_and(|expires| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .is_ok_and(|now| now.as_secs() >= expires)
                }),
        },
        modules: modules
            .iter()
            .filter_map(|(name, status)| {
                let spec = active?.modules.iter().find(|module| &module.name == name)?;
                let report = ModuleReport {
                    runtime_status: status.runtime_status.clone(),
                    exit_code: status.exit_code,
                    restart_count: status.restart_count,
                    last_start_time_utc: status.last_start_time_utc.clone(),
                    last_exit_time_utc: status.last_exit_time_utc.clone(),
                    health: status.health.clone(),
                    version: spec.version.clone(),
                    status: if spec.running { "running" } else { "stopped" }.to_owned(),
                    restart_policy: spec.restart.as_str().to_owned(),
                    settings: ModuleSettings {
                        image: spec.image.clone(),
                    },
                };
                Some((name.clone(), report))
            })
            .collect(),
        supervision,
        hub: None,
        pull: None,
        update: None,
    }
}

fn transaction_report(transaction: &state::Transaction) -> TransactionReport {
    TransactionReport {
        phase: match transaction.phase {
            Phase::Trial => TransactionPhase::Trial,
            Phase::RollingBack => TransactionPhase::RollingBack,
        },
        target: installed_report(&transaction.target),
        previous: transaction.previous.as_ref().map(installed_report),
        reason: transaction.reason.clone(),
    }
}

fn installed_report(installed: &Installed) -> InstalledReport {
    InstalledReport {
        slot: installed.slot.name().to_owned(),
        deployment: installed.deployment.clone(),
        version: installed.version,
        manifest_digest: installed.manifest_digest.clone(),
    }
}

/// The same document for people.
pub fn human(report: &StatusReport) -> String {
    let mut text = String::new();
    let deployment = &report.deployment;
    match deployment.version {
        Some(version) => text.push_str(&format!(
            "deployment {} version {version} (slot {}), committed version {}\n",
            escaped_message(deployment.name.as_deref().unwrap_or("?")),
            deployment.slot.as_deref().unwrap_or("?"),
            deployment.committed_version
        )),
        None => text.push_str("no deployment installed\n"),
    }
    if let Some(why) = &deployment.unusable {
        text.push_str(&format!(
            "the active deployment is unusable: {}\n",
            escaped_message(why)
        ));
    }
    if let Some(expires) = &deployment.expires {
        if deployment.expired {
            text.push_str(&format!(
                "signed expiry {} has passed: it keeps running, but a newer bundle must replace it\n",
                escaped_message(expires)
            ));
        } else {
            text.push_str(&format!("signed expiry {}\n", escaped_message(expires)));
        }
    }
    if let Some(transaction) = &deployment.transaction {
        text.push_str(&format!(
            "transaction: {} of version {} in progress\n",
            transaction.phase.as_str(),
            transaction.target.version
        ));
    }
    text.push_str(&format!(
        "last change: {} {}\n",
        report.last_desired_status.code,
        escaped_message(&report.last_desired_status.description)
    ));
    if let Some(failure) = &report.supervision {
        text.push_str(&format!(
            "supervision failing since {} ({} passes in a row): {}\n",
            failure.since,
            failure.consecutive_failures,
            escaped_message(&failure.last_error)
        ));
    }
    if let Some(pull) = &report.pull {
        text.push_str(&pull_human(pull));
    }
    for (name, module) in &report.modules {
        text.push_str(&format!(
            "  {:<20} {:<8} exit {} restarts {}\n",
            escaped_message(name),
            escaped_message(&module.runtime_status),
            module.exit_code,
            module.restart_count
        ));
    }
    if let Some(hub) = &report.hub {
        text.push_str(&hub_human(hub));
    }
    if let Some(update) = &report.update {
        text.push_str(&update_human(update));
    }
    text
}

/// The registry poller's record for people: what it polls, the last poll's outcome and when
/// the next one is due.
fn update_human(update: &UpdateReport) -> String {
    let mut text = format!("update: {}\n", escaped_message(&update.reference));
    let Some(checked) = &update.last_check else {
        text.push_str("  not polled yet\n");
        return text;
    };
    let result = match &update.last_result {
        Some(UpdateResult::UpToDate { version }) => format!("up to date (version {version})"),
        Some(UpdateResult::Fetched { version }) => format!("fetched version {version}"),
        Some(UpdateResult::Refused { reason }) => format!("refused: {}", escaped_message(reason)),
        Some(UpdateResult::Failed { step, error }) => {
            format!("failed at {}: {}", step.as_str(), escaped_message(error))
        }
        None => "no result".to_owned(),
    };
    text.push_str(&format!("  last check {checked}: {result}\n"));
    if let Some(digest) = &update.last_manifest_digest {
        text.push_str(&format!("  last seen {}\n", escaped_message(digest)));
    }
    if let Some(next) = &update.next_check {
        text.push_str(&format!("  next check {next}\n"));
    }
    text
}

/// A pull in progress for people: the deployment, how fresh the record is,
/// and a line per module with its bytes.
fn pull_human(pull: &PullReport) -> String {
    let mut text = format!(
        "pulling the images of deployment {} version {} (since {}, progress recorded {}s ago)\n",
        escaped_message(&pull.deployment),
        pull.version,
        pull.started,
        pull.age_seconds
    );
    for (name, module) in &pull.modules {
        let state = if module.done {
            "present".to_owned()
        } else {
            format!("{} of {} bytes", module.current_bytes, module.total_bytes)
        };
        text.push_str(&format!(
            "  {:<20} {state} ({})\n",
            escaped_message(name),
            escaped_message(&module.reference)
        ));
    }
    text
}

/// The hub's part of the status for people: one line per module with its
/// connection and counters, then its queues and reported properties; last,
/// the endpoints the store dropped messages from, by reason.
fn hub_human(hub: &HubReport) -> String {
    if !hub.running {
        return "hub: not running (no `edged run` answers on its control socket)\n".to_owned();
    }
    let mut text = format!("hub: running, queue $upstream {}\n", hub.upstream_queue);
    if let Some(upstream) = &hub.upstream {
        text.push_str(&upstream_human(upstream));
    }
    for (name, module) in &hub.modules {
        text.push_str(&format!(
            "  {:<20} {:<13} in {} out {}\n",
            escaped_message(name),
            if module.connected {
                "connected"
            } else {
                "not connected"
            },
            module.messages_in,
            module.messages_out
        ));
        for (endpoint, depth) in &module.queues {
            text.push_str(&format!(
                "    queue {} {depth}\n",
                escaped_message(endpoint)
            ));
        }
        if module
            .reported
            .as_object()
            .is_some_and(|reported| reported.keys().any(|key| key != "$version"))
        {
            text.push_str(&format!(
                "    reported {}\n",
                escaped_message(&module.reported.to_string())
            ));
        }
    }
    for (endpoint, dropped) in &hub.dropped {
        text.push_str(&format!(
            "  dropped from {}: expired {}, quota {}, disk_full {}\n",
            escaped_message(endpoint),
            dropped.expired,
            dropped.quota,
            dropped.disk_full
        ));
    }
    text
}

/// The cloud connection for people: its state, its counters, and the last
/// failure with its step, which says what to fix.
fn upstream_human(upstream: &UpstreamReport) -> String {
    let endpoint = escaped_message(&upstream.endpoint);
    let state = match (upstream.state.as_str(), &upstream.since) {
        ("connected", Some(since)) => format!("connected since {since}"),
        ("waiting", Some(until)) => format!(
            "not connected, {} failed attempt(s), next at {until}",
            upstream.failures
        ),
        (state, _) => escaped_message(state),
    };
    let mut text = format!(
        "upstream {endpoint}: {state}; sent {} acknowledged {} resent {} in flight {}/{}\n",
        upstream.messages_sent,
        upstream.messages_acknowledged,
        upstream.messages_resent,
        upstream.in_flight,
        upstream.window
    );
    if let Some(error) = &upstream.last_error {
        text.push_str(&format!(
            "  last error {} ({}): {}\n",
            error.at,
            escaped_message(&error.step),
            escaped_message(&error.message)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DesiredStatus, Slot, Transaction};

    fn installed(slot: Slot, version: u64) -> Installed {
        Installed {
            slot,
            deployment: "plant".to_owned(),
            version,
            manifest_digest: "ab".repeat(32),
        }
    }

    #[test]
    fn the_report_round_trips_and_keeps_iot_edge_names() {
        let state = State {
            format: 1,
            active: Some(installed(Slot::B, 2)),
            committed_version: 1,
            transaction: Some(Transaction {
                phase: Phase::Trial,
                target: installed(Slot::B, 2),
                previous: Some(installed(Slot::A, 1)),
                reason: None,
            }),
            last_desired_status: DesiredStatus {
                code: 417,
                description: "trying deployment version 2".to_owned(),
            },
            rolled_back: None,
        };
        let failure = SupervisionFailure {
            last_error: "container engine: connection refused".to_owned(),
            since: "2026-01-01T00:00:00Z".to_owned(),
            consecutive_failures: 3,
        };
        let report = report(&state, Ok(None), &[], Some(failure));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schemaVersion"], "1.1");
        assert_eq!(json["lastDesiredStatus"]["code"], 417);
        assert_eq!(json["lastDesiredVersion"], 2);
        assert_eq!(json["deployment"]["slot"], "b");
        assert_eq!(json["deployment"]["committedVersion"], 1);
        assert_eq!(json["deployment"]["transaction"]["phase"], "trial");
        assert_eq!(
            json["deployment"]["transaction"]["previous"]["manifestDigest"],
            "ab".repeat(32)
        );
        assert_eq!(json["supervision"]["consecutiveFailures"], 3);
        let parsed = StatusReport::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, report);
        assert!(human(&report).contains("transaction: trial of version 2 in progress"));
        assert!(human(&report).contains("supervision failing since 2026-01-01T00:00:00Z"));
    }

    #[test]
    fn the_hub_part_shows_connections_queues_and_reported_properties() {
        let mut modules = std::collections::BTreeMap::new();
        modules.insert(
            "sink".to_owned(),
            edge_init::status::HubModuleReport {
                connected: true,
                messages_in: 0,
                messages_out: 7,
                queues: [("sink/input1".to_owned(), 3)].into(),
                reported: serde_json::json!({"state": "ok", "$version": 2}),
            },
        );
        let running = hub_human(&HubReport {
            running: true,
            modules,
            upstream_queue: 5,
            upstream: Some(UpstreamReport {
                endpoint: "myhub.azure-devices.net:8883".to_owned(),
                state: "waiting".to_owned(),
                since: Some("2026-12-01T18:00:05Z".to_owned()),
                failures: 3,
                last_error: Some(edge_init::status::UpstreamFailure {
                    at: "2026-12-01T18:00:04Z".to_owned(),
                    step: "tls".to_owned(),
                    message: "TLS handshake: invalid peer certificate\u{1b}[2J".to_owned(),
                }),
                connections: 2,
                messages_sent: 120,
                messages_acknowledged: 100,
                messages_resent: 20,
                in_flight: 0,
                window: 1024,
            }),
            dropped: [(
                "$upstream".to_owned(),
                edge_init::status::HubDropped {
                    expired: 2,
                    quota: 9,
                    disk_full: 0,
                },
            )]
            .into(),
        });
        assert!(
            running.contains(
                "upstream myhub.azure-devices.net:8883: not connected, 3 failed attempt(s), next at 2026-12-01T18:00:05Z; sent 120 acknowledged 100 resent 20 in flight 0/1024\n  last error 2026-12-01T18:00:04Z (tls): TLS handshake: invalid peer certificate\\u{1b}[2J\n"
            ),
            "{running}"
        );
        assert!(
            running.starts_with("hub: running, queue $upstream 5\n"),
            "{running}"
        );
        assert!(
            running.contains("sink                 connected     in 0 out 7"),
            "{running}"
        );
        assert!(running.contains("queue sink/input1 3"), "{running}");
        assert!(
            running.ends_with("  dropped from $upstream: expired 2, quota 9, disk_full 0\n"),
            "{running}"
        );
        assert!(
            running.contains(r#"reported {"state":"ok","$version":2}"#),
            "{running}"
        );
        let stopped = hub_human(&HubReport {
            running: false,
            modules: Default::default(),
            upstream_queue: 0,
            upstream: None,
            dropped: Default::default(),
        });
        assert!(stopped.starts_with("hub: not running"), "{stopped}");
    }
}
