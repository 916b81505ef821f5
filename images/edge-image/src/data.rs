//! The data partition: an empty ext4 file system (edged's state directory), made with
//! `mke2fs -d` on a plain file: no root, loop device or mount. The UUID and directory hash seed
//! are derived from the image, and `E2FSPROGS_FAKE_TIME` pins every timestamp, so the same
//! inputs give the same bytes.

use std::path::Path;
use std::process::Command;

use crate::ImageError;

/// Makes an ext4 file system of `size` bytes in `output`, labelled `data`.
pub fn make(output: &Path, size: u64, uuid: &str, mtime: u64) -> Result<(), ImageError> {
    let empty = tempfile::tempdir()
        .map_err(ImageError::io("create", Path::new("a temporary directory")))?;
    let file = std::fs::File::create(output).map_err(ImageError::io("create", output))?;
    file.set_len(size).map_err(ImageError::io("size", output))?;
    let result = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "data", "-U", uuid, "-E"])
        .arg(format!(
            "root_owner=0:0,hash_seed={uuid},lazy_itable_init=0"
        ))
        .arg("-d")
        .arg(empty.path())
        .arg(output)
        .env("E2FSPROGS_FAKE_TIME", mtime.max(1).to_string())
        .output()
        .map_err(|error| {
            ImageError::Tool(format!("cannot run mke2fs (install e2fsprogs): {error}"))
        })?;
    if !result.status.success() {
        return Err(ImageError::Tool(format!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    Ok(())
}
