//! Running e2fsprogs programs on the output (resize2fs to grow, e2fsck to replay a
//! journal) through the `file?offset=N` io option. (issue 3)
//!
//! e2fsprogs' unix I/O manager accepts `name?offset=BYTES` for every program built on
//! libext2fs, so the filesystem inside partition 1 of the output image is reached
//! without a loop device or root (verified with e2fsprogs 1.47.0: `resize2fs -f
//! 'disk.img?offset=1048576' 131072K` grows an ext4 at 1 MiB, and `e2fsck -fn` on the
//! same name is clean afterwards). Both programs only ever get the *output* image.
//!
//! Caveat: with an offset, resize2fs measures "the device" as the whole file, so it
//! would not stop a size that runs into the next partition; callers pass the size from
//! the [`crate::layout::DiskPlan`], which is exactly partition 1.
//!
//! Order in a conversion: stream the blocks, then replay the journal (if asked), then
//! grow — replay may change the free-block counts resize2fs relies on.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Lines of a tool's output kept for error messages and reports.
const TAIL_LINES: usize = 25;

/// A finished run of an e2fsprogs program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolRun {
    /// The command line, for the conversion report.
    pub command: String,
    pub exit_code: i32,
    /// The last lines of its combined output.
    pub output_tail: String,
}

/// A tool could not run or reported failure.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {tool}: {source} (it is part of e2fsprogs; install it)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({}):\n{output_tail}", match code { Some(c) => format!("exit code {c}"), None => "killed by a signal".to_string() })]
    Failed {
        command: String,
        code: Option<i32>,
        output_tail: String,
    },
    #[error("cannot prepare {}: {source}", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot grow the filesystem to {bytes} bytes: not a positive multiple of 1 KiB")]
    BadSize { bytes: u64 },
}

/// The `name?offset=N` argument; a path that itself contains `?` is reached through a
/// temporary symlink, since e2fsprogs splits the name at the first `?`.
fn device_arg(image: &Path, offset: u64) -> Result<(String, Option<tempfile::TempDir>), ToolError> {
    let text = image.to_string_lossy();
    let (name, guard) = if text.contains('?') {
        let dir = tempfile::tempdir().map_err(|source| ToolError::Path {
            path: image.to_path_buf(),
            source,
        })?;
        let link = dir.path().join("image");
        let target = std::fs::canonicalize(image).map_err(|source| ToolError::Path {
            path: image.to_path_buf(),
            source,
        })?;
        std::os::unix::fs::symlink(target, &link).map_err(|source| ToolError::Path {
            path: link.clone(),
            source,
        })?;
        (link.to_string_lossy().into_owned(), Some(dir))
    } else {
        (text.into_owned(), None)
    };
    let arg = if offset == 0 {
        name
    } else {
        format!("{name}?offset={offset}")
    };
    Ok((arg, guard))
}

fn tail(out: &[u8], err: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Run `tool args…`; exit codes in `ok` are success.
fn run(tool: &'static str, args: &[String], ok: &[i32]) -> Result<ToolRun, ToolError> {
    let command = format!(
        "{tool} {}",
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        // Keep the site's e2fsck.conf (e.g. a "broken_system_clock" setting) from
        // changing what happens to the image.
        .env("E2FSCK_CONFIG", "/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn { tool, source })?;
    let output_tail = tail(&out.stdout, &out.stderr);
    match out.status.code() {
        Some(c) if ok.contains(&c) => Ok(ToolRun {
            command,
            exit_code: c,
            output_tail,
        }),
        code => Err(ToolError::Failed {
            command,
            code,
            output_tail,
        }),
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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
pub fn replay_journal(out_image: &Path, offset: u64) -> Result<ToolRun, ToolError> {
    let (dev, _guard) = device_arg(out_image, offset)?;
    let fsck_args = ["-f".to_string(), "-y".to_string(), dev.clone()];
    let first = match run("e2fsck", &fsck_args, &[0, 1]) {
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
    let clear = run(
        "debugfs",
        &[
            "-w".into(),
            "-R".into(),
            "feature -needs_recovery".into(),
            dev,
        ],
        &[0],
    )?;
    if clear.output_tail.contains("needs_recovery") {
        // debugfs prints the resulting feature list; the flag must be gone from it.
        return Err(ToolError::Failed {
            command: clear.command,
            code: Some(clear.exit_code),
            output_tail: clear.output_tail,
        });
    }
    let second = run("e2fsck", &fsck_args, &[0, 1])?;
    Ok(ToolRun {
        command: format!("{first_command}; {}; {}", clear.command, second.command),
        exit_code: second.exit_code,
        output_tail: second.output_tail,
    })
}

/// Grow the filesystem at `offset` in the output image to `new_size_bytes` (rounded
/// down to a whole KiB; resize2fs rounds down to its block size):
/// `resize2fs -f 'out.img?offset=N' <KiB>K`. `-f` skips resize2fs's "run e2fsck
/// first" check, which the freshly copied (clean, or just replayed) filesystem passes
/// anyway but whose last-check time is usually older than its last mount.
pub fn grow(out_image: &Path, offset: u64, new_size_bytes: u64) -> Result<ToolRun, ToolError> {
    let kib = new_size_bytes / 1024;
    if kib == 0 {
        return Err(ToolError::BadSize {
            bytes: new_size_bytes,
        });
    }
    let (dev, _guard) = device_arg(out_image, offset)?;
    run("resize2fs", &["-f".into(), dev, format!("{kib}K")], &[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_argument_and_quoting() {
        let (a, g) = device_arg(Path::new("/tmp/out.img"), 1048576).unwrap();
        assert_eq!(a, "/tmp/out.img?offset=1048576");
        assert!(g.is_none());
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(tail(b"a\n\nb\n", b"c\n"), "a\nb\nc");
    }

    #[test]
    fn failure_carries_the_output_tail() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("not-a-fs.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        match replay_journal(&img, 0) {
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
        assert!(matches!(grow(&img, 0, 100), Err(ToolError::BadSize { .. })));
    }
}
