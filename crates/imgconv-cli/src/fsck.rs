//! `convert --fsck pre|post`: the library's `e2fsck -fn`
//! ([`imgconv_core::e2fs_tools::check_read_only`], rootless through `image?offset=N`, or
//! on a read-only loop device with `--loop`) turned into an exit-6 error when the
//! filesystem is not clean.

use crate::errors::{self, Class, CliError};
use imgconv_core::e2fs_tools::{self, FsckOutcome, FsckVia};
use imgconv_core::Progress;
use std::path::PathBuf;

/// A filesystem inside an image file.
#[derive(Debug, Clone)]
pub struct FsLocation {
    pub image: PathBuf,
    /// Byte offset of the filesystem in the image.
    pub offset: u64,
    /// Its length in bytes (needed for the loop device's size limit).
    pub len: u64,
}

/// Run `e2fsck -fn` on the filesystem at `loc`, read-only. Cancellable through
/// `progress`.
pub fn check(
    loc: &FsLocation,
    use_loop: bool,
    progress: &mut dyn Progress,
) -> Result<FsckOutcome, CliError> {
    let via = if use_loop {
        FsckVia::LoopDevice
    } else {
        FsckVia::Offset
    };
    e2fs_tools::check_read_only(&loc.image, loc.offset, loc.len, via, progress)
        .map_err(|e| errors::from_tool(&e))
}

/// Run the check and turn anything but a clean result into an exit-6 error.
pub fn require_clean(
    loc: &FsLocation,
    use_loop: bool,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<FsckOutcome, CliError> {
    let outcome = check(loc, use_loop, progress)?;
    let hint = format!(
        "inspect it with `e2fsck -fn '{}'`; a dirty journal can be replayed in the output with --replay-journal",
        outcome.checked
    );
    clean_or_error(outcome, what, hint)
}

/// A clean outcome, or the exit-6 error for the `what` e2fsck checked, with `hint`.
pub fn clean_or_error(
    outcome: FsckOutcome,
    what: &str,
    hint: String,
) -> Result<FsckOutcome, CliError> {
    if outcome.clean {
        return Ok(outcome);
    }
    Err(CliError::new(
        Class::Verify,
        format!(
            "e2fsck -fn on the {what} ({}) exited {}: {}\n{}",
            outcome.checked,
            outcome.exit_code,
            outcome.meaning(),
            indent(&outcome.output)
        ),
        hint,
    ))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
