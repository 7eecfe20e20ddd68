//! One pass over every in-use inode's block map or extent tree before anything trusts
//! the guest's bitmaps: what e2fsck's pass 1 checks about blocks, in our own reader.
//!
//! The stream copies what the block bitmaps mark used, and libext2fs allocates what they
//! mark free and walks the block maps of the inodes it changes; a guest whose inodes and
//! bitmaps disagree would lose data silently (a used block marked free is neither copied
//! nor protected), and a hostile block map would make libext2fs loop or allocate without
//! bound. So, for every inode the inode bitmaps mark used and that has links:
//!
//! * its block map ([`crate::ext::read::blockmap`]) or extent tree ([`crate::ext::read::extent`])
//!   is walked whole, bounded: every block inside the filesystem, none in the group
//!   metadata, none listed twice, the tree bounded in depth, nodes and runs;
//! * a directory is at most [`crate::ext::read::dir::MAX_DIR_BYTES`] and whole blocks;
//! * every block is marked in a bitmap of owned blocks: one owned twice is shared;
//! * finally every owned block must be marked used in the block bitmap of its group.
//!
//! Memory: one bit per filesystem block (at most [`MAX_OWNED_BLOCKS`]), one inode table
//! chunk, and the runs of one file at a time. The inodes and paths of what is wrong are
//! looked up only when something is.

use crate::blockio::Region;
use crate::bytes::Fields;
use crate::ext::read::dir::MAX_DIR_BYTES;
use crate::ext::read::inode::{RawInode, FLAG_EXTENTS, FLAG_INLINE_DATA, I_BLOCK_LEN};
use crate::ext::read::layout::{GroupTables, Metadata};
use crate::ext::read::{RawError, RawFs};
use crate::guestfs::NodeKind;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest filesystem (in blocks) whose owned blocks are tracked (a bit each: 32 MiB,
/// 1 TiB at 4 KiB blocks); above it block maps are still checked one by one, but shared
/// and free blocks are not looked for (and the report says so).
pub const MAX_OWNED_BLOCKS: u64 = 1 << 28;
/// Most findings kept (the rest are counted).
pub const MAX_FINDINGS: usize = 32;
/// Most shared or free blocks remembered to find their owners.
const MAX_BAD_BLOCKS: usize = 4096;
/// Bytes of inode table read at once.
const CHUNK: u64 = 1 << 20;
/// Inodes below this are reserved (`EXT2_GOOD_OLD_FIRST_INO`).
const FIRST_INO: u32 = 11;
/// The bad-blocks inode owns blocks nothing may use; the resize inode owns the reserved
/// descriptor blocks through an indirect map that points into metadata on purpose.
const BAD_BLOCKS_INO: u32 = 1;
const RESIZE_INO: u32 = 7;
/// Directories whose entries the conversion reads or changes through libext2fs (the
/// graft, the fixups, the boot files): they and every entry in them are checked even
/// when the inode bitmap calls them free, since libext2fs reaches them by name.
const GUARDED_DIRS: &[&str] = &[
    "/",
    "/boot",
    "/boot/efi",
    "/boot/grub",
    "/boot/grub/i386-pc",
    "/boot/grub/x86_64-efi",
    "/etc",
    "/etc/default",
    "/etc/event.d",
    "/etc/init",
    "/etc/initramfs-tools",
    "/etc/initramfs-tools/conf.d",
    "/etc/modprobe.d",
    "/etc/modules-load.d",
    "/etc/network",
    "/etc/sysconfig",
    "/etc/sysconfig/network-scripts",
    "/etc/systemd",
    "/etc/systemd/system",
    "/etc/systemd/system/getty.target.wants",
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/udev",
    "/etc/udev/rules.d",
    "/lib",
    "/lib/modules",
    "/lib/systemd/system",
    "/sbin",
    "/usr",
    "/usr/lib",
    "/usr/lib/modules",
    "/usr/lib/systemd/system",
    "/usr/sbin",
];
/// Most entries of one guarded directory checked.
const MAX_GUARDED_ENTRIES: usize = 1 << 16;
/// Most directory entries visited to name the inodes found wrong.
const MAX_NAMING_ENTRIES: usize = 1 << 20;

/// What is wrong with one inode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Problem {
    /// The inode itself does not read (a failed checksum, an impossible mode).
    Inode { why: String },
    /// Its block map or extent tree is refused: a block outside the filesystem or in
    /// its metadata, listed twice, a loop, too many runs.
    Map { why: String },
    /// A directory too large to read, or not whole blocks.
    Directory { bytes: u64 },
    /// A block another inode owns too.
    Shared { block: u64 },
    /// A block the block bitmap marks free.
    Free { block: u64 },
}

impl Problem {
    /// Does `e2fsck -fy` on the copy fix it without losing the file's content (it clones
    /// shared blocks and marks owned ones used)?
    pub fn repairable(&self) -> bool {
        matches!(self, Problem::Shared { .. } | Problem::Free { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Inode { why } | Problem::Map { why } => write!(f, "{why}"),
            Problem::Directory { bytes } => write!(f, "a directory of {bytes} bytes"),
            Problem::Shared { block } => write!(f, "block {block} is owned by another file too"),
            Problem::Free { block } => {
                write!(
                    f,
                    "block {block} is in use but the block bitmap marks it free"
                )
            }
        }
    }
}

/// One inode found wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub ino: u32,
    /// Its path from the root, when a directory walk found it.
    pub path: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p} (inode {}): {}", self.ino, self.problem),
            None => write!(f, "inode {} (no path found): {}", self.ino, self.problem),
        }
    }
}

/// What the pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Findings {
    /// At most [`MAX_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Findings beyond those kept.
    pub more: u64,
    /// Inodes whose blocks were checked.
    pub inodes: u64,
    /// Why shared and free blocks were not looked for, or nothing was checked.
    pub limited: Option<String>,
}

impl Findings {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Are all of them fixed by `e2fsck -fy` on the copy?
    pub fn repairable(&self) -> bool {
        self.more == 0 && self.findings.iter().all(|f| f.problem.repairable())
    }

    /// The findings, one after the other, for a message.
    pub fn summary(&self) -> String {
        let mut s = self
            .findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        if self.more > 0 {
            s.push_str(&format!("; and {} more", self.more));
        }
        s
    }

    fn push(&mut self, ino: u32, problem: Problem) {
        if self
            .findings
            .iter()
            .any(|f| f.ino == ino && f.problem == problem)
        {
            return;
        }
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                ino,
                path: None,
                problem,
            });
        } else {
            self.more += 1;
        }
    }
}

/// Why the pass could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading the guest filesystem in {}: {what}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    /// Inodes and bitmaps disagree, or a block map is refused.
    #[error("the guest filesystem in {} has inodes whose blocks cannot be trusted (e2fsck -fn reports them too): {}{}", path.display(), findings.summary(), if findings.repairable() { "; repairing the output copy (e2fsck -fy) mends them" } else { "" })]
    Inconsistent {
        path: std::path::PathBuf,
        findings: Box<Findings>,
    },
}

/// Check every in-use inode of the filesystem in `region`. `stop` cancels between
/// groups. Filesystems this reader cannot check give findings with `limited` set.
pub fn check(region: &Region, stop: &AtomicBool) -> Result<Findings, CheckError> {
    let fs = match RawFs::open_for_check(region.clone()) {
        Ok(fs) => fs,
        Err(why) => {
            return Ok(Findings {
                limited: Some(format!("block maps not checked: {why}")),
                ..Findings::default()
            })
        }
    };
    let sb = fs.superblock();
    let (_, tables) = match Metadata::read(region, sb) {
        Ok(m) => m,
        Err(e) => {
            // The stream and libext2fs judge the descriptors themselves.
            return Ok(Findings {
                limited: Some(format!("block maps not checked: {e}")),
                ..Findings::default()
            });
        }
    };
    let mut pass = Pass {
        fs: &fs,
        tables: &tables,
        owned: (sb.blocks_count <= MAX_OWNED_BLOCKS)
            .then(|| vec![0u64; sb.blocks_count.div_ceil(64) as usize]),
        shared: Vec::new(),
        findings: Findings::default(),
        stop,
    };
    if pass.owned.is_none() {
        pass.findings.limited = Some(format!(
            "shared and free blocks not looked for: {} blocks is more than the {MAX_OWNED_BLOCKS} tracked",
            sb.blocks_count
        ));
    }
    pass.inodes(&mut |pass, ino, inode| pass.first(ino, inode))?;
    pass.guarded()?;
    let free = pass.free_blocks()?;
    if !pass.shared.is_empty() || !free.is_empty() {
        pass.owners(&free)?;
    }
    let mut findings = pass.findings;
    if !findings.is_clean() {
        name(&fs, &mut findings.findings);
    }
    Ok(findings)
}

struct Pass<'a> {
    fs: &'a RawFs,
    tables: &'a [GroupTables],
    /// A bit per block owned by an inode seen so far.
    owned: Option<Vec<u64>>,
    /// Blocks met a second time.
    shared: Vec<u64>,
    findings: Findings,
    stop: &'a AtomicBool,
}

type Visit<'v, 'a> = dyn FnMut(&mut Pass<'a>, u32, &RawInode) -> Result<(), CheckError> + 'v;

impl<'a> Pass<'a> {
    fn io(&self, what: String, source: std::io::Error) -> CheckError {
        CheckError::Io {
            path: self.fs.region().path().to_path_buf(),
            what,
            source,
        }
    }

    /// Call `visit` for every in-use inode with blocks to check (directories, regular
    /// files, slow symlinks); an inode that does not parse is a finding.
    fn inodes(&mut self, visit: &mut Visit<'_, 'a>) -> Result<(), CheckError> {
        let sb = self.fs.superblock().clone();
        let ipg = u64::from(sb.inodes_per_group);
        let isz = u64::from(sb.inode_size);
        let bs = sb.block_size();
        let mut bitmap = vec![0u8; bs as usize];
        let mut chunk = vec![0u8; CHUNK.max(isz) as usize];
        for (g, t) in self.tables.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(CheckError::Cancelled);
            }
            if t.inode_uninit {
                continue;
            }
            let pos = t.inode_bitmap * bs;
            self.fs
                .region()
                .read_exact_at(pos, &mut bitmap)
                .map_err(|e| self.io(format!("the inode bitmap of group {g}"), e))?;
            let used = |i: u64| bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0;
            let count = ipg.min(bs * 8);
            let Some(last) = (0..count).rev().find(|&i| used(i)) else {
                continue;
            };
            let per_chunk = chunk.len() as u64 / isz;
            let mut first = 0;
            while first <= last {
                let n = per_chunk.min(last + 1 - first);
                if (first..first + n).any(used) {
                    let at = t.inode_table * bs + first * isz;
                    let buf = &mut chunk[..(n * isz) as usize];
                    self.fs
                        .region()
                        .read_exact_at(at, buf)
                        .map_err(|e| self.io(format!("the inode table of group {g}"), e))?;
                    for i in (first..first + n).filter(|&i| used(i)) {
                        let Ok(ino) = u32::try_from(g as u64 * ipg + i + 1) else {
                            break;
                        };
                        if ino > sb.inodes_count {
                            break;
                        }
                        let off = ((i - first) * isz) as usize;
                        let raw = &chunk[off..off + isz as usize];
                        self.inode(ino, raw, visit)?;
                    }
                }
                first += n;
            }
        }
        Ok(())
    }

    fn inode(&mut self, ino: u32, raw: &[u8], visit: &mut Visit<'_, 'a>) -> Result<(), CheckError> {
        if ino == BAD_BLOCKS_INO || ino == RESIZE_INO {
            return Ok(());
        }
        // `i_links_count` (inodes.rst): an unlinked inode owns nothing e2fsck keeps.
        let links = Fields::new("ext4 inode", raw).u16("i_links_count", 0x1A);
        if links.is_ok_and(|l| l == 0) {
            return Ok(());
        }
        let inode = match RawInode::parse(ino, raw, self.fs.inode_seed()) {
            Ok(inode) => inode,
            // Reserved inodes the filesystem does not use are marked used all the same.
            Err(_) if ino < FIRST_INO => return Ok(()),
            Err(e) => {
                self.findings
                    .push(ino, Problem::Inode { why: inode_why(e) });
                return Ok(());
            }
        };
        let kind = inode.kind();
        let fast_symlink = kind == NodeKind::Symlink
            && inode.size < I_BLOCK_LEN as u64
            && !inode.has_flag(FLAG_EXTENTS);
        if !matches!(kind, NodeKind::Dir | NodeKind::File | NodeKind::Symlink)
            || fast_symlink
            || inode.has_flag(FLAG_INLINE_DATA)
        {
            return Ok(());
        }
        visit(self, ino, &inode)
    }

    /// Check one inode's size and map; what it owns, unless a finding was made.
    fn validate(
        &mut self,
        ino: u32,
        inode: &RawInode,
    ) -> Result<Option<crate::ext::read::blockmap::BlockMap>, CheckError> {
        if inode.kind() == NodeKind::Dir
            && (inode.size > MAX_DIR_BYTES || inode.size % self.fs.block_size() != 0)
        {
            self.findings
                .push(ino, Problem::Directory { bytes: inode.size });
            return Ok(None);
        }
        self.findings.inodes += 1;
        match self.fs.owned_blocks(inode) {
            Ok(map) => Ok(Some(map)),
            Err(RawError::Io { what, source }) => Err(self.io(what, source)),
            Err(e) => {
                self.findings.push(ino, Problem::Map { why: map_why(e) });
                Ok(None)
            }
        }
    }

    /// First pass: check the inode and mark what it owns.
    fn first(&mut self, ino: u32, inode: &RawInode) -> Result<(), CheckError> {
        let Some(map) = self.validate(ino, inode)? else {
            return Ok(());
        };
        let Some(owned) = self.owned.as_mut() else {
            return Ok(());
        };
        let extents = map.runs.iter().map(|r| (r.pblk, u64::from(r.len)));
        for (start, len) in extents.chain(map.indirect.iter().map(|&b| (b, 1))) {
            for b in start..start + len {
                let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
                if owned[w] & bit != 0 {
                    if self.shared.len() < MAX_BAD_BLOCKS {
                        self.shared.push(b);
                    }
                } else {
                    owned[w] |= bit;
                }
            }
        }
        Ok(())
    }

    /// The guarded directories and their entries, reached by name from the root as
    /// libext2fs reaches them (a missing one is passed over; a symlink is not followed).
    fn guarded(&mut self) -> Result<(), CheckError> {
        let mut done = std::collections::HashSet::new();
        for dir in GUARDED_DIRS {
            if self.stop.load(Ordering::Relaxed) {
                return Err(CheckError::Cancelled);
            }
            let mut ino = 2u32;
            let mut found = true;
            for name in dir.split('/').filter(|c| !c.is_empty()) {
                match self.guard_one(ino, &mut done)? {
                    Some(inode) if inode.kind() == NodeKind::Dir => {
                        let Ok(entries) = self.fs.read_dir(&inode, MAX_GUARDED_ENTRIES) else {
                            found = false;
                            break;
                        };
                        match entries.into_iter().find(|e| e.name == name) {
                            Some(e) => ino = e.ino,
                            None => {
                                found = false;
                                break;
                            }
                        }
                    }
                    _ => {
                        found = false;
                        break;
                    }
                }
            }
            if !found {
                continue;
            }
            let Some(inode) = self.guard_one(ino, &mut done)? else {
                continue;
            };
            if inode.kind() != NodeKind::Dir {
                continue;
            }
            let Ok(entries) = self.fs.read_dir(&inode, MAX_GUARDED_ENTRIES) else {
                continue;
            };
            for e in entries {
                self.guard_one(e.ino, &mut done)?;
            }
        }
        Ok(())
    }

    /// Check inode `ino` once (its map and size, whatever the bitmaps say); the inode
    /// when it is sound.
    fn guard_one(
        &mut self,
        ino: u32,
        done: &mut std::collections::HashSet<u32>,
    ) -> Result<Option<RawInode>, CheckError> {
        let inode = match self.fs.inode(ino) {
            Ok(inode) => inode,
            Err(RawError::Io { what, source }) => return Err(self.io(what, source)),
            Err(e) => {
                if done.insert(ino) {
                    self.findings
                        .push(ino, Problem::Inode { why: inode_why(e) });
                }
                return Ok(None);
            }
        };
        if !done.insert(ino) {
            return Ok(Some(inode));
        }
        let fast_symlink = inode.kind() == NodeKind::Symlink
            && inode.size < I_BLOCK_LEN as u64
            && !inode.has_flag(FLAG_EXTENTS);
        let mapped = matches!(
            inode.kind(),
            NodeKind::Dir | NodeKind::File | NodeKind::Symlink
        ) && !fast_symlink
            && !inode.has_flag(FLAG_INLINE_DATA);
        if mapped && self.validate(ino, &inode)?.is_none() {
            return Ok(None);
        }
        Ok(Some(inode))
    }

    /// Owned blocks the block bitmaps mark free (at most [`MAX_BAD_BLOCKS`]).
    fn free_blocks(&mut self) -> Result<Vec<u64>, CheckError> {
        let Some(owned) = self.owned.as_ref() else {
            return Ok(Vec::new());
        };
        let sb = self.fs.superblock();
        let bs = sb.block_size();
        let mut bitmap = vec![0u8; bs as usize];
        let mut loaded: Option<u64> = None;
        let mut free = Vec::new();
        for (w, &word) in owned.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let b = w as u64 * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                let Some(rel) = b.checked_sub(u64::from(sb.first_data_block)) else {
                    continue;
                };
                let g = rel / u64::from(sb.blocks_per_group);
                let i = rel % u64::from(sb.blocks_per_group);
                let Some(t) = self.tables.get(g as usize) else {
                    continue;
                };
                let marked = if t.block_uninit {
                    false
                } else {
                    if loaded != Some(g) {
                        self.fs
                            .region()
                            .read_exact_at(t.block_bitmap * bs, &mut bitmap)
                            .map_err(|e| CheckError::Io {
                                path: self.fs.region().path().to_path_buf(),
                                what: format!("the block bitmap of group {g}"),
                                source: e,
                            })?;
                        loaded = Some(g);
                    }
                    bitmap
                        .get((i / 8) as usize)
                        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                };
                if !marked {
                    free.push(b);
                    if free.len() >= MAX_BAD_BLOCKS {
                        return Ok(free);
                    }
                }
            }
        }
        Ok(free)
    }

    /// Second pass, only when something is wrong: which inodes own the shared and free
    /// blocks.
    fn owners(&mut self, free: &[u64]) -> Result<(), CheckError> {
        let mut shared = std::mem::take(&mut self.shared);
        shared.sort_unstable();
        shared.dedup();
        let mut free = free.to_vec();
        free.sort_unstable();
        let first_in = |set: &[u64], s: u64, n: u64| {
            let i = set.partition_point(|&b| b < s);
            set.get(i).copied().filter(|&b| b < s + n)
        };
        self.owned = None;
        self.inodes(&mut |pass, ino, inode| {
            let Ok(map) = pass.fs.owned_blocks(inode) else {
                return Ok(());
            };
            let extents = map.runs.iter().map(|r| (r.pblk, u64::from(r.len)));
            let mut hit_shared = None;
            let mut hit_free = None;
            for (s, n) in extents.chain(map.indirect.iter().map(|&b| (b, 1))) {
                hit_shared = hit_shared.or(first_in(&shared, s, n));
                hit_free = hit_free.or(first_in(&free, s, n));
            }
            if let Some(block) = hit_shared {
                pass.findings.push(ino, Problem::Shared { block });
            }
            if let Some(block) = hit_free {
                pass.findings.push(ino, Problem::Free { block });
            }
            Ok(())
        })
    }
}

fn inode_why(e: RawError) -> String {
    match e {
        RawError::Corrupt { why, .. } => why,
        other => other.to_string(),
    }
}

fn map_why(e: RawError) -> String {
    match e {
        RawError::Corrupt { why, .. } => why,
        RawError::BadMap { problem, .. } => problem.to_string(),
        other => other.to_string(),
    }
}

/// Fill in the paths of `findings`' inodes with a breadth-first walk from the root
/// (bounded; directories that do not read are passed over).
fn name(fs: &RawFs, findings: &mut [Finding]) {
    let mut want: HashMap<u32, Option<String>> = findings.iter().map(|f| (f.ino, None)).collect();
    let mut left = want.len();
    if let Some(slot) = want.get_mut(&2) {
        *slot = Some("/".into());
        left -= 1;
    }
    let mut queue = VecDeque::from([(2u32, String::new())]);
    let mut seen = std::collections::HashSet::from([2u32]);
    let mut visited = 0usize;
    while let Some((dir, path)) = queue.pop_front() {
        if left == 0 || visited >= MAX_NAMING_ENTRIES {
            break;
        }
        let Ok(inode) = fs.inode(dir) else { continue };
        if inode.kind() != NodeKind::Dir || inode.size > MAX_DIR_BYTES {
            continue;
        }
        let Ok(entries) = fs.read_dir(&inode, MAX_NAMING_ENTRIES - visited) else {
            continue;
        };
        visited += entries.len();
        for e in entries {
            let child = format!("{path}/{}", e.name);
            if let Some(slot @ None) = want.get_mut(&e.ino) {
                *slot = Some(child.clone());
                left -= 1;
            }
            if seen.insert(e.ino) && fs.inode(e.ino).is_ok_and(|i| i.kind() == NodeKind::Dir) {
                queue.push_back((e.ino, child));
            }
        }
    }
    for f in findings {
        f.path = want.get(&f.ino).cloned().flatten();
    }
}
