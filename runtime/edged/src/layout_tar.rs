//! The tar that `docker load` takes, made from an image layout directory a
//! piece at a time: headers come from the tar crate, file contents are read
//! in chunks straight into the request body, so a large layer is never held
//! in memory whole.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest piece of file content read at once.
const CHUNK: usize = 1 << 20;
/// Tar's block size: every file's content is padded to a multiple of it.
const BLOCK: u64 = 512;

/// One file or directory of the layout, in the order it is archived.
struct Member {
    path: PathBuf,
    name: String,
    size: Option<u64>,
}

/// An iterator over the pieces of the archive.
pub struct LayoutTar {
    members: std::vec::IntoIter<Member>,
    headers: tar::Builder<Vec<u8>>,
    /// The file whose content is being streamed, and the bytes left of it.
    current: Option<(File, u64, u64)>,
    finished: bool,
}

impl LayoutTar {
    /// Lists `dir` (files and directories only; a layout holds nothing else,
    /// and anything else is refused) and prepares to stream it.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let mut members = Vec::new();
        list(dir, "", &mut members)?;
        Ok(Self {
            members: members.into_iter(),
            headers: tar::Builder::new(Vec::new()),
            current: None,
            finished: false,
        })
    }

    /// The next piece of the current file, with the padding after its last.
    fn content(&mut self) -> Option<io::Result<Vec<u8>>> {
        let (file, size, left) = self.current.as_mut()?;
        let take = (*left).min(CHUNK as u64);
        let mut piece = vec![0_u8; take as usize];
        if let Err(error) = file.read_exact(&mut piece) {
            return Some(Err(error));
        }
        *left -= take;
        if *left == 0 {
            piece.resize(piece.len() + padding(*size) as usize, 0);
            self.current = None;
        }
        Some(Ok(piece))
    }

    /// The header of the next member, opening its content if it has any.
    fn header(&mut self, member: Member) -> io::Result<Vec<u8>> {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match member.size {
            Some(size) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(size);
                let file = File::open(&member.path)?;
                if size > 0 {
                    self.current = Some((file, size, size));
                }
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
            }
        }
        // The builder writes the header (and a long-name entry if needed);
        // the content follows separately.
        self.headers
            .append_data(&mut header, &member.name, io::empty())?;
        Ok(std::mem::take(self.headers.get_mut()))
    }
}

impl Iterator for LayoutTar {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(piece) = self.content() {
            return Some(piece);
        }
        match self.members.next() {
            Some(member) => Some(self.header(member)),
            None if !self.finished => {
                self.finished = true;
                Some(
                    self.headers
                        .finish()
                        .map(|()| std::mem::take(self.headers.get_mut())),
                )
            }
            None => None,
        }
    }
}

/// Zero bytes after `size` bytes of content up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Lists `dir` depth first, names sorted, paths relative to the layout.
fn list(dir: &Path, prefix: &str, members: &mut Vec<Member>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            members.push(Member {
                path: entry.path(),
                name: format!("{name}/"),
                size: None,
            });
            list(&entry.path(), &format!("{name}/"), members)?;
        } else if kind.is_file() {
            members.push(Member {
                path: entry.path(),
                name,
                size: Some(entry.metadata()?.len()),
            });
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a directory",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_archive_holds_the_layout_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let layer: Vec<u8> = (0..CHUNK * 2 + 700).map(|index| index as u8).collect();
        std::fs::write(blobs.join("a".repeat(64)), &layer).unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"[]").unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();

        let pieces: Vec<Vec<u8>> = LayoutTar::new(dir.path())
            .unwrap()
            .collect::<io::Result<_>>()
            .unwrap();
        assert!(
            pieces
                .iter()
                .all(|piece| piece.len() <= CHUNK + BLOCK as usize),
            "a piece is larger than a chunk"
        );
        let bytes = pieces.concat();
        let mut found = Vec::new();
        for entry in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            found.push((name, content));
        }
        let layer_name = format!("blobs/sha256/{}", "a".repeat(64));
        let expected = vec![
            ("blobs/".to_owned(), Vec::new()),
            ("blobs/sha256/".to_owned(), Vec::new()),
            (layer_name, layer),
            ("empty".to_owned(), Vec::new()),
            ("manifest.json".to_owned(), b"[]".to_vec()),
        ];
        assert!(found == expected, "the archive differs from the layout");
    }
}
