//! Directory blocks (Documentation/filesystems/ext4/directory.rst): linear
//! `ext4_dir_entry_2` records and the `metadata_csum` leaf tail
//! (`struct ext4_dir_entry_tail`), under "Linear (Classic) Directories"; and the
//! hash-tree (htree) nodes (`dx_root`, `dx_node`, `dx_tail`), under "Hash Tree
//! Directories", which a linear read passes over (they hold no entries) after checking
//! their checksum. Every field is read through [`crate::bytes::Fields`].

use super::inline;
use super::inode::{RawInode, FLAG_ENCRYPT, FLAG_INDEX, FLAG_INLINE_DATA};
use super::{corrupt, malformed, RawError, RawFs};
use crate::bytes::Fields;
use crate::ext::csum;

/// Largest directory read (bytes): far beyond any real one, small enough to bound work.
pub const MAX_DIR_BYTES: u64 = 256 << 20;
/// `det_reserved_ft` of the checksum tail.
const TAIL_FT: u8 = 0xDE;
/// Size of `struct ext4_dir_entry_tail`.
const TAIL_LEN: usize = 12;

/// One live entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirEntry {
    pub name: String,
    pub ino: u32,
}

/// The live entries of directory `dir`, without `.`, `..` and non-UTF-8 names (as
/// [`crate::ext::read::ExtReader::read_dir`]); more than `cap` is an error.
pub fn read(fs: &RawFs, dir: &RawInode, cap: usize) -> Result<Vec<RawDirEntry>, RawError> {
    let ino = dir.ino;
    if dir.has_flag(FLAG_ENCRYPT) {
        return Err(RawError::Unsupported {
            ino,
            why: "an encrypted directory",
        });
    }
    let bs = fs.block_size();
    if dir.has_flag(FLAG_INLINE_DATA) {
        let mut out = Vec::new();
        for (i, piece) in inline::dir_pieces(dir).into_iter().enumerate() {
            let what = if i == 0 {
                "inline i_block"
            } else {
                "inline system.data"
            };
            parse_entries(ino, what, piece, cap, &mut out)?;
        }
        return Ok(out);
    }
    let runs = fs.extents(dir)?;
    if dir.size > MAX_DIR_BYTES || dir.size % bs != 0 {
        return Err(corrupt(ino, format!("a directory of {} bytes", dir.size)));
    }
    let mut out = Vec::new();
    let mut block = vec![0u8; bs as usize];
    for run in runs {
        if run.unwritten {
            return Err(corrupt(ino, "a directory with an unwritten extent"));
        }
        for i in 0..u64::from(run.len) {
            fs.read_at(run.pblk + i, 0, &mut block)?;
            parse_block(dir, run.lblk + i, &block, cap, &mut out)?;
        }
    }
    Ok(out)
}

/// The entries of one directory block (logical block `lblk`), appended to `out`.
fn parse_block(
    dir: &RawInode,
    lblk: u64,
    block: &[u8],
    cap: usize,
    out: &mut Vec<RawDirEntry>,
) -> Result<(), RawError> {
    let ino = dir.ino;
    let f = Fields::new("ext4 directory block", block);
    let err = |e| malformed(ino, e);
    let mut entries = block;
    if let Some(seed) = dir.seed {
        if let Some(tail) = tail_at(block) {
            entries = f.bytes("directory entries", 0, tail).map_err(err)?;
            let stored = f.u32("det_checksum", tail + 8).map_err(err)?;
            if csum::crc32c_raw(seed, entries) != stored {
                return Err(corrupt(
                    ino,
                    format!("directory block {lblk} fails its checksum"),
                ));
            }
        } else if let Some(at) = dx_countlimit(dir, lblk, block) {
            return check_dx(ino, lblk, block, at, seed);
        } else {
            return Err(corrupt(
                ino,
                format!("directory block {lblk} has no checksum"),
            ));
        }
    }
    parse_entries(ino, &format!("directory block {lblk}"), entries, cap, out)
}

/// The linear `ext4_dir_entry_2` records filling `data` (`what` names it in errors).
fn parse_entries(
    ino: u32,
    what: &str,
    data: &[u8],
    cap: usize,
    out: &mut Vec<RawDirEntry>,
) -> Result<(), RawError> {
    let end = data.len();
    let all = Fields::new("ext4 directory entries", data);
    let err = |e| malformed(ino, e);
    let mut off = 0;
    while off < end {
        if off + 8 > end {
            return Err(corrupt(ino, format!("{what} is cut short")));
        }
        let f = Fields::new("ext4 directory entry", all.rest("entry", off).map_err(err)?);
        let child = f.u32("inode", 0).map_err(err)?;
        let rec_len = usize::from(f.u16("rec_len", 4).map_err(err)?);
        let name_len = usize::from(f.u8("name_len", 6).map_err(err)?);
        if rec_len < 8 || off + rec_len > end || 8 + name_len > rec_len {
            return Err(corrupt(
                ino,
                format!("{what}: an entry of {rec_len} bytes at {off}"),
            ));
        }
        if child != 0 {
            let name = f.bytes("name", 8, name_len).map_err(err)?;
            if name != b"." && name != b".." {
                if let Ok(name) = std::str::from_utf8(name) {
                    if out.len() >= cap {
                        return Err(RawError::TooManyEntries { ino, cap });
                    }
                    out.push(RawDirEntry {
                        name: name.to_string(),
                        ino: child,
                    });
                }
            }
        }
        off += rec_len;
    }
    Ok(())
}

/// Where the block's `struct ext4_dir_entry_tail` starts, if it ends in one (inode 0,
/// rec_len 12, name_len 0, file type 0xDE).
fn tail_at(block: &[u8]) -> Option<usize> {
    let at = block.len().checked_sub(TAIL_LEN)?;
    let t = Fields::new("ext4 directory tail", block);
    let is_tail = t.u32("det_reserved_zero1", at) == Ok(0)
        && t.u16("det_rec_len", at + 4) == Ok(TAIL_LEN as u16)
        && t.u8("det_reserved_zero2", at + 6) == Ok(0)
        && t.u8("det_reserved_ft", at + 7) == Ok(TAIL_FT);
    is_tail.then_some(at)
}

/// Where an htree node's `dx_countlimit` is, if `block` is one: the root (block 0 of an
/// indexed directory: `.` of 12 bytes, `..` covering the rest, then `dx_root_info`) or
/// an interior node (one empty entry covering the whole block).
fn dx_countlimit(dir: &RawInode, lblk: u64, block: &[u8]) -> Option<usize> {
    if !dir.has_flag(FLAG_INDEX) {
        return None;
    }
    let bs = block.len();
    let f = Fields::new("ext4 htree node", block);
    let u16 = |off| f.u16("rec_len", off).ok().map(usize::from);
    if u16(4) == Some(bs) && f.u8("name_len", 6) == Ok(0) && f.u32("inode", 0) == Ok(0) {
        return Some(8);
    }
    if lblk == 0
        && u16(4) == Some(12)
        && u16(12 + 4) == Some(bs.wrapping_sub(12))
        && f.u8("name_len", 12 + 6) == Ok(2)
        && f.u8("info_length", 24 + 5) == Ok(8)
    {
        // `dx_root_info` is 8 bytes (its info_length, checked above) after `..`.
        return Some(32);
    }
    None
}

/// The kernel's `ext4_dx_csum_verify`: crc32c over the node up to its `count` entries,
/// then over `dt_reserved` of the `dx_tail` that follows `limit` entries, then over a
/// zero `dt_checksum`.
fn check_dx(ino: u32, lblk: u64, block: &[u8], at: usize, seed: u32) -> Result<(), RawError> {
    let f = Fields::new("ext4 htree node", block);
    let err = |e| malformed(ino, e);
    let limit = usize::from(f.u16("limit", at).map_err(err)?);
    let count = usize::from(f.u16("count", at + 2).map_err(err)?);
    let tail = at + 8 * limit;
    if count > limit || tail + 8 > block.len() {
        return Err(corrupt(
            ino,
            format!("htree node {lblk} claims {count} of {limit} entries"),
        ));
    }
    let counted = f.bytes("dx entries", 0, at + 8 * count).map_err(err)?;
    let reserved = f.bytes("dt_reserved", tail, 4).map_err(err)?;
    let c = csum::crc32c_raw_parts(seed, &[counted, reserved, &[0; 4]]);
    if c != f.u32("dt_checksum", tail + 4).map_err(err)? {
        return Err(corrupt(
            ino,
            format!("htree node {lblk} fails its checksum"),
        ));
    }
    Ok(())
}
