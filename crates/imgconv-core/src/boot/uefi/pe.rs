//! PE/COFF images (UEFI applications) and the GRUB module area inside a GRUB EFI image.
//!
//! Only what we need to recognise and read is parsed, every field through
//! [`Fields`]: the DOS header's `e_lfanew` (0x3C), the `PE\0\0` signature, the COFF file
//! header (machine, number of sections, size of the optional header) and the section
//! table (Microsoft PE/COFF specification, "Section Table"). A GRUB EFI image made by
//! `grub-mkimage -O x86_64-efi` (signed or not) carries its embedded modules, config and
//! prefix in a section named `mods` (GRUB `util/mkimage.c`), laid out as
//! `struct grub_module_info64 { u32 magic "mimg"; u32 padding; u64 offset; u64 size }`
//! followed by records `struct grub_module_header { u32 type; u32 size }` + payload, each
//! padded to 8 bytes (`include/grub/kernel.h`; docs/grub-bios-format.md).

use crate::bytes::{Fields, ParseError};

/// COFF machine type of x86-64 images (`IMAGE_FILE_MACHINE_AMD64`).
pub const MACHINE_AMD64: u16 = 0x8664;
/// `GRUB_MODULE_MAGIC`, the bytes "mimg" read as a little-endian u32.
pub const GRUB_MODULE_MAGIC: u32 = 0x676d_696d;
/// Module record types (`OBJ_TYPE_*` in GRUB's kernel.h).
pub const OBJ_TYPE_ELF: u32 = 0;
pub const OBJ_TYPE_MEMDISK: u32 = 1;
pub const OBJ_TYPE_CONFIG: u32 = 2;
pub const OBJ_TYPE_PREFIX: u32 = 3;
/// Most sections accepted (real images have 4–10; the format allows 96 for EFI loaders).
const MAX_SECTIONS: u16 = 96;
/// Most module records walked (the signed Debian image has 128).
const MAX_RECORDS: usize = 10_000;

/// One section of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSection {
    /// Name, NUL padding removed (`.text`, `mods`, `.sbat`…).
    pub name: String,
    /// Offset of its raw data in the file.
    pub file_offset: u32,
    /// Bytes of raw data in the file that belong to it: `min(VirtualSize, SizeOfRawData)`
    /// (the raw size is padded to the file alignment).
    pub file_len: u32,
}

/// The headers of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage {
    /// COFF machine type ([`MACHINE_AMD64`] for x86-64).
    pub machine: u16,
    /// Sections in table order.
    pub sections: Vec<PeSection>,
}

impl PeImage {
    /// Parse the headers of `data`, a whole PE file. Every section must lie inside it.
    pub fn parse(data: &[u8]) -> Result<PeImage, ParseError> {
        let dos = Fields::new("PE DOS header", data);
        if dos.bytes("e_magic", 0, 2)? != b"MZ" {
            return Err(dos.invalid("e_magic", u64::from(dos.u16("e_magic", 0)?), "not MZ"));
        }
        let pe = dos.u32("e_lfanew", 0x3C)? as usize;
        let sig = dos.bytes("PE signature", pe, 4)?;
        if sig != b"PE\0\0" {
            return Err(dos.invalid(
                "PE signature",
                u64::from(u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]])),
                "not PE\\0\\0",
            ));
        }
        let coff = Fields::new("COFF file header", data.get(pe + 4..).unwrap_or_default());
        let machine = coff.u16("Machine", 0)?;
        let count = coff.u16("NumberOfSections", 2)?;
        if count > MAX_SECTIONS {
            return Err(coff.invalid(
                "NumberOfSections",
                count.into(),
                "more sections than any loader accepts",
            ));
        }
        let opt_size = coff.u16("SizeOfOptionalHeader", 16)? as usize;
        let table_at = pe + 4 + 20 + opt_size;
        let table = Fields::new("PE section table", data.get(table_at..).unwrap_or_default());
        let mut sections = Vec::with_capacity(count.into());
        for i in 0..usize::from(count) {
            let at = i * 40;
            let raw_name = table.bytes("Name", at, 8)?;
            let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
            let name = String::from_utf8_lossy(&raw_name[..name_len]).into_owned();
            let virtual_size = table.u32("VirtualSize", at + 8)?;
            let raw_size = table.u32("SizeOfRawData", at + 16)?;
            let raw_ptr = table.u32("PointerToRawData", at + 20)?;
            let file_len = if virtual_size == 0 {
                raw_size
            } else {
                virtual_size.min(raw_size)
            };
            if u64::from(raw_ptr) + u64::from(file_len) > data.len() as u64 {
                return Err(table.invalid(
                    "PointerToRawData",
                    raw_ptr.into(),
                    "section data beyond the end of the file",
                ));
            }
            sections.push(PeSection {
                name,
                file_offset: raw_ptr,
                file_len,
            });
        }
        Ok(PeImage { machine, sections })
    }

    /// The raw bytes of the first section called `name`.
    pub fn section<'d>(&self, data: &'d [u8], name: &str) -> Option<&'d [u8]> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        data.get(s.file_offset as usize..(s.file_offset as usize + s.file_len as usize))
    }
}

/// What a GRUB EFI image carries in its `mods` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEfiImageInfo {
    /// Embedded ELF modules.
    pub modules: usize,
    /// Whether a memdisk is embedded.
    pub memdisk: bool,
    /// The embedded config script (`OBJ_TYPE_CONFIG`), if any.
    pub config: Option<String>,
    /// The embedded prefix (`OBJ_TYPE_PREFIX`), e.g. `/EFI/debian`.
    pub prefix: Option<String>,
}

impl GrubEfiImageInfo {
    /// The ESP directory the prefix names: `/EFI/debian` → `debian`. `None` when the
    /// prefix has a device part (`(hd0,gpt1)/…`) or is not `/EFI/<one name>`; the name
    /// must be a plain FAT-safe name (letters, digits, `.`, `_`, `-`).
    pub fn esp_directory(&self) -> Option<String> {
        let p = self.prefix.as_deref()?.trim_end_matches('/');
        let mut parts = p.split('/');
        let (Some(""), Some(efi), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && name != "."
            && name != "..";
        (efi.eq_ignore_ascii_case("EFI") && plain).then(|| name.to_string())
    }
}

/// Read the GRUB module area of a GRUB EFI image. `Ok(None)` when `data` is a PE image
/// without a `mods` section (not GRUB, e.g. shim); an error when it is not a PE image or
/// the module area is malformed.
pub fn grub_efi_image_info(data: &[u8]) -> Result<Option<GrubEfiImageInfo>, ParseError> {
    let pe = PeImage::parse(data)?;
    let Some(mods) = pe.section(data, "mods") else {
        return Ok(None);
    };
    parse_module_area(mods).map(Some)
}

/// Walk `grub_module_info64` and its records.
pub fn parse_module_area(mods: &[u8]) -> Result<GrubEfiImageInfo, ParseError> {
    let f = Fields::new("GRUB module info", mods);
    let magic = f.u32("magic", 0)?;
    if magic != GRUB_MODULE_MAGIC {
        return Err(f.invalid("magic", magic.into(), "not \"mimg\""));
    }
    let offset = f.u64("offset", 8)?;
    let size = f.u64("size", 16)?;
    if size > mods.len() as u64 || offset < 24 || offset > size {
        return Err(f.invalid(
            "size",
            size,
            "module area larger than its section, or records before the header's end",
        ));
    }
    let area = Fields::new("GRUB module record", &mods[..size as usize]);
    let mut info = GrubEfiImageInfo::default();
    let mut at = offset as usize;
    let mut records = 0usize;
    while at < size as usize {
        records += 1;
        if records > MAX_RECORDS {
            return Err(area.invalid("type", 0, "too many module records"));
        }
        let kind = area.u32("type", at)?;
        let len = area.u32("size", at + 4)? as usize;
        if len < 8 {
            return Err(area.invalid("size", len as u64, "smaller than its own header"));
        }
        let payload = area.bytes("payload", at + 8, len - 8)?;
        let text = || {
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            String::from_utf8_lossy(&payload[..end]).into_owned()
        };
        match kind {
            OBJ_TYPE_ELF => info.modules += 1,
            OBJ_TYPE_MEMDISK => info.memdisk = true,
            OBJ_TYPE_CONFIG => info.config = Some(text()),
            OBJ_TYPE_PREFIX => info.prefix = Some(text()),
            _ => {}
        }
        at = at
            .checked_add(len.div_ceil(8) * 8)
            .ok_or_else(|| area.invalid("size", len as u64, "overflows"))?;
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ file with the given sections (name, data), for tests.
    pub(crate) fn fake_pe(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 0x80];
        out[0..2].copy_from_slice(b"MZ");
        out[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        out[0x40..0x44].copy_from_slice(b"PE\0\0");
        out[0x44..0x46].copy_from_slice(&MACHINE_AMD64.to_le_bytes());
        out[0x46..0x48].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        out[0x54..0x56].copy_from_slice(&0xF0u16.to_le_bytes());
        out.resize(0x40 + 24 + 0xF0, 0);
        let table_at = out.len();
        out.resize(table_at + 40 * sections.len(), 0);
        for (i, (name, data)) in sections.iter().enumerate() {
            let ptr = out.len().div_ceil(0x200) * 0x200;
            out.resize(ptr, 0);
            out.extend_from_slice(data);
            let e = table_at + 40 * i;
            out[e..e + name.len()].copy_from_slice(name.as_bytes());
            out[e + 8..e + 12].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out[e + 16..e + 20].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out[e + 20..e + 24].copy_from_slice(&(ptr as u32).to_le_bytes());
        }
        out
    }

    /// A `mods` section with one module, a config and a prefix.
    pub(crate) fn fake_mods(prefix: &str) -> Vec<u8> {
        let mut recs = Vec::new();
        let mut push = |kind: u32, payload: &[u8]| {
            let len = 8 + payload.len();
            recs.extend_from_slice(&kind.to_le_bytes());
            recs.extend_from_slice(&(len as u32).to_le_bytes());
            recs.extend_from_slice(payload);
            recs.resize(recs.len().div_ceil(8) * 8, 0);
        };
        push(OBJ_TYPE_ELF, b"\x7fELF-not-really");
        push(OBJ_TYPE_CONFIG, b"normal (memdisk)/grub.cfg\n\0");
        push(OBJ_TYPE_PREFIX, format!("{prefix}\0").as_bytes());
        let mut out = Vec::new();
        out.extend_from_slice(&GRUB_MODULE_MAGIC.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&24u64.to_le_bytes());
        out.extend_from_slice(&(24 + recs.len() as u64).to_le_bytes());
        out.extend_from_slice(&recs);
        out.resize(out.len() + 100, 0); // section padding after the area
        out
    }

    #[test]
    fn reads_sections_and_the_prefix() {
        let mods = fake_mods("/EFI/debian");
        let img = fake_pe(&[(".text", &[0xC3; 10]), ("mods", &mods)]);
        let pe = PeImage::parse(&img).unwrap();
        assert_eq!(pe.machine, MACHINE_AMD64);
        assert_eq!(pe.sections.len(), 2);
        assert_eq!(pe.section(&img, ".text").unwrap(), &[0xC3; 10]);
        let info = grub_efi_image_info(&img).unwrap().unwrap();
        assert_eq!(info.modules, 1);
        assert_eq!(info.prefix.as_deref(), Some("/EFI/debian"));
        assert_eq!(info.config.as_deref(), Some("normal (memdisk)/grub.cfg\n"));
        assert_eq!(info.esp_directory().as_deref(), Some("debian"));
        // Not GRUB: no mods section.
        let shim = fake_pe(&[(".text", &[1, 2, 3])]);
        assert_eq!(grub_efi_image_info(&shim).unwrap(), None);
    }

    #[test]
    fn prefix_to_directory() {
        let dir = |p: &str| {
            GrubEfiImageInfo {
                prefix: Some(p.into()),
                ..Default::default()
            }
            .esp_directory()
        };
        assert_eq!(dir("/EFI/ubuntu").as_deref(), Some("ubuntu"));
        assert_eq!(dir("/efi/fedora/").as_deref(), Some("fedora"));
        assert_eq!(dir("(,gpt2)/boot/grub"), None);
        assert_eq!(dir("/boot/grub"), None);
        assert_eq!(dir("/EFI/a/b"), None);
        assert_eq!(dir("/EFI/.."), None);
        assert_eq!(dir("/EFI/a b"), None);
    }

    #[test]
    fn malformed_images_are_errors_not_panics() {
        assert!(PeImage::parse(b"MZ").is_err());
        assert!(PeImage::parse(&[0u8; 300]).is_err());
        let mut img = fake_pe(&[("mods", &fake_mods("/EFI/x"))]);
        // Truncate the section data.
        img.truncate(img.len() - 50);
        assert!(PeImage::parse(&img).is_err());
        // Bad magic, record size 0, size beyond the section.
        let mut m = fake_mods("/EFI/x");
        m[0] = b'X';
        assert!(parse_module_area(&m).is_err());
        let mut m = fake_mods("/EFI/x");
        m[28..32].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_module_area(&m).is_err());
        let mut m = fake_mods("/EFI/x");
        m[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_module_area(&m).is_err());
        let mut m = fake_mods("/EFI/x");
        m[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_module_area(&m).is_err());
        // Every truncation of a valid area fails cleanly or parses.
        let m = fake_mods("/EFI/debian");
        for n in 0..m.len() {
            let _ = parse_module_area(&m[..n]);
        }
    }
}
