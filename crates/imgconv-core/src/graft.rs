//! Grafting the donor kernel, initrd, modules and GRUB files into the guest.
//!
//! [`graft`] copies into the guest root filesystem, through [`GuestFs`]:
//!
//! - `/boot/vmlinuz-VER`, `/boot/initrd.img-VER`, and `/boot/config-VER`,
//!   `/boot/System.map-VER` when the donor has them;
//! - the whole `/lib/modules/VER` tree with the donor's modes, owners, mtimes and symlinks
//!   (`build`, `source`). The path is resolved inside the guest, so on a merged-usr guest
//!   (`/lib -> usr/lib`) the tree lands in `/usr/lib/modules/VER`;
//! - the GRUB platform modules into `/boot/grub/<platform>/`: every `*.mod`, `*.lst` and
//!   `modinfo.sh` (the `*.img` files are boot code: writing `boot.img`/`core.img` is the boot
//!   stage's job).
//!
//! File content is streamed from the donor ([`Donor::open_file`]), never held whole.
//! Nothing of the guest is lost: an existing node that differs from what the graft wants
//! (content, mode, owner, kind or symlink target) is renamed to `<path>.imgconv-orig`
//! (`.imgconv-orig.1`, … when that name is taken) and listed in the report; an identical
//! one is left alone, so a second graft changes nothing.

use crate::donor::{Donor, DonorError, DonorFile, DonorKernel, ModulesTree, TreeEntry};
use crate::grub_files::GrubPlatformFiles;
use crate::guestfs::{GuestFs, GuestFsError, NodeAttrs};
use crate::guestfs::{NodeKind, NodeMeta};
use crate::progress::{Progress, Stage};
use crate::report::Report;
use std::io::Read;

/// Report step name for every change the graft makes.
pub const STEP: &str = "graft";
/// Suffix of the name an existing, different guest file is kept under.
pub const BACKUP_SUFFIX: &str = ".imgconv-orig";
/// Existing files larger than this are not compared with the donor's content (that would
/// hold them in memory); they are treated as different and kept as a backup.
pub const MAX_COMPARE_BYTES: u64 = 512 << 20;
/// Most numbered backup names tried (`.imgconv-orig.1` … `.99`).
const MAX_BACKUP_NAMES: usize = 100;

/// Everything that can go wrong during the graft.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraftError {
    /// A guest filesystem operation failed.
    #[error("grafting into the guest: {0}")]
    Guest(#[from] GuestFsError),
    /// Reading the donor failed.
    #[error("grafting from the donor: {0}")]
    Donor(#[from] DonorError),
    /// Every backup name for a guest file is taken.
    #[error(
        "cannot keep the guest's {path}: {path}{BACKUP_SUFFIX} and its numbered variants all exist"
    )]
    NoBackupName { path: String },
    /// The caller asked to stop.
    #[error("cancelled")]
    Cancelled,
}

/// A guest node that differed and was kept under another name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backup {
    /// The path the graft wrote.
    pub path: String,
    /// Where the guest's original now is.
    pub backup: String,
}

/// What a graft did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraftSummary {
    /// The grafted kernel's version.
    pub kernel_version: String,
    /// Guest paths of the boot files (`/boot/vmlinuz-VER`, `/boot/initrd.img-VER`) and of
    /// the modules tree, for the boot stage's grub.cfg.
    pub vmlinuz: String,
    pub initrd: String,
    pub modules_dir: String,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Nodes already present and identical, left alone.
    pub unchanged: u64,
    /// Guest nodes that differed and were renamed aside.
    pub backups: Vec<Backup>,
    /// Every guest path created, in order.
    pub written: Vec<String>,
    /// Donor nodes not copied (device nodes, FIFOs, sockets), with why.
    pub skipped: Vec<String>,
}

/// Whether a GRUB platform file belongs in `/boot/grub/<platform>/`: the modules, their
/// lists and `modinfo.sh` (GRUB's own `grub-install` copies these); `efiemu*.o` too when a
/// platform has them. Images are the boot stage's.
pub fn is_grub_runtime_file(name: &str) -> bool {
    name == "modinfo.sh"
        || (name.len() > 4 && (name.ends_with(".mod") || name.ends_with(".lst")))
        || (name.starts_with("efiemu") && name.ends_with(".o"))
}

/// Where the content of a file to write comes from.
enum Content<'a> {
    Donor(DonorFile),
    /// A file of the kernel's modules tree.
    Tree(&'a ModulesTree, &'a TreeEntry),
    Bytes(&'a [u8]),
}

/// Graft `kernel` (from `donor`) and the GRUB files into `guest`. See the module docs.
pub fn graft(
    donor: &Donor,
    kernel: &DonorKernel,
    guest: &mut dyn GuestFs,
    grub: Option<&GrubPlatformFiles>,
    report: &mut Report,
    progress: &mut dyn Progress,
) -> Result<GraftSummary, GraftError> {
    let v = &kernel.version;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let grub_names: Vec<&String> = grub
        .map(|g| g.files.keys().filter(|n| is_grub_runtime_file(n)).collect())
        .unwrap_or_default();
    let total = kernel.file_count() - kernel.modules.files
        + 1
        + kernel.modules.entries.len() as u64
        + grub_names.len() as u64;
    progress.stage(Stage::Graft, Some(total));

    let mut g = Grafter {
        guest,
        donor,
        report,
        progress,
        done: 0,
        sum: GraftSummary {
            kernel_version: v.clone(),
            vmlinuz: format!("/boot/vmlinuz-{v}"),
            initrd: format!("/boot/initrd.img-{v}"),
            modules_dir: format!("/lib/modules/{v}"),
            ..GraftSummary::default()
        },
    };
    let dir_attrs = NodeAttrs::root(0o755, now);

    // Boot files.
    g.ensure_parent("/boot", dir_attrs)?;
    let boot_files = [
        (
            Some(&kernel.vmlinuz),
            g.sum.vmlinuz.clone(),
            "the donor's kernel",
        ),
        (
            Some(&kernel.initrd),
            g.sum.initrd.clone(),
            "the donor's initrd (with the drivers for HVM disks and network)",
        ),
        (
            kernel.config.as_ref(),
            format!("/boot/config-{v}"),
            "the donor kernel's build configuration",
        ),
        (
            kernel.system_map.as_ref(),
            format!("/boot/System.map-{v}"),
            "the donor kernel's symbol map",
        ),
    ];
    for (file, dest, what) in boot_files {
        let Some(file) = file else { continue };
        g.check_cancel()?;
        let attrs = attrs_of(&file.meta);
        let placed = g.place_file(&dest, attrs, file.meta.len, Content::Donor(file.clone()))?;
        if let Some(backup) = placed {
            g.report.change(
                STEP,
                &dest,
                format!(
                    "added {what}, version {v}, from {}",
                    donor.describe(&file.at)
                ),
                "the guest's Xen kernel cannot boot on HVM/KVM; the donor's kernel replaces it",
                backup,
            );
        }
        g.tick();
    }

    // Modules tree.
    let modules_dir = g.sum.modules_dir.clone();
    g.ensure_parent("/lib/modules", dir_attrs)?;
    g.check_cancel()?;
    let before = (g.sum.files, g.sum.dirs, g.sum.symlinks, g.sum.bytes);
    let root_placed = g.place_dir(&modules_dir, attrs_of(&kernel.modules.root_meta))?;
    g.tick();
    let mut tree_backups = Vec::new();
    for entry in &kernel.modules.entries {
        g.check_cancel()?;
        let dest = format!("{modules_dir}/{}", entry.rel);
        let placed = g.place_tree_entry(kernel, entry, &dest)?;
        if let Some(Some(b)) = placed {
            tree_backups.push((dest, b));
        }
        g.tick();
    }
    let (files, dirs, symlinks, bytes) = (
        g.sum.files - before.0,
        g.sum.dirs - before.1,
        g.sum.symlinks - before.2,
        g.sum.bytes - before.3,
    );
    if root_placed.is_some() || files + dirs + symlinks > 0 {
        g.report.change(
            STEP,
            &modules_dir,
            format!(
                "added the donor's modules for kernel {v} from {} ({files} files, {dirs} directories, {symlinks} symlinks, {bytes} bytes)",
                donor.describe(&kernel.modules.root)
            ),
            "the donor kernel loads its drivers from this tree",
            root_placed.flatten(),
        );
    }
    for (dest, backup) in tree_backups {
        g.report.change(
            STEP,
            &dest,
            "replaced with the donor's file of the same name",
            "part of the donor kernel's modules tree",
            Some(backup),
        );
    }

    // GRUB runtime files.
    if let Some(grub) = grub {
        let dir = format!("/boot/grub/{}", grub.platform);
        g.ensure_parent("/boot/grub", dir_attrs)?;
        g.ensure_parent(&dir, dir_attrs)?;
        let mut written = 0u64;
        for name in &grub_names {
            g.check_cancel()?;
            let data = &grub.files[*name];
            let dest = format!("{dir}/{name}");
            let count_before = g.sum.files;
            let placed = g.place_file(
                &dest,
                NodeAttrs::root(0o644, now),
                data.len() as u64,
                Content::Bytes(data),
            )?;
            written += g.sum.files - count_before;
            if let Some(Some(backup)) = placed {
                g.report.change(
                    STEP,
                    &dest,
                    "replaced with the GRUB module of the build that boots the disk",
                    "GRUB modules must match the core image that loads them",
                    Some(backup),
                );
            }
            g.tick();
        }
        if written > 0 {
            g.report.change(
                STEP,
                &dir,
                format!("added {written} GRUB {} modules and lists", grub.platform),
                "GRUB loads its modules from here at boot",
                None,
            );
        }
    }
    for s in &g.sum.skipped {
        g.report.warn(format!("graft: {s}"));
    }
    Ok(g.sum)
}

fn attrs_of(meta: &NodeMeta) -> NodeAttrs {
    NodeAttrs {
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime: meta.mtime,
    }
}

struct Grafter<'a> {
    guest: &'a mut dyn GuestFs,
    donor: &'a Donor,
    report: &'a mut Report,
    progress: &'a mut dyn Progress,
    done: u64,
    sum: GraftSummary,
}

/// `Some(backup)` when the node was written (with the backup name when an original was
/// kept), `None` when an identical node was already there.
type Placed = Option<Option<String>>;

impl Grafter<'_> {
    fn check_cancel(&self) -> Result<(), GraftError> {
        if self.progress.is_cancelled() {
            Err(GraftError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        self.progress.advance(self.done);
    }

    /// Make sure a directory the graft writes into exists (following the guest's
    /// symlinks, e.g. `/lib -> usr/lib`); a non-directory in the way is kept aside.
    fn ensure_parent(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GraftError> {
        match self.guest.stat(path)? {
            Some(m) if m.kind == NodeKind::Dir => Ok(()),
            Some(_) => {
                let backup = self.keep_aside(path)?;
                self.mkdir_counted(path, attrs)?;
                self.report.change(
                    STEP,
                    path,
                    "created a directory where the guest had something else",
                    "the donor kernel's files go here",
                    Some(backup),
                );
                Ok(())
            }
            None => {
                // The guest may lack a dangling symlink's target; lstat tells them apart.
                if self.guest.lstat(path)?.is_some() {
                    let backup = self.keep_aside(path)?;
                    self.report.change(
                        STEP,
                        path,
                        "created a directory in place of a dangling symlink",
                        "the donor kernel's files go here",
                        Some(backup),
                    );
                }
                self.mkdir_counted(path, attrs)
            }
        }
    }

    /// `mkdir -p`, counting and listing each directory it creates.
    fn mkdir_counted(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GraftError> {
        let mut missing = Vec::new();
        let mut prefix = String::new();
        for c in crate::guestfs::components(path) {
            prefix.push('/');
            prefix.push_str(c);
            if !missing.is_empty() || self.guest.stat(&prefix)?.is_none() {
                missing.push(prefix.clone());
            }
        }
        self.guest.mkdir_p(path, attrs)?;
        // Each new directory is a change to the guest, so the report names it (e.g.
        // /lib/modules in a guest that never had a kernel of its own).
        for dir in &missing {
            self.report.change(
                STEP,
                dir,
                "created the directory",
                "the donor kernel's files go here",
                None,
            );
        }
        self.sum.dirs += missing.len() as u64;
        self.sum.written.extend(missing);
        Ok(())
    }

    /// Rename the guest's `path` to the first free backup name and return that name.
    fn keep_aside(&mut self, path: &str) -> Result<String, GraftError> {
        let mut name = format!("{path}{BACKUP_SUFFIX}");
        for n in 1..=MAX_BACKUP_NAMES {
            if self.guest.lstat(&name)?.is_none() {
                self.guest.rename(path, &name)?;
                self.sum.backups.push(Backup {
                    path: path.to_string(),
                    backup: name.clone(),
                });
                return Ok(name);
            }
            name = format!("{path}{BACKUP_SUFFIX}.{n}");
        }
        Err(GraftError::NoBackupName {
            path: path.to_string(),
        })
    }

    fn place_tree_entry(
        &mut self,
        kernel: &DonorKernel,
        entry: &TreeEntry,
        dest: &str,
    ) -> Result<Placed, GraftError> {
        let attrs = attrs_of(&entry.meta);
        match entry.meta.kind {
            NodeKind::Dir => self.place_dir(dest, attrs),
            NodeKind::Symlink => {
                let target = entry.target.as_deref().unwrap_or_default();
                self.place_symlink(dest, target, attrs)
            }
            NodeKind::File => self.place_file(
                dest,
                attrs,
                entry.meta.len,
                Content::Tree(&kernel.modules, entry),
            ),
            other => {
                self.sum.skipped.push(format!(
                    "{dest}: the donor has a {other:?} node here; only files, directories and symlinks are grafted"
                ));
                Ok(None)
            }
        }
    }

    fn place_dir(&mut self, dest: &str, attrs: NodeAttrs) -> Result<Placed, GraftError> {
        let backup = match self.guest.lstat(dest)? {
            Some(m) if m.kind == NodeKind::Dir => {
                self.sum.unchanged += 1;
                return Ok(None);
            }
            Some(_) => Some(self.keep_aside(dest)?),
            None => None,
        };
        self.guest.mkdir_p(dest, attrs)?;
        self.sum.dirs += 1;
        self.sum.written.push(dest.to_string());
        Ok(Some(backup))
    }

    fn place_symlink(
        &mut self,
        dest: &str,
        target: &str,
        attrs: NodeAttrs,
    ) -> Result<Placed, GraftError> {
        let backup = match self.guest.lstat(dest)? {
            Some(m)
                if m.kind == NodeKind::Symlink
                    && self.guest.read_link(dest)?.as_deref() == Some(target) =>
            {
                self.sum.unchanged += 1;
                return Ok(None);
            }
            Some(_) => Some(self.keep_aside(dest)?),
            None => None,
        };
        self.guest.symlink(dest, target, attrs)?;
        self.sum.symlinks += 1;
        self.sum.written.push(dest.to_string());
        Ok(Some(backup))
    }

    fn place_file(
        &mut self,
        dest: &str,
        attrs: NodeAttrs,
        len: u64,
        content: Content<'_>,
    ) -> Result<Placed, GraftError> {
        let backup = match self.guest.lstat(dest)? {
            Some(m)
                if m.kind == NodeKind::File
                    && m.len == len
                    && m.mode == attrs.mode
                    && m.uid == attrs.uid
                    && m.gid == attrs.gid
                    && self.same_content(dest, len, &content)? =>
            {
                self.sum.unchanged += 1;
                return Ok(None);
            }
            Some(_) => Some(self.keep_aside(dest)?),
            None => None,
        };
        match content {
            Content::Donor(file) => {
                let mut reader = self.donor.open_file(&file)?;
                self.guest.create_file(dest, &mut reader, len, attrs)?;
            }
            Content::Tree(tree, entry) => {
                let mut reader = self.donor.open_tree_file(tree, entry)?;
                self.guest.create_file(dest, &mut reader, len, attrs)?;
            }
            Content::Bytes(data) => {
                let mut reader: &[u8] = data;
                self.guest.create_file(dest, &mut reader, len, attrs)?;
            }
        }
        self.sum.files += 1;
        self.sum.bytes += len;
        self.sum.written.push(dest.to_string());
        Ok(Some(backup))
    }

    /// Whether the guest's `dest` (already known to be `len` bytes) has exactly the
    /// content the graft would write. The donor side is streamed.
    fn same_content(
        &mut self,
        dest: &str,
        len: u64,
        content: &Content<'_>,
    ) -> Result<bool, GraftError> {
        if len > MAX_COMPARE_BYTES {
            return Ok(false);
        }
        let Some(existing) = self.guest.read_file(dest, len)? else {
            return Ok(false);
        };
        if existing.len() as u64 != len {
            return Ok(false);
        }
        match content {
            Content::Bytes(data) => Ok(existing == *data),
            Content::Donor(_) | Content::Tree(..) => {
                let (mut reader, what): (Box<dyn Read + '_>, &str) = match content {
                    Content::Donor(file) => (Box::new(self.donor.open_file(file)?), &file.at.path),
                    Content::Tree(tree, entry) => (
                        Box::new(self.donor.open_tree_file(tree, entry)?),
                        &entry.rel,
                    ),
                    Content::Bytes(_) => unreachable!("handled above"),
                };
                let mut buf = vec![0u8; 64 << 10];
                let mut pos = 0usize;
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| DonorError::io("reading", what, e))?;
                    if n == 0 {
                        return Ok(pos == existing.len());
                    }
                    if existing.get(pos..pos + n) != Some(&buf[..n]) {
                        return Ok(false);
                    }
                    pos += n;
                }
            }
        }
    }
}

impl GraftError {
    /// What the error concerns: the donor's files, or the guest they are written into.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            GraftError::Cancelled => K::Cancelled,
            GraftError::Donor(d) => d.kind(),
            GraftError::Guest(g) => g.kind(),
            GraftError::NoBackupName { .. } => K::Input,
        }
    }
}
