//! Boot code: GRUB for BIOS (and later UEFI), grub.cfg.
//!
//! The converted disk boots with GRUB built here, in Rust, from the donor's GRUB module
//! directory (`/usr/lib/grub/i386-pc`), without running grub-install or anything in the
//! guest. The byte-level format is described in docs/grub-bios-format.md.
//!
//! - [`crate::grub_files`]: the module directory as a value ([`GrubPlatformFiles`]).
//! - [`grub_bios`]: core.img built like `grub-mkimage -O i386-pc`
//!   ([`build_core_image`]) and installed like `grub-bios-setup` ([`install_bios_boot`]).
//! - [`ext_support`]: whether this GRUB can read the root filesystem.
//! - [`grub_cfg`], [`grubenv`]: the menu and the environment block.
//! - [`guest_files`]: everything GRUB needs inside the guest ([`write_guest_boot_files`]).
//!
//! A conversion calls, in order: [`GrubPlatformFiles`] (from the donor or the host),
//! [`GrubExtSupport::detect`]`.check(..)` on the root superblock, [`build_core_image`],
//! [`write_guest_boot_files`] (with the guest fs open), and [`install_bios_boot`] on the
//! output image once the partition table is written.

pub mod ext_support;
pub mod grub_bios;
pub mod grub_cfg;
pub mod grubenv;
pub mod guest_files;
pub mod uefi;

pub use crate::grub_files::{GrubPlatformFiles, GrubVersion, HOST_I386_PC_DIR};
pub use ext_support::{check_root_fs_for_grub, GrubExtSupport};
pub use grub_bios::{
    build_core_image, install_bios_boot, prefix_for_partition, CoreImage, GPT_EXT_MODULES,
    MSDOS_EXT_MODULES,
};
pub use grub_cfg::{GrubConfig, PartitionMap};
pub use guest_files::write_guest_boot_files;

use std::path::PathBuf;

/// Everything that can go wrong while building or installing the boot code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// An I/O error on a named file or image, with what we were doing.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An I/O error on the output image while writing or checking the boot code.
    #[error("{action} the output image: {source}")]
    OutputIo {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The GRUB platform files are unreadable, too large or incomplete.
    #[error(transparent)]
    GrubFiles(#[from] crate::grub_files::GrubFilesError),

    /// A file name that is not a plain file name (contains `/`, is empty, `.` or `..`).
    #[error("invalid GRUB file name {name:?}: must be a plain file name")]
    BadFileName { name: String },

    /// A malformed structure in a GRUB file (kernel.img, a module, a core.img).
    #[error(transparent)]
    Parse(#[from] crate::bytes::ParseError),

    /// kernel.img cannot be laid out as an i386-pc kernel.
    #[error(transparent)]
    Kernel(#[from] grub_bios::elf::KernelLayoutError),

    /// A line of moddep.lst that is not `name: deps…`.
    #[error("moddep.lst line {line} is not `module: dependencies`: {text:?}")]
    ModDepLine { line: usize, text: String },

    /// A module (or a module's dependency) that moddep.lst does not list.
    #[error("GRUB module `{module}`{} is not in moddep.lst", needed_by.as_ref().map(|m| format!(" (needed by `{m}`)")).unwrap_or_default())]
    UnknownModule {
        module: String,
        needed_by: Option<String>,
    },

    /// moddep.lst has a dependency cycle.
    #[error("GRUB modules depend on each other in a cycle: {}", chain.join(" -> "))]
    DependencyCycle { chain: Vec<String> },

    /// moddep.lst lists a module whose file is missing.
    #[error("the GRUB {platform} files have no {module}.mod (listed in moddep.lst)")]
    MissingModuleFile { platform: String, module: String },

    /// A `.mod` file that is not the i386 module it should be.
    #[error("GRUB module file {module}.mod is not a valid module: {why}")]
    BadModule { module: String, why: String },

    /// A GRUB image file (diskboot.img, lzma_decompress.img, boot.img) of an unexpected shape.
    #[error("{file} is not what GRUB i386-pc ships: {why}")]
    ImageFormat { file: &'static str, why: String },

    /// LZMA compression or decompression failed.
    #[error("LZMA: {why}")]
    Compression { why: String },

    /// A prefix GRUB cannot use.
    #[error("invalid GRUB prefix {prefix:?}: {why}")]
    BadPrefix { prefix: String, why: &'static str },

    /// core.img (or part of it) exceeds what the i386-pc boot path can load.
    #[error("GRUB core image is too big: {what} is {size:#x} bytes, the limit is {limit:#x}")]
    CoreTooBig {
        what: &'static str,
        size: u64,
        limit: u64,
    },

    /// An argument out of range.
    #[error("invalid {what}: {why}")]
    BadArgument {
        what: &'static str,
        why: &'static str,
    },

    /// core.img does not fit between its start and the end of the embedding area.
    #[error("GRUB core.img needs {core_sectors} sectors from LBA {core_lba}, but the first partition (or the end of the boot area) is at LBA {gap_end_lba}: leave a larger gap before partition 1")]
    CoreDoesNotFit {
        core_sectors: u64,
        core_lba: u64,
        gap_end_lba: u64,
    },

    /// The output image is smaller than where core.img goes.
    #[error("the output image is {actual} bytes, too small for the boot code (needs {needed})")]
    ImageTooSmall { needed: u64, actual: u64 },

    /// Sector 0 has no MBR signature: the partition table must be written first.
    #[error("sector 0 of the output image has no partition table (no 55 AA signature); write the partition table before the boot code")]
    NoPartitionTable,

    /// An MBR partition lies where core.img would be written.
    #[error("partition {partition} starts at LBA {start}, inside the area for GRUB's core.img (LBA {core_lba}..{core_end})")]
    PartitionInGap {
        partition: usize,
        start: u64,
        core_lba: u64,
        core_end: u64,
    },

    /// The root filesystem uses ext features this GRUB cannot read.
    #[error("the root filesystem uses ext feature(s) {} that {grub} cannot read, so the converted disk would not boot; remove them (tune2fs -O ^FEATURE, where possible) or use a donor with a newer GRUB", features.join(", "))]
    RootFsUnreadableByGrub { features: Vec<String>, grub: String },

    /// A value that cannot go into grub.cfg safely.
    #[error("cannot write {field} = {value:?} into grub.cfg: {why}")]
    BadConfigValue {
        field: &'static str,
        value: String,
        why: &'static str,
    },

    /// A guest path that must be a file is a directory.
    #[error("{path} is a directory in the guest; expected a file")]
    GuestPathIsDirectory { path: String },

    /// No free backup name for a file to replace.
    #[error("no free backup name for {path} (too many earlier backups)")]
    NoBackupName { path: String },

    /// A guest filesystem operation failed.
    #[error(transparent)]
    Guest(#[from] crate::guestfs::GuestFsError),
}

impl BootError {
    /// Wrap an `io::Error` with the action and path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BootError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl BootError {
    /// What the error concerns: GRUB's files come from the donor (or a GRUB directory, or
    /// the host), so what is wrong with them is the donor's; writing the boot code is the
    /// output's; a command line grub.cfg cannot hold is the options'.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            BootError::Io { source, .. } => crate::error::io_kind(source, K::Donor),
            BootError::OutputIo { .. }
            | BootError::ImageTooSmall { .. }
            | BootError::NoPartitionTable
            | BootError::PartitionInGap { .. } => K::Output,
            BootError::BadConfigValue {
                field: "extra_args",
                ..
            } => K::Options,
            BootError::BadConfigValue { .. } => K::Input,
            BootError::RootFsUnreadableByGrub { .. } => K::Donor,
            BootError::GuestPathIsDirectory { .. } | BootError::NoBackupName { .. } => K::Input,
            BootError::Guest(g) => g.kind(),
            BootError::GrubFiles(g) => g.kind(),
            _ => K::Donor,
        }
    }
}
