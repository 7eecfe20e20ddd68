//! Walking a donor's `/lib/modules/<ver>` tree into a bounded manifest.
//!
//! The walk happens once, when the donor is opened, so that sizes are known to the planner
//! and a corrupt tree is an error before anything is written. A corrupt filesystem can make
//! a directory list itself forever or point back at its ancestor; entry count, depth and
//! per-directory size are bounded ([`MAX_TREE_ENTRIES`], [`MAX_TREE_DEPTH`],
//! [`MAX_DIR_ENTRIES`]), and every file's claimed size is checked against
//! [`MAX_MODULE_FILE_BYTES`] and the filesystem's own size before anyone reads it.

use super::source::DonorSource;
use super::{DonorError, DonorPath};
use crate::ext::read::{RawError, RawFs};
use crate::tree::{DirItem, NodeKind, NodeMeta};
use std::sync::Arc;

/// Most nodes in one modules tree (a Debian amd64 tree has ~5 000).
pub const MAX_TREE_ENTRIES: usize = 200_000;
/// Deepest nesting below the tree root (a real tree is ~8 deep).
pub const MAX_TREE_DEPTH: usize = 32;
/// Most entries in one directory of the tree.
pub const MAX_DIR_ENTRIES: usize = 100_000;
/// Largest single file accepted in a modules tree (an unstripped module is < 100 MiB).
pub const MAX_MODULE_FILE_BYTES: u64 = 1 << 30;
/// Largest total of a modules tree.
pub const MAX_MODULES_TREE_BYTES: u64 = 32 << 30;
/// Longest symlink target kept (PATH_MAX).
pub const MAX_LINK_TARGET: usize = 4096;

/// One node below the tree root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeEntry {
    /// Path relative to the tree root (`kernel/fs/ext4/ext4.ko`), `/`-separated.
    pub rel: String,
    /// Kind, permissions, owner, size and times.
    pub meta: NodeMeta,
    /// The target, for a symlink.
    pub target: Option<String>,
    /// The inode number, when the tree was walked by inode ([`crate::ext::read`]): the
    /// file is then read by it, without resolving its path again.
    #[serde(skip)]
    pub ino: Option<u32>,
}

/// A kernel's modules tree, walked: parents always come before their children.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModulesTree {
    /// Where the tree is in the donor (`/lib/modules/6.1.0-28-amd64`).
    pub root: DonorPath,
    /// The root directory's own metadata.
    pub root_meta: NodeMeta,
    /// Every node below the root.
    pub entries: Vec<TreeEntry>,
    /// Regular files.
    pub files: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Device nodes, FIFOs and sockets (never expected; graft skips them with a warning).
    pub others: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

impl ModulesTree {
    /// True when the tree holds modules: a `modules.dep` or at least one `*.ko*` file (a
    /// directory left behind by a removed kernel package holds neither).
    pub fn has_modules(&self) -> bool {
        self.entries.iter().any(|e| {
            e.meta.kind == NodeKind::File && {
                let name = e.rel.rsplit('/').next().unwrap_or("");
                name == "modules.dep" || name.ends_with(".ko") || name.contains(".ko.")
            }
        })
    }
}

/// Walk the tree rooted at `root` (a directory path in `src`).
pub(crate) fn walk(
    src: &DonorSource,
    source: usize,
    root: &str,
) -> Result<ModulesTree, DonorError> {
    let root_meta = src.stat(root)?.ok_or_else(|| DonorError::Vanished {
        donor: src.label.clone(),
        path: root.to_string(),
    })?;
    let mut tree = ModulesTree {
        root: DonorPath {
            source,
            path: root.to_string(),
        },
        root_meta,
        entries: Vec::new(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        others: 0,
        bytes: 0,
    };
    if let Some((raw, ino)) = src.dir_inode(root) {
        match walk_entries(
            src,
            root,
            &mut tree,
            &Listing::Inode(&raw),
            Handle::Inode(ino),
        ) {
            Ok(()) => return Ok(tree),
            // Something the inode reader does not handle or finds damaged: by path.
            Err(Walked::ByPath) => {
                tree.entries.clear();
                (
                    tree.files,
                    tree.dirs,
                    tree.symlinks,
                    tree.others,
                    tree.bytes,
                ) = (0, 0, 0, 0, 0);
            }
            Err(Walked::Error(e)) => return Err(e),
        }
    }
    match walk_entries(src, root, &mut tree, &Listing::Path, Handle::Path) {
        Ok(()) => Ok(tree),
        Err(Walked::Error(e)) => Err(e),
        Err(Walked::ByPath) => unreachable!("the path walk handles every node"),
    }
}

/// Why a walk stopped.
enum Walked {
    Error(DonorError),
    /// The inode reader met something it does not handle or that is damaged: walk
    /// again by path.
    ByPath,
}

impl From<DonorError> for Walked {
    fn from(e: DonorError) -> Self {
        Walked::Error(e)
    }
}

/// How the walk lists a directory and reads a symlink: by path through the
/// [`DonorSource`] (any donor), or by inode ([`crate::ext::read`]: each directory is read once,
/// each entry's inode once).
enum Listing<'a> {
    Path,
    Inode(&'a Arc<RawFs>),
}

/// A node met by the walk: its inode number when walking by inode.
#[derive(Clone, Copy)]
enum Handle {
    Path,
    Inode(u32),
}

/// Any error of the inode reader (unsupported or damaged data) sends the walk back to
/// [`ExtReader`](crate::ext::read::ExtReader) by path, which reports the fault with the
/// path it lies on.
fn by_path(_: RawError) -> Walked {
    Walked::ByPath
}

impl Listing<'_> {
    /// The entries of directory `dir` (at `abs`) with their metadata (symlinks not
    /// followed), their own handle and their inode number when known.
    #[allow(clippy::type_complexity)]
    fn list(
        &self,
        src: &DonorSource,
        dir: Handle,
        abs: &str,
    ) -> Result<Vec<(DirItem, NodeMeta, Handle, Option<u32>)>, Walked> {
        let (Listing::Inode(raw), Handle::Inode(dir)) = (self, dir) else {
            let items =
                src.read_dir_meta(abs, MAX_DIR_ENTRIES)?
                    .ok_or_else(|| DonorError::Vanished {
                        donor: src.label.clone(),
                        path: abs.to_string(),
                    })?;
            return Ok(items
                .into_iter()
                .map(|(i, m)| (i, m, Handle::Path, None))
                .collect());
        };
        let inode = raw.inode(dir).map_err(by_path)?;
        let entries = raw.read_dir(&inode, MAX_DIR_ENTRIES).map_err(by_path)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let meta = raw.inode(e.ino).map_err(by_path)?.meta();
            let item = DirItem {
                name: e.name,
                kind: meta.kind,
            };
            out.push((item, meta, Handle::Inode(e.ino), Some(e.ino)));
        }
        Ok(out)
    }

    /// The target of the symlink `entry`, at `abs`.
    fn link(&self, src: &DonorSource, entry: Handle, abs: &str) -> Result<String, Walked> {
        let (Listing::Inode(raw), Handle::Inode(ino)) = (self, entry) else {
            return Ok(src.read_link(abs)?.ok_or_else(|| DonorError::Vanished {
                donor: src.label.clone(),
                path: abs.to_string(),
            })?);
        };
        let inode = raw.inode(ino).map_err(by_path)?;
        let target = raw
            .read_link(&inode, MAX_LINK_TARGET as u64 - 1)
            .map_err(by_path)?;
        Ok(String::from_utf8_lossy(&target).into_owned())
    }
}

/// The walk proper: every node below `root`, parents before children, each directory's
/// entries in name order.
fn walk_entries(
    src: &DonorSource,
    root: &str,
    tree: &mut ModulesTree,
    lister: &Listing<'_>,
    root_dir: Handle,
) -> Result<(), Walked> {
    let file_cap = MAX_MODULE_FILE_BYTES.min(src.size_bound());
    // (relative dir path, depth, handle)
    let mut stack: Vec<(String, usize, Handle)> = vec![(String::new(), 0, root_dir)];
    while let Some((rel_dir, depth, dir)) = stack.pop() {
        let abs_dir = join(root, &rel_dir);
        let mut items = lister.list(src, dir, &abs_dir)?;
        items.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut subdirs = Vec::new();
        for (item, meta, handle, ino) in items {
            if tree.entries.len() >= MAX_TREE_ENTRIES {
                return Err(DonorError::TreeTooLarge {
                    donor: src.label.clone(),
                    path: root.to_string(),
                    cap: MAX_TREE_ENTRIES,
                }
                .into());
            }
            let rel = if rel_dir.is_empty() {
                item.name.clone()
            } else {
                format!("{rel_dir}/{}", item.name)
            };
            let abs = join(root, &rel);
            let mut target = None;
            match meta.kind {
                NodeKind::Dir => {
                    if depth + 1 > MAX_TREE_DEPTH {
                        return Err(DonorError::TreeTooDeep {
                            donor: src.label.clone(),
                            path: abs,
                            cap: MAX_TREE_DEPTH,
                        }
                        .into());
                    }
                    tree.dirs += 1;
                    subdirs.push((rel.clone(), depth + 1, handle));
                }
                NodeKind::File => {
                    if meta.len > file_cap {
                        return Err(DonorError::TooLarge {
                            donor: src.label.clone(),
                            path: abs,
                            size: meta.len,
                            cap: file_cap,
                        }
                        .into());
                    }
                    tree.files += 1;
                    tree.bytes += meta.len;
                    if tree.bytes > MAX_MODULES_TREE_BYTES {
                        return Err(DonorError::TooLarge {
                            donor: src.label.clone(),
                            path: root.to_string(),
                            size: tree.bytes,
                            cap: MAX_MODULES_TREE_BYTES,
                        }
                        .into());
                    }
                }
                NodeKind::Symlink => {
                    let t = lister.link(src, handle, &abs)?;
                    if t.is_empty() || t.len() > MAX_LINK_TARGET || t.contains('\0') {
                        return Err(DonorError::BadSymlink {
                            donor: src.label.clone(),
                            path: abs,
                        }
                        .into());
                    }
                    tree.symlinks += 1;
                    target = Some(t);
                }
                _ => tree.others += 1,
            }
            tree.entries.push(TreeEntry {
                rel,
                meta,
                target,
                ino,
            });
        }
        // Reverse so that the stack pops subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// `root` + `/` + `rel` (just `root` when `rel` is empty).
pub(crate) fn join(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else if root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    }
}
