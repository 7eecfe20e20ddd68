//! What the command line says about itself: `--version` (with the libext2fs it runs
//! with), shell completion scripts (clap_complete) and manual pages (clap_mangen), all
//! generated from the clap definitions in `cli.rs`, so they cannot drift from them.

use crate::cli::{Cli, CompletionsArgs, ManpageArgs};
use crate::errors::{Class, CliError};
use clap::CommandFactory;
use std::fs;
use std::sync::OnceLock;

/// The version line: the crate's version and the libext2fs loaded at run time, e.g.
/// `0.1.0 (libext2fs 1.47.0)`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (libext2fs {})",
            env!("CARGO_PKG_VERSION"),
            imgconv_core::ext::write::library_version()
        )
    })
}

/// The full clap command as the binary runs it (with the run-time version line).
pub fn command() -> clap::Command {
    Cli::command().version(version())
}

/// `imgconv completions SHELL`: the completion script on stdout.
pub fn completions(a: &CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "imgconv", &mut script);
    crate::stdout::emit(&String::from_utf8_lossy(&script))
}

/// `imgconv manpage DIR`: imgconv.1 and imgconv-<subcommand>.1 for every subcommand
/// (imgconv-report-merge.1 for nested ones).
pub fn manpages(a: &ManpageArgs) -> Result<(), CliError> {
    let out_err = |what: String, e: std::io::Error| {
        CliError::new(
            Class::Output,
            format!("{what}: {e}"),
            "give a writable directory, e.g. ~/.local/share/man/man1",
        )
    };
    fs::create_dir_all(&a.dir)
        .map_err(|e| out_err(format!("cannot create {}", a.dir.display()), e))?;
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(&cmd, &mut pages);
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let path = a.dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)
            .map_err(|e| out_err(format!("cannot render {}", path.display()), e))?;
        fs::write(&path, text)
            .map_err(|e| out_err(format!("cannot write {}", path.display()), e))?;
        crate::stdout::emit(&format!("{}\n", path.display()))?;
    }
    Ok(())
}

/// `cmd` and, depth first, every visible subcommand (clap_mangen names nested ones
/// `imgconv-report-merge`).
fn collect_pages(cmd: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_running_libext2fs() {
        let v = version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        let lib = v.split("libext2fs ").nth(1).unwrap().trim_end_matches(')');
        assert!(lib.starts_with("1."), "{v}");
    }
}
