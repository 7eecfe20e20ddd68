//! The static checks of [`super::verify()`], each a verdict: `Ok(what was found)` or
//! `Err(what is wrong)`, both in a sentence.

use super::VerifyError;
use crate::blockio::Region;
use crate::boot::grub_bios::core_image::{read_first_blocklist, FIRST_SEGMENT, SECTOR};
use crate::boot::grub_bios::mbr::{grub_core_sector, SIGNATURE};
use crate::e2fs_tools::FsckOutcome;
use crate::ext::read::ExtReader;
use crate::guestfs::NodeKind;
use crate::layout::gpt::{TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_SWAP};
use crate::partition::{PartitionEntry, PartitionTable, PartitionType, TableKind};
use crate::progress::Progress;
use crate::swap::SwapHeader;
use crate::tool::ToolCommand;
use std::path::Path;

/// A check's verdict: what was found, or what is wrong.
pub(super) type Verdict = Result<String, String>;

/// The discoverable-partitions "root x86-64" type GUID, also accepted as the root.
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// Largest ESP copied out for fsck.fat (imgconv writes at most 4 GiB).
const MAX_ESP_CHECK_BYTES: u64 = 4 << 30;
/// Most entries of the directory holding the kernels that are read.
const MAX_BOOT_DIR_ENTRIES: usize = 10_000;
/// Largest grub.cfg or fstab read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The partitions the checks look at: by number on MBR, by type GUID on GPT.
#[derive(Debug, Default)]
pub(super) struct Layout {
    pub(super) gpt: bool,
    pub(super) root: Option<PartitionEntry>,
    pub(super) swap: Option<PartitionEntry>,
    pub(super) esp: Option<PartitionEntry>,
    pub(super) bios_boot: Option<PartitionEntry>,
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
    pub(super) fn wants_bios_code(&self) -> bool {
        !self.gpt || self.bios_boot.is_some()
    }

    /// Where core.img belongs, in bytes: the BIOS boot partition on a hybrid disk, the gap
    /// between the MBR and the root partition on MBR; `None` when neither is known.
    pub(super) fn core_window(&self) -> Option<(u64, u64)> {
        match (&self.bios_boot, &self.root) {
            (Some(b), _) => Some((b.start, b.start.saturating_add(b.len))),
            (None, Some(r)) => Some((SECTOR as u64, r.start)),
            (None, None) => None,
        }
    }
}

/// The verdict on one `e2fsck -fn`, naming what was checked as `what`.
pub(super) fn fsck_verdict(outcome: &FsckOutcome, what: &str) -> Verdict {
    if outcome.clean {
        Ok(format!("e2fsck -fn {what}: clean"))
    } else {
        Err(format!(
            "e2fsck -fn {what} exited {}: {}",
            outcome.exit_code,
            outcome.output.lines().last().unwrap_or("")
        ))
    }
}

/// MBR: p1 Linux active, p2 swap if present. GPT: the root (and the other roles) by type
/// GUID. Either way everything inside the disk, no overlap.
pub(super) fn table_sanity(t: &PartitionTable, disk_len: u64) -> (Layout, Verdict) {
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

/// The swap header in the first page of the swap partition, read by
/// [`crate::swap::read_header`]: the "SWAPSPACE2" signature and version 1.
pub(super) fn swap_header(image: &Region, swap: &PartitionEntry) -> (Verdict, Option<SwapHeader>) {
    let n = swap.number;
    let mut page = [0u8; crate::swap::PAGE_SIZE as usize];
    let read = image
        .sub(swap.start, swap.len)
        .and_then(|part| part.read_exact_at(0, &mut page));
    if let Err(e) = read {
        return (
            Err(format!("cannot read the swap header on p{n}: {e}")),
            None,
        );
    }
    let header = match crate::swap::read_header(&page) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return (
                Err(format!(
                    "partition {n} has no Linux swap signature (SWAPSPACE2)"
                )),
                None,
            )
        }
        Err(e) => return (Err(e.to_string()), None),
    };
    let verdict = if header.version != 1 {
        Err(format!(
            "swap header version {}, expected 1",
            header.version
        ))
    } else {
        Ok(format!(
            "swap v1 signature on p{n} ({} MiB)",
            swap.len >> 20
        ))
    };
    (verdict, Some(header))
}

/// /boot/grub/grub.cfg, the i386-pc modules (when BIOS boot code needs them), a kernel
/// and its initrd on the root partition. A disk whose first partition is a separate
/// /boot (GRUB's directory at its top: `/grub/grub.cfg`) has them there, named from its
/// top; its grub.cfg searches it by UUID and boots the root of another partition, whose
/// fstab mounts it at /boot.
pub(super) fn grub_files(
    image: &Region,
    p1: &PartitionEntry,
    i386_pc: bool,
    all: &[PartitionEntry],
) -> Verdict {
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
        .read_dir(if separate { "/" } else { "/boot" }, MAX_BOOT_DIR_ENTRIES)
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
        .read_file(&cfg_path, MAX_CONFIG_BYTES)
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
            .read_file("/etc/fstab", MAX_CONFIG_BYTES)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let fstab = String::from_utf8_lossy(&fstab);
        let label = fs.label().to_string();
        let mounts_boot = crate::source::volumes::parse_fstab(&fstab).iter().any(|l| {
            l.mount == "/boot"
                && crate::source::volumes::spec_names(
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
    for (line, path) in crate::boot::grub_cfg::named_files(&cfg) {
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

/// GRUB's boot.img in LBA 0 (the 0x55AA signature, GRUB's message in the code area),
/// pointing at a core image that lies in `window` (bytes: the gap before partition 1, or
/// the BIOS boot partition), is not blank, and whose diskboot sector loads the rest of
/// core.img from the next sector on (its first blocklist entry, [`FIRST_SEGMENT`]), all of
/// it inside the window. Also returns the LBA of core.img when boot.img names one.
pub(super) fn boot_code(image: &Region, window: Option<(u64, u64)>) -> (Verdict, Option<u64>) {
    let mut mbr = [0u8; SECTOR];
    if let Err(e) = image.read_exact_at(0, &mut mbr) {
        return (Err(format!("cannot read LBA 0: {e}")), None);
    }
    if mbr[SIGNATURE..] != [0x55, 0xaa] {
        return (Err("LBA 0 has no 0x55AA boot signature".into()), None);
    }
    let core_lba = match grub_core_sector(&mbr) {
        Ok(Some(lba)) => lba,
        Ok(None) => {
            return (
                Err("LBA 0 holds no GRUB boot code (no \"GRUB \" message)".into()),
                None,
            )
        }
        Err(e) => return (Err(e.to_string()), None),
    };
    (core_image_at(image, window, core_lba), Some(core_lba))
}

fn core_image_at(image: &Region, window: Option<(u64, u64)>, core_lba: u64) -> Verdict {
    let sector = SECTOR as u64;
    let (first, end) = window.map_or((1, image.len() / sector), |(a, b)| (a / sector, b / sector));
    if core_lba == 0 || core_lba < first || core_lba >= end {
        return Err(format!(
            "boot code points at sector {core_lba} for core.img, outside sectors {first}..{end} where it belongs"
        ));
    }
    let mut diskboot = [0u8; SECTOR];
    image
        .read_exact_at(core_lba * sector, &mut diskboot)
        .map_err(|e| format!("cannot read core.img at sector {core_lba}: {e}"))?;
    if diskboot.iter().all(|&b| b == 0) {
        return Err(format!("sector {core_lba} (core.img) is blank"));
    }
    let list = read_first_blocklist(&diskboot).map_err(|e| e.to_string())?;
    // core_lba < end <= image.len() / 512, so core_lba + 1 cannot overflow.
    if list.start != core_lba + 1 || list.segment != FIRST_SEGMENT {
        return Err(format!(
            "core.img at sector {core_lba} loads its rest from sector {} to segment {:#x}, not from sector {} to {FIRST_SEGMENT:#x}",
            list.start,
            list.segment,
            core_lba + 1
        ));
    }
    let last = list.start + u64::from(list.len);
    if last > end {
        return Err(format!(
            "core.img at sector {core_lba} runs to sector {last}, past sector {end} where its room ends"
        ));
    }
    Ok(format!(
        "GRUB boot.img in LBA 0, core.img at sector {core_lba}"
    ))
}

/// The ESP: `fsck.fat -n` on a copy of it (fsck.fat reads no offsets), then the EFI
/// loader the firmware will start, read with the library's ESP reader. `Err` from the
/// outer result only for a missing fsck.fat, an unusable temporary directory or
/// cancellation.
pub(super) fn esp(
    path: &Path,
    image: &Region,
    esp: &PartitionEntry,
    progress: &dyn Progress,
) -> crate::Result<Verdict> {
    let n = esp.number;
    if esp.len > MAX_ESP_CHECK_BYTES {
        return Ok(Err(format!(
            "the ESP (p{n}) is {} MiB, larger than the {} MiB imgconv writes",
            esp.len >> 20,
            MAX_ESP_CHECK_BYTES >> 20
        )));
    }
    let tmp_err = |source: std::io::Error| VerifyError::EspCopy { source };
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
        crate::progress::check_cancel(progress)?;
        let k = buf.len().min((esp.len - at) as usize);
        if let Err(e) = part.read_exact_at(at, &mut buf[..k]) {
            return Ok(Err(format!("cannot read the ESP (p{n}): {e}")));
        }
        std::os::unix::fs::FileExt::write_all_at(copy.as_file(), &buf[..k], at).map_err(tmp_err)?;
        at += k as u64;
    }
    let run = ToolCommand::new("fsck.fat")
        .arg("-n")
        .end_of_options()
        .arg(copy.path())
        .output(progress)?;
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
    match crate::boot::uefi::efi_files::from_donor_esp(path) {
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
