//! Payload files and how their bytes reach the bundle tar.
//!
//! Every payload's digest and size are known before the tar is written
//! (the manifest comes first), so large payloads are produced twice: once
//! to hash them, once to write them. The second pass checks file stamps
//! (see [`crate::stamp`]) and sizes, so a source that changes in between
//! fails the build instead of producing a bundle that fails verification on
//! the device.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::digest::{HashingWriter, Sha256Digest, copy_large};
use crate::error::BundleError;
use crate::layer::LayerPlan;
use crate::manifest::PayloadFile;
use crate::stamp::{ExactReader, FileStamp};

/// The gzip level for compressed layers. It is fixed because the bytes, and
/// so the digests, depend on it (and on the deflate implementation, which
/// Cargo.lock pins).
const GZIP_LEVEL: u32 = 6;
/// The chunk size passed from the layer producer thread to the writer.
const CHUNK: usize = 1 << 20;

/// How a generated layer is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum LayerCompression {
    /// Plain tar: fastest to build and verify; larger.
    #[default]
    None,
    /// gzip at a fixed level, without file name or time stamp in the header.
    Gzip,
}

/// A layer generated from a scanned root filesystem.
#[derive(Clone, Debug)]
pub(crate) struct LayerSource {
    pub(crate) plan: LayerPlan,
    pub(crate) compression: LayerCompression,
    pub(crate) epoch: u64,
}

/// The digests a generated layer needs in the image metadata.
pub(crate) struct LayerDigests {
    /// The digest of the uncompressed tar (the image config's diff id).
    pub(crate) diff_id: Sha256Digest,
    /// The digest of the stored blob.
    pub(crate) blob: Sha256Digest,
    /// The size of the stored blob.
    pub(crate) size: u64,
}

impl LayerSource {
    /// Writes the stored form of the layer to `out`.
    fn write_to<W: Write>(&self, out: W) -> Result<W, BundleError> {
        match self.compression {
            LayerCompression::None => self.plan.write_tar(out, self.epoch),
            LayerCompression::Gzip => {
                let encoder = GzBuilder::new().write(out, Compression::new(GZIP_LEVEL));
                self.plan
                    .write_tar(encoder, self.epoch)?
                    .finish()
                    .map_err(BundleError::Write)
            }
        }
    }

    /// Generates the layer once without storing it, for its digests.
    pub(crate) fn measure(&self) -> Result<LayerDigests, BundleError> {
        let stored = HashingWriter::new(io::sink());
        let (diff_id, stored) = match self.compression {
            LayerCompression::None => {
                let (_, digest, size) = self.plan.write_tar(stored, self.epoch)?.finish();
                return Ok(LayerDigests {
                    diff_id: digest,
                    blob: digest,
                    size,
                });
            }
            LayerCompression::Gzip => {
                let encoder = GzBuilder::new().write(stored, Compression::new(GZIP_LEVEL));
                let tar = self
                    .plan
                    .write_tar(HashingWriter::new(encoder), self.epoch)?;
                let (encoder, diff_id, _) = tar.finish();
                (diff_id, encoder.finish().map_err(BundleError::Write)?)
            }
        };
        let (_, blob, size) = stored.finish();
        Ok(LayerDigests {
            diff_id,
            blob,
            size,
        })
    }
}

/// Where a payload's bytes come from.
#[derive(Clone, Debug)]
pub(crate) enum PayloadSource {
    /// Small generated documents (image metadata).
    Bytes(Vec<u8>),
    /// A file copied as it is (OCI blobs, OS images), with its stamp from
    /// when it was hashed.
    File(PathBuf, FileStamp),
    /// A layer generated from a root filesystem directory.
    Layer(LayerSource),
}

/// One payload file with its digest and size already known.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    pub(crate) path: String,
    pub(crate) digest: Sha256Digest,
    pub(crate) size: u64,
    pub(crate) source: PayloadSource,
}

impl Payload {
    /// A payload whose bytes are in memory.
    pub(crate) fn bytes(path: String, bytes: Vec<u8>) -> Self {
        Self {
            path,
            digest: Sha256Digest::of(&bytes),
            size: bytes.len() as u64,
            source: PayloadSource::Bytes(bytes),
        }
    }

    /// The manifest listing of this payload.
    pub(crate) fn listing(&self) -> PayloadFile {
        PayloadFile {
            path: self.path.clone(),
            sha256: self.digest.hex(),
            size: self.size,
        }
    }

    /// Writes the payload's bytes to `out`.
    fn produce<W: Write>(&self, mut out: W) -> Result<W, BundleError> {
        match &self.source {
            PayloadSource::Bytes(bytes) => out
                .write_all(bytes)
                .map(|()| out)
                .map_err(BundleError::Write),
            PayloadSource::File(path, stamp) => {
                let file = File::open(path).map_err(|source| BundleError::ReadSource {
                    path: path.clone(),
                    source,
                })?;
                stamp.check(path, &file)?;
                copy_large(&mut ExactReader::new(&file, stamp.size()), &mut out).map_err(
                    |source| {
                        if source.kind() == io::ErrorKind::UnexpectedEof {
                            BundleError::SourceChanged { path: path.clone() }
                        } else {
                            BundleError::ReadSource {
                                path: path.clone(),
                                source,
                            }
                        }
                    },
                )?;
                stamp.check(path, &file)?;
                Ok(out)
            }
            PayloadSource::Layer(layer) => layer.write_to(out),
        }
    }

    /// The source path to blame if the content changes between passes.
    fn source_path(&self) -> PathBuf {
        match &self.source {
            PayloadSource::Bytes(_) => PathBuf::from(&self.path),
            PayloadSource::File(path, _) => path.clone(),
            PayloadSource::Layer(layer) => layer.plan.root().to_owned(),
        }
    }
}

/// The header every bundle entry gets: a regular file with fixed metadata.
pub(crate) fn regular_header(size: u64, epoch: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(epoch);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Appends one payload to the bundle tar, checking that the bytes written
/// are the bytes that were listed.
///
/// Files and layers are produced (read, framed, compressed) on a second
/// thread while this thread writes, so input and output overlap.
pub(crate) fn append_payload<W: Write>(
    builder: &mut tar::Builder<BufWriter<W>>,
    payload: &Payload,
    epoch: u64,
) -> Result<(), BundleError> {
    let mut header = regular_header(payload.size, epoch);
    if let PayloadSource::Bytes(bytes) = &payload.source {
        return builder
            .append_data(&mut header, &payload.path, bytes.as_slice())
            .map_err(BundleError::Write);
    }
    let (sender, receiver) = mpsc::sync_channel(4);
    thread::scope(|scope| {
        let producer = scope.spawn(move || payload.produce(ChunkWriter::new(sender))?.finish());
        let written = builder
            .append_data(
                &mut header,
                &payload.path,
                ChunkReader::new(receiver).take(payload.size),
            )
            .map_err(BundleError::Write);
        let produced = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A failed bundle write also stops the producer (broken channel), so
        // it is the more useful error; otherwise the producer knows best why
        // its output fell short.
        match (written, produced) {
            (Err(error), _) | (Ok(()), Err(error)) => Err(error),
            (Ok(()), Ok(size)) if size != payload.size => Err(BundleError::SourceChanged {
                path: payload.source_path(),
            }),
            (Ok(()), Ok(_)) => Ok(()),
        }
    })
}

/// The producer side of the layer channel: batches writes into chunks.
struct ChunkWriter {
    sender: SyncSender<Vec<u8>>,
    buffer: Vec<u8>,
    total: u64,
}

impl ChunkWriter {
    fn new(sender: SyncSender<Vec<u8>>) -> Self {
        Self {
            sender,
            buffer: Vec::with_capacity(CHUNK),
            total: 0,
        }
    }

    /// Sends the last partial chunk and returns the number of bytes sent;
    /// dropping without this loses the chunk, which the reader side detects
    /// as a short payload.
    fn finish(mut self) -> Result<u64, BundleError> {
        self.send().map_err(BundleError::Write)?;
        Ok(self.total)
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "bundle writer stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let count = buffer.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buffer[..count]);
        self.total += count as u64;
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The consumer side of the layer channel.
struct ChunkReader {
    receiver: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    offset: usize,
}

impl ChunkReader {
    fn new(receiver: Receiver<Vec<u8>>) -> Self {
        Self {
            receiver,
            chunk: Vec::new(),
            offset: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.chunk.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.offset = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let count = buffer.len().min(self.chunk.len() - self.offset);
        buffer[..count].copy_from_slice(&self.chunk[self.offset..self.offset + count]);
        self.offset += count;
        Ok(count)
    }
}
