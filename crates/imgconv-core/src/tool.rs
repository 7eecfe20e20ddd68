//! The one way the library (and the CLI) runs an outside program: e2fsck, resize2fs,
//! debugfs, losetup, fsck.fat, qemu.
//!
//! - The command line is an argument vector of `OsString`s: paths are passed as they are
//!   (non-UTF-8 bytes, spaces, newlines and a leading `-` included), never through a shell;
//!   [`ToolCommand::end_of_options`] puts a `--` before the paths of tools that accept it.
//! - A filesystem inside an image is named to e2fsprogs as `image?offset=N` by
//!   [`ToolCommand::e2fs_device`] (e2fsprogs cuts the name at its first `?`, so a path
//!   that holds one is reached through a private symlink kept for the run).
//! - Every child is supervised: its output is drained on threads (no pipe deadlock) and
//!   kept up to a cap, the caller's [`Progress::is_cancelled`] is polled while it runs, and
//!   on cancellation, on error and when a [`Running`] handle is dropped the child is
//!   killed and reaped. While a child runs its PID is in a process-wide registry, so an
//!   embedder that must exit at once (a second Ctrl-C) can first call [`kill_running`].
//! - A program that is not installed is [`ToolError::NotInstalled`], naming the Debian
//!   package that provides it.
//! - A read-only loop device over part of an image ([`LoopDevice`], root only) is detached
//!   when dropped; [`detach_loop_devices`] detaches those still attached on an exit at once.

use crate::progress::Progress;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// Lines of a tool's output kept for error messages and reports.
const TAIL_LINES: usize = 25;

/// Bytes of each output stream kept (the last ones); a tool that prints more is not held
/// in memory whole.
const OUTPUT_CAP: usize = 1 << 20;

/// How often a running child is checked for exit and the caller for cancellation.
const POLL: Duration = Duration::from_millis(20);

/// A finished run of an outside program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolRun {
    /// The command line, shell-quoted, for the conversion report.
    pub command: String,
    /// Its exit code.
    pub exit_code: i32,
    /// The last lines of its combined output.
    pub output_tail: String,
}

/// An outside program could not run, failed, or was stopped.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed (not found on PATH, or not at the path given).
    #[error("{tool} is not installed: apt-get install {package}")]
    NotInstalled {
        /// The program's name.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The program could not be started for another reason than being absent.
    #[error("cannot run {tool}: {source} (install {package})")]
    Spawn {
        /// The program's name.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// The program ended with an exit code that is not success for this run.
    #[error("`{command}` failed ({}):\n{output_tail}", match code { Some(c) => format!("exit code {c}"), None => "killed by a signal".to_string() })]
    Failed {
        /// The command line, shell-quoted.
        command: String,
        /// Its exit code, or `None` when a signal ended it.
        code: Option<i32>,
        /// The last lines of its combined output.
        output_tail: String,
    },
    /// The caller cancelled the run; the program was killed and reaped.
    #[error("`{command}` was stopped: cancelled")]
    Cancelled {
        /// The command line, shell-quoted.
        command: String,
    },
    /// A file the run needs could not be prepared or restored.
    #[error("cannot prepare {}: {source}", path.display())]
    Path {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A loop device was asked for without root privileges.
    #[error("--loop needs root: losetup cannot attach a loop device for this user")]
    LoopNeedsRoot,
    /// losetup did not attach a loop device.
    #[error("losetup could not attach {}: {why}", path.display())]
    LoopAttach {
        /// The image.
        path: PathBuf,
        /// What losetup said.
        why: String,
    },
    /// A grow was asked to a size not larger than the filesystem.
    #[error("cannot grow the filesystem to {bytes} bytes: it is already {current} bytes")]
    BadSize {
        /// The size asked for.
        bytes: u64,
        /// The filesystem's size now.
        current: u64,
    },
    /// No ext filesystem where a tool was to run.
    #[error("no ext filesystem at offset {offset} of {}: {why}", path.display())]
    NotExt {
        /// The image.
        path: PathBuf,
        /// The filesystem's byte offset in it.
        offset: u64,
        /// What the superblock parser said.
        why: String,
    },
    /// A grow too small to run resize2fs safely on a file at an offset.
    #[error("growing by {growth} bytes is less than the partition offset {offset}: resize2fs cannot be run safely on a regular file at an offset for so small a growth")]
    GrowthBelowOffset {
        /// The growth asked for.
        growth: u64,
        /// The filesystem's byte offset.
        offset: u64,
    },
    /// Too much data after the filesystem to keep aside during a grow.
    #[error("more than {cap} bytes of data follow the filesystem in {}; refusing to move them aside for resize2fs", path.display())]
    TailTooLarge {
        /// The image.
        path: PathBuf,
        /// The most that is kept aside.
        cap: u64,
    },
}

impl ToolError {
    /// What the error concerns: a copy that is not an ext filesystem is the input's; a
    /// path that cannot be prepared is the output's when space ran out; a cancelled tool
    /// is a cancellation; a tool that cannot run or fails is the tool's.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            ToolError::NotExt { .. } => K::Input,
            ToolError::Path { source, .. } => crate::error::io_kind(source, K::Output),
            ToolError::Cancelled { .. } => K::Cancelled,
            // Root is the caller's choice to make, like an option.
            ToolError::LoopNeedsRoot => K::Options,
            _ => K::Tool,
        }
    }
}

/// The Debian package that provides `tool`, for the "install it" hint.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "e2fsck" | "debugfs" | "resize2fs" | "dumpe2fs" | "mke2fs" => "e2fsprogs",
        "losetup" | "blkid" => "util-linux",
        "sfdisk" => "fdisk",
        "fsck.fat" | "fsck.vfat" => "dosfstools",
        t if t.starts_with("qemu-system") => "qemu-system-x86",
        t if t.starts_with("grub-") => "grub-common",
        _ => "the package that provides it",
    }
}

/// PIDs of the children started here that are still running.
fn registry() -> &'static Mutex<Vec<u32>> {
    static PIDS: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    PIDS.get_or_init(Mutex::default)
}

fn register(pid: u32) {
    if let Ok(mut r) = registry().lock() {
        r.push(pid);
    }
}

fn unregister(pid: u32) {
    if let Ok(mut r) = registry().lock() {
        r.retain(|&p| p != pid);
    }
}

/// SIGKILL every child started through this module that has not been reaped yet. For a
/// process about to exit without unwinding (a second Ctrl-C): nothing it started keeps
/// running on its files. Never blocks (a registry held elsewhere is skipped).
pub fn kill_running() {
    if let Ok(r) = registry().try_lock() {
        for &pid in r.iter() {
            kill(pid);
        }
    }
}

/// SIGKILL through kill(1): the library's code outside the FFI module has no `unsafe`,
/// and this is the rare exit-at-once path.
fn kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A command line for an outside program, built as an argument vector.
#[derive(Debug)]
pub struct ToolCommand {
    tool: &'static str,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
    /// Symlinks that stand for paths e2fsprogs cannot take as they are; kept for the run.
    guards: Vec<tempfile::TempDir>,
}

impl ToolCommand {
    /// `tool`, found on PATH.
    pub fn new(tool: &'static str) -> Self {
        ToolCommand {
            tool,
            program: OsString::from(tool),
            args: Vec::new(),
            env: vec![("LC_ALL", OsString::from("C"))],
            guards: Vec::new(),
        }
    }

    /// `tool`, run from `program` (a path or another name) instead of PATH's `tool`.
    pub fn with_program(tool: &'static str, program: impl Into<OsString>) -> Self {
        ToolCommand {
            program: program.into(),
            ..ToolCommand::new(tool)
        }
    }

    /// One argument, as it is.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Several arguments, as they are.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--`: what follows are operands (paths), even when they start with `-`. Only for
    /// tools whose option parser honours it (getopt: e2fsprogs, util-linux, dosfstools).
    pub fn end_of_options(self) -> Self {
        self.arg("--")
    }

    /// The filesystem at `offset` of `image`, as e2fsprogs takes it: the path itself at
    /// offset 0, else `image?offset=N`. e2fsprogs cuts the name at the first `?`, so an
    /// image whose path holds one is named through a private symlink that lives as long
    /// as this command.
    pub fn e2fs_device(mut self, image: &Path, offset: u64) -> Result<Self, ToolError> {
        let name: OsString = if image.as_os_str().as_bytes().contains(&b'?') {
            let path_err = |source| ToolError::Path {
                path: image.to_path_buf(),
                source,
            };
            let dir = tempfile::Builder::new()
                .prefix("imgconv-dev-")
                .tempdir()
                .map_err(path_err)?;
            let target = std::fs::canonicalize(image).map_err(path_err)?;
            let link = dir.path().join("image");
            std::os::unix::fs::symlink(target, &link).map_err(|source| ToolError::Path {
                path: link.clone(),
                source,
            })?;
            self.guards.push(dir);
            link.into_os_string()
        } else {
            image.as_os_str().to_owned()
        };
        Ok(self.arg(e2fs_spec(&name, offset)))
    }

    /// An environment variable for the child.
    pub fn env(mut self, key: &'static str, value: impl AsRef<OsStr>) -> Self {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    /// The program's name.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// The command line, shell-quoted, for reports and messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Start the program with stdout and stderr going where given. The [`Running`] handle
    /// kills and reaps it when dropped.
    pub fn spawn(self, stdout: Stdio, stderr: Stdio) -> Result<Running, ToolError> {
        let mut cmd = self.command();
        cmd.stdout(stdout).stderr(stderr);
        let child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::NotInstalled {
                    tool: self.tool,
                    package: package_of(self.tool),
                }
            } else {
                ToolError::Spawn {
                    tool: self.tool,
                    package: package_of(self.tool),
                    source,
                }
            }
        })?;
        register(child.id());
        Ok(Running {
            child,
            command: self.command_line(),
            _guards: self.guards,
            reaped: false,
        })
    }

    /// Run the program to its end, its output captured (the last [`OUTPUT_CAP`] bytes of
    /// each stream); cancellable through `progress`.
    pub fn output(self, progress: &dyn Progress) -> Result<ToolOutput, ToolError> {
        let mut running = self.spawn(Stdio::piped(), Stdio::piped())?;
        let out = running.child.stdout.take().map(drain);
        let err = running.child.stderr.take().map(drain);
        let status = running.wait(progress);
        // The pipes close when the child is gone (killed or not), so the readers end.
        let collect = |h: Option<thread::JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, stderr) = (collect(out), collect(err));
        Ok(ToolOutput {
            status: status?,
            stdout,
            stderr,
            command: running.command.clone(),
        })
    }

    /// Run the program to its end; exit codes in `ok` are success, any other is a
    /// [`ToolError::Failed`] carrying the tail of its output. Cancellable through
    /// `progress`.
    pub fn run(self, ok: &[i32], progress: &dyn Progress) -> Result<ToolRun, ToolError> {
        let out = self.output(progress)?;
        let output_tail = out.tail(TAIL_LINES);
        match out.status.code() {
            Some(c) if ok.contains(&c) => Ok(ToolRun {
                command: out.command,
                exit_code: c,
                output_tail,
            }),
            code => Err(ToolError::Failed {
                command: out.command,
                code,
                output_tail,
            }),
        }
    }
}

/// A finished program's status and captured output.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output (the last bytes, past the cap).
    pub stdout: Vec<u8>,
    /// Its standard error (the last bytes, past the cap).
    pub stderr: Vec<u8>,
    /// The command line, shell-quoted.
    pub command: String,
}

impl ToolOutput {
    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last `n` non-empty lines of stdout then stderr.
    pub fn tail(&self, n: usize) -> String {
        tail_lines(&format!("{}{}", self.stdout_text(), self.stderr_text()), n)
    }
}

/// A started program, killed and reaped when dropped (and on cancellation).
#[derive(Debug)]
pub struct Running {
    child: Child,
    command: String,
    _guards: Vec<tempfile::TempDir>,
    reaped: bool,
}

impl Running {
    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line, shell-quoted.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// Its exit status if it has ended (and is then reaped), without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ToolError> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.mark_reaped();
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(ToolError::Path {
                path: PathBuf::from(format!("child process {}", self.child.id())),
                source,
            }),
        }
    }

    /// Wait for the end, polling `progress`; when it asks to stop, the child is killed
    /// and reaped and the result is [`ToolError::Cancelled`].
    pub fn wait(&mut self, progress: &dyn Progress) -> Result<ExitStatus, ToolError> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if progress.is_cancelled() {
                self.kill();
                return Err(ToolError::Cancelled {
                    command: self.command.clone(),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Kill the child and reap it.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.mark_reaped();
        }
    }

    fn mark_reaped(&mut self) {
        if !self.reaped {
            self.reaped = true;
            unregister(self.child.id());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Read a pipe to its end on a thread, keeping its last [`OUTPUT_CAP`] bytes.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * OUTPUT_CAP {
                        kept.drain(..kept.len() - OUTPUT_CAP);
                    }
                }
            }
        }
        if kept.len() > OUTPUT_CAP {
            kept.drain(..kept.len() - OUTPUT_CAP);
        }
        kept
    })
}

/// Loop devices attached through [`LoopDevice`] and not detached yet.
fn loop_registry() -> &'static Mutex<Vec<String>> {
    static LOOPS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOOPS.get_or_init(Mutex::default)
}

/// Detach every loop device [`LoopDevice::attach`] attached that is still attached. For
/// a process about to exit without unwinding (a second Ctrl-C), after [`kill_running`]
/// (the tools using them must be gone first). Never blocks.
pub fn detach_loop_devices() {
    if let Ok(r) = loop_registry().try_lock() {
        for dev in r.iter() {
            let _ = Command::new("losetup")
                .arg("-d")
                .arg(dev)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// True when the process runs as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A read-only loop device over part of a file, detached when dropped (also on error and
/// cancellation). Never `losetup -P`, whose partition nodes do not appear in containers:
/// the device covers exactly the part asked for.
#[derive(Debug)]
pub struct LoopDevice {
    dev: String,
}

impl LoopDevice {
    /// `losetup --read-only --find --show --offset N --sizelimit L image`; needs root
    /// ([`ToolError::LoopNeedsRoot`] without it). Cancellable through `progress`.
    pub fn attach(
        image: &Path,
        offset: u64,
        len: u64,
        progress: &dyn Progress,
    ) -> Result<LoopDevice, ToolError> {
        if !is_root() {
            return Err(ToolError::LoopNeedsRoot);
        }
        let out = ToolCommand::new("losetup")
            .args(["--read-only", "--find", "--show", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(len.to_string())
            .end_of_options()
            .arg(image)
            .output(progress)?;
        let dev = out.stdout_text().trim().to_string();
        if !out.status.success() || !dev.starts_with("/dev/") {
            return Err(ToolError::LoopAttach {
                path: image.to_path_buf(),
                why: tail_lines(&out.stderr_text(), 3),
            });
        }
        if let Ok(mut r) = loop_registry().lock() {
            r.push(dev.clone());
        }
        Ok(LoopDevice { dev })
    }

    /// The device path, e.g. `/dev/loop3`.
    pub fn path(&self) -> &str {
        &self.dev
    }
}

impl LoopDevice {
    /// Detach the device now, saying whether that worked (dropping it detaches too, but
    /// silently). Not cancellable on purpose: detaching must happen even after a
    /// cancellation. A device that stays attached stays in the registry, so an exit at
    /// once ([`detach_loop_devices`]) tries again.
    pub fn detach(mut self) -> Result<(), ToolError> {
        self.detach_now()
    }

    fn detach_now(&mut self) -> Result<(), ToolError> {
        if self.dev.is_empty() {
            return Ok(());
        }
        // The device is the argument of -d itself (`d:` in losetup's getopt), not an
        // operand: no `--`.
        ToolCommand::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .run(&[0], &crate::NoProgress)?;
        if let Ok(mut r) = loop_registry().lock() {
            r.retain(|d| d != &self.dev);
        }
        self.dev.clear();
        Ok(())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = self.detach_now();
    }
}

/// e2fsprogs' spelling of the filesystem at `offset` of the file `name`: `name` itself
/// at offset 0, else `name?offset=N` (the unix I/O manager's option).
fn e2fs_spec(name: &OsStr, offset: u64) -> OsString {
    if offset == 0 {
        return name.to_owned();
    }
    let mut bytes = name.as_bytes().to_vec();
    bytes.extend_from_slice(format!("?offset={offset}").as_bytes());
    OsString::from_vec(bytes)
}

/// The last `n` non-empty lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `arg` as a shell word: as it is when it holds only safe characters, else single-quoted
/// (non-UTF-8 bytes shown as U+FFFD: the line is for people to read).
fn shell_quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:?".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn device_names_and_quoting() {
        let c = ToolCommand::new("e2fsck")
            .end_of_options()
            .e2fs_device(Path::new("/tmp/out.img"), 1048576)
            .unwrap();
        assert_eq!(c.args, ["--", "/tmp/out.img?offset=1048576"]);
        assert!(c.guards.is_empty());
        let raw = OsStr::from_bytes(b"/tmp/a\xffb.img");
        assert_eq!(
            e2fs_spec(raw, 512).as_bytes(),
            b"/tmp/a\xffb.img?offset=512"
        );
        assert_eq!(e2fs_spec(raw, 0).as_bytes(), raw.as_bytes());
        assert_eq!(shell_quote(OsStr::new("a b")), "'a b'");
        assert_eq!(shell_quote(OsStr::new("it's")), "'it'\\''s'");
        assert_eq!(shell_quote(OsStr::new("")), "''");
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b\nc");
    }

    #[test]
    fn a_question_mark_in_the_path_goes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("what?.img");
        std::fs::write(&img, b"x").unwrap();
        let c = ToolCommand::new("e2fsck").e2fs_device(&img, 4096).unwrap();
        let arg = c.args[0].as_bytes().to_vec();
        assert!(arg.ends_with(b"/image?offset=4096"), "{:?}", c.args[0]);
        let link = PathBuf::from(OsStr::from_bytes(&arg[..arg.len() - b"?offset=4096".len()]));
        assert_eq!(std::fs::read(&link).unwrap(), b"x");
        drop(c);
        assert!(!link.exists(), "the symlink goes with the command");
    }

    #[test]
    fn output_exit_codes_and_arguments_pass_as_they_are() {
        let odd = OsStr::from_bytes(b"-n\nx\xff y");
        let out = ToolCommand::new("printf")
            .arg("%s")
            .arg(odd)
            .output(&NoProgress)
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, odd.as_bytes());
        let err = ToolCommand::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .run(&[0], &NoProgress)
            .unwrap_err();
        match err {
            ToolError::Failed {
                code: Some(3),
                output_tail,
                ..
            } => assert_eq!(output_tail, "oops"),
            other => panic!("{other:?}"),
        }
        let missing = ToolCommand::new("imgconv-no-such-tool")
            .run(&[0], &NoProgress)
            .unwrap_err();
        assert!(
            matches!(
                missing,
                ToolError::NotInstalled {
                    tool: "imgconv-no-such-tool",
                    ..
                }
            ),
            "{missing}"
        );
        assert!(missing
            .to_string()
            .contains("is not installed: apt-get install"));
    }

    #[test]
    fn output_beyond_the_cap_keeps_its_end() {
        let out = ToolCommand::new("sh")
            .args(["-c", "head -c 3000000 /dev/zero; echo END"])
            .output(&NoProgress)
            .unwrap();
        assert_eq!(out.stdout.len(), OUTPUT_CAP);
        assert!(out.stdout.ends_with(b"END\n"));
    }

    /// A Progress that asks to stop once `flag` is set.
    struct Stop<'a>(&'a AtomicBool);
    impl Progress for Stop<'_> {
        fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn cancellation_kills_and_reaps_the_child() {
        let flag = AtomicBool::new(false);
        let mut running = ToolCommand::new("sleep")
            .arg("600")
            .spawn(Stdio::null(), Stdio::null())
            .unwrap();
        let pid = running.id();
        assert!(registry().lock().unwrap().contains(&pid));
        flag.store(true, Ordering::SeqCst);
        let err = running.wait(&Stop(&flag)).unwrap_err();
        assert!(matches!(err, ToolError::Cancelled { .. }), "{err}");
        // Reaped: no process (not even a zombie) has the PID of our child any more,
        // unless the PID was reused by an unrelated process.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");
        assert!(!registry().lock().unwrap().contains(&pid));
    }

    #[test]
    fn dropping_a_running_child_kills_and_reaps_it() {
        let running = ToolCommand::new("sleep")
            .arg("600")
            .spawn(Stdio::null(), Stdio::null())
            .unwrap();
        let pid = running.id();
        drop(running);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");
        assert!(!registry().lock().unwrap().contains(&pid));
    }
}
