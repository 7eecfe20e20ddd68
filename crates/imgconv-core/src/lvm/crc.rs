//! LVM2's CRC-32 variant, which guards the label, the metadata area header and the
//! metadata text.
//!
//! lvm2 `lib/misc/crc.c` (`calc_crc`) and `lib/misc/crc.h`: the reflected CRC-32 of
//! polynomial 0xedb88320 (the one zlib uses), started from [`INITIAL`] = 0xf597a6cf and
//! returned without the final inversion. A checksum over two pieces is the checksum of
//! the second started from the checksum of the first, which is how LVM checks metadata
//! text that wraps around its circular buffer.
//!
//! zlib's CRC-32 (`crc32fast`) inverts the register before and after the same update, so
//! LVM's value from `init` is the inversion of zlib's started from the inverted `init`.

/// `INITIAL_CRC` of lvm2.
pub const INITIAL: u32 = 0xf597_a6cf;

/// LVM's `calc_crc(initial, data)`.
pub fn calc(initial: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!initial);
    h.update(data);
    !h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bitwise definition: shift right, xor the polynomial when a one falls out.
    fn reference(initial: u32, data: &[u8]) -> u32 {
        let mut crc = initial;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn matches_the_bitwise_definition_and_chains() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(calc(INITIAL, &data), reference(INITIAL, &data));
        assert_eq!(calc(INITIAL, &[]), INITIAL);
        let (a, b) = data.split_at(333);
        assert_eq!(calc(calc(INITIAL, a), b), calc(INITIAL, &data));
    }
}
