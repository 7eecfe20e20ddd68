//! The guarded reader: `ext4-view` over a [`Region`], made safe for untrusted images.
//!
//! ext4-view is pure safe Rust, but version 1.0 can panic on a corrupt htree node and its
//! `Ext4::read` preallocates the inode's claimed size, which aborts the process on a
//! corrupt `i_size` (see shared/docs/ext-engine.md, section A). So every call into it runs
//! under `catch_unwind`, whole-file reads are capped by the caller's bound before any
//! allocation, and big files are streamed through [`ExtFileReader`] with fixed buffers.
//!
//! Paths are guest paths: absolute, resolved by ext4-view inside the filesystem itself, so
//! a guest symlink such as `/lib -> usr/lib` or `/etc/x -> /etc/y` can never reach the host.

use crate::blockio::Region;
use crate::guestfs::{DirItem, NodeKind, NodeMeta};
use ext4_view::{Ext4, Ext4Error};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Errors from the guarded reader.
#[derive(Debug, thiserror::Error)]
pub enum ExtReadError {
    /// The filesystem could not be opened (bad superblock, unsupported feature, I/O).
    #[error("cannot read the ext filesystem in {image}: {why}")]
    Open { image: String, why: String },
    /// The filesystem uses a feature the reader does not support.
    #[error("the ext filesystem in {image} uses a feature imgconv cannot read: {why}")]
    Incompatible { image: String, why: String },
    /// Reading a path failed.
    #[error("cannot read {path} in {image}: {why}")]
    Path {
        image: String,
        path: String,
        why: String,
    },
    /// A file is larger than the caller allows for a whole-file read.
    #[error("{path} in {image} claims {size} bytes, more than the {cap} bytes allowed for it (corrupt inode?)")]
    TooLarge {
        image: String,
        path: String,
        size: u64,
        cap: u64,
    },
    /// The reader panicked: the on-disk data is corrupt in a way it did not expect.
    #[error(
        "corrupt ext filesystem in {image}: reading {what} failed (the reader rejected the data)"
    )]
    Panicked { image: String, what: String },
    /// A directory has more entries than the caller allows.
    #[error("directory {path} in {image} has more than {cap} entries (corrupt directory?)")]
    TooManyEntries {
        image: String,
        path: String,
        cap: usize,
    },
}

impl From<ext4_view::FileType> for NodeKind {
    fn from(t: ext4_view::FileType) -> Self {
        if t.is_dir() {
            NodeKind::Dir
        } else if t.is_symlink() {
            NodeKind::Symlink
        } else if t.is_char_dev() {
            NodeKind::CharDev
        } else if t.is_block_dev() {
            NodeKind::BlockDev
        } else if t.is_fifo() {
            NodeKind::Fifo
        } else if t.is_socket() {
            NodeKind::Socket
        } else {
            NodeKind::File
        }
    }
}

impl From<&ext4_view::Metadata> for NodeMeta {
    fn from(m: &ext4_view::Metadata) -> Self {
        NodeMeta {
            kind: m.file_type().into(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            len: m.len(),
            mtime: m.modified().seconds(),
            atime: m.accessed().seconds(),
        }
    }
}

/// A read-only, panic-contained view of an ext2/3/4 filesystem in a [`Region`].
pub struct ExtReader {
    fs: Ext4,
    image: String,
    /// Symlink-free directory paths already met by [`ExtReader::resolve`]: walking a tree
    /// then costs one extra lookup per file, not one per path component. The
    /// filesystem is read-only, so an entry never goes stale.
    real_dirs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The same filesystem read by inode number, for bulk reads of a tree (see
    /// [`crate::extraw`]); `None` when it is not one that reader handles.
    raw: Option<std::sync::Arc<crate::extraw::RawFs>>,
}

/// Entries kept in [`ExtReader::real_dirs`] before it is cleared (bounded memory).
const MAX_REAL_DIRS: usize = 1 << 16;

impl std::fmt::Debug for ExtReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtReader")
            .field("image", &self.image)
            .finish()
    }
}

fn guarded<T>(image: &str, what: &str, f: impl FnOnce() -> T) -> Result<T, ExtReadError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| ExtReadError::Panicked {
        image: image.to_string(),
        what: what.to_string(),
    })
}

fn is_not_found(e: &Ext4Error) -> bool {
    matches!(e, Ext4Error::NotFound)
}

/// Longest symlink target accepted: Linux's PATH_MAX less the terminating NUL.
///
/// ext4-view reads a symlink target of more than 59 bytes by allocating the inode's
/// claimed `i_size` at once, so one corrupt size on any symlink met while resolving a
/// path aborts the process (an allocation failure cannot be caught). Paths are therefore
/// resolved here, component by component, checking each symlink's size before its target
/// is read, and ext4-view only ever sees symlink-free paths.
const MAX_SYMLINK_LEN: u64 = 4095;

/// Symlinks followed while resolving one path (Linux's MAXSYMLINKS).
const MAX_SYMLINK_HOPS: usize = 40;

impl ExtReader {
    /// Open the filesystem in `region`. `label` names it in errors (e.g. "donor.img partition 1").
    pub fn open(region: Region, label: impl Into<String>) -> Result<Self, ExtReadError> {
        let raw = crate::extraw::RawFs::open(region.clone()).map(std::sync::Arc::new);
        let mut reader = Self::open_reader(
            Box::new(crate::readcache::CachedRead::new(
                region,
                crate::readcache::CACHE_BYTES,
            )),
            label,
        )?;
        reader.raw = raw;
        Ok(reader)
    }

    /// The inode-level reader of the same filesystem, when it handles it.
    pub fn raw(&self) -> Option<&std::sync::Arc<crate::extraw::RawFs>> {
        self.raw.as_ref()
    }

    /// `path` with every symlink resolved inside the filesystem (see
    /// [`ExtReader::metadata`] for the rules).
    pub fn canonical(&self, path: &str) -> Result<String, ExtReadError> {
        self.resolve(path, true)
    }

    /// Open the filesystem from any [`ext4_view::Ext4Read`], e.g. a view of a [`Region`]
    /// with a patched superblock (source inspection reads a dirty-journal filesystem
    /// that way when ext4-view cannot replay its journal). `label` names it in errors.
    pub fn open_reader(
        reader: Box<dyn ext4_view::Ext4Read>,
        label: impl Into<String>,
    ) -> Result<Self, ExtReadError> {
        let image = label.into();
        let loaded = guarded(&image, "the superblock", || Ext4::load(reader))?;
        match loaded {
            Ok(fs) => Ok(Self {
                fs,
                image,
                real_dirs: Default::default(),
                raw: None,
            }),
            Err(Ext4Error::Incompatible(i)) => Err(ExtReadError::Incompatible {
                image,
                why: i.to_string(),
            }),
            Err(e) => Err(ExtReadError::Open {
                image,
                why: e.to_string(),
            }),
        }
    }

    /// The name used for this filesystem in errors.
    pub fn label(&self) -> &str {
        &self.image
    }

    fn path_err(&self, path: &str, e: Ext4Error) -> ExtReadError {
        ExtReadError::Path {
            image: self.image.clone(),
            path: path.to_string(),
            why: e.to_string(),
        }
    }

    /// `path` with every symlink resolved inside this filesystem (the last component
    /// too when `follow_last`), checking each symlink's claimed size before reading its
    /// target: see [`MAX_SYMLINK_LEN`]. When a component is missing or not a directory,
    /// the rest is appended unresolved, for the caller's ext4-view call to report.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<String, ExtReadError> {
        let join = |parts: &[String]| format!("/{}", parts.join("/"));
        let mut done: Vec<String> = Vec::new();
        let mut todo: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let here = join(&done);
            if !todo.is_empty() && self.real_dirs.lock().is_ok_and(|d| d.contains(&here)) {
                continue;
            }
            let meta = match guarded(&self.image, path, || {
                self.fs.symlink_metadata(here.as_str())
            })? {
                Ok(m) => m,
                Err(_) => {
                    done.extend(todo);
                    return Ok(join(&done));
                }
            };
            if !meta.file_type().is_symlink() || (todo.is_empty() && !follow_last) {
                if !meta.file_type().is_dir() && !todo.is_empty() {
                    done.extend(todo);
                    return Ok(join(&done));
                }
                if meta.file_type().is_dir() {
                    if let Ok(mut dirs) = self.real_dirs.lock() {
                        if dirs.len() >= MAX_REAL_DIRS {
                            dirs.clear();
                        }
                        dirs.insert(here);
                    }
                }
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(self.path_err(path, Ext4Error::TooManySymlinks));
            }
            self.check_link_len(&here, meta.len())?;
            let target = match guarded(&self.image, path, || self.fs.read_link(here.as_str()))? {
                Ok(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
                Err(e) => return Err(self.path_err(&here, e)),
            };
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            for part in target.split('/').filter(|p| !p.is_empty()).rev() {
                todo.push_front(part.to_string());
            }
        }
        Ok(join(&done))
    }

    /// Refuse a symlink at `path` whose claimed target length `len` exceeds
    /// [`MAX_SYMLINK_LEN`], before ext4-view allocates that many bytes.
    fn check_link_len(&self, path: &str, len: u64) -> Result<(), ExtReadError> {
        if len > MAX_SYMLINK_LEN {
            return Err(ExtReadError::TooLarge {
                image: self.image.clone(),
                path: path.to_string(),
                size: len,
                cap: MAX_SYMLINK_LEN,
            });
        }
        Ok(())
    }

    /// Metadata of `path`, following symlinks. `None` if it does not exist.
    pub fn metadata(&self, path: &str) -> Result<Option<NodeMeta>, ExtReadError> {
        let path = &self.resolve(path, true)?;
        match guarded(&self.image, path, || self.fs.metadata(path))? {
            Ok(m) => Ok(Some(NodeMeta::from(&m))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.path_err(path, e)),
        }
    }

    /// Metadata of `path` itself (a symlink is not followed). `None` if it does not exist.
    pub fn symlink_metadata(&self, path: &str) -> Result<Option<NodeMeta>, ExtReadError> {
        let path = &self.resolve(path, false)?;
        match guarded(&self.image, path, || self.fs.symlink_metadata(path))? {
            Ok(m) => Ok(Some(NodeMeta::from(&m))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.path_err(path, e)),
        }
    }

    /// True when `path` exists (following symlinks).
    pub fn exists(&self, path: &str) -> Result<bool, ExtReadError> {
        Ok(self.metadata(path)?.is_some())
    }

    /// The whole content of a regular file, if it exists and is at most `cap` bytes.
    pub fn read_file(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, ExtReadError> {
        let path = &self.resolve(path, true)?;
        let meta = match guarded(&self.image, path, || self.fs.metadata(path))? {
            Ok(m) => NodeMeta::from(&m),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.path_err(path, e)),
        };
        if meta.len > cap {
            return Err(ExtReadError::TooLarge {
                image: self.image.clone(),
                path: path.to_string(),
                size: meta.len,
                cap,
            });
        }
        match guarded(&self.image, path, || self.fs.read(path))? {
            Ok(data) => Ok(Some(data)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.path_err(path, e)),
        }
    }

    /// The target of a symlink (`None` if `path` does not exist).
    pub fn read_link(&self, path: &str) -> Result<Option<String>, ExtReadError> {
        let path = &self.resolve(path, false)?;
        if let Ok(m) = guarded(&self.image, path, || self.fs.symlink_metadata(path))? {
            if m.file_type().is_symlink() {
                self.check_link_len(path, m.len())?;
            }
        }
        match guarded(&self.image, path, || self.fs.read_link(path))? {
            Ok(t) => Ok(Some(String::from_utf8_lossy(t.as_ref()).into_owned())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.path_err(path, e)),
        }
    }

    /// The entries of a directory (without `.` and `..`), at most `cap` of them.
    /// `None` if the directory does not exist.
    pub fn read_dir(&self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, ExtReadError> {
        let path = &self.resolve(path, true)?;
        let result = guarded(
            &self.image,
            path,
            || -> Result<Option<Vec<DirItem>>, ExtReadError> {
                let iter = match self.fs.read_dir(path) {
                    Ok(it) => it,
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(self.path_err(path, e)),
                };
                let mut out = Vec::new();
                for entry in iter {
                    let entry = entry.map_err(|e| self.path_err(path, e))?;
                    let Ok(name) = entry.file_name().as_str().map(str::to_string) else {
                        continue;
                    };
                    if name == "." || name == ".." {
                        continue;
                    }
                    if out.len() >= cap {
                        return Err(ExtReadError::TooManyEntries {
                            image: self.image.clone(),
                            path: path.to_string(),
                            cap,
                        });
                    }
                    let kind = entry
                        .file_type()
                        .map_err(|e| self.path_err(path, e))?
                        .into();
                    out.push(DirItem { name, kind });
                }
                Ok(Some(out))
            },
        )?;
        result
    }

    /// Like [`ExtReader::read_dir`], with each entry's own metadata (a symlink's, not its
    /// target's) read straight from the entry's inode, without resolving its path again:
    /// walking a tree then costs one inode read per node instead of one path lookup from
    /// the root (2 s → well under 1 s for a Debian modules tree).
    pub fn read_dir_meta(
        &self,
        path: &str,
        cap: usize,
    ) -> Result<Option<Vec<(DirItem, NodeMeta)>>, ExtReadError> {
        let path = &self.resolve(path, true)?;
        let result = guarded(
            &self.image,
            path,
            || -> Result<Option<Vec<(DirItem, NodeMeta)>>, ExtReadError> {
                let iter = match self.fs.read_dir(path) {
                    Ok(it) => it,
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(self.path_err(path, e)),
                };
                let mut out = Vec::new();
                for entry in iter {
                    let entry = entry.map_err(|e| self.path_err(path, e))?;
                    let Ok(name) = entry.file_name().as_str().map(str::to_string) else {
                        continue;
                    };
                    if name == "." || name == ".." {
                        continue;
                    }
                    if out.len() >= cap {
                        return Err(ExtReadError::TooManyEntries {
                            image: self.image.clone(),
                            path: path.to_string(),
                            cap,
                        });
                    }
                    let meta = entry
                        .metadata()
                        .map_err(|e| self.path_err(&format!("{path}/{name}"), e))?;
                    let meta = NodeMeta::from(&meta);
                    out.push((
                        DirItem {
                            name,
                            kind: meta.kind,
                        },
                        meta,
                    ));
                }
                Ok(Some(out))
            },
        )?;
        result
    }

    /// Open a regular file for streaming. `None` if it does not exist.
    pub fn open_file(&self, path: &str) -> Result<Option<ExtFileReader>, ExtReadError> {
        let path = &self.resolve(path, true)?;
        match guarded(&self.image, path, || self.fs.open(path))? {
            Ok(file) => {
                let len = file.metadata().len();
                Ok(Some(ExtFileReader {
                    file,
                    image: self.image.clone(),
                    path: path.to_string(),
                    len,
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.path_err(path, e)),
        }
    }

    /// The filesystem UUID, as canonical lower-case text.
    pub fn uuid(&self) -> String {
        self.fs.uuid().to_string()
    }
}

/// A streaming reader over one file of an [`ExtReader`]; implements [`io::Read`] with
/// each read contained by `catch_unwind`.
pub struct ExtFileReader {
    file: ext4_view::File,
    image: String,
    path: String,
    len: u64,
}

impl ExtFileReader {
    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl io::Read for ExtFileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let file = &mut self.file;
        let r = catch_unwind(AssertUnwindSafe(|| file.read_bytes(buf)));
        match r {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reading {} in {}: {e}", self.path, self.image),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "reading {} in {}: corrupt data (the reader rejected it)",
                    self.path, self.image
                ),
            )),
        }
    }
}
