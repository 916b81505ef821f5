//! File-system operations whose effects survive a power cut, each preceded by
//! its failpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::failpoint::{self, Failpoint, RecordPoints};

/// Fsyncs a directory so that renames and creations inside it are durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: temporary file, fsync, rename,
/// fsync of the directory. A crash leaves either the old or the new content.
/// `points` are the failpoints of a record on the apply or rollback path.
pub fn replace_file(path: &Path, bytes: &[u8], points: Option<RecordPoints>) -> io::Result<()> {
    let hit = |point: fn(&RecordPoints) -> Failpoint| {
        if let Some(points) = &points {
            failpoint::hit(point(points));
        }
    };
    let directory = path.parent().unwrap_or(Path::new("."));
    let temporary = temporary_path(path);
    hit(|points| points.write);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        hit(|points| points.fsync);
        file.sync_all()
    })();
    if let Err(error) = written {
        // A full disk must leave the directory as it was, not with half a record beside it.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    hit(|points| points.rename);
    fs::rename(&temporary, path)?;
    hit(|points| points.fsync_dir);
    fsync_dir(directory)
}

/// The temporary file [`replace_file`] writes before renaming.
pub fn temporary_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Renames after its failpoint.
pub fn rename(from: &Path, to: &Path, point: Failpoint) -> io::Result<()> {
    failpoint::hit(point);
    fs::rename(from, to)
}

/// Removes a directory tree if it exists.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
