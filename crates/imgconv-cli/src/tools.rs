//! Outside tools (e2fsck, losetup, fsck.fat) run through the library's process
//! runner ([`imgconv_core::tool`]): argument vectors, `--` before paths, e2fsprogs'
//! `image?offset=N` built by the library, the child killed and reaped on Ctrl-C. This
//! module only ties the runner to the CLI's cancel flag and its error messages.

use crate::errors::{Class, CliError};
use crate::signals;
use imgconv_core::tool::{self, ToolCommand, ToolError, ToolOutput};
use imgconv_core::Progress;

/// The runner's view of the CLI's cancel flag (Ctrl-C, SIGTERM).
struct CancelFlag;

impl Progress for CancelFlag {
    fn is_cancelled(&self) -> bool {
        signals::cancelled()
    }
}

/// The error for a tool that is not installed.
pub fn not_installed(tool: &str) -> CliError {
    let package = tool::package_of(tool);
    CliError::new(
        Class::Failure,
        format!("{tool} is not installed: apt-get install {package}"),
        format!("install it (apt-get install {package}) and run again"),
    )
}

fn cli_error(e: ToolError) -> CliError {
    match e {
        ToolError::Cancelled { .. } => CliError::cancelled(),
        ToolError::Spawn { tool, source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            not_installed(tool)
        }
        ToolError::Spawn { tool, source, .. } => CliError::new(
            Class::Failure,
            format!("cannot run {tool}: {source}"),
            "check that it is installed and executable",
        ),
        other => CliError::new(Class::Failure, other.to_string(), ""),
    }
}

/// Run a tool to its end with its output captured. Cancellable.
pub fn run(cmd: ToolCommand) -> Result<ToolOutput, CliError> {
    cmd.output(&CancelFlag).map_err(cli_error)
}

/// The last `n` non-empty lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    tool::tail_lines(text, n)
}

/// True when the process runs as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
