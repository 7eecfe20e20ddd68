//! The donor: where the kernel, initrd, modules and GRUB files come from. (issue 4)
