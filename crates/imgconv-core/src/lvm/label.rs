//! The LVM2 physical volume label: what makes a partition or disk a PV.
//!
//! Layout (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`,
//! `lib/format_text/text_label.c`; all integers little-endian), in one 512-byte sector
//! among the first four of the device (normally sector 1):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | `id` = `"LABELONE"` |
//! | 8 | 8 | `sector_xl`: the sector this label is in |
//! | 16 | 4 | `crc_xl`: [`super::crc::calc`] from byte 20 to the end of the sector |
//! | 20 | 4 | `offset_xl`: offset of the PV header from the label start (32) |
//! | 24 | 8 | `type` = `"LVM2 001"` |
//!
//! The PV header at `offset_xl`: `pv_uuid` (32 ASCII characters, the UUID without its
//! dashes), `device_size_xl` (u64, bytes), then two lists of `{offset u64, size u64}`
//! disk locations (byte offsets from the start of the device), each ended by an entry
//! whose offset is zero: the data areas (one: where the physical extents begin), then the
//! metadata areas (zero, one or two). Both lists must end inside the sector, which bounds
//! their length. A PV header extension (version, flags, bootloader areas) may follow;
//! nothing here needs it.

use super::crc;
use super::Corrupt;
use crate::bytes::Fields;

/// Bytes in a sector, LVM's unit for the label position.
pub const SECTOR_SIZE: usize = 512;
/// The label is in one of this many sectors at the start of the device.
pub const SCAN_SECTORS: usize = 4;
/// The label's magic.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The only label type this reader knows (LVM2's text format).
pub const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// The size of the PV header before its lists: UUID and device size.
const PV_HEADER_FIXED: usize = 40;
/// One `disk_locn`: offset and size.
const DISK_LOCN: usize = 16;

/// A byte range of the device (`disk_locn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskArea {
    /// Byte offset from the start of the device.
    pub offset: u64,
    /// Size in bytes; 0 for a data area means "to the end of the device".
    pub size: u64,
}

/// A parsed PV label and PV header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector the label was found in (0..4).
    pub sector: u64,
    /// The PV UUID as stored: 32 characters, no dashes.
    pub pv_uuid: String,
    /// The device size recorded at `pvcreate` time, in bytes.
    pub device_size: u64,
    /// The data areas (normally one: the physical extents start at its offset).
    pub data_areas: Vec<DiskArea>,
    /// The metadata areas (zero, one or two).
    pub metadata_areas: Vec<DiskArea>,
}

/// Look for the label in the first sectors of a device. `head` holds the device's first
/// bytes (up to [`SCAN_SECTORS`] sectors; fewer when the device is that small).
/// `Ok(None)` when no sector starts with `LABELONE`: this is not a PV. A sector that does
/// but fails its checks is an error (LVM would ignore it, which would hide the volumes).
pub fn find(head: &[u8]) -> Result<Option<PvLabel>, Corrupt> {
    for sector in 0..SCAN_SECTORS {
        let start = sector * SECTOR_SIZE;
        let Some(bytes) = head.get(start..start + SECTOR_SIZE) else {
            break;
        };
        if bytes.starts_with(LABEL_ID) {
            return parse(bytes, sector as u64).map(Some);
        }
    }
    Ok(None)
}

/// Parse one 512-byte label sector found at `sector`.
pub fn parse(bytes: &[u8], sector: u64) -> Result<PvLabel, Corrupt> {
    let f = Fields::new("LVM2 label", bytes);
    if f.bytes("id", 0, 8)? != LABEL_ID {
        return Err(f.invalid("id", 0, "not \"LABELONE\"").into());
    }
    let sector_xl = f.u64("sector_xl", 8)?;
    if sector_xl != sector {
        return Err(f
            .invalid(
                "sector_xl",
                sector_xl,
                "does not name the sector the label is in",
            )
            .into());
    }
    let stored = f.u32("crc_xl", 16)?;
    let computed = crc::calc(crc::INITIAL, f.bytes("crc_xl range", 20, SECTOR_SIZE - 20)?);
    if stored != computed {
        return Err(Corrupt::Checksum {
            structure: "LVM2 label",
            stored,
            computed,
        });
    }
    if f.bytes("type", 24, 8)? != LABEL_TYPE {
        return Err(f
            .invalid("type", 0, "not \"LVM2 001\" (another label format)")
            .into());
    }
    let offset = f.u32("offset_xl", 20)?;
    if offset < 32 || offset as usize > SECTOR_SIZE - PV_HEADER_FIXED - 2 * DISK_LOCN {
        return Err(f
            .invalid(
                "offset_xl",
                offset.into(),
                "PV header outside the label sector",
            )
            .into());
    }
    let h = Fields::new("LVM2 PV header", &bytes[offset as usize..SECTOR_SIZE]);
    let uuid = h.bytes("pv_uuid", 0, 32)?;
    if !uuid
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'!' || c == b'#')
    {
        return Err(h
            .invalid("pv_uuid", 0, "not made of LVM's UUID characters")
            .into());
    }
    let device_size = h.u64("device_size_xl", 32)?;
    let mut at = PV_HEADER_FIXED;
    let data_areas = read_list(&h, &mut at, "data area")?;
    let metadata_areas = read_list(&h, &mut at, "metadata area")?;
    Ok(PvLabel {
        sector,
        pv_uuid: String::from_utf8_lossy(uuid).into_owned(),
        device_size,
        data_areas,
        metadata_areas,
    })
}

/// A `disk_locn` list at `*at`, ended by an entry with offset 0 (which must fit in the
/// sector, as in lvm2's `label_check_pv_layout`).
fn read_list(h: &Fields, at: &mut usize, field: &'static str) -> Result<Vec<DiskArea>, Corrupt> {
    let mut out = Vec::new();
    loop {
        let offset = h.u64(field, *at)?;
        let size = h.u64(field, *at + 8)?;
        *at += DISK_LOCN;
        if offset == 0 {
            return Ok(out);
        }
        out.push(DiskArea { offset, size });
    }
}

/// Tests build labels with this (the integration tests compare with lvm2's own).
#[cfg(test)]
pub(crate) fn build(
    sector: u64,
    uuid: &[u8; 32],
    device_size: u64,
    data: &[DiskArea],
    meta: &[DiskArea],
) -> Vec<u8> {
    let mut b = vec![0u8; SECTOR_SIZE];
    b[..8].copy_from_slice(LABEL_ID);
    b[8..16].copy_from_slice(&sector.to_le_bytes());
    b[20..24].copy_from_slice(&32u32.to_le_bytes());
    b[24..32].copy_from_slice(LABEL_TYPE);
    b[32..64].copy_from_slice(uuid);
    b[64..72].copy_from_slice(&device_size.to_le_bytes());
    let mut at = 72;
    for list in [data, meta] {
        for a in list {
            b[at..at + 8].copy_from_slice(&a.offset.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&a.size.to_le_bytes());
            at += 16;
        }
        at += 16;
    }
    let c = crc::calc(crc::INITIAL, &b[20..]);
    b[16..20].copy_from_slice(&c.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &[u8; 32] = b"bHIoxVyq75dE949CzUZj9cMayiO5EScm";

    /// The label sector lvm2 2.03.16 wrote with `pvcreate` on a 64 MiB device: its CRC
    /// (0x386346fd, stored at byte 16) is lvm2's, so this checks the CRC variant too.
    fn lvm_written() -> Vec<u8> {
        let mut b = build(
            1,
            UUID,
            64 << 20,
            &[DiskArea {
                offset: 1 << 20,
                size: 0,
            }],
            &[DiskArea {
                offset: 4096,
                size: 0xff000,
            }],
        );
        // The PV header extension: version 2, flags 1 (PV_EXT_USED).
        b[0x88..0x8c].copy_from_slice(&2u32.to_le_bytes());
        b[0x8c..0x90].copy_from_slice(&1u32.to_le_bytes());
        b[16..20].copy_from_slice(&0x3863_46fd_u32.to_le_bytes());
        b
    }

    #[test]
    fn reads_the_label_lvm_wrote() {
        let mut head = vec![0u8; 2048];
        head[512..1024].copy_from_slice(&lvm_written());
        let l = find(&head).unwrap().unwrap();
        assert_eq!(l.sector, 1);
        assert_eq!(l.pv_uuid, "bHIoxVyq75dE949CzUZj9cMayiO5EScm");
        assert_eq!(l.device_size, 64 << 20);
        assert_eq!(
            l.data_areas,
            [DiskArea {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            l.metadata_areas,
            [DiskArea {
                offset: 4096,
                size: 0xff000
            }]
        );
        assert_eq!(find(&[0u8; 2048]).unwrap(), None);
        assert_eq!(
            find(&head[..700]).unwrap(),
            None,
            "a short head is no label"
        );
    }

    #[test]
    fn corrupt_labels_are_errors() {
        let good = lvm_written();
        let mut bad_crc = good.clone();
        bad_crc[100] ^= 1;
        assert!(matches!(
            parse(&bad_crc, 1),
            Err(Corrupt::Checksum {
                stored: 0x3863_46fd,
                ..
            })
        ));
        assert!(
            matches!(parse(&good, 2), Err(Corrupt::Field(_))),
            "wrong sector"
        );
        let fix = |mut b: Vec<u8>| {
            let c = crc::calc(crc::INITIAL, &b[20..]);
            b[16..20].copy_from_slice(&c.to_le_bytes());
            b
        };
        let mut other_type = good.clone();
        other_type[24..32].copy_from_slice(b"LVM1 001");
        assert!(parse(&fix(other_type), 1).is_err());
        for off in [0u32, 31, 480, u32::MAX] {
            let mut b = good.clone();
            b[20..24].copy_from_slice(&off.to_le_bytes());
            assert!(parse(&fix(b), 1).is_err(), "offset {off}");
        }
        let mut bad_uuid = good.clone();
        bad_uuid[40] = b'-';
        assert!(parse(&fix(bad_uuid), 1).is_err());
        // Lists that never end run off the sector: an error, not an endless loop.
        let mut endless = good.clone();
        for at in (72..512).step_by(8) {
            endless[at..at + 8].copy_from_slice(&1u64.to_le_bytes());
        }
        assert!(matches!(parse(&fix(endless), 1), Err(Corrupt::Field(_))));
        assert!(parse(&good[..300], 1).is_err(), "short sector");
    }
}
