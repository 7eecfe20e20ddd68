//! Inline data (Documentation/filesystems/ext4/inlinedata.rst, "Inline Data" and
//! "Inline Directories"; ifork.rst, "Inline Data"): with the `inline_data`
//! feature, an inode flagged `EXT4_INLINE_DATA_FL` keeps its content in its own 60-byte
//! `i_block` and, past those, in the value of its in-inode `system.data` attribute
//! ([`super::xattr`]). A file's or symlink's bytes are the two pieces end to end, cut at
//! `i_size`. A directory's `i_block` starts with the parent's inode number (4 bytes),
//! then directory entries fill the rest of it, and more entries fill the attribute's
//! value; neither piece has `.` or `..` entries, a checksum tail or an htree.

use super::inode::{RawInode, I_BLOCK_LEN};
use super::{corrupt, RawError};

/// Bytes of `i_block` holding the parent's inode number in an inline directory.
pub const DIR_PARENT_LEN: usize = 4;

/// The content of inline file or symlink `inode` (its `i_size` bytes).
pub fn content(inode: &RawInode) -> Result<Vec<u8>, RawError> {
    let extra = inode.inline.as_deref().unwrap_or(&[]);
    let size = inode.size;
    let held = (I_BLOCK_LEN + extra.len()) as u64;
    if size > held {
        return Err(corrupt(
            inode.ino,
            format!("inline data of {size} bytes, the inode holds {held}"),
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(&inode.i_block);
    out.extend_from_slice(extra);
    out.truncate(size as usize);
    Ok(out)
}

/// The two pieces of inline directory `inode` that hold entries: `i_block` after the
/// parent's number, and the attribute's value.
pub fn dir_pieces(inode: &RawInode) -> [&[u8]; 2] {
    [
        &inode.i_block[DIR_PARENT_LEN..],
        inode.inline.as_deref().unwrap_or(&[]),
    ]
}
