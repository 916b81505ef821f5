//! The EFI system partition: a FAT file system holding the kernel, the initramfs and a boot
//! loader entry (Boot Loader Specification), for firmware and loaders other than QEMU's direct
//! kernel boot. Written in memory with `fatfs`; every time stamp is the FAT epoch (1980) and the
//! volume ID comes from the content, so it is reproducible.

use std::io::{Cursor, Write};

use crate::ImageError;

/// Builds the FAT image of `size` bytes.
pub fn build(
    size: u64,
    volume_id: u32,
    kernel: &[u8],
    initramfs: &[u8],
    options: &str,
) -> Result<Vec<u8>, ImageError> {
    let failed = |error: std::io::Error| ImageError::Tool(format!("cannot write the ESP: {error}"));
    let needed = kernel.len() + initramfs.len() + (1 << 20);
    if (size as usize) < needed {
        return Err(ImageError::Recipe(format!(
            "the ESP needs about {} MiB for the kernel and initramfs: raise partitions.esp_mib",
            needed.div_ceil(1 << 20)
        )));
    }
    let mut storage = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut storage,
        fatfs::FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(*b"EDGEC-ESP  "),
    )
    .map_err(failed)?;
    {
        let filesystem =
            fatfs::FileSystem::new(&mut storage, fatfs::FsOptions::new()).map_err(failed)?;
        write_files(&filesystem.root_dir(), kernel, initramfs, options).map_err(failed)?;
        filesystem.unmount().map_err(failed)?;
    }
    Ok(storage.into_inner())
}

fn write_files<T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<'_, T>,
    kernel: &[u8],
    initramfs: &[u8],
    options: &str,
) -> std::io::Result<()> {
    root.create_dir("loader")
        .and_then(|loader| loader.create_dir("entries"))?;
    let entry = format!("title edgec\nlinux /vmlinuz\ninitrd /initramfs.cpio\noptions {options}\n");
    for (path, contents) in [
        ("vmlinuz", kernel),
        ("initramfs.cpio", initramfs),
        ("loader/entries/edgec.conf", entry.as_bytes()),
    ] {
        root.create_file(path)
            .and_then(|mut file| file.write_all(contents))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esp_holds_the_files_and_is_reproducible() {
        let kernel = vec![7u8; 300_000];
        let first = build(4 << 20, 42, &kernel, b"cpio", "console=ttyS0").unwrap();
        assert_eq!(
            first,
            build(4 << 20, 42, &kernel, b"cpio", "console=ttyS0").unwrap()
        );
        let filesystem =
            fatfs::FileSystem::new(Cursor::new(first), fatfs::FsOptions::new()).unwrap();
        let mut read = Vec::new();
        std::io::Read::read_to_end(
            &mut filesystem.root_dir().open_file("vmlinuz").unwrap(),
            &mut read,
        )
        .unwrap();
        assert_eq!(read, kernel);
        assert!(build(1 << 20, 42, &kernel, b"cpio", "").is_err());
    }
}
