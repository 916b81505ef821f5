//! A cpio archive in the "newc" format the kernel unpacks as its initramfs. Entries carry the
//! build's fixed time, owner root and inode numbers in order, so the archive is reproducible.

/// Builds an archive in memory; entries must be added parents first.
pub struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    mtime: u32,
}

const DIRECTORY: u32 = 0o040000;
const REGULAR: u32 = 0o100000;
const CHARACTER: u32 = 0o020000;

impl Cpio {
    /// An empty archive whose entries are dated `mtime`.
    pub fn new(mtime: u64) -> Self {
        Self {
            bytes: Vec::new(),
            inode: 1,
            mtime: u32::try_from(mtime).unwrap_or(u32::MAX),
        }
    }

    /// A directory.
    pub fn directory(&mut self, path: &str) -> &mut Self {
        self.entry(path, DIRECTORY | 0o755, &[], (0, 0))
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> &mut Self {
        self.entry(path, REGULAR | mode, contents, (0, 0))
    }

    /// A character device node (the kernel opens `/dev/console` for init before devtmpfs is
    /// mounted, so it must exist in the archive).
    pub fn character_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.entry(path, CHARACTER | 0o600, &[], (major, minor))
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, contents: &[u8], rdev: (u32, u32)) -> &mut Self {
        let links = if mode & DIRECTORY == DIRECTORY { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0,
            0,
            links,
            self.mtime,
            u32::try_from(contents.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(path.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(contents);
        self.pad();
        self.inode += 1;
        self
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_what_was_added() {
        let mut archive = Cpio::new(1_700_000_000);
        archive
            .directory("etc")
            .file("etc/hello", 0o644, b"hi\n")
            .character_device("console", 5, 1);
        let bytes = archive.finish();
        let dir = tempfile::tempdir().unwrap();
        let archive_path = dir.path().join("a.cpio");
        std::fs::write(&archive_path, &bytes).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&archive_path)
            .output();
        // cpio(1) is the oracle when installed; the layout is checked by hand either way.
        if let Ok(output) = listing
            && output.status.success()
        {
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(text.contains("etc/hello"), "{text}");
            assert!(text.contains("5,   1") || text.contains("5, 1"), "{text}");
        }
        assert_eq!(&bytes[0..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        let hello = bytes.windows(9).position(|w| w == b"etc/hello").unwrap();
        assert_eq!(&bytes[hello - 110 + 54..hello - 110 + 62], b"00000003");
    }
}
