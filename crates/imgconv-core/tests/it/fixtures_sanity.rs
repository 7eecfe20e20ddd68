//! The synthetic fixtures are what they claim to be, judged by outside tools (e2fsck,
//! sfdisk, blkid, debugfs, dumpe2fs), not by our own reader.

use crate::support;

use std::path::Path;
use support::{debugfs, e2fs_spec, manifest, manifest_row, synthetic, tool};

const EXPECTED_ROWS: &[(&str, Option<u32>, &str)] = &[
    ("xen-ext2.img", None, "ext2"),
    ("xen-ext3.img", None, "ext3"),
    ("xen-ext4.img", None, "ext4"),
    ("xen-ext4-mbr.img", Some(1), "swap"),
    ("xen-ext4-mbr.img", Some(2), "ext4"),
    ("xen-ext4-gpt.img", Some(1), "ext4"),
    ("dirty-ext4.img", None, "ext4"),
    ("donor.img", Some(1), "ext4"),
    ("donor-sepboot.img", Some(1), "ext4"),
    ("donor-sepboot.img", Some(2), "ext4"),
];

#[test]
fn manifest_lists_every_image_and_blkid_agrees() {
    let dir = synthetic();
    let rows = manifest(&dir);
    assert_eq!(rows.len(), EXPECTED_ROWS.len(), "{rows:#?}");
    for (image, part, fs_type) in EXPECTED_ROWS {
        let row = manifest_row(&dir, image, *part);
        assert_eq!(&row.fs_type, fs_type, "{row:?}");
        let path = dir.join(image);
        let (start, size) = (row.start.to_string(), row.size.to_string());
        let (code, out, err) = tool(
            "blkid",
            &[
                "-p",
                "-O",
                &start,
                "-S",
                &size,
                "-o",
                "export",
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "blkid {image}@{start}: {err}");
        assert!(out.contains(&format!("TYPE={fs_type}\n")), "{image}: {out}");
        assert!(
            out.contains(&format!("UUID={}\n", row.uuid)),
            "{image}: {out}"
        );
    }
    // Every UUID is distinct: tests may rely on finding a filesystem by UUID.
    let mut uuids: Vec<_> = rows.iter().map(|r| r.uuid.clone()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), rows.len());
}

#[test]
fn every_clean_filesystem_passes_e2fsck() {
    let dir = synthetic();
    for row in manifest(&dir) {
        if row.fs_type == "swap" || row.image == "dirty-ext4.img" {
            continue;
        }
        let spec = e2fs_spec(&dir.join(&row.image), row.start);
        let (code, out, err) = tool("e2fsck", &["-fn", &spec]);
        assert_eq!(code, 0, "e2fsck -fn {spec}:\n{out}{err}");
    }
}

/// sfdisk -J's partition list as (start sector, size in sectors, type).
fn sfdisk_partitions(image: &Path) -> (String, Vec<(u64, u64, String)>) {
    let (code, out, err) = tool("sfdisk", &["-J", image.to_str().unwrap()]);
    assert_eq!(code, 0, "sfdisk -J {image:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("sfdisk JSON");
    let table = &v["partitiontable"];
    let parts = table["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (table["label"].as_str().unwrap().to_owned(), parts)
}

#[test]
fn partitioned_images_match_the_manifest() {
    let dir = synthetic();
    let cases: &[(&str, &str, &[&str])] = &[
        ("xen-ext4-mbr.img", "dos", &["82", "83"]),
        (
            "xen-ext4-gpt.img",
            "gpt",
            &["0FC63DAF-8483-4772-8E79-3D69D8477DE4"],
        ),
        ("donor.img", "dos", &["83"]),
        ("donor-sepboot.img", "dos", &["83", "83"]),
    ];
    for (image, label, types) in cases {
        let (got_label, parts) = sfdisk_partitions(&dir.join(image));
        assert_eq!(&got_label, label, "{image}");
        assert_eq!(parts.len(), types.len(), "{image}: {parts:?}");
        for (i, (start, size, ty)) in parts.iter().enumerate() {
            let row = manifest_row(&dir, image, Some(i as u32 + 1));
            assert_eq!(start * 512, row.start, "{image} p{}", i + 1);
            assert_eq!(size * 512, row.size, "{image} p{}", i + 1);
            assert_eq!(ty, types[i], "{image} p{}", i + 1);
            // At least 1 MiB before the first partition: room for GRUB's core.img.
            assert!(row.start >= 1 << 20);
        }
    }
}

#[test]
fn xen_guests_carry_the_xen_isms() {
    let dir = synthetic();
    let guests: &[(&str, Option<u32>, &str, &str)] = &[
        ("xen-ext2.img", None, "/dev/xvda1", "/dev/xvda2"),
        ("xen-ext3.img", None, "/dev/xvda1", "/dev/xvda2"),
        ("xen-ext4.img", None, "/dev/xvda1", "/dev/xvda2"),
        ("xen-ext4-mbr.img", Some(2), "/dev/xvda2", "/dev/xvda1"),
        ("xen-ext4-gpt.img", Some(1), "/dev/xvda1", "/dev/xvda2"),
    ];
    for (image, part, root, swap) in guests {
        let row = manifest_row(&dir, image, *part);
        let spec = e2fs_spec(&dir.join(image), row.start);
        let fstab = debugfs(&spec, "cat /etc/fstab");
        let root_line = fstab
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/"))
            .unwrap_or_else(|| panic!("{image}: no root line in\n{fstab}"));
        assert!(root_line.starts_with(root), "{image}: {root_line}");
        assert!(root_line.contains(&row.fs_type), "{image}: {root_line}");
        assert!(
            fstab.contains(&format!("{swap}      none            swap")),
            "{image}"
        );
        assert!(fstab.contains("/dev/xvdb1      /srv"), "{image}");
        assert!(
            fstab.contains("UUID=3b1f8c52-9d0e-4a67-b2c1-6e5d4f3a2b10 /data ext4 defaults,nofail")
        );

        let menu = debugfs(&spec, "cat /boot/grub/menu.lst");
        assert!(
            menu.contains(&format!("root={root} ro console=hvc0")),
            "{image}: {menu}"
        );
        let rules = debugfs(&spec, "cat /etc/udev/rules.d/70-persistent-net.rules");
        assert!(rules.contains("ATTR{address}==\"00:16:3e:"), "{image}");
        assert!(rules.contains("NAME=\"eth0\""), "{image}");
        let modules = debugfs(&spec, "cat /etc/modules");
        for m in ["xen-blkfront", "xen-netfront", "xenblk"] {
            assert!(modules.lines().any(|l| l == m), "{image}: {m}");
        }
        assert!(debugfs(&spec, "cat /etc/securetty")
            .lines()
            .any(|l| l == "hvc0"));
        assert!(debugfs(&spec, "cat /etc/network/interfaces").contains("iface eth0 inet dhcp"));
        assert!(debugfs(&spec, "cat /etc/os-release").contains("VERSION_ID=\"12\""));
        for (link, target) in [
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
            ("/lib", "usr/lib"),
        ] {
            let stat = debugfs(&spec, &format!("stat {link}"));
            assert!(stat.contains("Type: symlink"), "{image} {link}: {stat}");
            assert!(
                stat.contains(&format!("Fast link dest: \"{target}\"")),
                "{stat}"
            );
        }
        // A real x86-64 ELF as init.
        let init = debugfs(&spec, "cat /usr/sbin/init");
        assert!(init.as_bytes().starts_with(b"\x7fELF\x02"), "{image}");
    }
}

#[test]
fn init_flavours_differ_as_documented() {
    let dir = synthetic();
    let ext4 = e2fs_spec(&dir.join("xen-ext4.img"), 0);
    let getty = debugfs(
        &ext4,
        "stat /etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
    );
    assert!(
        getty.contains("/lib/systemd/system/serial-getty@.service"),
        "{getty}"
    );
    assert!(
        debugfs(&ext4, "cat /usr/lib/systemd/system/serial-getty@.service").contains("[Service]")
    );

    let ext3 = e2fs_spec(&dir.join("xen-ext3.img"), 0);
    assert!(debugfs(&ext3, "cat /etc/inittab")
        .lines()
        .any(|l| l == "co:2345:respawn:/sbin/getty 38400 hvc0"));
    let (_, _, err) = tool("debugfs", &["-R", "stat /etc/systemd", &ext3]);
    assert!(
        err.contains("File not found"),
        "sysvinit guest has /etc/systemd: {err}"
    );

    let ext2 = e2fs_spec(&dir.join("xen-ext2.img"), 0);
    assert!(debugfs(&ext2, "cat /etc/init/hvc0.conf").contains("exec /sbin/getty -8 38400 hvc0"));
}

/// debugfs `stat` "Links: N" value.
fn links(stat: &str) -> u32 {
    let at = stat.find("Links: ").expect("Links:") + 7;
    stat[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn guest_trees_have_every_kind_of_inode() {
    let dir = synthetic();
    for (image, fs) in [
        ("xen-ext2.img", "ext2"),
        ("xen-ext3.img", "ext3"),
        ("xen-ext4.img", "ext4"),
    ] {
        let spec = e2fs_spec(&dir.join(image), 0);
        // 5000-entry directory; an htree (INDEX_FL 0x1000) after e2fsck -D.
        let ls = debugfs(&spec, "ls /var/bigdir");
        assert_eq!(ls.matches("entry-").count(), 5000, "{image}");
        let big = debugfs(&spec, "stat /var/bigdir");
        let flags = big
            .split("Flags: 0x")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let flags = u32::from_str_radix(flags, 16).unwrap();
        if fs != "ext2" {
            assert_ne!(flags & 0x1000, 0, "{image}: /var/bigdir not indexed: {big}");
        }
        // Extents on ext4 only; ext3 stays block-mapped.
        let f = debugfs(&spec, "stat /etc/fstab");
        assert_eq!(f.contains("EXTENTS:"), fs == "ext4", "{image}: {f}");
        // Hard links.
        let a = debugfs(&spec, "stat /srv/links/a");
        assert_eq!(links(&a), 3, "{image}");
        let ino = |p: &str| {
            debugfs(&spec, &format!("stat {p}"))
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_owned()
        };
        assert_eq!(ino("/srv/links/a"), ino("/srv/links/c"));
        // Sparse file: 8 MiB, at most a handful of blocks allocated.
        let sparse = debugfs(&spec, "stat /var/lib/sparse.bin");
        assert!(sparse.contains("Size: 8388608"), "{image}");
        let bc: u64 = sparse
            .split("Blockcount: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bc > 0 && bc <= 32, "{image}: sparse file uses {bc} sectors");
        // xattr and ACL.
        let ea = debugfs(&spec, "ea_list /etc/xattr-file");
        assert!(
            ea.contains("user.imgconv (13) = \"fixture-xattr\""),
            "{image}: {ea}"
        );
        let acl = debugfs(&spec, "ea_list /srv/acl-dir/acl-file");
        assert!(acl.contains("system.posix_acl_access"), "{image}: {acl}");
        let dacl = debugfs(&spec, "ea_list /srv/acl-dir");
        assert!(dacl.contains("system.posix_acl_default"), "{image}: {dacl}");
        // Special files, owners, setuid.
        assert!(
            debugfs(&spec, "stat /var/fifo").contains("Type: FIFO"),
            "{image}"
        );
        assert!(debugfs(&spec, "stat /dev/console").contains("Type: character special"));
        assert!(debugfs(&spec, "stat /srv/links-rel").contains("Type: symlink"));
        let user = debugfs(&spec, "stat /home/user/notes.txt");
        assert!(
            user.contains("User:  1000   Group:  1000"),
            "{image}: {user}"
        );
        let passwd = debugfs(&spec, "stat /usr/bin/passwd");
        assert!(passwd.contains("Mode:  04755"), "{image}: {passwd}");
    }
}

#[test]
fn dirty_image_needs_recovery_and_e2fsck_replays_it() {
    let dir = synthetic();
    let img = dir.join("dirty-ext4.img");
    let (_, head, _) = tool("dumpe2fs", &["-h", img.to_str().unwrap()]);
    let features = head
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    assert!(features.contains("needs_recovery"), "{features}");
    let (_, out, err) = tool("e2fsck", &["-fn", img.to_str().unwrap()]);
    assert!(
        format!("{out}{err}").contains("skipping journal recovery"),
        "{out}{err}"
    );
    let spec = img.to_str().unwrap();
    assert!(debugfs(spec, "cat /etc/imgconv-journal-test").starts_with("before journal replay"));

    // Replay on a copy: the committed transaction rewrites the file's block.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let (code, out, err) = tool("e2fsck", &["-fy", copy.to_str().unwrap()]);
    assert!(code <= 1, "e2fsck -fy: {out}{err}");
    assert!(
        format!("{out}{err}").contains("recovering journal"),
        "{out}{err}"
    );
    let after = debugfs(copy.to_str().unwrap(), "cat /etc/imgconv-journal-test");
    assert!(after.starts_with("after journal replay"), "{after:?}");
    let (code, out, _) = tool("e2fsck", &["-fn", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[test]
fn donor_kernels_have_boot_protocol_headers() {
    let dir = synthetic().join("donor-dir");
    for v in ["6.1.0-99-amd64", "6.1.0-98-amd64", "6.1.0-97-amd64"] {
        let k = std::fs::read(dir.join(format!("boot/vmlinuz-{v}"))).unwrap();
        assert_eq!(&k[0x202..0x206], b"HdrS");
        assert_eq!(le16(&k, 0x206), 0x020f);
        assert_eq!(le16(&k, 0x1fe), 0xaa55);
        assert!(k[0x1f1] > 0);
        assert_eq!(le16(&k, 0x236) & 1, 1, "XLF_KERNEL_64");
        let at = le16(&k, 0x20e) as usize + 0x200;
        assert!(k[at..].starts_with(format!("{v} (fake) ").as_bytes()));
        // `file` is an outside judge of the header.
        let (_, out, _) = tool(
            "file",
            &[
                "-b",
                dir.join(format!("boot/vmlinuz-{v}")).to_str().unwrap(),
            ],
        );
        assert!(out.contains(&format!("bzImage, version {v}")), "{out}");
        let m = dir.join(format!("lib/modules/{v}"));
        for f in [
            "modules.dep",
            "modules.alias",
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/fs/ext4/ext4.ko",
        ] {
            assert!(m.join(f).is_file(), "{v}: {f}");
        }
        assert_eq!(
            std::fs::read_link(m.join("build")).unwrap(),
            Path::new(&format!("/usr/src/linux-headers-{v}"))
        );
        let has_initrd = dir.join(format!("boot/initrd.img-{v}")).exists();
        assert_eq!(has_initrd, v != "6.1.0-97-amd64", "{v}");
    }
    assert!(dir.join("usr/lib/grub/i386-pc/normal.mod").is_file());
    assert!(dir.join("usr/lib/grub/i386-pc/boot.img").is_file());
}

#[test]
fn donor_images_hold_the_donor_tree() {
    let dir = synthetic();
    let one = manifest_row(&dir, "donor.img", Some(1));
    let spec = e2fs_spec(&dir.join("donor.img"), one.start);
    assert!(debugfs(&spec, "ls -l /boot").contains("vmlinuz-6.1.0-99-amd64"));
    assert!(debugfs(&spec, "ls -l /usr/lib/grub/i386-pc").contains("normal.mod"));

    let boot = manifest_row(&dir, "donor-sepboot.img", Some(1));
    let root = manifest_row(&dir, "donor-sepboot.img", Some(2));
    let bspec = e2fs_spec(&dir.join("donor-sepboot.img"), boot.start);
    let rspec = e2fs_spec(&dir.join("donor-sepboot.img"), root.start);
    let bls = debugfs(&bspec, "ls -l /");
    assert!(bls.contains("vmlinuz-6.1.0-99-amd64") && bls.contains("initrd.img-6.1.0-99-amd64"));
    assert!(debugfs(&rspec, "ls -l /lib/modules").contains("6.1.0-99-amd64"));
    assert!(!debugfs(&rspec, "ls -l /boot").contains("vmlinuz"));
    assert!(debugfs(&rspec, "cat /etc/fstab").contains(&format!("UUID={} /boot", boot.uuid)));
}
