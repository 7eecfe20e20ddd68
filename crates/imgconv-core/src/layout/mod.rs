//! The target disk plan: partitions, sizes, what the graft adds; a printable value.
//!
//! The plan is computed before anything is written, so a dry run can print it and a
//! too-small target fails before the output exists. Layout: MBR, 512-byte sectors,
//! partitions aligned to 1 MiB; partition 1 is the guest root (type 0x83, active),
//! partition 2 the swap (type 0x82; omitted when its size is 0).
//!
//! Room for the graft: the donor's kernel, initrd, modules and GRUB files
//! (`graft_bytes`, computed by the caller) must fit in the guest filesystem's free
//! space with a margin of 10% of the filesystem or 64 MiB, whichever is larger (10%
//! keeps a large guest usable after the graft; 64 MiB keeps a tiny one from being
//! filled to the brim by a few package updates). Free space here is what ordinary users
//! can use: free blocks minus the root reserve, so the guest keeps its reserve too.
//! When that does not fit, partition 1 is made larger and the plan records that the
//! filesystem must be grown to fill it ([`DiskPlan::grow`]); an explicit target size that
//! is too small is a [`PlanError::TargetTooSmall`] naming the size needed.
//!
//! Boot code: [`write_mbr`] writes bytes 0x1B8..0x200 of sector 0 (disk signature,
//! partition table, 0x55AA) and preserves bytes 0..0x1B8, where the boot stage writes
//! GRUB's boot.img. The intended order is `write_mbr` first, then the boot code; calling
//! `write_mbr` again afterwards keeps the boot code intact.

pub mod gpt;

use crate::blockio::OutputDevice;
use crate::output::{self, OutputError};
use crate::source::FsInfo;
use std::fmt;

/// Bytes per sector of the target disk.
pub const SECTOR_SIZE: u64 = 512;
/// Partition alignment.
pub const ALIGN_BYTES: u64 = 1 << 20;
/// Default swap partition size.
pub const DEFAULT_SWAP_BYTES: u64 = 512 << 20;
/// The smallest graft margin.
pub const MIN_MARGIN_BYTES: u64 = 64 << 20;
/// Bytes of sector 0 left to the boot code (GRUB boot.img keeps 0x1B8.. untouched).
pub const BOOT_CODE_BYTES: usize = 0x1B8;

/// MBR partition type of a Linux filesystem.
pub const TYPE_LINUX: u8 = 0x83;
/// MBR partition type of Linux swap.
pub const TYPE_SWAP: u8 = 0x82;

/// Size and free space of the source filesystem, as the planner needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SourceSpace {
    /// Filesystem size in bytes.
    pub fs_bytes: u64,
    /// Free bytes available to ordinary users (free blocks minus the root reserve).
    pub free_bytes: u64,
    /// Filesystem block size.
    pub block_size: u32,
}

impl From<&FsInfo> for SourceSpace {
    fn from(fs: &FsInfo) -> Self {
        SourceSpace {
            fs_bytes: fs.size_bytes,
            free_bytes: fs.free_blocks.saturating_sub(fs.reserved_blocks)
                * u64::from(fs.block_size),
            block_size: fs.block_size,
        }
    }
}

/// The user's and the caller's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlanOptions {
    /// What the graft will add to the guest filesystem (bytes).
    pub graft_bytes: u64,
    /// Explicit size of partition 1, if the user asked for one.
    pub root_bytes: Option<u64>,
    /// Explicit size of the whole disk, if the user asked for one (partition 1 gets
    /// what the 1 MiB lead-in and the swap partition leave). Ignored when `root_bytes`
    /// is set.
    pub disk_bytes: Option<u64>,
    /// Size of the swap partition; 0 for none.
    pub swap_bytes: u64,
    /// A fixed disk signature (for reproducible output); random when `None`.
    pub disk_signature: Option<u32>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            graft_bytes: 0,
            root_bytes: None,
            disk_bytes: None,
            swap_bytes: DEFAULT_SWAP_BYTES,
            disk_signature: None,
        }
    }
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionRole {
    /// The guest root filesystem.
    Root,
    /// A swap area (the guest's, carried, or a new one).
    Swap,
    /// The filesystem the guest mounts at `/boot`.
    Boot,
    /// Another volume of the guest, carried as it is.
    Data,
    /// The MBR extended partition that holds the logical ones.
    Extended,
}

impl PartitionRole {
    /// The short name the plan prints.
    pub fn short(self) -> &'static str {
        match self {
            PartitionRole::Root => "root",
            PartitionRole::Swap => "swap",
            PartitionRole::Boot => "boot",
            PartitionRole::Data => "data",
            PartitionRole::Extended => "ext",
        }
    }
}

/// A volume of the guest that gets a partition of its own beside the root: its role
/// ([`PartitionRole::Boot`], [`PartitionRole::Data`] or [`PartitionRole::Swap`]), its size
/// (rounded up to 1 MiB) and its index in the inspection's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Carried {
    pub role: PartitionRole,
    pub bytes: u64,
    pub volume: usize,
}

/// MBR type of the extended partition written for logical partitions.
pub const TYPE_EXTENDED: u8 = 0x05;
/// Most primary partitions an MBR holds.
pub const MBR_PRIMARIES: usize = 4;

/// A cylinder/head/sector address as stored in an MBR entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Chs {
    pub cylinder: u16,
    pub head: u8,
    pub sector: u8,
}

/// Geometry used for CHS fields: 255 heads, 63 sectors per track (what fdisk and every
/// BIOS use for LBA-translated disks).
pub const CHS_HEADS: u64 = 255;
pub const CHS_SECTORS: u64 = 63;

/// LBA to CHS with 255/63 geometry; addresses beyond cylinder 1023 are clamped to
/// 1023/254/63, the conventional "use LBA" marker.
pub fn lba_to_chs(lba: u64) -> Chs {
    let cylinder = lba / (CHS_HEADS * CHS_SECTORS);
    if cylinder > 1023 {
        return Chs {
            cylinder: 1023,
            head: 254,
            sector: 63,
        };
    }
    Chs {
        cylinder: cylinder as u16,
        head: ((lba / CHS_SECTORS) % CHS_HEADS) as u8,
        sector: (lba % CHS_SECTORS + 1) as u8,
    }
}

/// One partition of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlannedPartition {
    /// 1-based number as Linux names it (1-4 primary, 5 and up logical).
    pub number: u8,
    /// The volume of the guest it carries (index in the inspection's volumes); `None` for
    /// the root (see the inspection), a new swap and the extended container.
    pub volume: Option<usize>,
    pub role: PartitionRole,
    /// MBR type byte.
    pub type_code: u8,
    /// Active flag.
    pub bootable: bool,
    pub start_lba: u64,
    pub sectors: u64,
    pub first_chs: Chs,
    pub last_chs: Chs,
}

impl PlannedPartition {
    /// First byte of the partition.
    pub fn start_bytes(&self) -> u64 {
        self.start_lba * SECTOR_SIZE
    }
    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.sectors * SECTOR_SIZE
    }
    /// One past the last byte.
    pub fn end_bytes(&self) -> u64 {
        self.start_bytes() + self.len_bytes()
    }
}

/// Why the filesystem grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum GrowReason {
    /// The user asked for a larger root partition.
    Requested,
    /// The graft and its margin do not fit in the free space.
    GraftRoom { free_bytes: u64, needed_bytes: u64 },
}

/// The filesystem must be grown after the copy (resize2fs) to `to_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GrowPlan {
    pub from_bytes: u64,
    pub to_bytes: u64,
    pub reason: GrowReason,
}

/// The target disk, computed before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskPlan {
    pub sector_size: u64,
    /// Total size of the image.
    pub disk_bytes: u64,
    /// MBR disk signature (bytes 0x1B8..0x1BC).
    pub disk_signature: u32,
    pub partitions: Vec<PlannedPartition>,
    pub source: SourceSpace,
    pub graft_bytes: u64,
    pub margin_bytes: u64,
    /// Set when the filesystem must be grown to fill partition 1.
    pub grow: Option<GrowPlan>,
}

impl DiskPlan {
    /// The guest root's partition.
    pub fn root(&self) -> &PlannedPartition {
        self.partitions
            .iter()
            .find(|p| p.role == PartitionRole::Root)
            .expect("a plan has a root")
    }

    /// The new swap partition (not a carried one), if any.
    pub fn swap(&self) -> Option<&PlannedPartition> {
        self.partitions
            .iter()
            .find(|p| p.role == PartitionRole::Swap && p.volume.is_none())
    }

    /// The partitions that carry a volume of the guest other than the root.
    pub fn carried(&self) -> impl Iterator<Item = &PlannedPartition> {
        self.partitions.iter().filter(|p| p.volume.is_some())
    }

    /// The partition with the boot flag (`/boot` when separate, else the root).
    pub fn boot_partition(&self) -> &PlannedPartition {
        self.partitions
            .iter()
            .find(|p| p.bootable)
            .unwrap_or_else(|| self.root())
    }

    /// Size of the root filesystem once the plan is carried out.
    pub fn final_fs_bytes(&self) -> u64 {
        self.grow.map_or(self.source.fs_bytes, |g| g.to_bytes)
    }
}

/// Planning failures, before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the requested {what} size {} is too small: at least {} ({needed} bytes) is needed for the {} filesystem{}{}", human(*requested), human(*needed), human(*fs_bytes), if *graft_bytes > 0 { format!(" plus {} for the graft and a {} margin", human(*graft_bytes), human(*margin_bytes)) } else { String::new() }, if *what == "disk" { " and the swap partition" } else { "" })]
    TargetTooSmall {
        /// "root partition" or "disk".
        what: &'static str,
        requested: u64,
        needed: u64,
        fs_bytes: u64,
        graft_bytes: u64,
        margin_bytes: u64,
    },
    #[error("a {} disk is beyond what an MBR partition table can address (2 TiB)", human(*bytes))]
    TooLargeForMbr { bytes: u64 },
    /// The guest's separate `/boot` has too little room for the kernel, initrd and GRUB
    /// files (with the graft margin) and cannot be grown.
    #[error("the guest's /boot filesystem ({}) has {} free, but the kernel, initrd and GRUB files need {} ({needed_bytes} bytes, with a {} margin); it cannot be grown: {why}", human(*fs_bytes), human(*free_bytes), human(*needed_bytes), human(*margin_bytes))]
    BootTooSmall {
        fs_bytes: u64,
        free_bytes: u64,
        needed_bytes: u64,
        margin_bytes: u64,
        why: String,
    },
    #[error("cannot build the partition table: {why}")]
    Mbr { why: String },
    /// A GPT layout that cannot be made, or the `gpt` crate refused it (layout::gpt).
    #[error("GPT layout: {why}")]
    Gpt { why: String },
    #[error(transparent)]
    Write(#[from] OutputError),
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The graft margin for a filesystem of `fs_bytes`: max(10%, 64 MiB).
pub fn margin_for(fs_bytes: u64) -> u64 {
    (fs_bytes / 10).max(MIN_MARGIN_BYTES)
}

/// Room in a separate `/boot` for `graft_bytes` (kernel, initrd, GRUB files): the same
/// rule as the root's (free space for the graft plus [`margin_for`] the filesystem).
/// `None` when it fits; else the grow that makes it fit, or, when `cannot_grow` says
/// why it may not grow, [`PlanError::BootTooSmall`] with both sizes.
pub fn plan_boot_room(
    boot: &SourceSpace,
    graft_bytes: u64,
    cannot_grow: Option<String>,
) -> Result<Option<GrowPlan>, PlanError> {
    let margin = margin_for(boot.fs_bytes);
    let needed = graft_bytes.saturating_add(margin);
    let deficit = needed.saturating_sub(boot.free_bytes);
    if deficit == 0 {
        return Ok(None);
    }
    if let Some(why) = cannot_grow {
        return Err(PlanError::BootTooSmall {
            fs_bytes: boot.fs_bytes,
            free_bytes: boot.free_bytes,
            needed_bytes: needed,
            margin_bytes: margin,
            why,
        });
    }
    Ok(Some(GrowPlan {
        from_bytes: boot.fs_bytes,
        to_bytes: align_up(
            boot.fs_bytes.saturating_add(deficit.max(ALIGN_BYTES)),
            ALIGN_BYTES,
        ),
        reason: GrowReason::GraftRoom {
            free_bytes: boot.free_bytes,
            needed_bytes: needed,
        },
    }))
}

/// Plan the target disk: the root and, when `opts.swap_bytes` is not 0, a new swap.
pub fn plan(source: &SourceSpace, opts: &PlanOptions) -> Result<DiskPlan, PlanError> {
    plan_with(source, opts, &[])
}

/// Plan the target disk with the guest's other volumes: in order a separate `/boot`, the
/// root, the [`PartitionRole::Data`] volumes in the order given, the swaps (carried ones,
/// then a new one of `opts.swap_bytes`). Up to four partitions are primaries; with more,
/// partitions 1-3 are primaries and partition 4 is an extended partition holding the
/// others as logical partitions 5, 6, … (each after a 1 MiB gap holding its EBR).
pub fn plan_with(
    source: &SourceSpace,
    opts: &PlanOptions,
    carried: &[Carried],
) -> Result<DiskPlan, PlanError> {
    let fs = source.fs_bytes;
    let margin = margin_for(fs);
    let needed_free = opts.graft_bytes.saturating_add(margin);
    let deficit = needed_free.saturating_sub(source.free_bytes);
    // resize2fs on a regular file at an offset needs the growth to cover the partition
    // offset (see e2fs_tools::grow): the lead-in, and a separate /boot placed before the
    // root.
    let root_offset = ALIGN_BYTES
        + carried
            .iter()
            .filter(|c| c.role == PartitionRole::Boot)
            .map(|c| align_up(c.bytes, ALIGN_BYTES))
            .sum::<u64>();
    let min_root = if deficit > 0 {
        align_up(fs.saturating_add(deficit.max(root_offset)), ALIGN_BYTES)
    } else {
        align_up(fs, ALIGN_BYTES)
    };
    let swap_bytes = align_up(opts.swap_bytes, ALIGN_BYTES);
    let too_small = |what, requested, needed| PlanError::TargetTooSmall {
        what,
        requested,
        needed,
        fs_bytes: fs,
        graft_bytes: opts.graft_bytes,
        margin_bytes: margin,
    };
    let requested_root = match (opts.root_bytes, opts.disk_bytes) {
        (Some(req), _) => {
            let req_aligned = align_up(req, ALIGN_BYTES);
            if req_aligned < min_root {
                return Err(too_small("root partition", req, min_root));
            }
            Some(req_aligned)
        }
        (None, Some(disk)) => {
            let others: u64 = carried
                .iter()
                .map(|c| align_up(c.bytes, ALIGN_BYTES) + ALIGN_BYTES)
                .sum();
            let lead_and_swap = ALIGN_BYTES + swap_bytes + others;
            let root = disk.saturating_sub(lead_and_swap) / ALIGN_BYTES * ALIGN_BYTES;
            if root < min_root {
                return Err(too_small("disk", disk, lead_and_swap + min_root));
            }
            Some(root)
        }
        (None, None) => None,
    };
    let root_bytes = requested_root.unwrap_or(min_root);
    let bs = u64::from(source.block_size.max(1));
    let fs_target = root_bytes / bs * bs;
    let grow = if deficit > 0 {
        Some(GrowPlan {
            from_bytes: fs,
            to_bytes: fs_target,
            reason: GrowReason::GraftRoom {
                free_bytes: source.free_bytes,
                needed_bytes: needed_free,
            },
        })
    } else if requested_root.is_some() && fs_target >= fs + root_offset {
        Some(GrowPlan {
            from_bytes: fs,
            to_bytes: fs_target,
            reason: GrowReason::Requested,
        })
    } else {
        None
    };

    // In disk order: (role, bytes, volume).
    let mut order: Vec<(PartitionRole, u64, Option<usize>)> = Vec::new();
    let boot_separate = carried.iter().any(|c| c.role == PartitionRole::Boot);
    for c in carried.iter().filter(|c| c.role == PartitionRole::Boot) {
        order.push((c.role, align_up(c.bytes, ALIGN_BYTES), Some(c.volume)));
    }
    order.push((PartitionRole::Root, root_bytes, None));
    for role in [PartitionRole::Data, PartitionRole::Swap] {
        for c in carried.iter().filter(|c| c.role == role) {
            order.push((c.role, align_up(c.bytes, ALIGN_BYTES), Some(c.volume)));
        }
    }
    if swap_bytes > 0 {
        order.push((PartitionRole::Swap, swap_bytes, None));
    }
    if order.len() > 255 - MBR_PRIMARIES {
        return Err(PlanError::Mbr {
            why: format!(
                "{} partitions are more than this planner writes",
                order.len()
            ),
        });
    }
    let logicals = order.len() > MBR_PRIMARIES;
    let mut partitions = Vec::with_capacity(order.len() + 1);
    let mut next = ALIGN_BYTES;
    let push = |partitions: &mut Vec<PlannedPartition>,
                number: u8,
                role: PartitionRole,
                volume: Option<usize>,
                start: u64,
                bytes: u64| {
        let start_lba = start / SECTOR_SIZE;
        let sectors = bytes / SECTOR_SIZE;
        let type_code = match role {
            PartitionRole::Swap => TYPE_SWAP,
            PartitionRole::Extended => TYPE_EXTENDED,
            _ => TYPE_LINUX,
        };
        let bootable = match role {
            PartitionRole::Boot => true,
            PartitionRole::Root => !boot_separate,
            _ => false,
        };
        partitions.push(PlannedPartition {
            number,
            volume,
            role,
            type_code,
            bootable,
            start_lba,
            sectors,
            first_chs: lba_to_chs(start_lba),
            last_chs: lba_to_chs(start_lba + sectors - 1),
        });
    };
    for (i, &(role, bytes, volume)) in order.iter().enumerate() {
        if logicals && i >= MBR_PRIMARIES - 1 {
            // Room for this logical partition's EBR, 1 MiB before it.
            next += ALIGN_BYTES;
            push(&mut partitions, (i + 2) as u8, role, volume, next, bytes);
        } else {
            push(&mut partitions, (i + 1) as u8, role, volume, next, bytes);
        }
        next += bytes;
    }
    if logicals {
        let first = &partitions[MBR_PRIMARIES - 1];
        let ext_start = first.start_bytes() - ALIGN_BYTES;
        push(
            &mut partitions,
            MBR_PRIMARIES as u8,
            PartitionRole::Extended,
            None,
            ext_start,
            next - ext_start,
        );
        partitions.sort_by_key(|p| p.number);
    }
    let disk_bytes = next;
    if disk_bytes / SECTOR_SIZE > u64::from(u32::MAX) {
        return Err(PlanError::TooLargeForMbr { bytes: disk_bytes });
    }
    let disk_signature = opts.disk_signature.unwrap_or_else(random_signature);
    Ok(DiskPlan {
        sector_size: SECTOR_SIZE,
        disk_bytes,
        disk_signature,
        partitions,
        source: *source,
        graft_bytes: opts.graft_bytes,
        margin_bytes: margin,
        grow,
    })
}

/// A random non-zero disk signature.
fn random_signature() -> u32 {
    loop {
        let b = uuid::Uuid::new_v4();
        let s = u32::from_le_bytes([
            b.as_bytes()[0],
            b.as_bytes()[1],
            b.as_bytes()[2],
            b.as_bytes()[3],
        ]);
        if s != 0 {
            return s;
        }
    }
}

/// Write the plan's partition table to sector 0 of `dst`, keeping bytes 0..0x1B8 (the
/// boot code area) as they are.
pub fn write_mbr<D: OutputDevice>(dst: &D, plan: &DiskPlan) -> Result<(), PlanError> {
    let mut boot = [0u8; 440];
    dst.read_at(0, &mut boot).map_err(|e| {
        output::write_error(dst.backing_file(), "cannot read the boot code area of", e)
    })?;
    let mut header = mbrman::MBRHeader::new(plan.disk_signature.to_le_bytes());
    header.bootstrap_code = boot;
    for p in plan.partitions.iter().filter(|p| p.number <= 4) {
        let lba = |v: u64| {
            u32::try_from(v).map_err(|_| PlanError::TooLargeForMbr {
                bytes: plan.disk_bytes,
            })
        };
        let chs = |c: Chs| mbrman::CHS::new(c.cylinder, c.head, c.sector);
        let entry = mbrman::MBRPartitionEntry {
            boot: if p.bootable {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: chs(p.first_chs),
            sys: p.type_code,
            last_chs: chs(p.last_chs),
            starting_lba: lba(p.start_lba)?,
            sectors: lba(p.sectors)?,
        };
        let slot = header
            .get_mut(usize::from(p.number))
            .ok_or_else(|| PlanError::Mbr {
                why: format!("no MBR slot for partition {}", p.number),
            })?;
        *slot = entry;
    }
    let mut w = crate::window::FileWindow::new(dst, 0, SECTOR_SIZE);
    header.write_into(&mut w).map_err(|e| match e {
        mbrman::Error::Io(io) => PlanError::Write(output::write_error(
            dst.backing_file(),
            "cannot write the partition table to",
            io,
        )),
        other => PlanError::Mbr {
            why: other.to_string(),
        },
    })?;
    write_ebrs(dst, plan)
}

/// The chain of Extended Boot Records for the logical partitions (the layout
/// `partition::ebr` reads): the EBR of each logical partition sits 1 MiB before it; its
/// first entry points at the partition (start relative to the EBR), its second at the
/// next EBR (start relative to the extended partition, length up to the end of the next
/// logical partition).
fn write_ebrs<D: OutputDevice>(dst: &D, plan: &DiskPlan) -> Result<(), PlanError> {
    let Some(ext) = plan
        .partitions
        .iter()
        .find(|p| p.role == PartitionRole::Extended)
    else {
        return Ok(());
    };
    let logicals: Vec<&PlannedPartition> =
        plan.partitions.iter().filter(|p| p.number > 4).collect();
    let gap = ALIGN_BYTES / SECTOR_SIZE;
    let too_large = || PlanError::TooLargeForMbr {
        bytes: plan.disk_bytes,
    };
    let entry =
        |sector: &mut [u8; 512], slot: usize, type_code: u8, rel: u64, count: u64, abs: u64| {
            let at = 446 + slot * 16;
            let first = lba_to_chs(abs);
            let last = lba_to_chs(abs + count - 1);
            let chs = |c: Chs| {
                [
                    c.head,
                    (c.sector & 0x3f) | (((c.cylinder >> 8) as u8) << 6),
                    c.cylinder as u8,
                ]
            };
            sector[at + 1..at + 4].copy_from_slice(&chs(first));
            sector[at + 4] = type_code;
            sector[at + 5..at + 8].copy_from_slice(&chs(last));
            let rel = u32::try_from(rel).map_err(|_| too_large())?;
            let count = u32::try_from(count).map_err(|_| too_large())?;
            sector[at + 8..at + 12].copy_from_slice(&rel.to_le_bytes());
            sector[at + 12..at + 16].copy_from_slice(&count.to_le_bytes());
            Ok::<(), PlanError>(())
        };
    for (k, p) in logicals.iter().enumerate() {
        let ebr_lba = p.start_lba - gap;
        let mut sector = [0u8; 512];
        entry(&mut sector, 0, p.type_code, gap, p.sectors, p.start_lba)?;
        if let Some(n) = logicals.get(k + 1) {
            let next_ebr = n.start_lba - gap;
            entry(
                &mut sector,
                1,
                TYPE_EXTENDED,
                next_ebr - ext.start_lba,
                n.start_lba + n.sectors - next_ebr,
                next_ebr,
            )?;
        }
        sector[510] = 0x55;
        sector[511] = 0xAA;
        dst.write_at(ebr_lba * SECTOR_SIZE, &sector).map_err(|e| {
            PlanError::Write(output::write_error(
                dst.backing_file(),
                "cannot write a logical partition's EBR to",
                e,
            ))
        })?;
    }
    Ok(())
}

/// Bytes in binary units, one decimal ("1.5 GiB", "512 MiB", "4096 B").
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || (v.fract() == 0.0) {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for DiskPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Target disk: {} ({} bytes), MBR, {}-byte sectors, disk signature 0x{:08x}",
            human(self.disk_bytes),
            self.disk_bytes,
            self.sector_size,
            self.disk_signature
        )?;
        writeln!(f, "  #  role  type  boot  start LBA   end LBA     size")?;
        for p in &self.partitions {
            writeln!(
                f,
                "  {}  {:<4}  0x{:02x}  {:<4}  {:<10}  {:<10}  {}",
                p.number,
                p.role.short(),
                p.type_code,
                if p.bootable { "*" } else { "" },
                p.start_lba,
                p.start_lba + p.sectors - 1,
                human(p.len_bytes())
            )?;
        }
        writeln!(
            f,
            "Root filesystem: {}, {} free for users; the graft adds {}, margin {}",
            human(self.source.fs_bytes),
            human(self.source.free_bytes),
            human(self.graft_bytes),
            human(self.margin_bytes)
        )?;
        match self.grow {
            None => write!(f, "The filesystem is copied at its current size."),
            Some(g) => {
                let why = match g.reason {
                    GrowReason::Requested => "as requested".to_string(),
                    GrowReason::GraftRoom {
                        free_bytes,
                        needed_bytes,
                    } => format!(
                        "automatically: {} free is less than the {} the graft and margin need",
                        human(free_bytes),
                        human(needed_bytes)
                    ),
                };
                write!(
                    f,
                    "The filesystem will be grown from {} to {} after the copy, {why}.",
                    human(g.from_bytes),
                    human(g.to_bytes)
                )
            }
        }
    }
}

impl PlanError {
    /// What the error concerns: sizes that do not fit are the options', a failed write
    /// the output's.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            PlanError::TargetTooSmall { .. } | PlanError::TooLargeForMbr { .. } => K::Options,
            PlanError::BootTooSmall { .. } => K::Input,
            PlanError::Write(o) => o.kind(),
            _ => K::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn src(fs: u64, free: u64) -> SourceSpace {
        SourceSpace {
            fs_bytes: fs,
            free_bytes: free,
            block_size: 4096,
        }
    }

    #[test]
    fn a_small_boot_grows_or_says_why_not() {
        let boot = SourceSpace {
            fs_bytes: 32 * MIB,
            free_bytes: 30 * MIB,
            block_size: 1024,
        };
        assert_eq!(
            plan_boot_room(&src(GIB, GIB / 2), 40 * MIB, None).unwrap(),
            None
        );
        let g = plan_boot_room(&boot, 40 * MIB, None).unwrap().unwrap();
        // 40 MiB + 64 MiB margin needed, 30 MiB free: 74 MiB more.
        assert_eq!((g.from_bytes, g.to_bytes), (32 * MIB, 106 * MIB));
        match plan_boot_room(&boot, 40 * MIB, Some("not clean".into())) {
            Err(e @ PlanError::BootTooSmall { .. }) => {
                let m = e.to_string();
                assert!(m.contains("30 MiB free") && m.contains("not clean"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chs_of_common_lbas() {
        assert_eq!(
            lba_to_chs(0),
            Chs {
                cylinder: 0,
                head: 0,
                sector: 1
            }
        );
        // LBA 2048 = cylinder 0, head 32, sector 33 (as fdisk writes for 1 MiB alignment).
        assert_eq!(
            lba_to_chs(2048),
            Chs {
                cylinder: 0,
                head: 32,
                sector: 33
            }
        );
        assert_eq!(
            lba_to_chs(16450560),
            Chs {
                cylinder: 1023,
                head: 254,
                sector: 63
            }
        );
        assert_eq!(
            lba_to_chs(u64::from(u32::MAX)),
            Chs {
                cylinder: 1023,
                head: 254,
                sector: 63
            }
        );
        assert_eq!(
            lba_to_chs(255 * 63),
            Chs {
                cylinder: 1,
                head: 0,
                sector: 1
            }
        );
    }

    #[test]
    fn enough_free_space_keeps_the_size() {
        let p = plan(
            &src(4 * GIB, 2 * GIB),
            &PlanOptions {
                graft_bytes: 400 * MIB,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.grow.is_none());
        assert_eq!(p.root().start_lba, 2048);
        assert_eq!(p.root().len_bytes(), 4 * GIB);
        assert!(p.root().bootable);
        let s = p.swap().unwrap();
        assert_eq!(
            (s.start_bytes(), s.len_bytes(), s.type_code),
            (MIB + 4 * GIB, 512 * MIB, 0x82)
        );
        assert_eq!(p.disk_bytes, MIB + 4 * GIB + 512 * MIB);
        let text = p.to_string();
        assert!(
            text.contains("0x83") && text.contains("copied at its current size"),
            "{text}"
        );
    }

    #[test]
    fn too_little_free_space_grows_partition_one() {
        // 1 GiB fs with 100 MiB free; graft 300 MiB, margin 102.4 MiB.
        let p = plan(
            &src(GIB, 100 * MIB),
            &PlanOptions {
                graft_bytes: 300 * MIB,
                ..Default::default()
            },
        )
        .unwrap();
        let g = p.grow.unwrap();
        let needed = 300 * MIB + GIB / 10;
        assert_eq!(
            g.reason,
            GrowReason::GraftRoom {
                free_bytes: 100 * MIB,
                needed_bytes: needed
            }
        );
        assert!(p.root().len_bytes() >= GIB + needed - 100 * MIB);
        assert_eq!(p.root().len_bytes() % MIB, 0);
        assert_eq!(g.to_bytes, p.root().len_bytes());
        assert!(p.to_string().contains("automatically"), "{p}");
    }

    #[test]
    fn explicit_target_too_small_names_the_size_needed() {
        let e = plan(
            &src(GIB, 100 * MIB),
            &PlanOptions {
                graft_bytes: 300 * MIB,
                root_bytes: Some(GIB),
                ..Default::default()
            },
        )
        .unwrap_err();
        match e {
            PlanError::TargetTooSmall { needed, .. } => assert!(needed > GIB),
            other => panic!("{other}"),
        }
        let e = plan(
            &src(2 * GIB, GIB),
            &PlanOptions {
                root_bytes: Some(GIB),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 2 GiB"), "{e}");
    }

    #[test]
    fn explicit_larger_target_grows_and_no_swap() {
        let p = plan(
            &src(GIB, GIB / 2),
            &PlanOptions {
                root_bytes: Some(3 * GIB),
                swap_bytes: 0,
                disk_signature: Some(0xdeadbeef),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.grow.unwrap().reason, GrowReason::Requested);
        assert_eq!(p.grow.unwrap().to_bytes, 3 * GIB);
        assert!(p.swap().is_none());
        assert_eq!(p.disk_bytes, MIB + 3 * GIB);
        assert_eq!(p.disk_signature, 0xdeadbeef);
    }

    #[test]
    fn explicit_disk_size_leaves_room_for_swap() {
        let p = plan(
            &src(GIB, GIB / 2),
            &PlanOptions {
                disk_bytes: Some(4 * GIB),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.disk_bytes <= 4 * GIB);
        assert_eq!(p.root().len_bytes(), 4 * GIB - MIB - 512 * MIB);
        assert_eq!(p.grow.unwrap().reason, GrowReason::Requested);
        let e = plan(
            &src(GIB, GIB / 2),
            &PlanOptions {
                disk_bytes: Some(GIB),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("disk size") && e.to_string().contains("swap"),
            "{e}"
        );
        match e {
            PlanError::TargetTooSmall { needed, .. } => assert_eq!(needed, MIB + 512 * MIB + GIB),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn mbr_bytes_and_boot_code_preserved() {
        let p = plan(
            &src(GIB, GIB / 2),
            &PlanOptions {
                disk_signature: Some(0x11223344),
                ..Default::default()
            },
        )
        .unwrap();
        let tmp = tempfile::tempfile().unwrap();
        tmp.set_len(p.disk_bytes).unwrap();
        let boot: Vec<u8> = (0..BOOT_CODE_BYTES).map(|i| (i % 251) as u8 + 1).collect();
        tmp.write_all_at(&boot, 0).unwrap();
        write_mbr(&tmp, &p).unwrap();
        let mut s = [0u8; 512];
        tmp.read_exact_at(&mut s, 0).unwrap();
        assert_eq!(&s[..BOOT_CODE_BYTES], &boot[..]);
        assert_eq!(&s[0x1B8..0x1BC], &0x11223344u32.to_le_bytes());
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        let e1 = &s[0x1BE..0x1CE];
        assert_eq!(e1[0], 0x80);
        // CHS of LBA 2048: head 32, sector 33, cylinder 0.
        assert_eq!(&e1[1..4], &[32, 33, 0]);
        assert_eq!(e1[4], 0x83);
        assert_eq!(u32::from_le_bytes(e1[8..12].try_into().unwrap()), 2048);
        let e2 = &s[0x1CE..0x1DE];
        assert_eq!(e2[4], 0x82);
        // Last LBA of p2 = 3147775 = C 195, H 239, S 44.
        assert_eq!(&e2[5..8], &[239, 44, 195]);

        // A 10 GiB root ends beyond cylinder 1023: clamped to 1023/254/63 = fe ff ff.
        let p = plan(&src(10 * GIB, 5 * GIB), &PlanOptions::default()).unwrap();
        write_mbr(&tmp, &p).unwrap();
        tmp.read_exact_at(&mut s, 0).unwrap();
        assert_eq!(&s[0x1BE + 5..0x1BE + 8], &[0xfe, 0xff, 0xff]);
        assert_eq!(&s[..BOOT_CODE_BYTES], &boot[..]);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512 * MIB), "512 MiB");
        assert_eq!(human(3 * GIB / 2), "1.5 GiB");
        assert_eq!(human(100), "100 B");
    }
}
