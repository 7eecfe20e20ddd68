//! `imgconv inspect SRC [--json]`: what the source image is, from the library's inspect step.

use crate::cli::InspectArgs;
use crate::errors::{Class, CliError};

/// `imgconv inspect`.
pub fn run(a: &InspectArgs) -> Result<(), CliError> {
    if let Err(e) = std::fs::metadata(&a.source) {
        return Err(CliError::new(
            Class::Input,
            format!("cannot read the source {}: {e}", a.source.display()),
            "give the path of an exported Xen guest image",
        ));
    }
    let _ = a.json;
    Err(CliError::not_yet(
        "source inspection (imgconv_core::source::inspect)",
    ))
}
