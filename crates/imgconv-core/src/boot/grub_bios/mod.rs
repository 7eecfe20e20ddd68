//! GRUB for BIOS (i386-pc), built and installed in Rust: core.img from the module
//! directory (what `grub-mkimage -O i386-pc` does) and boot.img + core.img on the disk
//! (what `grub-bios-setup` does), without running either tool.
//!
//! - [`elf`]: ELF32 reader; kernel.img flattening; module identity.
//! - [`moddep`]: moddep.lst and the embedding order.
//! - [`lzma`]: raw LZMA1 as GRUB's decompressor reads it.
//! - [`core_image`]: core.img assembly and read-back.
//! - [`mbr`]: boot sector and core.img placement.

pub mod core_image;
pub mod elf;
pub mod lzma;
pub mod mbr;
pub mod moddep;

pub use core_image::{build_core_image, read_core_image, CoreContents, CoreImage, ModuleRecord};
pub use mbr::install_bios_boot;

/// The modules grub-install embeds for a plain disk with an ext2/3/4 root on an MBR
/// partition (fs module + partition map + disk driver; see grub-bios-format.md §6).
pub const MSDOS_EXT_MODULES: &[&str] = &["biosdisk", "part_msdos", "ext2"];
/// The same for GPT (with a BIOS boot partition).
pub const GPT_EXT_MODULES: &[&str] = &["biosdisk", "part_gpt", "ext2"];

/// The prefix for `/boot/grub` on partition `number` of the boot disk, in the form
/// grub-install writes (`(,msdos1)/boot/grub`): the disk is the one the BIOS booted.
pub fn prefix_for_partition(gpt: bool, number: u32) -> String {
    let map = if gpt { "gpt" } else { "msdos" };
    format!("(,{map}{number})/boot/grub")
}

/// The prefix for GRUB's directory on a separate `/boot` filesystem in partition
/// `number` (`(,msdos1)/grub`): there the directory is at the top of the filesystem.
pub fn prefix_for_boot_partition(gpt: bool, number: u32) -> String {
    let map = if gpt { "gpt" } else { "msdos" };
    format!("(,{map}{number})/grub")
}
