//! Inline data (ext4 `inline_data`): `mkfs.ext4 -O inline_data -d TREE` stores small
//! files, directories and symlinks inside their inodes (`i_block` and the in-inode
//! `system.data` attribute). Every file's bytes, every link target and every directory
//! listing read through `ExtReader` must equal the tree the image was made from, and
//! debugfs must confirm that the small nodes really are inline.

use crate::support::{debugfs, mkfs};
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::guestfs::NodeKind;
use std::os::unix::fs::symlink;
use std::path::Path;

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/small")).unwrap();
    std::fs::create_dir_all(root.join("etc/medium")).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("etc/hostname"), "guest\n").unwrap();
    std::fs::write(root.join("etc/empty"), "").unwrap();
    std::fs::write(root.join("etc/sixty"), "s".repeat(60)).unwrap();
    std::fs::write(root.join("etc/xattr-part"), "x".repeat(100)).unwrap();
    std::fs::write(root.join("etc/block"), "b".repeat(5000)).unwrap();
    std::fs::write(root.join("etc/small/one"), "1").unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("etc/medium/file-{i}")), format!("{i}\n")).unwrap();
    }
    for i in 0..200 {
        std::fs::write(root.join(format!("big/entry-{i:04}")), b"e").unwrap();
    }
    symlink("hostname", root.join("etc/fast")).unwrap();
    symlink(
        format!("/etc/{}", "l".repeat(80)),
        root.join("etc/inline-link"),
    )
    .unwrap();
    symlink(
        format!("/etc/{}", "m".repeat(400)),
        root.join("etc/block-link"),
    )
    .unwrap();
}

/// Compare `dir` in the image with `host` recursively; the number of nodes compared.
fn compare(r: &ExtReader, host: &Path, dir: &str) -> usize {
    let mut mine: Vec<(String, NodeKind)> = r
        .read_dir(dir, 10_000)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.kind))
        .collect();
    mine.sort_by(|a, b| a.0.cmp(&b.0));
    let mut theirs: Vec<(String, NodeKind)> = std::fs::read_dir(host)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let kind = if t.is_dir() {
                NodeKind::Dir
            } else if t.is_symlink() {
                NodeKind::Symlink
            } else {
                NodeKind::File
            };
            (e.file_name().into_string().unwrap(), kind)
        })
        .collect();
    if dir == "/" {
        theirs.push(("lost+found".into(), NodeKind::Dir));
    }
    theirs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(mine, theirs, "{dir}");
    let mut n = 0;
    for (name, kind) in mine {
        if dir == "/" && name == "lost+found" {
            continue;
        }
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        let h = host.join(&name);
        n += 1;
        match kind {
            NodeKind::Dir => n += compare(r, &h, &path),
            NodeKind::Symlink => assert_eq!(
                r.read_link(&path).unwrap().unwrap(),
                std::fs::read_link(&h).unwrap().to_str().unwrap(),
                "{path}"
            ),
            _ => {
                let want = std::fs::read(&h).unwrap();
                assert_eq!(
                    r.read_file(&path, 1 << 20).unwrap().unwrap(),
                    want,
                    "{path}"
                );
                let mut streamed = Vec::new();
                std::io::Read::read_to_end(
                    &mut r.open_file(&path).unwrap().unwrap(),
                    &mut streamed,
                )
                .unwrap();
                assert_eq!(streamed, want, "{path} streamed");
                assert_eq!(r.metadata(&path).unwrap().unwrap().len, want.len() as u64);
            }
        }
    }
    n
}

#[test]
fn inline_files_dirs_and_symlinks_read_as_the_tree() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    tree(&root);
    for extra in [
        &["-I", "256"][..],
        &["-I", "1024", "-O", "^metadata_csum"][..],
    ] {
        let img = work.path().join("inline.img");
        mkfs(
            "ext4",
            Some(&root),
            &img,
            16,
            &[&["-O", "inline_data"][..], extra].concat(),
        );
        let s = img.to_str().unwrap();
        // debugfs confirms the small nodes are inline and the big ones are not.
        for (path, inline) in [
            ("/etc/hostname", true),
            ("/etc/xattr-part", true),
            ("/etc/small", true),
            ("/etc/inline-link", true),
            ("/etc/block", false),
            ("/big", false),
        ] {
            let stat = debugfs(s, &format!("stat {path}"));
            let flagged =
                stat.contains("Size of inline data") || stat.contains("Flags: 0x10000000");
            assert_eq!(flagged, inline, "{path}: {stat}");
        }
        let r = ExtReader::open(Region::open(&img).unwrap(), "inline").unwrap();
        let n = compare(&r, &root, "/");
        assert!(n > 200, "{n} nodes");
        // Paths through inline directories and links resolve.
        assert_eq!(r.read_file("/etc/small/one", 10).unwrap().unwrap(), b"1");
        assert_eq!(r.canonical("/etc/fast").unwrap(), "/etc/hostname");
    }
}
