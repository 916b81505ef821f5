//! The router resolves each distinct body path once per message and shares the result between
//! routes; these tests check that sharing never changes what a route decides.

use edge_route::conformance::{
    CorpusCase, corpus_message_to_message, evaluate_condition, parse_corpus,
};
use edge_route::{Message, RouteTableEntry, Router, Truth};

fn entry(name: &str, route: String) -> RouteTableEntry {
    RouteTableEntry {
        name: name.to_owned(),
        route,
        priority: 0,
        time_to_live_secs: 0,
    }
}

fn json_message(source: &str, body: &str) -> Message {
    let mut message = Message::new(source);
    message.set_system_property("contentType", Some("application/json".to_owned()));
    message.set_system_property("contentEncoding", Some("utf-8".to_owned()));
    message.set_body(body.as_bytes().to_vec());
    message
}

fn matched_names(router: &Router, message: &Message) -> Vec<String> {
    let mut names: Vec<String> = router
        .route(message)
        .iter()
        .map(|matched| matched.name.to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_table_of_every_body_corpus_condition_decides_each_as_it_does_alone() {
    let path = format!(
        "{}/../../testdata/conformance/route-body-queries.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"));
    let corpus = parse_corpus(&text).expect("corpus parses");
    let message = corpus_message_to_message(corpus.message.as_ref().expect("corpus message"));
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    for (index, case) in corpus.cases.iter().enumerate() {
        let CorpusCase::Condition { condition, .. } = case else {
            continue;
        };
        let Ok(alone) = evaluate_condition(condition, &message) else {
            continue;
        };
        let name = format!("case{index:03}");
        if alone == Truth::True {
            expected.push(name.clone());
        }
        entries.push(entry(
            &name,
            format!("FROM /messages WHERE {condition} INTO $upstream"),
        ));
    }
    let router = Router::new(&entries).expect("every compiling condition makes a route");
    assert!(expected.len() > 50, "only {} true cases", expected.len());
    assert_eq!(matched_names(&router, &message), expected);
}

#[test]
fn paths_past_the_memoized_count_are_still_read() {
    let field_count = 70;
    let entries: Vec<RouteTableEntry> = (0..field_count)
        .map(|index| {
            entry(
                &format!("field{index:02}"),
                format!("FROM /messages/* WHERE $body.field{index} = {index} INTO $upstream"),
            )
        })
        .collect();
    let router = Router::new(&entries).expect("routes compile");
    let members: Vec<String> = (0..field_count)
        .map(|index| {
            let value = if index == 68 { 1000 } else { index };
            format!("\"field{index}\": {value}")
        })
        .collect();
    let body = format!("{{{}}}", members.join(", "));
    let names = matched_names(
        &router,
        &json_message("/messages/modules/m/outputs/o", &body),
    );
    assert_eq!(names.len(), field_count - 1);
    assert!(!names.contains(&"field68".to_owned()));
    assert!(names.contains(&"field69".to_owned()));
}

#[test]
fn member_names_that_differ_only_in_case_are_different_paths() {
    let router = Router::new(&[
        entry(
            "upper",
            "FROM /messages/* WHERE $body.Reading.Value = 1 INTO $upstream".to_owned(),
        ),
        entry(
            "lower",
            "FROM /messages/* WHERE $body.reading.value = 2 INTO $upstream".to_owned(),
        ),
        entry(
            "again",
            "FROM /messages/* WHERE $body.Reading.Value < 2 INTO $upstream".to_owned(),
        ),
    ])
    .expect("routes compile");
    let message = json_message(
        "/messages/modules/m/outputs/o",
        r#"{"Reading": {"Value": 1}, "reading": {"value": 2}}"#,
    );
    assert_eq!(
        matched_names(&router, &message),
        ["again", "lower", "upper"]
    );
}

#[test]
fn twin_change_includes_and_body_reads_share_a_path_without_confusing_null_and_missing() {
    let router = Router::new(&[
        entry(
            "includes",
            "FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.mode) INTO $upstream"
                .to_owned(),
        ),
        entry(
            "null",
            "FROM /twinChangeNotifications WHERE $body.properties.reported.mode = null INTO $upstream"
                .to_owned(),
        ),
    ])
    .expect("routes compile");
    let present = json_message(
        "/twinChangeNotifications",
        r#"{"properties": {"reported": {"mode": null}}}"#,
    );
    assert_eq!(matched_names(&router, &present), ["includes", "null"]);
    let missing = json_message(
        "/twinChangeNotifications",
        r#"{"properties": {"reported": {}}}"#,
    );
    assert_eq!(matched_names(&router, &missing), ["null"]);
}

#[test]
fn an_application_property_still_shadows_a_shared_body_path() {
    let router = Router::new(&[
        entry(
            "shadowed",
            "FROM /messages/* WHERE $body.level = 'high' INTO $upstream".to_owned(),
        ),
        entry(
            "escaped",
            "FROM /messages/* WHERE {$body.level} = 'low' INTO $upstream".to_owned(),
        ),
    ])
    .expect("routes compile");
    let mut message = json_message("/messages/modules/m/outputs/o", r#"{"level": "low"}"#);
    assert_eq!(matched_names(&router, &message), ["escaped"]);
    message.set_application_property("$body.level", Some("high".to_owned()));
    assert_eq!(matched_names(&router, &message), ["escaped", "shadowed"]);
}
