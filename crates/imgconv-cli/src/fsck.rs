//! `e2fsck -fn` on a filesystem inside an image, never writing to it.
//!
//! Rootless by default: e2fsprogs' unix I/O manager accepts `image?offset=N`, so the
//! filesystem of a partition is checked in place without a loop device. With `--loop` the
//! check runs on a read-only loop device (`losetup --read-only --offset --sizelimit`, never
//! `-P`, whose partition nodes do not appear in containers); that needs root, and the
//! device is always detached by [`LoopDevice`]'s `Drop`, also on error and Ctrl-C.

use crate::errors::{Class, CliError};
use crate::signals;
use crate::tools;
use imgconv_core::tool::ToolCommand;
use std::path::{Path, PathBuf};

/// A filesystem inside an image file.
#[derive(Debug, Clone)]
pub struct FsLocation {
    pub image: PathBuf,
    /// Byte offset of the filesystem in the image.
    pub offset: u64,
    /// Its length in bytes (needed for the loop device's size limit).
    pub len: u64,
}

/// What e2fsck said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FsckOutcome {
    /// True when e2fsck exited 0 (nothing to fix).
    pub clean: bool,
    /// e2fsck's exit status (4 = errors left uncorrected, 8 = operational error).
    pub exit_code: i32,
    /// What e2fsck was run on: `image?offset=N` or a loop device.
    pub checked: String,
    /// The last lines of its output.
    pub output: String,
}

/// A read-only loop device over part of a file, detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    dev: String,
}

impl LoopDevice {
    /// `losetup --read-only --find --show --offset N --sizelimit L file`.
    pub fn attach(image: &Path, offset: u64, len: u64) -> Result<LoopDevice, CliError> {
        if !tools::is_root() {
            return Err(CliError::new(
                Class::Usage,
                "--loop needs root: losetup cannot attach a loop device for this user",
                "run as root, or drop --loop: the default `file?offset=N` check needs no privileges",
            ));
        }
        let run = tools::run(
            ToolCommand::new("losetup")
                .args(["--read-only", "--find", "--show", "--offset"])
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(len.to_string())
                .end_of_options()
                .arg(image),
        )?;
        let dev = run.stdout_text().trim().to_string();
        if !run.status.success() || !dev.starts_with("/dev/") {
            return Err(CliError::new(
                Class::Failure,
                format!("losetup could not attach {}: {}", image.display(), tools::tail(&run.stderr_text(), 3)),
                "check that loop devices are available (modprobe loop; ls /dev/loop*), or drop --loop",
            ));
        }
        signals::register_loop(&dev);
        Ok(LoopDevice { dev })
    }

    /// The device path, e.g. `/dev/loop3`.
    pub fn path(&self) -> &str {
        &self.dev
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Not cancellable on purpose: detaching must happen even after Ctrl-C.
        // The device is the argument of -d itself (`d:` in losetup's getopt), not an
        // operand: no `--`.
        let detach = ToolCommand::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .run(&[0], &imgconv_core::NoProgress);
        if detach.is_err() {
            eprintln!(
                "imgconv: warning: could not detach {}; run `losetup -d {}`",
                self.dev, self.dev
            );
        }
        signals::unregister_loop(&self.dev);
    }
}

/// Run `e2fsck -fn` on the filesystem at `loc`, read-only.
pub fn check(loc: &FsLocation, use_loop: bool) -> Result<FsckOutcome, CliError> {
    let loop_dev;
    let e2fsck = ToolCommand::new("e2fsck").arg("-fn").end_of_options();
    let (e2fsck, target) = if use_loop {
        loop_dev = LoopDevice::attach(&loc.image, loc.offset, loc.len)?;
        let dev = loop_dev.path().to_string();
        (e2fsck.arg(&dev), dev)
    } else {
        let target = if loc.offset == 0 {
            loc.image.display().to_string()
        } else {
            format!("{}?offset={}", loc.image.display(), loc.offset)
        };
        let e2fsck = e2fsck
            .e2fs_device(&loc.image, loc.offset)
            .map_err(|e| CliError::new(Class::Failure, e.to_string(), "check $TMPDIR"))?;
        (e2fsck, target)
    };
    let run = tools::run(e2fsck)?;
    let exit_code = run.status.code().unwrap_or(-1);
    Ok(FsckOutcome {
        clean: exit_code == 0,
        exit_code,
        checked: target,
        output: run.tail(12),
    })
}

/// Run the check and turn anything but a clean result into an exit-6 error.
pub fn require_clean(
    loc: &FsLocation,
    use_loop: bool,
    what: &str,
) -> Result<FsckOutcome, CliError> {
    let outcome = check(loc, use_loop)?;
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
    let meaning = match outcome.exit_code {
        c if c & 4 != 0 => "filesystem errors left uncorrected",
        c if c & 8 != 0 => "operational error (no ext filesystem there, or unreadable)",
        _ => "unexpected result",
    };
    Err(CliError::new(
        Class::Verify,
        format!(
            "e2fsck -fn on the {what} ({}) exited {}: {meaning}\n{}",
            outcome.checked,
            outcome.exit_code,
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
