//! The x86 Linux boot header of a `vmlinuz` (bzImage), enough to tell a 64-bit kernel
//! from a 32-bit one and to read the version string it embeds.
//!
//! Layout from Linux `Documentation/arch/x86/boot.rst` ("The real-mode kernel header"),
//! offsets from the start of the file:
//!
//! | offset | size | field          | meaning                                              |
//! |--------|------|----------------|------------------------------------------------------|
//! | 0x1F1  | 1    | setup_sects    | setup size in 512-byte sectors (0 means 4)           |
//! | 0x1FE  | 2    | boot_flag      | 0xAA55                                                |
//! | 0x202  | 4    | header         | magic "HdrS"                                          |
//! | 0x206  | 2    | version        | boot protocol version (major << 8 | minor)           |
//! | 0x20E  | 2    | kernel_version | pointer to the NUL-terminated version string, − 0x200 |
//! | 0x236  | 2    | xloadflags     | bit 0 XLF_KERNEL_64 (protocol 2.12+)                  |
//!
//! XLF_KERNEL_64 ("has the legacy 64-bit entry point at 0x200") is set by every x86_64
//! build since protocol 2.12 (Linux 3.8) and never by a 32-bit one, so with protocol ≥ 2.12
//! the flag decides. Older headers cannot tell; the caller then asks the kernel's config.

use crate::bytes::{Fields, ParseError};

/// How many bytes of the file the header parser needs at most: the setup code is at most
/// (255 + 1) sectors, and the version string lives inside it.
pub const HEADER_BYTES: usize = 256 * 512;

/// Magic "HdrS" at 0x202, little-endian.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// boot_flag at 0x1FE.
const BOOT_FLAG: u16 = 0xAA55;
/// First protocol version with `xloadflags`.
const PROTOCOL_XLOADFLAGS: u16 = 0x020C;
/// First protocol version with the `kernel_version` pointer.
const PROTOCOL_KERNEL_VERSION: u16 = 0x0200;
/// xloadflags bit 0.
const XLF_KERNEL_64: u16 = 1;
/// Longest version string kept.
const MAX_VERSION_STRING: usize = 256;

/// The architecture a kernel was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelArch {
    /// x86_64 (can also run 32-bit userlands).
    X86_64,
    /// 32-bit x86.
    I386,
    /// Not an x86 bzImage, or a header too old to tell.
    Unknown,
}

impl std::fmt::Display for KernelArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelArch::X86_64 => "x86_64",
            KernelArch::I386 => "i386",
            KernelArch::Unknown => "unknown",
        })
    }
}

/// What the boot header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImageHeader {
    /// Boot protocol version, e.g. 0x020F for 2.15.
    pub protocol: u16,
    /// From `xloadflags` (protocol ≥ 2.12); `Unknown` for older headers.
    pub arch: KernelArch,
    /// The embedded version string (`"6.1.0-28-amd64 (debian-kernel@…) #1 SMP …"`), if any.
    pub version_string: Option<String>,
}

impl BzImageHeader {
    /// Parse the start of a vmlinuz (at least the first 0x240 bytes; up to
    /// [`HEADER_BYTES`] so the version string can be found). `Ok(None)` when the data is
    /// not an x86 boot image at all (no boot flag or no "HdrS").
    pub fn parse(data: &[u8]) -> Result<Option<BzImageHeader>, ParseError> {
        let f = Fields::new("bzImage boot header", data);
        if data.len() < 0x206 {
            return Ok(None);
        }
        if f.u16("boot_flag", 0x1FE)? != BOOT_FLAG || f.u32("header", 0x202)? != HDRS_MAGIC {
            return Ok(None);
        }
        let protocol = f.u16("version", 0x206)?;
        let arch = if protocol >= PROTOCOL_XLOADFLAGS {
            if f.u16("xloadflags", 0x236)? & XLF_KERNEL_64 != 0 {
                KernelArch::X86_64
            } else {
                KernelArch::I386
            }
        } else {
            KernelArch::Unknown
        };
        let version_string = if protocol >= PROTOCOL_KERNEL_VERSION {
            let ptr = f.u16("kernel_version", 0x20E)?;
            if ptr == 0 {
                None
            } else {
                version_at(data, usize::from(ptr) + 0x200)
            }
        } else {
            None
        };
        Ok(Some(BzImageHeader {
            protocol,
            arch,
            version_string,
        }))
    }

    /// The release part of the version string (its first word, e.g. `6.1.0-28-amd64`),
    /// which is what `uname -r` prints and what `/lib/modules/<release>` is named after.
    pub fn release(&self) -> Option<&str> {
        self.version_string
            .as_deref()
            .and_then(|s| s.split_whitespace().next())
    }
}

/// The printable NUL-terminated string at `offset`, if there is one.
fn version_at(data: &[u8], offset: usize) -> Option<String> {
    let tail = data.get(offset..)?;
    let end = tail
        .iter()
        .take(MAX_VERSION_STRING)
        .position(|&b| b == 0)
        .unwrap_or(tail.len().min(MAX_VERSION_STRING));
    let s = std::str::from_utf8(&tail[..end]).ok()?;
    if s.is_empty() || s.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(s.to_string())
}

/// Build a minimal boot header, for tests here and in other modules.
#[doc(hidden)]
pub fn synthetic_header(protocol: u16, xloadflags: u16, version: &str) -> Vec<u8> {
    let mut data = vec![0u8; 0x1000];
    data[0x1F1] = 7;
    data[0x1FE..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
    data[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
    data[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
    let ptr: u16 = 0x0C00 - 0x200;
    data[0x20E..0x210].copy_from_slice(&ptr.to_le_bytes());
    data[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    data[0x0C00..0x0C00 + version.len()].copy_from_slice(version.as_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_arch_and_version_from_a_64_bit_header() {
        let data = synthetic_header(0x020F, 0x7F, "6.1.0-28-amd64 (debian-kernel@lists) #1 SMP");
        let h = BzImageHeader::parse(&data).unwrap().unwrap();
        assert_eq!(h.protocol, 0x020F);
        assert_eq!(h.arch, KernelArch::X86_64);
        assert_eq!(h.release(), Some("6.1.0-28-amd64"));
    }

    #[test]
    fn a_32_bit_header_has_no_kernel_64_flag() {
        let data = synthetic_header(0x020D, 0x00, "4.9.0-19-686-pae (x) #1 SMP");
        let h = BzImageHeader::parse(&data).unwrap().unwrap();
        assert_eq!(h.arch, KernelArch::I386);
        assert_eq!(h.release(), Some("4.9.0-19-686-pae"));
    }

    #[test]
    fn an_old_protocol_cannot_tell() {
        let data = synthetic_header(0x020A, 0x01, "2.6.32-5-amd64");
        let h = BzImageHeader::parse(&data).unwrap().unwrap();
        assert_eq!(
            h.arch,
            KernelArch::Unknown,
            "xloadflags is not defined before 2.12"
        );
    }

    #[test]
    fn not_a_bzimage_and_truncated_data() {
        assert_eq!(BzImageHeader::parse(b"\x7fELF").unwrap(), None);
        assert_eq!(BzImageHeader::parse(&vec![0u8; 4096]).unwrap(), None);
        let data = synthetic_header(0x020F, 0x01, "6.1.0");
        // Cut right after the magic: the xloadflags field is missing.
        assert!(BzImageHeader::parse(&data[..0x210]).is_err());
        // A version pointer past the data gives no string, not an error.
        let mut data = synthetic_header(0x020F, 0x01, "6.1.0");
        data[0x20E..0x210].copy_from_slice(&0xFFF0u16.to_le_bytes());
        let h = BzImageHeader::parse(&data).unwrap().unwrap();
        assert_eq!(h.version_string, None);
        assert_eq!(h.arch, KernelArch::X86_64);
    }
}
