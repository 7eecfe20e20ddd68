//! Reading a tree of files: one trait, [`TreeRead`], for every filesystem the converter
//! reads (the guest through [`crate::ext::read::ExtReader`] or the libext2fs engine, the
//! guest with a separate `/boot` ([`Mounted`]), the dry-run overlay, a donor image or
//! directory, the host's EFI packages, `MemFs` in tests), and one resolver, [`resolve`],
//! for every guest path any of them is asked about.
//!
//! Paths are absolute and `/`-separated, and they are resolved inside the tree only: a
//! symlink's absolute target starts again at the tree's root, `..` at the root stays at
//! the root, and more than [`MAX_SYMLINK_HOPS`] links end the walk
//! ([`ResolveError::SymlinkLoop`]). Nothing ever resolves against the host.
//!
//! Every read is bounded by its caller: whole files by a byte cap, directories by an entry
//! cap. Each implementation keeps its own error type ([`TreeRead::Error`]), so a fault is
//! reported as the engine that met it describes it.

/// Symlinks followed while resolving one path before giving up (Linux uses 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Most entries read from one directory when the caller has no tighter bound of its own.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;

/// What kind of node a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

/// Metadata of one node, in plain types.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeMeta {
    pub kind: NodeKind,
    /// Permission bits (including setuid/setgid/sticky), without the type bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub len: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Access time, seconds since the epoch.
    pub atime: i64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirItem {
    /// File name (non-UTF-8 names are skipped by a directory read).
    pub name: String,
    pub kind: NodeKind,
}

/// Reading a tree of files by path. Absent paths are `Ok(None)`; every other fault is an
/// error of the implementation's own type.
pub trait TreeRead {
    /// How this tree reports a fault.
    type Error;
    /// Metadata of `path` itself (a final symlink is not followed).
    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, Self::Error>;
    /// Metadata of `path`, following symlinks inside the tree.
    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, Self::Error>;
    /// Whole content of the regular file at `path` (following symlinks); more than `cap`
    /// bytes is an error, raised before anything is allocated for it.
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Target of the symlink at `path`.
    fn read_link(&mut self, path: &str) -> Result<Option<String>, Self::Error>;
    /// Entries of the directory at `path` (following symlinks; without `.` and `..`);
    /// more than `cap` of them is an error.
    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, Self::Error>;
}

impl<T: TreeRead + ?Sized> TreeRead for &mut T {
    type Error = T::Error;
    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, T::Error> {
        (**self).lstat(path)
    }
    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, T::Error> {
        (**self).stat(path)
    }
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, T::Error> {
        (**self).read_file(path, cap)
    }
    fn read_link(&mut self, path: &str) -> Result<Option<String>, T::Error> {
        (**self).read_link(path)
    }
    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, T::Error> {
        (**self).read_dir(path, cap)
    }
}

/// A tree whose errors are turned into another type: `map` gets the operation
/// (`"lstat"`, `"stat"`, `"read"`, `"readlink"`, `"readdir"`), the path and the error.
pub struct MapErr<T, F> {
    /// The tree read.
    pub inner: T,
    /// The error conversion.
    pub map: F,
}

impl<T, F> MapErr<T, F> {
    /// `inner` with its errors converted by `map`.
    pub fn new(inner: T, map: F) -> Self {
        MapErr { inner, map }
    }
}

impl<T, F, E> TreeRead for MapErr<T, F>
where
    T: TreeRead,
    F: FnMut(&'static str, &str, T::Error) -> E,
{
    type Error = E;
    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, E> {
        self.inner
            .lstat(path)
            .map_err(|e| (self.map)("lstat", path, e))
    }
    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, E> {
        self.inner
            .stat(path)
            .map_err(|e| (self.map)("stat", path, e))
    }
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, E> {
        self.inner
            .read_file(path, cap)
            .map_err(|e| (self.map)("read", path, e))
    }
    fn read_link(&mut self, path: &str) -> Result<Option<String>, E> {
        self.inner
            .read_link(path)
            .map_err(|e| (self.map)("readlink", path, e))
    }
    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, E> {
        self.inner
            .read_dir(path, cap)
            .map_err(|e| (self.map)("readdir", path, e))
    }
}

/// Split a path into its normal components, dropping empty and `.` parts. `..` is kept;
/// resolution handles it.
pub fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Parent directory and final name of a path (`/a/b/c` → (`/a/b`, `c`)).
pub fn split_parent(path: &str) -> Option<(String, &str)> {
    let comps = components(path);
    let (last, dirs) = comps.split_last()?;
    Some((format!("/{}", dirs.join("/")), last))
}

/// The one step of path resolution an engine provides to [`resolve`]: its root, one
/// directory lookup and one symlink read, on nodes of its own (inode numbers, host
/// paths, canonical paths…). The engines behind [`TreeRead`] implement it, so the
/// guest-only rules live in [`resolve`] alone.
pub trait Walk {
    /// A handle on one node.
    type Node: Clone;
    /// How a lookup fails; [`resolve`] hands the first such error back as it is.
    type Error;
    /// The tree's root directory.
    fn root(&mut self) -> Result<Self::Node, Self::Error>;
    /// The entry `name` of directory `dir` with its kind (`None` for a mode the engine
    /// does not know); `Ok(None)` when there is no such entry. `path` is the whole path
    /// being resolved, for error messages.
    #[allow(clippy::type_complexity)]
    fn lookup(
        &mut self,
        dir: &Self::Node,
        name: &[u8],
        path: &str,
    ) -> Result<Option<(Self::Node, Option<NodeKind>)>, Self::Error>;
    /// The target of the symlink `link`.
    fn link_target(&mut self, link: &Self::Node, path: &str) -> Result<Vec<u8>, Self::Error>;
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<N> {
    /// The directory holding the final entry (the node itself when `name` is empty).
    pub parent: N,
    /// The final component; empty when the path ends at a directory reached through
    /// `..`, a symlink, or at the root.
    pub name: Vec<u8>,
    /// The final node and its kind, when it exists.
    pub node: Option<(N, Option<NodeKind>)>,
}

/// Why [`resolve`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError<E> {
    /// The engine failed; its error, as it is.
    Walk(E),
    /// A directory on the way does not exist.
    NotFound,
    /// A component on the way is not a directory.
    NotADirectory,
    /// More than [`MAX_SYMLINK_HOPS`] symlinks.
    SymlinkLoop,
    /// The path holds a NUL byte, which no file name can.
    NulByte,
}

/// Resolve `path` inside the tree only: components are looked up from the root one by
/// one; a symlink's absolute target starts again at the root, relative ones continue from
/// the link's directory, `..` pops to the previous directory and stays at the root; more
/// than [`MAX_SYMLINK_HOPS`] links is [`ResolveError::SymlinkLoop`]. Intermediate
/// symlinks are always followed, the final one only when `follow`. A missing final
/// component is `node: None`; a missing directory on the way is
/// [`ResolveError::NotFound`], a non-directory on the way [`ResolveError::NotADirectory`].
pub fn resolve<W: Walk + ?Sized>(
    fs: &mut W,
    path: &str,
    follow: bool,
) -> Result<Resolved<W::Node>, ResolveError<W::Error>> {
    if path.as_bytes().contains(&0) {
        return Err(ResolveError::NulByte);
    }
    let mut pending: Vec<Vec<u8>> = components(path)
        .iter()
        .rev()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    // The directories from the root to the current one; `..` pops.
    let mut stack = vec![fs.root().map_err(ResolveError::Walk)?];
    let mut hops = 0;
    let mut last = None;
    while let Some(name) = pending.pop() {
        last = None;
        if name == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let dir = stack
            .last()
            .expect("the stack always holds the root")
            .clone();
        let child = fs.lookup(&dir, &name, path).map_err(ResolveError::Walk)?;
        let is_final = pending.is_empty();
        match child {
            Some((link, Some(NodeKind::Symlink))) if !is_final || follow => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::SymlinkLoop);
                }
                let target = fs.link_target(&link, path).map_err(ResolveError::Walk)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                pending.extend(target_components(&target).rev().map(<[u8]>::to_vec));
            }
            child if is_final => {
                last = Some(Resolved {
                    parent: dir,
                    name,
                    node: child,
                })
            }
            Some((node, Some(NodeKind::Dir))) => stack.push(node),
            None => return Err(ResolveError::NotFound),
            Some(_) => return Err(ResolveError::NotADirectory),
        }
    }
    Ok(last.unwrap_or_else(|| {
        let dir = stack.pop().expect("the stack always holds the root");
        Resolved {
            parent: dir.clone(),
            name: Vec::new(),
            node: Some((dir, Some(NodeKind::Dir))),
        }
    }))
}

/// The components of a symlink target (bytes: ext names need not be UTF-8), without
/// empty and `.` parts.
fn target_components(target: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    target
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// The mount point of a separate boot filesystem.
pub const BOOT_MOUNT: &str = "/boot";

/// `path` inside the boot filesystem when it lies under [`BOOT_MOUNT`] (`/boot` → `/`,
/// `/boot/grub/x` → `/grub/x`); `None` for every other path.
pub fn boot_relative(path: &str) -> Option<String> {
    let parts = components(path);
    if parts.first() != Some(&"boot") || parts[1..].contains(&"..") {
        return None;
    }
    Some(format!("/{}", parts[1..].join("/")))
}

/// The guest as it is seen once booted with a separate `/boot`: paths under `/boot` go to
/// the boot filesystem (without the `/boot` prefix: `/boot/grub/grub.cfg` is its
/// `/grub/grub.cfg`), every other path to the root filesystem. The root's own `/boot`
/// directory is the mount point the guest never sees, so nothing lands there.
///
/// A path whose `/boot` part is followed by `..` stays on the root filesystem. Reading
/// works over any [`TreeRead`]; writing (`crate::guestfs::GuestFs`, which refuses a
/// rename across the two filesystems as `rename(2)` does with `EXDEV`) over two guest
/// filesystems.
pub struct Mounted<R> {
    pub(crate) root: R,
    pub(crate) boot: R,
}

impl<R> Mounted<R> {
    /// `boot` mounted at `/boot` over `root`.
    pub fn new(root: R, boot: R) -> Self {
        Mounted { root, boot }
    }

    /// The filesystem that holds `path` and the path inside it.
    pub(crate) fn route(&mut self, path: &str) -> (&mut R, String) {
        match boot_relative(path) {
            Some(inner) => (&mut self.boot, inner),
            None => (&mut self.root, path.to_string()),
        }
    }
}

impl<R: TreeRead> TreeRead for Mounted<R> {
    type Error = R::Error;
    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, R::Error> {
        let (fs, p) = self.route(path);
        fs.lstat(&p)
    }
    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, R::Error> {
        let (fs, p) = self.route(path);
        fs.stat(&p)
    }
    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, R::Error> {
        let (fs, p) = self.route(path);
        fs.read_file(&p, cap)
    }
    fn read_link(&mut self, path: &str) -> Result<Option<String>, R::Error> {
        let (fs, p) = self.route(path);
        fs.read_link(&p)
    }
    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, R::Error> {
        let (fs, p) = self.route(path);
        fs.read_dir(&p, cap)
    }
}

/// The kind of a host file, from its type (never following a symlink).
pub fn host_kind(ft: std::fs::FileType) -> NodeKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_char_device() {
        NodeKind::CharDev
    } else if ft.is_block_device() {
        NodeKind::BlockDev
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A host file's metadata as a tree node. Owners are mapped to root: a package unpacked
/// by a user belongs to root once installed.
pub fn host_meta(m: &std::fs::Metadata) -> NodeMeta {
    use std::os::unix::fs::MetadataExt;
    NodeMeta {
        kind: host_kind(m.file_type()),
        mode: (m.mode() & 0o7777) as u16,
        uid: 0,
        gid: 0,
        len: m.len(),
        mtime: m.mtime(),
        atime: m.atime(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_target_components_drop_empty_and_dot() {
        let parts: Vec<&[u8]> = target_components(b"/usr//./lib/../x/").collect();
        assert_eq!(parts, vec![&b"usr"[..], b"lib", b"..", b"x"]);
    }

    /// `path` resolved over `fs` to the node it names (or why not), by inode.
    fn ino(
        fs: &mut crate::guestfs::MemFs,
        path: &str,
        follow: bool,
    ) -> Result<Option<u64>, ResolveError<()>> {
        match resolve(fs, path, follow) {
            Ok(r) => Ok(r.node.map(|(n, _)| n)),
            Err(ResolveError::Walk(e)) => panic!("{path}: the walk itself failed: {e}"),
            Err(ResolveError::NotFound) => Err(ResolveError::NotFound),
            Err(ResolveError::NotADirectory) => Err(ResolveError::NotADirectory),
            Err(ResolveError::SymlinkLoop) => Err(ResolveError::SymlinkLoop),
            Err(ResolveError::NulByte) => Err(ResolveError::NulByte),
        }
    }

    #[test]
    fn hostile_links_stay_inside_the_tree() {
        use crate::guestfs::MemFs;
        let mut fs = MemFs::new()
            .with_file("/etc/shadow", "guest's own")
            .with_file("/usr/lib/modules/6.1/modules.dep", "dep")
            .with_symlink("/lib", "usr/lib")
            // `..` far above the root stops at the root.
            .with_symlink("/usr/up", "../../../../../../../etc/shadow")
            // An absolute target starts again at this tree's root, never the host's.
            .with_symlink("/usr/abs", "/etc/shadow")
            .with_symlink("/usr/absdir", "/lib/modules/../modules/6.1/")
            // Loops: a link to itself, a pair, and a chain longer than the hop limit.
            .with_symlink("/loop/self", "self")
            .with_symlink("/loop/a", "/loop/b")
            .with_symlink("/loop/b", "a")
            .with_symlink("/loop/dir", ".")
            .with_symlink("/usr/missing", "/nowhere/at/all")
            .with_symlink("/usr/file-as-dir", "/etc/shadow/x");
        for i in 0..=MAX_SYMLINK_HOPS {
            fs = fs.with_symlink(&format!("/chain/{i}"), &format!("{}", i + 1));
        }
        fs = fs.with_file(&format!("/chain/{}", MAX_SYMLINK_HOPS + 1), "end");

        let shadow = ino(&mut fs, "/etc/shadow", true).unwrap().expect("exists");
        let dep = ino(&mut fs, "/usr/lib/modules/6.1/modules.dep", true)
            .unwrap()
            .expect("exists");
        let modules = ino(&mut fs, "/usr/lib/modules/6.1", true)
            .unwrap()
            .expect("exists");
        let root = ino(&mut fs, "/", true).unwrap().expect("the root");
        assert_eq!(ino(&mut fs, "/usr/up", true), Ok(Some(shadow)));
        assert_eq!(ino(&mut fs, "/usr/abs", true), Ok(Some(shadow)));
        assert_eq!(ino(&mut fs, "/../../..", true), Ok(Some(root)));
        assert_eq!(
            ino(&mut fs, "/../../etc/../etc/shadow", true),
            Ok(Some(shadow))
        );
        assert_eq!(
            ino(&mut fs, "/lib/modules/6.1/modules.dep", true),
            Ok(Some(dep))
        );
        assert_eq!(ino(&mut fs, "/usr/absdir", true), Ok(Some(modules)));
        assert_eq!(ino(&mut fs, "/usr/absdir/modules.dep", true), Ok(Some(dep)));
        // The final link itself when not following it.
        let link = ino(&mut fs, "/usr/abs", false).unwrap().expect("the link");
        assert_ne!(link, shadow);
        // Loops end with SymlinkLoop, followed or on the way, and never hang.
        for p in ["/loop/self", "/loop/a", "/loop/self/x"] {
            assert_eq!(ino(&mut fs, p, true), Err(ResolveError::SymlinkLoop), "{p}");
        }
        // A link to its own directory is a directory, however often it is repeated:
        // each repetition is one hop.
        assert!(ino(&mut fs, "/loop/dir/dir/dir/self", false)
            .unwrap()
            .is_some());
        let deep = format!("/loop{}", "/dir".repeat(MAX_SYMLINK_HOPS + 1));
        assert_eq!(ino(&mut fs, &deep, true), Err(ResolveError::SymlinkLoop));
        // A chain one hop longer than the limit is a loop; one hop shorter resolves.
        assert_eq!(
            ino(&mut fs, "/chain/0", true),
            Err(ResolveError::SymlinkLoop)
        );
        assert!(ino(&mut fs, "/chain/1", true).unwrap().is_some());
        // Missing targets and non-directories on the way.
        assert_eq!(
            ino(&mut fs, "/usr/missing", true),
            Err(ResolveError::NotFound)
        );
        assert_eq!(
            ino(&mut fs, "/usr/missing", false).map(|n| n.is_some()),
            Ok(true)
        );
        assert_eq!(ino(&mut fs, "/etc/absent", true), Ok(None));
        assert_eq!(
            ino(&mut fs, "/usr/file-as-dir", true),
            Err(ResolveError::NotADirectory)
        );
        assert_eq!(
            ino(&mut fs, "/etc/sh\0adow", true),
            Err(ResolveError::NulByte)
        );
    }

    #[test]
    fn boot_relative_paths() {
        assert_eq!(boot_relative("/boot"), Some("/".into()));
        assert_eq!(boot_relative("/boot/grub/x"), Some("/grub/x".into()));
        assert_eq!(boot_relative("/boot/../etc"), None);
        assert_eq!(boot_relative("/bootx/a"), None);
    }
}
