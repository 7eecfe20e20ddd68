//! The conversion report: everything the converter changed in the guest, why, and where
//! the original was kept. Serializable so that the CLI can print it and write JSON.

/// One change made to the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Which step made it ("fstab", "console", "network", "modules", "graft", "boot", …).
    pub step: String,
    /// The guest path changed or created.
    pub path: String,
    /// What was done, in a sentence.
    pub what: String,
    /// Why it was needed, in a sentence.
    pub why: String,
    /// Where the original was kept (a guest path), when one existed.
    pub backup: Option<String>,
}

/// Everything a conversion did and noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Changes to the guest, in the order they were made.
    pub changes: Vec<Change>,
    /// Things the user should know that did not stop the conversion.
    pub warnings: Vec<String>,
    /// What the fixups changed in each guest file, as unified diffs, in the order the
    /// files were first changed (see [`crate::fixups::diff`]).
    pub diffs: Vec<FileDiff>,
}

/// How a guest file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileDiffKind {
    /// A new file or link.
    Created,
    /// Its content (or mode) changed in place.
    Edited,
    /// Removed.
    Deleted,
    /// Moved aside to a new name (the rename is its backup).
    Renamed,
    /// A new copy of a file as it was before it was edited (its backup).
    Copied,
}

/// The change of one guest file, as a unified diff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileDiff {
    /// What happened to it.
    pub kind: FileDiffKind,
    /// The guest path before (`None` for a created file).
    pub old_path: Option<String>,
    /// The guest path after (`None` for a deleted file).
    pub new_path: Option<String>,
    /// True when the content is not UTF-8 text (or too large to read), so the diff says
    /// only that it differs.
    pub binary: bool,
    /// The diff in git's extended unified format (`diff --git a/… b/…`, mode, rename and
    /// copy lines, hunks with 3 lines of context), each line ending in `\n`.
    pub unified: String,
}

impl Report {
    /// Record a change.
    pub fn change(
        &mut self,
        step: &str,
        path: &str,
        what: impl Into<String>,
        why: impl Into<String>,
        backup: Option<String>,
    ) {
        self.changes.push(Change {
            step: step.into(),
            path: path.into(),
            what: what.into(),
            why: why.into(),
            backup,
        });
    }

    /// Record a warning.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}
