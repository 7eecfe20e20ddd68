//! Fixtures for the CLI tests, made at test time with the system's tools (sfdisk,
//! mkfs.ext4 -d, mkswap) and the host's GRUB boot images: nothing binary is committed.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `imgconv` as assert_cmd runs it, with a fixed, colourless environment.
pub fn imgconv() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("imgconv").expect("imgconv binary");
    c.env("NO_COLOR", "1").env_remove("IMGCONV_ACCEL");
    c
}

/// Path of the built binary (for tests that spawn it themselves).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgconv"))
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// What to leave out of (or break in) a converted-looking disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskSpec {
    pub no_grub_cfg: bool,
    pub no_initrd: bool,
    pub no_swap_signature: bool,
    pub no_boot_code: bool,
    pub p1_not_bootable: bool,
    pub wrong_uuid_in_cfg: bool,
    /// grub.cfg loads a dracut-named initrd the disk does not have.
    pub cfg_names_absent_initrd: bool,
}

/// Partition 1 starts at 1 MiB and is 49 MiB; partition 2 (swap) is 8 MiB.
pub const P1_OFFSET: u64 = 1 << 20;
pub const P1_SECTORS: u64 = 100_352;
pub const P2_SECTOR: u64 = 102_400;
pub const P2_SECTORS: u64 = 16_384;
pub const KERNEL: &str = "6.1.0-imgconv-test";

/// A 64 MiB raw disk laid out the way imgconv writes one: MBR, p1 ext4 (active, 0x83)
/// with /boot/grub/grub.cfg, i386-pc/normal.mod, a kernel and its initrd; p2 swap (0x82);
/// GRUB's boot.img in LBA 0 pointing at diskboot.img in sector 1. Returns the root UUID.
pub fn converted_disk(dir: &Path, name: &str, spec: DiskSpec) -> (PathBuf, String) {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string();
    let tree = dir.join(format!("{name}.tree"));
    fs::create_dir_all(tree.join("boot/grub/i386-pc")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(
        tree.join("etc/fstab"),
        format!("UUID={uuid} / ext4 errors=remount-ro 0 1\n"),
    )
    .unwrap();
    let cfg_uuid = if spec.wrong_uuid_in_cfg {
        "00000000-0000-0000-0000-000000000000".to_string()
    } else {
        uuid.clone()
    };
    if !spec.no_grub_cfg {
        let initrd = if spec.cfg_names_absent_initrd {
            format!("initramfs-{KERNEL}.img")
        } else {
            format!("initrd.img-{KERNEL}")
        };
        fs::write(
            tree.join("boot/grub/grub.cfg"),
            format!("menuentry 'Debian' {{\n  linux /boot/vmlinuz-{KERNEL} root=UUID={cfg_uuid} ro console=ttyS0\n  initrd /boot/{initrd}\n}}\n"),
        )
        .unwrap();
    }
    fs::copy(
        "/usr/lib/grub/i386-pc/normal.mod",
        tree.join("boot/grub/i386-pc/normal.mod"),
    )
    .unwrap();
    fs::write(
        tree.join(format!("boot/vmlinuz-{KERNEL}")),
        vec![0x4bu8; 200_000],
    )
    .unwrap();
    if !spec.no_initrd {
        fs::write(
            tree.join(format!("boot/initrd.img-{KERNEL}")),
            vec![0x1fu8; 50_000],
        )
        .unwrap();
    }

    let img = dir.join(format!("{name}.img"));
    let f = fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let boot_flag = if spec.p1_not_bootable {
        ""
    } else {
        ", bootable"
    };
    let script = format!(
        "label: dos\nstart=2048, size={P1_SECTORS}, type=83{boot_flag}\nstart={P2_SECTOR}, size={P2_SECTORS}, type=82\n"
    );
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (util-linux/fdisk) is installed");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", &uuid, "-d"])
        .arg(&tree)
        .arg("-E")
        .arg(format!("offset={P1_OFFSET}"))
        .arg(&img)
        .arg(format!("{}k", P1_SECTORS / 2)));
    if !spec.no_swap_signature {
        let swap = dir.join(format!("{name}.swap"));
        fs::File::create(&swap)
            .unwrap()
            .set_len(P2_SECTORS * 512)
            .unwrap();
        run(Command::new("mkswap").arg("-q").arg(&swap));
        write_at(&img, P2_SECTOR * 512, &read_at(&swap, 0, 4096));
        fs::remove_file(&swap).unwrap();
    }
    if !spec.no_boot_code {
        let boot = fs::read("/usr/lib/grub/i386-pc/boot.img").expect("grub-pc-bin is installed");
        write_at(&img, 0, &boot[..0x1b8]);
        write_at(&img, 0x5c, &1u64.to_le_bytes());
        let diskboot = fs::read("/usr/lib/grub/i386-pc/diskboot.img").unwrap();
        write_at(&img, 512, &diskboot[..512]);
    }
    (img, uuid)
}

/// Real-mode code for LBA 0 that prints `IMGCONV-MARKER` on COM1 and halts: a disk the
/// QEMU boot test can succeed on in a second, without a guest kernel.
pub const MARKER_BOOT_SECTOR: &[u8] = &[
    0x31, 0xc0, // xor ax, ax
    0x8e, 0xd8, // mov ds, ax
    0xfc, // cld
    0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
    0xbe, 0x17, 0x7c, // mov si, 0x7c17 (the message below)
    0xac, // lodsb
    0x84, 0xc0, // test al, al
    0x74, 0x03, // jz halt
    0xee, // out dx, al
    0xeb, 0xf8, // jmp lodsb
    0xfa, // halt: cli
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
    b'I', b'M', b'G', b'C', b'O', b'N', b'V', b'-', b'M', b'A', b'R', b'K', b'E', b'R', b'\r',
    b'\n', 0,
];

/// A bare ext4 filesystem image made from `tree` (`mkfs.ext4 -d`).
pub fn ext4_image(path: &Path, tree: &Path, size: &str) {
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(path)
        .arg(size));
}

/// Loop devices currently backed by `file` (`losetup -j`).
pub fn loops_on(file: &Path) -> String {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when running as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Parse stdout as JSON.
pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A 1.5 GiB sparse copy of `fixture` (a bare ext4 guest) grown with resize2fs and
/// carrying `data_mib` MiB of random data in /var/blob: big enough that the stream stage
/// takes a while, so a test can interrupt it.
pub fn big_source(fixture: &Path, dir: &Path, data_mib: usize) -> PathBuf {
    let img = dir.join("big-xen.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture)
        .arg(&img));
    fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(1536 << 20)
        .unwrap();
    run(Command::new("resize2fs").arg("-f").arg(&img));
    let blob = dir.join("blob");
    {
        // Incompressible, non-zero data: a sparse or zero-skipping copy cannot skip it.
        let mut f = fs::File::create(&blob).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..data_mib {
            for b in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
            }
            f.write_all(&chunk).unwrap();
        }
    }
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} /var/blob", blob.display()))
        .arg(&img));
    fs::remove_file(&blob).unwrap();
    img
}
