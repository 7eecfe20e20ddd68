//! `imgconv verify` on disks built with sfdisk/mkfs.ext4/mkswap and GRUB's boot images:
//! every check passes on a good one, and each broken variant fails exactly its check
//! with exit code 6.

use crate::common;
use crate::support;
use common::*;
use std::process::Command;

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn verify_json(img: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = imgconv()
        .arg("verify")
        .arg(img)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        json(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_disk_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let (img, uuid) = converted_disk(dir.path(), "good", DiskSpec::default());
    let (code, r, err) = verify_json(&img, &[]);
    assert_eq!(code, 0, "{r:#}\n{err}");
    assert_eq!(r["ok"], true);
    for name in ["partition-table", "fsck", "grub-files", "swap", "boot-code"] {
        assert_eq!(check(&r, name)["ok"], true, "{name}: {r:#}");
    }
    assert!(check(&r, "grub-files")["detail"]
        .as_str()
        .unwrap()
        .contains(&uuid));
    assert!(check(&r, "grub-files")["detail"]
        .as_str()
        .unwrap()
        .contains(KERNEL));
    assert_eq!(r["partitions"]["entries"][0]["start"], P1_OFFSET);
    assert_eq!(r["partitions"]["entries"][1]["start"], P2_SECTOR * 512);

    // The human form says the same on stdout, one line per check.
    let out = imgconv().arg("verify").arg(&img).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        5,
        "{text}"
    );
    assert!(text.contains("verified"), "{text}");
}

#[test]
fn each_broken_part_fails_its_own_check_with_exit_6() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, DiskSpec, &str, &str); 7] = [
        (
            "nocfg",
            DiskSpec {
                no_grub_cfg: true,
                ..Default::default()
            },
            "grub-files",
            "grub.cfg",
        ),
        (
            "noinitrd",
            DiskSpec {
                no_initrd: true,
                ..Default::default()
            },
            "grub-files",
            "initrd",
        ),
        (
            "cfgabsent",
            DiskSpec {
                cfg_names_absent_initrd: true,
                ..Default::default()
            },
            "grub-files",
            "loads files that are not on partition 1: /boot/initramfs-6.1.0-imgconv-test.img (line 3)",
        ),
        (
            "wronguuid",
            DiskSpec {
                wrong_uuid_in_cfg: true,
                ..Default::default()
            },
            "grub-files",
            "root=UUID=",
        ),
        (
            "noswap",
            DiskSpec {
                no_swap_signature: true,
                ..Default::default()
            },
            "swap",
            "SWAPSPACE2",
        ),
        (
            "noboot",
            DiskSpec {
                no_boot_code: true,
                ..Default::default()
            },
            "boot-code",
            "GRUB",
        ),
        (
            "inactive",
            DiskSpec {
                p1_not_bootable: true,
                ..Default::default()
            },
            "partition-table",
            "active",
        ),
    ];
    for (name, spec, failing, words) in cases {
        let (img, _) = converted_disk(dir.path(), name, spec);
        let (code, r, err) = verify_json(&img, &[]);
        assert_eq!(code, 6, "{name}: {r:#}");
        assert_eq!(r["ok"], false);
        let c = check(&r, failing);
        assert_eq!(c["ok"], false, "{name}: {r:#}");
        assert!(c["detail"].as_str().unwrap().contains(words), "{name}: {c}");
        let failed: Vec<&str> = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(failed, [failing], "{name}: only its own check fails");
        assert!(
            err.contains("imgconv: error:") && err.contains("imgconv: hint:"),
            "{err}"
        );
    }
}

#[test]
fn filesystem_errors_fail_fsck_with_exit_6() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "corrupt", DiskSpec::default());
    // A wrong link count on /etc/fstab: e2fsck must report errors it does not fix (4).
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg("set_inode_field /etc/fstab links_count 7")
        .arg(format!("{}?offset={P1_OFFSET}", img.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, r, _) = verify_json(&img, &[]);
    assert_eq!(code, 6, "{r:#}");
    let c = check(&r, "fsck");
    assert_eq!(c["ok"], false);
    assert!(c["detail"].as_str().unwrap().contains("exited 4"), "{c}");
}

#[test]
fn missing_image_is_exit_3_and_bare_filesystem_has_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgconv()
        .arg("verify")
        .arg(dir.path().join("nope.img"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imgconv: error:") && err.contains("nope.img"),
        "{err}"
    );

    let tree = dir.path().join("t");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let bare = dir.path().join("bare.img");
    ext4_image(&bare, &tree, "8M");
    let (code, r, _) = verify_json(&bare, &[]);
    assert_eq!(code, 6);
    assert_eq!(check(&r, "partition-table")["ok"], false);
}

#[test]
fn loop_mode_checks_through_a_read_only_loop_device_and_always_detaches() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "loop", DiskSpec::default());
    if !is_root() {
        // The non-root path is covered by loop_mode_without_root_says_so.
        support::skip(support::SkipKind::CiCanRun, "loop devices need root");
        return;
    }
    let (code, r, err) = verify_json(&img, &["--loop"]);
    assert_eq!(code, 0, "{r:#}\n{err}");
    assert!(
        check(&r, "fsck")["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/loop"),
        "{r:#}"
    );
    assert_eq!(loops_on(&img), "", "the loop device was detached");

    // Also when the check fails.
    let (bad, _) = converted_disk(dir.path(), "loopbad", DiskSpec::default());
    write_at(&bad, P1_OFFSET + 1024, &[0u8; 1024]); // wipe the superblock
    let (code, r, _) = verify_json(&bad, &["--loop"]);
    assert_eq!(code, 6, "{r:#}");
    assert_eq!(check(&r, "fsck")["ok"], false);
    assert_eq!(loops_on(&bad), "", "detached after a failed check");
}

#[test]
fn loop_mode_without_root_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "nonroot", DiskSpec::default());
    let mut cmd = if is_root() {
        // Drop to nobody for this run; the fixture must be readable by it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin());
        c
    } else {
        Command::new(bin())
    };
    let out = cmd
        .arg("verify")
        .arg(&img)
        .arg("--loop")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--loop needs root"), "{err}");
    assert!(err.contains("hint:") && err.contains("offset=N"), "{err}");
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn boot_test_sees_the_marker_on_the_serial_console() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "marker", DiskSpec::default());
    // Replace the GRUB boot code by a boot sector that prints the marker and halts.
    write_at(&img, 0, &[0u8; 0x1b8]);
    write_at(&img, 0, MARKER_BOOT_SECTOR);
    let (code, r, err) = verify_json(&img, &["--boot", "--timeout", "60"]);
    let boot = check(&r, "boot");
    assert_eq!(boot["ok"], true, "{r:#}\n{err}");
    assert_eq!(r["boot"]["marker"], "IMGCONV-MARKER");
    assert!(["kvm", "tcg"].contains(&r["boot"]["accel"].as_str().unwrap()));
    // The rest is as built, except the boot code we replaced.
    assert_eq!(check(&r, "boot-code")["ok"], false);
    assert_eq!(code, 6);
    assert!(!qemu_running_on(&img), "qemu was killed");
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn boot_test_times_out_with_a_clear_reason_and_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "silent", DiskSpec::default());
    // A boot sector that halts without a word.
    write_at(&img, 0, &[0u8; 0x1b8]);
    write_at(&img, 0, &[0xfa, 0xf4, 0xeb, 0xfd]);
    let t0 = std::time::Instant::now();
    let (code, r, _) = verify_json(&img, &["--boot", "--timeout", "3"]);
    assert!(t0.elapsed().as_secs() < 30);
    assert_eq!(code, 6);
    let boot = check(&r, "boot");
    assert_eq!(boot["ok"], false);
    assert!(
        boot["detail"].as_str().unwrap().contains("within 3 s"),
        "{boot}"
    );
    assert!(!qemu_running_on(&img), "qemu was killed");
}

#[test]
fn missing_qemu_is_named_with_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "noqemu", DiskSpec::default());
    let out = imgconv()
        .arg("verify")
        .arg(&img)
        .arg("--boot")
        .env("IMGCONV_QEMU", "qemu-system-x86_64-not-here")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not installed: apt-get install qemu-system-x86"),
        "{err}"
    );
}

fn qemu_running_on(img: &std::path::Path) -> bool {
    let needle = img.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c).contains(&needle)
                        && String::from_utf8_lossy(&c).contains("qemu")
                })
                .unwrap_or(false)
        })
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn sigint_or_sigterm_during_the_boot_test_exits_130_and_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = converted_disk(dir.path(), "interrupt", DiskSpec::default());
    write_at(&img, 0, &[0u8; 0x1b8]);
    write_at(&img, 0, &[0xfa, 0xf4, 0xeb, 0xfd]); // halts silently
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let child = Command::new(bin())
            .arg("verify")
            .arg(&img)
            .args(["--boot", "--timeout", "120"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until qemu runs, then interrupt imgconv only (not its process group).
        let t0 = std::time::Instant::now();
        while !qemu_running_on(&img) {
            assert!(t0.elapsed().as_secs() < 60, "qemu never started");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "signal {signal}: {err}");
        assert!(err.contains("imgconv: error: interrupted"), "{err}");
        assert!(t0.elapsed().as_secs() < 60, "stopped promptly");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!qemu_running_on(&img), "qemu was killed");
    }
}

/// A guest with a separate /boot (p1 ext3 with 1 KiB blocks, p2 root mounting it by
/// `/dev/xvda1`), converted: verify finds grub.cfg, the kernel and its initrd on the /boot
/// partition, the root grub.cfg boots on p2, and the root's fstab mounting /boot.
#[test]
fn a_separate_boot_partition_holds_grub_cfg_and_the_kernel() {
    const BOOT_UUID: &str = "3d3d3d3d-0002-4000-8000-00000000b0b0";
    let dir = tempfile::tempdir().unwrap();
    let fx = support::synthetic();
    let root = dir.path().join("root.img");
    std::fs::copy(fx.join("xen-ext4.img"), &root).unwrap();
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        "/dev/xvda2 / ext4 errors=remount-ro 0 1\n/dev/xvda1 /boot ext3 defaults 1 2\n",
    )
    .unwrap();
    for req in [
        "rm /etc/fstab".to_string(),
        format!("write {} /etc/fstab", fstab.display()),
    ] {
        let (rc, out) =
            support::tool_merged("debugfs", &["-w", "-R", &req, root.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}");
    }
    let boot = dir.path().join("boot.img");
    support::mkfs(
        "ext3",
        None,
        &boot,
        32,
        &["-b", "1024", "-L", "boot", "-U", BOOT_UUID],
    );
    let root_mib = std::fs::metadata(&root).unwrap().len() >> 20;
    let src = dir.path().join("split.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len((2 + 32 + root_mib) << 20)
        .unwrap();
    let script = format!(
        "label: dos\nstart=2048, size={}, type=83\nstart={}, size={}, type=83\n",
        32 * 2048,
        2048 + 32 * 2048,
        root_mib * 2048
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&src)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    for (img, at) in [(&boot, 1u64 << 20), (&root, 33 << 20)] {
        write_at(&src, at, &std::fs::read(img).unwrap());
    }
    let out = dir.path().join("out.raw");
    let status = imgconv()
        .arg("convert")
        .arg(&src)
        .arg("--donor")
        .arg(fx.join("donor-dir"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (code, r, err) = verify_json(&out, &[]);
    assert_eq!(code, 0, "{r:#}\n{err}");
    let detail = check(&r, "grub-files")["detail"].as_str().unwrap();
    assert!(
        detail.contains("separate /boot (partition 1)") && detail.contains("i386-pc"),
        "{detail}"
    );
    assert_eq!(r["partitions"]["entries"][0]["start"], 1 << 20);

    // grub.cfg naming a kernel /boot does not have fails the check.
    let spec = format!("{}?offset={}", out.display(), 1 << 20);
    let (rc, o) = support::tool_merged("debugfs", &["-w", "-R", "rm /grub/grub.cfg", &spec]);
    assert_eq!(rc, 0, "{o}");
    let (_, root_uuid) = support::tool_merged(
        "blkid",
        &["-p", "-o", "value", "-s", "UUID", root.to_str().unwrap()],
    );
    let bad = dir.path().join("bad.cfg");
    std::fs::write(
        &bad,
        format!(
            "search --no-floppy --fs-uuid --set=root {BOOT_UUID}\nlinux /vmlinuz-9.9 root=UUID={}\n",
            root_uuid.trim()
        ),
    )
    .unwrap();
    let (rc, o) = support::tool_merged(
        "debugfs",
        &[
            "-w",
            "-R",
            &format!("write {} /grub/grub.cfg", bad.display()),
            &spec,
        ],
    );
    assert_eq!(rc, 0, "{o}");
    let (code, r, _) = verify_json(&out, &[]);
    assert_eq!(code, 6, "{r:#}");
    assert_eq!(check(&r, "grub-files")["ok"], false, "{r:#}");
    let detail = check(&r, "grub-files")["detail"].as_str().unwrap();
    assert!(detail.contains("/vmlinuz-9.9 (line 2)"), "{detail}");
}
