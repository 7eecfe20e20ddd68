//! UEFI and hybrid (UEFI + BIOS) output: a GPT disk with an EFI System Partition written
//! with `fatfs`, shim + GRUB from the donor, and for hybrid also GRUB's BIOS boot code in
//! a BIOS boot partition. (layout facts in docs/uefi-layout.md)
//!
//! - the GPT plan lives with the MBR plan: [`crate::layout::gpt`] ([`plan_gpt`] →
//!   [`GptPlan`], printable, and [`write_gpt`]; re-exported here).
//! - [`efi_files`]: shim/GRUB/MokManager from the donor's ESP, the donor's or the host's
//!   signed packages, or an unsigned GRUB built with `grub-mkimage` ([`find_efi_boot_files`]).
//! - [`pe`]: PE/COFF headers and GRUB's `mods` section (the prefix names `EFI/<distro>`).
//! - [`esp`]: format and fill the ESP ([`install_esp`]).
//! - [`guest`]: `/boot/efi`, `/boot/grub/x86_64-efi`, grub.cfg, the fstab line.
//! - [`fat_repair`]: the fix for fatfs 0.3.6's `.`/`..` directory entries.
//! - [`crate::window`]: byte windows of the image as `Read + Write + Seek` for `gpt`/`fatfs`.
//!
//! # Integration (convert.rs), in order
//!
//! ```text
//! // plan: sizes from the MBR planner (layout::plan), firmware from the options
//! let gpt = uefi::plan_gpt(&GptPlanOptions::new(fw, mbr_plan.root().len_bytes(),
//!                                               swap_bytes))?;          // print it in dry runs
//! // the EFI binaries (before writing anything, so a missing GRUB fails early)
//! let efi_modules = donor.grub_files(uefi::PLATFORM_X86_64_EFI)?;   // Option
//! let efi = uefi::find_efi_boot_files(&mut convert::efi_search(Some(&donor),
//!                                         efi_modules.as_ref(), Some(Path::new("/"))))?;
//! // fixups: fstab gains uefi::esp_fstab_line(&gpt.esp_serial())
//! // output: temp file of gpt.disk_bytes; stream the root fs to gpt.root().start_bytes(),
//! //         the swap to gpt.swap()
//! uefi::write_gpt(&out, &gpt)?;                        // protective MBR + both GPTs
//! // guest (fs open): grub.cfg with partition_map = Gpt
//! uefi::write_guest_efi_files(guest, &efi, donor_efi_modules, &cfg, report)?;
//! // hybrid only: boot::write_guest_boot_files(guest, i386_files, &core, &cfg, report)
//! //   with core = build_core_image(i386_files, &prefix_for_partition(true,
//! //                                gpt.root().number), GPT_EXT_MODULES)
//! let esp = uefi::install_esp(&out, &gpt, &efi, root_fs_uuid, report)?;   // ESP files
//! // hybrid only, AFTER write_gpt (it rewrites sector 0):
//! uefi::install_hybrid_bios_boot(&out, &gpt, i386_files, &core)?;
//! ```

pub mod efi_files;
pub mod esp;
pub mod fat_repair;
pub mod guest;
pub mod pe;

pub use crate::layout::gpt::{
    gpt_extra_bytes, plan_gpt, plan_gpt_with, write_gpt, GptFirmware, GptPartition, GptPlan,
    GptPlanOptions, GptRole, DEFAULT_ESP_BYTES,
};
pub use efi_files::{
    find_efi_boot_files, EfiBootFiles, EfiSearch, HostRoot, PackageFiles, PLATFORM_X86_64_EFI,
};
pub use esp::{grub_stub, grub_stub_in, install_esp, EspFile, EspSummary};
pub use guest::{esp_fstab_line, write_guest_efi_files};

use crate::boot::{install_bios_boot, BootError, CoreImage, GrubPlatformFiles};
use std::path::PathBuf;

/// Everything that can go wrong making a UEFI or hybrid disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UefiError {
    /// An I/O error on a named file, with what we were doing.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An I/O error on the output image while writing the GPT or the ESP.
    #[error("{action} the output image: {source}")]
    OutputIo {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A call that does not fit the plan or the other arguments (a caller's mistake).
    #[error("{why}")]
    BadArgument { why: String },

    /// A FAT operation on the new ESP failed.
    #[error("{action}: {why}")]
    Fat { action: &'static str, why: String },

    /// The files do not fit in the ESP.
    #[error(
        "the ESP ({esp_bytes} bytes) is too small for the EFI boot files ({needed} bytes needed)"
    )]
    EspFull { esp_bytes: u64, needed: u64 },

    /// The donor's ESP cannot be read.
    #[error("cannot read the ESP of {donor}: {why}")]
    DonorEsp { donor: String, why: String },

    /// A file larger than any real one of its kind.
    #[error("{name} is larger than {cap} bytes (not a real EFI boot file?)")]
    FileTooLarge { name: String, cap: u64 },

    /// A shim/GRUB/MokManager that is not what it claims.
    #[error("{what} from {origin} is not usable: {why}")]
    BadEfiBinary {
        what: &'static str,
        origin: String,
        why: String,
    },

    /// An x86_64-efi module directory without the modules an EFI GRUB needs.
    #[error("GRUB x86_64-efi modules from {origin} are incomplete: missing {}", missing.join(", "))]
    IncompleteEfiModules {
        origin: String,
        missing: Vec<String>,
    },

    /// An external tool failed.
    #[error("{tool} failed: {why}")]
    Tool { tool: &'static str, why: String },

    /// No shim/GRUB anywhere.
    #[error("no GRUB for UEFI found; tried:\n  {}\ninstall grub-efi-amd64-signed and shim-signed (or grub-efi-amd64-bin) in the donor or on the host", tried.join("\n  "))]
    NoEfiBootFiles { tried: Vec<String> },

    /// The root filesystem UUID is not a UUID.
    #[error(
        "root filesystem UUID {uuid:?} is not a UUID like 01234567-89ab-cdef-0123-456789abcdef"
    )]
    BadRootUuid { uuid: String },

    /// A malformed on-disk structure (a PE image, GRUB's module area, our own FAT).
    #[error(transparent)]
    Parse(#[from] crate::bytes::ParseError),

    /// The package files of a source (the donor's, read through [`crate::tree::TreeRead`])
    /// could not be read; the reader's own error.
    #[error(transparent)]
    Files(Box<crate::Error>),

    /// A failure in the shared boot code (guest files, BIOS boot code).
    #[error(transparent)]
    Boot(Box<BootError>),
}

impl UefiError {
    /// Wrap an `io::Error` with the action and path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        UefiError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<BootError> for UefiError {
    fn from(e: BootError) -> Self {
        UefiError::Boot(Box::new(e))
    }
}

/// Hybrid disks: GRUB's BIOS core.img at the start of the plan's BIOS boot partition and
/// boot.img in sector 0, keeping the protective MBR entry. `core` must be built with
/// part_gpt and the prefix `(,gpt<root>)/boot/grub` ([`crate::boot::prefix_for_partition`]
/// with `gpt.root().number`). Call after [`write_gpt`], which rewrites sector 0.
pub fn install_hybrid_bios_boot<D: crate::blockio::OutputDevice>(
    out: &D,
    plan: &GptPlan,
    files: &GrubPlatformFiles,
    core: &CoreImage,
) -> Result<(), UefiError> {
    let bios = plan.bios_boot().ok_or_else(|| UefiError::BadArgument {
        why: "the plan has no BIOS boot partition (firmware is uefi, not hybrid)".into(),
    })?;
    let boot = plan.boot_partition();
    let want = if boot.role == crate::layout::gpt::GptRole::Boot {
        crate::boot::grub_bios::prefix_for_boot_partition(true, boot.number)
    } else {
        crate::boot::prefix_for_partition(true, plan.root().number)
    };
    if core.prefix != want {
        return Err(UefiError::BadArgument {
            why: format!(
                "core.img has prefix {:?}, the root is {want:?}",
                core.prefix
            ),
        });
    }
    install_bios_boot(out, files, core, bios.start_lba, bios.end_lba() + 1)?;
    Ok(())
}

impl UefiError {
    /// What the error concerns: shim and GRUB for the ESP come from the donor (or the
    /// host), the ESP is written into the output.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            UefiError::Io { source, .. } => crate::error::io_kind(source, K::Donor),
            UefiError::OutputIo { .. } | UefiError::Fat { .. } | UefiError::EspFull { .. } => {
                K::Output
            }
            UefiError::NoEfiBootFiles { .. }
            | UefiError::BadEfiBinary { .. }
            | UefiError::DonorEsp { .. }
            | UefiError::IncompleteEfiModules { .. }
            | UefiError::FileTooLarge { .. }
            | UefiError::Parse(_) => K::Donor,
            UefiError::Files(e) => e.kind(),
            UefiError::Boot(b) => b.kind(),
            UefiError::Tool { .. } => K::Tool,
            UefiError::BadRootUuid { .. } => K::Input,
            _ => K::Internal,
        }
    }
}
