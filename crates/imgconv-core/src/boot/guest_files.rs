//! The boot files inside the guest's root filesystem: `/boot/grub/grub.cfg`,
//! `/boot/grub/grubenv`, and `/boot/grub/<platform>/` with the modules, lists and the
//! core.img/boot.img copies of the GRUB build that core.img was made from.
//!
//! GRUB loads `normal.mod` and everything after it from `$prefix/<platform>/` at boot and
//! links them against the kernel inside core.img, so those modules must be the same
//! build (docs/grub-bios-format.md). The donor graft normally copies them
//! already; here every one is checked and the missing or different ones are written.
//! Nothing of the guest is lost: a file we replace is renamed to `<name>.imgconv-orig`
//! (or `.imgconv-orig.N` if that exists), and every change goes into the report.
//!
//! Paths are the guest's: with a separate `/boot` the conversion writes through
//! [`crate::guestfs::Mounted`], so `/boot/grub` lands at `/grub` of that filesystem, which
//! is what its prefix `(,msdos1)/grub` says; otherwise `/boot` is in the root filesystem
//! and the prefix is `(,msdos1)/boot/grub`.

use super::grub_bios::CoreImage;
use super::grub_cfg::{render, GrubConfig};
use super::grubenv;
use super::{BootError, GrubPlatformFiles};
use crate::guestfs::NodeKind;
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;

/// The report step name for everything written here.
pub const STEP: &str = "boot";
/// Directory of GRUB's files in the guest.
pub const GRUB_DIR: &str = "/boot/grub";
/// Backup suffix for files we replace.
pub const BACKUP_SUFFIX: &str = ".imgconv-orig";
/// Most backup names tried (`.imgconv-orig`, `.imgconv-orig.1`, …).
const MAX_BACKUP_TRIES: usize = 100;

/// What [`put_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Put {
    Created,
    Unchanged,
    /// Replaced; the old one kept under this guest path.
    Replaced(String),
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Make `path` hold exactly `content`: create it, leave it if identical, or move the old
/// node (file or symlink) aside to a free backup name and create it anew.
pub(crate) fn put_file(
    guest: &mut dyn GuestFs,
    path: &str,
    content: &[u8],
    mode: u16,
) -> Result<Put, BootError> {
    let attrs = NodeAttrs::root(mode, now());
    let create = |guest: &mut dyn GuestFs| -> Result<(), BootError> {
        let mut reader = content;
        guest.create_file(path, &mut reader, content.len() as u64, attrs)?;
        Ok(())
    };
    let Some(meta) = guest.lstat(path)? else {
        create(guest)?;
        return Ok(Put::Created);
    };
    match meta.kind {
        NodeKind::Dir => {
            return Err(BootError::GuestPathIsDirectory { path: path.into() });
        }
        NodeKind::File
            if meta.len == content.len() as u64
                && guest.read_file(path, meta.len)?.as_deref() == Some(content) =>
        {
            return Ok(Put::Unchanged);
        }
        _ => {}
    }
    let backup = free_backup_name(guest, path)?;
    guest.rename(path, &backup)?;
    create(guest)?;
    Ok(Put::Replaced(backup))
}

fn free_backup_name(guest: &mut dyn GuestFs, path: &str) -> Result<String, BootError> {
    for i in 0..MAX_BACKUP_TRIES {
        let name = if i == 0 {
            format!("{path}{BACKUP_SUFFIX}")
        } else {
            format!("{path}{BACKUP_SUFFIX}.{i}")
        };
        if guest.lstat(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(BootError::NoBackupName { path: path.into() })
}

/// Write GRUB's files into the guest and record each change in `report`:
/// `/boot/grub/grub.cfg` (from `cfg`), `/boot/grub/grubenv` (an empty block unless a
/// valid one is there), and `/boot/grub/<platform>/`: `core.img`, `boot.img`,
/// `modinfo.sh`, and every `*.mod`/`*.lst` of `files` that is missing or different.
pub fn write_guest_boot_files(
    guest: &mut dyn GuestFs,
    files: &GrubPlatformFiles,
    core: &CoreImage,
    cfg: &GrubConfig,
    report: &mut Report,
) -> Result<(), BootError> {
    // Render first: a bad value must fail before anything is written.
    render(cfg)?;
    let platform_dir = format!("{GRUB_DIR}/{}", files.platform);
    if files.platform.is_empty() || files.platform.contains(['/', '\0']) {
        return Err(BootError::BadFileName {
            name: files.platform.clone(),
        });
    }
    guest.mkdir_p(&platform_dir, NodeAttrs::root(0o755, now()))?;

    // Modules and lists: the same build as core.img.
    let version = files
        .grub_version()
        .map(|v| v.package.unwrap_or(v.upstream))
        .unwrap_or_else(|| "of unknown version".into());
    let mut created = 0usize;
    let mut unchanged = 0usize;
    for (name, data) in &files.files {
        let wanted = name.ends_with(".mod") || name.ends_with(".lst") || name == "modinfo.sh";
        if !wanted {
            continue;
        }
        let path = format!("{platform_dir}/{name}");
        match put_file(guest, &path, data, 0o644)? {
            Put::Created => created += 1,
            Put::Unchanged => unchanged += 1,
            Put::Replaced(backup) => report.change(
                STEP,
                &path,
                format!("replaced with the file of GRUB {version}"),
                "GRUB links the modules it loads at boot against the kernel inside core.img; \
                 they must come from the same GRUB build",
                Some(backup),
            ),
        }
    }
    if created > 0 {
        report.change(
            STEP,
            &platform_dir,
            format!(
                "added {created} GRUB {} modules and lists of GRUB {version} ({unchanged} already present)",
                files.platform
            ),
            "GRUB loads normal.mod and every other module from $prefix/i386-pc at boot",
            None,
        );
    }

    // core.img and boot.img copies, as grub-install leaves them (Debian's grub-pc
    // maintainer scripts look for core.img to decide whether GRUB is installed).
    for (name, data, why) in [
        (
            "core.img",
            &core.bytes[..],
            "copy of the core.img written to the disk, as grub-install leaves it",
        ),
        (
            "boot.img",
            files.require("boot.img")?,
            "copy of the boot sector code written to the disk, as grub-install leaves it",
        ),
    ] {
        let path = format!("{platform_dir}/{name}");
        record(report, &path, put_file(guest, &path, data, 0o644)?, why);
    }

    write_grub_cfg_and_env(guest, cfg, report)
}

/// `/boot/grub/grubenv` (kept when valid, else an empty block) and `/boot/grub/grub.cfg`
/// (from `cfg`), each change recorded in `report`. The part of
/// [`write_guest_boot_files`] every firmware needs (UEFI calls it without the i386-pc
/// files).
pub fn write_grub_cfg_and_env(
    guest: &mut dyn GuestFs,
    cfg: &GrubConfig,
    report: &mut Report,
) -> Result<(), BootError> {
    let cfg_text = render(cfg)?;
    guest.mkdir_p(GRUB_DIR, NodeAttrs::root(0o755, now()))?;
    // grubenv: keep a valid block (it may hold saved_entry etc.), else write an empty one.
    let env_path = format!("{GRUB_DIR}/grubenv");
    let keep = match guest.lstat(&env_path)? {
        Some(m) if m.kind == NodeKind::File && m.len == grubenv::GRUBENV_SIZE as u64 => guest
            .read_file(&env_path, m.len)?
            .is_some_and(|d| grubenv::is_valid_block(&d)),
        _ => false,
    };
    if !keep {
        let outcome = put_file(guest, &env_path, &grubenv::empty_block(), 0o644)?;
        record(
            report,
            &env_path,
            outcome,
            "GRUB's environment block (1024 bytes), as grub-install creates it",
        );
    }

    // grub.cfg last, read-only like grub-mkconfig leaves it.
    let cfg_path = format!("{GRUB_DIR}/grub.cfg");
    let outcome = put_file(guest, &cfg_path, cfg_text.as_bytes(), 0o444)?;
    record(
        report,
        &cfg_path,
        outcome,
        "GRUB menu for the converted guest: serial and screen console, root by UUID, \
         default and recovery entries",
    );
    Ok(())
}

pub(crate) fn record(report: &mut Report, path: &str, outcome: Put, why: &str) {
    match outcome {
        Put::Created => report.change(STEP, path, "created", why, None),
        Put::Replaced(backup) => report.change(STEP, path, "replaced", why, Some(backup)),
        Put::Unchanged => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::grub_bios::CoreImage;
    use crate::guestfs::{MemFs, TreeRead};

    fn files() -> GrubPlatformFiles {
        GrubPlatformFiles::from_files(
            "i386-pc",
            [
                ("normal.mod".to_string(), b"NORMAL".to_vec()),
                ("ext2.mod".to_string(), b"EXT2".to_vec()),
                ("fs.lst".to_string(), b"ext2\n".to_vec()),
                ("boot.img".to_string(), vec![0xB0; 512]),
                ("kernel.img".to_string(), b"KERNEL".to_vec()),
                (
                    "modinfo.sh".to_string(),
                    b"grub_version=\"2.06\"\n".to_vec(),
                ),
            ],
        )
        .unwrap()
    }

    fn core() -> CoreImage {
        CoreImage {
            bytes: vec![0xC0; 1000],
            modules: vec![],
            prefix: "(,msdos1)/boot/grub".into(),
            kernel_size: 0,
            bss_size: 0,
            total_module_size: 0,
            decompressor_size: 0,
            compressed_size: 0,
        }
    }

    const UUID: &str = "0f3c5a7e-1b2d-4c6e-8f90-a1b2c3d4e5f6";

    #[test]
    fn writes_everything_into_an_empty_guest() {
        let mut fs = MemFs::new();
        let mut report = Report::default();
        let cfg = GrubConfig::new(UUID, "6.1.0-18-amd64");
        write_guest_boot_files(&mut fs, &files(), &core(), &cfg, &mut report).unwrap();
        assert_eq!(
            fs.text("/boot/grub/i386-pc/normal.mod").as_deref(),
            Some("NORMAL")
        );
        assert_eq!(
            fs.text("/boot/grub/i386-pc/fs.lst").as_deref(),
            Some("ext2\n")
        );
        assert!(fs.text("/boot/grub/i386-pc/modinfo.sh").is_some());
        assert!(
            fs.text("/boot/grub/i386-pc/kernel.img").is_none(),
            "kernel.img is inside core.img"
        );
        assert_eq!(
            fs.read_file("/boot/grub/i386-pc/core.img", 4096)
                .unwrap()
                .unwrap(),
            vec![0xC0; 1000]
        );
        assert_eq!(
            fs.read_file("/boot/grub/i386-pc/boot.img", 4096)
                .unwrap()
                .unwrap(),
            vec![0xB0; 512]
        );
        assert_eq!(
            fs.read_file("/boot/grub/grubenv", 4096).unwrap().unwrap(),
            grubenv::empty_block()
        );
        let cfg_text = fs.text("/boot/grub/grub.cfg").unwrap();
        assert!(cfg_text.contains(&format!("root=UUID={UUID}")));
        assert_eq!(
            fs.lstat("/boot/grub/grub.cfg").unwrap().unwrap().mode & 0o777,
            0o444
        );
        let paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/boot/grub/i386-pc",
                "/boot/grub/i386-pc/core.img",
                "/boot/grub/i386-pc/boot.img",
                "/boot/grub/grubenv",
                "/boot/grub/grub.cfg"
            ]
        );
        assert!(
            report.changes[0].what.contains("added 4 "),
            "{}",
            report.changes[0].what
        );
        assert!(report
            .changes
            .iter()
            .all(|c| c.step == "boot" && c.backup.is_none()));
    }

    #[test]
    fn keeps_backups_and_leaves_identical_files_alone() {
        let mut fs = MemFs::new()
            .with_file("/boot/grub/grub.cfg", "old menu")
            .with_file("/boot/grub/grub.cfg.imgconv-orig", "an older backup")
            .with_file("/boot/grub/i386-pc/normal.mod", "NORMAL")
            .with_file("/boot/grub/i386-pc/ext2.mod", "EXT2 of another build")
            .with_symlink("/boot/grub/menu.lst", "grub.cfg");
        let env_with_entry = {
            let mut b = b"# GRUB Environment Block\nsaved_entry=0\n".to_vec();
            b.resize(1024, b'#');
            b
        };
        let mut r: &[u8] = &env_with_entry;
        fs.create_file(
            "/boot/grub/grubenv",
            &mut r,
            1024,
            NodeAttrs::root(0o644, 0),
        )
        .unwrap();
        let mut report = Report::default();
        let cfg = GrubConfig::new(UUID, "6.1.0-18-amd64");
        write_guest_boot_files(&mut fs, &files(), &core(), &cfg, &mut report).unwrap();

        assert_eq!(
            fs.text("/boot/grub/grub.cfg.imgconv-orig").as_deref(),
            Some("an older backup")
        );
        assert_eq!(
            fs.text("/boot/grub/grub.cfg.imgconv-orig.1").as_deref(),
            Some("old menu")
        );
        assert_eq!(
            fs.text("/boot/grub/i386-pc/ext2.mod.imgconv-orig")
                .as_deref(),
            Some("EXT2 of another build")
        );
        assert_eq!(
            fs.text("/boot/grub/i386-pc/ext2.mod").as_deref(),
            Some("EXT2")
        );
        assert!(fs
            .lstat("/boot/grub/i386-pc/normal.mod.imgconv-orig")
            .unwrap()
            .is_none());
        assert_eq!(
            fs.read_file("/boot/grub/grubenv", 2048).unwrap().unwrap(),
            env_with_entry,
            "a valid grubenv is kept"
        );

        let cfg_change = report
            .changes
            .iter()
            .find(|c| c.path == "/boot/grub/grub.cfg")
            .unwrap();
        assert_eq!(
            cfg_change.backup.as_deref(),
            Some("/boot/grub/grub.cfg.imgconv-orig.1")
        );
        let mod_change = report
            .changes
            .iter()
            .find(|c| c.path == "/boot/grub/i386-pc/ext2.mod")
            .unwrap();
        assert_eq!(
            mod_change.backup.as_deref(),
            Some("/boot/grub/i386-pc/ext2.mod.imgconv-orig")
        );
        assert!(!report
            .changes
            .iter()
            .any(|c| c.path == "/boot/grub/grubenv"));
        // Running again changes nothing.
        let mut again = Report::default();
        write_guest_boot_files(&mut fs, &files(), &core(), &cfg, &mut again).unwrap();
        assert_eq!(again.changes, vec![]);
    }

    #[test]
    fn bad_config_writes_nothing() {
        let mut fs = MemFs::new();
        let mut report = Report::default();
        let cfg = GrubConfig::new("bogus", "6.1");
        assert!(write_guest_boot_files(&mut fs, &files(), &core(), &cfg, &mut report).is_err());
        assert!(fs.list().is_empty());
        assert!(report.changes.is_empty());
    }
}
