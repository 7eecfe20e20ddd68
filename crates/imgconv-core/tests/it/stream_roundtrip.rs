//! End to end through the library: inspect → plan → MBR → stream → swap → commit, on
//! ext2/ext3/ext4 images made by the real mkfs, bare and partitioned (MBR, GPT), then
//! judged by outside tools: sfdisk -J (table), blkid (UUID on p1, swap on p2), e2fsck -fn
//! (filesystem), debugfs (every path's stat, block map and content), swaplabel, and
//! st_blocks (sparseness). The input's checksum and mtime must not change.

use crate::support::stream as stream_util;

use imgconv_core::layout::PlanOptions;
use imgconv_core::stream::StreamMethod;
use imgconv_core::Stage;
use std::path::Path;
use std::process::Command;
use stream_util::*;

#[derive(Clone, Copy, Debug)]
enum Container {
    Bare,
    Mbr,
    /// GPT with a small non-root ext2 partition 1, the root in partition 2.
    GptWithBoot,
}

fn blkid_at(img: &Path, offset: u64) -> std::collections::HashMap<String, String> {
    let out = run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(img));
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn roundtrip(kind: &str, size_mib: u64, mkfs_extra: &[&str], container: Container) -> Converted {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    guest_tree(&tree, Init::Systemd);
    let fs_img = w.join("xen-fs.img");
    mkfs(kind, &tree, &fs_img, size_mib, mkfs_extra);
    let (input, in_offset) = match container {
        Container::Bare => (fs_img.clone(), 0),
        Container::Mbr => {
            let d = w.join("xen-disk.img");
            let off = partitioned(&fs_img, &d, "dos", false, w);
            (d, off)
        }
        Container::GptWithBoot => {
            let d = w.join("xen-disk.img");
            let off = partitioned(&fs_img, &d, "gpt", true, w);
            (d, off)
        }
    };
    let sha_before = sha256(&input);
    let mtime_before = std::fs::metadata(&input).unwrap().modified().unwrap();
    let source = manifest(&input, in_offset);

    let dest = w.join("out/kvm.img");
    std::fs::create_dir(w.join("out")).unwrap();
    let opts = PlanOptions {
        disk_signature: Some(0x1234_abcd),
        ..Default::default()
    };
    let c = convert(&input, &dest, opts, false).unwrap();

    // Inspection found the right filesystem.
    assert_eq!(c.inspection.fs_offset, in_offset);
    assert_eq!(c.inspection.fs.kind.to_string(), kind);
    match container {
        Container::GptWithBoot => assert!(matches!(
            c.inspection.container,
            imgconv_core::source::Container::Partitioned {
                root_partition: 2,
                ..
            }
        )),
        Container::Mbr => assert!(matches!(
            c.inspection.container,
            imgconv_core::source::Container::Partitioned {
                root_partition: 1,
                ..
            }
        )),
        Container::Bare => assert_eq!(
            c.inspection.container,
            imgconv_core::source::Container::Bare
        ),
    }

    // The table, as sfdisk reads it.
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&dest))).unwrap();
    let t = &json["partitiontable"];
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0x1234abcd");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let root = c.plan.root();
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"].as_u64().unwrap(), root.sectors);
    assert_eq!(parts[0]["type"], "83");
    assert_eq!(parts[0]["bootable"], true);
    let swap = c.plan.swap().unwrap();
    assert_eq!(parts[1]["start"].as_u64().unwrap(), swap.start_lba);
    assert_eq!(parts[1]["size"].as_u64().unwrap(), 512 * 2048);
    assert_eq!(parts[1]["type"], "82");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), c.plan.disk_bytes);
    // fdisk's own consistency check of the table (CHS included).
    let (rc, verify) = run_status(Command::new("sfdisk").arg("--verify").arg(&dest));
    assert_eq!(rc, 0, "{verify}");

    // blkid: the source filesystem's UUID on p1, our swap on p2.
    let p1 = blkid_at(&dest, root.start_bytes());
    assert_eq!(p1["TYPE"], kind);
    assert_eq!(p1["UUID"], c.inspection.fs.uuid);
    assert_eq!(p1["LABEL"], "xenroot");
    let p2 = blkid_at(&dest, swap.start_bytes());
    assert_eq!(p2["TYPE"], "swap");
    assert_eq!(p2["UUID"], c.swap_uuid.unwrap().to_string());
    assert_eq!(p2["LABEL"], "swap");
    // swaplabel (util-linux) reads the header back from a copy of the area's start.
    let swap_copy = w.join("swap-head.img");
    run(Command::new("dd")
        .arg(format!("if={}", dest.display()))
        .arg(format!("of={}", swap_copy.display()))
        .args(["bs=1M", "count=1", "status=none", "iflag=skip_bytes"])
        .arg(format!("skip={}", swap.start_bytes())));
    let sl = run(Command::new("swaplabel").arg(&swap_copy));
    assert!(
        sl.contains("LABEL: swap") && sl.contains(&c.swap_uuid.unwrap().to_string()),
        "{sl}"
    );

    // The filesystem: clean, and every path identical (stat, block map, content).
    assert_fsck_clean(&dest, root.start_bytes());
    let copied = manifest(&dest, root.start_bytes());
    assert!(copied.0.len() > 300, "walked {} paths", copied.0.len());
    copied.assert_same(&source, true);
    assert!(copied.stat("/usr/bin/tool-a").contains("security.selinux"));
    assert!(copied
        .stat("/var/zeros.bin")
        .contains("system.posix_acl_access"));
    assert!(copied.stat("/usr/bin/tool-b").contains("Links: 2"));
    let slow = copied.0["/usr/bin/slow-link"].link.as_deref().unwrap();
    assert!(slow.ends_with("itself/xxxxxxxxxxxx"), "{slow}");
    assert_eq!(
        copied.0["/usr/bin/fast-link"].link.as_deref(),
        Some("tool-a")
    );

    // Only used blocks, from the bitmaps; the output is sparse.
    assert_eq!(
        c.stats.method,
        StreamMethod::Bitmaps,
        "bitmaps rejected: {:?}",
        c.progress.notes
    );
    assert_eq!(
        c.stats.selected_bytes, c.inspection.fs.used_bytes,
        "used blocks by bitmap must equal blocks_count - free blocks"
    );
    // Every selected byte is read, except the inode-table ends no inode ever used and
    // the log of the clean journal.
    assert_eq!(
        c.stats.bytes_read + c.stats.unused_inode_table_bytes + c.stats.clean_journal_bytes,
        c.stats.selected_bytes
    );
    assert_eq!(
        c.stats.clean_journal_bytes > 0,
        c.inspection.fs.has_journal,
        "{:?}",
        c.stats
    );
    assert_eq!(
        c.stats.bytes_written + c.stats.zero_bytes_skipped,
        c.stats.bytes_read
    );
    let alloc = allocated(&dest);
    assert!(
        alloc >= c.stats.bytes_written && alloc <= c.stats.bytes_written + (1 << 20),
        "allocated {alloc} bytes for {} written",
        c.stats.bytes_written
    );
    assert!(
        alloc < c.inspection.fs.size_bytes / 2,
        "output not sparse: {alloc} bytes allocated"
    );

    // Progress: one stage with the total to read, monotonic advances ending at it.
    assert_eq!(
        c.progress.stages,
        vec![(Stage::Stream, Some(c.stats.bytes_read))]
    );
    assert!(c.progress.advances.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        c.progress.advances.last().copied(),
        Some(c.stats.bytes_read)
    );

    // The input was never written.
    assert_eq!(sha256(&input), sha_before);
    assert_eq!(
        std::fs::metadata(&input).unwrap().modified().unwrap(),
        mtime_before
    );
    // Nothing left behind but the output.
    let left: Vec<_> = std::fs::read_dir(w.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("kvm.img")]);
    c
}

#[test]
fn ext2_bare() {
    let c = roundtrip("ext2", 96, &[], Container::Bare);
    assert_eq!(
        c.stats.block_uninit_groups, 0,
        "ext2 has no descriptor flags"
    );
}

#[test]
fn ext3_bare() {
    roundtrip("ext3", 96, &[], Container::Bare);
}

#[test]
fn ext4_bare_1k_blocks() {
    // Small mkfs.ext4 images get 1 KiB blocks: first_data_block = 1, block 0 outside
    // every group.
    roundtrip("ext4", 96, &["-b", "1024"], Container::Bare);
}

#[test]
fn ext4_bare_4k_blocks_many_groups() {
    let c = roundtrip("ext4", 256, &["-b", "4096", "-g", "8192"], Container::Bare);
    assert_eq!(c.stats.groups, 8);
    // mke2fs leaves the groups without data BLOCK_UNINIT; their tables live in group 0
    // (flex_bg), so the walker must compute their bitmaps, not read them.
    assert!(c.stats.block_uninit_groups > 0, "{:?}", c.stats);
}

#[test]
fn ext4_in_mbr_disk() {
    roundtrip("ext4", 128, &[], Container::Mbr);
}

#[test]
fn ext3_in_gpt_disk_root_is_partition_two() {
    roundtrip("ext3", 96, &[], Container::GptWithBoot);
}

#[test]
fn ext4_uninit_bg_crc16_descriptors_32bit() {
    // gdt_csum (crc16) descriptors, 32-byte descriptors, no flex_bg.
    roundtrip(
        "ext4",
        128,
        &[
            "-O",
            "^metadata_csum,uninit_bg,^64bit,^flex_bg",
            "-b",
            "4096",
            "-g",
            "4096",
        ],
        Container::Bare,
    );
}
