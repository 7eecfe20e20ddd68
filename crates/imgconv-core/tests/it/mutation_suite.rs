//! Mutation suite: corrupted, truncated and absurd variants of the synthetic Xen
//! guests go through `source::inspect` and `convert::convert`; every run must end in `Ok`
//! or a typed `Err`, never a panic, an abort or a hang, must leave nothing in the output
//! directory when it fails, must not touch its input, and a conversion that succeeds must
//! not leave the root filesystem worse (by `e2fsck -fn`) than its input was.
//!
//! How it works:
//! * Once per fixture, the parent learns where the structures are from outside tools
//!   (`dumpe2fs`, `debugfs -R 'stat PATH'`, `debugfs -R 'imap PATH'`), then a seeded
//!   xorshift PRNG derives the cases: bit flips, byte overwrites, absurd field values
//!   (checksums recomputed for most of them, so the corruption gets past the checksum
//!   gate into the parsers), zeroed structures, truncations, a zero-length file.
//!   Every case is a list of byte patches (plus an optional new length) written to a case
//!   file: the whole suite is repeatable from the seed.
//! * The cases run in CHILD processes (this test binary re-executed on the ignored
//!   `mutation_child` test), two at a time. A child applies one case to a sparse working
//!   copy of the fixture, runs inspect and convert under `catch_unwind`, restores the copy
//!   and prints one result line. The parent enforces a per-case time limit (kills the
//!   child: a hang) and notices a child that dies inside a case (an abort, a segfault, an
//!   allocation failure under the child's 4 GiB address-space limit), then resumes with
//!   the next case in a new child.
//! * `convert` runs on every case whose inspection fails (cheap: it must fail the same
//!   way and leave nothing) and, for a quota of the others, a full conversion: each child
//!   converts the first cases of its chunk that pass inspection, up to the chunk's share
//!   of the fixture's conversion target.
//!
//! Knobs (environment): `IMGCONV_MUTATION_SEED`, `IMGCONV_MUTATION_CASES` (cases per
//! fixture), `IMGCONV_MUTATION_CONVERTS` (conversions past inspection per fixture),
//! `IMGCONV_MUTATION_TIMEOUT` (seconds per case, default 30),
//! `IMGCONV_MUTATION_ONLY` (comma-separated fixture names). The full run (slow tier,
//! `mutation_suite_full`, which `scripts/test` runs) defaults to 600 cases and 105
//! conversions past inspection for ext3, ext4 and the MBR disk, 600 and 100 for ext2 (each
//! of its conversions grows the filesystem with resize2fs), 200 and 30 for the GPT disk;
//! the small run (`mutation_suite_small`, plain `cargo test`) to 60 cases and 4–8
//! conversions per fixture.

use crate::support::{self, Prng};

use imgconv_core::convert::{convert, ConvertOptions};
use imgconv_core::ext::group_desc;
use imgconv_core::source::{self, Superblock};
use imgconv_core::NoProgress;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x1e9c_0008_5eed_2024;
const MARK: &str = "@@mut";

// ---- small helpers ------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    })
}

fn run_tool(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The data segments of a (sparse) file, via SEEK_DATA/SEEK_HOLE.
fn data_segments(f: &File, from: u64, to: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        // SAFETY: lseek on a valid open descriptor; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= to {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { to } else { (hole as u64).min(to) };
        out.push((data as u64, end));
        pos = end;
    }
    out
}

/// Copy the data of `src[from..to)` to the same offsets of `dst` (holes stay holes).
fn copy_range(src: &File, dst: &File, from: u64, to: u64) {
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in data_segments(src, from, to) {
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], pos).expect("read fixture");
            dst.write_all_at(&buf[..n], pos)
                .expect("write working copy");
            pos += n as u64;
        }
    }
}

// ---- where the structures are (outside tools, once per fixture) ---------------------------

/// One block group, as dumpe2fs lists it (block numbers).
#[derive(Debug, Clone, Default)]
struct GroupLoc {
    block_bitmap: u64,
    inode_bitmap: u64,
    itable: u64,
    itable_blocks: u64,
}

/// One inode of interest, as debugfs shows it.
#[derive(Debug, Clone)]
struct InodeLoc {
    path: String,
    ino: u32,
    /// Absolute byte position of the on-disk inode in the image.
    pos: u64,
    flags: u32,
    is_dir: bool,
    is_file: bool,
    /// Physical data blocks (first few hundred).
    data: Vec<u64>,
    /// Mapping blocks: (tag, block), tag IND/DIND/TIND/ETBn.
    meta: Vec<(String, u64)>,
    /// Extended attribute block ("File ACL").
    xattr_block: u64,
}

const EXTENTS_FL: u32 = 0x80000;
const INDEX_FL: u32 = 0x1000;

/// What the parent knows about one fixture filesystem.
#[derive(Debug, Clone)]
struct Layout {
    name: &'static str,
    image: PathBuf,
    image_len: u64,
    /// Byte offset of the filesystem in the image.
    fs: u64,
    /// `None`, `Some("mbr")` or `Some("gpt")`.
    table: Option<&'static str>,
    sb: Superblock,
    bs: u64,
    inode_size: u64,
    desc_size: u64,
    metadata_csum: bool,
    /// Descriptor table of group 0's copy: absolute (start, len) of the used part.
    gdt: (u64, u64),
    groups: Vec<GroupLoc>,
    inodes: Vec<InodeLoc>,
    /// Absolute byte position of the journal superblock.
    journal_sb: Option<u64>,
    /// Highest inode number in use (an upper bound), for random inode picks.
    max_ino: u32,
}

/// `N` right after `prefix` in `line` (decimal).
fn num_after(line: &str, prefix: &str) -> Option<u64> {
    let i = line.find(prefix)? + prefix.len();
    let digits: String = line[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn parse_groups(dump: &str) -> Vec<GroupLoc> {
    let mut groups: Vec<GroupLoc> = Vec::new();
    for line in dump.lines() {
        if line.starts_with("Group ") && line.contains("(Blocks ") {
            groups.push(GroupLoc::default());
            continue;
        }
        let Some(g) = groups.last_mut() else { continue };
        if let Some(b) = num_after(line, "Block bitmap at ") {
            g.block_bitmap = b;
        }
        if let Some(b) = num_after(line, "Inode bitmap at ") {
            g.inode_bitmap = b;
        }
        if let Some(a) = num_after(line, "Inode table at ") {
            g.itable = a;
            let end = line
                .split("Inode table at ")
                .nth(1)
                .and_then(|r| r.split('-').nth(1))
                .and_then(|r| num_after(&format!("x{r}"), "x"))
                .unwrap_or(a);
            g.itable_blocks = end - a + 1;
        }
    }
    groups
}

/// Parse `debugfs -R 'stat P'` and `imap P` into an [`InodeLoc`].
fn inode_loc(spec: &str, fs_off: u64, bs: u64, path: &str) -> Option<InodeLoc> {
    let (_, stat) = run_tool("debugfs", &["-R", &format!("stat {path}"), spec]);
    let first = stat.lines().next()?;
    let ino = num_after(first, "Inode: ")? as u32;
    let flags = first
        .split("Flags: 0x")
        .nth(1)
        .and_then(|f| u32::from_str_radix(f.trim(), 16).ok())
        .unwrap_or(0);
    let is_dir = first.contains("Type: directory");
    let is_file = first.contains("Type: regular");
    let xattr_block = stat
        .lines()
        .find_map(|l| num_after(l, "File ACL: "))
        .unwrap_or(0);
    let mut data = Vec::new();
    let mut meta = Vec::new();
    let mut in_map = false;
    for line in stat.lines() {
        if line.starts_with("BLOCKS:") || line.starts_with("EXTENTS:") {
            in_map = true;
            continue;
        }
        if !in_map || line.starts_with("TOTAL") {
            continue;
        }
        for item in line.split(", ") {
            let Some((tag, phys)) = item.trim().split_once("):") else {
                continue;
            };
            let tag = tag.trim_start_matches('(');
            let mut it = phys.split('-');
            let a: u64 = it.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            let b: u64 = it.next().and_then(|s| s.trim().parse().ok()).unwrap_or(a);
            if a == 0 {
                continue;
            }
            if tag.starts_with(|c: char| c.is_ascii_digit()) {
                for blk in a..=b.min(a + 400) {
                    data.push(blk);
                }
            } else {
                meta.push((tag.to_string(), a));
            }
        }
    }
    let (_, imap) = run_tool("debugfs", &["-R", &format!("imap {path}"), spec]);
    let block = imap
        .lines()
        .find_map(|l| num_after(l, "located at block "))?;
    let off = imap
        .split("offset 0x")
        .nth(1)
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())?;
    Some(InodeLoc {
        path: path.to_string(),
        ino,
        pos: fs_off + block * bs + off,
        flags,
        is_dir,
        is_file,
        data,
        meta,
        xattr_block,
    })
}

/// Paths whose inodes, mapping blocks and data the cases aim at: what inspect and the
/// fixups read, big and sparse files, links, xattrs.
const PATHS: &[&str] = &[
    "/",
    "/etc",
    "/etc/fstab",
    "/etc/os-release",
    "/etc/hostname",
    "/etc/inittab",
    "/etc/init/hvc0.conf",
    "/etc/modules",
    "/etc/securetty",
    "/etc/network/interfaces",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/systemd/system/getty.target.wants",
    "/etc/xattr-file",
    "/usr",
    "/usr/sbin",
    "/usr/sbin/init",
    "/usr/lib/systemd/systemd",
    "/usr/bin/passwd",
    "/sbin",
    "/lib",
    "/boot",
    "/boot/grub",
    "/boot/grub/menu.lst",
    "/var/bigdir",
    "/var/lib/sparse.bin",
    "/srv/links/a",
    "/srv/acl-dir/acl-file",
    "<8>",
];

fn layout(name: &'static str, image: PathBuf, fs: u64, table: Option<&'static str>) -> Layout {
    let spec = support::e2fs_spec(&image, fs);
    let file = File::open(&image).unwrap();
    let image_len = file.metadata().unwrap().len();
    let mut sb_raw = vec![0u8; 1024];
    file.read_exact_at(&mut sb_raw, fs + 1024).unwrap();
    let sb = Superblock::parse(&sb_raw).expect("pristine superblock parses");
    let bs = sb.block_size();
    let (_, dump) = run_tool("dumpe2fs", &[&spec]);
    let groups = parse_groups(&dump);
    assert_eq!(
        groups.len() as u64,
        sb.groups_count(),
        "{name}: dumpe2fs groups"
    );
    let desc_size = sb.desc_size();
    let gdt_start = fs + (u64::from(sb.first_data_block) + 1) * bs;
    let inodes: Vec<InodeLoc> = PATHS
        .iter()
        .filter_map(|p| inode_loc(&spec, fs, bs, p))
        .collect();
    assert!(
        inodes.len() >= 20,
        "{name}: only {} paths found",
        inodes.len()
    );
    let journal_sb = inodes
        .iter()
        .find(|i| i.ino == 8)
        .and_then(|j| j.data.first())
        .map(|b| fs + b * bs);
    let max_ino = inodes.iter().map(|i| i.ino).max().unwrap_or(11) + 64;
    Layout {
        name,
        image,
        image_len,
        fs,
        table,
        metadata_csum: sb
            .has_ro_compat(imgconv_core::ext::superblock::feature::RO_COMPAT_METADATA_CSUM),
        inode_size: u64::from(sb.inode_size),
        gdt: (gdt_start, sb.groups_count() * desc_size),
        desc_size,
        sb,
        bs,
        groups,
        inodes,
        journal_sb,
        max_ino,
    }
}

// ---- targets, fields and checksums --------------------------------------------------------

/// How to make a mutated structure pass its checksum again.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Csum {
    None,
    Super,
    Desc { group: u64 },
    Inode { ino: u32 },
    DirLeaf { ino: u32 },
    Dx { ino: u32, root: bool },
    ExtentBlock { ino: u32 },
    BlockBitmap { group: u64 },
    InodeBitmap { group: u64 },
    GptHeader,
    GptEntries,
}

/// A named on-disk field: offset within its target, width in bytes, big-endian (jbd2).
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    off: u64,
    width: u8,
    be: bool,
}

const fn le(name: &'static str, off: u64, width: u8) -> Field {
    Field {
        name,
        off,
        width,
        be: false,
    }
}

const fn be(name: &'static str, off: u64, width: u8) -> Field {
    Field {
        name,
        off,
        width,
        be: true,
    }
}

const SB_FIELDS: &[Field] = &[
    le("s_inodes_count", 0x00, 4),
    le("s_blocks_count_lo", 0x04, 4),
    le("s_r_blocks_count_lo", 0x08, 4),
    le("s_free_blocks_count_lo", 0x0C, 4),
    le("s_free_inodes_count", 0x10, 4),
    le("s_first_data_block", 0x14, 4),
    le("s_log_block_size", 0x18, 4),
    le("s_log_cluster_size", 0x1C, 4),
    le("s_blocks_per_group", 0x20, 4),
    le("s_clusters_per_group", 0x24, 4),
    le("s_inodes_per_group", 0x28, 4),
    le("s_magic", 0x38, 2),
    le("s_state", 0x3A, 2),
    le("s_rev_level", 0x4C, 4),
    le("s_first_ino", 0x54, 4),
    le("s_inode_size", 0x58, 2),
    le("s_feature_compat", 0x5C, 4),
    le("s_feature_incompat", 0x60, 4),
    le("s_feature_ro_compat", 0x64, 4),
    le("s_reserved_gdt_blocks", 0xCE, 2),
    le("s_journal_inum", 0xE0, 4),
    le("s_desc_size", 0xFE, 2),
    le("s_first_meta_bg", 0x104, 4),
    le("s_blocks_count_hi", 0x150, 4),
    le("s_min_extra_isize", 0x15C, 2),
    le("s_log_groups_per_flex", 0x174, 1),
];

const GD_FIELDS: &[Field] = &[
    le("bg_block_bitmap_lo", 0x00, 4),
    le("bg_inode_bitmap_lo", 0x04, 4),
    le("bg_inode_table_lo", 0x08, 4),
    le("bg_free_blocks_count_lo", 0x0C, 2),
    le("bg_free_inodes_count_lo", 0x0E, 2),
    le("bg_used_dirs_count_lo", 0x10, 2),
    le("bg_flags", 0x12, 2),
    le("bg_itable_unused_lo", 0x1C, 2),
];

const GD64_FIELDS: &[Field] = &[
    le("bg_block_bitmap_hi", 0x20, 4),
    le("bg_inode_table_hi", 0x28, 4),
];

const INODE_FIELDS: &[Field] = &[
    le("i_mode", 0x00, 2),
    le("i_size_lo", 0x04, 4),
    le("i_links_count", 0x1A, 2),
    le("i_blocks_lo", 0x1C, 4),
    le("i_flags", 0x20, 4),
    le("i_block[0]", 0x28, 4),
    le("i_block[1]", 0x2C, 4),
    le("i_block[12]", 0x58, 4),
    le("i_block[13]", 0x5C, 4),
    le("i_block[14]", 0x60, 4),
    le("i_file_acl_lo", 0x68, 4),
    le("i_size_high", 0x6C, 4),
    le("i_extra_isize", 0x80, 2),
];

/// The in-inode extent tree (`i_block`, from inode offset 0x28).
const EXTENT_FIELDS: &[Field] = &[
    le("eh_magic", 0x00, 2),
    le("eh_entries", 0x02, 2),
    le("eh_max", 0x04, 2),
    le("eh_depth", 0x06, 2),
    le("ee_block", 0x0C, 4),
    le("ee_len", 0x10, 2),
    le("ee_start_hi", 0x12, 2),
    le("ee_start_lo", 0x14, 4),
    le("ee[1].ee_block", 0x18, 4),
    le("ee[1].ee_len", 0x1C, 2),
    le("ee[1].ee_start_lo", 0x20, 4),
];

const DX_ROOT_FIELDS: &[Field] = &[
    le("dot.rec_len", 0x04, 2),
    le("dotdot.rec_len", 0x10, 2),
    le("dx_root_info.reserved_zero", 0x18, 4),
    le("dx_root_info.hash_version", 0x1C, 1),
    le("dx_root_info.info_length", 0x1D, 1),
    le("dx_root_info.indirect_levels", 0x1E, 1),
    le("dx_root.limit", 0x20, 2),
    le("dx_root.count", 0x22, 2),
    le("dx_root.block", 0x24, 4),
    le("dx_entry[1].hash", 0x28, 4),
    le("dx_entry[1].block", 0x2C, 4),
];

const DIRENT_FIELDS: &[Field] = &[
    le("de[0].inode", 0x00, 4),
    le("de[0].rec_len", 0x04, 2),
    le("de[0].name_len", 0x06, 1),
    le("de[0].file_type", 0x07, 1),
    le("de[1].inode", 0x0C, 4),
    le("de[1].rec_len", 0x10, 2),
    le("de[1].name_len", 0x12, 1),
];

const JOURNAL_FIELDS: &[Field] = &[
    be("h_magic", 0x00, 4),
    be("h_blocktype", 0x04, 4),
    be("s_blocksize", 0x0C, 4),
    be("s_maxlen", 0x10, 4),
    be("s_first", 0x14, 4),
    be("s_sequence", 0x18, 4),
    be("s_start", 0x1C, 4),
    be("s_feature_incompat", 0x28, 4),
];

const INDIRECT_FIELDS: &[Field] = &[
    le("ptr[0]", 0x00, 4),
    le("ptr[1]", 0x04, 4),
    le("ptr[2]", 0x08, 4),
];

const XATTR_FIELDS: &[Field] = &[
    le("h_magic", 0x00, 4),
    le("h_refcount", 0x04, 4),
    le("h_blocks", 0x08, 4),
    le("e[0].e_name_len", 0x20, 1),
    le("e[0].e_value_offs", 0x22, 2),
    le("e[0].e_value_inum", 0x24, 4),
    le("e[0].e_value_size", 0x28, 4),
];

const MBR_FIELDS: &[Field] = &[
    le("p1.status", 446, 1),
    le("p1.type", 446 + 4, 1),
    le("p1.start_lba", 446 + 8, 4),
    le("p1.sectors", 446 + 12, 4),
    le("p2.status", 462, 1),
    le("p2.type", 462 + 4, 1),
    le("p2.start_lba", 462 + 8, 4),
    le("p2.sectors", 462 + 12, 4),
    le("p3.type", 478 + 4, 1),
    le("p3.start_lba", 478 + 8, 4),
    le("p3.sectors", 478 + 12, 4),
    le("signature", 510, 2),
];

const GPT_HEADER_FIELDS: &[Field] = &[
    le("signature", 0x00, 8),
    le("revision", 0x08, 4),
    le("header_size", 0x0C, 4),
    le("my_lba", 0x18, 8),
    le("alternate_lba", 0x20, 8),
    le("first_usable_lba", 0x28, 8),
    le("last_usable_lba", 0x30, 8),
    le("entries_lba", 0x48, 8),
    le("num_entries", 0x50, 4),
    le("entry_size", 0x54, 4),
];

const GPT_ENTRY_FIELDS: &[Field] = &[
    le("e[0].type_guid", 0x00, 8),
    le("e[0].first_lba", 0x20, 8),
    le("e[0].last_lba", 0x28, 8),
    le("e[0].attributes", 0x30, 8),
    le("e[1].type_guid", 0x80, 8),
    le("e[1].first_lba", 0xA0, 8),
    le("e[1].last_lba", 0xA8, 8),
];

/// One structure the cases aim at.
#[derive(Debug, Clone)]
struct Target {
    cat: &'static str,
    what: String,
    /// Absolute byte range in the image.
    start: u64,
    len: u64,
    csum: Csum,
    fields: &'static [Field],
}

fn targets(l: &Layout) -> Vec<Target> {
    let mut t = Vec::new();
    let bs = l.bs;
    let fs = l.fs;
    let mc = l.metadata_csum;
    let csum_if = |c: Csum| if mc { c } else { Csum::None };
    t.push(Target {
        cat: "superblock",
        what: "primary superblock".into(),
        start: fs + 1024,
        len: 1024,
        csum: csum_if(Csum::Super),
        fields: SB_FIELDS,
    });
    let ngroups = l.groups.len() as u64;
    let gd_csum = |g| {
        if mc
            || l.sb
                .has_ro_compat(imgconv_core::ext::superblock::feature::RO_COMPAT_GDT_CSUM)
        {
            Csum::Desc { group: g }
        } else {
            Csum::None
        }
    };
    for g in [0, ngroups / 2, ngroups - 1] {
        t.push(Target {
            cat: "group-desc",
            what: format!("group {g} descriptor"),
            start: l.gdt.0 + g * l.desc_size,
            len: l.desc_size,
            csum: gd_csum(g),
            fields: if l.desc_size >= 64 {
                GD64_FIELDS
            } else {
                GD_FIELDS
            },
        });
    }
    t.push(Target {
        cat: "group-desc",
        what: "whole descriptor table".into(),
        start: l.gdt.0,
        len: l.gdt.1,
        csum: Csum::None,
        fields: GD_FIELDS,
    });
    for (g, grp) in l
        .groups
        .iter()
        .enumerate()
        .step_by(l.groups.len().div_ceil(4))
    {
        let g = g as u64;
        t.push(Target {
            cat: "block-bitmap",
            what: format!("group {g} block bitmap"),
            start: fs + grp.block_bitmap * bs,
            len: bs,
            csum: csum_if(Csum::BlockBitmap { group: g }),
            fields: INDIRECT_FIELDS,
        });
        t.push(Target {
            cat: "inode-bitmap",
            what: format!("group {g} inode bitmap"),
            start: fs + grp.inode_bitmap * bs,
            len: bs,
            csum: csum_if(Csum::InodeBitmap { group: g }),
            fields: INDIRECT_FIELDS,
        });
        t.push(Target {
            cat: "inode-table",
            what: format!("group {g} inode table, first block"),
            start: fs + grp.itable * bs,
            len: bs,
            csum: Csum::None,
            fields: INODE_FIELDS,
        });
    }
    for ino in (1..=l.max_ino).step_by((l.max_ino as usize / 8).max(1)) {
        t.push(Target {
            cat: "inode-table",
            what: format!("inode {ino}"),
            start: inode_pos(l, ino),
            len: l.inode_size,
            csum: csum_if(Csum::Inode { ino }),
            fields: INODE_FIELDS,
        });
    }
    for i in &l.inodes {
        t.push(Target {
            cat: "inode",
            what: format!("inode {} ({})", i.ino, i.path),
            start: i.pos,
            len: l.inode_size,
            csum: csum_if(Csum::Inode { ino: i.ino }),
            fields: INODE_FIELDS,
        });
        if i.flags & EXTENTS_FL != 0 {
            t.push(Target {
                cat: "extent",
                what: format!("extent tree in inode {} ({})", i.ino, i.path),
                start: i.pos + 0x28,
                len: 60,
                csum: csum_if(Csum::Inode { ino: i.ino }),
                fields: EXTENT_FIELDS,
            });
        }
        for (tag, b) in &i.meta {
            let extent = tag.starts_with("ETB");
            t.push(Target {
                cat: if extent { "extent" } else { "indirect" },
                what: format!("{tag} block {b} of {}", i.path),
                start: fs + b * bs,
                len: bs,
                csum: if extent {
                    csum_if(Csum::ExtentBlock { ino: i.ino })
                } else {
                    Csum::None
                },
                fields: if extent {
                    EXTENT_FIELDS
                } else {
                    INDIRECT_FIELDS
                },
            });
        }
        if i.xattr_block != 0 {
            t.push(Target {
                cat: "xattr",
                what: format!("xattr block of {}", i.path),
                start: fs + i.xattr_block * bs,
                len: bs,
                csum: Csum::None,
                fields: XATTR_FIELDS,
            });
        }
        if i.is_dir {
            for (n, b) in i.data.iter().enumerate().take(24) {
                let htree_root = n == 0 && i.flags & INDEX_FL != 0;
                t.push(Target {
                    cat: if htree_root { "htree" } else { "dir-block" },
                    what: format!("directory block {n} of {}", i.path),
                    start: fs + b * bs,
                    len: bs,
                    csum: if htree_root {
                        csum_if(Csum::Dx {
                            ino: i.ino,
                            root: true,
                        })
                    } else {
                        csum_if(Csum::DirLeaf { ino: i.ino })
                    },
                    fields: if htree_root {
                        DX_ROOT_FIELDS
                    } else {
                        DIRENT_FIELDS
                    },
                });
            }
        }
        if i.is_file && i.ino != 8 && (i.path.starts_with("/etc") || i.path.starts_with("/boot")) {
            for b in i.data.iter().take(2) {
                t.push(Target {
                    cat: "file-data",
                    what: format!("data of {}", i.path),
                    start: fs + b * bs,
                    len: bs,
                    csum: Csum::None,
                    fields: INDIRECT_FIELDS,
                });
            }
        }
    }
    if let Some(j) = l.journal_sb {
        t.push(Target {
            cat: "journal",
            what: "journal superblock".into(),
            start: j,
            len: 1024,
            csum: Csum::None,
            fields: JOURNAL_FIELDS,
        });
    }
    match l.table {
        Some("mbr") => t.push(Target {
            cat: "partition-table",
            what: "MBR".into(),
            start: 0,
            len: 512,
            csum: Csum::None,
            fields: MBR_FIELDS,
        }),
        Some("gpt") => {
            t.push(Target {
                cat: "partition-table",
                what: "protective MBR".into(),
                start: 0,
                len: 512,
                csum: Csum::None,
                fields: MBR_FIELDS,
            });
            t.push(Target {
                cat: "partition-table",
                what: "GPT header".into(),
                start: 512,
                len: 92,
                csum: Csum::GptHeader,
                fields: GPT_HEADER_FIELDS,
            });
            t.push(Target {
                cat: "partition-table",
                what: "GPT entries".into(),
                start: 1024,
                len: 256,
                csum: Csum::GptEntries,
                fields: GPT_ENTRY_FIELDS,
            });
        }
        _ => {}
    }
    t
}

/// A copy-on-write view of the pristine image: loaded byte ranges, mutated in memory,
/// diffed into patches at the end.
struct Edit<'a> {
    file: &'a File,
    bufs: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

impl<'a> Edit<'a> {
    fn new(file: &'a File) -> Self {
        Edit {
            file,
            bufs: Vec::new(),
        }
    }

    /// The bytes `[start, start+len)`, loaded on first use. A range that overlaps ranges
    /// already loaded is merged with them, so every byte has exactly one copy.
    fn get(&mut self, start: u64, len: u64) -> &mut [u8] {
        let idx = match self
            .bufs
            .iter()
            .position(|(s, _, d)| start >= *s && start + len <= s + d.len() as u64)
        {
            Some(i) => i,
            None => {
                let (mut lo, mut hi) = (start, start + len);
                loop {
                    let before = (lo, hi);
                    for (s, _, d) in &self.bufs {
                        let e = s + d.len() as u64;
                        if *s < hi && e > lo {
                            lo = lo.min(*s);
                            hi = hi.max(e);
                        }
                    }
                    if (lo, hi) == before {
                        break;
                    }
                }
                let mut orig = vec![0u8; (hi - lo) as usize];
                // Past the end of the file reads as zeros.
                let _ = self.file.read_at(&mut orig, lo);
                let mut data = orig.clone();
                self.bufs.retain(|(s, o, d)| {
                    let e = s + d.len() as u64;
                    if *s >= lo && e <= hi {
                        let at = (s - lo) as usize;
                        data[at..at + d.len()].copy_from_slice(d);
                        orig[at..at + o.len()].copy_from_slice(o);
                        false
                    } else {
                        true
                    }
                });
                self.bufs.push((lo, orig, data));
                self.bufs.len() - 1
            }
        };
        let (s, _, d) = &mut self.bufs[idx];
        let off = (start - *s) as usize;
        &mut d[off..off + len as usize]
    }

    fn patches(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for (s, orig, data) in &self.bufs {
            let mut i = 0;
            while i < data.len() {
                if data[i] == orig[i] {
                    i += 1;
                    continue;
                }
                let begin = i;
                // Merge runs separated by fewer than 8 equal bytes.
                let mut end = i + 1;
                while end < data.len() {
                    if (end..(end + 8).min(data.len())).any(|k| data[k] != orig[k]) {
                        end += 1;
                    } else {
                        break;
                    }
                }
                out.push((s + begin as u64, data[begin..end].to_vec()));
                i = end;
            }
        }
        out
    }
}

fn read_field(b: &[u8], f: &Field) -> u64 {
    let bytes = &b[f.off as usize..f.off as usize + f.width as usize];
    let mut v = 0u64;
    for (i, x) in bytes.iter().enumerate() {
        if f.be {
            v = (v << 8) | u64::from(*x);
        } else {
            v |= u64::from(*x) << (8 * i);
        }
    }
    v
}

fn write_field(b: &mut [u8], f: &Field, v: u64) {
    let w = f.width as usize;
    for i in 0..w {
        let byte = (v >> (8 * i)) as u8;
        let pos = if f.be { w - 1 - i } else { i };
        b[f.off as usize + pos] = byte;
    }
}

/// An absurd (or merely wrong) value for a field of `width` bytes that held `orig`.
fn absurd(rng: &mut Prng, orig: u64, width: u8) -> u64 {
    let max = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let v = match rng.below(16) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max - 1,
        4 => 1 << (8 * u64::from(width) - 1),
        5 => orig.wrapping_add(1),
        6 => orig.wrapping_sub(1),
        7 => orig.wrapping_mul(2),
        8 => orig / 2,
        9 => orig ^ (1 << rng.below(8 * u64::from(width))),
        10 => *rng.pick(&[2, 3, 7, 8, 31, 32, 63, 64, 255, 256]),
        11 => *rng.pick(&[4095, 4096, 65535, 65536, 1 << 20, 1 << 24, 1 << 31]),
        12 => orig.wrapping_mul(1000),
        13 => orig.wrapping_add(rng.below(4096)),
        _ => rng.next_u64(),
    };
    v & max
}

// ---- checksums (so that corruption gets past the checksum gates) --------------------------

fn crc32c(seed: u32, data: &[u8]) -> u32 {
    imgconv_core::ext::csum::crc32c_raw(seed, data)
}

fn inode_seed(l: &Layout, ino: u32, gen: u32) -> u32 {
    let s = crc32c(l.sb.csum_seed(), &ino.to_le_bytes());
    crc32c(s, &gen.to_le_bytes())
}

fn inode_pos(l: &Layout, ino: u32) -> u64 {
    let ipg = u64::from(l.sb.inodes_per_group);
    let g = (u64::from(ino) - 1) / ipg;
    let idx = (u64::from(ino) - 1) % ipg;
    l.fs + l.groups[g as usize].itable * l.bs + idx * l.inode_size
}

/// The generation the (possibly mutated) inode `ino` carries.
fn generation(l: &Layout, e: &mut Edit, ino: u32) -> u32 {
    let pos = inode_pos(l, ino);
    let b = e.get(pos, l.inode_size);
    u32::from_le_bytes(b[0x64..0x68].try_into().unwrap())
}

fn fix_inode(l: &Layout, e: &mut Edit, ino: u32) {
    let pos = inode_pos(l, ino);
    let isz = l.inode_size as usize;
    let gen = generation(l, e, ino);
    let seed = inode_seed(l, ino, gen);
    let b = e.get(pos, l.inode_size);
    let extra = if isz > 128 {
        u16::from_le_bytes([b[0x80], b[0x81]]) as usize
    } else {
        0
    };
    let has_hi = isz > 128 && extra >= 4;
    let mut tmp = b.to_vec();
    tmp[0x7C] = 0;
    tmp[0x7D] = 0;
    if has_hi {
        tmp[0x82] = 0;
        tmp[0x83] = 0;
    }
    let c = crc32c(seed, &tmp);
    b[0x7C..0x7E].copy_from_slice(&(c as u16).to_le_bytes());
    if has_hi {
        b[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
    }
}

fn fix_desc(l: &Layout, e: &mut Edit, group: u64) {
    let pos = l.gdt.0 + group * l.desc_size;
    let d = e.get(pos, l.desc_size);
    if let Some(c) = group_desc::expected_desc_checksum(&l.sb, group, d) {
        d[0x1E..0x20].copy_from_slice(&c.to_le_bytes());
    }
}

fn fix(l: &Layout, e: &mut Edit, t: &Target) {
    match t.csum {
        Csum::None => {}
        Csum::Super => {
            let b = e.get(t.start, 1024);
            let c = crc32c(!0, &b[..0x3FC]);
            b[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
        }
        Csum::Desc { group } => fix_desc(l, e, group),
        Csum::Inode { ino } => fix_inode(l, e, ino),
        Csum::DirLeaf { ino } => {
            let gen = generation(l, e, ino);
            let seed = inode_seed(l, ino, gen);
            let bs = l.bs as usize;
            let b = e.get(t.start, t.len);
            // struct ext4_dir_entry_tail: inode 0, rec_len 12, name_len 0, type 0xDE.
            if b[bs - 12..bs - 4] == [0, 0, 0, 0, 12, 0, 0, 0xDE] {
                let c = crc32c(seed, &b[..bs - 12]);
                b[bs - 4..].copy_from_slice(&c.to_le_bytes());
            }
        }
        Csum::Dx { ino, root } => {
            let gen = generation(l, e, ino);
            let seed = inode_seed(l, ino, gen);
            let b = e.get(t.start, t.len);
            let count_off = if root { 0x20 } else { 0x08 };
            let limit = u16::from_le_bytes([b[count_off], b[count_off + 1]]) as usize;
            let count = u16::from_le_bytes([b[count_off + 2], b[count_off + 3]]) as usize;
            let tail = count_off + limit * 8;
            let size = count_off + count * 8;
            if tail + 8 <= b.len() && size <= tail {
                let c = crc32c(seed, &b[..size]);
                let c = crc32c(c, &b[tail..tail + 4]);
                b[tail + 4..tail + 8].copy_from_slice(&c.to_le_bytes());
            }
        }
        Csum::ExtentBlock { ino } => {
            let gen = generation(l, e, ino);
            let seed = inode_seed(l, ino, gen);
            let b = e.get(t.start, t.len);
            let max = u16::from_le_bytes([b[4], b[5]]) as usize;
            let tail = 12 + 12 * max;
            if tail + 4 <= b.len() {
                let c = crc32c(seed, &b[..tail]);
                b[tail..tail + 4].copy_from_slice(&c.to_le_bytes());
            }
        }
        Csum::BlockBitmap { group } => {
            let bm = e.get(t.start, t.len).to_vec();
            if let Some(c) = group_desc::expected_bitmap_checksum(&l.sb, &bm) {
                let d = e.get(l.gdt.0 + group * l.desc_size, l.desc_size);
                d[0x18..0x1A].copy_from_slice(&(c as u16).to_le_bytes());
                if d.len() >= 0x3A {
                    d[0x38..0x3A].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
                }
                fix_desc(l, e, group);
            }
        }
        Csum::InodeBitmap { group } => {
            let n = (l.sb.inodes_per_group as usize / 8).min(t.len as usize);
            let bm = e.get(t.start, t.len)[..n].to_vec();
            let c = crc32c(l.sb.csum_seed(), &bm);
            let d = e.get(l.gdt.0 + group * l.desc_size, l.desc_size);
            d[0x1A..0x1C].copy_from_slice(&(c as u16).to_le_bytes());
            if d.len() >= 0x3C {
                d[0x3A..0x3C].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
            }
            fix_desc(l, e, group);
        }
        Csum::GptHeader | Csum::GptEntries => {
            // Entries CRC (over num_entries * entry_size bytes, capped), then header CRC.
            let h = e.get(512, 92).to_vec();
            let n = u32::from_le_bytes(h[0x50..0x54].try_into().unwrap()) as u64;
            let sz = u32::from_le_bytes(h[0x54..0x58].try_into().unwrap()) as u64;
            let len = (n * sz).min(128 * 128);
            if t.csum == Csum::GptEntries && len > 0 {
                let entries = e.get(1024, 128 * 128)[..len as usize].to_vec();
                let c = crc32fast::hash(&entries);
                e.get(512, 92)[0x58..0x5C].copy_from_slice(&c.to_le_bytes());
            }
            let h = e.get(512, 92);
            let hs = (u32::from_le_bytes(h[0x0C..0x10].try_into().unwrap()) as usize).min(92);
            let mut tmp = h[..hs].to_vec();
            if tmp.len() >= 0x14 {
                tmp[0x10..0x14].fill(0);
            }
            let c = crc32fast::hash(&tmp);
            h[0x10..0x14].copy_from_slice(&c.to_le_bytes());
        }
    }
}

// ---- cases --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Case {
    id: usize,
    label: String,
    /// New length of the image (truncation), if any.
    truncate: Option<u64>,
    patches: Vec<(u64, Vec<u8>)>,
    /// May run a full conversion (the child's quota permitting) if inspection succeeds.
    full: bool,
}

/// Category weights: every category gets cases; partitioned fixtures favour the table.
fn pick_target<'a>(rng: &mut Prng, l: &Layout, targets: &'a [Target]) -> &'a Target {
    let mut cats: Vec<&str> = Vec::new();
    for t in targets {
        if !cats.contains(&t.cat) {
            cats.push(t.cat);
        }
    }
    let cat = if l.table.is_some() && rng.chance(1, 4) {
        "partition-table"
    } else {
        *rng.pick(&cats)
    };
    let of_cat: Vec<&Target> = targets.iter().filter(|t| t.cat == cat).collect();
    of_cat[rng.below(of_cat.len() as u64) as usize]
}

fn mutate_target(rng: &mut Prng, l: &Layout, e: &mut Edit, t: &Target) -> String {
    let kind = rng.below(100);
    let mut label;
    {
        let b = e.get(t.start, t.len);
        if kind < 40 {
            let flips = 1 + rng.below(4);
            // Half the time within the first 128 bytes, where headers and fields are.
            let span = if rng.chance(1, 2) {
                b.len().min(128)
            } else {
                b.len()
            };
            let mut at = Vec::new();
            for _ in 0..flips {
                let i = rng.below(span as u64) as usize;
                b[i] ^= 1 << rng.below(8);
                at.push(format!("+{i:#x}"));
            }
            label = format!("{} bit flip(s) at {}", flips, at.join(","));
        } else if kind < 55 {
            let n = 1 + rng.below(8) as usize;
            let i = rng.below(b.len().saturating_sub(n) as u64 + 1) as usize;
            let fill = *rng.pick(&[0x00u8, 0xFF, 0x80, 0x7F, 0x41]);
            let random = rng.chance(1, 2);
            for k in i..(i + n).min(b.len()) {
                b[k] = if random { rng.next_u64() as u8 } else { fill };
            }
            label = format!(
                "{n} bytes at +{i:#x} := {}",
                if random {
                    "random".to_string()
                } else {
                    format!("{fill:#04x}")
                }
            );
        } else if kind < 93 {
            let f = *rng.pick(t.fields);
            if (f.off + u64::from(f.width)) as usize <= b.len() {
                let orig = read_field(b, &f);
                let v = absurd(rng, orig, f.width);
                write_field(b, &f, v);
                label = format!("{} {orig:#x} -> {v:#x}", f.name);
            } else {
                b[0] ^= 0xFF;
                label = "first byte inverted".into();
            }
        } else {
            let n = if rng.chance(1, 2) {
                b.len()
            } else {
                b.len().min(512)
            };
            b[..n].fill(0);
            label = format!("first {n} bytes zeroed");
        }
    }
    // Recompute the checksum most of the time so the parsers see the corruption.
    if t.csum != Csum::None && rng.chance(3, 4) {
        fix(l, e, t);
        label.push_str(" [csum fixed]");
    }
    format!("{}: {}: {label}", t.cat, t.what)
}

/// Byte patches: (position, new bytes).
type Patches = Vec<(u64, Vec<u8>)>;

/// Hostile block maps, the same for every seed: a block-mapped `/etc/fstab` whose
/// triple-indirect block lists itself (an extent-mapped one: its extent moved into the
/// inode table), `/etc` whose double-indirect block lists itself (extents: its first
/// extent listed twice), and `/etc/hostname` sharing `/etc/fstab`'s first block. Each
/// inode's checksum is recomputed, so only the map is wrong.
fn hostile_cases(l: &Layout, file: &File) -> Vec<(String, Patches)> {
    let find = |p: &str| l.inodes.iter().find(|i| i.path == p);
    let mut out = Vec::new();
    // i_block starts at 0x28; block-map entries are 4 bytes, extent entries 12 after a
    // 12-byte header (ee_start_lo at +8 of an entry).
    let i_block = |i: &InodeLoc, k: u64| i.pos + 0x28 + 4 * k;
    let mut case = |label: String, edit: &dyn Fn(&mut Edit)| {
        let mut e = Edit::new(file);
        edit(&mut e);
        out.push((label, e.patches()));
    };
    let set32 = |e: &mut Edit, at: u64, v: u32| e.get(at, 4).copy_from_slice(&v.to_le_bytes());
    if let (Some(fstab), Some(g0)) = (find("/etc/fstab"), l.groups.first()) {
        if let Some(&d0) = fstab.data.first() {
            if fstab.flags & EXTENTS_FL == 0 {
                case(
                    "hostile: /etc/fstab triple-indirect block lists itself".into(),
                    &|e| {
                        set32(e, i_block(fstab, 14), d0 as u32);
                        let blk = e.get(l.fs + d0 * l.bs, l.bs);
                        for c in blk.chunks_mut(4) {
                            c.copy_from_slice(&(d0 as u32).to_le_bytes());
                        }
                        fix_inode(l, e, fstab.ino);
                    },
                );
            } else {
                case(
                    "hostile: /etc/fstab extent points into the inode table".into(),
                    &|e| {
                        set32(e, i_block(fstab, 5), g0.itable as u32);
                        fix_inode(l, e, fstab.ino);
                    },
                );
            }
            if let Some(host) = find("/etc/hostname") {
                let k = if host.flags & EXTENTS_FL == 0 { 0 } else { 5 };
                case(
                    "hostile: /etc/hostname shares /etc/fstab's first block".into(),
                    &|e| {
                        set32(e, i_block(host, k), d0 as u32);
                        fix_inode(l, e, host.ino);
                    },
                );
            }
        }
    }
    if let Some(etc) = find("/etc") {
        if let Some(&d0) = etc.data.first() {
            if etc.flags & EXTENTS_FL == 0 {
                case(
                    "hostile: /etc double-indirect block lists itself".into(),
                    &|e| {
                        set32(e, i_block(etc, 13), d0 as u32);
                        let blk = e.get(l.fs + d0 * l.bs, l.bs);
                        for c in blk.chunks_mut(4) {
                            c.copy_from_slice(&(d0 as u32).to_le_bytes());
                        }
                        fix_inode(l, e, etc.ino);
                    },
                );
            } else {
                case("hostile: /etc lists its first extent twice".into(), &|e| {
                    let first = e.get(i_block(etc, 3), 12).to_vec();
                    // A second entry equal to the first, and the header's count at 2.
                    e.get(i_block(etc, 6), 12).copy_from_slice(&first);
                    e.get(i_block(etc, 0) + 2, 2)
                        .copy_from_slice(&2u16.to_le_bytes());
                    fix_inode(l, e, etc.ino);
                });
            }
        }
    }
    out
}

fn gen_cases(l: &Layout, n: usize, seed: u64) -> Vec<Case> {
    let targets = targets(l);
    let file = File::open(&l.image).unwrap();
    let hostile = hostile_cases(l, &file);
    let mut rng = Prng::new(seed ^ l.name.bytes().fold(0u64, |h, b| h * 131 + u64::from(b)));
    let mut cases = Vec::with_capacity(n);
    for id in 0..n {
        let roll = rng.below(100);
        let case = if id == 0 {
            Case {
                id,
                label: "zero-length file".into(),
                truncate: Some(0),
                patches: vec![],
                full: false,
            }
        } else if let Some((label, patches)) = hostile.get(id - 1) {
            Case {
                id,
                label: label.clone(),
                truncate: None,
                patches: patches.clone(),
                full: false,
            }
        } else if roll < 8 {
            let len = match rng.below(4) {
                0 => rng.below(l.fs + 4 * 1024 * 1024),
                1 => rng.below(l.fs + 4096),
                2 => l.image_len - 1 - rng.below(1 << 16),
                _ => rng.below(l.image_len),
            };
            Case {
                id,
                label: format!("truncated to {len} bytes"),
                truncate: Some(len),
                patches: vec![],
                full: false,
            }
        } else {
            // 1 mutation, or (1 in 10) several in different structures.
            let mut label = String::new();
            let mut patches = Vec::new();
            for _attempt in 0..6 {
                let mut e = Edit::new(&file);
                let count = if rng.chance(1, 10) {
                    2 + rng.below(4)
                } else {
                    1
                };
                let mut labels = Vec::new();
                for _ in 0..count {
                    let t = pick_target(&mut rng, l, &targets);
                    labels.push(mutate_target(&mut rng, l, &mut e, t));
                }
                patches = e.patches();
                label = labels.join(" + ");
                if !patches.is_empty() {
                    break;
                }
            }
            Case {
                id,
                label,
                truncate: None,
                patches,
                full: false,
            }
        };
        cases.push(case);
    }
    // Truncated images fail inspection; every other case may be converted.
    for c in &mut cases {
        c.full = c.truncate.is_none();
    }
    cases
}

fn write_cases(path: &Path, cases: &[Case]) {
    let mut f = std::io::BufWriter::new(File::create(path).unwrap());
    for c in cases {
        let patches: Vec<String> = c
            .patches
            .iter()
            .map(|(o, b)| format!("{o}:{}", hex(b)))
            .collect();
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}",
            c.id,
            u8::from(c.full),
            c.truncate.map_or("-".into(), |t| t.to_string()),
            c.label.replace(['\t', '\n'], " "),
            patches.join(",")
        )
        .unwrap();
    }
}

fn read_cases(path: &Path) -> Vec<Case> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Case {
                id: f[0].parse().unwrap(),
                full: f[1] == "1",
                truncate: (f[2] != "-").then(|| f[2].parse().unwrap()),
                label: f[3].to_string(),
                patches: f[4]
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (o, h) = p.split_once(':').unwrap();
                        (o.parse().unwrap(), unhex(h))
                    })
                    .collect(),
            }
        })
        .collect()
}

// ---- the child: run cases, one result line each ------------------------------------------

static PANICS: AtomicUsize = AtomicUsize::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// What one library call did.
fn outcome<T>(
    r: std::thread::Result<Result<T, impl std::fmt::Debug>>,
    prefix: &str,
) -> (String, Option<T>) {
    match r {
        Ok(Ok(v)) => ("ok".into(), Some(v)),
        Ok(Err(e)) => (
            format!("err:{prefix}{}", error_kind(&format!("{e:?}"))),
            None,
        ),
        Err(_) => ("panic".into(), None),
    }
}

/// `Inspect(Corrupt { .. })` → `Inspect::Corrupt`: variant names, up to three levels.
fn error_kind(debug: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = debug;
    for _ in 0..3 {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        parts.push(ident.clone());
        rest = &rest[ident.len()..];
        match rest.strip_prefix('(') {
            Some(r) => rest = r,
            None => break,
        }
    }
    parts.join("::")
}

/// `e2fsck -fn` verdict: 0 clean, 1 errors found, 2 could not check.
fn fsck_rank(spec: &str) -> u8 {
    match support::e2fsck_n(spec).0 {
        0 => 0,
        c if (1..8).contains(&c) => 1,
        _ => 2,
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn child_run(job: &str) {
    // job: cases-file \t image \t donor \t workdir \t from \t to \t conversion quota
    let f: Vec<&str> = job.split('\t').collect();
    let (cases_path, pristine, donor, work) = (
        Path::new(f[0]),
        Path::new(f[1]),
        Path::new(f[2]),
        Path::new(f[3]),
    );
    let from: usize = f[4].parse().unwrap();
    let to: usize = f[5].parse().unwrap();
    let quota: usize = f[6].parse().unwrap();
    let mut converted = 0;
    // Bound memory: a corrupt size that makes us allocate gigabytes is a bug to see as an
    // abort here, not a machine brought to its knees. No core dumps.
    // SAFETY: setrlimit with valid pointers to initialised structs.
    unsafe {
        let gib4 = 4u64 << 30;
        let lim = libc::rlimit {
            rlim_cur: gib4,
            rlim_max: gib4,
        };
        libc::setrlimit(libc::RLIMIT_AS, &lim);
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
    }
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = LAST_PANIC.try_lock() {
            *m = info.to_string().replace('\n', " ");
        }
    }));
    let cases = read_cases(cases_path);
    let src = File::open(pristine).unwrap();
    let len = src.metadata().unwrap().len();
    std::fs::create_dir_all(work).unwrap();
    let input = work.join("input.img");
    let out_dir = work.join("out");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&input)
        .unwrap();
    dst.set_len(len).unwrap();
    copy_range(&src, &dst, 0, len);
    dst.sync_all().unwrap();
    let stdout = std::io::stdout();
    let say = |s: String| {
        let mut o = stdout.lock();
        writeln!(o, "{MARK} {s}").unwrap();
        o.flush().unwrap();
    };
    for case in &cases[from..to] {
        say(format!("START {}", case.id));
        let started = Instant::now();
        // Apply.
        let mut saved = Vec::new();
        for (off, bytes) in &case.patches {
            let mut old = vec![0u8; bytes.len()];
            dst.read_exact_at(&mut old, *off).unwrap();
            dst.write_all_at(bytes, *off).unwrap();
            saved.push((*off, old));
        }
        if let Some(t) = case.truncate {
            dst.set_len(t).unwrap();
        }
        dst.sync_data().unwrap();
        let meta = std::fs::metadata(&input).unwrap();
        let before = (meta.len(), meta.mtime(), meta.mtime_nsec());

        let panics_before = PANICS.load(Ordering::SeqCst);
        let mut escaped = 0;
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| source::inspect(&input)));
        let (insp, inspection) = outcome(r, "");
        if insp == "panic" {
            escaped += 1;
            say(format!(
                "PANIC {} inspect {}",
                case.id,
                LAST_PANIC.lock().unwrap()
            ));
        }
        let mut conv = "-".to_string();
        let mut fsck = "-".to_string();
        let mut left = 0;
        let full = inspection.is_some() && case.full && converted < quota;
        converted += usize::from(full);
        if inspection.is_none() || full {
            let out = out_dir.join("out.img");
            let opts = ConvertOptions::new(&input, Some(donor.to_path_buf()), &out);
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| convert(&opts, &mut NoProgress)));
            let (c, done) = outcome(r, "");
            conv = c;
            if conv == "panic" {
                escaped += 1;
                say(format!(
                    "PANIC {} convert {}",
                    case.id,
                    LAST_PANIC.lock().unwrap()
                ));
            }
            let files = list_dir(&out_dir);
            match &done {
                Some(done) => {
                    left = files.iter().filter(|f| *f != "out.img").count();
                    let root = done.plan.disk.root().start_bytes();
                    let rin =
                        fsck_rank(&support::e2fs_spec(&input, done.plan.inspection.fs_offset));
                    let rout = fsck_rank(&support::e2fs_spec(&out, root));
                    fsck = format!("{rin}/{rout}");
                    let _ = std::fs::remove_file(&out);
                }
                None => left = files.len(),
            }
            for f in files {
                let _ = std::fs::remove_file(out_dir.join(f));
            }
        }
        let contained = PANICS.load(Ordering::SeqCst) - panics_before - escaped;

        // The input must be as the case left it: same length, mtime, patched bytes.
        let meta = std::fs::metadata(&input).unwrap();
        let mut input_ok = (meta.len(), meta.mtime(), meta.mtime_nsec()) == before;
        for (off, bytes) in &case.patches {
            if case.truncate.is_none() {
                let mut now = vec![0u8; bytes.len()];
                dst.read_exact_at(&mut now, *off).unwrap();
                input_ok &= &now == bytes;
            }
        }
        // Restore the working copy.
        if let Some(t) = case.truncate {
            dst.set_len(len).unwrap();
            copy_range(&src, &dst, t.min(len), len);
        }
        for (off, old) in saved.iter().rev() {
            dst.write_all_at(old, *off).unwrap();
        }
        say(format!(
            "END {} insp={insp} conv={conv} fsck={fsck} left={left} input={} contained={contained} ms={}",
            case.id,
            if input_ok { "same" } else { "changed" },
            started.elapsed().as_millis()
        ));
    }
    // The working copy must be the pristine image again (checks restore and that no case
    // wrote into its input).
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut pos = 0;
    let mut same = dst.metadata().unwrap().len() == len;
    while same && pos < len {
        let n = ((len - pos) as usize).min(a.len());
        src.read_exact_at(&mut a[..n], pos).unwrap();
        dst.read_exact_at(&mut b[..n], pos).unwrap();
        same = a[..n] == b[..n];
        pos += n as u64;
    }
    say(format!("VERIFY {}", if same { "same" } else { "differs" }));
}

/// Entry point of the child processes (see the module docs); not a test by itself.
#[test]
#[ignore = "child process of mutation_suite, run by it"]
fn mutation_child() {
    // `cargo test -- --ignored` also starts this entry point, without a job: nothing to do.
    if let Ok(job) = std::env::var("IMGCONV_MUTATION_JOB") {
        child_run(&job);
    }
}

// ---- the parent ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct CaseResult {
    insp: String,
    conv: String,
    fsck: String,
    left: usize,
    input_same: bool,
    contained: usize,
    panic: Option<String>,
    abort: Option<String>,
    hang: bool,
    ms: u64,
}

struct Job {
    fixture: usize,
    from: usize,
    to: usize,
}

struct Running {
    job: Job,
    child: std::process::Child,
    current: Option<(usize, Instant)>,
    stderr: PathBuf,
    verified: Option<bool>,
}

fn parse_end(line: &str) -> (usize, CaseResult) {
    let mut it = line.split(' ');
    let id: usize = it.next().unwrap().parse().unwrap();
    let mut r = CaseResult::default();
    for kv in it {
        let (k, v) = kv.split_once('=').unwrap();
        match k {
            "insp" => r.insp = v.into(),
            "conv" => r.conv = v.into(),
            "fsck" => r.fsck = v.into(),
            "left" => r.left = v.parse().unwrap(),
            "input" => r.input_same = v == "same",
            "contained" => r.contained = v.parse().unwrap(),
            "ms" => r.ms = v.parse().unwrap(),
            _ => {}
        }
    }
    (id, r)
}

struct Suite {
    layout: Layout,
    cases: Vec<Case>,
    cases_file: PathBuf,
    /// Conversions past inspection wanted (shared among the chunks).
    conversions: usize,
    results: BTreeMap<usize, CaseResult>,
    verify_failures: usize,
}

/// The small run: 60 cases and 4-8 conversions past inspection per fixture.
#[test]
fn mutation_suite_small() {
    run_suite(false);
}

/// The full run (slow tier): 600 cases per fixture (200 for the GPT disk) and 30-105
/// conversions past inspection.
#[test]
#[ignore = "slow tier: scripts/test runs it with --ignored"]
fn mutation_suite_full() {
    run_suite(true);
}

fn run_suite(full: bool) {
    let fx = support::synthetic();
    let seed = env_u64("IMGCONV_MUTATION_SEED").unwrap_or(DEFAULT_SEED);
    let n_cases = env_u64("IMGCONV_MUTATION_CASES").unwrap_or(if full { 600 } else { 60 });
    let n_full = env_u64("IMGCONV_MUTATION_CONVERTS");
    let timeout = Duration::from_secs(env_u64("IMGCONV_MUTATION_TIMEOUT").unwrap_or(30));
    let only = std::env::var("IMGCONV_MUTATION_ONLY").ok();
    let donor = fx.join("donor-dir");
    let mut tmp = tempfile::Builder::new()
        .prefix("imgconv-mutation-")
        .tempdir()
        .unwrap();
    // IMGCONV_MUTATION_KEEP=1 keeps the case files and the children's stderr.
    tmp.disable_cleanup(std::env::var_os("IMGCONV_MUTATION_KEEP").is_some());

    let row = |img: &str, part| support::manifest_row(&fx, img, part);
    let mbr = row("xen-ext4-mbr.img", Some(2));
    let gpt = row("xen-ext4-gpt.img", Some(1));
    // (name, image, fs offset, table, cases, conversions)
    type Fixture<'a> = (&'static str, &'a str, u64, Option<&'static str>, u64, u64);
    let plan: Vec<Fixture> = vec![
        (
            "ext2",
            "xen-ext2.img",
            0,
            None,
            n_cases,
            if full { 100 } else { 4 },
        ),
        (
            "ext3",
            "xen-ext3.img",
            0,
            None,
            n_cases,
            if full { 105 } else { 8 },
        ),
        (
            "ext4",
            "xen-ext4.img",
            0,
            None,
            n_cases,
            if full { 105 } else { 8 },
        ),
        (
            "ext4-mbr",
            "xen-ext4-mbr.img",
            mbr.start,
            Some("mbr"),
            n_cases,
            if full { 105 } else { 8 },
        ),
        (
            "ext4-gpt",
            "xen-ext4-gpt.img",
            gpt.start,
            Some("gpt"),
            n_cases / 3,
            if full { 30 } else { 4 },
        ),
    ];
    let mut suites = Vec::new();
    for (name, img, off, table, n, full) in plan {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == name))
        {
            continue;
        }
        let t0 = Instant::now();
        let layout = layout(name, fx.join(img), off, table);
        let cases = gen_cases(&layout, n as usize, seed);
        let cases_file = tmp.path().join(format!("{name}.cases"));
        write_cases(&cases_file, &cases);
        eprintln!(
            "mutation {name}: {} cases, {} targets, layout in {:.1}s",
            cases.len(),
            targets(&layout).len(),
            t0.elapsed().as_secs_f64()
        );
        suites.push(Suite {
            layout,
            cases,
            cases_file,
            conversions: n_full.unwrap_or(full) as usize,
            results: BTreeMap::new(),
            verify_failures: 0,
        });
    }

    // Chunks of cases, two children at a time.
    let chunk = 60;
    let mut queue: Vec<Job> = Vec::new();
    for (i, s) in suites.iter().enumerate() {
        let mut from = 0;
        while from < s.cases.len() {
            let to = (from + chunk).min(s.cases.len());
            queue.push(Job {
                fixture: i,
                from,
                to,
            });
            from = to;
        }
    }
    queue.reverse();
    let parallel = 2;
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut next_slot = 0usize;
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    loop {
        while running.len() < parallel {
            let Some(job) = queue.pop() else { break };
            let slot = next_slot;
            next_slot += 1;
            let s = &suites[job.fixture];
            let work = tmp.path().join(format!("w{slot}"));
            std::fs::create_dir_all(&work).unwrap();
            let stderr = work.join("stderr");
            let quota = (s.conversions * (job.to - job.from)).div_ceil(s.cases.len());
            let job_arg = format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{quota}",
                s.cases_file.display(),
                s.layout.image.display(),
                donor.display(),
                work.display(),
                job.from,
                job.to
            );
            let mut child = Command::new(&exe)
                .args([
                    "mutation_suite::mutation_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("IMGCONV_MUTATION_JOB", job_arg)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(File::create(&stderr).unwrap())
                .spawn()
                .expect("re-execute the test binary");
            let out = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    // libtest prints "test mutation_child ... " without a newline first.
                    if let Some(at) = line.find(MARK) {
                        let rest = &line[at + MARK.len()..];
                        let _ = tx.send((slot, Some(rest.trim().to_string())));
                    }
                }
                let _ = tx.send((slot, None));
            });
            running.insert(
                slot,
                Running {
                    job,
                    child,
                    current: None,
                    stderr,
                    verified: None,
                },
            );
        }
        if running.is_empty() {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok((slot, Some(line))) => {
                let Some(r) = running.get_mut(&slot) else {
                    continue;
                };
                let s = &mut suites[r.job.fixture];
                if let Some(id) = line.strip_prefix("START ") {
                    r.current = Some((id.parse().unwrap(), Instant::now()));
                } else if let Some(rest) = line.strip_prefix("END ") {
                    let (id, mut res) = parse_end(rest);
                    if let Some(p) = s.results.get(&id).and_then(|x| x.panic.clone()) {
                        res.panic = Some(p);
                    }
                    s.results.insert(id, res);
                    r.current = None;
                } else if let Some(rest) = line.strip_prefix("PANIC ") {
                    let (id, msg) = rest.split_once(' ').unwrap();
                    let e = s.results.entry(id.parse().unwrap()).or_default();
                    e.panic = Some(msg.to_string());
                } else if let Some(v) = line.strip_prefix("VERIFY ") {
                    r.verified = Some(v == "same");
                }
            }
            Ok((slot, None)) => {
                // The child's stdout closed: it exited (or died).
                let Some(mut r) = running.remove(&slot) else {
                    continue;
                };
                let status = r.child.wait().unwrap();
                let s = &mut suites[r.job.fixture];
                if let Some((id, _)) = r.current {
                    let text = std::fs::read_to_string(&r.stderr).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    // The panic message (a panic while panicking, or in a `Drop`, aborts)
                    // and the first frames, else the last lines.
                    let at = lines
                        .iter()
                        .position(|l| l.contains("panicked at") || l.contains("abort"))
                        .unwrap_or(lines.len().saturating_sub(12));
                    let tail = lines[at..]
                        .iter()
                        .take(30)
                        .copied()
                        .collect::<Vec<_>>()
                        .join("\n    ");
                    let e = s.results.entry(id).or_default();
                    e.abort = Some(format!("{status}: {tail}"));
                    if id + 1 < r.job.to {
                        queue.push(Job {
                            fixture: r.job.fixture,
                            from: id + 1,
                            to: r.job.to,
                        });
                    }
                } else if r.verified != Some(true) {
                    s.verify_failures += 1;
                    eprintln!(
                        "mutation {}: chunk {}..{} ended with {status}, verify {:?}",
                        s.layout.name, r.job.from, r.job.to, r.verified
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
        }
        // Hangs: kill the child; its reader then reports the exit, and the case is marked.
        for r in running.values_mut() {
            if let Some((id, since)) = r.current {
                if since.elapsed() > timeout {
                    let s = &mut suites[r.job.fixture];
                    s.results.entry(id).or_default().hang = true;
                    let _ = r.child.kill();
                    // Not an abort: the reader's exit notice must not re-mark it.
                    if id + 1 < r.job.to {
                        queue.push(Job {
                            fixture: r.job.fixture,
                            from: id + 1,
                            to: r.job.to,
                        });
                    }
                    r.current = None;
                    r.verified = Some(true);
                }
            }
        }
    }
    let total = started.elapsed();

    // Summary and verdict.
    let mut failures = Vec::new();
    for s in &suites {
        let name = s.layout.name;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        let mut conv_kinds: BTreeMap<String, usize> = BTreeMap::new();
        let (mut ok, mut panics, mut aborts, mut hangs) = (0, 0, 0, 0);
        let (mut conv_runs, mut conv_ok, mut left, mut changed, mut worse, mut contained) =
            (0, 0, 0, 0, 0, 0);
        let mut past_inspection = 0;
        for c in &s.cases {
            let Some(r) = s.results.get(&c.id) else {
                failures.push(format!("{name} case {} has no result ({})", c.id, c.label));
                continue;
            };
            contained += r.contained;
            if let Some(p) = &r.panic {
                panics += 1;
                failures.push(format!("{name} case {} PANIC: {} -- {p}", c.id, c.label));
            }
            if let Some(a) = &r.abort {
                aborts += 1;
                failures.push(format!("{name} case {} ABORT: {} -- {a}", c.id, c.label));
                continue;
            }
            if r.hang {
                hangs += 1;
                failures.push(format!(
                    "{name} case {} HANG (> {timeout:?}): {}",
                    c.id, c.label
                ));
                continue;
            }
            if r.insp == "ok" {
                ok += 1;
            } else {
                *kinds.entry(r.insp.clone()).or_default() += 1;
            }
            if r.conv != "-" {
                conv_runs += 1;
                past_inspection += usize::from(r.insp == "ok");
                if r.conv == "ok" {
                    conv_ok += 1;
                } else {
                    *conv_kinds.entry(r.conv.clone()).or_default() += 1;
                }
            }
            if r.left > 0 {
                left += 1;
                failures.push(format!(
                    "{name} case {}: {} file(s) left in the output directory after {}: {}",
                    c.id, r.left, r.conv, c.label
                ));
            }
            if !r.input_same {
                changed += 1;
                failures.push(format!(
                    "{name} case {}: the input changed: {}",
                    c.id, c.label
                ));
            }
            if let Some((i, o)) = r.fsck.split_once('/') {
                if o > i {
                    worse += 1;
                    failures.push(format!(
                        "{name} case {}: e2fsck rank {i} on the input, {o} on the output: {}",
                        c.id, c.label
                    ));
                }
            }
        }
        if s.verify_failures > 0 {
            failures.push(format!(
                "{name}: {} chunk(s) did not end with the working copy equal to the fixture",
                s.verify_failures
            ));
        }
        let typed: usize = kinds.values().sum();
        let line = format!(
            "mutation summary {name}: cases {} (seed {seed:#x}), inspect ok {ok}, typed errors {typed} {:?}; \
             convert runs {conv_runs} ({past_inspection} past inspection, {conv_ok} complete, typed errors {:?}); panics {panics}, \
             aborts {aborts}, hangs {hangs}, leftovers {left}, input changed {changed}, fsck worse {worse}; \
             reader panics contained by the library {contained}",
            s.cases.len(),
            kinds,
            conv_kinds,
        );
        eprintln!("{line}");
        if let Ok(dir) = std::env::var("CARGO_TARGET_TMPDIR") {
            let _ = std::fs::write(
                Path::new(&dir).join(format!("mutation-{name}.summary")),
                &line,
            );
        }
    }
    eprintln!("mutation suite: cases ran in {:.1}s", total.as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    for s in &suites {
        let inspected_ok = s.results.values().filter(|r| r.insp == "ok").count();
        let past = s
            .results
            .values()
            .filter(|r| r.insp == "ok" && r.conv != "-")
            .count();
        assert!(
            past >= s.conversions.min(inspected_ok),
            "{}: {past} conversions past inspection, {} wanted",
            s.layout.name,
            s.conversions
        );
    }
}
