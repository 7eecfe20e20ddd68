//! Block group descriptors (Documentation/filesystems/ext4/group_descr.rst,
//! `struct ext4_group_desc`) and where each group keeps its metadata
//! (Documentation/filesystems/ext4/blockgroup.rst).
//!
//! A descriptor is 32 bytes, or `s_desc_size` (≥ 64) with the 64bit feature, whose
//! upper half holds the high 32 bits of the block numbers. The table normally follows
//! the superblock (block `s_first_data_block + 1`); with meta_bg, the descriptors of
//! meta group `m ≥ s_first_meta_bg` (one block of descriptors, i.e. `descs_per_block`
//! groups) live in the first block after the superblock backup of that meta group's
//! first group.

use super::csum;
use super::superblock::Superblock;
use crate::blockio::Region;
use crate::bytes::{Fields, ParseError};

const STRUCTURE: &str = "ext group descriptor";

/// `bg_flags`: inode table and bitmap not initialised.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: block bitmap not initialised; the group holds only its own metadata.
pub const BG_BLOCK_UNINIT: u16 = 0x2;
/// `bg_flags`: inode table zeroed.
pub const BG_INODE_ZEROED: u16 = 0x4;

/// Offset of `bg_checksum`, the field the descriptor checksum skips.
const CHECKSUM_OFFSET: usize = 0x1E;
/// End of `bg_block_bitmap_csum_hi`: descriptors shorter than this only carry the low
/// 16 bits of the block bitmap checksum (EXT4_BG_BLOCK_BITMAP_CSUM_HI_END).
const BLOCK_BITMAP_CSUM_HI_END: u64 = 0x3A;

/// One parsed group descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDesc {
    /// 0x0 `bg_block_bitmap_lo` + 0x20 `bg_block_bitmap_hi`.
    pub block_bitmap: u64,
    /// 0x4 `bg_inode_bitmap_lo` + 0x24 `bg_inode_bitmap_hi`.
    pub inode_bitmap: u64,
    /// 0x8 `bg_inode_table_lo` + 0x28 `bg_inode_table_hi`.
    pub inode_table: u64,
    /// 0xC `bg_free_blocks_count_lo` + 0x2C `bg_free_blocks_count_hi`.
    pub free_blocks: u32,
    /// 0x12 `bg_flags`.
    pub flags: u16,
    /// 0x18 `bg_block_bitmap_csum_lo` + 0x38 `bg_block_bitmap_csum_hi`.
    pub block_bitmap_csum: u32,
    /// 0x1C `bg_itable_unused_lo` + 0x32 `bg_itable_unused_hi`: inodes at the end of the
    /// inode table never used (meaningful only with descriptor checksums).
    pub itable_unused: u32,
    /// 0x1E `bg_checksum`.
    pub checksum: u16,
}

impl GroupDesc {
    /// Parse one descriptor of `sb.desc_size()` bytes.
    pub fn parse(raw: &[u8], sb: &Superblock) -> Result<Self, ParseError> {
        let f = Fields::new(STRUCTURE, raw);
        let wide = sb.is_64bit() && sb.desc_size() >= 64;
        let hi32 = |field, off| -> Result<u64, ParseError> {
            Ok(if wide {
                u64::from(f.u32(field, off)?) << 32
            } else {
                0
            })
        };
        let hi16 = |field, off| -> Result<u32, ParseError> {
            Ok(if wide {
                u32::from(f.u16(field, off)?) << 16
            } else {
                0
            })
        };
        let csum_hi = if sb.desc_size() >= BLOCK_BITMAP_CSUM_HI_END {
            u32::from(f.u16("bg_block_bitmap_csum_hi", 0x38)?) << 16
        } else {
            0
        };
        Ok(GroupDesc {
            block_bitmap: u64::from(f.u32("bg_block_bitmap_lo", 0x0)?)
                | hi32("bg_block_bitmap_hi", 0x20)?,
            inode_bitmap: u64::from(f.u32("bg_inode_bitmap_lo", 0x4)?)
                | hi32("bg_inode_bitmap_hi", 0x24)?,
            inode_table: u64::from(f.u32("bg_inode_table_lo", 0x8)?)
                | hi32("bg_inode_table_hi", 0x28)?,
            free_blocks: u32::from(f.u16("bg_free_blocks_count_lo", 0xC)?)
                | hi16("bg_free_blocks_count_hi", 0x2C)?,
            flags: f.u16("bg_flags", 0x12)?,
            block_bitmap_csum: u32::from(f.u16("bg_block_bitmap_csum_lo", 0x18)?) | csum_hi,
            itable_unused: u32::from(f.u16("bg_itable_unused_lo", 0x1C)?)
                | hi16("bg_itable_unused_hi", 0x32)?,
            checksum: f.u16("bg_checksum", CHECKSUM_OFFSET)?,
        })
    }

    /// BLOCK_UNINIT, honoured only when the filesystem has descriptor checksums (as
    /// the kernel and e2fsprogs do; ext2/ext3 leave `bg_flags` meaningless).
    pub fn block_uninit(&self, sb: &Superblock) -> bool {
        sb.has_group_desc_csum() && self.flags & BG_BLOCK_UNINIT != 0
    }

    /// The blocks at the end of this group's inode table that hold no inode ever used,
    /// as `(first block, count)`: those past `bg_itable_unused`, or the whole table of an
    /// INODE_UNINIT group. `None` without descriptor checksums (the kernel and e2fsck
    /// trust the field only then) or when no whole block is unused.
    pub fn unused_inode_table(&self, sb: &Superblock) -> Option<(u64, u64)> {
        if !sb.has_group_desc_csum() {
            return None;
        }
        let per_group = u64::from(sb.inodes_per_group);
        let unused = if self.flags & BG_INODE_UNINIT != 0 {
            per_group
        } else {
            u64::from(self.itable_unused).min(per_group)
        };
        let used_bytes = (per_group - unused) * u64::from(sb.inode_size);
        let first = used_bytes.div_ceil(sb.block_size());
        let blocks = inode_table_blocks(sb);
        (first < blocks).then(|| (self.inode_table + first, blocks - first))
    }
}

/// Number of blocks of one inode table.
pub fn inode_table_blocks(sb: &Superblock) -> u64 {
    (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(sb.block_size())
}

/// The checksum a descriptor should carry, or `None` when the filesystem has no
/// descriptor checksums. metadata_csum: low 16 bits of crc32c(seed, le32 group, desc
/// with `bg_checksum` zeroed); gdt_csum: crc16(~0, uuid, le32 group, desc without
/// `bg_checksum`) (group_descr.rst, "bg_checksum").
pub fn expected_desc_checksum(sb: &Superblock, group: u64, raw: &[u8]) -> Option<u16> {
    let g = (group as u32).to_le_bytes();
    let (head, rest) = raw.split_at(CHECKSUM_OFFSET.min(raw.len()));
    let tail = rest.get(2..).unwrap_or(&[]);
    if sb.has_ro_compat(super::superblock::feature::RO_COMPAT_METADATA_CSUM) {
        let c = csum::crc32c_raw_parts(sb.csum_seed(), &[&g, head, &[0, 0], tail]);
        Some((c & 0xFFFF) as u16)
    } else if sb.has_ro_compat(super::superblock::feature::RO_COMPAT_GDT_CSUM) {
        // Old-style descriptors stop at bg_checksum; 64-byte ones continue after it.
        Some(csum::crc16_parts(&[&sb.uuid, &g, head, tail]))
    } else {
        None
    }
}

/// The checksum of a block bitmap as the descriptor stores it: crc32c(seed, bitmap of
/// `clusters_per_group / 8` bytes), truncated to 16 bits for 32-byte descriptors.
/// `None` without metadata_csum.
pub fn expected_bitmap_checksum(sb: &Superblock, bitmap: &[u8]) -> Option<u32> {
    if !sb.has_ro_compat(super::superblock::feature::RO_COMPAT_METADATA_CSUM) {
        return None;
    }
    let covered = bitmap
        .get(..sb.clusters_per_group as usize / 8)
        .unwrap_or(bitmap);
    let c = csum::crc32c_raw(sb.csum_seed(), covered);
    Some(if sb.desc_size() >= BLOCK_BITMAP_CSUM_HI_END {
        c
    } else {
        c & 0xFFFF
    })
}

/// Byte position (from the start of the filesystem) of group `g`'s descriptor.
pub fn desc_position(sb: &Superblock, g: u64) -> u64 {
    let bs = sb.block_size();
    let dpb = sb.descs_per_block();
    let meta_group = g / dpb;
    let block = if sb.has_incompat(super::superblock::feature::INCOMPAT_META_BG)
        && meta_group >= u64::from(sb.first_meta_bg)
    {
        let first = meta_group * dpb;
        sb.group_first_block(first) + u64::from(sb.group_has_super(first))
    } else {
        u64::from(sb.first_data_block) + 1 + meta_group
    };
    block * bs + (g % dpb) * sb.desc_size()
}

/// The blocks of group `g` holding a superblock copy, descriptor table copy and
/// reserved GDT blocks, as `(first block, count)` ranges; mirrors e2fsprogs'
/// `ext2fs_super_and_bgd_loc2`.
pub fn base_metadata(sb: &Superblock, g: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(2);
    let start = sb.group_first_block(g);
    let has_super = sb.group_has_super(g);
    let meta_bg = sb.has_incompat(super::superblock::feature::INCOMPAT_META_BG);
    let dpb = sb.descs_per_block();
    let old_desc_blocks = if meta_bg {
        u64::from(sb.first_meta_bg)
    } else {
        sb.desc_blocks() + u64::from(sb.reserved_gdt_blocks)
    };
    if has_super {
        out.push((start, 1));
    }
    if !meta_bg || g / dpb < u64::from(sb.first_meta_bg) {
        if has_super && old_desc_blocks > 0 {
            out.push((start + 1, old_desc_blocks));
        }
    } else {
        let r = g % dpb;
        if r == 0 || r == 1 || r == dpb - 1 {
            out.push((start + u64::from(has_super), 1));
        }
    }
    // Clip to the group (a tiny last group can be shorter than its table copy).
    let end = start + sb.group_block_count(g);
    out.retain_mut(|(s, n)| {
        *n = (*n).min(end.saturating_sub(*s));
        *n > 0
    });
    out
}

/// Errors reading descriptors.
#[derive(Debug, thiserror::Error)]
pub enum GroupDescError {
    #[error("reading group descriptor {group}: {source}")]
    Io {
        group: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Reads descriptors by group number from a filesystem region, one table block at a
/// time (memory: one block, whatever the group count).
pub struct DescReader<'a> {
    region: &'a Region,
    sb: &'a Superblock,
    cached: Option<u64>,
    block: Vec<u8>,
}

impl<'a> DescReader<'a> {
    /// A reader over `region` (the filesystem) described by `sb`.
    pub fn new(region: &'a Region, sb: &'a Superblock) -> Self {
        DescReader {
            region,
            sb,
            cached: None,
            block: vec![0u8; sb.block_size() as usize],
        }
    }

    /// Descriptor `g` and whether its checksum matches (`true` when the filesystem has
    /// no descriptor checksums).
    pub fn get(&mut self, g: u64) -> Result<(GroupDesc, bool), GroupDescError> {
        let bs = self.sb.block_size();
        let pos = desc_position(self.sb, g);
        let block_start = pos / bs * bs;
        if self.cached != Some(block_start) {
            self.cached = None;
            self.region
                .read_exact_at(block_start, &mut self.block)
                .map_err(|source| GroupDescError::Io { group: g, source })?;
            self.cached = Some(block_start);
        }
        let off = (pos - block_start) as usize;
        let raw = &self.block[off..off + self.sb.desc_size() as usize];
        let desc = GroupDesc::parse(raw, self.sb)?;
        let ok = expected_desc_checksum(self.sb, g, raw).is_none_or(|c| c == desc.checksum);
        Ok((desc, ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::superblock::tests::sample;

    #[test]
    fn parses_32_byte_descriptors() {
        let sb = Superblock::parse(&sample()).unwrap();
        let mut raw = [0u8; 32];
        raw[0..4].copy_from_slice(&5u32.to_le_bytes());
        raw[4..8].copy_from_slice(&6u32.to_le_bytes());
        raw[8..12].copy_from_slice(&7u32.to_le_bytes());
        raw[0x12] = BG_BLOCK_UNINIT as u8;
        let d = GroupDesc::parse(&raw, &sb).unwrap();
        assert_eq!((d.block_bitmap, d.inode_bitmap, d.inode_table), (5, 6, 7));
        // No gdt_csum/metadata_csum in the sample: the flag is not honoured.
        assert!(!d.block_uninit(&sb));
        assert!(GroupDesc::parse(&raw[..20], &sb).is_err());
    }

    #[test]
    fn descriptor_table_follows_the_superblock() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(desc_position(&sb, 0), 4096);
        assert_eq!(desc_position(&sb, 3), 4096 + 3 * 32);
        assert_eq!(base_metadata(&sb, 0), vec![(0, 1), (1, 1)]);
    }
}
