//! An inode's block map, as ext2 and ext3 keep it and ext4 still does for inodes without
//! `EXT4_EXTENTS_FL` (Documentation/filesystems/ext4/ifork.rst, "Direct/Indirect Block
//! Addressing", whose table is blockmap.rst): the 15 little-endian 32-bit entries of
//! `i_block` are twelve direct block numbers, then one single-, one double- and one
//! triple-indirect block, each indirect block an array of `block_size / 4` entries of
//! the next level. A zero entry is a hole. Every entry is read through
//! [`crate::bytes::Fields`].
//!
//! The walk visits every non-zero entry (also those past `i_size`: libext2fs's block
//! iterator does, when it frees or counts them) and checks each block before use: inside
//! the filesystem, not metadata, and not listed twice. An indirect block met a second
//! time is refused when it is met, so a block that lists itself costs one read, not the
//! `(block_size / 4)^3` entries a naive walk would expand it into.

use super::extent::Run;
use super::inode::RawInode;
use super::{MapProblem, RawError};
use crate::bytes::Fields;
use std::collections::HashSet;

/// `EXT4_NDIR_BLOCKS`: direct entries in `i_block`.
const DIRECT: usize = 12;
/// Most indirect blocks read for one file: at 4 KiB blocks each maps 4 MiB, so this
/// covers files of 256 GiB.
pub const MAX_INDIRECT: usize = 1 << 16;
/// Most runs of contiguous blocks kept for one file (24 bytes each).
pub const MAX_RUNS: usize = 1 << 20;

/// What the walk needs from the filesystem (a trait, so hand-made maps can be tested
/// without an image).
pub trait Blocks {
    /// Block size in bytes.
    fn block_size(&self) -> u64;
    /// `s_first_data_block`: lower blocks belong to no group.
    fn first_data_block(&self) -> u64;
    /// Blocks in the filesystem.
    fn blocks_count(&self) -> u64;
    /// The first metadata block among `[start, start + count)`, if any.
    fn metadata_in(&self, start: u64, count: u64) -> Result<Option<u64>, RawError>;
    /// Read block `block` into `buf` (one block long).
    fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<(), RawError>;
}

/// Every block an inode's block map owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockMap {
    /// The data, in logical order, contiguous blocks coalesced; not clipped to `i_size`.
    pub runs: Vec<Run>,
    /// The indirect blocks, in the order walked.
    pub indirect: Vec<u64>,
}

/// The data runs of `inode` in logical order, clipped to its size (what a reader needs).
pub fn map<B: Blocks + ?Sized>(fs: &B, inode: &RawInode) -> Result<Vec<Run>, RawError> {
    let file_blocks = inode.size.div_ceil(fs.block_size());
    Ok(clip(walk(fs, inode)?.runs, file_blocks))
}

/// Runs cut at logical block `file_blocks`.
pub fn clip(runs: Vec<Run>, file_blocks: u64) -> Vec<Run> {
    let mut runs = runs;
    runs.retain_mut(|r| {
        if r.lblk >= file_blocks {
            return false;
        }
        r.len = u64::from(r.len).min(file_blocks - r.lblk) as u32;
        true
    });
    runs
}

/// Walk `inode`'s whole block map, checking every block.
pub fn walk<B: Blocks + ?Sized>(fs: &B, inode: &RawInode) -> Result<BlockMap, RawError> {
    let per_block = fs.block_size() / 4;
    let mut w = Walk {
        fs,
        ino: inode.ino,
        per_block,
        map: BlockMap::default(),
        seen: HashSet::new(),
    };
    let f = Fields::new("ext2 i_block", &inode.i_block);
    let entry = |i: usize| -> Result<u64, RawError> {
        f.u32("i_block entry", 4 * i)
            .map(u64::from)
            .map_err(|e| super::corrupt(inode.ino, e.to_string()))
    };
    for i in 0..DIRECT {
        let b = entry(i)?;
        if b != 0 {
            w.data(i as u64, b)?;
        }
    }
    // First logical block each indirect tree maps: 12, 12 + p, 12 + p + p².
    let mut first = DIRECT as u64;
    let mut span = per_block;
    for level in 1..=3u32 {
        let b = entry(DIRECT + level as usize - 1)?;
        if b != 0 {
            w.indirect(b, level, first)?;
        }
        first += span;
        span = span.saturating_mul(per_block);
    }
    check_disjoint(inode.ino, &w.map)?;
    Ok(w.map)
}

struct Walk<'a, B: ?Sized> {
    fs: &'a B,
    ino: u32,
    per_block: u64,
    map: BlockMap,
    /// Indirect blocks already read.
    seen: HashSet<u64>,
}

impl<B: Blocks + ?Sized> Walk<'_, B> {
    fn problem(&self, problem: MapProblem) -> RawError {
        RawError::BadMap {
            ino: self.ino,
            problem,
        }
    }

    /// Is `block` one a file may own?
    fn check(&self, block: u64) -> Result<(), RawError> {
        let (first, count) = (self.fs.first_data_block(), self.fs.blocks_count());
        if block < first.max(1) || block >= count {
            return Err(self.problem(MapProblem::Outside { block, count }));
        }
        if self.fs.metadata_in(block, 1)?.is_some() {
            return Err(self.problem(MapProblem::Metadata { block }));
        }
        Ok(())
    }

    fn data(&mut self, lblk: u64, pblk: u64) -> Result<(), RawError> {
        self.check(pblk)?;
        if let Some(last) = self.map.runs.last_mut() {
            let len = u64::from(last.len);
            if last.pblk + len == pblk && last.lblk + len == lblk && last.len < u32::MAX {
                last.len += 1;
                return Ok(());
            }
            if pblk >= last.pblk && pblk < last.pblk + len {
                return Err(self.problem(MapProblem::Twice { block: pblk }));
            }
        }
        if self.map.runs.len() >= MAX_RUNS {
            return Err(self.problem(MapProblem::TooManyRuns { max: MAX_RUNS }));
        }
        self.map.runs.push(Run {
            lblk,
            pblk,
            len: 1,
            unwritten: false,
        });
        Ok(())
    }

    /// Indirect block `block` of `level` (1: its entries are data blocks), mapping
    /// logical blocks from `first`.
    fn indirect(&mut self, block: u64, level: u32, first: u64) -> Result<(), RawError> {
        self.check(block)?;
        if !self.seen.insert(block) {
            return Err(self.problem(MapProblem::Twice { block }));
        }
        if self.map.indirect.len() >= MAX_INDIRECT {
            return Err(self.problem(MapProblem::TooManyIndirect { max: MAX_INDIRECT }));
        }
        self.map.indirect.push(block);
        let mut buf = vec![0u8; self.fs.block_size() as usize];
        self.fs.read_block(block, &mut buf)?;
        let f = Fields::new("ext2 indirect block", &buf);
        let span = self.per_block.pow(level - 1);
        for i in 0..self.per_block {
            let child = f
                .u32("block entry", 4 * i as usize)
                .map_err(|e| super::corrupt(self.ino, e.to_string()))?;
            if child == 0 {
                continue;
            }
            let lblk = first + i * span;
            if level == 1 {
                self.data(lblk, u64::from(child))?;
            } else {
                self.indirect(u64::from(child), level - 1, lblk)?;
            }
        }
        Ok(())
    }
}

/// No block of `map` is listed twice (as data twice, or as data and as a tree block).
pub(crate) fn check_disjoint(ino: u32, map: &BlockMap) -> Result<(), RawError> {
    let mut all: Vec<(u64, u64)> = map
        .runs
        .iter()
        .map(|r| (r.pblk, u64::from(r.len)))
        .chain(map.indirect.iter().map(|&b| (b, 1)))
        .collect();
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(RawError::BadMap {
            ino,
            problem: MapProblem::Twice { block: w[1].0 },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::read::inode::I_BLOCK_LEN;
    use crate::ext::read::layout::Metadata;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// An in-memory filesystem of 1 KiB blocks (256 entries per indirect block).
    struct Mem {
        blocks: u64,
        meta: Metadata,
        data: HashMap<u64, Vec<u8>>,
        reads: Cell<u64>,
    }

    const BS: u64 = 1024;
    const P: u64 = BS / 4;

    impl Mem {
        fn new(blocks: u64) -> Mem {
            Mem {
                blocks,
                // Boot block, superblock + descriptors, bitmaps, inode table.
                meta: Metadata::from_ranges(vec![(0, 1), (1, 2), (3, 2), (5, 16)]),
                data: HashMap::new(),
                reads: Cell::new(0),
            }
        }

        /// Make `block` an indirect block listing `entries` (index, block number).
        fn set(&mut self, block: u64, entries: &[(usize, u32)]) {
            let b = self
                .data
                .entry(block)
                .or_insert_with(|| vec![0; BS as usize]);
            for &(i, v) in entries {
                b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    impl Blocks for Mem {
        fn block_size(&self) -> u64 {
            BS
        }
        fn first_data_block(&self) -> u64 {
            1
        }
        fn blocks_count(&self) -> u64 {
            self.blocks
        }
        fn metadata_in(&self, start: u64, count: u64) -> Result<Option<u64>, RawError> {
            Ok(self.meta.first_in(start, count))
        }
        fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<(), RawError> {
            self.reads.set(self.reads.get() + 1);
            match self.data.get(&block) {
                Some(b) => buf.copy_from_slice(b),
                None => buf.fill(0),
            }
            Ok(())
        }
    }

    fn inode(size: u64, entries: &[(usize, u32)]) -> RawInode {
        let mut i_block = [0u8; I_BLOCK_LEN];
        for &(i, v) in entries {
            i_block[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        RawInode {
            ino: 12,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size,
            atime: 0,
            mtime: 0,
            flags: 0,
            generation: 0,
            i_block,
            seed: None,
            inline: None,
        }
    }

    fn run(lblk: u64, pblk: u64, len: u32) -> Run {
        Run {
            lblk,
            pblk,
            len,
            unwritten: false,
        }
    }

    fn problem(e: RawError) -> MapProblem {
        match e {
            RawError::BadMap { ino: 12, problem } => problem,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn direct_blocks_coalesce_and_holes_split() {
        let fs = Mem::new(1000);
        let i = inode(5 * BS, &[(0, 100), (1, 101), (2, 102), (4, 200)]);
        let m = walk(&fs, &i).unwrap();
        assert_eq!(m.runs, vec![run(0, 100, 3), run(4, 200, 1)]);
        assert!(m.indirect.is_empty());
    }

    #[test]
    fn single_double_and_triple_indirect_blocks_map_their_logical_ranges() {
        let mut fs = Mem::new(10_000);
        // Single: entries 0 and 1 → logical 12, 13.
        fs.set(500, &[(0, 600), (1, 601)]);
        // Double: entry 1 → single 502, whose entry 3 is logical 12 + P + P + 3.
        fs.set(501, &[(1, 502)]);
        fs.set(502, &[(3, 700)]);
        // Triple: entry 2 → double 504 → entry 0 → single 505 → entry 0.
        fs.set(503, &[(2, 504)]);
        fs.set(504, &[(0, 505)]);
        fs.set(505, &[(0, 800)]);
        let i = inode(u64::MAX / 2, &[(11, 400), (12, 500), (13, 501), (14, 503)]);
        let m = walk(&fs, &i).unwrap();
        let triple = 12 + P + P * P + 2 * P * P;
        assert_eq!(
            m.runs,
            vec![
                run(11, 400, 1),
                run(12, 600, 2),
                run(12 + 2 * P + 3, 700, 1),
                run(triple, 800, 1)
            ]
        );
        assert_eq!(m.indirect, vec![500, 501, 502, 503, 504, 505]);
        // A reader sees only what the size covers.
        let small = inode(13 * BS, &[(11, 400), (12, 500)]);
        assert_eq!(
            map(&fs, &small).unwrap(),
            vec![run(11, 400, 1), run(12, 600, 1)]
        );
    }

    #[test]
    fn a_self_referencing_triple_indirect_block_is_refused_after_one_read() {
        let mut fs = Mem::new(10_000);
        let all: Vec<(usize, u32)> = (0..P as usize).map(|i| (i, 900)).collect();
        fs.set(900, &all);
        let i = inode(BS, &[(0, 100), (14, 900)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 900 }
        );
        assert_eq!(fs.reads.get(), 1);
    }

    #[test]
    fn a_loop_between_two_indirect_blocks_is_refused() {
        let mut fs = Mem::new(10_000);
        fs.set(900, &[(0, 901)]);
        fs.set(901, &[(0, 900)]);
        let i = inode(BS, &[(14, 900)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 900 }
        );
        assert_eq!(fs.reads.get(), 2);
    }

    #[test]
    fn a_single_indirect_block_fanned_out_to_itself_from_a_double_is_refused() {
        let mut fs = Mem::new(10_000);
        let all: Vec<(usize, u32)> = (0..P as usize).map(|i| (i, 950)).collect();
        fs.set(901, &all);
        fs.set(950, &[(0, 300)]);
        let i = inode(BS, &[(13, 901)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 950 }
        );
        assert_eq!(fs.reads.get(), 2);
    }

    #[test]
    fn a_data_block_listed_twice_is_refused() {
        let fs = Mem::new(1000);
        let i = inode(3 * BS, &[(0, 100), (1, 300), (2, 100)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 100 }
        );
        // Next to each other, caught before coalescing hides it.
        let i = inode(3 * BS, &[(0, 100), (1, 100)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 100 }
        );
    }

    #[test]
    fn an_indirect_block_that_is_also_data_is_refused() {
        let mut fs = Mem::new(1000);
        fs.set(500, &[(0, 600)]);
        let i = inode(20 * BS, &[(0, 500), (12, 500)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 500 }
        );
        let i = inode(20 * BS, &[(0, 600), (12, 500)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Twice { block: 600 }
        );
    }

    #[test]
    fn blocks_outside_the_filesystem_or_in_metadata_are_refused() {
        let mut fs = Mem::new(1000);
        let i = inode(BS, &[(0, 1000)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Outside {
                block: 1000,
                count: 1000
            }
        );
        let i = inode(BS, &[(3, 10)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Metadata { block: 10 }
        );
        // An indirect block pointing into the inode table, and one listing it.
        let i = inode(BS, &[(12, 7)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Metadata { block: 7 }
        );
        fs.set(500, &[(5, 20)]);
        let i = inode(BS, &[(12, 500)]);
        assert_eq!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Metadata { block: 20 }
        );
        fs.set(501, &[(5, u32::MAX)]);
        let i = inode(BS, &[(12, 501)]);
        assert!(matches!(
            problem(walk(&fs, &i).unwrap_err()),
            MapProblem::Outside { .. }
        ));
    }

    #[test]
    fn runs_are_bounded() {
        // Every other block of a large filesystem: no coalescing, so runs pile up. A
        // triple-indirect block (30) lists doubles (31..), each listing P singles
        // (from 100), each listing P data blocks two apart (from 10 000).
        let blocks = 2 * MAX_RUNS as u64 + 20_000;
        let mut fs = Mem::new(blocks);
        let singles = (MAX_RUNS as u64).div_ceil(P) + 2;
        let doubles = singles.div_ceil(P);
        let mut next = 10_000u64;
        for s in 0..singles {
            let entries: Vec<(usize, u32)> = (0..P as usize)
                .map(|i| (i, (next + 2 * i as u64) as u32))
                .collect();
            next += 2 * P;
            fs.set(100 + s, &entries);
        }
        for d in 0..doubles {
            let entries: Vec<(usize, u32)> = (0..P)
                .filter(|i| d * P + i < singles)
                .map(|i| (i as usize, (100 + d * P + i) as u32))
                .collect();
            fs.set(31 + d, &entries);
        }
        let triple: Vec<(usize, u32)> = (0..doubles).map(|d| (d as usize, 31 + d as u32)).collect();
        fs.set(30, &triple);
        let i = inode(1, &[(14, 30)]);
        let e = walk(&fs, &i).unwrap_err();
        assert_eq!(problem(e), MapProblem::TooManyRuns { max: MAX_RUNS });
    }

    #[test]
    fn holes_everywhere_give_no_runs() {
        let mut fs = Mem::new(1000);
        fs.set(500, &[]);
        let i = inode(100 * BS, &[(12, 500)]);
        let m = walk(&fs, &i).unwrap();
        assert!(m.runs.is_empty());
        assert_eq!(m.indirect, vec![500]);
        assert_eq!(clip(vec![run(0, 100, 10)], 4), vec![run(0, 100, 4)]);
        assert!(clip(vec![run(5, 100, 10)], 4).is_empty());
    }
}
