//! core.img for i386-pc, built as `grub-mkimage -O i386-pc -p PREFIX MODULES…` builds it,
//! and read back for checks.
//!
//! Layout (docs/grub-bios-format.md; GRUB `util/mkimage.c`,
//! `include/grub/offsets.h`, `include/grub/kernel.h`):
//!
//! ```text
//! diskboot.img (one sector, first blocklist entry at 0x1F4)
//! lzma_decompress.img (header: +0x08 compressed size, +0x0C uncompressed size,
//!                      +0x10 Reed-Solomon redundancy, +0x14 no-RS length)
//! raw LZMA1 ( flat kernel.img ++ module area )
//! module area = grub_module_info32 { magic "mimg", offset 12, size }
//!               ++ records { u32 type, u32 size (header + padded payload) } payload…
//! ```
//!
//! Every size comes from the files: kernel size and bss from kernel.img's sections, the
//! decompressor size from lzma_decompress.img, the module sizes from the `.mod` files.
//! Only the constants of offsets.h/kernel.h (link addresses, field offsets, magic) are
//! written here.

use super::elf::{self, flatten_kernel};
use super::lzma;
use super::moddep::ModDeps;
use crate::boot::{BootError, GrubPlatformFiles};
use crate::bytes::Fields;

/// One disk sector (`GRUB_DISK_SECTOR_SIZE`).
pub const SECTOR: usize = 512;
/// Where kernel.img is linked and copied to at run time (`GRUB_KERNEL_I386_PC_LINK_ADDR`).
pub const KERNEL_LINK_ADDR: u32 = 0x9000;
/// Where the decompressor is loaded (`0x8200`, right after diskboot at 0x8000).
pub const DECOMPRESSOR_ADDR: u32 = 0x8200;
/// `0x9000 + core size (without diskboot)` must not exceed this (mkimage.c).
pub const CORE_END_LIMIT: u64 = 0x78000;
/// `0x9000 + kernel size + bss` must not exceed this (mkimage.c).
pub const KERNEL_END_LIMIT: u64 = 0x68000;
/// Largest core size counted in sectors that the blocklist can hold (mkimage.c).
pub const MAX_CORE_BYTES: u64 = 0xffff << 9;

/// Decompressor header fields (offsets.h, relative to lzma_decompress.img).
pub const DECOMPRESSOR_COMPRESSED_SIZE: usize = 0x08;
pub const DECOMPRESSOR_UNCOMPRESSED_SIZE: usize = 0x0C;
pub const DECOMPRESSOR_RS_REDUNDANCY: usize = 0x10;
pub const DECOMPRESSOR_NO_RS_LENGTH: usize = 0x14;
/// Smallest decompressor that holds the header fields above (through the boot device
/// bytes at 0x18..0x1C).
const DECOMPRESSOR_HEADER_END: usize = 0x1C;

/// diskboot.img blocklist (offsets.h `GRUB_BOOT_MACHINE_LIST_SIZE`, struct
/// grub_pc_bios_boot_blocklist { u64 start; u16 len; u16 segment; }): the first entry
/// is the last 12 bytes of the sector, further entries grow downwards.
pub const BLOCKLIST_ENTRY_SIZE: usize = 12;
pub const FIRST_BLOCKLIST: usize = SECTOR - BLOCKLIST_ENTRY_SIZE;
/// Segment of the first blocklist entry: `GRUB_BOOT_I386_PC_KERNEL_SEG + (512 >> 4)`.
pub const FIRST_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);

/// `GRUB_MODULE_MAGIC` ("mimg" on disk).
pub const MODULE_MAGIC: u32 = 0x676d_696d;
/// sizeof(struct grub_module_info32) and sizeof(struct grub_module_header).
const MODULE_INFO_SIZE: usize = 12;
const MODULE_HEADER_SIZE: usize = 8;
/// `OBJ_TYPE_ELF`, `OBJ_TYPE_PREFIX` (kernel.h).
pub const OBJ_TYPE_ELF: u32 = 0;
pub const OBJ_TYPE_CONFIG: u32 = 2;
pub const OBJ_TYPE_PREFIX: u32 = 3;

/// Longest prefix accepted (a real one is ~20 bytes).
pub const MAX_PREFIX_LEN: usize = 1024;

/// A built core.img and what went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreImage {
    /// The image as grub-mkimage writes it: diskboot sector, decompressor, payload; not
    /// padded; the first blocklist entry says "start 2, len = sectors after diskboot"
    /// (the package default start, i.e. core.img at LBA 1). This is also what goes to the
    /// guest's `/boot/grub/i386-pc/core.img`. Use [`CoreImage::for_lba`] for the disk.
    pub bytes: Vec<u8>,
    /// Embedded modules in embedding order (dependencies first).
    pub modules: Vec<String>,
    /// The PREFIX record, e.g. `(,msdos1)/boot/grub`.
    pub prefix: String,
    /// Flat kernel size (`_edata - _start`).
    pub kernel_size: u32,
    /// bss after the kernel, cleared at startup.
    pub bss_size: u32,
    /// Module area size (info header and every record).
    pub total_module_size: u32,
    /// Size of lzma_decompress.img.
    pub decompressor_size: u32,
    /// Size of the LZMA payload.
    pub compressed_size: u32,
}

impl CoreImage {
    /// Sectors the image occupies on disk (diskboot included).
    pub fn sectors(&self) -> u64 {
        self.bytes.len().div_ceil(SECTOR) as u64
    }

    /// Bytes the decompressor produces (kernel and module area).
    pub fn uncompressed_size(&self) -> u32 {
        self.kernel_size + self.total_module_size
    }

    /// The image to write at `core_lba`, padded to whole sectors, with the blocklist
    /// describing one contiguous run: `start = core_lba + 1`, `len = sectors - 1`,
    /// segment 0x820 (what grub-bios-setup writes for an embedding area without holes).
    /// `core_lba` is 1 for the MBR gap, the BIOS boot partition's first LBA for GPT.
    pub fn for_lba(&self, core_lba: u64) -> Result<Vec<u8>, BootError> {
        let mut out = self.bytes.clone();
        out.resize(self.sectors() as usize * SECTOR, 0);
        let rest = u16::try_from(self.sectors() - 1).map_err(|_| BootError::CoreTooBig {
            what: "core.img sectors after diskboot",
            size: self.sectors() - 1,
            limit: 0xffff,
        })?;
        let start = core_lba.checked_add(1).ok_or(BootError::BadArgument {
            what: "core_lba",
            why: "too large",
        })?;
        write_blocklist(&mut out[..SECTOR], start, rest)?;
        Ok(out)
    }
}

/// The first blocklist entry of a diskboot sector: where diskboot loads the rest of
/// core.img from (struct grub_pc_bios_boot_blocklist, offsets.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocklist {
    /// LBA of core.img's second sector (the one after diskboot).
    pub start: u64,
    /// Sectors to load from `start` (0 in the package's unset diskboot.img).
    pub len: u16,
    /// Real-mode segment they are loaded to ([`FIRST_SEGMENT`] for diskboot's first entry).
    pub segment: u16,
}

/// Read the first blocklist entry of `diskboot` (core.img's first sector, as on a disk),
/// the last [`BLOCKLIST_ENTRY_SIZE`] bytes of the sector.
pub fn read_first_blocklist(diskboot: &[u8]) -> Result<Blocklist, crate::bytes::ParseError> {
    let f = Fields::new("diskboot.img blocklist", diskboot);
    Ok(Blocklist {
        start: f.u64("start", FIRST_BLOCKLIST)?,
        len: f.u16("len", FIRST_BLOCKLIST + 8)?,
        segment: f.u16("segment", FIRST_BLOCKLIST + 10)?,
    })
}

/// Set the first blocklist entry of a diskboot sector, after clearing any old entries
/// below it (as grub-bios-setup does), so that a zero-length terminator follows it.
fn write_blocklist(diskboot: &mut [u8], start: u64, len: u16) -> Result<(), BootError> {
    let f = Fields::new("diskboot.img blocklist", diskboot);
    let segment = f.u16("segment", FIRST_BLOCKLIST + 10)?;
    if segment != FIRST_SEGMENT {
        return Err(BootError::ImageFormat {
            file: "diskboot.img",
            why: format!("first blocklist segment is {segment:#x}, expected {FIRST_SEGMENT:#x}"),
        });
    }
    // Old entries below the first one (from a previous setup) are cleared down to the
    // first zero-length one, which stays as the terminator.
    let mut at = FIRST_BLOCKLIST;
    loop {
        at = at
            .checked_sub(BLOCKLIST_ENTRY_SIZE)
            .filter(|&a| a > 0)
            .ok_or_else(|| BootError::ImageFormat {
                file: "diskboot.img",
                why: "no blocklist terminator in the sector".into(),
            })?;
        let f = Fields::new("diskboot.img blocklist", diskboot);
        if f.u16("len", at + 8)? == 0 {
            break;
        }
        diskboot[at..at + BLOCKLIST_ENTRY_SIZE].fill(0);
    }
    diskboot[FIRST_BLOCKLIST..FIRST_BLOCKLIST + 8].copy_from_slice(&start.to_le_bytes());
    diskboot[FIRST_BLOCKLIST + 8..FIRST_BLOCKLIST + 10].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Check a prefix is something GRUB can take: non-empty, printable, bounded.
fn check_prefix(prefix: &str) -> Result<(), BootError> {
    let why = if prefix.is_empty() {
        Some("empty")
    } else if prefix.len() > MAX_PREFIX_LEN {
        Some("too long")
    } else if prefix.chars().any(char::is_control) {
        Some("contains control characters")
    } else if !(prefix.starts_with('(') || prefix.starts_with('/')) {
        Some("must start with `(device)` or `/`")
    } else {
        None
    };
    match why {
        Some(why) => Err(BootError::BadPrefix {
            prefix: prefix.chars().take(80).collect(),
            why,
        }),
        None => Ok(()),
    }
}

/// Build core.img from `files` with `modules` (and their moddep.lst dependencies) and
/// the PREFIX record `prefix`, e.g. `build_core_image(&files, "(,msdos1)/boot/grub",
/// &["biosdisk", "part_msdos", "ext2"])`.
pub fn build_core_image(
    files: &GrubPlatformFiles,
    prefix: &str,
    modules: &[&str],
) -> Result<CoreImage, BootError> {
    check_prefix(prefix)?;

    // Kernel, laid out at its link address; refuses kernel + bss beyond 0x68000.
    let kernel = flatten_kernel(
        files.require("kernel.img")?,
        KERNEL_LINK_ADDR,
        KERNEL_END_LIMIT,
    )?;

    // Modules in dependency order, each checked to be the i386 module it claims to be.
    let deps = ModDeps::parse(files.require("moddep.lst")?)?;
    let order = deps.resolve(modules)?;
    let mut module_data = Vec::with_capacity(order.len());
    for name in &order {
        let data =
            files
                .get(&format!("{name}.mod"))
                .ok_or_else(|| BootError::MissingModuleFile {
                    platform: files.platform.clone(),
                    module: name.clone(),
                })?;
        let info = elf::module_info(data).map_err(|e| BootError::BadModule {
            module: name.clone(),
            why: e.to_string(),
        })?;
        if let Some(own) = info.name.as_deref().filter(|own| *own != name) {
            return Err(BootError::BadModule {
                module: name.clone(),
                why: format!("the file says it is module `{own}`"),
            });
        }
        module_data.push(data);
    }

    // Module area: info header, ELF records, then the prefix record (mkimage's order).
    let prefix_payload = align4(prefix.len() + 1);
    let total_module_size = MODULE_INFO_SIZE
        + module_data
            .iter()
            .map(|d| MODULE_HEADER_SIZE + align4(d.len()))
            .sum::<usize>()
        + MODULE_HEADER_SIZE
        + prefix_payload;
    let uncompressed_len = kernel.image.len() + total_module_size;
    // The payload is decoded to 0x100000 and the module area stays there; bound it well
    // below anything that could matter so the u32 fields cannot overflow.
    if uncompressed_len as u64 > u64::from(u32::MAX / 2) {
        return Err(BootError::CoreTooBig {
            what: "kernel and modules",
            size: uncompressed_len as u64,
            limit: u64::from(u32::MAX / 2),
        });
    }
    let mut payload = Vec::with_capacity(uncompressed_len);
    payload.extend_from_slice(&kernel.image);
    payload.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
    payload.extend_from_slice(&(MODULE_INFO_SIZE as u32).to_le_bytes());
    payload.extend_from_slice(&(total_module_size as u32).to_le_bytes());
    for data in &module_data {
        push_record(&mut payload, OBJ_TYPE_ELF, data, align4(data.len()));
    }
    let mut prefix_bytes = prefix.as_bytes().to_vec();
    prefix_bytes.push(0);
    push_record(&mut payload, OBJ_TYPE_PREFIX, &prefix_bytes, prefix_payload);
    debug_assert_eq!(payload.len(), uncompressed_len);

    let compressed = lzma::compress(&payload)?;

    // Decompressor with the two sizes patched; no Reed-Solomon parity is written, so the
    // redundancy field says 0.
    let mut decompressor = files.require("lzma_decompress.img")?.to_vec();
    let max_decompressor = (KERNEL_LINK_ADDR - DECOMPRESSOR_ADDR) as usize;
    if decompressor.len() > max_decompressor || decompressor.len() < DECOMPRESSOR_HEADER_END {
        return Err(BootError::ImageFormat {
            file: "lzma_decompress.img",
            why: format!(
                "{} bytes; a decompressor has between {DECOMPRESSOR_HEADER_END} and {max_decompressor}",
                decompressor.len()
            ),
        });
    }
    let no_rs = Fields::new("lzma_decompress.img", &decompressor)
        .u16("no_rs_length", DECOMPRESSOR_NO_RS_LENGTH)?;
    if usize::from(no_rs) > decompressor.len() {
        return Err(BootError::ImageFormat {
            file: "lzma_decompress.img",
            why: format!(
                "no-Reed-Solomon length {no_rs:#x} is beyond the file (core.img version mismatch?)"
            ),
        });
    }
    let put32 =
        |buf: &mut Vec<u8>, at: usize, v: u32| buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(
        &mut decompressor,
        DECOMPRESSOR_COMPRESSED_SIZE,
        compressed.len() as u32,
    );
    put32(
        &mut decompressor,
        DECOMPRESSOR_UNCOMPRESSED_SIZE,
        uncompressed_len as u32,
    );
    put32(&mut decompressor, DECOMPRESSOR_RS_REDUNDANCY, 0);

    let core_size = (decompressor.len() + compressed.len()) as u64;
    if u64::from(KERNEL_LINK_ADDR) + core_size > CORE_END_LIMIT {
        return Err(BootError::CoreTooBig {
            what: "core.img (decompressor and payload) above 0x9000",
            size: u64::from(KERNEL_LINK_ADDR) + core_size,
            limit: CORE_END_LIMIT,
        });
    }
    if core_size > MAX_CORE_BYTES {
        return Err(BootError::CoreTooBig {
            what: "core.img",
            size: core_size,
            limit: MAX_CORE_BYTES,
        });
    }

    // diskboot: first blocklist entry len = sectors after diskboot (mkimage's `num`);
    // start is left as shipped until the image is placed (for_lba).
    let mut diskboot = files.require("diskboot.img")?.to_vec();
    if diskboot.len() != SECTOR {
        return Err(BootError::ImageFormat {
            file: "diskboot.img",
            why: format!("{} bytes, must be {SECTOR}", diskboot.len()),
        });
    }
    let shipped_start = Fields::new("diskboot.img", &diskboot).u64("start", FIRST_BLOCKLIST)?;
    let rest = core_size.div_ceil(SECTOR as u64) as u16; // ≤ 0xffff by MAX_CORE_BYTES
    write_blocklist(&mut diskboot, shipped_start, rest)?;

    let mut bytes = Vec::with_capacity(SECTOR + core_size as usize);
    bytes.extend_from_slice(&diskboot);
    bytes.extend_from_slice(&decompressor);
    bytes.extend_from_slice(&compressed);
    Ok(CoreImage {
        bytes,
        modules: order,
        prefix: prefix.to_string(),
        kernel_size: kernel.image.len() as u32,
        bss_size: kernel.bss_size,
        total_module_size: total_module_size as u32,
        decompressor_size: decompressor.len() as u32,
        compressed_size: compressed.len() as u32,
    })
}

fn push_record(out: &mut Vec<u8>, kind: u32, data: &[u8], padded: usize) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&((MODULE_HEADER_SIZE + padded) as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + padded - data.len(), 0);
}

/// One record of a module area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRecord {
    /// `OBJ_TYPE_*`.
    pub kind: u32,
    /// The payload after the 8-byte header, padding included.
    pub payload: Vec<u8>,
}

impl ModuleRecord {
    /// For an ELF record, the module's name from its `.modname` section.
    pub fn module_name(&self) -> Option<String> {
        (self.kind == OBJ_TYPE_ELF)
            .then(|| elf::module_info(&self.payload).ok()?.name)
            .flatten()
    }

    /// For a PREFIX or CONFIG record, the text up to the first NUL.
    pub fn text(&self) -> Option<String> {
        matches!(self.kind, OBJ_TYPE_PREFIX | OBJ_TYPE_CONFIG).then(|| {
            let end = self
                .payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.payload.len());
            String::from_utf8_lossy(&self.payload[..end]).into_owned()
        })
    }
}

/// A core.img taken apart: the decoded payload split into kernel and module records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreContents {
    /// Decompressor header values.
    pub compressed_size: u32,
    pub uncompressed_size: u32,
    /// The whole decoded payload.
    pub payload: Vec<u8>,
    /// Flat kernel size used to find the module area.
    pub kernel_size: u32,
    /// `grub_module_info32.size`.
    pub total_module_size: u32,
    /// Records in order.
    pub records: Vec<ModuleRecord>,
}

/// Decode a core.img built from `files` (by us or by grub-mkimage) and walk its module
/// records. The decompressor size and kernel size come from `files`, which must be the
/// same GRUB build. Every size read from the image is bounded before use.
pub fn read_core_image(files: &GrubPlatformFiles, core: &[u8]) -> Result<CoreContents, BootError> {
    let kernel = flatten_kernel(
        files.require("kernel.img")?,
        KERNEL_LINK_ADDR,
        KERNEL_END_LIMIT,
    )?;
    let decompressor_size = files.require("lzma_decompress.img")?.len();
    let f = Fields::new("core.img", core);
    let compressed_size = f.u32("compressed size", SECTOR + DECOMPRESSOR_COMPRESSED_SIZE)?;
    let uncompressed_size = f.u32("uncompressed size", SECTOR + DECOMPRESSOR_UNCOMPRESSED_SIZE)?;
    let raw = f.bytes(
        "LZMA payload",
        SECTOR + decompressor_size,
        compressed_size as usize,
    )?;
    let payload = lzma::decompress(raw, u64::from(uncompressed_size), CORE_END_LIMIT * 16)?;
    let kernel_size = kernel.image.len();
    let area = Fields::new("core.img module area", &payload);
    let magic = area.u32("magic", kernel_size)?;
    if magic != MODULE_MAGIC {
        return Err(area
            .invalid("magic", magic.into(), "no module area after the kernel")
            .into());
    }
    let offset = area.u32("offset", kernel_size + 4)? as usize;
    let total = area.u32("size", kernel_size + 8)?;
    let end = kernel_size
        .checked_add(total as usize)
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| area.invalid("size", total.into(), "module area beyond the payload"))?;
    let mut records = Vec::new();
    let mut at = kernel_size
        .checked_add(offset)
        .ok_or_else(|| area.invalid("offset", offset as u64, "beyond the payload"))?;
    while at < end {
        let kind = area.u32("record type", at)?;
        let size = area.u32("record size", at + 4)? as usize;
        if size < MODULE_HEADER_SIZE || at + align4(size) > end {
            return Err(area
                .invalid("record size", size as u64, "outside the module area")
                .into());
        }
        records.push(ModuleRecord {
            kind,
            payload: payload[at + MODULE_HEADER_SIZE..at + size].to_vec(),
        });
        at += align4(size);
    }
    Ok(CoreContents {
        compressed_size,
        uncompressed_size,
        kernel_size: kernel_size as u32,
        total_module_size: total,
        payload,
        records,
    })
}
