//! The set of source files one compilation sees.
//!
//! The core never reads files itself (the CLI does); it receives their bytes here. Decoding and the
//! size limit live here so that every entry point refuses the same inputs in the same words.

use crate::span::FileId;

/// Files larger than this are refused before parsing: a `.edge` source this large is certainly not
/// hand-written, and refusing it keeps every offset in a `u32` and memory use bounded.
pub const MAXIMUM_SOURCE_BYTES: usize = 64 * 1024 * 1024;

/// One source file: its display name (as the user gave it) and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<u32>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(
            text.match_indices('\n')
                .map(|(offset, _)| offset as u32 + 1),
        );
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// The 0-based index of the line holding a byte offset.
    pub fn line_index(&self, offset: u32) -> usize {
        self.line_starts.partition_point(|&start| start <= offset) - 1
    }

    /// The byte offset where a 0-based line starts; the end of the text past the last line.
    pub fn line_start(&self, line_index: usize) -> usize {
        self.line_starts
            .get(line_index)
            .map_or(self.text.len(), |&start| start as usize)
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: u32) -> (usize, usize) {
        let line_index = self.line_index(offset);
        let line_start = self.line_starts[line_index] as usize;
        let end = (offset as usize).min(self.text.len());
        let column = self
            .text
            .get(line_start..end)
            .map_or(end - line_start, |prefix| prefix.chars().count());
        (line_index + 1, column + 1)
    }
}

/// Why bytes could not become a [`SourceFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRejection {
    /// The bytes are not UTF-8; `offset` is the first invalid byte.
    NotUtf8 { offset: usize },
    /// The file is larger than [`MAXIMUM_SOURCE_BYTES`].
    TooLarge { size: usize },
    /// The file contains NUL bytes, so it is almost certainly binary.
    Binary { offset: usize },
}

/// Decodes raw file bytes, refusing what cannot be a `.edge` source.
pub fn decode_source(bytes: &[u8]) -> Result<String, SourceRejection> {
    if bytes.len() > MAXIMUM_SOURCE_BYTES {
        return Err(SourceRejection::TooLarge { size: bytes.len() });
    }
    // NUL is looked for before decoding because binary files are rarely valid UTF-8, and "binary
    // file" says more about them than "not UTF-8".
    if let Some(offset) = bytes.iter().position(|&byte| byte == 0) {
        return Err(SourceRejection::Binary { offset });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| SourceRejection::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    Ok(text.to_owned())
}

/// All files of one compilation, indexed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceSet {
    files: Vec<SourceFile>,
}

impl SourceSet {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn find(&self, name: &str) -> Option<FileId> {
        self.files
            .iter()
            .position(|file| file.name == name)
            .map(|index| FileId(index as u32))
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(index, file)| (FileId(index as u32), file))
    }
}
