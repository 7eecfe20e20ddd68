//! Paths in JSON reports. A Unix path is any bytes but a JSON string is Unicode, and
//! serde refuses a path that is not UTF-8; reports write such paths lossily (each invalid
//! sequence as U+FFFD) instead of failing after the work is done.
//!
//! ```text
//! #[serde(serialize_with = "crate::serde_path::lossy")]
//! pub image: PathBuf,
//! ```

use std::path::{Path, PathBuf};

/// Serialize a path as a string, lossily if it is not UTF-8.
pub fn lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`lossy`] for an optional path (`null` when absent).
pub fn lossy_opt<S: serde::Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => lossy(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    #[derive(serde::Serialize)]
    struct Report {
        #[serde(serialize_with = "super::lossy")]
        path: PathBuf,
        #[serde(serialize_with = "super::lossy_opt")]
        other: Option<PathBuf>,
    }

    #[test]
    fn non_utf8_paths_serialize_lossily() {
        let r = Report {
            path: PathBuf::from(OsStr::from_bytes(b"/a b/\xff\n.img")),
            other: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"path":"/a b/\ufffd\n.img","other":null}"#.replace("\\ufffd", "\u{fffd}")
        );
    }
}
