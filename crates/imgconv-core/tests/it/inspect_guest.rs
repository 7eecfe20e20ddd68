//! What inspect reports about a guest: superblock facts checked against dumpe2fs and
//! blkid, and the guest's OS, architecture, init system, kernels and Xen-isms for the
//! three init styles.

use crate::support::stream as stream_util;

use imgconv_core::source::{self, Arch, ExtKind, InitSystem, XenIsmKind};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use stream_util::*;

fn dumpe2fs(img: &Path) -> std::collections::HashMap<String, String> {
    run(Command::new("dumpe2fs").arg("-h").arg(img))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn image(work: &Path, init: Init, kind: &str, extra: &[&str]) -> std::path::PathBuf {
    let tree = work.join("tree");
    guest_tree(&tree, init);
    let img = work.join("xen.img");
    mkfs(kind, &tree, &img, 80, extra);
    img
}

#[test]
fn systemd_ext4_guest() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), Init::Systemd, "ext4", &[]);
    let i = source::inspect(&img).unwrap();

    // Superblock facts, against dumpe2fs.
    let d = dumpe2fs(&img);
    let fs = &i.fs;
    assert_eq!(fs.kind, ExtKind::Ext4);
    assert_eq!(fs.uuid, d["Filesystem UUID"]);
    assert_eq!(fs.label, "xenroot");
    assert_eq!(fs.block_size.to_string(), d["Block size"]);
    assert_eq!(fs.blocks_count.to_string(), d["Block count"]);
    assert_eq!(fs.free_blocks.to_string(), d["Free blocks"]);
    assert_eq!(fs.reserved_blocks.to_string(), d["Reserved block count"]);
    assert_eq!(fs.inodes_count.to_string(), d["Inode count"]);
    assert_eq!(fs.free_inodes.to_string(), d["Free inodes"]);
    assert_eq!(fs.inode_size.to_string(), d["Inode size"]);
    let ours: BTreeSet<&str> = fs
        .features
        .compat
        .iter()
        .chain(&fs.features.incompat)
        .chain(&fs.features.ro_compat)
        .map(String::as_str)
        .collect();
    let theirs: BTreeSet<&str> = d["Filesystem features"].split_whitespace().collect();
    assert_eq!(ours, theirs, "feature names differ from dumpe2fs");
    assert!(fs.has_journal && !fs.needs_recovery && fs.clean && !fs.errors);
    assert_eq!(fs.size_bytes, 80 << 20);
    assert_eq!(i.fs_len, fs.size_bytes);
    assert_eq!(
        fs.used_bytes,
        (fs.blocks_count - fs.free_blocks) * u64::from(fs.block_size)
    );
    let blk = run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "UUID"])
        .arg(&img));
    assert_eq!(blk.trim(), fs.uuid);

    // The guest.
    let g = &i.guest;
    let os = g.os.as_ref().unwrap();
    assert_eq!(os.source, "/etc/os-release");
    assert_eq!(os.id.as_deref(), Some("debian"));
    assert_eq!(os.version_id.as_deref(), Some("12"));
    assert_eq!(
        os.pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(g.hostname.as_deref(), Some("xenguest"));
    assert_eq!(g.arch, Some(Arch::X86_64));
    assert_eq!(g.arch_source.as_deref(), Some("/sbin/init"));
    assert_eq!(g.init, InitSystem::Systemd);

    let k: Vec<(&str, bool)> = g
        .kernels
        .iter()
        .map(|k| (k.version.as_str(), k.xen_only))
        .collect();
    assert_eq!(
        k,
        vec![
            ("2.6.18-xenU", true),
            ("2.6.32-5-amd64", true),
            ("6.1.0-13-amd64", false)
        ]
    );
    let modern = &g.kernels[2];
    assert_eq!(
        modern.initrd.as_deref(),
        Some("/boot/initrd.img-6.1.0-13-amd64")
    );
    assert!(modern.has_modules);
    assert!(g.kernels[1]
        .xen_reason
        .as_deref()
        .unwrap()
        .contains("CONFIG_X86_64_XEN=y"));

    let x: Vec<(XenIsmKind, &str)> = g
        .xenisms
        .iter()
        .map(|x| (x.kind.clone(), x.file.as_str()))
        .collect();
    let expect = [
        (
            XenIsmKind::FstabDevice {
                device: "/dev/xvda1".into(),
                mount_point: "/".into(),
            },
            "/etc/fstab",
        ),
        (
            XenIsmKind::FstabDevice {
                device: "/dev/xvda2".into(),
                mount_point: "none".into(),
            },
            "/etc/fstab",
        ),
        (
            XenIsmKind::ConsoleGetty { tty: "hvc0".into() },
            "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
        ),
        (
            XenIsmKind::SecureTty { tty: "hvc0".into() },
            "/etc/securetty",
        ),
        (
            XenIsmKind::PersistentNetRules {
                interfaces: vec!["eth0".into()],
            },
            "/etc/udev/rules.d/70-persistent-net.rules",
        ),
        (XenIsmKind::PvGrubMenu, "/boot/grub/menu.lst"),
        (
            XenIsmKind::XenModule {
                module: "xen-blkfront".into(),
            },
            "/etc/modules",
        ),
    ];
    for e in &expect {
        assert!(x.contains(e), "missing {e:?} in {x:#?}");
    }
    assert_eq!(x.len(), expect.len(), "unexpected extra Xen-isms: {x:#?}");
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);

    // The inspection is a serialisable value.
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["container"]["type"], "bare");
    assert_eq!(json["fs"]["kind"], "ext4");
    assert_eq!(json["guest"]["xenisms"][0]["kind"], "fstab-device");
    assert_eq!(json["guest"]["xenisms"][0]["file"], "/etc/fstab");
}

#[test]
fn sysvinit_i386_ext3_guest() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), Init::Sysvinit, "ext3", &[]);
    let i = source::inspect(&img).unwrap();
    assert_eq!(i.fs.kind, ExtKind::Ext3);
    assert_eq!(i.guest.init, InitSystem::Sysvinit);
    assert_eq!(i.guest.arch, Some(Arch::I386));
    let gettys: Vec<_> = i
        .guest
        .xenisms
        .iter()
        .filter(|x| matches!(x.kind, XenIsmKind::ConsoleGetty { .. }))
        .collect();
    // The hvc0 line counts; the commented-out xvc0 line does not.
    assert_eq!(gettys.len(), 1, "{gettys:?}");
    assert_eq!(
        gettys[0].kind,
        XenIsmKind::ConsoleGetty { tty: "hvc0".into() }
    );
    assert_eq!(gettys[0].file, "/etc/inittab");
}

#[test]
fn upstart_ext2_guest() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), Init::Upstart, "ext2", &[]);
    let i = source::inspect(&img).unwrap();
    assert_eq!(i.fs.kind, ExtKind::Ext2);
    assert!(!i.fs.has_journal);
    assert_eq!(i.guest.init, InitSystem::Upstart);
    assert!(i.guest.xenisms.iter().any(|x| x.kind
        == XenIsmKind::ConsoleGetty { tty: "hvc0".into() }
        && x.file == "/etc/init/hvc0.conf"));
    assert!(!i
        .guest
        .xenisms
        .iter()
        .any(|x| x.file == "/etc/init/tty1.conf"));
}

#[test]
fn dirty_journal_is_reported_and_checked() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), Init::Systemd, "ext4", &[]);
    // Mark the journal as needing recovery (the superblock flag, as after a crash).
    run(Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&img));
    let i = source::inspect(&img).unwrap();
    assert!(i.fs.needs_recovery);
    assert!(i.fs.features.has("needs_recovery"));
    let e = i.check_journal(false).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("never modified"), "{msg}");
    assert_eq!(
        imgconv_core::Error::from(e).hint(),
        Some(imgconv_core::Hint::ReplayJournal)
    );
    i.check_journal(true).unwrap();
    // The journal's log is empty (only the flag was set): the replay has nothing to do,
    // and the guest reads as it is, without a warning.
    assert!(
        !i.guest.warnings.iter().any(|w| w.contains("journal")),
        "{:?}",
        i.guest.warnings
    );
    assert_eq!(i.guest.hostname.as_deref(), Some("xenguest"));
}
