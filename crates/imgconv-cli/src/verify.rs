//! `imgconv verify OUT`: is this a disk imgconv would have written, and does it boot?
//!
//! Static checks, each reported whether or not the others pass: the partition table
//! (MBR: p1 Linux 0x83 active, optional p2 swap 0x82; GPT (`--firmware uefi|hybrid`): the
//! root found by its type GUID, swap, ESP and BIOS boot partitions by theirs; all within
//! the disk, no overlap), `e2fsck -fn` on the root, the swap signature, the GRUB files and
//! a kernel with its initrd on the root (read with the library's guarded ext reader), on
//! a GPT disk with an ESP `fsck.fat -n` on it and an EFI loader in it, and GRUB boot code
//! in LBA 0 pointing at a core image (before p1 on MBR, in the BIOS boot partition on a
//! hybrid disk; a UEFI-only disk has none). `--boot` adds the QEMU smoke test, with OVMF
//! for a GPT disk without a BIOS boot partition.

use crate::cli::VerifyArgs;
use crate::errors::{Class, CliError};
use crate::fsck::{self, FsLocation};
use crate::progress::{CliProgress, Unit};
use crate::qemu::{self, BootResult};
use crate::tools;
use imgconv_core::blockio::Region;
use imgconv_core::ext::read::ExtReader;
use imgconv_core::guestfs::NodeKind;
use imgconv_core::layout::gpt::{TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_SWAP};
use imgconv_core::partition::{
    read_table, PartitionEntry, PartitionTable, PartitionType, TableKind,
};
use imgconv_core::tool::ToolCommand;
use std::path::PathBuf;
use std::time::Duration;

/// The discoverable-partitions "root x86-64" type GUID, also accepted as the root.
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// Largest ESP copied out for fsck.fat (imgconv writes at most 4 GiB).
const MAX_ESP_CHECK_BYTES: u64 = 4 << 30;

/// The partitions the checks look at: by number on MBR, by type GUID on GPT.
#[derive(Debug, Default)]
struct Layout {
    gpt: bool,
    root: Option<PartitionEntry>,
    swap: Option<PartitionEntry>,
    esp: Option<PartitionEntry>,
    bios_boot: Option<PartitionEntry>,
}

impl Layout {
    /// " root", " ESP", … for a GPT entry that has a role; "" otherwise.
    fn role_of(&self, e: &PartitionEntry) -> &'static str {
        let is = |p: &Option<PartitionEntry>| p.as_ref().map(|p| p.number) == Some(e.number);
        if !self.gpt {
            ""
        } else if is(&self.root) {
            " root"
        } else if is(&self.swap) {
            " swap"
        } else if is(&self.esp) {
            " ESP"
        } else if is(&self.bios_boot) {
            " BIOS boot"
        } else {
            ""
        }
    }

    /// BIOS boot code is expected: an MBR disk, or a GPT disk with a BIOS boot partition.
    fn wants_bios_code(&self) -> bool {
        !self.gpt || self.bios_boot.is_some()
    }
}

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name: partition-table, fsck, swap, grub-files, boot-code, boot.
    pub name: &'static str,
    pub ok: bool,
    /// What was found, in a sentence.
    pub detail: String,
}

/// Everything `verify` found. Printed as JSON with `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub image: PathBuf,
    /// True when every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
    /// The partitions read from the table, when it could be read.
    pub partitions: Option<PartitionTable>,
    /// The boot test's details, with `--boot`.
    pub boot: Option<BootResult>,
}

fn check(checks: &mut Vec<Check>, name: &'static str, result: Result<String, String>) {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    checks.push(Check { name, ok, detail });
}

/// Run every check on `args.image`.
pub fn run(args: &VerifyArgs, progress: &mut CliProgress) -> Result<VerifyReport, CliError> {
    if args.boot {
        qemu::locate()?; // say it is missing before spending time on the rest
    }
    // A qcow2 (or other container) disk is checked through a sparse raw copy in the
    // temporary directory, since e2fsck and fsck.fat read raw images; the boot test boots
    // the qcow2 itself.
    let opened = imgconv_core::formats::open(&args.image, &Default::default()).map_err(|e| {
        CliError::new(
            Class::Input,
            e.to_string(),
            "give the path of a converted raw or qcow2 disk image",
        )
    })?;
    let kind = opened.region.format().kind;
    let (image_path, _scratch) = if matches!(kind, "raw" | "block-device") {
        (args.image.clone(), None)
    } else {
        let tmp = tempfile::Builder::new()
            .prefix("imgconv-verify-")
            .suffix(".raw")
            .tempfile()
            .and_then(|t| {
                imgconv_core::formats::copy_to_raw(&opened.region, t.as_file())?;
                Ok(t)
            })
            .map_err(|e| {
                CliError::new(
                    Class::Failure,
                    format!(
                        "cannot make a raw copy of {} to check: {e}",
                        args.image.display()
                    ),
                    "check free space in $TMPDIR",
                )
            })?;
        (tmp.path().to_path_buf(), Some(tmp))
    };
    let (boot_image, boot_format) = match kind {
        "qcow2" => (args.image.clone(), "qcow2"),
        _ => (image_path.clone(), "raw"),
    };
    let image = Region::open(&image_path).map_err(|e| {
        CliError::new(
            Class::Input,
            e.to_string(),
            "give the path of a converted raw or qcow2 disk image",
        )
    })?;
    let mut checks = Vec::new();

    let table = read_table(&image);
    let (layout, partitions) = match table {
        Ok(Some(t)) => {
            let (layout, verdict) = table_sanity(&t, image.len());
            check(&mut checks, "partition-table", verdict);
            (layout, Some(t))
        }
        Ok(None) => {
            check(&mut checks, "partition-table", Err("no partition table in LBA 0 (a bare filesystem is a source, not a converted disk)".into()));
            (Layout::default(), None)
        }
        Err(e) => {
            check(&mut checks, "partition-table", Err(e.to_string()));
            (Layout::default(), None)
        }
    };

    if let Some(root) = &layout.root {
        progress.step("fsck", Unit::Items, None);
        let loc = FsLocation {
            image: image_path.clone(),
            offset: root.start,
            len: root.len,
        };
        let outcome = fsck::check(&loc, args.use_loop)?;
        check(
            &mut checks,
            "fsck",
            if outcome.clean {
                Ok(format!("e2fsck -fn {}: clean", outcome.checked))
            } else {
                Err(format!(
                    "e2fsck -fn {} exited {}: {}",
                    outcome.checked,
                    outcome.exit_code,
                    outcome.output.lines().last().unwrap_or("")
                ))
            },
        );
        check(
            &mut checks,
            "grub-files",
            grub_files(
                &image,
                root,
                layout.wants_bios_code(),
                partitions.as_ref().map_or(&[][..], |t| &t.entries[..]),
            ),
        );
    } else {
        check(
            &mut checks,
            "fsck",
            Err("no root partition to check".into()),
        );
        check(
            &mut checks,
            "grub-files",
            Err("no root partition to read".into()),
        );
    }
    // Every other ext filesystem of the disk (the guest's carried volumes).
    for e in partitions.iter().flat_map(|t| t.entries.iter()) {
        if layout.root.as_ref().is_some_and(|r| r.start == e.start) {
            continue;
        }
        let is_ext = image
            .sub(e.start, e.len)
            .ok()
            .is_some_and(|r| imgconv_core::source::read_superblock(&r).is_ok());
        if !is_ext {
            continue;
        }
        let loc = FsLocation {
            image: image_path.clone(),
            offset: e.start,
            len: e.len,
        };
        let outcome = fsck::check(&loc, args.use_loop)?;
        check(
            &mut checks,
            "fsck",
            if outcome.clean {
                Ok(format!("e2fsck -fn p{}: clean", e.number))
            } else {
                Err(format!(
                    "e2fsck -fn p{} exited {}: {}",
                    e.number,
                    outcome.exit_code,
                    outcome.output.lines().last().unwrap_or("")
                ))
            },
        );
    }
    if let Some(swap) = &layout.swap {
        check(&mut checks, "swap", swap_signature(&image, swap));
    }
    if let Some(esp) = &layout.esp {
        progress.step("fsck.fat", Unit::Items, None);
        check(&mut checks, "esp", esp_check(&image_path, &image, esp)?);
    }
    if layout.wants_bios_code() {
        // core.img lies before p1 on MBR, in the BIOS boot partition on a hybrid disk.
        let window = match (&layout.bios_boot, &layout.root) {
            (Some(b), _) => Some((b.start, b.start + b.len)),
            (None, Some(r)) => Some((512, r.start)),
            (None, None) => None,
        };
        check(&mut checks, "boot-code", boot_code(&image, window));
    }

    let mut boot = None;
    if args.boot {
        progress.step("boot-test", Unit::Items, None);
        // A GPT disk without BIOS boot code boots only with UEFI firmware.
        let uefi = args.uefi || !layout.wants_bios_code();
        let r = qemu::boot(&qemu::BootAsk {
            image: &boot_image,
            format: boot_format,
            bus: args.bus,
            uefi,
            timeout: Duration::from_secs(args.timeout),
            expect: &args.expect,
            serial_log: args.serial_log.as_deref(),
        })?;
        check(
            &mut checks,
            "boot",
            if r.ok {
                Ok(format!(
                    "{:?} on the serial console after {:.1} s ({}, {} on {})",
                    r.matched.iter().flatten().next().map_or("", String::as_str),
                    r.seconds,
                    r.accel,
                    r.firmware,
                    r.machine
                ))
            } else {
                Err(r.reason.clone().unwrap_or_default())
            },
        );
        boot = Some(r);
    }
    progress.finish(true, "done");
    Ok(VerifyReport {
        image: args.image.clone(),
        ok: checks.iter().all(|c| c.ok),
        checks,
        partitions,
        boot,
    })
}

/// MBR: p1 Linux active, p2 swap if present. GPT: the root (and the other roles) by type
/// GUID. Either way everything inside the disk, no overlap.
fn table_sanity(t: &PartitionTable, disk_len: u64) -> (Layout, Result<String, String>) {
    let mut problems = Vec::new();
    let layout = if t.kind == TableKind::Mbr {
        mbr_layout(t, &mut problems)
    } else {
        gpt_layout(t, &mut problems)
    };
    let mut spans: Vec<(u64, u64, usize)> = t
        .entries
        .iter()
        .map(|e| (e.start, e.start.saturating_add(e.len), e.number))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            problems.push(format!("partitions {} and {} overlap", w[0].2, w[1].2));
        }
    }
    // MBR: sector 0; GPT: protective MBR, header and 128 entries (LBA 0..=33).
    let (first_usable, reserved) = if layout.gpt {
        (34 * 512, "the protective MBR and GPT header/entries")
    } else {
        (2 * 512, "the MBR/boot-code gap")
    };
    if let Some(&(start, _, n)) = spans.first() {
        if start < first_usable {
            problems.push(format!("partition {n} starts inside {reserved}"));
        }
    }
    for &(_, end, n) in &spans {
        if end > disk_len {
            problems.push(format!("partition {n} ends beyond the disk"));
        }
    }
    let verdict = if problems.is_empty() {
        let describe = |e: &PartitionEntry| {
            format!(
                "p{}{} {} MiB at {}",
                e.number,
                layout.role_of(e),
                e.len >> 20,
                e.start
            )
        };
        Ok(format!(
            "{}: {}",
            if layout.gpt { "GPT" } else { "MBR" },
            t.entries
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Err(problems.join("; "))
    };
    (layout, verdict)
}

/// MBR: root p1 (Linux 0x83, active), the first 0x82 partition the swap when present.
fn mbr_layout(t: &PartitionTable, problems: &mut Vec<String>) -> Layout {
    let find = |n: usize| t.entries.iter().find(|e| e.number == n).cloned();
    let p1 = find(1);
    match &p1 {
        Some(PartitionEntry {
            kind:
                PartitionType::Mbr {
                    type_code,
                    bootable,
                },
            ..
        }) => {
            if *type_code != 0x83 {
                problems.push(format!(
                    "partition 1 has type 0x{type_code:02x}, not Linux 0x83"
                ));
            }
            if !bootable {
                problems.push("partition 1 is not marked active (bootable)".into());
            }
        }
        _ => problems.push("no partition 1".into()),
    }
    // The swap is the first Linux swap partition: the guest's other volumes may come
    // between the root and it.
    let swap = t
        .entries
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                PartitionType::Mbr {
                    type_code: 0x82,
                    ..
                }
            )
        })
        .cloned();
    Layout {
        gpt: false,
        root: p1,
        swap,
        esp: None,
        bios_boot: None,
    }
}

/// GPT: each role is the first partition of its type GUID; the root is a Linux
/// filesystem (or a discoverable x86-64 root). An ESP or a BIOS boot partition is needed.
fn gpt_layout(t: &PartitionTable, problems: &mut Vec<String>) -> Layout {
    let of_type = |guids: &[&str]| {
        t.entries
            .iter()
            .find(|e| match &e.kind {
                PartitionType::Gpt { type_guid, .. } => {
                    guids.iter().any(|g| type_guid.eq_ignore_ascii_case(g))
                }
                PartitionType::Mbr { .. } => false,
            })
            .cloned()
    };
    let layout = Layout {
        gpt: true,
        root: of_type(&[TYPE_LINUX_FS, TYPE_ROOT_X86_64]),
        swap: of_type(&[TYPE_LINUX_SWAP]),
        esp: of_type(&[TYPE_ESP]),
        bios_boot: of_type(&[TYPE_BIOS_BOOT]),
    };
    if layout.root.is_none() {
        problems.push(format!(
            "no root partition (type {TYPE_LINUX_FS} or {TYPE_ROOT_X86_64})"
        ));
    }
    if layout.esp.is_none() && layout.bios_boot.is_none() {
        problems.push(format!(
            "neither an ESP ({TYPE_ESP}) nor a BIOS boot partition ({TYPE_BIOS_BOOT}): no firmware can boot it"
        ));
    }
    layout
}

/// The swap v1 signature: "SWAPSPACE2" in the last 10 bytes of the first 4 KiB page.
fn swap_signature(image: &Region, p2: &PartitionEntry) -> Result<String, String> {
    let n = p2.number;
    let part = image.sub(p2.start, p2.len).map_err(|e| e.to_string())?;
    let mut page = [0u8; imgconv_core::swap::PAGE_SIZE as usize];
    part.read_exact_at(0, &mut page)
        .map_err(|e| format!("cannot read the swap header: {e}"))?;
    let header = imgconv_core::swap::read_header(&page)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("partition {n} has no Linux swap signature (SWAPSPACE2)"))?;
    if header.version != 1 {
        return Err(format!(
            "swap header version {}, expected 1",
            header.version
        ));
    }
    Ok(format!("swap v1 signature on p{n} ({} MiB)", p2.len >> 20))
}

/// /boot/grub/grub.cfg, the i386-pc modules (when BIOS boot code needs them), a kernel
/// and its initrd on the root partition. A disk whose first partition is a separate
/// /boot (GRUB's directory at its top: `/grub/grub.cfg`) has them there, named from its
/// top; its grub.cfg searches it by UUID and boots the root of another partition, whose
/// fstab mounts it at /boot.
fn grub_files(
    image: &Region,
    p1: &PartitionEntry,
    i386_pc: bool,
    all: &[PartitionEntry],
) -> Result<String, String> {
    let n = p1.number;
    let open = |e: &PartitionEntry| {
        let part = image.sub(e.start, e.len).map_err(|e| e.to_string())?;
        let label = format!("{} partition {}", image.path().display(), e.number);
        ExtReader::open(part, label).map_err(|e| e.to_string())
    };
    let fs = open(p1)?;
    let separate = !fs
        .exists("/boot/grub/grub.cfg")
        .map_err(|e| e.to_string())?
        && fs.exists("/grub/grub.cfg").map_err(|e| e.to_string())?;
    let dir = if separate { "" } else { "/boot" };
    let cfg_path = format!("{dir}/grub/grub.cfg");
    let mut missing = Vec::new();
    let mut wanted = vec![cfg_path.clone()];
    if i386_pc {
        wanted.push(format!("{dir}/grub/i386-pc/normal.mod"));
    }
    for path in &wanted {
        if !fs.exists(path).map_err(|e| e.to_string())? {
            missing.push(path.to_string());
        }
    }
    let boot = fs
        .read_dir(if separate { "/" } else { "/boot" }, 10_000)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let names: Vec<&str> = boot.iter().map(|d| d.name.as_str()).collect();
    let kernels: Vec<&str> = boot
        .iter()
        .filter(|d| d.kind == NodeKind::File && d.name.starts_with("vmlinuz-"))
        .map(|d| d.name.as_str())
        .collect();
    let with_initrd: Vec<&str> = kernels
        .iter()
        .copied()
        .filter(|k| {
            let ver = &k["vmlinuz-".len()..];
            [
                format!("initrd.img-{ver}"),
                format!("initrd-{ver}.img"),
                format!("initramfs-{ver}.img"),
            ]
            .iter()
            .any(|i| names.contains(&i.as_str()))
        })
        .collect();
    if kernels.is_empty() {
        missing.push(format!("{dir}/vmlinuz-*"));
    } else if with_initrd.is_empty() {
        missing.push(format!("an initrd for {}", kernels.join(", ")));
    }
    if !missing.is_empty() {
        return Err(format!("missing on partition {n}: {}", missing.join(", ")));
    }
    let cfg = fs
        .read_file(&cfg_path, 1 << 20)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let cfg = String::from_utf8_lossy(&cfg);
    let boot_uuid = fs.uuid();
    // grub.cfg must boot the root filesystem by its UUID: this one, or with a separate
    // /boot the partition holding /etc/fstab whose UUID grub.cfg names.
    let uuid = if separate {
        if !cfg.contains(&format!("--fs-uuid --set=root {boot_uuid}")) {
            return Err(format!(
                "{cfg_path} on partition {n} does not search its own filesystem (UUID {boot_uuid})"
            ));
        }
        let mut root = None;
        for e in all.iter().filter(|e| e.start != p1.start) {
            let Ok(r) = open(e) else { continue };
            let u = r.uuid();
            if cfg.contains(&format!("root=UUID={u}")) && r.exists("/etc/fstab").unwrap_or(false) {
                root = Some((e.number, u, r));
                break;
            }
        }
        let (rn, u, r) = root.ok_or_else(|| {
            format!(
                "{cfg_path} on partition {n} boots no root=UUID= of an ext partition of this disk"
            )
        })?;
        let fstab = r
            .read_file("/etc/fstab", 1 << 20)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let fstab = String::from_utf8_lossy(&fstab);
        let label = fs.label().to_string();
        let mounts_boot = imgconv_core::source::volumes::parse_fstab(&fstab)
            .iter()
            .any(|l| {
                l.mount == "/boot"
                    && imgconv_core::source::volumes::spec_names(
                        &l.spec,
                        Some(&boot_uuid),
                        Some(&label),
                        None,
                        &[],
                    )
            });
        if !mounts_boot {
            return Err(format!(
                "the root's fstab (partition {rn}) does not mount partition {n} (UUID {boot_uuid}) at /boot"
            ));
        }
        u
    } else {
        let u = fs.uuid();
        if !cfg.contains(&format!("root=UUID={u}")) {
            return Err(format!(
                "{cfg_path} does not boot root=UUID={u} (the UUID of partition {n})"
            ));
        }
        u
    };
    // Every kernel and initrd the menu loads must be there.
    let mut absent = Vec::new();
    for (line, path) in imgconv_core::boot::grub_cfg::named_files(&cfg) {
        let found = matches!(fs.metadata(&path), Ok(Some(m)) if m.kind == NodeKind::File);
        if !found {
            absent.push(format!("{path} (line {line})"));
        }
    }
    if !absent.is_empty() {
        return Err(format!(
            "{cfg_path} loads files that are not on partition {n}: {}",
            absent.join(", ")
        ));
    }
    Ok(format!(
        "grub.cfg (root=UUID={uuid}){}{}, kernel {}",
        if separate {
            format!(", on the separate /boot (partition {n})")
        } else {
            String::new()
        },
        if i386_pc { ", i386-pc modules" } else { "" },
        with_initrd.join(", ")
    ))
}

/// GRUB's boot.img in LBA 0 ("GRUB " message, 0x55AA), pointing at a core image that
/// lies in `window` (bytes: the gap before partition 1, or the BIOS boot partition) and
/// is not blank.
fn boot_code(image: &Region, window: Option<(u64, u64)>) -> Result<String, String> {
    let mut mbr = [0u8; 512];
    image
        .read_exact_at(0, &mut mbr)
        .map_err(|e| format!("cannot read LBA 0: {e}"))?;
    if mbr[510..] != [0x55, 0xaa] {
        return Err("LBA 0 has no 0x55AA boot signature".into());
    }
    let core_lba = imgconv_core::boot::grub_bios::mbr::grub_core_sector(&mbr)
        .map_err(|e| e.to_string())?
        .ok_or("LBA 0 holds no GRUB boot code (no \"GRUB \" message)")?;
    let (first, end) = window.map_or((1, image.len() / 512), |(a, b)| (a / 512, b / 512));
    if core_lba == 0 || core_lba < first || core_lba >= end {
        return Err(format!(
            "boot code points at sector {core_lba} for core.img, outside sectors {first}..{end} where it belongs"
        ));
    }
    let mut first = [0u8; 512];
    image
        .read_exact_at(core_lba * 512, &mut first)
        .map_err(|e| format!("cannot read core.img at sector {core_lba}: {e}"))?;
    if first.iter().all(|&b| b == 0) {
        return Err(format!("sector {core_lba} (core.img) is blank"));
    }
    Ok(format!(
        "GRUB boot.img in LBA 0, core.img at sector {core_lba}"
    ))
}

/// The ESP: `fsck.fat -n` on a copy of it (fsck.fat reads no offsets), then the EFI
/// loader the firmware will start, read with the library's ESP reader. `Err` from the
/// outer result only for a missing fsck.fat or an unusable temporary directory.
fn esp_check(
    path: &std::path::Path,
    image: &Region,
    esp: &PartitionEntry,
) -> Result<Result<String, String>, CliError> {
    let n = esp.number;
    if esp.len > MAX_ESP_CHECK_BYTES {
        return Ok(Err(format!(
            "the ESP (p{n}) is {} MiB, larger than the {} MiB imgconv writes",
            esp.len >> 20,
            MAX_ESP_CHECK_BYTES >> 20
        )));
    }
    let tmp_err = |e: std::io::Error| {
        CliError::new(
            Class::Failure,
            format!("cannot copy the ESP to a temporary file: {e}"),
            "check $TMPDIR (it needs room for the ESP)",
        )
    };
    let copy = tempfile::Builder::new()
        .prefix("imgconv-esp-")
        .suffix(".img")
        .tempfile()
        .map_err(tmp_err)?;
    let part = match image.sub(esp.start, esp.len) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < esp.len {
        let k = buf.len().min((esp.len - at) as usize);
        if let Err(e) = part.read_exact_at(at, &mut buf[..k]) {
            return Ok(Err(format!("cannot read the ESP (p{n}): {e}")));
        }
        std::os::unix::fs::FileExt::write_all_at(copy.as_file(), &buf[..k], at).map_err(tmp_err)?;
        at += k as u64;
    }
    let run = tools::run(
        ToolCommand::new("fsck.fat")
            .arg("-n")
            .end_of_options()
            .arg(copy.path()),
    )?;
    drop(copy);
    if !run.status.success() {
        return Ok(Err(format!(
            "fsck.fat -n on the ESP (p{n}) exited {}: {}",
            run.status.code().unwrap_or(-1),
            run.tail(3).replace('\n', " | ")
        )));
    }
    let out = run.stdout_text();
    let summary = out.lines().last().unwrap_or("").to_string();
    let summary = summary
        .rsplit_once(": ")
        .map_or(summary.as_str(), |(_, s)| s)
        .to_string();
    match imgconv_core::boot::uefi::efi_files::from_donor_esp(path) {
        Ok(Some(files)) => Ok(Ok(format!(
            "fsck.fat -n on p{n}: clean ({summary}); {}{}",
            if files.shim.is_some() { "shim + GRUB" } else { "GRUB" },
            files
                .distro_dir()
                .map(|d| format!(" (EFI/{d}/)"))
                .unwrap_or_default()
        ))),
        Ok(None) => Ok(Err(format!(
            "the ESP (p{n}) is clean but holds no EFI loader (EFI/BOOT/BOOTX64.EFI, EFI/<distro>/grubx64.efi)"
        ))),
        Err(e) => Ok(Err(format!("the ESP (p{n}): {e}"))),
    }
}

/// The report for people.
pub fn human_text(r: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for c in &r.checks {
        let _ = writeln!(
            o,
            "{:<5} {:<16} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(b) = &r.boot {
        if !b.ok && !b.console_tail.is_empty() {
            let _ = writeln!(o, "serial console (last lines):");
            for l in b.console_tail.lines() {
                let _ = writeln!(o, "    {l}");
            }
        }
    }
    let _ = writeln!(
        o,
        "{}: {}",
        r.image.display(),
        if r.ok {
            "verified"
        } else {
            "verification FAILED"
        }
    );
    o
}
