//! `edgec`: the command-line face of the edgec compiler. It parses arguments, reads and writes
//! files, and prints; everything else happens in `edgec-core`.

#[macro_use]
mod print;

mod atomic_file;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "edgec",
    version,
    about = "Compile `.edge` fleet descriptions into IoT Edge deployments"
)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DiagnosticFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check `.edge` files (or directories of them) and report every problem.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value = "human")]
        format: DiagnosticFormat,
        /// Override a parameter: `--set name=value`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
    },
    /// Build IoT Edge manifests (`DIR/NAME/deployment.json`) and signed bundles
    /// (`DIR/NAME.edgebundle`) for every deployment, or the one named.
    Build {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Build only this deployment.
        #[arg(long)]
        deployment: Option<String>,
        /// The output directory.
        #[arg(short = 'o', long = "output", default_value = "build")]
        output: PathBuf,
        /// Override a parameter: `--set name=value`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
        /// The form of `deployment.json`.
        #[arg(long, value_enum, default_value = "manifest")]
        emit: commands::build::ManifestForm,
        /// Sign an expiry into the bundles: devices refuse them after this time. An RFC 3339 UTC
        /// time (`2030-01-31T00:00:00Z`) or a lifetime counted from SOURCE_DATE_EPOCH (`90days`),
        /// which must then be set.
        #[arg(long, value_name = "DURATION|RFC3339", value_parser = commands::expiry::parse)]
        expires: Option<commands::expiry::Expiry>,
        #[command(flatten)]
        signing: commands::signing::SigningOptions,
        /// After a successful build, push each bundle to `HOST/REPOSITORY:DEPLOYMENT` (or to
        /// `HOST/REPOSITORY:TAG` as given, when one deployment is built).
        #[arg(long, value_name = "HOST/REPOSITORY[:TAG]")]
        push: Option<String>,
        /// Pin module images given by tag only to the digest their registry has now.
        #[arg(long)]
        resolve_digests: bool,
        /// Build bundles that leave tag-only module images unpinned, for development: devices
        /// then run whatever the tag names when they pull.
        #[arg(long, conflicts_with = "resolve_digests")]
        allow_unpinned: bool,
        #[command(flatten)]
        registry: commands::registry::RegistryArgs,
    },
    /// Push a bundle to an OCI registry as an artifact (`schema/BUNDLE.md`, "In an OCI registry").
    Push {
        bundle: PathBuf,
        /// Where to: `HOST[:PORT]/REPOSITORY:TAG`.
        #[arg(value_name = "HOST/REPOSITORY:TAG")]
        reference: String,
        #[command(flatten)]
        registry: commands::registry::RegistryArgs,
    },
    /// Generate an ed25519 signing key: `KEY` (PKCS#8 PEM, mode 0600) and `KEY.pub`.
    Keygen {
        #[arg(short = 'o', long = "output", value_name = "KEY")]
        output: PathBuf,
    },
    /// Verify a bundle's signatures and payload against trusted public keys.
    Verify {
        bundle: PathBuf,
        #[arg(long = "trust", value_name = "KEY.pub", required = true)]
        trust: Vec<PathBuf>,
        /// How many distinct trusted keys must have signed.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
    },
    /// Show what a bundle contains.
    Inspect {
        bundle: PathBuf,
        /// Print the manifest and signatures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Format `.edge` files in the one canonical style.
    Fmt {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Report files that are not formatted instead of rewriting them.
        #[arg(long)]
        check: bool,
    },
    /// Explain a diagnostic code, with an example.
    Explain { code: String },
    /// Convert an IoT Edge deployment manifest (or template) into a `.edge` file.
    Import {
        file: PathBuf,
        /// Write the `.edge` source here instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE.edge")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Work with IoT Edge routes on their own.
    #[command(subcommand)]
    Route(RouteCommand),
    /// dm-verity hash trees, interchangeable with veritysetup's (format 1, sha256, 4 KiB blocks).
    #[command(subcommand)]
    Verity(VerityCommand),
    /// Bootable dm-verity A/B OS images from recipes, and their QEMU boot test.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Run route conformance corpora; prints failures, then `N passed, M failed`.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate one condition: prints true, false or undefined.
    Eval {
        condition: String,
        /// The message, in the conformance corpus message format (default: empty telemetry).
        #[arg(long)]
        message: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VerityCommand {
    /// Write the hash tree of DATA to HASH and print the root hash, as `veritysetup format` does.
    /// Unlike veritysetup, a salt or UUID that is not given is derived from the content rather
    /// than random, so the same data always gives the same hash file: the salt is the SHA-256 of
    /// the data's whole blocks, the UUID comes from the root hash.
    Format {
        data: PathBuf,
        hash: PathBuf,
        /// The salt in hexadecimal, or `-` for none (default: derived from the data).
        #[arg(long)]
        salt: Option<String>,
        /// The UUID recorded in the superblock (default: derived from the root hash).
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Check DATA and HASH against ROOTHASH: exit 0 if they verify, 1 naming the first bad block,
    /// 2 if a file cannot be read.
    Verify {
        data: PathBuf,
        hash: PathBuf,
        roothash: String,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the disk image, kernel and initramfs a recipe (`recipes/images/*.toml`) describes.
    Build {
        recipe: PathBuf,
        /// The output directory (default: `build/images/NAME`).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// The statically linked edged to install (default: the workspace's static build).
        #[arg(long, value_name = "FILE")]
        edged: Option<PathBuf>,
        /// The statically linked edge-init (default: the workspace's static build).
        #[arg(long, value_name = "FILE")]
        init: Option<PathBuf>,
        #[command(flatten)]
        signing: commands::signing::SigningOptions,
    },
    /// Boot a built image under QEMU (TCG) and report whether edged came up: exit 0 if it did.
    BootTest {
        /// The directory `edgec image build` wrote.
        image: PathBuf,
        /// How long to wait for the ready line in each boot: a duration with a unit (`90s`, `2m`).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = commands::image::parse_boot_timeout)]
        timeout: std::time::Duration,
        /// Boots to allow (a failed slot reboots the device, and QEMU exits instead).
        #[arg(long, default_value_t = 3)]
        boots: usize,
        /// Print the serial console.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let status = match arguments.command {
        Command::Check {
            paths,
            format,
            overrides,
        } => commands::check::run(&paths, format, &overrides),
        Command::Build {
            paths,
            deployment,
            output,
            overrides,
            emit,
            expires,
            signing,
            push,
            resolve_digests,
            allow_unpinned,
            registry,
        } => commands::build::run(&commands::build::BuildOptions {
            paths,
            deployment,
            output,
            overrides,
            form: emit,
            signing,
            push,
            unpinned: if resolve_digests {
                commands::build::Unpinned::Resolve
            } else if allow_unpinned {
                commands::build::Unpinned::Allow
            } else {
                commands::build::Unpinned::Refuse
            },
            registry,
            expires,
        }),
        Command::Push {
            bundle,
            reference,
            registry,
        } => commands::registry::push(&bundle, &reference, &registry),
        Command::Keygen { output } => commands::keys::keygen(&output),
        Command::Verify {
            bundle,
            trust,
            threshold,
        } => commands::keys::verify(&bundle, &trust, threshold),
        Command::Inspect { bundle, json } => commands::keys::inspect(&bundle, json),
        Command::Fmt { paths, check } => commands::fmt::run(&paths, check),
        Command::Explain { code } => commands::explain::run(&code),
        Command::Import {
            file,
            output,
            force,
        } => commands::import::run(&file, output.as_deref(), force),
        Command::Route(RouteCommand::Test { files }) => commands::route::test(&files),
        Command::Route(RouteCommand::Eval { condition, message }) => {
            commands::route::eval(&condition, message.as_deref())
        }
        Command::Verity(VerityCommand::Format {
            data,
            hash,
            salt,
            uuid,
        }) => commands::verity::format(&data, &hash, salt.as_deref(), uuid.as_deref()),
        Command::Verity(VerityCommand::Verify {
            data,
            hash,
            roothash,
        }) => commands::verity::verify(&data, &hash, &roothash),
        Command::Image(ImageCommand::Build {
            recipe,
            output,
            edged,
            init,
            signing,
        }) => commands::image::build(&commands::image::ImageBuildOptions {
            recipe,
            output,
            edged,
            init,
            signing,
        }),
        Command::Image(ImageCommand::BootTest {
            image,
            timeout,
            boots,
            verbose,
        }) => commands::image::boot_test(&image, timeout, boots, verbose),
    };
    ExitCode::from(status as u8)
}

/// Exit statuses: 0 clean (warnings allowed), 1 errors found, 2 usage or I/O failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Clean = 0,
    Errors = 1,
    Failure = 2,
}
