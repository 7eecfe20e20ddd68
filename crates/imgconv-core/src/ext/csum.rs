//! The two checksums ext4 metadata uses, in the form the on-disk fields store them.
//!
//! * `metadata_csum` structures use CRC32C (Castagnoli) *without* the final inversion:
//!   the kernel's `ext4_chksum(seed, data)` returns the raw shift register, and a
//!   checksum is chained by passing one result as the next seed. The filesystem seed is
//!   `ext4_chksum(~0, s_uuid)`, or `s_checksum_seed` with the `csum_seed` feature
//!   (Documentation/filesystems/ext4/checksums.rst, "Checksums", part of overview.rst).
//! * `gdt_csum` (uninit_bg) group descriptors use CRC16 (polynomial 0x8005, reflected,
//!   the kernel's `crc16()`), seeded with `~0` and chained the same way.

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// `ext4_chksum(seed, data)`: raw CRC32C register after feeding `data`, starting from
/// register value `seed`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    // The crate reflects a custom initial value for reflected algorithms and XORs the
    // result with 0xFFFFFFFF; undo both to get the kernel's raw register semantics.
    let mut d = CRC32C.digest_with_initial(seed.reverse_bits());
    d.update(data);
    !d.finalize()
}

/// CRC32C over several pieces, chained (same as feeding their concatenation).
pub fn crc32c_raw_parts(seed: u32, parts: &[&[u8]]) -> u32 {
    parts.iter().fold(seed, |crc, p| crc32c_raw(crc, p))
}

/// The kernel's `crc16(~0, ...)` over several pieces, chained.
pub fn crc16_parts(parts: &[&[u8]]) -> u16 {
    let mut d = CRC16.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_raw_matches_the_standard_check_value() {
        // The standard CRC-32C of "123456789" is 0xE3069283 (init ~0, final XOR ~0).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        // Chaining equals feeding the concatenation.
        assert_eq!(
            crc32c_raw_parts(!0, &[b"1234", b"56789"]),
            crc32c_raw(!0, b"123456789")
        );
    }

    #[test]
    fn crc16_matches_the_kernel_crc16_with_all_ones_seed() {
        // CRC-16/MODBUS check value (poly 0x8005 reflected, init 0xFFFF, no final XOR).
        assert_eq!(crc16_parts(&[b"1234", b"56789"]), 0x4B37);
    }
}
