//! Fixups applied to real ext2/3/4 images through the libext2fs engine (`ext::ExtFs`),
//! judged by outside tools: `e2fsck -fn` must be clean and `debugfs` must show the
//! expected files, backups (mode, owner) and links. The dry-run plan (read through
//! ExtReader) must predict the applied report exactly, and a second apply on the output
//! must change nothing.

use crate::support;
use crate::support::fixups as fixups_support;

use fixups_support::*;
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::fixups::{self, dry_run::Overlay, FixupContext, FixupError};
use imgconv_core::guestfs::GuestFsError;
use imgconv_core::report::Report;
use std::path::{Path, PathBuf};
use support::{debugfs, e2fs_spec, manifest_row, synthetic, tool};

/// A writable copy of a synthetic fixture image and where its guest filesystem is.
struct Copy {
    _dir: tempfile::TempDir,
    image: PathBuf,
    offset: u64,
    size: u64,
    ctx: FixupContext,
}

impl Copy {
    fn of(image: &str, part: Option<u32>) -> Copy {
        let src = synthetic();
        let row = manifest_row(&src, image, part);
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(image);
        let (code, _, err) = tool(
            "cp",
            &[
                "--sparse=always",
                src.join(image).to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "cp: {err}");
        Copy {
            _dir: dir,
            image: copy,
            offset: row.start,
            size: row.size,
            ctx: FixupContext {
                root_uuid: row.uuid.clone(),
                root_fstype: row.fs_type.clone(),
                ..ctx()
            },
        }
    }

    fn spec(&self) -> String {
        e2fs_spec(&self.image, self.offset)
    }

    fn plan(&self) -> Report {
        let region = Region::open(&self.image)
            .unwrap()
            .sub(self.offset, self.size)
            .unwrap();
        let reader = ExtReader::open(region, "copy").unwrap();
        fixups::plan(&reader, &self.ctx).unwrap()
    }

    fn apply(&self) -> Result<Report, FixupError> {
        let mut fs = ExtFs::open(&self.image, self.offset).unwrap();
        let mut report = Report::default();
        fixups::apply(&mut fs, &self.ctx, &mut report)?;
        fs.close().unwrap();
        Ok(report)
    }

    fn assert_fsck_clean(&self) {
        let (code, out, err) = tool("e2fsck", &["-fn", &self.spec()]);
        assert_eq!(code, 0, "e2fsck -fn {}:\n{out}\n{err}", self.spec());
    }

    fn cat(&self, path: &str) -> String {
        debugfs(&self.spec(), &format!("cat {path}"))
    }

    /// (mode, uid, gid) from `debugfs stat`.
    fn owner_mode(&self, path: &str) -> (u32, u32, u32) {
        let out = debugfs(&self.spec(), &format!("stat {path}"));
        let num = |key: &str| -> u32 {
            let at = out
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in stat {path}:\n{out}"));
            let word = out[at + key.len()..].split_whitespace().next().unwrap();
            if key == "Mode:" {
                u32::from_str_radix(word, 8).unwrap()
            } else {
                word.parse().unwrap()
            }
        };
        (num("Mode:"), num("User:"), num("Group:"))
    }

    /// The target of a symlink, from `debugfs stat` ("Fast link dest: ...").
    fn link(&self, path: &str) -> Option<String> {
        let out = debugfs(&self.spec(), &format!("stat {path}"));
        let at = out.find("link dest: \"")?;
        let rest = &out[at + "link dest: \"".len()..];
        Some(rest[..rest.find('"').unwrap()].to_string())
    }

    /// Whether `path` exists, by debugfs.
    fn exists(&self, path: &str) -> bool {
        let (code, _out, err) = tool("debugfs", &["-R", &format!("stat {path}"), &self.spec()]);
        assert_eq!(code, 0);
        !err.contains("File not found")
    }
}

/// Apply on the copy; the plan must predict it; fsck clean; a second apply is a no-op
/// (and leaves the image clean).
fn convert(copy: &Copy) -> Report {
    let planned = copy.plan();
    let report = copy.apply().unwrap();
    assert_eq!(report, planned, "the dry run predicts the applied report");
    copy.assert_fsck_clean();
    let again = copy.apply().unwrap();
    assert_nothing_new(&report, &again);
    copy.assert_fsck_clean();
    report
}

fn expected_fstab(ctx: &FixupContext) -> String {
    format!(
        "# /etc/fstab: static file system information (written by xen-tools).
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
proc            /proc           proc    defaults        0       0
UUID={}      /               {}    errors=remount-ro 0       1
UUID={SWAP_UUID}      none            swap    sw              0       0
/dev/vdb1      /srv            ext4    defaults,nofail 0       2
UUID=3b1f8c52-9d0e-4a67-b2c1-6e5d4f3a2b10 /data ext4 defaults,nofail 0 2
",
        ctx.root_uuid, ctx.root_fstype
    )
}

fn assert_common(copy: &Copy, original_fstab: &str) {
    assert_eq!(copy.cat("/etc/fstab"), expected_fstab(&copy.ctx));
    assert_eq!(copy.cat("/etc/fstab.imgconv-orig"), original_fstab);
    assert_eq!(
        copy.owner_mode("/etc/fstab.imgconv-orig"),
        copy.owner_mode("/etc/fstab"),
        "the backup keeps mode and owner"
    );
    assert!(copy
        .cat("/etc/udev/rules.d/70-persistent-net.rules.imgconv-orig")
        .contains("00:16:3e:5a:7c:01"));
    assert!(!copy.exists("/etc/udev/rules.d/70-persistent-net.rules"));
    assert_eq!(
        copy.cat("/etc/modules"),
        "# /etc/modules: kernel modules to load at boot time.\n# imgconv: xen-blkfront\n# imgconv: xen-netfront\n# imgconv: xenblk\n"
    );
    assert!(copy.cat("/etc/securetty").ends_with("tty2\nttyS0\n"));
}

fn original(copy: &Copy, path: &str) -> String {
    debugfs(&copy.spec(), &format!("cat {path}"))
}

#[test]
fn systemd_guest_on_ext4() {
    let copy = Copy::of("xen-ext4.img", None);
    let fstab = original(&copy, "/etc/fstab");
    convert(&copy);
    assert_common(&copy, &fstab);
    let wants = "/etc/systemd/system/getty.target.wants";
    assert_eq!(
        copy.link(&format!("{wants}/serial-getty@ttyS0.service"))
            .as_deref(),
        Some("/lib/systemd/system/serial-getty@.service")
    );
    assert_eq!(
        copy.link(&format!("{wants}/.serial-getty@hvc0.service.imgconv-orig"))
            .as_deref(),
        Some("/lib/systemd/system/serial-getty@.service")
    );
    assert!(!copy.exists(&format!("{wants}/serial-getty@hvc0.service")));
}

#[test]
fn sysvinit_guest_on_ext3() {
    let copy = Copy::of("xen-ext3.img", None);
    let fstab = original(&copy, "/etc/fstab");
    let inittab = original(&copy, "/etc/inittab");
    convert(&copy);
    assert_common(&copy, &fstab);
    assert_eq!(copy.cat("/etc/inittab.imgconv-orig"), inittab);
    assert_eq!(
        copy.cat("/etc/inittab"),
        inittab.replace(
            "co:2345:respawn:/sbin/getty 38400 hvc0\n",
            "# imgconv: co:2345:respawn:/sbin/getty 38400 hvc0\n\
             T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n\
             1:2345:respawn:/sbin/getty 38400 tty1\n"
        )
    );
}

#[test]
fn upstart_guest_on_ext2() {
    let copy = Copy::of("xen-ext2.img", None);
    let fstab = original(&copy, "/etc/fstab");
    let hvc0 = original(&copy, "/etc/init/hvc0.conf");
    convert(&copy);
    assert_common(&copy, &fstab);
    assert_eq!(copy.cat("/etc/init/hvc0.conf.imgconv-orig"), hvc0);
    assert!(!copy.exists("/etc/init/hvc0.conf"));
    let ttys0 = copy.cat("/etc/init/ttyS0.conf");
    assert_eq!(
        ttys0,
        hvc0.replace("hvc0", "ttyS0").replace(
            "exec /sbin/getty -8 38400 ttyS0",
            "exec /sbin/getty -L 115200 ttyS0 vt102"
        )
    );
    assert_eq!(
        copy.owner_mode("/etc/init/ttyS0.conf"),
        copy.owner_mode("/etc/init/hvc0.conf.imgconv-orig")
    );
    assert!(copy
        .cat("/etc/init/tty1.conf")
        .ends_with("exec /sbin/getty -8 38400 tty1\n"));
}

#[test]
fn xen_tools_guest_in_an_mbr_partition() {
    let copy = Copy::of("xen-ext4-mbr.img", Some(2));
    let fstab = original(&copy, "/etc/fstab");
    assert!(
        fstab.contains("/dev/xvda2      /"),
        "root on xvda2:\n{fstab}"
    );
    convert(&copy);
    assert_common(&copy, &fstab);
}

/// The real engine and the in-memory model agree node for node on the same guest.
#[test]
fn ext_engine_matches_the_memfs_model() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let image = dir.path().join("g.img");
    host_tree(&tree, SYSTEMD_GUEST);
    mkfs_ext4(&tree, &image, 16);

    let mut model = memfs(SYSTEMD_GUEST);
    let mut expected = Report::default();
    fixups::apply(&mut model, &ctx(), &mut expected).unwrap();

    let mut fs = ExtFs::open(&image, 0).unwrap();
    let mut report = Report::default();
    fixups::apply(&mut fs, &ctx(), &mut report).unwrap();
    fs.close().unwrap();
    assert_eq!(report, expected);
    let (code, out, _) = tool("e2fsck", &["-fn", image.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let mut fs = ExtFs::open(&image, 0).unwrap();
    let tree: Vec<Node> = snapshot(&mut fs)
        .into_iter()
        .filter(|n| !n.0.starts_with("/lost+found"))
        .collect();
    fs.close().unwrap();
    assert_eq!(tree, snapshot(&mut model));
}

#[test]
fn fstab_symlink_loop_in_a_real_image_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let image = dir.path().join("g.img");
    host_tree(
        &tree,
        &[
            Entry::Link("/etc/fstab", "fstab.d/loop"),
            Entry::Link("/etc/fstab.d/loop", "/etc/fstab"),
        ],
    );
    mkfs_ext4(&tree, &image, 8);
    let mut fs = ExtFs::open(Path::new(&image), 0).unwrap();
    let err = fixups::apply(&mut fs, &ctx(), &mut Report::default()).unwrap_err();
    assert!(
        matches!(
            err,
            FixupError::Guest {
                step: "fstab",
                source: GuestFsError::SymlinkLoop { .. },
                ..
            }
        ),
        "{err:?}"
    );
    fs.close().unwrap();
}

/// The dry run and the real run read the guest the same way: on every clean synthetic
/// guest root (ext2, ext3, ext4, in an MBR and a GPT partition), `fixups::plan` over the
/// read-only image predicts the report of `fixups::apply` through libext2fs on a copy, and
/// the dry run's view of the changed guest is the applied guest node for node (content,
/// link targets and kinds of every file, sparse block-mapped files included). The dirty
/// journal guest is left out: the real run replays its journal with e2fsck in the copy,
/// which a dry run does not make.
#[test]
fn dry_run_and_real_run_agree_node_for_node_on_every_synthetic_guest() {
    let roots: Vec<(String, Option<u32>)> = support::manifest(&synthetic())
        .into_iter()
        .filter(|r| r.image.starts_with("xen-"))
        .filter(|r| r.fs_type != "swap")
        .map(|r| (r.image.clone(), r.part))
        .collect();
    assert!(roots.len() >= 5, "synthetic guest roots: {roots:?}");
    for (image, part) in &roots {
        let copy = Copy::of(image, *part);
        let region = Region::open(&copy.image)
            .unwrap()
            .sub(copy.offset, copy.size)
            .unwrap();
        let reader = ExtReader::open(region, image.as_str()).unwrap();
        let planned = fixups::plan(&reader, &copy.ctx).unwrap();
        let mut overlay = Overlay::over_ext(&reader);
        fixups::apply(&mut overlay, &copy.ctx, &mut Report::default()).unwrap();
        let planned_tree = snapshot(&mut overlay);
        drop(overlay);
        drop(reader);

        let applied = copy.apply().unwrap();
        assert!(!applied.changes.is_empty(), "{image}: nothing applied");
        assert!(!applied.diffs.is_empty(), "{image}: no diffs");
        assert_eq!(planned, applied, "{image} {part:?}: plan and apply reports");
        copy.assert_fsck_clean();
        let mut fs = ExtFs::open(&copy.image, copy.offset).unwrap();
        let applied_tree = snapshot(&mut fs);
        fs.close().unwrap();
        assert_eq!(
            planned_tree.len(),
            applied_tree.len(),
            "{image} {part:?}: node count"
        );
        for (p, a) in planned_tree.iter().zip(&applied_tree) {
            assert_eq!(p, a, "{image} {part:?}: dry run vs applied node");
        }
    }
}
