//! One conversion, end to end: inspect → plan → stream → graft → fixups → boot.
//!
//! [`convert`] is the single library call the CLI's `convert` and `batch` run; [`plan`] is
//! its dry run (it reads the source and the donor, decides everything, writes nothing).

use std::path::PathBuf;

/// Firmware the converted disk boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// MBR disk, GRUB i386-pc boot code (SeaBIOS and any PC BIOS).
    #[default]
    Bios,
}

/// Disk bus the converted guest will see its disk on; decides device names for disks
/// other than the root that fstab still refers to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: /dev/vdX.
    #[default]
    Virtio,
    /// SATA/AHCI: /dev/sdX.
    Sata,
    /// IDE (libata): /dev/sdX.
    Ide,
}

/// Everything a conversion needs to know. Sizes are bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertOptions {
    /// The Xen guest image (bare ext2/3/4 filesystem or partitioned disk). Opened read-only.
    pub source: PathBuf,
    /// The donor: a bootable HVM disk image, a bare filesystem image or a directory.
    /// Optional only with `use_guest_kernel` (GRUB files then come from `grub_dir` or the host).
    pub donor: Option<PathBuf>,
    /// Where the raw disk image goes. Written to a temporary file beside it, renamed at the end.
    pub output: PathBuf,
    /// Swap partition size; 0 for none. Default 512 MiB.
    pub swap_size: u64,
    /// Total disk size wanted; `None` lets the plan choose (source size plus room for the graft).
    pub target_size: Option<u64>,
    /// Pick this donor kernel version instead of the newest.
    pub kernel_version: Option<String>,
    /// Keep a non-Xen kernel the guest already has instead of grafting the donor's.
    pub use_guest_kernel: bool,
    /// Firmware to boot with.
    pub firmware: Firmware,
    /// Disk bus the guest will run on.
    pub disk_bus: DiskBus,
    /// Replay a dirty journal in the output copy (never the input) instead of refusing.
    pub replay_journal: bool,
    /// Overwrite an existing output.
    pub force: bool,
    /// Take GRUB i386-pc modules from this directory instead of the donor's.
    pub grub_dir: Option<PathBuf>,
    /// Extra kernel command-line arguments.
    pub extra_cmdline: Vec<String>,
}

impl ConvertOptions {
    /// Options with the defaults: 512 MiB swap, BIOS, virtio, newest donor kernel.
    pub fn new(
        source: impl Into<PathBuf>,
        donor: Option<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        ConvertOptions {
            source: source.into(),
            donor,
            output: output.into(),
            swap_size: 512 << 20,
            target_size: None,
            kernel_version: None,
            use_guest_kernel: false,
            firmware: Firmware::Bios,
            disk_bus: DiskBus::Virtio,
            replay_journal: false,
            force: false,
            grub_dir: None,
            extra_cmdline: Vec::new(),
        }
    }
}
