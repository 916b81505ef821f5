//! The staging writer: payload files are written on a thread of their own
//! while the verifying thread reads and hashes the next bytes, and each
//! complete file is fsynced on a third thread while the next one is being
//! written, so hashing, writing and flushing overlap instead of taking
//! turns. Bytes travel in a few large buffers that go back and forth between
//! the verifying and the writing thread, so nothing is copied more than the
//! read and the write themselves copy it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use crate::failpoint::{self, Failpoint};

/// The size of each buffer: large enough that every read, hash update and
/// write is one long run rather than many short ones.
const CHUNK: usize = 4 << 20;
/// Buffers in flight: how far reading and hashing may run ahead of the disk.
const IN_FLIGHT: usize = 4;
/// Complete files waiting for their fsync: bounds the open descriptors.
const UNSYNCED: usize = 64;

/// What the writer thread is asked to do, in order.
enum Job {
    /// Start writing a new file.
    Open { file: File, path: PathBuf },
    /// The next bytes of the open file: the first `usize` of the buffer.
    Bytes(Vec<u8>, usize),
    /// The open file is complete: fsync and close it.
    Close,
}

/// A write that failed on the writer thread, with the file it concerned.
pub type WriteError = (PathBuf, io::Error);

/// The verifying thread's end of the writer.
pub struct Writer<'scope> {
    jobs: SyncSender<Job>,
    free: Receiver<Vec<u8>>,
    /// A buffer the verifying side got back unused (at the end of a file).
    spare: Option<Vec<u8>>,
    writer: ScopedJoinHandle<'scope, Result<(), WriteError>>,
    syncer: ScopedJoinHandle<'scope, Result<(), WriteError>>,
}

impl<'scope> Writer<'scope> {
    /// Starts the writing and the fsyncing thread inside `scope`.
    pub fn start<'env>(scope: &'scope Scope<'scope, 'env>) -> Self {
        let (jobs, inbox) = sync_channel(IN_FLIGHT);
        let (give_back, free) = sync_channel(IN_FLIGHT);
        let (complete, unsynced) = sync_channel(UNSYNCED);
        for _ in 0..IN_FLIGHT {
            // Cannot fail: the channel has room for every buffer.
            let _ = give_back.send(vec![0_u8; CHUNK]);
        }
        let writer = scope.spawn(move || write_jobs(&inbox, &give_back, &complete));
        let syncer = scope.spawn(move || sync_files(&unsynced));
        Self {
            jobs,
            free,
            spare: None,
            writer,
            syncer,
        }
    }

    /// Streams `reader` to its end into `file` (already created at `path`)
    /// through the writer thread, which fsyncs the file once it is complete.
    /// Fails if the writer thread has stopped on an error; [`Self::finish`]
    /// then says which.
    pub fn copy(&mut self, file: File, path: PathBuf, reader: &mut dyn Read) -> io::Result<()> {
        self.send(Job::Open { file, path })?;
        loop {
            let mut buffer = match self.spare.take() {
                Some(buffer) => buffer,
                None => self.free.recv().map_err(|_| stopped())?,
            };
            let count = fill(reader, &mut buffer)?;
            if count == 0 {
                self.spare = Some(buffer);
                return self.send(Job::Close);
            }
            self.send(Job::Bytes(buffer, count))?;
            if count < CHUNK {
                return self.send(Job::Close);
            }
        }
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Waits until every file is written and fsynced; returns the first
    /// error of either thread (an fsync failure stops the writer too, so
    /// it is the one to report).
    pub fn finish(self) -> Result<(), WriteError> {
        drop(self.jobs);
        let panicked = |_| {
            Err((
                PathBuf::new(),
                io::Error::other("the staging writer panicked"),
            ))
        };
        let written = self.writer.join().unwrap_or_else(panicked);
        let synced = self.syncer.join().unwrap_or_else(panicked);
        synced.and(written)
    }
}

/// The error the verifying side sees when the writer thread has stopped.
fn stopped() -> io::Error {
    io::Error::other("the staging writer stopped")
}

/// Reads until `buffer` is full or the reader is at its end.
fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The writing thread: performs the jobs in order, hands every buffer back
/// and every complete file on to the fsyncing thread. Stops at the first
/// error, which closes its channels and so stops the verifying side too.
fn write_jobs(
    inbox: &Receiver<Job>,
    give_back: &SyncSender<Vec<u8>>,
    complete: &SyncSender<(File, PathBuf)>,
) -> Result<(), WriteError> {
    let mut open: Option<(File, PathBuf)> = None;
    let mut first_write = true;
    for job in inbox {
        match job {
            Job::Open { file, path } => open = Some((file, path)),
            Job::Bytes(buffer, count) => {
                let (file, path) = open
                    .as_mut()
                    .ok_or_else(|| (PathBuf::new(), io::Error::other("bytes for no file")))?;
                file.write_all(&buffer[..count])
                    .map_err(|error| (path.clone(), error))?;
                if std::mem::take(&mut first_write) {
                    failpoint::hit(Failpoint::StageWrite);
                }
                // The verifying side may have stopped; then the buffer is
                // simply dropped.
                let _ = give_back.send(buffer);
            }
            Job::Close => {
                if let Some((file, path)) = open.take() {
                    complete
                        .send((file, path.clone()))
                        .map_err(|_| (path, io::Error::other("the fsync thread stopped")))?;
                }
            }
        }
    }
    Ok(())
}

/// The fsyncing thread: flushes each complete file, in order, once.
fn sync_files(unsynced: &Receiver<(File, PathBuf)>) -> Result<(), WriteError> {
    for (file, path) in unsynced {
        failpoint::hit(Failpoint::StageFsyncFile);
        file.sync_all().map_err(|error| (path, error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_larger_and_smaller_than_a_chunk_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let contents: Vec<Vec<u8>> = [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 17]
            .iter()
            .map(|&size| (0..size).map(|index| (index * 7 % 251) as u8).collect())
            .collect();
        std::thread::scope(|scope| {
            let mut writer = Writer::start(scope);
            for (index, content) in contents.iter().enumerate() {
                let path = dir.path().join(index.to_string());
                let file = File::create_new(&path).unwrap();
                writer.copy(file, path, &mut content.as_slice()).unwrap();
            }
            writer.finish().unwrap();
        });
        for (index, content) in contents.iter().enumerate() {
            let written = std::fs::read(dir.path().join(index.to_string())).unwrap();
            assert!(written == *content, "file {index} differs");
        }
    }

    #[test]
    fn a_write_error_stops_the_reading_side_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        let result = std::thread::scope(|scope| {
            let mut writer = Writer::start(scope);
            let file = File::open(&path).unwrap();
            let content = vec![1_u8; 3 * CHUNK * IN_FLIGHT];
            let copied = writer.copy(file, path.clone(), &mut content.as_slice());
            (copied, writer.finish())
        });
        assert!(result.0.is_err(), "reading went on after the writer failed");
        let (failed, _) = result.1.unwrap_err();
        assert_eq!(failed, path);
    }
}
