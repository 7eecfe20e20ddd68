//! What the fixups changed, file by file, as unified diffs.
//!
//! [`Recorder`] wraps the [`GuestFs`] the fixups write to (the libext2fs engine in a real
//! run, the [`Overlay`](super::dry_run::Overlay) in a dry run) and keeps the state of every
//! path before its first change; [`Recorder::finish`] reads the state after and turns each
//! difference into a [`FileDiff`]. The same code sees both runs, so the dry run's diff is the
//! real run's.
//!
//! The text is git's extended unified format, which `patch` and `git apply` read:
//! `diff --git a/<path> b/<path>` headers, `new file mode` / `deleted file mode` lines, a
//! file moved aside as `rename from` / `rename to`, a backup copy as `copy from` /
//! `copy to`, hunks with 3 lines of context (computed by the `similar` crate), a symlink's
//! content as its target, and `Binary files … differ` for content that is not UTF-8 text
//! or is larger than the fixups ever read.

use super::edit::{BACKUP_SUFFIX, MAX_CONFIG_BYTES};
use crate::guestfs::{split_parent, DirItem, GuestFs, GuestFsError, NodeAttrs, NodeKind, TreeRead};
use crate::report::{FileDiff, FileDiffKind};
use std::collections::HashMap;
use std::io::Read;

/// A path's state, as far as a diff shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Absent,
    /// A regular file: its permission bits and content (`None` when larger than the
    /// fixups read).
    File(u16, Option<Vec<u8>>),
    Symlink(String),
    /// A directory or special file: a diff does not show it.
    Other,
}

impl State {
    /// git's mode for the node (`100644`, `120000`).
    fn git_mode(&self) -> Option<String> {
        match self {
            State::File(mode, _) => Some(format!("100{:03o}", mode & 0o777)),
            State::Symlink(_) => Some("120000".to_string()),
            _ => None,
        }
    }

    /// The content a diff compares: text, or `None` for binary or unread content.
    fn text(&self) -> Option<&str> {
        match self {
            State::File(_, Some(data)) if !data.contains(&0) => std::str::from_utf8(data).ok(),
            State::File(..) => None,
            State::Symlink(t) => Some(t),
            State::Absent | State::Other => Some(""),
        }
    }

    fn shown(&self) -> bool {
        matches!(self, State::File(..) | State::Symlink(_))
    }
}

/// One path the fixups changed: its state before, and whether changes follow its final
/// symlink (an edit of a file's content does, a rename or removal does not).
#[derive(Debug)]
struct Touched {
    path: String,
    follow: bool,
    before: State,
}

/// A [`GuestFs`] that passes everything to `inner` and remembers what each changed path
/// was before; see the module documentation.
pub struct Recorder<'a> {
    inner: &'a mut dyn GuestFs,
    touched: Vec<Touched>,
    index: HashMap<String, usize>,
    renames: Vec<(String, String)>,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("touched", &self.touched)
            .field("renames", &self.renames)
            .finish()
    }
}

/// The state of `path` in `fs`.
fn state_of(fs: &mut dyn GuestFs, path: &str, follow: bool) -> Result<State, GuestFsError> {
    let meta = if follow {
        fs.stat(path)?
    } else {
        fs.lstat(path)?
    };
    Ok(match meta {
        None => State::Absent,
        Some(m) if m.kind == NodeKind::File => {
            if m.len > MAX_CONFIG_BYTES {
                State::File(m.mode, None)
            } else {
                match fs.read_file(path, MAX_CONFIG_BYTES) {
                    Ok(data) => State::File(m.mode, data),
                    Err(GuestFsError::TooLarge { .. }) => State::File(m.mode, None),
                    Err(e) => return Err(e),
                }
            }
        }
        Some(m) if m.kind == NodeKind::Symlink => {
            State::Symlink(fs.read_link(path)?.unwrap_or_default())
        }
        Some(_) => State::Other,
    })
}

impl<'a> Recorder<'a> {
    /// Record the changes made through `inner`.
    pub fn new(inner: &'a mut dyn GuestFs) -> Self {
        Recorder {
            inner,
            touched: Vec::new(),
            index: HashMap::new(),
            renames: Vec::new(),
        }
    }

    /// Remember `path`'s state unless it was changed before.
    fn touch(&mut self, path: &str, follow: bool) -> Result<(), GuestFsError> {
        if self.index.contains_key(path) {
            return Ok(());
        }
        let before = state_of(self.inner, path, follow)?;
        self.index.insert(path.to_string(), self.touched.len());
        self.touched.push(Touched {
            path: path.to_string(),
            follow,
            before,
        });
        Ok(())
    }

    /// One diff per changed file, in the order the files were first changed.
    pub fn finish(self) -> Result<Vec<FileDiff>, GuestFsError> {
        let Recorder {
            inner,
            touched,
            index,
            renames,
        } = self;
        let mut after = Vec::with_capacity(touched.len());
        for t in &touched {
            after.push(state_of(inner, &t.path, t.follow)?);
        }
        let mut done = vec![false; touched.len()];
        let mut diffs = Vec::new();
        for (i, t) in touched.iter().enumerate() {
            if done[i] {
                continue;
            }
            done[i] = true;
            // Moved aside: the rename first, then whatever now stands at the old name.
            if let Some((_, to)) = renames.iter().find(|(from, _)| *from == t.path) {
                if let Some(&j) = index.get(to) {
                    if !done[j] && t.before.shown() && touched[j].before == State::Absent {
                        done[j] = true;
                        diffs.push(render(
                            FileDiffKind::Renamed,
                            &t.path,
                            &t.before,
                            to,
                            &after[j],
                        ));
                        if after[i] != State::Absent {
                            diffs.extend(changed(&t.path, &State::Absent, &after[i]));
                        }
                        continue;
                    }
                }
            }
            // A backup: a new copy of a file that was edited.
            if t.before == State::Absent {
                if let Some(j) = backup_of(&t.path, &index) {
                    let original = &touched[j].before;
                    if original.shown() && *original == after[i] {
                        diffs.push(render(
                            FileDiffKind::Copied,
                            &touched[j].path,
                            original,
                            &t.path,
                            &after[i],
                        ));
                        continue;
                    }
                }
            }
            diffs.extend(changed(&t.path, &t.before, &after[i]));
        }
        Ok(diffs)
    }
}

/// The index of the path whose backup `path` is named (`<path>.imgconv-orig[.N]` or the
/// hidden `.<name>.imgconv-orig[.N]` beside it), if it was changed.
fn backup_of(path: &str, index: &HashMap<String, usize>) -> Option<usize> {
    let at = path.rfind(BACKUP_SUFFIX)?;
    let tail = &path[at + BACKUP_SUFFIX.len()..];
    let numbered = tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !numbered {
        return None;
    }
    let stem = &path[..at];
    if let Some(&j) = index.get(stem) {
        return Some(j);
    }
    let (dir, name) = split_parent(stem)?;
    let name = name.strip_prefix('.')?;
    index.get(&super::edit::join(&dir, name)).copied()
}

/// The diffs between two states of one path: none when equal; a node of another kind is
/// a removal and a creation.
fn changed(path: &str, before: &State, after: &State) -> Vec<FileDiff> {
    if before == after || (!before.shown() && !after.shown()) {
        return Vec::new();
    }
    match (before.shown(), after.shown()) {
        (false, true) => vec![render(FileDiffKind::Created, path, before, path, after)],
        (true, false) => vec![render(FileDiffKind::Deleted, path, before, path, after)],
        _ if std::mem::discriminant(before) != std::mem::discriminant(after) => vec![
            render(FileDiffKind::Deleted, path, before, path, &State::Absent),
            render(FileDiffKind::Created, path, &State::Absent, path, after),
        ],
        _ => vec![render(FileDiffKind::Edited, path, before, path, after)],
    }
}

/// A guest path without its leading `/`, for the `a/` and `b/` names.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The diff of one file, `old` at `from` becoming `new` at `to`.
fn render(kind: FileDiffKind, from: &str, old: &State, to: &str, new: &State) -> FileDiff {
    use std::fmt::Write;
    let (a, b) = (format!("a/{}", rel(from)), format!("b/{}", rel(to)));
    let mut text = format!("diff --git {a} {b}\n");
    let old_name = if kind == FileDiffKind::Created {
        "/dev/null".to_string()
    } else {
        a.clone()
    };
    let new_name = if kind == FileDiffKind::Deleted {
        "/dev/null".to_string()
    } else {
        b.clone()
    };
    match kind {
        FileDiffKind::Created => {
            let _ = writeln!(text, "new file mode {}", new.git_mode().unwrap_or_default());
        }
        FileDiffKind::Deleted => {
            let _ = writeln!(
                text,
                "deleted file mode {}",
                old.git_mode().unwrap_or_default()
            );
        }
        FileDiffKind::Edited => {
            if old.git_mode() != new.git_mode() {
                let _ = writeln!(text, "old mode {}", old.git_mode().unwrap_or_default());
                let _ = writeln!(text, "new mode {}", new.git_mode().unwrap_or_default());
            }
        }
        FileDiffKind::Renamed | FileDiffKind::Copied => {
            let verb = if kind == FileDiffKind::Renamed {
                "rename"
            } else {
                "copy"
            };
            if old == new {
                text.push_str("similarity index 100%\n");
            }
            let _ = writeln!(text, "{verb} from {}", rel(from));
            let _ = writeln!(text, "{verb} to {}", rel(to));
        }
    }
    let same_content = match (old, new) {
        (State::File(_, x), State::File(_, y)) => x == y && x.is_some(),
        (State::Symlink(x), State::Symlink(y)) => x == y,
        _ => false,
    };
    let binary = !same_content && (old.text().is_none() || new.text().is_none());
    if binary {
        let _ = writeln!(text, "Binary files {old_name} and {new_name} differ");
    } else if !same_content {
        let (x, y) = (old.text().unwrap_or(""), new.text().unwrap_or(""));
        let diff = similar::TextDiff::from_lines(x, y);
        let _ = write!(
            text,
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&old_name, &new_name)
        );
    }
    let path = |s: &State, p: &str| s.shown().then(|| p.to_string());
    FileDiff {
        kind,
        old_path: path(old, from),
        new_path: path(new, to),
        binary,
        unified: text,
    }
}

impl TreeRead for Recorder<'_> {
    type Error = GuestFsError;

    fn lstat(&mut self, path: &str) -> Result<Option<crate::guestfs::NodeMeta>, GuestFsError> {
        self.inner.lstat(path)
    }

    fn stat(&mut self, path: &str) -> Result<Option<crate::guestfs::NodeMeta>, GuestFsError> {
        self.inner.stat(path)
    }

    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, GuestFsError> {
        self.inner.read_file(path, cap)
    }

    fn read_link(&mut self, path: &str) -> Result<Option<String>, GuestFsError> {
        self.inner.read_link(path)
    }

    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, GuestFsError> {
        self.inner.read_dir(path, cap)
    }
}

impl GuestFs for Recorder<'_> {
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        // Directories carry no content a diff shows; the files made in them do.
        self.inner.mkdir_p(path, attrs)
    }

    fn create_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        size: u64,
        attrs: NodeAttrs,
    ) -> Result<(), GuestFsError> {
        self.touch(path, false)?;
        self.inner.create_file(path, content, size, attrs)
    }

    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
        self.touch(path, true)?;
        self.inner.replace_content(path, content)
    }

    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        self.touch(path, false)?;
        self.inner.symlink(path, target, attrs)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        self.touch(from, false)?;
        self.touch(to, false)?;
        self.inner.rename(from, to)?;
        self.renames.push((from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.touch(path, false)?;
        self.inner.remove(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::MemFs;

    fn record(fs: &mut MemFs, f: impl FnOnce(&mut Recorder<'_>)) -> Vec<FileDiff> {
        let mut r = Recorder::new(fs);
        f(&mut r);
        r.finish().unwrap()
    }

    #[test]
    fn edit_with_backup_is_a_copy_and_a_hunk_with_three_lines_of_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let mut fs = MemFs::new().with_file("/etc/f", old);
        let diffs = record(&mut fs, |r| {
            let mut c = old.as_bytes();
            r.create_file(
                "/etc/f.imgconv-orig",
                &mut c,
                old.len() as u64,
                NodeAttrs::root(0o644, 0),
            )
            .unwrap();
            r.replace_content("/etc/f", b"1\n2\n3\n4\nFIVE\n6\n7\n8\n9\n")
                .unwrap();
        });
        let kinds: Vec<_> = diffs.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [FileDiffKind::Copied, FileDiffKind::Edited]);
        assert_eq!(
            diffs[1].unified,
            "diff --git a/etc/f b/etc/f\n--- a/etc/f\n+++ b/etc/f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+FIVE\n 6\n 7\n 8\n"
        );
        assert_eq!(
            diffs[0].unified,
            "diff --git a/etc/f b/etc/f.imgconv-orig\nsimilarity index 100%\ncopy from etc/f\ncopy to etc/f.imgconv-orig\n"
        );
    }

    #[test]
    fn created_moved_aside_removed_and_binary() {
        let mut fs = MemFs::new()
            .with_symlink("/etc/w/hvc0.service", "/lib/getty@.service")
            .with_file("/etc/gone", "x\n")
            .with_file("/etc/bin", "a\0b");
        let diffs = record(&mut fs, |r| {
            r.rename("/etc/w/hvc0.service", "/etc/w/.hvc0.service.imgconv-orig")
                .unwrap();
            r.symlink(
                "/etc/w/ttyS0.service",
                "/lib/getty@.service",
                NodeAttrs::root(0o777, 0),
            )
            .unwrap();
            let mut c: &[u8] = b"new\nfile";
            r.create_file("/etc/new", &mut c, 8, NodeAttrs::root(0o600, 0))
                .unwrap();
            r.remove("/etc/gone").unwrap();
            r.replace_content("/etc/bin", b"c\0d").unwrap();
        });
        let texts: Vec<&str> = diffs.iter().map(|d| d.unified.as_str()).collect();
        assert_eq!(
            texts,
            [
                "diff --git a/etc/w/hvc0.service b/etc/w/.hvc0.service.imgconv-orig\nsimilarity index 100%\nrename from etc/w/hvc0.service\nrename to etc/w/.hvc0.service.imgconv-orig\n",
                "diff --git a/etc/w/ttyS0.service b/etc/w/ttyS0.service\nnew file mode 120000\n--- /dev/null\n+++ b/etc/w/ttyS0.service\n@@ -0,0 +1 @@\n+/lib/getty@.service\n\\ No newline at end of file\n",
                "diff --git a/etc/new b/etc/new\nnew file mode 100600\n--- /dev/null\n+++ b/etc/new\n@@ -0,0 +1,2 @@\n+new\n+file\n\\ No newline at end of file\n",
                "diff --git a/etc/gone b/etc/gone\ndeleted file mode 100644\n--- a/etc/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n",
                "diff --git a/etc/bin b/etc/bin\nBinary files a/etc/bin and b/etc/bin differ\n",
            ]
        );
        assert!(diffs[4].binary);
        assert_eq!(diffs[0].old_path.as_deref(), Some("/etc/w/hvc0.service"));
        assert_eq!(
            diffs[0].new_path.as_deref(),
            Some("/etc/w/.hvc0.service.imgconv-orig")
        );
        assert_eq!(diffs[1].old_path, None);
        assert_eq!(diffs[3].new_path, None);
    }

    #[test]
    fn nothing_changed_is_no_diff() {
        let mut fs = MemFs::new().with_file("/etc/f", "same\n");
        let diffs = record(&mut fs, |r| {
            r.replace_content("/etc/f", b"same\n").unwrap();
        });
        assert!(diffs.is_empty());
    }
}
