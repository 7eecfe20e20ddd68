//! The donor: where the kernel, initrd, modules and GRUB files come from.
//!
//! A donor is a bootable HVM disk image of a similar distribution (MBR or GPT, possibly
//! with a separate `/boot` partition), a bare ext2/3/4 filesystem image, or a host
//! directory (an unpacked kernel package plus its initrd). [`Donor::open`] finds every
//! readable filesystem in it, lists every kernel it has ([`Donor::candidates`]), walks the
//! modules tree of each complete one, and reads each vmlinuz's boot header for its
//! architecture. [`Donor::select_kernel`] then picks the newest complete kernel (or the
//! one asked for), and the graft copies it into the guest.
//!
//! Donors are untrusted input. Images are read only through the guarded
//! [`ExtReader`] (panics contained, whole-file reads capped before
//! allocating), big files are streamed, directory listings, tree size and depth are
//! bounded, and every claimed file size is checked against a cap and against the size of
//! the filesystem holding it before it is used. Nothing is ever written to the donor.

pub mod bzimage;
pub mod guest_kernel;
mod source;
pub mod tree;
pub mod version;

pub use bzimage::{BzImageHeader, KernelArch};
pub use guest_kernel::{find_guest_kernel, find_guest_kernel_in_reader, GuestKernel};
pub use tree::{ModulesTree, TreeEntry};
pub use version::compare_versions;

use crate::blockio::Region;
use crate::ext::read::{ExtReadError, ExtReader};
use crate::grub_files::GrubPlatformFiles;
use crate::partition::{read_table, PartitionError};
use crate::tree::{DirItem, NodeKind, NodeMeta, TreeRead};
use source::{DirRoot, DonorRead, DonorSource, SourceKind};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest vmlinuz accepted (real ones are 5–15 MiB).
pub const MAX_KERNEL_BYTES: u64 = 256 << 20;
/// Largest initrd accepted (real ones are 20–200 MiB).
pub const MAX_INITRD_BYTES: u64 = 4 << 30;
/// Largest `config-<ver>` accepted (real ones are ~300 KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest `System.map-<ver>` accepted (real ones are 5–10 MiB).
pub const MAX_SYSTEM_MAP_BYTES: u64 = 256 << 20;
/// Most entries read from `/boot`, `/` or a modules parent directory.
pub const MAX_BOOT_DIR_ENTRIES: usize = 100_000;
/// Block size the graft size estimate rounds every file up to.
pub const GRAFT_BLOCK: u64 = 4096;
/// GRUB allowance in [`Donor::graft_size`] when the donor has no GRUB files of its own
/// (the host's i386-pc directory, ~3.5 MB, is then used).
pub const GRUB_ALLOWANCE: u64 = 16 << 20;

/// Everything that can go wrong reading a donor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DonorError {
    /// An I/O error on a host file of a directory donor (or the donor image itself).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The donor path does not exist.
    #[error("donor {}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    /// The donor's partition table is corrupt.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A read of the donor's ext filesystem failed (corrupt data, unsupported feature).
    #[error(transparent)]
    Read(#[from] ExtReadError),
    /// Reading the guest (for `--use-guest-kernel`) failed.
    #[error(transparent)]
    Guest(#[from] crate::guestfs::GuestFsError),
    /// Neither a directory nor an image with a readable ext2/3/4 filesystem.
    #[error("donor {donor}: no readable ext2/3/4 filesystem found ({})", reasons.join("; "))]
    NoFilesystem { donor: String, reasons: Vec<String> },
    /// No kernel of the donor has everything a graft needs.
    #[error("donor {donor}: no usable kernel (a usable kernel needs a vmlinuz, a matching initrd and a modules tree); {}", found_list(found))]
    NoUsableKernel { donor: String, found: Vec<String> },
    /// The kernel asked for is not in the donor.
    #[error("donor {donor}: there is no kernel {wanted}; {}", found_list(found))]
    KernelNotFound {
        donor: String,
        wanted: String,
        found: Vec<String>,
    },
    /// The kernel asked for is in the donor but incomplete.
    #[error("donor {donor}: kernel {wanted} cannot be used: {}", problems.join("; "))]
    KernelUnusable {
        donor: String,
        wanted: String,
        problems: Vec<String>,
    },
    /// A file claims more bytes than any real one of its kind (corrupt inode?).
    #[error("donor {donor}: {path} claims {size} bytes, more than the {cap} bytes allowed for it (corrupt inode?)")]
    TooLarge {
        donor: String,
        path: String,
        size: u64,
        cap: u64,
    },
    /// A directory lists more entries than allowed (corrupt directory?).
    #[error("donor {donor}: directory {path} has more than {cap} entries (corrupt directory?)")]
    TooManyEntries {
        donor: String,
        path: String,
        cap: usize,
    },
    /// A modules tree has more nodes than allowed (a directory loop in a corrupt image?).
    #[error(
        "donor {donor}: modules tree {path} has more than {cap} entries (corrupt filesystem?)"
    )]
    TreeTooLarge {
        donor: String,
        path: String,
        cap: usize,
    },
    /// A modules tree nests deeper than allowed (a directory loop in a corrupt image?).
    #[error(
        "donor {donor}: {path} is nested more than {cap} directories deep (corrupt filesystem?)"
    )]
    TreeTooDeep {
        donor: String,
        path: String,
        cap: usize,
    },
    /// A symlink target that is empty, too long or holds a NUL.
    #[error("donor {donor}: symlink {path} has an invalid target")]
    BadSymlink { donor: String, path: String },
    /// Too many symlinks while resolving a donor path.
    #[error("donor {donor}: too many levels of symbolic links resolving {path}")]
    SymlinkLoop { donor: String, path: String },
    /// A path expected to be a regular file is something else.
    #[error("donor {donor}: {path} is not a regular file")]
    NotAFile { donor: String, path: String },
    /// A node listed a moment ago cannot be found any more (inconsistent directory).
    #[error("donor {donor}: {path} is listed but cannot be opened (corrupt directory?)")]
    Vanished { donor: String, path: String },
    /// A file's content does not have the size its inode claims.
    #[error("donor {donor}: {path}: read {got} bytes, the file claims {expected}")]
    ShortRead {
        donor: String,
        path: String,
        expected: u64,
        got: u64,
    },
    /// A 32-bit kernel cannot run a 64-bit userland.
    #[error("the donor kernel is {kernel} but the guest userland is {userland}: a 32-bit kernel cannot run 64-bit programs; use a 64-bit (amd64) donor kernel")]
    ArchMismatch {
        kernel: KernelArch,
        userland: UserlandArch,
    },
    /// The donor's GRUB files could not be taken as a GRUB platform directory.
    #[error("donor {donor}: GRUB files in {path}: {source}")]
    Grub {
        donor: String,
        path: String,
        #[source]
        source: crate::grub_files::GrubFilesError,
    },
    /// Keeping the guest's kernel: the guest has kernels, but all of them are Xen-only.
    #[error("only Xen kernels are installed in this guest ({}); they cannot boot on HVM/KVM", found.join(", "))]
    OnlyXenKernels { found: Vec<String> },
    /// The guest's kernel was asked for, but its initrd cannot find the root disk on the
    /// chosen bus (and no donor was given to fall back to).
    #[error("the guest's kernel {kernel} cannot boot on the {bus} disk: {why}")]
    GuestKernelNotReady {
        /// The guest kernel's version.
        kernel: String,
        /// The disk bus asked for.
        bus: String,
        /// What its initrd lacks.
        why: String,
    },
    /// Keeping the guest's kernel: the guest has no complete kernel at all.
    #[error("no usable kernel in the guest to keep (needs /boot/vmlinuz-VER, a matching initrd and /lib/modules/VER); {}", found_list(found))]
    NoGuestKernel { found: Vec<String> },
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "found no kernel at all".to_string()
    } else {
        format!("found: {}", found.join("; "))
    }
}

impl DonorError {
    /// Wrap an `io::Error` with the action and path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DonorError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The guest userland's architecture, as far as kernel choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserlandArch {
    X86_64,
    I386,
}

impl UserlandArch {
    /// From a name such as `x86_64`, `amd64`, `i386`, `i686` (Debian, RPM and ELF names).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "x86_64" | "amd64" | "x86-64" => Some(UserlandArch::X86_64),
            "i386" | "i486" | "i586" | "i686" | "x86" | "ia32" => Some(UserlandArch::I386),
            _ => None,
        }
    }
}

impl std::fmt::Display for UserlandArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UserlandArch::X86_64 => "x86_64",
            UserlandArch::I386 => "i386",
        })
    }
}

/// The outcome of [`check_arch`] when the pair can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchCheck {
    /// Kernel and userland are the same architecture.
    Match,
    /// A 64-bit kernel running a 32-bit userland (works: IA32 emulation, as a 32-bit domU
    /// on a 64-bit Xen host did).
    Kernel64Userland32,
    /// The kernel's architecture could not be read; the caller should warn.
    KernelUnknown,
}

/// Can a kernel of `kernel` arch run a userland of `userland` arch? A 64-bit kernel runs a
/// 32-bit userland; a 32-bit kernel cannot run a 64-bit one.
pub fn check_arch(kernel: KernelArch, userland: UserlandArch) -> Result<ArchCheck, DonorError> {
    match (kernel, userland) {
        (KernelArch::X86_64, UserlandArch::X86_64) | (KernelArch::I386, UserlandArch::I386) => {
            Ok(ArchCheck::Match)
        }
        (KernelArch::X86_64, UserlandArch::I386) => Ok(ArchCheck::Kernel64Userland32),
        (KernelArch::I386, UserlandArch::X86_64) => {
            Err(DonorError::ArchMismatch { kernel, userland })
        }
        (KernelArch::Unknown, _) => Ok(ArchCheck::KernelUnknown),
    }
}

/// Where something is in the donor: which of its filesystems, and the path there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DonorPath {
    /// Index into the donor's list of sources.
    pub source: usize,
    /// Absolute path inside that filesystem.
    pub path: String,
}

/// A regular file of the donor with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DonorFile {
    pub at: DonorPath,
    pub meta: NodeMeta,
}

impl DonorFile {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.meta.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.meta.len == 0
    }
}

/// Everything the donor has for one kernel version, complete or not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelCandidate {
    /// The version as in the file names (`6.1.0-28-amd64`).
    pub version: String,
    pub vmlinuz: Option<DonorFile>,
    pub initrd: Option<DonorFile>,
    pub config: Option<DonorFile>,
    pub system_map: Option<DonorFile>,
    /// The modules directory (`/lib/modules/<ver>` or `/usr/lib/modules/<ver>`).
    pub modules_dir: Option<DonorPath>,
    /// Why it cannot be used (empty for a usable kernel): what it lacks, or what failed
    /// reading it.
    pub problems: Vec<String>,
}

impl KernelCandidate {
    /// One line for listings: `6.1.0-9-amd64 (vmlinuz, modules; lacks: initrd)`.
    pub fn summary(&self) -> String {
        let mut has = Vec::new();
        if self.vmlinuz.is_some() {
            has.push("vmlinuz");
        }
        if self.initrd.is_some() {
            has.push("initrd");
        }
        if self.modules_dir.is_some() {
            has.push("modules");
        }
        if self.config.is_some() {
            has.push("config");
        }
        if self.system_map.is_some() {
            has.push("System.map");
        }
        let mut s = format!(
            "{} (has {}",
            self.version,
            if has.is_empty() {
                "nothing".to_string()
            } else {
                has.join(", ")
            }
        );
        if !self.problems.is_empty() {
            s.push_str("; ");
            s.push_str(&self.problems.join("; "));
        }
        s.push(')');
        s
    }
}

/// A complete donor kernel, ready to graft.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DonorKernel {
    /// The version as in the file names (`6.1.0-28-amd64`): also the name of the modules
    /// directory the kernel loads from.
    pub version: String,
    pub vmlinuz: DonorFile,
    pub initrd: DonorFile,
    pub config: Option<DonorFile>,
    pub system_map: Option<DonorFile>,
    /// The walked modules tree.
    pub modules: ModulesTree,
    /// From the vmlinuz boot header (or the config when the header is too old to tell).
    pub arch: KernelArch,
    /// The version string embedded in the vmlinuz, if it has one.
    pub embedded_version: Option<String>,
    /// Things worth telling the user (e.g. the embedded release differs from the name).
    pub warnings: Vec<String>,
}

impl DonorKernel {
    /// Bytes of kernel, initrd, config, System.map and modules together.
    pub fn total_bytes(&self) -> u64 {
        self.vmlinuz.len()
            + self.initrd.len()
            + self.config.as_ref().map_or(0, DonorFile::len)
            + self.system_map.as_ref().map_or(0, DonorFile::len)
            + self.modules.bytes
    }

    /// Number of regular files a graft of this kernel writes (without GRUB files).
    pub fn file_count(&self) -> u64 {
        2 + u64::from(self.config.is_some())
            + u64::from(self.system_map.is_some())
            + self.modules.files
    }
}

/// An opened donor.
pub struct Donor {
    path: PathBuf,
    sources: Vec<DonorSource>,
    /// Filesystems that could not be read (partition label → why), for error messages.
    skipped: Vec<String>,
    candidates: Vec<KernelCandidate>,
    kernels: Vec<DonorKernel>,
}

impl std::fmt::Debug for Donor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Donor")
            .field("path", &self.path)
            .field("sources", &self.source_labels())
            .field("skipped", &self.skipped)
            .field("candidates", &self.candidates)
            .finish()
    }
}

/// What a file name in a boot directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BootFileKind {
    Vmlinuz,
    Initrd,
    Config,
    SystemMap,
}

/// Classify a boot directory file name: `vmlinuz-VER`, `initrd.img-VER`,
/// `initramfs-VER.img`, `initrd-VER.img`, `initrd-VER`, `config-VER`, `System.map-VER`.
fn classify_boot_name(name: &str) -> Option<(BootFileKind, &str)> {
    let found = if let Some(v) = name.strip_prefix("vmlinuz-") {
        (BootFileKind::Vmlinuz, v)
    } else if let Some(v) = name.strip_prefix("initrd.img-") {
        (BootFileKind::Initrd, v)
    } else if let Some(v) = name
        .strip_prefix("initramfs-")
        .and_then(|v| v.strip_suffix(".img"))
    {
        (BootFileKind::Initrd, v)
    } else if let Some(v) = name.strip_prefix("initrd-") {
        (BootFileKind::Initrd, v.strip_suffix(".img").unwrap_or(v))
    } else if let Some(v) = name.strip_prefix("config-") {
        (BootFileKind::Config, v)
    } else if let Some(v) = name.strip_prefix("System.map-") {
        (BootFileKind::SystemMap, v)
    } else {
        return None;
    };
    // Backup and package-manager leftovers are not kernels.
    let (kind, v) = found;
    if v.is_empty()
        || v.ends_with(".old")
        || v.ends_with(".bak")
        || v.ends_with(".dpkg-tmp")
        || v.ends_with(".dpkg-bak")
        || v.ends_with("-kdump")
    {
        return None;
    }
    Some((kind, v))
}

impl Donor {
    /// Open a donor: a directory, a bare ext2/3/4 image or a partitioned disk image.
    /// Reads the partition table and filesystems, lists the kernels, walks the modules
    /// tree of each complete kernel and reads its boot header. Never writes.
    pub fn open(path: &Path) -> Result<Donor, DonorError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DonorError::NotFound {
                path: path.to_path_buf(),
            },
            _ => DonorError::io("opening the donor", path, e),
        })?;
        let name = path.display().to_string();
        let mut skipped = Vec::new();
        let sources = if meta.is_dir() {
            vec![DonorSource {
                label: name.clone(),
                kind: SourceKind::Dir(DirRoot::new(path)?),
            }]
        } else {
            let image = Region::open(path).map_err(|e| match e {
                crate::Error::Io {
                    action,
                    path,
                    source,
                } => DonorError::Io {
                    action,
                    path,
                    source,
                },
                other => DonorError::io(
                    "opening the donor",
                    path,
                    std::io::Error::other(other.to_string()),
                ),
            })?;
            let mut sources = Vec::new();
            match read_table(&image)? {
                Some(table) => {
                    for entry in &table.entries {
                        let label = format!("{name} partition {}", entry.number);
                        let region = match image.sub(entry.start, entry.len) {
                            Ok(r) => r,
                            Err(e) => {
                                skipped.push(format!("{label}: {e}"));
                                continue;
                            }
                        };
                        match ExtReader::open(region, label.clone()) {
                            Ok(reader) => sources.push(DonorSource {
                                label,
                                kind: SourceKind::Ext {
                                    reader,
                                    size: entry.len,
                                },
                            }),
                            Err(e) => skipped.push(e.to_string()),
                        }
                    }
                    if table.entries.is_empty() {
                        skipped.push(format!("{name}: the partition table has no partitions"));
                    }
                }
                None => match ExtReader::open(image.clone(), name.clone()) {
                    Ok(reader) => sources.push(DonorSource {
                        label: name.clone(),
                        kind: SourceKind::Ext {
                            reader,
                            size: image.len(),
                        },
                    }),
                    Err(e) => skipped.push(format!("no partition table, and {e}")),
                },
            }
            if sources.is_empty() {
                return Err(DonorError::NoFilesystem {
                    donor: name,
                    reasons: skipped,
                });
            }
            sources
        };
        let mut donor = Donor {
            path: path.to_path_buf(),
            sources,
            skipped,
            candidates: Vec::new(),
            kernels: Vec::new(),
        };
        donor.scan()?;
        Ok(donor)
    }

    /// The donor path given to [`Donor::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the readable filesystems, indexed like [`DonorPath::source`].
    pub fn source_labels(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.label.clone()).collect()
    }

    /// Filesystems of the donor that could not be read, with why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// `donor.img partition 2:/boot/vmlinuz-6.1.0-28-amd64`, for messages and reports.
    pub fn describe(&self, at: &DonorPath) -> String {
        match self.sources.get(at.source) {
            Some(s) => format!("{}:{}", s.label, at.path),
            None => at.path.clone(),
        }
    }

    /// Every kernel version found, complete or not, newest first.
    pub fn candidates(&self) -> &[KernelCandidate] {
        &self.candidates
    }

    /// The complete kernels (vmlinuz, initrd and a modules tree that could be read),
    /// newest first.
    pub fn kernels(&self) -> Vec<DonorKernel> {
        self.kernels.clone()
    }

    /// The newest complete kernel, or the one named `version` (`--kernel`). When none fits,
    /// the error lists every kernel found and what each one lacks.
    pub fn select_kernel(&self, version: Option<&str>) -> Result<DonorKernel, DonorError> {
        let found: Vec<String> = self
            .candidates
            .iter()
            .map(KernelCandidate::summary)
            .collect();
        match version {
            None => self
                .kernels
                .first()
                .cloned()
                .ok_or_else(|| DonorError::NoUsableKernel {
                    donor: self.path.display().to_string(),
                    found: self.found_with_skipped(found),
                }),
            Some(v) => {
                if let Some(k) = self.kernels.iter().find(|k| k.version == v) {
                    return Ok(k.clone());
                }
                match self.candidates.iter().find(|c| c.version == v) {
                    Some(c) => Err(DonorError::KernelUnusable {
                        donor: self.path.display().to_string(),
                        wanted: v.to_string(),
                        problems: c.problems.clone(),
                    }),
                    None => Err(DonorError::KernelNotFound {
                        donor: self.path.display().to_string(),
                        wanted: v.to_string(),
                        found: self.found_with_skipped(found),
                    }),
                }
            }
        }
    }

    fn found_with_skipped(&self, mut found: Vec<String>) -> Vec<String> {
        found.extend(self.skipped.iter().map(|s| format!("unreadable: {s}")));
        found
    }

    /// Open a donor file for streaming: the reader yields exactly `file.len()` bytes or an
    /// error ([`DonorError::ShortRead`] when the content ends early).
    pub fn open_file(&self, file: &DonorFile) -> Result<impl Read, DonorError> {
        self.open_file_at(file, None)
    }

    /// [`Donor::open_file`], by inode number when one is known.
    fn open_file_at(&self, file: &DonorFile, ino: Option<u32>) -> Result<impl Read, DonorError> {
        let src = self.source(file.at.source)?;
        let opened = match ino {
            Some(ino) => src.open_inode(ino, &file.at.path)?,
            None => src.open(&file.at.path)?,
        };
        let (reader, len) = opened.ok_or_else(|| DonorError::Vanished {
            donor: src.label.clone(),
            path: file.at.path.clone(),
        })?;
        if len != file.meta.len {
            return Err(DonorError::ShortRead {
                donor: src.label.clone(),
                path: file.at.path.clone(),
                expected: file.meta.len,
                got: len,
            });
        }
        Ok(ExactReader {
            inner: reader,
            remaining: len,
            expected: len,
            donor: src.label.clone(),
            path: file.at.path.clone(),
        })
    }

    /// Open a file of a modules tree for streaming (see [`Donor::open_file`]); by its
    /// inode number when the tree was walked by inode.
    pub fn open_tree_file(
        &self,
        tree: &ModulesTree,
        entry: &TreeEntry,
    ) -> Result<impl Read, DonorError> {
        self.open_file_at(
            &DonorFile {
                at: DonorPath {
                    source: tree.root.source,
                    path: tree::join(&tree.root.path, &entry.rel),
                },
                meta: entry.meta.clone(),
            },
            entry.ino,
        )
    }

    fn source(&self, index: usize) -> Result<&DonorSource, DonorError> {
        self.sources.get(index).ok_or_else(|| DonorError::Vanished {
            donor: self.path.display().to_string(),
            path: format!("filesystem #{index}"),
        })
    }

    /// Bytes the graft of `kernel` needs in the guest filesystem: every file rounded up to
    /// [`GRAFT_BLOCK`], its block-map/extent overhead, one block per directory and per
    /// slow symlink, plus the GRUB files (the donor's when it has some, otherwise
    /// [`GRUB_ALLOWANCE`]). An upper estimate for the planner, computed without reading
    /// any content.
    pub fn graft_size(&self, kernel: &DonorKernel) -> u64 {
        let grub = self
            .grub_dir()
            .and_then(|(i, dir)| self.grub_dir_sizes(i, &dir).ok())
            .map(|sizes| {
                sizes.iter().map(|&s| file_blocks(s)).sum::<u64>() * GRAFT_BLOCK + GRAFT_BLOCK
            })
            .unwrap_or(GRUB_ALLOWANCE);
        kernel_graft_size(kernel) + grub
    }

    /// [`Donor::graft_size`] with the GRUB files actually chosen (or none).
    pub fn graft_size_with(kernel: &DonorKernel, grub: Option<&GrubPlatformFiles>) -> u64 {
        kernel_graft_size(kernel)
            + grub.map_or(0, |g| {
                g.files
                    .values()
                    .map(|d| file_blocks(d.len() as u64))
                    .sum::<u64>()
                    * GRAFT_BLOCK
                    + GRAFT_BLOCK
            })
    }

    /// The part of [`Donor::graft_size_with`] that lands outside `/boot`: the modules tree
    /// (with the directories above it). With a separate `/boot` filesystem the rest
    /// (kernel, initrd, GRUB files) goes there.
    pub fn modules_graft_size(kernel: &DonorKernel) -> u64 {
        let boot_files = file_blocks(kernel.vmlinuz.len())
            + file_blocks(kernel.initrd.len())
            + kernel.config.as_ref().map_or(0, |f| file_blocks(f.len()))
            + kernel
                .system_map
                .as_ref()
                .map_or(0, |f| file_blocks(f.len()));
        kernel_graft_size(kernel).saturating_sub(boot_files * GRAFT_BLOCK)
    }

    /// Where the donor's GRUB i386-pc module directory is, if it has one.
    fn grub_dir(&self) -> Option<(usize, String)> {
        self.grub_dir_for(crate::grub_files::PLATFORM_I386_PC)
    }

    fn grub_dir_for(&self, platform: &str) -> Option<(usize, String)> {
        if platform.is_empty()
            || platform.contains(['/', '\0'])
            || platform == "."
            || platform == ".."
        {
            return None;
        }
        let dir = format!("/usr/lib/grub/{platform}");
        self.sources
            .iter()
            .enumerate()
            .find_map(|(i, s)| match s.stat(&dir) {
                Ok(Some(m)) if m.kind == NodeKind::Dir => Some((i, dir.clone())),
                _ => None,
            })
    }

    fn grub_dir_sizes(&self, source: usize, dir: &str) -> Result<Vec<u64>, DonorError> {
        let src = self.source(source)?;
        let items = src
            .read_dir_inodes(dir, crate::grub_files::MAX_DIR_ENTRIES)?
            .unwrap_or_default();
        let mut sizes = Vec::new();
        for (item, meta, _) in items {
            if !GrubPlatformFiles::is_wanted(&item.name) {
                continue;
            }
            // A symlink counts as the file it names.
            let meta = match meta.kind {
                NodeKind::Symlink => src.stat(&format!("{dir}/{}", item.name))?,
                _ => Some(meta),
            };
            if let Some(m) = meta {
                if m.kind == NodeKind::File {
                    sizes.push(m.len);
                }
            }
        }
        Ok(sizes)
    }

    /// The donor's GRUB files for `platform` (`"i386-pc"`): the `*.mod`, `*.lst`, `*.img`
    /// and `modinfo.sh` of its `/usr/lib/grub/<platform>/`, each file and the total
    /// bounded (see [`crate::grub_files`]). `None` when the donor has no such
    /// directory (the caller then uses the host's).
    pub fn grub_files(&self, platform: &str) -> Result<Option<GrubPlatformFiles>, DonorError> {
        use crate::grub_files::{MAX_DIR_ENTRIES, MAX_FILE_BYTES, MAX_TOTAL_BYTES};
        let Some((index, dir)) = self.grub_dir_for(platform) else {
            return Ok(None);
        };
        let src = self.source(index)?;
        let items = src
            .read_dir_inodes(&dir, MAX_DIR_ENTRIES)?
            .unwrap_or_default();
        let mut files = Vec::new();
        let mut total = 0u64;
        for (item, meta, ino) in items {
            if !GrubPlatformFiles::is_wanted(&item.name) {
                continue;
            }
            let path = format!("{dir}/{}", item.name);
            // A symlink counts as the file it names.
            let ino = match meta.kind {
                NodeKind::File => ino,
                NodeKind::Symlink => match src.stat(&path)? {
                    Some(m) if m.kind == NodeKind::File => None,
                    _ => continue,
                },
                _ => continue,
            };
            let data = match ino {
                Some(ino) => src.read_small_inode(ino, &path, MAX_FILE_BYTES)?,
                None => src.read_small(&path, MAX_FILE_BYTES)?,
            }
            .ok_or_else(|| DonorError::Vanished {
                donor: src.label.clone(),
                path: path.clone(),
            })?;
            total += data.len() as u64;
            if total > MAX_TOTAL_BYTES {
                return Err(DonorError::TooLarge {
                    donor: src.label.clone(),
                    path: dir,
                    size: total,
                    cap: MAX_TOTAL_BYTES,
                });
            }
            files.push((item.name, data));
        }
        GrubPlatformFiles::from_files(platform, files)
            .map(Some)
            .map_err(|source| DonorError::Grub {
                donor: src.label.clone(),
                path: dir,
                source,
            })
    }

    /// Find every kernel, then complete the complete ones.
    fn scan(&mut self) -> Result<(), DonorError> {
        let mut by_version: BTreeMap<String, KernelCandidate> = BTreeMap::new();
        let mut scan_problems: Vec<String> = Vec::new();

        for (index, src) in self.sources.iter().enumerate() {
            // Kernel files: /boot of a root filesystem, or the root of a /boot partition.
            for dir in ["/boot", "/"] {
                let items = match src.read_dir(dir, MAX_BOOT_DIR_ENTRIES) {
                    Ok(Some(items)) => items,
                    Ok(None) => continue,
                    Err(e) => {
                        scan_problems.push(format!("{}:{dir}: {e}", src.label));
                        continue;
                    }
                };
                let mut items = items;
                items.sort_by(|a, b| a.name.cmp(&b.name));
                for item in items {
                    let Some((kind, version)) = classify_boot_name(&item.name) else {
                        continue;
                    };
                    let path = tree::join(dir, &item.name);
                    let meta = match src.stat(&path) {
                        Ok(Some(m)) if m.kind == NodeKind::File => m,
                        Ok(_) => continue,
                        Err(e) => {
                            scan_problems.push(format!("{}:{path}: {e}", src.label));
                            continue;
                        }
                    };
                    let cand = by_version
                        .entry(version.to_string())
                        .or_insert_with(|| new_candidate(version));
                    let slot = match kind {
                        BootFileKind::Vmlinuz => &mut cand.vmlinuz,
                        BootFileKind::Initrd => &mut cand.initrd,
                        BootFileKind::Config => &mut cand.config,
                        BootFileKind::SystemMap => &mut cand.system_map,
                    };
                    if slot.is_none() {
                        *slot = Some(DonorFile {
                            at: DonorPath {
                                source: index,
                                path,
                            },
                            meta,
                        });
                    }
                }
            }
            // Modules trees: /lib/modules (which may be a symlink into /usr) and
            // /usr/lib/modules; the first one found for a version wins.
            for base in ["/lib/modules", "/usr/lib/modules"] {
                let items = match src.read_dir(base, MAX_BOOT_DIR_ENTRIES) {
                    Ok(Some(items)) => items,
                    Ok(None) => continue,
                    Err(e) => {
                        scan_problems.push(format!("{}:{base}: {e}", src.label));
                        continue;
                    }
                };
                for item in items {
                    let path = format!("{base}/{}", item.name);
                    match src.stat(&path) {
                        Ok(Some(m)) if m.kind == NodeKind::Dir => {}
                        Ok(_) => continue,
                        Err(e) => {
                            scan_problems.push(format!("{}:{path}: {e}", src.label));
                            continue;
                        }
                    }
                    let cand = by_version
                        .entry(item.name.clone())
                        .or_insert_with(|| new_candidate(&item.name));
                    if cand.modules_dir.is_none() {
                        cand.modules_dir = Some(DonorPath {
                            source: index,
                            path,
                        });
                    }
                }
            }
        }
        self.skipped.extend(scan_problems);

        // Only versions that have a kernel, an initrd or modules are candidates (a lone
        // config or System.map is a leftover).
        let mut candidates: Vec<KernelCandidate> = by_version
            .into_values()
            .filter(|c| c.vmlinuz.is_some() || c.initrd.is_some() || c.modules_dir.is_some())
            .collect();
        candidates.sort_by(|a, b| compare_versions(&b.version, &a.version));

        let mut kernels = Vec::new();
        for cand in &mut candidates {
            if cand.vmlinuz.is_none() {
                cand.problems.push("lacks: vmlinuz".into());
            }
            if cand.initrd.is_none() {
                cand.problems.push(format!(
                    "lacks: initrd (initrd.img-{v}, initramfs-{v}.img or initrd-{v}.img)",
                    v = cand.version
                ));
            }
            if cand.modules_dir.is_none() {
                cand.problems.push(format!(
                    "lacks: modules tree (/lib/modules/{})",
                    cand.version
                ));
            }
            if !cand.problems.is_empty() {
                continue;
            }
            match self.complete(cand) {
                Ok(k) => kernels.push(k),
                Err(problem) => cand.problems.push(problem),
            }
        }
        self.candidates = candidates;
        self.kernels = kernels;
        Ok(())
    }

    /// Check sizes, walk the modules tree and read the boot header of a candidate that has
    /// all three parts; the `Err` is the reason it is unusable, for listings.
    fn complete(&self, cand: &KernelCandidate) -> Result<DonorKernel, String> {
        let (Some(vmlinuz), Some(initrd), Some(modules_dir)) =
            (&cand.vmlinuz, &cand.initrd, &cand.modules_dir)
        else {
            return Err("incomplete".into());
        };
        let mut warnings = Vec::new();
        for (file, cap) in [
            (Some(vmlinuz), MAX_KERNEL_BYTES),
            (Some(initrd), MAX_INITRD_BYTES),
            (cand.config.as_ref(), MAX_CONFIG_BYTES),
            (cand.system_map.as_ref(), MAX_SYSTEM_MAP_BYTES),
        ] {
            let Some(file) = file else { continue };
            let bound = self
                .sources
                .get(file.at.source)
                .map_or(u64::MAX, DonorSource::size_bound);
            let cap = cap.min(bound);
            if file.meta.len > cap {
                return Err(format!(
                    "{} claims {} bytes, more than the {cap} allowed (corrupt inode?)",
                    self.describe(&file.at),
                    file.meta.len
                ));
            }
        }
        if vmlinuz.meta.len == 0 {
            return Err(format!("{} is empty", self.describe(&vmlinuz.at)));
        }
        if initrd.meta.len == 0 {
            return Err(format!("{} is empty", self.describe(&initrd.at)));
        }
        let src = self.source(modules_dir.source).map_err(|e| e.to_string())?;
        let modules = tree::walk(src, modules_dir.source, &modules_dir.path)
            .map_err(|e| format!("modules tree unreadable: {e}"))?;
        if !modules.has_modules() {
            return Err(format!(
                "{} holds no modules (no modules.dep, no *.ko): a leftover of a removed kernel?",
                self.describe(modules_dir)
            ));
        }

        let header = self
            .read_header(vmlinuz)
            .map_err(|e| format!("vmlinuz unreadable: {e}"))?;
        let (mut arch, embedded_version) = match &header {
            Some(h) => (h.arch, h.version_string.clone()),
            None => {
                warnings.push(format!(
                    "{} is not an x86 bzImage (no boot header); its architecture is unknown",
                    self.describe(&vmlinuz.at)
                ));
                (KernelArch::Unknown, None)
            }
        };
        if arch == KernelArch::Unknown && header.is_some() {
            if let Some(config) = &cand.config {
                arch = self.arch_from_config(config).unwrap_or(KernelArch::Unknown);
            }
        }
        if let Some(release) = header.as_ref().and_then(BzImageHeader::release) {
            if release != cand.version {
                warnings.push(format!(
                    "{} says it is release {release}, but its file name says {}: its modules may not load",
                    self.describe(&vmlinuz.at),
                    cand.version
                ));
            }
        }
        Ok(DonorKernel {
            version: cand.version.clone(),
            vmlinuz: vmlinuz.clone(),
            initrd: initrd.clone(),
            config: cand.config.clone(),
            system_map: cand.system_map.clone(),
            modules,
            arch,
            embedded_version,
            warnings,
        })
    }

    /// Read the start of a vmlinuz (at most [`bzimage::HEADER_BYTES`]) and parse it.
    fn read_header(&self, vmlinuz: &DonorFile) -> Result<Option<BzImageHeader>, DonorError> {
        let reader = self.open_file(vmlinuz)?;
        let mut head = Vec::new();
        reader
            .take(bzimage::HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| DonorError::io("reading the boot header of", &vmlinuz.at.path, e))?;
        Ok(BzImageHeader::parse(&head).unwrap_or(None))
    }

    /// `CONFIG_X86_64=y` / `CONFIG_X86_32=y` from a kernel config.
    fn arch_from_config(&self, config: &DonorFile) -> Option<KernelArch> {
        let src = self.sources.get(config.at.source)?;
        let text = src.read_small(&config.at.path, MAX_CONFIG_BYTES).ok()??;
        let text = String::from_utf8_lossy(&text);
        if text.lines().any(|l| l.trim() == "CONFIG_X86_64=y") {
            Some(KernelArch::X86_64)
        } else if text.lines().any(|l| l.trim() == "CONFIG_X86_32=y") {
            Some(KernelArch::I386)
        } else {
            None
        }
    }
}

/// The donor's filesystems read as one tree, in order: a path names what the first
/// filesystem that has it holds there (a file for `read_file`, a directory for
/// `read_dir`, a symlink for `read_link`). Symlinks resolve inside each filesystem.
impl TreeRead for &Donor {
    type Error = DonorError;

    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        for src in &self.sources {
            if let Some(m) = src.lstat(path)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        for src in &self.sources {
            if let Some(m) = src.stat(path)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Refuses more than `cap` bytes before allocating. (The shim/GRUB EFI binaries of
    /// the donor's packages are read this way.)
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, DonorError> {
        for src in &self.sources {
            match src.stat(path)? {
                Some(m) if m.kind == NodeKind::File => {}
                _ => continue,
            }
            if let Some(data) = src.read_small(path, cap)? {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    fn read_link(&mut self, path: &str) -> Result<Option<String>, DonorError> {
        for src in &self.sources {
            if matches!(src.lstat(path)?, Some(m) if m.kind == NodeKind::Symlink) {
                return src.read_link(path);
            }
        }
        Ok(None)
    }

    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, DonorError> {
        for src in &self.sources {
            if let Some(items) = src.read_dir(path, cap)? {
                return Ok(Some(items));
            }
        }
        Ok(None)
    }
}

fn new_candidate(version: &str) -> KernelCandidate {
    KernelCandidate {
        version: version.to_string(),
        vmlinuz: None,
        initrd: None,
        config: None,
        system_map: None,
        modules_dir: None,
        problems: Vec::new(),
    }
}

/// Blocks a file of `len` bytes takes: its data blocks rounded up, plus one block of
/// block-map or extent metadata per 1024 data blocks (ext2/3 indirect blocks; ext4 needs
/// fewer).
fn file_blocks(len: u64) -> u64 {
    let data = len.div_ceil(GRAFT_BLOCK);
    data + data.div_ceil(1024)
}

/// The kernel part of [`Donor::graft_size`].
fn kernel_graft_size(kernel: &DonorKernel) -> u64 {
    let mut blocks = file_blocks(kernel.vmlinuz.len()) + file_blocks(kernel.initrd.len());
    blocks += kernel.config.as_ref().map_or(0, |f| file_blocks(f.len()));
    blocks += kernel
        .system_map
        .as_ref()
        .map_or(0, |f| file_blocks(f.len()));
    // The modules root and the directories above it that may be missing
    // (/lib/modules, /boot/grub/i386-pc).
    blocks += 4;
    for e in &kernel.modules.entries {
        blocks += match e.meta.kind {
            NodeKind::File => file_blocks(e.meta.len),
            NodeKind::Dir => 1,
            // Targets up to 59 bytes live in the inode ("fast" symlinks).
            NodeKind::Symlink => u64::from(e.target.as_ref().is_some_and(|t| t.len() >= 60)),
            _ => 0,
        };
    }
    // Directory growth: a 4 KiB directory block holds ~100 entries of module-length names.
    blocks += (kernel.modules.entries.len() as u64).div_ceil(100);
    blocks * GRAFT_BLOCK
}

/// A reader that yields exactly `expected` bytes: it stops there even if the underlying
/// file would go on, and turns an early end into an error, so a file whose content does not
/// match its size can't produce a silently short copy.
struct ExactReader {
    inner: DonorRead,
    remaining: u64,
    expected: u64,
    donor: String,
    path: String,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                DonorError::ShortRead {
                    donor: self.donor.clone(),
                    path: self.path.clone(),
                    expected: self.expected,
                    got: self.expected - self.remaining,
                }
                .to_string(),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl DonorError {
    /// What the error concerns: the donor, except the guest-kernel searches, which are
    /// about the guest (the input).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            DonorError::Io { source, .. } => crate::error::io_kind(source, K::Donor),
            DonorError::OnlyXenKernels { .. }
            | DonorError::NoGuestKernel { .. }
            | DonorError::GuestKernelNotReady { .. } => K::Input,
            DonorError::Guest(g) if g.kind() != K::Input => g.kind(),
            _ => K::Donor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_file_names() {
        use BootFileKind::*;
        assert_eq!(
            classify_boot_name("vmlinuz-6.1.0-28-amd64"),
            Some((Vmlinuz, "6.1.0-28-amd64"))
        );
        assert_eq!(
            classify_boot_name("initrd.img-6.1.0-28-amd64"),
            Some((Initrd, "6.1.0-28-amd64"))
        );
        assert_eq!(
            classify_boot_name("initramfs-5.14.0-362.el9.x86_64.img"),
            Some((Initrd, "5.14.0-362.el9.x86_64"))
        );
        assert_eq!(
            classify_boot_name("initrd-2.6.32-5-686.img"),
            Some((Initrd, "2.6.32-5-686"))
        );
        assert_eq!(
            classify_boot_name("initrd-4.12.14-default"),
            Some((Initrd, "4.12.14-default"))
        );
        assert_eq!(
            classify_boot_name("config-6.1.0-28-amd64"),
            Some((Config, "6.1.0-28-amd64"))
        );
        assert_eq!(
            classify_boot_name("System.map-6.1.0-28-amd64"),
            Some((SystemMap, "6.1.0-28-amd64"))
        );
        assert_eq!(classify_boot_name("vmlinuz"), None);
        assert_eq!(classify_boot_name("vmlinuz-"), None);
        assert_eq!(classify_boot_name("vmlinuz-6.1.0-28-amd64.old"), None);
        assert_eq!(classify_boot_name("initramfs-5.14.0-kdump.img"), None);
        assert_eq!(classify_boot_name("grub"), None);
    }

    #[test]
    fn arch_rules() {
        assert_eq!(
            check_arch(KernelArch::X86_64, UserlandArch::X86_64).unwrap(),
            ArchCheck::Match
        );
        assert_eq!(
            check_arch(KernelArch::X86_64, UserlandArch::I386).unwrap(),
            ArchCheck::Kernel64Userland32
        );
        let err = check_arch(KernelArch::I386, UserlandArch::X86_64).unwrap_err();
        assert!(matches!(err, DonorError::ArchMismatch { .. }));
        assert!(
            err.to_string().contains("32-bit kernel cannot run 64-bit"),
            "{err}"
        );
        assert_eq!(
            check_arch(KernelArch::I386, UserlandArch::I386).unwrap(),
            ArchCheck::Match
        );
        assert_eq!(
            check_arch(KernelArch::Unknown, UserlandArch::I386).unwrap(),
            ArchCheck::KernelUnknown
        );
        assert_eq!(UserlandArch::from_name("amd64"), Some(UserlandArch::X86_64));
        assert_eq!(UserlandArch::from_name("i686"), Some(UserlandArch::I386));
        assert_eq!(UserlandArch::from_name("arm64"), None);
    }

    #[test]
    fn block_estimate_rounds_up_and_counts_map_blocks() {
        assert_eq!(file_blocks(0), 0);
        assert_eq!(file_blocks(1), 2);
        assert_eq!(file_blocks(4096), 2);
        assert_eq!(file_blocks(4097), 3);
        assert_eq!(file_blocks(1024 * 4096), 1025);
        assert_eq!(file_blocks(1024 * 4096 + 1), 1027);
    }
}
