//! What a conversion is asked to do: [`ConvertOptions`] and the choices it carries.

use crate::xen_config::{XenConfig, XenGuest};
use std::path::PathBuf;

pub use crate::hardware::{DiskBus, Firmware};
pub use crate::source::SourceDisk;
pub use crate::stream::CopyMethod;

/// Whether the stream runs beside the graft, fixups and boot files, or before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Beside them (a second thread streams while this one writes the guest through a
    /// copy-on-write device), except when an outside tool has to work on the finished
    /// copy first: journal replay, repair and growing the filesystem run the stages in
    /// order.
    #[default]
    Auto,
    /// Always one after the other. The result is the same; this is the reference the
    /// overlapped run is compared against, and what benchmarks measure the overlap by.
    Sequential,
}

/// The container the converted disk is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A sparse raw image.
    #[default]
    Raw,
    /// qcow2 version 3, 64 KiB clusters, zero clusters unallocated, written directly
    /// (see `formats::qcow2_write`).
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU and libvirt use for it.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// Which kernel boots the converted guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelSource {
    /// The guest's own newest non-Xen kernel when its initrd has the drivers for the
    /// chosen bus and the root filesystem, else the donor's.
    #[default]
    Auto,
    /// The guest's own kernel; without the drivers it falls back to the donor's (with a
    /// warning) or, without a donor, is refused.
    Guest,
    /// The donor's kernel, grafted.
    Donor,
}

/// Everything a conversion needs to know. Sizes are bytes.
///
/// Build it with [`ConvertOptions::new`] and the `with_*` setters; the fields stay public
/// for reading (and for changing one in place). New fields get defaults, so code written
/// against this version keeps compiling.
///
/// ```
/// use imgconv_core::convert::{ConvertOptions, Firmware};
///
/// let opts = ConvertOptions::new("xen.img", Some("donor.img".into()), "kvm.img")
///     .with_firmware(Firmware::Uefi)
///     .with_swap_size(1 << 30);
/// assert_eq!(opts.swap_size, 1 << 30);
/// ```
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ConvertOptions {
    /// The Xen guest image (bare ext2/3/4 filesystem or partitioned disk). Opened read-only.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub source: PathBuf,
    /// The donor: a bootable HVM disk image, a bare filesystem image or a directory.
    /// Optional only with `use_guest_kernel` (GRUB files then come from `grub_dir` or the host).
    #[serde(serialize_with = "crate::serde_path::lossy_opt")]
    pub donor: Option<PathBuf>,
    /// Where the raw disk image goes. Written to an unnamed temporary file in its
    /// directory, published there at the end.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub output: PathBuf,
    /// Swap partition size; 0 for none. Default 512 MiB.
    pub swap_size: u64,
    /// Total disk size wanted; `None` lets the plan choose (source size plus room for the graft).
    pub target_size: Option<u64>,
    /// Pick this donor kernel version instead of the newest.
    pub kernel_version: Option<String>,
    /// Keep a non-Xen kernel the guest already has instead of grafting the donor's (the
    /// same as `kernel_source: Guest`).
    pub use_guest_kernel: bool,
    /// Which kernel boots the guest. Default [`KernelSource::Auto`].
    pub kernel_source: KernelSource,
    /// Refuse a guest userland known not to work with the kernel that would boot it
    /// (old udev, module compression its tools cannot read) instead of warning.
    pub strict: bool,
    /// Leave cloud-init's datasources as they are (by default they are limited to
    /// `NoCloud, None`: the old cloud's metadata service does not answer under KVM).
    pub keep_cloud_init: bool,
    /// Firmware to boot with.
    pub firmware: Firmware,
    /// Disk bus the guest will run on.
    pub disk_bus: DiskBus,
    /// Replay a dirty journal in the output copy (never the input) instead of refusing.
    pub replay_journal: bool,
    /// Repair the output copy with `e2fsck -fy` before anything is grafted into it (never
    /// the input) instead of refusing: a filesystem whose bitmaps cannot be trusted (not
    /// cleanly unmounted, errors recorded), or files the block check finds sharing blocks
    /// or owning blocks the bitmaps call free (those blocks are copied first). The stages
    /// then run one after the other.
    pub repair: bool,
    /// Overwrite an existing output.
    pub force: bool,
    /// Take GRUB i386-pc modules from this directory instead of the donor's.
    #[serde(serialize_with = "crate::serde_path::lossy_opt")]
    pub grub_dir: Option<PathBuf>,
    /// Extra kernel command-line arguments.
    pub extra_cmdline: Vec<String>,
    /// Stream beside the guest work or before it. Default [`Overlap::Auto`].
    pub overlap: Overlap,
    /// How the stream moves blocks. Default [`CopyMethod::Auto`].
    pub copy_method: CopyMethod,
    /// Whether files of the machine running the conversion may stand in for what the donor
    /// lacks: GRUB's i386-pc and x86_64-efi modules under `/usr/lib/grub`, the host's signed
    /// shim and GRUB, and `grub-mkimage` from `PATH` to build an unsigned GRUB EFI image.
    /// Default `true`; an embedder that wants the result to depend only on its inputs turns
    /// it off, and a conversion that would need the host then fails naming what is missing.
    pub host_fallbacks: bool,
    /// The output's container. Default [`DiskFormat::Raw`].
    pub disk_format: DiskFormat,
    /// The guest's other disk images and their Xen device names: each of their volumes is
    /// carried like the source's own. Opened read-only.
    pub disks: Vec<SourceDisk>,
    /// The source's own Xen device name (`xvda`, or `xvda2` for a bare filesystem); `None`
    /// takes the name the root's fstab uses for `/`.
    pub source_xen_device: Option<String>,
    /// The domain config the sources were taken from ([`ConvertOptions::from_xen_config`]):
    /// its disks with their notes and the machine's facts, for the plan and the report.
    /// `source`, `source_xen_device` and the first of `disks` come from it.
    pub xen_config: Option<XenGuest>,
}

impl ConvertOptions {
    /// Options with the defaults: 512 MiB swap, BIOS, virtio, newest donor kernel, the
    /// overlapped stream, the copy method chosen per filesystem, host fallbacks allowed.
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
            kernel_source: KernelSource::Auto,
            strict: false,
            keep_cloud_init: false,
            firmware: Firmware::Bios,
            disk_bus: DiskBus::Virtio,
            replay_journal: false,
            repair: false,
            force: false,
            grub_dir: None,
            extra_cmdline: Vec::new(),
            overlap: Overlap::Auto,
            copy_method: CopyMethod::Auto,
            host_fallbacks: true,
            disk_format: DiskFormat::Raw,
            disks: Vec::new(),
            source_xen_device: None,
            xen_config: None,
        }
    }

    /// Options converting the guest a Xen domain config describes, all of its disks into
    /// one output ([`XenConfig::guest`]): the disk holding the root filesystem (found by
    /// content) is the source, under its Xen device name; every other disk is one of
    /// [`ConvertOptions::disks`], in config order; CD-ROM drives are left out. The config's
    /// facts (name, memory, vCPUs, MACs, kernel command line) go into the inspection's
    /// `vm`, so the report and the libvirt definition carry them. Every image is opened
    /// read-only here to find the root; a disk not found, or none holding a root, is an
    /// error naming the paths tried or what each disk holds.
    ///
    /// Further disks may be added with [`ConvertOptions::with_disks`] after the config's
    /// (extend [`ConvertOptions::disks`]; replacing it drops the config's other disks).
    pub fn from_xen_config(
        config: &XenConfig,
        donor: Option<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Result<Self, crate::Error> {
        let output = output.into();
        // A compressed disk is decompressed where the conversion would (beside the output).
        let scratch = output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), |d| d.to_path_buf());
        let guest = config.guest(&crate::formats::OpenOptions {
            scratch_dir: Some(scratch),
        })?;
        let main = guest.main();
        let mut o = ConvertOptions::new(&main.path, donor, output)
            .with_source_xen_device(Some(main.vdev.clone()))
            .with_disks(guest.other_disks());
        o.xen_config = Some(guest);
        Ok(o)
    }

    /// The guest's other disk images, each with the Xen device name the guest knew it by.
    pub fn with_disks(mut self, disks: Vec<SourceDisk>) -> Self {
        self.disks = disks;
        self
    }

    /// The source's own Xen device name; `None` takes the one its fstab uses for `/`.
    pub fn with_source_xen_device(mut self, name: Option<String>) -> Self {
        self.source_xen_device = name;
        self
    }

    /// The output's container (raw or qcow2).
    pub fn with_disk_format(mut self, format: DiskFormat) -> Self {
        self.disk_format = format;
        self
    }

    /// Swap partition size in bytes; 0 for none.
    pub fn with_swap_size(mut self, bytes: u64) -> Self {
        self.swap_size = bytes;
        self
    }

    /// Total disk size in bytes; `None` lets the plan choose.
    pub fn with_target_size(mut self, bytes: Option<u64>) -> Self {
        self.target_size = bytes;
        self
    }

    /// Donor kernel version to graft; `None` picks the newest.
    pub fn with_kernel_version(mut self, version: Option<String>) -> Self {
        self.kernel_version = version;
        self
    }

    /// Keep a non-Xen kernel the guest already has instead of grafting the donor's.
    pub fn with_use_guest_kernel(mut self, yes: bool) -> Self {
        self.use_guest_kernel = yes;
        self
    }

    /// Which kernel boots the guest.
    pub fn with_kernel_source(mut self, source: KernelSource) -> Self {
        self.kernel_source = source;
        self
    }

    /// Refuse (instead of warn about) a userland known not to work with the kernel.
    pub fn with_strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// Leave cloud-init's datasources as they are.
    pub fn with_keep_cloud_init(mut self, yes: bool) -> Self {
        self.keep_cloud_init = yes;
        self
    }

    /// The kernel source asked for: `use_guest_kernel` counts as [`KernelSource::Guest`].
    pub fn effective_kernel_source(&self) -> KernelSource {
        if self.use_guest_kernel {
            KernelSource::Guest
        } else {
            self.kernel_source
        }
    }

    /// Firmware the disk boots with.
    pub fn with_firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Disk bus the guest will run on.
    pub fn with_disk_bus(mut self, bus: DiskBus) -> Self {
        self.disk_bus = bus;
        self
    }

    /// Replay a dirty journal in the output copy instead of refusing the source.
    pub fn with_replay_journal(mut self, yes: bool) -> Self {
        self.replay_journal = yes;
        self
    }

    /// Repair the output copy with `e2fsck -fy` instead of refusing an untrustworthy
    /// filesystem (unclean, errors recorded, shared or marked-free blocks).
    pub fn with_repair(mut self, yes: bool) -> Self {
        self.repair = yes;
        self
    }

    /// Overwrite an existing output.
    pub fn with_force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }

    /// Take GRUB i386-pc modules from this directory instead of the donor's.
    pub fn with_grub_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.grub_dir = dir;
        self
    }

    /// Extra kernel command-line arguments, appended in order.
    pub fn with_extra_cmdline(mut self, args: Vec<String>) -> Self {
        self.extra_cmdline = args;
        self
    }

    /// Stream beside the guest work or before it.
    pub fn with_overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// How the stream moves blocks.
    pub fn with_copy_method(mut self, method: CopyMethod) -> Self {
        self.copy_method = method;
        self
    }

    /// Allow or forbid the host's GRUB files, shim and `grub-mkimage` (see
    /// [`ConvertOptions::host_fallbacks`]).
    pub fn with_host_fallbacks(mut self, allowed: bool) -> Self {
        self.host_fallbacks = allowed;
        self
    }
}
