//! A read-only view of a filesystem whose superblock claims no journal recovery is
//! pending, for *inspecting* a dirty-journal guest when ext4-view cannot replay its
//! journal in memory.
//!
//! ext4-view 1.0 replays a pending journal only when it has the `64bit` and `csum_v3`
//! journal features (it refuses ext3 journals and any journal a kernel did not mark with
//! v3 checksums). Inspection only reads configuration files, so reading the on-disk state
//! without the last transactions is acceptable there — and the guest info says so. The
//! conversion itself never uses this view: the copy is replayed by e2fsck.

use super::csum;
use super::superblock::{feature, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::blockio::Region;

/// Region whose superblock bytes are replaced by a copy with `needs_recovery` cleared
/// (and its metadata_csum checksum recomputed).
pub struct UnjournaledView {
    region: Region,
    superblock: Vec<u8>,
}

impl UnjournaledView {
    /// Build the view; `raw_superblock` is the filesystem's 1024 superblock bytes.
    pub fn new(region: Region, raw_superblock: &[u8]) -> Self {
        let mut sb = raw_superblock.to_vec();
        sb.resize(SUPERBLOCK_SIZE, 0);
        let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]])
            & !feature::INCOMPAT_RECOVER;
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        let ro = u32::from_le_bytes([sb[0x64], sb[0x65], sb[0x66], sb[0x67]]);
        if ro & feature::RO_COMPAT_METADATA_CSUM != 0 {
            let c = csum::crc32c_raw(!0, &sb[..0x3FC]);
            sb[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
        }
        UnjournaledView {
            region,
            superblock: sb,
        }
    }
}

impl ext4_view::Ext4Read for UnjournaledView {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.region.read_exact_at(start_byte, dst)?;
        // Overlay the patched superblock where the read overlaps it.
        let sb_start = SUPERBLOCK_OFFSET;
        let sb_end = sb_start + SUPERBLOCK_SIZE as u64;
        let end = start_byte + dst.len() as u64;
        let lo = start_byte.max(sb_start);
        let hi = end.min(sb_end);
        if lo < hi {
            let d = (lo - start_byte) as usize..(hi - start_byte) as usize;
            let s = (lo - sb_start) as usize..(hi - sb_start) as usize;
            dst[d].copy_from_slice(&self.superblock[s]);
        }
        Ok(())
    }
}
