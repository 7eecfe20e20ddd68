//! `imgconv verify OUT`: is this a disk imgconv would have written, and does it boot?
//!
//! Static checks, each reported whether or not the others pass: the partition table
//! (MBR, p1 Linux 0x83 active, optional p2 swap 0x82, all within the disk, no overlap),
//! `e2fsck -fn` on p1, the swap signature on p2, the GRUB files and a kernel with its
//! initrd on p1 (read with the library's guarded ext reader), and GRUB boot code in LBA 0
//! pointing at a core image. `--boot` adds the QEMU smoke test.

use crate::cli::VerifyArgs;
use crate::errors::{Class, CliError};
use crate::fsck::{self, FsLocation};
use crate::progress::{CliProgress, Unit};
use crate::qemu::{self, BootResult};
use imgconv_core::blockio::Region;
use imgconv_core::extread::{ExtReader, NodeKind};
use imgconv_core::partition::{
    read_table, PartitionEntry, PartitionTable, PartitionType, TableKind,
};
use std::path::PathBuf;
use std::time::Duration;

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
    let image = Region::open(&args.image).map_err(|e| {
        CliError::new(
            Class::Input,
            e.to_string(),
            "give the path of a converted raw disk image",
        )
    })?;
    let mut checks = Vec::new();

    let table = read_table(&image);
    let (p1, p2, partitions) = match table {
        Ok(Some(t)) => {
            let (p1, p2, verdict) = table_sanity(&t, image.len());
            check(&mut checks, "partition-table", verdict);
            (p1, p2, Some(t))
        }
        Ok(None) => {
            check(&mut checks, "partition-table", Err("no partition table in LBA 0 (a bare filesystem is a source, not a converted disk)".into()));
            (None, None, None)
        }
        Err(e) => {
            check(&mut checks, "partition-table", Err(e.to_string()));
            (None, None, None)
        }
    };

    if let Some(p1) = &p1 {
        progress.step("fsck", Unit::Items, None);
        let loc = FsLocation {
            image: args.image.clone(),
            offset: p1.start,
            len: p1.len,
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
        check(&mut checks, "grub-files", grub_files(&image, p1));
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
    if let Some(p2) = &p2 {
        check(&mut checks, "swap", swap_signature(&image, p2));
    }
    check(&mut checks, "boot-code", boot_code(&image, p1.as_ref()));

    let mut boot = None;
    if args.boot {
        progress.step("boot-test", Unit::Items, None);
        let r = qemu::boot(
            &args.image,
            args.bus,
            args.uefi,
            Duration::from_secs(args.timeout),
        )?;
        check(
            &mut checks,
            "boot",
            if r.ok {
                Ok(format!(
                    "{:?} on the serial console after {:.1} s ({})",
                    r.marker.as_deref().unwrap_or(""),
                    r.seconds,
                    r.accel
                ))
            } else {
                Err(r.reason.clone().unwrap_or_default())
            },
        );
        boot = Some(r);
    }
    progress.finish("done");
    Ok(VerifyReport {
        image: args.image.clone(),
        ok: checks.iter().all(|c| c.ok),
        checks,
        partitions,
        boot,
    })
}

/// MBR, p1 Linux active, p2 swap if present, everything inside the disk, no overlap.
fn table_sanity(
    t: &PartitionTable,
    disk_len: u64,
) -> (
    Option<PartitionEntry>,
    Option<PartitionEntry>,
    Result<String, String>,
) {
    if t.kind != TableKind::Mbr {
        return (
            None,
            None,
            Err("GPT table: the BIOS layout imgconv writes is MBR".into()),
        );
    }
    let find = |n: usize| t.entries.iter().find(|e| e.number == n).cloned();
    let (p1, p2) = (find(1), find(2));
    let mut problems = Vec::new();
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
    if let Some(PartitionEntry {
        kind: PartitionType::Mbr { type_code, .. },
        ..
    }) = &p2
    {
        if *type_code != 0x82 {
            problems.push(format!(
                "partition 2 has type 0x{type_code:02x}, not Linux swap 0x82"
            ));
        }
    }
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
    if let Some(&(start, _, n)) = spans.first() {
        if start < 512 * 2 {
            problems.push(format!("partition {n} starts inside the MBR/boot-code gap"));
        }
    }
    for &(_, end, n) in &spans {
        if end > disk_len {
            problems.push(format!("partition {n} ends beyond the disk"));
        }
    }
    let verdict = if problems.is_empty() {
        let describe =
            |e: &PartitionEntry| format!("p{} {} MiB at {}", e.number, e.len >> 20, e.start);
        Ok(format!(
            "MBR: {}",
            t.entries
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Err(problems.join("; "))
    };
    (p1, p2, verdict)
}

/// The swap v1 signature: "SWAPSPACE2" in the last 10 bytes of the first 4 KiB page.
fn swap_signature(image: &Region, p2: &PartitionEntry) -> Result<String, String> {
    let part = image.sub(p2.start, p2.len).map_err(|e| e.to_string())?;
    let mut page = [0u8; 4096];
    part.read_exact_at(0, &mut page)
        .map_err(|e| format!("cannot read the swap header: {e}"))?;
    if &page[4086..] != b"SWAPSPACE2" {
        return Err("partition 2 has no Linux swap signature (SWAPSPACE2)".into());
    }
    let version = u32::from_le_bytes([page[1024], page[1025], page[1026], page[1027]]);
    if version != 1 {
        return Err(format!("swap header version {version}, expected 1"));
    }
    Ok(format!("swap v1 signature on p2 ({} MiB)", p2.len >> 20))
}

/// /boot/grub/grub.cfg, the i386-pc modules, a kernel and its initrd on p1.
fn grub_files(image: &Region, p1: &PartitionEntry) -> Result<String, String> {
    let part = image.sub(p1.start, p1.len).map_err(|e| e.to_string())?;
    let label = format!("{} partition 1", image.path().display());
    let fs = ExtReader::open(part, label).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    for path in ["/boot/grub/grub.cfg", "/boot/grub/i386-pc/normal.mod"] {
        if !fs.exists(path).map_err(|e| e.to_string())? {
            missing.push(path.to_string());
        }
    }
    let boot = fs
        .read_dir("/boot", 10_000)
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
        missing.push("/boot/vmlinuz-*".into());
    } else if with_initrd.is_empty() {
        missing.push(format!("an initrd for {}", kernels.join(", ")));
    }
    if !missing.is_empty() {
        return Err(format!("missing on partition 1: {}", missing.join(", ")));
    }
    // grub.cfg must boot the root filesystem by its UUID.
    let cfg = fs
        .read_file("/boot/grub/grub.cfg", 1 << 20)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let cfg = String::from_utf8_lossy(&cfg);
    let uuid = fs.uuid();
    if !cfg.contains(&format!("root=UUID={uuid}")) {
        return Err(format!(
            "/boot/grub/grub.cfg does not boot root=UUID={uuid} (the UUID of partition 1)"
        ));
    }
    Ok(format!(
        "grub.cfg (root=UUID={uuid}), i386-pc modules, kernel {}",
        with_initrd.join(", ")
    ))
}

/// GRUB's boot.img in LBA 0 ("GRUB " message, 0x55AA), pointing at a core image that
/// lies before partition 1 and is not blank.
fn boot_code(image: &Region, p1: Option<&PartitionEntry>) -> Result<String, String> {
    let mut mbr = [0u8; 512];
    image
        .read_exact_at(0, &mut mbr)
        .map_err(|e| format!("cannot read LBA 0: {e}"))?;
    if mbr[510..] != [0x55, 0xaa] {
        return Err("LBA 0 has no 0x55AA boot signature".into());
    }
    if !mbr[..0x1b8].windows(5).any(|w| w == b"GRUB ") {
        return Err("LBA 0 holds no GRUB boot code (no \"GRUB \" message)".into());
    }
    // boot.S: kernel_sector (LBA of core.img's first sector) is a le64 at 0x5C.
    let mut lba = [0u8; 8];
    lba.copy_from_slice(&mbr[0x5c..0x64]);
    let core_lba = u64::from_le_bytes(lba);
    let limit = p1.map_or(image.len() / 512, |p| p.start / 512);
    if core_lba == 0 || core_lba >= limit {
        return Err(format!(
            "boot code points at sector {core_lba} for core.img, outside the gap before partition 1"
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

/// Print the report for people.
pub fn print_human(r: &VerifyReport) {
    for c in &r.checks {
        println!(
            "{:<5} {:<16} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(b) = &r.boot {
        if !b.ok && !b.console_tail.is_empty() {
            println!("serial console (last lines):");
            for l in b.console_tail.lines() {
                println!("    {l}");
            }
        }
    }
    println!(
        "{}: {}",
        r.image.display(),
        if r.ok {
            "verified"
        } else {
            "verification FAILED"
        }
    );
}
