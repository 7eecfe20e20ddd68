//! The EFI binaries that go on the ESP: shim, GRUB, MokManager, and where they come from.
//!
//! Preference order ([`find_efi_boot_files`]), signed binaries first:
//! 1. the donor's own ESP (a FAT partition of a donor disk image, read with `fatfs`
//!    through a read-only window): `EFI/<distro>/{shimx64,grubx64,mmx64}.efi` +
//!    `BOOTX64.CSV`, or `EFI/BOOT/BOOTX64.EFI` (+ `grubx64.efi`);
//! 2. the donor's packages: `/usr/lib/shim/shimx64.efi.signed` (or `shimx64.efi`),
//!    `/usr/lib/shim/mmx64.efi.signed`, `/usr/lib/shim/BOOTX64.CSV`,
//!    `/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed` (Debian/Ubuntu shim-signed and
//!    grub-efi-amd64-signed);
//! 3. the same package files on the host (when the caller allows the host);
//! 4. UNSIGNED fallback: a GRUB EFI image built from the donor's (then the host's)
//!    `/usr/lib/grub/x86_64-efi` modules by the host's `grub-mkimage -O x86_64-efi`. This
//!    is an EXTERNAL tool (Debian grub-common): converting GRUB's ELF kernel.img to a
//!    relocated PE32+ is a job of its own, not done in Rust here. The image embeds the
//!    modules a boot needs and the prefix `/EFI/BOOT`, goes to `EFI/BOOT/BOOTX64.EFI`
//!    without shim, and boots only with Secure Boot off.
//!
//! Every binary is size-capped before it is read and checked to be an x86-64 PE image;
//! GRUB must carry its `mods` section, whose prefix names the ESP directory
//! (`/EFI/debian` → `EFI/debian/`).

use super::pe::{grub_efi_image_info, GrubEfiImageInfo, PeImage, MACHINE_AMD64};
use super::UefiError;
use crate::blockio::Region;
use crate::grub_files::GrubPlatformFiles;
use crate::partition::{read_table, PartitionType};
use crate::tree::{host_kind, host_meta, DirItem, NodeMeta, TreeRead};
use crate::window::ReadOnlyWindow;
use std::fmt;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Largest EFI binary accepted (signed GRUB is ~4 MB, shim ~1 MB).
pub const MAX_EFI_BINARY_BYTES: u64 = 64 << 20;
/// Largest BOOTX64.CSV accepted (real ones are ~100 bytes).
pub const MAX_CSV_BYTES: u64 = 64 << 10;
/// Most directory entries looked at in the donor's ESP `EFI/` directory.
const MAX_ESP_DIR_ENTRIES: usize = 256;
/// The EFI platform name of 64-bit x86 GRUB.
pub const PLATFORM_X86_64_EFI: &str = "x86_64-efi";
/// The host's x86_64-efi module directory (Debian grub-efi-amd64-bin).
pub const HOST_X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Package paths of the signed binaries, in preference order.
pub const SHIM_PATHS: &[&str] = &[
    "/usr/lib/shim/shimx64.efi.signed",
    "/usr/lib/shim/shimx64.efi.signed.latest",
    "/usr/lib/shim/shimx64.efi",
];
pub const MOK_MANAGER_PATHS: &[&str] =
    &["/usr/lib/shim/mmx64.efi.signed", "/usr/lib/shim/mmx64.efi"];
pub const BOOT_CSV_PATH: &str = "/usr/lib/shim/BOOTX64.CSV";
pub const SIGNED_GRUB_PATHS: &[&str] = &["/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"];

/// Modules embedded in an unsigned GRUB EFI image, when the module directory has them:
/// partition maps, filesystems, the search and config commands the ESP stub and our
/// grub.cfg use, Linux loading, consoles. Everything else loads from
/// `/boot/grub/x86_64-efi` at run time.
pub const UNSIGNED_EMBED_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "normal",
    "configfile",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "linux",
    "gzio",
    "echo",
    "test",
    "halt",
    "reboot",
    "serial",
    "terminal",
    "all_video",
    "efi_gop",
    "ls",
    "cat",
    "sleep",
    "loadenv",
    "minicmd",
];
/// Of those, the ones an unsigned image cannot boot without.
pub const UNSIGNED_REQUIRED_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "normal",
    "configfile",
    "search_fs_uuid",
    "linux",
];
/// The prefix of the unsigned image: the removable-media directory it is installed in.
pub const UNSIGNED_PREFIX: &str = "/EFI/BOOT";

/// Where the EFI binaries come from. Its `Display` is the line the reports show; it is
/// serialized as that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EfiOrigin {
    /// A directory of an ESP: `<source>: EFI/<dir>/`.
    Esp {
        /// How the image holding the ESP is named (`donor.img partition 15 (ESP)`).
        source: String,
        /// The directory under `EFI/` (`debian`, `BOOT`).
        dir: String,
    },
    /// Package files of a root filesystem: `<source>: <shim> and <grub>`.
    Packages {
        /// How the root is named (`the donor`, `the host`).
        source: String,
        /// The shim's path, when there is one.
        shim: Option<String>,
        /// GRUB's path.
        grub: String,
    },
    /// Built unsigned by `grub-mkimage` from an x86_64-efi module directory.
    BuiltUnsigned {
        /// How the module directory is named.
        modules: String,
    },
}

impl fmt::Display for EfiOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EfiOrigin::Esp { source, dir } => write!(f, "{source}: EFI/{dir}/"),
            EfiOrigin::Packages {
                source,
                shim: Some(shim),
                grub,
            } => write!(f, "{source}: {shim} and {grub}"),
            EfiOrigin::Packages {
                source,
                shim: None,
                grub,
            } => write!(f, "{source}: {grub}"),
            EfiOrigin::BuiltUnsigned { modules } => {
                write!(f, "built unsigned by grub-mkimage from {modules}")
            }
        }
    }
}

impl serde::Serialize for EfiOrigin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The EFI binaries for the ESP.
#[derive(Clone, PartialEq, Eq)]
pub struct EfiBootFiles {
    /// shimx64.efi (first stage, signed by Microsoft's UEFI CA); `None` for GRUB alone.
    pub shim: Option<Vec<u8>>,
    /// grubx64.efi: the GRUB EFI image (signed monolithic, or built unsigned).
    pub grub: Vec<u8>,
    /// mmx64.efi (MokManager), if available.
    pub mok_manager: Option<Vec<u8>>,
    /// BOOTX64.CSV for shim's fallback, if the source has one.
    pub boot_csv: Option<Vec<u8>>,
    /// What GRUB's `mods` section says (prefix, embedded modules).
    pub grub_info: GrubEfiImageInfo,
    /// Whether GRUB came from a signed distribution build (false for our unsigned build).
    pub signed: bool,
    /// Where the files came from, for the report.
    pub origin: EfiOrigin,
}

impl fmt::Debug for EfiBootFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |d: &Option<Vec<u8>>| d.as_ref().map(Vec::len);
        f.debug_struct("EfiBootFiles")
            .field("shim", &len(&self.shim))
            .field("grub", &self.grub.len())
            .field("mok_manager", &len(&self.mok_manager))
            .field("boot_csv", &len(&self.boot_csv))
            .field("grub_info", &self.grub_info)
            .field("signed", &self.signed)
            .field("origin", &self.origin)
            .finish()
    }
}

impl EfiBootFiles {
    /// Check and assemble: GRUB must be an x86-64 GRUB EFI image, shim and MokManager
    /// x86-64 PE images.
    pub fn new(
        shim: Option<Vec<u8>>,
        grub: Vec<u8>,
        mok_manager: Option<Vec<u8>>,
        boot_csv: Option<Vec<u8>>,
        signed: bool,
        origin: EfiOrigin,
    ) -> Result<Self, UefiError> {
        let bad = |what: &'static str, why: String| UefiError::BadEfiBinary {
            what,
            origin: origin.to_string(),
            why,
        };
        let check_pe = |what: &'static str, data: &[u8]| -> Result<(), UefiError> {
            let pe = PeImage::parse(data).map_err(|e| bad(what, e.to_string()))?;
            if pe.machine != MACHINE_AMD64 {
                return Err(bad(
                    what,
                    format!("machine type {:#06x}, not x86-64", pe.machine),
                ));
            }
            Ok(())
        };
        check_pe("grubx64.efi", &grub)?;
        let grub_info = grub_efi_image_info(&grub)
            .map_err(|e| bad("grubx64.efi", e.to_string()))?
            .ok_or_else(|| {
                bad(
                    "grubx64.efi",
                    "no `mods` section: not a GRUB EFI image".into(),
                )
            })?;
        if let Some(s) = &shim {
            check_pe("shimx64.efi", s)?;
        }
        if let Some(m) = &mok_manager {
            check_pe("mmx64.efi", m)?;
        }
        Ok(EfiBootFiles {
            shim,
            grub,
            mok_manager,
            boot_csv,
            grub_info,
            signed,
            origin,
        })
    }

    /// The ESP directory GRUB's prefix names (`debian`), unless it is `BOOT` or absent.
    pub fn distro_dir(&self) -> Option<String> {
        self.grub_info
            .esp_directory()
            .filter(|d| !d.eq_ignore_ascii_case("BOOT"))
    }
}

/// The package files of one source (the donor's, the host's) for [`from_packages`]: a
/// tree read by absolute path, and how messages name it ("the donor donor.img", "the host").
pub struct PackageFiles<'a> {
    /// How messages name the source.
    pub label: String,
    /// Its files.
    pub tree: Box<dyn TreeRead<Error = UefiError> + 'a>,
}

/// A host directory as the root: `/` for the host's own packages. Trusted input (the
/// host's files), so no symlink confinement; use the donor's guarded reader for donors.
#[derive(Debug, Clone)]
pub struct HostRoot {
    pub root: PathBuf,
    pub label: String,
}

impl HostRoot {
    /// The root directory `root`, named `label` in messages.
    pub fn new(root: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        HostRoot {
            root: root.into(),
            label: label.into(),
        }
    }
}

impl HostRoot {
    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn meta(
        &self,
        path: &str,
        read: fn(&Path) -> std::io::Result<std::fs::Metadata>,
    ) -> Result<Option<NodeMeta>, UefiError> {
        let host = self.host(path);
        match read(&host) {
            Ok(m) => Ok(Some(host_meta(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UefiError::io("inspecting", &host, e)),
        }
    }
}

/// The host's files, by host paths below the root (the kernel resolves them).
impl TreeRead for HostRoot {
    type Error = UefiError;

    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, UefiError> {
        self.meta(path, |p| std::fs::symlink_metadata(p))
    }

    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, UefiError> {
        self.meta(path, |p| std::fs::metadata(p))
    }

    fn read_link(&mut self, path: &str) -> Result<Option<String>, UefiError> {
        let host = self.host(path);
        match std::fs::read_link(&host) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UefiError::io("reading the symlink", &host, e)),
        }
    }

    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, UefiError> {
        let host = self.host(path);
        let iter = match std::fs::read_dir(&host) {
            Ok(it) => it,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UefiError::io("listing", &host, e)),
        };
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| UefiError::io("listing", &host, e))?;
            if out.len() >= cap {
                return Err(UefiError::io(
                    "listing",
                    &host,
                    std::io::Error::other(format!("more than {cap} entries")),
                ));
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let ft = entry
                .file_type()
                .map_err(|e| UefiError::io("inspecting", entry.path(), e))?;
            out.push(DirItem {
                name,
                kind: host_kind(ft),
            });
        }
        Ok(Some(out))
    }

    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, UefiError> {
        let host = self.host(path);
        let file = match std::fs::File::open(&host) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UefiError::io("opening", &host, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| UefiError::io("inspecting", &host, e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        read_capped(file, cap, &host.display().to_string(), &host)
    }
}

fn read_capped(
    reader: impl Read,
    cap: u64,
    name: &str,
    path: &Path,
) -> Result<Option<Vec<u8>>, UefiError> {
    let mut data = Vec::new();
    reader
        .take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|e| UefiError::io("reading", path, e))?;
    if data.len() as u64 > cap {
        return Err(UefiError::FileTooLarge {
            name: name.to_string(),
            cap,
        });
    }
    Ok(Some(data))
}

fn first_of(
    src: &mut dyn TreeRead<Error = UefiError>,
    paths: &[&str],
    cap: u64,
) -> Result<Option<(String, Vec<u8>)>, UefiError> {
    for p in paths {
        if let Some(d) = src.read_file(p, cap)? {
            return Ok(Some((p.to_string(), d)));
        }
    }
    Ok(None)
}

/// The signed shim + GRUB of a root's packages (`label` names it in the origin).
/// `Ok(None)` when there is no signed GRUB.
pub fn from_packages(
    src: &mut dyn TreeRead<Error = UefiError>,
    label: &str,
) -> Result<Option<EfiBootFiles>, UefiError> {
    let Some((grub_path, grub)) = first_of(src, SIGNED_GRUB_PATHS, MAX_EFI_BINARY_BYTES)? else {
        return Ok(None);
    };
    let shim = first_of(src, SHIM_PATHS, MAX_EFI_BINARY_BYTES)?;
    let mm = first_of(src, MOK_MANAGER_PATHS, MAX_EFI_BINARY_BYTES)?;
    let csv = src.read_file(BOOT_CSV_PATH, MAX_CSV_BYTES)?;
    let origin = EfiOrigin::Packages {
        source: label.to_string(),
        shim: shim.as_ref().map(|(p, _)| p.clone()),
        grub: grub_path,
    };
    EfiBootFiles::new(shim.map(|s| s.1), grub, mm.map(|m| m.1), csv, true, origin).map(Some)
}

/// Is this partition entry an ESP (GPT type, or MBR type 0xEF)?
fn is_esp(kind: &PartitionType) -> bool {
    match kind {
        PartitionType::Gpt { type_guid, .. } => {
            type_guid.eq_ignore_ascii_case(crate::layout::gpt::TYPE_ESP)
        }
        PartitionType::Mbr { type_code, .. } => *type_code == 0xEF,
    }
}

/// The EFI binaries on the ESP of a donor disk image. `Ok(None)` when the image has no
/// ESP or its ESP has no GRUB. Nothing is written (the window refuses writes), and a
/// `fatfs` panic on a corrupt ESP is turned into an error.
pub fn from_donor_esp(image: &Path) -> Result<Option<EfiBootFiles>, UefiError> {
    let region = Region::open(image).map_err(|e| UefiError::DonorEsp {
        donor: image.display().to_string(),
        why: e.to_string(),
    })?;
    let Some(table) = read_table(&region).map_err(|e| UefiError::DonorEsp {
        donor: image.display().to_string(),
        why: e.to_string(),
    })?
    else {
        return Ok(None);
    };
    for entry in table.entries.iter().filter(|e| is_esp(&e.kind)) {
        let label = format!("{} partition {} (ESP)", image.display(), entry.number);
        let sub = region
            .sub(entry.start, entry.len)
            .map_err(|e| UefiError::DonorEsp {
                donor: label.clone(),
                why: e.to_string(),
            })?;
        let found =
            catch_unwind(AssertUnwindSafe(|| read_esp(sub, &label))).unwrap_or_else(|_| {
                Err(UefiError::DonorEsp {
                    donor: label.clone(),
                    why: "the FAT filesystem is corrupt (the FAT reader gave up)".into(),
                })
            })?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn read_esp(region: Region, label: &str) -> Result<Option<EfiBootFiles>, UefiError> {
    let fat_err = |e: std::io::Error| UefiError::DonorEsp {
        donor: label.to_string(),
        why: e.to_string(),
    };
    let fs = fatfs::FileSystem::new(ReadOnlyWindow::new(region), fatfs::FsOptions::new())
        .map_err(fat_err)?;
    let root = fs.root_dir();
    let Ok(efi) = root.open_dir("EFI") else {
        return Ok(None);
    };
    let read = |dir: &fatfs::Dir<'_, ReadOnlyWindow>,
                name: &str,
                cap: u64|
     -> Result<Option<Vec<u8>>, UefiError> {
        let Some(entry) = dir
            .iter()
            .take(MAX_ESP_DIR_ENTRIES)
            .filter_map(Result::ok)
            .find(|e| e.is_file() && e.file_name().eq_ignore_ascii_case(name))
        else {
            return Ok(None);
        };
        if entry.len() > cap {
            return Err(UefiError::FileTooLarge {
                name: format!("{label}: {name}"),
                cap,
            });
        }
        read_capped(entry.to_file(), cap, name, Path::new(label))
    };
    // A distribution directory first (EFI/debian, EFI/ubuntu, …): it has the shim +
    // GRUB pair and BOOTX64.CSV.
    let mut dirs: Vec<String> = Vec::new();
    for e in efi.iter().take(MAX_ESP_DIR_ENTRIES) {
        let e = e.map_err(fat_err)?;
        let name = e.file_name();
        if e.is_dir() && name != "." && name != ".." && !name.eq_ignore_ascii_case("BOOT") {
            dirs.push(name);
        }
    }
    dirs.sort();
    for name in &dirs {
        let dir = efi.open_dir(name).map_err(fat_err)?;
        if let Some(grub) = read(&dir, "grubx64.efi", MAX_EFI_BINARY_BYTES)? {
            let shim = read(&dir, "shimx64.efi", MAX_EFI_BINARY_BYTES)?;
            let mm = read(&dir, "mmx64.efi", MAX_EFI_BINARY_BYTES)?;
            let csv = read(&dir, "BOOTX64.CSV", MAX_CSV_BYTES)?;
            let signed = shim.is_some();
            let origin = EfiOrigin::Esp {
                source: label.to_string(),
                dir: name.to_string(),
            };
            return EfiBootFiles::new(shim, grub, mm, csv, signed, origin).map(Some);
        }
    }
    // The removable-media path alone.
    let Ok(boot) = efi.open_dir("BOOT") else {
        return Ok(None);
    };
    let Some(bootx64) = read(&boot, "BOOTX64.EFI", MAX_EFI_BINARY_BYTES)? else {
        return Ok(None);
    };
    let origin = EfiOrigin::Esp {
        source: label.to_string(),
        dir: "BOOT".into(),
    };
    if matches!(grub_efi_image_info(&bootx64), Ok(Some(_))) {
        // BOOTX64.EFI is GRUB itself.
        return EfiBootFiles::new(None, bootx64, None, None, false, origin).map(Some);
    }
    let Some(grub) = read(&boot, "grubx64.efi", MAX_EFI_BINARY_BYTES)? else {
        return Ok(None);
    };
    let mm = read(&boot, "mmx64.efi", MAX_EFI_BINARY_BYTES)?;
    EfiBootFiles::new(Some(bootx64), grub, mm, None, true, origin).map(Some)
}

/// Build an UNSIGNED GRUB EFI image from an x86_64-efi module directory with the host's
/// `grub-mkimage` (external tool): [`UNSIGNED_EMBED_MODULES`] that exist, prefix
/// [`UNSIGNED_PREFIX`].
pub fn build_unsigned(
    modules: &GrubPlatformFiles,
    origin: &str,
) -> Result<EfiBootFiles, UefiError> {
    let missing: Vec<String> = UNSIGNED_REQUIRED_MODULES
        .iter()
        .filter(|m| !modules.has_module(m))
        .map(|m| m.to_string())
        .collect();
    if !missing.is_empty() || modules.get("kernel.img").is_none() {
        return Err(UefiError::IncompleteEfiModules {
            origin: origin.to_string(),
            missing: if missing.is_empty() {
                vec!["kernel.img".into()]
            } else {
                missing
            },
        });
    }
    let dir =
        tempfile::tempdir().map_err(|e| UefiError::io("creating", "a temporary directory", e))?;
    for (name, data) in &modules.files {
        let p = dir.path().join(name);
        std::fs::write(&p, data).map_err(|e| UefiError::io("writing", &p, e))?;
    }
    let out = dir.path().join("grubx64.efi");
    let wanted: Vec<&str> = UNSIGNED_EMBED_MODULES
        .iter()
        .copied()
        .filter(|m| modules.has_module(m))
        .collect();
    let result = crate::tool::ToolCommand::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-d"])
        .arg(dir.path())
        .args(["-p", UNSIGNED_PREFIX, "-o"])
        .arg(&out)
        .args(&wanted)
        .output(&crate::NoProgress)
        .map_err(|e| UefiError::Tool {
            tool: "grub-mkimage",
            why: e.to_string(),
        })?;
    if !result.status.success() {
        return Err(UefiError::Tool {
            tool: "grub-mkimage",
            why: format!("{}: {}", result.status, result.stderr_text().trim()),
        });
    }
    let grub = std::fs::File::open(&out)
        .map_err(|e| UefiError::io("opening", &out, e))
        .and_then(|f| read_capped(f, MAX_EFI_BINARY_BYTES, "grubx64.efi", &out))?
        .unwrap_or_default();
    let files = EfiBootFiles::new(
        None,
        grub,
        None,
        None,
        false,
        EfiOrigin::BuiltUnsigned {
            modules: origin.to_string(),
        },
    )?;
    if files.grub_info.prefix.as_deref() != Some(UNSIGNED_PREFIX) {
        return Err(UefiError::Tool {
            tool: "grub-mkimage",
            why: format!(
                "the image it made has prefix {:?}, not {UNSIGNED_PREFIX}",
                files.grub_info.prefix
            ),
        });
    }
    Ok(files)
}

/// Where [`find_efi_boot_files`] may look.
#[derive(Default)]
pub struct EfiSearch<'a> {
    /// The donor disk image, for its ESP (`None` for a directory or bare-fs donor).
    pub donor_image: Option<&'a Path>,
    /// The donor's files, for its shim/GRUB packages.
    pub donor_files: Option<PackageFiles<'a>>,
    /// The donor's `/usr/lib/grub/x86_64-efi` (for the unsigned fallback).
    pub donor_efi_modules: Option<&'a GrubPlatformFiles>,
    /// The host root (`/`) for the host's packages and modules; `None` = never the host.
    pub host: Option<&'a Path>,
}

/// Find the EFI binaries, signed first (see the module documentation for the order).
/// The error lists every place tried and why it did not do.
pub fn find_efi_boot_files(search: &mut EfiSearch<'_>) -> Result<EfiBootFiles, UefiError> {
    let mut tried = Vec::new();
    if let Some(img) = search.donor_image {
        match from_donor_esp(img) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => tried.push(format!("{}: no ESP with GRUB", img.display())),
            Err(e) => tried.push(e.to_string()),
        }
    }
    let mut host = search
        .host
        .map(|h| HostRoot::new(h, format!("the host ({})", h.display())));
    let package_sources = search
        .donor_files
        .as_mut()
        .map(|d| (d.label.clone(), &mut *d.tree))
        .into_iter()
        .chain(
            host.as_mut()
                .map(|h| (h.label.clone(), h as &mut dyn TreeRead<Error = UefiError>)),
        );
    for (label, src) in package_sources {
        match from_packages(src, &label) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => tried.push(format!("{label}: no {}", SIGNED_GRUB_PATHS.join(" or "))),
            Err(e) => tried.push(e.to_string()),
        }
    }
    if let Some(m) = search.donor_efi_modules {
        match build_unsigned(m, "the donor's /usr/lib/grub/x86_64-efi") {
            Ok(f) => return Ok(f),
            Err(e) => tried.push(e.to_string()),
        }
    }
    if let Some(h) = search.host {
        let dir = h.join(HOST_X86_64_EFI_DIR.trim_start_matches('/'));
        match GrubPlatformFiles::from_dir(&dir, PLATFORM_X86_64_EFI) {
            Ok(m) => match build_unsigned(&m, &dir.display().to_string()) {
                Ok(f) => return Ok(f),
                Err(e) => tried.push(e.to_string()),
            },
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(UefiError::NoEfiBootFiles { tried })
}

#[cfg(test)]
mod tests {
    use super::super::pe::tests::{fake_mods, fake_pe};
    use super::*;

    fn fake_grub(prefix: &str) -> Vec<u8> {
        fake_pe(&[(".text", &[0xC3; 16]), ("mods", &fake_mods(prefix))])
    }

    #[test]
    fn packages_from_a_root_directory() {
        let dir = tempfile::tempdir().unwrap();
        let put = |p: &str, d: &[u8]| {
            let host = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            std::fs::write(host, d).unwrap();
        };
        let mut src = HostRoot::new(dir.path(), "test root");
        assert!(
            from_packages(&mut src, "test root").unwrap().is_none(),
            "nothing there yet"
        );
        put(SIGNED_GRUB_PATHS[0], &fake_grub("/EFI/ubuntu"));
        put("/usr/lib/shim/shimx64.efi", &fake_pe(&[(".text", &[1])]));
        put(
            "/usr/lib/shim/mmx64.efi.signed",
            &fake_pe(&[(".text", &[2])]),
        );
        let f = from_packages(&mut src, "test root").unwrap().unwrap();
        assert!(f.signed && f.shim.is_some() && f.mok_manager.is_some());
        assert_eq!(f.boot_csv, None);
        assert_eq!(f.distro_dir().as_deref(), Some("ubuntu"));
        assert!(f.origin.to_string().contains("shimx64.efi"), "{}", f.origin);
        // A "grub" that is not GRUB is refused with the origin named.
        put(SIGNED_GRUB_PATHS[0], &fake_pe(&[(".text", &[1])]));
        let e = from_packages(&mut src, "test root").unwrap_err();
        assert!(e.to_string().contains("not a GRUB EFI image"), "{e}");
        // A shim that is not PE either.
        put(SIGNED_GRUB_PATHS[0], &fake_grub("/EFI/ubuntu"));
        put("/usr/lib/shim/shimx64.efi", b"hello");
        assert!(matches!(
            from_packages(&mut src, "test root"),
            Err(UefiError::BadEfiBinary {
                what: "shimx64.efi",
                ..
            })
        ));
    }

    #[test]
    fn search_reports_every_place_tried() {
        let dir = tempfile::tempdir().unwrap();
        let empty = HostRoot::new(dir.path(), "empty donor");
        let e = find_efi_boot_files(&mut EfiSearch {
            donor_files: Some(PackageFiles {
                label: "empty donor".into(),
                tree: Box::new(empty),
            }),
            host: Some(dir.path()),
            ..Default::default()
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("empty donor") && text.contains("x86_64-efi"),
            "{text}"
        );
    }

    #[test]
    fn unsigned_build_needs_the_core_modules() {
        let m = GrubPlatformFiles::from_files(
            PLATFORM_X86_64_EFI,
            [
                ("kernel.img".to_string(), vec![0u8; 4]),
                ("fat.mod".to_string(), vec![]),
            ],
        )
        .unwrap();
        match build_unsigned(&m, "test") {
            Err(UefiError::IncompleteEfiModules { missing, .. }) => {
                assert!(missing.contains(&"part_gpt".to_string()), "{missing:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
