//! `imgconv verify OUT`: the library's [`imgconv_core::verify()`] with the CLI's choices,
//! printed. The checks themselves (partition table, e2fsck, swap, GRUB files, ESP, boot
//! code, the QEMU boot) are the library's; this module turns the flags into
//! [`VerifyOptions`], the report into text or JSON, and errors into exit codes and hints.

use crate::cli::VerifyArgs;
use crate::errors::{self, Class, CliError};
use crate::progress::CliProgress;
use crate::qemu;
use imgconv_core::e2fs_tools::FsckVia;
use imgconv_core::partition::PartitionTable;
use imgconv_core::qemu::{BootFirmware, BootResult, QemuError};
use imgconv_core::{BootCheck, CheckStatus, Error, VerifyOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One check as printed: `{name, ok, detail}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name: partition-table, fsck, grub-files, swap, esp, boot-code, boot.
    pub name: &'static str,
    pub ok: bool,
    /// What was found, in a sentence.
    pub detail: String,
}

/// Everything `verify` found, as printed (JSON with `--json`). Checks that do not apply
/// to the disk are left out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub image: PathBuf,
    /// True when every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
    /// The partitions read from the table, when it could be read.
    pub partitions: Option<PartitionTable>,
    /// The boot test's details, with `--boot`.
    pub boot: Option<BootResult>,
}

/// The library's options for these flags.
fn options(args: &VerifyArgs) -> VerifyOptions {
    let mut opts = VerifyOptions::new().with_fsck_via(if args.use_loop {
        FsckVia::LoopDevice
    } else {
        FsckVia::Offset
    });
    if args.boot {
        let mut boot = BootCheck::new()
            .with_firmware(args.uefi.then_some(BootFirmware::Uefi))
            .with_bus(args.bus.into())
            .with_timeout(Duration::from_secs(args.timeout))
            .with_qemu(qemu::qemu_binary())
            .with_accel(qemu::accel());
        for e in &args.expect {
            boot = boot.expect(e);
        }
        if let Some(log) = &args.serial_log {
            boot = boot.with_serial_log(log);
        }
        opts = opts.with_boot(boot);
    }
    opts
}

/// Run every check on `args.image`.
pub fn run(args: &VerifyArgs, progress: &mut CliProgress) -> Result<VerifyReport, CliError> {
    let report = imgconv_core::verify(&args.image, &options(args), progress)
        .map_err(|e| cli_error(&e, &args.image))?;
    progress.finish(true, "done");
    Ok(VerifyReport {
        image: report.image.clone(),
        ok: report.ok(),
        checks: report
            .run_checks()
            .map(|c| Check {
                name: c.name.as_str(),
                ok: c.status == CheckStatus::Passed,
                detail: c.detail.clone(),
            })
            .collect(),
        partitions: report.partitions,
        boot: report.boot,
    })
}

/// A library error in `verify`'s terms: the hints name this command's flags.
fn cli_error(e: &Error, image: &Path) -> CliError {
    let disk_hint = "give the path of a converted raw or qcow2 disk image";
    match e {
        Error::Verify(v) => match v.as_ref() {
            imgconv_core::VerifyError::Open(_) => {
                CliError::new(Class::Input, e.to_string(), disk_hint)
            }
            imgconv_core::VerifyError::RawCopy { .. } => {
                CliError::new(Class::Failure, e.to_string(), "check free space in $TMPDIR")
            }
            imgconv_core::VerifyError::EspCopy { .. } => CliError::new(
                Class::Failure,
                e.to_string(),
                "check $TMPDIR (it needs room for the ESP)",
            ),
            _ => errors::from_core(e, &Default::default()),
        },
        Error::Io { .. } => CliError::new(Class::Input, e.to_string(), disk_hint),
        Error::Qemu(q) => match q.as_ref() {
            QemuError::NotInstalled { .. } => CliError::new(
                Class::Failure,
                e.to_string(),
                "install QEMU (apt-get install qemu-system-x86), or verify without --boot",
            ),
            QemuError::Firmware { .. } => CliError::new(
                Class::Failure,
                e.to_string(),
                "install ovmf, or boot without --uefi",
            ),
            _ => CliError::new(
                Class::Failure,
                format!("the boot test could not run: {e}"),
                "check that QEMU is installed (scripts/setup) and $TMPDIR is writable",
            ),
        },
        Error::Tool(t) => errors::from_tool(t),
        _ => errors::from_core(
            e,
            &errors::Paths {
                source: Some(image.to_path_buf()),
                output: None,
            },
        ),
    }
}

/// The report for people.
pub fn human_text(r: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for c in &r.checks {
        let _ = writeln!(
            o,
            "{:<5} {:<16} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(b) = &r.boot {
        if !b.ok && !b.console_tail.is_empty() {
            let _ = writeln!(o, "serial console (last lines):");
            for l in b.console_tail.lines() {
                let _ = writeln!(o, "    {l}");
            }
        }
    }
    let _ = writeln!(
        o,
        "{}: {}",
        r.image.display(),
        if r.ok {
            "verified"
        } else {
            "verification FAILED"
        }
    );
    o
}
