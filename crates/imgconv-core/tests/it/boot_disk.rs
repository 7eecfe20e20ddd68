//! The BIOS boot code on a real disk image, judged by outside tools:
//! - `sfdisk` makes the partition table and checks we kept it;
//! - `mkfs.ext4 -d` makes partition 1 from a tree our guest-file writer filled;
//! - `grub-fstest` (GRUB's own filesystem code) lists and reads /boot/grub;
//! - QEMU (SeaBIOS, TCG, IDE disk) boots it: GRUB must run our grub.cfg, find the root
//!   by UUID and print a marker on the serial port. No kernel is involved.
//!
//! The QEMU test runs by default (scripts/setup installs qemu-system-x86) and fails with
//! a clear message when qemu is missing.

use crate::support;

use imgconv_core::boot::grub_bios::core_image::SECTOR;
use imgconv_core::boot::grub_bios::GPT_EXT_MODULES;
use imgconv_core::boot::{
    build_core_image, grub_cfg, install_bios_boot, prefix_for_partition, write_guest_boot_files,
    BootError, CoreImage, GrubConfig, GrubExtSupport, GrubPlatformFiles, PartitionMap,
    MSDOS_EXT_MODULES,
};
use imgconv_core::guestfs::MemFs;
use imgconv_core::report::Report;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::qemu::{self, Firmware, GRUB_BOOT_LIMIT};
use support::{command, memfs_to_dir, run_ok};

const UUID: &str = "2b1f6c3e-7d4a-4e59-9c1b-0a5e8f3d2c71";
const PART_START: u64 = 2048;

/// The two disk layouts the converter writes for BIOS.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// MBR, root = partition 1 at 2048, core.img in the gap at LBA 1.
    Msdos,
    /// GPT, BIOS boot partition 1 at 2048..4096 holding core.img, root = partition 2.
    Gpt,
}

impl Layout {
    fn root_start(self) -> u64 {
        match self {
            Layout::Msdos => PART_START,
            Layout::Gpt => 4096,
        }
    }
    fn core_lba(self) -> u64 {
        match self {
            Layout::Msdos => 1,
            Layout::Gpt => PART_START,
        }
    }
    /// End of the area core.img may use.
    fn gap_end(self) -> u64 {
        self.root_start()
    }
    fn gpt(self) -> bool {
        matches!(self, Layout::Gpt)
    }
    fn root_number(self) -> u32 {
        if self.gpt() {
            2
        } else {
            1
        }
    }
    /// GRUB's name of the root partition on the first disk.
    fn grub_part(self) -> String {
        let map = if self.gpt() { "gpt" } else { "msdos" };
        format!("{map}{}", self.root_number())
    }
    fn sfdisk_script(self) -> String {
        match self {
            Layout::Msdos => format!(
                "label: dos\nlabel-id: 0x1234abcd\nstart={PART_START}, type=83, bootable\n"
            ),
            Layout::Gpt => format!(
                "label: gpt\nstart={PART_START}, size=2048, type=21686148-6449-6E6F-744E-656564454649\n\
                 start=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
            ),
        }
    }
}
const DISK_MIB: u64 = 48;
const MARKER: &str = "IMGCONV-GRUB-OK";

/// A disk partitioned by sfdisk from `script`, no filesystem yet.
fn partitioned_disk(dir: &Path, script: &str) -> PathBuf {
    let img = dir.join("disk.img");
    File::create(&img).unwrap().set_len(DISK_MIB << 20).unwrap();
    let mut child = command("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    write!(child.stdin.take().unwrap(), "{script}").unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    img
}

fn sfdisk_dump(img: &Path) -> String {
    run_ok(command("sfdisk").arg("--dump").arg(img))
}

struct Built {
    _dir: tempfile::TempDir,
    disk: PathBuf,
    files: GrubPlatformFiles,
    core: CoreImage,
    cfg_text: String,
    report: Report,
}

/// The whole thing: guest files written by our code into a MemFs, grub.cfg extended with
/// a marker + halt, partition 1 made from that tree, boot code installed by our code.
fn build_bootable_disk(layout: Layout) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let files = GrubPlatformFiles::host_i386_pc()
        .expect("/usr/lib/grub/i386-pc is needed: install grub-pc-bin (scripts/setup)");
    let modules = if layout.gpt() {
        GPT_EXT_MODULES
    } else {
        MSDOS_EXT_MODULES
    };
    let prefix = prefix_for_partition(layout.gpt(), layout.root_number());
    let core = build_core_image(&files, &prefix, modules).unwrap();

    let mut guest = MemFs::new().with_file("/etc/hostname", "bootcheck\n");
    let mut cfg = GrubConfig::new(UUID, "6.1.0-test-amd64");
    cfg.title = "imgconv boot test".into();
    if layout.gpt() {
        cfg.partition_map = PartitionMap::Gpt;
    }
    let mut report = Report::default();
    write_guest_boot_files(&mut guest, &files, &core, &cfg, &mut report).unwrap();

    // Our grub.cfg as rendered, then a marker and halt: GRUB runs the top-level commands
    // (serial setup, insmod, search by UUID) and registers both menu entries before it
    // reaches the marker, so a syntax error or a failed search shows in the log.
    let rendered = grub_cfg::render(&cfg).unwrap();
    assert_eq!(
        guest.text("/boot/grub/grub.cfg").as_deref(),
        Some(rendered.as_str())
    );
    let cfg_text = format!("{rendered}\necho \"{MARKER} root=$root prefix=$prefix\"\nhalt\n");
    let tree = dir.path().join("tree");
    memfs_to_dir(&mut guest, &tree);
    fs::write(tree.join("boot/grub/grub.cfg"), &cfg_text).unwrap();

    let disk = partitioned_disk(dir.path(), &layout.sfdisk_script());
    let part = dir.path().join("p1.img");
    // Up to the backup GPT (33 sectors at the end) or the disk's end.
    let part_bytes = ((DISK_MIB << 20) / SECTOR as u64 - layout.root_start() - 40) * SECTOR as u64;
    File::create(&part).unwrap().set_len(part_bytes).unwrap();
    // Debian's default ext4 features (extent, 64bit, flex_bg, metadata_csum, …).
    run_ok(
        command("mkfs.ext4")
            .args(["-q", "-F", "-U", UUID, "-L", "root", "-d"])
            .arg(&tree)
            .arg(&part),
    );

    // Our feature check agrees GRUB can read it (what the pipeline does before writing).
    let sb = fs::read(&part).unwrap()[1024..2048].to_vec();
    let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap());
    let ro_compat = u32::from_le_bytes(sb[0x64..0x68].try_into().unwrap());
    GrubExtSupport::detect(&files)
        .check(incompat, ro_compat)
        .unwrap();

    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    out.write_all_at(
        &fs::read(&part).unwrap(),
        layout.root_start() * SECTOR as u64,
    )
    .unwrap();
    let table_before = sfdisk_dump(&disk);
    install_bios_boot(&out, &files, &core, layout.core_lba(), layout.gap_end()).unwrap();
    drop(out);
    assert_eq!(
        sfdisk_dump(&disk),
        table_before,
        "partition table and disk id kept"
    );
    Built {
        _dir: dir,
        disk,
        files,
        core,
        cfg_text,
        report,
    }
}

#[test]
fn boot_sector_and_core_img_bytes_on_disk() {
    let b = build_bootable_disk(Layout::Msdos);
    let disk = fs::read(&b.disk).unwrap();
    let boot_img = b.files.get("boot.img").unwrap();
    let mbr = &disk[..SECTOR];
    assert_eq!(&mbr[..3], &boot_img[..3], "jump");
    assert_eq!(&mbr[0x5A..0x5C], &boot_img[0x5A..0x5C]);
    assert_eq!(
        u64::from_le_bytes(mbr[0x5C..0x64].try_into().unwrap()),
        1,
        "kernel sector"
    );
    assert_eq!(mbr[0x64], 0xFF, "boot drive");
    assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90], "drive check patched");
    assert_eq!(&mbr[0x68..0x1B8], &boot_img[0x68..0x1B8], "boot code");
    assert_eq!(
        &mbr[0x1B8..0x1BC],
        &0x1234abcdu32.to_le_bytes(),
        "disk signature kept"
    );
    assert_eq!(&mbr[0x1FE..], &[0x55, 0xAA]);
    let core = b.core.for_lba(1).unwrap();
    assert_eq!(&disk[SECTOR..SECTOR + core.len()], &core[..]);
    let bl = &disk[SECTOR + 0x1F4..SECTOR + 0x200];
    assert_eq!(
        u64::from_le_bytes(bl[..8].try_into().unwrap()),
        2,
        "blocklist start"
    );
    assert_eq!(
        u16::from_le_bytes([bl[8], bl[9]]) as u64,
        b.core.sectors() - 1,
        "blocklist len"
    );
    assert_eq!(
        u16::from_le_bytes([bl[10], bl[11]]),
        0x820,
        "blocklist segment"
    );
    // Nothing written between core.img and partition 1.
    let core_end = SECTOR * (1 + b.core.sectors() as usize);
    assert!(disk[core_end..PART_START as usize * SECTOR]
        .iter()
        .all(|&x| x == 0));
    assert_eq!(b.report.changes.last().unwrap().path, "/boot/grub/grub.cfg");
}

/// GRUB's own filesystem code reads the partition: lists /boot/grub and reads grub.cfg
/// and a module back byte for byte. (grub-fstest calls the image `loop0`, and prints
/// nothing for a device it does not know, hence the checks on the listing itself.)
#[test]
fn grub_fstest_reads_boot_grub() {
    let b = build_bootable_disk(Layout::Msdos);
    let ls = run_ok(
        command("grub-fstest")
            .arg(&b.disk)
            .args(["ls", "(loop0,msdos1)/boot/grub"]),
    );
    for want in ["grub.cfg", "grubenv", "i386-pc/"] {
        assert!(
            ls.split_whitespace().any(|w| w == want),
            "{want} not in {ls:?}"
        );
    }
    let ls_mods = run_ok(
        command("grub-fstest")
            .arg(&b.disk)
            .args(["ls", "(loop0,msdos1)/boot/grub/i386-pc"]),
    );
    for want in [
        "normal.mod",
        "ext2.mod",
        "command.lst",
        "core.img",
        "boot.img",
    ] {
        assert!(
            ls_mods.split_whitespace().any(|w| w == want),
            "{want} not in i386-pc"
        );
    }
    let cat = run_ok(
        command("grub-fstest")
            .arg(&b.disk)
            .args(["cat", "(loop0,msdos1)/boot/grub/grub.cfg"]),
    );
    assert_eq!(cat, b.cfg_text);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("normal.mod");
    run_ok(
        command("grub-fstest")
            .arg(&b.disk)
            .args(["cp", "(loop0,msdos1)/boot/grub/i386-pc/normal.mod"])
            .arg(&copy),
    );
    assert_eq!(fs::read(&copy).unwrap(), b.files.get("normal.mod").unwrap());
}

/// The real boot: SeaBIOS → our boot sector → our core.img → normal.mod from the ext4
/// partition → our grub.cfg → marker on the serial port.
fn boot_to_marker(layout: Layout) {
    let b = build_bootable_disk(layout);
    let r = qemu::boot(&b.disk, Firmware::SeaBios, &[MARKER], GRUB_BOOT_LIMIT);
    let text = &r.text;
    // The whole marker line, as GRUB finished writing it (the harness waits for its end).
    let line = r.line.as_deref().unwrap_or_else(|| {
        panic!(
            "no {MARKER} line on the serial port after {:.0} s (qemu exited: {:?}); serial log:\n{text}",
            r.seconds, r.exited
        )
    });
    let part = layout.grub_part();
    assert!(
        line.contains(&format!("root=hd0,{part}"))
            && line.contains(&format!("prefix=(hd0,{part})/boot/grub")),
        "search by UUID or prefix wrong: {line:?}"
    );
    assert!(!text.contains("error:"), "GRUB reported an error:\n{text}");
}

#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_seabios_boots_our_grub_to_the_marker_mbr() {
    boot_to_marker(Layout::Msdos);
}

/// GPT with a BIOS boot partition: core.img at its first LBA (2048), root on partition 2,
/// prefix `(,gpt2)/boot/grub`, part_gpt embedded.
#[test]
#[ignore = "slow tier: boots QEMU; scripts/test runs it with --ignored"]
fn qemu_seabios_boots_our_grub_to_the_marker_gpt_bios_boot_partition() {
    boot_to_marker(Layout::Gpt);
}

/// Refusals: core.img larger than the gap, and a partition inside the gap; the image is
/// untouched in both cases.
#[test]
fn install_refuses_when_core_does_not_fit() {
    let files = GrubPlatformFiles::host_i386_pc().expect("grub-pc-bin (scripts/setup)");
    let core = build_core_image(&files, "(,msdos1)/boot/grub", MSDOS_EXT_MODULES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = partitioned_disk(
        dir.path(),
        "label: dos\nlabel-id: 0x1234abcd\nstart=34, type=83\n",
    );
    let before = fs::read(&disk).unwrap();
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    match install_bios_boot(&out, &files, &core, 1, 34) {
        Err(BootError::CoreDoesNotFit {
            gap_end_lba: 34, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The caller claims a bigger gap than the table has: our own check catches it.
    match install_bios_boot(&out, &files, &core, 1, 2048) {
        Err(
            e @ BootError::PartitionInGap {
                partition: 1,
                start: 34,
                ..
            },
        ) => {
            assert!(e.to_string().contains("partition 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // No partition table at all.
    let blank = dir.path().join("blank.img");
    File::create(&blank).unwrap().set_len(4 << 20).unwrap();
    let out2 = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&blank)
        .unwrap();
    assert!(matches!(
        install_bios_boot(&out2, &files, &core, 1, 2048),
        Err(BootError::NoPartitionTable)
    ));
    drop(out);
    assert!(
        fs::read(&disk).unwrap() == before,
        "refused install wrote nothing"
    );
    assert!(fs::read(&blank).unwrap().iter().all(|&x| x == 0));
}
