//! The header every journal metadata block starts with (`journal_header_t`,
//! Documentation/filesystems/ext4/journal.rst, "Block Header"): magic, block type and
//! the transaction it belongs to, all big-endian like every jbd2 field.

use crate::bytes::{Fields, ParseError};

/// `JBD2_MAGIC_NUMBER`: the first four bytes of every journal metadata block.
pub const MAGIC: u32 = 0xC03B_3998;
/// Bytes of the header.
pub const LEN: usize = 12;

/// What a journal metadata block is (`h_blocktype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// Tags naming the data blocks that follow (`JBD2_DESCRIPTOR_BLOCK`).
    Descriptor,
    /// The end of a transaction (`JBD2_COMMIT_BLOCK`).
    Commit,
    /// The journal superblock, version 1 (`JBD2_SUPERBLOCK_V1`).
    SuperblockV1,
    /// The journal superblock, version 2 (`JBD2_SUPERBLOCK_V2`).
    SuperblockV2,
    /// Blocks earlier transactions must not replay (`JBD2_REVOKE_BLOCK`).
    Revoke,
    /// Any other value: not a block of the log.
    Other(u32),
}

/// A parsed block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub block_type: BlockType,
    /// `h_sequence`: the transaction ID.
    pub sequence: u32,
}

impl Header {
    /// The header of `block`, or `None` when it does not start with the journal magic
    /// (the end of the log).
    pub fn parse(block: &[u8]) -> Result<Option<Header>, ParseError> {
        let f = Fields::new("jbd2 block header", block);
        if f.u32_be("h_magic", 0)? != MAGIC {
            return Ok(None);
        }
        let block_type = match f.u32_be("h_blocktype", 4)? {
            1 => BlockType::Descriptor,
            2 => BlockType::Commit,
            3 => BlockType::SuperblockV1,
            4 => BlockType::SuperblockV2,
            5 => BlockType::Revoke,
            other => BlockType::Other(other),
        };
        Ok(Some(Header {
            block_type,
            sequence: f.u32_be("h_sequence", 8)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_type_and_sequence_are_big_endian() {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        let h = Header::parse(&b).unwrap().unwrap();
        assert_eq!(h.block_type, BlockType::Commit);
        assert_eq!(h.sequence, 7);
        assert!(Header::parse(&b[..6]).is_err());
        b[0] = 0;
        assert_eq!(Header::parse(&b).unwrap(), None);
    }
}
