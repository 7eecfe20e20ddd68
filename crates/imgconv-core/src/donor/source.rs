//! One filesystem of a donor, read-only: a host directory (an unpacked kernel package) or
//! an ext2/3/4 filesystem read through [`ExtReader`].
//!
//! Paths are donor paths: absolute, `/`-separated, resolved inside the donor by the one
//! resolver ([`tree::resolve`]). For an ext filesystem [`ExtReader`] walks it by inode.
//! For a directory, [`DirRoot::resolve`] walks component by component with `lstat` and
//! `readlink`, treating the donor directory as the root: an absolute symlink target starts
//! again at the donor root and `..` stops there, so `lib -> usr/lib` works and
//! `/etc/x -> /etc/shadow` can never reach the host's file. The final open uses
//! `O_NOFOLLOW`, so a symlink swapped in after resolution is refused.
//!
//! Both read as a [`TreeRead`] (`&DonorSource`), with donor errors.

use super::DonorError;
use crate::ext::read::ExtReader;
use crate::ext::read::RawFs;
use crate::tree::{self, host_kind, host_meta, ResolveError, TreeRead};
use crate::tree::{DirItem, NodeKind, NodeMeta};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most entries of one directory listed while looking a path up by inode.
const MAX_LOOKUP_ENTRIES: usize = 1 << 20;

/// What one donor filesystem is.
pub(crate) enum SourceKind {
    /// A host directory acting as the donor's root.
    Dir(DirRoot),
    /// An ext filesystem; `size` is its region's length (a file can't hold more data).
    Ext { reader: ExtReader, size: u64 },
}

/// One readable filesystem of the donor.
pub(crate) struct DonorSource {
    /// How errors and listings name it ("donor.img partition 2", "/srv/donor").
    pub label: String,
    pub kind: SourceKind,
}

/// A streaming reader over one donor file.
pub(crate) type DonorRead = Box<dyn Read>;

impl DonorSource {
    /// Largest size a file of this filesystem can have: for an image, the filesystem's own
    /// size (donor files are never sparse, so a larger claim is a corrupt inode).
    pub fn size_bound(&self) -> u64 {
        match &self.kind {
            SourceKind::Dir(_) => u64::MAX,
            SourceKind::Ext { size, .. } => *size,
        }
    }

    /// Metadata of `path`, following symlinks inside the donor; `None` if absent.
    pub fn stat(&self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => Ok(reader.metadata(path)?),
            SourceKind::Dir(d) => match d.resolve(path, true)? {
                Some(p) => d.meta(&p).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Metadata of `path` itself (a final symlink is not followed); `None` if absent.
    pub fn lstat(&self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => Ok(reader.symlink_metadata(path)?),
            SourceKind::Dir(d) => match d.resolve(path, false)? {
                Some(p) => d.meta(&p).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Whether `path` is a directory (following symlinks).
    fn is_dir(&self, path: &str) -> Result<bool, DonorError> {
        Ok(matches!(self.stat(path)?, Some(m) if m.kind == NodeKind::Dir))
    }

    /// Entries of a directory (following symlinks to it), at most `cap`; `None` if absent
    /// or not a directory.
    pub fn read_dir(&self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => {
                if !self.is_dir(path)? {
                    return Ok(None);
                }
                Ok(reader.read_dir(path, cap)?)
            }
            SourceKind::Dir(d) => match d.resolve(path, true)? {
                Some(p) => d.read_dir(&p, cap),
                None => Ok(None),
            },
        }
    }

    /// Entries of a directory with each entry's own metadata (symlinks not followed),
    /// read without resolving each entry's path again; `None` if absent or not a directory.
    pub fn read_dir_meta(
        &self,
        path: &str,
        cap: usize,
    ) -> Result<Option<Vec<(DirItem, NodeMeta)>>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => {
                if !self.is_dir(path)? {
                    return Ok(None);
                }
                Ok(reader.read_dir_meta(path, cap)?)
            }
            SourceKind::Dir(d) => match d.resolve(path, true)? {
                Some(p) => {
                    let Some(items) = d.read_dir(&p, cap)? else {
                        return Ok(None);
                    };
                    items
                        .into_iter()
                        .map(|item| {
                            let meta = d.meta(&p.join(&item.name))?;
                            Ok((item, meta))
                        })
                        .collect::<Result<Vec<_>, DonorError>>()
                        .map(Some)
                }
                None => Ok(None),
            },
        }
    }

    /// Target of the symlink at `path`; `None` if absent.
    pub fn read_link(&self, path: &str) -> Result<Option<String>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => Ok(reader.read_link(path)?),
            SourceKind::Dir(d) => match d.resolve(path, false)? {
                Some(p) => fs::read_link(&p)
                    .map(|t| Some(t.to_string_lossy().into_owned()))
                    .map_err(|e| DonorError::io("reading the symlink", &p, e)),
                None => Ok(None),
            },
        }
    }

    /// Whole content of a small regular file (following symlinks), refusing more than
    /// `cap` bytes before allocating; `None` if absent.
    pub fn read_small(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => Ok(reader.read_file(path, cap)?),
            SourceKind::Dir(d) => {
                let Some((file, len, host)) = d.open(path)? else {
                    return Ok(None);
                };
                if len > cap {
                    return Err(DonorError::TooLarge {
                        donor: self.label.clone(),
                        path: path.to_string(),
                        size: len,
                        cap,
                    });
                }
                let mut data = Vec::with_capacity(len as usize);
                file.take(cap + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| DonorError::io("reading", &host, e))?;
                if data.len() as u64 > cap {
                    return Err(DonorError::TooLarge {
                        donor: self.label.clone(),
                        path: path.to_string(),
                        size: data.len() as u64,
                        cap,
                    });
                }
                Ok(Some(data))
            }
        }
    }

    /// The inode reader and the inode of directory `path` (symlinks resolved inside the
    /// donor), walking its canonical path from the root by inode; `None` for a host
    /// directory, a filesystem the inode reader does not handle, or anything it does not
    /// find or handle on the way (callers then read by path).
    pub(crate) fn dir_inode(&self, path: &str) -> Option<(Arc<RawFs>, u32)> {
        const ROOT_INO: u32 = 2;
        let SourceKind::Ext { reader, .. } = &self.kind else {
            return None;
        };
        let raw = reader.raw()?;
        let canonical = reader.canonical(path).ok()?;
        let mut ino = ROOT_INO;
        for name in canonical.split('/').filter(|c| !c.is_empty()) {
            let dir = raw.inode(ino).ok()?;
            if dir.kind() != NodeKind::Dir {
                return None;
            }
            let entries = raw.read_dir(&dir, MAX_LOOKUP_ENTRIES).ok()?;
            ino = entries.into_iter().find(|e| e.name == name)?.ino;
        }
        (raw.inode(ino).ok()?.kind() == NodeKind::Dir).then(|| (Arc::clone(raw), ino))
    }

    /// Entries of a directory (following symlinks to it) with each entry's own metadata
    /// (symlinks not followed) and, when the directory was read by inode, each entry's
    /// inode number (for [`DonorSource::read_small_inode`]); at most `cap`, `None` if
    /// absent or not a directory.
    #[allow(clippy::type_complexity)]
    pub fn read_dir_inodes(
        &self,
        path: &str,
        cap: usize,
    ) -> Result<Option<Vec<(DirItem, NodeMeta, Option<u32>)>>, DonorError> {
        if let Some((raw, ino)) = self.dir_inode(path) {
            let listed = (|| -> Result<_, crate::ext::read::RawError> {
                let dir = raw.inode(ino)?;
                let mut out = Vec::new();
                for e in raw.read_dir(&dir, cap)? {
                    let meta = raw.inode(e.ino)?.meta();
                    let item = DirItem {
                        name: e.name,
                        kind: meta.kind,
                    };
                    out.push((item, meta, Some(e.ino)));
                }
                Ok(out)
            })();
            // Anything the inode reader does not handle or finds damaged: by path.
            if let Ok(list) = listed {
                return Ok(Some(list));
            }
        }
        Ok(self
            .read_dir_meta(path, cap)?
            .map(|v| v.into_iter().map(|(i, m)| (i, m, None)).collect()))
    }

    /// [`DonorSource::read_small`] of the regular file with inode `ino` (from
    /// [`DonorSource::read_dir_inodes`]) without resolving `path`; by path when the
    /// inode reader does not handle it, finds it damaged or it is larger than `cap`.
    pub fn read_small_inode(
        &self,
        ino: u32,
        path: &str,
        cap: u64,
    ) -> Result<Option<Vec<u8>>, DonorError> {
        if let SourceKind::Ext { reader, .. } = &self.kind {
            if let Some(raw) = reader.raw() {
                let read = (|| -> Result<Option<Vec<u8>>, crate::ext::read::RawError> {
                    let inode = raw.inode(ino)?;
                    if inode.kind() != NodeKind::File || inode.size > cap {
                        return Ok(None);
                    }
                    let mut data = vec![0u8; inode.size as usize];
                    let mut file = raw.open_file(&inode)?;
                    let mut done = 0;
                    while done < data.len() {
                        match file.read_some(&mut data[done..])? {
                            0 => return Ok(None),
                            n => done += n,
                        }
                    }
                    Ok(Some(data))
                })();
                if let Ok(Some(data)) = read {
                    return Ok(Some(data));
                }
            }
        }
        self.read_small(path, cap)
    }

    /// Open the regular file with inode number `ino` (found by a walk by inode, see
    /// [`crate::ext::read`]) for streaming, without resolving `path`, which names it in
    /// errors; by path when the inode reader does not handle the file.
    pub fn open_inode(&self, ino: u32, path: &str) -> Result<Option<(DonorRead, u64)>, DonorError> {
        if let SourceKind::Ext { reader, .. } = &self.kind {
            if let Some(raw) = reader.raw() {
                let opened = raw.inode(ino).and_then(|inode| {
                    if inode.kind() != NodeKind::File {
                        return Err(crate::ext::read::RawError::Corrupt {
                            ino,
                            why: "no longer a regular file".into(),
                        });
                    }
                    Ok((raw.open_file(&inode)?, inode.size))
                });
                // Unsupported or damaged: open it by path, so a damaged file fails as it
                // did before the inode reader existed.
                if let Ok((file, len)) = opened {
                    return Ok(Some((Box::new(file) as DonorRead, len)));
                }
            }
        }
        self.open(path)
    }

    /// Open a regular file (following symlinks) for streaming: the reader and the file's
    /// size. `None` if absent.
    pub fn open(&self, path: &str) -> Result<Option<(DonorRead, u64)>, DonorError> {
        match &self.kind {
            SourceKind::Ext { reader, .. } => Ok(reader.open_file(path)?.map(|f| {
                let len = f.len();
                (Box::new(f) as DonorRead, len)
            })),
            SourceKind::Dir(d) => Ok(d
                .open(path)?
                .map(|(f, len, _)| (Box::new(f) as DonorRead, len))),
        }
    }
}

/// A donor filesystem as a [`TreeRead`]: directories that are not are absent to
/// `read_dir`, as to every donor read.
impl TreeRead for &DonorSource {
    type Error = DonorError;
    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        DonorSource::lstat(self, path)
    }
    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, DonorError> {
        DonorSource::stat(self, path)
    }
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, DonorError> {
        self.read_small(path, cap)
    }
    fn read_link(&mut self, path: &str) -> Result<Option<String>, DonorError> {
        DonorSource::read_link(self, path)
    }
    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, DonorError> {
        DonorSource::read_dir(self, path, cap)
    }
}

/// [`tree::Walk`] over a host directory: nodes are host paths below the donor root,
/// looked up with `symlink_metadata` (never following a link on the host). A host error
/// ends the resolution and is returned as it is.
struct HostWalk<'a> {
    root: &'a Path,
}

impl tree::Walk for HostWalk<'_> {
    type Node = PathBuf;
    type Error = DonorError;

    fn root(&mut self) -> Result<PathBuf, DonorError> {
        Ok(self.root.to_path_buf())
    }

    fn lookup(
        &mut self,
        dir: &PathBuf,
        name: &[u8],
        _path: &str,
    ) -> Result<Option<(PathBuf, Option<NodeKind>)>, DonorError> {
        use std::os::unix::ffi::OsStrExt;
        let host = dir.join(std::ffi::OsStr::from_bytes(name));
        match fs::symlink_metadata(&host) {
            Ok(m) => Ok(Some((host, Some(host_kind(m.file_type()))))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(DonorError::io("inspecting", &host, e)),
        }
    }

    fn link_target(&mut self, link: &PathBuf, _path: &str) -> Result<Vec<u8>, DonorError> {
        use std::os::unix::ffi::OsStrExt;
        match fs::read_link(link) {
            Ok(t) => Ok(t.as_os_str().as_bytes().to_vec()),
            Err(e) => Err(DonorError::io("reading the symlink", link, e)),
        }
    }
}

/// A host directory used as a donor root.
pub(crate) struct DirRoot {
    root: PathBuf,
}

impl DirRoot {
    /// `root` must be a directory; it is canonicalized once so that resolution below never
    /// depends on symlinks above the donor.
    pub fn new(root: &Path) -> Result<Self, DonorError> {
        let root = fs::canonicalize(root).map_err(|e| DonorError::io("opening", root, e))?;
        Ok(DirRoot { root })
    }

    /// The host path that `path` names inside the donor, with every symlink resolved inside
    /// the donor by [`tree::resolve`] (the final one only when `follow`). `None` when a
    /// component is missing or is not a directory.
    pub fn resolve(&self, path: &str, follow: bool) -> Result<Option<PathBuf>, DonorError> {
        match tree::resolve(&mut HostWalk { root: &self.root }, path, follow) {
            Ok(r) => Ok(r.node.map(|(host, _)| host)),
            Err(ResolveError::Walk(e)) => Err(e),
            Err(ResolveError::NotFound | ResolveError::NotADirectory) => Ok(None),
            Err(ResolveError::SymlinkLoop) => Err(DonorError::SymlinkLoop {
                donor: self.root.display().to_string(),
                path: path.to_string(),
            }),
            Err(ResolveError::NulByte) => Err(DonorError::io(
                "resolving",
                self.root.join(path.trim_start_matches('/')),
                io::Error::other(format!("resolve {path}: the path contains a NUL byte")),
            )),
        }
    }

    /// Metadata of a resolved host path (not following a final symlink). Owners are
    /// mapped to root: a package unpacked by a user belongs to root once installed.
    fn meta(&self, host: &Path) -> Result<NodeMeta, DonorError> {
        let m = fs::symlink_metadata(host).map_err(|e| DonorError::io("inspecting", host, e))?;
        Ok(host_meta(&m))
    }

    fn read_dir(&self, host: &Path, cap: usize) -> Result<Option<Vec<DirItem>>, DonorError> {
        let iter = match fs::read_dir(host) {
            Ok(it) => it,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(DonorError::io("listing", host, e)),
        };
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| DonorError::io("listing", host, e))?;
            if out.len() >= cap {
                return Err(DonorError::TooManyEntries {
                    donor: self.root.display().to_string(),
                    path: host.display().to_string(),
                    cap,
                });
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let ft = entry
                .file_type()
                .map_err(|e| DonorError::io("inspecting", entry.path(), e))?;
            out.push(DirItem {
                name,
                kind: host_kind(ft),
            });
        }
        Ok(Some(out))
    }

    /// Open a regular file, following symlinks inside the donor; `O_NOFOLLOW` on the final
    /// component and an `fstat` check make sure it is the regular file resolution found.
    fn open(&self, path: &str) -> Result<Option<(fs::File, u64, PathBuf)>, DonorError> {
        let Some(host) = self.resolve(path, true)? else {
            return Ok(None);
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)
            .map_err(|e| DonorError::io("opening", &host, e))?;
        let m = file
            .metadata()
            .map_err(|e| DonorError::io("inspecting", &host, e))?;
        if !m.is_file() {
            return Err(DonorError::NotAFile {
                donor: self.root.display().to_string(),
                path: path.to_string(),
            });
        }
        Ok(Some((file, m.len(), host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn directory_symlinks_resolve_inside_the_donor() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"host file").unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("usr/lib/modules/6.1")).unwrap();
        fs::write(root.join("usr/lib/modules/6.1/modules.dep"), b"dep").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        // Absolute and `..`-escaping targets must stay inside the donor.
        symlink(outside.path().join("secret"), root.join("etc/abs")).unwrap();
        symlink(
            "../../../../../../../../../../usr/lib/modules/6.1/modules.dep",
            root.join("etc/up"),
        )
        .unwrap();
        let src = DonorSource {
            label: "dir".into(),
            kind: SourceKind::Dir(DirRoot::new(root).unwrap()),
        };
        assert_eq!(
            src.read_small("/lib/modules/6.1/modules.dep", 100)
                .unwrap()
                .unwrap(),
            b"dep"
        );
        assert_eq!(src.read_small("/etc/up", 100).unwrap().unwrap(), b"dep");
        assert!(
            src.read_small("/etc/abs", 100).unwrap().is_none(),
            "absolute target re-rooted at the donor"
        );
        let top = src.read_dir_meta("/", 10).unwrap().unwrap();
        let lib = top.iter().find(|(i, _)| i.name == "lib").unwrap();
        assert_eq!(
            (lib.0.kind, lib.1.kind),
            (NodeKind::Symlink, NodeKind::Symlink)
        );
        assert_eq!(src.stat("/lib").unwrap().unwrap().kind, NodeKind::Dir);
        assert_eq!(src.read_link("/lib").unwrap().as_deref(), Some("usr/lib"));
        let names: Vec<String> = src
            .read_dir("/lib/modules", 10)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["6.1"]);
        assert!(matches!(
            src.read_dir("/lib/modules/6.1", 0),
            Err(DonorError::TooManyEntries { .. })
        ));
        assert!(matches!(
            src.read_small("/lib/modules/6.1/modules.dep", 2),
            Err(DonorError::TooLarge { .. })
        ));
        symlink("loop", root.join("etc/loop")).unwrap();
        assert!(matches!(
            src.stat("/etc/loop"),
            Err(DonorError::SymlinkLoop { .. })
        ));
    }
}
