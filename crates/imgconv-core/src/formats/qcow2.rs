//! qcow2 versions 2 and 3 (QEMU's `docs/interop/qcow2.txt`), read in place.
//!
//! All integers are big-endian. Header: magic `QFI\xfb` (0), version (4), backing file
//! offset (8) and size (16), cluster bits (20), virtual size (24), encryption method (32),
//! L1 size (36), L1 table offset (40), refcount table offset (48) and clusters (56),
//! snapshot count (60) and offset (64); version 3 adds incompatible (72), compatible (80)
//! and autoclear (88) feature bits, refcount order (96), header length (100) and, past
//! 104 bytes of header, the compression type (104: 0 zlib, 1 zstd).
//!
//! A guest offset splits into an L1 index, an L2 index and an offset in the cluster. An
//! L1 entry's bits 9..56 give the L2 table's offset (0: unallocated); an L2 entry is
//! either a standard cluster (bits 9..56 the data's offset, bit 0 "reads as zeros" in
//! version 3) or, with bit 62 set, a compressed one: the low `62 - (cluster_bits - 8)`
//! bits are the data's byte offset, the bits above up to 61 the count of additional
//! 512-byte sectors it spans. zlib clusters are raw deflate, zstd ones a zstd frame.
//! Unallocated clusters read from the backing file, or as zeros without one.
//!
//! Every L1 and L2 entry is checked at open (tables and data inside the file), so a
//! damaged image is refused before any conversion starts; reads then load L2 tables
//! through a small cache.

use super::{damaged, find_beside, read_struct, FormatError, OpenOptions, Opened};
use crate::blockio::{BlockSource, SourceFormat};
use crate::bytes::Fields;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

const FORMAT: &str = "qcow2";
/// The header's magic.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Offset bits of L1 and standard L2 entries (bits 9..56).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;
/// Incompatible feature bits (version 3).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Bounds: the virtual size, the L1 table (32 MiB, QEMU's own limit), the backing name.
const MAX_SIZE: u64 = 64 << 40;
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_BACKING_NAME: u32 = 1023;
/// L2 tables kept in memory while reading.
const L2_CACHE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Zlib,
    Zstd,
}

/// A qcow2 image read in place.
#[derive(Debug)]
pub struct Qcow2 {
    file: File,
    version: u32,
    size: u64,
    cluster_bits: u32,
    l1: Vec<u64>,
    compression: Compression,
    backing: Option<Opened>,
    backing_name: Option<String>,
    allocated: u64,
    compressed: u64,
    l2_cache: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
}

/// Where a guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    Unallocated,
    Zero,
    Data(u64),
    Compressed { offset: u64, len: u64 },
}

impl Qcow2 {
    /// Open the qcow2 image in `file`; checks the header, the L1 table and every L2 table
    /// against the file's size.
    pub fn open(
        file: File,
        path: &Path,
        opts: &OpenOptions,
        depth: usize,
    ) -> Result<Qcow2, FormatError> {
        let file_len = file
            .metadata()
            .map_err(|e| FormatError::io("cannot stat", path, e))?
            .len();
        let mut raw = [0u8; 112];
        let n = (file_len as usize).min(raw.len());
        read_struct(&file, path, FORMAT, "header", 0, &mut raw[..n])?;
        let h = Fields::new("qcow2 header", &raw[..n]);
        let p = |e| FormatError::parse(path, FORMAT, e);
        let version = h.u32_be("version", 4).map_err(p)?;
        if version != 2 && version != 3 {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                format: FORMAT,
                what: format!("version {version}"),
            });
        }
        let backing_at = h.u64_be("backing_file_offset", 8).map_err(p)?;
        let backing_len = h.u32_be("backing_file_size", 16).map_err(p)?;
        let cluster_bits = h.u32_be("cluster_bits", 20).map_err(p)?;
        let size = h.u64_be("size", 24).map_err(p)?;
        let crypt = h.u32_be("crypt_method", 32).map_err(p)?;
        let l1_size = h.u32_be("l1_size", 36).map_err(p)?;
        let l1_at = h.u64_be("l1_table_offset", 40).map_err(p)?;
        if !(9..=21).contains(&cluster_bits) {
            return Err(p(h.invalid(
                "cluster_bits",
                cluster_bits as u64,
                "not between 9 and 21",
            )));
        }
        if size > MAX_SIZE {
            return Err(p(h.invalid("size", size, "larger than 64 TiB")));
        }
        if crypt != 0 {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                format: FORMAT,
                what: "encryption".into(),
            });
        }
        let mut compression = Compression::Zlib;
        if version == 3 {
            let incompat = h.u64_be("incompatible_features", 72).map_err(p)?;
            let header_len = h.u32_be("header_length", 100).map_err(p)?;
            if incompat & INCOMPAT_CORRUPT != 0 {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    "QEMU marked it corrupt (incompatible feature bit 1); repair a copy with qemu-img check -r all",
                ));
            }
            for (bit, what) in [
                (INCOMPAT_DATA_FILE, "an external data file"),
                (INCOMPAT_EXTL2, "extended L2 entries (subclusters)"),
            ] {
                if incompat & bit != 0 {
                    return Err(FormatError::Unsupported {
                        path: path.to_path_buf(),
                        format: FORMAT,
                        what: what.into(),
                    });
                }
            }
            let known = INCOMPAT_DIRTY
                | INCOMPAT_CORRUPT
                | INCOMPAT_DATA_FILE
                | INCOMPAT_COMPRESSION
                | INCOMPAT_EXTL2;
            if incompat & !known != 0 {
                return Err(FormatError::Unsupported {
                    path: path.to_path_buf(),
                    format: FORMAT,
                    what: format!("unknown incompatible features {:#x}", incompat & !known),
                });
            }
            if incompat & INCOMPAT_COMPRESSION != 0 {
                if header_len <= 104 {
                    return Err(p(h.invalid(
                        "header_length",
                        header_len as u64,
                        "too short for the compression type its features announce",
                    )));
                }
                compression = match h.u8("compression_type", 104).map_err(p)? {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => {
                        return Err(FormatError::Unsupported {
                            path: path.to_path_buf(),
                            format: FORMAT,
                            what: format!("compression type {t}"),
                        })
                    }
                };
            }
        }
        let cluster = 1u64 << cluster_bits;
        let l2_entries = cluster / 8;
        let needed = size.div_ceil(cluster * l2_entries);
        if (l1_size as u64) < needed || l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(p(h.invalid(
                "l1_size",
                l1_size as u64,
                "does not fit the virtual size (or exceeds 32 MiB of table)",
            )));
        }
        let l1_bytes = l1_size as u64 * 8;
        if l1_at.checked_add(l1_bytes).is_none_or(|e| e > file_len) {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("the L1 table ({l1_bytes} bytes at byte {l1_at}) lies past the end of the file ({file_len} bytes)"),
            ));
        }
        let mut l1raw = vec![0u8; l1_bytes as usize];
        read_struct(&file, path, FORMAT, "L1 table", l1_at, &mut l1raw)?;
        let l1: Vec<u64> = l1raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .take(needed as usize)
            .collect();
        let mut me = Qcow2 {
            file,
            version,
            size,
            cluster_bits,
            l1,
            compression,
            backing: None,
            backing_name: None,
            allocated: 0,
            compressed: 0,
            l2_cache: Mutex::new(HashMap::new()),
        };
        // Check every table and every data pointer now.
        for (i, &e) in me.l1.iter().enumerate() {
            let l2_at = e & OFFSET_MASK;
            if l2_at == 0 {
                continue;
            }
            if l2_at % cluster != 0 || l2_at.checked_add(cluster).is_none_or(|x| x > file_len) {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!("L1 entry {i} points to an L2 table at byte {l2_at}, past the end of the file ({file_len} bytes) or unaligned"),
                ));
            }
            let table = me
                .read_l2(l2_at)
                .map_err(|e| FormatError::io("cannot read", path, e))?;
            for (j, &entry) in table.iter().enumerate() {
                let what = |x: String| {
                    FormatError::corrupt(path, FORMAT, format!("L2 table {i} entry {j}: {x}"))
                };
                match me.decode(entry) {
                    Mapping::Unallocated | Mapping::Zero => {}
                    Mapping::Data(at) => {
                        if at % cluster != 0 {
                            return Err(what(format!("data cluster at byte {at} is unaligned")));
                        }
                        if at >= file_len {
                            return Err(what(format!(
                                "data cluster at byte {at} lies past the end of the file ({file_len} bytes)"
                            )));
                        }
                        me.allocated += 1;
                    }
                    Mapping::Compressed { offset, len } => {
                        // The sector count may round past the file's end by less than
                        // a sector; the data itself must start inside it.
                        if offset >= file_len {
                            return Err(what(format!(
                                "compressed cluster at byte {offset} ({len} bytes) lies past the end of the file ({file_len} bytes)"
                            )));
                        }
                        me.allocated += 1;
                        me.compressed += 1;
                    }
                }
            }
        }
        if backing_at != 0 {
            if backing_len == 0 || backing_len > MAX_BACKING_NAME {
                return Err(p(h.invalid(
                    "backing_file_size",
                    backing_len as u64,
                    "not between 1 and 1023",
                )));
            }
            let mut name = vec![0u8; backing_len as usize];
            read_struct(
                &me.file,
                path,
                FORMAT,
                "backing file name",
                backing_at,
                &mut name,
            )?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let found = find_beside(path, &name).map_err(|looked| FormatError::MissingParent {
                path: path.to_path_buf(),
                format: FORMAT,
                role: "backing file",
                parent: name.clone(),
                looked,
            })?;
            let bf = File::open(&found).map_err(|e| FormatError::io("cannot open", &found, e))?;
            me.backing = Some(super::open_file(bf, &found, opts, depth + 1)?);
            me.backing_name = Some(name);
        }
        Ok(me)
    }

    fn cluster(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn decode(&self, entry: u64) -> Mapping {
        if entry & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let offset = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (offset & 511);
            return Mapping::Compressed { offset, len };
        }
        let at = entry & OFFSET_MASK;
        if self.version >= 3 && entry & ZERO_FLAG != 0 {
            Mapping::Zero
        } else if at == 0 {
            Mapping::Unallocated
        } else {
            Mapping::Data(at)
        }
    }

    fn read_l2(&self, at: u64) -> io::Result<Vec<u64>> {
        let mut raw = vec![0u8; self.cluster() as usize];
        self.file.read_exact_at(&mut raw, at)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    fn l2(&self, at: u64) -> io::Result<Arc<Vec<u64>>> {
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(&at) {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(self.read_l2(at)?);
        if cache.len() >= L2_CACHE {
            cache.clear();
        }
        cache.insert(at, Arc::clone(&t));
        Ok(t)
    }

    fn mapping(&self, guest: u64) -> io::Result<Mapping> {
        let cluster = self.cluster();
        let l2_entries = cluster / 8;
        let c = guest / cluster;
        let l1e = self.l1.get((c / l2_entries) as usize).copied().unwrap_or(0);
        let l2_at = l1e & OFFSET_MASK;
        if l2_at == 0 {
            return Ok(Mapping::Unallocated);
        }
        let table = self.l2(l2_at)?;
        Ok(self.decode(table[(c % l2_entries) as usize]))
    }

    /// When guest byte `at` lies in a data cluster: its file offset and how many of the
    /// next `max` bytes follow it contiguously in the file (data clusters stored one after
    /// the other). `None` for zero, unallocated and compressed clusters.
    fn data_run(&self, at: u64, max: usize) -> io::Result<Option<(u64, usize)>> {
        let cluster = self.cluster();
        let within = at % cluster;
        let Mapping::Data(first) = self.mapping(at - within)? else {
            return Ok(None);
        };
        let host = first + within;
        let mut len = ((cluster - within) as usize).min(max);
        while len < max {
            match self.mapping(at + len as u64)? {
                Mapping::Data(h) if h == host + len as u64 => {
                    len += (cluster as usize).min(max - len);
                }
                _ => break,
            }
        }
        Ok(Some((host, len)))
    }

    fn read_cluster(&self, guest_cluster: u64, within: u64, buf: &mut [u8]) -> io::Result<()> {
        let cluster = self.cluster();
        match self.mapping(guest_cluster * cluster)? {
            Mapping::Zero => buf.fill(0),
            Mapping::Unallocated => match &self.backing {
                Some(b) => {
                    // A backing image smaller than this one reads as zeros past its end.
                    let pos = guest_cluster * cluster + within;
                    let have = b.region.len().saturating_sub(pos).min(buf.len() as u64) as usize;
                    let (head, tail) = buf.split_at_mut(have);
                    b.region.read_exact_at(pos, head)?;
                    tail.fill(0);
                }
                None => buf.fill(0),
            },
            Mapping::Data(at) => self.file.read_exact_at(buf, at + within)?,
            Mapping::Compressed { offset, len } => {
                // The last compressed cluster's sector count may reach past the file's
                // end; read what is there.
                let file_len = self.file.metadata()?.len();
                let len = len
                    .min(file_len.saturating_sub(offset))
                    .min(2 * cluster + 512);
                let mut packed = vec![0u8; len as usize];
                self.file.read_exact_at(&mut packed, offset)?;
                let mut out = vec![0u8; cluster as usize];
                let got = match self.compression {
                    Compression::Zlib => {
                        let mut d = flate2::read::DeflateDecoder::new(&packed[..]);
                        read_full(&mut d, &mut out)
                    }
                    Compression::Zstd => {
                        let mut d = zstd::stream::read::Decoder::with_buffer(&packed[..])?;
                        read_full(&mut d, &mut out)
                    }
                }
                .map_err(|e| {
                    damaged(
                        FORMAT,
                        format!("compressed cluster at byte {offset} does not decompress: {e}"),
                    )
                })?;
                if got != out.len() {
                    return Err(damaged(
                        FORMAT,
                        format!("compressed cluster at byte {offset} decompresses to {got} bytes, not {cluster}"),
                    ));
                }
                buf.copy_from_slice(&out[within as usize..within as usize + buf.len()]);
            }
        }
        Ok(())
    }
}

/// Fill `out` from `r` as far as it goes; the count read.
fn read_full(r: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < out.len() {
        match r.read(&mut out[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl BlockSource for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(damaged(FORMAT, "read past the disk's end"));
        }
        let cluster = self.cluster();
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let within = at % cluster;
            let n = ((cluster - within) as usize).min(buf.len() - done);
            if let Some((host, len)) = self.data_run(at, buf.len() - done)? {
                // Clusters that follow each other in the file too (as qemu-img and
                // `--format qcow2` lay them out): one read for the whole run.
                self.file.read_exact_at(&mut buf[done..done + len], host)?;
                done += len;
                continue;
            }
            self.read_cluster(at / cluster, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn will_need(&self, pos: u64, len: u64) {
        let end = pos.saturating_add(len).min(self.size);
        let mut at = pos;
        while at < end {
            match self.data_run(at, (end - at).min(usize::MAX as u64) as usize) {
                Ok(Some((host, n))) => {
                    crate::blockio::will_need_file(&self.file, host, n as u64);
                    at += n as u64;
                }
                Ok(None) => at = (at / self.cluster() + 1) * self.cluster(),
                Err(_) => return,
            }
        }
    }

    fn format(&self) -> SourceFormat {
        SourceFormat {
            kind: "qcow2",
            details: format!(
                "version {}, {} bytes, {} KiB clusters, {} allocated ({} compressed, {}){}",
                self.version,
                self.size,
                self.cluster() >> 10,
                self.allocated,
                self.compressed,
                match self.compression {
                    Compression::Zlib => "zlib",
                    Compression::Zstd => "zstd",
                },
                match &self.backing_name {
                    Some(n) => format!(", backing file {n}"),
                    None => String::new(),
                }
            ),
        }
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        if self.backing.is_some() {
            return None;
        }
        let cluster = self.cluster();
        Some(crate::blockio::unit_data_ranges(
            pos,
            len,
            self.size,
            cluster,
            |c| {
                !matches!(
                    self.mapping(c * cluster),
                    Ok(Mapping::Unallocated | Mapping::Zero)
                )
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_entries_decode_per_the_spec() {
        // 64 KiB clusters: x = 62 - 8 = 54 offset bits, 8 bits of sector count.
        let q = Qcow2 {
            file: tempfile::tempfile().unwrap(),
            version: 3,
            size: 1 << 20,
            cluster_bits: 16,
            l1: vec![],
            compression: Compression::Zlib,
            backing: None,
            backing_name: None,
            allocated: 0,
            compressed: 0,
            l2_cache: Mutex::new(HashMap::new()),
        };
        let e = COMPRESSED | (3u64 << 54) | 0x1_0100;
        assert_eq!(
            q.decode(e),
            Mapping::Compressed {
                offset: 0x1_0100,
                len: 4 * 512 - 0x100
            }
        );
        assert_eq!(q.decode(0x5_0000 | (1 << 63)), Mapping::Data(0x5_0000));
        assert_eq!(q.decode(1), Mapping::Zero);
        assert_eq!(q.decode(0), Mapping::Unallocated);
    }
}
