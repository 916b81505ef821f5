//! The output directory of an image build, staged so that a failed build leaves nothing behind.
//!
//! Everything is written into a temporary directory next to the output (on the same file
//! system, so that a rename moves it) and moved into place only once the whole build
//! succeeded; dropping a [`StagedOutput`] without committing it removes the temporary
//! directory. An existing output is replaced only when it is empty or an earlier image (it
//! holds `manifest.json`), so a mistyped `-o` never deletes someone's directory. The
//! replacement is one atomic exchange of the two directories (`renameat2` with
//! `RENAME_EXCHANGE`) where the file system supports it; elsewhere the old output is renamed
//! aside first, leaving a moment in which the output path does not exist, but never one in
//! which it holds a partial image.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with};
use rustix::io::Errno;
use tempfile::TempDir;

use crate::ImageError;

/// The file that marks a directory as an image output that may be replaced.
const MARKER: &str = "manifest.json";

/// A build's output, written into a temporary directory until [`StagedOutput::commit`].
#[derive(Debug)]
pub struct StagedOutput {
    staging: TempDir,
    output: PathBuf,
}

impl StagedOutput {
    /// Creates the temporary directory beside `output`, after checking that an existing
    /// `output` may be replaced (so that a build that could not be delivered is not started).
    pub fn new(output: &Path) -> Result<Self, ImageError> {
        check_replaceable(output)?;
        let name = output
            .file_name()
            .ok_or_else(|| ImageError::OutputNotReplaceable {
                path: output.to_owned(),
                reason: "it does not name a directory of its own",
            })?;
        let parent = parent_of(output);
        std::fs::create_dir_all(parent).map_err(ImageError::io("create", parent))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            .tempdir_in(parent)
            .map_err(ImageError::io("create a directory in", parent))?;
        Ok(Self {
            staging,
            output: output.to_owned(),
        })
    }

    /// Where the build writes its files.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// The directory the files end up in.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Flushes every file to disk and moves the staged directory into place, replacing an
    /// earlier output; returns the output path.
    pub fn commit(self) -> Result<PathBuf, ImageError> {
        sync_tree(self.staging.path())?;
        let existing = check_replaceable(&self.output)?;
        if existing {
            replace(self.staging.path(), &self.output)?;
            // The staging path now holds the earlier output, which the drop removes.
        } else {
            std::fs::rename(self.staging.path(), &self.output)
                .map_err(ImageError::io("rename into", &self.output))?;
            // Renamed away: the drop finds nothing to remove.
            let _ = self.staging.keep();
        }
        sync_directory(parent_of(&self.output))?;
        Ok(self.output)
    }
}

/// Whether `output` exists; an error if it exists but is not a directory that may be replaced.
fn check_replaceable(output: &Path) -> Result<bool, ImageError> {
    let refuse = |reason| ImageError::OutputNotReplaceable {
        path: output.to_owned(),
        reason,
    };
    let metadata = match std::fs::symlink_metadata(output) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(ImageError::io("inspect", output)(error)),
    };
    if !metadata.is_dir() {
        return Err(refuse("it is not a directory"));
    }
    let empty = std::fs::read_dir(output)
        .map_err(ImageError::io("list", output))?
        .next()
        .is_none();
    if empty || output.join(MARKER).is_file() {
        Ok(true)
    } else {
        Err(refuse(
            "it is neither empty nor an earlier image (it has no manifest.json)",
        ))
    }
}

/// Swaps `staging` and `output` in one step, or where the file system cannot, renames the old
/// output aside into `staging`'s place first.
fn replace(staging: &Path, output: &Path) -> Result<(), ImageError> {
    match renameat_with(CWD, staging, CWD, output, RenameFlags::EXCHANGE) {
        Ok(()) => return Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
        Err(error) => return Err(ImageError::io("swap into", output)(error.into())),
    }
    replace_by_renames(staging, output)
}

/// The replacement without `RENAME_EXCHANGE`: the old output goes aside, the new one into its
/// place, and the old one to `staging`, where its owner removes it.
fn replace_by_renames(staging: &Path, output: &Path) -> Result<(), ImageError> {
    let aside = staging.with_extension("replaced");
    std::fs::rename(output, &aside).map_err(ImageError::io("move aside", output))?;
    if let Err(error) = std::fs::rename(staging, output) {
        // Put the earlier output back rather than leave the path empty.
        let _ = std::fs::rename(&aside, output);
        return Err(ImageError::io("rename into", output)(error));
    }
    std::fs::rename(&aside, staging).map_err(ImageError::io("rename", &aside))
}

/// The directory `output` is created in.
fn parent_of(output: &Path) -> &Path {
    match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Fsyncs every file and directory below `root`, then `root`, so the renamed output is
/// complete on disk even if the machine stops right after the rename.
fn sync_tree(root: &Path) -> Result<(), ImageError> {
    for entry in std::fs::read_dir(root).map_err(ImageError::io("list", root))? {
        let entry = entry.map_err(ImageError::io("list", root))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(ImageError::io("inspect", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(ImageError::io("sync", &path))?;
        }
    }
    sync_directory(root)
}

fn sync_directory(directory: &Path) -> Result<(), ImageError> {
    File::open(directory)
        .and_then(|file| file.sync_all())
        .map_err(ImageError::io("sync", directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dropped_stage_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let output = parent.path().join("image");
        let staged = StagedOutput::new(&output).unwrap();
        std::fs::write(staged.path().join("disk.img"), b"half").unwrap();
        drop(staged);
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn a_commit_creates_the_output() {
        let parent = tempfile::tempdir().unwrap();
        let output = parent.path().join("nested/image");
        let staged = StagedOutput::new(&output).unwrap();
        std::fs::write(staged.path().join(MARKER), b"{}").unwrap();
        assert_eq!(staged.commit().unwrap(), output);
        assert_eq!(entries(&output), [MARKER]);
        assert_eq!(entries(&parent.path().join("nested")), ["image"]);
    }

    #[test]
    fn a_commit_replaces_an_earlier_image_whole() {
        let parent = tempfile::tempdir().unwrap();
        let output = parent.path().join("image");
        std::fs::create_dir(&output).unwrap();
        std::fs::write(output.join(MARKER), b"old").unwrap();
        std::fs::write(output.join("vmlinux"), b"old kernel").unwrap();
        let staged = StagedOutput::new(&output).unwrap();
        std::fs::write(staged.path().join(MARKER), b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(entries(&output), [MARKER]);
        assert_eq!(std::fs::read(output.join(MARKER)).unwrap(), b"new");
        assert_eq!(entries(parent.path()), ["image"]);
    }

    #[test]
    fn the_fallback_replacement_leaves_only_the_new_output() {
        let parent = tempfile::tempdir().unwrap();
        let output = parent.path().join("image");
        let staging = parent.path().join("staging");
        std::fs::create_dir(&output).unwrap();
        std::fs::write(output.join("old"), b"").unwrap();
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("new"), b"").unwrap();
        replace_by_renames(&staging, &output).unwrap();
        assert_eq!(entries(&output), ["new"]);
        assert_eq!(entries(&staging), ["old"]);
    }

    #[test]
    fn a_directory_that_is_not_an_image_is_never_replaced() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::write(parent.path().join("notes.txt"), b"keep me").unwrap();
        let error = StagedOutput::new(parent.path()).unwrap_err();
        assert!(error.to_string().contains("no manifest.json"), "{error}");
        let file = parent.path().join("notes.txt");
        let error = StagedOutput::new(&file).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
        assert_eq!(entries(parent.path()), ["notes.txt"]);
    }
}
