//! Device-mapper through its control device's ioctls (the same calls `dmsetup` makes): create a
//! device, load a one-target `verity` table read-only, resume it.

use std::fs::File;
use std::os::fd::AsRawFd;

const DM_IOCTL_SIZE: usize = 312;
const TARGET_SPEC_SIZE: usize = 40;
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;
const DM_READONLY_FLAG: u32 = 1;
const NAME_OFFSET: usize = 48;
const NAME_SIZE: usize = 128;

/// `_IOWR(0xfd, command, struct dm_ioctl)`.
fn request(command: u8) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | u64::from(command)
}

/// A `struct dm_ioctl` header for device `name`, followed by `payload_size` bytes.
fn header(name: &str, payload_size: usize, target_count: u32, flags: u32) -> Vec<u8> {
    let mut buffer = vec![0u8; DM_IOCTL_SIZE + payload_size];
    let total = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
    buffer[0..4].copy_from_slice(&4u32.to_ne_bytes());
    buffer[12..16].copy_from_slice(&total.to_ne_bytes());
    buffer[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
    buffer[20..24].copy_from_slice(&target_count.to_ne_bytes());
    buffer[28..32].copy_from_slice(&flags.to_ne_bytes());
    let name = name.as_bytes();
    let length = name.len().min(NAME_SIZE - 1);
    buffer[NAME_OFFSET..NAME_OFFSET + length].copy_from_slice(&name[..length]);
    buffer
}

fn call(control: &File, command: u8, buffer: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: `buffer` is a live, exclusively borrowed allocation at least as large as the
    // `data_size` written into its header, which is all the kernel reads or writes through the
    // pointer; the file descriptor is owned by `control` and open for the whole call.
    let result = unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            request(command) as libc::Ioctl,
            buffer.as_mut_ptr(),
        )
    };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates a read-only device `name` mapping `sectors` sectors through `target` with
/// `parameters`, and returns its node (`/dev/dm-N`).
pub fn create(name: &str, target: &str, sectors: u64, parameters: &str) -> std::io::Result<String> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;
    let mut created = header(name, 0, 0, 0);
    call(&control, DM_DEV_CREATE, &mut created)?;
    let device = u64::from_ne_bytes(created[40..48].try_into().unwrap_or_default());
    let minor = (device & 0xff) | ((device >> 12) & 0xfff00);

    let spec_size = (TARGET_SPEC_SIZE + parameters.len() + 1).div_ceil(8) * 8;
    let mut table = header(name, spec_size, 1, DM_READONLY_FLAG);
    let spec = &mut table[DM_IOCTL_SIZE..];
    spec[8..16].copy_from_slice(&sectors.to_ne_bytes());
    spec[24..24 + target.len()].copy_from_slice(target.as_bytes());
    spec[TARGET_SPEC_SIZE..TARGET_SPEC_SIZE + parameters.len()]
        .copy_from_slice(parameters.as_bytes());
    call(&control, DM_TABLE_LOAD, &mut table)?;

    let mut resume = header(name, 0, 0, 0);
    call(&control, DM_DEV_SUSPEND, &mut resume)?;
    Ok(format!("/dev/dm-{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // DM_DEV_CREATE and DM_TABLE_LOAD as computed by <linux/dm-ioctl.h> on x86-64.
        assert_eq!(request(DM_DEV_CREATE), 0xc138_fd03);
        assert_eq!(request(DM_TABLE_LOAD), 0xc138_fd09);
    }

    #[test]
    fn headers_carry_version_sizes_and_name() {
        let buffer = header("root-a", 48, 1, DM_READONLY_FLAG);
        assert_eq!(buffer.len(), 360);
        assert_eq!(&buffer[12..16], &360u32.to_ne_bytes());
        assert_eq!(&buffer[NAME_OFFSET..NAME_OFFSET + 7], b"root-a\0");
    }
}
