//! The fuzz harnesses (issue 8), shared by the cargo-fuzz targets (`fuzz_targets/*.rs`,
//! run by `scripts/fuzz`) and the regression replay test
//! (`crates/imgconv-core/tests/it/mutation_fuzz_replay.rs`, which feeds every file under
//! `testdata/regressions/<target>/` through the same function).
//!
//! A harness must never panic or abort on any input: every library call returns `Ok` or a
//! typed error, and the harness ignores which. Inputs that need a file (the library reads
//! images through `Region`, a file window) are written to one scratch file per process
//! and harness, in /dev/shm when it exists.

#![allow(dead_code)] // each fuzz target uses one harness

use imgconv_core::blockio::Region;
use imgconv_core::boot::grub_bios::moddep::ModDeps;
use imgconv_core::donor::Donor;
use imgconv_core::ext::group_desc;
use imgconv_core::source::{self, Superblock};
use imgconv_core::xen_config::{DiskArg, XenConfig};
use imgconv_core::{partition, stream, NoProgress};
use std::path::PathBuf;

/// Called once by each fuzz target (`fuzz_target!(init: …)`), after libfuzzer-sys made
/// every panic abort. The one third-party parser that imgconv-core always calls under
/// `catch_unwind` (bootsector in partition.rs: its panics on corrupt input become typed
/// errors there) may panic and unwind to that guard; any other panic still aborts at
/// once, where libFuzzer can see it.
pub fn fuzz_init() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let contained = info.location().is_some_and(|l| {
            let f = l.file();
            f.contains("/bootsector-")
        });
        if !contained {
            abort_hook(info);
        }
    }));
}

/// `<tmp>/imgconv-fuzz-<pid>-<tid>-<name>` (one per thread: the replay test runs harnesses
/// in parallel test threads).
fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let tid = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    base.join(format!("imgconv-fuzz-{}-{tid}-{name}", std::process::id()))
}

fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, data).expect("write the scratch input");
    p
}

/// Partition-table parsing: MBR (with extended/logical chains) and GPT.
pub fn partition_table(data: &[u8]) {
    let p = write_scratch("pt", data);
    if let Ok(region) = Region::open(&p) {
        if let Ok(Some(table)) = partition::read_table(&region) {
            for e in &table.entries {
                // Every entry must be inside the image: the parser bounds-checks them.
                assert!(
                    e.start.saturating_add(e.len) <= region.len(),
                    "entry {} outside the image: {e:?}",
                    e.number
                );
                let _ = region.sub(e.start, e.len);
            }
        }
    }
    let _ = std::fs::remove_file(p);
}

/// Superblock and group-descriptor parsing, straight from bytes: the superblock is at
/// byte 1024 of `data` (as on disk), descriptors follow at `desc_position`.
pub fn superblock(data: &[u8]) {
    let Some(raw) = data.get(1024..2048) else {
        return;
    };
    let Ok(sb) = Superblock::parse(raw) else {
        return;
    };
    let _ = sb.info();
    let _ = sb.unsupported_feature();
    let groups = sb.groups_count();
    for g in [0, 1, groups / 2, groups.saturating_sub(1)] {
        if g >= groups {
            continue;
        }
        let _ = sb.group_first_block(g);
        let _ = sb.group_block_count(g);
        let _ = sb.group_has_super(g);
        let _ = group_desc::base_metadata(&sb, g);
        let pos = group_desc::desc_position(&sb, g);
        let end = pos.saturating_add(sb.desc_size());
        if let Some(desc) = usize::try_from(pos)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(a, b)| data.get(a..b))
        {
            if let Ok(d) = group_desc::GroupDesc::parse(desc, &sb) {
                let _ = d.block_uninit(&sb);
            }
            let _ = group_desc::expected_desc_checksum(&sb, g, desc);
        }
    }
    let _ = group_desc::inode_table_blocks(&sb);
}

/// Source inspection of a whole image (partition table, superblock, journal replay in
/// memory, guest scan), then, when it succeeds, the bitmap walker of the stream stage into a sparse
/// scratch file.
pub fn inspect(data: &[u8]) {
    let p = write_scratch("src", data);
    if let Ok(ins) = source::inspect(&p) {
        let _ = ins.check_journal(false);
        let _ = ins.place();
        if let Ok(src) = ins.open_fs() {
            let out = scratch("out");
            if let Ok(f) = std::fs::File::create(&out) {
                // inspect refused any filesystem larger than the input.
                if f.set_len(ins.fs_len).is_ok() {
                    let _ = stream::copy_used_blocks(&src, &f, 0, &mut NoProgress);
                }
            }
            let _ = std::fs::remove_file(out);
        }
    }
    let _ = std::fs::remove_file(p);
}

/// Container reading (XVA, VHD, qcow2, gzip/xz/zstd): open the image, then read its first
/// MiB, its last sector and a few places between, and its data map.
pub fn formats(data: &[u8]) {
    let p = write_scratch("fmt", data);
    let opts = imgconv_core::formats::OpenOptions {
        scratch_dir: Some(std::env::temp_dir()),
    };
    if let Ok(opened) = imgconv_core::formats::open(&p, &opts) {
        // The disk opened and the container's other disks (an XVA's other VDIs).
        let others = opened.others.into_iter().map(|m| m.region);
        for r in std::iter::once(opened.region).chain(others) {
            let _ = r.format();
            let len = r.len();
            let mut buf = vec![0u8; 64 << 10];
            for pos in [0, len / 3, len / 2, len.saturating_sub(512)] {
                let _ = r.read_at(pos, &mut buf);
            }
            let mut at = 0;
            while at < len.min(1 << 20) {
                let _ = r.read_at(at, &mut buf);
                at += buf.len() as u64;
            }
            let _ = r.data_ranges(0, len.min(1 << 30));
        }
    }
    let _ = std::fs::remove_file(p);
}

/// Donor reading: a bare filesystem or partitioned donor image, kernels and their
/// modules trees, the GRUB file set.
pub fn donor(data: &[u8]) {
    let p = write_scratch("donor", data);
    if let Ok(d) = Donor::open(&p) {
        let _ = d.candidates();
        let _ = d.source_labels();
        for k in d.kernels() {
            let _ = d.graft_size(&k);
            let _ = k.file_count();
        }
        let _ = d.select_kernel(None);
        let _ = d.grub_files("i386-pc");
    }
    let _ = std::fs::remove_file(p);
}

/// The boot records `verify` reads back from a disk: GRUB's boot sector (core.img's
/// LBA), the first blocklist entry of core.img's diskboot sector, and the swap v1 header.
/// Each gets the input as it is, and padded or cut to one sector (a page for swap).
pub fn boot_records(data: &[u8]) {
    use imgconv_core::boot::grub_bios::{core_image, mbr};
    let mut sector = data.to_vec();
    sector.resize(512, 0);
    let mut page = data.to_vec();
    page.resize(imgconv_core::swap::PAGE_SIZE as usize, 0);
    for d in [data, &sector[..], &page[..]] {
        let _ = mbr::grub_core_sector(d);
        let _ = core_image::read_first_blocklist(d);
        let _ = imgconv_core::swap::read_header(d);
    }
}

/// `moddep.lst` parsing and dependency resolution (cycles, unknown modules, deep chains):
/// resolves the modules core.img needs and every module name the input mentions.
pub fn moddep(data: &[u8]) {
    let Ok(m) = ModDeps::parse(data) else {
        return;
    };
    let _ = m.resolve(&["biosdisk", "part_msdos", "ext2", "search_fs_uuid"]);
    let text = String::from_utf8_lossy(data);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
        .take(64)
        .collect();
    for n in &names {
        let _ = m.deps(n);
        let _ = m.resolve(&[n]);
    }
    let _ = m.resolve(&names);
}

/// One on-disk inode (`ext::read::inode`): the first 4 bytes are the inode number and
/// whether to check a `metadata_csum` checksum (seeded by them), the rest the inode.
pub fn extraw_inode(data: &[u8]) {
    let Some((head, raw)) = data.split_first_chunk::<4>() else {
        return;
    };
    let ino = u32::from_le_bytes(*head);
    let seed = (ino & 1 == 1).then_some(ino);
    if let Ok(inode) = imgconv_core::ext::read::RawInode::parse(ino.max(1), raw, seed) {
        let _ = inode.kind();
        let _ = inode.meta();
    }
}

/// A block map (`ext::read::blockmap`) over an in-memory filesystem of 1 KiB blocks: the
/// first 60 bytes are `i_block`, the next 8 the file size, the rest the blocks from
/// block 0 (blocks 0 and 1 are metadata, blocks past the data read as zeros, the
/// filesystem is four times the data long).
pub fn extraw_blockmap(data: &[u8]) {
    use imgconv_core::ext::read::blockmap::{self, Blocks};
    use imgconv_core::ext::read::layout::Metadata;
    use imgconv_core::ext::read::{RawError, RawInode};
    struct Mem<'a> {
        blocks: &'a [u8],
        meta: Metadata,
    }
    impl Blocks for Mem<'_> {
        fn block_size(&self) -> u64 {
            1024
        }
        fn first_data_block(&self) -> u64 {
            1
        }
        fn blocks_count(&self) -> u64 {
            (self.blocks.len() as u64 / 1024 + 1) * 4
        }
        fn metadata_in(&self, start: u64, count: u64) -> Result<Option<u64>, RawError> {
            Ok(self.meta.first_in(start, count))
        }
        fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<(), RawError> {
            buf.fill(0);
            let start = usize::try_from(block.saturating_mul(1024)).unwrap_or(usize::MAX);
            if let Some(src) = self.blocks.get(start..) {
                let n = src.len().min(buf.len());
                buf[..n].copy_from_slice(&src[..n]);
            }
            Ok(())
        }
    }
    let Some((i_block, rest)) = data.split_first_chunk::<60>() else {
        return;
    };
    let Some((size, blocks)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let fs = Mem {
        blocks,
        meta: Metadata::from_ranges(vec![(0, 2)]),
    };
    let inode = RawInode {
        ino: 12,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        size: u64::from_le_bytes(*size),
        atime: 0,
        mtime: 0,
        flags: 0,
        generation: 0,
        i_block: *i_block,
        seed: None,
        inline: None,
    };
    if let Ok(map) = blockmap::walk(&fs, &inode) {
        assert!(map.runs.len() <= blockmap::MAX_RUNS);
        assert!(map.indirect.len() <= blockmap::MAX_INDIRECT);
        for r in &map.runs {
            assert!(r.pblk >= 2 && r.pblk + u64::from(r.len) <= fs.blocks_count());
        }
    }
    let _ = blockmap::map(&fs, &inode);
}

/// The first inodes of a filesystem image through `ext::read` (the ext2/3/4 reader used by
/// the block check): each inode, its extent tree or block map, its content.
pub fn extraw_extent(data: &[u8]) {
    let p = write_scratch("extent", data);
    if let Ok(region) = Region::open(&p) {
        if let Ok(fs) = imgconv_core::ext::read::RawFs::open_for_check(region) {
            let fs = std::sync::Arc::new(fs);
            let last = fs.superblock().inodes_count.min(64);
            for ino in 1..=last {
                let Ok(inode) = fs.inode(ino) else { continue };
                let _ = fs.owned_blocks(&inode);
                if let Ok(mut f) = fs.open_file(&inode) {
                    let mut buf = vec![0u8; 64 << 10];
                    let _ = f.read_some(&mut buf);
                }
            }
        }
    }
    let _ = std::fs::remove_file(p);
}

/// Directories and symlinks of a filesystem image through `ext::read`, then the whole
/// block check (`blockcheck::check`: every inode, shared and free blocks, naming).
pub fn extraw_dir(data: &[u8]) {
    let p = write_scratch("dir", data);
    if let Ok(region) = Region::open(&p) {
        if let Ok(fs) = imgconv_core::ext::read::RawFs::open_for_check(region.clone()) {
            let fs = std::sync::Arc::new(fs);
            let last = fs.superblock().inodes_count.min(64);
            for ino in 1..=last {
                let Ok(inode) = fs.inode(ino) else { continue };
                let _ = fs.read_dir(&inode, 1000);
                let _ = fs.read_link(&inode, 4096);
            }
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let _ = imgconv_core::blockcheck::check(&region, &stop);
    }
    let _ = std::fs::remove_file(p);
}

/// LVM2 on a whole disk: label, metadata area, metadata text, volume group assembly, then
/// each usable logical volume read at its start, middle and end, and its data map. The
/// input is the start of a 64 MiB disk (the rest reads as zeros), so a small input still
/// reaches volumes whose extents lie past it.
pub fn lvm(data: &[u8]) {
    use imgconv_core::lvm;
    let p = write_scratch("lvm", data);
    let grown = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len((data.len() as u64).max(64 << 20)));
    if grown.is_ok() {
        if let Ok(region) = Region::open(&p) {
            let scan = lvm::scan(&[("fuzz".to_string(), region)]);
            for g in &scan.groups {
                let _ = g.complete();
            }
            for v in scan.volumes() {
                let _ = scan.find(&v.dev_path());
                let _ = scan.find(&v.mapper_path());
                let Ok(r) = v.open() else { continue };
                assert_eq!(r.len(), v.size, "{}", v.name);
                let mut buf = vec![0u8; 64 << 10];
                for pos in [0, r.len() / 2, r.len().saturating_sub(1000)] {
                    let _ = r.read_at(pos, &mut buf);
                }
                let _ = r.data_ranges(0, r.len());
            }
        }
    }
    let _ = std::fs::remove_file(p);
}

/// LVM2's metadata text syntax alone.
pub fn lvm_text(data: &[u8]) {
    if let Ok(top) = imgconv_core::lvm::text::parse(data) {
        for (_, s) in top.sections() {
            let _ = s.int("seqno");
            let _ = s.str_list("status");
        }
    }
}

/// Xen domU config parsing (xl/xm syntax, disk and vif entries) and the image lookup
/// beside the config (in a directory that holds no images, so every lookup misses); each
/// line also goes through the `PATH=XENDEV` parser.
pub fn xen_config(data: &[u8]) {
    let dir = scratch("xencfg-dir");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(cfg) = XenConfig::from_bytes(data, &dir.join("guest.cfg")) {
        let _ = cfg.vm_facts();
        let _ = cfg.kernel_cmdline();
        let _ = cfg.resolve_disks();
        for d in &cfg.disks {
            // Every device name read back parses to itself.
            let name = d.vdev.to_string();
            assert_eq!(
                imgconv_core::xen_config::XenDevice::parse(&name),
                Ok(d.vdev),
                "{name}"
            );
        }
    }
    for line in String::from_utf8_lossy(data).lines().take(64) {
        let _ = DiskArg::parse(line);
    }
    let _ = std::fs::remove_dir(&dir);
}

/// A filesystem image whose journal needs recovery through `ext::read`'s in-memory replay
/// (journal superblock, descriptor, revoke and commit blocks, the overlay), then its
/// first inodes, directories, symlinks and file contents read through the replayed view;
/// first, its journal as the stream reads a clean one (`journal::idle_log`).
pub fn extraw_journal(data: &[u8]) {
    let p = write_scratch("journal", data);
    if let Ok(region) = Region::open(&p) {
        if let Ok(fs) = imgconv_core::ext::read::RawFs::open_unreplayed(region.clone()) {
            let _ = imgconv_core::ext::read::journal::idle_log(&fs);
        }
        if let Ok(fs) = imgconv_core::ext::read::RawFs::open(region) {
            let fs = std::sync::Arc::new(fs);
            let last = fs.superblock().inodes_count.min(32);
            for ino in 1..=last {
                let Ok(inode) = fs.inode(ino) else { continue };
                let _ = fs.read_dir(&inode, 1000);
                let _ = fs.read_link(&inode, 4095);
                if let Ok(mut f) = fs.open_file(&inode) {
                    let mut buf = vec![0u8; 64 << 10];
                    let _ = f.read_some(&mut buf);
                }
            }
        }
    }
    let _ = std::fs::remove_file(p);
}
