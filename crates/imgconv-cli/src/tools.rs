//! Running external tools (e2fsck, losetup, qemu) so that Ctrl-C can stop them: output
//! collected on threads (no pipe deadlock), the child polled and killed when cancelled.

use crate::errors::{Class, CliError};
use crate::signals;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

/// Debian package that provides a tool, for the "not installed" message.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "e2fsck" | "debugfs" | "resize2fs" => "e2fsprogs",
        "losetup" | "blkid" | "sfdisk" => "util-linux",
        t if t.starts_with("qemu-system") => "qemu-system-x86",
        _ => "the package that provides it",
    }
}

/// The error for a tool that is not on PATH.
pub fn not_installed(tool: &str) -> CliError {
    CliError::new(
        Class::Failure,
        format!(
            "{tool} is not installed: apt-get install {}",
            package_of(tool)
        ),
        format!(
            "install it (apt-get install {}) and run again",
            package_of(tool)
        ),
    )
}

/// Spawn `cmd`, mapping "not found" to a clear message.
pub fn spawn(cmd: &mut Command, tool: &str) -> Result<Child, CliError> {
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_installed(tool)
        } else {
            CliError::new(
                Class::Failure,
                format!("cannot run {tool}: {e}"),
                "check that it is installed and executable",
            )
        }
    })
}

/// Wait for `child`, killing it if the user cancels. Returns its exit status.
pub fn wait_cancellable(child: &mut Child) -> Result<ExitStatus, CliError> {
    signals::register_pid(child.id());
    let result = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => {
                break Err(CliError::new(
                    Class::Failure,
                    format!("waiting for a child process: {e}"),
                    "",
                ))
            }
        }
        if signals::cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            break Err(CliError::cancelled());
        }
        thread::sleep(Duration::from_millis(50));
    };
    signals::unregister_pid(child.id());
    result
}

/// Run a tool to completion with stdout and stderr captured (merged, in arrival order per
/// stream). Cancellable.
pub fn run(cmd: &mut Command, tool: &str) -> Result<(ExitStatus, String, String), CliError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd, tool)?;
    let out = child.stdout.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let status = wait_cancellable(&mut child)?;
    let text = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    };
    Ok((status, text(out), text(err)))
}

/// The last `n` non-empty lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True when the process runs as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
