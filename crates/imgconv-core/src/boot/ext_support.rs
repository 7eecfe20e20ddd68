//! Can GRUB read the root filesystem? GRUB finds `/boot/grub` (modules, grub.cfg) and the
//! kernel with its own ext2/3/4 driver, which refuses a filesystem with an "incompatible"
//! feature it does not know. Better to fail the conversion with the feature's name than to
//! produce a disk that stops at `grub rescue>`.
//!
//! The rule (GRUB `grub-core/fs/ext2.c`, `grub_ext2_mount`): a filesystem whose revision
//! is not 0 is refused when `s_feature_incompat & ~(EXT2_DRIVER_SUPPORTED_INCOMPAT |
//! EXT2_DRIVER_IGNORED_INCOMPAT)` is non-zero. The driver is read-only and never looks at
//! `s_feature_ro_compat` (or compat). The two sets, read from the upstream tags:
//!
//! | GRUB | supported | ignored |
//! |---|---|---|
//! | 2.00 | filetype, extent, flex_bg | needs_recovery |
//! | 2.02 | + meta_bg, 64bit | + mmp |
//! | 2.04, 2.06 | + encrypt | |
//! | 2.12 | | + metadata_csum_seed, large_dir |
//!
//! Distributions backport: Debian's 2.06-13 already ignores metadata_csum_seed and
//! large_dir (checked with grub-fstest). So [`GrubExtSupport::detect`] first looks for the
//! compiled mask itself in the build's `ext2.mod` (the constant `~(supported|ignored)` is
//! an immediate operand of the test in `grub_ext2_mount`), and only falls back to the
//! version table (version from `modinfo.sh`) when exactly one known mask is not found.

use super::{BootError, GrubPlatformFiles};

/// `s_feature_incompat` bits (e2fsprogs `lib/ext2fs/ext2_fs.h`), with e2fsprogs' names.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x0001;
    pub const FILETYPE: u32 = 0x0002;
    pub const RECOVER: u32 = 0x0004;
    pub const JOURNAL_DEV: u32 = 0x0008;
    pub const META_BG: u32 = 0x0010;
    pub const EXTENTS: u32 = 0x0040;
    pub const BIT64: u32 = 0x0080;
    pub const MMP: u32 = 0x0100;
    pub const FLEX_BG: u32 = 0x0200;
    pub const EA_INODE: u32 = 0x0400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;

    /// Names as `tune2fs -l`/`mke2fs -O` spell them.
    pub const NAMES: &[(u32, &str)] = &[
        (COMPRESSION, "compression"),
        (FILETYPE, "filetype"),
        (RECOVER, "needs_recovery"),
        (JOURNAL_DEV, "journal_dev"),
        (META_BG, "meta_bg"),
        (EXTENTS, "extent"),
        (BIT64, "64bit"),
        (MMP, "mmp"),
        (FLEX_BG, "flex_bg"),
        (EA_INODE, "ea_inode"),
        (DIRDATA, "dirdata"),
        (CSUM_SEED, "metadata_csum_seed"),
        (LARGEDIR, "large_dir"),
        (INLINE_DATA, "inline_data"),
        (ENCRYPT, "encrypt"),
        (CASEFOLD, "casefold"),
    ];
}

use incompat::*;

/// Accepted incompat sets (supported | ignored) of upstream releases, oldest first.
const GRUB_2_00: u32 = FILETYPE | EXTENTS | FLEX_BG | RECOVER;
const GRUB_2_02: u32 = GRUB_2_00 | META_BG | BIT64 | MMP;
const GRUB_2_04: u32 = GRUB_2_02 | ENCRYPT;
const GRUB_2_12: u32 = GRUB_2_04 | CSUM_SEED | LARGEDIR;
const KNOWN_MASKS: &[u32] = &[GRUB_2_00, GRUB_2_02, GRUB_2_04, GRUB_2_12];

/// The incompat features one GRUB build's ext2 driver accepts, and how we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubExtSupport {
    /// `EXT2_DRIVER_SUPPORTED_INCOMPAT | EXT2_DRIVER_IGNORED_INCOMPAT`.
    pub accepted_incompat: u32,
    /// Where the set comes from, for messages ("ext2.mod of GRUB 2.06-13+deb12u2", …).
    pub basis: String,
}

impl GrubExtSupport {
    /// The set of an upstream GRUB version such as `"2.06"` or `"2.06-13+deb12u2"` (the
    /// leading `major.minor` counts). An unknown or absent version gets 2.02's set, the
    /// oldest release whose i386-pc format imgconv builds.
    pub fn for_version(version: Option<&str>) -> Self {
        let parsed = version.and_then(parse_major_minor);
        let accepted = match parsed {
            Some(v) if v >= (2, 12) => GRUB_2_12,
            Some(v) if v >= (2, 4) => GRUB_2_04,
            Some(v) if v >= (2, 2) => GRUB_2_02,
            Some(_) => GRUB_2_00,
            None => GRUB_2_02,
        };
        let basis = match (version, parsed) {
            (Some(v), Some(_)) => format!("GRUB {v} (upstream ext2.c of that release)"),
            (Some(v), None) => format!("GRUB of unknown version {v:?} (assumed 2.02)"),
            (None, _) => "GRUB of unknown version (assumed 2.02)".to_string(),
        };
        GrubExtSupport {
            accepted_incompat: accepted,
            basis,
        }
    }

    /// The set of the GRUB build in `files`: from the mask compiled into `ext2.mod` when
    /// exactly one known mask is found there, else from the version in `modinfo.sh`.
    pub fn detect(files: &GrubPlatformFiles) -> Self {
        let version = files.grub_version();
        let label = version
            .as_ref()
            .map(|v| v.package.clone().unwrap_or_else(|| v.upstream.clone()));
        if let Some(module) = files.get("ext2.mod") {
            let found: Vec<u32> = KNOWN_MASKS
                .iter()
                .copied()
                .filter(|m| contains(module, &(!m).to_le_bytes()))
                .collect();
            if let [mask] = found[..] {
                return GrubExtSupport {
                    accepted_incompat: mask,
                    basis: format!(
                        "ext2.mod of GRUB {}",
                        label.as_deref().unwrap_or("(unknown version)")
                    ),
                };
            }
        }
        Self::for_version(version.as_ref().map(|v| v.upstream.as_str()))
    }

    /// Refuse a filesystem with incompat features this GRUB cannot read.
    /// `ro_compat` is not tested: GRUB's driver is read-only and ignores it (it is
    /// taken so callers pass the superblock's sets as they are).
    pub fn check(&self, incompat: u32, _ro_compat: u32) -> Result<(), BootError> {
        let unknown = incompat & !self.accepted_incompat;
        if unknown == 0 {
            return Ok(());
        }
        Err(BootError::RootFsUnreadableByGrub {
            features: feature_names(unknown),
            grub: self.basis.clone(),
        })
    }
}

/// Refuse a root filesystem GRUB of `grub_version` cannot read (upstream table; see
/// [`GrubExtSupport::detect`] to use the build's own ext2.mod instead).
pub fn check_root_fs_for_grub(
    incompat: u32,
    ro_compat: u32,
    grub_version: Option<&str>,
) -> Result<(), BootError> {
    GrubExtSupport::for_version(grub_version).check(incompat, ro_compat)
}

/// Names of the incompat bits in `bits`; unnamed bits as hex.
pub fn feature_names(bits: u32) -> Vec<String> {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|b| bits & b != 0)
        .map(|b| {
            NAMES
                .iter()
                .find(|(v, _)| *v == b)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| format!("incompat bit {b:#x}"))
        })
        .collect()
}

fn parse_major_minor(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_table_follows_upstream() {
        let ok = |v: Option<&str>, bits: u32| check_root_fs_for_grub(bits, 0, v).is_ok();
        let debian_default = FILETYPE | EXTENTS | FLEX_BG | BIT64 | RECOVER;
        assert!(ok(Some("2.06"), debian_default));
        assert!(ok(
            Some("2.06-13+deb12u2"),
            debian_default | ENCRYPT | MMP | META_BG
        ));
        assert!(!ok(Some("2.06"), debian_default | CSUM_SEED));
        assert!(ok(Some("2.12"), debian_default | CSUM_SEED | LARGEDIR));
        assert!(!ok(Some("2.12"), debian_default | INLINE_DATA));
        assert!(!ok(Some("2.02"), ENCRYPT));
        assert!(!ok(Some("2.00"), BIT64));
        assert!(ok(None, debian_default), "unknown version: 2.02's set");
        assert!(!ok(None, ENCRYPT));
        assert!(ok(Some("2.06"), 0), "ro_compat never matters");
    }

    #[test]
    fn error_names_every_offending_feature() {
        let err = check_root_fs_for_grub(
            FILETYPE | INLINE_DATA | CASEFOLD | 0x4000_0000,
            0,
            Some("2.06"),
        )
        .unwrap_err();
        let msg = err.to_string();
        for want in ["inline_data", "casefold", "0x40000000", "2.06"] {
            assert!(msg.contains(want), "{msg}");
        }
        assert!(!msg.contains("filetype"), "{msg}");
    }

    #[test]
    fn detects_the_mask_compiled_into_ext2_mod() {
        let mut module = vec![0x90u8; 64];
        module.extend_from_slice(&(!GRUB_2_12).to_le_bytes());
        let files = GrubPlatformFiles::from_files(
            "i386-pc",
            [
                ("ext2.mod".to_string(), module),
                (
                    "modinfo.sh".to_string(),
                    b"grub_version=\"2.06\"\ngrub_package_version=\"2.06-13+deb12u2\"\n".to_vec(),
                ),
            ],
        )
        .unwrap();
        let s = GrubExtSupport::detect(&files);
        assert_eq!(
            s.accepted_incompat, GRUB_2_12,
            "backported csum_seed/large_dir found"
        );
        assert!(s.basis.contains("2.06-13+deb12u2"), "{}", s.basis);
        // Without a recognisable mask: the version table.
        let files = GrubPlatformFiles::from_files(
            "i386-pc",
            [
                ("ext2.mod".to_string(), vec![0; 64]),
                (
                    "modinfo.sh".to_string(),
                    b"grub_version=\"2.06\"\n".to_vec(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(GrubExtSupport::detect(&files).accepted_incompat, GRUB_2_04);
    }
}
