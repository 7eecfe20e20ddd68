//! The read-only ext2/3/4 reader of guest and donor filesystems, by path.
//!
//! Two engines sit behind one path API and one symlink resolver ([`guestfs::resolve`],
//! which keeps every path inside the filesystem: an absolute target restarts at its root,
//! `..` stops there, at most [`guestfs::MAX_SYMLINK_HOPS`] links):
//!
//! - [`crate::extraw::RawFs`], our inode-level reader, answers first. It lists a
//!   directory once and reads files by inode straight from their extents in large
//!   positioned reads; on the real donor that made the graft's reads ten times faster
//!   (1.51 s to 159 ms into memory, `cargo bench --bench pipeline -- graft`) than
//!   ext4-view's path-only API, which walks `/`, `/usr`, … again for every file.
//! - ext4-view, guarded, answers what the inode reader does not read (a journal to
//!   replay in memory, inline data, a filesystem it does not open) and any operation
//!   that the inode reader finds damaged, so a damaged image fails exactly as it always
//!   did. ext4-view 1.0 can panic on a corrupt htree node and its `Ext4::read`
//!   preallocates the inode's claimed size, which aborts the process on a corrupt
//!   `i_size`: every call into it runs under `catch_unwind`, whole-file reads are capped
//!   by the caller's bound before any allocation, symlink sizes are checked before their
//!   target is read, and big files are streamed through [`ExtFileReader`] with fixed
//!   buffers.
//!
//! The inode reader is the one engine this module is growing towards: what still needs
//! ext4-view is the in-memory journal replay and inline data.

use crate::blockio::Region;
use crate::extraw::{RawDirEntry, RawError, RawFs, RawInode};
use crate::guestfs::{self, DirItem, GuestFsError, NodeKind, NodeMeta, PathWalk, Resolved};
use ext4_view::{Ext4, Ext4Error};
use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

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
    /// The same filesystem read by inode number; `None` when it is not one that reader
    /// handles.
    raw: Option<Arc<RawFs>>,
    /// Directory listings by inode, for path lookups through `raw` (the filesystem is
    /// read-only, so a listing never goes stale).
    dirs: Mutex<DirCache>,
}

/// Directory entries kept in [`ExtReader::dirs`] before it is cleared (bounded memory).
const MAX_CACHED_ENTRIES: usize = 1 << 16;
/// Most entries read from one directory for a path lookup.
const MAX_LOOKUP_ENTRIES: usize = 1 << 20;
/// The root directory's inode number.
const ROOT_INO: u32 = 2;

#[derive(Default)]
struct DirCache {
    map: HashMap<u32, Arc<HashMap<String, u32>>>,
    entries: usize,
}

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

/// A node met while resolving a path through the inode reader.
#[derive(Debug, Clone)]
struct RawNode {
    ino: u32,
    /// Its canonical path (no symlink in any component).
    path: String,
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// [`PathWalk`] through the inode reader. The first error of the reader itself is kept
/// in `failed`: the operation then falls back to ext4-view.
struct RawWalk<'a> {
    reader: &'a ExtReader,
    raw: &'a Arc<RawFs>,
    failed: Option<RawError>,
}

impl RawWalk<'_> {
    fn fail(&mut self, e: RawError, path: &str) -> GuestFsError {
        let why = e.to_string();
        self.failed.get_or_insert(e);
        GuestFsError::Engine {
            op: "resolve",
            path: path.into(),
            why,
        }
    }

    /// Name → inode of directory `dir`, listed once.
    fn listing(&self, dir: &RawInode) -> Result<Arc<HashMap<String, u32>>, RawError> {
        if let Some(hit) = self
            .reader
            .dirs
            .lock()
            .ok()
            .and_then(|d| d.map.get(&dir.ino).cloned())
        {
            return Ok(hit);
        }
        let entries = self.raw.read_dir(dir, MAX_LOOKUP_ENTRIES)?;
        let map: Arc<HashMap<String, u32>> = Arc::new(
            entries
                .into_iter()
                .map(|RawDirEntry { name, ino, .. }| (name, ino))
                .collect(),
        );
        if let Ok(mut d) = self.reader.dirs.lock() {
            if d.entries + map.len() > MAX_CACHED_ENTRIES {
                d.map.clear();
                d.entries = 0;
            }
            d.entries += map.len();
            d.map.insert(dir.ino, Arc::clone(&map));
        }
        Ok(map)
    }
}

impl PathWalk for RawWalk<'_> {
    type Node = RawNode;

    fn root(&mut self) -> Result<RawNode, GuestFsError> {
        Ok(RawNode {
            ino: ROOT_INO,
            path: "/".into(),
        })
    }

    fn lookup(
        &mut self,
        dir: &RawNode,
        name: &[u8],
        path: &str,
    ) -> Result<Option<(RawNode, Option<NodeKind>)>, GuestFsError> {
        let Ok(name) = std::str::from_utf8(name) else {
            // Listings keep UTF-8 names only: ext4-view looks this one up.
            let e = RawError::Unsupported {
                ino: dir.ino,
                why: "a name that is not UTF-8",
            };
            return Err(self.fail(e, path));
        };
        let found = self.raw.inode(dir.ino).and_then(|d| {
            let Some(&ino) = self.listing(&d)?.get(name) else {
                return Ok(None);
            };
            Ok(Some((ino, self.raw.inode(ino)?.kind())))
        });
        match found {
            Ok(found) => Ok(found.map(|(ino, kind)| {
                let node = RawNode {
                    ino,
                    path: child_path(&dir.path, name),
                };
                (node, Some(kind))
            })),
            Err(e) => Err(self.fail(e, path)),
        }
    }

    fn link_target(&mut self, link: &RawNode, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let inode = self.raw.inode(link.ino).map_err(|e| self.fail(e, path))?;
        if inode.size > MAX_SYMLINK_LEN {
            return Err(GuestFsError::TooLarge {
                path: link.path.clone(),
                size: inode.size,
                cap: MAX_SYMLINK_LEN,
            });
        }
        self.raw
            .read_link(&inode, MAX_SYMLINK_LEN)
            .map_err(|e| self.fail(e, path))
    }
}

/// [`PathWalk`] through ext4-view: nodes are canonical paths, each looked up with
/// `symlink_metadata`. The first error that is not a plain guest-path outcome is kept in
/// `failed` and returned as it is.
struct ViewWalk<'a> {
    reader: &'a ExtReader,
    failed: Option<ExtReadError>,
}

impl ViewWalk<'_> {
    fn fail(&mut self, e: ExtReadError, path: &str) -> GuestFsError {
        let why = e.to_string();
        self.failed.get_or_insert(e);
        GuestFsError::Engine {
            op: "resolve",
            path: path.into(),
            why,
        }
    }
}

impl PathWalk for ViewWalk<'_> {
    type Node = String;

    fn root(&mut self) -> Result<String, GuestFsError> {
        Ok("/".into())
    }

    fn lookup(
        &mut self,
        dir: &String,
        name: &[u8],
        path: &str,
    ) -> Result<Option<(String, Option<NodeKind>)>, GuestFsError> {
        let here = child_path(dir, &String::from_utf8_lossy(name));
        let r = self.reader;
        match guarded(&r.image, path, || r.fs.symlink_metadata(here.as_str())) {
            Ok(Ok(m)) => Ok(Some((here, Some(m.file_type().into())))),
            Ok(Err(e)) if is_not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(self.fail(r.path_err(&here, e), path)),
            Err(e) => Err(self.fail(e, path)),
        }
    }

    fn link_target(&mut self, link: &String, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let r = self.reader;
        let read = || -> Result<Vec<u8>, ExtReadError> {
            match guarded(&r.image, path, || r.fs.symlink_metadata(link.as_str()))? {
                Ok(m) => r.check_link_len(link, m.len())?,
                Err(e) => return Err(r.path_err(link, e)),
            }
            match guarded(&r.image, path, || r.fs.read_link(link.as_str()))? {
                Ok(t) => {
                    let bytes: &[u8] = t.as_ref();
                    Ok(bytes.to_vec())
                }
                Err(e) => Err(r.path_err(link, e)),
            }
        };
        read().map_err(|e| self.fail(e, path))
    }
}

/// Where a path leads, or that it leads nowhere.
enum Found<N> {
    /// The node and its kind.
    Node(N, NodeKind),
    /// Nothing of that name (or a missing directory on the way).
    Absent,
}

/// The outcome of one operation through the inode reader: `None` when it could not
/// answer (not handled, or damaged), and ext4-view answers instead.
type RawTry<T> = Option<Result<T, ExtReadError>>;

impl ExtReader {
    /// Open the filesystem in `region`. `label` names it in errors (e.g. "donor.img partition 1").
    pub fn open(region: Region, label: impl Into<String>) -> Result<Self, ExtReadError> {
        let raw = RawFs::open(region.clone()).map(Arc::new);
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
    pub fn raw(&self) -> Option<&Arc<RawFs>> {
        self.raw.as_ref()
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
                raw: None,
                dirs: Default::default(),
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

    fn why_err(&self, path: &str, why: impl Into<String>) -> ExtReadError {
        ExtReadError::Path {
            image: self.image.clone(),
            path: path.to_string(),
            why: why.into(),
        }
    }

    /// The result of [`guestfs::resolve`] as this reader reports it: a missing node or
    /// directory on the way is [`Found::Absent`]; other errors go to
    /// [`ExtReader::resolve_err`].
    fn found<N>(r: Result<Resolved<N>, GuestFsError>) -> Result<Found<N>, GuestFsError> {
        match r {
            Ok(Resolved {
                node: Some((n, kind)),
                ..
            }) => Ok(Found::Node(n, kind.unwrap_or(NodeKind::File))),
            Ok(Resolved { node: None, .. }) | Err(GuestFsError::NotFound { .. }) => {
                Ok(Found::Absent)
            }
            Err(e) => Err(e),
        }
    }

    fn resolve_err(&self, path: &str, e: GuestFsError) -> ExtReadError {
        match e {
            GuestFsError::TooLarge { path, size, cap } => ExtReadError::TooLarge {
                image: self.image.clone(),
                path,
                size,
                cap,
            },
            GuestFsError::SymlinkLoop { .. } => self.path_err(path, Ext4Error::TooManySymlinks),
            GuestFsError::NotADirectory { .. } => self.path_err(path, Ext4Error::NotADirectory),
            other => self.why_err(path, other.to_string()),
        }
    }

    /// Resolve `path` through the inode reader, then run `op` on the node's inode.
    /// `None` when the inode reader is absent or fails anywhere on the way.
    fn with_raw<T>(
        &self,
        path: &str,
        follow: bool,
        op: impl FnOnce(&Arc<RawFs>, Option<(RawNode, NodeKind)>) -> Result<T, RawError>,
    ) -> RawTry<T> {
        let raw = self.raw.as_ref()?;
        let mut walk = RawWalk {
            reader: self,
            raw,
            failed: None,
        };
        let resolved = guestfs::resolve(&mut walk, path, follow);
        if walk.failed.is_some() {
            return None;
        }
        let node = match Self::found(resolved) {
            Ok(Found::Node(n, k)) => Some((n, k)),
            Ok(Found::Absent) => None,
            Err(e) => return Some(Err(self.resolve_err(path, e))),
        };
        match op(raw, node) {
            Ok(v) => Some(Ok(v)),
            // Not handled or damaged: ext4-view answers, as it always did.
            Err(_) => None,
        }
    }

    /// `path` resolved through ext4-view: its canonical path and kind, or absent.
    fn view_resolve(&self, path: &str, follow: bool) -> Result<Found<String>, ExtReadError> {
        let mut walk = ViewWalk {
            reader: self,
            failed: None,
        };
        let resolved = guestfs::resolve(&mut walk, path, follow);
        if let Some(e) = walk.failed {
            return Err(e);
        }
        Self::found(resolved).map_err(|e| self.resolve_err(path, e))
    }

    /// `path` with every symlink resolved inside the filesystem (see
    /// [`ExtReader::metadata`] for the rules); a missing component is appended as it is.
    pub fn canonical(&self, path: &str) -> Result<String, ExtReadError> {
        let raw = self.with_raw(path, true, |_, node| Ok(node.map(|(n, _)| n.path)));
        let found = match raw {
            Some(r) => r?,
            None => match self.view_resolve(path, true)? {
                Found::Node(p, _) => Some(p),
                Found::Absent => None,
            },
        };
        Ok(found.unwrap_or_else(|| format!("/{}", guestfs::components(path).join("/"))))
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
    ///
    /// Paths are guest paths, resolved by [`guestfs::resolve`] inside this filesystem, so
    /// a guest symlink such as `/lib -> usr/lib` or `/etc/x -> /etc/y` never reaches the
    /// host.
    pub fn metadata(&self, path: &str) -> Result<Option<NodeMeta>, ExtReadError> {
        self.meta_of(path, true)
    }

    /// Metadata of `path` itself (a symlink is not followed). `None` if it does not exist.
    pub fn symlink_metadata(&self, path: &str) -> Result<Option<NodeMeta>, ExtReadError> {
        self.meta_of(path, false)
    }

    fn meta_of(&self, path: &str, follow: bool) -> Result<Option<NodeMeta>, ExtReadError> {
        let raw = self.with_raw(path, follow, |raw, node| match node {
            Some((n, _)) => Ok(Some(raw.inode(n.ino)?.meta())),
            None => Ok(None),
        });
        if let Some(r) = raw {
            return r;
        }
        let Found::Node(path, _) = self.view_resolve(path, follow)? else {
            return Ok(None);
        };
        let path = path.as_str();
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
        let raw = self.with_raw(path, true, |raw, node| {
            let Some((n, kind)) = node else {
                return Ok(None);
            };
            let inode = raw.inode(n.ino)?;
            if kind != NodeKind::File || inode.size > cap {
                // ext4-view reports these as it always did.
                return Err(RawError::Unsupported {
                    ino: n.ino,
                    why: "not a regular file within the cap",
                });
            }
            let mut data = vec![0u8; inode.size as usize];
            let mut file = raw.open_file(&inode)?;
            let mut done = 0;
            while done < data.len() {
                match file.read_some(&mut data[done..])? {
                    0 => {
                        return Err(RawError::Corrupt {
                            ino: n.ino,
                            why: "the content ends early".into(),
                        })
                    }
                    k => done += k,
                }
            }
            Ok(Some(data))
        });
        if let Some(r) = raw {
            return r;
        }
        let Found::Node(path, _) = self.view_resolve(path, true)? else {
            return Ok(None);
        };
        let path = path.as_str();
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
        let raw = self.with_raw(path, false, |raw, node| {
            let Some((n, kind)) = node else {
                return Ok(None);
            };
            let inode = raw.inode(n.ino)?;
            if kind != NodeKind::Symlink || inode.size > MAX_SYMLINK_LEN {
                // ext4-view reports these as it always did.
                return Err(RawError::Unsupported {
                    ino: n.ino,
                    why: "not a symlink within the cap",
                });
            }
            let t = raw.read_link(&inode, MAX_SYMLINK_LEN)?;
            Ok(Some(String::from_utf8_lossy(&t).into_owned()))
        });
        if let Some(r) = raw {
            return r;
        }
        let Found::Node(path, kind) = self.view_resolve(path, false)? else {
            return Ok(None);
        };
        let path = path.as_str();
        if kind == NodeKind::Symlink {
            if let Ok(m) = guarded(&self.image, path, || self.fs.symlink_metadata(path))? {
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
        Ok(self
            .read_dir_meta(path, cap)?
            .map(|v| v.into_iter().map(|(item, _)| item).collect()))
    }

    /// Like [`ExtReader::read_dir`], with each entry's own metadata (a symlink's, not its
    /// target's) read straight from the entry's inode, without resolving its path again:
    /// walking a tree then costs one inode read per node instead of one path lookup from
    /// the root.
    pub fn read_dir_meta(
        &self,
        path: &str,
        cap: usize,
    ) -> Result<Option<Vec<(DirItem, NodeMeta)>>, ExtReadError> {
        let raw = self.with_raw(path, true, |raw, node| {
            let Some((n, kind)) = node else {
                return Ok(None);
            };
            let dir = raw.inode(n.ino)?;
            if kind != NodeKind::Dir {
                return Err(RawError::Unsupported {
                    ino: n.ino,
                    why: "not a directory",
                });
            }
            let mut out = Vec::new();
            for e in raw.read_dir(&dir, cap)? {
                let meta = raw.inode(e.ino)?.meta();
                out.push((
                    DirItem {
                        name: e.name,
                        kind: meta.kind,
                    },
                    meta,
                ));
            }
            Ok(Some(out))
        });
        if let Some(r) = raw {
            return r;
        }
        let Found::Node(path, _) = self.view_resolve(path, true)? else {
            return Ok(None);
        };
        let path = path.as_str();
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
        let raw = self.with_raw(path, true, |raw, node| {
            let Some((n, kind)) = node else {
                return Ok(None);
            };
            let inode = raw.inode(n.ino)?;
            if kind != NodeKind::File {
                return Err(RawError::Unsupported {
                    ino: n.ino,
                    why: "not a regular file",
                });
            }
            Ok(Some(ExtFileReader {
                len: inode.size,
                file: FileEngine::Raw(raw.open_file(&inode)?),
                image: self.image.clone(),
                path: n.path,
            }))
        });
        if let Some(r) = raw {
            return r;
        }
        let Found::Node(path, _) = self.view_resolve(path, true)? else {
            return Ok(None);
        };
        let path = path.as_str();
        match guarded(&self.image, path, || self.fs.open(path))? {
            Ok(file) => {
                let len = file.metadata().len();
                Ok(Some(ExtFileReader {
                    file: FileEngine::View(Box::new(file)),
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

enum FileEngine {
    Raw(crate::extraw::FileReader),
    View(Box<ext4_view::File>),
}

/// A streaming reader over one file of an [`ExtReader`]; implements [`io::Read`], each
/// read through ext4-view contained by `catch_unwind`.
pub struct ExtFileReader {
    file: FileEngine,
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
        let file = match &mut self.file {
            FileEngine::Raw(f) => {
                return f.read_some(buf).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("reading {} in {}: {e}", self.path, self.image),
                    )
                })
            }
            FileEngine::View(f) => f,
        };
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
