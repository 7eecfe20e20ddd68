//! Recognising what an image (or a partition) holds when it is not an ext filesystem,
//! so the error can name it: other filesystems, volume managers, encryption, swap,
//! compressed or virtual-disk containers, zeros and garbage.
//!
//! Signatures and their positions are the ones blkid (util-linux libblkid) probes.

use crate::blockio::Region;
use std::io;

/// Something that is not an ext2/3/4 filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Foreign {
    Xfs,
    Btrfs,
    Lvm2,
    Luks,
    Reiserfs,
    Swap,
    Squashfs,
    Fat,
    Ntfs,
    Exfat,
    Iso9660,
    F2fs,
    Jfs,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Qcow2,
    Vmdk,
    Vhd,
    Vdi,
}

impl Foreign {
    /// What it is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Foreign::Xfs => "an XFS filesystem",
            Foreign::Btrfs => "a btrfs filesystem",
            Foreign::Lvm2 => "an LVM2 physical volume",
            Foreign::Luks => "a LUKS encrypted volume",
            Foreign::Reiserfs => "a ReiserFS filesystem",
            Foreign::Swap => "a Linux swap area",
            Foreign::Squashfs => "a squashfs image",
            Foreign::Fat => "a FAT filesystem",
            Foreign::Ntfs => "an NTFS filesystem",
            Foreign::Exfat => "an exFAT filesystem",
            Foreign::Iso9660 => "an ISO 9660 (CD/DVD) image",
            Foreign::F2fs => "an F2FS filesystem",
            Foreign::Jfs => "a JFS filesystem",
            Foreign::Gzip => "a gzip-compressed file",
            Foreign::Xz => "an xz-compressed file",
            Foreign::Zstd => "a zstd-compressed file",
            Foreign::Bzip2 => "a bzip2-compressed file",
            Foreign::Qcow2 => "a qcow2 virtual disk",
            Foreign::Vmdk => "a VMDK virtual disk",
            Foreign::Vhd => "a VHD virtual disk",
            Foreign::Vdi => "a VirtualBox VDI disk",
        }
    }

    /// What the user can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Foreign::Gzip | Foreign::Xz | Foreign::Zstd | Foreign::Bzip2 => {
                "decompress it first and convert the raw image inside"
            }
            Foreign::Qcow2 | Foreign::Vmdk | Foreign::Vhd | Foreign::Vdi => {
                "turn it into a raw image first (qemu-img convert -O raw in.img raw.img)"
            }
            Foreign::Lvm2 => {
                "its logical volumes are read only when the PV's label and metadata are intact and one of them holds the guest root; `imgconv inspect` lists what was found"
            }
            Foreign::Luks => "open the volume (cryptsetup open) and convert the decrypted root filesystem",
            _ => "imgconv converts guests whose root filesystem is ext2, ext3 or ext4",
        }
    }
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Bytes examined: enough for every signature below (btrfs at 64 KiB + 0x40, reiserfs
/// at 64 KiB + 52, ISO 9660 at 32 KiB + 1).
pub const PROBE_LEN: usize = 68 * 1024;

/// Read the start of `region` (up to [`PROBE_LEN`] bytes, less if it is shorter).
pub fn read_head(region: &Region) -> io::Result<Vec<u8>> {
    let len = (region.len()).min(PROBE_LEN as u64) as usize;
    let mut buf = vec![0u8; len];
    region.read_exact_at(0, &mut buf)?;
    Ok(buf)
}

fn at(head: &[u8], off: usize, sig: &[u8]) -> bool {
    head.get(off..off + sig.len()) == Some(sig)
}

/// Identify a foreign signature in the first bytes of a region.
pub fn identify(head: &[u8]) -> Option<Foreign> {
    // Containers and compressors first: their magic is at byte 0.
    let starts: &[(&[u8], Foreign)] = &[
        (b"\x1f\x8b", Foreign::Gzip),
        (b"\xfd7zXZ\x00", Foreign::Xz),
        (b"\x28\xb5\x2f\xfd", Foreign::Zstd),
        (b"BZh", Foreign::Bzip2),
        (b"QFI\xfb", Foreign::Qcow2),
        (b"KDMV", Foreign::Vmdk),
        (b"conectix", Foreign::Vhd),
        (b"XFSB", Foreign::Xfs),
        (b"LUKS\xba\xbe", Foreign::Luks),
        (b"hsqs", Foreign::Squashfs),
        (b"sqsh", Foreign::Squashfs),
    ];
    for &(sig, kind) in starts {
        if at(head, 0, sig) {
            return Some(kind);
        }
    }
    if at(head, 0x40, b"<<< Oracle VM VirtualBox Disk Image >>>")
        || at(head, 0x40, b"\x7f\x10\xda\xbe")
    {
        return Some(Foreign::Vdi);
    }
    if at(head, 0x10040, b"_BHRfS_M") {
        return Some(Foreign::Btrfs);
    }
    // LVM2: "LABELONE" in one of the first four sectors, "LVM2 001" at +0x18.
    for sector in 0..4 {
        let o = sector * 512;
        if at(head, o, b"LABELONE") && at(head, o + 0x18, b"LVM2 001") {
            return Some(Foreign::Lvm2);
        }
    }
    for off in [0x10034usize, 0x2034] {
        for sig in [&b"ReIsErFs"[..], b"ReIsEr2Fs", b"ReIsEr3Fs"] {
            if at(head, off, sig) {
                return Some(Foreign::Reiserfs);
            }
        }
    }
    // Swap: "SWAPSPACE2"/"SWAP-SPACE" in the last 10 bytes of the first page.
    for page in [4096usize, 8192, 16384, 65536] {
        if at(head, page - 10, b"SWAPSPACE2") || at(head, page - 10, b"SWAP-SPACE") {
            return Some(Foreign::Swap);
        }
    }
    if at(head, 1024, &0xF2F5_2010u32.to_le_bytes()) {
        return Some(Foreign::F2fs);
    }
    if at(head, 0x8000, b"JFS1") {
        return Some(Foreign::Jfs);
    }
    if at(head, 0x8001, b"CD001") {
        return Some(Foreign::Iso9660);
    }
    if at(head, 3, b"NTFS    ") {
        return Some(Foreign::Ntfs);
    }
    if at(head, 3, b"EXFAT   ") {
        return Some(Foreign::Exfat);
    }
    if at(head, 510, b"\x55\xaa")
        && (at(head, 54, b"FAT12   ")
            || at(head, 54, b"FAT16   ")
            || at(head, 82, b"FAT32   ")
            || at(head, 54, b"FAT     "))
    {
        return Some(Foreign::Fat);
    }
    None
}

/// True when every byte of `head` is zero.
pub fn all_zero(head: &[u8]) -> bool {
    crate::bytes::is_zero(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(off: usize, sig: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_LEN];
        b[off..off + sig.len()].copy_from_slice(sig);
        b
    }

    #[test]
    fn recognises_signatures_at_their_offsets() {
        assert_eq!(identify(&with(0, b"XFSB")), Some(Foreign::Xfs));
        assert_eq!(identify(&with(0x10040, b"_BHRfS_M")), Some(Foreign::Btrfs));
        let mut lvm = with(512, b"LABELONE");
        lvm[512 + 0x18..512 + 0x20].copy_from_slice(b"LVM2 001");
        assert_eq!(identify(&lvm), Some(Foreign::Lvm2));
        assert_eq!(identify(&with(0, b"LUKS\xba\xbe")), Some(Foreign::Luks));
        assert_eq!(identify(&with(4086, b"SWAPSPACE2")), Some(Foreign::Swap));
        assert_eq!(
            identify(&with(0x10034, b"ReIsEr2Fs")),
            Some(Foreign::Reiserfs)
        );
        assert_eq!(identify(&with(0, b"hsqs")), Some(Foreign::Squashfs));
        assert_eq!(identify(&with(3, b"NTFS    ")), Some(Foreign::Ntfs));
        assert_eq!(identify(&vec![0u8; PROBE_LEN]), None);
        assert!(all_zero(&[0u8; 10]));
        // Short heads never panic.
        assert_eq!(identify(&[0x1f]), None);
    }
}
