//! Disk image containers read in place: each one a [`BlockSource`] in its own module,
//! recognised by its content, never by its file name.
//!
//! | module | format | how it is read |
//! | --- | --- | --- |
//! | [`xva`] | XenServer / XCP-ng export (`xe vm-export`) | tar members indexed once, 1 MiB chunks checked against their SHA-1 or xxHash64 as they are read |
//! | [`vhd`] | VHD fixed, dynamic, differencing | footer, dynamic header and BAT checked at open; a differencing disk reads through its parent |
//! | [`qcow2`] | qcow2 v2 and v3 | header and every L1/L2 entry bounded at open; zlib and zstd compressed clusters; backing file |
//! | [`compressed`] | gzip, xz, zstd | decompressed once into an unlinked sparse scratch file (no random access in these streams) |
//!
//! Anything else is read as a plain image ([`RawFile`]).

pub mod compressed;
pub mod qcow2;
pub mod qcow2_write;
pub mod vhd;
pub mod xva;

use crate::blockio::{BlockSource, RawFile, Region};
use crate::bytes::ParseError;
use crate::vm::VmFacts;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep backing files (qcow2) and parents (VHD) may chain, and how many containers
/// may nest (an `.xva.gz`): a loop or an absurd chain is refused, not followed forever.
pub const MAX_DEPTH: usize = 8;

/// Why an image container cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A header field does not parse or holds an impossible value.
    #[error("{} is a damaged {format} image: {source}", path.display())]
    Parse {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: ParseError,
    },
    /// The structure parses but does not hold together (a table past the end of the
    /// file, a checksum that does not match, a chunk missing from its index).
    #[error("{} is a damaged {format} image: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    /// An export lacks data of a disk it lists (its last chunk, or every member): the
    /// copy stopped early or lost members, and the missing end is not guessed as zeros.
    #[error("{} is an incomplete {format} export: {disk} {what}", path.display())]
    Incomplete {
        path: PathBuf,
        format: &'static str,
        /// The disk, as the container names it (`disk Ref:12 (xvdb, 1073741824 bytes)`).
        disk: String,
        what: String,
    },
    /// A valid image using something imgconv does not read.
    #[error("{} is a {format} image using {what}, which imgconv cannot read", path.display())]
    Unsupported {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    /// A differencing VHD or a qcow2 overlay whose parent is not beside it.
    #[error("{} is a {format} image whose {role} {parent:?} is not found (looked for {}); put it beside the image", path.display(), looked.display())]
    MissingParent {
        path: PathBuf,
        format: &'static str,
        role: &'static str,
        parent: String,
        looked: PathBuf,
    },
    /// Backing files or containers nest deeper than [`MAX_DEPTH`] (or loop).
    #[error("{} chains more than {MAX_DEPTH} backing images or containers (a loop?)", path.display())]
    TooDeep { path: PathBuf },
}

impl FormatError {
    pub(crate) fn corrupt(path: &Path, format: &'static str, what: impl Into<String>) -> Self {
        FormatError::Corrupt {
            path: path.to_path_buf(),
            format,
            what: what.into(),
        }
    }

    pub(crate) fn parse(path: &Path, format: &'static str, source: ParseError) -> Self {
        FormatError::Parse {
            path: path.to_path_buf(),
            format,
            source,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        FormatError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where an opened image may put what it needs (only the compressed formats need room).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Directory for the decompressed scratch copy of a gzip/xz/zstd image; the system's
    /// temporary directory when `None`. The copy is unlinked as soon as it is created, so
    /// it disappears on every exit path.
    pub scratch_dir: Option<PathBuf>,
}

/// An opened image: the disk as a window over its source, and what the container says
/// about the machine it came from (XVA's `ova.xml`).
#[derive(Debug, Clone)]
pub struct Opened {
    /// The disk (an XVA's boot disk).
    pub region: Region,
    /// The container's reference for that disk (an XVA's VDI `Ref:N`).
    pub id: Option<String>,
    pub vm: Option<VmFacts>,
    /// The machine's other disks in the same container (an XVA's other VDIs, in device
    /// order), read through the one index of the container.
    pub others: Vec<MemberDisk>,
}

/// Another disk of the machine held in the same container as the opened one.
#[derive(Debug, Clone)]
pub struct MemberDisk {
    /// The guest's name for it (`xvdb`).
    pub xen_device: String,
    /// The container's reference for it (an XVA's VDI `Ref:N`).
    pub id: String,
    /// Its bytes.
    pub region: Region,
}

/// The container kinds recognised by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Xva,
    Vhd,
    Qcow2,
    Gzip,
    Xz,
    Zstd,
}

/// Recognise a container from its first bytes and its last 512 (the VHD footer).
pub fn detect(head: &[u8], tail: &[u8]) -> Kind {
    if head.starts_with(&qcow2::MAGIC) {
        Kind::Qcow2
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Kind::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Kind::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Kind::Zstd
    } else if tail.starts_with(vhd::COOKIE) || head.starts_with(vhd::COOKIE) {
        Kind::Vhd
    } else if xva::looks_like_xva(head) {
        Kind::Xva
    } else {
        Kind::Raw
    }
}

/// Open the image at `path` read-only, whatever container holds the disk.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Opened, FormatError> {
    let file = File::open(path).map_err(|e| FormatError::io("cannot open", path, e))?;
    open_file(file, path, opts, 0)
}

/// Open an already open `file` (read from `path`) at nesting `depth`.
pub(crate) fn open_file(
    file: File,
    path: &Path,
    opts: &OpenOptions,
    depth: usize,
) -> Result<Opened, FormatError> {
    if depth > MAX_DEPTH {
        return Err(FormatError::TooDeep {
            path: path.to_path_buf(),
        });
    }
    let raw = RawFile::new(file).map_err(|e| FormatError::io("cannot stat", path, e))?;
    let size = raw.size();
    let mut head = vec![0u8; size.min(4096) as usize];
    raw.read_exact_at(0, &mut head)
        .map_err(|e| FormatError::io("cannot read", path, e))?;
    let mut tail = vec![0u8; if size >= 512 { 512 } else { 0 }];
    if !tail.is_empty() {
        raw.read_exact_at(size - 512, &mut tail)
            .map_err(|e| FormatError::io("cannot read", path, e))?;
    }
    let file = raw.into_file();
    let whole = |src: Arc<dyn BlockSource>| Opened {
        region: Region::whole(src, path),
        id: None,
        vm: None,
        others: Vec::new(),
    };
    Ok(match detect(&head, &tail) {
        Kind::Raw => whole(Arc::new(
            RawFile::new(file).map_err(|e| FormatError::io("cannot stat", path, e))?,
        )),
        Kind::Qcow2 => whole(Arc::new(qcow2::Qcow2::open(file, path, opts, depth)?)),
        Kind::Vhd => whole(Arc::new(vhd::Vhd::open(file, path, opts, depth)?)),
        Kind::Xva => {
            let export = xva::Xva::open(file, path)?;
            let mut region = None;
            let mut id = None;
            let mut others = Vec::new();
            for (i, disk) in export.disks.into_iter().enumerate() {
                let vdi = disk.vdi().to_string();
                let device = disk.xen_device().map(str::to_string);
                let r = Region::whole(Arc::new(disk), path);
                match device {
                    _ if i == export.boot => {
                        region = Some(r);
                        id = Some(vdi);
                    }
                    Some(xen_device) => others.push(MemberDisk {
                        xen_device,
                        id: vdi,
                        region: r,
                    }),
                    // Only the boot disk may lack a device number (checked at open).
                    None => {}
                }
            }
            Opened {
                region: region
                    .ok_or_else(|| FormatError::corrupt(path, "XVA", "ova.xml lists no disk"))?,
                id,
                vm: Some(export.vm),
                others,
            }
        }
        Kind::Gzip | Kind::Xz | Kind::Zstd => {
            compressed::open(file, path, detect(&head, &tail), opts, depth)?
        }
    })
}

/// Copy the disk in `region` into `out` as a sparse raw image (all-zero 64 KiB blocks and
/// the ranges the source maps as empty are left as holes), for tools that read raw
/// images only (e2fsck, fsck.fat).
pub fn copy_to_raw(region: &Region, out: &File) -> io::Result<()> {
    const STEP: u64 = 1 << 20;
    out.set_len(region.len())?;
    let ranges = region
        .data_ranges(0, region.len())
        .unwrap_or_else(|| vec![(0, region.len())]);
    let mut buf = vec![0u8; STEP as usize];
    for (start, len) in ranges {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(STEP) as usize;
            region.read_exact_at(at, &mut buf[..n])?;
            for (i, block) in buf[..n].chunks(64 << 10).enumerate() {
                if !crate::bytes::is_zero(block) {
                    out.write_all_at(block, at + (i as u64) * (64 << 10))?;
                }
            }
            at += n as u64;
        }
    }
    Ok(())
}

/// Read exactly `buf.len()` bytes at `pos` of a container file, naming the structure on
/// a short read (the file ends before the structure does).
pub(crate) fn read_struct(
    file: &File,
    path: &Path,
    format: &'static str,
    what: &str,
    pos: u64,
    buf: &mut [u8],
) -> Result<(), FormatError> {
    file.read_exact_at(buf, pos).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FormatError::corrupt(
                path,
                format,
                format!(
                    "{what} at byte {pos} ({} bytes) lies past the end of the file (truncated?)",
                    buf.len()
                ),
            )
        } else {
            FormatError::io("cannot read", path, e)
        }
    })
}

/// Look for a parent or backing file named `name` (as the child recorded it): beside
/// `child` first (the name's last component in the child's directory), then the name as
/// written, relative to the child's directory.
pub(crate) fn find_beside(child: &Path, name: &str) -> Result<PathBuf, PathBuf> {
    let dir = child.parent().unwrap_or(Path::new("."));
    let given = Path::new(name);
    let beside = given.file_name().map(|f| dir.join(f));
    if let Some(b) = &beside {
        if b.is_file() {
            return Ok(b.clone());
        }
    }
    let as_written = if given.is_absolute() {
        given.to_path_buf()
    } else {
        dir.join(given)
    };
    if as_written.is_file() {
        return Ok(as_written);
    }
    Err(beside.unwrap_or(as_written))
}

/// An `io::Error` for a damaged container found while reading data (after open).
pub(crate) fn damaged(format: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged {format} image: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_by_content() {
        let mut tar = vec![0u8; 512];
        tar[..7].copy_from_slice(b"ova.xml");
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&tar, &[]), Kind::Xva);
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03", &[]), Kind::Qcow2);
        assert_eq!(detect(&[0x1f, 0x8b, 8], &[]), Kind::Gzip);
        assert_eq!(detect(b"\xfd7zXZ\0", &[]), Kind::Xz);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd], &[]), Kind::Zstd);
        assert_eq!(detect(&[0; 512], b"conectix"), Kind::Vhd);
        assert_eq!(detect(&[0; 512], &[0; 512]), Kind::Raw);
        // A tar that is not an XVA is just data.
        let mut other = tar.clone();
        other[..7].copy_from_slice(b"foo.txt");
        assert_eq!(detect(&other, &[]), Kind::Raw);
    }
}
