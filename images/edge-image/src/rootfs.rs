//! The root file system: a squashfs (gzip) holding edged, its configuration, trust anchors and
//! the initial bundle, every entry owned by root and dated `SOURCE_DATE_EPOCH`.

use std::io::Cursor;
use std::path::Path;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::ImageError;

/// One file to place in the root file system.
pub struct RootFile {
    /// The absolute path inside the image.
    pub path: String,
    /// The permission bits.
    pub mode: u16,
    /// The contents.
    pub contents: Vec<u8>,
}

/// Directories every root needs: mount points for the kernel file systems, `/tmp`, and edged's
/// state directory where the data partition is mounted.
const DIRECTORIES: &[&str] = &[
    "/dev", "/proc", "/sys", "/tmp", "/etc", "/usr", "/var", "/var/lib",
];

/// Writes the squashfs to `output`, padded to whole 4 KiB blocks (dm-verity covers only those).
pub fn write(
    files: &[RootFile],
    extra_directories: &[&str],
    mtime: u64,
    output: &Path,
) -> Result<u64, ImageError> {
    let mtime = u32::try_from(mtime).unwrap_or(u32::MAX);
    let mut filesystem = FilesystemWriter::default();
    filesystem.set_time(mtime);
    filesystem.set_root_mode(0o755);
    filesystem.set_compressor(
        FilesystemCompressor::new(Compressor::Gzip, None).map_err(ImageError::squashfs)?,
    );
    let directory = NodeHeader::new(0o755, 0, 0, mtime);
    let mut directories: Vec<String> = DIRECTORIES.iter().map(|d| (*d).to_owned()).collect();
    directories.extend(extra_directories.iter().map(|d| (*d).to_owned()));
    for file in files {
        let mut parent = Path::new(&file.path).parent();
        while let Some(path) = parent.filter(|path| *path != Path::new("/")) {
            directories.push(path.display().to_string());
            parent = path.parent();
        }
    }
    directories.sort();
    directories.dedup();
    for path in &directories {
        filesystem
            .push_dir(path, directory)
            .map_err(ImageError::squashfs)?;
    }
    for file in files {
        filesystem
            .push_file(
                Cursor::new(file.contents.clone()),
                &file.path,
                NodeHeader::new(file.mode, 0, 0, mtime),
            )
            .map_err(ImageError::squashfs)?;
    }
    let out = std::fs::File::create(output).map_err(ImageError::io("create", output))?;
    let mut writer = std::io::BufWriter::new(out);
    filesystem
        .write(&mut writer)
        .map_err(ImageError::squashfs)?;
    let out = writer
        .into_inner()
        .map_err(|error| ImageError::io("write", output)(error.into_error()))?;
    let length = out
        .metadata()
        .map_err(ImageError::io("stat", output))?
        .len();
    let padded = length.div_ceil(4096) * 4096;
    out.set_len(padded).map_err(ImageError::io("pad", output))?;
    Ok(padded)
}
