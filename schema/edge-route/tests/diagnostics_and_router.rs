//! Error spans, nesting limits, route structure, schema checks and router ordering.

use std::collections::BTreeMap;

use edge_route::{
    BodySchema, Message, RouteErrorKind, RouteTableEntry, Router, Severity, Sink, SourceKind,
    SourceSchema, check_route, compile_route, describe, parse_condition, parse_route,
};
use proptest::prelude::*;

fn first_error(route: &str) -> edge_route::RouteError {
    compile_route("r", route, 0, 0)
        .expect_err("route must fail")
        .remove(0)
}

#[test]
fn type_errors_point_at_the_operator_and_operand() {
    let route = "FROM /messages WHERE 'a' + 'b' = 'ab' INTO $upstream";
    let error = first_error(route);
    assert_eq!(error.code(), "R0014");
    assert_eq!(&route[error.span.clone()], "+");
    assert_eq!(
        &route[error.secondary_span.clone().expect("operand span")],
        "'a'"
    );
    assert!(describe::message(&error).contains("'+'"));
}

#[test]
fn unknown_functions_suggest_the_closest_builtin() {
    let route = "FROM /messages WHERE uper(a) = 'A' INTO $upstream";
    let error = first_error(route);
    assert_eq!(&route[error.span.clone()], "uper");
    assert_eq!(
        describe::help(&error).as_deref(),
        Some("did you mean 'upper'?")
    );
}

#[test]
fn text_after_the_sink_is_an_error() {
    let error = first_error("FROM /messages INTO $upstream extra");
    assert_eq!(error.code(), "R0008");
}

#[test]
fn deep_nesting_is_a_diagnostic_not_a_stack_overflow() {
    let condition = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    let error = parse_condition(&condition).expect_err("too deep");
    assert!(matches!(*error.kind, RouteErrorKind::NestingTooDeep { .. }));
    let chain = vec!["true"; 5_000].join(" OR ");
    assert!(parse_condition(&chain).is_err());
}

#[test]
fn route_structure_is_exposed_with_spans() {
    let text = "SELECT * FROM /messages/modules/filter/outputs/alerts WHERE true INTO brokeredendpoint('/modules/sink/inputs/in1')";
    let route = parse_route(text).expect("valid route");
    assert_eq!(
        route.source.path.kind,
        SourceKind::ModuleOutput {
            module: Some("filter".to_owned()),
            output: Some("alerts".to_owned())
        }
    );
    assert_eq!(
        &text[route.source.span.clone()],
        "/messages/modules/filter/outputs/alerts"
    );
    assert_eq!(
        route.sink.sink,
        Sink::ModuleInput {
            module: "sink".to_owned(),
            input: "in1".to_owned()
        }
    );
    assert!(parse_route("from /messages into $UPSTREAM").is_ok());
    assert!(parse_route("FROM /messages INTO BrokeredEndpoint(\"/modules/x\")").is_err());
}

#[test]
fn schema_checks_report_unknown_fields_and_impossible_comparisons() {
    let schema = SourceSchema {
        is_json: true,
        body: Some(BodySchema::Object(BTreeMap::from([
            ("temperature".to_owned(), BodySchema::Number),
            ("site".to_owned(), BodySchema::String),
        ]))),
    };
    let text = "FROM /messages WHERE $body.temprature > 3 AND $body.temperature = '5' AND $body.temperature > limit INTO $upstream";
    let route = parse_route(text).expect("valid route");
    let diagnostics = check_route(&route, Some(&schema));
    let codes: Vec<&str> = diagnostics
        .iter()
        .map(|diagnostic| diagnostic.code())
        .collect();
    assert_eq!(codes, ["R0101", "R0103", "R0104"]);
    match &*diagnostics[0].kind {
        RouteErrorKind::UnknownBodyField { closest, .. } => {
            assert_eq!(closest.as_deref(), Some("temperature"))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(diagnostics[2].severity, Severity::Warning);
    let not_json = SourceSchema {
        is_json: false,
        body: None,
    };
    let warnings = check_route(&route, Some(&not_json));
    assert!(
        warnings
            .iter()
            .all(|warning| warning.code() == "R0105" && warning.severity == Severity::Warning)
    );
}

#[test]
fn router_orders_matches_by_priority_then_name_and_survives_bad_bodies() {
    let entry = |name: &str, route: &str, priority| RouteTableEntry {
        name: name.to_owned(),
        route: route.to_owned(),
        priority,
        time_to_live_secs: 60,
    };
    let router = Router::new(&[
        entry("b", "FROM /messages INTO $upstream", 1),
        entry("a", "FROM /messages WHERE level = 'hot' INTO $upstream", 1),
        entry("c", "FROM /* WHERE $body.x = 1 INTO $upstream", 0),
        entry("d", "FROM /twinChangeNotifications INTO $upstream", 0),
    ])
    .expect("routes compile");
    let mut message = Message::new("/messages/modules/m/outputs/o");
    message.set_application_property("Level", Some("hot".to_owned()));
    message.set_system_property("contentType", Some("application/json".to_owned()));
    message.set_system_property("contentEncoding", Some("utf-8".to_owned()));
    message.set_body(b"{\"x\": 1".to_vec());
    let names: Vec<&str> = router
        .route(&message)
        .iter()
        .map(|matched| matched.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    message.set_body(b"{\"x\": 1}".to_vec());
    let names: Vec<&str> = router
        .route(&message)
        .iter()
        .map(|matched| matched.name)
        .collect();
    assert_eq!(names, ["c", "a", "b"]);
    let json =
        serde_json::to_string(&entry("a", "FROM /messages INTO $upstream", 2)).expect("serializes");
    assert_eq!(
        serde_json::from_str::<RouteTableEntry>(&json)
            .expect("deserializes")
            .priority,
        2
    );
}

proptest! {
    #[test]
    fn arbitrary_condition_text_never_panics(text in "\\PC{0,64}") {
        let _ = compile_route("r", &format!("FROM /messages WHERE {text} INTO $upstream"), 0, 0);
        if let Ok(condition) = parse_condition(&text) {
            let _ = edge_route::compile_condition(&condition, &SourceKind::All);
        }
    }

    #[test]
    fn operator_soup_never_panics(text in "[()a-z0-9'\" +*/%<>=!|?${}.\\[\\],-]{0,48}") {
        let _ = edge_route::conformance::evaluate_condition(&text, &Message::new("/messages"));
    }
}
