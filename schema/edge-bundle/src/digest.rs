//! SHA-256 digests and the hashing adaptors that let the packager and the
//! verifier hash data while it streams, without holding it in memory.
//!
//! sha2 0.11 has no `asm` feature any more: it detects SHA-NI (x86) and the
//! ARMv8 crypto extensions at run time, which is what makes streaming
//! packaging fast.

use std::fmt;
#[cfg(feature = "build")]
use std::fs::File;
use std::io::{self, Read, Write};
#[cfg(feature = "build")]
use std::path::Path;

use sha2::{Digest as _, Sha256};

#[cfg(feature = "build")]
use crate::error::BundleError;
#[cfg(feature = "build")]
use crate::stamp::FileStamp;

/// A SHA-256 digest, shown as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Hashes a byte slice that is already in memory (small JSON documents).
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 lower-case hex digits, the form used in bundle manifests.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return None;
        }
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Parses the OCI form `sha256:<hex>`; other algorithms are not accepted.
    pub fn from_oci(text: &str) -> Option<Self> {
        text.strip_prefix("sha256:").and_then(Self::from_hex)
    }

    /// Returns the 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Returns the OCI form `sha256:<hex>`.
    pub fn oci(&self) -> String {
        format!("sha256:{}", self.hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.hex())
    }
}

#[cfg(feature = "build")]
/// A writer that hashes and counts everything that passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

#[cfg(feature = "build")]
impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Returns the inner writer, the digest and the byte count.
    pub(crate) fn finish(self) -> (W, Sha256Digest, u64) {
        (
            self.inner,
            Sha256Digest(self.hasher.finalize().into()),
            self.written,
        )
    }
}

#[cfg(feature = "build")]
impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Returns the digest and count of what has been read so far.
    pub(crate) fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest(self.hasher.finalize().into()), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.read += count as u64;
        Ok(count)
    }
}

#[cfg(feature = "build")]
/// Streams a reader to its end and returns its digest and size.
pub(crate) fn hash_reader<R: Read>(reader: R) -> io::Result<(Sha256Digest, u64)> {
    let mut hashing = HashingReader::new(reader);
    copy_large(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

#[cfg(feature = "build")]
/// Hashes a file and returns its digest with the stamp it had before and
/// after reading, failing if it changed meanwhile.
pub(crate) fn hash_file(path: &Path) -> Result<(Sha256Digest, FileStamp), BundleError> {
    let read_error = |source| BundleError::ReadSource {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let stamp = FileStamp::of(&file.metadata().map_err(read_error)?);
    let (digest, size) = hash_reader(&file).map_err(read_error)?;
    stamp.check(path, &file)?;
    if size != stamp.size() {
        return Err(BundleError::SourceChanged {
            path: path.to_owned(),
        });
    }
    Ok((digest, stamp))
}

/// Copies with a 1 MiB buffer: `io::copy` uses 8 KiB, which costs
/// measurable throughput on gigabyte layers.
pub(crate) fn copy_large<R: Read + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
) -> io::Result<u64> {
    let mut buffer = vec![0_u8; 1 << 20];
    let mut total = 0_u64;
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        writer.write_all(&buffer[..count])?;
        total += count as u64;
    }
}

#[cfg(all(test, feature = "build"))]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_both_text_forms() {
        let digest = Sha256Digest::of(b"abc");
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&digest.hex()), Some(digest));
        assert_eq!(Sha256Digest::from_oci(&digest.oci()), Some(digest));
        assert_eq!(Sha256Digest::from_hex(&digest.hex().to_uppercase()), None);
        assert_eq!(
            Sha256Digest::from_oci(&format!("sha512:{}", digest.hex())),
            None
        );
    }

    #[test]
    fn hashing_adaptors_agree_with_one_shot_hashing() {
        let data = vec![7_u8; 3 << 20];
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let (inner, digest, size) = writer.finish();
        assert_eq!((digest, size), (Sha256Digest::of(&data), data.len() as u64));
        assert_eq!(inner, data);
        assert_eq!(hash_reader(&data[..]).unwrap(), (digest, size));
    }
}
