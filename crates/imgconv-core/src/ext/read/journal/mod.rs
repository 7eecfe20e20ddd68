//! The in-memory replay of an ext3/ext4 journal (jbd2) that needs recovery, read as
//! Documentation/filesystems/ext4/journal.rst describes it and as e2fsprogs'
//! `recovery.c` replays it, without writing to the image.
//!
//! One on-disk structure per module: the block [`header`], the journal
//! [`superblock`], [`descriptor`] blocks and their tags, [`revoke`] blocks and
//! [`commit`] blocks; [`overlay`] is the result, a view of the filesystem that reads the
//! replayed blocks from the journal.
//!
//! Three passes over the log, from `s_start` and transaction `s_sequence`:
//!
//! 1. **scan**: follow the log while each block carries the journal magic and the
//!    expected transaction ID, counting a descriptor's data blocks and ending a
//!    transaction at its commit block. A transaction without a valid commit block (one
//!    missing, or failing its checksum) ends the replay there, as in the kernel; so does
//!    a descriptor failing its checksum (a stale block of an earlier pass of the log).
//! 2. **revoke**: every revoke record of the committed transactions, keeping for each
//!    block the newest transaction that revoked it.
//! 3. **replay**: each tag of each committed transaction, oldest first, unless a
//!    transaction at least as new revoked its block: the block then reads from that
//!    journal copy (a later copy replacing an earlier one). With v2/v3 checksums each
//!    copy must match its tag's checksum.
//!
//! Bounded: the journal is the filesystem's internal journal inode (an external journal
//! device is [`JournalError::External`]); its length is checked against the inode and
//! capped at [`MAX_JOURNAL_BLOCKS`]; the scan visits each block of the log at most once
//! (more is a sequence that loops, [`JournalError::Loop`]), so tags, revoke records and
//! overlay entries are bounded by the journal's length, and the overlay and the revoke
//! table each by [`MAX_ENTRIES`] (16 bytes an entry, plus the map's own overhead).

pub mod commit;
pub mod descriptor;
pub mod header;
pub mod overlay;
pub mod revoke;
pub mod superblock;

use super::extent::Run;
use super::{RawError, RawFs};
use crate::bytes::ParseError;
use crate::ext::superblock::feature as fs_feature;
use descriptor::{Tag, TagFormat};
use header::{BlockType, Header};
use overlay::Overlay;
use std::collections::HashMap;
use superblock::{feature, JournalSuperblock};

/// Longest journal replayed, in blocks: mke2fs's own limit (10,240,000 blocks).
pub const MAX_JOURNAL_BLOCKS: u64 = 10_240_000;
/// Most overlay entries and most revoked blocks kept (each 16 bytes of payload).
pub const MAX_ENTRIES: usize = 1 << 22;

/// Why a journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal lives on another device, which this image does not hold.
    #[error("the journal is on an external device (device number {dev:#x}), not in this image")]
    External { dev: u32 },
    /// needs_recovery is set but the filesystem names no journal.
    #[error("needs_recovery is set but the filesystem has no journal inode")]
    NoJournal,
    /// The journal inode cannot be read.
    #[error("the journal inode: {0}")]
    Inode(#[source] RawError),
    /// A journal structure does not parse.
    #[error("journal block {block}: {source}")]
    Malformed { block: u64, source: ParseError },
    /// The journal is inconsistent with itself or the filesystem.
    #[error("journal block {block}: {why}")]
    Corrupt { block: u64, why: String },
    /// A checksum the journal's features require does not match.
    #[error("journal block {block}: the {what} fails its checksum")]
    Checksum { block: u64, what: &'static str },
    /// A journal feature the replay does not read.
    #[error("the journal uses a feature imgconv does not replay: {0}")]
    Unsupported(String),
    /// The log runs past its own length (a transaction sequence that loops).
    #[error("the journal log runs past its {blocks} blocks (a looping sequence)")]
    Loop { blocks: u64 },
    /// More than the replay keeps in memory.
    #[error("the journal needs more than {cap} {what}")]
    TooLarge { what: &'static str, cap: u64 },
    /// Reading the image failed.
    #[error("reading journal block {block}: {source}")]
    Io { block: u64, source: RawError },
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The blocks to read from the journal.
    pub overlay: Overlay,
    /// Committed transactions replayed.
    pub transactions: u32,
}

/// One committed (or, while scanning, open) transaction.
#[derive(Default)]
struct Transaction {
    sequence: u32,
    /// Each tag with the log block holding its data.
    tags: Vec<(Tag, u64)>,
    /// Log blocks of its revoke blocks.
    revokes: Vec<u64>,
}

/// The journal inode's blocks and superblock.
struct Journal<'a> {
    fs: &'a RawFs,
    runs: Vec<Run>,
    sb: JournalSuperblock,
    format: TagFormat,
    seed: u32,
}

/// `tid_gt`: transaction IDs compare modulo 2^32.
fn tid_gt(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) > 0
}

/// Replay the journal of `fs` (read as it is on disk) in memory; `None` when the log
/// is empty (`s_start` 0), so there is nothing to replay.
pub fn replay(fs: &RawFs) -> Result<Option<Replay>, JournalError> {
    let Some(j) = Journal::open(fs)? else {
        return Ok(None);
    };
    let committed = j.scan()?;
    let revoked = j.revoked(&committed)?;
    let mut out = Replay {
        transactions: committed.len() as u32,
        ..Replay::default()
    };
    let mut block = vec![0u8; fs.block_size() as usize];
    let blocks = fs.blocks_count();
    for t in &committed {
        for &(tag, at) in &t.tags {
            if revoked
                .get(&tag.block)
                .is_some_and(|&r| !tid_gt(t.sequence, r))
            {
                continue;
            }
            if tag.block >= blocks {
                return Err(JournalError::Corrupt {
                    block: at,
                    why: format!(
                        "a tag names filesystem block {}, outside the filesystem ({blocks} blocks)",
                        tag.block
                    ),
                });
            }
            let phys = j.read(at, &mut block)?;
            if !descriptor::data_ok(&tag, &block, t.sequence, j.seed, j.format) {
                return Err(JournalError::Checksum {
                    block: at,
                    what: "data block",
                });
            }
            if out.overlay.len() >= MAX_ENTRIES {
                return Err(JournalError::TooLarge {
                    what: "replayed blocks",
                    cap: MAX_ENTRIES as u64,
                });
            }
            out.overlay.insert(tag.block, phys, tag.escaped());
        }
    }
    Ok(Some(out))
}

/// The internal journal of `fs`: its inode, the inode's data runs and its superblock,
/// checked against each other and the filesystem (block size, `s_maxlen` within the
/// inode, `s_first` inside the journal, every incompat feature one the replay reads).
fn locate(fs: &RawFs) -> Result<(super::RawInode, Vec<Run>, JournalSuperblock), JournalError> {
    let fsb = fs.superblock();
    if fsb.has_incompat(fs_feature::INCOMPAT_JOURNAL_DEV) || fsb.journal_inum == 0 {
        if fsb.journal_dev != 0
            || fsb.journal_inum == 0 && fsb.has_compat(fs_feature::COMPAT_HAS_JOURNAL)
        {
            return Err(JournalError::External {
                dev: fsb.journal_dev,
            });
        }
        return Err(JournalError::NoJournal);
    }
    let inode = fs.inode(fsb.journal_inum).map_err(JournalError::Inode)?;
    let bs = fs.block_size();
    let inode_blocks = inode.size / bs;
    if inode_blocks > MAX_JOURNAL_BLOCKS {
        return Err(JournalError::TooLarge {
            what: "journal blocks",
            cap: MAX_JOURNAL_BLOCKS,
        });
    }
    let runs = fs.extents(&inode).map_err(JournalError::Inode)?;
    let mut block = vec![0u8; bs as usize];
    read_in(fs, &runs, 0, &mut block)?;
    let sb = JournalSuperblock::parse(&block)
        .map_err(|source| JournalError::Malformed { block: 0, source })?;
    let corrupt = |why: String| JournalError::Corrupt { block: 0, why };
    if u64::from(sb.block_size) != bs {
        return Err(corrupt(format!(
            "a journal block size of {} bytes in a filesystem of {bs}-byte blocks",
            sb.block_size
        )));
    }
    if u64::from(sb.maxlen) > inode_blocks {
        return Err(corrupt(format!(
            "the journal claims {} blocks, its inode holds {inode_blocks}",
            sb.maxlen
        )));
    }
    if sb.first == 0 || sb.first >= sb.maxlen {
        return Err(corrupt(format!(
            "the log starts at block {} of {}",
            sb.first, sb.maxlen
        )));
    }
    let unknown = sb.incompat & !feature::INCOMPAT_KNOWN;
    if sb.has_incompat(feature::INCOMPAT_FAST_COMMIT) {
        return Err(JournalError::Unsupported("fast commits".into()));
    }
    if unknown != 0 {
        return Err(JournalError::Unsupported(format!(
            "incompatible journal features {unknown:#x}"
        )));
    }
    Ok((inode, runs, sb))
}

/// Most pieces an idle log may lie in (16 bytes each); mke2fs makes one or a few.
pub const MAX_IDLE_PIECES: usize = 1 << 16;

/// Where the log of an empty internal journal lies: the filesystem blocks of journal
/// blocks `s_first..s_maxlen` as sorted `(first block, count)` pieces, or `None` when
/// the log may hold something (needs_recovery set, `s_start` not 0, no journal).
///
/// Nothing reads an empty log (journal.rst, "Super Block": `s_start` 0 "means that the
/// journal is clean"): the kernel's `jbd2_journal_recover` and e2fsprogs' recovery
/// return at once when `s_start` is 0, and once mounted jbd2 writes each new transaction
/// before a later recovery could read it, accepting only blocks with the journal magic
/// and the expected sequence. The journal superblock (block 0) and the inode's extent
/// tree or indirect blocks are not part of the result.
///
/// The inode's whole map is checked as [`RawFs::owned_blocks`] checks it (inside the
/// filesystem, outside its metadata, no block twice, so no log block is a mapping
/// block); a hole or an unwritten piece in the log, more than [`MAX_IDLE_PIECES`]
/// pieces, fast commits (the journal's flag, the filesystem's `fast_commit` or a
/// fast-commit area) or an incompat feature the replay does not read is an error.
pub fn idle_log(fs: &RawFs) -> Result<Option<Vec<(u64, u64)>>, JournalError> {
    let fsb = fs.superblock();
    if fsb.needs_recovery() || !fsb.has_compat(fs_feature::COMPAT_HAS_JOURNAL) {
        return Ok(None);
    }
    let (inode, _, sb) = locate(fs)?;
    if sb.start != 0 {
        return Ok(None);
    }
    // mke2fs -O fast_commit leaves the journal's own fast-commit flag clear (the kernel
    // sets it when mounting): the filesystem's flag and a fast-commit area tell.
    if fsb.has_compat(fs_feature::COMPAT_FAST_COMMIT) || sb.fc_blocks != 0 {
        return Err(JournalError::Unsupported("fast commits".into()));
    }
    let map = fs.owned_blocks(&inode).map_err(JournalError::Inode)?;
    let (first, end) = (u64::from(sb.first), u64::from(sb.maxlen));
    let blocks = fs.blocks_count();
    let mut pieces = Vec::new();
    let mut next = first;
    for r in &map.runs {
        let (lo, hi) = (r.lblk.max(first), (r.lblk + u64::from(r.len)).min(end));
        if lo >= hi {
            continue;
        }
        let corrupt = |why: &str| JournalError::Corrupt {
            block: next,
            why: why.into(),
        };
        if lo != next {
            return Err(corrupt("the journal inode has no block there"));
        }
        if r.unwritten {
            return Err(corrupt("the journal inode maps it unwritten"));
        }
        let phys = r.pblk + (lo - r.lblk);
        if phys.saturating_add(hi - lo) > blocks {
            return Err(corrupt("the journal inode maps it outside the filesystem"));
        }
        if pieces.len() >= MAX_IDLE_PIECES {
            return Err(JournalError::TooLarge {
                what: "pieces of log",
                cap: MAX_IDLE_PIECES as u64,
            });
        }
        pieces.push((phys, hi - lo));
        next = hi;
    }
    if next != end {
        return Err(JournalError::Corrupt {
            block: next,
            why: "the journal inode has no block there".into(),
        });
    }
    pieces.sort_unstable();
    Ok(Some(pieces))
}

impl<'a> Journal<'a> {
    /// Locate the journal of `fs` and read its superblock; `None` for an empty log.
    fn open(fs: &'a RawFs) -> Result<Option<Journal<'a>>, JournalError> {
        let (_, runs, sb) = locate(fs)?;
        let corrupt = |why: String| JournalError::Corrupt { block: 0, why };
        if sb.start == 0 {
            return Ok(None);
        }
        if sb.start < sb.first || sb.start >= sb.maxlen {
            return Err(corrupt(format!(
                "the log starts at block {}, outside {}..{}",
                sb.start, sb.first, sb.maxlen
            )));
        }
        Ok(Some(Journal {
            fs,
            runs,
            format: TagFormat::of(&sb),
            seed: sb.csum_seed(),
            sb,
        }))
    }

    /// Read journal block `n` into `buf`; returns the filesystem block it lies in.
    fn read(&self, n: u64, buf: &mut [u8]) -> Result<u64, JournalError> {
        read_in(self.fs, &self.runs, n, buf)
    }

    /// The log block after `n` (the log wraps from `s_maxlen` back to `s_first`).
    fn next(&self, n: u64) -> u64 {
        if n + 1 >= u64::from(self.sb.maxlen) {
            u64::from(self.sb.first)
        } else {
            n + 1
        }
    }

    /// Pass 1: the committed transactions, in order.
    fn scan(&self) -> Result<Vec<Transaction>, JournalError> {
        let log_len = u64::from(self.sb.maxlen - self.sb.first);
        let v1_csum = !self.sb.has_csum() && self.sb.compat & feature::COMPAT_CHECKSUM != 0;
        let mut block = vec![0u8; self.fs.block_size() as usize];
        let mut committed = Vec::new();
        let mut open = Transaction {
            sequence: self.sb.sequence,
            ..Transaction::default()
        };
        let mut at = u64::from(self.sb.start);
        let mut visited = 0u64;
        let mut crc = !0u32;
        let mut crc_seen = false;
        let visit = |visited: &mut u64| -> Result<(), JournalError> {
            *visited += 1;
            if *visited > log_len {
                return Err(JournalError::Loop { blocks: log_len });
            }
            Ok(())
        };
        loop {
            visit(&mut visited)?;
            self.read(at, &mut block)?;
            let malformed = |source| JournalError::Malformed { block: at, source };
            let Some(h) = Header::parse(&block).map_err(malformed)? else {
                break;
            };
            if h.sequence != open.sequence {
                break;
            }
            match h.block_type {
                BlockType::Descriptor => {
                    if self.sb.has_csum()
                        && !descriptor::tail_ok(&block, self.seed).map_err(malformed)?
                    {
                        break;
                    }
                    if v1_csum {
                        crc = commit::crc32_be(crc, &block);
                    }
                    let tags = descriptor::tags(&block, self.format).map_err(malformed)?;
                    for tag in tags {
                        at = self.next(at);
                        visit(&mut visited)?;
                        if v1_csum {
                            let mut data = vec![0u8; block.len()];
                            self.read(at, &mut data)?;
                            crc = commit::crc32_be(crc, &data);
                        }
                        open.tags.push((tag, at));
                    }
                }
                BlockType::Commit => {
                    if self.sb.has_csum()
                        && !commit::csum_ok(&block, self.seed).map_err(malformed)?
                    {
                        break;
                    }
                    if v1_csum {
                        let c = commit::Commit::parse(&block).map_err(malformed)?;
                        if !c.v1_ok(crc, crc_seen) {
                            break;
                        }
                        crc_seen |= c.has_v1();
                        crc = !0;
                    }
                    let next = open.sequence.wrapping_add(1);
                    committed.push(std::mem::replace(
                        &mut open,
                        Transaction {
                            sequence: next,
                            ..Transaction::default()
                        },
                    ));
                }
                BlockType::Revoke => open.revokes.push(at),
                BlockType::SuperblockV1 | BlockType::SuperblockV2 | BlockType::Other(_) => break,
            }
            at = self.next(at);
        }
        Ok(committed)
    }

    /// Pass 2: each revoked block with the newest transaction revoking it.
    fn revoked(&self, committed: &[Transaction]) -> Result<HashMap<u64, u32>, JournalError> {
        let mut out: HashMap<u64, u32> = HashMap::new();
        if !self.sb.has_incompat(feature::INCOMPAT_REVOKE) {
            return Ok(out);
        }
        let wide = self.sb.has_incompat(feature::INCOMPAT_64BIT);
        let mut block = vec![0u8; self.fs.block_size() as usize];
        for t in committed {
            for &at in &t.revokes {
                self.read(at, &mut block)?;
                let malformed = |source| JournalError::Malformed { block: at, source };
                if self.sb.has_csum()
                    && !descriptor::tail_ok(&block, self.seed).map_err(malformed)?
                {
                    return Err(JournalError::Checksum {
                        block: at,
                        what: "revoke block",
                    });
                }
                for b in revoke::records(&block, wide, self.sb.has_csum()).map_err(malformed)? {
                    if out.len() >= MAX_ENTRIES && !out.contains_key(&b) {
                        return Err(JournalError::TooLarge {
                            what: "revoked blocks",
                            cap: MAX_ENTRIES as u64,
                        });
                    }
                    let e = out.entry(b).or_insert(t.sequence);
                    if tid_gt(t.sequence, *e) {
                        *e = t.sequence;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Read journal block `n` (through the journal inode's `runs`) into `buf`; returns the
/// filesystem block it lies in.
fn read_in(fs: &RawFs, runs: &[Run], n: u64, buf: &mut [u8]) -> Result<u64, JournalError> {
    let i = runs.partition_point(|r| r.lblk + u64::from(r.len) <= n);
    let phys = match runs.get(i) {
        Some(r) if r.lblk <= n && !r.unwritten => r.pblk + (n - r.lblk),
        _ => {
            return Err(JournalError::Corrupt {
                block: n,
                why: "the journal inode has no block there".into(),
            })
        }
    };
    if phys >= fs.blocks_count() {
        return Err(JournalError::Corrupt {
            block: n,
            why: format!("the journal inode maps it to block {phys}, outside the filesystem"),
        });
    }
    fs.read_at(phys, 0, buf)
        .map_err(|source| JournalError::Io { block: n, source })?;
    Ok(phys)
}
