//! The checked program: what the checker proved about the sources, in the form the emitters use.
//!
//! Everything is keyed by name in `BTreeMap`s so that every walk over the model, and therefore
//! every output, is in a stable order.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::types::Type;
use crate::span::Location;

#[derive(Debug, Clone, Default)]
pub struct Program {
    pub hardware: BTreeMap<String, HardwareProfile>,
    pub schemas: BTreeMap<String, Type>,
    pub modules: BTreeMap<String, Module>,
    pub deployments: BTreeMap<String, Deployment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Architecture {
    Amd64,
    Arm64,
    Arm32v7,
}

impl Architecture {
    pub const NAMES: &'static [&'static str] = &["amd64", "arm64", "arm32v7"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "amd64" => Some(Architecture::Amd64),
            "arm64" => Some(Architecture::Arm64),
            "arm32v7" => Some(Architecture::Arm32v7),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
            Architecture::Arm32v7 => "arm32v7",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityElement {
    Pkcs11 { token_label: String },
    Tpm,
    None,
}

#[derive(Debug, Clone)]
pub struct HardwareProfile {
    pub name: String,
    pub architecture: Architecture,
    pub cpus: Option<u64>,
    pub memory: Option<u64>,
    pub storage: Option<u64>,
    pub security: SecurityElement,
    pub compatible: String,
    pub location: Location,
    pub architecture_location: Location,
    pub memory_location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `registry/repository[:tag][@sha256:digest]`.
    Registry {
        reference: String,
        digest: Option<String>,
    },
    /// `local("path")`: a root filesystem directory or an OCI image layout, packaged by
    /// `edgec build`. The path is as written, relative to the file that declares it.
    Local { path: String, declared_in: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure,
    OnUnhealthy,
    Always,
}

impl RestartPolicy {
    pub const NAMES: &'static [&'static str] = &["never", "on-failure", "on-unhealthy", "always"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    OnCreate,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupSpecification {
    Unspecified,
    Order(u64),
    After(Vec<(String, Location)>),
}

#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub image: ImageSource,
    /// The image architecture, when stated or evident from the tag.
    pub image_architecture: Option<(Architecture, Location)>,
    /// The module version, when given (IoT Edge treats it as opaque).
    pub version: Option<String>,
    pub status: DesiredStatus,
    pub restart: RestartPolicy,
    pub startup: StartupSpecification,
    /// The image pull policy, when given (IoT Edge's default is `on-create`).
    pub pull: Option<PullPolicy>,
    /// Environment variables; values are strings, numbers or booleans as written.
    pub env: BTreeMap<String, Json>,
    /// Docker create options as a JSON object, with resource limits merged in.
    pub create_options: Json,
    pub memory_limit: Option<(u64, Location)>,
    pub inputs: BTreeMap<String, Location>,
    pub outputs: BTreeMap<String, Output>,
    /// Desired properties with defaults applied.
    pub desired_properties: serde_json::Map<String, Json>,
    pub location: Location,
    pub image_location: Location,
}

#[derive(Debug, Clone)]
pub struct Output {
    /// The declared message schema: `None` when undeclared.
    pub schema: Option<Type>,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub text: String,
    pub priority: Option<u64>,
    pub time_to_live_seconds: Option<u64>,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct EdgeAgentSettings {
    pub schema_version: String,
    pub image: String,
    pub create_options: Json,
    pub env: BTreeMap<String, Json>,
    pub min_docker_version: String,
    pub logging_options: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EdgeHubSettings {
    pub schema_version: String,
    pub image: String,
    pub create_options: Json,
    pub env: BTreeMap<String, Json>,
    /// How long the hub keeps undelivered messages, when given.
    pub store_and_forward_time_to_live_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Read from this build-environment variable.
    Environment(String),
    Literal(String),
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub name: String,
    pub address: String,
    pub username: Credential,
    pub password: Credential,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    pub target: String,
    pub version: u64,
    pub modules: Vec<String>,
    /// The startup order computed for each module that has one.
    pub startup_orders: BTreeMap<String, u64>,
    pub routes: Vec<Route>,
    pub edge_agent: EdgeAgentSettings,
    pub edge_hub: EdgeHubSettings,
    pub registries: Vec<Registry>,
    pub location: Location,
}
