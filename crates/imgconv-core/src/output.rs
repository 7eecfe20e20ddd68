//! The output image: written to a temporary file beside the destination and renamed
//! into place only when complete, so a failed, cancelled or interrupted conversion never
//! leaves a partial image under the requested name.
//!
//! The temporary file is created sparse (`set_len`), so no free space is needed up
//! front; space is consumed as blocks are written, and running out of it is reported
//! as [`OutputError::NoSpace`] naming the directory, not as a bare `ENOSPC`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Errors creating, writing or committing the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("the output directory {} does not exist", dir.display())]
    NoDirectory { dir: PathBuf },
    #[error("cannot create a temporary output file in {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on the filesystem holding {} (while writing {}): free some space there or choose another output directory", dir.display(), path.display())]
    NoSpace { dir: PathBuf, path: PathBuf },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// True for the errors that mean "the output filesystem is full" (or over quota).
fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The path an open file descriptor refers to (Linux `/proc/self/fd`), for messages.
fn path_of(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("the output image"))
}

/// Turn an I/O error from writing `dst` into an [`OutputError`]; `ENOSPC`/`EDQUOT`
/// become [`OutputError::NoSpace`] naming the output's directory.
pub fn write_error(dst: &File, action: &'static str, e: io::Error) -> OutputError {
    let path = path_of(dst);
    if is_no_space(&e) {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        OutputError::NoSpace { dir, path }
    } else {
        OutputError::Io {
            action,
            path,
            source: e,
        }
    }
}

/// A temporary output file beside its destination; removed on drop unless committed.
#[derive(Debug)]
pub struct TempOutput {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
    force: bool,
}

impl TempOutput {
    /// Create `.<name>.imgconv-XXXXXX` in the destination's directory, sized (sparsely)
    /// to `size` bytes. Fails early if `dest` exists and `force` is false.
    pub fn create(dest: &Path, size: u64, force: bool) -> Result<Self, OutputError> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(OutputError::NoDirectory { dir });
        }
        if !force && dest.symlink_metadata().is_ok() {
            return Err(OutputError::Exists {
                path: dest.to_path_buf(),
            });
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let prefix = format!(".{name}.imgconv-");
        let temp = {
            use std::os::unix::fs::PermissionsExt;
            tempfile::Builder::new()
                .prefix(&prefix)
                .rand_bytes(6)
                // 0666 filtered by the umask, like any file a program creates.
                .permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(&dir)
                .map_err(|source| OutputError::Create {
                    dir: dir.clone(),
                    source,
                })?
        };
        temp.as_file()
            .set_len(size)
            .map_err(|e| write_error(temp.as_file(), "cannot size", e))?;
        Ok(TempOutput {
            temp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// The open temporary file (read-write).
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// The temporary file's path (for external tools such as e2fsck and resize2fs).
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Where the image will appear on commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Rewrite the finished raw image as qcow2 into a second temporary file beside the
    /// destination, punching each copied range out of the raw one as it goes (so the two
    /// together hold the data about once), and return that file; the raw one is removed.
    pub fn into_qcow2(self, progress: &mut dyn crate::Progress) -> Result<TempOutput, OutputError> {
        let size = self
            .file()
            .metadata()
            .map_err(|e| write_error(self.file(), "cannot stat", e))?
            .len();
        let qcow2 = TempOutput::create(&self.dest, 0, true)?;
        crate::formats::qcow2_write::write(self.file(), size, qcow2.file(), true, progress)
            .map_err(|e| write_error(qcow2.file(), "cannot write the qcow2 image", e))?;
        Ok(TempOutput {
            temp: qcow2.temp,
            dest: self.dest.clone(),
            force: self.force,
        })
    }

    /// Flush the image to stable storage and rename it to the destination (refusing to
    /// replace an existing file unless `force` was given). Returns the destination.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| write_error(self.temp.as_file(), "cannot flush", e))?;
        let dest = self.dest.clone();
        let persisted = if self.force {
            self.temp.persist(&dest)
        } else {
            self.temp.persist_noclobber(&dest)
        };
        match persisted {
            Ok(_file) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // `e.file` is dropped here, which removes the temporary file.
                return Err(OutputError::Exists { path: dest });
            }
            Err(e) => {
                return Err(OutputError::Io {
                    action: "cannot rename the finished image to",
                    path: dest,
                    source: e.error,
                })
            }
        }
        // Make the rename itself durable.
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn temp_is_sparse_beside_dest_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 1 << 30, false).unwrap();
        let tmp = out.path().to_path_buf();
        assert_eq!(tmp.parent(), Some(dir.path()));
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".kvm.img.imgconv-"));
        let m = std::fs::metadata(&tmp).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(m.blocks() * 512 < 1 << 20, "sparse: {} blocks", m.blocks());
        drop(out);
        assert!(!tmp.exists(), "temp file removed on drop");
        assert!(!dest.exists());
    }

    #[test]
    fn commit_renames_and_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 4096, false).unwrap();
        let tmp = out.path().to_path_buf();
        assert_eq!(out.commit().unwrap(), dest);
        assert!(dest.exists() && !tmp.exists());

        assert!(matches!(
            TempOutput::create(&dest, 4096, false),
            Err(OutputError::Exists { .. })
        ));
        // Appeared between create and commit: still refused, temp removed.
        std::fs::remove_file(&dest).unwrap();
        let out = TempOutput::create(&dest, 8192, false).unwrap();
        let tmp = out.path().to_path_buf();
        std::fs::write(&dest, b"someone else's").unwrap();
        assert!(matches!(out.commit(), Err(OutputError::Exists { .. })));
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's");

        let out = TempOutput::create(&dest, 8192, true).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 8192);
    }

    #[test]
    fn no_space_names_the_output_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kvm.img");
        let out = TempOutput::create(&dest, 4096, false).unwrap();
        let e = write_error(
            out.file(),
            "cannot write",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        match &e {
            OutputError::NoSpace { dir: d, path } => {
                assert_eq!(d, dir.path());
                assert_eq!(path, out.path());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().contains("no space left")
                && e.to_string().contains(&dir.path().display().to_string())
        );
        let other = write_error(
            out.file(),
            "cannot write",
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(other, OutputError::Io { .. }));
    }

    #[test]
    fn missing_directory_is_named() {
        let e =
            TempOutput::create(Path::new("/nonexistent-imgconv-dir/x.img"), 1, false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-imgconv-dir"), "{e}");
    }
}
