//! UEFI and hybrid disks made by our code, judged by outside tools:
//! - `sfdisk -J` reads the GPT (type GUIDs, numbers, 1 MiB alignment, disk GUID);
//! - `fsck.fat -n` checks the ESP, `blkid` reads its label and serial, `mdir`/`mcopy`
//!   (mtools) list and read its files;
//! - QEMU boots it without a kernel: OVMF (q35) → shim → signed GRUB → our stub on the ESP
//!   → `/boot/grub/grub.cfg` on the ext4 root found by UUID → a marker on the serial port;
//!   the hybrid disk also under SeaBIOS (boot.img → core.img in the BIOS boot partition);
//!   an unsigned GRUB built from the host's x86_64-efi modules under OVMF; and with Secure
//!   Boot enforced (Microsoft keys) the signed chain boots while the unsigned one is refused.
//!
//! Needs the host packages shim-signed and grub-efi-amd64-signed (scripts/setup), ovmf,
//! qemu-system-x86, dosfstools, mtools, fdisk, grub-pc-bin, grub-efi-amd64-bin.

use crate::support;

use imgconv_core::boot::uefi::efi_files::{self, from_donor_esp, HOST_X86_64_EFI_DIR};
use imgconv_core::boot::uefi::pe::grub_efi_image_info;
use imgconv_core::boot::uefi::{
    find_efi_boot_files, install_esp, install_hybrid_bios_boot, plan_gpt, write_gpt,
    write_guest_efi_files, EfiBootFiles, EfiSearch, EspSummary, GptFirmware, GptPlan,
    GptPlanOptions, GptRole, PLATFORM_X86_64_EFI,
};
use imgconv_core::boot::{
    build_core_image, grub_cfg, prefix_for_partition, write_guest_boot_files, GrubConfig,
    GrubPlatformFiles, PartitionMap, GPT_EXT_MODULES,
};
use imgconv_core::guestfs::MemFs;
use imgconv_core::report::Report;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::qemu::{self, BootLog, Firmware, GRUB_BOOT_LIMIT};
use support::{command, memfs_to_dir, run_ok};

const UUID: &str = "5c0d7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6";
const MARKER: &str = "IMGCONV-UEFI-OK";
const MIB: u64 = 1 << 20;
const SIGNED_GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

fn need_signed_packages() {
    assert!(
        Path::new(SIGNED_GRUB).exists() && Path::new("/usr/lib/shim/shimx64.efi.signed").exists(),
        "install grub-efi-amd64-signed and shim-signed (scripts/setup)"
    );
}

struct Built {
    dir: tempfile::TempDir,
    disk: PathBuf,
    plan: GptPlan,
    efi: EfiBootFiles,
    esp: EspSummary,
    report: Report,
}

impl Built {
    /// The ESP's bytes copied out to a file (what `dd skip= count=` would do).
    fn esp_image(&self) -> PathBuf {
        let p = self.dir.path().join("esp.img");
        let e = self.plan.esp();
        let mut buf = vec![0u8; e.len_bytes() as usize];
        File::open(&self.disk)
            .unwrap()
            .read_exact_at(&mut buf, e.start_bytes())
            .unwrap();
        fs::write(&p, buf).unwrap();
        p
    }

    /// mtools' image@@offset syntax for the ESP.
    fn mtools_image(&self) -> String {
        format!("{}@@{}", self.disk.display(), self.plan.esp().start_bytes())
    }
}

/// Which EFI binaries to install.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Chain {
    /// shim + signed GRUB from the host's packages.
    Signed,
    /// GRUB built unsigned from the host's x86_64-efi modules by grub-mkimage.
    Unsigned,
}

/// The whole thing: GPT and ESP by our code, the root ext4 made by mkfs.ext4 -d from the
/// tree our guest-file writers filled, grub.cfg extended with a marker and halt.
fn build_disk(firmware: GptFirmware, chain: Chain) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GptPlanOptions::new(firmware, 64 * MIB, 8 * MIB);
    opts.esp_volume_id = Some(0x1A2B_3C4D);
    let plan = plan_gpt(&opts).unwrap();
    let disk = dir.path().join("disk.img");
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&disk)
        .unwrap();
    out.set_len(plan.disk_bytes).unwrap();
    write_gpt(&out, &plan).unwrap();

    let efi_modules =
        GrubPlatformFiles::from_dir(Path::new(HOST_X86_64_EFI_DIR), PLATFORM_X86_64_EFI)
            .expect("grub-efi-amd64-bin (scripts/setup)");
    let efi = match chain {
        Chain::Signed => {
            need_signed_packages();
            find_efi_boot_files(&mut EfiSearch {
                host: Some(Path::new("/")),
                ..Default::default()
            })
            .unwrap()
        }
        Chain::Unsigned => efi_files::build_unsigned(&efi_modules, HOST_X86_64_EFI_DIR).unwrap(),
    };

    let mut guest = MemFs::new().with_file("/etc/hostname", "uefitest\n");
    let mut cfg = GrubConfig::new(UUID, "6.1.0-test-amd64");
    cfg.title = "imgconv UEFI test".into();
    cfg.partition_map = PartitionMap::Gpt;
    let mut report = Report::default();
    write_guest_efi_files(&mut guest, &efi, Some(&efi_modules), &cfg, &mut report).unwrap();
    let bios = (firmware == GptFirmware::Hybrid).then(|| {
        let files = GrubPlatformFiles::host_i386_pc().expect("grub-pc-bin (scripts/setup)");
        let prefix = prefix_for_partition(true, plan.root().number);
        let core = build_core_image(&files, &prefix, GPT_EXT_MODULES).unwrap();
        write_guest_boot_files(&mut guest, &files, &core, &cfg, &mut report).unwrap();
        (files, core)
    });

    let rendered = grub_cfg::render(&cfg).unwrap();
    assert_eq!(
        guest.text("/boot/grub/grub.cfg").as_deref(),
        Some(rendered.as_str())
    );
    let tree = dir.path().join("tree");
    memfs_to_dir(&mut guest, &tree);
    fs::write(
        tree.join("boot/grub/grub.cfg"),
        format!("{rendered}\necho \"{MARKER} root=$root prefix=$prefix\"\nhalt\n"),
    )
    .unwrap();
    let root_img = dir.path().join("root.img");
    File::create(&root_img)
        .unwrap()
        .set_len(plan.root().len_bytes())
        .unwrap();
    run_ok(
        command("mkfs.ext4")
            .args(["-q", "-F", "-U", UUID, "-L", "root", "-d"])
            .arg(&tree)
            .arg(&root_img),
    );
    out.write_all_at(&fs::read(&root_img).unwrap(), plan.root().start_bytes())
        .unwrap();

    let esp = install_esp(&out, &plan, &efi, UUID, &mut report).unwrap();
    if let Some((files, core)) = &bios {
        install_hybrid_bios_boot(&out, &plan, files, core).unwrap();
    }
    drop(out);
    Built {
        dir,
        disk,
        plan,
        efi,
        esp,
        report,
    }
}

#[derive(Debug, serde::Deserialize)]
struct SfdiskJson {
    partitiontable: SfdiskTable,
}
#[derive(Debug, serde::Deserialize)]
struct SfdiskTable {
    label: String,
    id: String,
    firstlba: u64,
    lastlba: u64,
    partitions: Vec<SfdiskPart>,
}
#[derive(Debug, serde::Deserialize)]
struct SfdiskPart {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    uuid: String,
    name: Option<String>,
}

fn check_sfdisk(b: &Built) {
    let out = command("sfdisk").arg("-J").arg(&b.disk).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: SfdiskJson = serde_json::from_slice(&out.stdout).unwrap();
    let t = j.partitiontable;
    assert_eq!(t.label, "gpt");
    assert_eq!(t.id.to_lowercase(), b.plan.disk_guid.to_string());
    assert_eq!(t.firstlba, 34);
    assert_eq!(t.lastlba, b.plan.disk_bytes / 512 - 34);
    assert_eq!(t.partitions.len(), b.plan.partitions.len());
    for want in &b.plan.partitions {
        let node = format!("{}{}", b.disk.display(), want.number);
        let got = t
            .partitions
            .iter()
            .find(|p| p.node == node)
            .unwrap_or_else(|| panic!("no {node} in {:?}", t.partitions));
        assert_eq!(got.kind, want.role.type_guid().to_string().to_uppercase());
        assert_eq!(got.uuid.to_lowercase(), want.guid.to_string());
        assert_eq!((got.start, got.size), (want.start_lba, want.sectors));
        assert_eq!(got.start % 2048, 0, "{node} not 1 MiB aligned");
        assert_eq!(got.size % 2048, 0, "{node} size not whole MiB");
        assert_eq!(got.name.as_deref(), Some(want.role.name()));
    }
    // The type GUIDs by role, spelled out as sfdisk prints them.
    let kind_of = |r: GptRole| {
        let n = b
            .plan
            .partitions
            .iter()
            .find(|p| p.role == r)
            .unwrap()
            .number;
        let node = format!("{}{}", b.disk.display(), n);
        t.partitions
            .iter()
            .find(|p| p.node == node)
            .unwrap()
            .kind
            .clone()
    };
    assert_eq!(
        kind_of(GptRole::Esp),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(
        kind_of(GptRole::Root),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    );
    assert_eq!(
        kind_of(GptRole::Swap),
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
    );
    if b.plan.firmware == GptFirmware::Hybrid {
        assert_eq!(
            kind_of(GptRole::BiosBoot),
            "21686148-6449-6E6F-744E-656564454649"
        );
    }
    // sfdisk --verify finds nothing wrong beyond the documented disk-order note.
    let v = command("sfdisk")
        .arg("--verify")
        .arg(&b.disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "sfdisk --verify: {text}");
}

fn check_esp(b: &Built) {
    let esp = b.esp_image();
    let fsck = command("fsck.fat").arg("-n").arg(&esp).output().unwrap();
    let text =
        String::from_utf8_lossy(&fsck.stdout).to_string() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(fsck.status.success(), "fsck.fat -n: {text}");
    assert!(!text.to_lowercase().contains("dirty"), "{text}");
    let blkid = run_ok(command("blkid").args(["-p", "-o", "export"]).arg(&esp));
    for want in ["TYPE=vfat", "LABEL=EFI", "UUID=1A2B-3C4D", "VERSION=FAT32"] {
        assert!(blkid.lines().any(|l| l == want), "{want} not in {blkid}");
    }
    assert_eq!(b.esp.serial, "1A2B-3C4D");
    assert_eq!(b.esp.fat_type, "FAT32");

    // mtools lists and reads back exactly what we wrote.
    let img = b.mtools_image();
    let listing = run_ok(command("mdir").args(["-b", "-i", &img, "::/EFI/BOOT"]));
    for f in &b.esp.files {
        let full = format!("::/{}", f.path);
        let listed = run_ok(command("mdir").args(["-b", "-i", &img]).arg(&full));
        assert!(
            listed.trim().eq_ignore_ascii_case(&full),
            "{full}: {listed}"
        );
        let copy = b.dir.path().join("copy");
        let _ = fs::remove_file(&copy);
        run_ok(
            command("mcopy")
                .args(["-n", "-i", &img])
                .arg(&full)
                .arg(&copy),
        );
        assert_eq!(fs::metadata(&copy).unwrap().len(), f.bytes, "{full}");
    }
    assert!(listing.to_uppercase().contains("BOOTX64.EFI"), "{listing}");
    let stub = run_ok(command("mtype").args(["-i", &img, "::/EFI/BOOT/grub.cfg"]));
    assert_eq!(
        stub.replace("\r\n", "\n"),
        format!(
            "search.fs_uuid {UUID} root hd0,gpt1\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
        )
    );
    let copy = b.dir.path().join("bootx64");
    run_ok(
        command("mcopy")
            .args(["-n", "-i", &img, "::/EFI/BOOT/BOOTX64.EFI"])
            .arg(&copy),
    );
    let expected = b.efi.shim.as_ref().unwrap_or(&b.efi.grub);
    assert!(fs::read(&copy).unwrap() == *expected, "BOOTX64.EFI content");
    // Every ESP file is in the report, under /boot/efi.
    for f in &b.esp.files {
        let p = format!("/boot/efi/{}", f.path);
        assert!(
            b.report.changes.iter().any(|c| c.path == p),
            "{p} not reported"
        );
    }
}

#[test]
fn host_signed_grub_prefix_is_efi_debian() {
    need_signed_packages();
    let data = fs::read(SIGNED_GRUB).unwrap();
    let info = grub_efi_image_info(&data).unwrap().expect("a GRUB image");
    assert_eq!(info.prefix.as_deref(), Some("/EFI/debian"));
    assert_eq!(info.esp_directory().as_deref(), Some("debian"));
    assert!(info.memdisk && info.modules > 50, "{info:?}");
    assert_eq!(info.config.as_deref(), Some("normal (memdisk)/grub.cfg\n"));
    // shim is a PE image but not GRUB.
    let shim = fs::read("/usr/lib/shim/shimx64.efi.signed").unwrap();
    assert_eq!(grub_efi_image_info(&shim).unwrap(), None);
}

#[test]
fn uefi_disk_gpt_and_esp_pass_outside_checks() {
    let b = build_disk(GptFirmware::Uefi, Chain::Signed);
    assert!(b.plan.bios_boot().is_none());
    check_sfdisk(&b);
    check_esp(&b);
    assert!(b.esp.signed);
    assert_eq!(b.esp.distro_dir.as_deref(), Some("debian"));
    let paths: Vec<&str> = b.esp.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grubx64.efi",
            "EFI/BOOT/mmx64.efi",
            "EFI/BOOT/grub.cfg",
            "EFI/debian/shimx64.efi",
            "EFI/debian/grubx64.efi",
            "EFI/debian/mmx64.efi",
            "EFI/debian/BOOTX64.CSV",
            "EFI/debian/grub.cfg",
        ]
    );
    // The package's BOOTX64.CSV is used as is.
    let img = b.mtools_image();
    let copy = b.dir.path().join("csv");
    run_ok(
        command("mcopy")
            .args(["-n", "-i", &img, "::/EFI/debian/BOOTX64.CSV"])
            .arg(&copy),
    );
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read("/usr/lib/shim/BOOTX64.CSV").unwrap()
    );
    // Nothing outside the partitions was touched besides the GPT: sector 0 has no boot code.
    let mut s0 = [0u8; 512];
    File::open(&b.disk)
        .unwrap()
        .read_exact_at(&mut s0, 0)
        .unwrap();
    assert!(
        s0[..440].iter().all(|&x| x == 0),
        "uefi disk has no BIOS boot code"
    );
}

#[test]
fn hybrid_disk_gpt_and_esp_pass_outside_checks() {
    let b = build_disk(GptFirmware::Hybrid, Chain::Signed);
    check_sfdisk(&b);
    check_esp(&b);
    // boot.img in sector 0 pointing at the BIOS boot partition, protective entry kept.
    let mut s0 = [0u8; 512];
    File::open(&b.disk)
        .unwrap()
        .read_exact_at(&mut s0, 0)
        .unwrap();
    let bios = b.plan.bios_boot().unwrap();
    assert_eq!(
        u64::from_le_bytes(s0[0x5C..0x64].try_into().unwrap()),
        bios.start_lba
    );
    assert_eq!(s0[0x1BE + 4], 0xEE, "protective MBR entry kept");
    assert_eq!(&s0[510..], &[0x55, 0xAA]);
}

/// The donor side: the ESP we wrote, read back as a donor's ESP, gives the same files;
/// and an ESP written by mkfs.fat + mcopy (not our code) is read the same way.
#[test]
fn donor_esp_is_read_back() {
    let b = build_disk(GptFirmware::Uefi, Chain::Signed);
    let found = from_donor_esp(&b.disk).unwrap().expect("an ESP with GRUB");
    assert_eq!(found.grub, b.efi.grub);
    assert_eq!(found.shim, b.efi.shim);
    assert_eq!(found.mok_manager, b.efi.mok_manager);
    assert!(
        found.origin.to_string().contains("EFI/debian/"),
        "{}",
        found.origin
    );
    assert_eq!(found.distro_dir().as_deref(), Some("debian"));

    // An outside-made donor: sfdisk GPT, mkfs.fat ESP, files put by mcopy (BOOT only).
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("donor.img");
    File::create(&img).unwrap().set_len(80 * MIB).unwrap();
    let mut child = command("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "label: gpt\nstart=2048, size=73728, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let offset = 2048 * 512;
    run_ok(
        command("mkfs.fat")
            .args(["-F", "32", "--offset", "2048", "-n", "EFI"])
            .arg(&img)
            .arg("36864"),
    ); // KiB blocks: 36 MiB
    let at = format!("{}@@{offset}", img.display());
    run_ok(command("mmd").args(["-i", &at, "::/EFI", "::/EFI/BOOT"]));
    run_ok(command("mcopy").args([
        "-i",
        &at,
        "/usr/lib/shim/shimx64.efi.signed",
        "::/EFI/BOOT/BOOTX64.EFI",
    ]));
    run_ok(command("mcopy").args(["-i", &at, SIGNED_GRUB, "::/EFI/BOOT/grubx64.efi"]));
    let before = fs::read(&img).unwrap();
    let found = from_donor_esp(&img)
        .unwrap()
        .expect("shim + GRUB in EFI/BOOT");
    assert_eq!(found.grub, fs::read(SIGNED_GRUB).unwrap());
    assert_eq!(
        found.shim.unwrap(),
        fs::read("/usr/lib/shim/shimx64.efi.signed").unwrap()
    );
    assert!(
        fs::read(&img).unwrap() == before,
        "the donor was not modified"
    );
}

/// Boot with `fw` until the marker or, under Secure Boot, the firmware refusing the boot
/// loader ("Access Denied").
fn boot(b: &Built, fw: Firmware) -> BootLog {
    qemu::boot(&b.disk, fw, &[MARKER, "Access Denied"], GRUB_BOOT_LIMIT)
}

/// Boot with `fw` and check that GRUB ran our grub.cfg from the root found by UUID on
/// partition 1.
fn boot_to_marker(b: &Built, fw: Firmware) {
    let r = boot(b, fw);
    let text = &r.text;
    let line = r.line_with(MARKER).unwrap_or_else(|| {
        panic!(
            "{:?} {fw:?}: no {MARKER} line after {:.0} s (qemu exited: {:?}); serial log:\n{text}",
            b.plan.firmware, r.seconds, r.exited
        )
    });
    assert!(
        line.contains("root=hd0,gpt1") && line.contains("prefix=(hd0,gpt1)/boot/grub"),
        "search by UUID or prefix wrong: {line:?}"
    );
    assert!(!text.contains("error:"), "GRUB reported an error:\n{text}");
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_ovmf_boots_the_uefi_disk_to_the_marker() {
    let b = build_disk(GptFirmware::Uefi, Chain::Signed);
    boot_to_marker(&b, Firmware::Ovmf);
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_ovmf_boots_the_hybrid_disk_to_the_marker() {
    let b = build_disk(GptFirmware::Hybrid, Chain::Signed);
    boot_to_marker(&b, Firmware::Ovmf);
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_seabios_boots_the_hybrid_disk_to_the_marker() {
    let b = build_disk(GptFirmware::Hybrid, Chain::Signed);
    boot_to_marker(&b, Firmware::SeaBios);
}

/// The unsigned fallback: GRUB built by grub-mkimage from the host's x86_64-efi modules,
/// alone in EFI/BOOT (no shim), boots with OVMF (Secure Boot off).
#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_ovmf_boots_the_unsigned_fallback_to_the_marker() {
    let b = build_disk(GptFirmware::Uefi, Chain::Unsigned);
    assert!(!b.esp.signed && b.efi.shim.is_none());
    assert_eq!(b.esp.distro_dir, None);
    let paths: Vec<&str> = b.esp.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grub.cfg"]);
    check_esp(&b);
    boot_to_marker(&b, Firmware::Ovmf);
}

/// Donors through the donor module: a disk image donor gives its ESP; a directory donor
/// its signed packages (symlinks stay inside the donor); a donor with only x86_64-efi
/// modules gives an unsigned GRUB built from them. The host is never consulted here.
#[test]
fn donors_supply_the_efi_files() {
    use imgconv_core::convert::efi_search;
    use imgconv_core::donor::Donor;
    // A disk image donor (our own UEFI disk: ext4 root + ESP).
    let b = build_disk(GptFirmware::Uefi, Chain::Signed);
    let donor = Donor::open(&b.disk).unwrap();
    let found = find_efi_boot_files(&mut efi_search(Some(&donor), None, None)).unwrap();
    let esp_number = b.plan.esp().number;
    assert!(
        found
            .origin
            .to_string()
            .contains(&format!("partition {esp_number} (ESP)")),
        "{}",
        found.origin
    );
    assert_eq!(found.grub, b.efi.grub);

    // A directory donor with the Debian package files; mmx64 is an absolute symlink to a
    // path the HOST has: it must resolve inside the donor (where there is nothing).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let put = |p: &str, from: &str| {
        let dst = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(from, dst).unwrap();
    };
    put(
        "/usr/lib/shim/shimx64.efi.signed",
        "/usr/lib/shim/shimx64.efi.signed",
    );
    put(efi_files::SIGNED_GRUB_PATHS[0], SIGNED_GRUB);
    std::os::unix::fs::symlink(
        "/usr/lib/shim/mmx64.efi",
        root.join("usr/lib/shim/mmx64.efi.signed"),
    )
    .unwrap();
    assert!(Path::new("/usr/lib/shim/mmx64.efi").exists());
    let donor = Donor::open(root).unwrap();
    let found = find_efi_boot_files(&mut efi_search(Some(&donor), None, None)).unwrap();
    assert!(found.signed && found.shim.is_some());
    assert_eq!(
        found.mok_manager, None,
        "the dangling in-donor symlink gives nothing"
    );
    assert!(
        found.origin.to_string().contains("the donor"),
        "{}",
        found.origin
    );

    // Only modules: the unsigned build from the donor's x86_64-efi directory.
    let dir = tempfile::tempdir().unwrap();
    let mods = dir.path().join("usr/lib/grub/x86_64-efi");
    fs::create_dir_all(&mods).unwrap();
    for e in fs::read_dir(HOST_X86_64_EFI_DIR).unwrap() {
        let e = e.unwrap();
        if GrubPlatformFiles::is_wanted(&e.file_name().to_string_lossy()) {
            fs::copy(e.path(), mods.join(e.file_name())).unwrap();
        }
    }
    let donor = Donor::open(dir.path()).unwrap();
    let efi_modules = donor.grub_files(PLATFORM_X86_64_EFI).unwrap().unwrap();
    let found =
        find_efi_boot_files(&mut efi_search(Some(&donor), Some(&efi_modules), None)).unwrap();
    assert!(!found.signed && found.shim.is_none());
    assert_eq!(found.grub_info.prefix.as_deref(), Some("/EFI/BOOT"));
    assert!(
        found.origin.to_string().contains("donor's"),
        "{}",
        found.origin
    );

    // Nothing at all: the error lists what was tried.
    let empty = tempfile::tempdir().unwrap();
    let donor = Donor::open(empty.path()).unwrap();
    let err = find_efi_boot_files(&mut efi_search(Some(&donor), None, None)).unwrap_err();
    assert!(err.to_string().contains("grubx64.efi.signed"), "{err}");
}

/// Secure Boot enforced, Microsoft keys enrolled: the signed chain (Microsoft-signed shim →
/// Debian-signed GRUB, verified by shim) still reaches our grub.cfg; the unsigned fallback
/// is refused by the firmware, which shows the enforcement is real.
#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_ovmf_secure_boot_runs_the_signed_chain_and_refuses_the_unsigned_one() {
    let signed = build_disk(GptFirmware::Uefi, Chain::Signed);
    boot_to_marker(&signed, Firmware::OvmfSecureBoot);
    let unsigned = build_disk(GptFirmware::Uefi, Chain::Unsigned);
    let r = boot(&unsigned, Firmware::OvmfSecureBoot);
    assert!(
        !r.text.contains(MARKER),
        "an unsigned GRUB ran under Secure Boot:\n{}",
        r.text
    );
    assert!(
        r.text.contains("Access Denied"),
        "the firmware did not report refusing the unsigned loader:\n{}",
        r.text
    );
}
