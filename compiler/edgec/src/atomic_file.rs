//! Writing a file all at once, for every command that writes one (`fmt`, `import`, `build`,
//! `image build`'s update bundle): the new contents go to a temporary file, are flushed to disk,
//! and the temporary file is renamed over the target, then the directory is flushed so that the
//! rename survives a crash too. A reader, or the machine after a power cut, sees the old file or
//! the whole new one, never a part. On any failure the temporary file is removed and the target is
//! untouched.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};

/// What a commit does when the target's name is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace the file; it keeps its permissions.
    Replace,
    /// Fail with [`io::ErrorKind::AlreadyExists`], even when another process creates the file
    /// between the start of the write and the commit.
    Refuse,
}

/// A file being written under a temporary name and put in place by [`AtomicFile::commit`].
/// Dropped without a commit, it is removed and the target is untouched.
pub struct AtomicFile {
    target: PathBuf,
    temporary: NamedTempFile,
}

/// A file written in full and flushed to disk, closed, waiting under its temporary name for
/// [`StagedFile::commit`]; dropped without a commit, it is removed. A build stages every file
/// before committing any, and closing them keeps a build of many deployments within the limit
/// on open files.
pub struct StagedFile {
    target: PathBuf,
    temporary: TempPath,
}

impl AtomicFile {
    /// Starts writing `target` through a temporary file beside it.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        AtomicFile::create_in(directory_of(target), target)
    }

    /// Starts writing `target` through a temporary file in `directory`, which must be on the same
    /// file system as the target. The target's own directory need not exist yet: the commit
    /// creates it, so a build that fails before its commits leaves no empty directories behind.
    pub fn create_in(directory: &Path, target: &Path) -> io::Result<AtomicFile> {
        let name = target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let temporary = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".edgec-tmp")
            // Reduced by the umask like any new file's mode; a replaced file's own mode is put
            // back at the commit.
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(directory)?;
        Ok(AtomicFile {
            target: target.to_owned(),
            temporary,
        })
    }

    /// The path the file takes at its commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes the contents to disk and closes the file. A file that replaces another gets that
    /// file's permissions now, so that they are flushed with the contents.
    pub fn finish(self) -> io::Result<StagedFile> {
        match std::fs::metadata(&self.target) {
            Ok(metadata) => self
                .temporary
                .as_file()
                .set_permissions(metadata.permissions())?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        self.temporary.as_file().sync_all()?;
        Ok(StagedFile {
            target: self.target,
            temporary: self.temporary.into_temp_path(),
        })
    }

    /// Finishes the file and commits it: see [`StagedFile::commit`].
    pub fn commit(self, existing: Existing) -> io::Result<()> {
        self.finish()?.commit(existing)
    }
}

impl StagedFile {
    /// The path the file takes at its commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the file into place and flushes its directory (and, when the directory had to be
    /// made, the one holding it), so that after a crash the target holds its old contents or all
    /// of the new.
    pub fn commit(self, existing: Existing) -> io::Result<()> {
        let directory = directory_of(&self.target).to_owned();
        let directory_is_new = !directory.is_dir();
        if directory_is_new {
            std::fs::create_dir_all(&directory)?;
        }
        match existing {
            Existing::Replace => self.temporary.persist(&self.target),
            Existing::Refuse => self.temporary.persist_noclobber(&self.target),
        }
        .map_err(|error| error.error)?;
        sync_directory(&directory)?;
        if directory_is_new {
            sync_directory(directory_of(&directory))?;
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.temporary.write(buffer)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temporary.flush()
    }
}

/// Writes `contents` to `target` all at once (see [`AtomicFile`]).
pub fn write_atomically(target: &Path, contents: &[u8], existing: Existing) -> io::Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.write_all(contents)?;
    file.commit(existing)
}

/// The directory holding `path`, `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `directory`, sorted, so a leftover temporary file shows.
    fn names(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .expect("list the directory")
            .map(|entry| {
                entry
                    .expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replacing_keeps_the_permissions_of_the_file_it_replaces() {
        let directory = tempfile::tempdir().expect("a scratch directory");
        let target = directory.path().join("site.edge");
        std::fs::write(&target, "old").expect("the old file");
        std::fs::set_permissions(&target, Permissions::from_mode(0o640)).expect("chmod");
        write_atomically(&target, b"new", Existing::Replace).expect("replace");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "new");
        let mode = std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(names(directory.path()), ["site.edge"]);
    }

    #[test]
    fn refusing_an_existing_file_leaves_it_and_no_temporary_file() {
        let directory = tempfile::tempdir().expect("a scratch directory");
        let target = directory.path().join("site.edge");
        std::fs::write(&target, "old").expect("the old file");
        let error = write_atomically(&target, b"new", Existing::Refuse).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "old");
        assert_eq!(names(directory.path()), ["site.edge"]);
    }

    #[test]
    fn a_file_dropped_before_its_commit_leaves_nothing() {
        let directory = tempfile::tempdir().expect("a scratch directory");
        let mut file =
            AtomicFile::create(&directory.path().join("site.edge")).expect("start writing");
        file.write_all(b"half").expect("write");
        assert_eq!(names(directory.path()).len(), 1, "the temporary file");
        drop(file);
        assert!(names(directory.path()).is_empty());
    }

    #[test]
    fn a_commit_makes_the_directory_of_a_file_staged_elsewhere() {
        let directory = tempfile::tempdir().expect("a scratch directory");
        let target = directory.path().join("quickstart/deployment.json");
        let mut file = AtomicFile::create_in(directory.path(), &target).expect("start writing");
        file.write_all(b"{}").expect("write");
        assert!(!target.parent().expect("a parent").exists());
        file.commit(Existing::Replace).expect("commit");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "{}");
        assert_eq!(names(directory.path()), ["quickstart"]);
    }
}
