//! The library's error type. Each pipeline module has its own error enum that says
//! exactly what went wrong in its terms; [`Error`] gathers them so that a caller can
//! match on the stage and still print one clear line.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file, with what we were doing.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// On-disk data that does not parse: a truncated or corrupted structure.
    #[error(transparent)]
    Parse(#[from] crate::bytes::ParseError),

    /// A partition table that cannot be read.
    #[error(transparent)]
    Partition(#[from] crate::partition::PartitionError),

    /// A failure while reading an ext2/3/4 filesystem with the guarded reader.
    #[error(transparent)]
    ExtRead(#[from] crate::ext::read::ExtReadError),

    /// A failure in a guest filesystem operation (path resolution, writing).
    #[error(transparent)]
    Guest(#[from] crate::guestfs::GuestFsError),

    /// The source image is not a convertible guest.
    #[error(transparent)]
    Inspect(Box<crate::source::InspectError>),

    /// LVM2 inside the source: a damaged physical volume, unusable metadata, a volume
    /// that is not linear or lies on a disk that was not given.
    #[error(transparent)]
    Lvm(Box<crate::lvm::LvmError>),

    /// The target disk cannot be planned or its table written.
    #[error(transparent)]
    Plan(#[from] crate::layout::PlanError),

    /// Copying the filesystem or writing the swap header failed. Converted
    /// by hand (see `stream.rs`) so that a cancelled stream becomes [`Error::Cancelled`].
    #[error(transparent)]
    Stream(crate::stream::StreamError),
    /// Creating, writing or committing the output image failed.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),

    /// resize2fs or e2fsck failed on the output.
    #[error(transparent)]
    Tool(crate::tool::ToolError),

    /// The guest's inodes and bitmaps disagree, or a block map is refused (see
    /// [`crate::blockcheck`]). Converted by hand so a cancelled check is
    /// [`Error::Cancelled`].
    #[error(transparent)]
    BlockCheck(Box<crate::blockcheck::CheckError>),

    /// A failure of the libext2fs write engine (opening, writing or closing the output fs).
    #[error(transparent)]
    Ext(#[from] crate::ext::write::ExtError),

    /// A failure reading the donor or choosing its kernel.
    #[error(transparent)]
    Donor(Box<crate::donor::DonorError>),

    /// A failure grafting the donor kernel, modules or GRUB files into the guest.
    #[error(transparent)]
    Graft(Box<crate::graft::GraftError>),

    /// A guest configuration fixup failed.
    #[error(transparent)]
    Fixup(Box<crate::fixups::FixupError>),

    /// A failure while building or installing the GRUB boot code.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),

    /// A failure while making the GPT, the ESP or the UEFI boot files.
    #[error(transparent)]
    Uefi(#[from] crate::boot::uefi::UefiError),

    /// A Xen domain config that cannot be read, or a disk of it whose image is not found.
    #[error(transparent)]
    XenConfig(Box<crate::xen_config::XenConfigError>),

    /// No donor was given and the guest's own kernel was not asked for.
    #[error("no donor given, and keeping the guest's own kernel was not asked for")]
    NoDonor,

    /// With `strict`: the guest's userland is known not to work with the kernel that
    /// would boot it.
    #[error("the guest's userland does not work with the kernel that would boot it: {}", problems.join("; "))]
    Incompatible {
        /// Each pairing known not to work, in words.
        problems: Vec<String>,
    },

    /// The donor has no GRUB files for a platform the disk needs, none were given, and the
    /// host's may not stand in (`ConvertOptions::host_fallbacks` is off).
    #[error("the donor has no GRUB {platform} files and the host's may not be used")]
    NoGrubFiles {
        /// The GRUB platform, such as `i386-pc`.
        platform: &'static str,
    },

    /// A disk cannot be verified at all: it cannot be opened, or a scratch copy for the
    /// outside tools cannot be made.
    #[error(transparent)]
    Verify(Box<crate::verify::VerifyError>),

    /// The QEMU boot test could not run.
    #[error(transparent)]
    Qemu(Box<crate::qemu::QemuError>),

    /// The operation was cancelled through [`crate::Progress::is_cancelled`].
    #[error("cancelled")]
    Cancelled,

    /// A conversion to a block device failed (`source`) after writing to it began; the
    /// device's first MiB was zeroed (or zeroing it failed: `wiped` says which). Its kind
    /// and hint are the failure's.
    #[error("{source}; {wiped}")]
    DeviceWiped {
        /// What made the conversion fail.
        source: Box<Error>,
        /// What became of the device.
        wiped: crate::output::DeviceWiped,
    },
}

/// A cancelled boot test is a cancellation like any other.
impl From<crate::qemu::QemuError> for Error {
    fn from(e: crate::qemu::QemuError) -> Self {
        match e {
            crate::qemu::QemuError::Cancelled
            | crate::qemu::QemuError::Tool(crate::tool::ToolError::Cancelled { .. }) => {
                Error::Cancelled
            }
            other => Error::Qemu(Box::new(other)),
        }
    }
}

impl From<crate::blockcheck::CheckError> for Error {
    fn from(e: crate::blockcheck::CheckError) -> Self {
        match e {
            crate::blockcheck::CheckError::Cancelled => Error::Cancelled,
            other => Error::BlockCheck(Box::new(other)),
        }
    }
}

impl Error {
    /// Wrap an `io::Error` with the action and path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// A cancelled outside tool is a cancellation like any other.
impl From<crate::tool::ToolError> for Error {
    fn from(e: crate::tool::ToolError) -> Self {
        match e {
            crate::tool::ToolError::Cancelled { .. } => Error::Cancelled,
            other => Error::Tool(other),
        }
    }
}

/// What an error concerns: which of the conversion's inputs or outputs is at fault, or that
/// something else failed. Decided by the library where it knows which file it was reading
/// or writing, so that a caller can act on it (the CLI's exit codes come from it) without
/// reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The source image: missing, unreadable, unsupported, corrupt, truncated or dirty.
    Input,
    /// The donor (or the GRUB and EFI files standing in for it): missing, unreadable, or
    /// without a usable kernel, initrd, modules or GRUB files.
    Donor,
    /// The output: it exists, its directory is missing or not writable, or the space
    /// under it (or inside the converted filesystem) ran out.
    Output,
    /// The options ask for something that cannot be done: sizes too small for the guest,
    /// a kernel command line grub.cfg cannot hold, no donor and no guest kernel.
    Options,
    /// An outside tool (e2fsprogs, grub-mkimage) is missing or failed.
    Tool,
    /// [`crate::Progress::is_cancelled`] stopped the conversion.
    Cancelled,
    /// Anything else: a failure of the library itself or of the machine it runs on.
    Internal,
}

/// The next step an error suggests, for a caller to phrase in its own terms (the CLI
/// names its flags; an embedder its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Hint {
    /// The source's journal is dirty: replay it in the converted copy
    /// ([`ConvertOptions::replay_journal`](crate::ConvertOptions::replay_journal)),
    /// or replay it on a copy of the source and convert that.
    ReplayJournal,
    /// The output exists: allow overwriting it
    /// ([`ConvertOptions::force`](crate::ConvertOptions::force)) or choose another.
    Overwrite,
    /// Give a donor, or keep a non-Xen kernel the guest already has.
    GiveDonor,
    /// The guest has no kernel that boots on HVM: convert with a donor instead.
    ConvertWithDonor,
    /// The guest's kernel cannot find its disk on the bus asked for: give a donor to boot
    /// the donor's kernel, or choose a bus its initrd has drivers for.
    DonorOrOtherBus,
    /// The disk asked for is too small: make it larger, or the swap smaller.
    GrowDisk,
    /// The extra kernel command line holds characters grub.cfg cannot hold.
    PlainKernelCmdline,
    /// The donor lacks GRUB files and the host's may not be used: give a GRUB directory,
    /// a donor with GRUB, or allow the host's files.
    GiveGrubFiles,
    /// The source's allocation cannot be trusted (not cleanly unmounted, errors recorded,
    /// or blocks shared or marked free) in a way `e2fsck -fy` mends: repair the converted
    /// copy ([`ConvertOptions::repair`](crate::ConvertOptions::repair)).
    Repair,
    /// The source's block maps are broken in a way a repair of the copy would lose data
    /// over: repair a copy of the image by hand and convert that.
    RepairCopyByHand,
    /// The output block device is smaller than the disk: give a larger one, or make the
    /// disk smaller.
    LargerDevice,
    /// The output block device is mounted or held: unmount or release it, or choose
    /// another output.
    ReleaseDevice,
    /// A block device output is written raw: leave out the other disk format.
    RawForDevice,
    /// The output is (part of) the source, which is only ever read: choose another.
    OtherOutput,
    /// A logical volume the guest uses lies partly on a physical volume that was not
    /// given: give the disk image holding it too.
    GiveMissingDisk,
    /// A logical volume the guest uses is not linear (striped, mirrored, thin, ...): make
    /// it linear in the guest (`lvconvert`) and export the image again.
    LinearVolume,
    /// The guest's separate `/boot` is too small and cannot be grown here: free space in
    /// it, or make it clean (e2fsck) so the conversion can grow it, on a copy of the image.
    MakeRoomInBoot,
    /// An export lacks data of one of its disks (the copy stopped early or lost members):
    /// export the machine again and convert the complete copy.
    ExportAgain,
}

impl Error {
    /// What this error concerns (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::DeviceWiped { source, .. } => source.kind(),
            Error::Cancelled => K::Cancelled,
            // Region::open and the other raw readers open images to read them.
            Error::Io { source, .. } => io_kind(source, K::Input),
            Error::Parse(_) | Error::Partition(_) | Error::ExtRead(_) => K::Input,
            // Reading the source; a compressed source is unpacked into scratch space beside
            // the output, so running out of space there is the output's.
            Error::Inspect(e) => match e.as_ref() {
                crate::source::InspectError::Io { source, .. }
                | crate::source::InspectError::Format(crate::formats::FormatError::Io {
                    source,
                    ..
                }) => io_kind(source, K::Input),
                _ => K::Input,
            },
            Error::Guest(g) => g.kind(),
            Error::Lvm(e) => match e.as_ref() {
                crate::lvm::LvmError::Io { source, .. } => io_kind(source, K::Input),
                _ => K::Input,
            },
            Error::Plan(e) => e.kind(),
            Error::Stream(e) => e.kind(),
            Error::Output(e) => e.kind(),
            Error::Tool(e) => e.kind(),
            Error::BlockCheck(e) => match e.as_ref() {
                crate::blockcheck::CheckError::Io { source, .. } => io_kind(source, K::Input),
                crate::blockcheck::CheckError::Cancelled => K::Cancelled,
                _ => K::Input,
            },
            Error::Ext(e) => e.kind(),
            Error::Donor(e) => e.kind(),
            Error::Graft(e) => e.kind(),
            Error::Fixup(e) => e.kind(),
            Error::Boot(e) => e.kind(),
            Error::Uefi(e) => e.kind(),
            Error::XenConfig(e) => e.kind(),
            Error::NoDonor => K::Options,
            // The guest cannot run on the kernel the conversion would boot it with.
            Error::Incompatible { .. } => K::Input,
            Error::NoGrubFiles { .. } => K::Donor,
            Error::Qemu(e) => e.kind(),
            Error::Verify(e) => e.kind(),
        }
    }

    /// The next step this error suggests, when there is a specific one.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Error::DeviceWiped { source, .. } => source.hint(),
            Error::Output(e) if e.hint().is_some() => e.hint(),
            Error::Inspect(e) => match e.as_ref() {
                crate::source::InspectError::DirtyJournal { .. } => Some(Hint::ReplayJournal),
                crate::source::InspectError::Unclean { .. } => Some(Hint::Repair),
                crate::source::InspectError::Format(crate::formats::FormatError::Incomplete {
                    ..
                }) => Some(Hint::ExportAgain),
                _ => None,
            },
            Error::Ext(crate::ext::write::ExtError::Unclean { .. }) => Some(Hint::Repair),
            Error::BlockCheck(e) => match e.as_ref() {
                crate::blockcheck::CheckError::Inconsistent { findings, .. } => {
                    Some(if findings.repairable() {
                        Hint::Repair
                    } else {
                        Hint::RepairCopyByHand
                    })
                }
                _ => None,
            },
            Error::Ext(crate::ext::write::ExtError::NeedsRecovery { .. }) => {
                Some(Hint::ReplayJournal)
            }
            Error::Output(crate::output::OutputError::Exists { .. }) => Some(Hint::Overwrite),
            Error::Plan(
                crate::layout::PlanError::TargetTooSmall { .. }
                | crate::layout::PlanError::TooLargeForMbr { .. },
            ) => Some(Hint::GrowDisk),
            Error::Plan(crate::layout::PlanError::BootTooSmall { .. }) => {
                Some(Hint::MakeRoomInBoot)
            }
            Error::Stream(crate::stream::StreamError::SwapTooSmall { .. }) => Some(Hint::GrowDisk),
            Error::Guest(g) => guest_hint(g),
            Error::Graft(g) => match g.as_ref() {
                crate::graft::GraftError::Guest(g) => guest_hint(g),
                _ => None,
            },
            Error::Fixup(f) => match f.as_ref() {
                crate::fixups::FixupError::Guest { source, .. } => guest_hint(source),
                _ => None,
            },
            Error::Boot(crate::boot::BootError::Guest(g)) => guest_hint(g),
            Error::Boot(crate::boot::BootError::BadConfigValue {
                field: "extra_args",
                ..
            }) => Some(Hint::PlainKernelCmdline),
            Error::Donor(e) => match e.as_ref() {
                crate::donor::DonorError::OnlyXenKernels { .. }
                | crate::donor::DonorError::NoGuestKernel { .. } => Some(Hint::ConvertWithDonor),
                crate::donor::DonorError::GuestKernelNotReady { .. } => Some(Hint::DonorOrOtherBus),
                _ => None,
            },
            Error::NoDonor => Some(Hint::GiveDonor),
            Error::Lvm(e) => match e.as_ref() {
                crate::lvm::LvmError::MissingPv { .. }
                | crate::lvm::LvmError::Volume(crate::lvm::LvError::MissingPv { .. }) => {
                    Some(Hint::GiveMissingDisk)
                }
                crate::lvm::LvmError::Volume(crate::lvm::LvError::Unsupported { .. }) => {
                    Some(Hint::LinearVolume)
                }
                _ => None,
            },
            Error::NoGrubFiles { .. } => Some(Hint::GiveGrubFiles),
            _ => None,
        }
    }
}

/// A guest filesystem that is full asks for a larger disk.
fn guest_hint(g: &crate::guestfs::GuestFsError) -> Option<Hint> {
    match g {
        crate::guestfs::GuestFsError::NoSpace { in_guest: true, .. } => Some(Hint::GrowDisk),
        _ => None,
    }
}

/// The kind of an I/O error: running out of space (or writing to a read-only or too
/// small filesystem) is always the output's, since only the output is written; anything
/// else is `otherwise`, the side the caller was working on.
pub(crate) fn io_kind(e: &std::io::Error, otherwise: ErrorKind) -> ErrorKind {
    if is_out_of_space(e) {
        ErrorKind::Output
    } else {
        otherwise
    }
}

/// ENOSPC, EDQUOT, EROFS or EFBIG: the filesystem written to cannot take the data.
pub(crate) fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS) | Some(libc::EFBIG)
        )
}

/// A cancelled graft is a cancellation like any other, so callers match one variant.
impl From<crate::graft::GraftError> for Error {
    fn from(e: crate::graft::GraftError) -> Self {
        match e {
            crate::graft::GraftError::Cancelled => Error::Cancelled,
            other => Error::Graft(Box::new(other)),
        }
    }
}

// The largest stage errors are boxed so that `Result<T, Error>` stays small on the
// happy path (clippy's result_large_err); `?` still converts them directly.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(Box::new(e))
            }
        }
    )*};
}

/// An LVM refusal found while inspecting is an LVM error like the others.
impl From<crate::source::InspectError> for Error {
    fn from(e: crate::source::InspectError) -> Self {
        match e {
            crate::source::InspectError::Lvm(e) => Error::Lvm(e),
            other => Error::Inspect(Box::new(other)),
        }
    }
}

boxed_from!(
    Donor(crate::donor::DonorError),
    Fixup(crate::fixups::FixupError),
    Lvm(crate::lvm::LvmError),
    XenConfig(crate::xen_config::XenConfigError),
    Verify(crate::verify::VerifyError),
);

/// One volume's refusal is an LVM error like the others.
impl From<crate::lvm::LvError> for Error {
    fn from(e: crate::lvm::LvError) -> Self {
        Error::Lvm(Box::new(crate::lvm::LvmError::Volume(e)))
    }
}
