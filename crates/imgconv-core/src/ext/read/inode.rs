//! One on-disk inode (`struct ext4_inode`, Documentation/filesystems/ext4/inodes.rst,
//! "Index Nodes", whose table gives the offsets used here; the `_extra` times under
//! "Inode Timestamps"): the fields the reader needs, and its `metadata_csum` checksum
//! (checksums.rst, "Checksums": crc32c over the inode with `l_i_checksum_lo` and, when
//! `i_extra_isize` covers it, `i_checksum_hi` read as zero). Every field is read through
//! [`crate::bytes::Fields`].

use super::{corrupt, malformed, xattr, RawError};
use crate::bytes::Fields;
use crate::ext::csum;
use crate::guestfs::{NodeKind, NodeMeta};

/// Smallest inode size handled (the classic 128 bytes).
pub const MIN_INODE_SIZE: u32 = 128;
/// Bytes of `i_block`.
pub const I_BLOCK_LEN: usize = 60;
/// `EXT4_INDEX_FL`: a hashed (htree) directory.
pub const FLAG_INDEX: u32 = 0x1000;
/// `EXT4_ENCRYPT_FL`.
pub const FLAG_ENCRYPT: u32 = 0x800;
/// `EXT4_EXTENTS_FL`.
pub const FLAG_EXTENTS: u32 = 0x8_0000;
/// `EXT4_INLINE_DATA_FL`.
pub const FLAG_INLINE_DATA: u32 = 0x1000_0000;

const CHECKSUM_LO: usize = 0x7C;
const EXTRA_ISIZE: usize = 0x80;
const CHECKSUM_HI: usize = 0x82;
/// End of `i_crtime_extra`: inodes at least this large carry the `_extra` time fields
/// (read whenever the on-disk inode is this large).
const EXTRA_TIMES_END: usize = 0x98;

/// The fields of an inode the reader uses.
#[derive(Debug, Clone)]
pub struct RawInode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub flags: u32,
    pub generation: u32,
    pub i_block: [u8; I_BLOCK_LEN],
    /// The inode's checksum seed, with `metadata_csum`.
    pub seed: Option<u32>,
    /// With [`FLAG_INLINE_DATA`]: the value of its in-inode `system.data` attribute,
    /// the inline data past `i_block` (see [`super::inline`]).
    pub inline: Option<Box<[u8]>>,
}

/// Seconds from a 32-bit time and its `_extra` field (two epoch bits).
fn time(low: u32, extra: Option<u32>) -> i64 {
    i64::from(low as i32) + extra.map_or(0, |e| i64::from(e & 3) << 32)
}

impl RawInode {
    /// Parse and check the on-disk inode `raw` (the filesystem's whole inode size).
    /// `fs_seed` is the filesystem checksum seed when it has `metadata_csum`.
    pub fn parse(ino: u32, raw: &[u8], fs_seed: Option<u32>) -> Result<RawInode, RawError> {
        if raw.len() < MIN_INODE_SIZE as usize {
            return Err(corrupt(ino, "truncated inode"));
        }
        let f = Fields::new("ext4 inode", raw);
        let err = |e| malformed(ino, e);
        let generation = f.u32("i_generation", 0x64).map_err(err)?;
        let seed = fs_seed
            .map(|s| csum::crc32c_raw_parts(s, &[&ino.to_le_bytes(), &generation.to_le_bytes()]));
        if let Some(seed) = seed {
            check_csum(ino, &f, seed)?;
        }
        let mode = f.u16("i_mode", 0).map_err(err)?;
        if kind_of(mode).is_none() {
            return Err(corrupt(ino, format!("invalid file mode {mode:o}")));
        }
        let extra = raw.len() >= EXTRA_TIMES_END;
        let extra_at = |field, off| -> Result<Option<u32>, RawError> {
            Ok(if extra {
                Some(f.u32(field, off).map_err(err)?)
            } else {
                None
            })
        };
        let u16 = |field, off| f.u16(field, off).map_err(err);
        let u32 = |field, off| f.u32(field, off).map_err(err);
        let flags = u32("i_flags", 0x20)?;
        let inline = if flags & FLAG_INLINE_DATA != 0 {
            let value = xattr::ibody_value(raw, xattr::INDEX_SYSTEM, b"data").map_err(err)?;
            Some(value.unwrap_or(&[]).into())
        } else {
            None
        };
        Ok(RawInode {
            ino,
            mode,
            uid: u32::from(u16("i_uid", 0x2)?) | (u32::from(u16("l_i_uid_high", 0x78)?) << 16),
            gid: u32::from(u16("i_gid", 0x18)?) | (u32::from(u16("l_i_gid_high", 0x7A)?) << 16),
            size: u64::from(u32("i_size_lo", 0x4)?) | (u64::from(u32("i_size_high", 0x6C)?) << 32),
            atime: time(u32("i_atime", 0x8)?, extra_at("i_atime_extra", 0x8C)?),
            mtime: time(u32("i_mtime", 0x10)?, extra_at("i_mtime_extra", 0x88)?),
            flags,
            generation,
            i_block: f.array("i_block", 0x28).map_err(err)?,
            seed,
            inline,
        })
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    pub fn kind(&self) -> NodeKind {
        kind_of(self.mode).expect("checked by parse")
    }

    /// The metadata in the form every tree reader gives it.
    pub fn meta(&self) -> NodeMeta {
        NodeMeta {
            kind: self.kind(),
            mode: self.mode & 0o7777,
            uid: self.uid,
            gid: self.gid,
            len: self.size,
            mtime: self.mtime,
            atime: self.atime,
        }
    }
}

fn kind_of(mode: u16) -> Option<NodeKind> {
    Some(match mode & 0xF000 {
        0x1000 => NodeKind::Fifo,
        0x2000 => NodeKind::CharDev,
        0x4000 => NodeKind::Dir,
        0x6000 => NodeKind::BlockDev,
        0x8000 => NodeKind::File,
        0xA000 => NodeKind::Symlink,
        0xC000 => NodeKind::Socket,
        _ => return None,
    })
}

/// The kernel's `ext4_inode_csum_verify`: crc32c over the whole inode with the checksum
/// fields read as zero; the high half is stored only when `i_extra_isize` covers it.
fn check_csum(ino: u32, f: &Fields, seed: u32) -> Result<(), RawError> {
    let err = |e| malformed(ino, e);
    let zero = [0u8; 2];
    let mut c = csum::crc32c_raw_parts(
        seed,
        &[
            f.bytes("inode body", 0, CHECKSUM_LO).map_err(err)?,
            &zero,
            f.bytes("inode body", CHECKSUM_LO + 2, 128 - CHECKSUM_LO - 2)
                .map_err(err)?,
        ],
    );
    let mut stored = u32::from(f.u16("l_i_checksum_lo", CHECKSUM_LO).map_err(err)?);
    let mut mask = 0xFFFF;
    // Inode sizes are powers of two: 128 or at least 256.
    if f.data().len() >= CHECKSUM_HI + 2 {
        let extra_isize = usize::from(f.u16("i_extra_isize", EXTRA_ISIZE).map_err(err)?);
        let hi_fits = 128 + extra_isize >= CHECKSUM_HI + 2;
        let extra_head = f.bytes("i_extra_isize", EXTRA_ISIZE, CHECKSUM_HI - EXTRA_ISIZE);
        c = csum::crc32c_raw(c, extra_head.map_err(err)?);
        if hi_fits {
            let rest = f.rest("inode past i_checksum_hi", CHECKSUM_HI + 2);
            c = csum::crc32c_raw_parts(c, &[&zero, rest.map_err(err)?]);
            stored |= u32::from(f.u16("i_checksum_hi", CHECKSUM_HI).map_err(err)?) << 16;
            mask = !0;
        } else {
            // `i_checksum_hi` lies past `i_extra_isize`: it is not a checksum field then.
            c = csum::crc32c_raw(c, f.rest("inode extra space", CHECKSUM_HI).map_err(err)?);
        }
    }
    if c & mask != stored {
        return Err(corrupt(ino, "the inode fails its checksum"));
    }
    Ok(())
}
