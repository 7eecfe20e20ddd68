//! The GPT disk plan for `--firmware uefi` and `--firmware hybrid`, and its writer: the
//! GPT counterpart of the MBR plan in [`crate::layout`]. Root and swap sizes come from
//! the MBR planner (which decides the graft room and growth); this module places them
//! on a GPT disk with the boot partitions.
//!
//! Layout, 512-byte sectors, everything aligned to 1 MiB, in disk order:
//!
//! | disk order | hybrid                         | uefi                     |
//! |---|---|---|
//! | LBA 0..2047 | protective MBR (+ GRUB boot.img), GPT header and entries | same |
//! | 1 MiB       | BIOS boot, 3 MiB (GRUB core.img)  | ESP |
//! | 4 MiB       | ESP                               | — |
//! | then        | root                              | root |
//! | then        | swap (optional)                   | swap (optional) |
//! | last 1 MiB  | backup GPT (33 sectors) and slack | same |
//!
//! Partition NUMBERS follow roles, not disk order: root is always partition 1 and swap
//! partition 2, as in the MBR layout, so `/dev/vda1` is the root whatever the firmware and
//! GRUB's prefix is `(,gpt1)/boot/grub`; the ESP and the BIOS boot partition come after
//! (Debian's cloud images also keep root as p1 with the boot partitions at the disk's
//! start; they use p14/p15, but the `gpt` crate writes entries contiguously, and numbers
//! 1..n avoid empty slots). sfdisk notes that the entries are "not in disk order"; that
//! is harmless.
//!
//! Type GUIDs: BIOS boot `21686148-…`, ESP `C12A7328-…`, root: plain Linux filesystem
//! `0FC63DAF-…` (what Debian's cloud images use), NOT the discoverable "root x86-64"
//! `4F68BCE3-…`: a converted guest mounts its root from fstab/`root=UUID=`, and
//! systemd-gpt-auto-generator acting on a discoverable root (or on the swap) of a
//! converted guest with a different idea of its mounts would only add surprises. Swap
//! `0657FD6D-…`.
//!
//! The ESP's FAT volume serial is chosen here, so the fstab entry (written by the fixups,
//! before the ESP exists) and the ESP agree.

use super::PlanError;
use crate::blockio::OutputDevice;
use crate::output;
use crate::window::FileWindow;
use std::fmt;
use uuid::Uuid;

/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// Partition alignment (2048 sectors).
pub const ALIGN_BYTES: u64 = 1 << 20;
/// BIOS boot partition size (Debian cloud images: 3 MiB; GRUB wants ≥ 1 MiB).
pub const BIOS_BOOT_BYTES: u64 = 3 << 20;
/// Default ESP size (Debian cloud images: 124 MiB).
pub const DEFAULT_ESP_BYTES: u64 = 124 << 20;
/// Smallest ESP accepted: FAT32 needs 65525 clusters (32 MiB with 512-byte clusters);
/// 64 MiB leaves room for shim, GRUB and MokManager twice over (~11 MB).
pub const MIN_ESP_BYTES: u64 = 64 << 20;
/// Largest root or swap partition accepted (sizes stay far from overflow).
pub const MAX_PARTITION_BYTES: u64 = 1 << 50;
/// Largest ESP accepted.
pub const MAX_ESP_BYTES: u64 = 4 << 30;

/// BIOS boot partition type GUID.
pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// EFI System Partition type GUID.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Linux filesystem data type GUID (the root).
pub const TYPE_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Linux swap type GUID.
pub const TYPE_LINUX_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

// `uuid` is built without its serde feature: GUIDs serialize as their text.
fn ser_uuid<S: serde::Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(u)
}

fn ser_opt_uuid<S: serde::Serializer>(u: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.collect_str(u),
        None => s.serialize_none(),
    }
}

/// Which GPT layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GptFirmware {
    /// ESP, root, swap.
    Uefi,
    /// BIOS boot, ESP, root, swap: boots with UEFI and with a PC BIOS.
    Hybrid,
}

impl GptFirmware {
    /// The GPT layout for a firmware choice; `None` for BIOS (an MBR disk).
    pub fn from_firmware(f: crate::hardware::Firmware) -> Option<Self> {
        match f {
            crate::hardware::Firmware::Bios => None,
            crate::hardware::Firmware::Uefi => Some(GptFirmware::Uefi),
            crate::hardware::Firmware::Hybrid => Some(GptFirmware::Hybrid),
        }
    }
}

/// What a GPT partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GptRole {
    Root,
    Swap,
    Esp,
    BiosBoot,
    /// The filesystem the guest mounts at `/boot`.
    Boot,
    /// Another volume of the guest, carried as it is.
    Data,
}

impl GptRole {
    /// The partition type GUID.
    pub fn type_guid(self) -> Uuid {
        let s = match self {
            GptRole::Root | GptRole::Boot | GptRole::Data => TYPE_LINUX_FS,
            GptRole::Swap => TYPE_LINUX_SWAP,
            GptRole::Esp => TYPE_ESP,
            GptRole::BiosBoot => TYPE_BIOS_BOOT,
        };
        Uuid::parse_str(s).expect("constant GUID")
    }

    /// The GPT partition name written into the entry.
    pub fn name(self) -> &'static str {
        match self {
            GptRole::Root => "root",
            GptRole::Swap => "swap",
            GptRole::Boot => "boot",
            GptRole::Data => "data",
            GptRole::Esp => "EFI System Partition",
            GptRole::BiosBoot => "BIOS boot partition",
        }
    }

    fn short(self) -> &'static str {
        match self {
            GptRole::Root => "root",
            GptRole::Swap => "swap",
            GptRole::Boot => "boot",
            GptRole::Data => "data",
            GptRole::Esp => "esp",
            GptRole::BiosBoot => "bios",
        }
    }
}

/// Choices for [`plan_gpt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GptPlanOptions {
    pub firmware: GptFirmware,
    /// Size of the root partition (rounded up to 1 MiB); the MBR planner's root size.
    pub root_bytes: u64,
    /// Size of the swap partition (rounded up to 1 MiB); 0 for none.
    pub swap_bytes: u64,
    /// Size of the ESP (rounded up to 1 MiB).
    pub esp_bytes: u64,
    /// Disk GUID; random when `None`. Partition GUIDs are derived from it, so a fixed
    /// disk GUID gives reproducible output.
    #[serde(serialize_with = "ser_opt_uuid")]
    pub disk_guid: Option<Uuid>,
    /// FAT volume serial of the ESP; derived from the disk GUID when `None`.
    pub esp_volume_id: Option<u32>,
}

impl GptPlanOptions {
    /// Defaults: Debian's 124 MiB ESP, random identifiers.
    pub fn new(firmware: GptFirmware, root_bytes: u64, swap_bytes: u64) -> Self {
        GptPlanOptions {
            firmware,
            root_bytes,
            swap_bytes,
            esp_bytes: DEFAULT_ESP_BYTES,
            disk_guid: None,
            esp_volume_id: None,
        }
    }
}

/// One partition of the GPT plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GptPartition {
    /// 1-based number (entry index + 1; root = 1, or 2 after a separate /boot).
    pub number: u32,
    pub role: GptRole,
    /// The volume of the guest it carries (index in the inspection's volumes); `None`
    /// for the root, a new swap, the ESP and the BIOS boot partition.
    pub volume: Option<usize>,
    /// Unique partition GUID (`PARTUUID`).
    #[serde(serialize_with = "ser_uuid")]
    pub guid: Uuid,
    pub start_lba: u64,
    pub sectors: u64,
}

impl GptPartition {
    /// First byte.
    pub fn start_bytes(&self) -> u64 {
        self.start_lba * SECTOR_SIZE
    }
    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.sectors * SECTOR_SIZE
    }
    /// Last LBA (inclusive).
    pub fn end_lba(&self) -> u64 {
        self.start_lba + self.sectors - 1
    }
}

/// The GPT disk, computed before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GptPlan {
    pub firmware: GptFirmware,
    pub sector_size: u64,
    /// Total size of the image.
    pub disk_bytes: u64,
    #[serde(serialize_with = "ser_uuid")]
    pub disk_guid: Uuid,
    /// Partitions by number (1, 2, …).
    pub partitions: Vec<GptPartition>,
    /// FAT volume serial of the ESP.
    pub esp_volume_id: u32,
}

impl GptPlan {
    fn find(&self, role: GptRole) -> Option<&GptPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }
    /// The root partition (number 1).
    pub fn root(&self) -> &GptPartition {
        self.find(GptRole::Root).expect("a plan has a root")
    }
    /// The ESP.
    pub fn esp(&self) -> &GptPartition {
        self.find(GptRole::Esp).expect("a plan has an ESP")
    }
    /// The new swap partition (not a carried one), if any.
    pub fn swap(&self) -> Option<&GptPartition> {
        self.partitions
            .iter()
            .find(|p| p.role == GptRole::Swap && p.volume.is_none())
    }
    /// The partitions that carry a volume of the guest other than the root.
    pub fn carried(&self) -> impl Iterator<Item = &GptPartition> {
        self.partitions.iter().filter(|p| p.volume.is_some())
    }
    /// The BIOS boot partition (hybrid only).
    pub fn bios_boot(&self) -> Option<&GptPartition> {
        self.find(GptRole::BiosBoot)
    }
    /// The ESP's FAT serial as `blkid` prints it and fstab uses it: `ABCD-1234`.
    pub fn esp_serial(&self) -> String {
        fat_serial_text(self.esp_volume_id)
    }
    /// The partition GRUB reads its files from: a separate `/boot`, else the root.
    pub fn boot_partition(&self) -> &GptPartition {
        self.find(GptRole::Boot).unwrap_or_else(|| self.root())
    }
    /// GRUB's name of the root partition on its disk: `gpt1`.
    pub fn grub_root_partition(&self) -> String {
        format!("gpt{}", self.root().number)
    }
}

/// A FAT volume serial as `blkid`/fstab write it: high 16 bits, dash, low 16 bits.
pub fn fat_serial_text(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Bytes a GPT layout adds to the MBR layout with the same root and swap (the MBR
/// planner's disk is 1 MiB + root + swap): the BIOS boot partition (hybrid), the ESP
/// (rounded up to 1 MiB) and the last 1 MiB holding the backup GPT. To honour a total
/// disk size the user asked for, plan the MBR disk with `total - gpt_extra_bytes(..)`.
pub fn gpt_extra_bytes(firmware: GptFirmware, esp_bytes: u64) -> u64 {
    let bios = match firmware {
        GptFirmware::Hybrid => BIOS_BOOT_BYTES,
        GptFirmware::Uefi => 0,
    };
    bios + align_up(esp_bytes.min(MAX_ESP_BYTES)) + ALIGN_BYTES
}

/// 16 pseudo-random bytes derived from `seed` and `index` (CRC-32 rounds; not for
/// secrets, only for reproducible identifiers).
fn derived_bytes(seed: &Uuid, index: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (k, chunk) in out.chunks_mut(4).enumerate() {
        let mut h = crc32fast::Hasher::new();
        h.update(seed.as_bytes());
        h.update(&index.to_le_bytes());
        h.update(&(k as u32).to_le_bytes());
        chunk.copy_from_slice(&h.finalize().to_le_bytes());
    }
    out
}

/// A version-4-shaped GUID derived from the disk GUID.
fn derived_guid(seed: &Uuid, index: u32) -> Uuid {
    uuid::Builder::from_random_bytes(derived_bytes(seed, index)).into_uuid()
}

/// Plan the GPT disk: boot partitions, root and a new swap of `opts.swap_bytes`.
pub fn plan_gpt(opts: &GptPlanOptions) -> Result<GptPlan, PlanError> {
    plan_gpt_with(opts, &[])
}

/// Plan the GPT disk with the guest's other volumes (see [`super::plan_with`]): numbers
/// and disk order are a separate `/boot`, the root, the data volumes, the swaps, then the
/// ESP and the BIOS boot partition (numbers) which sit first on the disk (order).
pub fn plan_gpt_with(
    opts: &GptPlanOptions,
    carried: &[super::Carried],
) -> Result<GptPlan, PlanError> {
    if opts.root_bytes == 0 {
        return Err(PlanError::Gpt {
            why: "the root partition size is 0".into(),
        });
    }
    for (what, v) in [("root", opts.root_bytes), ("swap", opts.swap_bytes)] {
        if v > MAX_PARTITION_BYTES {
            return Err(PlanError::Gpt {
                why: format!(
                    "a {what} partition of {v} bytes is beyond the 1 PiB this planner accepts"
                ),
            });
        }
    }
    let esp_bytes = align_up(opts.esp_bytes.min(MAX_ESP_BYTES + 1));
    if !(MIN_ESP_BYTES..=MAX_ESP_BYTES).contains(&esp_bytes) {
        return Err(PlanError::Gpt {
            why: format!(
                "an ESP of {} bytes is outside {MIN_ESP_BYTES}..={MAX_ESP_BYTES}",
                opts.esp_bytes
            ),
        });
    }
    let disk_guid = opts.disk_guid.unwrap_or_else(Uuid::new_v4);
    let mut next = ALIGN_BYTES;
    let mut place = |bytes: u64| {
        let start = next;
        next += bytes;
        (start / SECTOR_SIZE, bytes / SECTOR_SIZE)
    };
    // Disk order first.
    let bios = (opts.firmware == GptFirmware::Hybrid).then(|| place(BIOS_BOOT_BYTES));
    let esp = place(esp_bytes);
    use super::PartitionRole as R;
    let mut ordered: Vec<(GptRole, (u64, u64), Option<usize>)> = Vec::new();
    for c in carried.iter().filter(|c| c.role == R::Boot) {
        ordered.push((GptRole::Boot, place(align_up(c.bytes)), Some(c.volume)));
    }
    ordered.push((GptRole::Root, place(align_up(opts.root_bytes)), None));
    for (role, gpt_role) in [(R::Data, GptRole::Data), (R::Swap, GptRole::Swap)] {
        for c in carried.iter().filter(|c| c.role == role) {
            if c.bytes > MAX_PARTITION_BYTES {
                return Err(PlanError::Gpt {
                    why: format!(
                        "a partition of {} bytes is beyond the 1 PiB this planner accepts",
                        c.bytes
                    ),
                });
            }
            ordered.push((gpt_role, place(align_up(c.bytes)), Some(c.volume)));
        }
    }
    if opts.swap_bytes > 0 {
        ordered.push((GptRole::Swap, place(align_up(opts.swap_bytes)), None));
    }
    // Room for the backup GPT (33 sectors), keeping the disk size 1 MiB aligned.
    let disk_bytes = next + ALIGN_BYTES;
    if ordered.len() + 2 > 128 {
        return Err(PlanError::Gpt {
            why: format!(
                "{} partitions are more than a GPT of 128 entries holds",
                ordered.len() + 2
            ),
        });
    }
    // Then numbers by role.
    let mut partitions = Vec::new();
    let mut add = |role: GptRole, (start_lba, sectors): (u64, u64), volume: Option<usize>| {
        let number = partitions.len() as u32 + 1;
        partitions.push(GptPartition {
            number,
            role,
            volume,
            guid: derived_guid(&disk_guid, number),
            start_lba,
            sectors,
        });
    };
    for (role, at, volume) in ordered {
        add(role, at, volume);
    }
    add(GptRole::Esp, esp, None);
    if let Some(b) = bios {
        add(GptRole::BiosBoot, b, None);
    }
    let esp_volume_id = opts.esp_volume_id.unwrap_or_else(|| {
        let b = derived_bytes(&disk_guid, 0);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    });
    Ok(GptPlan {
        firmware: opts.firmware,
        sector_size: SECTOR_SIZE,
        disk_bytes,
        disk_guid,
        partitions,
        esp_volume_id,
    })
}

/// Write the protective MBR, the primary and the backup GPT of `plan` to `out`, which
/// must be exactly `plan.disk_bytes` long. Sector 0 is rewritten whole (boot code area
/// zeroed), so for a hybrid disk GRUB's boot sector is installed AFTER this.
pub fn write_gpt<D: OutputDevice>(out: &D, plan: &GptPlan) -> Result<(), PlanError> {
    let len = out
        .disk_len()
        .map_err(|e| output::write_error(out.backing_file(), "cannot inspect", e))?;
    // A block device may be larger than the disk: the GPT then spans the whole device
    // (its backup at the device's end, where firmware and the kernel look for it).
    let device = out.raw_file().is_some_and(crate::blockdev::is_device_file);
    if len != plan.disk_bytes && !(device && len > plan.disk_bytes) {
        return Err(PlanError::Gpt {
            why: format!(
                "the output image is {len} bytes, the plan says {}",
                plan.disk_bytes
            ),
        });
    }
    // The crate's I/O errors keep their kind (no space, …); the rest are table errors.
    let gpt_err = |e: gpt::GptError| match e {
        gpt::GptError::Io(io) => PlanError::Write(output::write_error(
            out.backing_file(),
            "cannot write the GPT to",
            io,
        )),
        other => PlanError::Gpt {
            why: other.to_string(),
        },
    };
    let mut dev = FileWindow::new(out, 0, len);
    let sectors = len / SECTOR_SIZE;
    // The protective entry covers LBA 1..end, or 0xFFFFFFFF when the disk is larger.
    let pmbr_size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(pmbr_size)
        .overwrite_lba0(&mut dev)
        .map_err(|e| match e {
            gpt::mbr::MBRError::Io(io) => PlanError::Write(output::write_error(
                out.backing_file(),
                "cannot write the protective MBR to",
                io,
            )),
            other => PlanError::Gpt {
                why: format!("writing the protective MBR: {other}"),
            },
        })?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(dev, Some(plan.disk_guid))
        .map_err(gpt_err)?;
    let header = disk.header();
    let (first_usable, last_usable) = (header.first_usable, header.last_usable);
    let mut entries = std::collections::BTreeMap::new();
    for p in &plan.partitions {
        if p.start_lba < first_usable || p.end_lba() > last_usable {
            return Err(PlanError::Gpt {
                why: format!(
                    "partition {} (LBA {}..{}) lies outside the usable area {first_usable}..{last_usable}",
                    p.number,
                    p.start_lba,
                    p.end_lba()
                ),
            });
        }
        entries.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: p.role.type_guid(),
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: p.guid,
                first_lba: p.start_lba,
                last_lba: p.end_lba(),
                flags: 0,
                name: p.role.name().to_string(),
            },
        );
    }
    // The crate writes used entries contiguously from slot 0: numbers must be 1..=n.
    if entries.keys().copied().ne(1..=plan.partitions.len() as u32) {
        return Err(PlanError::Gpt {
            why: "partition numbers must be 1..n without gaps".into(),
        });
    }
    disk.update_partitions(entries).map_err(gpt_err)?;
    disk.write().map_err(gpt_err)?;
    Ok(())
}

/// Bytes in binary units ("124 MiB", "1.5 GiB").
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for GptPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Target disk: {} ({} bytes), GPT ({}), {}-byte sectors, disk GUID {}",
            human(self.disk_bytes),
            self.disk_bytes,
            match self.firmware {
                GptFirmware::Uefi => "UEFI",
                GptFirmware::Hybrid => "hybrid UEFI + BIOS",
            },
            self.sector_size,
            self.disk_guid
        )?;
        writeln!(
            f,
            "  #  role  type GUID                             start LBA   end LBA     size"
        )?;
        let mut by_start: Vec<&GptPartition> = self.partitions.iter().collect();
        by_start.sort_by_key(|p| p.start_lba);
        for p in by_start {
            writeln!(
                f,
                "  {}  {:<4}  {:<36}  {:<10}  {:<10}  {}",
                p.number,
                p.role.short(),
                p.role.type_guid().to_string().to_uppercase(),
                p.start_lba,
                p.end_lba(),
                human(p.len_bytes())
            )?;
        }
        write!(
            f,
            "ESP: FAT32, label EFI, serial {} (mounted at /boot/efi)",
            self.esp_serial()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    #[test]
    fn hybrid_layout_numbers_and_alignment() {
        let mut o = GptPlanOptions::new(GptFirmware::Hybrid, 1000 * MIB + 5, 512 * MIB);
        o.disk_guid = Some(Uuid::from_u128(0x1234));
        let p = plan_gpt(&o).unwrap();
        let roles: Vec<_> = p.partitions.iter().map(|x| (x.number, x.role)).collect();
        assert_eq!(
            roles,
            [
                (1, GptRole::Root),
                (2, GptRole::Swap),
                (3, GptRole::Esp),
                (4, GptRole::BiosBoot)
            ]
        );
        let bios = p.bios_boot().unwrap();
        assert_eq!((bios.start_lba, bios.sectors), (2048, 6144));
        assert_eq!((p.esp().start_lba, p.esp().sectors), (8192, 253952));
        assert_eq!(p.root().start_lba, 262144, "root at 128 MiB like Debian");
        assert_eq!(p.root().len_bytes(), 1001 * MIB, "rounded up to 1 MiB");
        assert_eq!(p.swap().unwrap().start_bytes(), 128 * MIB + 1001 * MIB);
        assert_eq!(p.disk_bytes, 128 * MIB + 1001 * MIB + 512 * MIB + MIB);
        for x in &p.partitions {
            assert_eq!(x.start_bytes() % MIB, 0);
            assert_eq!(x.len_bytes() % MIB, 0);
        }
        assert_eq!(p.grub_root_partition(), "gpt1");
        // Reproducible with a fixed disk GUID, all GUIDs distinct.
        let q = plan_gpt(&o).unwrap();
        assert_eq!(p, q);
        let mut guids: Vec<_> = p.partitions.iter().map(|x| x.guid).collect();
        guids.push(p.disk_guid);
        guids.sort();
        guids.dedup();
        assert_eq!(guids.len(), 5);
        assert_eq!(p.esp_serial().len(), 9);
        let text = p.to_string();
        assert!(
            text.contains("hybrid") && text.contains(TYPE_BIOS_BOOT),
            "{text}"
        );
    }

    #[test]
    fn extra_bytes_match_the_plan() {
        for fw in [GptFirmware::Uefi, GptFirmware::Hybrid] {
            for swap in [0, 512 * MIB] {
                let p = plan_gpt(&GptPlanOptions::new(fw, 3000 * MIB, swap)).unwrap();
                let mbr_disk = MIB + 3000 * MIB + swap;
                assert_eq!(
                    p.disk_bytes,
                    mbr_disk + gpt_extra_bytes(fw, DEFAULT_ESP_BYTES)
                );
            }
        }
    }

    #[test]
    fn firmware_choice_maps_to_a_layout() {
        use crate::hardware::Firmware;
        assert_eq!(GptFirmware::from_firmware(Firmware::Bios), None);
        assert_eq!(
            GptFirmware::from_firmware(Firmware::Uefi),
            Some(GptFirmware::Uefi)
        );
        assert_eq!(
            GptFirmware::from_firmware(Firmware::Hybrid),
            Some(GptFirmware::Hybrid)
        );
    }

    #[test]
    fn uefi_layout_without_swap() {
        let mut o = GptPlanOptions::new(GptFirmware::Uefi, 64 * MIB, 0);
        o.esp_volume_id = Some(0xABCD_0123);
        let p = plan_gpt(&o).unwrap();
        let roles: Vec<_> = p.partitions.iter().map(|x| x.role).collect();
        assert_eq!(roles, [GptRole::Root, GptRole::Esp]);
        assert_eq!(p.esp().start_lba, 2048);
        assert_eq!(p.root().start_bytes(), MIB + 124 * MIB);
        assert!(p.bios_boot().is_none() && p.swap().is_none());
        assert_eq!(p.esp_serial(), "ABCD-0123");
    }

    #[test]
    fn refuses_bad_sizes() {
        let mut o = GptPlanOptions::new(GptFirmware::Uefi, 0, 0);
        assert!(plan_gpt(&o).is_err());
        o.root_bytes = MIB;
        o.esp_bytes = 10 * MIB;
        assert!(matches!(plan_gpt(&o), Err(PlanError::Gpt { .. })));
        o.esp_bytes = 124 * MIB;
        o.swap_bytes = u64::MAX - 10;
        assert!(plan_gpt(&o).is_err());
    }

    #[test]
    fn writes_a_gpt_the_crate_reads_back() {
        let mut o = GptPlanOptions::new(GptFirmware::Hybrid, 8 * MIB, 4 * MIB);
        o.esp_bytes = 64 * MIB;
        let p = plan_gpt(&o).unwrap();
        let f = tempfile::tempfile().unwrap();
        f.set_len(p.disk_bytes).unwrap();
        write_gpt(&f, &p).unwrap();
        let mut s0 = [0u8; 512];
        f.read_exact_at(&mut s0, 0).unwrap();
        assert_eq!(&s0[510..], &[0x55, 0xAA]);
        assert_eq!(s0[0x1BE + 4], 0xEE);
        let mut hdr = [0u8; 8];
        f.read_exact_at(&mut hdr, 512).unwrap();
        assert_eq!(&hdr, b"EFI PART");
        f.read_exact_at(&mut hdr, p.disk_bytes - 512).unwrap();
        assert_eq!(&hdr, b"EFI PART", "backup header in the last sector");
        let disk = gpt::GptConfig::new()
            .only_valid_headers(true)
            .open_from_device(FileWindow::new(&f, 0, p.disk_bytes))
            .unwrap();
        assert_eq!(*disk.guid(), p.disk_guid);
        for want in &p.partitions {
            let got = &disk.partitions()[&want.number];
            assert_eq!(got.part_type_guid.guid, want.role.type_guid());
            assert_eq!(got.part_guid, want.guid);
            assert_eq!(
                (got.first_lba, got.last_lba),
                (want.start_lba, want.end_lba())
            );
        }
        // Wrong image size is refused.
        let g = tempfile::tempfile().unwrap();
        g.set_len(p.disk_bytes - MIB).unwrap();
        assert!(matches!(write_gpt(&g, &p), Err(PlanError::Gpt { .. })));
    }
}
