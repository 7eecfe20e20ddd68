//! The LVM2 metadata area: its header and the circular buffer holding the metadata text.
//!
//! Layout (lvm2 `lib/format_text/layout.h`, `lib/format_text/format-text.c`; integers
//! little-endian). A metadata area is a byte range of the PV named by the PV header
//! (normally at byte 4096, about 1 MiB long). Its first 512 bytes are the header:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | `checksum_xl`: [`super::crc::calc`] over bytes 4..512 |
//! | 4 | 16 | `magic` = [`MAGIC`] |
//! | 20 | 4 | `version` = 1 |
//! | 24 | 8 | `start`: byte offset of this header on the PV (the area's offset) |
//! | 32 | 8 | `size`: the area's size in bytes |
//! | 40 | 24 each | `raw_locn` entries: `offset` u64, `size` u64, `checksum` u32, `flags` u32 |
//!
//! The `raw_locn` list ends with an all-zero entry. Slot 0 locates the committed metadata
//! text: `offset` from the start of the area, `size` bytes (including a trailing NUL),
//! `checksum` the CRC of those bytes; flag 1 (`RAW_LOCN_IGNORED`) says this copy is not
//! kept up to date and must not be read. Slot 1, when used, is a precommitted copy that
//! LVM reads only while a change is in flight; it is not read here. The rest of the area is
//! a circular buffer: text that would run past the area's end continues right after the
//! header (at offset 512), so a copy can come in two pieces.

use super::crc;
use super::text::MAX_TEXT;
use super::Corrupt;
use crate::bytes::Fields;

/// The size of the header, the start of the circular buffer.
pub const HEADER_SIZE: u64 = 512;
/// `FMTT_MAGIC`.
pub const MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// The only header version.
pub const VERSION: u32 = 1;
/// `RAW_LOCN_IGNORED`.
pub const RAW_LOCN_IGNORED: u32 = 1;
const RAW_LOCN: usize = 24;
const RAW_LOCNS_AT: usize = 40;

/// One `raw_locn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocn {
    /// Offset of the text from the area's start.
    pub offset: u64,
    /// Length of the text in bytes.
    pub size: u64,
    /// CRC of the text.
    pub checksum: u32,
    /// Flags ([`RAW_LOCN_IGNORED`]).
    pub flags: u32,
}

/// A parsed metadata area header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Byte offset of the area on the PV.
    pub start: u64,
    /// Size of the area in bytes.
    pub size: u64,
    /// The `raw_locn` entries before the terminating zero entry.
    pub raw_locns: Vec<RawLocn>,
}

/// Where the current metadata text lies on the PV: one or two pieces (the second when
/// the text wraps around the circular buffer), and its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLocation {
    /// `(byte offset on the PV, length)` of each piece; the second has length 0 when the
    /// text does not wrap.
    pub pieces: [(u64, u64); 2],
    /// The CRC the header records for the text.
    pub checksum: u32,
}

impl TextLocation {
    /// The text's total length.
    pub fn len(&self) -> u64 {
        self.pieces[0].1 + self.pieces[1].1
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check the text read from [`Self::pieces`] (concatenated) against the checksum.
    pub fn verify(&self, text: &[u8]) -> Result<(), Corrupt> {
        let computed = crc::calc(crc::INITIAL, text);
        if computed != self.checksum {
            return Err(Corrupt::Checksum {
                structure: "LVM2 metadata text",
                stored: self.checksum,
                computed,
            });
        }
        Ok(())
    }
}

impl MdaHeader {
    /// Parse the 512-byte header of the metadata area `area_offset..+area_size` (from the
    /// PV header).
    pub fn parse(bytes: &[u8], area_offset: u64, area_size: u64) -> Result<Self, Corrupt> {
        let f = Fields::new("LVM2 metadata area header", bytes);
        let stored = f.u32("checksum_xl", 0)?;
        let computed = crc::calc(
            crc::INITIAL,
            f.bytes("checksum_xl range", 4, HEADER_SIZE as usize - 4)?,
        );
        if stored != computed {
            return Err(Corrupt::Checksum {
                structure: "LVM2 metadata area header",
                stored,
                computed,
            });
        }
        if f.bytes("magic", 4, 16)? != MAGIC {
            return Err(f.invalid("magic", 0, "not LVM2's metadata magic").into());
        }
        let version = f.u32("version", 20)?;
        if version != VERSION {
            return Err(f.invalid("version", version.into(), "only 1 exists").into());
        }
        let start = f.u64("start", 24)?;
        if start != area_offset {
            return Err(f
                .invalid(
                    "start",
                    start,
                    "differs from the area's offset in the PV header",
                )
                .into());
        }
        let size = f.u64("size", 32)?;
        if size != area_size || size <= HEADER_SIZE {
            return Err(f
                .invalid(
                    "size",
                    size,
                    "differs from the area's size in the PV header",
                )
                .into());
        }
        let mut raw_locns = Vec::new();
        let mut at = RAW_LOCNS_AT;
        loop {
            let r = RawLocn {
                offset: f.u64("raw_locn.offset", at)?,
                size: f.u64("raw_locn.size", at + 8)?,
                checksum: f.u32("raw_locn.checksum", at + 16)?,
                flags: f.u32("raw_locn.flags", at + 20)?,
            };
            at += RAW_LOCN;
            if r.offset == 0 && r.size == 0 && r.checksum == 0 && r.flags == 0 {
                break;
            }
            raw_locns.push(r);
            if at + RAW_LOCN > HEADER_SIZE as usize {
                break;
            }
        }
        Ok(MdaHeader {
            start,
            size,
            raw_locns,
        })
    }

    /// Where the committed metadata text lies (slot 0), or `None` when this area holds
    /// none (a PV not in a volume group, or a copy LVM marked ignored).
    pub fn current_text(&self) -> Result<Option<TextLocation>, Corrupt> {
        let Some(r) = self.raw_locns.first() else {
            return Ok(None);
        };
        if (r.offset == 0 && r.size == 0) || r.flags & RAW_LOCN_IGNORED != 0 {
            return Ok(None);
        }
        let buffer = self.size - HEADER_SIZE;
        if r.offset < HEADER_SIZE || r.offset >= self.size || r.size > buffer || r.size == 0 {
            return Err(Corrupt::Bounds(format!(
                "metadata text of {} bytes at offset {} does not fit the {}-byte metadata area",
                r.size, r.offset, self.size
            )));
        }
        if r.size > MAX_TEXT as u64 {
            return Err(Corrupt::Bounds(format!(
                "metadata text of {} bytes is larger than the {MAX_TEXT} bytes accepted",
                r.size
            )));
        }
        let first = r.size.min(self.size - r.offset);
        Ok(Some(TextLocation {
            pieces: [
                (self.start + r.offset, first),
                (self.start + HEADER_SIZE, r.size - first),
            ],
            checksum: r.checksum,
        }))
    }
}

/// Tests build headers with this.
#[cfg(test)]
pub(crate) fn build(start: u64, size: u64, locns: &[RawLocn]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE as usize];
    b[4..20].copy_from_slice(MAGIC);
    b[20..24].copy_from_slice(&VERSION.to_le_bytes());
    b[24..32].copy_from_slice(&start.to_le_bytes());
    b[32..40].copy_from_slice(&size.to_le_bytes());
    for (i, r) in locns.iter().enumerate() {
        let at = RAW_LOCNS_AT + i * RAW_LOCN;
        b[at..at + 8].copy_from_slice(&r.offset.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&r.size.to_le_bytes());
        b[at + 16..at + 20].copy_from_slice(&r.checksum.to_le_bytes());
        b[at + 20..at + 24].copy_from_slice(&r.flags.to_le_bytes());
    }
    let c = crc::calc(crc::INITIAL, &b[4..]);
    b[..4].copy_from_slice(&c.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCN: RawLocn = RawLocn {
        offset: 0x2000,
        size: 0x5ac,
        checksum: 0xc4c5_49dc,
        flags: 0,
    };

    #[test]
    fn reads_the_header_lvm_wrote() {
        // lvm2 2.03.16 wrote this header (checksum 0x32cf89b3) after six metadata updates.
        let mut b = build(4096, 0xff000, &[LOCN]);
        assert_eq!(&b[..4], &0x32cf_89b3_u32.to_le_bytes(), "lvm2's header CRC");
        let h = MdaHeader::parse(&b, 4096, 0xff000).unwrap();
        assert_eq!(h.raw_locns, [LOCN]);
        let t = h.current_text().unwrap().unwrap();
        assert_eq!(t.pieces, [(4096 + 0x2000, 0x5ac), (4096 + 512, 0)]);
        b[100] = 1;
        assert!(matches!(
            MdaHeader::parse(&b, 4096, 0xff000),
            Err(Corrupt::Checksum { .. })
        ));
    }

    #[test]
    fn wrapped_text_comes_in_two_pieces() {
        let r = RawLocn {
            offset: 0xf000 - 100,
            size: 300,
            checksum: 7,
            flags: 0,
        };
        let h = MdaHeader::parse(&build(4096, 0xf000, &[r]), 4096, 0xf000).unwrap();
        let t = h.current_text().unwrap().unwrap();
        assert_eq!(t.pieces, [(4096 + 0xf000 - 100, 100), (4096 + 512, 200)]);
        assert_eq!(t.len(), 300);
        let text: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let good = TextLocation {
            checksum: crc::calc(crc::INITIAL, &text),
            ..t
        };
        good.verify(&text).unwrap();
        assert!(matches!(t.verify(&text), Err(Corrupt::Checksum { .. })));
    }

    #[test]
    fn empty_ignored_and_out_of_bounds_locations() {
        let parse = |r: RawLocn| {
            MdaHeader::parse(&build(4096, 0x10000, &[r]), 4096, 0x10000)
                .unwrap()
                .current_text()
        };
        let none = MdaHeader::parse(&build(4096, 0x10000, &[]), 4096, 0x10000).unwrap();
        assert_eq!(none.current_text().unwrap(), None);
        let ignored = RawLocn {
            flags: RAW_LOCN_IGNORED,
            ..LOCN
        };
        assert_eq!(parse(ignored).unwrap(), None);
        for (offset, size) in [
            (0x10000, 10),
            (100, 10),
            (0x1000, 0x10000),
            (u64::MAX, u64::MAX),
            (0x1000, 0),
        ] {
            let r = RawLocn {
                offset,
                size,
                ..LOCN
            };
            assert!(
                matches!(parse(r), Err(Corrupt::Bounds(_))),
                "{offset} {size}"
            );
        }
        let huge = 64 << 20;
        let big = build(
            4096,
            huge,
            &[RawLocn {
                offset: 512,
                size: huge - 512,
                ..LOCN
            }],
        );
        assert!(matches!(
            MdaHeader::parse(&big, 4096, huge).unwrap().current_text(),
            Err(Corrupt::Bounds(_))
        ));
    }

    #[test]
    fn header_fields_are_checked() {
        let good = build(4096, 0x10000, &[LOCN]);
        assert!(MdaHeader::parse(&good, 8192, 0x10000).is_err(), "start");
        assert!(MdaHeader::parse(&good, 4096, 0x20000).is_err(), "size");
        assert!(MdaHeader::parse(&good[..100], 4096, 0x10000).is_err());
        let mut v2 = good.clone();
        v2[20] = 2;
        let c = crc::calc(crc::INITIAL, &v2[4..]);
        v2[..4].copy_from_slice(&c.to_le_bytes());
        assert!(MdaHeader::parse(&v2, 4096, 0x10000).is_err(), "version");
        let mut magic = good.clone();
        magic[5] = b'X';
        let c = crc::calc(crc::INITIAL, &magic[4..]);
        magic[..4].copy_from_slice(&c.to_le_bytes());
        assert!(MdaHeader::parse(&magic, 4096, 0x10000).is_err(), "magic");
        // A header whose every slot is used still parses (bounded by the sector).
        let full = build(4096, 0x10000, &[LOCN; 19]);
        assert_eq!(
            MdaHeader::parse(&full, 4096, 0x10000)
                .unwrap()
                .raw_locns
                .len(),
            19
        );
    }
}
