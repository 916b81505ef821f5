//! A reader in front of the `tar` crate that checks every raw 512-byte header before the crate
//! sees it. The crate reads a GNU long-name record or a PAX extended header into memory whole,
//! however large its header says it is, and it does so while it looks for the next entry, before
//! any signature can have been checked; a 1 GiB long name in an 8 KiB sparse file would have it
//! allocate gigabytes. The guard lets through only what a bundle can contain: long-name records
//! no longer than a payload path, and no PAX or GNU sparse records at all (`schema/BUNDLE.md`,
//! "Container").

use std::io::{self, Read};

use crate::grammar::MAX_PATH_BYTES;

/// The size of a tar header and the unit of tar data.
const BLOCK: usize = 512;
/// Where the entry type sits in a header.
const TYPE_AT: usize = 156;
/// The largest GNU long-name record: the longest payload path and its terminating NUL.
pub const MAX_LONG_NAME_RECORD: u64 = MAX_PATH_BYTES as u64 + 1;

/// Wraps the reader of a tar stream; reading fails (`InvalidData`) at the first header that
/// declares a metadata record a bundle cannot have.
pub struct TarGuard<R> {
    inner: R,
    /// The header being passed on, checked once all of it has been read.
    header: [u8; BLOCK],
    /// How much of `header` has been read from `inner`.
    filled: usize,
    /// How much of `header` has been passed on.
    served: usize,
    /// Bytes of entry data (with padding) before the next header.
    data_left: u64,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`, which must be at the start of a tar stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            header: [0; BLOCK],
            filled: 0,
            served: 0,
            data_left: 0,
        }
    }

    /// Reads the next header whole and checks it.
    fn next_header(&mut self) -> io::Result<()> {
        self.filled = 0;
        self.served = 0;
        while self.filled < BLOCK {
            match self.inner.read(&mut self.header[self.filled..]) {
                Ok(0) => return Ok(()),
                Ok(count) => self.filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.data_left = data_after(&self.header)?;
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.served == self.filled && self.data_left > 0 {
            let wanted = out
                .len()
                .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
            let count = self.inner.read(&mut out[..wanted])?;
            self.data_left -= count as u64;
            return Ok(count);
        }
        if self.served == self.filled {
            self.next_header()?;
        }
        let count = out.len().min(self.filled - self.served);
        out[..count].copy_from_slice(&self.header[self.served..self.served + count]);
        self.served += count;
        Ok(count)
    }
}

/// The bytes of data (padded to whole blocks) that follow `header`, or why the header is
/// refused.
fn data_after(header: &[u8; BLOCK]) -> io::Result<u64> {
    if header.iter().all(|&byte| byte == 0) {
        return Ok(0);
    }
    let refuse = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let size = tar::Header::from_byte_slice(header)
        .entry_size()
        .map_err(|_| refuse("a tar header has an unreadable size field".to_owned()))?;
    match header[TYPE_AT] {
        b'L' | b'K' if size > MAX_LONG_NAME_RECORD => Err(refuse(format!(
            "a GNU long-name record declares {size} bytes; bundle paths are at most {MAX_PATH_BYTES} bytes"
        ))),
        b'x' | b'g' => Err(refuse(
            "a PAX extended header; bundles carry none".to_owned(),
        )),
        b'S' => Err(refuse("a GNU sparse entry; bundles carry none".to_owned())),
        _ => size
            .checked_next_multiple_of(BLOCK as u64)
            .ok_or_else(|| refuse(format!("a tar header declares {size} bytes"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(size);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    /// Reads everything in pieces of `piece` bytes.
    fn read_all(bytes: &[u8], piece: usize) -> io::Result<Vec<u8>> {
        let mut guard = TarGuard::new(bytes);
        let mut out = Vec::new();
        let mut buffer = vec![0; piece];
        loop {
            match guard.read(&mut buffer)? {
                0 => return Ok(out),
                count => out.extend_from_slice(&buffer[..count]),
            }
        }
    }

    #[test]
    fn ordinary_entries_pass_unchanged_whatever_the_read_sizes() {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, size) in [("a", 0), ("b", 1), ("c", 512), ("d", 1500)] {
            let mut header = tar::Header::new_gnu();
            header.set_size(size as u64);
            tar.append_data(&mut header, name, &vec![7_u8; size][..])
                .unwrap();
        }
        let long = format!("payload/{}", "x".repeat(300));
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        tar.append_data(&mut header, &long, &b"abc"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        for piece in [1, 7, 512, 513, 4096] {
            assert_eq!(read_all(&bytes, piece).unwrap(), bytes, "{piece}");
        }
    }

    #[test]
    fn oversized_long_names_pax_and_sparse_records_are_refused() {
        for (kind, size, says) in [
            (b'L', 1 << 30, "long-name record declares 1073741824 bytes"),
            (b'K', MAX_LONG_NAME_RECORD + 1, "long-name record"),
            (b'x', 10, "PAX"),
            (b'g', 10, "PAX"),
            (b'S', 0, "sparse"),
        ] {
            let mut bytes = vec![0_u8; 1024];
            bytes.extend(header(kind, size));
            bytes.splice(0..1024, header(b'0', 512).into_iter().chain([1; 512]));
            let error = read_all(&bytes, 4096).unwrap_err();
            assert!(error.to_string().contains(says), "{error}");
        }
        let mut bytes = header(b'L', MAX_LONG_NAME_RECORD);
        bytes.resize(
            BLOCK + MAX_LONG_NAME_RECORD.next_multiple_of(512) as usize,
            b'x',
        );
        assert!(read_all(&bytes, 100).is_ok());
    }
}
