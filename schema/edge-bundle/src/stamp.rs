//! Detecting source files that change between the hashing pass and the
//! writing pass.
//!
//! The manifest (with every digest) is written before the payload, so large
//! inputs are read twice. Hashing them a second time would halve packaging
//! throughput (SHA-256 is the bottleneck at about 1.1 GB/s per core), so
//! the second pass instead compares each file's identity and change times
//! before and after reading it, as git and rsync do. A change that slipped
//! through anyway could only produce a bundle that fails verification,
//! never one that verifies with wrong content.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::BundleError;

/// The metadata that changes whenever a file's content does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    /// Takes the stamp of already fetched metadata.
    pub(crate) fn of(metadata: &Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// The file size at the time of the stamp.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Fails with [`BundleError::SourceChanged`] if the open file no longer
    /// matches this stamp.
    pub(crate) fn check(&self, path: &Path, file: &File) -> Result<(), BundleError> {
        let metadata = file.metadata().map_err(|source| BundleError::ReadSource {
            path: path.to_owned(),
            source,
        })?;
        if Self::of(&metadata) == *self {
            Ok(())
        } else {
            Err(BundleError::SourceChanged {
                path: path.to_owned(),
            })
        }
    }
}

/// Reads exactly `remaining` bytes, failing if the source got shorter, so a
/// truncated source cannot produce a malformed tar.
pub(crate) struct ExactReader<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> ExactReader<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        Self {
            inner: inner.take(size),
            remaining: size,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let count = self.inner.read(buffer)?;
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source file shrank while packaging",
            ));
        }
        self.remaining -= count as u64;
        Ok(count)
    }
}
