//! `imgconv inspect` as a person sees it, on a terminal (run under `script`, a real
//! pseudo-terminal): the verdict on the first line, then every partition (logical ones
//! too) with what the conversion does with it, the guest, the Xen-specific settings and
//! their fixes; the field list only with --verbose. Sources: bare, MBR with a logical
//! swap partition (p1 at sector 63, the old DOS layout), GPT, an LVM physical volume
//! beside a /boot partition, and garbage. Partition positions are checked against sfdisk.

use crate::common;
use crate::support;

use common::{bin, imgconv, run, write_at};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `imgconv inspect ARGS` on a pseudo-terminal: (exit code, what the terminal showed).
fn on_tty(args: &str) -> (i32, String) {
    let cmdline = format!("{} inspect {args}", bin().display());
    let out = Command::new("script")
        .args(["-qfec", &cmdline, "/dev/null"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .output()
        .expect("script (bsdutils) is installed: scripts/setup");
    let screen = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (out.status.code().unwrap_or(-1), screen)
}

/// Lines of `screen` in order must contain `wanted` in this order.
fn assert_in_order(screen: &str, wanted: &[&str]) {
    let mut rest = screen;
    for w in wanted {
        match rest.find(w) {
            Some(i) => rest = &rest[i + w.len()..],
            None => panic!("{w:?} missing (or out of order) in:\n{screen}"),
        }
    }
}

/// (start, size) in sectors of each partition, as sfdisk reads the table.
fn sfdisk_parts(img: &Path) -> Vec<(String, u64, u64)> {
    let out = Command::new("sfdisk").arg("-J").arg(img).output().unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_string(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn bare_source_summary_comes_before_the_details() {
    let img = support::synthetic().join("xen-ext4.img");
    let (code, screen) = on_tty(&img.display().to_string());
    assert_eq!(code, 0, "{screen}");
    let first = screen.lines().next().unwrap_or_default();
    assert!(first.ends_with(": convertible with changes"), "{screen}");
    assert_in_order(
        &screen,
        &[
            "Xen-specific settings fixed",
            "Source: bare ext4 filesystem, 128 MiB",
            "the image",
            "guest root",
            "-> the root partition of the output",
            "Guest: Debian GNU/Linux 12 (bookworm), x86_64, init systemd",
            "UUID a4a4a4a4-0004-4000-8000-000000000004",
            "Xen-specific settings and their fixes:",
            "fstab entries naming Xen disks -> rewritten",
            "/dev/xvda1 on / (/etc/fstab)",
            "getty on the Xen console -> moved to the serial console",
            "hvc0",
            "All fields: imgconv inspect --verbose",
        ],
    );
    assert!(!screen.contains("compat raw"), "no field dump: {screen}");
    // --verbose: the same summary, then every field.
    let (code, verbose) = on_tty(&format!("--verbose {}", img.display()));
    assert_eq!(code, 0);
    assert_in_order(
        &verbose,
        &[
            "convertible with changes",
            "Source:",
            "Details:",
            "compat raw",
        ],
    );
}

/// A 1980s-style disk: p1 ext4 root at sector 63, p2 an extended partition holding the
/// swap as logical p5.
fn mbr_with_logical_swap(dir: &Path, root_fs: &Path) -> PathBuf {
    let fs_sectors = fs::metadata(root_fs).unwrap().len() / 512;
    let img = dir.join("old-style.img");
    let swap_sectors = 16 * 2048;
    let ext_start = 63 + fs_sectors + 1;
    let total = (ext_start + 1 + swap_sectors + 2048) * 512;
    fs::File::create(&img).unwrap().set_len(total).unwrap();
    let script = format!(
        "label: dos\nstart=63, size={fs_sectors}, type=83\nstart={ext_start}, type=5\nstart={}, size={swap_sectors}, type=82\n",
        ext_start + 1
    );
    let mut sf = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sf.wait().unwrap().success());
    run(Command::new("dd")
        .arg(format!("if={}", root_fs.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=512", "seek=63", "conv=notrunc,sparse", "status=none"]));
    let parts = sfdisk_parts(&img);
    let p5 = parts
        .iter()
        .find(|p| p.0.ends_with('5'))
        .expect("sfdisk sees p5");
    let swap = dir.join("swap.img");
    fs::File::create(&swap)
        .unwrap()
        .set_len(p5.2 * 512)
        .unwrap();
    run(Command::new("mkswap").arg("-q").arg(&swap));
    run(Command::new("dd")
        .arg(format!("if={}", swap.display()))
        .arg(format!("of={}", img.display()))
        .args([
            "bs=512",
            &format!("seek={}", p5.1),
            "conv=notrunc,sparse",
            "status=none",
        ]));
    img
}

#[test]
fn mbr_logical_partitions_are_listed_with_their_fate() {
    let dir = tempfile::tempdir().unwrap();
    let img = mbr_with_logical_swap(dir.path(), &support::synthetic().join("xen-ext4.img"));
    let parts = sfdisk_parts(&img);
    let (_, p5_start, p5_size) = parts.iter().find(|p| p.0.ends_with('5')).unwrap().clone();
    let (code, screen) = on_tty(&img.display().to_string());
    assert_eq!(code, 0, "{screen}");
    assert_in_order(
        &screen,
        &[
            ": convertible with changes",
            "Source: MBR disk",
            "p1 ",
            "at  31.5 KiB",
            "ext4 filesystem labelled \"xenroot\", guest root",
            "-> the root partition of the output",
            "p5 (logical)",
            "a Linux swap area, type 0x82",
            "-> the swap partition of the output, with the same UUID and label",
            "Guest: Debian",
        ],
    );
    // The JSON lists p5 where sfdisk has it.
    let out = imgconv()
        .arg("inspect")
        .arg(&img)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = j["container"]["table"]["entries"].as_array().unwrap();
    let p5 = entries
        .iter()
        .find(|e| e["number"] == 5)
        .expect("p5 in the JSON");
    assert_eq!(p5["start"].as_u64(), Some(p5_start * 512));
    assert_eq!(p5["len"].as_u64(), Some(p5_size * 512));
    assert_eq!(j["container"]["root_partition"], 1);
    assert_eq!(j["fs_offset"], 63 * 512);
}

#[test]
fn gpt_source_names_its_root_partition() {
    let img = support::synthetic().join("xen-ext4-gpt.img");
    let (code, screen) = on_tty(&img.display().to_string());
    assert_eq!(code, 0, "{screen}");
    assert_in_order(
        &screen,
        &[
            ": convertible with changes",
            "Source: GPT disk",
            "p1 ",
            "guest root",
            "-> the root partition of the output",
            "Guest: Debian",
        ],
    );
}

/// The RHEL layout: p1 a /boot filesystem, p2 an LVM2 physical volume (the label written
/// by hand: pvcreate needs a block device).
#[test]
fn damaged_lvm_physical_volume_leaves_no_guest_root() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    fs::create_dir_all(boot.join("grub")).unwrap();
    fs::write(boot.join("grub/grub.conf"), "default=0\n").unwrap();
    let img = dir.path().join("rhel.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mut sf = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=32768, type=83\nstart=34816, type=8e\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    let bootfs = dir.path().join("boot.fs");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "boot", "-d"])
        .arg(&boot)
        .arg(&bootfs)
        .arg("16M"));
    run(Command::new("dd")
        .arg(format!("if={}", bootfs.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=512", "seek=2048", "conv=notrunc,sparse", "status=none"]));
    let mut label = [0u8; 512];
    label[..8].copy_from_slice(b"LABELONE");
    label[0x18..0x20].copy_from_slice(b"LVM2 001");
    write_at(&img, 34816 * 512 + 512, &label);

    let (code, screen) = on_tty(&img.display().to_string());
    assert_eq!(code, 3, "{screen}");
    assert_in_order(
        &screen,
        &[
            ": not convertible",
            "no guest root filesystem",
            "Source: MBR disk",
            "p1 ",
            "ext4 filesystem labelled \"boot\"",
            "p2 ",
            "an LVM2 physical volume",
            "-> an LVM physical volume: its logical volumes are carried as partitions when they can be read",
            "imgconv: error:",
            "imgconv: hint:",
        ],
    );
}

#[test]
fn unconvertible_source_says_why_first() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.img");
    fs::write(&garbage, vec![0x5au8; 1 << 20]).unwrap();
    let (code, screen) = on_tty(&garbage.display().to_string());
    assert_eq!(code, 3, "{screen}");
    let first = screen.lines().next().unwrap_or_default();
    assert!(first.ends_with(": not convertible"), "{screen}");
    assert_in_order(
        &screen,
        &[
            "no recognisable filesystem or partition table",
            "Source: no partition table, 1 MiB",
            "the image",
            "unrecognised data",
            "-> not convertible",
            "imgconv: error:",
        ],
    );
    assert!(!screen.contains("Guest:"), "{screen}");
}
