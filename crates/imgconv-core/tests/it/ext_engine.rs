//! The ext engine end to end: graft a tree into ext2, ext3 and ext4 images made by mkfs
//! (bare and at a 1 MiB offset inside a bigger file), edit, rename and remove, close, then
//! judge the result with OUTSIDE tools: `e2fsck -fn` must be clean and debugfs must see
//! every byte, mode, owner, time and symlink target as written, the htree of /bigdir
//! intact and extended, and /etc/fstab still on its original inode.

use crate::support::ext_fixture as ext_engine_util;

use ext_engine_util::*;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{GuestFs, NodeAttrs, TreeRead};
use std::collections::BTreeMap;

const MIB: usize = 1 << 20;
const KERNEL_DIR: &str = "/lib/modules/6.1.0-test";
/// What the guest path of the modules tree really is (/lib -> usr/lib in the fixture).
const KERNEL_DIR_REAL: &str = "/usr/lib/modules/6.1.0-test";
const EXT4_INDEX_FL: u32 = 0x1000;

#[derive(Debug, Clone)]
enum Want {
    File(Vec<u8>),
    Link(String),
    Dir,
}

#[derive(Debug, Clone)]
struct Expect {
    want: Want,
    attrs: NodeAttrs,
}

/// The time debugfs should show for `t`: without extra inode fields (128-byte inodes)
/// ext stores only a signed 32-bit value, so later times are clamped.
fn stored_time(t: i64, large_inodes: bool) -> i64 {
    if large_inodes {
        t
    } else {
        t.clamp(i32::MIN as i64, i32::MAX as i64)
    }
}

/// All the writes of one conversion, applied through the engine. Returns what each
/// surviving path must look like (by its real, symlink-free path) and what must be gone.
fn graft(fs: &mut ExtFs) -> (BTreeMap<String, Expect>, Vec<String>) {
    let mut want = BTreeMap::new();
    let mut gone = Vec::new();
    let root_dir = NodeAttrs::root(0o755, 1_600_000_000);

    // Deep directories, one owned by a uid/gid above 65535 and setgid.
    fs.mkdir_p("/usr/lib/graft/deep/path/a/b/c", root_dir)
        .unwrap();
    let vendor = NodeAttrs {
        mode: 0o2750,
        uid: 70_000,
        gid: 70_001,
        mtime: 2_000_000_000,
    };
    fs.mkdir_p("/opt/vendor/x", vendor).unwrap();
    for p in ["/opt", "/opt/vendor", "/opt/vendor/x"] {
        want.insert(
            p.to_string(),
            Expect {
                want: Want::Dir,
                attrs: vendor,
            },
        );
    }
    want.insert(
        "/usr/lib/graft/deep/path/a/b/c".into(),
        Expect {
            want: Want::Dir,
            attrs: root_dir,
        },
    );

    // A modules tree through the guest's /lib -> usr/lib symlink: 7 subdirectories with
    // 30 files each, names long enough that the directories need several blocks.
    let modes = [0o644, 0o755, 0o4755, 0o2711, 0o600, 0o444, 0o1777];
    let uids = [0, 1000, 65_535, 65_536, 70_000, 4_000_000_000];
    let times = [0, 1, -1, 1_000_000_000, 1_700_000_000, (1 << 31) + 12_345];
    let special_sizes = [
        0,
        1,
        59,
        60,
        61,
        1023,
        1024,
        1025,
        4095,
        4096,
        4097,
        49_152,
        49_153,
        65_536,
        100_000,
        MIB + 3,
    ];
    let mut n = 0;
    for d in 0..7 {
        let dir = format!("{KERNEL_DIR}/kernel/drivers/group-{d}");
        fs.mkdir_p(&dir, root_dir).unwrap();
        for f in 0..30 {
            let size = if n < special_sizes.len() {
                special_sizes[n]
            } else {
                (n * 7919) % 300_000
            };
            let data = pattern(n as u64, size);
            let attrs = NodeAttrs {
                mode: modes[n % modes.len()],
                uid: uids[n % uids.len()],
                gid: uids[(n + 1) % uids.len()],
                mtime: times[n % times.len()],
            };
            let name = format!("module-{n:04}-with-a-rather-long-file-name-{f}.ko");
            let path = format!("{dir}/{name}");
            fs.create_file(&path, &mut &data[..], size as u64, attrs)
                .unwrap_or_else(|e| panic!("create {path}: {e}"));
            want.insert(
                format!("{KERNEL_DIR_REAL}/kernel/drivers/group-{d}/{name}"),
                Expect {
                    want: Want::File(data),
                    attrs,
                },
            );
            n += 1;
        }
    }

    // Kernel and initrd: one file of 20 MiB.
    fs.mkdir_p("/boot", root_dir).unwrap();
    let initrd = pattern(4242, 20 * MIB);
    let initrd_attrs = NodeAttrs::root(0o644, 1_700_000_123);
    fs.create_file(
        "/boot/initrd.img-6.1.0-test",
        &mut &initrd[..],
        initrd.len() as u64,
        initrd_attrs,
    )
    .unwrap();
    want.insert(
        "/boot/initrd.img-6.1.0-test".into(),
        Expect {
            want: Want::File(initrd),
            attrs: initrd_attrs,
        },
    );

    // A file with holes: data, 10 zero blocks, data, then a zero tail; and an all-zero
    // file. Both must read back exactly.
    let mut holey = pattern(1, 3 * 4096);
    holey.extend(vec![0u8; 10 * 4096]);
    holey.extend(pattern(2, 3 * 4096));
    holey.extend(vec![0u8; 5000]);
    let zeros = vec![0u8; 65_536];
    for (path, data) in [("/boot/holey", holey), ("/boot/zeros", zeros)] {
        let attrs = NodeAttrs::root(0o600, 1_234_567_890);
        fs.create_file(path, &mut &data[..], data.len() as u64, attrs)
            .unwrap();
        want.insert(
            path.into(),
            Expect {
                want: Want::File(data),
                attrs,
            },
        );
    }

    // Symlinks: fast (< 60 bytes) and slow (>= 60 bytes), relative and absolute.
    let link_attrs = NodeAttrs {
        mode: 0o777,
        uid: 1234,
        gid: 65_537,
        mtime: 1_500_000_000,
    };
    let slow59 = format!("/usr/src/{}", "s".repeat(59 - 9));
    let slow60 = format!("/usr/src/{}", "s".repeat(60 - 9));
    let slow200 = format!("../../{}", "long/".repeat(39));
    let links = [
        ("build", "/usr/src/linux-headers-6.1.0-test".to_string()),
        ("source", "build".to_string()),
        ("fast59", slow59),
        ("slow60", slow60),
        ("slow200", slow200),
    ];
    for (name, target) in &links {
        let path = format!("{KERNEL_DIR}/{name}");
        fs.symlink(&path, target, link_attrs).unwrap();
        want.insert(
            format!("{KERNEL_DIR_REAL}/{name}"),
            Expect {
                want: Want::Link(target.clone()),
                attrs: link_attrs,
            },
        );
    }

    // Replace /etc/fstab in place (bigger than before: needs more blocks), and a file
    // reached through a symlink.
    let fstab = "UUID=0000 / ext4 defaults 0 1\n".repeat(400);
    fs.replace_content("/etc/fstab", fstab.as_bytes()).unwrap();
    fs.replace_content("/lib/modules/x", b"replaced through /lib\n")
        .unwrap();

    // Renames: a directory to another parent, a file in place, a file across
    // directories.
    fs.rename("/usr/lib/graft/deep/path/a", "/opt/moved-a")
        .unwrap();
    let c = want.remove("/usr/lib/graft/deep/path/a/b/c").unwrap();
    want.insert("/opt/moved-a/b/c".into(), c);
    fs.rename("/etc/old-config", "/etc/old-config.imgconv-orig")
        .unwrap();
    gone.push("/etc/old-config".to_string());
    let from = format!(
        "{KERNEL_DIR}/kernel/drivers/group-0/module-0000-with-a-rather-long-file-name-0.ko"
    );
    fs.rename(&from, "/opt/vendor/x/moved.ko").unwrap();
    let real_from = format!(
        "{KERNEL_DIR_REAL}/kernel/drivers/group-0/module-0000-with-a-rather-long-file-name-0.ko"
    );
    let moved = want.remove(&real_from).unwrap();
    want.insert("/opt/vendor/x/moved.ko".into(), moved);
    gone.push(real_from);

    // Removals: a hard link (the other name stays), created files and symlinks, an
    // original fast symlink.
    fs.remove("/etc/hostname.hard").unwrap();
    gone.push("/etc/hostname.hard".into());
    let victim = format!(
        "{KERNEL_DIR_REAL}/kernel/drivers/group-0/module-0015-with-a-rather-long-file-name-15.ko"
    );
    fs.remove(&victim).unwrap();
    want.remove(&victim);
    gone.push(victim);
    for name in ["slow200", "source"] {
        let p = format!("{KERNEL_DIR_REAL}/{name}");
        fs.remove(&p).unwrap();
        want.remove(&p);
        gone.push(p);
    }
    fs.remove("/etc/abs").unwrap();
    gone.push("/etc/abs".into());

    // 100 new entries in the 5000-entry htree directory.
    for i in 0..100 {
        let path = format!("/bigdir/added-{i:03}");
        let data = format!("added {i}\n").into_bytes();
        let attrs = NodeAttrs::root(0o644, 1_650_000_000);
        fs.create_file(&path, &mut &data[..], data.len() as u64, attrs)
            .unwrap();
        want.insert(
            path,
            Expect {
                want: Want::File(data),
                attrs,
            },
        );
    }
    (want, gone)
}

fn graft_and_verify(kind: Kind, size: &str, offset: u64, mkfs_opts: &[&str]) {
    let fx = fixture_with(kind, size, offset, mkfs_opts);
    let before_fstab = fx.stat("/etc/fstab");
    let before_bigdir = fx.stat("/bigdir");
    assert_ne!(
        before_bigdir.flags & EXT4_INDEX_FL,
        0,
        "the fixture's /bigdir must be an htree"
    );
    let hostname_ino = fx.stat("/etc/hostname").ino;
    assert_eq!(fx.stat("/etc/hostname").links, 2);

    let mut fs = ExtFs::open(&fx.img, offset).expect("open");
    assert_eq!(fs.block_size() as u64 * fs.blocks_count(), fx.fs_len);
    let large_inodes = {
        let (_, out, _) = run("dumpe2fs", &["-h", &fx.device()]);
        let size: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("Inode size:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        size > 128
    };
    let free_before = fs.free_blocks();
    let block_size = u64::from(fs.block_size());
    let (want, gone) = graft(&mut fs);
    assert!(
        fs.free_blocks() < free_before - (20 * MIB as u64) / fs.block_size() as u64,
        "the allocator accounted the new blocks"
    );
    fs.close().expect("close");

    // The filesystem oracle.
    fx.assert_fsck_clean();
    fx.assert_guards_intact();

    // Every path as debugfs (an outside reader) sees it.
    let outdir = fx.dir.path().join("dumped");
    std::fs::create_dir(&outdir).unwrap();
    let mut cmds = Vec::new();
    let mut plan = Vec::new();
    for (i, (p, e)) in want.iter().enumerate() {
        let stat_at = cmds.len();
        cmds.push(format!("stat \"{p}\""));
        // Fast symlinks have no data blocks to dump.
        let dump = match &e.want {
            Want::File(_) => true,
            Want::Link(t) => t.len() >= 60,
            Want::Dir => false,
        };
        if dump {
            cmds.push(format!("dump \"{p}\" \"{}/{i}\"", outdir.display()));
        }
        plan.push((p, e, stat_at, outdir.join(i.to_string())));
    }
    let out = fx.debugfs(&cmds);
    for (p, e, stat_at, dumped) in plan {
        let st =
            Stat::parse(&out[stat_at]).unwrap_or_else(|| panic!("{p} missing:\n{}", out[stat_at]));
        let kind_name = match e.want {
            Want::File(_) => "regular",
            Want::Link(_) => "symlink",
            Want::Dir => "directory",
        };
        assert_eq!(st.kind, kind_name, "{p}");
        assert_eq!(st.mode, e.attrs.mode, "{p}: mode");
        assert_eq!((st.uid, st.gid), (e.attrs.uid, e.attrs.gid), "{p}: owner");
        let t = stored_time(e.attrs.mtime, large_inodes);
        assert_eq!((st.mtime, st.atime), (t, t), "{p}: times");
        match &e.want {
            Want::File(data) => {
                assert_eq!(st.size, data.len() as u64, "{p}: size");
                let got = std::fs::read(&dumped).unwrap();
                assert!(got == *data, "{p}: content differs");
            }
            Want::Link(target) => {
                assert_eq!(st.size, target.len() as u64, "{p}: size");
                if target.len() < 60 {
                    assert_eq!(st.fast_link.as_deref(), Some(target.as_str()), "{p}");
                } else {
                    assert_eq!(st.fast_link, None, "{p}: must be a slow symlink");
                    let got = std::fs::read(&dumped).unwrap();
                    assert_eq!(String::from_utf8(got).unwrap(), *target, "{p}: target");
                }
            }
            Want::Dir => {}
        }
    }
    for p in &gone {
        let out = fx.debugfs(&[format!("stat \"{p}\"")]);
        assert!(
            Stat::parse(&out[0]).is_none(),
            "{p} should be gone:\n{}",
            out[0]
        );
    }

    // Holes stay holes: the holey file has 24 KiB of data (+ at most 2 mapping blocks on
    // ext2/3), against 69 KiB without holes; the all-zero file has no block at all.
    let holey = fx.stat("/boot/holey");
    assert!(
        holey.blockcount * 512 <= 24_576 + 2 * block_size,
        "holey file uses {} sectors",
        holey.blockcount
    );
    assert_eq!(fx.stat("/boot/zeros").blockcount, 0);

    // In-place edits kept their inodes.
    let fstab = fx.stat("/etc/fstab");
    assert_eq!(fstab.ino, before_fstab.ino, "fstab kept its inode");
    assert_eq!(
        (fstab.mode, fstab.uid),
        (before_fstab.mode, before_fstab.uid)
    );
    assert_eq!(
        fx.dump("/etc/fstab"),
        "UUID=0000 / ext4 defaults 0 1\n".repeat(400).into_bytes()
    );
    assert_eq!(fx.dump("/usr/lib/modules/x"), b"replaced through /lib\n");
    assert_eq!(fx.dump("/etc/old-config.imgconv-orig"), vec![7u8; 50_000]);
    let hostname = fx.stat("/etc/hostname");
    assert_eq!((hostname.ino, hostname.links), (hostname_ino, 1));
    assert_eq!(fx.dump("/etc/hostname"), b"xenguest\n");

    // The moved directory: its `..` now names /opt (e2fsck checked the link counts).
    let out = fx.debugfs(&["ls -l /opt/moved-a".into(), "stat /opt".into()]);
    let opt = Stat::parse(&out[1]).unwrap();
    let dotdot = out[0]
        .lines()
        .find(|l| l.trim_end().ends_with(" .."))
        .unwrap_or_else(|| panic!("no .. in {}", out[0]));
    assert_eq!(
        dotdot
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap(),
        opt.ino
    );

    // The htree: still indexed, and walking the index finds old and new entries.
    let bigdir = fx.stat("/bigdir");
    assert_ne!(bigdir.flags & EXT4_INDEX_FL, 0, "index flag kept");
    let out = fx.debugfs(&["htree /bigdir".into()]);
    let names = htree_names(&out[0]);
    assert_eq!(
        names.len(),
        BIGDIR_ENTRIES + 100,
        "entries reachable through the htree"
    );
    for i in 0..100 {
        assert!(names.contains_key(&format!("added-{i:03}")), "added-{i:03}");
    }

    // Our own reader agrees after reopening.
    let mut fs = ExtFs::open(&fx.img, offset).unwrap();
    for (p, e) in &want {
        match &e.want {
            Want::File(data) => {
                let got = fs.read_file(p, u64::MAX).unwrap().unwrap();
                assert!(got == *data, "{p}: read back differs");
            }
            Want::Link(t) => assert_eq!(fs.read_link(p).unwrap().as_deref(), Some(t.as_str())),
            Want::Dir => assert_eq!(fs.stat(p).unwrap().unwrap().kind, NodeKind::Dir),
        }
        let meta = fs.lstat(p).unwrap().unwrap();
        assert_eq!(meta.mode, e.attrs.mode, "{p}");
        assert_eq!((meta.uid, meta.gid), (e.attrs.uid, e.attrs.gid), "{p}");
        assert_eq!(meta.mtime, stored_time(e.attrs.mtime, large_inodes), "{p}");
    }
    assert_eq!(
        fs.read_dir("/bigdir", 100_000).unwrap().unwrap().len(),
        BIGDIR_ENTRIES + 100
    );
}

#[test]
fn ext2_bare() {
    graft_and_verify(Kind::Ext2, "512M", 0, &[]);
}

#[test]
fn ext2_at_1mib_offset() {
    graft_and_verify(Kind::Ext2, "512M", 1 << 20, &[]);
}

#[test]
fn ext3_bare() {
    graft_and_verify(Kind::Ext3, "512M", 0, &[]);
}

#[test]
fn ext3_at_1mib_offset() {
    graft_and_verify(Kind::Ext3, "512M", 1 << 20, &[]);
}

#[test]
fn ext4_bare() {
    graft_and_verify(Kind::Ext4, "512M", 0, &[]);
}

#[test]
fn ext4_at_1mib_offset() {
    graft_and_verify(Kind::Ext4, "512M", 1 << 20, &[]);
}

/// 1 KiB blocks and 128-byte inodes (no extra time fields, uid/gid high halves in the
/// classic inode, double-indirect blocks for the 20 MiB file).
#[test]
fn ext3_small_blocks_and_inodes() {
    graft_and_verify(Kind::Ext3, "256M", 0, &["-b", "1024", "-I", "128"]);
}
