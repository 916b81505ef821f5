//! `edge_agent { … }` and `edge_hub { … }`: the IoT Edge system modules' settings.
//!
//! edged plays the agent's role on edgec devices, but the manifest still carries both system
//! modules so that it works unchanged with Azure IoT Edge.

use serde_json::{Value as Json, json};

use super::context::Checker;
use super::environment;
use super::model::{EdgeAgentSettings, EdgeHubSettings};
use super::reader::BlockReader;
use crate::span::Span;
use crate::syntax::ast::Block;

const AGENT_ATTRIBUTES: &[&str] = &[
    "schema_version",
    "image",
    "create_options",
    "env",
    "min_docker_version",
    "logging_options",
];
const HUB_ATTRIBUTES: &[&str] = &[
    "schema_version",
    "image",
    "create_options",
    "env",
    "store_and_forward_ttl",
];

pub const DEFAULT_AGENT_IMAGE: &str = "mcr.microsoft.com/azureiotedge-agent:1.5";
pub const DEFAULT_HUB_IMAGE: &str = "mcr.microsoft.com/azureiotedge-hub:1.5";
const DEFAULT_MINIMUM_DOCKER_VERSION: &str = "v1.25";

/// The fields both system modules share.
struct Common {
    schema_version: String,
    image: String,
    create_options: Json,
    env: std::collections::BTreeMap<String, Json>,
}

fn common<'a>(
    checker: &mut Checker<'a>,
    reader: &BlockReader<'a>,
    schema_versions: &'static [&'static str],
    default_image: &str,
    default_create_options: Json,
) -> Common {
    let file = reader.file;
    let schema_version = match reader.value(checker, "schema_version") {
        Some(value) => checker
            .keyword(file, value, "schema version", schema_versions)
            .unwrap_or_default(),
        None => schema_versions.last().copied().unwrap_or_default(),
    };
    let image = match reader.value(checker, "image") {
        Some(value) => checker.string(file, value).unwrap_or_default(),
        None => default_image.to_owned(),
    };
    let create_options = match reader.block(checker, "create_options") {
        Some(block) => checker.json_object(file, block).unwrap_or_default(),
        None => default_create_options,
    };
    let env = reader
        .block(checker, "env")
        .map(|block| environment::variables(checker, file, block))
        .unwrap_or_default();
    Common {
        schema_version: schema_version.to_owned(),
        image,
        create_options,
        env,
    }
}

fn opening(block: &Block) -> Span {
    Span {
        start: block.span.start,
        end: block.span.start + 1,
    }
}

pub fn edge_agent<'a>(
    checker: &mut Checker<'a>,
    file: crate::span::FileId,
    block: Option<&'a Block>,
) -> EdgeAgentSettings {
    let Some(block) = block else {
        return EdgeAgentSettings {
            schema_version: "1.1".into(),
            image: DEFAULT_AGENT_IMAGE.into(),
            create_options: json!({}),
            env: Default::default(),
            min_docker_version: DEFAULT_MINIMUM_DOCKER_VERSION.into(),
            logging_options: None,
        };
    };
    let reader = BlockReader::new(
        checker,
        file,
        "`edge_agent`",
        opening(block),
        block,
        AGENT_ATTRIBUTES,
        &[],
    );
    let common = common(
        checker,
        &reader,
        &["1.0", "1.1"],
        DEFAULT_AGENT_IMAGE,
        json!({}),
    );
    let min_docker_version = match reader.value(checker, "min_docker_version") {
        Some(value) => checker.string(file, value).unwrap_or_default(),
        None => DEFAULT_MINIMUM_DOCKER_VERSION.into(),
    };
    let logging_options = reader
        .value(checker, "logging_options")
        .and_then(|value| checker.string(file, value));
    EdgeAgentSettings {
        schema_version: common.schema_version,
        image: common.image,
        create_options: common.create_options,
        env: common.env,
        min_docker_version,
        logging_options,
    }
}

/// The hub publishes AMQP, MQTT and HTTPS to leaf devices by default, as IoT Edge's templates do.
fn default_hub_create_options() -> Json {
    json!({"HostConfig": {"PortBindings": {
        "443/tcp": [{"HostPort": "443"}],
        "5671/tcp": [{"HostPort": "5671"}],
        "8883/tcp": [{"HostPort": "8883"}],
    }}})
}

pub fn edge_hub<'a>(
    checker: &mut Checker<'a>,
    file: crate::span::FileId,
    block: Option<&'a Block>,
) -> EdgeHubSettings {
    let Some(block) = block else {
        return EdgeHubSettings {
            schema_version: "1.2".into(),
            image: DEFAULT_HUB_IMAGE.into(),
            create_options: default_hub_create_options(),
            env: Default::default(),
            store_and_forward_time_to_live_seconds: None,
        };
    };
    let reader = BlockReader::new(
        checker,
        file,
        "`edge_hub`",
        opening(block),
        block,
        HUB_ATTRIBUTES,
        &[],
    );
    let common = common(
        checker,
        &reader,
        &["1.0", "1.1", "1.2"],
        DEFAULT_HUB_IMAGE,
        default_hub_create_options(),
    );
    let store_and_forward = reader
        .value(checker, "store_and_forward_ttl")
        .and_then(|value| checker.duration(file, value));
    EdgeHubSettings {
        schema_version: common.schema_version,
        image: common.image,
        create_options: common.create_options,
        env: common.env,
        store_and_forward_time_to_live_seconds: store_and_forward,
    }
}
