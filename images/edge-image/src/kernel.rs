//! The kernel and its modules from Debian's `linux-image-*` packages, downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x` into a cache, once per version.
//!
//! Unpacking shells out to `dpkg-deb` rather than reading `ar` and `tar.xz` in Rust: a host that
//! can run `apt-get download` has it, it is the reference implementation of the format, and the
//! unpacked tree is cached, so its speed only matters on the first build.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::ImageError;

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package named by the recipe (usually a metapackage such as `linux-image-amd64`).
    pub requested: String,
    /// The package that holds the kernel (`linux-image-6.1.0-56-amd64`).
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// The `.deb`'s SHA-256, hex.
    pub sha256: String,
    /// The kernel release (`6.1.0-56-amd64`), the name of its modules directory.
    pub release: String,
    /// The kernel image.
    pub image: PathBuf,
    /// The uncompressed ELF kernel with its PVH entry point, when the kernel has one (x86-64
    /// with `CONFIG_PVH`): QEMU loads it directly, skipping the firmware hand-off and the
    /// in-guest xz decompression, which cost about 3 s of emulated CPU under TCG.
    pub pvh: Option<PathBuf>,
    /// `lib/modules/<release>` in the unpacked tree.
    pub modules: PathBuf,
}

/// Downloads (unless cached) and unpacks `package` for the Debian architecture `arch`.
pub fn fetch(package: &str, arch: &str, cache: &Path) -> Result<Kernel, ImageError> {
    std::fs::create_dir_all(cache).map_err(ImageError::io("create", cache))?;
    let meta = cached_or_download(package, arch, cache)?;
    // A metapackage (`linux-image-amd64`) depends on the versioned package holding the kernel.
    let depends = deb_field(&meta, "Depends")?;
    let real = match depends
        .split([',', '|'])
        .map(|alternative| alternative.trim().split([' ', '(']).next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-"))
    {
        Some(name) => cached_or_download(name, arch, cache)?,
        None => meta,
    };
    let package_name = deb_field(&real, "Package")?;
    let version = deb_field(&real, "Version")?;
    let sha256 = cached_sha256(&real)?;
    let tree = unpack(&real, cache, &package_name, &version)?;
    let modules_root = tree.join("lib/modules");
    let release = std::fs::read_dir(&modules_root)
        .map_err(ImageError::io("list", &modules_root))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .next()
        .ok_or_else(|| {
            ImageError::Kernel(format!("{package_name} has no lib/modules directory"))
        })?;
    let image = ["vmlinuz", "vmlinux", "Image"]
        .iter()
        .map(|name| tree.join(format!("boot/{name}-{release}")))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            ImageError::Kernel(format!("{package_name} has no boot/vmlinuz-{release}"))
        })?;
    let pvh = extract_pvh(&tree, &release, &image)?;
    Ok(Kernel {
        pvh,
        requested: package.to_owned(),
        package: package_name,
        version,
        sha256,
        modules: modules_root.join(&release),
        release,
        image,
    })
}

/// Decompresses the xz payload of an x86 bzImage built with `CONFIG_PVH` into
/// `boot/vmlinux-RELEASE` of the unpacked tree, once (with `xz`, like the unpacking with
/// `dpkg-deb`).
fn extract_pvh(tree: &Path, release: &str, image: &Path) -> Result<Option<PathBuf>, ImageError> {
    let target = tree.join(format!("boot/vmlinux-{release}"));
    if target.is_file() {
        return Ok(Some(target));
    }
    let config =
        std::fs::read_to_string(tree.join(format!("boot/config-{release}"))).unwrap_or_default();
    if !config.lines().any(|line| line == "CONFIG_PVH=y") {
        return Ok(None);
    }
    let bz_image = std::fs::read(image).map_err(ImageError::io("read", image))?;
    let Some(start) = bz_image
        .windows(6)
        .position(|window| window == b"\xfd7zXZ\x00")
    else {
        return Ok(None);
    };
    let staging = target.with_extension("partial");
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&staging).map_err(ImageError::io("create", &staging))?)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|error| ImageError::Kernel(format!("cannot run xz: {error}")))?;
    if let Some(mut input) = child.stdin.take() {
        // xz stops reading after the stream; the bytes after it are the bzImage's trailer.
        let _ = std::io::Write::write_all(&mut input, &bz_image[start..]);
    }
    let status = child
        .wait()
        .map_err(|error| ImageError::Kernel(format!("cannot run xz: {error}")))?;
    let elf = std::fs::read(&staging).map_err(ImageError::io("read", &staging))?;
    if !status.success() || !elf.starts_with(b"\x7fELF") {
        let _ = std::fs::remove_file(&staging);
        return Ok(None);
    }
    std::fs::rename(&staging, &target).map_err(ImageError::io("rename into", &target))?;
    Ok(Some(target))
}

/// The `.deb`'s SHA-256, kept beside it (`NAME.deb.sha256`) so that cached builds do not hash
/// 70 MB again.
fn cached_sha256(deb: &Path) -> Result<String, ImageError> {
    let mut sidecar = deb.as_os_str().to_owned();
    sidecar.push(".sha256");
    let sidecar = PathBuf::from(sidecar);
    if let Ok(text) = std::fs::read_to_string(&sidecar)
        && text.trim().len() == 64
    {
        return Ok(text.trim().to_owned());
    }
    let bytes = std::fs::read(deb).map_err(ImageError::io("read", deb))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    std::fs::write(&sidecar, format!("{digest}\n")).map_err(ImageError::io("write", &sidecar))?;
    Ok(digest)
}

/// The cached `.deb` of `package`, or a fresh `apt-get download` of it.
fn cached_or_download(package: &str, arch: &str, cache: &Path) -> Result<PathBuf, ImageError> {
    if let Some(found) = find_deb(package, arch, cache)? {
        return Ok(found);
    }
    let spec = format!("{package}:{arch}");
    let output = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(cache)
        .output()
        .map_err(|error| ImageError::Kernel(format!("cannot run apt-get: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("Unable to locate") && arch != host_arch() {
            format!(
                " (to download {arch} packages on this {} host, run `dpkg --add-architecture {arch} && apt-get update` first)",
                host_arch()
            )
        } else {
            String::new()
        };
        return Err(ImageError::Kernel(format!(
            "apt-get download {spec} failed: {}{hint}",
            stderr.trim()
        )));
    }
    find_deb(package, arch, cache)?
        .ok_or_else(|| ImageError::Kernel(format!("apt-get download {spec} wrote no .deb")))
}

fn find_deb(package: &str, arch: &str, cache: &Path) -> Result<Option<PathBuf>, ImageError> {
    let prefix = format!("{package}_");
    let suffix = format!("_{arch}.deb");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .map_err(ImageError::io("list", cache))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(&suffix))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn deb_field(deb: &Path, field: &str) -> Result<String, ImageError> {
    Ok(run(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
        "dpkg-deb -f",
    )?
    .trim()
    .to_owned())
}

/// Unpacks the package once into `cache/<package>_<version>/`, renamed into place when complete.
fn unpack(deb: &Path, cache: &Path, package: &str, version: &str) -> Result<PathBuf, ImageError> {
    let tree = cache.join(format!("{package}_{version}"));
    if tree.is_dir() {
        return Ok(tree);
    }
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache)
        .map_err(ImageError::io("create a directory in", cache))?;
    run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(staging.path()),
        "dpkg-deb -x",
    )?;
    std::fs::rename(staging.path(), &tree).map_err(ImageError::io("rename into", &tree))?;
    Ok(tree)
}

fn run(command: &mut Command, what: &str) -> Result<String, ImageError> {
    let output = command
        .output()
        .map_err(|error| ImageError::Kernel(format!("cannot run {what}: {error}")))?;
    if !output.status.success() {
        return Err(ImageError::Kernel(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Finds `NAME.ko` below the modules directory (Debian 12 ships them uncompressed); `-` and `_`
/// are interchangeable, as in modprobe.
pub fn find_module(modules: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let wanted = name.replace('-', "_");
    let mut stack = vec![modules.join("kernel")];
    while let Some(directory) = stack.pop() {
        for entry in std::fs::read_dir(&directory).map_err(ImageError::io("list", &directory))? {
            let path = entry.map_err(ImageError::io("list", &directory))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file
                .strip_suffix(".ko")
                .is_some_and(|stem| stem.replace('-', "_") == wanted)
            {
                return Ok(path);
            }
        }
    }
    Err(ImageError::Kernel(format!(
        "module {name} is not in {}",
        modules.display()
    )))
}
