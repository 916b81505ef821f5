//! `edgec import`: every manifest of `testdata/conformance/manifests/` and of `tests/import-fixtures/` is imported,
//! checked and built again, and the rebuilt manifest must equal the original semantically. Bad
//! input must fail with exit status 2 and leave no output file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value as Json, json};

/// Runs the built `edgec` in `directory` with extra environment variables, without colour.
fn edgec(directory: &Path, arguments: &[&str], environment: &BTreeMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgec"))
        .args(arguments)
        .current_dir(directory)
        .env("NO_COLOR", "1")
        .envs(environment)
        .output()
        .expect("run edgec")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a scratch directory")
}

fn manifests_in(directory: &Path) -> Vec<PathBuf> {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("read {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    manifests.sort();
    manifests
}

fn conformance_manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance/manifests")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/import-fixtures")
}

// ---------------------------------------------------------------------------------------------
// Placeholders, as the importer's contract defines them: `${NAME}`, `$NAME` and `<Name>`, each
// becoming the parameter (or credential variable) named with every character other than
// letters, digits and `_` replaced by `_`.

/// The placeholders in `text` as (byte range, raw name).
fn placeholders(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let bytes = text.as_bytes();
    let name_end = |from: usize, dotted: bool| {
        let mut end = from;
        while end < bytes.len() {
            let byte = bytes[end];
            let allowed = byte.is_ascii_alphanumeric()
                || byte == b'_'
                || (dotted && end > from && (byte == b'.' || byte == b'-'));
            if !allowed || (end == from && byte.is_ascii_digit()) {
                break;
            }
            end += 1;
        }
        end
    };
    let mut found = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let (open, dotted, close) = match bytes[position] {
            b'$' if bytes.get(position + 1) == Some(&b'{') => (2, true, Some(b'}')),
            b'$' => (1, false, None),
            b'<' => (1, true, Some(b'>')),
            _ => {
                position += 1;
                continue;
            }
        };
        let start = position + open;
        let end = name_end(start, dotted);
        let closed = match close {
            Some(close) => bytes.get(end) == Some(&close),
            None => true,
        };
        if end > start && closed {
            let after = end + usize::from(close.is_some());
            found.push((position..after, text[start..end].to_owned()));
            position = after;
        } else {
            position += 1;
        }
    }
    found
}

fn sanitized(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The value the test gives a placeholder: lowercase with `-`, valid in a registry host, an image
/// repository and a tag, and read by `--set` as a string.
fn value_for(name: &str) -> String {
    format!("v-{}", name.to_lowercase().replace('_', "-"))
}

/// Substitutes the placeholders whose names are in `known`.
fn substitute(text: &str, known: &BTreeSet<String>) -> String {
    let mut result = String::new();
    let mut last = 0;
    for (range, name) in placeholders(text) {
        let name = sanitized(&name);
        if known.contains(&name) {
            result.push_str(&text[last..range.start]);
            result.push_str(&value_for(&name));
            last = range.end;
        }
    }
    result.push_str(&text[last..]);
    result
}

// ---------------------------------------------------------------------------------------------
// Normalization: what makes two manifests mean the same to IoT Edge.

fn modules_content(manifest: &Json) -> Map<String, Json> {
    manifest
        .get("modulesContent")
        .or_else(|| manifest.pointer("/content/modulesContent"))
        .and_then(Json::as_object)
        .cloned()
        .expect("a manifest has modulesContent")
}

/// Joins `createOptions`, `createOptions01` … and parses them; an empty or absent value is `{}`.
fn normalize_settings(settings: &mut Map<String, Json>) {
    let mut chunks: Vec<(String, Json)> = settings
        .iter()
        .filter(|(key, _)| key.starts_with("createOptions"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    chunks.sort_by(|left, right| left.0.cmp(&right.0));
    settings.retain(|key, _| !key.starts_with("createOptions"));
    let options = match chunks.as_slice() {
        [(_, Json::Object(object))] => Json::Object(object.clone()),
        _ => {
            let text: String = chunks
                .iter()
                .map(|(_, chunk)| chunk.as_str().expect("a createOptions chunk is a string"))
                .collect();
            if text.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&text).expect("createOptions parse")
            }
        }
    };
    settings.insert("createOptions".into(), options);
}

/// Applies `edit` to every string in `value` except under `$edgeHub` routes, which the importer
/// keeps verbatim (`$upstream` there is route syntax, not a placeholder).
fn map_strings(value: &mut Json, in_routes: bool, edit: &dyn Fn(&str) -> String) {
    match value {
        Json::String(text) if !in_routes => *text = edit(text),
        Json::Array(items) => items
            .iter_mut()
            .for_each(|item| map_strings(item, in_routes, edit)),
        Json::Object(object) => {
            for (key, item) in object.iter_mut() {
                map_strings(item, in_routes || key == "routes", edit);
            }
        }
        _ => {}
    }
}

/// `modulesContent` in a comparable form: create options joined and parsed, placeholders
/// substituted, and the differences listed below removed.
fn normalize(manifest: &Json, known: &BTreeSet<String>) -> Json {
    let mut content = modules_content(manifest);
    let agent = content
        .get_mut("$edgeAgent")
        .and_then(|agent| agent.get_mut("properties.desired"))
        .and_then(Json::as_object_mut)
        .expect("$edgeAgent desired properties");
    let mut module_names = Vec::new();
    for group in ["systemModules", "modules"] {
        let Some(modules) = agent.get_mut(group).and_then(Json::as_object_mut) else {
            continue;
        };
        for (name, module) in modules.iter_mut() {
            if group == "modules" {
                module_names.push(name.clone());
            }
            let module = module.as_object_mut().expect("a module entry is an object");
            if let Some(settings) = module.get_mut("settings").and_then(Json::as_object_mut) {
                normalize_settings(settings);
            }
            // IoT Edge treats an empty `env` like none, and edgec writes none.
            if module.get("env").is_some_and(|env| env == &json!({})) {
                module.remove("env");
            }
        }
    }
    // edgec writes every deployed module's desired properties, `{}` when the source gives none;
    // a manifest that leaves a module's twin out sets the same (empty) desired properties.
    for name in module_names {
        content
            .entry(name)
            .or_insert_with(|| json!({ "properties.desired": {} }));
    }
    let mut content = Json::Object(content);
    map_strings(&mut content, false, &|text| substitute(text, known));
    content
}

// ---------------------------------------------------------------------------------------------
// The round trip.

/// The `(route name, module)` pairs of routes that name a module the manifest does not deploy,
/// which the checker reports as E0302.
fn routes_to_missing_modules(manifest: &Json) -> Vec<String> {
    let content = modules_content(manifest);
    let modules: Vec<String> = content["$edgeAgent"]["properties.desired"]["modules"]
        .as_object()
        .map(|modules| modules.keys().cloned().collect())
        .unwrap_or_default();
    let routes = content
        .get("$edgeHub")
        .and_then(|hub| hub["properties.desired"]["routes"].as_object())
        .cloned()
        .unwrap_or_default();
    let named_module = |text: &str, marker: &str| {
        let start = text.find(marker)? + marker.len();
        let rest = &text[start..];
        let end = rest.find(['/', ' ', '"']).unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    };
    // The hub matches route sources ignoring case, but a sink's module name exactly.
    let missing_source = |module: String| {
        module != "*"
            && !modules
                .iter()
                .any(|known| known.eq_ignore_ascii_case(&module))
    };
    let missing_sink = |module: String| !modules.contains(&module);
    routes
        .iter()
        .filter(|(_, route)| {
            let text = route
                .as_str()
                .or_else(|| route["route"].as_str())
                .unwrap_or_default();
            named_module(text, "/messages/modules/").is_some_and(missing_source)
                || named_module(text, "BrokeredEndpoint(\"/modules/").is_some_and(missing_sink)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn without_routes(manifest: &Json, routes: &[String]) -> Json {
    let mut pruned = manifest.clone();
    let content = if pruned.get("modulesContent").is_some() {
        &mut pruned["modulesContent"]
    } else {
        &mut pruned["content"]["modulesContent"]
    };
    if let Some(table) = content["$edgeHub"]["properties.desired"]["routes"].as_object_mut() {
        table.retain(|name, _| !routes.contains(name));
    }
    pruned
}

/// What `edgec check` and `edgec build` need for an imported file: `--set` arguments for its
/// parameters and environment variables for its credentials.
struct Inputs {
    sets: Vec<String>,
    environment: BTreeMap<String, String>,
    known: BTreeSet<String>,
}

fn inputs(edge: &str, original: &Json) -> Inputs {
    let mut known = BTreeSet::new();
    let mut sets = Vec::new();
    for line in edge.lines() {
        if let Some(declaration) = line.strip_prefix("param ") {
            let name = declaration
                .split(':')
                .next()
                .expect("param NAME: type")
                .trim();
            sets.push(format!("--set={name}={}", value_for(name)));
            known.insert(name.to_owned());
        }
    }
    let mut environment = BTreeMap::new();
    for piece in edge.split("env(\"").skip(1) {
        let variable = piece.split('"').next().expect("env(\"NAME\")").to_owned();
        environment.insert(variable.clone(), value_for(&variable));
        known.insert(variable);
    }
    // Literal registry passwords are read back from `REGISTRY_<NAME>_PASSWORD`.
    let content = modules_content(original);
    if let Some(registries) =
        content["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]
            .as_object()
    {
        for (name, credential) in registries {
            let password = credential["password"].as_str().expect("a password");
            if placeholders(password).len() != 1
                || placeholders(password)[0].0 != (0..password.len())
            {
                let variable = format!(
                    "REGISTRY_{}_PASSWORD",
                    name.chars()
                        .map(|c| if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        })
                        .collect::<String>()
                );
                environment.insert(variable, password.to_owned());
            }
        }
    }
    Inputs {
        sets,
        environment,
        known,
    }
}

/// The error codes `edgec check --format json` reports.
fn error_codes(directory: &Path, file: &str, inputs: &Inputs) -> Vec<String> {
    let mut arguments = vec!["check", file, "--format", "json"];
    arguments.extend(inputs.sets.iter().map(String::as_str));
    let output = edgec(directory, &arguments, &inputs.environment);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Json>(line).expect("a JSON diagnostic"))
        .filter(|diagnostic| diagnostic["severity"] == "error")
        .map(|diagnostic| diagnostic["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn import(directory: &Path, manifest: &Path, output: &str) -> String {
    let result = edgec(
        directory,
        &[
            "import",
            manifest.to_str().expect("a UTF-8 path"),
            "-o",
            output,
        ],
        &BTreeMap::new(),
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "import {} failed: {}",
        manifest.display(),
        stderr(&result)
    );
    std::fs::read_to_string(directory.join(output)).expect("the imported file")
}

/// Imports, checks and rebuilds one manifest and compares the result with the original.
fn round_trip(manifest: &Path) {
    let directory = scratch();
    let directory = directory.path();
    let original: Json = serde_json::from_str(&std::fs::read_to_string(manifest).expect("read"))
        .expect("the fixture is JSON");
    let edge = import(directory, manifest, "imported.edge");
    let inputs = inputs(&edge, &original);

    // Routes to modules the manifest does not deploy are reported, exactly once each, and
    // nothing else is an error; the rest of the manifest must then round-trip on its own.
    let missing = routes_to_missing_modules(&original);
    assert_eq!(
        error_codes(directory, "imported.edge", &inputs),
        vec!["E0302".to_owned(); missing.len()],
        "{}: unexpected errors checking\n{edge}",
        manifest.display()
    );
    let (original, file) = if missing.is_empty() {
        (original, "imported.edge")
    } else {
        let pruned = without_routes(&original, &missing);
        let pruned_path = directory.join(manifest.file_name().expect("a file name"));
        std::fs::write(&pruned_path, pruned.to_string()).expect("write the pruned manifest");
        let edge = import(directory, &pruned_path, "pruned.edge");
        assert!(
            error_codes(directory, "pruned.edge", &inputs).is_empty(),
            "{}: errors after removing the routes {missing:?}",
            manifest.display()
        );
        assert!(!edge.contains(&missing[0]));
        (pruned, "pruned.edge")
    };

    let mut arguments = vec!["build", file, "-o", "out"];
    arguments.extend(inputs.sets.iter().map(String::as_str));
    let built = edgec(directory, &arguments, &inputs.environment);
    assert_eq!(
        built.status.code(),
        Some(0),
        "{}: build failed: {}",
        manifest.display(),
        stderr(&built)
    );
    let outputs: Vec<PathBuf> = std::fs::read_dir(directory.join("out"))
        .expect("the output directory")
        .map(|entry| entry.expect("an entry").path().join("deployment.json"))
        .filter(|path| path.exists())
        .collect();
    let [rebuilt] = outputs.as_slice() else {
        panic!("expected one deployment.json, found {outputs:?}");
    };
    let rebuilt: Json =
        serde_json::from_str(&std::fs::read_to_string(rebuilt).expect("read")).expect("JSON");
    let expected = normalize(&original, &inputs.known);
    let actual = normalize(&rebuilt, &inputs.known);
    assert!(
        expected == actual,
        "{} does not round-trip\n--- original\n{}\n--- rebuilt\n{}",
        manifest.display(),
        serde_json::to_string_pretty(&expected).unwrap_or_default(),
        serde_json::to_string_pretty(&actual).unwrap_or_default()
    );
}

#[test]
fn every_conformance_manifest_round_trips() {
    let manifests = manifests_in(&conformance_manifests());
    assert!(
        manifests.len() >= 2,
        "testdata/conformance/manifests holds manifests"
    );
    manifests.iter().for_each(|manifest| round_trip(manifest));
}

#[test]
fn every_fixture_round_trips() {
    let manifests = manifests_in(&fixtures());
    assert!(manifests.len() >= 7, "the fixtures are present");
    manifests.iter().for_each(|manifest| round_trip(manifest));
}

// ---------------------------------------------------------------------------------------------
// What the imported source says.

fn imported(fixture: &str) -> String {
    let directory = scratch();
    import(directory.path(), &fixtures().join(fixture), "x.edge")
}

#[test]
fn passwords_never_reach_the_edge_file() {
    let edge = imported("registry-credentials.template.json");
    assert!(!edge.contains("dckr_pat"), "{edge}");
    assert!(edge.contains(r#"password = env("REGISTRY_DOCKER_HUB_PASSWORD")"#));
    assert!(edge.contains(r#"username = "contoso-ci""#));
    assert!(edge.contains(r#"username = env("CONTAINER_REGISTRY_USERNAME")"#));
    assert!(edge.contains(r#"password = env("CONTAINER_REGISTRY_PASSWORD")"#));
    let at_scale = imported("at-scale-layered.json");
    assert!(!at_scale.contains("Pa55word"), "{at_scale}");
}

#[test]
fn template_placeholders_become_parameters() {
    let edge = imported("registry-credentials.template.json");
    for parameter in [
        "CONTAINER_REGISTRY_ADDRESS",
        "DASHBOARD_TAG",
        "DATA_ROOT",
        "MODULES_SampleModule",
    ] {
        assert!(
            edge.contains(&format!("param {parameter}: string\n")),
            "{edge}"
        );
    }
    assert!(edge.contains(r#"image = "contoso/edge-dashboard:${DASHBOARD_TAG}""#));
    assert!(edge.contains(r#"Binds = ["${DATA_ROOT}/sample:/data"]"#));
    // Without values the check fails: the user must `--set` every placeholder.
    let directory = scratch();
    std::fs::write(directory.path().join("x.edge"), &edge).expect("write");
    let output = edgec(directory.path(), &["check", "x.edge"], &BTreeMap::new());
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("E0111"), "{}", stderr(&output));
}

#[test]
fn azure_devops_placeholders_are_sanitized() {
    let directory = scratch();
    let manifest = conformance_manifests()
        .join("azure-iot-edge-deployment-template-2.0__quickstart_deployment.template.json");
    let edge = import(directory.path(), &manifest, "x.edge");
    assert!(edge.contains("param Build_BuildNumber: string"), "{edge}");
    assert!(edge.contains("${Container_Registry}/microsoft/azureiotedge-hub:${Build_BuildNumber}"));
    assert!(edge.contains(r#"password = env("CR_Password")"#));
}

#[test]
fn chunked_create_options_become_one_block() {
    let edge = imported("chunked-create-options.json");
    assert!(!edge.contains("createOptions"), "{edge}");
    assert!(
        edge.contains(r#""62222/tcp" = [{ HostPort = "62222" }]"#),
        "{edge}"
    );
    assert!(edge.contains(r#"Privileged = false"#));
}

#[test]
fn routes_keep_their_text_priority_and_time_to_live() {
    let edge = imported("routes-priority-ttl.json");
    assert!(
        edge.contains(r###"route hotMachines = r##"FROM /messages/modules/filter/outputs/output1 WHERE $body.machine.temperature > 100 AND $body.tag = "#1" INTO BrokeredEndpoint("/modules/alerts/inputs/hot")"## {"###),
        "{edge}"
    );
    assert!(edge.contains("    priority = 2\n    ttl = 90s\n"), "{edge}");
    assert!(edge.contains("store_and_forward_ttl = 7d"));
    // Outputs and inputs come from the routes; the wildcard `alerts/*` declares nothing.
    assert!(edge.contains("  input hot\n  output critical\n"), "{edge}");
    assert!(
        edge.contains("  input input1\n  output output1\n"),
        "{edge}"
    );
}

#[test]
fn module_settings_and_architecture_are_kept() {
    let edge = imported("startup-order-pull.json");
    assert!(edge.contains("arch = arm64"), "{edge}");
    assert!(edge.contains("module \"3d-printer-monitor\" {"), "{edge}");
    assert!(edge.contains("modules = [sqlite-store, modbus-reader, \"3d-printer-monitor\"]"));
    assert!(edge.contains("  status = stopped\n  restart = never\n  startup_order = 10\n"));
    assert!(edge.contains("  restart = on-unhealthy\n  startup_order = 2\n  pull = never\n"));
}

#[test]
fn twins_get_inferred_types() {
    let edge = imported("nested-twins.json");
    for field in [
        "thresholds: [float] = [0.5, 1, 2.25]",
        "mixed: any = [1, \"two\", true, null]",
        "extra: any = {}",
        "lastCalibration: any = null",
        "\"1st-shift\": { start: string = \"06:00\", end: string = \"14:00\" }",
        "retry: { attempts: int = 5, backoff: float = 1.5 }",
    ] {
        assert!(edge.contains(field), "missing `{field}` in\n{edge}");
    }
}

#[test]
fn at_scale_keys_are_noted_not_dropped_silently() {
    let directory = scratch();
    let output = edgec(
        directory.path(),
        &[
            "import",
            fixtures()
                .join("at-scale-layered.json")
                .to_str()
                .expect("UTF-8"),
        ],
        &BTreeMap::new(),
    );
    assert_eq!(output.status.code(), Some(0));
    let edge = String::from_utf8_lossy(&output.stdout);
    assert!(
        edge.contains("// Note: `targetCondition` has no `.edge` equivalent"),
        "{edge}"
    );
    assert!(stderr(&output).contains("warning: `targetCondition`"));
    assert!(edge.contains("arch = arm32v7"));
}

#[test]
fn the_output_is_canonically_formatted() {
    let directory = scratch();
    for manifest in manifests_in(&fixtures()) {
        import(directory.path(), &manifest, "x.edge");
        let output = edgec(
            directory.path(),
            &["fmt", "--check", "x.edge"],
            &BTreeMap::new(),
        );
        assert_eq!(output.status.code(), Some(0), "{}", manifest.display());
        std::fs::remove_file(directory.path().join("x.edge")).expect("remove");
    }
}

// ---------------------------------------------------------------------------------------------
// Output files and bad input.

#[test]
fn without_output_the_source_goes_to_standard_output() {
    let directory = scratch();
    let manifest = fixtures().join("env-types.json");
    let output = edgec(
        directory.path(),
        &["import", manifest.to_str().expect("UTF-8")],
        &BTreeMap::new(),
    );
    assert_eq!(output.status.code(), Some(0));
    let edge = String::from_utf8_lossy(&output.stdout);
    assert!(edge.contains("deployment env-types {"), "{edge}");
    assert!(
        edge.contains(r#"QUOTED = "say \"hi\"\tand \${not-a-var""#),
        "{edge}"
    );
    assert_eq!(
        std::fs::read_dir(directory.path()).expect("list").count(),
        0
    );
}

#[test]
fn an_existing_file_is_replaced_only_with_force() {
    let directory = scratch();
    let manifest = fixtures().join("env-types.json");
    let manifest = manifest.to_str().expect("UTF-8");
    let target = directory.path().join("x.edge");
    std::fs::write(&target, "// mine\n").expect("write");
    let refused = edgec(
        directory.path(),
        &["import", manifest, "-o", "x.edge"],
        &BTreeMap::new(),
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "// mine\n");
    let forced = edgec(
        directory.path(),
        &["import", manifest, "-o", "x.edge", "--force"],
        &BTreeMap::new(),
    );
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert!(
        std::fs::read_to_string(&target)
            .expect("read")
            .contains("deployment env-types")
    );
    assert_eq!(
        std::fs::read_dir(directory.path()).expect("list").count(),
        1
    );
}

/// Imports `contents` and expects exit status 2, a message containing `message`, and no file.
fn refused(contents: &str, message: &str) {
    let directory = scratch();
    std::fs::write(directory.path().join("bad.json"), contents).expect("write");
    let output = edgec(
        directory.path(),
        &["import", "bad.json", "-o", "bad.edge"],
        &BTreeMap::new(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(message),
        "expected `{message}` in: {}",
        stderr(&output)
    );
    assert!(!directory.path().join("bad.edge").exists());
    assert_eq!(
        std::fs::read_dir(directory.path()).expect("list").count(),
        1
    );
}

fn manifest_with_module_settings(settings: Json) -> String {
    json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "a:1"}},
                "edgeHub": {"type": "docker", "settings": {"image": "h:1"}}
            },
            "modules": {"filter": {"type": "docker", "settings": settings}}
        }},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}
    }})
    .to_string()
}

#[test]
fn bad_input_is_refused_with_status_2_and_no_file() {
    refused("modules: [filter]\n", "not JSON (line 1, column 1");
    refused("[{\"modulesContent\": {}}]", "the top level is an array");
    refused("{\"content\": {}}", "neither `modulesContent` nor");
    refused(
        "{\"modulesContent\": {\"$edgeHub\": {}}}",
        "has no `$edgeAgent`",
    );
    refused(
        &manifest_with_module_settings(json!({
            "image": "f:1",
            "createOptions": "{\"HostConfig\":",
            "createOptions01": "{\"Privileged\": tru"
        })),
        "the createOptions of module `filter` are not a JSON object",
    );
    refused(
        &manifest_with_module_settings(json!({"image": "f:1", "createOptions": "[1, 2]"})),
        "module `filter`",
    );
    refused(
        &manifest_with_module_settings(json!({"createOptions": "{}"})),
        "`$edgeAgent.modules.filter.settings.image` must be a string",
    );
}

#[test]
fn unreadable_files_and_invalid_module_names_are_refused() {
    let directory = scratch();
    let missing = edgec(
        directory.path(),
        &["import", "missing.json", "-o", "x.edge"],
        &BTreeMap::new(),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read `missing.json`"));
    assert!(!directory.path().join("x.edge").exists());
    let manifest = manifest_with_module_settings(json!({"image": "f:1"}))
        .replace("\"filter\"", "\"my.filter\"");
    refused(&manifest, "the module name `my.filter` is not allowed");
}
