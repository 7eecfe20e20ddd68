//! The guest filesystem as graft, fixups and boot write it: [`GuestFs`], the write side
//! over [`TreeRead`] (the one read trait, in [`crate::tree`]), implemented by the
//! libext2fs engine (`ext`) for real images, by the dry-run overlay
//! (`fixups::dry_run::Overlay`), by [`Mounted`] for a guest with a separate `/boot`, and
//! by `MemFs` (feature `test-fs`) for tests.
//!
//! Paths are guest paths (absolute, `/`-separated). Implementations resolve them inside
//! the guest only, through [`crate::tree::resolve`]: a symlink's absolute target starts
//! again at the guest root, `..` at the root stays at the root, and more than
//! [`MAX_SYMLINK_HOPS`] links is a [`GuestFsError::SymlinkLoop`]. Nothing ever resolves
//! against the host.

use std::io::Read;

use crate::tree::ResolveError;
pub use crate::tree::{
    boot_relative, components, split_parent, DirItem, Mounted, NodeKind, NodeMeta, TreeRead,
    BOOT_MOUNT, MAX_DIR_ENTRIES, MAX_SYMLINK_HOPS,
};

/// Owner, permissions and time for a node the converter creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NodeAttrs {
    /// Permission bits (0o7777 range).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Modification (and access/change) time, seconds since the epoch.
    pub mtime: i64,
}

impl NodeAttrs {
    /// root:root with the given mode and time.
    pub fn root(mode: u16, mtime: i64) -> Self {
        NodeAttrs {
            mode,
            uid: 0,
            gid: 0,
            mtime,
        }
    }
}

/// Errors of guest filesystem operations.
#[derive(Debug, thiserror::Error)]
pub enum GuestFsError {
    #[error("{path}: no such file or directory in the guest")]
    NotFound { path: String },
    #[error("{path}: already exists in the guest")]
    AlreadyExists { path: String },
    #[error("{path}: a path component is not a directory in the guest")]
    NotADirectory { path: String },
    #[error("{path}: too many levels of symbolic links in the guest (symlink loop?)")]
    SymlinkLoop { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("{path}: {size} bytes is more than the {cap} bytes allowed for this file")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("directory {path} has more than {cap} entries (corrupt directory?)")]
    TooManyEntries { path: String, cap: usize },
    /// The filesystem engine failed; `why` carries its own error text.
    #[error("{op} {path}: {why}")]
    Engine {
        op: &'static str,
        path: String,
        why: String,
    },
    /// No room left: in the guest filesystem (`in_guest`: no free block or inode), or on
    /// the filesystem holding the output image. `why` carries the engine's error text.
    #[error("{op} {path}: {why}")]
    NoSpace {
        op: &'static str,
        path: String,
        why: String,
        in_guest: bool,
    },
    /// Reading the source of a new file failed.
    #[error("reading the content for {path}: {source}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writing the guest's filesystem; reading it is [`TreeRead`], with guest errors.
pub trait GuestFs: TreeRead<Error = GuestFsError> {
    /// Create `path` and any missing parents with `attrs`; existing directories are kept.
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError>;
    /// Create a new regular file from `content` (exactly `size` bytes). Fails if it exists.
    fn create_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        size: u64,
        attrs: NodeAttrs,
    ) -> Result<(), GuestFsError>;
    /// Replace the content of an existing regular file, keeping its inode, owner and mode.
    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError>;
    /// Create a symlink at `path` pointing to `target`. Fails if `path` exists.
    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError>;
    /// Rename `from` to `to` (same filesystem); fails if `to` exists.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError>;
    /// Remove a file or symlink (not a directory).
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError>;
}

impl GuestFsError {
    /// The guest error for a failed [`crate::tree::resolve`] of `path`.
    pub fn resolving(path: &str, e: ResolveError<GuestFsError>) -> GuestFsError {
        match e {
            ResolveError::Walk(e) => e,
            ResolveError::NotFound => GuestFsError::NotFound { path: path.into() },
            ResolveError::NotADirectory => GuestFsError::NotADirectory { path: path.into() },
            ResolveError::SymlinkLoop => GuestFsError::SymlinkLoop { path: path.into() },
            ResolveError::NulByte => GuestFsError::Engine {
                op: "resolve",
                path: path.into(),
                why: "the path contains a NUL byte".into(),
            },
        }
    }
}

/// Writing through a mutable borrow.
impl<T: GuestFs + ?Sized> GuestFs for &mut T {
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        (**self).mkdir_p(path, attrs)
    }
    fn create_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        size: u64,
        attrs: NodeAttrs,
    ) -> Result<(), GuestFsError> {
        (**self).create_file(path, content, size, attrs)
    }
    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
        (**self).replace_content(path, content)
    }
    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        (**self).symlink(path, target, attrs)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        (**self).rename(from, to)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        (**self).remove(path)
    }
}

impl<R: GuestFs> GuestFs for Mounted<R> {
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        let (fs, p) = self.route(path);
        if p == "/" {
            // The boot filesystem's root always exists.
            return Ok(());
        }
        fs.mkdir_p(&p, attrs)
    }
    fn create_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        size: u64,
        attrs: NodeAttrs,
    ) -> Result<(), GuestFsError> {
        let (fs, p) = self.route(path);
        fs.create_file(&p, content, size, attrs)
    }
    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
        let (fs, p) = self.route(path);
        fs.replace_content(&p, content)
    }
    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        let (fs, p) = self.route(path);
        fs.symlink(&p, target, attrs)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        match (boot_relative(from), boot_relative(to)) {
            (Some(f), Some(t)) => self.boot.rename(&f, &t),
            (None, None) => self.root.rename(from, to),
            _ => Err(GuestFsError::Engine {
                op: "rename",
                path: format!("{from} -> {to}"),
                why: "the two paths are on different filesystems (/boot is separate)".into(),
            }),
        }
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let (fs, p) = self.route(path);
        fs.remove(&p)
    }
}

#[cfg(any(test, feature = "test-fs"))]
pub use mem::MemFs;

#[cfg(any(test, feature = "test-fs"))]
mod mem {
    //! An in-memory [`GuestFs`] with real guest-path semantics, for unit tests of graft
    //! and fixups and for dry runs.
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Node {
        Dir {
            attrs: NodeAttrs,
            entries: BTreeMap<String, u64>,
        },
        File {
            attrs: NodeAttrs,
            data: Vec<u8>,
        },
        Symlink {
            attrs: NodeAttrs,
            target: String,
        },
    }

    /// An in-memory guest filesystem. Inodes are numbered; hard links are not modelled.
    #[derive(Debug, Clone)]
    pub struct MemFs {
        nodes: BTreeMap<u64, Node>,
        next: u64,
    }

    const ROOT: u64 = 2;

    impl Default for MemFs {
        fn default() -> Self {
            Self::new()
        }
    }

    impl MemFs {
        /// An empty filesystem with a root directory.
        pub fn new() -> Self {
            let mut nodes = BTreeMap::new();
            nodes.insert(
                ROOT,
                Node::Dir {
                    attrs: NodeAttrs::root(0o755, 0),
                    entries: BTreeMap::new(),
                },
            );
            MemFs {
                nodes,
                next: ROOT + 1,
            }
        }

        /// Convenience for tests: create parents and a file with mode 0644.
        pub fn with_file(mut self, path: &str, content: &str) -> Self {
            let (parent, _) = split_parent(path).expect("path");
            self.mkdir_p(&parent, NodeAttrs::root(0o755, 0))
                .expect("mkdir");
            let mut r = content.as_bytes();
            self.create_file(
                path,
                &mut r,
                content.len() as u64,
                NodeAttrs::root(0o644, 0),
            )
            .expect("create");
            self
        }

        /// Convenience for tests: create parents and a symlink.
        pub fn with_symlink(mut self, path: &str, target: &str) -> Self {
            let (parent, _) = split_parent(path).expect("path");
            self.mkdir_p(&parent, NodeAttrs::root(0o755, 0))
                .expect("mkdir");
            self.symlink(path, target, NodeAttrs::root(0o777, 0))
                .expect("symlink");
            self
        }

        /// Content of a file as text, for assertions (`None` if absent or not a file).
        pub fn text(&mut self, path: &str) -> Option<String> {
            self.read_file(path, u64::MAX)
                .ok()
                .flatten()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
        }

        /// Every path in the filesystem with its kind, for assertions.
        pub fn list(&self) -> Vec<(String, NodeKind)> {
            let mut out = Vec::new();
            self.walk(ROOT, String::new(), &mut out);
            out
        }

        fn walk(&self, ino: u64, prefix: String, out: &mut Vec<(String, NodeKind)>) {
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&ino) {
                for (name, child) in entries {
                    let p = format!("{prefix}/{name}");
                    let kind = match &self.nodes[child] {
                        Node::Dir { .. } => NodeKind::Dir,
                        Node::File { .. } => NodeKind::File,
                        Node::Symlink { .. } => NodeKind::Symlink,
                    };
                    out.push((p.clone(), kind));
                    self.walk(*child, p, out);
                }
            }
        }

        fn meta(&self, ino: u64) -> NodeMeta {
            let (kind, attrs, len) = match &self.nodes[&ino] {
                Node::Dir { attrs, .. } => (NodeKind::Dir, attrs, 4096),
                Node::File { attrs, data } => (NodeKind::File, attrs, data.len() as u64),
                Node::Symlink { attrs, target } => (NodeKind::Symlink, attrs, target.len() as u64),
            };
            NodeMeta {
                kind,
                mode: attrs.mode,
                uid: attrs.uid,
                gid: attrs.gid,
                len,
                mtime: attrs.mtime,
                atime: attrs.mtime,
            }
        }

        /// Resolve `path` to (parent dir inode, final name, inode if present), by the
        /// shared guest-path rules ([`crate::tree::resolve`]).
        fn resolve(
            &mut self,
            path: &str,
            follow: bool,
        ) -> Result<(u64, String, Option<u64>), GuestFsError> {
            let r = crate::tree::resolve(self, path, follow)
                .map_err(|e| GuestFsError::resolving(path, e))?;
            Ok((
                r.parent,
                String::from_utf8_lossy(&r.name).into_owned(),
                r.node.map(|(ino, _)| ino),
            ))
        }

        fn insert(&mut self, path: &str, node: Node) -> Result<u64, GuestFsError> {
            let (parent, name, existing) = self.resolve(path, false)?;
            if existing.is_some() || name.is_empty() {
                return Err(GuestFsError::AlreadyExists { path: path.into() });
            }
            let ino = self.next;
            self.next += 1;
            self.nodes.insert(ino, node);
            match self.nodes.get_mut(&parent) {
                Some(Node::Dir { entries, .. }) => {
                    entries.insert(name, ino);
                    Ok(ino)
                }
                _ => Err(GuestFsError::NotADirectory { path: path.into() }),
            }
        }
    }

    impl crate::tree::Walk for MemFs {
        type Node = u64;
        type Error = GuestFsError;

        fn root(&mut self) -> Result<u64, GuestFsError> {
            Ok(ROOT)
        }

        fn lookup(
            &mut self,
            dir: &u64,
            name: &[u8],
            path: &str,
        ) -> Result<Option<(u64, Option<NodeKind>)>, GuestFsError> {
            let Node::Dir { entries, .. } = &self.nodes[dir] else {
                return Err(GuestFsError::NotADirectory { path: path.into() });
            };
            let Ok(name) = std::str::from_utf8(name) else {
                return Ok(None);
            };
            Ok(entries
                .get(name)
                .map(|&ino| (ino, Some(self.meta(ino).kind))))
        }

        fn link_target(&mut self, link: &u64, path: &str) -> Result<Vec<u8>, GuestFsError> {
            match &self.nodes[link] {
                Node::Symlink { target, .. } => Ok(target.clone().into_bytes()),
                _ => Err(GuestFsError::Engine {
                    op: "readlink",
                    path: path.into(),
                    why: "not a symlink".into(),
                }),
            }
        }
    }

    impl TreeRead for MemFs {
        type Error = GuestFsError;

        fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
            match self.resolve(path, false) {
                Ok((_, _, Some(ino))) => Ok(Some(self.meta(ino))),
                Ok((_, _, None)) | Err(GuestFsError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
            match self.resolve(path, true) {
                Ok((_, _, Some(ino))) => Ok(Some(self.meta(ino))),
                Ok((_, _, None)) | Err(GuestFsError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, GuestFsError> {
            let ino = match self.resolve(path, true) {
                Ok((_, _, Some(ino))) => ino,
                Ok((_, _, None)) | Err(GuestFsError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            match &self.nodes[&ino] {
                Node::File { data, .. } if data.len() as u64 > cap => Err(GuestFsError::TooLarge {
                    path: path.into(),
                    size: data.len() as u64,
                    cap,
                }),
                Node::File { data, .. } => Ok(Some(data.clone())),
                _ => Err(GuestFsError::IsADirectory { path: path.into() }),
            }
        }

        fn read_link(&mut self, path: &str) -> Result<Option<String>, GuestFsError> {
            match self.resolve(path, false) {
                Ok((_, _, Some(ino))) => match &self.nodes[&ino] {
                    Node::Symlink { target, .. } => Ok(Some(target.clone())),
                    _ => Err(GuestFsError::Engine {
                        op: "readlink",
                        path: path.into(),
                        why: "not a symlink".into(),
                    }),
                },
                Ok((_, _, None)) | Err(GuestFsError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn read_dir(
            &mut self,
            path: &str,
            cap: usize,
        ) -> Result<Option<Vec<DirItem>>, GuestFsError> {
            let ino = match self.resolve(path, true) {
                Ok((_, _, Some(ino))) => ino,
                Ok((_, _, None)) | Err(GuestFsError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            match &self.nodes[&ino] {
                Node::Dir { entries, .. } if entries.len() > cap => {
                    Err(GuestFsError::TooManyEntries {
                        path: path.into(),
                        cap,
                    })
                }
                Node::Dir { entries, .. } => Ok(Some(
                    entries
                        .iter()
                        .map(|(name, c)| DirItem {
                            name: name.clone(),
                            kind: self.meta(*c).kind,
                        })
                        .collect(),
                )),
                _ => Err(GuestFsError::NotADirectory { path: path.into() }),
            }
        }
    }

    impl GuestFs for MemFs {
        fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
            let mut cur = String::new();
            for c in components(path) {
                cur.push('/');
                cur.push_str(c);
                match self.stat(&cur)? {
                    Some(m) if m.kind == NodeKind::Dir => {}
                    Some(_) => return Err(GuestFsError::NotADirectory { path: cur }),
                    None => {
                        self.insert(
                            &cur,
                            Node::Dir {
                                attrs,
                                entries: BTreeMap::new(),
                            },
                        )?;
                    }
                }
            }
            Ok(())
        }

        fn create_file(
            &mut self,
            path: &str,
            content: &mut dyn Read,
            size: u64,
            attrs: NodeAttrs,
        ) -> Result<(), GuestFsError> {
            let mut data = Vec::new();
            content
                .take(size)
                .read_to_end(&mut data)
                .map_err(|source| GuestFsError::Source {
                    path: path.into(),
                    source,
                })?;
            if data.len() as u64 != size {
                return Err(GuestFsError::Source {
                    path: path.into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "content shorter than its size",
                    ),
                });
            }
            self.insert(path, Node::File { attrs, data }).map(|_| ())
        }

        fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
            let ino = match self.resolve(path, true)? {
                (_, _, Some(ino)) => ino,
                _ => return Err(GuestFsError::NotFound { path: path.into() }),
            };
            match self.nodes.get_mut(&ino) {
                Some(Node::File { data, .. }) => {
                    *data = content.to_vec();
                    Ok(())
                }
                _ => Err(GuestFsError::IsADirectory { path: path.into() }),
            }
        }

        fn symlink(
            &mut self,
            path: &str,
            target: &str,
            attrs: NodeAttrs,
        ) -> Result<(), GuestFsError> {
            self.insert(
                path,
                Node::Symlink {
                    attrs,
                    target: target.into(),
                },
            )
            .map(|_| ())
        }

        fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
            let (src_dir, src_name, src) = self.resolve(from, false)?;
            let ino = src.ok_or_else(|| GuestFsError::NotFound { path: from.into() })?;
            let (dst_dir, dst_name, dst) = self.resolve(to, false)?;
            if dst.is_some() || dst_name.is_empty() {
                return Err(GuestFsError::AlreadyExists { path: to.into() });
            }
            if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(&src_dir) {
                entries.remove(&src_name);
            }
            match self.nodes.get_mut(&dst_dir) {
                Some(Node::Dir { entries, .. }) => {
                    entries.insert(dst_name, ino);
                    Ok(())
                }
                _ => Err(GuestFsError::NotADirectory { path: to.into() }),
            }
        }

        fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
            let (dir, name, ino) = self.resolve(path, false)?;
            let ino = ino.ok_or_else(|| GuestFsError::NotFound { path: path.into() })?;
            if matches!(self.nodes[&ino], Node::Dir { .. }) {
                return Err(GuestFsError::IsADirectory { path: path.into() });
            }
            if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(&dir) {
                entries.remove(&name);
            }
            self.nodes.remove(&ino);
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn symlinks_resolve_inside_the_guest() {
            let mut fs = MemFs::new()
                .with_file("/usr/lib/modules/x", "m")
                .with_symlink("/lib", "usr/lib")
                .with_symlink("/etc/escape", "../../../../usr/lib/modules/x")
                .with_symlink("/etc/abs", "/usr/lib/modules/x");
            assert_eq!(fs.text("/lib/modules/x").as_deref(), Some("m"));
            assert_eq!(
                fs.text("/etc/escape").as_deref(),
                Some("m"),
                "`..` stops at the guest root"
            );
            assert_eq!(
                fs.text("/etc/abs").as_deref(),
                Some("m"),
                "absolute targets start at the guest root"
            );
            assert_eq!(fs.lstat("/lib").unwrap().unwrap().kind, NodeKind::Symlink);
            assert_eq!(fs.stat("/lib").unwrap().unwrap().kind, NodeKind::Dir);
        }

        #[test]
        fn a_separate_boot_takes_the_paths_under_boot() {
            let mut root = MemFs::new().with_file("/etc/fstab", "f");
            let mut boot = MemFs::new().with_file("/grub/menu.lst", "m");
            {
                let mut m = Mounted::new(&mut root, &mut boot);
                assert_eq!(m.stat("/boot").unwrap().unwrap().kind, NodeKind::Dir);
                m.mkdir_p("/boot/grub/i386-pc", NodeAttrs::root(0o755, 0))
                    .unwrap();
                let mut data: &[u8] = b"k";
                m.create_file("/boot/vmlinuz-1", &mut data, 1, NodeAttrs::root(0o644, 0))
                    .unwrap();
                m.rename("/boot/grub/menu.lst", "/boot/grub/menu.lst.old")
                    .unwrap();
                assert!(m.rename("/etc/fstab", "/boot/fstab").is_err());
                assert_eq!(
                    m.read_file("/etc/fstab", 10).unwrap().as_deref(),
                    Some(&b"f"[..])
                );
            }
            assert_eq!(boot.text("/vmlinuz-1").as_deref(), Some("k"));
            assert_eq!(boot.text("/grub/menu.lst.old").as_deref(), Some("m"));
            assert_eq!(
                boot.stat("/grub/i386-pc").unwrap().unwrap().kind,
                NodeKind::Dir
            );
            assert!(root.lstat("/boot").unwrap().is_none(), "{:?}", root.list());
            assert_eq!(boot_relative("/boot"), Some("/".into()));
            assert_eq!(boot_relative("/boot/../etc"), None);
            assert_eq!(boot_relative("/bootx/a"), None);
        }

        #[test]
        fn symlink_loop_is_an_error() {
            let mut fs = MemFs::new()
                .with_symlink("/etc/fstab", "/etc/loop")
                .with_symlink("/etc/loop", "fstab");
            assert!(matches!(
                fs.read_file("/etc/fstab", 100),
                Err(GuestFsError::SymlinkLoop { .. })
            ));
        }

        #[test]
        fn mkdir_p_through_symlink_and_create_rename_remove() {
            let mut fs = MemFs::new().with_symlink("/lib", "usr/lib");
            fs.mkdir_p("/usr/lib", NodeAttrs::root(0o755, 0)).unwrap();
            fs.mkdir_p("/lib/modules/6.1", NodeAttrs::root(0o755, 0))
                .unwrap();
            assert_eq!(
                fs.stat("/usr/lib/modules/6.1").unwrap().unwrap().kind,
                NodeKind::Dir
            );
            let mut c: &[u8] = b"abc";
            fs.create_file("/lib/modules/6.1/a", &mut c, 3, NodeAttrs::root(0o600, 5))
                .unwrap();
            let mut c: &[u8] = b"abc";
            assert!(matches!(
                fs.create_file("/lib/modules/6.1/a", &mut c, 3, NodeAttrs::root(0o600, 5)),
                Err(GuestFsError::AlreadyExists { .. })
            ));
            fs.rename("/usr/lib/modules/6.1/a", "/usr/lib/modules/6.1/b")
                .unwrap();
            assert_eq!(fs.text("/lib/modules/6.1/b").as_deref(), Some("abc"));
            fs.replace_content("/lib/modules/6.1/b", b"xyz").unwrap();
            assert_eq!(fs.stat("/lib/modules/6.1/b").unwrap().unwrap().mode, 0o600);
            fs.remove("/lib/modules/6.1/b").unwrap();
            assert!(fs.stat("/lib/modules/6.1/b").unwrap().is_none());
        }
    }
}

impl GuestFsError {
    /// What the error concerns: a guest that lacks or mangles a path is the input's
    /// fault, a full filesystem the output's, the content of a new file (read from the
    /// donor) the donor's, and the write engine failing otherwise is internal.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            GuestFsError::NoSpace { .. } => K::Output,
            GuestFsError::Engine { .. } => K::Internal,
            GuestFsError::Source { source, .. } => crate::error::io_kind(source, K::Donor),
            _ => K::Input,
        }
    }
}
