//! Ctrl-C and SIGTERM.
//!
//! The first signal flips a flag that every [`crate::progress::CliProgress`] returns from
//! `is_cancelled()`: the library stops at its next buffer boundary with
//! `Error::Cancelled`, removes its temporary output, and the CLI exits 130.
//!
//! A second signal exits at once. The library's temporary file is then NOT removed (its
//! `Drop` does not run on `process::exit`); what the CLI itself started is still cleaned
//! up here first: child processes (qemu, e2fsck, resize2fs) are killed and loop devices
//! detached, both from the registries of the library's runner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The shared "stop now" flag.
pub fn cancel_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// True once the user asked to stop.
pub fn cancelled() -> bool {
    cancel_flag().load(Ordering::SeqCst)
}

/// Install the SIGINT/SIGTERM/SIGHUP handler. Call once, early in `main`.
pub fn install() {
    let flag = cancel_flag();
    let result = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!(
                "imgconv: interrupted again: exiting now (a temporary output file may remain beside the output)"
            );
            exit_now();
        }
        eprintln!(
            "imgconv: interrupted: stopping and cleaning up (press Ctrl-C again to exit at once)"
        );
    });
    if let Err(e) = result {
        eprintln!("imgconv: warning: cannot install the Ctrl-C handler: {e}");
    }
}

fn exit_now() -> ! {
    // Every child process (e2fsck, resize2fs, debugfs, losetup, qemu) was started by the
    // library's runner, which kills them all here.
    imgconv_core::tool::kill_running();
    // A block device being written gets its first MiB zeroed, so it does not boot.
    imgconv_core::output::wipe_unfinished_devices();
    // Then the loop devices those tools were checking are detached.
    imgconv_core::tool::detach_loop_devices();
    std::process::exit(130);
}
