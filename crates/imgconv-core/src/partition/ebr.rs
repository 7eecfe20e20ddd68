//! Logical partitions: the chain of Extended Boot Records inside an MBR extended partition.
//!
//! Layout (the DOS convention Linux follows in `block/partitions/msdos.c`): the first
//! sector of the extended partition is an EBR, a 512-byte sector ending in 0x55AA whose
//! partition table at byte 446 holds four 16-byte entries (type byte at +4, LBA start at
//! +8, sector count at +12, both u32 little-endian). An entry of an ordinary type is one
//! logical partition, its start counted from this EBR's own sector; an entry of an
//! extended type (0x05, 0x0F, 0x85) links to the next EBR, its start counted from the
//! first sector of the whole extended partition. Linux numbers logical partitions from 5
//! in chain order, whatever the number of primaries.
//!
//! The chain is untrusted: every EBR must lie inside the extended partition, a sector is
//! never visited twice (a loop ends the chain), and at most [`MAX_LOGICAL`] partitions are
//! read. A malformed EBR ends the chain, as it does for the kernel.

use crate::blockio::Region;
use crate::bytes::{Fields, ParseError};

/// Most logical partitions read from one chain (Linux stops far below this in practice;
/// the bound keeps a crafted chain from costing more than a few hundred sector reads).
pub const MAX_LOGICAL: usize = 256;

const SECTOR: u64 = 512;
const TABLE: usize = 446;
const ENTRY: usize = 16;

/// One logical partition: 1-based Linux number, byte start and length in the image, type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logical {
    pub number: usize,
    pub start: u64,
    pub len: u64,
    pub type_code: u8,
}

/// True for the MBR type codes of an extended partition (DOS, Windows LBA, Linux).
pub fn is_extended_type(type_code: u8) -> bool {
    matches!(type_code, 0x05 | 0x0f | 0x85)
}

/// One table entry of an EBR: (type, start LBA, sector count).
fn entry(ebr: &Fields, i: usize) -> Result<(u8, u64, u64), ParseError> {
    let at = TABLE + i * ENTRY;
    Ok((
        ebr.u8("partition type", at + 4)?,
        u64::from(ebr.u32("start LBA", at + 8)?),
        u64::from(ebr.u32("sector count", at + 12)?),
    ))
}

/// The logical partitions in the extended partition that spans bytes
/// `ext_start..ext_start + ext_len` of `image`. Entries may still lie beyond the end of
/// the image: the caller checks them as it checks primary entries.
pub fn read_chain(image: &Region, ext_start: u64, ext_len: u64) -> Vec<Logical> {
    let mut found = Vec::new();
    let mut visited = Vec::new();
    let mut ebr_rel: u64 = 0; // sectors from the start of the extended partition
    while found.len() < MAX_LOGICAL && visited.len() < MAX_LOGICAL {
        if visited.contains(&ebr_rel) {
            break;
        }
        visited.push(ebr_rel);
        let Some(ebr_off) = ebr_rel
            .checked_mul(SECTOR)
            .filter(|off| off.saturating_add(SECTOR) <= ext_len)
            .and_then(|off| off.checked_add(ext_start))
        else {
            break;
        };
        let mut sector = [0u8; SECTOR as usize];
        if image.read_exact_at(ebr_off, &mut sector).is_err() {
            break;
        }
        let ebr = Fields::new("extended boot record", &sector);
        if ebr.u16("boot signature", 510).ok() != Some(0xaa55) {
            break;
        }
        let mut next = None;
        for i in 0..4 {
            let Ok((type_code, start, count)) = entry(&ebr, i) else {
                break;
            };
            if type_code == 0 || count == 0 {
                continue;
            }
            if is_extended_type(type_code) {
                next.get_or_insert(start);
                continue;
            }
            if found.len() >= MAX_LOGICAL {
                break;
            }
            let Some(start_bytes) = start
                .checked_mul(SECTOR)
                .and_then(|s| s.checked_add(ebr_off))
            else {
                continue;
            };
            found.push(Logical {
                number: 5 + found.len(),
                start: start_bytes,
                len: count * SECTOR,
                type_code,
            });
        }
        match next {
            Some(n) if n > 0 => ebr_rel = n,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put_entry(img: &mut [u8], sector: u64, i: usize, ty: u8, start: u32, len: u32) {
        let e = (sector * SECTOR) as usize + TABLE + i * ENTRY;
        img[e + 4] = ty;
        img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        img[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        let s = (sector * SECTOR) as usize;
        img[s + 510] = 0x55;
        img[s + 511] = 0xaa;
    }

    fn region(bytes: &[u8]) -> (tempfile::NamedTempFile, Region) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let r = Region::open(tmp.path()).unwrap();
        (tmp, r)
    }

    /// Extended partition at sector 100 (100 sectors): EBR at 100 → logical at 102 (10
    /// sectors), link to EBR at 100+20 → logical at 122 (8 sectors).
    fn two_logicals() -> Vec<u8> {
        let mut img = vec![0u8; 256 * 512];
        put_entry(&mut img, 100, 0, 0x82, 2, 10);
        put_entry(&mut img, 100, 1, 0x05, 20, 30);
        put_entry(&mut img, 120, 0, 0x83, 2, 8);
        img
    }

    #[test]
    fn follows_the_chain_and_numbers_from_5() {
        let (_t, r) = region(&two_logicals());
        let l = read_chain(&r, 100 * 512, 100 * 512);
        assert_eq!(
            l,
            [
                Logical {
                    number: 5,
                    start: 102 * 512,
                    len: 10 * 512,
                    type_code: 0x82
                },
                Logical {
                    number: 6,
                    start: 122 * 512,
                    len: 8 * 512,
                    type_code: 0x83
                },
            ]
        );
    }

    #[test]
    fn a_loop_or_a_link_outside_the_extended_partition_ends_the_chain() {
        let mut img = two_logicals();
        // The second EBR links back to the first.
        put_entry(&mut img, 120, 1, 0x05, 0, 30);
        let (_t, r) = region(&img);
        assert_eq!(read_chain(&r, 100 * 512, 100 * 512).len(), 2);
        // Link to sector 20 of an extended partition only 10 sectors long.
        let (_t, r) = region(&two_logicals());
        assert_eq!(read_chain(&r, 100 * 512, 10 * 512).len(), 1);
        // A self-link at the first EBR.
        let mut img = two_logicals();
        put_entry(&mut img, 100, 1, 0x05, 0, 30);
        let (_t, r) = region(&img);
        assert_eq!(read_chain(&r, 100 * 512, 100 * 512).len(), 1);
    }

    #[test]
    fn no_signature_means_no_logicals() {
        let mut img = two_logicals();
        img[100 * 512 + 510] = 0;
        let (_t, r) = region(&img);
        assert!(read_chain(&r, 100 * 512, 100 * 512).is_empty());
        // An extended partition past the end of the image.
        assert!(read_chain(&r, 1 << 40, 100 * 512).is_empty());
    }
}
