//! Shared helpers for the ext engine integration tests: fixture images made at test time
//! with mkfs (`-d` from a small rootfs tree, then `e2fsck -fyD` so /bigdir is a real htree),
//! optionally placed at an offset inside a bigger file, and the outside oracles (e2fsck,
//! debugfs) with parsers for their output.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Entries mkfs puts into /bigdir; e2fsck -D turns it into an htree.
pub const BIGDIR_ENTRIES: usize = 5000;
/// Byte pattern before and after the filesystem when it sits at an offset.
pub const GUARD_BEFORE: u8 = 0xA5;
pub const GUARD_AFTER: u8 = 0x5A;
pub const GUARD_AFTER_LEN: u64 = 1 << 20;
/// Content of /etc/fstab in the fixture.
pub const FSTAB: &str = "/dev/xvda2 / ext4 errors=remount-ro 0 1\n/dev/xvda1 none swap sw 0 0\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ext2,
    Ext3,
    Ext4,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ext2 => "ext2",
            Kind::Ext3 => "ext3",
            Kind::Ext4 => "ext4",
        }
    }
}

/// MiB in a size written like `64M` or `1G`.
fn size_mib(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("size {size:?}"));
    match unit {
        "M" => n,
        "G" => n << 10,
        _ => panic!("size {size:?}: M or G"),
    }
}

/// A filesystem image made for one test.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The file that holds the filesystem (at `offset`).
    pub img: PathBuf,
    pub offset: u64,
    /// Size of the filesystem itself.
    pub fs_len: u64,
    pub kind: Kind,
}

/// Run a command; returns (exit code, stdout, stderr).
pub fn run(cmd: &str, args: &[&str]) -> (i32, String, String) {
    super::tool(cmd, args)
}

/// Run a command that must succeed.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let (rc, out, err) = run(cmd, args);
    assert_eq!(rc, 0, "{cmd} {args:?} failed:\n{out}\n{err}");
    out
}

/// The small guest tree every fixture starts from, with `bigdir` empty files in /bigdir.
pub fn make_rootfs(root: &Path, bigdir: usize) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/lib/modules")).unwrap();
    fs::create_dir_all(root.join("bigdir")).unwrap();
    fs::create_dir_all(root.join("var/empty")).unwrap();
    fs::write(root.join("etc/fstab"), FSTAB).unwrap();
    fs::write(root.join("etc/hostname"), "xenguest\n").unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.hard")).unwrap();
    fs::write(root.join("usr/lib/modules/x"), "module x\n").unwrap();
    fs::write(root.join("etc/old-config"), vec![7u8; 50_000]).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink("/usr/lib/modules/x", root.join("etc/abs")).unwrap();
    symlink("../../../../usr/lib/modules/x", root.join("etc/escape")).unwrap();
    for i in 0..bigdir {
        fs::write(root.join(format!("bigdir/entry-{i:05}")), "").unwrap();
    }
}

/// Make an image of `kind` (`size` like "1G"), filled from the standard rootfs, with
/// /bigdir indexed, placed at `offset` (0 = bare) inside a larger file with guard bytes
/// around it.
pub fn fixture(kind: Kind, size: &str, offset: u64) -> Fixture {
    fixture_with(kind, size, offset, &[])
}

/// As [`fixture`] with extra mkfs options.
pub fn fixture_with(kind: Kind, size: &str, offset: u64, mkfs_opts: &[&str]) -> Fixture {
    fixture_full(kind, size, offset, mkfs_opts, BIGDIR_ENTRIES)
}

/// A quick bare image: the standard tree with only 10 entries in /bigdir.
pub fn small_fixture(kind: Kind, size: &str) -> Fixture {
    fixture_full(kind, size, 0, &[], 10)
}

pub fn fixture_full(
    kind: Kind,
    size: &str,
    offset: u64,
    mkfs_opts: &[&str],
    bigdir: usize,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_rootfs(&root, bigdir);
    let bare = dir.path().join("fs.img");
    super::mkfs(kind.name(), Some(&root), &bare, size_mib(size), mkfs_opts);
    // -D optimises (and indexes) every directory; exit code 1 means "changed", fine.
    let (rc, out) = super::e2fsck(bare.to_str().unwrap(), &["-fyD"]);
    assert!(rc == 0 || rc == 1, "e2fsck -fyD failed ({rc}):\n{out}");
    let fs_len = fs::metadata(&bare).unwrap().len();
    let img = if offset == 0 {
        bare
    } else {
        let disk = dir.path().join("disk.img");
        let mut out = fs::File::create(&disk).unwrap();
        out.write_all(&vec![GUARD_BEFORE; offset as usize]).unwrap();
        let mut src = fs::File::open(&bare).unwrap();
        sparse_copy(&mut src, &mut out);
        out.seek(SeekFrom::Start(offset + fs_len)).unwrap();
        out.write_all(&vec![GUARD_AFTER; GUARD_AFTER_LEN as usize])
            .unwrap();
        drop(out);
        fs::remove_file(&bare).unwrap();
        disk
    };
    Fixture {
        dir,
        img,
        offset,
        fs_len,
        kind,
    }
}

/// Copy `src` to the current position of `dst`, seeking over all-zero MiB chunks.
fn sparse_copy(src: &mut fs::File, dst: &mut fs::File) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            dst.write_all(&buf[..n]).unwrap();
        }
    }
}

impl Fixture {
    /// `img?offset=N` as e2fsprogs tools take it.
    pub fn device(&self) -> String {
        super::e2fs_spec(&self.img, self.offset)
    }

    /// `dumpe2fs -h` as key -> value.
    pub fn dumpe2fs(&self) -> HashMap<String, String> {
        let out = run_ok("dumpe2fs", &["-h", &self.device()]);
        out.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// `e2fsck -fn` must exit 0.
    pub fn assert_fsck_clean(&self) {
        super::assert_e2fsck_clean(&self.device());
    }

    /// The guard bytes around an offset filesystem are untouched.
    pub fn assert_guards_intact(&self) {
        if self.offset == 0 {
            return;
        }
        let mut f = fs::File::open(&self.img).unwrap();
        let mut before = vec![0u8; self.offset as usize];
        f.read_exact(&mut before).unwrap();
        assert!(
            before.iter().all(|&b| b == GUARD_BEFORE),
            "bytes before the fs changed"
        );
        f.seek(SeekFrom::Start(self.offset + self.fs_len)).unwrap();
        let mut after = Vec::new();
        f.read_to_end(&mut after).unwrap();
        assert_eq!(
            after.len() as u64,
            GUARD_AFTER_LEN,
            "the image file changed size"
        );
        assert!(
            after.iter().all(|&b| b == GUARD_AFTER),
            "bytes after the fs changed"
        );
    }

    /// Run debugfs (read-only) with one command per line; returns the output of each
    /// command, in order.
    pub fn debugfs(&self, cmds: &[String]) -> Vec<String> {
        let script = self.dir.path().join("debugfs.cmds");
        fs::write(&script, cmds.join("\n") + "\n").unwrap();
        let out = super::debugfs_with(&self.device(), &["-f", script.to_str().unwrap()], "");
        let mut parts: Vec<String> = Vec::new();
        for line in out.lines() {
            if line.starts_with("debugfs: ") {
                parts.push(String::new());
            } else if let Some(cur) = parts.last_mut() {
                cur.push_str(line);
                cur.push('\n');
            }
        }
        assert_eq!(parts.len(), cmds.len(), "debugfs output:\n{out}");
        parts
    }

    /// `debugfs stat` of one path.
    pub fn stat(&self, path: &str) -> Stat {
        let out = self.debugfs(&[format!("stat \"{path}\"")]);
        Stat::parse(&out[0]).unwrap_or_else(|| panic!("cannot parse stat of {path}:\n{}", out[0]))
    }

    /// Bytes of a file as debugfs reads them (`dump`).
    pub fn dump(&self, path: &str) -> Vec<u8> {
        let out = self.dir.path().join("dump.out");
        let _ = fs::remove_file(&out);
        self.debugfs(&[format!("dump \"{path}\" \"{}\"", out.display())]);
        fs::read(&out).unwrap_or_else(|e| panic!("debugfs could not dump {path}: {e}"))
    }

    /// A whole copy of the image file, to prove something did not change (use on small
    /// images only).
    pub fn snapshot(&self) -> Vec<u8> {
        fs::read(&self.img).unwrap()
    }
}

/// The fields of `debugfs stat` the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub kind: String,
    pub mode: u16,
    pub flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub blockcount: u64,
    pub mtime: i64,
    pub atime: i64,
    pub fast_link: Option<String>,
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

/// `0x6b048095:00000000` or `0x6b048095` → seconds (epoch bits decoded as ext4 does).
fn parse_time(text: &str, key: &str) -> Option<i64> {
    let raw = field(text, key)?;
    let raw = raw.strip_prefix("0x")?;
    let (low, extra) = match raw.split_once(':') {
        Some((l, e)) => (l, Some(e)),
        None => (raw, None),
    };
    let low = u32::from_str_radix(low, 16).ok()? as i32 as i64;
    let epoch = match extra {
        Some(e) => (u32::from_str_radix(e, 16).ok()? & 3) as i64,
        None => 0,
    };
    Some(low + (epoch << 32))
}

impl Stat {
    pub fn parse(text: &str) -> Option<Stat> {
        let fast_link = text.find("Fast link dest: \"").map(|at| {
            let rest = &text[at + "Fast link dest: \"".len()..];
            rest[..rest.rfind('"').unwrap()].to_string()
        });
        Some(Stat {
            ino: field(text, "Inode:")?.parse().ok()?,
            kind: field(text, "Type:")?.to_string(),
            mode: u16::from_str_radix(field(text, "Mode:")?, 8).ok()?,
            flags: u32::from_str_radix(field(text, "Flags:")?.strip_prefix("0x")?, 16).ok()?,
            // debugfs prints ids as signed 32-bit numbers.
            uid: field(text, "User:")?.parse::<i64>().ok()? as u32,
            gid: field(text, "Group:")?.parse::<i64>().ok()? as u32,
            size: field(text, "Size:")?.parse().ok()?,
            links: field(text, "Links:")?.parse().ok()?,
            blockcount: field(text, "Blockcount:")?.parse().ok()?,
            mtime: parse_time(text, "mtime:")?,
            atime: parse_time(text, "atime:")?,
            fast_link,
        })
    }
}

/// Deterministic pseudo-random bytes, so content mismatches are visible.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    super::prng_bytes(seed, len)
}

/// Names (and inode numbers) of the entries `debugfs htree DIR` finds by walking the
/// index: leaf entries look like `1938 0x002d5b0c-ee5bf234 (20) file_2731`.
pub fn htree_names(out: &str) -> HashMap<String, u32> {
    let mut names = HashMap::new();
    for line in out.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        while i + 3 < toks.len() {
            if toks[i].parse::<u32>().is_ok()
                && toks[i + 1].starts_with("0x")
                && toks[i + 2].starts_with('(')
            {
                names.insert(toks[i + 3].to_string(), toks[i].parse().unwrap());
                i += 4;
            } else {
                i += 1;
            }
        }
    }
    names
}
