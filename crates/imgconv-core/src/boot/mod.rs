//! Boot code: GRUB for BIOS (and later UEFI), grub.cfg. (issue 5)
