//! Helpers shared by the stream_* and inspect_* integration tests: building guest trees
//! and ext images with the real mkfs, partitioning with sfdisk, and walking filesystems
//! with debugfs (an outside reader, not our own code) to compare them.

use imgconv_core::layout::{self, DiskPlan, PlanOptions, SourceSpace};
use imgconv_core::output::TempOutput;
use imgconv_core::source::{self, Inspection};
use imgconv_core::stream::{self, StreamStats};
use imgconv_core::{e2fs_tools, Progress, Stage};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a command, panic with its output unless it succeeds; return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command; return its exit code and combined output.
pub fn run_status(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-ec").arg(script))
}

/// `img?offset=N` for e2fsprogs tools.
pub fn dev(img: &Path, offset: u64) -> String {
    super::e2fs_spec(img, offset)
}

pub fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Bytes actually allocated to a file (st_blocks * 512).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Systemd,
    Sysvinit,
    Upstart,
}

fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// A 32-bit x86 ELF header (enough for the architecture probe).
pub fn fake_i386_elf() -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1; // little endian
    h[6] = 1;
    h[16] = 2; // ET_EXEC
    h[18] = 3; // EM_386
    h
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    super::prng_bytes(seed, len)
}

/// Build a Xen PV guest root tree in `root`: the configuration inspect looks for, and
/// files of every kind with owners, modes, times, xattrs, ACLs and hard links.
pub fn guest_tree(root: &Path, init: Init) {
    std::fs::create_dir_all(root).unwrap();
    write(
        root,
        "etc/fstab",
        "# /etc/fstab: static file system information.\n/dev/xvda1 / ext4 errors=remount-ro 0 1\n/dev/xvda2 none swap sw 0 0\nproc /proc proc defaults 0 0\nUUID=1234 /data ext4 defaults 0 2\n",
    );
    write(
        root,
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
    );
    write(root, "etc/hostname", "xenguest\n");
    write(root, "etc/modules", "# modules\nxen-blkfront\nloop\n");
    write(root, "etc/securetty", "console\nhvc0\ntty1\n");
    write(
        root,
        "etc/udev/rules.d/70-persistent-net.rules",
        "# net device ()\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:16:3e:12:34:56\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n",
    );
    write(
        root,
        "boot/grub/menu.lst",
        "default 0\ntimeout 2\ntitle Debian\nroot (hd0)\nkernel /boot/vmlinuz-6.1.0-13-amd64 root=/dev/xvda1 console=hvc0\ninitrd /boot/initrd.img-6.1.0-13-amd64\n",
    );
    write(root, "boot/vmlinuz-6.1.0-13-amd64", noise(300_000, 1));
    write(root, "boot/initrd.img-6.1.0-13-amd64", noise(200_000, 2));
    write(
        root,
        "boot/config-6.1.0-13-amd64",
        "CONFIG_XEN=y\nCONFIG_XEN_PV=y\n# CONFIG_X86_64_XEN is not set\n",
    );
    std::fs::create_dir_all(root.join("lib/modules/6.1.0-13-amd64/kernel")).unwrap();
    write(root, "boot/vmlinuz-2.6.18-xenU", noise(100_000, 3));
    write(root, "boot/vmlinuz-2.6.32-5-amd64", noise(100_000, 4));
    write(root, "boot/config-2.6.32-5-amd64", "CONFIG_X86_64_XEN=y\n");
    let elf = std::fs::read("/bin/true").unwrap();
    match init {
        Init::Systemd => {
            write(root, "lib/systemd/systemd", &elf);
            symlink(root, "sbin/init", "/lib/systemd/systemd");
            symlink(
                root,
                "etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
                "/lib/systemd/system/serial-getty@.service",
            );
            symlink(
                root,
                "etc/systemd/system/getty.target.wants/getty@tty1.service",
                "/lib/systemd/system/getty@.service",
            );
        }
        Init::Sysvinit => {
            write(root, "sbin/init", fake_i386_elf());
            write(
                root,
                "etc/inittab",
                "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\nco:2345:respawn:/sbin/getty hvc0 9600 vt100\n#x0:2345:respawn:/sbin/getty xvc0\n",
            );
        }
        Init::Upstart => {
            write(root, "sbin/init", &elf);
            write(root, "sbin/initctl", &elf);
            write(
                root,
                "etc/init/hvc0.conf",
                "start on stopped rc\nexec /sbin/getty -L hvc0 9600 vt102\n",
            );
            write(
                root,
                "etc/init/tty1.conf",
                "exec /sbin/getty -8 38400 tty1\n",
            );
        }
    }
    write(root, "bin/sh", &elf);

    // Data of every shape.
    write(root, "usr/share/big.bin", noise(11 << 20, 5)); // crosses the 8 MiB chunk size
    write(root, "var/zeros.bin", vec![0u8; 1 << 20]);
    write(
        root,
        "home/user/file with space.txt",
        "hello from the guest\n",
    );
    let many = root.join("usr/share/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..300 {
        std::fs::write(many.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    write(root, "usr/bin/tool-a", noise(5000, 6));
    symlink(root, "usr/bin/fast-link", "tool-a");
    symlink(
        root,
        "usr/bin/slow-link",
        "../../usr/share/a/very/long/relative/target/that/does/not/fit/in/the/inode/itself/xxxxxxxxxxxx",
    );
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    sh(&format!(
        "cd '{r}'
         ln usr/bin/tool-a usr/bin/tool-b
         truncate -s 40M var/sparse.img
         printf 'middle' | dd of=var/sparse.img bs=1 seek=20971520 conv=notrunc status=none
         mkfifo var/fifo
         mknod dev/null c 1 3
         mknod dev/xvda1 b 202 1
         chmod 1777 tmp
         chmod 4755 usr/bin/tool-a
         chown -h 1000:1000 home/user 'home/user/file with space.txt' usr/bin/fast-link
         chmod 0640 'home/user/file with space.txt'
         setfattr -n user.comment -v 'guest xattr' 'home/user/file with space.txt'
         setfattr -n security.selinux -v 'system_u:object_r:bin_t:s0' usr/bin/tool-a
         setfacl -m u:1000:rw,g:100:r var/zeros.bin
         touch -h -d '2001-09-09 01:46:40' usr/bin/fast-link etc/fstab
         touch -d '1999-12-31 23:59:59' var/zeros.bin",
        r = root.display()
    ));
}

/// A guest filesystem: [`super::mkfs`] from `tree`, labelled `xenroot`.
pub fn mkfs(kind: &str, tree: &Path, img: &Path, size_mib: u64, extra: &[&str]) {
    let args = [&["-L", "xenroot"][..], extra].concat();
    super::mkfs(kind, Some(tree), img, size_mib, &args);
}

/// Put `fs_img` into a new partitioned disk `disk` ("dos" or "gpt"). With
/// `boot_partition`, partition 1 is a small ext2 /boot-like filesystem without fstab
/// and the root is partition 2. Returns the root's byte offset.
pub fn partitioned(
    fs_img: &Path,
    disk: &Path,
    label: &str,
    boot_partition: bool,
    work: &Path,
) -> u64 {
    let fs_len = std::fs::metadata(fs_img).unwrap().len();
    let mib = 1u64 << 20;
    let boot_len = 8 * mib;
    let mut script = format!("label: {label}\n");
    let mut parts: Vec<(u64, PathBuf)> = Vec::new();
    let mut next = mib;
    if boot_partition {
        let bt = work.join("boot-tree");
        std::fs::create_dir_all(bt.join("grub")).unwrap();
        std::fs::write(bt.join("grub/menu.lst"), "default 0\n").unwrap();
        let bimg = work.join("boot.img");
        mkfs("ext2", &bt, &bimg, 8, &[]);
        script += &format!("start={}, size={}, type=L\n", next / 512, boot_len / 512);
        parts.push((next, bimg));
        next += boot_len;
    }
    let root_off = next;
    let root_sectors = fs_len.div_ceil(mib) * mib / 512;
    script += &format!("start={}, size={}, type=L\n", next / 512, root_sectors);
    parts.push((next, fs_img.to_path_buf()));
    next += root_sectors * 512;
    let _ = std::fs::remove_file(disk);
    run(Command::new("truncate")
        .arg("-s")
        .arg((next + mib).to_string())
        .arg(disk));
    let mut c = Command::new("sfdisk");
    c.args(["-q", "--no-reread", "--no-tell-kernel"]).arg(disk);
    c.stdin(std::process::Stdio::piped());
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (off, img) in parts {
        run(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                "conv=notrunc,sparse",
                "status=none",
                "oflag=seek_bytes",
            ])
            .arg(format!("seek={off}")));
    }
    root_off
}

/// One file as debugfs sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `debugfs stat` output without the inode checksum and the block map.
    pub stat: String,
    /// The block map lines (EXTENTS/BLOCKS), for byte-identical copies.
    pub blocks: String,
    /// sha256 of the content (regular files), from `debugfs rdump`.
    pub sha256: Option<String>,
    /// Symlink target (fast and slow links), from the symlinks `rdump` recreates.
    pub link: Option<String>,
}

/// Every path of a filesystem, walked by debugfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest(pub BTreeMap<String, Entry>);

/// (`-c`: catastrophic mode, read-only without loading bitmaps, so a filesystem with a
/// deliberately broken bitmap can still be walked.)
fn debugfs(device: &str, request: &str) -> String {
    super::debugfs_with(device, &["-c"], request)
}

/// Walk the filesystem at `offset` of `img` with debugfs: paths, stat of every inode,
/// and content hashes of regular files (dumped with `rdump`).
pub fn manifest(img: &Path, offset: u64) -> Manifest {
    let device = dev(img, offset);
    let mut paths = vec!["/".to_string()];
    let mut dirs = vec!["/".to_string()];
    while let Some(d) = dirs.pop() {
        let listing = debugfs(&device, &format!("ls -p \"{d}\""));
        for line in listing.lines() {
            let f: Vec<&str> = line.split('/').collect();
            if f.len() < 7 {
                continue;
            }
            let (mode, name) = (f[2], f[5]);
            if name == "." || name == ".." || name.is_empty() {
                continue;
            }
            let p = if d == "/" {
                format!("/{name}")
            } else {
                format!("{d}/{name}")
            };
            if mode.starts_with("04") {
                dirs.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    // Thousands of small files: dump them to tmpfs when there is one (file creation
    // on a busy disk costs milliseconds each).
    let work = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let cmds = work.path().join("cmds");
    std::fs::write(
        &cmds,
        paths
            .iter()
            .map(|p| format!("stat \"{p}\"\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = super::debugfs_with(&device, &["-c", "-f", cmds.to_str().unwrap()], "");
    let mut stats: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_blocks = false;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("debugfs: stat \"") {
            current = Some(rest.trim_end_matches('"').to_string());
            in_blocks = false;
            stats.entry(current.clone().unwrap()).or_default();
            continue;
        }
        let Some(cur) = &current else { continue };
        let e = stats.get_mut(cur).unwrap();
        if line.starts_with("EXTENTS:") || line.starts_with("BLOCKS:") {
            in_blocks = true;
        }
        if in_blocks {
            e.1 += line;
            e.1.push('\n');
        } else if !line.starts_with("Inode checksum") {
            e.0 += line;
            e.0.push('\n');
        }
    }
    let dump = work.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    let _ = run_status(
        Command::new("debugfs")
            .args(["-c", "-R"])
            .arg(format!("rdump / {}", dump.display()))
            .arg(&device),
    );
    let mut hashes = BTreeMap::new();
    let listing = sh(&format!(
        "cd '{}' && find . -type f -print0 | xargs -0 -r sha256sum",
        dump.display()
    ));
    for line in listing.lines() {
        let (h, p) = line.split_once("  ").unwrap();
        hashes.insert(p.trim_start_matches('.').to_string(), h.to_string());
    }
    let mut links = BTreeMap::new();
    let listing = sh(&format!(
        "cd '{}' && find . -type l -printf '%p\\t%l\\n'",
        dump.display()
    ));
    for line in listing.lines() {
        let (p, t) = line.split_once('\t').unwrap();
        links.insert(p.trim_start_matches('.').to_string(), t.to_string());
    }
    let map = paths
        .into_iter()
        .map(|p| {
            let (stat, blocks) = stats.get(&p).cloned().unwrap_or_default();
            let sha256 = hashes.get(&p).cloned();
            let link = links.get(&p).cloned();
            (
                p,
                Entry {
                    stat,
                    blocks,
                    sha256,
                    link,
                },
            )
        })
        .collect();
    Manifest(map)
}

impl Manifest {
    /// Panic with the first difference, comparing stat (and block maps when `blocks`).
    pub fn assert_same(&self, other: &Manifest, blocks: bool) {
        let a: Vec<&String> = self.0.keys().collect();
        let b: Vec<&String> = other.0.keys().collect();
        assert_eq!(a, b, "the two filesystems hold different paths");
        for (p, ea) in &self.0 {
            let eb = &other.0[p];
            assert_eq!(ea.stat, eb.stat, "stat of {p} differs");
            assert_eq!(ea.sha256, eb.sha256, "content of {p} differs");
            assert_eq!(ea.link, eb.link, "symlink target of {p} differs");
            if blocks {
                assert_eq!(ea.blocks, eb.blocks, "block map of {p} differs");
            }
        }
    }

    pub fn stat(&self, path: &str) -> &str {
        &self
            .0
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing"))
            .stat
    }
}

/// `e2fsck -fn` must exit 0.
pub fn assert_fsck_clean(img: &Path, offset: u64) {
    super::assert_e2fsck_clean(&dev(img, offset));
}

/// A Progress that records everything and can cancel after N advances.
#[derive(Debug, Default)]
pub struct Recorder {
    pub stages: Vec<(Stage, Option<u64>)>,
    pub advances: Vec<u64>,
    pub notes: Vec<String>,
    pub cancel_after: Option<usize>,
}

impl Progress for Recorder {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        self.stages.push((stage, total));
    }
    fn advance(&mut self, done: u64) {
        self.advances.push(done);
    }
    fn note(&mut self, message: &str) {
        self.notes.push(message.to_string());
    }
    fn is_cancelled(&self) -> bool {
        self.cancel_after.is_some_and(|n| self.advances.len() >= n)
    }
}

/// The result of [`convert`].
pub struct Converted {
    pub inspection: Inspection,
    pub plan: DiskPlan,
    pub stats: StreamStats,
    pub swap_uuid: Option<uuid::Uuid>,
    pub progress: Recorder,
    pub replay: Option<e2fs_tools::ToolRun>,
    pub grow: Option<e2fs_tools::ToolRun>,
}

/// The first half of a conversion with the library API: inspect, plan, write the table,
/// stream, replay (if asked), grow (if planned), swap, commit.
#[allow(clippy::result_large_err)] // imgconv_core::Error is large; not this helper's to box
pub fn convert(
    src: &Path,
    dest: &Path,
    opts: PlanOptions,
    replay_journal: bool,
) -> Result<Converted, imgconv_core::Error> {
    let inspection = source::inspect(src)?;
    inspection.check_journal(replay_journal)?;
    let plan = layout::plan(&SourceSpace::from(&inspection.fs), &opts)?;
    let out = TempOutput::create(dest, plan.disk_bytes, false)?;
    layout::write_mbr(out.file(), &plan)?;
    let fs = inspection.open_fs()?;
    let mut progress = Recorder::default();
    let root = *plan.root();
    let stats = stream::copy_used_blocks(&fs, out.file(), root.start_bytes(), &mut progress)?;
    let replay = if inspection.fs.needs_recovery {
        Some(e2fs_tools::replay_journal(out.path(), root.start_bytes())?)
    } else {
        None
    };
    let grow = match plan.grow {
        Some(g) => Some(e2fs_tools::grow(
            out.path(),
            root.start_bytes(),
            g.to_bytes,
        )?),
        None => None,
    };
    let swap_uuid = match plan.swap() {
        Some(s) => Some(imgconv_core::swap::write_swap(
            out.file(),
            s.start_bytes(),
            s.len_bytes(),
            "swap",
        )?),
        None => None,
    };
    out.commit()?;
    Ok(Converted {
        inspection,
        plan,
        stats,
        swap_uuid,
        progress,
        replay,
        grow,
    })
}
