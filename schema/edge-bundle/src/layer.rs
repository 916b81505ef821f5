//! Turning a root filesystem directory into a deterministic image layer.
//!
//! The directory is scanned once into a [`LayerPlan`]; the layer tar is then
//! generated from the plan as often as needed (once to hash it, once to
//! write it), always byte-identical as long as the files keep the
//! [`FileStamp`] they had when scanned: entries in name order (depth first),
//! uid/gid 0, no user or group names, mtime = the caller's epoch, modes
//! normalised to 0755 (directories and anything executable) or 0644.
//! Set-uid bits, ownership, extended attributes and hard links are not
//! carried; device nodes, sockets and fifos are refused.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::BundleError;
use crate::stamp::{ExactReader, FileStamp};

/// What one layer entry is.
#[derive(Clone, Debug)]
enum EntryKind {
    Directory,
    File { stamp: FileStamp, executable: bool },
    Symlink { target: String },
}

/// One entry of the layer, with its path relative to the root.
#[derive(Clone, Debug)]
struct LayerEntry {
    relative: String,
    kind: EntryKind,
}

/// The scanned content of a root filesystem directory.
#[derive(Clone, Debug)]
pub(crate) struct LayerPlan {
    root: PathBuf,
    entries: Vec<LayerEntry>,
}

impl LayerPlan {
    /// Scans `root`, refusing what cannot be packaged, with the offending
    /// path in the error.
    pub(crate) fn scan(root: &Path) -> Result<Self, BundleError> {
        let metadata = fs::metadata(root).map_err(|source| BundleError::ReadSource {
            path: root.to_owned(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(BundleError::ReadSource {
                path: root.to_owned(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let mut entries = Vec::new();
        scan_directory(root, "", &mut entries)?;
        Ok(Self {
            root: root.to_owned(),
            entries,
        })
    }

    /// The directory this plan was made from.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the layer tar to `out`. Files are re-read; a file whose size
    /// changed since the scan is reported, and content changes are caught by
    /// the caller comparing digests.
    pub(crate) fn write_tar<W: Write>(&self, out: W, epoch: u64) -> Result<W, BundleError> {
        let mut builder = tar::Builder::new(out);
        for entry in &self.entries {
            let mut header = Header::new_gnu();
            header.set_mtime(epoch);
            header.set_uid(0);
            header.set_gid(0);
            let write_error = |source| BundleError::Write(source);
            match &entry.kind {
                EntryKind::Directory => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{}/", entry.relative), io::empty())
                        .map_err(write_error)?;
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &entry.relative, target)
                        .map_err(write_error)?;
                }
                EntryKind::File { stamp, executable } => {
                    let path = self.root.join(&entry.relative);
                    let file = File::open(&path).map_err(|source| BundleError::ReadSource {
                        path: path.clone(),
                        source,
                    })?;
                    stamp.check(&path, &file)?;
                    header.set_entry_type(EntryType::Regular);
                    header.set_mode(if *executable { 0o755 } else { 0o644 });
                    header.set_size(stamp.size());
                    let mut reader = ExactReader::new(&file, stamp.size());
                    builder
                        .append_data(&mut header, &entry.relative, &mut reader)
                        .map_err(|source| {
                            if source.kind() == io::ErrorKind::UnexpectedEof {
                                BundleError::SourceChanged { path: path.clone() }
                            } else {
                                BundleError::Write(source)
                            }
                        })?;
                    stamp.check(&path, &file)?;
                }
            }
        }
        builder.into_inner().map_err(BundleError::Write)
    }
}

/// Scans one directory level in byte order of names, depth first.
fn scan_directory(
    root: &Path,
    prefix: &str,
    entries: &mut Vec<LayerEntry>,
) -> Result<(), BundleError> {
    let directory = root.join(prefix);
    let read_error = |source| BundleError::ReadSource {
        path: directory.clone(),
        source,
    };
    let mut names = Vec::new();
    for item in fs::read_dir(&directory).map_err(read_error)? {
        let item = item.map_err(read_error)?;
        let path = item.path();
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| BundleError::NonUtf8Path { path: path.clone() })?;
        names.push(name);
    }
    names.sort_unstable();
    for name in names {
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = root.join(&relative);
        let metadata = fs::symlink_metadata(&path).map_err(|source| BundleError::ReadSource {
            path: path.clone(),
            source,
        })?;
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            entries.push(LayerEntry {
                relative: relative.clone(),
                kind: EntryKind::Directory,
            });
            scan_directory(root, &relative, entries)?;
        } else if file_type.is_file() {
            let executable = metadata.permissions().mode() & 0o111 != 0;
            entries.push(LayerEntry {
                relative,
                kind: EntryKind::File {
                    stamp: FileStamp::of(&metadata),
                    executable,
                },
            });
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|source| BundleError::ReadSource {
                path: path.clone(),
                source,
            })?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| BundleError::NonUtf8Path { path: path.clone() })?;
            if escapes_root(&relative, &target) {
                return Err(BundleError::SymlinkEscapes { path, target });
            }
            entries.push(LayerEntry {
                relative,
                kind: EntryKind::Symlink { target },
            });
        } else {
            let kind = if file_type.is_block_device() {
                "block device"
            } else if file_type.is_char_device() {
                "character device"
            } else if file_type.is_socket() {
                "socket"
            } else if file_type.is_fifo() {
                "fifo"
            } else {
                "special file"
            };
            return Err(BundleError::UnsupportedFileType { path, kind });
        }
    }
    Ok(())
}

/// Whether a link at `relative` pointing to `target` leaves the root when
/// resolved lexically. Absolute targets are taken relative to the root, as
/// they are inside the container; climbing above the root with `..` counts
/// as escaping even though the kernel would clamp it, because such a link
/// is almost certainly a host path.
fn escapes_root(relative: &str, target: &str) -> bool {
    let mut depth: usize = if target.starts_with('/') {
        0
    } else {
        relative.split('/').count() - 1
    };
    for component in Path::new(target).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(parent) => depth = parent,
                None => return true,
            },
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside_the_root_are_allowed_and_escapes_refused() {
        assert!(!escapes_root("bin/sh", "busybox"));
        assert!(!escapes_root("bin/sh", "/bin/busybox"));
        assert!(!escapes_root("usr/bin/x", "../../bin/busybox"));
        assert!(escapes_root("usr/bin/x", "../../../etc/passwd"));
        assert!(escapes_root("x", "../y"));
        assert!(escapes_root("x", "/../etc"));
    }
}
