//! Guest path safety: fixups and grafts resolve paths inside the guest image
//! only. Each guest is made with `mkfs.ext4 -d` here; its /etc, /lib or /boot is a symlink
//! whose target ALSO names a real place on the host (a sentinel directory under /tmp,
//! holding files of its own). After the conversion, debugfs shows that everything landed
//! inside the guest, and the host sentinels are byte-for-byte and mtime-for-mtime as
//! they were, with nothing added.

use crate::support;

use imgconv_core::convert::{convert, Conversion, ConvertOptions};
use imgconv_core::{Error, NoProgress};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL: &str = "6.1.0-99-amd64";

fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A guest root: init, os-release, and an fstab in `etc_dir` (a guest path).
fn guest(root: &Path, etc_dir: &str) {
    for d in ["usr/sbin", "usr/lib", "usr/bin", "boot", "var", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let etc = root.join(etc_dir.trim_start_matches('/'));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("fstab"),
        "/dev/xvda1 / ext4 errors=remount-ro 0 1\n/dev/xvda2 none swap sw 0 0\n",
    )
    .unwrap();
    std::fs::write(etc.join("hostname"), "pathsafety\n").unwrap();
    std::fs::write(
        etc.join("os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n",
    )
    .unwrap();
    std::fs::copy("/usr/bin/true", root.join("usr/sbin/init")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
}

fn mkfs(tree: &Path, img: &Path) {
    support::mkfs("ext4", Some(tree), img, 96, &[]);
}

/// Every file under `dir` (host): path → (content, mtime, mode). Symlinks by target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                todo.push(p.clone());
                Vec::new()
            };
            out.insert(p, (content, m.mtime(), m.mode()));
        }
    }
    out
}

/// A host directory the guest's symlinks name, with sentinel files in it.
struct Sentinel {
    dir: PathBuf,
    before: BTreeMap<PathBuf, (Vec<u8>, i64, u32)>,
}

impl Sentinel {
    fn new(tag: &str) -> Sentinel {
        let dir = PathBuf::from(format!("/tmp/imgconv-escape-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "rel-etc", "boot", "usr/lib/modules"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            std::fs::write(dir.join(sub).join("fstab"), "HOST SENTINEL - never edit\n").unwrap();
        }
        let before = snapshot(&dir);
        Sentinel { dir, before }
    }

    fn guest_path(&self, sub: &str) -> String {
        format!("{}/{sub}", self.dir.display())
    }

    fn assert_untouched(&self) {
        let after = snapshot(&self.dir);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            self.before.keys().collect::<Vec<_>>(),
            "files appeared or vanished on the HOST under {}",
            self.dir.display()
        );
        assert_eq!(
            after,
            self.before,
            "a host file changed under {}",
            self.dir.display()
        );
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn convert_guest(img: &Path, out: &Path) -> Result<Conversion, Error> {
    let fx = support::synthetic();
    let opts = ConvertOptions::new(img, Some(fx.join("donor-dir")), out);
    convert(&opts, &mut NoProgress)
}

fn debugfs(out: &Path, root: u64, req: &str) -> String {
    support::debugfs(&support::e2fs_spec(out, root), req)
}

fn fsck_clean(out: &Path, root: u64) {
    support::assert_e2fsck_clean(&support::e2fs_spec(out, root));
}

/// /etc is an absolute symlink to a path that exists on the host too (with its own
/// fstab), and as a relative one climbing far above the root (`../../../../…`).
#[test]
fn etc_symlinked_outside_resolves_inside_the_guest() {
    let s = Sentinel::new("etc");
    let host_hosts = std::fs::read("/etc/fstab").ok();
    for (name, real, link) in [
        ("absolute", s.guest_path("etc"), s.guest_path("etc")),
        (
            "dotdot",
            s.guest_path("rel-etc"),
            format!("../../../..{}", s.guest_path("rel-etc")),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        guest(&tree, &real);
        std::os::unix::fs::symlink(&link, tree.join("etc")).unwrap();
        let img = dir.path().join("guest.img");
        mkfs(&tree, &img);
        let out = dir.path().join("out.img");
        let done = convert_guest(&img, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let root = done.plan.disk.root().start_bytes();
        fsck_clean(&out, root);
        // The guest's fstab (at the real place) was rewritten, and its backup kept there.
        let fstab = debugfs(&out, root, &format!("cat {real}/fstab"));
        assert!(
            fstab.contains(&format!("UUID={}", done.root_uuid)),
            "{name}: {fstab}"
        );
        let orig = debugfs(&out, root, &format!("cat {real}/fstab.imgconv-orig"));
        assert!(orig.contains("/dev/xvda1"), "{name}: {orig}");
        // /etc is still the same symlink.
        let stat = debugfs(&out, root, "stat /etc");
        assert!(stat.contains("Type: symlink"), "{name}: {stat}");
        assert!(stat.contains(&link), "{name}: {stat}");
        s.assert_untouched();
    }
    assert_eq!(
        std::fs::read("/etc/fstab").ok(),
        host_hosts,
        "the host's /etc/fstab"
    );
}

/// /lib is an absolute symlink (/lib -> /usr/lib, and one to a host-existing path):
/// the modules graft lands in the guest's /usr/lib/modules.
#[test]
fn absolute_lib_symlink_grafts_modules_inside_the_guest() {
    let s = Sentinel::new("lib");
    let host_modules = Path::new("/usr/lib/modules").join(KERNEL);
    let host_had = host_modules.exists();
    for (name, link) in [
        ("usr-lib", "/usr/lib".to_string()),
        ("host-path", s.guest_path("usr/lib")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        guest(&tree, "/etc");
        let real = link.trim_start_matches('/');
        std::fs::create_dir_all(tree.join(real)).unwrap();
        std::os::unix::fs::symlink(&link, tree.join("lib")).unwrap();
        let img = dir.path().join("guest.img");
        mkfs(&tree, &img);
        let out = dir.path().join("out.img");
        let done = convert_guest(&img, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let root = done.plan.disk.root().start_bytes();
        fsck_clean(&out, root);
        let ls = debugfs(&out, root, &format!("ls -l {link}/modules/{KERNEL}"));
        assert!(ls.contains("modules.dep"), "{name}: {ls}");
        let stat = debugfs(&out, root, "stat /lib");
        assert!(
            stat.contains("Type: symlink"),
            "{name}: /lib replaced? {stat}"
        );
        s.assert_untouched();
    }
    assert_eq!(
        host_modules.exists(),
        host_had,
        "host {}",
        host_modules.display()
    );
}

/// /boot is a symlink to a path outside (absolute, naming a host directory with files):
/// kernel, initrd and GRUB files land in the guest directory it names.
#[test]
fn boot_symlinked_outside_receives_the_graft_inside_the_guest() {
    let s = Sentinel::new("boot");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    guest(&tree, "/etc");
    std::fs::remove_dir(tree.join("boot")).unwrap();
    let real = s.guest_path("boot");
    std::fs::create_dir_all(tree.join(real.trim_start_matches('/'))).unwrap();
    std::os::unix::fs::symlink(&real, tree.join("boot")).unwrap();
    let img = dir.path().join("guest.img");
    mkfs(&tree, &img);
    let out = dir.path().join("out.img");
    let done = convert_guest(&img, &out).expect("conversion");
    let root = done.plan.disk.root().start_bytes();
    fsck_clean(&out, root);
    let ls = debugfs(&out, root, &format!("ls -l {real}"));
    assert!(ls.contains(&format!("vmlinuz-{KERNEL}")), "{ls}");
    let cfg = debugfs(&out, root, &format!("cat {real}/grub/grub.cfg"));
    assert!(cfg.contains(&done.root_uuid), "{cfg}");
    s.assert_untouched();
    assert!(!Path::new(&real).join(format!("vmlinuz-{KERNEL}")).exists());
}

/// /etc/fstab is a symlink loop: a clear, typed error that says so, and nothing left.
#[test]
fn fstab_symlink_loop_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    guest(&tree, "/etc");
    std::fs::remove_file(tree.join("etc/fstab")).unwrap();
    std::os::unix::fs::symlink("fstab.d/../fstab-b", tree.join("etc/fstab")).unwrap();
    std::fs::create_dir(tree.join("etc/fstab.d")).unwrap();
    std::os::unix::fs::symlink("/etc/fstab", tree.join("etc/fstab-b")).unwrap();
    let img = dir.path().join("guest.img");
    mkfs(&tree, &img);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let err = convert_guest(&img, &out_dir.join("out.img")).expect_err("a loop cannot convert");
    let text = err.to_string();
    assert!(
        text.contains("/etc/fstab") && text.contains("symbolic links"),
        "the message names the loop: {text}"
    );
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}
