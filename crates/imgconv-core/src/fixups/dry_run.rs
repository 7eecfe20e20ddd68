//! Dry runs: a [`GuestFs`] over a read-only source that keeps every write in memory, so
//! that [`super::apply`] runs unchanged and its report lists the planned changes while
//! nothing is written.
//!
//! The source is any [`TreeRead`] with guest errors ([`ext_source`] makes one of an
//! [`ExtReader`]). The overlay resolves paths with the shared [`tree::resolve`],
//! component by component, over a merged view of the source and its in-memory changes,
//! with the same guest-only rules as every `GuestFs` (absolute link targets restart at the
//! guest root, `..` stops at the root, at most [`tree::MAX_SYMLINK_HOPS`] links). So the
//! source is only ever asked about *canonical* paths (no symlink in any component), which
//! [`ExtReader`] — whose own resolution follows links inside the filesystem — answers
//! exactly.
//!
//! The changes are kept as a map from canonical path to an upper node: a new file, link
//! or directory, a removal ("whiteout"), or a node *moved* from a source path (a rename of
//! something the source has; its content is read from the source on demand). Directories
//! created in the overlay are opaque: nothing of the source shows through them.

use crate::ext::read::{ExtReadError, ExtReader};
use crate::guestfs::{components, GuestFs, GuestFsError, NodeAttrs};
use crate::tree::{self, DirItem, MapErr, NodeKind, NodeMeta, TreeRead, MAX_DIR_ENTRIES};
use std::collections::BTreeMap;
use std::io::Read;

/// The guest error for a fault of the source's reader (`op` on `path`).
fn ext_err(op: &'static str, path: &str, e: ExtReadError) -> GuestFsError {
    match e {
        ExtReadError::TooLarge { size, cap, .. } => GuestFsError::TooLarge {
            path: path.to_string(),
            size,
            cap,
        },
        other => GuestFsError::Engine {
            op,
            path: path.to_string(),
            why: other.to_string(),
        },
    }
}

/// A guest read through [`ExtReader`] (or two of them, [`tree::Mounted`]) as an
/// overlay source: the reader's faults become guest errors.
pub fn ext_source<T: TreeRead<Error = ExtReadError>>(
    reader: T,
) -> impl TreeRead<Error = GuestFsError> {
    MapErr::new(reader, ext_err)
}

/// A node of the in-memory layer.
#[derive(Debug, Clone)]
enum Upper {
    /// Removed (or renamed away): hides the source's node and everything below it.
    Whiteout,
    /// A directory made in the overlay (opaque).
    Dir(NodeAttrs),
    File(NodeAttrs, Vec<u8>),
    Symlink(NodeAttrs, String),
    /// The source's node at this source path, renamed here.
    Moved(String),
}

/// Where a canonical path's node lives.
#[derive(Debug, Clone)]
enum Found {
    Upper(Upper),
    /// The source's node at this (source) path.
    Source(String),
}

/// A copy-on-write view of a read-only source; see the module documentation.
pub struct Overlay<'a> {
    source: Box<dyn TreeRead<Error = GuestFsError> + 'a>,
    upper: BTreeMap<String, Upper>,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("upper", &self.upper)
            .finish()
    }
}

fn canon(comps: &[String]) -> String {
    format!("/{}", comps.join("/"))
}

fn upper_meta(u: &Upper) -> Option<NodeMeta> {
    let (kind, attrs, len) = match u {
        Upper::Dir(a) => (NodeKind::Dir, a, 4096),
        Upper::File(a, d) => (NodeKind::File, a, d.len() as u64),
        Upper::Symlink(a, t) => (NodeKind::Symlink, a, t.len() as u64),
        Upper::Whiteout | Upper::Moved(_) => return None,
    };
    Some(NodeMeta {
        kind,
        mode: attrs.mode,
        uid: attrs.uid,
        gid: attrs.gid,
        len,
        mtime: attrs.mtime,
        atime: attrs.mtime,
    })
}

impl<'a> Overlay<'a> {
    /// An overlay with no changes yet over `source`, which it only reads (a `MemFs`, or
    /// a borrow `&mut` of one, in tests).
    pub fn new(source: impl TreeRead<Error = GuestFsError> + 'a) -> Self {
        Overlay {
            source: Box::new(source),
            upper: BTreeMap::new(),
        }
    }

    /// An overlay with no changes yet over the guest in `reader`.
    pub fn over_ext(reader: &'a ExtReader) -> Self {
        Overlay::new(ext_source(reader))
    }

    /// The canonical paths the overlay changed (created, replaced, removed or renamed
    /// to/from), sorted.
    pub fn changed_paths(&self) -> Vec<String> {
        self.upper.keys().cloned().collect()
    }

    /// Where the node at canonical path `comps` lives, walking the upper layer from the
    /// root: a whiteout or a non-directory ancestor hides the source, an opaque directory
    /// cuts it off, a moved ancestor redirects it.
    fn locate(&self, comps: &[String]) -> Option<Found> {
        let mut source_path: Option<String> = Some(String::new());
        for i in 0..comps.len() {
            source_path = source_path.map(|p| format!("{p}/{}", comps[i]));
            let last = i + 1 == comps.len();
            match self.upper.get(&canon(&comps[..=i])) {
                None => {}
                Some(Upper::Whiteout) => return None,
                Some(Upper::Dir(attrs)) => {
                    if last {
                        return Some(Found::Upper(Upper::Dir(*attrs)));
                    }
                    source_path = None;
                }
                Some(Upper::Moved(from)) => {
                    if last {
                        return Some(Found::Source(from.clone()));
                    }
                    source_path = Some(from.clone());
                }
                Some(u @ (Upper::File(..) | Upper::Symlink(..))) => {
                    return if last {
                        Some(Found::Upper(u.clone()))
                    } else {
                        None
                    };
                }
            }
        }
        match source_path {
            Some(p) if p.is_empty() => Some(Found::Source("/".to_string())),
            Some(p) => Some(Found::Source(p)),
            None => None,
        }
    }

    /// Metadata of a located node, and the link target when it is a symlink.
    fn meta_of(
        &mut self,
        found: &Found,
    ) -> Result<Option<(NodeMeta, Option<String>)>, GuestFsError> {
        match found {
            Found::Upper(u @ Upper::Symlink(_, t)) => {
                Ok(upper_meta(u).map(|m| (m, Some(t.clone()))))
            }
            Found::Upper(u) => Ok(upper_meta(u).map(|m| (m, None))),
            Found::Source(p) => match self.source.lstat(p)? {
                Some(m) if m.kind == NodeKind::Symlink => {
                    let t = self.source.read_link(p)?.unwrap_or_default();
                    Ok(Some((m, Some(t))))
                }
                Some(m) => Ok(Some((m, None))),
                None => Ok(None),
            },
        }
    }

    /// Resolve `path` to its canonical components, the node's location and metadata
    /// (`None` when the final component does not exist), by the shared guest-path rules
    /// ([`tree::resolve`]). Intermediate links are always followed, the final one only
    /// when `follow`.
    #[allow(clippy::type_complexity)]
    fn resolve(
        &mut self,
        path: &str,
        follow: bool,
    ) -> Result<(Vec<String>, Option<(Found, NodeMeta)>), GuestFsError> {
        let r = tree::resolve(&mut Walk(self), path, follow)
            .map_err(|e| GuestFsError::resolving(path, e))?;
        Ok(match r.node {
            Some((n, _)) if r.name.is_empty() => (n.comps, Some((n.found, n.meta))),
            node => {
                let mut comps = r.parent.comps;
                comps.push(String::from_utf8_lossy(&r.name).into_owned());
                (comps, node.map(|(n, _)| (n.found, n.meta)))
            }
        })
    }

    /// Insert a new node at `path`, which must not exist (its parent must).
    fn insert_new(&mut self, path: &str, node: Upper) -> Result<(), GuestFsError> {
        let (comps, existing) = self.resolve(path, false)?;
        if existing.is_some() || comps.is_empty() {
            return Err(GuestFsError::AlreadyExists { path: path.into() });
        }
        self.upper.insert(canon(&comps), node);
        Ok(())
    }
}

/// A node met while resolving: its canonical path, where it lives, its metadata and, for
/// a symlink, its target.
#[derive(Debug, Clone)]
struct WalkNode {
    comps: Vec<String>,
    found: Found,
    meta: NodeMeta,
    target: Option<String>,
}

/// One step of path resolution for [`tree::resolve`], over the merged view.
struct Walk<'o, 'a>(&'o mut Overlay<'a>);

impl tree::Walk for Walk<'_, '_> {
    type Node = WalkNode;
    type Error = GuestFsError;

    fn root(&mut self) -> Result<WalkNode, GuestFsError> {
        let meta = match self.0.upper.get("/") {
            Some(u) => upper_meta(u),
            None => self.0.source.lstat("/")?,
        };
        let meta = meta.ok_or_else(|| GuestFsError::NotFound { path: "/".into() })?;
        Ok(WalkNode {
            comps: Vec::new(),
            found: Found::Source("/".to_string()),
            meta,
            target: None,
        })
    }

    fn lookup(
        &mut self,
        dir: &WalkNode,
        name: &[u8],
        _path: &str,
    ) -> Result<Option<(WalkNode, Option<NodeKind>)>, GuestFsError> {
        let mut comps = dir.comps.clone();
        comps.push(String::from_utf8_lossy(name).into_owned());
        let Some(found) = self.0.locate(&comps) else {
            return Ok(None);
        };
        Ok(self.0.meta_of(&found)?.map(|(meta, target)| {
            let kind = meta.kind;
            (
                WalkNode {
                    comps,
                    found,
                    meta,
                    target,
                },
                Some(kind),
            )
        }))
    }

    fn link_target(&mut self, link: &WalkNode, _path: &str) -> Result<Vec<u8>, GuestFsError> {
        Ok(link.target.clone().unwrap_or_default().into_bytes())
    }
}

fn found_upper(f: &Found) -> Upper {
    match f {
        Found::Upper(u) => u.clone(),
        Found::Source(p) => Upper::Moved(p.clone()),
    }
}

impl TreeRead for Overlay<'_> {
    type Error = GuestFsError;

    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
        match self.resolve(path, false) {
            Ok((_, node)) => Ok(node.map(|(_, m)| m)),
            Err(GuestFsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
        match self.resolve(path, true) {
            Ok((_, node)) => Ok(node.map(|(_, m)| m)),
            Err(GuestFsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, GuestFsError> {
        let node = match self.resolve(path, true) {
            Ok((_, node)) => node,
            Err(GuestFsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((found, meta)) = node else {
            return Ok(None);
        };
        if meta.kind != NodeKind::File {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        if meta.len > cap {
            return Err(GuestFsError::TooLarge {
                path: path.into(),
                size: meta.len,
                cap,
            });
        }
        match found {
            Found::Upper(Upper::File(_, data)) => Ok(Some(data)),
            Found::Source(p) => self.source.read_file(&p, cap),
            Found::Upper(_) => Err(GuestFsError::IsADirectory { path: path.into() }),
        }
    }

    fn read_link(&mut self, path: &str) -> Result<Option<String>, GuestFsError> {
        let node = match self.resolve(path, false) {
            Ok((_, node)) => node,
            Err(GuestFsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match node {
            None => Ok(None),
            Some((f, _)) => match self.meta_of(&f)? {
                Some((_, Some(t))) => Ok(Some(t)),
                _ => Err(GuestFsError::Engine {
                    op: "readlink",
                    path: path.into(),
                    why: "not a symlink".into(),
                }),
            },
        }
    }

    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, GuestFsError> {
        let (comps, node) = match self.resolve(path, true) {
            Ok(r) => r,
            Err(GuestFsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((found, meta)) = node else {
            return Ok(None);
        };
        if meta.kind != NodeKind::Dir {
            return Err(GuestFsError::NotADirectory { path: path.into() });
        }
        let mut entries: BTreeMap<String, NodeKind> = BTreeMap::new();
        if let Found::Source(p) = &found {
            for item in self
                .source
                .read_dir(p, MAX_DIR_ENTRIES)?
                .unwrap_or_default()
            {
                entries.insert(item.name, item.kind);
            }
        }
        let dir = canon(&comps);
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let children: Vec<(String, Upper)> = self
            .upper
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, u)| (k[prefix.len()..].to_string(), u.clone()))
            .collect();
        for (name, u) in children {
            let kind = match &u {
                Upper::Whiteout => {
                    entries.remove(&name);
                    continue;
                }
                Upper::Moved(from) => match self.source.lstat(from)? {
                    Some(m) => m.kind,
                    None => continue,
                },
                other => upper_meta(other).expect("meta").kind,
            };
            entries.insert(name, kind);
        }
        if entries.len() > cap {
            return Err(GuestFsError::TooManyEntries {
                path: path.into(),
                cap,
            });
        }
        Ok(Some(
            entries
                .into_iter()
                .map(|(name, kind)| DirItem { name, kind })
                .collect(),
        ))
    }
}

impl GuestFs for Overlay<'_> {
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        let mut cur = String::new();
        for c in components(path) {
            cur.push('/');
            cur.push_str(c);
            match self.stat(&cur)? {
                Some(m) if m.kind == NodeKind::Dir => {}
                Some(_) => return Err(GuestFsError::NotADirectory { path: cur }),
                None => self.insert_new(&cur, Upper::Dir(attrs))?,
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
        self.insert_new(path, Upper::File(attrs, data))
    }

    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
        let (comps, node) = self.resolve(path, true)?;
        let Some((_, meta)) = node else {
            return Err(GuestFsError::NotFound { path: path.into() });
        };
        if meta.kind != NodeKind::File {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        let attrs = NodeAttrs {
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
        };
        self.upper
            .insert(canon(&comps), Upper::File(attrs, content.to_vec()));
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        self.insert_new(path, Upper::Symlink(attrs, target.to_string()))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        let (from_comps, node) = self.resolve(from, false)?;
        let Some((found, _)) = node else {
            return Err(GuestFsError::NotFound { path: from.into() });
        };
        let (to_comps, existing) = self.resolve(to, false)?;
        if existing.is_some() || to_comps.is_empty() {
            return Err(GuestFsError::AlreadyExists { path: to.into() });
        }
        let (from_path, to_path) = (canon(&from_comps), canon(&to_comps));
        if from_comps.is_empty() || to_path.starts_with(&format!("{from_path}/")) {
            return Err(GuestFsError::Engine {
                op: "rename",
                path: from.into(),
                why: format!("cannot move it into itself ({to})"),
            });
        }
        // Changes below a renamed directory move with it.
        let prefix = format!("{from_path}/");
        let below: Vec<String> = self
            .upper
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            if let Some(u) = self.upper.remove(&k) {
                self.upper
                    .insert(format!("{to_path}/{}", &k[prefix.len()..]), u);
            }
        }
        self.upper.insert(to_path, found_upper(&found));
        self.upper.insert(from_path, Upper::Whiteout);
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let (comps, node) = self.resolve(path, false)?;
        let Some((_, meta)) = node else {
            return Err(GuestFsError::NotFound { path: path.into() });
        };
        if meta.kind == NodeKind::Dir {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        self.upper.insert(canon(&comps), Upper::Whiteout);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::MemFs;

    fn source() -> MemFs {
        MemFs::new()
            .with_file("/usr/lib/systemd/system/a.service", "A")
            .with_symlink("/lib", "usr/lib")
            .with_file("/etc/fstab", "old")
            .with_symlink("/etc/mtab", "/proc/self/mounts")
            .with_symlink("/etc/loop1", "loop2")
            .with_symlink("/etc/loop2", "/etc/loop1")
            .with_file("/etc/udev/rules.d/70-persistent-net.rules", "R")
    }

    #[test]
    fn reads_through_and_writes_stay_in_memory() {
        let mut src = source();
        let mut o = Overlay::new(&mut src);
        assert_eq!(
            o.read_file("/lib/systemd/system/a.service", 10).unwrap(),
            Some(b"A".to_vec())
        );
        o.replace_content("/etc/fstab", b"new").unwrap();
        o.mkdir_p("/etc/systemd/system/x.wants", NodeAttrs::root(0o755, 1))
            .unwrap();
        o.symlink(
            "/etc/systemd/system/x.wants/a.service",
            "/lib/systemd/system/a.service",
            NodeAttrs::root(0o777, 1),
        )
        .unwrap();
        assert_eq!(
            o.read_file("/etc/systemd/system/x.wants/a.service", 10)
                .unwrap(),
            Some(b"A".to_vec())
        );
        o.rename(
            "/etc/udev/rules.d/70-persistent-net.rules",
            "/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig",
        )
        .unwrap();
        assert_eq!(
            o.read_file("/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig", 10)
                .unwrap(),
            Some(b"R".to_vec()),
            "a renamed source file reads from the source"
        );
        assert!(o
            .lstat("/etc/udev/rules.d/70-persistent-net.rules")
            .unwrap()
            .is_none());
        let names: Vec<String> = o
            .read_dir("/etc/udev/rules.d", 10)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["70-persistent-net.rules.imgconv-orig"]);
        assert_eq!(
            o.read_file("/etc/fstab", 10).unwrap(),
            Some(b"new".to_vec())
        );
        // The source is untouched.
        drop(o);
        let s = &mut src;
        assert_eq!(s.text("/etc/fstab").as_deref(), Some("old"));
        assert!(s.lstat("/etc/systemd").unwrap().is_none());
        assert_eq!(
            s.text("/etc/udev/rules.d/70-persistent-net.rules")
                .as_deref(),
            Some("R")
        );
    }

    #[test]
    fn guest_path_rules() {
        let mut src = source();
        let mut o = Overlay::new(&mut src);
        assert!(matches!(
            o.read_file("/etc/loop1", 10),
            Err(GuestFsError::SymlinkLoop { .. })
        ));
        assert_eq!(
            o.read_file("/../../etc/../lib/systemd/system/a.service", 10)
                .unwrap(),
            Some(b"A".to_vec())
        );
        assert_eq!(o.stat("/lib").unwrap().unwrap().kind, NodeKind::Dir);
        assert_eq!(o.lstat("/lib").unwrap().unwrap().kind, NodeKind::Symlink);
        assert_eq!(o.stat("/").unwrap().unwrap().kind, NodeKind::Dir);
        // Writing through a link lands on the link's target.
        let mut c: &[u8] = b"B";
        o.create_file(
            "/lib/systemd/system/b.service",
            &mut c,
            1,
            NodeAttrs::root(0o644, 0),
        )
        .unwrap();
        assert_eq!(o.changed_paths(), ["/usr/lib/systemd/system/b.service"]);
        let mut c: &[u8] = b"B";
        assert!(matches!(
            o.create_file(
                "/usr/lib/systemd/system/b.service",
                &mut c,
                1,
                NodeAttrs::root(0o644, 0)
            ),
            Err(GuestFsError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn renamed_and_removed_directories() {
        let mut src = source();
        let mut o = Overlay::new(&mut src);
        o.rename("/etc/udev", "/etc/udev2").unwrap();
        assert_eq!(
            o.read_file("/etc/udev2/rules.d/70-persistent-net.rules", 10)
                .unwrap(),
            Some(b"R".to_vec())
        );
        assert!(o.stat("/etc/udev/rules.d").unwrap().is_none());
        // Replace the /lib link by a real (opaque) directory: the source's /usr/lib
        // content must not show through it.
        o.remove("/lib").unwrap();
        o.mkdir_p("/lib/systemd", NodeAttrs::root(0o755, 0))
            .unwrap();
        assert_eq!(o.read_dir("/lib/systemd", 10).unwrap().unwrap(), vec![]);
        assert!(o.stat("/lib/systemd/system/a.service").unwrap().is_none());
        assert!(matches!(
            o.remove("/etc"),
            Err(GuestFsError::IsADirectory { .. })
        ));
    }
}
