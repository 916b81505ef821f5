//! The few system calls an init needs before anything else exists: mounting the kernel's file
//! systems, loading modules, waiting for devices, rebooting.

use std::ffi::CStr;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, mount};

/// Mounts `/dev` (devtmpfs: nodes appear by themselves), `/proc` and `/sys` under `root`.
pub fn mount_kernel_filesystems(root: &str) -> Result<(), String> {
    for (kind, target) in [("devtmpfs", "dev"), ("proc", "proc"), ("sysfs", "sys")] {
        let target = format!("{root}/{target}");
        mount(
            kind,
            target.as_str(),
            kind,
            MountFlags::empty(),
            None::<&CStr>,
        )
        .map_err(|error| format!("cannot mount {kind} on {target}: {error}"))?;
    }
    Ok(())
}

/// Mounts a block device.
pub fn mount_device(device: &str, target: &str, kind: &str, read_only: bool) -> Result<(), String> {
    let flags = if read_only {
        MountFlags::RDONLY
    } else {
        MountFlags::NOATIME
    };
    mount(device, target, kind, flags, None::<&CStr>)
        .map_err(|error| format!("cannot mount {device} ({kind}) on {target}: {error}"))
}

/// Loads one module; one that is already loaded (or built in) is fine.
pub fn load_module(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    match rustix::system::finit_module(&file, c"", 0) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(error) => Err(format!("cannot load {}: {error}", path.display())),
    }
}

/// Waits for a device node to appear (the kernel probes disks asynchronously).
pub fn wait_for(path: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !Path::new(path).exists() {
        if start.elapsed() > timeout {
            return Err(format!("{path} did not appear within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Restarts the machine (QEMU with `-no-reboot` exits instead); PID 1 must never return.
pub fn reboot() -> ! {
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
