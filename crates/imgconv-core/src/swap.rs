//! Linux swap v1 signature for the swap partition.
//!
//! The kernel's `union swap_header` (include/linux/swap.h) occupies the first page of
//! the area: 1024 bytes of `bootbits` (room for a disk label), then `info`:
//! `version` (u32 = 1) at 0x400, `last_page` (u32, index of the last usable page) at
//! 0x404, `nr_badpages` (u32) at 0x408, `sws_uuid[16]` at 0x40C, `sws_volume[16]` (the
//! label) at 0x41C, padding and the bad-page list; the magic "SWAPSPACE2" fills the last
//! 10 bytes of the page. We use 4096-byte pages (x86). The rest of the area is left as it
//! is (holes in a fresh output), which is what `mkswap` produces too.

use crate::output;
use crate::stream::StreamError;
use uuid::Uuid;

/// Swap page size on x86.
pub const PAGE_SIZE: u64 = 4096;
/// Smallest area `mkswap` accepts (10 pages).
pub const MIN_SWAP_BYTES: u64 = 10 * PAGE_SIZE;
/// Longest label the header holds.
pub const MAX_LABEL: usize = 16;

const OFF_VERSION: usize = 0x400;
const OFF_LAST_PAGE: usize = 0x404;
const OFF_NR_BADPAGES: usize = 0x408;
const OFF_UUID: usize = 0x40C;
const OFF_LABEL: usize = 0x41C;
const MAGIC: &[u8; 10] = b"SWAPSPACE2";

/// The first page of a swap area of `len` bytes.
pub fn swap_header(len: u64, uuid: Uuid, label: &str) -> Result<Vec<u8>, StreamError> {
    if len < MIN_SWAP_BYTES {
        return Err(StreamError::SwapTooSmall {
            len,
            min: MIN_SWAP_BYTES,
        });
    }
    if label.len() > MAX_LABEL {
        return Err(StreamError::SwapLabelTooLong {
            label: label.to_string(),
            len: label.len(),
        });
    }
    let pages = len / PAGE_SIZE;
    // last_page is a u32 page index; larger areas are usable up to that page.
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
    page[OFF_LAST_PAGE..OFF_LAST_PAGE + 4].copy_from_slice(&last_page.to_le_bytes());
    page[OFF_NR_BADPAGES..OFF_NR_BADPAGES + 4].copy_from_slice(&0u32.to_le_bytes());
    page[OFF_UUID..OFF_UUID + 16].copy_from_slice(uuid.as_bytes());
    page[OFF_LABEL..OFF_LABEL + label.len()].copy_from_slice(label.as_bytes());
    let m = PAGE_SIZE as usize - MAGIC.len();
    page[m..].copy_from_slice(MAGIC);
    Ok(page)
}

/// Write a swap v1 header with a fresh random UUID and `label` at `offset` of `dst`,
/// for an area of `len` bytes. Returns the UUID (for fstab's `UUID=`).
pub fn write_swap<D: crate::blockio::OutputDevice>(
    dst: &D,
    offset: u64,
    len: u64,
    label: &str,
) -> Result<Uuid, StreamError> {
    let uuid = Uuid::new_v4();
    let page = swap_header(len, uuid, label)?;
    dst.write_at(offset, &page).map_err(|e| {
        output::write_error(dst.backing_file(), "cannot write the swap header to", e)
    })?;
    Ok(uuid)
}

/// What a swap v1 header says, as read back from a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapHeader {
    /// `info.version` (1 for every swap area Linux uses).
    pub version: u32,
    /// `info.last_page`: index of the last usable page.
    pub last_page: u32,
    /// `info.sws_uuid`.
    pub uuid: Uuid,
    /// `info.sws_volume`: the label, up to its first NUL (lossy UTF-8).
    pub label: String,
}

/// Read the first page of a swap area: `Ok(None)` when the "SWAPSPACE2" magic is not in
/// its last 10 bytes, else the header's fields. The page must be [`PAGE_SIZE`] bytes.
pub fn read_header(page: &[u8]) -> Result<Option<SwapHeader>, crate::bytes::ParseError> {
    let f = crate::bytes::Fields::new("swap header", page);
    let magic_at = PAGE_SIZE as usize - MAGIC.len();
    if f.bytes("magic", magic_at, MAGIC.len())? != MAGIC {
        return Ok(None);
    }
    Ok(Some(SwapHeader {
        version: f.u32("version", OFF_VERSION)?,
        last_page: f.u32("last_page", OFF_LAST_PAGE)?,
        uuid: Uuid::from_bytes(f.array::<16>("sws_uuid", OFF_UUID)?),
        label: {
            let raw = f.array::<MAX_LABEL>("sws_volume", OFF_LABEL)?;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_at_kernel_offsets() {
        let u = Uuid::from_bytes([7; 16]);
        let p = swap_header(512 << 20, u, "swap0").unwrap();
        assert_eq!(&p[4086..4096], b"SWAPSPACE2");
        assert_eq!(u32::from_le_bytes(p[0x400..0x404].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(p[0x404..0x408].try_into().unwrap()),
            (512 << 20) / 4096 - 1
        );
        assert_eq!(&p[0x40C..0x41C], &[7; 16]);
        assert_eq!(&p[0x41C..0x421], b"swap0");
        assert!(p[..0x400].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_written_header_reads_back() {
        let u = Uuid::from_bytes([9; 16]);
        let p = swap_header(64 << 20, u, "s").unwrap();
        let h = read_header(&p).unwrap().unwrap();
        assert_eq!(
            (h.version, h.last_page, h.uuid),
            (1, (64 << 20) / 4096 - 1, u)
        );
        assert_eq!(h.label, "s");
        let mut no_magic = p.clone();
        no_magic[4095] = 0;
        assert_eq!(read_header(&no_magic).unwrap(), None);
        assert!(read_header(&p[..4000]).is_err(), "a short page is an error");
    }

    #[test]
    fn rejects_tiny_areas_and_long_labels() {
        assert!(matches!(
            swap_header(4096, Uuid::nil(), ""),
            Err(StreamError::SwapTooSmall { .. })
        ));
        assert!(matches!(
            swap_header(1 << 20, Uuid::nil(), "a-label-longer-than-16"),
            Err(StreamError::SwapLabelTooLong { .. })
        ));
    }
}
