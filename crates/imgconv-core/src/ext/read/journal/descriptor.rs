//! Descriptor blocks (Documentation/filesystems/ext4/journal.rst, "Descriptor Block"):
//! after the header, one tag per data block that follows the descriptor in the log,
//! naming the filesystem block it is a copy of. The tag format depends on the journal
//! features (`journal_block_tag3_t` with csum v3, else `journal_block_tag_t` whose size
//! grows with 64bit and csum v2); a tag without the same-UUID flag is followed by a
//! 16-byte UUID; the last-tag flag ends the list. With v2/v3 checksums the block ends in
//! a `jbd2_journal_block_tail` holding the crc32c of the block.

use super::header;
use super::superblock::{feature, JournalSuperblock};
use crate::bytes::{Fields, ParseError};
use crate::ext::csum;

/// `JBD2_FLAG_ESCAPE`: the data block began with the journal magic, stored as zeros.
pub const FLAG_ESCAPE: u32 = 0x1;
/// `JBD2_FLAG_SAME_UUID`: no UUID follows the tag.
pub const FLAG_SAME_UUID: u32 = 0x2;
/// `JBD2_FLAG_LAST_TAG`: the last tag of the block.
pub const FLAG_LAST_TAG: u32 = 0x8;
/// Bytes of the UUID after a tag without [`FLAG_SAME_UUID`].
const UUID_LEN: usize = 16;
/// Bytes of `jbd2_journal_block_tail`.
pub const TAIL_LEN: usize = 4;

/// How tags are laid out in this journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagFormat {
    /// `journal_block_tag3_t` (csum v3).
    v3: bool,
    /// A 16-bit tag checksum (csum v2).
    v2: bool,
    /// A `t_blocknr_high` field.
    high: bool,
    /// Metadata blocks end in a checksum tail.
    tail: bool,
}

impl TagFormat {
    /// The tag format `sb`'s features give (the kernel's `journal_tag_bytes`).
    pub fn of(sb: &JournalSuperblock) -> TagFormat {
        TagFormat {
            v3: sb.has_incompat(feature::INCOMPAT_CSUM_V3),
            v2: sb.has_incompat(feature::INCOMPAT_CSUM_V2),
            high: sb.has_incompat(feature::INCOMPAT_64BIT),
            tail: sb.has_csum(),
        }
    }

    /// Bytes of one tag, without its UUID: 16 with csum v3; else 8, 4 more for the high
    /// block number, 2 more for the csum v2 checksum.
    pub fn tag_len(&self) -> usize {
        if self.v3 {
            return 16;
        }
        8 + if self.high { 4 } else { 0 } + if self.v2 { 2 } else { 0 }
    }
}

/// One tag: where a data block of the log belongs in the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The filesystem block.
    pub block: u64,
    /// `t_flags`.
    pub flags: u32,
    /// `t_checksum` (16 bits with csum v2, 32 with v3; 0 without checksums).
    pub checksum: u32,
}

impl Tag {
    pub fn escaped(&self) -> bool {
        self.flags & FLAG_ESCAPE != 0
    }
}

/// The tags of descriptor block `block`, in order. Stops at the last-tag flag or when
/// no further tag fits before the tail.
pub fn tags(block: &[u8], format: TagFormat) -> Result<Vec<Tag>, ParseError> {
    let f = Fields::new("jbd2 descriptor block", block);
    let end = block
        .len()
        .saturating_sub(if format.tail { TAIL_LEN } else { 0 });
    let len = format.tag_len();
    let mut out = Vec::new();
    let mut off = header::LEN;
    while off + len <= end {
        let low = u64::from(f.u32_be("t_blocknr", off)?);
        let (flags, checksum, high) = if format.v3 {
            (
                f.u32_be("t_flags", off + 4)?,
                f.u32_be("t_checksum", off + 12)?,
                f.u32_be("t_blocknr_high", off + 8)?,
            )
        } else {
            let high = if format.high {
                f.u32_be("t_blocknr_high", off + 8)?
            } else {
                0
            };
            let checksum = if format.v2 {
                u32::from(f.u16_be("t_checksum", off + 4)?)
            } else {
                0
            };
            (u32::from(f.u16_be("t_flags", off + 6)?), checksum, high)
        };
        // Without 64bit the high word is not part of the block number.
        let high = if format.high { u64::from(high) } else { 0 };
        out.push(Tag {
            block: (high << 32) | low,
            flags,
            checksum,
        });
        off += len;
        if flags & FLAG_SAME_UUID == 0 {
            off += UUID_LEN;
        }
        if flags & FLAG_LAST_TAG != 0 {
            break;
        }
    }
    Ok(out)
}

/// The kernel's `jbd2_descriptor_block_csum_verify` (also for revoke blocks): crc32c
/// from the journal seed over the block with its tail checksum read as zero.
pub fn tail_ok(block: &[u8], seed: u32) -> Result<bool, ParseError> {
    let f = Fields::new("jbd2 block tail", block);
    let at = block.len().saturating_sub(TAIL_LEN);
    let stored = f.u32_be("t_checksum", at)?;
    let body = f.bytes("block before its tail", 0, at)?;
    Ok(csum::crc32c_raw_parts(seed, &[body, &[0; TAIL_LEN]]) == stored)
}

/// The kernel's `jbd2_block_tag_csum_verify`: crc32c of the big-endian transaction ID,
/// then of the data block as the log holds it; csum v2 keeps the low 16 bits.
pub fn data_ok(tag: &Tag, data: &[u8], sequence: u32, seed: u32, format: TagFormat) -> bool {
    if !format.v2 && !format.v3 {
        return true;
    }
    let c = csum::crc32c_raw_parts(seed, &[&sequence.to_be_bytes(), data]);
    if format.v3 {
        c == tag.checksum
    } else {
        c & 0xFFFF == tag.checksum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(v3: bool, v2: bool, high: bool) -> TagFormat {
        TagFormat {
            v3,
            v2,
            high,
            tail: v2 || v3,
        }
    }

    #[test]
    fn tag_sizes_follow_the_features() {
        assert_eq!(format(false, false, false).tag_len(), 8);
        assert_eq!(format(false, false, true).tag_len(), 12);
        assert_eq!(format(false, true, false).tag_len(), 10);
        assert_eq!(format(false, true, true).tag_len(), 14);
        assert_eq!(format(true, false, true).tag_len(), 16);
    }

    #[test]
    fn reads_tags_with_and_without_uuid_up_to_the_last() {
        let mut b = vec![0u8; 1024];
        // Tag 1 (v3): block 0x1_0000_0005, escaped, UUID follows.
        b[12..16].copy_from_slice(&5u32.to_be_bytes());
        b[16..20].copy_from_slice(&FLAG_ESCAPE.to_be_bytes());
        b[20..24].copy_from_slice(&1u32.to_be_bytes());
        b[24..28].copy_from_slice(&0xABCDu32.to_be_bytes());
        // Tag 2 after the 16-byte UUID: block 9, same UUID, last.
        let t2 = 12 + 16 + 16;
        b[t2..t2 + 4].copy_from_slice(&9u32.to_be_bytes());
        b[t2 + 4..t2 + 8].copy_from_slice(&(FLAG_SAME_UUID | FLAG_LAST_TAG).to_be_bytes());
        let tags = tags(&b, format(true, false, true)).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].block, 0x1_0000_0005);
        assert!(tags[0].escaped());
        assert_eq!(tags[0].checksum, 0xABCD);
        assert_eq!(tags[1].block, 9);
        // Without 64bit the high word is ignored.
        assert_eq!(tags_block0(&b, format(true, false, false)), 5);
        // A block of zero tags never ends early and never reads past its end.
        let zeros = vec![0u8; 64];
        assert_eq!(
            super::tags(&zeros, format(false, false, false))
                .unwrap()
                .len(),
            2
        );
    }

    fn tags_block0(b: &[u8], f: TagFormat) -> u64 {
        tags(b, f).unwrap()[0].block
    }
}
