//! The journal superblock (`journal_superblock_t`, Documentation/filesystems/ext4/
//! journal.rst, "Super Block"): the journal's geometry, where the log starts and which
//! transaction it expects first, and, in version 2, the feature flags that decide the
//! tag format and checksums. Every field is big-endian.

use super::header::{BlockType, Header};
use crate::bytes::{Fields, ParseError};
use crate::ext::csum;

/// Bytes of the structure (the rest of its block is unused).
pub const LEN: usize = 1024;

/// `s_feature_compat` bits.
pub mod feature {
    /// `JBD2_FEATURE_COMPAT_CHECKSUM`: commit blocks carry a crc32 of the transaction.
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    /// `JBD2_FEATURE_INCOMPAT_REVOKE`: the log holds revoke blocks.
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    /// `JBD2_FEATURE_INCOMPAT_64BIT`: block numbers have 64 bits.
    pub const INCOMPAT_64BIT: u32 = 0x2;
    /// `JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT`: a commit may be written before its blocks.
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    /// `JBD2_FEATURE_INCOMPAT_CSUM_V2`: crc32c on metadata blocks, 16-bit tag checksums.
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    /// `JBD2_FEATURE_INCOMPAT_CSUM_V3`: as v2 with fixed 16-byte tags, 32-bit checksums.
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    /// `JBD2_FEATURE_INCOMPAT_FAST_COMMIT`: a fast-commit area follows the log.
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    /// Every incompat feature the replay reads.
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3;
}

/// `JBD2_CRC32C_CHKSUM`, the one checksum type of v2/v3 checksums.
const CRC32C: u8 = 4;

/// The fields of the journal superblock the replay uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSuperblock {
    /// Version 2 (features present) or version 1.
    pub v2: bool,
    /// `s_blocksize`.
    pub block_size: u32,
    /// `s_maxlen`: blocks in the journal.
    pub maxlen: u32,
    /// `s_first`: the first block of the log.
    pub first: u32,
    /// `s_sequence`: the first transaction ID expected in the log.
    pub sequence: u32,
    /// `s_start`: the block the log starts at; 0 when there is nothing to replay.
    pub start: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    /// `s_uuid`, which seeds the v2/v3 checksums.
    pub uuid: [u8; 16],
    /// `s_num_fc_blks`: blocks of the fast-commit area (with that feature).
    pub fc_blocks: u32,
}

impl JournalSuperblock {
    /// Parse the first [`LEN`] bytes of the journal's first block; with v2/v3
    /// checksums, `s_checksum_type` must be crc32c and `s_checksum` must match.
    pub fn parse(raw: &[u8]) -> Result<Self, ParseError> {
        let f = Fields::new("jbd2 superblock", raw);
        let header = Header::parse(raw)?
            .ok_or_else(|| f.invalid("h_magic", u64::from(raw_magic(&f)), "not a journal"))?;
        let v2 = match header.block_type {
            BlockType::SuperblockV1 => false,
            BlockType::SuperblockV2 => true,
            _ => {
                return Err(f.invalid(
                    "h_blocktype",
                    u64::from(f.u32_be("h_blocktype", 4)?),
                    "not a journal superblock",
                ))
            }
        };
        let v2_field = |name, off| -> Result<u32, ParseError> {
            if v2 {
                f.u32_be(name, off)
            } else {
                Ok(0)
            }
        };
        let sb = JournalSuperblock {
            v2,
            block_size: f.u32_be("s_blocksize", 0xC)?,
            maxlen: f.u32_be("s_maxlen", 0x10)?,
            first: f.u32_be("s_first", 0x14)?,
            sequence: f.u32_be("s_sequence", 0x18)?,
            start: f.u32_be("s_start", 0x1C)?,
            compat: v2_field("s_feature_compat", 0x24)?,
            incompat: v2_field("s_feature_incompat", 0x28)?,
            ro_compat: v2_field("s_feature_ro_compat", 0x2C)?,
            uuid: f.array("s_uuid", 0x30)?,
            fc_blocks: v2_field("s_num_fc_blks", 0x54)?,
        };
        if sb.has_csum() {
            let kind = f.u8("s_checksum_type", 0x50)?;
            if kind != CRC32C {
                return Err(f.invalid("s_checksum_type", u64::from(kind), "not crc32c"));
            }
            let stored = f.u32_be("s_checksum", 0xFC)?;
            let head = f.bytes("jbd2 superblock before s_checksum", 0, 0xFC)?;
            let tail = f.bytes("jbd2 superblock after s_checksum", 0x100, LEN - 0x100)?;
            let c = csum::crc32c_raw_parts(!0, &[head, &[0; 4], tail]);
            if c != stored {
                return Err(f.invalid("s_checksum", u64::from(stored), "does not match"));
            }
        }
        Ok(sb)
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    /// v2 or v3 checksums on every journal metadata block.
    pub fn has_csum(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3)
    }

    /// The seed of v2/v3 checksums: crc32c of the journal UUID.
    pub fn csum_seed(&self) -> u32 {
        csum::crc32c_raw(!0, &self.uuid)
    }
}

fn raw_magic(f: &Fields) -> u32 {
    f.u32_be("h_magic", 0).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A v2 superblock of `maxlen` blocks of `bs` bytes with the given incompat
    /// features, checksummed when they ask for it.
    pub fn superblock(bs: u32, maxlen: u32, start: u32, seq: u32, incompat: u32) -> Vec<u8> {
        let mut b = vec![0u8; LEN];
        let put =
            |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_be_bytes());
        put(&mut b, 0, super::super::header::MAGIC);
        put(&mut b, 4, 4);
        put(&mut b, 0xC, bs);
        put(&mut b, 0x10, maxlen);
        put(&mut b, 0x14, 1);
        put(&mut b, 0x18, seq);
        put(&mut b, 0x1C, start);
        put(&mut b, 0x28, incompat);
        b[0x30..0x40].copy_from_slice(&[0x5A; 16]);
        b[0x50] = CRC32C;
        let c = csum::crc32c_raw(!0, &b);
        put(&mut b, 0xFC, c);
        b
    }

    #[test]
    fn parses_a_v3_superblock_and_checks_its_checksum() {
        let v3 = feature::INCOMPAT_CSUM_V3 | feature::INCOMPAT_64BIT;
        let mut b = superblock(4096, 1024, 1, 9, v3);
        let sb = JournalSuperblock::parse(&b).unwrap();
        assert_eq!(
            (sb.block_size, sb.maxlen, sb.first, sb.sequence, sb.start),
            (4096, 1024, 1, 9, 1)
        );
        assert!(sb.has_csum() && sb.v2);
        b[0x1C] ^= 1;
        let e = JournalSuperblock::parse(&b).unwrap_err();
        assert!(e.to_string().contains("s_checksum"), "{e}");
        b[0] = 0;
        assert!(JournalSuperblock::parse(&b).is_err());
        assert!(JournalSuperblock::parse(&b[..100]).is_err());
    }
}
