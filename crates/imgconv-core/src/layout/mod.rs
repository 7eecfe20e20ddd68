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

use crate::output::{self, OutputError};
use crate::source::FsInfo;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;

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
    Root,
    Swap,
}

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
    /// 1-based number (p1 = root).
    pub number: u8,
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
    /// Partition 1, the guest root.
    pub fn root(&self) -> &PlannedPartition {
        &self.partitions[0]
    }

    /// The swap partition, if any.
    pub fn swap(&self) -> Option<&PlannedPartition> {
        self.partitions
            .iter()
            .find(|p| p.role == PartitionRole::Swap)
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

/// Plan the target disk.
pub fn plan(source: &SourceSpace, opts: &PlanOptions) -> Result<DiskPlan, PlanError> {
    let fs = source.fs_bytes;
    let margin = margin_for(fs);
    let needed_free = opts.graft_bytes.saturating_add(margin);
    let deficit = needed_free.saturating_sub(source.free_bytes);
    // A grow is at least one alignment unit: resize2fs on a regular file at an offset
    // needs the growth to cover the partition offset (see e2fs_tools::grow).
    let min_root = if deficit > 0 {
        align_up(fs.saturating_add(deficit.max(ALIGN_BYTES)), ALIGN_BYTES)
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
            let lead_and_swap = ALIGN_BYTES + swap_bytes;
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
    } else if requested_root.is_some() && fs_target >= fs + ALIGN_BYTES {
        Some(GrowPlan {
            from_bytes: fs,
            to_bytes: fs_target,
            reason: GrowReason::Requested,
        })
    } else {
        None
    };

    let mut partitions = Vec::with_capacity(2);
    let mut next = ALIGN_BYTES;
    let mut add = |number, role, type_code, bootable, bytes: u64| {
        let start_lba = next / SECTOR_SIZE;
        let sectors = bytes / SECTOR_SIZE;
        partitions.push(PlannedPartition {
            number,
            role,
            type_code,
            bootable,
            start_lba,
            sectors,
            first_chs: lba_to_chs(start_lba),
            last_chs: lba_to_chs(start_lba + sectors - 1),
        });
        next += bytes;
    };
    add(1, PartitionRole::Root, TYPE_LINUX, true, root_bytes);
    if swap_bytes > 0 {
        add(2, PartitionRole::Swap, TYPE_SWAP, false, swap_bytes);
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
pub fn write_mbr(dst: &File, plan: &DiskPlan) -> Result<(), PlanError> {
    let mut boot = [0u8; 440];
    // A fresh or short file reads as zeros; only a real error matters.
    let mut got = 0;
    while got < boot.len() {
        match dst.read_at(&mut boot[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(output::write_error(dst, "cannot read the boot code area of", e).into())
            }
        }
    }
    let mut header = mbrman::MBRHeader::new(plan.disk_signature.to_le_bytes());
    header.bootstrap_code = boot;
    for p in &plan.partitions {
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
    let mut w: &File = dst;
    header.write_into(&mut w).map_err(|e| match e {
        mbrman::Error::Io(io) => PlanError::Write(output::write_error(
            dst,
            "cannot write the partition table to",
            io,
        )),
        other => PlanError::Mbr {
            why: other.to_string(),
        },
    })?;
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
                match p.role {
                    PartitionRole::Root => "root",
                    PartitionRole::Swap => "swap",
                },
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
            PlanError::Write(o) => o.kind(),
            _ => K::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
