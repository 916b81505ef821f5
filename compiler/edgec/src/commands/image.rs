//! `edgec image build` and `edgec image boot-test`: OS images from recipes, through
//! `edge-image`, and their boot under QEMU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_bundle::{OsImage, Signer};
use edge_image::qemu::{BootTarget, boot_until_ready};
use edge_image::recipe::Recipe;
use edge_image::{BUILD_STEPS, ImageSpec, Progress, StagedOutput};
use edgec_core::check::Program;
use edgec_core::check::model::{Architecture, Deployment, HardwareProfile, ImageSource};
use edgec_core::diagnostic::has_errors;
use edgec_core::emit::manifest::deployment_manifest;

use crate::atomic_file::{AtomicFile, Existing};
use crate::commands::build::{BuildOptions, ManifestForm, deployment_bundle, write_bundle};
use crate::commands::check::check_program;
use crate::commands::signing::{SigningOptions, open_signers};
use crate::commands::source_date_epoch;
use crate::output::{print_diagnostics, usage_error};
use crate::{DiagnosticFormat, Status};

/// What `edgec image build` was asked to do.
pub struct ImageBuildOptions {
    pub recipe: PathBuf,
    pub output: Option<PathBuf>,
    pub edged: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub signing: SigningOptions,
}

/// Builds the image a recipe describes; exit 1 when the recipe's program has errors, 2 when the
/// image cannot be built.
pub fn build(options: &ImageBuildOptions) -> Status {
    match build_image(options) {
        Ok(status) => status,
        Err(message) => {
            usage_error(&message);
            Status::Failure
        }
    }
}

fn build_image(options: &ImageBuildOptions) -> Result<Status, String> {
    let started = Instant::now();
    let recipe = Recipe::load(&options.recipe).map_err(|error| error.to_string())?;
    let (loaded, program, diagnostics) = check_program(std::slice::from_ref(&recipe.program), &[])?;
    print_diagnostics(&diagnostics, &loaded.sources, DiagnosticFormat::Human);
    if has_errors(&diagnostics) {
        err!(
            "{}: errors in the image's program; nothing was built",
            recipe.program.display()
        );
        return Ok(Status::Errors);
    }
    let hardware = program.hardware.get(&recipe.hardware).ok_or_else(|| {
        format!(
            "{} defines no hardware profile `{}`",
            recipe.program.display(),
            recipe.hardware
        )
    })?;
    let deployment = program.deployments.get(&recipe.deployment).ok_or_else(|| {
        format!(
            "{} defines no deployment `{}`",
            recipe.program.display(),
            recipe.deployment
        )
    })?;
    if deployment.target != recipe.hardware {
        return Err(format!(
            "deployment `{}` targets `{}`, but the image is for `{}`",
            deployment.name, deployment.target, recipe.hardware
        ));
    }
    let architecture = match hardware.architecture {
        Architecture::Amd64 => "amd64",
        Architecture::Arm64 => "arm64",
        Architecture::Arm32v7 => {
            return Err(
                "arm32v7 images are not supported (no DPS root partition type is wired up)".into(),
            );
        }
    };
    let edged = binary(options.edged.as_deref(), "edged", architecture)?;
    let init = binary(options.init.as_deref(), "edge-init", architecture)?;
    let signers = open_signers(&options.signing)?;
    let root_signer = signers.first().ok_or(
        "an image needs a signing key (--key or --pkcs11): it signs the initial bundle and the root hash",
    )?;
    let scratch = tempfile::tempdir()
        .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let bundle_status = crate::commands::build::run(&BuildOptions {
        paths: vec![recipe.program.clone()],
        deployment: Some(recipe.deployment.clone()),
        output: scratch.path().to_owned(),
        overrides: Vec::new(),
        form: ManifestForm::Manifest,
        signing: options.signing.clone(),
        push: None,
        unpinned: crate::commands::build::Unpinned::Refuse,
        registry: Default::default(),
        // The bundle an image starts from is installed with it, not taken in later, so it
        // carries no expiry.
        expires: None,
    });
    if bundle_status != Status::Clean {
        return Ok(bundle_status);
    }
    let mut trust_anchors = Vec::new();
    for signer in &signers {
        let key = signer.public_key();
        let pem = edge_bundle::public_key_pem(&key).map_err(|error| error.to_string())?;
        // Named by the whole key id, as `edged trust add` names the anchors it adds.
        trust_anchors.push((format!("{}.pub", edge_bundle::key_id(&key)), pem));
    }
    for anchor in &recipe.edged.trust {
        let pem = std::fs::read_to_string(anchor)
            .map_err(|error| format!("cannot read trust anchor `{}`: {error}", anchor.display()))?;
        let name = anchor
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        trust_anchors.push((name, pem));
    }
    let spec = ImageSpec {
        name: recipe.name.clone(),
        architecture: architecture.to_owned(),
        kernel_package: recipe.kernel.clone(),
        modules: recipe.modules(),
        sizes: recipe.sizes(),
        boot_tries: recipe.boot_tries,
        edged,
        init,
        device_config: recipe.device_config(&hardware.compatible, architecture),
        edged_options: vec!["--runtime".into(), recipe.edged.runtime.clone()],
        initial_bundle: scratch
            .path()
            .join(format!("{}.edgebundle", deployment.name)),
        trust_anchors,
        source_date_epoch: source_date_epoch::from_environment()?,
        cache: cache_dir().join("kernels"),
    };
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| Path::new("build/images").join(&recipe.name));
    // The image and its update bundle are written into a stage next to the output and moved
    // into place together, so a failure at any step leaves no partial image behind.
    let staged = StagedOutput::new(&output).map_err(|error| error.to_string())?;
    let mut progress = Progress::new(BUILD_STEPS, false);
    let manifest = edge_image::build(&spec, root_signer.as_ref(), &staged, &mut progress)
        .map_err(|error| error.to_string())?;
    let staged_path = staged.path();
    let signature: serde_json::Value = serde_json::from_slice(
        &std::fs::read(staged_path.join("root-hash.sig.json"))
            .map_err(|error| format!("cannot read the root hash signature: {error}"))?,
    )
    .map_err(|error| format!("cannot read the root hash signature: {error}"))?;
    update_bundle(
        &program,
        deployment,
        hardware,
        &signers,
        staged_path,
        &OsImage {
            rootfs: staged_path.join("rootfs.squashfs"),
            verity: staged_path.join("rootfs.verity"),
            root_hash: manifest.root_hash.clone(),
            root_hash_signature: signature["signature"].as_str().map(str::to_owned),
        },
        spec.source_date_epoch,
    )?;
    let output = staged.commit().map_err(|error| error.to_string())?;
    out!(
        "built {} in {:.1} s: kernel {} {}, root hash {}",
        output.join("disk.img").display(),
        started.elapsed().as_secs_f64(),
        manifest.kernel.package,
        manifest.kernel.version,
        manifest.root_hash
    );
    Ok(Status::Clean)
}

/// `DIR/update.edgebundle`: the deployment together with this image's root file system as an
/// OS payload, signed like the initial bundle, for updating devices over the air.
fn update_bundle(
    program: &Program,
    deployment: &Deployment,
    hardware: &HardwareProfile,
    signers: &[Box<dyn Signer>],
    output: &Path,
    os: &OsImage,
    source_date_epoch: u64,
) -> Result<(), String> {
    if let Some(module) = deployment
        .modules
        .iter()
        .filter_map(|name| program.modules.get(name))
        .find(|module| matches!(module.image, ImageSource::Local { .. }))
    {
        return Err(format!(
            "module `{}` has a local image, which update bundles do not carry yet: pin a registry image",
            module.name
        ));
    }
    let environment = |variable: &str| std::env::var(variable).ok();
    let manifest = deployment_manifest(program, deployment, &environment)
        .map_err(|error| format!("cannot emit deployment `{}`: {error:?}", deployment.name))?;
    let mut builder = deployment_bundle(program, deployment, hardware, manifest, source_date_epoch)
        .map_err(|failure| failure.message)?;
    builder
        .add_os_payload(os)
        .map_err(|error| format!("cannot build update.edgebundle: {error}"))?;
    let path = output.join("update.edgebundle");
    let file = AtomicFile::create(&path)
        .map_err(|error| format!("cannot write `{}`: {error}", path.display()))?;
    write_bundle(&builder, signers, file)
        .map_err(|failure| failure.message)?
        .commit(Existing::Replace)
        .map_err(|error| format!("cannot write `{}`: {error}", path.display()))
}

/// A static binary for the image: the one named on the command line, else the environment
/// (`EDGEC_IMAGE_EDGED`, `EDGEC_IMAGE_INIT`), else the static release build of the workspace
/// next to this edgec (`target/<triple>/release/NAME`).
fn binary(given: Option<&Path>, name: &str, architecture: &str) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let variable = match name {
        "edged" => "EDGEC_IMAGE_EDGED",
        _ => "EDGEC_IMAGE_INIT",
    };
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let triple = match architecture {
        "arm64" => "aarch64-unknown-linux-gnu",
        _ => "x86_64-unknown-linux-gnu",
    };
    let candidate = std::env::current_exe().ok().and_then(|exe| {
        Some(
            exe.parent()?
                .parent()?
                .join(triple)
                .join("release")
                .join(name),
        )
    });
    match candidate {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(format!(
            "no static {name} for {architecture}: build it with `RUSTFLAGS=\"-C target-feature=+crt-static -C strip=symbols\" cargo build --release -p {name} --target {triple}` (the Rust target must be installed: `rustup target add {triple}`{}) or name it with --{} / {variable}",
            if triple.starts_with("x86_64") {
                ""
            } else {
                ", with a C cross linker for it"
            },
            if name == "edged" { "edged" } else { "init" }
        )),
    }
}

/// `$EDGEC_CACHE`, else `$XDG_CACHE_HOME/edgec`, else `~/.cache/edgec`.
fn cache_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os("EDGEC_CACHE") {
        return PathBuf::from(cache);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("edgec");
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/edgec"))
        .unwrap_or_else(|| std::env::temp_dir().join("edgec-cache"))
}

/// Reads `--timeout` as a duration with a unit, as the language writes them (`30s`, `2m`,
/// `1m 30s`), so a bare number, a negative or infinite value or one too large for a duration is a
/// usage error rather than a panic. Zero is refused too: no boot can be ready in no time.
pub fn parse_boot_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| {
        format!(
            "`{text}` is not a duration ({error}); write one with a unit, such as `90s` or `2m`"
        )
    })?;
    if timeout.is_zero() {
        return Err("the timeout must be longer than zero, such as `90s`".to_owned());
    }
    Ok(timeout)
}

/// Boots a copy of the image (the built one stays pristine; boot counting persists across the
/// copy's reboots) and reports whether edged came up: exit 0 ready, 1 not.
pub fn boot_test(image: &Path, timeout: Duration, boots: usize, verbose: bool) -> Status {
    let scratch = match tempfile::tempdir() {
        Ok(scratch) => scratch,
        Err(error) => {
            usage_error(&format!("cannot create a temporary directory: {error}"));
            return Status::Failure;
        }
    };
    let mut target = BootTarget::in_directory(image);
    let copy = scratch.path().join("disk.img");
    if let Err(error) = std::fs::copy(&target.disk, &copy) {
        usage_error(&format!("cannot copy `{}`: {error}", target.disk.display()));
        return Status::Failure;
    }
    target.disk = copy;
    let mut echo = |line: &str| {
        if verbose {
            err!("| {line}");
        }
    };
    let results = match boot_until_ready(&target, timeout, boots, &mut echo) {
        Ok(results) => results,
        Err(error) => {
            usage_error(&error.to_string());
            return Status::Failure;
        }
    };
    for (index, result) in results.iter().enumerate() {
        match &result.ready {
            Some(line) => {
                let cpu = result
                    .cpu_seconds
                    .map(|cpu| format!(" (QEMU CPU {cpu:.1} s)"))
                    .unwrap_or_default();
                out!(
                    "boot {}: ready in {:.1} s{cpu}: {line}",
                    index + 1,
                    result.seconds
                );
                return Status::Clean;
            }
            None => {
                let ending = if result.timed_out {
                    "timed out"
                } else {
                    "the guest rebooted"
                };
                out!(
                    "boot {}: no ready line after {:.1} s ({ending})",
                    index + 1,
                    result.seconds
                );
                if !verbose {
                    for line in result
                        .console
                        .lines()
                        .filter(|line| line.starts_with("edge-init:"))
                    {
                        out!("  {line}");
                    }
                }
            }
        }
    }
    Status::Errors
}
