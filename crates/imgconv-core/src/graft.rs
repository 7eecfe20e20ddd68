//! Grafting the donor kernel, initrd, modules and GRUB files into the guest. (issue 4)
