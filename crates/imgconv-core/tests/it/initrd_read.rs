//! The initrd reader on real and tool-built images, judged by `cpio -t` on what the host's
//! `zstd`/`gzip`/`xz` unpack: a real Debian initrd (from the real fixture's donor, taken
//! out with debugfs) in its own compression and recompressed with the other of gzip and
//! zstd, and a dracut-shaped one built with `cpio -H newc` behind an early-microcode
//! archive.

use crate::support;

use imgconv_core::initrd::{self, Compression};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use support::{e2fs_spec, manifest_row, tool};

/// Run `program args` with `input` on stdin; its stdout.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/setup): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `cpio -t` of an uncompressed archive stream: the names, without a leading `./`.
fn cpio_list(archive: &[u8]) -> Vec<String> {
    let out = pipe("cpio", &["-t", "--quiet"], archive);
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn real_debian_initrd_in_zstd_and_gzip() {
    let Some(real) = support::real() else {
        support::skip(
            support::SkipKind::CiCanRun,
            "the real fixtures are not built (scripts/fixtures real)",
        );
        return;
    };
    let info = std::fs::read_to_string(real.join("INFO")).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("donor_kernel="))
        .expect("INFO names the donor kernel")
        .to_string();
    let donor = real.join("bookworm-donor.img");
    let row = manifest_row(&real, "bookworm-donor.img", Some(1));
    let dir = tempfile::tempdir().unwrap();
    let dumped = dir.path().join("initrd");
    let (code, _, err) = tool(
        "debugfs",
        &[
            "-R",
            &format!("dump /boot/initrd.img-{version} {}", dumped.display()),
            &e2fs_spec(&donor, row.start),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let data = std::fs::read(&dumped).unwrap();
    assert!(
        data.len() > 1 << 20,
        "a real initrd is megabytes: {}",
        data.len()
    );

    let parsed = initrd::parse(&data).unwrap();
    let main = parsed.segments.last().unwrap();
    assert!(
        matches!(main.compression, Compression::Zstd | Compression::Gzip),
        "{:?}",
        parsed.segments
    );
    // The host's decompressor and cpio list the main archive; ours must list the same.
    let (tool_name, other) = match main.compression {
        Compression::Zstd => ("zstd", "gzip"),
        _ => ("gzip", "zstd"),
    };
    let stream = &data[main.offset as usize..];
    let unpacked = pipe(tool_name, &["-dc"], stream);
    let listed = cpio_list(&unpacked);
    let ours: Vec<String> = parsed.files[parsed.files.len() - main.entries..].to_vec();
    assert_eq!(sorted(ours), sorted(listed.clone()));
    for m in ["virtio_blk", "virtio_pci", "ahci", "ext4"] {
        assert!(parsed.has_module(m), "{m} in the {version} initrd");
    }
    assert!(!parsed.has_module("xen_no_such_module"));

    // The same archive recompressed with the other tool, behind the same prefix.
    let mut again = data[..main.offset as usize].to_vec();
    again.extend(pipe(other, &["-c"], &unpacked));
    let reparsed = initrd::parse(&again).unwrap();
    assert_eq!(
        reparsed.segments.last().unwrap().compression,
        if other == "gzip" {
            Compression::Gzip
        } else {
            Compression::Zstd
        }
    );
    assert_eq!(reparsed.files, parsed.files);
    assert_eq!(reparsed.modules, parsed.modules);
}

/// A tree on the host packed with `cpio -o -H newc`, names as `find .` gives them.
fn newc_of(root: &Path) -> Vec<u8> {
    let find = Command::new("find")
        .arg(".")
        .current_dir(root)
        .output()
        .unwrap();
    let mut names: Vec<&[u8]> = find
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    let list = names.join(&b'\n');
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio (scripts/setup)");
    let mut stdin = child.stdin.take().unwrap();
    let list = [list, b"\n".to_vec()].concat();
    let writer = std::thread::spawn(move || stdin.write_all(&list).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn dracut_shaped_initrd_with_early_microcode() {
    let dir = tempfile::tempdir().unwrap();
    let early = dir.path().join("early");
    let ucode = early.join("kernel/x86/microcode");
    std::fs::create_dir_all(&ucode).unwrap();
    std::fs::write(ucode.join("GenuineIntel.bin"), vec![0xa5; 3000]).unwrap();
    std::fs::write(early.join("early_cpio"), "1\n").unwrap();
    let main = dir.path().join("main");
    let ver = "3.10.0-1160.el7.x86_64";
    let kmod = main.join(format!("usr/lib/modules/{ver}/kernel"));
    for (sub, name) in [
        ("drivers/block", "virtio_blk.ko.xz"),
        ("drivers/virtio", "virtio_pci.ko.xz"),
        ("drivers/ata", "ahci.ko.xz"),
        ("fs/xfs", "xfs.ko.xz"),
    ] {
        std::fs::create_dir_all(kmod.join(sub)).unwrap();
        std::fs::write(kmod.join(sub).join(name), vec![0x5a; 1234]).unwrap();
    }
    std::fs::write(
        main.join(format!("usr/lib/modules/{ver}/modules.builtin")),
        "kernel/fs/ext4/ext4.ko\nkernel/drivers/ata/libata.ko\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/lib", main.join("lib")).unwrap();
    std::fs::create_dir_all(main.join("usr/bin")).unwrap();
    std::fs::write(main.join("usr/bin/dracut-cmdline"), "#!/bin/sh\n").unwrap();

    let early_archive = newc_of(&early);
    let main_archive = newc_of(&main);
    let mut image = early_archive.clone();
    // dracut pads the early archive to a 512-byte boundary.
    image.resize(image.len().div_ceil(512) * 512, 0);
    let prefix = image.len();
    image.extend(pipe("xz", &["--check=crc32", "-c"], &main_archive));

    let parsed = initrd::parse(&image).unwrap();
    assert_eq!(
        parsed
            .segments
            .iter()
            .map(|s| (s.offset, s.compression))
            .collect::<Vec<_>>(),
        [(0, Compression::None), (prefix as u64, Compression::Xz)]
    );
    let early_names = cpio_list(&early_archive);
    let main_names = cpio_list(&main_archive);
    assert_eq!(parsed.segments[0].entries, early_names.len());
    assert_eq!(
        sorted(parsed.files.clone()),
        sorted([early_names, main_names].concat())
    );
    for m in ["virtio_blk", "virtio_pci", "ahci", "xfs", "ext4", "libata"] {
        assert!(parsed.has_module(m), "{m}");
    }
    assert!(!parsed.has_module("virtio_scsi"));
}
