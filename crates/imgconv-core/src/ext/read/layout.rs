//! Where a filesystem keeps its fixed metadata (Documentation/filesystems/ext4/
//! blockgroup.rst, "Layout" and "Flexible Block Groups", and group_descr.rst): per group the superblock copy,
//! descriptor table copy and reserved GDT blocks, the block and inode bitmaps and the
//! inode table, wherever flex_bg placed them. No file may own one of these blocks.

use crate::blockio::Region;
use crate::ext::group_desc::{self, DescReader, GroupDescError};
use crate::ext::superblock::Superblock;

/// Most metadata ranges kept before merging (16 bytes each): four or five per group
/// covers well over a million groups (hundreds of TiB at 4 KiB blocks).
const MAX_RANGES: usize = 1 << 22;

/// Why the layout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{0}")]
    Desc(#[from] GroupDescError),
    #[error("group descriptor {group} fails its checksum")]
    Checksum { group: u64 },
    #[error("group {group}: its {what} (block {start}, {count} blocks) lies outside the filesystem ({blocks} blocks)")]
    Outside {
        group: u64,
        what: &'static str,
        start: u64,
        count: u64,
        blocks: u64,
    },
    #[error("the filesystem has too many block groups ({groups}) to map its metadata")]
    TooManyGroups { groups: u64 },
}

/// The metadata blocks of a filesystem as sorted, disjoint, merged `(first, count)`
/// ranges; also the blocks before `s_first_data_block` (the boot block of a 1 KiB-block
/// filesystem), which no group covers.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    ranges: Vec<(u64, u64)>,
}

/// Where one group's own tables are, and which of them hold nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTables {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    /// `BLOCK_UNINIT` (honoured only with descriptor checksums): the block bitmap was
    /// never written, the group holds only metadata.
    pub block_uninit: bool,
    /// `INODE_UNINIT` (likewise): no inode of the group is in use.
    pub inode_uninit: bool,
}

impl Metadata {
    /// Read every group descriptor of the filesystem in `region` and collect its
    /// metadata. Also returns each group's tables, in group order.
    pub fn read(
        region: &Region,
        sb: &Superblock,
    ) -> Result<(Metadata, Vec<GroupTables>), LayoutError> {
        let groups = sb.groups_count();
        if groups.saturating_mul(5) > MAX_RANGES as u64 {
            return Err(LayoutError::TooManyGroups { groups });
        }
        let itable = group_desc::inode_table_blocks(sb);
        let mut descs = DescReader::new(region, sb);
        let mut ranges = Vec::with_capacity(groups as usize * 4 + 1);
        let mut tables = Vec::with_capacity(groups as usize);
        if sb.first_data_block > 0 {
            ranges.push((0, u64::from(sb.first_data_block)));
        }
        for g in 0..groups {
            let (d, ok) = descs.get(g)?;
            if !ok {
                return Err(LayoutError::Checksum { group: g });
            }
            ranges.extend(group_desc::base_metadata(sb, g));
            for (what, start, count) in [
                ("block bitmap", d.block_bitmap, 1),
                ("inode bitmap", d.inode_bitmap, 1),
                ("inode table", d.inode_table, itable),
            ] {
                if start < u64::from(sb.first_data_block)
                    || start.saturating_add(count) > sb.blocks_count
                {
                    return Err(LayoutError::Outside {
                        group: g,
                        what,
                        start,
                        count,
                        blocks: sb.blocks_count,
                    });
                }
                ranges.push((start, count));
            }
            tables.push(GroupTables {
                block_bitmap: d.block_bitmap,
                inode_bitmap: d.inode_bitmap,
                inode_table: d.inode_table,
                block_uninit: d.block_uninit(sb),
                inode_uninit: sb.has_group_desc_csum()
                    && d.flags & group_desc::BG_INODE_UNINIT != 0,
            });
        }
        Ok((Metadata::from_ranges(ranges), tables))
    }

    /// Metadata made of the given `(first, count)` ranges, in any order, overlapping or not.
    pub fn from_ranges(mut ranges: Vec<(u64, u64)>) -> Metadata {
        ranges.retain(|&(_, n)| n > 0);
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, n) in ranges {
            match merged.last_mut() {
                Some((ls, ln)) if s <= *ls + *ln => *ln = (*ln).max(s + n - *ls),
                _ => merged.push((s, n)),
            }
        }
        merged.shrink_to_fit();
        Metadata { ranges: merged }
    }

    /// The first metadata block among `[start, start + count)`, if any.
    pub fn first_in(&self, start: u64, count: u64) -> Option<u64> {
        let end = start.saturating_add(count);
        // The first range that ends after `start`.
        let i = self.ranges.partition_point(|&(s, n)| s + n <= start);
        self.ranges
            .get(i)
            .filter(|&&(s, _)| s < end)
            .map(|&(s, _)| s.max(start))
    }

    /// The merged ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_finds_ranges() {
        let m = Metadata::from_ranges(vec![(10, 2), (0, 1), (11, 5), (30, 1), (20, 0)]);
        assert_eq!(m.ranges(), &[(0, 1), (10, 6), (30, 1)]);
        assert_eq!(m.first_in(0, 1), Some(0));
        assert_eq!(m.first_in(1, 9), None);
        assert_eq!(m.first_in(5, 10), Some(10));
        assert_eq!(m.first_in(12, 100), Some(12));
        assert_eq!(m.first_in(16, 14), None);
        assert_eq!(m.first_in(16, 15), Some(30));
        assert_eq!(m.first_in(31, u64::MAX), None);
    }
}
