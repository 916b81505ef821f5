//! Checks that a binary placed in the image can run there: an ELF for the image's architecture
//! with no program interpreter (statically linked; the image has no C library).

use std::path::Path;

use crate::ImageError;

const PT_INTERP: u32 = 3;

/// Reads `path`, refusing a binary for another machine or one linked dynamically.
pub fn read_static(path: &Path, architecture: &str) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
    let refuse = |why: String| ImageError::Recipe(format!("{}: {why}", path.display()));
    if bytes.len() < 64 || &bytes[0..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(refuse("not a 64-bit ELF executable".into()));
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let machine = match u16_at(0x12) {
        0x3e => "amd64",
        0xb7 => "arm64",
        _ => "another architecture",
    };
    if machine != architecture {
        return Err(refuse(format!(
            "built for {machine}, but the image is {architecture} (build it with --target for {architecture}; see images/README.md)"
        )));
    }
    let program_headers =
        u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let entry_size = usize::from(u16_at(0x36));
    let count = usize::from(u16_at(0x38));
    let dynamic = (0..count).any(|index| {
        let at = program_headers + index * entry_size;
        bytes.get(at..at + 4).is_some_and(|kind| {
            u32::from_le_bytes(kind.try_into().unwrap_or_default()) == PT_INTERP
        })
    });
    if dynamic {
        return Err(refuse(
            "dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu".into(),
        ));
    }
    Ok(bytes)
}
