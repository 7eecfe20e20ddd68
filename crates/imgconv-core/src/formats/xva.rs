//! XVA, the XenServer / XCP-ng VM export (`xe vm-export`), read in place.
//!
//! An XVA is an uncompressed POSIX tar (ustar). Its first member, `ova.xml`, describes
//! the VM in XML-RPC value syntax (see [`OvaXml`]); each disk follows as members
//! `Ref:<VDI>/<chunk>` holding 1 MiB of the disk (eight decimal digits), each followed
//! by `<chunk>.checksum` (the SHA-1 of the chunk, hex) or `<chunk>.xxhash` (its
//! xxHash64, hex). Chunks that are all zeros are left out; the first and the last chunk
//! are always written. (Layout as xapi's `stream_vdi` writes it and Debian's `xva-img`
//! reads it.)
//!
//! Where a member's bytes belong follows xapi's importer (`recv_all_vdi`): the members
//! of one disk come in increasing chunk numbers; the numbers skipped since the previous
//! member are all-zero chunks, and an empty member (which xapi writes to keep the
//! connection alive during a long run of zeros) takes a number but no bytes, so the
//! chunks after it are named one higher than their place. A disk's members therefore
//! end exactly at its `virtual_size`; a disk whose data stops short of it (its last
//! chunk, which every export writes, is missing, or it has no member at all) is an
//! incomplete export and refused ([`FormatError::Incomplete`]): its end is never
//! guessed as zeros.
//!
//! The tar headers are read once, each bounded (POSIX.1-1988 ustar: name 0..100, size
//! 124..136 octal, checksum 148..156, type 156, magic 257, prefix 345..500), to index the
//! chunks of every disk of the VM ([`XvaExport`]: one [`Xva`] block source per disk,
//! sharing the open file); a chunk's digest is checked the first time any byte of it is
//! read, and a mismatch is an error naming the chunk.

use super::{damaged, read_struct, FormatError};
use crate::blockio::{BlockSource, SourceFormat};
use crate::bytes::Fields;
use crate::vm::{normalise_mac, Nic, VmDisk, VmFacts};
use sha1::{Digest as _, Sha1};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const FORMAT: &str = "XVA";
/// Size of a disk chunk.
pub const CHUNK: u64 = 1 << 20;
const BLOCK: u64 = 512;
/// Bound on `ova.xml` (real ones are a few KiB to a few hundred KiB).
const MAX_OVA_XML: u64 = 16 << 20;
/// Bound on a disk's virtual size (16 TiB).
const MAX_DISK: u64 = 16 << 40;
/// Bound on a checksum member (a hex digest and a newline).
const MAX_DIGEST_MEMBER: u64 = 256;
/// Bound on a VBD's `userdevice` (xapi allows a few dozen; 701 is `xvdzz`, the last
/// two-letter name).
const MAX_USERDEVICE: u32 = 701;

/// True when `head` starts like an XVA: a ustar header whose first member is `ova.xml`.
pub fn looks_like_xva(head: &[u8]) -> bool {
    head.len() >= 512
        && head.starts_with(b"ova.xml\0")
        && head.get(257..262) == Some(b"ustar".as_slice())
}

/// A chunk's recorded digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Sha1([u8; 20]),
    XxHash64(u64),
}

impl Digest {
    fn matches(self, data: &[u8]) -> bool {
        match self {
            Digest::Sha1(want) => Sha1::digest(data).as_slice() == want,
            Digest::XxHash64(want) => xxhash_rust::xxh64::xxh64(data, 0) == want,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Sha1(_) => "SHA-1 (.checksum)",
            Digest::XxHash64(_) => "xxHash64 (.xxhash)",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Its place in the disk, in chunks.
    index: u64,
    /// The number in its member's name (differs from `index` after a keep-alive member).
    number: u64,
    /// Offset of the chunk's data in the tar.
    offset: u64,
    /// Its length (1 MiB, or less for the last chunk of an odd-sized disk).
    len: u64,
    digest: Option<Digest>,
}

/// The tar file the disks of one export are read from.
#[derive(Debug)]
struct Tar {
    file: File,
    path: PathBuf,
}

/// One disk of an XVA, read in place through the export's one index.
#[derive(Debug)]
pub struct Xva {
    tar: Arc<Tar>,
    size: u64,
    vdi: String,
    xen_device: Option<String>,
    /// The chunks present, in increasing `index`.
    chunks: Vec<Chunk>,
    verified: Vec<AtomicBool>,
    digests: &'static str,
}

/// An XVA opened: what `ova.xml` says of the VM, and every disk of it with data, in
/// VBD device order, each its own block source.
#[derive(Debug)]
pub struct XvaExport {
    /// The VM's facts (its disks each with their Xen name; all that are read are marked
    /// converted).
    pub vm: VmFacts,
    /// The disks, in device order (userdevice 0, 1, ...); CD drives and empty VBDs are
    /// not among them, nor disks of size 0.
    pub disks: Vec<Xva>,
    /// Index in `disks` of the boot disk: the bootable VBD, else userdevice 0, else the
    /// first.
    pub boot: usize,
}

/// One tar member.
struct Member {
    name: String,
    offset: u64,
    size: u64,
}

/// What the indexing pass knows of one disk so far.
struct Indexing {
    vdi: String,
    xen_device: Option<String>,
    size: u64,
    chunks: Vec<Chunk>,
    /// Where the next member's bytes start, in the disk.
    end: u64,
    /// The number of the last member and whether its digest was read.
    last: Option<(u64, bool)>,
    /// The last member was empty (a keep-alive): its digest is that of no bytes.
    last_empty: bool,
    sha1: usize,
    xxhash: usize,
}

impl Indexing {
    fn describe(&self) -> String {
        match &self.xen_device {
            Some(d) => format!("disk {} ({d}, {} bytes)", self.vdi, self.size),
            None => format!("disk {} ({} bytes)", self.vdi, self.size),
        }
    }

    /// Place the data member `name` (chunk number `number`, `m` in the tar).
    fn data(
        &mut self,
        path: &Path,
        name: &str,
        number: u64,
        m: &Member,
    ) -> Result<(), FormatError> {
        let corrupt = |what: String| FormatError::corrupt(path, FORMAT, what);
        let skipped = match self.last {
            None => number,
            Some((last, _)) if number > last => number - last - 1,
            Some(_) => {
                return Err(corrupt(format!(
                    "chunk {name:?} comes after a higher or equal chunk number of {} (an export writes them in increasing order)",
                    self.describe()
                )))
            }
        };
        let at = skipped
            .checked_mul(CHUNK)
            .and_then(|s| self.end.checked_add(s))
            .filter(|&at| at < self.size || (at == self.size && m.size == 0))
            .ok_or_else(|| {
                corrupt(format!(
                    "chunk {name:?} lies past the end of {}",
                    self.describe()
                ))
            })?;
        self.last = Some((number, false));
        self.last_empty = m.size == 0;
        self.end = at;
        if m.size == 0 {
            return Ok(());
        }
        let want = (self.size - at).min(CHUNK);
        if m.size != want {
            return Err(corrupt(format!(
                "chunk {name:?} holds {} bytes, not {want} (at byte {at} of {})",
                m.size,
                self.describe()
            )));
        }
        self.chunks.push(Chunk {
            index: at / CHUNK,
            number,
            offset: m.offset,
            len: m.size,
            digest: None,
        });
        self.end = at + m.size;
        Ok(())
    }

    /// Record the digest member `name` (`suffix` `.checksum` or `.xxhash`) of chunk
    /// number `number`, holding `text`.
    fn digest(
        &mut self,
        path: &Path,
        name: &str,
        number: u64,
        suffix: &str,
        text: &[u8],
    ) -> Result<(), FormatError> {
        let corrupt = |what: String| FormatError::corrupt(path, FORMAT, what);
        match self.last {
            Some((n, false)) if n == number => self.last = Some((n, true)),
            _ => return Err(corrupt(format!("{name:?} does not follow its chunk"))),
        }
        let digest = parse_digest(suffix, text)
            .ok_or_else(|| corrupt(format!("{name:?} does not hold a hex digest")))?;
        match digest {
            Digest::Sha1(_) => self.sha1 += 1,
            Digest::XxHash64(_) => self.xxhash += 1,
        }
        if self.last_empty {
            // A keep-alive member's digest is that of no bytes.
            if !digest.matches(&[]) {
                return Err(corrupt(format!(
                    "{name:?} is not the {} of the empty member it follows",
                    digest.name()
                )));
            }
        } else if let Some(c) = self.chunks.last_mut() {
            c.digest = Some(digest);
        }
        Ok(())
    }

    /// The disk, once every member was read: refused when its data stops short.
    fn finish(self, tar: &Arc<Tar>) -> Result<Xva, FormatError> {
        if self.end != self.size {
            let what = if self.chunks.is_empty() {
                "has no data member in the tar; every export writes at least its first and \
                 last 1 MiB chunk"
                    .to_string()
            } else {
                format!(
                    "holds data only up to byte {}: its last chunk, which every export writes, \
                     is missing",
                    self.end
                )
            };
            return Err(FormatError::Incomplete {
                path: tar.path.clone(),
                format: FORMAT,
                disk: self.describe(),
                what,
            });
        }
        let digests = match (self.sha1, self.xxhash) {
            (0, 0) => "no checksums",
            (_, 0) => "SHA-1 checked",
            (0, _) => "xxHash64 checked",
            _ => "SHA-1 and xxHash64 checked",
        };
        Ok(Xva {
            tar: Arc::clone(tar),
            size: self.size,
            vdi: self.vdi,
            xen_device: self.xen_device,
            verified: (0..self.chunks.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            chunks: self.chunks,
            digests,
        })
    }
}

impl Xva {
    /// Index the XVA in `file` (read from `path`): `ova.xml`, then the chunks of every
    /// disk of the VM in one pass over the tar headers.
    pub fn open(file: File, path: &Path) -> Result<XvaExport, FormatError> {
        let file_len = file
            .metadata()
            .map_err(|e| FormatError::io("cannot stat", path, e))?
            .len();
        let mut members = Members {
            file: &file,
            path,
            file_len,
            pos: 0,
        };
        let first = members.next()?.ok_or_else(|| {
            FormatError::corrupt(path, FORMAT, "the tar ends before its first member")
        })?;
        if first.name != "ova.xml" {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("the first member is {:?}, not ova.xml", first.name),
            ));
        }
        if first.size > MAX_OVA_XML {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("ova.xml claims {} bytes (bound {MAX_OVA_XML})", first.size),
            ));
        }
        let mut xml = vec![0u8; first.size as usize];
        read_struct(&file, path, FORMAT, "ova.xml", first.offset, &mut xml)?;
        let xml = String::from_utf8(xml)
            .map_err(|_| FormatError::corrupt(path, FORMAT, "ova.xml is not UTF-8"))?;
        let ova = OvaXml::parse(&xml)
            .map_err(|why| FormatError::corrupt(path, FORMAT, format!("ova.xml: {why}")))?;
        let mut vm = ova.facts();
        let boot = vm
            .disks
            .iter()
            .position(|d| d.bootable)
            .or_else(|| {
                vm.disks
                    .iter()
                    .position(|d| d.device.as_deref() == Some("xvda"))
            })
            .or(if vm.disks.is_empty() { None } else { Some(0) })
            .ok_or_else(|| FormatError::corrupt(path, FORMAT, "ova.xml lists no disk"))?;
        // The disks read: every one with a size; the boot disk must have one.
        let mut indexing = Vec::new();
        let mut boot_at = 0;
        for (i, d) in vm.disks.iter_mut().enumerate() {
            let size = match d.size {
                Some(0) if i != boot => continue,
                Some(s) => s,
                None => {
                    return Err(FormatError::corrupt(
                        path,
                        FORMAT,
                        format!("ova.xml gives no virtual_size for disk {}", d.id),
                    ))
                }
            };
            if size == 0 || size > MAX_DISK {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "disk {} claims a virtual size of {size} bytes (bound {MAX_DISK})",
                        d.id
                    ),
                ));
            }
            if i != boot && d.device.is_none() {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "the VBD of disk {} gives no device number (userdevice), so the guest's name for it is unknown",
                        d.id
                    ),
                ));
            }
            if let Some(other) = indexing
                .iter()
                .find(|o: &&Indexing| o.xen_device.is_some() && o.xen_device == d.device)
            {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "the VBDs of disks {} and {} give the same device number",
                        other.vdi, d.id
                    ),
                ));
            }
            if i == boot {
                boot_at = indexing.len();
            }
            d.converted = true;
            indexing.push(Indexing {
                vdi: d.id.clone(),
                xen_device: d.device.clone(),
                size,
                chunks: Vec::new(),
                end: 0,
                last: None,
                last_empty: false,
                sha1: 0,
                xxhash: 0,
            });
        }
        while let Some(m) = members.next()? {
            let Some((dir, rest)) = m.name.split_once('/') else {
                continue;
            };
            // Members of a VDI no VBD of the VM names carry nothing of its disks.
            let Some(disk) = indexing.iter_mut().find(|d| d.vdi == dir) else {
                continue;
            };
            let (digits, suffix) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
            let number = parse_chunk_number(digits).ok_or_else(|| {
                FormatError::corrupt(path, FORMAT, format!("unexpected member {:?}", m.name))
            })?;
            match suffix {
                "" => disk.data(path, &m.name, number, &m)?,
                ".checksum" | ".xxhash" => {
                    if m.size > MAX_DIGEST_MEMBER {
                        return Err(FormatError::corrupt(
                            path,
                            FORMAT,
                            format!("{:?} holds {} bytes", m.name, m.size),
                        ));
                    }
                    let mut text = vec![0u8; m.size as usize];
                    read_struct(&file, path, FORMAT, &m.name, m.offset, &mut text)?;
                    disk.digest(path, &m.name, number, suffix, &text)?;
                }
                _ => {
                    return Err(FormatError::corrupt(
                        path,
                        FORMAT,
                        format!("unexpected member {:?}", m.name),
                    ))
                }
            }
        }
        let tar = Arc::new(Tar {
            file,
            path: path.to_path_buf(),
        });
        let disks = indexing
            .into_iter()
            .map(|d| d.finish(&tar))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(XvaExport {
            vm,
            disks,
            boot: boot_at,
        })
    }

    /// The VDI's reference in the export (`Ref:12`).
    pub fn vdi(&self) -> &str {
        &self.vdi
    }

    /// The guest's name for this disk (`xvdb`, from its VBD's userdevice), when known.
    pub fn xen_device(&self) -> Option<&str> {
        self.xen_device.as_deref()
    }

    /// Read `buf.len()` bytes at `at` inside chunk `index`, checking the chunk first.
    fn read_chunk(&self, index: u64, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let Ok(slot) = self.chunks.binary_search_by_key(&index, |c| c.index) else {
            buf.fill(0);
            return Ok(());
        };
        let chunk = self.chunks[slot];
        let len = buf.len() as u64;
        // Inside the chunk's data, the rest of a short last chunk reads as zeros.
        let have = chunk.len.saturating_sub(at).min(len) as usize;
        let (data, zeros) = buf.split_at_mut(have);
        zeros.fill(0);
        let file = &self.tar.file;
        let Some(digest) = chunk.digest else {
            return file.read_exact_at(data, chunk.offset + at);
        };
        if self.verified[slot].load(Ordering::Acquire) {
            return file.read_exact_at(data, chunk.offset + at);
        }
        let mut whole = vec![0u8; chunk.len as usize];
        file.read_exact_at(&mut whole, chunk.offset)?;
        if !digest.matches(&whole) {
            return Err(damaged(
                FORMAT,
                format!(
                    "chunk {}/{:08} of {} does not match its {} (disk bytes {}..{})",
                    self.vdi,
                    chunk.number,
                    self.tar.path.display(),
                    digest.name(),
                    index * CHUNK,
                    index * CHUNK + chunk.len
                ),
            ));
        }
        self.verified[slot].store(true, Ordering::Release);
        data.copy_from_slice(&whole[at as usize..at as usize + have]);
        Ok(())
    }
}

impl BlockSource for Xva {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let index = at / CHUNK;
            let within = at % CHUNK;
            let n = ((CHUNK - within) as usize).min(buf.len() - done);
            self.read_chunk(index, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn format(&self) -> SourceFormat {
        SourceFormat {
            kind: "xva",
            details: format!(
                "disk {}{} of {} bytes, {} of {} 1 MiB chunks present, {}",
                self.vdi,
                self.xen_device
                    .as_deref()
                    .map_or_else(String::new, |d| format!(" ({d})")),
                self.size,
                self.chunks.len(),
                self.size.div_ceil(CHUNK),
                self.digests
            ),
        }
    }

    fn will_need(&self, pos: u64, len: u64) {
        // The chunks of a range lie in the tar in disk order, their checksum members
        // between them: one hint from the first chunk's data to the last one's end.
        let (first, last) = (pos / CHUNK, pos.saturating_add(len).div_ceil(CHUNK));
        let from = self.chunks.partition_point(|c| c.index < first);
        let to = self.chunks.partition_point(|c| c.index < last);
        if let (Some(a), Some(b)) = (
            self.chunks.get(from),
            to.checked_sub(1).and_then(|t| self.chunks.get(t)),
        ) {
            if from < to {
                let end = b.offset.saturating_add(b.len);
                crate::blockio::will_need_file(
                    &self.tar.file,
                    a.offset,
                    end.saturating_sub(a.offset),
                );
            }
        }
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        Some(crate::blockio::unit_data_ranges(
            pos,
            len,
            self.size,
            CHUNK,
            |c| self.chunks.binary_search_by_key(&c, |x| x.index).is_ok(),
        ))
    }
}

fn parse_chunk_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_digest(suffix: &str, text: &[u8]) -> Option<Digest> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let hex = |s: &str, n: usize| -> Option<Vec<u8>> {
        if s.len() != n * 2 {
            return None;
        }
        (0..n)
            .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    };
    match suffix {
        ".checksum" => Some(Digest::Sha1(hex(text, 20)?.try_into().ok()?)),
        ".xxhash" => Some(Digest::XxHash64(
            u64::from_str_radix((text.len() == 16).then_some(text)?, 16).ok()?,
        )),
        _ => None,
    }
}

/// The tar's members, one bounded header at a time.
struct Members<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    pos: u64,
}

impl Members<'_> {
    fn next(&mut self) -> Result<Option<Member>, FormatError> {
        loop {
            if self.pos + BLOCK > self.file_len {
                // No end-of-archive blocks: the export was cut short.
                return Err(FormatError::corrupt(
                    self.path,
                    FORMAT,
                    format!(
                        "the tar ends at byte {} without its end-of-archive marker (truncated?)",
                        self.file_len
                    ),
                ));
            }
            let mut raw = [0u8; BLOCK as usize];
            read_struct(
                self.file,
                self.path,
                FORMAT,
                "tar header",
                self.pos,
                &mut raw,
            )?;
            if raw.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let h = Fields::new("XVA tar header", &raw);
            let name_field = h.bytes("name", 0, 100).map_err(|e| self.parse(e))?;
            let prefix_field = h.bytes("prefix", 345, 155).map_err(|e| self.parse(e))?;
            let size = octal(h.bytes("size", 124, 12).map_err(|e| self.parse(e))?)
                .ok_or_else(|| self.parse(h.invalid("size", 0, "not an octal number")))?;
            let sum = octal(h.bytes("chksum", 148, 8).map_err(|e| self.parse(e))?)
                .ok_or_else(|| self.parse(h.invalid("chksum", 0, "not an octal number")))?;
            let computed: u64 = raw
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if sum != computed {
                return Err(FormatError::corrupt(
                    self.path,
                    FORMAT,
                    format!(
                        "the tar header at byte {} has checksum {sum}, its bytes sum to {computed}",
                        self.pos
                    ),
                ));
            }
            let kind = h.u8("typeflag", 156).map_err(|e| self.parse(e))?;
            let offset = self.pos + BLOCK;
            let padded = size
                .checked_next_multiple_of(BLOCK)
                .and_then(|p| offset.checked_add(p))
                .filter(|&end| end <= self.file_len)
                .ok_or_else(|| {
                    FormatError::corrupt(
                        self.path,
                        FORMAT,
                        format!(
                            "the tar member at byte {} claims {size} bytes, past the end of the file ({} bytes; truncated?)",
                            self.pos, self.file_len
                        ),
                    )
                })?;
            self.pos = padded;
            // Regular files only ('0' or the old NUL); directories and metadata
            // entries carry no disk data.
            if kind != b'0' && kind != 0 {
                continue;
            }
            let text = |f: &[u8]| {
                let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
                String::from_utf8_lossy(&f[..end]).into_owned()
            };
            let prefix = text(prefix_field);
            let name = text(name_field);
            let name = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            return Ok(Some(Member { name, offset, size }));
        }
    }

    fn parse(&self, e: crate::bytes::ParseError) -> FormatError {
        FormatError::parse(self.path, FORMAT, e)
    }
}

/// A tar number field: octal digits, space or NUL terminated (ustar), or base-256 with
/// the high bit of the first byte set (GNU, for sizes of 8 GiB and more).
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

/// An XML-RPC value as `ova.xml` writes them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn refs(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `ova.xml`: a struct with `version` and `objects`, an array of `{class, id, snapshot}`
/// records (VM, VBD, VDI, VIF, SR, ...), `snapshot` holding the object's fields.
#[derive(Debug, Clone)]
pub struct OvaXml {
    objects: Vec<(String, String, Value)>,
}

/// Bound on the nesting of values in `ova.xml`.
const MAX_XML_DEPTH: usize = 32;

impl OvaXml {
    /// Parse `ova.xml`.
    pub fn parse(text: &str) -> Result<OvaXml, String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut events = Vec::new();
        loop {
            match reader.read_event().map_err(|e| e.to_string())? {
                Event::Eof => break,
                Event::Start(e) => events.push(Ev::Start(
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                )),
                Event::End(e) => events.push(Ev::End(
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                )),
                Event::Empty(e) => {
                    let n = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    events.push(Ev::Start(n.clone()));
                    events.push(Ev::End(n));
                }
                Event::Text(t) => events.push(Ev::Text(
                    t.unescape().map_err(|e| e.to_string())?.into_owned(),
                )),
                Event::CData(t) => events.push(Ev::Text(String::from_utf8_lossy(&t).into_owned())),
                _ => {}
            }
        }
        let mut p = Parser { ev: &events, i: 0 };
        p.expect_start("value")?;
        let root = p.value(0)?;
        let Some(Value::Array(objs)) = root.get("objects") else {
            return Err("no `objects` array".into());
        };
        let mut objects = Vec::new();
        for o in objs {
            let class = o.str("class").unwrap_or_default().to_string();
            let id = o.str("id").unwrap_or_default().to_string();
            if let Some(snap) = o.get("snapshot") {
                objects.push((class, id, snap.clone()));
            }
        }
        Ok(OvaXml { objects })
    }

    fn object(&self, id: &str) -> Option<(&str, &Value)> {
        self.objects
            .iter()
            .find(|(_, i, _)| i == id)
            .map(|(c, _, v)| (c.as_str(), v))
    }

    /// The VM's facts: its name, memory, vCPUs, NICs (MAC from each VIF) and disks (each
    /// VBD of type Disk with its VDI's size).
    pub fn facts(&self) -> VmFacts {
        let mut facts = VmFacts {
            origin: "ova.xml".into(),
            ..VmFacts::default()
        };
        let Some((_, _, vm)) = self.objects.iter().find(|(c, _, _)| c == "VM") else {
            return facts;
        };
        facts.name = vm.str("name_label").map(str::to_string);
        facts.memory_bytes = vm.str("memory_static_max").and_then(|s| s.parse().ok());
        facts.vcpus = vm.str("VCPUs_max").and_then(|s| s.parse().ok());
        for r in vm.refs("VIFs") {
            if let Some(("VIF", vif)) = self.object(&r) {
                if let Some(mac) = vif.str("MAC").and_then(normalise_mac) {
                    facts.nics.push(Nic {
                        mac,
                        device: vif.str("device").map(str::to_string),
                    });
                }
            }
        }
        facts.nics.sort_by(|a, b| {
            let n = |d: &Option<String>| d.as_deref().and_then(|s| s.parse::<u32>().ok());
            n(&a.device).cmp(&n(&b.device))
        });
        let mut disks = Vec::new();
        for r in vm.refs("VBDs") {
            let Some(("VBD", vbd)) = self.object(&r) else {
                continue;
            };
            let yes = |k: &str| vbd.str(k).is_some_and(|b| b == "true" || b == "1");
            // CD and floppy drives, and drives with nothing in them, hold no disk.
            if vbd
                .str("type")
                .is_some_and(|t| !t.eq_ignore_ascii_case("disk"))
                || yes("empty")
            {
                continue;
            }
            let Some(vdi_ref) = vbd.str("VDI").filter(|r| *r != "OpaqueRef:NULL") else {
                continue;
            };
            let size = match self.object(vdi_ref) {
                Some(("VDI", vdi)) => vdi.str("virtual_size").and_then(|s| s.parse().ok()),
                _ => None,
            };
            let number = vbd
                .str("userdevice")
                .and_then(|u| u.trim().parse::<u32>().ok())
                .filter(|&n| n <= MAX_USERDEVICE)
                .or_else(|| vbd.str("device").and_then(device_number));
            disks.push((
                number,
                VmDisk {
                    id: vdi_ref.to_string(),
                    device: number.map(device_name),
                    size,
                    bootable: yes("bootable"),
                    converted: false,
                },
            ));
        }
        disks.sort_by_key(|(n, _)| n.unwrap_or(u32::MAX));
        facts.disks = disks.into_iter().map(|(_, d)| d).collect();
        facts
    }
}

/// The guest's name for the disk a VBD's `userdevice` numbers: 0 is `xvda`, 25 `xvdz`,
/// 26 `xvdaa` (the Linux block front's naming).
pub fn device_name(userdevice: u32) -> String {
    let mut letters = Vec::new();
    let mut n = userdevice as u64 + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8_lossy(&letters))
}

/// The device number a whole-disk name (`xvdb`, `hdb`, `sdb`) stands for; the inverse of
/// [`device_name`].
fn device_number(name: &str) -> Option<u32> {
    let name = name.trim();
    let letters = ["xvd", "hd", "sd"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    if letters.is_empty() || letters.len() > 2 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let n = letters
        .bytes()
        .fold(0u32, |n, b| n * 26 + u32::from(b - b'a') + 1);
    Some(n - 1)
}

enum Ev {
    Start(String),
    End(String),
    Text(String),
}

struct Parser<'a> {
    ev: &'a [Ev],
    i: usize,
}

impl Parser<'_> {
    fn expect_start(&mut self, tag: &str) -> Result<(), String> {
        match self.ev.get(self.i) {
            Some(Ev::Start(t)) if t == tag => {
                self.i += 1;
                Ok(())
            }
            _ => Err(format!("expected <{tag}> at event {}", self.i)),
        }
    }

    fn expect_end(&mut self, tag: &str) -> Result<(), String> {
        match self.ev.get(self.i) {
            Some(Ev::End(t)) if t == tag => {
                self.i += 1;
                Ok(())
            }
            _ => Err(format!("expected </{tag}> at event {}", self.i)),
        }
    }

    fn text(&mut self) -> String {
        let mut s = String::new();
        while let Some(Ev::Text(t)) = self.ev.get(self.i) {
            s.push_str(t);
            self.i += 1;
        }
        s
    }

    /// The rest of a `<value>` whose start tag was read.
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_XML_DEPTH {
            return Err(format!("values nest deeper than {MAX_XML_DEPTH}"));
        }
        let text = self.text();
        let v = match self.ev.get(self.i) {
            Some(Ev::Start(t)) if t == "struct" => {
                self.i += 1;
                let mut members = Vec::new();
                while let Some(Ev::Start(t)) = self.ev.get(self.i) {
                    if t != "member" {
                        return Err(format!("<{t}> inside <struct>"));
                    }
                    self.i += 1;
                    self.expect_start("name")?;
                    let name = self.text();
                    self.expect_end("name")?;
                    self.expect_start("value")?;
                    let v = self.value(depth + 1)?;
                    self.expect_end("member")?;
                    members.push((name, v));
                }
                self.expect_end("struct")?;
                Value::Struct(members)
            }
            Some(Ev::Start(t)) if t == "array" => {
                self.i += 1;
                self.expect_start("data")?;
                let mut items = Vec::new();
                while let Some(Ev::Start(t)) = self.ev.get(self.i) {
                    if t != "value" {
                        return Err(format!("<{t}> inside <data>"));
                    }
                    self.i += 1;
                    items.push(self.value(depth + 1)?);
                }
                self.expect_end("data")?;
                self.expect_end("array")?;
                Value::Array(items)
            }
            Some(Ev::Start(t)) => {
                // A typed scalar: <string>, <int>, <i4>, <boolean>, <double>, ...
                let t = t.clone();
                self.i += 1;
                let s = self.text();
                self.expect_end(&t)?;
                Value::Str(s)
            }
            _ => Value::Str(text),
        };
        self.expect_end("value")?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_numbers() {
        assert_eq!(octal(b"00000004000\0"), Some(2048));
        assert_eq!(octal(b"     17 \0\0\0\0"), Some(15));
        assert_eq!(octal(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(octal(b"0000000900\0\0"), None);
    }

    #[test]
    fn digests_must_be_hex_of_the_right_length() {
        assert!(matches!(
            parse_digest(".xxhash", b"0123456789abcdef\n"),
            Some(Digest::XxHash64(0x0123_4567_89ab_cdef))
        ));
        assert!(parse_digest(".xxhash", b"0123").is_none());
        assert!(parse_digest(".checksum", &[b'a'; 40]).is_some());
        assert!(parse_digest(".checksum", &[b'g'; 40]).is_none());
        assert!(parse_chunk_number("00000012") == Some(12));
        assert!(parse_chunk_number("-1").is_none());
    }

    #[test]
    fn ova_xml_facts() {
        let m = |n: &str, v: &str| format!("<member><name>{n}</name><value>{v}</value></member>");
        let obj = |class: &str, id: &str, fields: &str| {
            format!(
                "<value><struct>{}{}{}</struct></value>",
                m("class", class),
                m("id", id),
                m("snapshot", &format!("<struct>{fields}</struct>"))
            )
        };
        let vm = [
            m("name_label", "web &amp; mail"),
            m("memory_static_max", "536870912"),
            m("VCPUs_max", "<string>2</string>"),
            m("VBDs", "<array><data><value>Ref:3</value></data></array>"),
            m("VIFs", "<array><data><value>Ref:5</value></data></array>"),
        ]
        .concat();
        let xml = format!(
            "<value><struct>{}{}</struct></value>",
            m("version", "<struct></struct>"),
            m(
                "objects",
                &format!(
                    "<array><data>{}{}{}{}</data></array>",
                    obj("VM", "Ref:1", &vm),
                    obj(
                        "VBD",
                        "Ref:3",
                        &[
                            m("VDI", "Ref:4"),
                            m("userdevice", "0"),
                            m("bootable", "true"),
                            m("type", "Disk")
                        ]
                        .concat()
                    ),
                    obj("VDI", "Ref:4", &m("virtual_size", "8388608")),
                    obj(
                        "VIF",
                        "Ref:5",
                        &[m("MAC", "00:16:3E:01:02:03"), m("device", "0")].concat()
                    ),
                )
            )
        );
        let f = OvaXml::parse(&xml).unwrap().facts();
        assert_eq!(f.name.as_deref(), Some("web & mail"));
        assert_eq!(f.memory_bytes, Some(512 << 20));
        assert_eq!(f.vcpus, Some(2));
        assert_eq!(f.nics[0].mac, "00:16:3e:01:02:03");
        assert_eq!(f.disks.len(), 1);
        assert_eq!(f.disks[0].id, "Ref:4");
        assert_eq!(f.disks[0].device.as_deref(), Some("xvda"));
        assert_eq!(f.disks[0].size, Some(8 << 20));
        assert!(f.disks[0].bootable);
    }

    #[test]
    fn device_names_follow_the_block_front() {
        for (n, name) in [
            (0, "xvda"),
            (1, "xvdb"),
            (25, "xvdz"),
            (26, "xvdaa"),
            (701, "xvdzz"),
        ] {
            assert_eq!(device_name(n), name);
            assert_eq!(device_number(name), Some(n));
        }
        assert_eq!(device_number("hdc"), Some(2));
        assert_eq!(device_number("sdb"), Some(1));
        for not in ["", "xvd", "xvda1", "xvdaaa", "xvdA", "vda"] {
            assert_eq!(device_number(not), None, "{not}");
        }
    }

    #[test]
    fn deep_or_broken_xml_is_an_error() {
        let deep = "<value><array><data>".repeat(100);
        assert!(OvaXml::parse(&deep).is_err());
        assert!(OvaXml::parse("<value><struct><member>").is_err());
        assert!(OvaXml::parse("not xml <<").is_err());
    }
}
