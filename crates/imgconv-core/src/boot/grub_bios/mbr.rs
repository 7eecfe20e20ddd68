//! Installing boot.img into LBA 0 and core.img into the gap before the first partition,
//! as `grub-bios-setup` does for a disk (docs/grub-bios-format.md; GRUB
//! `util/setup.c`, `include/grub/i386/pc/boot.h`).
//!
//! boot.img supplies the code (bytes 0..0x1B8); the disk keeps its own BPB area
//! (0x03..0x5A, setup copies it from the disk), its NT disk signature and partition table
//! (0x1B8..0x1FE) and gets the 0x55AA signature. Three fields are set: the LBA of
//! core.img's first sector (0x5C), the boot drive 0xFF = "the drive the BIOS booted"
//! (0x64), and the drive check at 0x66 turned into two NOPs so a BIOS that passes a bogus
//! drive number gets 0x80 (setup does this for hard disks).

use super::core_image::{CoreImage, SECTOR};
use crate::boot::{BootError, GrubPlatformFiles};

/// `GRUB_BOOT_MACHINE_BPB_START` / `BPB_END`: kept from the disk.
pub const BPB_START: usize = 0x03;
pub const BPB_END: usize = 0x5A;
/// `GRUB_BOOT_MACHINE_KERNEL_SECTOR`: u64 LBA of core.img's first sector.
pub const KERNEL_SECTOR: usize = 0x5C;
/// `GRUB_BOOT_MACHINE_BOOT_DRIVE`: 0xFF = use the drive in DL.
pub const BOOT_DRIVE: usize = 0x64;
/// `GRUB_BOOT_MACHINE_DRIVE_CHECK`: `jmp 3f` replaced by `nop; nop` for hard disks.
pub const DRIVE_CHECK: usize = 0x66;
/// `GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC`: from here to 0x1FE the disk's own bytes stay.
pub const NT_MAGIC: usize = 0x1B8;
/// `GRUB_BOOT_MACHINE_PART_START`: the four primary partition entries.
pub const PART_START: usize = 0x1BE;
/// `GRUB_BOOT_MACHINE_SIGNATURE`: 0x55, 0xAA.
pub const SIGNATURE: usize = 0x1FE;

/// What GRUB's boot.img prints on an error; its presence in the code area is how a boot
/// sector is recognised as GRUB's.
const GRUB_MESSAGE: &[u8] = b"GRUB ";

/// Read back what [`boot_sector`] wrote in sector 0: `Ok(Some(lba))` with core.img's
/// first sector when the code area holds GRUB's boot.img, `Ok(None)` when it does not.
pub fn grub_core_sector(sector0: &[u8]) -> Result<Option<u64>, crate::bytes::ParseError> {
    let f = crate::bytes::Fields::new("boot sector", sector0);
    let code = f.bytes("boot code", 0, NT_MAGIC)?;
    if !code.windows(GRUB_MESSAGE.len()).any(|w| w == GRUB_MESSAGE) {
        return Ok(None);
    }
    Ok(Some(f.u64("kernel_sector", KERNEL_SECTOR)?))
}

/// MBR partition type of a GPT protective entry.
const PROTECTIVE_GPT: u8 = 0xEE;

/// The boot sector for a disk whose current sector 0 is `disk_sector0`: boot.img code,
/// the disk's BPB area, signature and partition table, and the three setup fields.
pub fn boot_sector(
    boot_img: &[u8],
    disk_sector0: &[u8; SECTOR],
    core_lba: u64,
) -> Result<[u8; SECTOR], BootError> {
    if boot_img.len() != SECTOR || boot_img[SIGNATURE..] != [0x55, 0xAA] {
        return Err(BootError::ImageFormat {
            file: "boot.img",
            why: format!(
                "{} bytes; must be one sector ending with 55 AA",
                boot_img.len()
            ),
        });
    }
    // The setup fields must hold what boot.S puts there, or this is not the boot.img
    // whose layout we know: kernel address 0x8000 at 0x5A, boot drive 0xFF, and the
    // drive check as `jmp` (EB xx) or already `nop nop`.
    let kernel_address = u16::from_le_bytes([boot_img[BPB_END], boot_img[BPB_END + 1]]);
    let check = &boot_img[DRIVE_CHECK..DRIVE_CHECK + 2];
    if kernel_address != 0x8000
        || boot_img[BOOT_DRIVE] != 0xFF
        || !(check[0] == 0xEB || check == [0x90, 0x90])
    {
        return Err(BootError::ImageFormat {
            file: "boot.img",
            why: "its fields at 0x5A/0x64/0x66 are not GRUB's i386-pc boot.img layout".into(),
        });
    }
    if disk_sector0[SIGNATURE..] != [0x55, 0xAA] {
        return Err(BootError::NoPartitionTable);
    }
    let mut out = [0u8; SECTOR];
    out[..NT_MAGIC].copy_from_slice(&boot_img[..NT_MAGIC]);
    out[BPB_START..BPB_END].copy_from_slice(&disk_sector0[BPB_START..BPB_END]);
    out[NT_MAGIC..SIGNATURE].copy_from_slice(&disk_sector0[NT_MAGIC..SIGNATURE]);
    out[SIGNATURE..].copy_from_slice(&[0x55, 0xAA]);
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    out[BOOT_DRIVE] = 0xFF;
    out[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(out)
}

/// Write GRUB's BIOS boot code into the image `out` (already partitioned): core.img at
/// `core_lba` (1 = right after the MBR; the BIOS boot partition's start on GPT), which
/// must end before `gap_end_lba` (the first partition's start, or the end of the BIOS
/// boot partition), then boot.img into LBA 0 pointing at it.
///
/// Refuses, before writing anything, when core.img does not fit, when sector 0 has no
/// partition table, or when an MBR partition entry (other than a GPT protective one)
/// starts inside the area core.img would overwrite.
pub fn install_bios_boot<D: crate::blockio::OutputDevice>(
    out: &D,
    files: &GrubPlatformFiles,
    core: &CoreImage,
    core_lba: u64,
    gap_end_lba: u64,
) -> Result<(), BootError> {
    let io =
        |action: &'static str| move |e: std::io::Error| BootError::OutputIo { action, source: e };
    if core_lba == 0 {
        return Err(BootError::BadArgument {
            what: "core_lba",
            why: "LBA 0 is the boot sector itself",
        });
    }
    let core_end = core_lba + core.sectors();
    if core_end > gap_end_lba {
        return Err(BootError::CoreDoesNotFit {
            core_sectors: core.sectors(),
            core_lba,
            gap_end_lba,
        });
    }
    let len = out.disk_len().map_err(io("inspecting"))?;
    if len < core_end * SECTOR as u64 {
        return Err(BootError::ImageTooSmall {
            needed: core_end * SECTOR as u64,
            actual: len,
        });
    }
    let mut sector0 = [0u8; SECTOR];
    out.read_at(0, &mut sector0)
        .map_err(io("reading sector 0 of"))?;
    // Our own check of the caller's gap: no partition may start where core.img goes.
    for i in 0..4 {
        let e = &sector0[PART_START + 16 * i..PART_START + 16 * (i + 1)];
        let kind = e[4];
        let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        let overlaps = start < core_end && start + u64::from(sectors) > core_lba;
        if kind != 0 && kind != PROTECTIVE_GPT && sectors != 0 && overlaps {
            return Err(BootError::PartitionInGap {
                partition: i + 1,
                start,
                core_lba,
                core_end,
            });
        }
    }
    let mbr = boot_sector(files.require("boot.img")?, &sector0, core_lba)?;
    let image = core.for_lba(core_lba)?;
    out.write_at(core_lba * SECTOR as u64, &image)
        .map_err(io("writing core.img into"))?;
    out.write_at(0, &mbr)
        .map_err(io("writing the boot sector of"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_sector_reads_back_only_from_grub_code() {
        let mut sector = [0u8; SECTOR];
        sector[0x180..0x185].copy_from_slice(GRUB_MESSAGE);
        sector[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&2048u64.to_le_bytes());
        assert_eq!(grub_core_sector(&sector).unwrap(), Some(2048));
        // The message in the partition table area is not boot code.
        let mut other = [0u8; SECTOR];
        other[PART_START..PART_START + 5].copy_from_slice(GRUB_MESSAGE);
        assert_eq!(grub_core_sector(&other).unwrap(), None);
        assert!(grub_core_sector(&sector[..100]).is_err());
    }
}
