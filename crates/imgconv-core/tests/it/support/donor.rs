//! Donor fixtures built at test time: a directory tree shaped like an unpacked Debian
//! kernel package plus initrd and GRUB files, turned into ext2/3/4 images with
//! `mke2fs -d` and into MBR/GPT disk images with `sfdisk` on plain files (no loop devices,
//! no mounting). Content is deterministic pseudo-random so byte comparisons mean something.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{debugfs_with, Prng};
pub use super::{e2fsck_n, mkfs};
use std::time::{Duration, UNIX_EPOCH};

/// The mtime every fixture file gets (one file gets [`OLD_MTIME`]).
pub const MTIME: u64 = 1_700_000_000;
pub const OLD_MTIME: u64 = 1_600_000_000;
/// Owner of `extra/owned.ko` (to check that owners survive an image donor).
pub const OWNED_UID: u32 = 1000;
pub const OWNED_GID: u32 = 1001;
/// Target of the slow (> 60 bytes, stored in a block) symlink of each modules tree.
pub fn slow_target() -> String {
    format!("../{}", "long-target-name-".repeat(6))
}

/// One kernel of a fixture donor.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub version: String,
    pub vmlinuz: bool,
    /// Initrd file name pattern with `{}` for the version, or None.
    pub initrd: Option<&'static str>,
    pub modules: bool,
    pub config: bool,
    pub system_map: bool,
    pub x86_64: bool,
}

/// A complete 64-bit kernel of version `v`.
pub fn kernel(v: &str) -> KernelSpec {
    KernelSpec {
        version: v.to_string(),
        vmlinuz: true,
        initrd: Some("initrd.img-{}"),
        modules: true,
        config: true,
        system_map: true,
        x86_64: true,
    }
}

/// Deterministic pseudo-random bytes, seeded by a label.
pub fn bytes(seed: &str, len: usize) -> Vec<u8> {
    Prng::from_label(seed).bytes(len)
}

fn write(path: &Path, data: &[u8], mode: u32, mtime: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.set_permissions(fs::Permissions::from_mode(mode)).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
        .unwrap();
}

/// A vmlinuz: a bzImage boot header (64- or 32-bit) followed by pseudo-random data.
pub fn vmlinuz_bytes(version: &str, x86_64: bool) -> Vec<u8> {
    let mut data = imgconv_core::donor::bzimage::synthetic_header(
        0x020F,
        if x86_64 { 0x7F } else { 0x00 },
        &format!("{version} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC"),
    );
    data.extend(bytes(&format!("vmlinuz-{version}"), 300_000));
    data
}

/// Write the files of `k` under `root` (`boot_dir` is where the kernel files go,
/// `modules_base` the modules parent, both relative to `root`).
pub fn write_kernel(root: &Path, boot_dir: &str, modules_base: &str, k: &KernelSpec) {
    let v = &k.version;
    let boot = if boot_dir == "." {
        root.to_path_buf()
    } else {
        root.join(boot_dir)
    };
    fs::create_dir_all(&boot).unwrap();
    if k.vmlinuz {
        write(
            &boot.join(format!("vmlinuz-{v}")),
            &vmlinuz_bytes(v, k.x86_64),
            0o644,
            MTIME,
        );
    }
    if let Some(pattern) = k.initrd {
        let name = pattern.replace("{}", v);
        write(
            &boot.join(name),
            &bytes(&format!("initrd-{v}"), 150_000),
            0o644,
            MTIME,
        );
    }
    if k.config {
        let arch = if k.x86_64 {
            "CONFIG_X86_64=y"
        } else {
            "CONFIG_X86_32=y"
        };
        write(
            &boot.join(format!("config-{v}")),
            format!("# Linux/x86 {v} Kernel Configuration\n{arch}\nCONFIG_VIRTIO_BLK=m\n")
                .as_bytes(),
            0o644,
            MTIME,
        );
    }
    if k.system_map {
        write(
            &boot.join(format!("System.map-{v}")),
            b"ffffffff81000000 T _text\nffffffff81000000 T startup_64\n",
            0o600,
            MTIME,
        );
    }
    if k.modules {
        let m = root.join(modules_base).join(v);
        write(
            &m.join("modules.dep"),
            b"kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\nkernel/drivers/block/virtio_blk.ko:\nkernel/drivers/net/virtio_net.ko:\n",
            0o644,
            MTIME,
        );
        write(
            &m.join("modules.alias"),
            b"alias virtio:d00000002v* virtio_blk\n",
            0o644,
            MTIME,
        );
        write(&m.join("modules.builtin.bin"), b"", 0o644, MTIME);
        write(
            &m.join("kernel/fs/ext4/ext4.ko"),
            &bytes(&format!("ext4-{v}"), 40_000),
            0o644,
            MTIME,
        );
        write(
            &m.join("kernel/lib/crc16.ko"),
            &bytes(&format!("crc16-{v}"), 3_000),
            0o644,
            OLD_MTIME,
        );
        write(
            &m.join("kernel/drivers/block/virtio_blk.ko"),
            &bytes(&format!("virtio_blk-{v}"), 10_000),
            0o644,
            MTIME,
        );
        write(
            &m.join("kernel/drivers/net/virtio_net.ko"),
            &bytes(&format!("virtio_net-{v}"), 15_000),
            0o600,
            MTIME,
        );
        write(
            &m.join("extra/owned.ko"),
            &bytes(&format!("owned-{v}"), 5_000),
            0o640,
            MTIME,
        );
        std::os::unix::fs::chown(m.join("extra/owned.ko"), Some(OWNED_UID), Some(OWNED_GID))
            .unwrap();
        fs::create_dir_all(m.join("kernel/drivers/net/ethernet")).unwrap();
        fs::set_permissions(
            m.join("kernel/drivers/net/ethernet"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        symlink(format!("/usr/src/linux-headers-{v}"), m.join("build")).unwrap();
        symlink("build", m.join("source")).unwrap();
        symlink(slow_target(), m.join("kernel/slow-link")).unwrap();
    }
}

/// GRUB i386-pc files as grub-pc-bin installs them, plus files that must not be copied.
pub fn write_grub(root: &Path) {
    let g = root.join("usr/lib/grub/i386-pc");
    for (name, len) in [
        ("normal.mod", 9_000usize),
        ("ext2.mod", 6_000),
        ("part_msdos.mod", 2_500),
        ("biosdisk.mod", 3_000),
        ("boot.img", 512),
        ("kernel.img", 30_000),
        ("diskboot.img", 512),
        ("lzma_decompress.img", 2_800),
        ("grub-bios-setup", 1_000),
        ("config.h", 100),
    ] {
        write(&g.join(name), &bytes(name, len), 0o644, MTIME);
    }
    write(
        &g.join("moddep.lst"),
        b"normal: boot extcmd\next2: fshelp\n",
        0o644,
        MTIME,
    );
    write(
        &g.join("command.lst"),
        b"*search: search\nls: ls\n",
        0o644,
        MTIME,
    );
    write(&g.join("fs.lst"), b"ext2\n", 0o644, MTIME);
    write(
        &g.join("modinfo.sh"),
        b"grub_version=\"2.06\"\ngrub_target_cpu=i386\n",
        0o644,
        MTIME,
    );
}

/// Names of the fixture's GRUB files that belong in the guest's /boot/grub/i386-pc, sorted.
pub const GRUB_RUNTIME_FILES: &[&str] = &[
    "biosdisk.mod",
    "command.lst",
    "ext2.mod",
    "fs.lst",
    "moddep.lst",
    "modinfo.sh",
    "normal.mod",
    "part_msdos.mod",
];

/// Layout options of a root tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    /// `/lib -> usr/lib`, modules under `usr/lib/modules`.
    pub merged_usr: bool,
    /// Put GRUB files in `usr/lib/grub/i386-pc`.
    pub grub: bool,
}

/// A root filesystem tree with `kernels` in `/boot` and their modules.
pub fn root_tree(root: &Path, kernels: &[KernelSpec], layout: Layout) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"donor\n").unwrap();
    let modules_base = if layout.merged_usr {
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        "usr/lib/modules"
    } else {
        "lib/modules"
    };
    fs::create_dir_all(root.join(modules_base)).unwrap();
    fs::create_dir_all(root.join("boot")).unwrap();
    for k in kernels {
        write_kernel(root, "boot", modules_base, k);
    }
    if layout.grub {
        write_grub(root);
    }
}

/// A partitioned disk image: `label` is `dos` or `gpt`; each partition is a filesystem
/// image to copy in (or None for an empty partition of `size_mib`) with its MBR type /
/// GPT type GUID. Partition 1 starts at 1 MiB, each next one right after the previous.
/// Returns the start byte of each partition.
pub fn disk(img: &Path, label: &str, parts: &[(Option<&Path>, u64, &str)]) -> Vec<u64> {
    const MIB: u64 = 1 << 20;
    let total: u64 = parts.iter().map(|p| p.1).sum::<u64>() * MIB + 2 * MIB;
    let f = fs::File::create(img).unwrap();
    f.set_len(total).unwrap();
    let mut script = format!("label: {label}\n");
    let mut starts = Vec::new();
    let mut start = MIB;
    for (_, size, ty) in parts {
        script.push_str(&format!(
            "start={}, size={}, type={ty}\n",
            start / 512,
            size * MIB / 512
        ));
        starts.push(start);
        start += size * MIB;
    }
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sfdisk (install fdisk)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = fs::OpenOptions::new().write(true).open(img).unwrap();
    for ((fs_img, size, _), start) in parts.iter().zip(&starts) {
        if let Some(p) = fs_img {
            let data = fs::read(p).unwrap();
            assert!(
                data.len() as u64 <= size * MIB,
                "filesystem larger than its partition"
            );
            f.write_all_at(&data, *start).unwrap();
        }
    }
    starts
}

/// Linux filesystem GPT type GUID.
pub const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// BIOS boot partition GPT type GUID.
pub const GPT_BIOS_BOOT: &str = "21686148-6E6B-4449-6F6F-6F6F6F6F6F6F";

/// debugfs on an image (`-w` when `write`); its stdout.
pub fn debugfs(img: &Path, write: bool, request: &str) -> String {
    let flags: &[&str] = if write { &["-w"] } else { &[] };
    debugfs_with(img.to_str().expect("UTF-8 fixture path"), flags, request)
}

/// A fixture root tree and image in a temp dir, kept alive by the returned handle.
pub struct Built {
    pub dir: tempfile::TempDir,
    pub tree: PathBuf,
    pub image: PathBuf,
}

/// Root tree with `kernels` (+ GRUB) as an ext4 image.
pub fn ext4_donor(kernels: &[KernelSpec], layout: Layout) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    root_tree(&tree, kernels, layout);
    let image = dir.path().join("donor.img");
    mkfs("ext4", Some(&tree), &image, 64, &[]);
    Built { dir, tree, image }
}
