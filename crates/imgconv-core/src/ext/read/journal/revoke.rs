//! Revoke blocks (`jbd2_journal_revoke_header_t`, Documentation/filesystems/ext4/
//! journal.rst, "Revocation Block"): after the header, `r_count` (bytes used, header
//! included) and that many bytes of big-endian block numbers, 8 bytes each with the
//! 64bit feature, else 4. With v2/v3 checksums the block ends in a checksum tail.

use super::descriptor::TAIL_LEN;
use super::header;
use crate::bytes::{Fields, ParseError};

/// Offset of the first record (after `r_count`).
const RECORDS: usize = header::LEN + 4;

/// The filesystem blocks revoked by `block`.
pub fn records(block: &[u8], wide: bool, tail: bool) -> Result<Vec<u64>, ParseError> {
    let f = Fields::new("jbd2 revoke block", block);
    let count = f.u32_be("r_count", header::LEN)?;
    let room = block.len() - if tail { TAIL_LEN } else { 0 };
    let used = usize::try_from(count).unwrap_or(usize::MAX);
    if used < RECORDS || used > room {
        return Err(f.invalid("r_count", u64::from(count), "outside the block"));
    }
    let size = if wide { 8 } else { 4 };
    let mut out = Vec::with_capacity((used - RECORDS) / size);
    let mut off = RECORDS;
    while off + size <= used {
        out.push(if wide {
            f.u64_be("r_blocks", off)?
        } else {
            u64::from(f.u32_be("r_blocks", off)?)
        });
        off += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_within_r_count() {
        let mut b = vec![0u8; 1024];
        b[12..16].copy_from_slice(&(16u32 + 16).to_be_bytes());
        b[16..24].copy_from_slice(&7u64.to_be_bytes());
        b[24..32].copy_from_slice(&0x1_0000_0000u64.to_be_bytes());
        assert_eq!(records(&b, true, true).unwrap(), vec![7, 0x1_0000_0000]);
        assert_eq!(records(&b, false, true).unwrap(), vec![0, 7, 1, 0]);
        b[12..16].copy_from_slice(&2000u32.to_be_bytes());
        assert!(records(&b, true, true).is_err());
        b[12..16].copy_from_slice(&1022u32.to_be_bytes());
        assert!(
            records(&b, true, true).is_err(),
            "r_count reaches into the tail"
        );
        assert!(records(&b[..10], true, false).is_err());
    }
}
