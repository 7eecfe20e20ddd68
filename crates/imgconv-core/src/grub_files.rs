//! A GRUB platform directory (e.g. `/usr/lib/grub/i386-pc`) held in memory.
//!
//! The boot code is built from the files of ONE GRUB build: `kernel.img`, `diskboot.img`,
//! `lzma_decompress.img`, `boot.img`, `moddep.lst` and the `*.mod` files must match each
//! other, and the modules copied into the guest's `/boot/grub/i386-pc/` must match the
//! kernel inside core.img (modules are linked against the running kernel's symbols). So the
//! files travel together as one value, taken from the donor image (by the donor module), from
//! a directory given by the user, or from the host ([`HOST_I386_PC_DIR`]).
//!
//! A leaf: the donor fills it, graft copies it, boot builds the boot code from it, and
//! none of them needs the others for that.
//!
//! Only what GRUB's own tools read from that directory is kept: `*.mod`, `*.lst`, `*.img`
//! and `modinfo.sh` (its `grub_version`). Sizes are bounded before anything is read: a
//! real i386-pc directory is about 3.5 MB, its largest file (`normal.mod`) ~115 KB.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Errors of reading or checking GRUB platform files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrubFilesError {
    /// An I/O error on a named file or directory, with what we were doing.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A GRUB platform file is larger than any real one could be.
    #[error("GRUB file {name} is {size} bytes, more than the {cap} bytes allowed for one file")]
    FileTooLarge { name: String, size: u64, cap: u64 },

    /// The GRUB module directory holds more bytes than any real one could.
    #[error(
        "the GRUB {platform} files add up to more than {cap} bytes (not a GRUB module directory?)"
    )]
    TooMuchData { platform: String, cap: u64 },

    /// A file name that is not a plain file name (contains `/`, is empty, `.` or `..`).
    #[error("invalid GRUB file name {name:?}: must be a plain file name")]
    BadFileName { name: String },

    /// A file GRUB needs is absent from the module directory.
    #[error("the GRUB {platform} files have no {name} (incomplete GRUB installation?)")]
    MissingFile { platform: String, name: String },
}

impl GrubFilesError {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GrubFilesError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// What the error concerns: GRUB's files come from the donor (or a GRUB directory,
    /// or the host), so what is wrong with them is the donor's.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            GrubFilesError::Io { source, .. } => {
                crate::error::io_kind(source, crate::ErrorKind::Donor)
            }
            _ => crate::ErrorKind::Donor,
        }
    }
}

/// The host's i386-pc module directory (Debian `grub-pc-bin`), the fallback when the donor
/// has none.
pub const HOST_I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";

/// The BIOS platform name, as in the directory name and `$prefix/<platform>/`.
pub const PLATFORM_I386_PC: &str = "i386-pc";

/// Largest single file accepted (the largest real one is ~0.1 MB).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Largest total accepted (a real directory is ~3.5 MB).
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// Most directory entries looked at in [`GrubPlatformFiles::from_dir`] (a real one has ~300).
pub const MAX_DIR_ENTRIES: usize = 20_000;

/// The files of one GRUB platform build, by file name (`"kernel.img"`, `"ext2.mod"`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubPlatformFiles {
    /// GRUB platform, e.g. `"i386-pc"`: the name of the directory under `/boot/grub/`.
    pub platform: String,
    /// File name → content. Names are plain file names (no `/`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl GrubPlatformFiles {
    /// Whether a file of this name belongs in the value: `*.mod`, `*.lst`, `*.img` or
    /// `modinfo.sh`. Everything else in the directory (`grub-bios-setup`, `*.o`, `config.h`,
    /// …) is left out.
    pub fn is_wanted(name: &str) -> bool {
        name == "modinfo.sh"
            || [".mod", ".lst", ".img"]
                .iter()
                .any(|ext| name.len() > ext.len() && name.ends_with(ext))
    }

    /// Read the wanted files of a host directory such as `/usr/lib/grub/i386-pc`.
    /// Symlinks to files are followed; subdirectories and other kinds are skipped.
    pub fn from_dir(dir: &Path, platform: &str) -> Result<Self, GrubFilesError> {
        let entries = fs::read_dir(dir)
            .map_err(|e| GrubFilesError::io("reading the GRUB module directory", dir, e))?;
        let mut out = GrubPlatformFiles {
            platform: platform.to_string(),
            files: BTreeMap::new(),
        };
        let mut total = 0u64;
        for (count, entry) in entries.enumerate() {
            if count >= MAX_DIR_ENTRIES {
                return Err(GrubFilesError::TooMuchData {
                    platform: platform.to_string(),
                    cap: MAX_TOTAL_BYTES,
                });
            }
            let entry = entry
                .map_err(|e| GrubFilesError::io("reading the GRUB module directory", dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !Self::is_wanted(&name) {
                continue;
            }
            let path = entry.path();
            let meta = fs::metadata(&path)
                .map_err(|e| GrubFilesError::io("inspecting GRUB file", &path, e))?;
            if !meta.is_file() {
                continue;
            }
            let data = read_capped(&path, &name)?;
            out.add(name, data, &mut total)?;
        }
        Ok(out)
    }

    /// Build the value from `(file name, content)` pairs, e.g. read from a donor image.
    /// Names must be plain file names; unwanted names (see [`Self::is_wanted`]) are
    /// dropped, so a caller may pass a whole directory's content. Same caps as
    /// [`Self::from_dir`].
    pub fn from_files<I>(platform: &str, files: I) -> Result<Self, GrubFilesError>
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        let mut out = GrubPlatformFiles {
            platform: platform.to_string(),
            files: BTreeMap::new(),
        };
        let mut total = 0u64;
        for (name, data) in files {
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(GrubFilesError::BadFileName { name });
            }
            if !Self::is_wanted(&name) {
                continue;
            }
            out.add(name, data, &mut total)?;
        }
        Ok(out)
    }

    /// Add one file, within the caps: [`MAX_FILE_BYTES`] for it, [`MAX_TOTAL_BYTES`] for
    /// `total`, the bytes added so far.
    fn add(&mut self, name: String, data: Vec<u8>, total: &mut u64) -> Result<(), GrubFilesError> {
        if data.len() as u64 > MAX_FILE_BYTES {
            return Err(GrubFilesError::FileTooLarge {
                name,
                size: data.len() as u64,
                cap: MAX_FILE_BYTES,
            });
        }
        *total += data.len() as u64;
        if *total > MAX_TOTAL_BYTES {
            return Err(GrubFilesError::TooMuchData {
                platform: self.platform.clone(),
                cap: MAX_TOTAL_BYTES,
            });
        }
        self.files.insert(name, data);
        Ok(())
    }

    /// The host's i386-pc files ([`HOST_I386_PC_DIR`]).
    pub fn host_i386_pc() -> Result<Self, GrubFilesError> {
        Self::from_dir(Path::new(HOST_I386_PC_DIR), PLATFORM_I386_PC)
    }

    /// Content of a file, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Content of a file GRUB needs, or [`GrubFilesError::MissingFile`].
    pub fn require(&self, name: &str) -> Result<&[u8], GrubFilesError> {
        self.get(name).ok_or_else(|| GrubFilesError::MissingFile {
            platform: self.platform.clone(),
            name: name.to_string(),
        })
    }

    /// Whether `<module>.mod` is present.
    pub fn has_module(&self, module: &str) -> bool {
        self.files.contains_key(&format!("{module}.mod"))
    }

    /// Names of all modules (file names without `.mod`), sorted.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.files
            .keys()
            .filter_map(|n| n.strip_suffix(".mod"))
            .filter(|n| !n.is_empty())
    }

    /// Total bytes held.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|d| d.len() as u64).sum()
    }

    /// The GRUB version of this build, from `modinfo.sh` (written by GRUB's build since
    /// 2.00 and copied by grub-install): `grub_version` (upstream, e.g. `2.06`) and
    /// `grub_package_version` (distribution, e.g. `2.06-13+deb12u2`). `None` when the file
    /// or the `grub_version` line is absent. kernel.img carries no version string
    /// (only `normal.mod` prints one), so modinfo.sh is the one reliable place.
    pub fn grub_version(&self) -> Option<GrubVersion> {
        let text = String::from_utf8_lossy(self.get("modinfo.sh")?);
        let value = |key: &str| -> Option<String> {
            text.lines().find_map(|line| {
                let v = line.trim().strip_prefix(key)?.strip_prefix('=')?;
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                (!v.is_empty() && v.len() <= 100).then(|| v.to_string())
            })
        };
        Some(GrubVersion {
            upstream: value("grub_version")?,
            package: value("grub_package_version"),
        })
    }
}

/// A GRUB build's version, from `modinfo.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubVersion {
    /// Upstream release, e.g. `2.06`.
    pub upstream: String,
    /// Distribution package version, e.g. `2.06-13+deb12u2`, when recorded.
    pub package: Option<String>,
}

/// Read a whole file, refusing more than [`MAX_FILE_BYTES`] without allocating for it.
fn read_capped(path: &Path, name: &str) -> Result<Vec<u8>, GrubFilesError> {
    let file =
        fs::File::open(path).map_err(|e| GrubFilesError::io("opening GRUB file", path, e))?;
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| GrubFilesError::io("reading GRUB file", path, e))?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(GrubFilesError::FileTooLarge {
            name: name.to_string(),
            size: data.len() as u64,
            cap: MAX_FILE_BYTES,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_grub_files() {
        let files = GrubPlatformFiles::from_files(
            "i386-pc",
            [
                ("ext2.mod".to_string(), vec![1]),
                ("moddep.lst".to_string(), b"ext2: fshelp\n".to_vec()),
                ("kernel.img".to_string(), vec![2]),
                ("modinfo.sh".to_string(), vec![3]),
                ("grub-bios-setup".to_string(), vec![4]),
                ("efiemu32.o".to_string(), vec![5]),
                (".mod".to_string(), vec![6]),
            ],
        )
        .unwrap();
        let names: Vec<&str> = files.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["ext2.mod", "kernel.img", "moddep.lst", "modinfo.sh"]
        );
        assert!(files.has_module("ext2"));
        assert_eq!(files.module_names().collect::<Vec<_>>(), ["ext2"]);
        assert_eq!(files.total_bytes(), 1 + 13 + 1 + 1);
        let err = files.require("boot.img").unwrap_err();
        assert!(err.to_string().contains("boot.img"), "{err}");
    }

    #[test]
    fn rejects_paths_and_oversized_files() {
        let err = GrubPlatformFiles::from_files("i386-pc", [("../x.mod".to_string(), vec![])])
            .unwrap_err();
        assert!(matches!(err, GrubFilesError::BadFileName { .. }), "{err}");
        let big = vec![0u8; MAX_FILE_BYTES as usize + 1];
        let err =
            GrubPlatformFiles::from_files("i386-pc", [("a.mod".to_string(), big)]).unwrap_err();
        assert!(matches!(err, GrubFilesError::FileTooLarge { .. }), "{err}");
    }

    #[test]
    fn reads_a_directory_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("normal.mod"), b"ELF").unwrap();
        fs::write(dir.path().join("fs.lst"), b"ext2\n").unwrap();
        fs::write(dir.path().join("config.h"), b"#define X").unwrap();
        fs::create_dir(dir.path().join("sub.mod")).unwrap();
        let files = GrubPlatformFiles::from_dir(dir.path(), "i386-pc").unwrap();
        assert_eq!(files.platform, "i386-pc");
        assert_eq!(files.get("normal.mod"), Some(&b"ELF"[..]));
        assert_eq!(files.get("fs.lst"), Some(&b"ext2\n"[..]));
        assert_eq!(files.files.len(), 2);
        let err = GrubPlatformFiles::from_dir(&dir.path().join("absent"), "i386-pc").unwrap_err();
        assert!(matches!(err, GrubFilesError::Io { .. }), "{err}");
    }

    #[test]
    fn reads_the_host_directory_when_installed() {
        if !Path::new(HOST_I386_PC_DIR).join("kernel.img").exists() {
            panic!("{HOST_I386_PC_DIR}/kernel.img is missing: install grub-pc-bin (scripts/setup)");
        }
        let files = GrubPlatformFiles::host_i386_pc().unwrap();
        for name in [
            "kernel.img",
            "boot.img",
            "diskboot.img",
            "lzma_decompress.img",
            "moddep.lst",
            "ext2.mod",
        ] {
            assert!(files.get(name).is_some(), "{name} missing");
        }
        assert!(files.get("grub-bios-setup").is_none());
        let v = files.grub_version().expect("modinfo.sh has grub_version");
        assert!(v.upstream.starts_with("2."), "{v:?}");
    }

    #[test]
    fn version_from_modinfo() {
        let files = GrubPlatformFiles::from_files(
            "i386-pc",
            [(
                "modinfo.sh".to_string(),
                b"#!/bin/bash\ngrub_version_x=\"9\"\ngrub_version=\"2.06\"\ngrub_package_version=\"2.06-13+deb12u2\"\n".to_vec(),
            )],
        )
        .unwrap();
        let v = files.grub_version().unwrap();
        assert_eq!(v.upstream, "2.06");
        assert_eq!(v.package.as_deref(), Some("2.06-13+deb12u2"));
        assert_eq!(GrubPlatformFiles::default().grub_version(), None);
    }
}
