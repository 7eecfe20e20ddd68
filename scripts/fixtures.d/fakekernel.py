#!/usr/bin/env python3
"""Write fake kernel artefacts for the synthetic donor fixture.

    fakekernel.py vmlinuz OUT VERSION   a bzImage-shaped file with a valid boot protocol header
    fakekernel.py modules VERSION OUT...  tiny ELF64 relocatable objects with a .modinfo text
                                          (module name = file name without .ko)

The vmlinuz is not bootable; it only carries the x86 boot protocol header fields that a
converter reads to recognise and identify a kernel (Linux Documentation/arch/x86/boot.rst,
"The Real-Mode Kernel Header"). Offsets are from the start of the file:

    0x1F1  u8   setup_sects     number of 512-byte setup sectors after the boot sector (4)
    0x1F4  u32  syssize         protected-mode code size in 16-byte paragraphs
    0x1FE  u16  boot_flag       0xAA55
    0x200  u16  jump            0xEB 0x66: short jump over the header (as real kernels do)
    0x202  u32  header          "HdrS" magic
    0x206  u16  version         boot protocol version 0x020F (2.15)
    0x20E  u16  kernel_version  offset of the NUL-terminated version string MINUS 0x200
    0x211  u8   loadflags       bit0 LOADED_HIGH
    0x214  u32  code32_start    0x100000
    0x230  u32  kernel_alignment 0x200000
    0x234  u8   relocatable_kernel 1
    0x235  u8   min_alignment   21 (2 MiB as a power of two)
    0x236  u16  xloadflags      bit0 XLF_KERNEL_64, bit1 XLF_CAN_BE_LOADED_ABOVE_4G
    0x238  u32  cmdline_size    2047
    0x258  u64  pref_address    0x1000000
    0x260  u32  init_size       size of the payload rounded up, as a plausible value

The version string (at 0x300, so kernel_version = 0x100) reads
"<VERSION> (fake) (imgconv-fixtures@example.invalid) #1 SMP PREEMPT_DYNAMIC Debian ...",
the same shape as Debian's, whose first word is what `file` and GRUB scripts show.
"""

import os
import struct
import sys

SECTOR = 512
SETUP_SECTS = 4
VERSION_AT = 0x300


def vmlinuz(out: str, version: str) -> None:
    setup_len = (1 + SETUP_SECTS) * SECTOR
    # A recognisable, incompressible-looking payload; size matters only for syssize.
    payload = (b"IMGCONV-FAKE-KERNEL " + version.encode() + b"\n") * 512
    buf = bytearray(setup_len)

    def put(offset: int, fmt: str, value) -> None:
        struct.pack_into("<" + fmt, buf, offset, value)

    put(0x1F1, "B", SETUP_SECTS)
    put(0x1F4, "I", (len(payload) + 15) // 16)
    put(0x1FE, "H", 0xAA55)
    buf[0x200:0x202] = b"\xeb\x66"
    buf[0x202:0x206] = b"HdrS"
    put(0x206, "H", 0x020F)
    put(0x20E, "H", VERSION_AT - 0x200)
    put(0x211, "B", 0x01)
    put(0x214, "I", 0x100000)
    put(0x230, "I", 0x200000)
    put(0x234, "B", 1)
    put(0x235, "B", 21)
    put(0x236, "H", 0x0003)
    put(0x238, "I", 2047)
    put(0x258, "Q", 0x1000000)
    put(0x260, "I", (len(payload) + 0xFFFFF) & ~0xFFFFF)
    text = (
        f"{version} (fake) (imgconv-fixtures@example.invalid) #1 SMP PREEMPT_DYNAMIC "
        f"Debian 6.1.999-1 (2099-01-01)"
    ).encode() + b"\0"
    buf[VERSION_AT : VERSION_AT + len(text)] = text
    with open(out, "wb") as f:
        f.write(bytes(buf) + payload)


def module(out: str, name: str, version: str) -> None:
    modinfo = (
        f"name={name}\0vermagic={version} SMP preempt mod_unload modversions \0"
        f"license=GPL\0description=imgconv fake module\0"
    ).encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    ehdr_len, shdr_len = 64, 64
    modinfo_off = ehdr_len
    shstr_off = modinfo_off + len(modinfo)
    shoff = (shstr_off + len(shstrtab) + 7) & ~7
    ehdr = bytearray(ehdr_len)
    ehdr[0:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9  # ELF64, little endian, SysV
    struct.pack_into(
        "<HHIQQQIHHHHHH", ehdr, 16,
        1,        # e_type ET_REL (kernel modules are relocatable objects)
        62,       # e_machine EM_X86_64
        1,        # e_version
        0, 0,     # e_entry, e_phoff
        shoff,    # e_shoff
        0,        # e_flags
        ehdr_len, 0, 0,  # e_ehsize, e_phentsize, e_phnum
        shdr_len, 3,     # e_shentsize, e_shnum
        2,        # e_shstrndx
    )

    def shdr(name_off: int, sh_type: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_off, sh_type, 0, 0, offset, size, 0, 0, 1, 0)

    body = bytes(ehdr) + modinfo + shstrtab
    body += b"\0" * (shoff - len(body))
    body += b"\0" * shdr_len  # SHN_UNDEF
    body += shdr(1, 1, modinfo_off, len(modinfo))  # .modinfo, SHT_PROGBITS
    body += shdr(10, 3, shstr_off, len(shstrtab))  # .shstrtab, SHT_STRTAB
    with open(out, "wb") as f:
        f.write(body)


def main(argv: list) -> None:
    if len(argv) == 4 and argv[1] == "vmlinuz":
        vmlinuz(argv[2], argv[3])
    elif len(argv) >= 4 and argv[1] == "modules":
        for out in argv[3:]:
            name = os.path.basename(out).removesuffix(".ko")
            module(out, name, argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
