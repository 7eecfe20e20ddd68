//! Linux initramfs images: which files (and so which kernel modules) an initrd holds.
//!
//! Format (the kernel's `init/initramfs.c` and Documentation/driver-api/early-userspace/
//! buffer-format.rst): a sequence of cpio archives in the "newc" format (magic `070701`,
//! or `070702` with a checksum), each compressed or not, separated by zero padding. A
//! compressed one is a gzip, xz, zstd, LZ4 (legacy frame) stream whose content is again
//! cpio archives, themselves separated by zeros. Early microcode comes first as an
//! uncompressed archive (`kernel/x86/microcode/*.bin`), the main image follows,
//! compressed (Debian initramfs-tools, dracut's `early_cpio`).
//!
//! A newc header is 110 ASCII bytes: the magic and 13 eight-digit hex fields (ino, mode,
//! uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
//! check); the name (`namesize` bytes with its NUL) follows, padded so that header + name
//! is a multiple of 4, then the data, padded to 4. The entry named `TRAILER!!!` ends an
//! archive.
//!
//! Everything read is bounded: the input (a whole file in memory, at most
//! [`MAX_INITRD_BYTES`]), the decompressed bytes ([`MAX_UNPACKED_BYTES`]), the entry
//! count, name lengths (4096, the kernel's `PATH_MAX`) and the small files kept
//! (`modules.builtin`).

use crate::bytes::{Fields, ParseError};
use std::collections::BTreeSet;
use std::io::Read;

/// Largest initrd read (Debian's are 30–70 MiB, dracut's with every driver ~100 MiB).
pub const MAX_INITRD_BYTES: u64 = 1 << 30;
/// Most bytes unpacked from all compressed segments together.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// Most archive entries.
const MAX_ENTRIES: usize = 1 << 20;
/// Longest entry name, with its NUL (`PATH_MAX`).
const MAX_NAME: usize = 4096;
/// Largest `modules.builtin` kept.
const MAX_BUILTIN_LIST: u64 = 4 << 20;
/// newc header length.
const HEADER_LEN: usize = 110;

/// How one segment of the initrd is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    /// LZ4 in the legacy frame format the kernel's `unlz4` reads (`lz4 -l`).
    Lz4,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        })
    }
}

/// One run of archives: where it starts in the file and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    pub offset: u64,
    pub compression: Compression,
    /// Entries in its archives (trailers not counted).
    pub entries: usize,
}

/// What an initrd holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InitrdContents {
    pub segments: Vec<Segment>,
    /// Every path, without a leading `./` or `/`.
    pub files: Vec<String>,
    /// Kernel module names (`virtio_blk`; `-` written `_`) of the `.ko` files, compressed
    /// or not.
    pub modules: BTreeSet<String>,
    /// Module names listed in a `modules.builtin` the initrd carries.
    pub builtin: BTreeSet<String>,
}

impl InitrdContents {
    /// Whether the module `name` is in the initrd, as a file or built into the kernel
    /// according to its `modules.builtin`.
    pub fn has_module(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.modules.contains(&n) || self.builtin.contains(&n)
    }
}

/// Errors reading an initrd.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("initrd: {0}")]
    Field(#[from] ParseError),
    #[error("initrd: at byte {offset}: {why}")]
    Format { offset: u64, why: String },
    #[error("initrd: the {compression} segment at byte {offset} does not decompress: {source}")]
    Decompress {
        offset: u64,
        compression: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error("initrd: {what} exceeds the limit of {cap}")]
    TooLarge { what: &'static str, cap: u64 },
}

/// The module name of a path ending in `.ko`, `.ko.gz`, `.ko.xz` or `.ko.zst`.
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"]
        .iter()
        .find_map(|s| base.strip_suffix(s))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// Parse an initrd held in memory.
pub fn parse(data: &[u8]) -> Result<InitrdContents, InitrdError> {
    if data.len() as u64 > MAX_INITRD_BYTES {
        return Err(InitrdError::TooLarge {
            what: "the initrd file",
            cap: MAX_INITRD_BYTES,
        });
    }
    let mut out = InitrdContents::default();
    let mut unpacked = 0u64;
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest[0] == 0 {
            pos += 1;
            continue;
        }
        let offset = pos as u64;
        if rest.starts_with(b"0707") {
            // Uncompressed archives, up to the first byte that is neither an archive
            // nor padding; the kernel requires them to start 4-aligned.
            if pos % 4 != 0 {
                return Err(InitrdError::Format {
                    offset,
                    why: "an uncompressed archive must start on a 4-byte boundary".into(),
                });
            }
            let before = out.files.len();
            let mut cursor = rest;
            let mut counter = Counting::new(&mut cursor, u64::MAX);
            read_archives(&mut counter, &mut out, offset, true)?;
            let used = counter.count as usize;
            out.segments.push(Segment {
                offset,
                compression: Compression::None,
                entries: out.files.len() - before,
            });
            pos += used.max(1);
            continue;
        }
        let compression = match rest {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0x02, 0x21, 0x4c, 0x18, ..] => Compression::Lz4,
            _ => {
                return Err(InitrdError::Format {
                    offset,
                    why: format!(
                        "neither a cpio archive nor a known compressed stream (first bytes {:02x?}; bzip2, lzma and lzo initrds are not read)",
                        &rest[..rest.len().min(6)]
                    ),
                })
            }
        };
        let before = out.files.len();
        let budget = MAX_UNPACKED_BYTES - unpacked;
        let decompress_err = |source| InitrdError::Decompress {
            offset,
            compression,
            source,
        };
        let (consumed, produced) = match compression {
            Compression::Gzip => {
                let mut d = flate2::bufread::GzDecoder::new(rest);
                let produced = unpack(&mut d, &mut out, offset, budget, decompress_err)?;
                (rest.len() - d.get_ref().len(), produced)
            }
            Compression::Xz => {
                let mut d = xz2::bufread::XzDecoder::new(rest);
                let produced = unpack(&mut d, &mut out, offset, budget, decompress_err)?;
                (rest.len() - d.get_ref().len(), produced)
            }
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(rest)
                    .map_err(decompress_err)?
                    .single_frame();
                let produced = unpack(&mut d, &mut out, offset, budget, decompress_err)?;
                (rest.len() - d.get_ref().len(), produced)
            }
            Compression::Lz4 => {
                let mut d = Lz4Legacy::new(rest);
                let produced = unpack(&mut d, &mut out, offset, budget, decompress_err)?;
                (d.consumed, produced)
            }
            Compression::None => unreachable!("handled above"),
        };
        unpacked += produced;
        out.segments.push(Segment {
            offset,
            compression,
            entries: out.files.len() - before,
        });
        pos += consumed.max(1);
    }
    Ok(out)
}

/// Read the archives of a decompressed stream; returns the bytes it produced.
fn unpack(
    reader: &mut dyn Read,
    out: &mut InitrdContents,
    offset: u64,
    budget: u64,
    err: impl Fn(std::io::Error) -> InitrdError,
) -> Result<u64, InitrdError> {
    let mut counter = Counting::new(reader, budget);
    match read_archives(&mut counter, out, offset, false) {
        Ok(()) => Ok(counter.count),
        Err(InitrdError::Decompress { source, .. }) if counter.over => {
            let _ = source;
            Err(InitrdError::TooLarge {
                what: "the unpacked initrd",
                cap: MAX_UNPACKED_BYTES,
            })
        }
        Err(InitrdError::Decompress { source, .. }) => Err(err(source)),
        Err(e) => Err(e),
    }
}

/// A reader that counts bytes and fails past a budget.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    budget: u64,
    over: bool,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a mut dyn Read, budget: u64) -> Self {
        Counting {
            inner,
            count: 0,
            budget,
            over: false,
        }
    }
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.budget {
            self.over = true;
            return Err(std::io::Error::other("decompressed size limit reached"));
        }
        Ok(n)
    }
}

/// Fill `buf`; `Ok(false)` on a clean end of input before the first byte.
fn read_exact_or_eof(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Read one byte; `None` at the end.
fn read_byte(r: &mut dyn Read) -> std::io::Result<Option<u8>> {
    let mut b = [0u8];
    Ok(read_exact_or_eof(r, &mut b)?.then_some(b[0]))
}

fn skip(r: &mut dyn Read, n: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// One eight-digit hex field of a newc header.
fn hex_field(h: &Fields<'_>, field: &'static str, index: usize) -> Result<u64, InitrdError> {
    let raw = h.bytes(field, 6 + index * 8, 8)?;
    let text = std::str::from_utf8(raw).ok();
    text.and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or_else(|| InitrdError::Field(h.invalid(field, 0, "not eight hex digits")))
}

/// Read archives until the input ends. Between archives only zero bytes may appear (the
/// kernel's `Reset` state). For an uncompressed segment (`stop_at_other`) a byte that is
/// neither ends the segment instead: a compressed stream follows; the caller learns how
/// far it got from its counting reader, so the header is only consumed when it is one.
fn read_archives(
    r: &mut Counting<'_>,
    out: &mut InitrdContents,
    segment: u64,
    stop_at_other: bool,
) -> Result<(), InitrdError> {
    let io = |source: std::io::Error| InitrdError::Decompress {
        offset: segment,
        compression: Compression::None,
        source,
    };
    loop {
        // Between archives: zero padding. In an uncompressed segment the next byte
        // cannot be put back, so look at the rest through the slice the caller holds:
        // the counting reader tells how far the archives went, and the caller resumes
        // there; a non-zero, non-'0' byte is only consumed in a compressed stream,
        // where it is an error anyway.
        let at = r.count;
        let first = if stop_at_other {
            // Peek by reading one byte, then let the caller back up one if it is not
            // the start of an archive.
            match read_byte(r).map_err(io)? {
                None => return Ok(()),
                Some(0) => continue,
                Some(b'0') => b'0',
                Some(_) => {
                    r.count = at;
                    return Ok(());
                }
            }
        } else {
            match read_byte(r).map_err(io)? {
                None => return Ok(()),
                Some(0) => continue,
                Some(b) => b,
            }
        };
        if first != b'0' {
            return Err(InitrdError::Format {
                offset: segment,
                why: format!("junk byte {first:#04x} between archives of a compressed segment"),
            });
        }
        read_archive(r, out, segment, first)?;
    }
}

/// Read one archive (up to and with its trailer); `first` is its first byte, already read.
fn read_archive(
    r: &mut Counting<'_>,
    out: &mut InitrdContents,
    segment: u64,
    first: u8,
) -> Result<(), InitrdError> {
    let io = |source: std::io::Error| InitrdError::Decompress {
        offset: segment,
        compression: Compression::None,
        source,
    };
    let mut first = Some(first);
    loop {
        let mut header = [0u8; HEADER_LEN];
        let start = match first.take() {
            Some(b) => {
                header[0] = b;
                1
            }
            None => 0,
        };
        if !read_exact_or_eof(r, &mut header[start..]).map_err(io)? {
            return Err(InitrdError::Format {
                offset: segment,
                why: "the archive ends without its TRAILER!!! entry".into(),
            });
        }
        let h = Fields::new("cpio newc header", &header);
        let magic = h.bytes("c_magic", 0, 6)?;
        if magic != b"070701" && magic != b"070702" {
            return Err(InitrdError::Format {
                offset: segment,
                why: format!(
                    "no cpio newc magic (found {:?}; an old binary or odc cpio cannot be an initramfs)",
                    String::from_utf8_lossy(magic)
                ),
            });
        }
        let mode = hex_field(&h, "c_mode", 1)?;
        let filesize = hex_field(&h, "c_filesize", 6)?;
        let namesize = hex_field(&h, "c_namesize", 11)? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(InitrdError::Field(h.invalid(
                "c_namesize",
                namesize as u64,
                "a name is 1 to 4096 bytes with its NUL",
            )));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name).map_err(io)?;
        skip(r, pad4(HEADER_LEN + namesize) as u64).map_err(io)?;
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(&name)).into_owned();
        if name == "TRAILER!!!" {
            skip(r, pad4_u64(filesize)).map_err(io)?;
            return Ok(());
        }
        if out.files.len() >= MAX_ENTRIES {
            return Err(InitrdError::TooLarge {
                what: "the number of initrd entries",
                cap: MAX_ENTRIES as u64,
            });
        }
        let path = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let regular = mode & 0o170000 == 0o100000;
        let base = path.rsplit('/').next().unwrap_or_default();
        if regular && base == "modules.builtin" && filesize <= MAX_BUILTIN_LIST {
            let mut list = vec![0u8; filesize as usize];
            r.read_exact(&mut list).map_err(io)?;
            out.builtin.extend(
                String::from_utf8_lossy(&list)
                    .lines()
                    .filter_map(module_name),
            );
        } else {
            skip(r, filesize).map_err(io)?;
        }
        skip(r, pad4_u64(filesize)).map_err(io)?;
        if regular {
            if let Some(m) = module_name(&path) {
                out.modules.insert(m);
            }
        }
        out.files.push(path);
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn pad4_u64(n: u64) -> u64 {
    (4 - n % 4) % 4
}

/// The LZ4 legacy frame (lz4's `-l`, the kernel's `unlz4`): the magic `02 21 4c 18`,
/// then blocks, each a little-endian u32 compressed length and that many bytes of an LZ4
/// block that unpacks to at most 8 MiB. The stream ends at the end of the input, at a
/// zero length, or at a length equal to the magic (a next stream).
struct Lz4Legacy<'a> {
    input: &'a [u8],
    consumed: usize,
    block: Vec<u8>,
    at: usize,
    done: bool,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

impl<'a> Lz4Legacy<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lz4Legacy {
            input,
            consumed: 4,
            block: Vec::new(),
            at: 0,
            done: false,
        }
    }

    fn next_block(&mut self) -> std::io::Result<()> {
        let rest = &self.input[self.consumed.min(self.input.len())..];
        let f = Fields::new("lz4 legacy block", rest);
        let Ok(len) = f.u32("compressed_size", 0) else {
            self.done = true;
            return Ok(());
        };
        if len == 0 || len == LZ4_LEGACY_MAGIC {
            self.done = true;
            return Ok(());
        }
        let data = f
            .bytes("block", 4, len as usize)
            .map_err(std::io::Error::other)?;
        self.block.resize(LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(data, &mut self.block)
            .map_err(std::io::Error::other)?;
        self.block.truncate(n);
        self.at = 0;
        self.consumed += 4 + len as usize;
        Ok(())
    }
}

impl Read for Lz4Legacy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            if self.done {
                return Ok(0);
            }
            self.next_block()?;
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Read a whole initrd file (at most [`MAX_INITRD_BYTES`]) and parse it.
pub fn parse_reader(reader: &mut dyn Read) -> Result<InitrdContents, InitrdError> {
    let mut data = Vec::new();
    reader
        .take(MAX_INITRD_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|source| InitrdError::Decompress {
            offset: 0,
            compression: Compression::None,
            source,
        })?;
    parse(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive of `entries` (name, mode, data) with its trailer.
    pub(crate) fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &str, mode: u32, data: &[u8]| {
            let header = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1,
                mode,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (n, m, d) in entries {
            push(n, *m, d);
        }
        push("TRAILER!!!", 0, b"");
        out
    }

    fn main_archive() -> Vec<u8> {
        newc(&[
            (".", 0o40755, b""),
            (
                "usr/lib/modules/6.1.0-28-amd64/kernel/drivers/block/virtio_blk.ko",
                0o100644,
                b"ko",
            ),
            (
                "usr/lib/modules/6.1.0-28-amd64/kernel/drivers/ata/ahci.ko.xz",
                0o100644,
                b"ko",
            ),
            (
                "usr/lib/modules/6.1.0-28-amd64/modules.builtin",
                0o100644,
                b"kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/ext4/ext4.ko\n",
            ),
            ("lib", 0o120777, b"usr/lib"),
        ])
    }

    #[test]
    fn microcode_prefix_then_gzip() {
        let mut data = newc(&[
            ("kernel", 0o40755, b""),
            ("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"ucode"),
        ]);
        data.resize(512, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &main_archive()).unwrap();
        data.extend(gz.finish().unwrap());
        let c = parse(&data).unwrap();
        assert_eq!(
            c.segments
                .iter()
                .map(|s| (s.offset, s.compression, s.entries))
                .collect::<Vec<_>>(),
            [(0, Compression::None, 2), (512, Compression::Gzip, 5)]
        );
        for m in ["virtio_blk", "virtio_pci", "ahci", "ext4"] {
            assert!(c.has_module(m), "{m}");
        }
        assert!(!c.has_module("virtio_net"));
        assert!(c
            .files
            .contains(&"kernel/x86/microcode/GenuineIntel.bin".to_string()));
    }

    #[test]
    fn zstd_xz_and_lz4_segments() {
        let archive = main_archive();
        for (compression, data) in [
            (
                Compression::Zstd,
                zstd::encode_all(&archive[..], 3).unwrap(),
            ),
            (Compression::Xz, {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                std::io::Write::write_all(&mut e, &archive).unwrap();
                e.finish().unwrap()
            }),
            (Compression::Lz4, {
                let block = lz4_flex::block::compress(&archive);
                let mut d = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
                d.extend((block.len() as u32).to_le_bytes());
                d.extend(block);
                d
            }),
        ] {
            let c = parse(&data).unwrap();
            assert_eq!(c.segments.len(), 1, "{compression}");
            assert_eq!(c.segments[0].compression, compression);
            assert!(
                c.has_module("virtio_blk") && c.has_module("ahci"),
                "{compression}"
            );
        }
    }

    #[test]
    fn damaged_inputs_are_errors_not_panics() {
        let good = main_archive();
        // Truncated everywhere.
        for cut in (0..good.len()).step_by(7) {
            let _ = parse(&good[..cut]);
        }
        // Lying sizes.
        let mut bad = good.clone();
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        assert!(parse(&bad).is_err());
        let mut bad = good.clone();
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00100000");
        assert!(parse(&bad).is_err());
        assert!(matches!(parse(b"BZh91AY"), Err(InitrdError::Format { .. })));
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.extend([0u8; 20]);
        assert!(parse(&gz).is_err());
    }
}
