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

    // ---- source inspection (issue 3): Inspect(#[from] crate::source::InspectError)

    // ---- layout (issue 3): Plan(#[from] crate::layout::PlanError)

    // ---- stream + swap (issue 3): Stream(#[from] crate::stream::StreamError)

    // ---- e2fsprogs tools (issue 3): Tool(#[from] crate::e2fs_tools::ToolError)
    /// A failure of the libext2fs write engine (opening, writing or closing the output fs).
    #[error(transparent)]
    Ext(#[from] crate::ext::ExtError),

    /// A failure reading the donor or choosing its kernel.
    #[error(transparent)]
    Donor(#[from] crate::donor::DonorError),

    /// A failure grafting the donor kernel, modules or GRUB files into the guest.
    #[error(transparent)]
    Graft(#[from] crate::graft::GraftError),

    /// A guest configuration fixup failed.
    #[error(transparent)]
    Fixup(#[from] crate::fixups::FixupError),

    /// A failure while building or installing the GRUB boot code.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),

    /// The operation was cancelled through [`crate::Progress::is_cancelled`].
    #[error("cancelled")]
    Cancelled,
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
