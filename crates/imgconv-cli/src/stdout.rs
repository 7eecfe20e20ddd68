//! Writing results to stdout.

use crate::errors::{Class, CliError};

/// Write to stdout. A reader that went away (`imgconv inspect X | head`) is not an error;
/// any other write error (a full disk behind `>`) is.
pub fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(
            Class::Output,
            format!("cannot write to stdout: {e}"),
            "check where stdout goes (a full disk?)",
        )),
        _ => Ok(()),
    }
}
