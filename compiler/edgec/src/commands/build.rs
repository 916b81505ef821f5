//! `edgec build`: IoT Edge manifests and signed bundles for each deployment.
//!
//! Every file is first written under a temporary name in the output directory ([`AtomicFile`]);
//! only when every deployment has built are the files renamed into place, so a failed build leaves
//! no partial output behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use edge_bundle::canonical_json::to_pretty_bytes;
use edge_bundle::{BundleBuilder, BundleHeader, ImageConfig, LayerCompression, Signer};
use edgec_core::check::Program;
use edgec_core::check::model::{Architecture, Deployment, HardwareProfile, ImageSource};
use edgec_core::diagnostic::has_errors;
use edgec_core::emit::manifest::{EmitError, at_scale, deployment_manifest, local_image_name};
use edgec_core::emit::route_table::route_table;

use std::collections::BTreeMap;

use edgec_core::emit::pin::{pin_images, unpinned_images};
use image_reference::Reference;

use super::check::check_program;
use super::expiry::{self, Expiry};
use super::registry::{self, RegistryArgs};
use super::signing::{SigningOptions, open_signers};
use super::source_date_epoch;
use crate::atomic_file::{AtomicFile, Existing, StagedFile};
use crate::output::{print_diagnostics, summary, usage_error};
use crate::{DiagnosticFormat, Status};

/// Which form the written `deployment.json` takes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestForm {
    /// `{"modulesContent": …}`, for a single device.
    Manifest,
    /// `{"content": {"modulesContent": …}}`, for at-scale and layered deployments.
    AtScale,
}

pub struct BuildOptions {
    pub paths: Vec<PathBuf>,
    pub deployment: Option<String>,
    pub output: PathBuf,
    pub overrides: Vec<String>,
    pub form: ManifestForm,
    pub signing: SigningOptions,
    /// Push each bundle after the build: `HOST/REPOSITORY` (tag = deployment name) or, for one
    /// deployment, `HOST/REPOSITORY:TAG`.
    pub push: Option<String>,
    pub unpinned: Unpinned,
    pub registry: RegistryArgs,
    /// `--expires`: signed into every bundle built.
    pub expires: Option<Expiry>,
}

/// What a bundle build does with module images given by tag only (W0214).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpinned {
    /// Refuse: the bundle would let the device run whatever the tag names later.
    Refuse,
    /// `--resolve-digests`: ask each image's registry for the tag's digest now and pin it.
    Resolve,
    /// `--allow-unpinned`: leave them out of the signed registry images, for development.
    Allow,
}

/// A build failure that is not a diagnostic in the sources, with whose problem it is.
pub struct BuildFailure {
    pub cause: FailureCause,
    pub message: String,
}

/// Whose problem a build failure is, which decides the exit status: the rule of every `edgec`
/// command is 1 for errors in the input and 2 for usage or I/O failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The program asks for something that cannot be built, such as create options longer than
    /// IoT Edge takes or a module image directory holding a socket: exit 1, like a diagnostic.
    Program,
    /// The machine the build runs on: a file or directory that cannot be read or written, an
    /// environment variable that is unset or malformed, a key or token that cannot sign: exit 2.
    Environment,
}

impl BuildFailure {
    pub fn program(message: String) -> BuildFailure {
        BuildFailure {
            cause: FailureCause::Program,
            message,
        }
    }

    pub fn environment(message: String) -> BuildFailure {
        BuildFailure {
            cause: FailureCause::Environment,
            message,
        }
    }

    /// A bundle error as a build failure: reading sources, writing the bundle and signing depend
    /// on the machine; every other bundle error is about what the program put in it.
    fn from_bundle_error(error: &edge_bundle::BundleError, message: String) -> BuildFailure {
        use edge_bundle::BundleError;
        match error {
            BundleError::ReadSource { .. }
            | BundleError::Write(_)
            | BundleError::Read(_)
            | BundleError::SourceChanged { .. }
            | BundleError::Signer(_)
            | BundleError::NoSigners
            | BundleError::DuplicateSigner(_)
            | BundleError::InvalidEpoch(_)
            | BundleError::ExpiryNotAfterCreation { .. } => BuildFailure::environment(message),
            _ => BuildFailure::program(message),
        }
    }

    pub fn status(&self) -> Status {
        match self.cause {
            FailureCause::Program => Status::Errors,
            FailureCause::Environment => Status::Failure,
        }
    }
}

pub fn run(options: &BuildOptions) -> Status {
    let (loaded, mut program, diagnostics) = match check_program(&options.paths, &options.overrides)
    {
        Ok(checked) => checked,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    print_diagnostics(&diagnostics, &loaded.sources, DiagnosticFormat::Human);
    if has_errors(&diagnostics) {
        if let Some(summary) = summary(&diagnostics) {
            err!("{summary}; nothing was built");
        }
        return Status::Errors;
    }
    let deployments: Vec<&Deployment> = match &options.deployment {
        Some(name) => match program.deployments.get(name) {
            Some(deployment) => vec![deployment],
            None => {
                let known: Vec<&str> = program.deployments.keys().map(String::as_str).collect();
                usage_error(&format!(
                    "no deployment named `{name}`; the sources define: {}",
                    known.join(", ")
                ));
                return Status::Failure;
            }
        },
        None => program.deployments.values().collect(),
    };
    if deployments.is_empty() {
        usage_error("the sources define no deployment to build");
        return Status::Failure;
    }
    let names: Vec<String> = deployments
        .iter()
        .map(|deployment| deployment.name.clone())
        .collect();
    let push_targets = match options
        .push
        .as_deref()
        .map(|push| push_targets(push, &names))
        .transpose()
    {
        Ok(targets) => targets,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    let signers = match open_signers(&options.signing) {
        Ok(signers) => signers,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    if push_targets.is_some() && signers.is_empty() {
        usage_error(
            "--push pushes bundles, and without a signing key (--key or --pkcs11) none are built",
        );
        return Status::Failure;
    }
    let unpinned: Vec<(String, String)> = deployments
        .iter()
        .flat_map(|deployment| {
            unpinned_images(&program, deployment)
                .into_iter()
                .map(|reference| (deployment.name.clone(), reference))
        })
        .collect();
    let mut client = None;
    if !unpinned.is_empty() {
        match options.unpinned {
            Unpinned::Resolve => {
                let resolved = match resolve_digests(&options.registry, &unpinned, &mut client) {
                    Ok(resolved) => resolved,
                    Err((message, status)) => {
                        usage_error(&message);
                        return status;
                    }
                };
                pin_images(&mut program.modules, &resolved);
            }
            Unpinned::Refuse if !signers.is_empty() => {
                for (deployment, reference) in &unpinned {
                    usage_error(&format!(
                        "deployment `{deployment}` names the image `{reference}` by tag only, and a bundle must pin every registry image to a digest (a device must not run bytes nobody signed): build with --resolve-digests to pin it to the digest its registry has now, or write `{reference}@sha256:…`"
                    ));
                }
                err!("nothing was built");
                return Status::Errors;
            }
            Unpinned::Refuse => {}
            Unpinned::Allow => {
                for (deployment, reference) in &unpinned {
                    err!(
                        "warning: deployment `{deployment}`: the bundle leaves `{reference}` unpinned (--allow-unpinned); devices run whatever the tag names when they pull"
                    );
                }
            }
        }
    }
    match build_all(options, &program, &deployments, &signers) {
        Ok(written) => {
            for path in written {
                out!("wrote {}", path.display());
            }
            if signers.is_empty() {
                err!("note: no signing key given (--key or --pkcs11), so no bundles were built");
            }
        }
        Err(failure) => {
            usage_error(&failure.message);
            return failure.status();
        }
    }
    let Some(targets) = push_targets else {
        return Status::Clean;
    };
    let client = match client.map_or_else(|| registry::client(&options.registry), Ok) {
        Ok(client) => client,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    for (name, target) in names.iter().zip(&targets) {
        let bundle = options.output.join(format!("{name}.edgebundle"));
        if let Err(status) = registry::push_one(&client, &bundle, target) {
            err!("the bundles were built; push them again with `edgec push`");
            return status;
        }
    }
    Status::Clean
}

/// Where `--push` sends each deployment's bundle: `REFERENCE:DEPLOYMENT` when the reference has
/// no tag (deployment names are valid tags), the reference itself when it has one and a single
/// deployment is built.
fn push_targets(push: &str, deployments: &[String]) -> Result<Vec<Reference>, String> {
    let parsed = Reference::parse(push)
        .map_err(|error| format!("invalid --push reference `{push}`: {error}"))?;
    if parsed.digest().is_some() {
        return Err(format!(
            "--push takes HOST/REPOSITORY or HOST/REPOSITORY:TAG, not a digest (`{push}`)"
        ));
    }
    if parsed.tag().is_some() {
        if deployments.len() > 1 {
            return Err(format!(
                "--push `{push}` names one tag for {} deployments; give HOST/REPOSITORY and each is tagged with its deployment name",
                deployments.len()
            ));
        }
        return Ok(vec![
            edge_registry::parse_reference(push).map_err(|error| error.to_string())?,
        ]);
    }
    deployments
        .iter()
        .map(|name| {
            edge_registry::parse_reference(&format!("{push}:{name}"))
                .map_err(|error| format!("invalid --push reference: {error}"))
        })
        .collect()
}

/// Asks each tag-only image's registry for its digest; the client is kept for the push.
fn resolve_digests(
    args: &RegistryArgs,
    unpinned: &[(String, String)],
    client: &mut Option<edge_registry::RegistryClient>,
) -> Result<BTreeMap<String, String>, (String, Status)> {
    let client = match client {
        Some(client) => client,
        None => {
            client.insert(registry::client(args).map_err(|message| (message, Status::Failure))?)
        }
    };
    let mut resolved = BTreeMap::new();
    for (deployment, text) in unpinned {
        if resolved.contains_key(text) {
            continue;
        }
        let reference = Reference::parse(text).map_err(|error| {
            (
                format!("deployment `{deployment}`: image `{text}`: {error}"),
                Status::Errors,
            )
        })?;
        let digest = client.resolve(&reference).map_err(|error| {
            (
                format!(
                    "cannot resolve the digest of `{text}` (deployment `{deployment}`): {error}"
                ),
                registry::status_of(&error),
            )
        })?;
        out!("resolved {text} to {}", digest.oci());
        resolved.insert(text.clone(), digest.oci());
    }
    Ok(resolved)
}

fn build_all(
    options: &BuildOptions,
    program: &Program,
    deployments: &[&Deployment],
    signers: &[Box<dyn Signer>],
) -> Result<Vec<PathBuf>, BuildFailure> {
    let output = &options.output;
    std::fs::create_dir_all(output).map_err(|error| {
        BuildFailure::environment(format!("cannot create `{}`: {error}", output.display()))
    })?;
    let staged = stage_all(options, program, deployments, signers)?;
    let mut written = Vec::new();
    for file in staged {
        let path = file.target().to_owned();
        file.commit(Existing::Replace).map_err(|error| {
            BuildFailure::environment(format!("cannot write `{}`: {error}", path.display()))
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Builds every artefact under a temporary name in the output directory; dropping the result
/// removes them all.
fn stage_all(
    options: &BuildOptions,
    program: &Program,
    deployments: &[&Deployment],
    signers: &[Box<dyn Signer>],
) -> Result<Vec<StagedFile>, BuildFailure> {
    let environment = |variable: &str| std::env::var(variable).ok();
    let source_date_epoch =
        source_date_epoch::from_environment().map_err(BuildFailure::environment)?;
    let expires = match &options.expires {
        Some(expiry) => {
            let set =
                source_date_epoch::from_environment_if_set().map_err(BuildFailure::environment)?;
            Some(expiry::resolve(expiry, set).map_err(BuildFailure::environment)?)
        }
        None => None,
    };
    let mut staged = Vec::new();
    for deployment in deployments {
        let manifest = deployment_manifest(program, deployment, &environment).map_err(|error| match error {
            EmitError::MissingCredential { registry, variable } => BuildFailure::environment(format!(
                "registry `{registry}` of deployment `{}` reads its credentials from `{variable}`, which is not set in the build environment",
                deployment.name
            )),
            EmitError::CreateOptionsTooLong { module, characters } => BuildFailure::program(format!(
                "the create options of `{module}` are {characters} characters, more than IoT Edge's 100 chunks of 512"
            )),
        })?;
        let written_manifest = match options.form {
            ManifestForm::Manifest => manifest.clone(),
            ManifestForm::AtScale => at_scale(manifest.clone()),
        };
        let manifest_path = options
            .output
            .join(&deployment.name)
            .join("deployment.json");
        let mut manifest_file = stage(&options.output, &manifest_path)?;
        let written = |error: std::io::Error| {
            BuildFailure::environment(format!(
                "cannot write `{}`: {error}",
                manifest_path.display()
            ))
        };
        manifest_file
            .write_all(&to_pretty_bytes(&written_manifest))
            .map_err(written)?;
        staged.push(manifest_file.finish().map_err(written)?);
        if signers.is_empty() {
            continue;
        }
        let bundle_path = options
            .output
            .join(format!("{}.edgebundle", deployment.name));
        staged.push(build_bundle(
            program,
            deployment,
            manifest,
            (source_date_epoch, expires),
            signers,
            stage(&options.output, &bundle_path)?,
        )?);
    }
    Ok(staged)
}

/// Starts writing `target` under a temporary name in `directory`.
fn stage(directory: &Path, target: &Path) -> Result<AtomicFile, BuildFailure> {
    AtomicFile::create_in(directory, target).map_err(|error| {
        BuildFailure::environment(format!(
            "cannot write `{}` in `{}`: {error}",
            target.display(),
            directory.display()
        ))
    })
}

/// Builds one deployment's bundle, created at `times.0` (`SOURCE_DATE_EPOCH`) and expiring at
/// `times.1` (`--expires`), if given; both in seconds since 1970.
fn build_bundle(
    program: &Program,
    deployment: &Deployment,
    manifest: serde_json::Value,
    times: (u64, Option<u64>),
    signers: &[Box<dyn Signer>],
    file: AtomicFile,
) -> Result<StagedFile, BuildFailure> {
    let (source_date_epoch, expires) = times;
    let hardware = program.hardware.get(&deployment.target).ok_or_else(|| {
        BuildFailure::program(format!(
            "deployment `{}` has no checked hardware profile",
            deployment.name
        ))
    })?;
    let mut builder =
        deployment_bundle(program, deployment, hardware, manifest, source_date_epoch)?;
    if let Some(expires) = expires {
        builder.expires_at(expires).map_err(|error| {
            let message = format!(
                "cannot build the bundle of deployment `{}`: {error}",
                deployment.name
            );
            BuildFailure::from_bundle_error(&error, message)
        })?;
    }
    write_bundle(&builder, signers, file)
}

/// A bundle builder holding one deployment for `hardware`: header, IoT Edge manifest, route table
/// and module images. `edgec build` signs it as it is; `edgec image build` adds an OS payload
/// first.
pub fn deployment_bundle(
    program: &Program,
    deployment: &Deployment,
    hardware: &HardwareProfile,
    manifest: serde_json::Value,
    source_date_epoch: u64,
) -> Result<BundleBuilder, BuildFailure> {
    let failure = |error: edge_bundle::BundleError| {
        let message = format!(
            "cannot build the bundle of deployment `{}`: {error}",
            deployment.name
        );
        BuildFailure::from_bundle_error(&error, message)
    };
    let architecture = bundle_architecture(hardware.architecture);
    let header = BundleHeader {
        deployment: deployment.name.clone(),
        compatible: hardware.compatible.clone(),
        architecture,
        version: deployment.version,
        source_date_epoch,
    };
    let mut builder = BundleBuilder::new(header).map_err(failure)?;
    let routes = serde_json::to_value(route_table(deployment)).map_err(|error| {
        BuildFailure::program(format!("cannot encode the route table: {error}"))
    })?;
    builder.iot_edge_manifest(manifest).route_table(routes);
    for module in deployment
        .modules
        .iter()
        .filter_map(|name| program.modules.get(name))
    {
        match &module.image {
            ImageSource::Registry {
                reference,
                digest: Some(_),
            } => {
                builder
                    .add_registry_image(&module.name, reference)
                    .map_err(failure)?;
            }
            // Only with --allow-unpinned (`run` refuses them otherwise): the device pulls them
            // by tag.
            ImageSource::Registry { digest: None, .. } => {}
            ImageSource::Local {
                path: image_path,
                declared_in,
            } => {
                let directory = Path::new(declared_in)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(image_path);
                let reference = local_image_name(module);
                if directory.join("oci-layout").is_file() {
                    builder
                        .add_oci_layout(&module.name, &directory, &reference)
                        .map_err(failure)?;
                } else {
                    let config = ImageConfig {
                        reference,
                        architecture,
                        os: "linux".into(),
                        entrypoint: Vec::new(),
                        cmd: Vec::new(),
                        env: Vec::new(),
                        working_dir: None,
                        compression: LayerCompression::None,
                    };
                    builder
                        .add_local_image(&module.name, &directory, &config)
                        .map_err(failure)?;
                }
            }
        }
    }
    Ok(builder)
}

/// Signs `builder` with every signer and writes the bundle into `file`, flushed to disk and
/// ready for its commit.
pub fn write_bundle(
    builder: &BundleBuilder,
    signers: &[Box<dyn Signer>],
    file: AtomicFile,
) -> Result<StagedFile, BuildFailure> {
    let path = file.target().to_owned();
    let signer_references: Vec<&dyn Signer> = signers.iter().map(AsRef::as_ref).collect();
    let built = builder
        .build(&signer_references, std::io::BufWriter::new(file))
        .map_err(|error| {
            let message = format!("cannot build `{}`: {error}", path.display());
            BuildFailure::from_bundle_error(&error, message)
        })?;
    let written = |error: &dyn std::fmt::Display| {
        BuildFailure::environment(format!("cannot write `{}`: {error}", path.display()))
    };
    let file = built
        .writer
        .into_inner()
        .map_err(|error| written(error.error()))?;
    file.finish().map_err(|error| written(&error))
}

pub fn bundle_architecture(architecture: Architecture) -> edge_bundle::Architecture {
    match architecture {
        Architecture::Amd64 => edge_bundle::Architecture::Amd64,
        Architecture::Arm64 => edge_bundle::Architecture::Arm64,
        Architecture::Arm32v7 => edge_bundle::Architecture::Arm32v7,
    }
}
