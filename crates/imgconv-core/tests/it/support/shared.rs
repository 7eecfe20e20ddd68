//! The helpers every integration test shares, the CLI's tests included (they load this
//! file by path): the fixture locator, the outside tools (one mkfs, one debugfs, one e2fsck
//! wrapper), one PRNG and the visible skip.
//!
//! Fixtures are built by `scripts/fixtures` into a cache outside the repository (see README
//! "Fixtures"); this module only runs that script and parses its MANIFEST.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (crates/imgconv-core/../..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The synthetic fixture directory, built on first use (once per test process) by
/// `scripts/fixtures synthetic`. Panics with the script's stderr if the build fails.
pub fn synthetic() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| run_fixtures(&["synthetic"]).expect("scripts/fixtures synthetic"))
        .clone()
}

/// The real (Debian-built) fixture directory if it is already built; never builds it
/// (that takes minutes and the network: `scripts/fixtures real`).
pub fn real() -> Option<PathBuf> {
    run_fixtures(&["--path", "real"]).ok()
}

fn run_fixtures(args: &[&str]) -> Result<PathBuf, String> {
    let root = repo_root();
    let out = Command::new(root.join("scripts/fixtures"))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/fixtures: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if args[0] != "--path" && !out.status.success() {
        panic!(
            "scripts/fixtures {} failed ({}):\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    if !out.status.success() {
        return Err(stderr);
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        panic!("scripts/fixtures printed {dir:?}, which is not a directory\n{stderr}");
    }
    Ok(dir)
}

/// One MANIFEST row: a filesystem inside a fixture image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    /// File name inside the fixture directory, e.g. `xen-ext4-mbr.img`.
    pub image: String,
    /// `bare`, `mbr` or `gpt`.
    pub kind: String,
    /// 1-based partition number; `None` for a bare filesystem image.
    pub part: Option<u32>,
    /// Byte offset of the filesystem in the image.
    pub start: u64,
    /// Byte size of the filesystem/partition.
    pub size: u64,
    /// blkid TYPE: ext2, ext3, ext4, swap.
    pub fs_type: String,
    /// blkid UUID.
    pub uuid: String,
}

/// Parse `<dir>/MANIFEST` (tab-separated, `#` comments).
pub fn manifest(dir: &Path) -> Vec<ManifestRow> {
    let path = dir.join("MANIFEST");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "bad MANIFEST line {l:?}");
            ManifestRow {
                image: f[0].to_owned(),
                kind: f[1].to_owned(),
                part: if f[2] == "-" {
                    None
                } else {
                    Some(f[2].parse().expect("partition number"))
                },
                start: f[3].parse().expect("start"),
                size: f[4].parse().expect("size"),
                fs_type: f[5].to_owned(),
                uuid: f[6].to_owned(),
            }
        })
        .collect()
}

/// The MANIFEST row of `image` partition `part` (None for a bare image). Panics if absent.
pub fn manifest_row(dir: &Path, image: &str, part: Option<u32>) -> ManifestRow {
    manifest(dir)
        .into_iter()
        .find(|r| r.image == image && r.part == part)
        .unwrap_or_else(|| panic!("{image} part {part:?} not in MANIFEST"))
}

/// The e2fsprogs spelling of a filesystem inside an image: `path?offset=N` (or just the
/// path for offset 0), accepted by e2fsck, debugfs, dumpe2fs.
pub fn e2fs_spec(image: &Path, offset: u64) -> String {
    if offset == 0 {
        image.display().to_string()
    } else {
        format!("{}?offset={offset}", image.display())
    }
}

/// Run an outside tool, returning (exit code, stdout, stderr). Panics if it cannot start.
pub fn tool(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `debugfs -R REQUEST SPEC` stdout (debugfs reports request errors on stderr, exit 0).
pub fn debugfs(spec: &str, request: &str) -> String {
    debugfs_with(spec, &[], request)
}

/// The one debugfs wrapper: `debugfs FLAGS -R REQUEST SPEC` (`-w` to write, `-c` to read
/// without loading bitmaps, `-f FILE` with an empty request for a script); its stdout.
/// Panics unless debugfs exits 0 (it reports request errors on stderr, exit 0).
pub fn debugfs_with(spec: &str, flags: &[&str], request: &str) -> String {
    let mut cmd = Command::new("debugfs");
    cmd.env("DEBUGFS_PAGER", "__none__").args(flags);
    if !request.is_empty() {
        cmd.arg("-R").arg(request);
    }
    let out = cmd
        .arg(spec)
        .output()
        .unwrap_or_else(|e| panic!("cannot run debugfs (run scripts/setup): {e}"));
    assert!(
        out.status.success(),
        "debugfs {flags:?} -R {request:?} {spec} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one e2fsck wrapper: `e2fsck FLAGS SPEC` (`-fn` to judge, `-fy` to repair);
/// (exit code, stdout then stderr).
pub fn e2fsck(spec: &str, flags: &[&str]) -> (i32, String) {
    let out = Command::new("e2fsck")
        .args(flags)
        .arg(spec)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run e2fsck (run scripts/setup): {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `e2fsck -fn SPEC`: (exit code, output).
pub fn e2fsck_n(spec: &str) -> (i32, String) {
    e2fsck(spec, &["-fn"])
}

/// `e2fsck -fn SPEC` must find the filesystem clean (exit 0).
pub fn assert_e2fsck_clean(spec: &str) {
    let (rc, out) = e2fsck_n(spec);
    assert_eq!(rc, 0, "e2fsck -fn {spec} is not clean:\n{out}");
}

/// The one mkfs: `mke2fs -q -F -t KIND EXTRA [-d TREE] IMG SIZE_MIBM`, on a new file
/// (an old one at `img` is removed first, so the image is exactly the size asked).
pub fn mkfs(kind: &str, tree: Option<&Path>, img: &Path, size_mib: u64, extra: &[&str]) {
    let _ = fs::remove_file(img);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", kind]).args(extra);
    if let Some(tree) = tree {
        cmd.arg("-d").arg(tree);
    }
    cmd.arg(img).arg(format!("{size_mib}M"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run mke2fs (run scripts/setup): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one PRNG of the tests: xorshift64 (Marsaglia 2003) behind a splitmix64 scramble of
/// the seed, so nearby seeds give unrelated streams. Deterministic: a failure repeats from
/// its seed, and content mismatches show.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Prng((z ^ (z >> 31)) | 1)
    }

    /// Seeded by a label (FNV-1a of its bytes), for content named after what it fills.
    pub fn from_label(label: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        Prng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    Prng::new(seed).bytes(len)
}

/// Run an outside tool, returning (exit code, stdout then stderr). Panics if it cannot start.
pub fn tool_merged(program: &str, args: &[&str]) -> (i32, String) {
    let (code, out, err) = tool(program, args);
    (code, out + &err)
}

/// A command for the outside tool `name`, found on PATH or in /usr/sbin, /sbin; panics
/// with the fix (scripts/setup) when it is not installed, rather than failing obscurely.
pub fn command(name: &str) -> Command {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/sbin"), Path::new("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.exists());
    Command::new(found.unwrap_or_else(|| panic!("`{name}` is not installed: run scripts/setup")))
}

/// Run `cmd`, which must succeed; its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why a test cannot run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// Something CI provides (root, a built fixture, an installed tool): with
    /// `IMGCONV_REQUIRE_ALL=1` (set by `scripts/test` under CI) the skip is a failure.
    CiCanRun,
    /// A limit of the host itself that CI cannot be asked to lift (the filesystem holding
    /// the temporary directory has no immutable flag): reported, never a failure.
    Host,
}

/// Report that the calling test does not run, and why: a `SKIP <test>: <why>` line written
/// straight to stderr (past the harness's output capture, so it shows in every run) and
/// appended to the file named by `IMGCONV_SKIP_LOG` (which `scripts/test` counts in its
/// summary). Under `IMGCONV_REQUIRE_ALL=1` a [`SkipKind::CiCanRun`] skip panics instead.
/// The caller returns right after.
pub fn skip(kind: SkipKind, why: &str) {
    use std::io::Write;
    let current = std::thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    let line = format!("SKIP {test}: {why}\n");
    if kind == SkipKind::CiCanRun
        && std::env::var_os("IMGCONV_REQUIRE_ALL").is_some_and(|v| v == "1")
    {
        panic!("{test} cannot run ({why}), and IMGCONV_REQUIRE_ALL=1 forbids skipping it");
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("IMGCONV_SKIP_LOG") {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A copy of the synthetic bare ext4 guest (`xen-ext4.img`) in `dir`, grown to 1 GiB with
/// resize2fs and holding a 640 MiB file of non-zero data (`/var/big`): a stream long
/// enough that the graft, fixups and boot stages run while it copies.
pub fn large_guest(dir: &Path) -> PathBuf {
    let img = dir.join("large-guest.img");
    fs::copy(synthetic().join("xen-ext4.img"), &img).expect("copy the synthetic guest");
    let (rc, out) = tool_merged("resize2fs", &[img.to_str().unwrap(), "1G"]);
    assert_eq!(rc, 0, "resize2fs: {out}");
    let data = dir.join("big.data");
    {
        use std::io::Write;
        let chunk = prng_bytes(7, 1 << 20);
        let mut f = std::io::BufWriter::new(fs::File::create(&data).unwrap());
        for _ in 0..640 {
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    debugfs_with(
        img.to_str().unwrap(),
        &["-w"],
        &format!("write {} /var/big", data.display()),
    );
    fs::remove_file(&data).unwrap();
    img
}

/// One tag of what `blkid -p` finds at byte `offset` of `image` (an outside judge of UUIDs,
/// labels and types); empty when it finds nothing.
pub fn blkid_at(image: &Path, offset: u64, tag: &str) -> String {
    let (_, out) = tool_merged(
        "blkid",
        &[
            "-p",
            "-o",
            "value",
            "-s",
            tag,
            "-O",
            &offset.to_string(),
            image.to_str().unwrap(),
        ],
    );
    out.trim().to_string()
}

/// A [`imgconv_core::Progress`] that asks to stop as soon as stage `.0` begins.
pub struct CancelAt(pub imgconv_core::Stage, pub bool);

impl imgconv_core::Progress for CancelAt {
    fn stage(&mut self, stage: imgconv_core::Stage, _total: Option<u64>) {
        if stage == self.0 {
            self.1 = true;
        }
    }
    fn is_cancelled(&self) -> bool {
        self.1
    }
}

/// Export the disk of qcow2 image `qcow2` to raw file `raw` with `qemu-img convert` (an
/// outside judge of what the qcow2 holds).
pub fn qcow2_to_raw(qcow2: &Path, raw: &Path) {
    let (rc, log) = tool_merged(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow2.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "qemu-img convert {}: {log}", qcow2.display());
}

/// `sfdisk -J`'s view of a disk image: its label, and per partition (number from the node
/// name, type, start sector, size in sectors).
pub fn sfdisk_table(img: &Path) -> (String, Vec<(u32, String, u64, u64)>) {
    let (rc, json) = tool_merged("sfdisk", &["-J", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "{json}");
    let t: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parts = t["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let n: u32 = node[node.trim_end_matches(char::is_numeric).len()..]
                .parse()
                .unwrap();
            (
                n,
                p["type"].as_str().unwrap().to_string(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        t["partitiontable"]["label"].as_str().unwrap().to_string(),
        parts,
    )
}
