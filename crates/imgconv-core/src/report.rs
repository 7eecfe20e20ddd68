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
