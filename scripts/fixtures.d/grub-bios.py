#!/usr/bin/env python3
"""Install GRUB's BIOS boot code into an MBR disk image file (no loop device, no grub-install).

    grub-bios.py DISK BOOT_IMG CORE_IMG

What grub-bios-setup would do for an msdos disk with the usual 1 MiB gap, following
/work/shared/docs/grub-bios-format.md (GRUB 2.06 boot.S / diskboot.S / setup.c):

  * sector 0: bytes 0..0x1B7 from boot.img (the disk signature at 0x1B8 and the partition
    table at 0x1BE..0x1FD are kept), with
      0x5C..0x63  kernel_sector = le64(1)  (core.img starts at LBA 1)
      0x64        boot_drive    = 0xFF     (use the drive the BIOS passed in DL)
      0x66..0x67  90 90                    (NOP the jump: force a hard-disk drive number)
    and the 0x55AA signature at 0x1FE.
  * LBA 1..: core.img (no Reed-Solomon parity). Its first sector (diskboot.img) holds the
    blocklist at 0x1F4: start u64 = 2, len u16 = core sectors - 1, segment u16 = 0x0820;
    grub-mkimage fills len, this checks it and sets it if it did not.

Refuses if core.img does not fit before the first partition.
"""

import struct
import sys

SECTOR = 512


def main(disk: str, boot_img: str, core_img: str) -> None:
    boot = open(boot_img, "rb").read()
    core = bytearray(open(core_img, "rb").read())
    if len(boot) != SECTOR:
        sys.exit(f"grub-bios: {boot_img} is {len(boot)} bytes, not one sector")
    if len(core) < 2 * SECTOR:
        sys.exit(f"grub-bios: {core_img} is too small ({len(core)} bytes)")
    core_sectors = (len(core) + SECTOR - 1) // SECTOR
    core += b"\0" * (core_sectors * SECTOR - len(core))

    with open(disk, "r+b") as f:
        mbr = bytearray(f.read(SECTOR))
        if mbr[0x1FE:0x200] != b"\x55\xaa":
            sys.exit(f"grub-bios: {disk} has no MBR partition table (write it first)")
        starts = []
        for i in range(4):
            entry = mbr[0x1BE + 16 * i : 0x1BE + 16 * (i + 1)]
            ptype = entry[4]
            lba, count = struct.unpack_from("<II", entry, 8)
            if ptype == 0xEE:
                sys.exit("grub-bios: GPT protective MBR; this helper handles msdos disks only")
            if ptype and count:
                starts.append(lba)
        if not starts:
            sys.exit(f"grub-bios: {disk} has no partitions")
        gap = min(starts) - 1
        if core_sectors > gap:
            sys.exit(f"grub-bios: core.img needs {core_sectors} sectors, gap has {gap}")

        # diskboot.img blocklist (first entry, the last 12 bytes of the first sector).
        start, length, segment = struct.unpack_from("<QHH", core, 0x1F4)
        if segment != 0x0820:
            sys.exit(f"grub-bios: unexpected diskboot segment {segment:#x}")
        if length != core_sectors - 1 or start != 2:
            struct.pack_into("<QHH", core, 0x1F4, 2, core_sectors - 1, 0x0820)
            print(f"grub-bios: blocklist set to start=2 len={core_sectors - 1} "
                  f"(mkimage wrote start={start} len={length})", file=sys.stderr)
        # Terminator: the next lower entry must have len == 0.
        if struct.unpack_from("<H", core, 0x1E8 + 8)[0] != 0:
            sys.exit("grub-bios: diskboot blocklist has no terminator")

        mbr[0:0x1B8] = boot[0:0x1B8]
        struct.pack_into("<Q", mbr, 0x5C, 1)
        mbr[0x64] = 0xFF
        mbr[0x66:0x68] = b"\x90\x90"
        mbr[0x1FE:0x200] = b"\x55\xaa"
        f.seek(0)
        f.write(mbr)
        f.seek(SECTOR)
        f.write(core)
    print(f"grub-bios: boot.img at LBA 0, core.img ({core_sectors} sectors) at LBA 1",
          file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
