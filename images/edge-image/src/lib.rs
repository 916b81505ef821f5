//! Bootable, dm-verity-verified A/B OS images for edgec devices, and their boot tests.
//!
//! [`build`] turns an [`ImageSpec`] (what `edgec image build` reads from a recipe) into a
//! directory holding `disk.img` (GPT: ESP, root/verity/signature for slots A and B, data),
//! `vmlinuz` and `initramfs.cpio` for direct kernel boot, the slot payload (`rootfs.squashfs`,
//! `rootfs.verity`, `root-hash.sig.json`, which an OS bundle carries) and `manifest.json`.
//! [`qemu`] boots the result under TCG. The on-disk formats shared with the init live in
//! `edge-init`; `images/README.md` describes the whole chain.

mod cpio;
mod data;
pub mod disk;
mod elf;
mod esp;
pub mod kernel;
pub mod output;
pub mod progress;
pub mod qemu;
pub mod recipe;
mod rootfs;

use std::path::{Path, PathBuf};

use edge_bundle::{Signer, key_id};
use edge_init::config::{EdgedLaunch, InitConfig, RootHashSignature};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use disk::Sizes;
pub use output::StagedOutput;
pub use progress::Progress;

/// Why an image could not be built or booted.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The recipe asks for something that cannot be built.
    #[error("{0}")]
    Recipe(String),
    /// The kernel package could not be fetched or unpacked.
    #[error("kernel: {0}")]
    Kernel(String),
    /// An external tool (mke2fs, qemu) failed or is missing.
    #[error("{0}")]
    Tool(String),
    /// The squashfs writer failed.
    #[error("squashfs: {0}")]
    Squashfs(String),
    /// Signing the root hash failed.
    #[error("cannot sign the root hash: {0}")]
    Sign(String),
    /// The output path holds something an image build must not replace.
    #[error("cannot build into `{path}`: {reason}; remove it or choose another output directory")]
    OutputNotReplaceable {
        /// The output path.
        path: PathBuf,
        /// Why it is left alone.
        reason: &'static str,
    },
}

impl ImageError {
    /// An adapter for `map_err` on I/O results.
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_owned();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }

    fn squashfs(error: backhand::BackhandError) -> Self {
        ImageError::Squashfs(error.to_string())
    }
}

/// The modules Debian's kernel needs loaded before the init can reach a verified root and an
/// ext4 data partition, in load order (dependencies first).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "reed_solomon",
    "dm-mod",
    "dm-bufio",
    "dm-verity",
    "squashfs",
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",
    "ext4",
];

/// Everything an image is built from.
pub struct ImageSpec {
    /// The recipe's name.
    pub name: String,
    /// The Debian / DPS architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The kernel package (`linux-image-amd64`).
    pub kernel_package: String,
    /// Kernel modules the init loads, in order.
    pub modules: Vec<String>,
    /// Partition sizes.
    pub sizes: Sizes,
    /// Boots an unconfirmed slot gets.
    pub boot_tries: u8,
    /// The statically linked edged.
    pub edged: PathBuf,
    /// The statically linked edge-init.
    pub init: PathBuf,
    /// `/etc/edged/device.toml`.
    pub device_config: String,
    /// Options for every edged command (`--runtime none`).
    pub edged_options: Vec<String>,
    /// The signed bundle installed on first boot.
    pub initial_bundle: PathBuf,
    /// Trust anchors for bundles: file name in `/etc/edged/trust.d` and PEM.
    pub trust_anchors: Vec<(String, String)>,
    /// Timestamps of every file (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
    /// Where downloaded kernels are kept.
    pub cache: PathBuf,
}

/// `manifest.json`: what went into the image, for audits and for rebuilding it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// The recipe's name.
    pub name: String,
    /// The architecture.
    pub architecture: String,
    /// The kernel package.
    pub kernel: KernelRecord,
    /// Loaded modules, in order.
    pub modules: Vec<String>,
    /// The dm-verity root hash of the root file system.
    pub root_hash: String,
    /// The key that signed the root hash.
    pub root_key_id: String,
    /// The build time stamp.
    pub source_date_epoch: u64,
    /// The partitions, numbered from 1.
    pub partitions: Vec<PartitionRecord>,
    /// SHA-256 of the other output files.
    pub files: std::collections::BTreeMap<String, String>,
}

/// The exact kernel used.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelRecord {
    /// The recipe's package name.
    pub requested: String,
    /// The package holding the kernel.
    pub package: String,
    /// Its version.
    pub version: String,
    /// The `.deb`'s SHA-256.
    pub sha256: String,
    /// The kernel release.
    pub release: String,
}

/// One partition of the disk.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionRecord {
    /// Its number (`/dev/vdaN`).
    pub number: usize,
    /// Its label.
    pub name: String,
    /// The DPS type GUID.
    pub type_guid: uuid::Uuid,
    /// Its GUID.
    pub uuid: uuid::Uuid,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Steps [`build`] reports to its [`Progress`].
pub const BUILD_STEPS: usize = 8;

/// Builds the image into the staged `output`, signing the root hash with `root_signer` (whose
/// public key goes into the initramfs). The caller adds what else belongs with the image and
/// commits the stage; on an error it drops it, and nothing of the build is left.
pub fn build(
    spec: &ImageSpec,
    root_signer: &dyn Signer,
    output: &StagedOutput,
    progress: &mut Progress,
) -> Result<ImageManifest, ImageError> {
    let output = output.path();
    progress.step("checking the static binaries");
    let edged = elf::read_static(&spec.edged, &spec.architecture)?;
    let init = elf::read_static(&spec.init, &spec.architecture)?;

    progress.step(&format!("fetching {}", spec.kernel_package));
    let kernel = kernel::fetch(&spec.kernel_package, &spec.architecture, &spec.cache)?;

    progress.step("writing the root file system");
    let rootfs_path = output.join("rootfs.squashfs");
    let state_dir = "/var/lib/edged";
    let mut files = vec![
        root_file("/usr/bin/edged", 0o755, edged),
        root_file(
            "/etc/edged/device.toml",
            0o644,
            spec.device_config.clone().into_bytes(),
        ),
        root_file(
            "/usr/share/edged/initial.edgebundle",
            0o644,
            std::fs::read(&spec.initial_bundle)
                .map_err(ImageError::io("read", &spec.initial_bundle))?,
        ),
    ];
    for (name, pem) in &spec.trust_anchors {
        files.push(root_file(
            &format!("/etc/edged/trust.d/{name}"),
            0o644,
            pem.clone().into_bytes(),
        ));
    }
    rootfs::write(
        &files,
        &[state_dir, "/etc/edged/trust.d"],
        spec.source_date_epoch,
        &rootfs_path,
    )?;

    progress.step("computing the dm-verity tree");
    let hash = edge_verity::format_file(
        &rootfs_path,
        &output.join("rootfs.verity"),
        &edge_verity::Params::derived(),
    )
    .map_err(|error| ImageError::Tool(format!("dm-verity: {error}")))?;
    let root_hash = hash.root_hash();

    progress.step("signing the root hash");
    let public = root_signer.public_key();
    let signature = root_signer
        .sign(&root_hash.0)
        .map_err(|error| ImageError::Sign(error.to_string()))?;
    let signature_json = serde_json::to_vec_pretty(&RootHashSignature {
        root_hash: root_hash.to_string(),
        key_id: key_id(&public),
        signature: hex::encode(signature.to_bytes()),
    })
    .map_err(|error| ImageError::Sign(error.to_string()))?;
    write_file(&output.join("root-hash.sig.json"), &signature_json)?;

    progress.step("writing the initramfs");
    let init_config = InitConfig {
        disk: "/dev/vda".into(),
        modules: spec.modules.clone(),
        data_fs: "ext4".into(),
        edged: EdgedLaunch {
            program: "/usr/bin/edged".into(),
            options: spec.edged_options.clone(),
            state_dir: state_dir.into(),
            initial_bundle: "/usr/share/edged/initial.edgebundle".into(),
        },
    };
    let initramfs = initramfs(spec, &kernel, &init, &init_config, &public)?;
    write_file(&output.join("initramfs.cpio"), &initramfs)?;
    std::fs::copy(&kernel.image, output.join("vmlinuz"))
        .map_err(ImageError::io("copy", &kernel.image))?;
    if let Some(pvh) = &kernel.pvh {
        std::fs::copy(pvh, output.join("vmlinux")).map_err(ImageError::io("copy", pvh))?;
    }

    progress.step("making the ESP and the data partition");
    let esp_image = esp::build(
        spec.sizes.esp.div_ceil(1 << 20) << 20,
        u32::from_le_bytes(root_hash.0[..4].try_into().unwrap_or_default()),
        &std::fs::read(&kernel.image).map_err(ImageError::io("read", &kernel.image))?,
        &initramfs,
        "console=ttyS0 panic=-1 quiet",
    )?;
    let scratch = tempfile::tempdir()
        .map_err(ImageError::io("create", Path::new("a temporary directory")))?;
    let data_path = scratch.path().join("data.ext4");
    let data_uuid = disk::derived_guid(&[b"data-fs", &root_hash.0]).to_string();
    data::make(
        &data_path,
        spec.sizes.data.div_ceil(1 << 20) << 20,
        &data_uuid,
        spec.source_date_epoch,
    )?;

    progress.step("writing the GPT disk image");
    let table = disk::write(
        &output.join("disk.img"),
        &disk::DiskContents {
            architecture: &spec.architecture,
            sizes: spec.sizes,
            slot: disk::SlotImage {
                rootfs: &rootfs_path,
                verity: hash.bytes(),
                signature: &signature_json,
                root_hash: root_hash.0,
            },
            esp: Some(&esp_image),
            data: &data_path,
            boot_tries: spec.boot_tries,
        },
    )?;
    progress.finish();

    let mut hashes = std::collections::BTreeMap::new();
    for name in [
        "vmlinuz",
        "initramfs.cpio",
        "rootfs.squashfs",
        "rootfs.verity",
        "root-hash.sig.json",
    ] {
        let path = output.join(name);
        let bytes = std::fs::read(&path).map_err(ImageError::io("read", &path))?;
        hashes.insert(name.to_owned(), hex::encode(Sha256::digest(&bytes)));
    }
    let manifest = ImageManifest {
        name: spec.name.clone(),
        architecture: spec.architecture.clone(),
        kernel: KernelRecord {
            requested: kernel.requested.clone(),
            package: kernel.package.clone(),
            version: kernel.version.clone(),
            sha256: kernel.sha256.clone(),
            release: kernel.release.clone(),
        },
        modules: spec.modules.clone(),
        root_hash: root_hash.to_string(),
        root_key_id: key_id(&public),
        source_date_epoch: spec.source_date_epoch,
        partitions: table
            .partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| PartitionRecord {
                number: index + 1,
                name: partition.name.clone(),
                type_guid: partition.type_guid,
                uuid: partition.unique_guid,
                offset: partition.offset(),
                size: partition.size(),
            })
            .collect(),
        files: hashes,
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|error| ImageError::Tool(format!("cannot encode the manifest: {error}")))?;
    manifest_bytes.push(b'\n');
    write_file(&output.join("manifest.json"), &manifest_bytes)?;
    Ok(manifest)
}

fn root_file(path: &str, mode: u16, contents: Vec<u8>) -> rootfs::RootFile {
    rootfs::RootFile {
        path: path.to_owned(),
        mode,
        contents,
    }
}

fn initramfs(
    spec: &ImageSpec,
    kernel: &kernel::Kernel,
    init: &[u8],
    config: &InitConfig,
    root_key: &edge_bundle::VerifyingKey,
) -> Result<Vec<u8>, ImageError> {
    let mut archive = cpio::Cpio::new(spec.source_date_epoch);
    for directory in [
        "dev",
        "proc",
        "sys",
        "newroot",
        "etc",
        "etc/edge-init",
        "lib",
        "lib/modules",
    ] {
        archive.directory(directory);
    }
    archive.character_device("dev/console", 5, 1);
    archive.file("init", 0o755, init);
    let config_json = serde_json::to_vec_pretty(config).map_err(|error| {
        ImageError::Tool(format!("cannot encode the init configuration: {error}"))
    })?;
    archive.file("etc/edge-init.json", 0o644, &config_json);
    let pem = edge_bundle::public_key_pem(root_key)
        .map_err(|error| ImageError::Sign(error.to_string()))?;
    archive.file("etc/edge-init/root-hash.pub", 0o644, pem.as_bytes());
    for module in &spec.modules {
        let path = kernel::find_module(&kernel.modules, module)?;
        let bytes = std::fs::read(&path).map_err(ImageError::io("read", &path))?;
        archive.file(&format!("lib/modules/{module}.ko"), 0o644, &bytes);
    }
    Ok(archive.finish())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, bytes).map_err(ImageError::io("write", path))
}
