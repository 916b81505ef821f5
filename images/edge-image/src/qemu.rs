//! Boot tests: the image under `qemu-system-x86_64 -accel tcg` (never KVM: it hangs on these
//! machines) with the kernel and initramfs given directly, the disk on virtio, the serial
//! console on standard output, watched for edged's ready line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ImageError;

/// The line edge-init prints once edged runs its deployment and the slot is confirmed.
pub const READY_PREFIX: &str = "edged: ready:";

/// The test boot's kernel command line. `cryptomgr.notests` skips the boot-time self-tests of
/// the kernel's crypto implementations, about 1 s of emulated CPU; it is the harness's choice,
/// not part of the image (the loader gives the command line).
pub const KERNEL_COMMAND_LINE: &str = "console=ttyS0 panic=-1 quiet cryptomgr.notests";

/// What to boot.
pub struct BootTarget {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The disk image (modified by the boot: boot counting writes the partition table).
    pub disk: PathBuf,
}

impl BootTarget {
    /// The files `edgec image build` wrote to `directory`: the PVH kernel (`vmlinux`) when
    /// there is one, else the bzImage.
    pub fn in_directory(directory: &Path) -> Self {
        let pvh = directory.join("vmlinux");
        Self {
            kernel: if pvh.is_file() {
                pvh
            } else {
                directory.join("vmlinuz")
            },
            initrd: directory.join("initramfs.cpio"),
            disk: directory.join("disk.img"),
        }
    }
}

/// How one boot ended.
#[derive(Debug)]
pub struct Boot {
    /// The ready line, if edged came up.
    pub ready: Option<String>,
    /// Everything the serial console printed.
    pub console: String,
    /// Seconds from starting QEMU to the ready line (or to the end).
    pub seconds: f64,
    /// Whether the time ran out.
    pub timed_out: bool,
    /// CPU seconds QEMU used until then: close to the wall time of an idle machine, so figures
    /// taken on a busy one can be compared.
    pub cpu_seconds: Option<f64>,
}

/// Boots once, stopping at the ready line, when the guest reboots (QEMU exits: `-no-reboot`),
/// or after `timeout`. `echo` sees every console line as it arrives.
pub fn boot(
    target: &BootTarget,
    timeout: Duration,
    echo: &mut dyn FnMut(&str),
) -> Result<Boot, ImageError> {
    boot_with(target, timeout, true, echo)
}

/// Like [`boot`], but with `stop_at_ready` false it lets the guest run on after the ready line
/// until it reboots or the time runs out (to watch what edged does next).
pub fn boot_with(
    target: &BootTarget,
    timeout: Duration,
    stop_at_ready: bool,
    echo: &mut dyn FnMut(&str),
) -> Result<Boot, ImageError> {
    for file in [&target.kernel, &target.initrd, &target.disk] {
        if !file.is_file() {
            return Err(ImageError::Tool(format!(
                "{} does not exist",
                file.display()
            )));
        }
    }
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-no-reboot",
            "-nographic",
            "-m",
            "512M",
            "-smp",
            "1",
        ])
        .args(["-monitor", "none", "-serial", "stdio", "-nodefaults"])
        .arg("-kernel")
        .arg(&target.kernel)
        .arg("-initrd")
        .arg(&target.initrd)
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw",
            target.disk.display()
        ))
        .args(["-append", KERNEL_COMMAND_LINE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            ImageError::Tool(format!(
                "cannot run qemu-system-x86_64 (apt-get install qemu-system-x86): {error}"
            ))
        })?;
    let (lines, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(format!("qemu: {line}")).is_err() {
                    break;
                }
            }
        });
    }
    let mut console = String::new();
    let mut ready = None;
    let mut timed_out = false;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match receiver.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_owned();
                echo(&line);
                console.push_str(&line);
                console.push('\n');
                if line.starts_with(READY_PREFIX) {
                    ready = Some(line);
                    if stop_at_ready {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok(Boot {
        ready,
        console,
        seconds,
        timed_out,
        cpu_seconds,
    })
}

/// User plus system time of a running process, from `/proc/PID/stat` (in clock ticks, which
/// are 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Boots up to `boots` times (a device reboots after a failed slot; QEMU exits instead),
/// stopping at the first boot that reaches the ready line.
pub fn boot_until_ready(
    target: &BootTarget,
    timeout: Duration,
    boots: usize,
    echo: &mut dyn FnMut(&str),
) -> Result<Vec<Boot>, ImageError> {
    let mut results = Vec::new();
    for _ in 0..boots.max(1) {
        let result = boot(target, timeout, echo)?;
        let done = result.ready.is_some() || result.timed_out;
        results.push(result);
        if done {
            break;
        }
    }
    Ok(results)
}
