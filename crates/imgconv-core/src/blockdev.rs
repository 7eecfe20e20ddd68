//! Block devices as the output: what the kernel says about a device before it is written
//! (its partitions, what holds it, where it is mounted), and zeroing ranges of it.
//!
//! Everything is read from sysfs (`/sys/dev/block/MAJ:MIN`, whose `partition`, `dev`,
//! `holders/` and `loop/backing_file` entries are the kernel's ABI,
//! Documentation/ABI/stable/sysfs-block), `/proc/self/mountinfo` (proc(5): the third
//! field is the mounted filesystem's `MAJ:MIN`) and `/proc/swaps`. These are the kernel's
//! own text, not guest data; each line is still parsed without trusting its shape.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes zeroed at the start of a device whose conversion failed, and at the start of
/// each partition before one is written: past every boot sector, partition table and
/// filesystem or RAID signature blkid knows.
pub const HEAD_BYTES: u64 = 1 << 20;

/// `MAJ:MIN` of a device number, as sysfs and mountinfo write it.
fn maj_min(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// The device number of the block device at `path` (following symlinks such as
/// `/dev/vg/lv`), or `None` when it is not a block device.
pub fn device_number(path: &Path) -> Option<u64> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

/// True when `path` names a block device (through symlinks).
pub fn is_block_device(path: &Path) -> bool {
    device_number(path).is_some()
}

/// True when the open `file` is a block device.
pub fn is_device_file(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
}

/// The size of an open file: the device's size for a block device (seeking to its end
/// asks the kernel), the length for anything else.
pub fn len_of(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let mut f = file;
        f.seek(SeekFrom::End(0))
    } else {
        Ok(meta.len())
    }
}

/// The sysfs directory of a device number.
fn sysfs_dir(rdev: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{}", maj_min(rdev))).ok()
}

/// Read a `MAJ:MIN` sysfs `dev` file.
fn read_dev(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some(rustix::fs::makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// The kernel's name of a device (`loop3`, `sda1`, `dm-2`).
pub fn kernel_name(rdev: u64) -> String {
    sysfs_dir(rdev)
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| maj_min(rdev))
}

/// The whole disk a partition belongs to, or `None` for a whole disk.
pub fn parent_disk(rdev: u64) -> Option<u64> {
    let dir = sysfs_dir(rdev)?;
    if !dir.join("partition").exists() {
        return None;
    }
    read_dev(&dir.parent()?.join("dev"))
}

/// The partitions of a whole disk (none for a partition or a disk without any).
pub fn partitions(rdev: u64) -> Vec<u64> {
    let Some(dir) = sysfs_dir(rdev) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("partition").exists())
        .filter_map(|p| read_dev(&p.join("dev")))
        .collect()
}

/// What holds the device `rdev` in use (device-mapper, including LVM, md, bcache):
/// the kernel names in its `holders/` directory, with the device-mapper or md name when
/// there is one (`dm-3 (vg-root)`).
pub fn holders(rdev: u64) -> Vec<String> {
    let Some(dir) = sysfs_dir(rdev) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let block = Path::new("/sys/class/block").join(&name);
            let label = std::fs::read_to_string(block.join("dm/name"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && *s != name);
            match label {
                Some(l) => format!("{name} ({l})"),
                None => name,
            }
        })
        .collect();
    names.sort();
    names
}

/// Where a device number is mounted, from `/proc/self/mountinfo` (mount points).
pub fn mount_points(rdev: u64) -> Vec<String> {
    let want = maj_min(rdev);
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let _root = f.next()?;
            let point = f.next()?;
            (dev == want).then(|| unescape_octal(point))
        })
        .collect()
}

/// True when the device is an active swap area (`/proc/swaps` names it by path).
pub fn is_active_swap(rdev: u64) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/swaps") else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .next()
            .map(unescape_octal)
            .and_then(|p| device_number(Path::new(&p)))
            == Some(rdev)
    })
}

/// Undo the kernel's `\ooo` escapes of spaces, tabs, newlines and backslashes in paths.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file a loop device reads and writes (`loop/backing_file`), if `rdev` is one.
pub fn loop_backing_file(rdev: u64) -> Option<PathBuf> {
    let text = std::fs::read_to_string(sysfs_dir(rdev)?.join("loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// True when writing the device `out` could change what is read from `source`: the same
/// device, a partition of it or the disk holding it, a loop device over the source file.
pub fn overlaps_source(out: u64, source: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(source) else {
        return false;
    };
    if meta.file_type().is_block_device() {
        let src = meta.rdev();
        return src == out || parent_disk(src) == Some(out) || parent_disk(out) == Some(src);
    }
    // A loop device (or a partition of one) over the source file itself.
    let lo = parent_disk(out).unwrap_or(out);
    loop_backing_file(lo)
        .and_then(|f| std::fs::metadata(f).ok())
        .is_some_and(|b| b.dev() == meta.dev() && b.ino() == meta.ino())
}

/// Zero `[offset, offset + len)` of `file` (a block device): `fallocate(ZERO_RANGE)`,
/// which the kernel turns into the device's write-zeroes or writes of zeros
/// (block/fops.c, `blkdev_fallocate`), else plain writes of zeros. The kernel answers
/// `EBUSY` when the range has cached pages it cannot drop while another descriptor
/// holds the device exclusively (our own claim): plain writes then too.
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::ZERO_RANGE, offset, len) {
        Ok(()) => return Ok(()),
        Err(e)
            if [
                rustix::io::Errno::OPNOTSUPP,
                rustix::io::Errno::NOSYS,
                rustix::io::Errno::INVAL,
                rustix::io::Errno::BUSY,
            ]
            .contains(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let zeros = vec![0u8; (1 << 20).min(len) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// True when `[offset, offset + len)` of `file` reads as zeros.
pub fn reads_as_zeros(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; (1 << 20).min(len) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if !crate::bytes::is_zero(&buf[..n]) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The ranges of `[0, disk)` outside `kept` (sorted or not, possibly overlapping), plus
/// the first [`HEAD_BYTES`] of each kept range: what a freshly laid out disk must read
/// as zeros when its partitions' contents are written over old data.
pub fn ranges_to_zero(disk: u64, kept: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut kept: Vec<(u64, u64)> = kept
        .iter()
        .filter(|&&(_, len)| len > HEAD_BYTES)
        .map(|&(start, len)| (start + HEAD_BYTES, (start + len).min(disk)))
        .filter(|&(s, e)| s < e)
        .collect();
    kept.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in kept {
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < disk {
        out.push((at, disk - at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_to_zero_keeps_partition_interiors_only() {
        const M: u64 = 1 << 20;
        // MBR gap, root p1 at 1 MiB (100 MiB), swap at 101 MiB (16 MiB), disk 120 MiB.
        let z = ranges_to_zero(120 * M, &[(M, 100 * M), (101 * M, 16 * M)]);
        assert_eq!(
            z,
            vec![(0, 2 * M), (101 * M, M), (117 * M, 3 * M)],
            "gap + p1 head, swap head, tail"
        );
        // Tiny kept ranges are zeroed whole; nothing kept means everything.
        assert_eq!(ranges_to_zero(4 * M, &[(M, M / 2)]), vec![(0, 4 * M)]);
        assert_eq!(ranges_to_zero(0, &[]), vec![]);
        // Kept ranges past the disk are clipped.
        assert_eq!(ranges_to_zero(3 * M, &[(M, 10 * M)]), vec![(0, 2 * M)]);
    }

    #[test]
    fn octal_escapes_in_mount_points() {
        assert_eq!(unescape_octal("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_octal("/x\\134y"), "/x\\y");
        assert_eq!(unescape_octal("\\04"), "\\04");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }

    #[test]
    fn a_regular_file_is_no_device() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_block_device(f.path()));
        f.as_file().set_len(12345).unwrap();
        assert_eq!(len_of(f.as_file()).unwrap(), 12345);
    }
}
