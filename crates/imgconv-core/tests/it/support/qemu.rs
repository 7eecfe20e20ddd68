//! The integration tests' view of the library's QEMU boot test ([`imgconv_core::qemu`],
//! the one harness the CLI's `verify --boot` and scripts/e2e use too): the firmware a test
//! names picks the machine and bus (SeaBIOS on `pc` with the disk on IDE; OVMF on q35 with
//! the disk on virtio), and the wait is for one complete serial line holding any of the
//! strings asked for.

use imgconv_core::convert::DiskBus;
use imgconv_core::qemu::{self as core_qemu, BootFirmware, BootOptions};
use std::path::Path;
use std::time::Duration;

/// How long a boot without a kernel (firmware and GRUB only) may take under TCG on a loaded
/// machine before the test gives up. A safety net, not a measure: the harness returns as
/// soon as the line it waits for is complete.
pub const GRUB_BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The firmware QEMU boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on the `pc` machine, the disk on IDE.
    SeaBios,
    /// OVMF without Secure Boot (OVMF_CODE_4M.fd) on q35, the disk on virtio.
    Ovmf,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled (OVMF_CODE_4M.secboot.fd
    /// + OVMF_VARS_4M.ms.fd, SMM on): only a Microsoft-signed shim may run.
    OvmfSecureBoot,
}

/// What the serial console showed.
#[derive(Debug)]
pub struct BootLog {
    /// The whole serial log as read last.
    pub text: String,
    /// The first complete line holding one of the strings waited for.
    pub line: Option<String>,
    /// Seconds from start to the end of the wait.
    pub seconds: f64,
    /// Why the wait ended without the line (QEMU exited, timeout), when it did.
    pub exited: Option<String>,
}

impl BootLog {
    /// The first complete line containing `needle`.
    pub fn line_with(&self, needle: &str) -> Option<&str> {
        self.text.lines().find(|l| l.contains(needle))
    }
}

/// Boot `disk` (never written: `-snapshot`) with `firmware` and wait until a complete serial
/// line contains one of `until`, QEMU stops by itself, or `limit` passes. A reboot of the
/// guest stops QEMU (`-no-reboot`).
pub fn boot(disk: &Path, firmware: Firmware, until: &[&str], limit: Duration) -> BootLog {
    boot_with(disk, firmware, until, limit, false)
}

/// [`boot`], with `reboots` letting the guest reboot inside the same QEMU (the `-snapshot`
/// overlay, and so what the guest wrote, survives the reset).
pub fn boot_with(
    disk: &Path,
    firmware: Firmware,
    until: &[&str],
    limit: Duration,
    reboots: bool,
) -> BootLog {
    let (fw, bus) = match firmware {
        Firmware::SeaBios => (BootFirmware::Bios, DiskBus::Ide),
        Firmware::Ovmf => (BootFirmware::Uefi, DiskBus::Virtio),
        Firmware::OvmfSecureBoot => (BootFirmware::UefiSecureBoot, DiskBus::Virtio),
    };
    let opts = BootOptions::new(disk)
        .with_firmware(fw)
        .with_bus(bus)
        .with_timeout(limit)
        .with_reboots(reboots)
        .with_accel(core_qemu::Accel::Tcg)
        .expect_any(until.iter().copied());
    let r = core_qemu::boot(&opts, &imgconv_core::NoProgress).unwrap_or_else(|e| {
        panic!("the boot test could not run (scripts/setup installs QEMU and OVMF): {e}")
    });
    let line = r.matched.first().cloned().flatten();
    eprintln!(
        "{firmware:?} boot of {}: {} after {:.1} s{}",
        disk.display(),
        line.as_deref().unwrap_or("nothing awaited"),
        r.seconds,
        r.reason
            .as_deref()
            .map_or(String::new(), |w| format!(" ({w})"))
    );
    BootLog {
        text: r.console,
        line,
        seconds: r.seconds,
        exited: r.reason,
    }
}
