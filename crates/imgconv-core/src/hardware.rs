//! The virtual hardware a converted disk is made for: the firmware that boots it and the
//! bus the guest sees it on.
//!
//! A leaf module (it imports nothing from the pipeline) so that the stages which depend on
//! these choices — `layout` (MBR or GPT), `boot` (BIOS boot code or an ESP) and `fixups`
//! (device names) — need not import `convert`, which drives them.

/// Firmware the converted disk boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// MBR disk, GRUB i386-pc boot code (SeaBIOS and any PC BIOS).
    #[default]
    Bios,
    /// GPT disk with an EFI System Partition (shim + GRUB), root and swap (OVMF, any UEFI).
    Uefi,
    /// GPT disk with a BIOS boot partition, an ESP, root and swap: boots with UEFI and BIOS.
    Hybrid,
}

/// Disk bus the converted guest will see its disk on; decides device names for disks
/// other than the root that fstab still refers to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: /dev/vdX.
    #[default]
    Virtio,
    /// SATA/AHCI: /dev/sdX.
    Sata,
    /// IDE (libata): /dev/sdX.
    Ide,
}
