//! `--firmware uefi` and `--firmware hybrid` conversions of the synthetic Xen guests,
//! end to end through `convert::convert`, judged by outside tools: sfdisk (GPT, type
//! GUIDs), e2fsck (root), fsck.fat and blkid (ESP), debugfs (fstab, /boot/efi), mtools
//! (ESP files), and QEMU: OVMF (and SeaBIOS for hybrid) must run GRUB up to our menu
//! entry's "Loading Linux" line (the synthetic donor's kernel is not a real one, so the
//! boot stops there; the real-kernel boot is scripts/e2e's).

use crate::support;

use imgconv_core::convert::{convert, Conversion, ConvertOptions, Firmware};
use imgconv_core::NoProgress;
use std::fs::{self, File};
use std::path::Path;
use support::qemu::{self, GRUB_BOOT_LIMIT};
use support::tool_merged;

const KERNEL: &str = "6.1.0-99-amd64";

fn convert_with(firmware: Firmware, src: &str, donor: &str, dir: &Path) -> (Conversion, String) {
    let fx = support::synthetic();
    let out = dir.join(format!("{src}.{firmware:?}.raw"));
    let mut opts = ConvertOptions::new(fx.join(src), Some(fx.join(donor)), &out);
    opts.firmware = firmware;
    let done = convert(&opts, &mut NoProgress).unwrap_or_else(|e| panic!("convert {src}: {e}"));
    (done, out.display().to_string())
}

/// Outside checks; returns (root offset, ESP offset).
fn check(done: &Conversion, img: &str, firmware: Firmware) -> (u64, u64) {
    let gpt = done.plan.gpt.as_ref().expect("a GPT plan");
    let (rc, json) = tool_merged("sfdisk", &["-J", img]);
    assert_eq!(rc, 0, "{json}");
    let t: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(t["partitiontable"]["label"], "gpt");
    let parts = t["partitiontable"]["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    let mut want = vec![
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    ];
    if firmware == Firmware::Hybrid {
        want.push("21686148-6449-6E6F-744E-656564454649");
    }
    assert_eq!(types, want, "{json}");
    for p in parts {
        assert_eq!(p["start"].as_u64().unwrap() % 2048, 0, "{json}");
    }
    let root_offset = parts[0]["start"].as_u64().unwrap() * 512;
    let esp = &parts[2];
    let esp_offset = esp["start"].as_u64().unwrap() * 512;
    assert_eq!(root_offset, gpt.root().start_bytes());

    let (rc, fsck) = tool_merged("e2fsck", &["-fn", &format!("{img}?offset={root_offset}")]);
    assert_eq!(rc, 0, "e2fsck:\n{fsck}");

    // The ESP, copied out for fsck.fat and blkid.
    let esp_img = format!("{img}.esp");
    let mut data = vec![0u8; (esp["size"].as_u64().unwrap() * 512) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&File::open(img).unwrap(), &mut data, esp_offset)
        .unwrap();
    fs::write(&esp_img, data).unwrap();
    let (rc, out) = tool_merged("fsck.fat", &["-n", &esp_img]);
    assert_eq!(rc, 0, "fsck.fat:\n{out}");
    let (_, uuid) = tool_merged("blkid", &["-p", "-o", "value", "-s", "UUID", &esp_img]);
    assert_eq!(uuid.trim(), gpt.esp_serial());
    fs::remove_file(&esp_img).unwrap();
    let at = format!("{img}@@{esp_offset}");
    let (rc, stub) = tool_merged("mtype", &["-i", &at, "::/EFI/debian/grub.cfg"]);
    assert_eq!(rc, 0, "{stub}");
    assert!(
        stub.contains(&format!("search.fs_uuid {} root hd0,gpt1", done.root_uuid)),
        "{stub}"
    );

    // The guest: fstab mounts the ESP, /boot/efi exists, grub.cfg uses part_gpt.
    let fsx = format!("{img}?offset={root_offset}");
    let (_, fstab) = tool_merged("debugfs", &["-R", "cat /etc/fstab", &fsx]);
    assert!(
        fstab.contains(&format!(
            "UUID={} /boot/efi vfat umask=0077 0 1",
            gpt.esp_serial()
        )),
        "{fstab}"
    );
    let (_, st) = tool_merged("debugfs", &["-R", "stat /boot/efi", &fsx]);
    assert!(st.contains("Type: directory"), "{st}");
    let (_, cfg) = tool_merged("debugfs", &["-R", "cat /boot/grub/grub.cfg", &fsx]);
    assert!(cfg.contains("insmod part_gpt"), "{cfg}");
    let (_, ls) = tool_merged("debugfs", &["-R", "ls -l /boot/grub/x86_64-efi", &fsx]);
    assert!(ls.contains("core.efi"), "{ls}");
    for f in [
        "/boot/efi/EFI/BOOT/BOOTX64.EFI",
        "/boot/efi/EFI/debian/grub.cfg",
    ] {
        assert!(
            done.report.changes.iter().any(|c| c.path == f),
            "{f} not in the report"
        );
    }
    (root_offset, esp_offset)
}

/// Boot and wait for GRUB's "Loading Linux <version>" (our grub.cfg's default entry).
fn boot_to_grub_menu_entry(img: &str, firmware: qemu::Firmware) {
    let want = format!("Loading Linux {KERNEL}");
    let r = qemu::boot(Path::new(img), firmware, &[&want], GRUB_BOOT_LIMIT);
    assert!(
        r.line.is_some(),
        "{firmware:?}: no {want:?} line on the serial port after {:.0} s:\n{}",
        r.seconds,
        r.text
    );
}

/// A UEFI conversion as the outside tools judge it; returns its image.
fn uefi_conversion_checked(dir: &Path) -> String {
    let (done, img) = convert_with(Firmware::Uefi, "xen-ext4.img", "donor.img", dir);
    check(&done, &img, Firmware::Uefi);
    let text = done.plan.to_string();
    assert!(
        text.contains("GPT (UEFI)") && text.contains("EFI boot files"),
        "{text}"
    );
    let mbr = fs::read(&img).unwrap();
    assert!(
        mbr[..440].iter().all(|&b| b == 0),
        "no BIOS boot code for uefi"
    );
    img
}

#[test]
fn uefi_conversion_passes_outside_checks() {
    let dir = tempfile::tempdir().unwrap();
    uefi_conversion_checked(dir.path());
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn uefi_conversion_boots_grub_under_ovmf() {
    let dir = tempfile::tempdir().unwrap();
    let img = uefi_conversion_checked(dir.path());
    boot_to_grub_menu_entry(&img, qemu::Firmware::Ovmf);
}

/// A hybrid conversion as the outside tools judge it; returns its image.
fn hybrid_conversion_checked(dir: &Path) -> String {
    let (done, img) = convert_with(Firmware::Hybrid, "xen-ext3.img", "donor-dir", dir);
    check(&done, &img, Firmware::Hybrid);
    let mbr = fs::read(&img).unwrap();
    assert!(
        mbr[..440].windows(5).any(|w| w == b"GRUB "),
        "boot.img in LBA 0"
    );
    img
}

#[test]
fn hybrid_conversion_passes_outside_checks() {
    let dir = tempfile::tempdir().unwrap();
    hybrid_conversion_checked(dir.path());
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn hybrid_conversion_boots_grub_under_ovmf_and_seabios() {
    let dir = tempfile::tempdir().unwrap();
    let img = hybrid_conversion_checked(dir.path());
    boot_to_grub_menu_entry(&img, qemu::Firmware::Ovmf);
    boot_to_grub_menu_entry(&img, qemu::Firmware::SeaBios);
}
