//! VHD (Microsoft Virtual Hard Disk Image Format Specification, October 2006), fixed,
//! dynamic and differencing, as XenServer, Hyper-V and `qemu-img -O vpc` write it.
//!
//! All integers are big-endian. The 512-byte footer sits at the end of the file (a
//! dynamic disk keeps a copy at offset 0): cookie `conectix` (0), features (8), version
//! (12), data offset (16, the dynamic header; all ones for a fixed disk), time stamp
//! (24), creator (28..40), original size (40), current size (48), geometry (56), disk
//! type (60: 2 fixed, 3 dynamic, 4 differencing), checksum (64: one's complement of the
//! byte sum with this field zero), unique id (68..84).
//!
//! The 1024-byte dynamic header (cookie `cxsparse`): data offset (8), table offset (16,
//! the BAT), header version (24), max table entries (28), block size (32), checksum (36),
//! parent unique id (40..56), parent time stamp (56), parent Unicode name (64..576,
//! UTF-16BE). The BAT holds one u32 sector number per block (`0xFFFFFFFF`: not
//! allocated); an allocated block is a sector bitmap (one bit per 512-byte sector, most
//! significant bit first, padded to whole sectors) followed by the block's data.
//!
//! Every BAT entry is checked at open (its block inside the file, before the footer), so
//! a truncated or damaged image is refused before any conversion starts.

use super::{damaged, find_beside, read_struct, FormatError, OpenOptions, Opened};
use crate::blockio::{BlockSource, SourceFormat};
use crate::bytes::Fields;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const FORMAT: &str = "VHD";
/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
const SPARSE_COOKIE: &[u8; 8] = b"cxsparse";
const SECTOR: u64 = 512;
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Bounds on a block (the spec's default is 2 MiB) and on the BAT (2^24 entries: 32 TiB
/// of 2 MiB blocks, 64 MiB of table).
const MAX_BLOCK: u32 = 256 << 20;
const MAX_ENTRIES: u32 = 1 << 24;
/// Bound on the disk size (the format's own limit is 2 TiB; allow some slack).
const MAX_SIZE: u64 = 64 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

/// A VHD read in place.
#[derive(Debug)]
pub struct Vhd {
    file: File,
    kind: DiskType,
    size: u64,
    block_size: u64,
    bitmap_bytes: u64,
    bat: Vec<u32>,
    parent: Option<Opened>,
    parent_name: Option<String>,
}

/// The one's-complement byte sum the spec uses for the footer and the dynamic header,
/// with the checksum field at `at` read as zeros.
fn checksum(data: &[u8], at: usize) -> u32 {
    let sum: u32 = data
        .iter()
        .enumerate()
        .filter(|(i, _)| !(at..at + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(b as u32));
    !sum
}

impl Vhd {
    /// Open the VHD in `file`.
    pub fn open(
        file: File,
        path: &Path,
        opts: &OpenOptions,
        depth: usize,
    ) -> Result<Vhd, FormatError> {
        let file_len = file
            .metadata()
            .map_err(|e| FormatError::io("cannot stat", path, e))?
            .len();
        if file_len < SECTOR {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                "shorter than its footer",
            ));
        }
        let mut footer = [0u8; SECTOR as usize];
        read_struct(
            &file,
            path,
            FORMAT,
            "footer",
            file_len - SECTOR,
            &mut footer,
        )?;
        if &footer[..8] != COOKIE {
            let mut head = [0u8; 8];
            read_struct(&file, path, FORMAT, "footer copy", 0, &mut head)?;
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                if &head == COOKIE {
                    "the footer copy at the start is there but the footer at the end is not: the file is truncated"
                } else {
                    "no footer"
                },
            ));
        }
        let f = Fields::new("VHD footer", &footer);
        let p = |e| FormatError::parse(path, FORMAT, e);
        let stored = f.u32_be("checksum", 64).map_err(p)?;
        let want = checksum(&footer, 64);
        if stored != want {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("footer checksum {stored:#010x}, its bytes give {want:#010x}"),
            ));
        }
        let size = f.u64_be("current size", 48).map_err(p)?;
        if size > MAX_SIZE {
            return Err(p(f.invalid("current size", size, "larger than 64 TiB")));
        }
        let kind = match f.u32_be("disk type", 60).map_err(p)? {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            t => return Err(p(f.invalid("disk type", t as u64, "not 2, 3 or 4"))),
        };
        if kind == DiskType::Fixed {
            if size > file_len - SECTOR {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "the fixed disk claims {size} bytes but the file holds {} before its footer (truncated?)",
                        file_len - SECTOR
                    ),
                ));
            }
            return Ok(Vhd {
                file,
                kind,
                size,
                block_size: 0,
                bitmap_bytes: 0,
                bat: Vec::new(),
                parent: None,
                parent_name: None,
            });
        }
        let header_at = f.u64_be("data offset", 16).map_err(p)?;
        if header_at
            .checked_add(1024)
            .is_none_or(|e| e > file_len - SECTOR)
        {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("the dynamic header at byte {header_at} lies past the end of the file"),
            ));
        }
        let mut header = [0u8; 1024];
        read_struct(
            &file,
            path,
            FORMAT,
            "dynamic header",
            header_at,
            &mut header,
        )?;
        let h = Fields::new("VHD dynamic header", &header);
        if h.bytes("cookie", 0, 8).map_err(p)? != SPARSE_COOKIE {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("no cxsparse cookie at byte {header_at}"),
            ));
        }
        let stored = h.u32_be("checksum", 36).map_err(p)?;
        let want = checksum(&header, 36);
        if stored != want {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("dynamic header checksum {stored:#010x}, its bytes give {want:#010x}"),
            ));
        }
        let bat_at = h.u64_be("table offset", 16).map_err(p)?;
        let entries = h.u32_be("max table entries", 28).map_err(p)?;
        let block_size = h.u32_be("block size", 32).map_err(p)?;
        if !block_size.is_power_of_two() || !(SECTOR as u32..=MAX_BLOCK).contains(&block_size) {
            return Err(p(h.invalid(
                "block size",
                block_size as u64,
                "not a power of two between 512 bytes and 256 MiB",
            )));
        }
        if entries > MAX_ENTRIES {
            return Err(p(h.invalid(
                "max table entries",
                entries as u64,
                "more than 2^24",
            )));
        }
        let block_size = block_size as u64;
        if (entries as u64) * block_size < size {
            return Err(p(h.invalid(
                "max table entries",
                entries as u64,
                "too few blocks for the disk's size",
            )));
        }
        let bat_bytes = entries as u64 * 4;
        if bat_at
            .checked_add(bat_bytes)
            .is_none_or(|e| e > file_len - SECTOR)
        {
            return Err(FormatError::corrupt(
                path,
                FORMAT,
                format!("the BAT ({bat_bytes} bytes at byte {bat_at}) lies past the end of the file (truncated?)"),
            ));
        }
        let mut raw = vec![0u8; bat_bytes as usize];
        read_struct(&file, path, FORMAT, "BAT", bat_at, &mut raw)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bitmap_bytes = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        for (i, &e) in bat.iter().enumerate() {
            if e == UNALLOCATED {
                continue;
            }
            let end = (e as u64 * SECTOR).saturating_add(bitmap_bytes + block_size);
            if end > file_len - SECTOR {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "block {i} (BAT entry sector {e}) ends at byte {end}, past the data's end at byte {} (truncated?)",
                        file_len - SECTOR
                    ),
                ));
            }
        }
        let (parent, parent_name) = if kind == DiskType::Differencing {
            let name = utf16be(h.bytes("parent unicode name", 64, 512).map_err(p)?);
            let found = find_beside(path, &name).map_err(|looked| FormatError::MissingParent {
                path: path.to_path_buf(),
                format: FORMAT,
                role: "parent",
                parent: name.clone(),
                looked,
            })?;
            let pf = File::open(&found).map_err(|e| FormatError::io("cannot open", &found, e))?;
            let parent = super::open_file(pf, &found, opts, depth + 1)?;
            if parent.region.len() < size {
                return Err(FormatError::corrupt(
                    path,
                    FORMAT,
                    format!(
                        "its parent {} holds {} bytes, less than the disk's {size}",
                        found.display(),
                        parent.region.len()
                    ),
                ));
            }
            (Some(parent), Some(name))
        } else {
            (None, None)
        };
        Ok(Vhd {
            file,
            kind,
            size,
            block_size,
            bitmap_bytes,
            bat,
            parent,
            parent_name,
        })
    }

    /// Read within one block.
    fn read_block(&self, block: usize, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let entry = self.bat.get(block).copied().unwrap_or(UNALLOCATED);
        let disk_pos = block as u64 * self.block_size + at;
        if entry == UNALLOCATED {
            return match &self.parent {
                Some(p) => p.region.read_exact_at(disk_pos, buf),
                None => {
                    buf.fill(0);
                    Ok(())
                }
            };
        }
        let base = entry as u64 * SECTOR;
        let data = base + self.bitmap_bytes;
        let Some(parent) = &self.parent else {
            return self.file.read_exact_at(buf, data + at);
        };
        // A differencing disk: sectors whose bitmap bit is clear come from the parent.
        let first = at / SECTOR;
        let last = (at + buf.len() as u64).div_ceil(SECTOR);
        let mut bitmap = vec![0u8; (last.div_ceil(8) - first / 8) as usize];
        self.file.read_exact_at(&mut bitmap, base + first / 8)?;
        let bit = |s: u64| {
            let i = (s / 8 - first / 8) as usize;
            bitmap.get(i).is_some_and(|b| b & (0x80 >> (s % 8)) != 0)
        };
        let mut off = 0usize;
        while off < buf.len() {
            let pos = at + off as u64;
            let s = pos / SECTOR;
            let n = ((SECTOR - pos % SECTOR) as usize).min(buf.len() - off);
            let part = &mut buf[off..off + n];
            if bit(s) {
                self.file.read_exact_at(part, data + pos)?;
            } else {
                parent
                    .region
                    .read_exact_at(block as u64 * self.block_size + pos, part)?;
            }
            off += n;
        }
        Ok(())
    }
}

fn utf16be(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

impl BlockSource for Vhd {
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
        if self.kind == DiskType::Fixed {
            return self.file.read_exact_at(buf, pos);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let block = (at / self.block_size) as usize;
            let within = at % self.block_size;
            let n = ((self.block_size - within) as usize).min(buf.len() - done);
            self.read_block(block, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn will_need(&self, pos: u64, len: u64) {
        let end = pos.saturating_add(len).min(self.size);
        if self.kind == DiskType::Fixed {
            crate::blockio::will_need_file(&self.file, pos, end.saturating_sub(pos));
            return;
        }
        // Each allocated block's data (after its sector bitmap) where the range meets it.
        let mut at = pos;
        while at < end {
            let block = at / self.block_size;
            let within = at % self.block_size;
            let n = (self.block_size - within).min(end - at);
            let entry = self.bat.get(block as usize).copied().unwrap_or(UNALLOCATED);
            if entry != UNALLOCATED {
                let data = u64::from(entry) * SECTOR + self.bitmap_bytes;
                crate::blockio::will_need_file(&self.file, data + within, n);
            }
            at += n;
        }
    }

    fn format(&self) -> SourceFormat {
        match self.kind {
            DiskType::Fixed => SourceFormat {
                kind: "vhd-fixed",
                details: format!("{} bytes, footer checksum checked", self.size),
            },
            _ => {
                let used = self.bat.iter().filter(|&&e| e != UNALLOCATED).count();
                SourceFormat {
                    kind: if self.kind == DiskType::Dynamic {
                        "vhd-dynamic"
                    } else {
                        "vhd-differencing"
                    },
                    details: format!(
                        "{} bytes, {used} of {} blocks of {} KiB allocated{}",
                        self.size,
                        self.bat.len(),
                        self.block_size >> 10,
                        match &self.parent_name {
                            Some(n) => format!(", parent {n}"),
                            None => String::new(),
                        }
                    ),
                }
            }
        }
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        if self.kind != DiskType::Dynamic {
            return None;
        }
        Some(crate::blockio::unit_data_ranges(
            pos,
            len,
            self.size,
            self.block_size,
            |b| self.bat.get(b as usize).is_some_and(|&e| e != UNALLOCATED),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_its_own_field() {
        let mut d = [0u8; 16];
        d[0] = 1;
        d[8] = 0xff;
        assert_eq!(checksum(&d, 8), !1u32);
        assert_eq!(utf16be(&[0, b'a', 0, b'.', 0, b'v', 0, 0, 0, b'x']), "a.v");
    }
}
