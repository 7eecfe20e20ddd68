//! Reading the partition table of an input image (MBR or GPT), through `bootsector`, and
//! the logical partitions of an MBR extended partition ([`ebr`]).
//!
//! Inputs are untrusted: the parser runs under `catch_unwind`, and every entry is checked
//! against the image's size before anyone opens it.

pub mod ebr;

use crate::blockio::Region;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Which kind of table an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// DOS/MBR partition table.
    Mbr,
    /// GUID partition table.
    Gpt,
}

/// What a partition entry declares its content to be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "table")]
pub enum PartitionType {
    /// MBR type byte and boot flag.
    Mbr { type_code: u8, bootable: bool },
    /// GPT type GUID (canonical text) and name.
    Gpt { type_guid: String, name: String },
}

/// One entry of a partition table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionEntry {
    /// 1-based partition number as Linux names it (sda1 = 1).
    pub number: usize,
    /// First byte of the partition in the image.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Declared type.
    pub kind: PartitionType,
}

impl PartitionEntry {
    /// True when the declared type says "extended partition container" (no filesystem).
    pub fn is_extended(&self) -> bool {
        matches!(
            self.kind,
            PartitionType::Mbr {
                type_code,
                ..
            } if ebr::is_extended_type(type_code)
        )
    }
}

/// Errors reading a partition table.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The table is present but malformed.
    #[error("corrupt partition table in {path}: {why}")]
    Corrupt { path: String, why: String },
    /// An entry points outside the image.
    #[error("partition {number} of {path} ({start}+{len} bytes) lies beyond the end of the image ({size} bytes): truncated image?")]
    OutOfBounds {
        path: String,
        number: usize,
        start: u64,
        len: u64,
        size: u64,
    },
}

/// The partition table of an image, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionTable {
    /// MBR or GPT.
    pub kind: TableKind,
    /// Non-empty entries, in table order.
    pub entries: Vec<PartitionEntry>,
}

/// Read the partition table of `image`. `Ok(None)` means "no table" (no 0x55AA boot
/// signature, or a boot sector without entries): the image may be a bare filesystem.
pub fn read_table(image: &Region) -> Result<Option<PartitionTable>, PartitionError> {
    let path = image.path().display().to_string();
    if image.len() < 512 {
        return Ok(None);
    }
    let reader = image.clone();
    let listed = catch_unwind(AssertUnwindSafe(|| {
        bootsector::list_partitions(reader, &bootsector::Options::default())
    }))
    .map_err(|_| PartitionError::Corrupt {
        path: path.clone(),
        why: "the partition table parser rejected the data (malformed GPT header or entries)"
            .into(),
    })?;
    let parts = match listed {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            // A sector that merely ends in 0x55AA (e.g. a FAT or filesystem boot block)
            // with garbage status bytes is not a partition table; let the caller probe
            // for a bare filesystem. A GPT that fails its checks is corrupt.
            let mut sector = [0u8; 512];
            let _ = image.read_exact_at(0, &mut sector);
            let protective = (0..4).any(|i| sector[446 + i * 16 + 4] == 0xee);
            if protective {
                return Err(PartitionError::Corrupt {
                    path,
                    why: e.to_string(),
                });
            }
            return Ok(None);
        }
        Err(e) => {
            return Err(PartitionError::Corrupt {
                path,
                why: e.to_string(),
            })
        }
    };
    if parts.is_empty() {
        return Ok(None);
    }
    let kind = match parts[0].attributes {
        bootsector::Attributes::GPT { .. } => TableKind::Gpt,
        bootsector::Attributes::MBR { .. } => TableKind::Mbr,
    };
    let mut entries = Vec::with_capacity(parts.len());
    let mut logicals = Vec::new();
    for p in parts {
        let number = p.id + 1;
        let in_bounds = p
            .first_byte
            .checked_add(p.len)
            .is_some_and(|end| end <= image.len());
        let kind = match p.attributes {
            bootsector::Attributes::MBR {
                type_code,
                bootable,
            } => PartitionType::Mbr {
                type_code,
                bootable,
            },
            bootsector::Attributes::GPT {
                type_uuid, name, ..
            } => PartitionType::Gpt {
                type_guid: guid_to_string(&type_uuid),
                name,
            },
        };
        let entry = PartitionEntry {
            number,
            start: p.first_byte,
            len: p.len,
            kind,
        };
        if entry.is_extended() {
            // The container itself holds no filesystem; its logical partitions do. Only
            // the first extended partition counts, as for Linux.
            if logicals.is_empty() {
                logicals = ebr::read_chain(image, p.first_byte, p.len);
            }
            continue;
        }
        if !in_bounds || p.len == 0 {
            return Err(PartitionError::OutOfBounds {
                path,
                number,
                start: p.first_byte,
                len: p.len,
                size: image.len(),
            });
        }
        entries.push(entry);
    }
    for l in logicals {
        if l.start
            .checked_add(l.len)
            .is_none_or(|end| end > image.len())
        {
            return Err(PartitionError::OutOfBounds {
                path,
                number: l.number,
                start: l.start,
                len: l.len,
                size: image.len(),
            });
        }
        entries.push(PartitionEntry {
            number: l.number,
            start: l.start,
            len: l.len,
            kind: PartitionType::Mbr {
                type_code: l.type_code,
                bootable: false,
            },
        });
    }
    Ok(Some(PartitionTable { kind, entries }))
}

/// Format a GPT GUID (mixed-endian on disk) in its canonical upper-case text form.
pub fn guid_to_string(b: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn region_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Region) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let r = Region::open(tmp.path()).unwrap();
        (tmp, r)
    }

    fn mbr_with(entries: &[(u8, u32, u32)], size: usize) -> Vec<u8> {
        let mut img = vec![0u8; size];
        for (i, &(ty, start, len)) in entries.iter().enumerate() {
            let e = 446 + i * 16;
            img[e + 4] = ty;
            img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            img[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        }
        img[510] = 0x55;
        img[511] = 0xaa;
        img
    }

    #[test]
    fn reads_mbr_entries() {
        let (_t, r) = region_of(&mbr_with(&[(0x83, 4, 8), (0x82, 12, 4)], 16 * 512));
        let t = read_table(&r).unwrap().unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].number, 1);
        assert_eq!(t.entries[0].start, 4 * 512);
        assert_eq!(t.entries[1].len, 4 * 512);
    }

    #[test]
    fn entry_past_the_end_is_out_of_bounds() {
        let (_t, r) = region_of(&mbr_with(&[(0x83, 4, 800)], 16 * 512));
        assert!(matches!(
            read_table(&r),
            Err(PartitionError::OutOfBounds { number: 1, .. })
        ));
    }

    #[test]
    fn logical_partitions_follow_the_primaries() {
        // p1 at sector 4; extended p2 at sector 16 (32 sectors): EBR → p5 at 18 (8 sectors).
        let mut img = mbr_with(&[(0x83, 4, 8), (0x05, 16, 32)], 64 * 512);
        let ebr = 16 * 512 + 446;
        img[ebr + 4] = 0x82;
        img[ebr + 8..ebr + 12].copy_from_slice(&2u32.to_le_bytes());
        img[ebr + 12..ebr + 16].copy_from_slice(&8u32.to_le_bytes());
        img[16 * 512 + 510] = 0x55;
        img[16 * 512 + 511] = 0xaa;
        let (_t, r) = region_of(&img);
        let t = read_table(&r).unwrap().unwrap();
        let got: Vec<(usize, u64, u64)> = t
            .entries
            .iter()
            .map(|e| (e.number, e.start, e.len))
            .collect();
        assert_eq!(got, [(1, 4 * 512, 8 * 512), (5, 18 * 512, 8 * 512)]);
    }

    #[test]
    fn zeroed_image_has_no_table() {
        let (_t, r) = region_of(&vec![0u8; 4096]);
        assert!(read_table(&r).unwrap().is_none());
    }

    #[test]
    fn guid_text_is_mixed_endian() {
        // Linux filesystem data GUID as stored on disk.
        let raw = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        assert_eq!(guid_to_string(&raw), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    }
}
