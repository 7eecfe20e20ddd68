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
    ExtRead(#[from] crate::extread::ExtReadError),

    /// A failure in a guest filesystem operation (path resolution, writing).
    #[error(transparent)]
    Guest(#[from] crate::guestfs::GuestFsError),

    /// The source image is not a convertible guest (issue 3).
    #[error(transparent)]
    Inspect(Box<crate::source::InspectError>),

    /// The target disk cannot be planned or its table written (issue 3).
    #[error(transparent)]
    Plan(#[from] crate::layout::PlanError),

    /// Copying the filesystem or writing the swap header failed (issue 3). Converted
    /// by hand (see `stream.rs`) so that a cancelled stream becomes [`Error::Cancelled`].
    #[error(transparent)]
    Stream(crate::stream::StreamError),
    /// Creating, writing or committing the output image failed (issue 3).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),

    /// resize2fs or e2fsck failed on the output (issue 3).
    #[error(transparent)]
    Tool(#[from] crate::e2fs_tools::ToolError),

    /// The guest's inodes and bitmaps disagree, or a block map is refused (see
    /// [`crate::blockcheck`]). Converted by hand so a cancelled check is
    /// [`Error::Cancelled`].
    #[error(transparent)]
    BlockCheck(Box<crate::blockcheck::CheckError>),

    /// A failure of the libext2fs write engine (opening, writing or closing the output fs).
    #[error(transparent)]
    Ext(#[from] crate::ext::ExtError),

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

    /// No donor was given and the guest's own kernel was not asked for.
    #[error("no donor given: pass --donor with a bootable HVM image of a similar distribution (or a directory with an unpacked kernel), or --use-guest-kernel")]
    NoDonor,

    /// With `strict`: the guest's userland is known not to work with the kernel that
    /// would boot it.
    #[error("the guest's userland does not work with the kernel that would boot it: {}", problems.join("; "))]
    Incompatible { problems: Vec<String> },

    /// The donor has no GRUB files for a platform the disk needs, none were given, and the
    /// host's may not stand in (`ConvertOptions::host_fallbacks` is off).
    #[error("the donor has no GRUB {platform} files and the host's may not be used")]
    NoGrubFiles {
        /// The GRUB platform, such as `i386-pc`.
        platform: &'static str,
    },

    /// The operation was cancelled through [`crate::Progress::is_cancelled`].
    #[error("cancelled")]
    Cancelled,
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

boxed_from!(
    Inspect(crate::source::InspectError),
    Donor(crate::donor::DonorError),
    Fixup(crate::fixups::FixupError),
);
