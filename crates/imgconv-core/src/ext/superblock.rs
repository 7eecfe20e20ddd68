//! The ext2/3/4 superblock: 1024 bytes at byte 1024 of the filesystem.
//!
//! Layout and meaning of every field follow the kernel's on-disk format reference,
//! Documentation/filesystems/ext4/super.rst (`struct ext4_super_block`); the offsets in
//! the comments are the ones in that table. Every field is read through
//! [`crate::bytes::Fields`], and [`Superblock::parse`] rejects values that would make later
//! arithmetic overflow or allocate without bound (block size, group sizes, counts).

use super::csum;
use crate::bytes::{Fields, ParseError};

/// Byte offset of the primary superblock from the start of the filesystem.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT_MAGIC: u16 = 0xEF53;
/// Largest block size Linux ext4 supports (`1024 << 6`).
pub const MAX_BLOCK_SIZE: u64 = 64 * 1024;

const STRUCTURE: &str = "ext superblock";

/// Feature flag values (super.rst, tables super_compat, super_incompat, super_rocompat).
pub mod feature {
    pub const COMPAT_DIR_PREALLOC: u32 = 0x1;
    pub const COMPAT_IMAGIC_INODES: u32 = 0x2;
    pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
    pub const COMPAT_EXT_ATTR: u32 = 0x8;
    pub const COMPAT_RESIZE_INODE: u32 = 0x10;
    pub const COMPAT_DIR_INDEX: u32 = 0x20;
    pub const COMPAT_LAZY_BG: u32 = 0x40;
    pub const COMPAT_EXCLUDE_INODE: u32 = 0x80;
    pub const COMPAT_EXCLUDE_BITMAP: u32 = 0x100;
    pub const COMPAT_SPARSE_SUPER2: u32 = 0x200;
    pub const COMPAT_FAST_COMMIT: u32 = 0x400;
    pub const COMPAT_STABLE_INODES: u32 = 0x800;
    pub const COMPAT_ORPHAN_FILE: u32 = 0x1000;

    pub const INCOMPAT_COMPRESSION: u32 = 0x1;
    pub const INCOMPAT_FILETYPE: u32 = 0x2;
    pub const INCOMPAT_RECOVER: u32 = 0x4;
    pub const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    pub const INCOMPAT_META_BG: u32 = 0x10;
    pub const INCOMPAT_EXTENTS: u32 = 0x40;
    pub const INCOMPAT_64BIT: u32 = 0x80;
    pub const INCOMPAT_MMP: u32 = 0x100;
    pub const INCOMPAT_FLEX_BG: u32 = 0x200;
    pub const INCOMPAT_EA_INODE: u32 = 0x400;
    pub const INCOMPAT_DIRDATA: u32 = 0x1000;
    pub const INCOMPAT_CSUM_SEED: u32 = 0x2000;
    pub const INCOMPAT_LARGEDIR: u32 = 0x4000;
    pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
    pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
    pub const INCOMPAT_CASEFOLD: u32 = 0x20000;

    pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
    pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
    pub const RO_COMPAT_BTREE_DIR: u32 = 0x4;
    pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
    pub const RO_COMPAT_GDT_CSUM: u32 = 0x10;
    pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
    pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
    pub const RO_COMPAT_HAS_SNAPSHOT: u32 = 0x80;
    pub const RO_COMPAT_QUOTA: u32 = 0x100;
    pub const RO_COMPAT_BIGALLOC: u32 = 0x200;
    pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
    pub const RO_COMPAT_REPLICA: u32 = 0x800;
    pub const RO_COMPAT_READONLY: u32 = 0x1000;
    pub const RO_COMPAT_PROJECT: u32 = 0x2000;
    pub const RO_COMPAT_SHARED_BLOCKS: u32 = 0x4000;
    pub const RO_COMPAT_VERITY: u32 = 0x8000;
    pub const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
}
use feature::*;

/// Names as e2fsprogs (`tune2fs -l`, `mkfs -O`) spells them.
const COMPAT_NAMES: &[(u32, &str)] = &[
    (COMPAT_DIR_PREALLOC, "dir_prealloc"),
    (COMPAT_IMAGIC_INODES, "imagic_inodes"),
    (COMPAT_HAS_JOURNAL, "has_journal"),
    (COMPAT_EXT_ATTR, "ext_attr"),
    (COMPAT_RESIZE_INODE, "resize_inode"),
    (COMPAT_DIR_INDEX, "dir_index"),
    (COMPAT_LAZY_BG, "lazy_bg"),
    (COMPAT_EXCLUDE_INODE, "snapshot_bitmap"),
    (COMPAT_EXCLUDE_BITMAP, "exclude_bitmap"),
    (COMPAT_SPARSE_SUPER2, "sparse_super2"),
    (COMPAT_FAST_COMMIT, "fast_commit"),
    (COMPAT_STABLE_INODES, "stable_inodes"),
    (COMPAT_ORPHAN_FILE, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (INCOMPAT_COMPRESSION, "compression"),
    (INCOMPAT_FILETYPE, "filetype"),
    (INCOMPAT_RECOVER, "needs_recovery"),
    (INCOMPAT_JOURNAL_DEV, "journal_dev"),
    (INCOMPAT_META_BG, "meta_bg"),
    (INCOMPAT_EXTENTS, "extent"),
    (INCOMPAT_64BIT, "64bit"),
    (INCOMPAT_MMP, "mmp"),
    (INCOMPAT_FLEX_BG, "flex_bg"),
    (INCOMPAT_EA_INODE, "ea_inode"),
    (INCOMPAT_DIRDATA, "dirdata"),
    (INCOMPAT_CSUM_SEED, "metadata_csum_seed"),
    (INCOMPAT_LARGEDIR, "large_dir"),
    (INCOMPAT_INLINE_DATA, "inline_data"),
    (INCOMPAT_ENCRYPT, "encrypt"),
    (INCOMPAT_CASEFOLD, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (RO_COMPAT_SPARSE_SUPER, "sparse_super"),
    (RO_COMPAT_LARGE_FILE, "large_file"),
    (RO_COMPAT_BTREE_DIR, "btree_dir"),
    (RO_COMPAT_HUGE_FILE, "huge_file"),
    (RO_COMPAT_GDT_CSUM, "uninit_bg"),
    (RO_COMPAT_DIR_NLINK, "dir_nlink"),
    (RO_COMPAT_EXTRA_ISIZE, "extra_isize"),
    (RO_COMPAT_HAS_SNAPSHOT, "snapshot"),
    (RO_COMPAT_QUOTA, "quota"),
    (RO_COMPAT_BIGALLOC, "bigalloc"),
    (RO_COMPAT_METADATA_CSUM, "metadata_csum"),
    (RO_COMPAT_REPLICA, "replica"),
    (RO_COMPAT_READONLY, "read-only"),
    (RO_COMPAT_PROJECT, "project"),
    (RO_COMPAT_SHARED_BLOCKS, "shared_blocks"),
    (RO_COMPAT_VERITY, "verity"),
    (RO_COMPAT_ORPHAN_PRESENT, "orphan_present"),
];

fn known_bits(table: &[(u32, &str)]) -> u32 {
    table.iter().fold(0, |acc, (bit, _)| acc | bit)
}

/// Names of the bits set in `value`; unknown bits appear as `unknown(0x…)`.
fn names(value: u32, table: &[(u32, &'static str)]) -> Vec<String> {
    let mut out: Vec<String> = table
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let unknown = value & !known_bits(table);
    if unknown != 0 {
        out.push(format!("unknown(0x{unknown:x})"));
    }
    out
}

/// `s_state` bits (super.rst, super_state).
const STATE_VALID_FS: u16 = 0x1;
const STATE_ERROR_FS: u16 = 0x2;

/// A parsed and sanity-checked superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// 0x0 `s_inodes_count`.
    pub inodes_count: u32,
    /// 0x4 `s_blocks_count_lo` + 0x150 `s_blocks_count_hi` (64bit only).
    pub blocks_count: u64,
    /// 0x8 `s_r_blocks_count_lo` + 0x154 `s_r_blocks_count_hi`.
    pub reserved_blocks_count: u64,
    /// 0xC `s_free_blocks_count_lo` + 0x158 `s_free_blocks_count_hi`.
    pub free_blocks_count: u64,
    /// 0x10 `s_free_inodes_count`.
    pub free_inodes_count: u32,
    /// 0x14 `s_first_data_block`: 1 for 1 KiB blocks, else 0.
    pub first_data_block: u32,
    /// 0x18 `s_log_block_size`: block size is `1024 << this`.
    pub log_block_size: u32,
    /// 0x1C `s_log_cluster_size`.
    pub log_cluster_size: u32,
    /// 0x20 `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// 0x24 `s_clusters_per_group`.
    pub clusters_per_group: u32,
    /// 0x28 `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// 0x2C `s_mtime`: last mount time.
    pub mount_time: u32,
    /// 0x30 `s_wtime`: last write time.
    pub write_time: u32,
    /// 0x38 `s_magic`.
    pub magic: u16,
    /// 0x3A `s_state`.
    pub state: u16,
    /// 0x4C `s_rev_level`: 0 = original (fixed 128-byte inodes), 1 = dynamic.
    pub rev_level: u32,
    /// 0x58 `s_inode_size` (128 on revision 0).
    pub inode_size: u16,
    /// 0x5C `s_feature_compat`.
    pub feature_compat: u32,
    /// 0x60 `s_feature_incompat`.
    pub feature_incompat: u32,
    /// 0x64 `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// 0x68 `s_uuid`.
    pub uuid: [u8; 16],
    /// 0x78 `s_volume_name`.
    pub volume_name: [u8; 16],
    /// 0x88 `s_last_mounted`.
    pub last_mounted: [u8; 64],
    /// 0xCE `s_reserved_gdt_blocks`.
    pub reserved_gdt_blocks: u16,
    /// 0xE0 `s_journal_inum`.
    pub journal_inum: u32,
    /// 0xE4 `s_journal_dev`.
    pub journal_dev: u32,
    /// 0xFE `s_desc_size` as stored (meaningful with 64bit only).
    pub desc_size_raw: u16,
    /// 0x104 `s_first_meta_bg`.
    pub first_meta_bg: u32,
    /// 0x174 `s_log_groups_per_flex`.
    pub log_groups_per_flex: u8,
    /// 0x175 `s_checksum_type` (1 = crc32c).
    pub checksum_type: u8,
    /// 0x24C `s_backup_bgs[2]` (sparse_super2).
    pub backup_bgs: [u32; 2],
    /// 0x270 `s_checksum_seed` (metadata_csum_seed).
    pub checksum_seed: u32,
    /// 0x3FC `s_checksum`.
    pub checksum: u32,
    /// Whether `s_checksum` matches (None when the filesystem has no metadata_csum).
    pub checksum_ok: Option<bool>,
}

impl Superblock {
    /// Parse and validate the 1024 superblock bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, ParseError> {
        let f = Fields::new(STRUCTURE, raw);
        let magic = f.u16("s_magic", 0x38)?;
        if magic != EXT_MAGIC {
            return Err(f.invalid(
                "s_magic",
                magic.into(),
                "not 0xEF53: not an ext2/3/4 filesystem",
            ));
        }
        // Revision 0 superblocks end at 0x54: no feature sets, fixed 128-byte inodes.
        let rev_level = f.u32("s_rev_level", 0x4C)?;
        let dynamic = rev_level >= 1;
        let feature_compat = if dynamic {
            f.u32("s_feature_compat", 0x5C)?
        } else {
            0
        };
        let feature_incompat = if dynamic {
            f.u32("s_feature_incompat", 0x60)?
        } else {
            0
        };
        let feature_ro_compat = if dynamic {
            f.u32("s_feature_ro_compat", 0x64)?
        } else {
            0
        };
        let is_64bit = feature_incompat & INCOMPAT_64BIT != 0;
        let hi = |field: &'static str, off: usize| -> Result<u64, ParseError> {
            Ok(if is_64bit {
                u64::from(f.u32(field, off)?) << 32
            } else {
                0
            })
        };
        let checksum = f.u32("s_checksum", 0x3FC)?;
        let checksum_ok = if feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            let body = f.bytes("s_checksum", 0, 0x3FC)?;
            Some(csum::crc32c_raw(!0, body) == checksum)
        } else {
            None
        };
        let sb = Superblock {
            inodes_count: f.u32("s_inodes_count", 0x0)?,
            blocks_count: u64::from(f.u32("s_blocks_count_lo", 0x4)?)
                | hi("s_blocks_count_hi", 0x150)?,
            reserved_blocks_count: u64::from(f.u32("s_r_blocks_count_lo", 0x8)?)
                | hi("s_r_blocks_count_hi", 0x154)?,
            free_blocks_count: u64::from(f.u32("s_free_blocks_count_lo", 0xC)?)
                | hi("s_free_blocks_count_hi", 0x158)?,
            free_inodes_count: f.u32("s_free_inodes_count", 0x10)?,
            first_data_block: f.u32("s_first_data_block", 0x14)?,
            log_block_size: f.u32("s_log_block_size", 0x18)?,
            log_cluster_size: f.u32("s_log_cluster_size", 0x1C)?,
            blocks_per_group: f.u32("s_blocks_per_group", 0x20)?,
            clusters_per_group: f.u32("s_clusters_per_group", 0x24)?,
            inodes_per_group: f.u32("s_inodes_per_group", 0x28)?,
            mount_time: f.u32("s_mtime", 0x2C)?,
            write_time: f.u32("s_wtime", 0x30)?,
            magic,
            state: f.u16("s_state", 0x3A)?,
            rev_level,
            inode_size: if dynamic {
                f.u16("s_inode_size", 0x58)?
            } else {
                128
            },
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            uuid: f.array("s_uuid", 0x68)?,
            volume_name: f.array("s_volume_name", 0x78)?,
            last_mounted: f.array("s_last_mounted", 0x88)?,
            reserved_gdt_blocks: f.u16("s_reserved_gdt_blocks", 0xCE)?,
            journal_inum: f.u32("s_journal_inum", 0xE0)?,
            journal_dev: f.u32("s_journal_dev", 0xE4)?,
            desc_size_raw: f.u16("s_desc_size", 0xFE)?,
            first_meta_bg: f.u32("s_first_meta_bg", 0x104)?,
            log_groups_per_flex: f.u8("s_log_groups_per_flex", 0x174)?,
            checksum_type: f.u8("s_checksum_type", 0x175)?,
            backup_bgs: [
                f.u32("s_backup_bgs[0]", 0x24C)?,
                f.u32("s_backup_bgs[1]", 0x250)?,
            ],
            checksum_seed: f.u32("s_checksum_seed", 0x270)?,
            checksum,
            checksum_ok,
        };
        sb.validate(&f)?;
        Ok(sb)
    }

    /// The checks e2fsprogs' `ext2fs_open2` makes before trusting the geometry, so that
    /// every later computation (group count, descriptor position, bitmap size) is bounded.
    fn validate(&self, f: &Fields<'_>) -> Result<(), ParseError> {
        if self.log_block_size > 6 {
            return Err(f.invalid(
                "s_log_block_size",
                self.log_block_size.into(),
                "block size above 64 KiB",
            ));
        }
        let bs = self.block_size();
        // An external journal device (journal_dev) is refused by name later
        // (`unsupported_feature`), but its geometry is checked like any other except for
        // the inodes it does not have (mke2fs writes no inodes, one group): an unchecked
        // one made the geometry methods (group count, descriptors per block) divide by
        // zero (found by fuzzing).
        let journal_dev = self.has_incompat(INCOMPAT_JOURNAL_DEV);
        if self.rev_level > 1 {
            return Err(f.invalid("s_rev_level", self.rev_level.into(), "unknown revision"));
        }
        if self.has_ro_compat(RO_COMPAT_BIGALLOC) {
            if self.log_cluster_size < self.log_block_size || self.log_cluster_size > 29 {
                return Err(f.invalid(
                    "s_log_cluster_size",
                    self.log_cluster_size.into(),
                    "cluster smaller than a block or absurdly large",
                ));
            }
        } else if self.clusters_per_group != self.blocks_per_group {
            return Err(f.invalid(
                "s_clusters_per_group",
                self.clusters_per_group.into(),
                "must equal s_blocks_per_group without bigalloc",
            ));
        }
        if self.clusters_per_group == 0 || u64::from(self.clusters_per_group) > bs * 8 {
            return Err(f.invalid(
                "s_clusters_per_group",
                self.clusters_per_group.into(),
                "zero, or more than one bitmap block can describe",
            ));
        }
        if self.blocks_per_group < 8 || u64::from(self.blocks_per_group) > bs * 8 * 65536 {
            return Err(f.invalid(
                "s_blocks_per_group",
                self.blocks_per_group.into(),
                "out of range",
            ));
        }
        if !journal_dev && (self.inodes_per_group == 0 || u64::from(self.inodes_per_group) > bs * 8)
        {
            return Err(f.invalid(
                "s_inodes_per_group",
                self.inodes_per_group.into(),
                "zero, or more than one bitmap block can describe",
            ));
        }
        let isz = u64::from(self.inode_size);
        if !journal_dev && (isz < 128 || !isz.is_power_of_two() || isz > bs) {
            return Err(f.invalid(
                "s_inode_size",
                isz,
                "not a power of two between 128 and the block size",
            ));
        }
        let expected_first = if bs == 1024 && !self.has_ro_compat(RO_COMPAT_BIGALLOC) {
            1
        } else {
            0
        };
        if self.first_data_block != expected_first {
            return Err(f.invalid(
                "s_first_data_block",
                self.first_data_block.into(),
                "must be 1 for 1 KiB blocks and 0 otherwise",
            ));
        }
        if self.blocks_count <= u64::from(self.first_data_block) {
            return Err(f.invalid("s_blocks_count", self.blocks_count, "no data blocks"));
        }
        // Byte size must be representable (and sane: 2^60 bytes is far beyond any image).
        if self
            .blocks_count
            .checked_mul(bs)
            .is_none_or(|b| b > 1 << 60)
        {
            return Err(f.invalid(
                "s_blocks_count",
                self.blocks_count,
                "filesystem size overflows",
            ));
        }
        if self.free_blocks_count > self.blocks_count {
            return Err(f.invalid(
                "s_free_blocks_count",
                self.free_blocks_count,
                "more free blocks than blocks",
            ));
        }
        if self.reserved_blocks_count > self.blocks_count {
            return Err(f.invalid(
                "s_r_blocks_count",
                self.reserved_blocks_count,
                "more reserved blocks than blocks",
            ));
        }
        if self.free_inodes_count > self.inodes_count {
            return Err(f.invalid(
                "s_free_inodes_count",
                self.free_inodes_count.into(),
                "more free inodes than inodes",
            ));
        }
        if self
            .groups_count()
            .checked_mul(u64::from(self.inodes_per_group))
            != Some(u64::from(self.inodes_count))
        {
            return Err(f.invalid(
                "s_inodes_count",
                self.inodes_count.into(),
                "does not equal group count times s_inodes_per_group",
            ));
        }
        if self.groups_count() > u64::from(u32::MAX) {
            return Err(f.invalid("s_blocks_count", self.blocks_count, "more than 2^32 groups"));
        }
        if self.is_64bit() {
            let d = self.desc_size_raw;
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(f.invalid(
                    "s_desc_size",
                    d.into(),
                    "64bit descriptors must be a power of two from 64 to 1024 bytes",
                ));
            }
        } else if self.blocks_count > u64::from(u32::MAX) {
            return Err(f.invalid(
                "s_blocks_count",
                self.blocks_count,
                "above 2^32 without 64bit",
            ));
        }
        if u64::from(self.reserved_gdt_blocks) > bs / 4 {
            return Err(f.invalid(
                "s_reserved_gdt_blocks",
                self.reserved_gdt_blocks.into(),
                "more than one block of addresses",
            ));
        }
        if self.has_incompat(INCOMPAT_META_BG) && u64::from(self.first_meta_bg) > self.desc_blocks()
        {
            return Err(f.invalid(
                "s_first_meta_bg",
                self.first_meta_bg.into(),
                "beyond the group descriptor table",
            ));
        }
        if self.has_incompat(INCOMPAT_FLEX_BG) && self.log_groups_per_flex > 31 {
            return Err(f.invalid(
                "s_log_groups_per_flex",
                self.log_groups_per_flex.into(),
                "above 31",
            ));
        }
        if self.has_ro_compat(RO_COMPAT_METADATA_CSUM) {
            if self.checksum_type != 1 {
                return Err(f.invalid(
                    "s_checksum_type",
                    self.checksum_type.into(),
                    "unknown metadata checksum algorithm (only 1 = crc32c exists)",
                ));
            }
            if self.checksum_ok == Some(false) {
                return Err(f.invalid(
                    "s_checksum",
                    self.checksum.into(),
                    "superblock checksum mismatch (corrupted superblock)",
                ));
            }
        }
        Ok(())
    }

    /// Block size in bytes (1024..=65536).
    pub fn block_size(&self) -> u64 {
        1024u64 << self.log_block_size
    }

    /// Size of the filesystem in bytes.
    pub fn fs_bytes(&self) -> u64 {
        self.blocks_count * self.block_size()
    }

    /// True when the compat feature bit is set.
    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }
    /// True when the incompat feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }
    /// True when the ro_compat feature bit is set.
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// The 64bit feature (64-bit block numbers, large group descriptors).
    pub fn is_64bit(&self) -> bool {
        self.has_incompat(INCOMPAT_64BIT)
    }

    /// Group descriptors carry checksums and the UNINIT flags are meaningful
    /// (`gdt_csum` or `metadata_csum`), as `ext2fs_has_group_desc_csum` decides.
    pub fn has_group_desc_csum(&self) -> bool {
        self.has_ro_compat(RO_COMPAT_GDT_CSUM) || self.has_ro_compat(RO_COMPAT_METADATA_CSUM)
    }

    /// Size of one group descriptor: `s_desc_size` with 64bit, else 32 bytes.
    pub fn desc_size(&self) -> u64 {
        if self.is_64bit() {
            u64::from(self.desc_size_raw)
        } else {
            32
        }
    }

    /// Group descriptors per block.
    pub fn descs_per_block(&self) -> u64 {
        self.block_size() / self.desc_size()
    }

    /// Number of block groups: `ceil((blocks_count - first_data_block) / blocks_per_group)`.
    pub fn groups_count(&self) -> u64 {
        (self.blocks_count - u64::from(self.first_data_block))
            .div_ceil(u64::from(self.blocks_per_group))
    }

    /// Blocks holding the whole descriptor table.
    pub fn desc_blocks(&self) -> u64 {
        self.groups_count().div_ceil(self.descs_per_block())
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u64) -> u64 {
        u64::from(self.first_data_block) + g * u64::from(self.blocks_per_group)
    }

    /// Number of blocks in group `g` (the last group may be shorter).
    pub fn group_block_count(&self, g: u64) -> u64 {
        let first = self.group_first_block(g);
        (self.blocks_count - first).min(u64::from(self.blocks_per_group))
    }

    /// Whether group `g` holds a superblock backup (and, without meta_bg, a descriptor
    /// table copy): group 0 always; with sparse_super2 only the two `s_backup_bgs`;
    /// with sparse_super groups 1 and powers of 3, 5 and 7; otherwise every group.
    pub fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(COMPAT_SPARSE_SUPER2) {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g == 1 || !self.has_ro_compat(RO_COMPAT_SPARSE_SUPER) {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&b| is_power_of(g, b))
    }

    /// The metadata checksum seed: `s_checksum_seed` with metadata_csum_seed, else
    /// crc32c(~0, s_uuid).
    pub fn csum_seed(&self) -> u32 {
        if self.has_incompat(INCOMPAT_CSUM_SEED) {
            self.checksum_seed
        } else {
            csum::crc32c_raw(!0, &self.uuid)
        }
    }

    /// The filesystem was cleanly unmounted (`s_state` has VALID_FS).
    pub fn is_clean(&self) -> bool {
        self.state & STATE_VALID_FS != 0
    }

    /// The kernel recorded errors (`s_state` has ERROR_FS).
    pub fn has_errors(&self) -> bool {
        self.state & STATE_ERROR_FS != 0
    }

    /// The journal must be replayed before the on-disk metadata is consistent.
    pub fn needs_recovery(&self) -> bool {
        self.has_incompat(INCOMPAT_RECOVER)
    }

    /// The generation this filesystem belongs to, by the rule blkid uses: any feature
    /// beyond what ext3 knew makes it ext4; otherwise a journal makes it ext3.
    pub fn kind(&self) -> ExtKind {
        const EXT3_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
        const EXT3_RO_COMPAT: u32 =
            RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
        if self.feature_incompat & !EXT3_INCOMPAT != 0
            || self.feature_ro_compat & !EXT3_RO_COMPAT != 0
        {
            ExtKind::Ext4
        } else if self.has_compat(COMPAT_HAS_JOURNAL) {
            ExtKind::Ext3
        } else {
            ExtKind::Ext2
        }
    }

    /// A feature that imgconv cannot carry safely, with the reason, if any.
    pub fn unsupported_feature(&self) -> Option<(String, &'static str)> {
        let unknown_incompat = self.feature_incompat & !known_bits(INCOMPAT_NAMES);
        if unknown_incompat != 0 {
            return Some((
                format!("unknown incompatible feature 0x{unknown_incompat:x}"),
                "a feature bit no e2fsprogs release knows; the filesystem cannot be read safely",
            ));
        }
        let unknown_ro = self.feature_ro_compat & !known_bits(RO_COMPAT_NAMES);
        if unknown_ro != 0 {
            return Some((
                format!("unknown read-only-compatible feature 0x{unknown_ro:x}"),
                "libext2fs refuses to write a filesystem with unknown features",
            ));
        }
        let table: &[(u32, bool, &str, &'static str)] = &[
            (INCOMPAT_JOURNAL_DEV, true, "journal_dev",
             "this is an external journal device, not a filesystem with a guest in it"),
            (INCOMPAT_COMPRESSION, true, "compression",
             "the experimental ext2 compression patches are not supported by Linux or e2fsprogs"),
            (INCOMPAT_DIRDATA, true, "dirdata",
             "Lustre's data-in-dirent feature is not supported by Linux or e2fsprogs"),
            (RO_COMPAT_SHARED_BLOCKS, false, "shared_blocks",
             "blocks are deduplicated between files; e2fsprogs cannot modify such a filesystem (unshare them first with e2fsck -E unshare_blocks on a copy)"),
            (RO_COMPAT_READONLY, false, "read-only",
             "the filesystem is marked read-only; clear it on a copy with tune2fs -O ^read-only"),
            (RO_COMPAT_REPLICA, false, "replica",
             "a feature neither Linux nor e2fsprogs implements"),
            (RO_COMPAT_HAS_SNAPSHOT, false, "snapshot",
             "the out-of-tree ext4 snapshot feature is not supported"),
        ];
        for &(bit, incompat, name, why) in table {
            let set = if incompat {
                self.has_incompat(bit)
            } else {
                self.has_ro_compat(bit)
            };
            if set {
                return Some((name.to_string(), why));
            }
        }
        if self.has_compat(COMPAT_HAS_JOURNAL) && self.journal_inum == 0 {
            return Some((
                "external journal".to_string(),
                "the journal lives on a separate device that is not part of this image",
            ));
        }
        None
    }

    /// Everything a caller wants to know about this filesystem, in plain types.
    pub fn info(&self) -> FsInfo {
        let bs = self.block_size();
        FsInfo {
            kind: self.kind(),
            features: Features {
                compat: names(self.feature_compat, COMPAT_NAMES),
                incompat: names(self.feature_incompat, INCOMPAT_NAMES),
                ro_compat: names(self.feature_ro_compat, RO_COMPAT_NAMES),
                compat_raw: self.feature_compat,
                incompat_raw: self.feature_incompat,
                ro_compat_raw: self.feature_ro_compat,
            },
            block_size: bs as u32,
            blocks_count: self.blocks_count,
            free_blocks: self.free_blocks_count,
            reserved_blocks: self.reserved_blocks_count,
            inodes_count: self.inodes_count,
            free_inodes: self.free_inodes_count,
            inode_size: self.inode_size,
            groups: self.groups_count(),
            size_bytes: self.fs_bytes(),
            used_bytes: (self.blocks_count - self.free_blocks_count) * bs,
            free_bytes: self.free_blocks_count * bs,
            uuid: uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string(),
            label: c_string(&self.volume_name),
            last_mounted: c_string(&self.last_mounted),
            has_journal: self.has_compat(COMPAT_HAS_JOURNAL),
            needs_recovery: self.needs_recovery(),
            clean: self.is_clean(),
            errors: self.has_errors(),
        }
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

/// A NUL-padded on-disk string (lossy UTF-8).
fn c_string(b: &[u8]) -> String {
    let text = b.split(|&c| c == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// ext2, ext3 or ext4, by feature set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtKind {
    Ext2,
    Ext3,
    Ext4,
}

impl std::fmt::Display for ExtKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExtKind::Ext2 => "ext2",
            ExtKind::Ext3 => "ext3",
            ExtKind::Ext4 => "ext4",
        })
    }
}

/// Feature flags, by name and raw value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    pub compat: Vec<String>,
    pub incompat: Vec<String>,
    pub ro_compat: Vec<String>,
    pub compat_raw: u32,
    pub incompat_raw: u32,
    pub ro_compat_raw: u32,
}

impl Features {
    /// True when a feature with this e2fsprogs name is set in any of the three sets.
    pub fn has(&self, name: &str) -> bool {
        self.compat
            .iter()
            .chain(&self.incompat)
            .chain(&self.ro_compat)
            .any(|n| n == name)
    }
}

/// What the superblock says about a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsInfo {
    pub kind: ExtKind,
    pub features: Features,
    /// Block size in bytes.
    pub block_size: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    /// Blocks reserved for root (`s_r_blocks_count`).
    pub reserved_blocks: u64,
    pub inodes_count: u32,
    pub free_inodes: u32,
    pub inode_size: u16,
    /// Number of block groups.
    pub groups: u64,
    /// Filesystem size in bytes (`blocks_count * block_size`).
    pub size_bytes: u64,
    /// Bytes in use according to the superblock's free count.
    pub used_bytes: u64,
    /// Free bytes according to the superblock (including the root reserve).
    pub free_bytes: u64,
    /// Canonical lower-case UUID text.
    pub uuid: String,
    pub label: String,
    /// Where the filesystem was last mounted (`s_last_mounted`).
    pub last_mounted: String,
    pub has_journal: bool,
    /// The journal holds transactions that were never replayed (not cleanly unmounted).
    pub needs_recovery: bool,
    /// `s_state` says the filesystem was cleanly unmounted.
    pub clean: bool,
    /// `s_state` says the kernel found errors.
    pub errors: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid superblock: 4 KiB blocks, 1 group of 8192 blocks, 1024 inodes.
    pub(crate) fn sample() -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        let put32 =
            |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0x0, 1024); // inodes
        put32(&mut b, 0x4, 8192); // blocks
        put32(&mut b, 0xC, 1000); // free blocks
        put32(&mut b, 0x10, 1000); // free inodes
        put32(&mut b, 0x18, 2); // 4 KiB
        put32(&mut b, 0x1C, 2);
        put32(&mut b, 0x20, 32768);
        put32(&mut b, 0x24, 32768);
        put32(&mut b, 0x28, 1024);
        b[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        b[0x3A] = 1; // clean
        put32(&mut b, 0x4C, 1);
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        put32(&mut b, 0x5C, COMPAT_HAS_JOURNAL);
        put32(&mut b, 0x60, INCOMPAT_FILETYPE);
        put32(&mut b, 0x64, RO_COMPAT_SPARSE_SUPER);
        put32(&mut b, 0xE0, 8);
        b[0x78..0x7D].copy_from_slice(b"rootA");
        b
    }

    #[test]
    fn parses_a_valid_superblock() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(sb.block_size(), 4096);
        assert_eq!(sb.groups_count(), 1);
        assert_eq!(sb.kind(), ExtKind::Ext3);
        let info = sb.info();
        assert_eq!(info.label, "rootA");
        assert_eq!(info.used_bytes, (8192 - 1000) * 4096);
        assert_eq!(info.features.compat, vec!["has_journal"]);
        assert!(sb.unsupported_feature().is_none());
    }

    #[test]
    fn rejects_oversized_block_size_and_bad_counts() {
        let mut b = sample();
        b[0x18] = 7;
        let e = Superblock::parse(&b).unwrap_err();
        assert!(e.to_string().contains("s_log_block_size"), "{e}");

        let mut b = sample();
        b[0..4].copy_from_slice(&1025u32.to_le_bytes());
        let e = Superblock::parse(&b).unwrap_err();
        assert!(e.to_string().contains("s_inodes_count"), "{e}");

        let mut b = sample();
        b[0x20..0x24].copy_from_slice(&0u32.to_le_bytes());
        assert!(Superblock::parse(&b).is_err());
        assert!(
            Superblock::parse(&b[..100]).is_err(),
            "truncated superblock"
        );
    }

    #[test]
    fn kind_follows_features() {
        let mut b = sample();
        b[0x5C..0x60].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Superblock::parse(&b).unwrap().kind(), ExtKind::Ext2);
        b[0x60..0x64].copy_from_slice(&(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS).to_le_bytes());
        assert_eq!(Superblock::parse(&b).unwrap().kind(), ExtKind::Ext4);
    }

    #[test]
    fn journal_dev_and_unknown_features_are_unsupported() {
        let mut b = sample();
        b[0x60..0x64].copy_from_slice(&(INCOMPAT_FILETYPE | INCOMPAT_JOURNAL_DEV).to_le_bytes());
        let sb = Superblock::parse(&b).unwrap();
        assert_eq!(sb.unsupported_feature().unwrap().0, "journal_dev");
        b[0x60..0x64].copy_from_slice(&(INCOMPAT_FILETYPE | 0x8000_0000).to_le_bytes());
        let sb = Superblock::parse(&b).unwrap();
        assert!(sb.unsupported_feature().unwrap().0.contains("0x80000000"));
        assert!(sb
            .info()
            .features
            .incompat
            .iter()
            .any(|n| n.starts_with("unknown")));
    }

    #[test]
    fn sparse_super_backup_groups() {
        let sb = Superblock::parse(&sample()).unwrap();
        let with: Vec<u64> = (0..50).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
