//! Boot code: GRUB for BIOS (and later UEFI), grub.cfg. (issue 5)
//!
//! The converted disk boots with GRUB built here, in Rust, from the donor's GRUB module
//! directory (`/usr/lib/grub/i386-pc`), without running grub-install or anything in the
//! guest. The byte-level format is described in shared/docs/grub-bios-format.md.
//!
//! - [`grub_files`]: the module directory as a value ([`GrubPlatformFiles`]).

pub mod grub_files;

pub use grub_files::GrubPlatformFiles;

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

    /// A GRUB platform file is larger than any real one could be.
    #[error("GRUB file {name} is {size} bytes, more than the {cap} bytes allowed for one file")]
    FileTooLarge { name: String, size: u64, cap: u64 },

    /// The GRUB module directory holds more bytes than any real one could.
    #[error(
        "the GRUB {platform} files add up to more than {cap} bytes (not a GRUB module directory?)"
    )]
    TooMuchData { platform: String, cap: u64 },

    /// A file name that is not a plain file name (contains `/`, is empty, `.` or `..`).
    #[error("invalid GRUB file name {name:?}: must be a plain file name")]
    BadFileName { name: String },

    /// A file GRUB needs is absent from the module directory.
    #[error("the GRUB {platform} files have no {name} (incomplete GRUB installation?)")]
    MissingFile { platform: String, name: String },
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
