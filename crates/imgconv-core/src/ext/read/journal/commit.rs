//! Commit blocks (`struct commit_header`, Documentation/filesystems/ext4/journal.rst,
//! "Commit Block"): the end of a transaction. With v2/v3 checksums, `h_chksum[0]` is
//! the crc32c of the block with that field read as zero; with the older
//! `COMPAT_CHECKSUM`, it is the big-endian crc32 (`crc32_be`) of the transaction's
//! descriptor and data blocks as the log holds them, typed by `h_chksum_type` and
//! `h_chksum_size`.

use crate::bytes::{Fields, ParseError};
use crate::ext::csum;

/// `h_chksum[0]`.
const CHKSUM: usize = 0x10;
/// `JBD2_CRC32_CHKSUM` and its size.
const CRC32: u8 = 1;
const CRC32_SIZE: u8 = 4;
/// The kernel's `crc32_be` (polynomial 0x04C11DB7, not reflected, no final inversion).
const CRC32_BE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_MPEG_2);

/// The fields of a commit block the replay checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub chksum_type: u8,
    pub chksum_size: u8,
    /// `h_chksum[0]`.
    pub chksum: u32,
}

impl Commit {
    pub fn parse(block: &[u8]) -> Result<Commit, ParseError> {
        let f = Fields::new("jbd2 commit block", block);
        Ok(Commit {
            chksum_type: f.u8("h_chksum_type", 0xC)?,
            chksum_size: f.u8("h_chksum_size", 0xD)?,
            chksum: f.u32_be("h_chksum", CHKSUM)?,
        })
    }

    /// The v1 checksum check: a crc32 matching `crc` (the running [`crc32_be`] of the
    /// transaction's blocks), or no checksum at all (type, size and value zero), which
    /// the kernel accepts as long as no earlier commit carried one.
    pub fn v1_ok(&self, crc: u32, seen_before: bool) -> bool {
        if self.chksum_type == CRC32 && self.chksum_size == CRC32_SIZE && self.chksum == crc {
            return true;
        }
        self.chksum_type == 0 && self.chksum_size == 0 && self.chksum == 0 && !seen_before
    }

    /// Whether this commit carries a v1 checksum.
    pub fn has_v1(&self) -> bool {
        self.chksum_type == CRC32 && self.chksum_size == CRC32_SIZE
    }
}

/// The v2/v3 check (the kernel's `jbd2_commit_block_csum_verify`).
pub fn csum_ok(block: &[u8], seed: u32) -> Result<bool, ParseError> {
    let f = Fields::new("jbd2 commit block", block);
    let stored = f.u32_be("h_chksum", CHKSUM)?;
    let head = f.bytes("commit header", 0, CHKSUM)?;
    let tail = f.rest("commit block past h_chksum", CHKSUM + 4)?;
    let c = csum::crc32c_raw_parts(seed, &[head, &[0; 4], tail]);
    Ok(c == stored)
}

/// `crc32_be(crc, data)`: the running v1 transaction checksum.
pub fn crc32_be(crc: u32, data: &[u8]) -> u32 {
    let mut d = CRC32_BE.digest_with_initial(crc);
    d.update(data);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_be_is_the_kernels() {
        // crc32_be(~0, "123456789") of the kernel's self-test table: CRC-32/MPEG-2.
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_E6E7);
        // Chaining equals one pass.
        assert_eq!(crc32_be(crc32_be(!0, b"1234"), b"56789"), 0x0376_E6E7);
    }

    #[test]
    fn v2_checksum_covers_the_block_with_the_field_zeroed() {
        let mut b = vec![7u8; 1024];
        b[CHKSUM..CHKSUM + 4].fill(0);
        let c = csum::crc32c_raw(0x1234, &b);
        b[CHKSUM..CHKSUM + 4].copy_from_slice(&c.to_be_bytes());
        assert!(csum_ok(&b, 0x1234).unwrap());
        b[100] ^= 1;
        assert!(!csum_ok(&b, 0x1234).unwrap());
        assert!(csum_ok(&b[..8], 0).is_err());
    }
}
