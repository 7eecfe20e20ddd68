//! Shared mechanics of the fixups: reading a config file, keeping the original, rewriting
//! or moving aside with a report entry, and splitting config lines into fields without
//! losing their whitespace.

use super::{At, FixupError};
use crate::guestfs::NodeKind;
use crate::guestfs::{split_parent, GuestFs, NodeAttrs};
use crate::report::Report;

/// Suffix of every backup the fixups keep: `/etc/fstab` → `/etc/fstab.imgconv-orig`.
///
/// Links moved aside inside a directory whose *every* entry is read by name (systemd
/// `*.wants/`, upstart's old `/etc/event.d/`) get a hidden name instead,
/// `.<name>.imgconv-orig` in the same directory: systemd skips dot-files there silently
/// (`hidden_or_backup_file`), while any other name makes it log "is not a valid unit
/// name" on every boot.
pub const BACKUP_SUFFIX: &str = ".imgconv-orig";

/// Prefix of a line the fixups commented out.
pub(crate) const COMMENT_PREFIX: &str = "# imgconv: ";

/// Largest config file the fixups read whole (a bigger /etc/fstab is not a config file).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most backups of one file (`.imgconv-orig`, `.imgconv-orig.2`, …).
const MAX_BACKUPS: u32 = 100;

/// Join a directory and a name into a guest path.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The content of a regular file (following the guest's links), or `None` when it is
/// absent, a dangling link or not a regular file.
pub(crate) fn read_config(
    guest: &mut dyn GuestFs,
    step: &'static str,
    path: &str,
) -> Result<Option<Vec<u8>>, FixupError> {
    match guest.stat(path).at(step, path)? {
        Some(m) if m.kind == NodeKind::File => {
            guest.read_file(path, MAX_CONFIG_BYTES).at(step, path)
        }
        _ => Ok(None),
    }
}

/// True when something (even a dangling link) exists at `path` itself.
pub(crate) fn exists(
    guest: &mut dyn GuestFs,
    step: &'static str,
    path: &str,
) -> Result<bool, FixupError> {
    Ok(guest.lstat(path).at(step, path)?.is_some())
}

/// The first free backup name for `path`; `hidden` puts a dot in front of the name.
fn backup_name(
    guest: &mut dyn GuestFs,
    step: &'static str,
    path: &str,
    hidden: bool,
) -> Result<String, FixupError> {
    let base = match (hidden, split_parent(path)) {
        (true, Some((dir, name))) => join(&dir, &format!(".{name}{BACKUP_SUFFIX}")),
        _ => format!("{path}{BACKUP_SUFFIX}"),
    };
    for n in 1..=MAX_BACKUPS {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        if !exists(guest, step, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(FixupError::NoBackupName {
        step,
        path: path.to_string(),
    })
}

/// Copy `content` (the current content of `path`) to a new backup file with the
/// original's mode, owner and mtime. Returns the backup's path.
fn keep_copy(
    guest: &mut dyn GuestFs,
    step: &'static str,
    path: &str,
    content: &[u8],
    hidden: bool,
) -> Result<String, FixupError> {
    let meta = guest
        .stat(path)
        .at(step, path)?
        .ok_or_else(|| FixupError::Guest {
            step,
            path: path.to_string(),
            source: crate::guestfs::GuestFsError::NotFound { path: path.into() },
        })?;
    let backup = backup_name(guest, step, path, hidden)?;
    let attrs = NodeAttrs {
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime: meta.mtime,
    };
    let mut reader = content;
    guest
        .create_file(&backup, &mut reader, content.len() as u64, attrs)
        .at(step, &backup)?;
    Ok(backup)
}

/// Replace the content of `path` (currently `old`) with `new`, keeping the original as a
/// backup and recording the change. Does nothing when they are equal. Returns whether it
/// changed the file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rewrite(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    old: &[u8],
    new: &[u8],
    what: impl Into<String>,
    why: impl Into<String>,
) -> Result<bool, FixupError> {
    rewrite_as(guest, report, step, path, old, new, what, why, false)
}

/// [`rewrite`], the backup under a hidden name (`.<name>.imgconv-orig`, see
/// [`BACKUP_SUFFIX`]) when `hidden`: for directories whose program reads every file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rewrite_as(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    old: &[u8],
    new: &[u8],
    what: impl Into<String>,
    why: impl Into<String>,
    hidden: bool,
) -> Result<bool, FixupError> {
    if old == new {
        return Ok(false);
    }
    let backup = keep_copy(guest, step, path, old, hidden)?;
    guest.replace_content(path, new).at(step, path)?;
    report.change(step, path, what, why, Some(backup));
    Ok(true)
}

/// [`rewrite`] `path` with what an edit made of it (`old`): the edits, joined, say what
/// changed; the edit's warnings go to the report. Returns whether it changed the file.
pub(crate) fn apply_edit(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    old: &[u8],
    edited: Edited,
    why: &str,
) -> Result<bool, FixupError> {
    let changed = rewrite(
        guest,
        report,
        step,
        path,
        old,
        &edited.text,
        edited.edits.join("; "),
        why,
    )?;
    for w in edited.warnings {
        report.warn(w);
    }
    Ok(changed)
}

/// Edit the configuration file `path` if the guest has one (a regular file, see
/// [`read_config`]): run `edit` on its content and [`apply_edit`] the result.
pub(crate) fn edit_config(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    why: &str,
    edit: impl FnOnce(&[u8]) -> Edited,
) -> Result<(), FixupError> {
    let Some(old) = read_config(guest, step, path)? else {
        return Ok(());
    };
    let edited = edit(&old);
    apply_edit(guest, report, step, path, &old, edited, why)?;
    Ok(())
}

/// Rename `path` to its backup name (the rename is the backup) and record it.
pub(crate) fn move_aside(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    hidden: bool,
    what: impl Into<String>,
    why: impl Into<String>,
) -> Result<String, FixupError> {
    let backup = backup_name(guest, step, path, hidden)?;
    guest.rename(path, &backup).at(step, path)?;
    report.change(step, path, what, why, Some(backup.clone()));
    Ok(backup)
}

/// Create a new regular file (its directory must exist) and record it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create(
    guest: &mut dyn GuestFs,
    report: &mut Report,
    step: &'static str,
    path: &str,
    content: &[u8],
    attrs: NodeAttrs,
    what: impl Into<String>,
    why: impl Into<String>,
) -> Result<(), FixupError> {
    let mut reader = content;
    guest
        .create_file(path, &mut reader, content.len() as u64, attrs)
        .at(step, path)?;
    report.change(step, path, what, why, None);
    Ok(())
}

/// The lines of a file, each with its `\n` (the last one may lack it).
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}

/// A line without its `\n`, and the `\n` (empty on an unterminated last line).
pub(crate) fn split_eol(line: &[u8]) -> (&[u8], &[u8]) {
    match line.strip_suffix(b"\n") {
        Some(text) => (text, b"\n"),
        None => (line, b""),
    }
}

/// Append `extra` to `out`, first terminating an unterminated last line.
pub(crate) fn append_lines(out: &mut Vec<u8>, extra: &str) {
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(extra.as_bytes());
}

/// True for a line that is blank or a `#` comment.
pub(crate) fn is_blank_or_comment(text: &str) -> bool {
    let t = text.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The result of editing one file's text.
#[derive(Debug, Default)]
pub(crate) struct Edited {
    pub(crate) text: Vec<u8>,
    /// One sentence per edit, for the report.
    pub(crate) edits: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

impl Edited {
    pub(crate) fn keep(&mut self, line: &[u8]) {
        self.text.extend_from_slice(line);
    }

    pub(crate) fn push(&mut self, text: &str, eol: &[u8]) {
        self.text.extend_from_slice(text.as_bytes());
        self.text.extend_from_slice(eol);
    }

    /// Comment out `text` with a note line above it saying why.
    pub(crate) fn disable(&mut self, text: &str, eol: &[u8], why: &str) {
        let eol: &[u8] = if eol.is_empty() { b"\n" } else { eol };
        self.push(
            &format!("{COMMENT_PREFIX}next entry disabled: {why}"),
            b"\n",
        );
        self.push(&format!("{COMMENT_PREFIX}{text}"), eol);
    }
}

/// A config line split into whitespace-separated fields, remembering the exact whitespace
/// so that changing one field leaves the rest of the line byte-for-byte as it was.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    lead: String,
    /// Each field with the whitespace that follows it.
    items: Vec<(String, String)>,
}

impl Fields {
    pub(crate) fn parse(text: &str) -> Self {
        let lead_len = text.len() - text.trim_start_matches(is_space).len();
        let (lead, mut rest) = text.split_at(lead_len);
        let mut items = Vec::new();
        while !rest.is_empty() {
            let field_len = rest.find(is_space).unwrap_or(rest.len());
            let (field, after) = rest.split_at(field_len);
            let ws_len = after.len() - after.trim_start_matches(is_space).len();
            let (ws, next) = after.split_at(ws_len);
            items.push((field.to_string(), ws.to_string()));
            rest = next;
        }
        Fields {
            lead: lead.to_string(),
            items,
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        self.items.get(i).map(|(f, _)| f.as_str())
    }

    pub(crate) fn set(&mut self, i: usize, value: &str) {
        if let Some(item) = self.items.get_mut(i) {
            item.0 = value.to_string();
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut s = self.lead.clone();
        for (f, ws) in &self.items {
            s.push_str(f);
            s.push_str(ws);
        }
        s
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::{MemFs, TreeRead};

    #[test]
    fn fields_keep_whitespace() {
        let line = "  /dev/xvda2\t/   ext3\terrors=remount-ro 0\t1 ";
        let mut f = Fields::parse(line);
        assert_eq!((f.get(5), f.get(6)), (Some("1"), None));
        assert_eq!(f.render(), line);
        f.set(0, "UUID=x");
        assert_eq!(f.render(), "  UUID=x\t/   ext3\terrors=remount-ro 0\t1 ");
    }

    #[test]
    fn backups_never_overwrite() {
        let mut fs = MemFs::new()
            .with_file("/etc/a", "new")
            .with_file("/etc/a.imgconv-orig", "first");
        let mut report = Report::default();
        rewrite(
            &mut fs,
            &mut report,
            "t",
            "/etc/a",
            b"new",
            b"newer",
            "w",
            "y",
        )
        .unwrap();
        assert_eq!(fs.text("/etc/a.imgconv-orig").as_deref(), Some("first"));
        assert_eq!(fs.text("/etc/a.imgconv-orig.2").as_deref(), Some("new"));
        assert_eq!(fs.text("/etc/a").as_deref(), Some("newer"));
        assert_eq!(
            report.changes[0].backup.as_deref(),
            Some("/etc/a.imgconv-orig.2")
        );
    }

    #[test]
    fn hidden_backup_name() {
        let mut fs = MemFs::new().with_symlink("/etc/x.wants/a.service", "/lib/a.service");
        let mut report = Report::default();
        let b = move_aside(
            &mut fs,
            &mut report,
            "t",
            "/etc/x.wants/a.service",
            true,
            "w",
            "y",
        )
        .unwrap();
        assert_eq!(b, "/etc/x.wants/.a.service.imgconv-orig");
        assert_eq!(fs.read_link(&b).unwrap().as_deref(), Some("/lib/a.service"));
    }
}
