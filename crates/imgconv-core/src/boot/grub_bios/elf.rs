//! A small ELF32 reader for GRUB's `kernel.img` and `*.mod` files, and the flattening of
//! `kernel.img` into the memory image that core.img carries.
//!
//! Spec: System V gABI, ELF32 header (52 bytes) and section header (40 bytes), little
//! endian. Only what GRUB's `grub-mkimage` reads is parsed: the header identity, the
//! section header table and the section names. Every field goes through
//! [`Fields`], so a truncated or lying file is a [`ParseError`], never a panic.
//!
//! Flattening follows `util/grub-mkimagexx.c` (`locate_sections`, `load_image`) for a
//! non-relocatable target such as i386-pc: the `SHT_PROGBITS` sections with `SHF_ALLOC`
//! are copied to `sh_addr - link_addr`, gaps are zero, `kernel_size` ends at the last of
//! them; `SHT_NOBITS` (bss) is not in the image but counted in `bss_size`.

use crate::bytes::{Fields, ParseError};

/// `e_ident[EI_CLASS]` for 32-bit objects.
const ELFCLASS32: u8 = 1;
/// `e_ident[EI_DATA]` for little endian.
const ELFDATA2LSB: u8 = 1;
/// `EV_CURRENT`.
const EV_CURRENT: u8 = 1;
/// `e_machine` for Intel 80386.
pub const EM_386: u16 = 3;
/// `e_type` values.
pub const ET_REL: u16 = 1;
pub const ET_EXEC: u16 = 2;

/// Size of an ELF32 header.
const EHDR_SIZE: usize = 52;
/// Smallest valid `e_shentsize` (an ELF32 section header).
const SHDR_SIZE: usize = 40;
/// More sections than any GRUB file has (kernel.img: 6, a module: ~15).
const MAX_SECTIONS: usize = 1024;

/// `sh_type` values used here.
pub const SHT_PROGBITS: u32 = 1;
pub const SHT_NOBITS: u32 = 8;
/// `sh_flags` bits used here.
pub const SHF_ALLOC: u32 = 0x2;
pub const SHF_EXECINSTR: u32 = 0x4;

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name from the section name string table (empty if it has none).
    pub name: String,
    pub sh_type: u32,
    pub flags: u32,
    pub addr: u32,
    pub offset: u32,
    pub size: u32,
    pub addralign: u32,
}

impl Section {
    /// Code loaded into memory (`is_text_section` in grub-mkimagexx.c).
    fn is_text(&self) -> bool {
        self.sh_type == SHT_PROGBITS
            && self.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR
    }

    /// Initialised data loaded into memory (`is_data_section`).
    fn is_data(&self) -> bool {
        self.sh_type == SHT_PROGBITS && self.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC
    }
}

/// A parsed ELF32 little-endian file: header fields and sections.
#[derive(Debug, Clone)]
pub struct Elf32<'a> {
    data: &'a [u8],
    /// `e_type` (ET_EXEC for kernel.img, ET_REL for modules).
    pub e_type: u16,
    /// `e_machine`.
    pub machine: u16,
    /// Section headers in file order.
    pub sections: Vec<Section>,
}

impl<'a> Elf32<'a> {
    /// Parse the header and section table of `data`; `what` names the file in errors
    /// (e.g. "kernel.img ELF header").
    pub fn parse(what: &'static str, data: &'a [u8]) -> Result<Self, ParseError> {
        let h = Fields::new(what, data);
        let ident = h.array::<16>("e_ident", 0)?;
        if ident[..4] != *b"\x7fELF" {
            return Err(h.invalid(
                "e_ident magic",
                u32::from_le_bytes([ident[0], ident[1], ident[2], ident[3]]).into(),
                "not an ELF file",
            ));
        }
        if ident[4] != ELFCLASS32 {
            return Err(h.invalid(
                "e_ident[EI_CLASS]",
                ident[4].into(),
                "not a 32-bit ELF file",
            ));
        }
        if ident[5] != ELFDATA2LSB {
            return Err(h.invalid("e_ident[EI_DATA]", ident[5].into(), "not little endian"));
        }
        if ident[6] != EV_CURRENT {
            return Err(h.invalid(
                "e_ident[EI_VERSION]",
                ident[6].into(),
                "unknown ELF version",
            ));
        }
        h.bytes("ELF32 header", 0, EHDR_SIZE)?;
        let e_type = h.u16("e_type", 16)?;
        let machine = h.u16("e_machine", 18)?;
        let version = h.u32("e_version", 20)?;
        if version != u32::from(EV_CURRENT) {
            return Err(h.invalid("e_version", version.into(), "unknown ELF version"));
        }
        let shoff = h.u32("e_shoff", 32)? as usize;
        let shentsize = h.u16("e_shentsize", 46)? as usize;
        let shnum = h.u16("e_shnum", 48)? as usize;
        let shstrndx = h.u16("e_shstrndx", 50)? as usize;
        if shnum > MAX_SECTIONS {
            return Err(h.invalid(
                "e_shnum",
                shnum as u64,
                "more sections than any GRUB file has",
            ));
        }
        if shnum > 0 && shentsize < SHDR_SIZE {
            return Err(h.invalid(
                "e_shentsize",
                shentsize as u64,
                "smaller than an ELF32 section header",
            ));
        }
        let mut raw = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let at = shoff.checked_add(i * shentsize).ok_or_else(|| {
                h.invalid(
                    "e_shoff",
                    shoff as u64,
                    "section table beyond the address space",
                )
            })?;
            let s = Fields::new(what, h.bytes("section header", at, SHDR_SIZE)?);
            raw.push((
                s.u32("sh_name", 0)?,
                Section {
                    name: String::new(),
                    sh_type: s.u32("sh_type", 4)?,
                    flags: s.u32("sh_flags", 8)?,
                    addr: s.u32("sh_addr", 12)?,
                    offset: s.u32("sh_offset", 16)?,
                    size: s.u32("sh_size", 20)?,
                    addralign: s.u32("sh_addralign", 32)?,
                },
            ));
        }
        // Section names, when there is a name table; a name that does not resolve stays
        // empty (names only serve lookups and messages).
        let strtab = raw
            .get(shstrndx)
            .filter(|_| shstrndx != 0)
            .and_then(|(_, s)| section_bytes(data, s));
        let sections = raw
            .into_iter()
            .map(|(name_off, mut s)| {
                if let Some(tab) = strtab {
                    s.name = c_string_at(tab, name_off as usize).unwrap_or_default();
                }
                s
            })
            .collect();
        Ok(Elf32 {
            data,
            e_type,
            machine,
            sections,
        })
    }

    /// The file bytes of a section (`None` for NOBITS or when it lies outside the file).
    pub fn section_data(&self, section: &Section) -> Option<&'a [u8]> {
        section_bytes(self.data, section)
    }

    /// The first section called `name`.
    pub fn section_named(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

fn section_bytes<'a>(data: &'a [u8], s: &Section) -> Option<&'a [u8]> {
    if s.sh_type == SHT_NOBITS {
        return None;
    }
    let start = s.offset as usize;
    data.get(start..start.checked_add(s.size as usize)?)
}

fn c_string_at(tab: &[u8], at: usize) -> Option<String> {
    let rest = tab.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// kernel.img laid out as it runs at its link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatKernel {
    /// Bytes from `link_addr` to the end of the last loaded section (`_edata`).
    pub image: Vec<u8>,
    /// Bytes of `SHT_NOBITS` (bss) after the image, cleared by the kernel at startup.
    pub bss_size: u32,
}

/// What went wrong flattening kernel.img, beyond plain parse errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelLayoutError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("kernel.img is not an i386 executable (e_type {e_type}, e_machine {machine})")]
    NotI386Executable { e_type: u16, machine: u16 },
    #[error("kernel.img has no loadable code section")]
    NoText,
    #[error("kernel.img section {name} starts at {addr:#x}, not at the link address {link_addr:#x} (miscompiled kernel.img?)")]
    TextAddress {
        name: String,
        addr: u32,
        link_addr: u32,
    },
    #[error("kernel.img section {name} at {addr:#x} breaks its alignment of {align}")]
    Misaligned { name: String, addr: u32, align: u32 },
    #[error("kernel.img section {name} at {addr:#x} (+{size:#x}) lies below or overlaps the sections before it")]
    Overlap { name: String, addr: u32, size: u32 },
    #[error("kernel.img section {name} is outside the file")]
    SectionOutsideFile { name: String },
    #[error("kernel.img is too big: {what} ends at {end:#x}, the limit is {limit:#x}")]
    TooBig {
        what: &'static str,
        end: u64,
        limit: u64,
    },
}

/// Lay out kernel.img at `link_addr` as grub-mkimage does for i386-pc; `max_end` bounds
/// `link_addr + image + bss` (0x68000 for i386-pc) and is checked before allocating.
pub fn flatten_kernel(
    data: &[u8],
    link_addr: u32,
    max_end: u64,
) -> Result<FlatKernel, KernelLayoutError> {
    let elf = Elf32::parse("kernel.img ELF", data)?;
    if elf.e_type != ET_EXEC || elf.machine != EM_386 {
        return Err(KernelLayoutError::NotI386Executable {
            e_type: elf.e_type,
            machine: elf.machine,
        });
    }
    // grub-mkimage places text sections first, then data sections, each at its own
    // address; every text section must sit at the link address (it checks each one).
    let texts: Vec<&Section> = elf.sections.iter().filter(|s| s.is_text()).collect();
    let datas: Vec<&Section> = elf.sections.iter().filter(|s| s.is_data()).collect();
    if texts.is_empty() {
        return Err(KernelLayoutError::NoText);
    }
    let mut end: u64 = 0; // relative to link_addr
    for s in texts.iter().chain(datas.iter()) {
        if s.is_text() && s.addr != link_addr {
            return Err(KernelLayoutError::TextAddress {
                name: s.name.clone(),
                addr: s.addr,
                link_addr,
            });
        }
        if s.addralign > 1 && s.addr % s.addralign != 0 {
            return Err(KernelLayoutError::Misaligned {
                name: s.name.clone(),
                addr: s.addr,
                align: s.addralign,
            });
        }
        let rel = u64::from(s.addr)
            .checked_sub(u64::from(link_addr))
            .filter(|&rel| rel >= end)
            .ok_or_else(|| KernelLayoutError::Overlap {
                name: s.name.clone(),
                addr: s.addr,
                size: s.size,
            })?;
        end = rel + u64::from(s.size);
        if u64::from(link_addr) + end > max_end {
            return Err(KernelLayoutError::TooBig {
                what: "the loaded sections",
                end: u64::from(link_addr) + end,
                limit: max_end,
            });
        }
    }
    // bss: from the end of the image to the end of the last NOBITS section.
    let mut bss_end = end;
    for s in elf
        .sections
        .iter()
        .filter(|s| s.sh_type == SHT_NOBITS && s.flags & SHF_ALLOC != 0)
    {
        let s_end = (u64::from(s.addr) + u64::from(s.size)).saturating_sub(u64::from(link_addr));
        bss_end = bss_end.max(s_end);
    }
    if u64::from(link_addr) + bss_end > max_end {
        return Err(KernelLayoutError::TooBig {
            what: "the kernel with its bss",
            end: u64::from(link_addr) + bss_end,
            limit: max_end,
        });
    }
    let mut image = vec![0u8; end as usize];
    for s in texts.iter().chain(datas.iter()) {
        let bytes = elf
            .section_data(s)
            .ok_or_else(|| KernelLayoutError::SectionOutsideFile {
                name: s.name.clone(),
            })?;
        let at = (s.addr - link_addr) as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Ok(FlatKernel {
        image,
        bss_size: (bss_end - end) as u32,
    })
}

/// The dependencies a GRUB module declares in its `.moddeps` section (NUL-separated
/// names), and its own name from `.modname`. Used to check a module file is what
/// moddep.lst says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: Option<String>,
    pub deps: Vec<String>,
}

/// Parse a GRUB module (`*.mod`: ELF32 relocatable i386 object).
pub fn module_info(data: &[u8]) -> Result<ModuleInfo, ParseError> {
    let elf = Elf32::parse("GRUB module ELF", data)?;
    let h = Fields::new("GRUB module ELF", data);
    if elf.e_type != ET_REL {
        return Err(h.invalid(
            "e_type",
            elf.e_type.into(),
            "a GRUB module is a relocatable object",
        ));
    }
    if elf.machine != EM_386 {
        return Err(h.invalid("e_machine", elf.machine.into(), "not an i386 module"));
    }
    let strings = |name: &str| -> Vec<String> {
        elf.section_named(name)
            .and_then(|s| elf.section_data(s))
            .map(|d| {
                d.split(|&b| b == 0)
                    .filter(|p| !p.is_empty())
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ModuleInfo {
        name: strings(".modname").into_iter().next(),
        deps: strings(".moddeps"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One synthetic section: (name, type, flags, addr, align, content; for NOBITS only
    /// the length counts).
    pub(crate) type TestSection<'a> = (&'a str, u32, u32, u32, u32, Vec<u8>);

    /// A synthetic ELF32 i386 file. Used by the unit tests of this module and of the core
    /// builder.
    pub(crate) fn make_elf(e_type: u16, sections: &[TestSection]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut shstrtab = vec![0u8];
        let mut headers: Vec<[u32; 10]> = vec![[0; 10]];
        let data_start = EHDR_SIZE;
        for (name, ty, flags, addr, align, content) in sections {
            let name_off = shstrtab.len() as u32;
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
            let offset = (data_start + body.len()) as u32;
            let size = if *ty == SHT_NOBITS {
                content.len() as u32
            } else {
                body.extend_from_slice(content);
                content.len() as u32
            };
            headers.push([name_off, *ty, *flags, *addr, offset, size, 0, 0, *align, 0]);
        }
        let strtab_off = (data_start + body.len()) as u32;
        let strtab_name = shstrtab.len() as u32;
        shstrtab.extend_from_slice(b".shstrtab\0");
        headers.push([
            strtab_name,
            3,
            0,
            0,
            strtab_off,
            shstrtab.len() as u32,
            0,
            0,
            1,
            0,
        ]);
        body.extend_from_slice(&shstrtab);
        let shoff = (data_start + body.len()) as u32;
        let mut out = vec![0u8; EHDR_SIZE];
        out[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        out[16..18].copy_from_slice(&e_type.to_le_bytes());
        out[18..20].copy_from_slice(&EM_386.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..36].copy_from_slice(&shoff.to_le_bytes());
        out[46..48].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
        out[48..50].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[50..52].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
        out.extend_from_slice(&body);
        for h in headers {
            for v in h {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn small_kernel() -> Vec<u8> {
        make_elf(
            ET_EXEC,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0x9000,
                    1,
                    vec![0xAA; 5],
                ),
                (".rodata", SHT_PROGBITS, SHF_ALLOC, 0x9008, 4, vec![0xBB; 6]),
                (
                    ".data",
                    SHT_PROGBITS,
                    SHF_ALLOC | 1,
                    0x9020,
                    32,
                    vec![0xCC; 3],
                ),
                (
                    ".bss",
                    SHT_NOBITS,
                    SHF_ALLOC | 1,
                    0x9040,
                    32,
                    vec![0; 0x100],
                ),
                (".comment", SHT_PROGBITS, 0, 0, 1, b"gcc".to_vec()),
            ],
        )
    }

    #[test]
    fn flattens_sections_at_their_addresses() {
        let k = flatten_kernel(&small_kernel(), 0x9000, 0x68000).unwrap();
        let mut want = vec![0u8; 0x23];
        want[..5].fill(0xAA);
        want[8..14].fill(0xBB);
        want[0x20..0x23].fill(0xCC);
        assert_eq!(k.image, want, "gaps are zero, non-alloc sections left out");
        assert_eq!(k.bss_size, 0x9140 - 0x9023);
    }

    #[test]
    fn text_must_be_at_the_link_address() {
        let elf = make_elf(
            ET_EXEC,
            &[(
                ".text",
                SHT_PROGBITS,
                SHF_ALLOC | SHF_EXECINSTR,
                0x8000,
                1,
                vec![1; 4],
            )],
        );
        let err = flatten_kernel(&elf, 0x9000, 0x68000).unwrap_err();
        assert!(
            matches!(err, KernelLayoutError::TextAddress { addr: 0x8000, .. }),
            "{err}"
        );
    }

    #[test]
    fn misaligned_overlapping_and_huge_sections_are_errors() {
        let mis = make_elf(
            ET_EXEC,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0x9000,
                    1,
                    vec![1; 4],
                ),
                (".data", SHT_PROGBITS, SHF_ALLOC, 0x9006, 4, vec![1; 4]),
            ],
        );
        assert!(matches!(
            flatten_kernel(&mis, 0x9000, 0x68000),
            Err(KernelLayoutError::Misaligned { .. })
        ));
        let overlap = make_elf(
            ET_EXEC,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0x9000,
                    1,
                    vec![1; 16],
                ),
                (".data", SHT_PROGBITS, SHF_ALLOC, 0x9008, 4, vec![1; 4]),
            ],
        );
        assert!(matches!(
            flatten_kernel(&overlap, 0x9000, 0x68000),
            Err(KernelLayoutError::Overlap { .. })
        ));
        // A data section claiming an address far away: refused before allocating.
        let far = make_elf(
            ET_EXEC,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0x9000,
                    1,
                    vec![1; 16],
                ),
                (".data", SHT_PROGBITS, SHF_ALLOC, 0xF000_0000, 4, vec![1; 4]),
            ],
        );
        assert!(matches!(
            flatten_kernel(&far, 0x9000, 0x68000),
            Err(KernelLayoutError::TooBig { .. })
        ));
        let bss = make_elf(
            ET_EXEC,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0x9000,
                    1,
                    vec![1; 16],
                ),
                (".bss", SHT_NOBITS, SHF_ALLOC, 0x9010, 4, vec![0; 0x70000]),
            ],
        );
        assert!(matches!(
            flatten_kernel(&bss, 0x9000, 0x68000),
            Err(KernelLayoutError::TooBig { .. })
        ));
    }

    #[test]
    fn truncated_kernel_is_a_typed_error_at_every_length() {
        let k = small_kernel();
        for len in 0..k.len() {
            match flatten_kernel(&k[..len], 0x9000, 0x68000) {
                // The section table is at the end: every cut loses part of it.
                Err(KernelLayoutError::Parse(_)) => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
        // Headers intact but a section's data pointing past the end of the file.
        let mut k2 = k.clone();
        let shoff = u32::from_le_bytes(k2[32..36].try_into().unwrap()) as usize;
        let text_hdr = shoff + SHDR_SIZE; // section 1 = .text
        k2[text_hdr + 16..text_hdr + 20].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert!(matches!(
            flatten_kernel(&k2, 0x9000, 0x68000),
            Err(KernelLayoutError::SectionOutsideFile { .. })
        ));
        assert!(flatten_kernel(b"not an elf file at all, really not", 0x9000, 0x68000).is_err());
    }

    #[test]
    fn module_info_reads_name_and_deps() {
        let m = make_elf(
            ET_REL,
            &[
                (
                    ".text",
                    SHT_PROGBITS,
                    SHF_ALLOC | SHF_EXECINSTR,
                    0,
                    1,
                    vec![0x90; 4],
                ),
                (
                    ".moddeps",
                    SHT_PROGBITS,
                    0,
                    0,
                    1,
                    b"fshelp\0crypto\0".to_vec(),
                ),
                (".modname", SHT_PROGBITS, 0, 0, 1, b"ext2\0".to_vec()),
            ],
        );
        let info = module_info(&m).unwrap();
        assert_eq!(info.name.as_deref(), Some("ext2"));
        assert_eq!(info.deps, ["fshelp", "crypto"]);
        assert!(
            module_info(&small_kernel()).is_err(),
            "an executable is not a module"
        );
    }
}
