//! `verify --boot`: the library's boot test ([`imgconv_core::qemu`]) with the CLI's
//! choices. `IMGCONV_QEMU` names another qemu binary; `IMGCONV_ACCEL=kvm|tcg` forces the
//! accelerator (otherwise KVM when it can run a stock kernel, TCG when not). Ctrl-C stops
//! QEMU through the CLI's cancel flag.

use crate::cli::BusArg;
use crate::errors::{Class, CliError};
use crate::signals;
use imgconv_core::qemu::{self, Accel, BootFirmware, BootOptions, QemuError};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use imgconv_core::qemu::BootResult;

/// The qemu binary to run.
pub fn qemu_binary() -> String {
    std::env::var("IMGCONV_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// Find the qemu binary on PATH (or as given), or say how to install it.
pub fn locate() -> Result<PathBuf, CliError> {
    let name = qemu_binary();
    let found = if name.contains('/') {
        Some(PathBuf::from(&name)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(&name))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| {
        CliError::new(
            Class::Failure,
            format!("{name} is not installed: apt-get install qemu-system-x86"),
            "install QEMU (apt-get install qemu-system-x86), or verify without --boot",
        )
    })
}

fn accel() -> Accel {
    match std::env::var("IMGCONV_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ => Accel::Auto,
    }
}

/// The CLI's cancel flag, as the library polls it.
struct CancelFlag;

impl imgconv_core::Progress for CancelFlag {
    fn is_cancelled(&self) -> bool {
        signals::cancelled()
    }
}

/// What `verify --boot` asks of a boot.
pub struct BootAsk<'a> {
    pub image: &'a Path,
    pub format: &'a str,
    pub bus: BusArg,
    pub uefi: bool,
    pub timeout: Duration,
    /// Lines to wait for, each a substring of one console line (all must appear); empty:
    /// a login prompt or the marker line.
    pub expect: &'a [String],
    /// Keep the serial console there.
    pub serial_log: Option<&'a Path>,
}

/// Boot the image and wait for what was asked.
pub fn boot(ask: &BootAsk<'_>) -> Result<BootResult, CliError> {
    let mut opts = BootOptions::new(ask.image)
        .with_format(ask.format)
        .with_bus(ask.bus.into())
        .with_firmware(if ask.uefi {
            BootFirmware::Uefi
        } else {
            BootFirmware::Bios
        })
        .with_timeout(ask.timeout)
        .with_qemu(locate()?)
        .with_accel(accel());
    for e in ask.expect {
        opts = opts.expect_any([e.as_str()]);
    }
    if let Some(log) = ask.serial_log {
        opts = opts.with_serial_log(log);
    }
    qemu::boot(&opts, &CancelFlag).map_err(|e| match e {
        QemuError::Cancelled => CliError::cancelled(),
        QemuError::Firmware { .. } => CliError::new(
            Class::Failure,
            e.to_string(),
            "install ovmf, or boot without --uefi",
        ),
        other => CliError::new(
            Class::Failure,
            format!("the boot test could not run: {other}"),
            "check that QEMU is installed (scripts/setup) and $TMPDIR is writable",
        ),
    })
}
