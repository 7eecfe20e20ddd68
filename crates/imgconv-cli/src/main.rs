//! imgconv: the command-line front end. It parses arguments, drives imgconv-core and
//! prints; all the work is in the library. Exit codes are documented in README
//! ("Exit codes") and in [`errors::Class`].

mod batch;
mod cli;
mod convert;
mod errors;
mod fsck;
mod inspect;
mod manual;
mod outline;
mod progress;
mod qemu;
mod schema;
mod signals;
mod size;
mod stdout;
mod verify;

use clap::FromArgMatches;
use cli::{Cli, Command};
use errors::CliError;

fn main() {
    let cli = Cli::from_arg_matches(&manual::command().get_matches()).unwrap_or_else(|e| e.exit());
    signals::install();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Batch(a) => batch::run(&a),
        Command::Verify(a) => run_verify(&a),
        Command::Report(a) => match &a.command {
            cli::ReportCommand::Merge(m) => batch::merge(m),
        },
        Command::Completions(a) => manual::completions(&a),
        Command::Manpage(a) => manual::manpages(&a),
    };
    match result {
        Ok(()) => {}
        Err(e) => {
            e.print();
            std::process::exit(e.class.code());
        }
    }
}

fn run_verify(args: &cli::VerifyArgs) -> Result<(), CliError> {
    let mode = if args.json {
        progress::Mode::Quiet
    } else {
        progress::Mode::detect(false)
    };
    let mut p = progress::CliProgress::single(mode, signals::cancel_flag());
    let report = verify::run(args, &mut p)?;
    drop(p);
    if args.json {
        let mut text = serde_json::to_string_pretty(&report).expect("verify report serializes");
        text.push('\n');
        stdout::emit(&text)?;
    } else {
        stdout::emit(&verify::human_text(&report))?;
    }
    if report.ok {
        Ok(())
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        Err(CliError::new(
            errors::Class::Verify,
            format!(
                "{}: failed checks: {}",
                args.image.display(),
                failed.join(", ")
            ),
            "see the FAIL lines above; `imgconv verify --json` gives the details for scripts",
        ))
    }
}
