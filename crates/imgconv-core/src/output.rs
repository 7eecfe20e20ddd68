//! The output image: written to a temporary file beside the destination and renamed
//! into place only when complete, so a failed, cancelled or interrupted conversion never
//! leaves a partial image under the requested name.
//!
//! A block device as the destination is written in place instead (no temporary, no
//! rename): it is checked first (large enough, not mounted, nothing holding it, not the
//! source), claimed with `O_EXCL` for the whole conversion, and its first MiB is zeroed
//! again if the conversion does not complete, so a half-written disk never boots (see
//! [`WipeNote`]).
//!
//! The temporary file is created sparse (`set_len`), so no free space is needed up
//! front; space is consumed as blocks are written, and running out of it is reported
//! as [`OutputError::NoSpace`] naming the directory, not as a bare `ENOSPC`.

use crate::blockio::{BlockDevice, OutputDevice};
use crate::formats::qcow2_write::Qcow2Sink;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Errors creating, writing or committing the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("the output directory {} does not exist", dir.display())]
    NoDirectory { dir: PathBuf },
    #[error("cannot create a temporary output file in {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on the filesystem holding {} (while writing {}): free some space there or choose another output directory", dir.display(), path.display())]
    NoSpace { dir: PathBuf, path: PathBuf },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the output device {} is {} bytes, smaller than the {needed} bytes the disk needs", path.display(), device_bytes)]
    DeviceTooSmall {
        path: PathBuf,
        device_bytes: u64,
        needed: u64,
    },
    #[error("the output device {} is in use: {what}; nothing was written to it", path.display())]
    DeviceInUse { path: PathBuf, what: String },
    #[error("the output device {} overlaps the source {} (the same device, a partition of it or the disk holding it); nothing was written to it", path.display(), source_path.display())]
    DeviceIsSource { path: PathBuf, source_path: PathBuf },
    #[error("the output device {} holds data (its first or last MiB is not all zeros); nothing was written to it", path.display())]
    DeviceHoldsData { path: PathBuf },
    #[error("the output {} is a block device, which gets a raw disk, not {format}", path.display())]
    DeviceFormat { path: PathBuf, format: &'static str },
}

/// What became of a block device whose conversion did not complete: its first MiB was
/// zeroed (so nothing boots from the half-written disk), or zeroing it failed.
#[derive(Debug)]
pub struct DeviceWiped {
    /// The device.
    pub device: PathBuf,
    /// Why zeroing its first MiB failed, if it did.
    pub failed: Option<io::Error>,
}

impl std::fmt::Display for DeviceWiped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failed {
            None => write!(
                f,
                "the first MiB of {} was zeroed, so the half-written disk does not boot",
                self.device.display()
            ),
            Some(e) => write!(
                f,
                "zeroing the first MiB of {} failed too ({e}): it holds a half-written disk, do not boot it",
                self.device.display()
            ),
        }
    }
}

/// Where a device output records that it was wiped when dropped unfinished, for the
/// caller that turns the failure into an error ([`WipeNote::annotate`]).
#[derive(Debug, Clone, Default)]
pub struct WipeNote(std::sync::Arc<std::sync::Mutex<Option<DeviceWiped>>>);

impl WipeNote {
    /// `e`, with what became of the output device if it was wiped.
    pub fn annotate(&self, e: crate::Error) -> crate::Error {
        match self.0.lock().ok().and_then(|mut w| w.take()) {
            Some(wiped) => crate::Error::DeviceWiped {
                source: Box::new(e),
                wiped,
            },
            None => e,
        }
    }

    fn record(&self, wiped: DeviceWiped) {
        if let Ok(mut w) = self.0.lock() {
            *w = Some(wiped);
        }
    }
}

/// Device outputs not finished yet, for [`wipe_unfinished_devices`].
static UNFINISHED: std::sync::Mutex<Vec<(u64, File)>> = std::sync::Mutex::new(Vec::new());

/// Zero the first MiB of every device output this process has not finished: for an
/// embedder that must exit at once (a second Ctrl-C), where no destructor runs. Never
/// blocks on a lock held by the interrupted thread (skips instead).
pub fn wipe_unfinished_devices() {
    if let Ok(list) = UNFINISHED.try_lock() {
        for (_, file) in list.iter() {
            let _ = crate::blockdev::zero_range(file, 0, crate::blockdev::HEAD_BYTES);
            let _ = file.sync_all();
        }
    }
}

/// A block device written in place.
#[derive(Debug)]
struct Device {
    /// The `O_EXCL` descriptor: while it is open the kernel refuses to mount the device
    /// or let LVM, md or another `O_EXCL` opener claim it. Released while e2fsprogs
    /// (which opens it exclusively itself) runs on it ([`TempOutput::unclaimed`]).
    claim: std::sync::Mutex<Option<File>>,
    /// A descriptor of the device for zeroing its start when the conversion fails.
    wipe: File,
    /// A key for [`UNFINISHED`].
    key: u64,
    note: Option<WipeNote>,
    path: PathBuf,
    finished: bool,
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Ok(mut list) = UNFINISHED.lock() {
            list.retain(|(k, _)| *k != self.key);
        }
        if self.finished {
            return;
        }
        let failed = crate::blockdev::zero_range(&self.wipe, 0, crate::blockdev::HEAD_BYTES)
            .and_then(|()| self.wipe.sync_all())
            .err();
        if let Some(note) = &self.note {
            note.record(DeviceWiped {
                device: self.path.clone(),
                failed,
            });
        }
    }
}

/// True for the errors that mean "the output filesystem is full" (or over quota).
fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The path an open file descriptor refers to (Linux `/proc/self/fd`), for messages. An
/// unnamed temporary output (`O_TMPFILE`) reads `<dir>/#<inode> (deleted)` there; it is
/// named as what it is, in its directory.
fn path_of(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return PathBuf::from("the output image");
    };
    let unnamed = path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.starts_with('#') && n.ends_with(" (deleted)")
    });
    match path.parent() {
        Some(dir) if unnamed => dir.join("(temporary output)"),
        _ => path,
    }
}

/// Turn an I/O error from writing `dst` into an [`OutputError`]; `ENOSPC`/`EDQUOT`
/// become [`OutputError::NoSpace`] naming the output's directory.
pub fn write_error(dst: &File, action: &'static str, e: io::Error) -> OutputError {
    let path = path_of(dst);
    if is_no_space(&e) {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        OutputError::NoSpace { dir, path }
    } else {
        OutputError::Io {
            action,
            path,
            source: e,
        }
    }
}

/// How the temporary output exists in the output directory until it is published.
#[derive(Debug)]
enum Backing {
    /// `O_TMPFILE`: an inode with no name at all, linked in as the destination on commit.
    /// Nobody can open it by name meanwhile, and a crash or a kill leaves nothing behind.
    Unnamed,
    /// For filesystems without `O_TMPFILE`: a hidden file created with `O_EXCL` under a
    /// random name, removed on drop unless committed.
    Named(tempfile::TempPath),
    /// The destination is a block device, written in place.
    Device(Device),
}

/// The disk a conversion writes, whatever its format: every output write (stream, graft,
/// partition table, boot code, ESP, swap header) goes through it.
///
/// A raw sink is the output file (or block device) itself, byte for byte, and keeps the
/// file's fast paths (`copy_file_range`, holes by `set_len`); a qcow2 sink maps the disk
/// into a qcow2 image as it is written ([`Qcow2Sink`]), so no raw copy exists at any time.
#[derive(Debug)]
pub enum Sink {
    /// A raw image file or a block device.
    Raw(File),
    /// A qcow2 image (shared: the stream and the graft write it at once).
    Qcow2(std::sync::Arc<Qcow2Sink>),
}

impl Sink {
    /// Another handle on the same disk (a duplicated descriptor, or the same qcow2 map).
    pub fn try_clone(&self) -> io::Result<Sink> {
        Ok(match self {
            Sink::Raw(f) => Sink::Raw(f.try_clone()?),
            Sink::Qcow2(q) => Sink::Qcow2(std::sync::Arc::clone(q)),
        })
    }

    /// True for a qcow2 sink.
    pub fn is_qcow2(&self) -> bool {
        matches!(self, Sink::Qcow2(_))
    }
}

impl BlockDevice for Sink {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Sink::Raw(f) => f.read_exact_at(buf, offset),
            Sink::Qcow2(q) => q.read_at(offset, buf),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Raw(f) => f.write_all_at(data, offset),
            Sink::Qcow2(q) => q.write_at(offset, data),
        }
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match self {
            Sink::Raw(f) => BlockDevice::zero_range(f, offset, len),
            Sink::Qcow2(q) => q.zero_range(offset, len),
        }
    }

    fn flush(&self) -> io::Result<()> {
        match self {
            Sink::Raw(f) => BlockDevice::flush(f),
            Sink::Qcow2(q) => q.flush(),
        }
    }
}

impl OutputDevice for Sink {
    fn raw_file(&self) -> Option<&File> {
        match self {
            Sink::Raw(f) => Some(f),
            Sink::Qcow2(_) => None,
        }
    }

    fn backing_file(&self) -> &File {
        match self {
            Sink::Raw(f) => f,
            Sink::Qcow2(q) => q.file(),
        }
    }

    fn disk_len(&self) -> io::Result<u64> {
        match self {
            Sink::Raw(f) => crate::blockdev::len_of(f),
            Sink::Qcow2(q) => Ok(q.size()),
        }
    }
}

/// A [`Sink`] seen from byte `offset` on: one partition's filesystem as a
/// [`BlockDevice`] for libext2fs.
#[derive(Debug)]
pub struct SinkAt {
    sink: Sink,
    offset: u64,
}

impl SinkAt {
    /// `sink` from byte `offset` on.
    pub fn new(sink: Sink, offset: u64) -> Self {
        SinkAt { sink, offset }
    }

    fn at(&self, pos: u64) -> io::Result<u64> {
        self.offset
            .checked_add(pos)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
    }
}

impl BlockDevice for SinkAt {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.sink.read_at(self.at(offset)?, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.sink.write_at(self.at(offset)?, data)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.sink.zero_range(self.at(offset)?, len)
    }

    fn flush(&self) -> io::Result<()> {
        // The output is synced once, when it is committed.
        Ok(())
    }
}

/// The temporary output of a conversion in its destination's directory; nothing is left
/// of it on drop unless committed.
///
/// Everything is done through the open descriptor: this process writes the file
/// descriptor itself, and external tools and libext2fs are given [`TempOutput::path`],
/// the `/proc/<pid>/fd/<n>` link to that descriptor, never a name in the directory. A
/// co-user of a writable output directory therefore cannot swap in another file (or a
/// symlink to one) for the conversion to write into.
///
/// The file is created 0600; [`TempOutput::commit`] gives it the source's permission
/// bits and owner just before it is published (see [`Access`]).
#[derive(Debug)]
pub struct TempOutput {
    file: File,
    /// Where the disk is written: the file itself, or a qcow2 map over it.
    sink: Sink,
    backing: Backing,
    /// `/proc/<pid>/fd/<n>`.
    fd_path: PathBuf,
    dir: PathBuf,
    dest: PathBuf,
    force: bool,
    access: Option<Access>,
}

/// The owner and permission bits the output gets, taken from the source image.
///
/// The source's read and write bits, less the process umask (execute, setuid, setgid
/// and sticky bits are dropped); the owner always keeps read and write. The owner and
/// group are the source's when the process may set them (as root); when the output's
/// group cannot be the source's, the group bits are dropped, so that no one reads the
/// output who could not read the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Access {
    /// The access of the file at `source` (following symlinks, as opening it does).
    pub fn of(source: &Path) -> io::Result<Access> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(source)?;
        Ok(Access {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
    }
}

/// The process umask, read from `/proc/self/status` (setting it to read it would race
/// with other threads creating files). Unknown means the strictest, 077.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o077)
}

/// The permission bits for an output of `source`'s access, owned by `owner_gid`'s group.
fn output_mode(source: &Access, output_gid: u32, umask: u32) -> u32 {
    let mut mode = (source.mode & 0o666 & !umask) | 0o600;
    if output_gid != source.gid {
        mode &= !0o070;
    }
    mode
}

/// `O_TMPFILE` is not supported here (old kernels answer `EISDIR`, some filesystems
/// `EOPNOTSUPP`).
fn tmpfile_unsupported(e: &rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL, Errno::NOTDIR].contains(e)
}

/// Refuse a block device that is mounted (itself or one of its partitions), an active
/// swap area, held by device-mapper (LVM), md or another stacking driver, or overlapping
/// `source`.
fn check_device_use(dest: &Path, rdev: u64, source: Option<&Path>) -> Result<(), OutputError> {
    use crate::blockdev;
    let in_use = |what: String| OutputError::DeviceInUse {
        path: dest.to_path_buf(),
        what,
    };
    if let Some(source) = source {
        if blockdev::overlaps_source(rdev, source) {
            return Err(OutputError::DeviceIsSource {
                path: dest.to_path_buf(),
                source_path: source.to_path_buf(),
            });
        }
    }
    let mut devices = vec![rdev];
    devices.extend(blockdev::partitions(rdev));
    for dev in devices {
        let name = blockdev::kernel_name(dev);
        if let Some(point) = blockdev::mount_points(dev).into_iter().next() {
            return Err(in_use(format!("{name} is mounted on {point}")));
        }
        if blockdev::is_active_swap(dev) {
            return Err(in_use(format!("{name} is an active swap area")));
        }
        let holders = blockdev::holders(dev);
        if !holders.is_empty() {
            return Err(in_use(format!(
                "{name} is held by {} (device-mapper/LVM, md or similar)",
                holders.join(", ")
            )));
        }
    }
    Ok(())
}

/// Refuse a device smaller than `size`, or one holding data (a first or last MiB that is
/// not all zeros) unless `force`.
fn check_device_content(
    dest: &Path,
    file: &File,
    size: u64,
    force: bool,
) -> Result<u64, OutputError> {
    use crate::blockdev::{self, HEAD_BYTES};
    let read_err = |source| OutputError::Io {
        action: "cannot read",
        path: dest.to_path_buf(),
        source,
    };
    let len = blockdev::len_of(file).map_err(read_err)?;
    if len < size {
        return Err(OutputError::DeviceTooSmall {
            path: dest.to_path_buf(),
            device_bytes: len,
            needed: size,
        });
    }
    if !force {
        let head = HEAD_BYTES.min(len);
        let tail = HEAD_BYTES.min(len - head);
        let empty = blockdev::reads_as_zeros(file, 0, head).map_err(read_err)?
            && blockdev::reads_as_zeros(file, len - tail, tail).map_err(read_err)?;
        if !empty {
            return Err(OutputError::DeviceHoldsData {
                path: dest.to_path_buf(),
            });
        }
    }
    Ok(len)
}

/// Every check a block device `dest` gets before a conversion writes a disk of `size`
/// bytes to it (see [`TempOutput::create_for`]), without claiming it: for a dry run.
/// Nothing for anything but a block device.
pub fn check_device(
    dest: &Path,
    size: u64,
    force: bool,
    source: Option<&Path>,
) -> Result<(), OutputError> {
    let Some(rdev) = crate::blockdev::device_number(dest) else {
        return Ok(());
    };
    check_device_use(dest, rdev, source)?;
    let file = File::open(dest).map_err(|source| OutputError::Io {
        action: "cannot open",
        path: dest.to_path_buf(),
        source,
    })?;
    check_device_content(dest, &file, size, force).map(drop)
}

impl TempOutput {
    /// Create the temporary output in the destination's directory (unnamed with
    /// `O_TMPFILE`, else `.<name>.imgconv-XXXXXX` created with `O_EXCL`), mode 0600,
    /// sized (sparsely) to `size` bytes. Fails early if `dest` exists and `force` is false.
    /// A block device is opened in place (see [`TempOutput::create_for`]).
    pub fn create(dest: &Path, size: u64, force: bool) -> Result<Self, OutputError> {
        Self::create_for(dest, size, force, None, None)
    }

    /// [`TempOutput::create`], refusing a block device `dest` that overlaps `source`, and
    /// recording in `note` that an unfinished device output was wiped.
    ///
    /// A block device is checked before anything is written to it: at least `size` bytes,
    /// not mounted (nor any of its partitions), not an active swap area, not held by
    /// device-mapper (LVM), md or the like, not the source, a partition of it or the disk
    /// holding it, and, unless `force`, holding no data (its first and last MiB all
    /// zeros). It is then claimed with `O_EXCL`, so the kernel refuses it if it is in use
    /// after all and keeps others from mounting it while it is written. Nothing is
    /// renamed on commit; dropped unfinished, its first MiB is zeroed.
    pub fn create_for(
        dest: &Path,
        size: u64,
        force: bool,
        source: Option<&Path>,
        note: Option<WipeNote>,
    ) -> Result<Self, OutputError> {
        if let Some(rdev) = crate::blockdev::device_number(dest) {
            return Self::create_device(dest, rdev, size, force, source, note);
        }
        Self::create_file(dest, size, force)
    }

    fn create_device(
        dest: &Path,
        rdev: u64,
        size: u64,
        force: bool,
        source: Option<&Path>,
        note: Option<WipeNote>,
    ) -> Result<Self, OutputError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        check_device_use(dest, rdev, source)?;
        let open_err = |source: io::Error| OutputError::Io {
            action: "cannot open",
            path: dest.to_path_buf(),
            source,
        };
        let claim = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(dest)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    OutputError::DeviceInUse {
                        path: dest.to_path_buf(),
                        what: "the kernel refuses to hand it over exclusively (mounted, or held by another program)".into(),
                    }
                } else {
                    open_err(e)
                }
            })?;
        // The same device as the claim, whatever happens to the name meanwhile.
        if crate::blockdev::device_number(Path::new(&format!(
            "/proc/self/fd/{}",
            claim.as_raw_fd()
        ))) != Some(rdev)
        {
            return Err(open_err(io::ErrorKind::NotFound.into()));
        }
        check_device_content(dest, &claim, size, force)?;
        let reopen = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(format!("/proc/self/fd/{}", claim.as_raw_fd()))
                .map_err(open_err)
        };
        let file = reopen()?;
        let wipe = reopen()?;
        static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let (Ok(mut list), Ok(dup)) = (UNFINISHED.lock(), wipe.try_clone()) {
            list.push((key, dup));
        }
        let fd_path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        let sink = Sink::Raw(file.try_clone().map_err(open_err)?);
        Ok(TempOutput {
            file,
            sink,
            backing: Backing::Device(Device {
                claim: std::sync::Mutex::new(Some(claim)),
                wipe,
                key,
                note,
                path: dest.to_path_buf(),
                finished: false,
            }),
            fd_path,
            dir: dest.parent().map(Path::to_path_buf).unwrap_or_default(),
            dest: dest.to_path_buf(),
            force,
            access: None,
        })
    }

    /// True when the output is a block device written in place.
    pub fn is_device(&self) -> bool {
        matches!(self.backing, Backing::Device(_))
    }

    /// Zero what a freshly laid out disk of `disk` bytes must read as zeros when it is
    /// written over old data: everything outside the `kept` ranges (partitions whose
    /// writers need no zeros, such as a streamed ext filesystem, whose free blocks are
    /// free, or a swap area) and the first MiB of each kept range, and the device's last
    /// MiB (where old backup GPTs and RAID superblocks live). Nothing for a file: it is
    /// fresh and sparse.
    pub fn zero_unwritten(&self, disk: u64, kept: &[(u64, u64)]) -> Result<(), OutputError> {
        use crate::blockdev;
        if !self.is_device() {
            return Ok(());
        }
        let err = |e| write_error(&self.file, "cannot zero", e);
        let len = blockdev::len_of(&self.file).map_err(err)?;
        let mut ranges = blockdev::ranges_to_zero(disk.min(len), kept);
        let tail = len.saturating_sub(blockdev::HEAD_BYTES).max(disk.min(len));
        ranges.push((tail, len - tail));
        for (start, n) in ranges {
            blockdev::zero_range(&self.file, start, n).map_err(err)?;
        }
        Ok(())
    }

    /// Run `f` (an e2fsprogs program on [`TempOutput::path`]) with the device's
    /// exclusive claim released, since those programs claim it themselves; claimed again
    /// afterwards. Just `f` for a file.
    pub fn unclaimed<T>(&self, f: impl FnOnce() -> T) -> Result<T, OutputError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let Backing::Device(dev) = &self.backing else {
            return Ok(f());
        };
        let Ok(mut claim) = dev.claim.lock() else {
            return Ok(f());
        };
        *claim = None;
        let r = f();
        let again = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .map_err(|e| OutputError::DeviceInUse {
                path: self.dest.clone(),
                what: format!("it could not be claimed back after e2fsprogs ran on it: {e}"),
            })?;
        *claim = Some(again);
        Ok(r)
    }

    fn create_file(dest: &Path, size: u64, force: bool) -> Result<Self, OutputError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(OutputError::NoDirectory { dir });
        }
        if !force && dest.symlink_metadata().is_ok() {
            return Err(OutputError::Exists {
                path: dest.to_path_buf(),
            });
        }
        let create_err = |source: io::Error| OutputError::Create {
            dir: dir.clone(),
            source,
        };
        use rustix::fs::{Mode, OFlags};
        let unnamed = rustix::fs::openat(
            rustix::fs::CWD,
            dir.as_path(),
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        );
        let (file, backing) = match unnamed {
            Ok(fd) => (File::from(fd), Backing::Unnamed),
            Err(e) if tmpfile_unsupported(&e) => {
                let name = dest
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "output".into());
                let (file, path) = tempfile::Builder::new()
                    .prefix(&format!(".{name}.imgconv-"))
                    .rand_bytes(6)
                    .permissions(std::fs::Permissions::from_mode(0o600))
                    .tempfile_in(&dir)
                    .map_err(create_err)?
                    .into_parts();
                (file, Backing::Named(path))
            }
            Err(e) => return Err(create_err(e.into())),
        };
        // Read-write for the owner whatever the umask: external tools reopen it by its
        // descriptor link, which checks the mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(create_err)?;
        file.set_len(size)
            .map_err(|e| write_error(&file, "cannot size", e))?;
        let fd_path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        let sink = Sink::Raw(
            file.try_clone()
                .map_err(|e| write_error(&file, "cannot reopen", e))?,
        );
        Ok(TempOutput {
            file,
            sink,
            backing,
            fd_path,
            dir,
            dest: dest.to_path_buf(),
            force,
            access: None,
        })
    }

    /// Give the published output this access (the source's) instead of 0600.
    pub fn set_access(&mut self, access: Access) {
        self.access = Some(access);
    }

    /// The open temporary file (read-write): the raw disk, or the qcow2 image that holds
    /// it (write the disk through [`TempOutput::sink`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The disk, for every write of the conversion.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// A path that opens this very file for external tools and libext2fs: the
    /// `/proc/<pid>/fd/<n>` link of its descriptor (valid while `self` lives). For a
    /// qcow2 output it opens the qcow2 image, not the disk.
    pub fn path(&self) -> &Path {
        &self.fd_path
    }

    /// Where the image will appear on commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// [`TempOutput::create`] for a qcow2 disk of `size` bytes: the file starts empty
    /// and the disk is written into it through [`TempOutput::sink`]; a block device is
    /// refused.
    pub fn create_qcow2(dest: &Path, size: u64, force: bool) -> Result<Self, OutputError> {
        if crate::blockdev::is_block_device(dest) {
            return Err(OutputError::DeviceFormat {
                path: dest.to_path_buf(),
                format: "qcow2",
            });
        }
        let mut out = Self::create_file(dest, 0, force)?;
        let file = out
            .file
            .try_clone()
            .map_err(|e| write_error(&out.file, "cannot reopen", e))?;
        let sink = Qcow2Sink::new(file, size)
            .map_err(|e| write_error(&out.file, "cannot start the qcow2 image", e))?;
        out.sink = Sink::Qcow2(std::sync::Arc::new(sink));
        Ok(out)
    }

    /// Seal a qcow2 output (its tables and header; see [`Qcow2Sink::finish`]) once the
    /// disk is complete. Nothing for a raw one.
    pub fn finish(&self) -> Result<(), OutputError> {
        match &self.sink {
            Sink::Raw(_) => Ok(()),
            Sink::Qcow2(q) => q
                .finish()
                .map(drop)
                .map_err(|e| write_error(&self.file, "cannot write the qcow2 image", e)),
        }
    }

    /// Rewrite this finished raw output as a sealed qcow2 into a second temporary file in
    /// the same directory, punching each copied range out of the raw one as it goes (so
    /// the two together hold the data about once), and return that file, with the same
    /// destination, overwrite rule and access; the raw one is dropped (and so removed).
    /// For conversions whose outside tools need the disk as a raw file.
    pub fn into_qcow2(self, progress: &mut dyn crate::Progress) -> Result<TempOutput, OutputError> {
        if self.is_device() {
            return Err(OutputError::DeviceFormat {
                path: self.dest.clone(),
                format: "qcow2",
            });
        }
        let size = self
            .file()
            .metadata()
            .map_err(|e| write_error(self.file(), "cannot stat", e))?
            .len();
        let mut qcow2 = TempOutput::create_qcow2(&self.dest, size, self.force)?;
        qcow2.access = self.access;
        if let Sink::Qcow2(q) = &qcow2.sink {
            crate::formats::qcow2_write::copy_raw(self.file(), size, q, progress)
                .map_err(|e| write_error(qcow2.file(), "cannot write the qcow2 image", e))?;
        }
        qcow2.finish()?;
        Ok(qcow2)
    }

    /// Apply the access set by [`TempOutput::set_access`]: owner first (as root), then
    /// the mode, whose group bits depend on the group the file ended up with.
    fn apply_access(&self) -> Result<(), OutputError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Some(access) = self.access else {
            return Ok(());
        };
        let io_err = |action, source| OutputError::Io {
            action,
            path: self.dest.clone(),
            source,
        };
        let meta = self
            .file
            .metadata()
            .map_err(|e| io_err("cannot read the owner of", e))?;
        if (meta.uid(), meta.gid()) != (access.uid, access.gid) {
            // Only root (or a member of the group, for the group alone) may; anyone else
            // keeps the output as their own, which the mode below accounts for.
            let _ = std::os::unix::fs::fchown(&self.file, Some(access.uid), Some(access.gid))
                .or_else(|_| std::os::unix::fs::fchown(&self.file, None, Some(access.gid)));
        }
        let gid = self
            .file
            .metadata()
            .map_err(|e| io_err("cannot read the owner of", e))?
            .gid();
        let mode = output_mode(&access, gid, umask());
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set the permissions of", e))
    }

    /// Flush the image to stable storage, give it its final access, and publish it at the
    /// destination (refusing to replace an existing file unless `force` was given).
    /// Returns the destination.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        self.file
            .sync_all()
            .map_err(|e| write_error(&self.file, "cannot flush", e))?;
        if let Backing::Device(dev) = &mut self.backing {
            // Written in place: nothing to rename, and a device node keeps its access.
            dev.finished = true;
            return Ok(self.dest.clone());
        }
        self.apply_access()?;
        let dest = self.dest.clone();
        let rename_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                OutputError::Exists { path: dest.clone() }
            } else {
                OutputError::Io {
                    action: "cannot rename the finished image to",
                    path: dest.clone(),
                    source,
                }
            }
        };
        match self.backing {
            Backing::Unnamed => {
                use std::os::fd::AsRawFd;
                // linkat(2) of the descriptor's /proc link with AT_SYMLINK_FOLLOW names
                // the O_TMPFILE inode itself, unprivileged (open(2), O_TMPFILE).
                let link = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                let link_to = |to: &Path| {
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        link.as_str(),
                        rustix::fs::CWD,
                        to,
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                    .map_err(io::Error::from)
                };
                if self.force {
                    // No link call replaces a name: link under a fresh random name, then
                    // rename over the destination (the name is removed if that fails).
                    let name = dest
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "output".into());
                    let named = tempfile::Builder::new()
                        .prefix(&format!(".{name}.imgconv-"))
                        .rand_bytes(6)
                        .make_in(&self.dir, |p| link_to(p))
                        .map_err(rename_err)?;
                    named.persist(&dest).map_err(|e| rename_err(e.error))?;
                } else {
                    link_to(&dest).map_err(rename_err)?;
                }
            }
            Backing::Device(_) => {}
            Backing::Named(path) => {
                let persisted = if self.force {
                    path.persist(&dest)
                } else {
                    path.persist_noclobber(&dest)
                };
                // On error the temporary name is removed when `e.path` drops.
                persisted.map_err(|e| rename_err(e.error))?;
            }
        }
        // Make the new name itself durable.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(dest)
    }
}

impl OutputError {
    /// What the error concerns: the output, or options that cannot be (a device output
    /// that is the source, or asked for in another format than raw).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            OutputError::DeviceIsSource { .. } | OutputError::DeviceFormat { .. } => {
                crate::ErrorKind::Options
            }
            _ => crate::ErrorKind::Output,
        }
    }

    /// The next step, where there is a specific one.
    pub fn hint(&self) -> Option<crate::Hint> {
        use crate::Hint;
        match self {
            OutputError::Exists { .. } | OutputError::DeviceHoldsData { .. } => {
                Some(Hint::Overwrite)
            }
            OutputError::DeviceTooSmall { .. } => Some(Hint::LargerDevice),
            OutputError::DeviceInUse { .. } => Some(Hint::ReleaseDevice),
            OutputError::DeviceFormat { .. } => Some(Hint::RawForDevice),
            OutputError::DeviceIsSource { .. } => Some(Hint::OtherOutput),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_is_sparse_unnamed_and_gone_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 1 << 30, false).unwrap();
        assert!(
            out.path().starts_with("/proc"),
            "reached through its descriptor: {}",
            out.path().display()
        );
        // The descriptor link opens the very same file.
        let m = std::fs::metadata(out.path()).unwrap();
        let own = out.file().metadata().unwrap();
        assert_eq!((m.dev(), m.ino()), (own.dev(), own.ino()));
        assert_eq!(m.len(), 1 << 30);
        assert!(m.blocks() * 512 < 1 << 20, "sparse: {} blocks", m.blocks());
        assert_eq!(m.mode() & 0o777, 0o600, "private while written");
        match out.backing {
            Backing::Unnamed => assert_eq!(names_in(dir.path()), Vec::<String>::new()),
            Backing::Named(ref p) => assert_eq!(p.parent(), Some(dir.path())),
            Backing::Device(_) => panic!("a file is no device"),
        }
        drop(out);
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "nothing left");
    }

    #[test]
    fn commit_publishes_and_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 4096, false).unwrap();
        out.file().write_all_at(b"converted", 0).unwrap();
        assert_eq!(out.commit().unwrap(), dest);
        assert_eq!(&std::fs::read(&dest).unwrap()[..9], b"converted");
        assert_eq!(names_in(dir.path()), ["kvm.img"]);

        assert!(matches!(
            TempOutput::create(&dest, 4096, false),
            Err(OutputError::Exists { .. })
        ));
        // Appeared between create and commit: still refused, nothing else left.
        std::fs::remove_file(&dest).unwrap();
        let out = TempOutput::create(&dest, 8192, false).unwrap();
        std::fs::write(&dest, b"someone else's").unwrap();
        assert!(matches!(out.commit(), Err(OutputError::Exists { .. })));
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's");
        assert_eq!(names_in(dir.path()), ["kvm.img"]);

        let out = TempOutput::create(&dest, 8192, true).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 8192);
        assert_eq!(names_in(dir.path()), ["kvm.img"]);
    }

    #[test]
    fn a_symlink_put_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 4096, true).unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        out.file().write_all_at(b"image", 0).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(!std::fs::symlink_metadata(&dest).unwrap().is_symlink());
        assert_eq!(&std::fs::read(&dest).unwrap()[..5], b"image");
    }

    #[test]
    fn the_output_gets_the_sources_access() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("xen.img");
        std::fs::write(&src, b"guest").unwrap();
        let me = std::fs::metadata(&src).unwrap();
        for (source_mode, want) in [(0o600, 0o600), (0o400, 0o600), (0o640, 0o640 & !umask())] {
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(source_mode)).unwrap();
            let dest = dir.path().join(format!("kvm-{source_mode:o}.img"));
            let mut out = TempOutput::create(&dest, 4096, false).unwrap();
            out.set_access(Access::of(&src).unwrap());
            out.commit().unwrap();
            let m = std::fs::metadata(&dest).unwrap();
            assert_eq!(m.mode() & 0o7777, want, "source {source_mode:o}");
            assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()));
        }
        // Without a source access, the output stays private.
        let dest = dir.path().join("private.img");
        TempOutput::create(&dest, 4096, false)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn output_mode_never_widens_the_source() {
        let a = |mode, gid| Access {
            mode,
            uid: 1000,
            gid,
        };
        assert_eq!(output_mode(&a(0o600, 7), 7, 0o022), 0o600);
        assert_eq!(output_mode(&a(0o644, 7), 7, 0o022), 0o644);
        assert_eq!(output_mode(&a(0o666, 7), 7, 0o022), 0o644);
        assert_eq!(
            output_mode(&a(0o4755, 7), 7, 0o022),
            0o644,
            "no exec or setuid"
        );
        assert_eq!(
            output_mode(&a(0o660, 7), 8, 0o002),
            0o600,
            "other group: no group bits"
        );
        assert_eq!(output_mode(&a(0o444, 7), 7, 0o077), 0o600, "owner keeps rw");
    }

    #[test]
    fn no_space_names_the_output_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 4096, false).unwrap();
        let e = write_error(
            out.file(),
            "cannot write",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        match &e {
            OutputError::NoSpace { dir: d, path } => {
                assert_eq!(d, dir.path());
                assert_eq!(path.parent(), Some(dir.path()));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().contains("no space left")
                && e.to_string().contains(&dir.path().display().to_string())
        );
        let other = write_error(
            out.file(),
            "cannot write",
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(other, OutputError::Io { .. }));
    }

    #[test]
    fn missing_directory_is_named() {
        let e =
            TempOutput::create(Path::new("/nonexistent-imgconv-dir/x.img"), 1, false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-imgconv-dir"), "{e}");
    }
}
