//! Block devices (loop devices, as root) as the source and as the output: a read-only
//! device source converts like its file; a device output, filled with noise first, gets
//! the same disk as a file output (partition table apart from the random disk identifier,
//! boot area, root tree, e2fsck clean); a device too small, mounted, or overlapping the
//! source is refused with its content unchanged; a cancelled conversion leaves the
//! device's first MiB zero and says so.

use crate::overlap_equivalence::{root_offset, tree};
use crate::support::{self, tool_merged, CancelAt, SkipKind};

use imgconv_core::convert::{convert, ConvertOptions, Firmware};
use imgconv_core::output::OutputError;
use imgconv_core::progress::Stage;
use imgconv_core::{Error, NoProgress};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device, detached on drop (whatever the test does).
pub(crate) struct Loop(PathBuf);

impl Loop {
    /// `losetup -f --show [-r] [-P] FILE`, or `None` (with a skip line) when loop devices
    /// cannot be set up here.
    pub(crate) fn attach(file: &Path, flags: &[&str]) -> Option<Loop> {
        if !support::is_root() {
            support::skip(
                SkipKind::CiCanRun,
                "loop devices need root (CI runs the tests as root)",
            );
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .args(flags)
            .arg(file)
            .output()
            .expect("losetup");
        if !out.status.success() {
            support::skip(
                SkipKind::CiCanRun,
                &format!(
                    "cannot set up a loop device: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        // Partitions (-P) appear through udev-less kernels' own scan; let it settle.
        let _ = Command::new("udevadm").arg("settle").status();
        Some(Loop(dev))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The node of partition 1 (`-P`), or `None` with a skip line when this kernel does
    /// not scan loop devices' partition tables (no `loopNp1` in sysfs).
    fn partition_1(&self) -> Option<PathBuf> {
        let name = format!("{}p1", self.0.file_name().unwrap().to_string_lossy());
        let node = Path::new("/dev").join(&name);
        for _ in 0..50 {
            if node.exists() {
                return Some(node);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        support::skip(
            SkipKind::Host,
            &format!(
                "this kernel shows no partition {name} of a loop device (no partition scan): the partition cases do not run"
            ),
        );
        None
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn fx(name: &str) -> PathBuf {
    support::synthetic().join(name)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A file of `len` bytes of noise (a device "with old data" once attached).
fn noise_file(path: &Path, len: u64) {
    fs::write(path, support::prng_bytes(0xb10c, len as usize)).unwrap();
}

fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// e2fsck -fn clean on the root partition, then its tree (debugfs rdump).
fn root_tree(disk: &Path, scratch: &Path) -> BTreeMap<String, String> {
    let spec = format!("{}?offset={}", disk.display(), root_offset(disk));
    let (rc, fsck) = tool_merged("e2fsck", &["-fn", &spec]);
    assert_eq!(rc, 0, "e2fsck -fn {spec}:\n{fsck}");
    let dump = scratch.join(format!(
        "tree-{}",
        disk.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir(&dump).unwrap();
    let (rc, log) = tool_merged(
        "debugfs",
        &["-R", &format!("rdump / {}", dump.display()), &spec],
    );
    assert_eq!(rc, 0, "debugfs rdump:\n{log}");
    let t = tree(&dump);
    fs::remove_dir_all(&dump).unwrap();
    assert!(t.len() > 20, "too few paths extracted: {t:?}");
    t
}

/// `sfdisk -J` with what differs between two conversions or two names of a disk left
/// out: the random disk identifier (and partition UUIDs), the device name.
fn table(disk: &Path) -> serde_json::Value {
    let (rc, json) = tool_merged("sfdisk", &["-J", disk.to_str().unwrap()]);
    assert_eq!(rc, 0, "{json}");
    let mut t: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pt = &mut t["partitiontable"];
    for key in ["id", "device"] {
        pt.as_object_mut().unwrap().remove(key);
    }
    for p in pt["partitions"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        p.remove("node");
        p.remove("uuid");
    }
    t
}

fn opts(src: &Path, out: &Path) -> ConvertOptions {
    ConvertOptions::new(src, Some(fx("donor.img")), out)
}

#[test]
fn a_read_only_device_source_converts_like_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = fx("xen-ext4-mbr.img");
    let before = sha256(&image);
    let Some(src) = Loop::attach(&image, &["-r"]) else {
        return;
    };
    let (a, b) = (dir.path().join("file.raw"), dir.path().join("dev.raw"));
    convert(&opts(&image, &a), &mut NoProgress).unwrap();
    let done = convert(&opts(src.path(), &b), &mut NoProgress)
        .unwrap_or_else(|e| panic!("convert {}: {e}", src.path().display()));
    assert_eq!(
        done.plan.inspection.fs.uuid, "b4b4b4b4-0004-4000-8000-0000000000b2",
        "the device's own root filesystem"
    );
    assert_eq!(
        fs::metadata(&a).unwrap().len(),
        fs::metadata(&b).unwrap().len()
    );
    assert_eq!(table(&a), table(&b));
    assert_eq!(root_tree(&a, dir.path()), root_tree(&b, dir.path()));
    drop(src);
    assert_eq!(sha256(&image), before, "the source was never written");
}

#[test]
fn a_device_output_gets_the_disk_a_file_gets() {
    let dir = tempfile::tempdir().unwrap();
    let src = fx("xen-ext4-mbr.img");
    for fw in [Firmware::Bios, Firmware::Uefi] {
        let file = dir.path().join("file.raw");
        let _ = fs::remove_file(&file);
        convert(&opts(&src, &file).with_firmware(fw), &mut NoProgress).unwrap();
        let len = fs::metadata(&file).unwrap().len();
        // A device of the same size full of old data.
        let backing = dir.path().join("device.img");
        noise_file(&backing, len);
        let Some(dev) = Loop::attach(&backing, &[]) else {
            return;
        };
        // Old data: refused without force, nothing written.
        let e = convert(&opts(&src, dev.path()).with_firmware(fw), &mut NoProgress)
            .expect_err("a device holding data needs force");
        assert!(
            matches!(e, Error::Output(OutputError::DeviceHoldsData { .. })),
            "{e}"
        );
        assert_eq!(read(dev.path(), 0, 4096), support::prng_bytes(0xb10c, 4096));

        let done = convert(
            &opts(&src, dev.path()).with_firmware(fw).with_force(true),
            &mut NoProgress,
        )
        .unwrap_or_else(|e| panic!("{fw:?}: convert to {}: {e}", dev.path().display()));
        assert_eq!(done.output, dev.path(), "written in place, nothing renamed");
        assert!(
            fs::metadata(dev.path())
                .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
                .unwrap(),
            "still the device node"
        );
        assert_eq!(table(&file), table(dev.path()), "{fw:?}");
        assert_eq!(
            root_tree(&file, dir.path()),
            root_tree(dev.path(), dir.path()),
            "{fw:?}"
        );
        if fw == Firmware::Bios {
            // Before the root partition (boot sector, GRUB's core image, the gap) and in
            // the swap partition's first MiB the disks agree byte for byte apart from the
            // identifiers made fresh per conversion (the 4-byte disk signature, the
            // 16-byte swap UUID): the device's old data was zeroed there.
            let t = table(&file);
            let swap = t["partitiontable"]["partitions"][1]["start"]
                .as_u64()
                .unwrap()
                * 512;
            for (at, len, fresh) in [(0, root_offset(&file), 4), (swap, 1 << 20, 16)] {
                let (fa, fb) = (
                    read(&file, at, len as usize),
                    read(dev.path(), at, len as usize),
                );
                let differ = fa.iter().zip(&fb).filter(|(x, y)| x != y).count();
                assert!(
                    differ <= fresh,
                    "{differ} bytes differ in {len} bytes at {at}"
                );
            }
        }
        let (rc, verify) = tool_merged("sfdisk", &["--verify", dev.path().to_str().unwrap()]);
        assert_eq!(rc, 0, "{fw:?}: {verify}");
        let (rc, blkid) = tool_merged(
            "blkid",
            &["-p", "-o", "export", dev.path().to_str().unwrap()],
        );
        assert_eq!(rc, 0, "{blkid}");
        assert!(
            blkid.contains(if fw == Firmware::Bios {
                "PTTYPE=dos"
            } else {
                "PTTYPE=gpt"
            }) && !blkid.contains("ambivalent"),
            "{fw:?}: {blkid}"
        );
    }
}

#[test]
fn a_device_too_small_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("small.img");
    noise_file(&backing, 64 << 20);
    let before = sha256(&backing);
    let Some(dev) = Loop::attach(&backing, &[]) else {
        return;
    };
    let e = convert(
        &opts(&fx("xen-ext4-mbr.img"), dev.path()).with_force(true),
        &mut NoProgress,
    )
    .expect_err("too small");
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::Output(OutputError::DeviceTooSmall {
                device_bytes: 67108864,
                ..
            })
        ) && text.contains("67108864 bytes")
            && text.contains("the disk needs"),
        "{text}"
    );
    assert_eq!(e.hint(), Some(imgconv_core::Hint::LargerDevice));
    drop(dev);
    assert_eq!(sha256(&backing), before, "nothing written");
}

/// An unmounted mount point, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mount `dev` read-only at `point`, or `None` with a skip line.
fn mount(dev: &Path, point: &Path) -> Option<Mounted> {
    fs::create_dir_all(point).unwrap();
    let out = Command::new("mount")
        .args(["-o", "ro"])
        .arg(dev)
        .arg(point)
        .output()
        .unwrap();
    if !out.status.success() {
        support::skip(
            SkipKind::CiCanRun,
            &format!(
                "cannot mount {}: {}",
                dev.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return None;
    }
    Some(Mounted(point.to_path_buf()))
}

#[test]
fn a_mounted_device_or_one_whose_partition_is_mounted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = fx("xen-ext4.img");
    // A bare filesystem on the device, mounted.
    let bare = dir.path().join("bare.img");
    fs::copy(&src, &bare).unwrap();
    let Some(dev) = Loop::attach(&bare, &[]) else {
        return;
    };
    let point = dir.path().join("mnt");
    let Some(mounted) = mount(dev.path(), &point) else {
        return;
    };
    let before = sha256(dev.path());
    let e =
        convert(&opts(&src, dev.path()).with_force(true), &mut NoProgress).expect_err("mounted");
    let text = e.to_string();
    assert!(
        matches!(e, Error::Output(OutputError::DeviceInUse { .. }))
            && text.contains("is mounted on")
            && text.contains(&point.display().to_string()),
        "{text}"
    );
    assert_eq!(e.hint(), Some(imgconv_core::Hint::ReleaseDevice));
    assert_eq!(sha256(dev.path()), before, "nothing written");
    drop(mounted);
    drop(dev);

    // A partitioned disk whose p1 is mounted: the whole disk is refused.
    let disk = dir.path().join("disk.img");
    fs::copy(fx("xen-ext4-mbr.img"), &disk).unwrap();
    let Some(dev) = Loop::attach(&disk, &["-P"]) else {
        return;
    };
    let Some(p1) = dev.partition_1() else {
        return;
    };
    let Some(mounted) = mount(&p1, &point) else {
        return;
    };
    let before = sha256(dev.path());
    let e = convert(&opts(&src, dev.path()).with_force(true), &mut NoProgress)
        .expect_err("a partition of it is mounted");
    assert!(e.to_string().contains("is mounted on"), "{e}");
    drop(mounted);
    assert_eq!(sha256(dev.path()), before, "nothing written");
}

#[test]
fn the_source_device_or_the_disk_holding_it_is_refused_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    fs::copy(fx("xen-ext4-mbr.img"), &disk).unwrap();
    let before = sha256(&disk);
    let Some(dev) = Loop::attach(&disk, &["-P"]) else {
        return;
    };
    let p1 = dev.partition_1();
    let mut cases = vec![(dev.path(), dev.path())];
    if let Some(p1) = &p1 {
        cases.push((p1.as_path(), dev.path()));
        cases.push((dev.path(), p1.as_path()));
    }
    for (src, out) in cases {
        let e = convert(&opts(src, out).with_force(true), &mut NoProgress)
            .expect_err("overlaps the source");
        assert!(
            matches!(e, Error::Output(OutputError::DeviceIsSource { .. })),
            "{} -> {}: {e}",
            src.display(),
            out.display()
        );
        assert_eq!(e.kind(), imgconv_core::ErrorKind::Options);
    }
    // A loop device over the source file itself, whatever it is called.
    let e = convert(&opts(&disk, dev.path()).with_force(true), &mut NoProgress)
        .expect_err("a loop device over the source file");
    assert!(
        matches!(e, Error::Output(OutputError::DeviceIsSource { .. })),
        "{e}"
    );
    drop(dev);
    assert_eq!(sha256(&disk), before, "nothing written");
}

#[test]
fn a_failed_conversion_to_a_device_leaves_its_first_mib_zero() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("device.img");
    noise_file(&backing, 700 << 20);
    let Some(dev) = Loop::attach(&backing, &[]) else {
        return;
    };
    for stage in [Stage::Fixups, Stage::Boot] {
        let e = convert(
            &opts(&fx("xen-ext4-mbr.img"), dev.path()).with_force(true),
            &mut CancelAt(stage, false),
        )
        .expect_err("cancelled");
        let text = e.to_string();
        match &e {
            Error::DeviceWiped { source, wiped } => {
                assert!(matches!(**source, Error::Cancelled), "{stage:?}: {text}");
                assert!(wiped.failed.is_none(), "{stage:?}: {text}");
            }
            other => panic!("{stage:?}: {other:?}"),
        }
        assert_eq!(e.kind(), imgconv_core::ErrorKind::Cancelled);
        assert!(
            text.contains("first MiB") && text.contains(&dev.path().display().to_string()),
            "{text}"
        );
        assert!(
            read(dev.path(), 0, 1 << 20).iter().all(|&b| b == 0),
            "{stage:?}: the first MiB is zero"
        );
        // Something was written past it (the conversion had begun), so the wipe is what
        // zeroed the start.
        assert_ne!(
            read(dev.path(), (1 << 20) + 1024, 2),
            support::prng_bytes(0xb10c, (1 << 20) + 1026)[(1 << 20) + 1024..],
            "{stage:?}: the root superblock was written"
        );
    }
}
