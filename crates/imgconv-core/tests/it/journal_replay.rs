//! The in-memory journal replay (`ext::read::journal`), judged by e2fsck: a filesystem
//! whose journal needs recovery is read through `ExtReader`, and every file must read
//! exactly as debugfs reads it from a copy that `e2fsck -fy` replayed. The journals are
//! real, written by debugfs (`journal_open`, `journal_write`, `journal_close`): data
//! blocks, metadata blocks (a new file: its directory block, inode, bitmaps, group
//! descriptors, the superblock), a revoke record that cancels an earlier copy, a
//! transaction whose commit block is lost (not replayed), with v3 checksums and without
//! (ext3). Damaged journals (bad magic, absurd length, a tag outside the filesystem,
//! checksum mismatches, a log that loops) give typed errors, never panics, and source
//! inspection then falls back to the on-disk state and says so.

use crate::support::{debugfs, debugfs_with, e2fsck, mkfs, Prng};
use imgconv_core::blockio::Region;
use imgconv_core::ext::csum::crc32c_raw;
use imgconv_core::ext::read::journal::JournalError;
use imgconv_core::ext::read::RawFs;
use imgconv_core::ext::read::{ExtReadError, ExtReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const FILES: [&str; 4] = ["a.txt", "b.txt", "c.txt", "d.txt"];

fn original(name: &str) -> String {
    format!("original content of {name}\n")
}

fn spec(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A filesystem of `kind` with four one-block files, and its block size.
fn image(work: &Path, kind: &str, extra: &[&str]) -> (PathBuf, u64) {
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    for f in FILES {
        std::fs::write(tree.join(f), original(f)).unwrap();
    }
    std::fs::write(tree.join("etc/hostname"), "guest\n").unwrap();
    std::fs::write(tree.join("etc/fstab"), "/dev/xvda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::write(tree.join("sbin/init"), "#!/bin/sh\n").unwrap();
    let img = work.join("dirty.img");
    mkfs(kind, Some(&tree), &img, 32, extra);
    let h = debugfs_with(spec(&img), &[], "stats");
    let bs = h
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{h}"));
    (img, bs)
}

fn bmap(img: &Path, what: &str, n: u64) -> u64 {
    let out = debugfs(spec(img), &format!("bmap {what} {n}"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bmap {what}: {out}"))
}

/// Write `script` (debugfs journal commands) into `img`.
fn journal(img: &Path, work: &Path, script: &str) {
    let cmds = work.join("jcmds");
    std::fs::write(&cmds, script).unwrap();
    debugfs_with(spec(img), &["-w", "-f", spec(&cmds)], "");
    let h = debugfs(spec(img), "features");
    assert!(h.contains("needs_recovery"), "not dirty: {h}");
}

/// A block-sized payload file holding `text`.
fn payload(work: &Path, name: &str, text: &str, bs: u64) -> PathBuf {
    let p = work.join(name);
    let mut d = text.as_bytes().to_vec();
    d.resize(bs as usize, 0);
    std::fs::write(&p, d).unwrap();
    p
}

/// A copy of `img` replayed and repaired by `e2fsck -fy`.
fn fscked(img: &Path, work: &Path) -> PathBuf {
    let copy = work.join("fscked.img");
    std::fs::copy(img, &copy).unwrap();
    let (rc, out) = e2fsck(spec(&copy), &["-fy"]);
    assert!(rc <= 1, "e2fsck -fy: {out}");
    assert!(!debugfs(spec(&copy), "features").contains("needs_recovery"));
    copy
}

/// Every file of the root and /etc read through `ExtReader` on the dirty image equals
/// `debugfs cat` on the e2fsck-replayed copy; the listings are the same. Returns the
/// reader.
fn judge(img: &Path, work: &Path) -> ExtReader {
    let fixed = fscked(img, work);
    let reader = ExtReader::open(Region::open(img).unwrap(), "dirty").unwrap();
    let judged = ExtReader::open(Region::open(&fixed).unwrap(), "fixed").unwrap();
    assert!(judged.raw().unwrap().replayed().is_none());
    for dir in ["/", "/etc"] {
        let mut mine: Vec<String> = reader
            .read_dir(dir, 1000)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        mine.sort();
        let ls = debugfs(spec(&fixed), &format!("ls -l {dir}"));
        for name in &mine {
            assert!(
                ls.contains(name.as_str()),
                "{dir}/{name} not in e2fsck's copy:\n{ls}"
            );
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            let meta = reader.symlink_metadata(&path).unwrap().unwrap();
            if meta.kind == imgconv_core::guestfs::NodeKind::File {
                let got = reader.read_file(&path, 1 << 20).unwrap().unwrap();
                let want = std::process::Command::new("debugfs")
                    .args(["-R", &format!("cat {path}")])
                    .arg(&fixed)
                    .output()
                    .unwrap()
                    .stdout;
                assert!(
                    got == want,
                    "{path}: replayed content differs from e2fsck's"
                );
            }
        }
        let mut theirs: Vec<String> = judged
            .read_dir(dir, 1000)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        theirs.sort();
        assert_eq!(mine, theirs, "{dir}");
    }
    reader
}

fn text(reader: &ExtReader, path: &str) -> String {
    let d = reader.read_file(path, 1 << 20).unwrap().unwrap();
    String::from_utf8_lossy(&d)
        .trim_end_matches('\0')
        .trim_end()
        .to_string()
}

/// The log block and type of each block `logdump` lists ("Found expected sequence S,
/// type T (...) at block N").
fn logdump(img: &Path) -> Vec<(u32, u32, u64)> {
    debugfs(spec(img), "logdump")
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("Found expected sequence ")?;
            let (seq, rest) = l.split_once(", type ")?;
            let (ty, rest) = rest.split_once(' ')?;
            let at = rest.rsplit_once("at block ")?.1;
            Some((seq.parse().ok()?, ty.parse().ok()?, at.trim().parse().ok()?))
        })
        .collect()
}

/// Byte position of journal block `n` in the image.
fn jpos(img: &Path, n: u64, bs: u64) -> u64 {
    bmap(img, "<8>", n) * bs
}

/// Data, revoke and a lost commit, v3 checksums: a is replaced, b's copy is revoked, c's
/// transaction has no commit block left, d is never touched.
fn data_revoke_and_lost_commit(work: &Path, kind: &str, jo: &str) -> (PathBuf, u64) {
    let (img, bs) = image(work, kind, &[]);
    let [a, b, c] = ["/a.txt", "/b.txt", "/c.txt"].map(|p| bmap(&img, p, 0));
    let pa = payload(work, "pa", "JOURNALED a\n", bs);
    let pb = payload(work, "pb", "JOURNALED b, then revoked\n", bs);
    let pc = payload(work, "pc", "JOURNALED c, never committed\n", bs);
    let revoke = if kind == "ext3" {
        String::new()
    } else {
        format!("jw -r {b}\n")
    };
    journal(
        &img,
        work,
        &format!(
            "{jo}\njw -b {a} {}\njw -b {b} {}\n{revoke}jw -b {c} {}\njc\n",
            pa.display(),
            pb.display(),
            pc.display()
        ),
    );
    // Lose the last transaction's commit block.
    let log = logdump(&img);
    let &(last_seq, _, _) = log.last().unwrap();
    let commit = log
        .iter()
        .find(|&&(s, t, _)| s == last_seq && t == 2)
        .unwrap_or_else(|| panic!("{log:?}"))
        .2;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&vec![0u8; bs as usize], jpos(&img, commit, bs))
        .unwrap();
    (img, bs)
}

#[test]
fn replay_matches_e2fsck_data_revoke_and_a_lost_commit() {
    for (kind, jo) in [("ext4", "jo -c"), ("ext3", "jo")] {
        let work = tempfile::tempdir().unwrap();
        let (img, _) = data_revoke_and_lost_commit(work.path(), kind, jo);
        let reader = judge(&img, work.path());
        assert_eq!(text(&reader, "/a.txt"), "JOURNALED a", "{kind}");
        if kind == "ext4" {
            assert_eq!(
                text(&reader, "/b.txt"),
                original("b.txt").trim_end(),
                "{kind}"
            );
        } else {
            assert_eq!(
                text(&reader, "/b.txt"),
                "JOURNALED b, then revoked",
                "{kind}"
            );
        }
        assert_eq!(
            text(&reader, "/c.txt"),
            original("c.txt").trim_end(),
            "{kind}"
        );
        assert_eq!(
            text(&reader, "/d.txt"),
            original("d.txt").trim_end(),
            "{kind}"
        );
        let r = reader.raw().unwrap().replayed().unwrap();
        let txns = if kind == "ext4" { 3 } else { 2 };
        assert_eq!(r.transactions, txns, "{kind}");
        assert_eq!(r.blocks, if kind == "ext4" { 1 } else { 2 }, "{kind}");
        // The image is not written.
        assert!(debugfs(spec(&img), "features").contains("needs_recovery"));
    }
}

/// A new file made in a copy by debugfs, journaled block by block into the original:
/// the replay must show the directory entry, inode, bitmaps and superblock as replayed.
#[test]
fn replayed_metadata_shows_a_file_made_only_in_the_journal() {
    for (kind, jo, extra) in [
        ("ext4", "jo -c", &[][..]),
        ("ext4", "jo", &["-b", "1024"][..]),
        ("ext3", "jo", &[][..]),
    ] {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let (img, bs) = image(w, kind, extra);
        let changed = w.join("changed.img");
        std::fs::copy(&img, &changed).unwrap();
        let content = w.join("new-content");
        std::fs::write(&content, "made in the journal only\n").unwrap();
        debugfs_with(
            spec(&changed),
            &["-w"],
            &format!("write {} etc/new.conf", content.display()),
        );
        let (old, new) = (
            std::fs::read(&img).unwrap(),
            std::fs::read(&changed).unwrap(),
        );
        let mut script = format!("{jo}\n");
        let mut n = 0;
        for (i, (o, c)) in old
            .chunks(bs as usize)
            .zip(new.chunks(bs as usize))
            .enumerate()
        {
            if o != c {
                let p = w.join(format!("blk{i}"));
                std::fs::write(&p, c).unwrap();
                script += &format!("jw -b {i} {}\n", p.display());
                n += 1;
            }
        }
        assert!(n >= 3, "{kind}: only {n} blocks changed");
        script += "jc\n";
        journal(&img, w, &script);
        assert!(
            !debugfs(spec(&img), "ls /etc").contains("new.conf"),
            "{kind}: the original shows the file before any replay"
        );
        let reader = judge(&img, w);
        assert_eq!(
            text(&reader, "/etc/new.conf"),
            "made in the journal only",
            "{kind}"
        );
        assert_eq!(
            reader.raw().unwrap().replayed().unwrap().blocks,
            n,
            "{kind}"
        );
        // Without the replay the file is not there.
        let disk = ExtReader::open_unreplayed(Region::open(&img).unwrap(), "disk").unwrap();
        assert!(!disk.exists("/etc/new.conf").unwrap(), "{kind}");
    }
}

/// Rewrite bytes of `img` at `pos`.
fn patch(img: &Path, pos: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, pos).unwrap();
}

fn read_at(img: &Path, pos: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(img).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, pos).unwrap();
    b
}

fn journal_err(img: &Path, case: &str) -> JournalError {
    match ExtReader::open(Region::open(img).unwrap(), "bad") {
        Err(ExtReadError::Journal { source, .. }) => source,
        other => panic!("{case}: expected a journal error, got {other:?}"),
    }
}

/// The journal superblock's checksum recomputed (v3 journals).
fn fix_jsb(jsb: &mut [u8]) {
    jsb[0xFC..0x100].fill(0);
    let c = crc32c_raw(!0, &jsb[..1024]);
    jsb[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
}

/// A descriptor or revoke block's tail checksum recomputed.
fn fix_tail(block: &mut [u8], seed: u32) {
    let n = block.len();
    block[n - 4..].fill(0);
    let c = crc32c_raw(seed, block);
    block[n - 4..].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn damaged_journals_are_typed_errors_and_inspection_falls_back() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (clean, bs) = data_revoke_and_lost_commit(w, "ext4", "jo -c");
    let jsb_pos = jpos(&clean, 0, bs);
    let jsb = read_at(&clean, jsb_pos, 1024);
    let seed = crc32c_raw(!0, &jsb[0x30..0x40]);
    let log = logdump(&clean);
    let desc = log.iter().find(|&&(_, t, _)| t == 1).unwrap().2;
    let desc_pos = jpos(&clean, desc, bs);
    let img = w.join("bad.img");
    let fresh = || std::fs::copy(&clean, &img).unwrap();

    // Bad magic.
    fresh();
    patch(&img, jsb_pos, &[0, 0, 0, 0]);
    assert!(matches!(
        journal_err(&img, "bad magic"),
        JournalError::Malformed { .. }
    ));
    // A journal longer than its inode.
    fresh();
    let mut j = jsb.clone();
    j[0x10..0x14].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_jsb(&mut j);
    patch(&img, jsb_pos, &j);
    let e = journal_err(&img, "maxlen");
    assert!(e.to_string().contains("its inode holds"), "{e}");
    // The superblock checksum.
    fresh();
    let mut j = jsb.clone();
    j[0x18] ^= 1;
    patch(&img, jsb_pos, &j);
    assert!(matches!(
        journal_err(&img, "superblock checksum"),
        JournalError::Malformed { .. }
    ));
    // A tag naming a block outside the filesystem (descriptor checksum fixed).
    fresh();
    let mut d = read_at(&img, desc_pos, bs as usize);
    d[12..16].copy_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
    fix_tail(&mut d, seed);
    patch(&img, desc_pos, &d);
    let e = journal_err(&img, "tag outside");
    assert!(e.to_string().contains("outside the filesystem"), "{e}");
    // A data block that fails its tag's checksum.
    fresh();
    let data_pos = jpos(&img, desc + 1, bs);
    let mut b = read_at(&img, data_pos, 1);
    b[0] ^= 0x55;
    patch(&img, data_pos, &b);
    if let Ok(r) = ExtReader::open(Region::open(&img).unwrap(), "dbg") {
        eprintln!(
            "DBG desc {desc} log {log:?} replayed {:?} a={:?}",
            r.raw().unwrap().replayed(),
            text(&r, "/a.txt")
        );
    }
    assert!(matches!(
        journal_err(&img, "data checksum"),
        JournalError::Checksum { .. }
    ));
    // A descriptor failing its checksum ends the log: nothing is replayed.
    fresh();
    let mut d = read_at(&img, desc_pos, bs as usize);
    d[40] ^= 1;
    patch(&img, desc_pos, &d);
    let r = ExtReader::open(Region::open(&img).unwrap(), "stale").unwrap();
    assert_eq!(text(&r, "/a.txt"), original("a.txt").trim_end());
    assert_eq!(r.raw().unwrap().replayed().unwrap().transactions, 0);

    // A log that loops: one transaction of descriptors around the whole ring, never
    // committed. 32 same-UUID tags each, so 33 blocks a descriptor divide the log.
    fresh();
    let maxlen = u32::from_be_bytes(jsb[0x10..0x14].try_into().unwrap()) as u64;
    let first = u32::from_be_bytes(jsb[0x14..0x18].try_into().unwrap()) as u64;
    let log_len = maxlen - first;
    let per = (2..64u64).rev().find(|k| log_len % k == 0).unwrap();
    let mut j = jsb.clone();
    j[0x18..0x1C].copy_from_slice(&77u32.to_be_bytes());
    j[0x1C..0x20].copy_from_slice(&(first as u32).to_be_bytes());
    fix_jsb(&mut j);
    patch(&img, jsb_pos, &j);
    let mut at = first;
    while at < maxlen {
        let mut d = vec![0u8; bs as usize];
        d[0..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        d[4..8].copy_from_slice(&1u32.to_be_bytes());
        d[8..12].copy_from_slice(&77u32.to_be_bytes());
        for t in 0..per - 1 {
            let o = 12 + 16 * t as usize;
            d[o..o + 4].copy_from_slice(&100u32.to_be_bytes());
            // Same UUID; the last tag says so.
            let flags: u32 = if t == per - 2 { 2 | 8 } else { 2 };
            d[o + 4..o + 8].copy_from_slice(&flags.to_be_bytes());
        }
        fix_tail(&mut d, seed);
        patch(&img, jpos(&img, at, bs), &d);
        at += per;
    }
    assert!(matches!(
        journal_err(&img, "loop"),
        JournalError::Loop { .. }
    ));

    // Source inspection of a guest whose journal the replay refuses: the on-disk state,
    // with a warning.
    let e = journal_err(&img, "loop").to_string();
    let disk = ExtReader::open_unreplayed(Region::open(&img).unwrap(), "disk").unwrap();
    assert_eq!(text(&disk, "/a.txt"), original("a.txt").trim_end(), "{e}");
    let i = imgconv_core::source::inspect(&img).unwrap();
    assert!(
        i.guest
            .warnings
            .iter()
            .any(|w| w.contains("without its last journal transactions") && w.contains("loop")),
        "{:?}",
        i.guest.warnings
    );
    assert_eq!(i.guest.hostname.as_deref(), Some("guest"));
    // A replayable journal is inspected without that warning.
    let i = imgconv_core::source::inspect(&clean).unwrap();
    assert!(i.guest.warnings.is_empty(), "{:?}", i.guest.warnings);
}

/// Random damage to the journal blocks of a dirty image: every open is a reader or a
/// typed error, never a panic, and a reader answers or errs on every file.
#[test]
fn random_journal_damage_never_panics() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (clean, bs) = data_revoke_and_lost_commit(w, "ext4", "jo -c");
    let log = logdump(&clean);
    let last = log.iter().map(|l| l.2).max().unwrap() + 1;
    let positions: Vec<u64> = (0..=last).map(|n| jpos(&clean, n, bs)).collect();
    let data = std::fs::read(&clean).unwrap();
    let img = w.join("mut.img");
    let mut rng = Prng::new(0x6a62_6432_7265_706c);
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut d = data.clone();
        for _ in 0..1 + rng.next_u64() % 6 {
            let block = positions[(rng.next_u64() % positions.len() as u64) as usize];
            let at = (block + rng.next_u64() % 64) as usize;
            match rng.next_u64() % 3 {
                0 => d[at] ^= 1 << (rng.next_u64() % 8),
                1 => d[at] = rng.next_u64() as u8,
                _ => d[at..at + 4].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes()),
            }
        }
        std::fs::write(&img, &d).unwrap();
        match RawFs::open(Region::open(&img).unwrap()) {
            Ok(_) => {
                opened += 1;
                let r = ExtReader::open(Region::open(&img).unwrap(), "m").unwrap();
                for f in FILES {
                    let _ = r.read_file(&format!("/{f}"), 1 << 20);
                }
                let _ = r.read_dir("/etc", 100);
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        opened > 0 && refused > 0,
        "opened {opened}, refused {refused}"
    );
}
