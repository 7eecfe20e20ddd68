//! Workaround for two directory bugs of `fatfs` 0.3.6 (the current release), so the ESP
//! passes `fsck.fat` (which the guest's boot-time fsck would otherwise "repair"):
//!
//! 1. `Dir::create_dir` writes a long-name (LFN) entry before each of the `.` and `..`
//!    entries, so the first two slots of a new directory are not `.` and `..`
//!    (rust-fatfs issues #100, #117);
//! 2. on FAT32, `..` of a first-level directory holds the root's cluster number instead
//!    of 0 (FAT specification "Directory Structure"; rust-fatfs #99).
//!
//! Both are fixed upstream but unreleased. [`repair_directories`] runs once the volume is
//! written and unmounted: it walks every directory of our freshly written FAT32 volume
//! (cluster chains through the FAT) and, in each subdirectory whose first four slots are
//! `LFN(.) . LFN(..) ..`, rewrites them to `. .. <deleted> <deleted>` with the right `..`
//! cluster. Nothing else is touched. Every field is read through [`Fields`] and every
//! position checked against the volume; the walk is bounded.
//!
//! FAT32 layout used (Microsoft FAT specification, BPB): bytes/sector @11 (u16),
//! sectors/cluster @13 (u8), reserved sectors @14 (u16), number of FATs @16 (u8), sectors
//! per FAT (FAT32) @36 (u32), root directory cluster @44 (u32). A directory entry is 32
//! bytes: `name[11]` @0, attributes @11 (0x0F = LFN, 0x10 = directory, 0x08 = volume
//! label), first cluster high @20 (u16) and low @26 (u16).

use super::UefiError;
use crate::blockio::BlockDevice;
use crate::bytes::{Fields, ParseError};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;
const ATTR_VOLUME: u8 = 0x08;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";
/// Most directories and clusters per directory walked (our ESP has 4 directories).
const MAX_DIRS: usize = 1024;
const MAX_DIR_CLUSTERS: usize = 4096;

/// The geometry of a FAT32 volume at `offset` of a file.
struct Fat32<'a, D: ?Sized> {
    file: &'a D,
    offset: u64,
    len: u64,
    cluster_bytes: u64,
    fat_start: u64,
    data_start: u64,
    clusters: u64,
    root: u32,
}

impl<'a, D: BlockDevice + ?Sized> Fat32<'a, D> {
    fn open(file: &'a D, offset: u64, len: u64) -> Result<Self, UefiError> {
        let mut bs = [0u8; 512];
        file.read_at(offset, &mut bs)
            .map_err(|e| UefiError::OutputIo {
                action: "reading the ESP boot sector of",
                source: e,
            })?;
        let f = Fields::new("FAT32 boot sector", &bs);
        let bps = u64::from(f.u16("BPB_BytsPerSec", 11)?);
        let spc = u64::from(f.u8("BPB_SecPerClus", 13)?);
        let reserved = u64::from(f.u16("BPB_RsvdSecCnt", 14)?);
        let fats = u64::from(f.u8("BPB_NumFATs", 16)?);
        let fat_sectors = u64::from(f.u32("BPB_FATSz32", 36)?);
        let root = f.u32("BPB_RootClus", 44)?;
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(f.invalid("BPB_BytsPerSec", bps, "not 512..4096").into());
        }
        if spc == 0 || !spc.is_power_of_two() || fats == 0 || fat_sectors == 0 {
            return Err(f
                .invalid("BPB_SecPerClus", spc, "not a FAT32 geometry")
                .into());
        }
        let cluster_bytes = bps * spc;
        let fat_start = reserved * bps;
        let data_start = fat_start + fats * fat_sectors * bps;
        if data_start >= len {
            return Err(f
                .invalid("BPB_FATSz32", fat_sectors, "FATs beyond the volume")
                .into());
        }
        let clusters = (len - data_start) / cluster_bytes;
        Ok(Fat32 {
            file,
            offset,
            len,
            cluster_bytes,
            fat_start,
            data_start,
            clusters,
            root,
        })
    }

    fn bad(&self, field: &'static str, value: u64, why: &'static str) -> UefiError {
        ParseError::Invalid {
            structure: "FAT32 volume",
            field,
            value,
            why,
        }
        .into()
    }

    fn cluster_pos(&self, cluster: u32) -> Result<u64, UefiError> {
        let c = u64::from(cluster);
        if c < 2 || c - 2 >= self.clusters {
            return Err(self.bad("cluster", c, "outside the data area"));
        }
        Ok(self.data_start + (c - 2) * self.cluster_bytes)
    }

    fn read(&self, pos: u64, buf: &mut [u8]) -> Result<(), UefiError> {
        if pos + buf.len() as u64 > self.len {
            return Err(self.bad("position", pos, "beyond the volume"));
        }
        self.file
            .read_at(self.offset + pos, buf)
            .map_err(|e| UefiError::OutputIo {
                action: "reading the ESP of",
                source: e,
            })
    }

    fn write(&self, pos: u64, buf: &[u8]) -> Result<(), UefiError> {
        if pos + buf.len() as u64 > self.len {
            return Err(self.bad("position", pos, "beyond the volume"));
        }
        self.file
            .write_at(self.offset + pos, buf)
            .map_err(|e| UefiError::OutputIo {
                action: "repairing the ESP of",
                source: e,
            })
    }

    /// The cluster chain starting at `first`.
    fn chain(&self, first: u32) -> Result<Vec<u32>, UefiError> {
        let mut out = vec![first];
        let mut c = first;
        loop {
            let mut e = [0u8; 4];
            self.read(self.fat_start + 4 * u64::from(c), &mut e)?;
            let next = u32::from_le_bytes(e) & 0x0FFF_FFFF;
            if next >= 0x0FFF_FFF8 {
                return Ok(out);
            }
            if out.len() >= MAX_DIR_CLUSTERS || next < 2 {
                return Err(self.bad("FAT entry", next.into(), "broken directory chain"));
            }
            out.push(next);
            c = next;
        }
    }

    /// Subdirectories listed in the directory starting at `first`: their first clusters.
    fn subdirectories(&self, first: u32) -> Result<Vec<u32>, UefiError> {
        let mut found = Vec::new();
        let mut buf = vec![0u8; self.cluster_bytes as usize];
        for c in self.chain(first)? {
            self.read(self.cluster_pos(c)?, &mut buf)?;
            for e in buf.chunks_exact(ENTRY) {
                if e[0] == 0 {
                    return Ok(found);
                }
                let attr = e[11];
                if e[0] == DELETED || attr == ATTR_LFN || attr & ATTR_VOLUME != 0 {
                    continue;
                }
                if attr & ATTR_DIR != 0 && &e[..11] != DOT && &e[..11] != DOTDOT {
                    found.push(entry_cluster(e));
                }
            }
        }
        Ok(found)
    }
}

fn entry_cluster(e: &[u8]) -> u32 {
    (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
        | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

fn set_entry_cluster(e: &mut [u8], cluster: u32) {
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

/// Repair every directory of the FAT32 volume at `[offset, offset + len)` of `file` (see
/// the module documentation). Returns how many directories were rewritten.
pub fn repair_directories<D: BlockDevice + ?Sized>(
    file: &D,
    offset: u64,
    len: u64,
) -> Result<usize, UefiError> {
    let fat = Fat32::open(file, offset, len)?;
    let mut repaired = 0;
    // (directory cluster, parent cluster as `..` must say it: 0 for the root)
    let mut todo: Vec<(u32, u32)> = fat
        .subdirectories(fat.root)?
        .into_iter()
        .map(|c| (c, 0))
        .collect();
    let mut seen = 0usize;
    while let Some((dir, parent)) = todo.pop() {
        seen += 1;
        if seen > MAX_DIRS {
            return Err(fat.bad("directories", seen as u64, "too many to walk"));
        }
        let pos = fat.cluster_pos(dir)?;
        let mut head = [0u8; 4 * ENTRY];
        if fat.cluster_bytes >= head.len() as u64 {
            fat.read(pos, &mut head)?;
            let slot = |i: usize| &head[i * ENTRY..(i + 1) * ENTRY];
            let buggy = slot(0)[11] == ATTR_LFN
                && &slot(1)[..11] == DOT
                && slot(2)[11] == ATTR_LFN
                && &slot(3)[..11] == DOTDOT;
            if buggy {
                let mut fixed = [0u8; 4 * ENTRY];
                fixed[..ENTRY].copy_from_slice(slot(1));
                fixed[ENTRY..2 * ENTRY].copy_from_slice(slot(3));
                set_entry_cluster(&mut fixed[ENTRY..2 * ENTRY], parent);
                fixed[2 * ENTRY] = DELETED;
                fixed[3 * ENTRY] = DELETED;
                fat.write(pos, &fixed)?;
                repaired += 1;
            } else if &slot(1)[..11] == DOTDOT && entry_cluster(slot(1)) != parent {
                let mut dotdot = [0u8; ENTRY];
                dotdot.copy_from_slice(slot(1));
                set_entry_cluster(&mut dotdot, parent);
                fat.write(pos + ENTRY as u64, &dotdot)?;
                repaired += 1;
            }
        }
        for sub in fat.subdirectories(dir)? {
            todo.push((sub, dir));
        }
    }
    Ok(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;

    const SIZE: u64 = 40 << 20;

    fn slot(f: &File, fat: &Fat32<'_, File>, cluster: u32, i: usize) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        f.read_exact_at(
            &mut e,
            fat.cluster_pos(cluster).unwrap() + (i * ENTRY) as u64,
        )
        .unwrap();
        e
    }

    #[test]
    fn rewrites_dot_entries_and_keeps_the_files() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(SIZE).unwrap();
        let w = || crate::window::FileWindow::new(&f, 0, SIZE);
        fatfs::format_volume(
            w(),
            fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32),
        )
        .unwrap();
        {
            let fs = fatfs::FileSystem::new(w(), fatfs::FsOptions::new()).unwrap();
            let root = fs.root_dir();
            let efi = root.create_dir("EFI").unwrap();
            efi.create_dir("BOOT").unwrap();
            efi.create_dir("debian").unwrap();
            root.create_file("EFI/BOOT/x.efi")
                .unwrap()
                .write_all(b"payload")
                .unwrap();
            drop(root);
            drop(efi);
            fs.unmount().unwrap();
        }
        let fat = Fat32::open(&f, 0, SIZE).unwrap();
        let efi_cluster = fat.subdirectories(fat.root).unwrap()[0];
        assert_eq!(
            slot(&f, &fat, efi_cluster, 0)[11],
            ATTR_LFN,
            "the 0.3.6 bug is there"
        );

        assert_eq!(repair_directories(&f, 0, SIZE).unwrap(), 3);
        let dot = slot(&f, &fat, efi_cluster, 0);
        let dotdot = slot(&f, &fat, efi_cluster, 1);
        assert_eq!(&dot[..11], DOT);
        assert_eq!(entry_cluster(&dot), efi_cluster);
        assert_eq!(&dotdot[..11], DOTDOT);
        assert_eq!(entry_cluster(&dotdot), 0, "parent is the root: 0 on FAT32");
        assert_eq!(slot(&f, &fat, efi_cluster, 2)[0], DELETED);
        let subs = fat.subdirectories(efi_cluster).unwrap();
        assert_eq!(subs.len(), 2);
        for s in subs {
            assert_eq!(entry_cluster(&slot(&f, &fat, s, 1)), efi_cluster);
        }
        assert_eq!(repair_directories(&f, 0, SIZE).unwrap(), 0, "idempotent");

        let fs = fatfs::FileSystem::new(w(), fatfs::FsOptions::new()).unwrap();
        let mut s = String::new();
        fs.root_dir()
            .open_file("EFI/BOOT/x.efi")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "payload");
        let names: Vec<String> = fs
            .root_dir()
            .open_dir("EFI")
            .unwrap()
            .iter()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [".", "..", "BOOT", "debian"]);
    }

    #[test]
    fn refuses_a_volume_that_is_not_fat32() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        assert!(repair_directories(&f, 0, 1 << 20).is_err());
    }
}
