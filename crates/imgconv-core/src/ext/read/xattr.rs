//! Extended attributes stored in an inode's extra space (Documentation/filesystems/
//! ext4/attributes.rst, "Extended Attributes"): after `128 + i_extra_isize` bytes, the magic `0xEA020000`, then
//! `struct ext4_xattr_entry` records (name length, name index, value offset from the
//! first entry, value inode, value size, hash, name; each padded to 4 bytes) up to four
//! zero bytes; values lie in the same space. Only lookups by name are needed here.

use crate::bytes::{Fields, ParseError};

/// `EXT4_XATTR_MAGIC` of the in-inode attribute header.
const MAGIC: u32 = 0xEA02_0000;
/// Offset of `i_extra_isize`.
const EXTRA_ISIZE: usize = 0x80;
/// Bytes of `struct ext4_xattr_entry` before its name.
const ENTRY_LEN: usize = 16;
/// Name index of the `system.` namespace.
pub const INDEX_SYSTEM: u8 = 7;

/// The value of attribute `index`/`name` among `raw_inode`'s in-inode attributes;
/// `None` when the inode has no such attribute (or no attribute space).
pub fn ibody_value<'a>(
    raw_inode: &'a [u8],
    index: u8,
    name: &[u8],
) -> Result<Option<&'a [u8]>, ParseError> {
    let f = Fields::new("ext4 in-inode xattrs", raw_inode);
    if raw_inode.len() <= EXTRA_ISIZE + 2 {
        return Ok(None);
    }
    let extra = usize::from(f.u16("i_extra_isize", EXTRA_ISIZE)?);
    let header = 128 + extra;
    if extra % 4 != 0 || header + 4 > raw_inode.len() {
        return Ok(None);
    }
    if f.u32("h_magic", header)? != MAGIC {
        return Ok(None);
    }
    let first = header + 4;
    let mut off = first;
    // Each entry moves `off` forward by at least 16 bytes, so this ends within the inode.
    loop {
        if f.u32("e_name_len", off)? == 0 {
            return Ok(None);
        }
        let name_len = usize::from(f.u8("e_name_len", off)?);
        let e_index = f.u8("e_name_index", off + 1)?;
        let value_offs = usize::from(f.u16("e_value_offs", off + 2)?);
        let value_inum = f.u32("e_value_inum", off + 4)?;
        let value_size = f.u32("e_value_size", off + 8)?;
        let e_name = f.bytes("e_name", off + ENTRY_LEN, name_len)?;
        if e_index == index && e_name == name {
            if value_inum != 0 {
                return Err(f.invalid(
                    "e_value_inum",
                    u64::from(value_inum),
                    "a value in its own inode (ea_inode) where the inode itself must hold it",
                ));
            }
            let size = usize::try_from(value_size).unwrap_or(usize::MAX);
            return f.bytes("e_value", first + value_offs, size).map(Some);
        }
        off += (ENTRY_LEN + name_len + 3) & !3;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 256-byte inode body holding one attribute `index`/`name` = `value`.
    pub fn inode_with(index: u8, name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; 256];
        raw[EXTRA_ISIZE..EXTRA_ISIZE + 2].copy_from_slice(&32u16.to_le_bytes());
        let h = 160;
        raw[h..h + 4].copy_from_slice(&MAGIC.to_le_bytes());
        let e = h + 4;
        raw[e] = name.len() as u8;
        raw[e + 1] = index;
        let value_offs = 64u16;
        raw[e + 2..e + 4].copy_from_slice(&value_offs.to_le_bytes());
        raw[e + 8..e + 12].copy_from_slice(&(value.len() as u32).to_le_bytes());
        raw[e + 16..e + 16 + name.len()].copy_from_slice(name);
        let v = e + usize::from(value_offs);
        raw[v..v + value.len()].copy_from_slice(value);
        raw
    }

    #[test]
    fn finds_a_value_by_index_and_name() {
        let raw = inode_with(INDEX_SYSTEM, b"data", b"hello");
        assert_eq!(
            ibody_value(&raw, INDEX_SYSTEM, b"data").unwrap(),
            Some(&b"hello"[..])
        );
        assert_eq!(ibody_value(&raw, INDEX_SYSTEM, b"other").unwrap(), None);
        assert_eq!(
            ibody_value(&raw[..128], INDEX_SYSTEM, b"data").unwrap(),
            None
        );
    }

    #[test]
    fn values_and_entries_outside_the_inode_are_errors() {
        let mut raw = inode_with(INDEX_SYSTEM, b"data", b"hello");
        raw[164 + 8..164 + 12].copy_from_slice(&4000u32.to_le_bytes());
        assert!(ibody_value(&raw, INDEX_SYSTEM, b"data").is_err());
        // An entry list without its terminator runs into the inode's end: an error.
        let mut raw = vec![0x11u8; 256];
        raw[EXTRA_ISIZE..EXTRA_ISIZE + 2].copy_from_slice(&32u16.to_le_bytes());
        raw[160..164].copy_from_slice(&MAGIC.to_le_bytes());
        assert!(ibody_value(&raw, INDEX_SYSTEM, b"data").is_err());
    }
}
