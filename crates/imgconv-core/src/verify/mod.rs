//! The verify stage: is this a disk imgconv would have written, and does it boot?
//!
//! [`verify()`] runs static checks on a converted disk (raw, or a container such as qcow2
//! read through [`crate::formats`]), each reported whether or not the others pass, and
//! optionally the QEMU boot test of [`crate::qemu`]:
//!
//! - **partition-table**: MBR: p1 Linux 0x83 active, the first 0x82 partition the swap;
//!   GPT (`Firmware::Uefi`/`Hybrid`): the root found by its type GUID, swap, ESP and BIOS
//!   boot partitions by theirs. Either way all within the disk, past the table, no overlap.
//! - **fsck**: `e2fsck -fn` on the root and on every other ext filesystem of the disk
//!   ([`crate::e2fs_tools::check_read_only`]).
//! - **grub-files**: grub.cfg, the i386-pc modules (when BIOS boot code needs them), a
//!   kernel with its initrd on the root (or on a separate `/boot`), grub.cfg booting the
//!   root by its UUID and every file it loads present (read with [`crate::ext::read`]).
//! - **swap**: the swap v1 header ([`crate::swap::read_header`]).
//! - **esp**: `fsck.fat -n` on a copy of the ESP and an EFI loader in it
//!   ([`crate::boot::uefi::efi_files`]).
//! - **boot-code**: GRUB's boot.img in LBA 0 pointing at a core.img that lies where it
//!   belongs (before p1 on MBR, in the BIOS boot partition on a hybrid disk), whose
//!   diskboot sector loads the rest of it from the next sector
//!   ([`crate::boot::grub_bios`]). A UEFI-only disk has none.
//! - **boot**: with [`VerifyOptions::boot`], the disk booted under QEMU, with OVMF for a
//!   GPT disk without BIOS boot code.
//!
//! A check that does not apply to the disk (no swap partition, no ESP, no BIOS boot code
//! on a UEFI-only disk, no boot test asked for) is [`CheckStatus::Skipped`]. `Err` is
//! kept for what stops every check: an image that cannot be opened, no room for a
//! scratch copy, an outside tool that is missing, cancellation.

mod checks;
#[cfg(test)]
mod tests;

use crate::blockio::Region;
use crate::e2fs_tools::{FsckOutcome, FsckVia};
use crate::hardware::DiskBus;
use crate::partition::{read_table, PartitionTable};
use crate::progress::{Progress, Stage};
use crate::qemu::{Accel, BootFirmware, BootOptions, BootResult};
use crate::swap::SwapHeader;
use checks::Layout;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What [`verify()`] checks beyond the static checks, and how.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// How `e2fsck -fn` reaches each filesystem.
    pub fsck_via: FsckVia,
    /// Boot the disk under QEMU; `None`: no boot test (the `boot` check is skipped).
    pub boot: Option<BootCheck>,
}

impl VerifyOptions {
    /// The static checks only, e2fsck through `image?offset=N`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set [`VerifyOptions::fsck_via`].
    pub fn with_fsck_via(mut self, via: FsckVia) -> Self {
        self.fsck_via = via;
        self
    }
    /// Set [`VerifyOptions::boot`].
    pub fn with_boot(mut self, boot: BootCheck) -> Self {
        self.boot = Some(boot);
        self
    }
}

/// How the boot test boots the disk (see [`crate::qemu::BootOptions`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BootCheck {
    /// Firmware; `None`: SeaBIOS, or OVMF when the disk has no BIOS boot code.
    pub firmware: Option<BootFirmware>,
    /// The controller the disk sits on.
    pub bus: DiskBus,
    /// Give up after this long.
    pub timeout: Duration,
    /// Console lines to wait for, each a substring of one line (all must appear); empty:
    /// [`crate::qemu::DEFAULT_EXPECT`].
    pub expect: Vec<String>,
    /// Keep the serial console in this file.
    pub serial_log: Option<PathBuf>,
    /// The QEMU binary (a path, or a name looked up on PATH).
    pub qemu: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
}

impl Default for BootCheck {
    fn default() -> Self {
        BootCheck {
            firmware: None,
            bus: DiskBus::Virtio,
            timeout: Duration::from_secs(300),
            expect: Vec::new(),
            serial_log: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Auto,
        }
    }
}

impl BootCheck {
    /// Firmware chosen from the disk, virtio, 300 s, a login prompt or the marker line,
    /// `qemu-system-x86_64` from PATH, KVM when usable.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set [`BootCheck::firmware`].
    pub fn with_firmware(mut self, firmware: Option<BootFirmware>) -> Self {
        self.firmware = firmware;
        self
    }
    /// Set [`BootCheck::bus`].
    pub fn with_bus(mut self, bus: DiskBus) -> Self {
        self.bus = bus;
        self
    }
    /// Set [`BootCheck::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Add a console line to wait for.
    pub fn expect(mut self, text: impl Into<String>) -> Self {
        self.expect.push(text.into());
        self
    }
    /// Set [`BootCheck::serial_log`].
    pub fn with_serial_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial_log = Some(path.into());
        self
    }
    /// Set [`BootCheck::qemu`].
    pub fn with_qemu(mut self, qemu: impl Into<PathBuf>) -> Self {
        self.qemu = qemu.into();
        self
    }
    /// Set [`BootCheck::accel`].
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }
}

/// The checks, by their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CheckName {
    /// The partition table and the roles of its partitions.
    PartitionTable,
    /// `e2fsck -fn` on one ext filesystem (one check per filesystem).
    Fsck,
    /// grub.cfg, GRUB modules, kernel and initrd.
    GrubFiles,
    /// The swap v1 header.
    Swap,
    /// The EFI System Partition and its loader.
    Esp,
    /// GRUB's BIOS boot code and core image.
    BootCode,
    /// The QEMU boot test.
    Boot,
}

impl CheckName {
    /// The stable name: `partition-table`, `fsck`, `grub-files`, `swap`, `esp`,
    /// `boot-code`, `boot`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::PartitionTable => "partition-table",
            CheckName::Fsck => "fsck",
            CheckName::GrubFiles => "grub-files",
            CheckName::Swap => "swap",
            CheckName::Esp => "esp",
            CheckName::BootCode => "boot-code",
            CheckName::Boot => "boot",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// What was looked for is there and sound.
    Passed,
    /// Something is missing or wrong; the detail says what.
    Failed,
    /// The check does not apply to this disk, or was not asked for.
    Skipped,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Which check.
    pub name: CheckName,
    /// How it ended.
    pub status: CheckStatus,
    /// The partition it looked at, when it is about one.
    pub partition: Option<usize>,
    /// What was found, in a sentence.
    pub detail: String,
}

impl Check {
    /// True unless the check failed (a skipped check is not a failure).
    pub fn ok(&self) -> bool {
        self.status != CheckStatus::Failed
    }
}

/// Everything [`verify()`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The image as given.
    pub image: PathBuf,
    /// Every check, in the order run (skipped ones included).
    pub checks: Vec<Check>,
    /// The partitions read from the table, when it could be read.
    pub partitions: Option<PartitionTable>,
    /// What `e2fsck -fn` said about each ext filesystem, by partition number.
    pub fsck: Vec<(usize, FsckOutcome)>,
    /// The swap header found, with its partition number.
    pub swap: Option<(usize, SwapHeader)>,
    /// The LBA GRUB's boot code loads core.img from, when it was found.
    pub core_lba: Option<u64>,
    /// The boot test's details, when one ran.
    pub boot: Option<BootResult>,
}

impl VerifyReport {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok())
    }

    /// The checks that ran (passed or failed), without the skipped ones.
    pub fn run_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.status != CheckStatus::Skipped)
    }
}

/// What stops [`verify()`] before it can report on the checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The image cannot be opened or its container format read.
    #[error(transparent)]
    Open(crate::formats::FormatError),
    /// A container disk (qcow2, ...) could not be copied to a raw scratch file for the
    /// outside tools, which read raw images only.
    #[error("cannot make a raw copy of {} to check: {source}", path.display())]
    RawCopy {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ESP could not be copied to a scratch file for `fsck.fat` (which reads no
    /// offsets).
    #[error("cannot copy the ESP to a temporary file: {source}")]
    EspCopy {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl VerifyError {
    /// The image is the input of a verification; the scratch copies live in the
    /// temporary directory, which is neither input nor output.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            VerifyError::Open(crate::formats::FormatError::Io { source, .. }) => {
                crate::error::io_kind(source, crate::ErrorKind::Input)
            }
            VerifyError::Open(_) => crate::ErrorKind::Input,
            VerifyError::RawCopy { .. } | VerifyError::EspCopy { .. } => crate::ErrorKind::Internal,
        }
    }
}

/// Check the converted disk `image` (raw, qcow2 or another format [`crate::formats`]
/// reads) and, with [`VerifyOptions::boot`], boot it. Every check is reported in the
/// [`VerifyReport`], failed ones with what is wrong; `Err` only when the checks cannot run
/// at all (see the module documentation). A QEMU that is missing is reported before any
/// other work.
///
/// The stages [`Stage::Fsck`], [`Stage::EspCheck`] and [`Stage::BootTest`] are reported
/// to `progress`, which is polled for cancellation while outside tools run.
pub fn verify(
    image: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn Progress,
) -> crate::Result<VerifyReport> {
    let qemu = match &opts.boot {
        Some(b) => Some(crate::qemu::locate(&b.qemu)?),
        None => None,
    };
    // A container disk is checked through a sparse raw copy in the temporary directory,
    // since e2fsck and fsck.fat read raw images; the boot test boots a qcow2 itself.
    let opened = crate::formats::open(image, &Default::default()).map_err(VerifyError::Open)?;
    let kind = opened.region.format().kind;
    let (raw_path, _scratch) = if matches!(kind, "raw" | "block-device") {
        (image.to_path_buf(), None)
    } else {
        let tmp = tempfile::Builder::new()
            .prefix("imgconv-verify-")
            .suffix(".raw")
            .tempfile()
            .and_then(|t| {
                crate::formats::copy_to_raw(&opened.region, t.as_file())?;
                Ok(t)
            })
            .map_err(|source| VerifyError::RawCopy {
                path: image.to_path_buf(),
                source,
            })?;
        (tmp.path().to_path_buf(), Some(tmp))
    };
    drop(opened);
    let (boot_image, boot_format) = match kind {
        "qcow2" => (image.to_path_buf(), "qcow2"),
        _ => (raw_path.clone(), "raw"),
    };
    let disk = Region::open(&raw_path)?;
    let mut report = VerifyReport {
        image: image.to_path_buf(),
        checks: Vec::new(),
        partitions: None,
        fsck: Vec::new(),
        swap: None,
        core_lba: None,
        boot: None,
    };

    let layout = match read_table(&disk) {
        Ok(Some(t)) => {
            let (layout, verdict) = checks::table_sanity(&t, disk.len());
            report.add(CheckName::PartitionTable, None, verdict);
            report.partitions = Some(t);
            layout
        }
        Ok(None) => {
            report.add(
                CheckName::PartitionTable,
                None,
                Err("no partition table in LBA 0 (a bare filesystem is a source, not a converted disk)".into()),
            );
            Layout::default()
        }
        Err(e) => {
            report.add(CheckName::PartitionTable, None, Err(e.to_string()));
            Layout::default()
        }
    };
    let entries = report
        .partitions
        .as_ref()
        .map_or_else(Vec::new, |t| t.entries.clone());

    if let Some(root) = &layout.root {
        progress.stage(Stage::Fsck, None);
        let outcome = crate::e2fs_tools::check_read_only(
            &raw_path,
            root.start,
            root.len,
            opts.fsck_via,
            progress,
        )?;
        report.add(
            CheckName::Fsck,
            Some(root.number),
            checks::fsck_verdict(&outcome, &outcome.checked),
        );
        report.fsck.push((root.number, outcome));
        let files = checks::grub_files(&disk, root, layout.wants_bios_code(), &entries);
        report.add(CheckName::GrubFiles, Some(root.number), files);
    } else {
        report.add(
            CheckName::Fsck,
            None,
            Err("no root partition to check".into()),
        );
        report.add(
            CheckName::GrubFiles,
            None,
            Err("no root partition to read".into()),
        );
    }
    // Every other ext filesystem of the disk (the guest's carried volumes).
    for e in &entries {
        if layout.root.as_ref().is_some_and(|r| r.start == e.start) {
            continue;
        }
        let is_ext = disk
            .sub(e.start, e.len)
            .ok()
            .is_some_and(|r| crate::source::read_superblock(&r).is_ok());
        if !is_ext {
            continue;
        }
        let outcome =
            crate::e2fs_tools::check_read_only(&raw_path, e.start, e.len, opts.fsck_via, progress)?;
        report.add(
            CheckName::Fsck,
            Some(e.number),
            checks::fsck_verdict(&outcome, &format!("p{}", e.number)),
        );
        report.fsck.push((e.number, outcome));
    }
    match &layout.swap {
        Some(swap) => {
            let (verdict, header) = checks::swap_header(&disk, swap);
            report.add(CheckName::Swap, Some(swap.number), verdict);
            report.swap = header.map(|h| (swap.number, h));
        }
        None => report.skip(CheckName::Swap, "no swap partition"),
    }
    match &layout.esp {
        Some(esp) => {
            progress.stage(Stage::EspCheck, None);
            let verdict = checks::esp(&raw_path, &disk, esp, &*progress)?;
            report.add(CheckName::Esp, Some(esp.number), verdict);
        }
        None => report.skip(CheckName::Esp, "no EFI System Partition"),
    }
    if layout.wants_bios_code() {
        let (verdict, core_lba) = checks::boot_code(&disk, layout.core_window());
        report.add(CheckName::BootCode, None, verdict);
        report.core_lba = core_lba;
    } else {
        report.skip(
            CheckName::BootCode,
            "a GPT disk without a BIOS boot partition boots with UEFI only",
        );
    }

    match (&opts.boot, qemu) {
        (Some(b), Some(qemu)) => {
            progress.stage(Stage::BootTest, None);
            // A GPT disk without BIOS boot code boots only with UEFI firmware.
            let firmware = match b.firmware {
                Some(fw) => fw,
                None if layout.wants_bios_code() => BootFirmware::Bios,
                None => BootFirmware::Uefi,
            };
            let mut boot = BootOptions::new(&boot_image)
                .with_format(boot_format)
                .with_bus(b.bus)
                .with_firmware(firmware)
                .with_timeout(b.timeout)
                .with_qemu(qemu)
                .with_accel(b.accel);
            for e in &b.expect {
                boot = boot.expect_any([e.as_str()]);
            }
            if let Some(log) = &b.serial_log {
                boot = boot.with_serial_log(log);
            }
            let r = crate::qemu::boot(&boot, &*progress)?;
            let verdict = if r.ok {
                Ok(format!(
                    "{:?} on the serial console after {:.1} s ({}, {} on {})",
                    r.matched.iter().flatten().next().map_or("", String::as_str),
                    r.seconds,
                    r.accel,
                    r.firmware,
                    r.machine
                ))
            } else {
                Err(r.reason.clone().unwrap_or_default())
            };
            report.add(CheckName::Boot, None, verdict);
            report.boot = Some(r);
        }
        _ => report.skip(CheckName::Boot, "no boot test asked for"),
    }
    Ok(report)
}

impl VerifyReport {
    fn add(&mut self, name: CheckName, partition: Option<usize>, verdict: Result<String, String>) {
        let (status, detail) = match verdict {
            Ok(d) => (CheckStatus::Passed, d),
            Err(d) => (CheckStatus::Failed, d),
        };
        self.checks.push(Check {
            name,
            status,
            partition,
            detail,
        });
    }

    fn skip(&mut self, name: CheckName, why: &str) {
        self.checks.push(Check {
            name,
            status: CheckStatus::Skipped,
            partition: None,
            detail: why.to_string(),
        });
    }
}
