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
use crate::extread::{NodeKind, NodeMeta};

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
    let file_cap = MAX_MODULE_FILE_BYTES.min(src.size_bound());
    // (relative dir path, depth)
    let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
    while let Some((rel_dir, depth)) = stack.pop() {
        let abs_dir = join(root, &rel_dir);
        let mut items = src
            .read_dir_meta(&abs_dir, MAX_DIR_ENTRIES)?
            .ok_or_else(|| DonorError::Vanished {
                donor: src.label.clone(),
                path: abs_dir.clone(),
            })?;
        items.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut subdirs = Vec::new();
        for (item, meta) in items {
            if tree.entries.len() >= MAX_TREE_ENTRIES {
                return Err(DonorError::TreeTooLarge {
                    donor: src.label.clone(),
                    path: root.to_string(),
                    cap: MAX_TREE_ENTRIES,
                });
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
                        });
                    }
                    tree.dirs += 1;
                    subdirs.push((rel.clone(), depth + 1));
                }
                NodeKind::File => {
                    if meta.len > file_cap {
                        return Err(DonorError::TooLarge {
                            donor: src.label.clone(),
                            path: abs,
                            size: meta.len,
                            cap: file_cap,
                        });
                    }
                    tree.files += 1;
                    tree.bytes += meta.len;
                    if tree.bytes > MAX_MODULES_TREE_BYTES {
                        return Err(DonorError::TooLarge {
                            donor: src.label.clone(),
                            path: root.to_string(),
                            size: tree.bytes,
                            cap: MAX_MODULES_TREE_BYTES,
                        });
                    }
                }
                NodeKind::Symlink => {
                    let t = src.read_link(&abs)?.ok_or_else(|| DonorError::Vanished {
                        donor: src.label.clone(),
                        path: abs.clone(),
                    })?;
                    if t.is_empty() || t.len() > MAX_LINK_TARGET || t.contains('\0') {
                        return Err(DonorError::BadSymlink {
                            donor: src.label.clone(),
                            path: abs,
                        });
                    }
                    tree.symlinks += 1;
                    target = Some(t);
                }
                _ => tree.others += 1,
            }
            tree.entries.push(TreeEntry { rel, meta, target });
        }
        // Reverse so that the stack pops subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
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
