//! The inode-level reader (`ext::read`), and `ExtReader`'s path API served by it, must see
//! exactly what ext4-view (an independent reader, kept as a dev-dependency for this) sees: for every node of real mke2fs-made ext2/3/4 images (small and large files, holes, an
//! extent tree deeper than the inode, fast and slow symlinks, linear and htree
//! directories of one and two levels, with and without metadata_csum), the same
//! metadata, the same directory listing, the same symlink target and the same content.
//! And damaged images give errors, never panics.

use crate::support::donor as donor_fixtures;

use donor_fixtures::{bytes, mkfs};
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::ext::read::RawFs;
use imgconv_core::guestfs::{NodeKind, NodeMeta};
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("lib/modules/6.1/kernel/fs")).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    symlink("usr/lib", root.join("usrlib")).unwrap();
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("block", 4096),
        ("block1", 4097),
        ("mib", (1 << 20) + 3),
    ] {
        std::fs::write(
            root.join("lib/modules/6.1/kernel/fs").join(name),
            bytes(name, len),
        )
        .unwrap();
    }
    // A file with holes: data, 1 MiB hole, data, hole at the end.
    let sparse = std::fs::File::create(root.join("lib/modules/6.1/sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&bytes("s1", 10_000), 0).unwrap();
    sparse.write_all_at(&bytes("s2", 5_000), 1 << 20).unwrap();
    sparse.set_len(3 << 20).unwrap();
    // Many small pieces: more extents than the inode holds (an extent tree block).
    let frag = std::fs::File::create(root.join("lib/modules/6.1/fragmented")).unwrap();
    for i in 0..40u64 {
        frag.write_all_at(&bytes(&format!("f{i}"), 100), i * 8192)
            .unwrap();
    }
    symlink("kernel/fs/one", root.join("lib/modules/6.1/fast")).unwrap();
    symlink(
        format!("/lib/modules/6.1/kernel/{}/../fs/mib", "x".repeat(80)),
        root.join("lib/modules/6.1/slow"),
    )
    .unwrap();
    for i in 0..400 {
        std::fs::write(
            root.join(format!("big/entry-{i:05}-{}", "n".repeat(40))),
            b"x",
        )
        .unwrap();
    }
}

/// A directory large enough for a two-level htree once indexed (e2fsck -D).
fn huge_dir(root: &Path) {
    std::fs::create_dir_all(root.join("huge")).unwrap();
    for i in 0..9000 {
        std::fs::write(root.join(format!("huge/f{i:05}{}", "y".repeat(200))), b"").unwrap();
    }
}

/// Index the image's directories (`e2fsck -fyD`), which turns the large ones into htrees.
fn index_dirs(img: &Path) {
    let (rc, out) = crate::support::e2fsck(img.to_str().unwrap(), &["-fyD"]);
    assert!(rc <= 1, "e2fsck -fyD: {out}");
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// The content of `path` in `img` as `debugfs` dumps it.
fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs cat {path}: {out:?}");
    out.stdout
}

/// ext4-view over an image file: the independent reader the parity tests judge by.
struct View(ext4_view::Ext4);

impl View {
    fn open(img: &Path) -> View {
        struct File(std::fs::File);
        impl ext4_view::Ext4Read for File {
            fn read(
                &mut self,
                start: u64,
                dst: &mut [u8],
            ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
                use std::os::unix::fs::FileExt;
                Ok(self.0.read_exact_at(dst, start)?)
            }
        }
        let f = File(std::fs::File::open(img).unwrap());
        View(ext4_view::Ext4::load(Box::new(f)).unwrap())
    }

    fn meta(&self, path: &str) -> NodeMeta {
        let m = self.0.symlink_metadata(path).unwrap();
        let t = m.file_type();
        let kind = if t.is_dir() {
            NodeKind::Dir
        } else if t.is_symlink() {
            NodeKind::Symlink
        } else if t.is_char_dev() {
            NodeKind::CharDev
        } else if t.is_block_dev() {
            NodeKind::BlockDev
        } else if t.is_fifo() {
            NodeKind::Fifo
        } else if t.is_socket() {
            NodeKind::Socket
        } else {
            NodeKind::File
        };
        NodeMeta {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            len: m.len(),
            mtime: m.modified().seconds(),
            atime: m.accessed().seconds(),
        }
    }

    fn list(&self, path: &str) -> Vec<(String, NodeKind)> {
        let mut out = Vec::new();
        for e in self.0.read_dir(path).unwrap() {
            let e = e.unwrap();
            let Ok(name) = e.file_name().as_str().map(str::to_string) else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            out.push((name, self.meta(&child).kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn link(&self, path: &str) -> String {
        let t = self.0.read_link(path).unwrap();
        String::from_utf8_lossy(t.as_ref()).into_owned()
    }
}

/// Walk every node from the root by inode and compare each with ext4-view's view, and
/// `ExtReader`'s answers by path with ext4-view's.
fn compare(img: &Path) -> usize {
    let region = Region::open(img).unwrap();
    let raw = Arc::new(RawFs::open(region.clone()).expect("an ext image the raw reader handles"));
    let ext = View::open(img);
    let both = ExtReader::open(region, "img").unwrap();
    let mut seen = 0;
    let mut stack = vec![(String::new(), 2u32)];
    while let Some((path, ino)) = stack.pop() {
        let shown = if path.is_empty() { "/" } else { &path };
        let inode = raw.inode(ino).unwrap();
        let meta = ext.meta(shown);
        assert_eq!(inode.meta(), meta, "{shown}");
        assert_eq!(both.symlink_metadata(shown).unwrap(), Some(meta.clone()));
        if meta.kind != NodeKind::Symlink {
            assert_eq!(both.metadata(shown).unwrap(), Some(meta.clone()), "{shown}");
            assert_eq!(both.canonical(shown).unwrap(), shown);
        }
        seen += 1;
        match meta.kind {
            NodeKind::Dir => {
                let mut mine: Vec<(String, NodeKind)> = raw
                    .read_dir(&inode, 100_000)
                    .unwrap()
                    .into_iter()
                    .map(|e| {
                        let kind = raw.inode(e.ino).unwrap().kind();
                        stack.push((format!("{path}/{}", e.name), e.ino));
                        (e.name, kind)
                    })
                    .collect();
                mine.sort_by(|a, b| a.0.cmp(&b.0));
                let theirs = ext.list(shown);
                assert_eq!(mine, theirs, "{shown}");
                let mut by_path: Vec<(String, NodeKind)> = both
                    .read_dir(shown, 100_000)
                    .unwrap()
                    .unwrap()
                    .into_iter()
                    .map(|i| (i.name, i.kind))
                    .collect();
                by_path.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(by_path, theirs, "{shown} by path");
            }
            NodeKind::Symlink => {
                let target = raw.read_link(&inode, 4095).unwrap();
                assert_eq!(
                    String::from_utf8(target).unwrap(),
                    ext.link(shown),
                    "{shown}"
                );
                assert_eq!(both.read_link(shown).unwrap(), Some(ext.link(shown)));
            }
            NodeKind::File => {
                let mine = read_all(raw.open_file(&inode).unwrap());
                let theirs = match ext.0.read(shown) {
                    Ok(data) => data,
                    // ext4-view 1.0 cannot read a hole of a block-mapped file ("invalid
                    // read ... from block 0"): debugfs judges those.
                    Err(e) => {
                        assert!(e.to_string().contains("block 0"), "{shown}: {e}");
                        debugfs_cat(img, shown)
                    }
                };
                assert_eq!(mine.len() as u64, meta.len, "{shown}");
                assert!(mine == theirs, "{shown}: content differs");
                let by_path = read_all(both.open_file(shown).unwrap().unwrap());
                assert!(by_path == theirs, "{shown}: content by path differs");
                let whole = both.read_file(shown, u64::MAX).unwrap().unwrap();
                assert_eq!(whole.len() as u64, meta.len, "{shown}");
                assert!(whole == theirs, "{shown}: whole-file read differs");
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn the_inode_reader_sees_what_ext4_view_sees() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root);
    for (name, fs, extra) in [
        ("csum.img", "ext4", &[][..]),
        ("nocsum.img", "ext4", &["-O", "^metadata_csum"][..]),
        ("1k.img", "ext4", &["-b", "1024"][..]),
        ("ext3.img", "ext3", &[][..]),
        ("ext2-1k.img", "ext2", &["-b", "1024"][..]),
    ] {
        let img = dir.path().join(name);
        mkfs(fs, Some(&root), &img, 64, extra);
        let linear = compare(&img);
        assert!(linear > 400, "{name}: {linear} nodes");
        index_dirs(&img);
        assert_eq!(compare(&img), linear, "{name}");
    }
    // The fragmented file has an extent tree block.
    let img = dir.path().join("csum.img");
    let ex = donor_fixtures::debugfs(&img, false, "ex /lib/modules/6.1/fragmented");
    assert!(ex.contains(" 1/ 1"), "no extent tree block: {ex}");
    // A two-level htree, with and without checksums: the same listing.
    let huge = dir.path().join("huge");
    huge_dir(&huge);
    for (name, extra) in [
        ("huge.img", &[][..]),
        ("huge-nocsum.img", &["-O", "^metadata_csum"][..]),
    ] {
        let img = dir.path().join(name);
        mkfs(
            "ext4",
            Some(&huge),
            &img,
            128,
            &[&["-N", "20000"][..], extra].concat(),
        );
        index_dirs(&img);
        let htree = donor_fixtures::debugfs(&img, false, "htree /huge");
        assert!(htree.contains("Indirect levels: 1"), "{htree}");
        let region = Region::open(&img).unwrap();
        let raw = Arc::new(RawFs::open(region.clone()).unwrap());
        let ext = ExtReader::open(region, "img").unwrap();
        let root_dir = raw.inode(2).unwrap();
        let d = raw.read_dir(&root_dir, 10).unwrap();
        let d = raw
            .inode(d.iter().find(|e| e.name == "huge").unwrap().ino)
            .unwrap();
        let mut mine: Vec<String> = raw
            .read_dir(&d, 100_000)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        mine.sort();
        let mut theirs: Vec<String> = ext
            .read_dir("/huge", 100_000)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        theirs.sort();
        assert_eq!(mine.len(), 9000, "{name}");
        assert!(mine == theirs, "{name}: listings differ");
    }
}

#[test]
fn block_mapped_files_are_read_by_their_block_map() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), b"data").unwrap();
    // 1 KiB blocks: 5 MiB needs the double-indirect block.
    let big = bytes("big", (5 << 20) + 7);
    std::fs::write(root.join("big"), &big).unwrap();
    let img = dir.path().join("ext3.img");
    mkfs("ext3", Some(&root), &img, 16, &["-b", "1024"]);
    assert!(
        RawFs::open(Region::open(&img).unwrap()).is_ok(),
        "ext3 is read by its block maps"
    );
    // An ext4 with block-mapped files (made by ext3, then given the extent feature).
    let st = Command::new("tune2fs")
        .args(["-O", "extent"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let raw = Arc::new(RawFs::open(Region::open(&img).unwrap()).unwrap());
    let root_dir = raw.inode(2).unwrap();
    let mut names: Vec<String> = raw
        .read_dir(&root_dir, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["big", "f", "lost+found"]);
    for (name, want) in [("f", b"data".to_vec()), ("big", big)] {
        // "Inode: 12   Type: regular ..."
        let stat = donor_fixtures::debugfs(&img, false, &format!("stat /{name}"));
        let ino: u32 = stat
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stat}"));
        let inode = raw.inode(ino).unwrap();
        assert_eq!(inode.size, want.len() as u64);
        let mut got = Vec::new();
        raw.open_file(&inode)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == want, "{name}: content differs");
    }
}

/// Random damage to the metadata of a small image: every read is an error or a value,
/// never a panic, and walks stay bounded.
#[test]
fn damaged_images_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    for i in 0..60 {
        std::fs::write(
            root.join(format!("d/e/f{i}")),
            bytes(&i.to_string(), i * 300),
        )
        .unwrap();
    }
    symlink("d/e/f1", root.join("link")).unwrap();
    let img = dir.path().join("small.img");
    mkfs("ext4", Some(&root), &img, 4, &[]);
    let clean = std::fs::read(&img).unwrap();
    let bad = dir.path().join("bad.img");
    let mut rng = crate::support::Prng::new(0x2545_F491_4F6C_DD1D);
    let mut next = || rng.next_u64();
    // The metadata lives in the first 300 KiB of so small an image.
    let span = 300 << 10;
    let mut errors = 0;
    for _ in 0..300 {
        let mut data = clean.clone();
        for _ in 0..8 {
            let at = (next() % span) as usize;
            data[at] ^= 1 << (next() % 8);
        }
        std::fs::write(&bad, &data).unwrap();
        let Ok(raw) = RawFs::open(Region::open(&bad).unwrap()) else {
            continue;
        };
        let raw = Arc::new(raw);
        let mut stack = vec![2u32];
        let mut visited = 0;
        while let Some(ino) = stack.pop() {
            visited += 1;
            if visited > 1000 {
                break;
            }
            let inode = match raw.inode(ino) {
                Ok(i) => i,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            let r = match inode.kind() {
                NodeKind::Dir => raw
                    .read_dir(&inode, 1000)
                    .map(|es| stack.extend(es.into_iter().map(|e| e.ino))),
                NodeKind::Symlink => raw.read_link(&inode, 4095).map(drop),
                NodeKind::File => raw.open_file(&inode).and_then(|f| {
                    let mut f = f;
                    let mut buf = vec![0u8; 1 << 16];
                    // A damaged size may claim terabytes of holes: read a bounded prefix.
                    for _ in 0..64 {
                        if f.read_some(&mut buf)? == 0 {
                            break;
                        }
                    }
                    Ok(())
                }),
                _ => Ok(()),
            };
            if r.is_err() {
                errors += 1;
            }
        }
    }
    assert!(
        errors > 0,
        "no damage was noticed: the test corrupts nothing"
    );
}
