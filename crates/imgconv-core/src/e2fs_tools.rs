//! Running e2fsprogs programs on the output (resize2fs to grow, e2fsck to replay a
//! journal or repair) through the `file?offset=N` io option, with the process runner of
//! [`crate::tool`]: cancellable through [`Progress`], the child killed and reaped when the
//! caller stops. [`check_read_only`] (`e2fsck -fn`) reads any image, the source included,
//! and writes nothing.
//!
//! e2fsprogs' unix I/O manager accepts `name?offset=BYTES` for every program built on
//! libext2fs, so the filesystem inside partition 1 of the output image is reached
//! without a loop device or root (verified with e2fsprogs 1.47.0: `resize2fs -f
//! 'disk.img?offset=1048576' 131072K` grows an ext4 at 1 MiB, and `e2fsck -fn` on the
//! same name is clean afterwards). resize2fs and `e2fsck -fy` only ever get the *output*
//! image.
//!
//! Two e2fsprogs 1.47.0 bugs with `?offset=` on a regular file are worked around here
//! (details on each function): e2fsck re-opens the filesystem *without* the offset after
//! replaying a journal ([`replay_journal`]), and resize2fs extends/truncates the file to
//! the new filesystem size, ignoring the offset ([`grow`]). resize2fs also measures "the
//! device" as the whole file, so it would not stop a size that runs into the next
//! partition; callers pass the size from the [`crate::layout::DiskPlan`], which is
//! exactly partition 1.
//!
//! Order in a conversion: stream the blocks, then replay the journal (if asked), then
//! grow — replay may change the free-block counts resize2fs relies on.

use crate::progress::Progress;
use crate::tool::ToolCommand;
use std::path::Path;

pub use crate::tool::{ToolError, ToolRun};

/// An e2fsprogs program on the filesystem at `offset` of `image`, options first, then
/// `--` and the device name (then `operands`).
fn e2fs(
    tool: &'static str,
    options: &[&str],
    image: &Path,
    offset: u64,
    operands: &[String],
) -> Result<ToolCommand, ToolError> {
    Ok(ToolCommand::new(tool)
        // Keep the site's e2fsck.conf (e.g. a "broken_system_clock" setting) from
        // changing what happens to the image.
        .env("E2FSCK_CONFIG", "/dev/null")
        .args(options)
        .end_of_options()
        .e2fs_device(image, offset)?
        .args(operands))
}

/// How `e2fsck -fn` reaches a filesystem inside an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsckVia {
    /// `image?offset=N`, e2fsprogs' unix I/O option: no privileges needed.
    #[default]
    Offset,
    /// A read-only loop device over exactly the filesystem ([`crate::tool::LoopDevice`]):
    /// needs root, and is detached afterwards whatever happens.
    LoopDevice,
}

/// What `e2fsck -fn` said about a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsckOutcome {
    /// True when e2fsck exited 0 (nothing to fix).
    pub clean: bool,
    /// e2fsck's exit status (4 = errors left uncorrected, 8 = operational error; -1 when
    /// a signal ended it).
    pub exit_code: i32,
    /// What e2fsck was run on: the image, `image?offset=N` or a loop device.
    pub checked: String,
    /// The last lines of its output.
    pub output: String,
}

impl FsckOutcome {
    /// What a non-zero exit status means, in words.
    pub fn meaning(&self) -> &'static str {
        match self.exit_code {
            0 => "clean",
            c if c > 0 && c & 4 != 0 => "filesystem errors left uncorrected",
            c if c > 0 && c & 8 != 0 => {
                "operational error (no ext filesystem there, or unreadable)"
            }
            _ => "unexpected result",
        }
    }
}

/// Lines of e2fsck's output kept in a [`FsckOutcome`].
const FSCK_TAIL_LINES: usize = 12;

/// `e2fsck -fn` on the filesystem of `len` bytes at `offset` of `image`: a full check
/// that opens it read-only and answers no to every question, so nothing is written (the
/// source may be checked too). Any exit status is an outcome; `Err` only when e2fsck
/// cannot run, a loop device cannot be attached, or `progress` cancels. A loop device
/// that cannot be detached afterwards is a [`Progress::note`].
pub fn check_read_only(
    image: &Path,
    offset: u64,
    len: u64,
    via: FsckVia,
    progress: &mut dyn Progress,
) -> Result<FsckOutcome, ToolError> {
    let (out, checked, device) = match via {
        FsckVia::Offset => {
            let checked = if offset == 0 {
                image.display().to_string()
            } else {
                format!("{}?offset={offset}", image.display())
            };
            let out = e2fs("e2fsck", &["-f", "-n"], image, offset, &[])?.output(&*progress)?;
            (out, checked, None)
        }
        FsckVia::LoopDevice => {
            let dev = crate::tool::LoopDevice::attach(image, offset, len, &*progress)?;
            let out = e2fs("e2fsck", &["-f", "-n"], Path::new(dev.path()), 0, &[])
                .and_then(|c| c.output(&*progress));
            let checked = dev.path().to_string();
            (out?, checked.clone(), Some((dev, checked)))
        }
    };
    if let Some((dev, name)) = device {
        if dev.detach().is_err() {
            progress.note(&format!("could not detach {name}; run `losetup -d {name}`"));
        }
    }
    let exit_code = out.status.code().unwrap_or(-1);
    Ok(FsckOutcome {
        clean: exit_code == 0,
        exit_code,
        checked,
        output: out.tail(FSCK_TAIL_LINES),
    })
}

/// What e2fsck 1.47 prints when it loses the io options after replaying a journal.
const REOPEN_BUG: &str = "while trying to re-open";

/// Replay the journal of the filesystem at `offset` in the output image (and fix what
/// e2fsck finds): `e2fsck -fy 'out.img?offset=N'`. Exit codes 0 (clean) and 1 (errors
/// corrected) are success; 2 and above are a [`ToolError::Failed`] carrying the tail of
/// its output. Only ever call this on the output copy.
///
/// e2fsprogs 1.47.0 bug, worked around here: after replaying the journal, e2fsck
/// re-opens the filesystem with `ext2fs_open()` *without* the io options
/// (e2fsck/journal.c, `e2fsck_run_ext3_journal`), so with `?offset=N` the re-open reads
/// the wrong superblock and fails ("Bad magic number in super-block while trying to
/// re-open", exit 12). By then the journal has been replayed and reset (its start is 0)
/// but `needs_recovery` is still set, so every further e2fsck would hit the same wall.
/// When that exact failure follows "recovering journal", we clear the flag with
/// `debugfs -w -R "feature -needs_recovery"` (debugfs honours the io options for normal
/// operations) and run `e2fsck -fy` again, which now does the full check and repair that
/// e2fsck would have done after the re-open. A fixed e2fsprogs succeeds on the first run.
pub fn replay_journal(
    out_image: &Path,
    offset: u64,
    progress: &dyn Progress,
) -> Result<ToolRun, ToolError> {
    let fsck = || e2fs("e2fsck", &["-f", "-y"], out_image, offset, &[]);
    let first = match fsck()?.run(&[0, 1], progress) {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let ToolError::Failed {
        command,
        output_tail,
        ..
    } = &first
    else {
        return Err(first);
    };
    if offset == 0
        || !output_tail.contains(REOPEN_BUG)
        || !output_tail.contains("recovering journal")
    {
        return Err(first);
    }
    let first_command = command.clone();
    let clear = e2fs(
        "debugfs",
        &["-w", "-R", "feature -needs_recovery"],
        out_image,
        offset,
        &[],
    )?
    .run(&[0], progress)?;
    if clear.output_tail.contains("needs_recovery") {
        // debugfs prints the resulting feature list; the flag must be gone from it.
        return Err(ToolError::Failed {
            command: clear.command,
            code: Some(clear.exit_code),
            output_tail: clear.output_tail,
        });
    }
    let second = fsck()?.run(&[0, 1], progress)?;
    Ok(ToolRun {
        command: format!("{first_command}; {}; {}", clear.command, second.command),
        exit_code: second.exit_code,
        output_tail: second.output_tail,
    })
}

/// Most data kept aside from beyond the grown filesystem during a grow (see [`grow`]).
const MAX_TAIL_SAVE: u64 = 64 << 20;

/// Repair the filesystem at `offset` in the output image: `e2fsck -fy 'out.img?offset=N'`
/// (a full check that rebuilds the allocation bitmaps and counts from the inodes). Exit
/// codes 0 (clean) and 1 (errors corrected) are success: it clones shared blocks and marks
/// owned blocks used. Only ever call this on the output copy.
pub fn repair(
    out_image: &Path,
    offset: u64,
    progress: &dyn Progress,
) -> Result<ToolRun, ToolError> {
    e2fs("e2fsck", &["-f", "-y"], out_image, offset, &[])?.run(&[0, 1], progress)
}

/// Grow the filesystem at `offset` in the output image to `new_size_bytes` (rounded
/// down to its block size) with `resize2fs -f 'out.img?offset=N' <blocks>`. `-f` skips
/// resize2fs's "run e2fsck first" check, which a freshly copied (clean, or just
/// replayed) filesystem passes anyway but whose last-check time is usually older than
/// its last mount.
///
/// resize2fs 1.47 and regular files: when the device is a regular file, resize2fs
/// extends it to `new size` bytes before resizing (writing an ASCII "0" at the last
/// byte) and *truncates* it to `new size` bytes afterwards (resize/main.c) — ignoring the
/// offset, which cuts the end of the grown filesystem and everything after it (the swap
/// partition). To make both branches no-ops, the file is set to exactly `new size` bytes
/// for the duration of the run (the grown filesystem's tail lies beyond that length and
/// is simply written past the end), then given back its length; the non-zero blocks that
/// lay beyond `new size` (e.g. a swap header already written) are kept aside and written
/// back. This needs the growth to be at least `offset` bytes (1 MiB in our layout), so the
/// shortened file still holds the whole current filesystem.
///
/// Cancelled through `progress`, resize2fs is killed and reaped and the file gets its
/// length and tail back; the filesystem in it is then half-grown, which is why only the
/// output copy is ever grown (and a cancelled conversion removes it).
pub fn grow(
    out_image: &Path,
    offset: u64,
    new_size_bytes: u64,
    progress: &dyn Progress,
) -> Result<ToolRun, ToolError> {
    use std::os::unix::fs::FileExt;
    let path_err = |source| ToolError::Path {
        path: out_image.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out_image)
        .map_err(path_err)?;
    let mut raw = vec![0u8; crate::ext::superblock::SUPERBLOCK_SIZE];
    file.read_exact_at(&mut raw, offset + crate::ext::superblock::SUPERBLOCK_OFFSET)
        .map_err(path_err)?;
    let sb = crate::source::Superblock::parse(&raw).map_err(|e| ToolError::NotExt {
        path: out_image.to_path_buf(),
        offset,
        why: e.to_string(),
    })?;
    let bs = sb.block_size();
    let new_blocks = new_size_bytes / bs;
    let new_bytes = new_blocks * bs;
    let old_bytes = sb.fs_bytes();
    if new_bytes <= old_bytes {
        return Err(ToolError::BadSize {
            bytes: new_size_bytes,
            current: old_bytes,
        });
    }
    if new_bytes < offset + old_bytes {
        return Err(ToolError::GrowthBelowOffset {
            growth: new_bytes - old_bytes,
            offset,
        });
    }
    if crate::blockdev::is_device_file(&file) {
        // resize2fs neither extends nor truncates a block device.
        let resize = e2fs(
            "resize2fs",
            &["-f"],
            out_image,
            offset,
            &[new_blocks.to_string()],
        )?;
        return resize.run(&[0], progress);
    }
    let orig_len = file.metadata().map_err(path_err)?.len();
    // Keep aside the non-zero blocks beyond the cut.
    let mut saved: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut saved_bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = new_bytes;
    while pos < orig_len {
        let n = (orig_len - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos).map_err(path_err)?;
        for (i, block) in buf[..n].chunks(4096).enumerate() {
            if !crate::bytes::is_zero(block) {
                saved_bytes += block.len() as u64;
                if saved_bytes > MAX_TAIL_SAVE {
                    return Err(ToolError::TailTooLarge {
                        path: out_image.to_path_buf(),
                        cap: MAX_TAIL_SAVE,
                    });
                }
                saved.push((pos + (i * 4096) as u64, block.to_vec()));
            }
        }
        pos += n as u64;
    }
    let resize = e2fs(
        "resize2fs",
        &["-f"],
        out_image,
        offset,
        &[new_blocks.to_string()],
    )?;
    file.set_len(new_bytes).map_err(path_err)?;
    let result = resize.run(&[0], progress);
    // Give the file its length and tail back whatever resize2fs did.
    let now = file.metadata().map_err(path_err)?.len();
    if now < orig_len {
        file.set_len(orig_len).map_err(path_err)?;
    }
    for (at, data) in &saved {
        file.write_all_at(data, *at).map_err(path_err)?;
    }
    file.sync_data().map_err(path_err)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_after_the_options() {
        let c = e2fs(
            "resize2fs",
            &["-f"],
            Path::new("/tmp/-out.img"),
            1048576,
            &["9".into()],
        )
        .unwrap();
        assert_eq!(
            c.command_line(),
            "resize2fs -f -- /tmp/-out.img?offset=1048576 9"
        );
    }

    #[test]
    fn failure_carries_the_output_tail() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("not-a-fs.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        match replay_journal(&img, 0, &crate::NoProgress) {
            Err(ToolError::Failed {
                code: Some(c),
                output_tail,
                ..
            }) => {
                assert!(c >= 2, "exit code {c}");
                assert!(
                    output_tail.contains("superblock") || output_tail.contains("Bad magic"),
                    "{output_tail}"
                );
            }
            other => panic!("expected failure, got {other:?}"),
        }
        assert!(matches!(
            grow(&img, 0, 100 << 20, &crate::NoProgress),
            Err(ToolError::NotExt { .. })
        ));
    }
}
