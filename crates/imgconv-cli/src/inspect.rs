//! `imgconv inspect SRC [--json]`: what the source image is, from the library's inspect step.

use crate::cli::InspectArgs;
use crate::errors::{self, Class, CliError, Paths};
use crate::outline::outline;

/// `imgconv inspect`.
pub fn run(a: &InspectArgs) -> Result<(), CliError> {
    if let Err(e) = std::fs::metadata(&a.source) {
        return Err(CliError::new(
            Class::Input,
            format!("cannot read the source {}: {e}", a.source.display()),
            "give the path of an exported Xen guest image",
        ));
    }
    let paths = Paths {
        source: Some(a.source.clone()),
        ..Paths::default()
    };
    let inspection = imgconv_core::source::inspect(&a.source)
        .map_err(|e| errors::from_core(&imgconv_core::Error::from(e), &paths))?;
    let value = serde_json::to_value(&inspection).expect("the inspection serializes");
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON value prints")
        );
    } else {
        print!("{}", outline(&value));
    }
    Ok(())
}
