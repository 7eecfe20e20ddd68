//! Every volume of the guest: each partition of the source (primary and logical, and the
//! extended containers that hold the logical ones), each extra disk image given with a
//! Xen device name ([`SourceDisk`]), and each LVM2 logical volume found on the physical
//! volumes among them (`add_logical_volumes`, read by [`crate::lvm`]).
//!
//! Each volume is probed read-only ([`VolumeContent`]), matched to the guest's
//! `/etc/fstab` by `UUID=`, `LABEL=`, its Xen kernel name (`/dev/xvdb1`, `/dev/sdb1` and
//! `/dev/hdb1` are one disk: only the letters and the partition number count) or one of
//! its [`Volume::aliases`] (`/dev/VG/LV`, `/dev/mapper/VG-LV`), and given what the
//! conversion does with it ([`VolumeAction`]).

use super::probe::Foreign;
use super::{probe_region, InspectError, Probe};
use crate::blockio::Region;
use crate::bytes::Fields;
use crate::ext::superblock::FsInfo;
use crate::fixups::devices::KernelDisk;
use crate::lvm::{self, LvError, LvmError};
use crate::partition::{ebr, PartitionTable, TableKind};
use std::path::PathBuf;

/// Most fstab entries read (a real fstab has a few dozen; the file itself is bounded).
pub const MAX_FSTAB_ENTRIES: usize = 4096;

/// Another disk image of the guest and the Xen device name the guest knew it by: a bare
/// filesystem (`xvda1`, `xvdb1`) or a partitioned disk (`xvdb`, whose partitions are
/// `xvdb1`, `xvdb2`, …). Opened read-only, never written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceDisk {
    /// The image file or block device.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub path: PathBuf,
    /// Its Xen device name, without `/dev/` (`xvdb1`, `xvdb`; `sdb1`/`hdb1` mean the same).
    pub xen_device: String,
    /// The disk inside `path` when the file holds several (an XVA's VDI `Ref:12`);
    /// `None` for an image of its own (or the container's boot disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

impl SourceDisk {
    /// A disk image and the Xen device name the guest knew it by.
    pub fn new(path: impl Into<PathBuf>, xen_device: impl Into<String>) -> Self {
        SourceDisk {
            path: path.into(),
            xen_device: xen_device.into(),
            member: None,
        }
    }

    /// Disk `member` of the container at `path` (an XVA's VDI `Ref:12`), which the guest
    /// knew as `xen_device`.
    pub fn member(
        path: impl Into<PathBuf>,
        xen_device: impl Into<String>,
        member: impl Into<String>,
    ) -> Self {
        SourceDisk {
            member: Some(member.into()),
            ..SourceDisk::new(path, xen_device)
        }
    }

    /// Parse the command line's `PATH=XENDEV` (the last `=` separates them).
    pub fn parse(arg: &str) -> Result<Self, String> {
        let (path, dev) = arg
            .rsplit_once('=')
            .ok_or_else(|| format!("{arg:?} is not PATH=XENDEV (for example home.img=xvdb1)"))?;
        if path.is_empty() {
            return Err(format!("{arg:?} has no path before '='"));
        }
        let dev = dev.strip_prefix("/dev/").unwrap_or(dev);
        if XenName::parse(dev).is_none() {
            return Err(format!(
                "{dev:?} is not a Xen disk name such as xvdb, xvdb1, sdb1 or hdb1"
            ));
        }
        Ok(SourceDisk::new(path, dev))
    }
}

/// A kernel disk name split into its disk letters and optional partition number; the
/// prefix (`xvd`, `sd`, `hd`, `vd`) does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XenName {
    pub(crate) letters: String,
    pub(crate) partition: Option<u32>,
}

impl XenName {
    /// `xvdb1`, `/dev/sdb1`, `hdb` → letters and partition.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let spec = if name.starts_with("/dev/") {
            name.to_string()
        } else {
            format!("/dev/{name}")
        };
        let d = KernelDisk::parse(&spec)?;
        let partition = match d.partition {
            "" => None,
            p => Some(p.parse::<u32>().ok().filter(|&n| n > 0)?),
        };
        Some(XenName {
            letters: d.letters.to_string(),
            partition,
        })
    }

    /// The name under Xen: `xvdb1`.
    pub(crate) fn text(&self) -> String {
        match self.partition {
            Some(n) => format!("xvd{}{n}", self.letters),
            None => format!("xvd{}", self.letters),
        }
    }
}

/// Where a volume's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum VolumeSource {
    /// Partition `number` of source disk `disk` (0 is the main source, 1.. the extra disks
    /// in the order given); `logical` for one inside an MBR extended partition.
    Partition {
        disk: usize,
        number: usize,
        logical: bool,
    },
    /// The whole of source disk `disk`: a bare filesystem image.
    Disk { disk: usize },
    /// A logical volume of a volume group.
    LogicalVolume { vg: String, lv: String },
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum VolumeContent {
    /// An ext2/3/4 filesystem: carried used-blocks-only.
    Ext { fs: Box<FsInfo> },
    /// A Linux swap area; its UUID (`None` when nil) and label are kept.
    Swap { uuid: Option<String>, label: String },
    /// Another filesystem or signature (XFS, FAT, LUKS, an LVM physical volume, …).
    Foreign { found: Foreign },
    /// The ext magic with a superblock that does not hold together.
    CorruptExt { why: String },
    /// Its first 68 KiB are zeros.
    Zeros,
    /// Data without a known signature.
    Unknown,
    /// An MBR extended partition: the container of the logical partitions.
    ExtendedContainer,
    /// It could not be read.
    Unreadable { why: String },
}

impl VolumeContent {
    /// In words: `ext4 filesystem labelled "home"`, `a Linux swap area`.
    pub fn describe(&self) -> String {
        match self {
            VolumeContent::Ext { fs } => match fs.label.as_str() {
                "" => format!("{} filesystem", fs.kind),
                l => format!("{} filesystem labelled {l:?}", fs.kind),
            },
            VolumeContent::Swap { label, .. } if !label.is_empty() => {
                format!("a Linux swap area labelled {label:?}")
            }
            VolumeContent::Swap { .. } => Foreign::Swap.describe().to_string(),
            VolumeContent::Foreign { found } => found.describe().to_string(),
            VolumeContent::CorruptExt { why } => {
                format!("an ext filesystem with a corrupt superblock ({why})")
            }
            VolumeContent::Zeros => "empty (zeros)".into(),
            VolumeContent::Unknown => "unrecognised data".into(),
            VolumeContent::ExtendedContainer => "an extended partition".into(),
            VolumeContent::Unreadable { why } => format!("unreadable ({why})"),
        }
    }
}

/// What the conversion does with a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum VolumeAction {
    /// The guest root: streamed, kernel grafted, configuration fixed.
    Root,
    /// The filesystem the guest mounts at `/boot`.
    Boot,
    /// Carried into a partition of its own: an ext filesystem used blocks only, anything
    /// else verbatim and sparse.
    Carry,
    /// A swap partition of the same size with the guest's UUID and label.
    Swap,
    /// Left out, and why.
    Skip { why: String },
}

impl VolumeAction {
    /// True when the volume becomes a partition of the output.
    pub fn carried(&self) -> bool {
        !matches!(self, VolumeAction::Skip { .. })
    }
}

/// One volume of the guest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Volume {
    /// How the source names it: `p2`, `p5`, `xvdb1`, `VolGroup00/LogVol00`.
    pub name: String,
    /// Where its bytes come from.
    pub source: VolumeSource,
    /// First byte in its source disk (0 for a whole disk or a logical volume).
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it holds.
    pub content: VolumeContent,
    /// The kernel name the guest knew it by under Xen (`xvda2`), when known.
    pub xen_device: Option<String>,
    /// Other device paths the guest may name it by (`/dev/VG/LV`, `/dev/mapper/VG-LV`).
    pub aliases: Vec<String>,
    /// Where the guest's fstab mounts it (`/home`, `swap` for a swap entry).
    pub mount: Option<String>,
    /// What the conversion does with it.
    pub action: VolumeAction,
    /// Its part in LVM2: a physical volume, or a logical volume (then
    /// [`Volume::source`] names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmRole>,
    /// Why a logical volume cannot be read (not linear, on a PV that was not given).
    #[serde(skip)]
    pub(crate) refusal: Option<LvError>,
    /// Its bytes, read-only.
    #[serde(skip)]
    pub(crate) region: Option<Region>,
}

/// A volume's part in LVM2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "role")]
pub enum LvmRole {
    /// An LVM2 physical volume: the logical volumes on it are volumes of their own.
    PhysicalVolume {
        /// The PV's UUID, dashed.
        uuid: String,
        /// The volume group it belongs to, when its metadata names one.
        vg: Option<String>,
    },
    /// A logical volume of a volume group.
    LogicalVolume {
        /// The LV's UUID, dashed.
        uuid: String,
        /// Its segment types in order (`striped` for linear ones).
        segment_types: Vec<String>,
        /// Why it cannot be read, when it cannot.
        #[serde(skip_serializing_if = "Option::is_none")]
        unusable: Option<String>,
    },
}

impl Volume {
    /// A volume over `region` whose content is probed now; the action starts as
    /// [`VolumeAction::Carry`] (or a skip for what is never carried) until
    /// [`assign_actions`] sees the fstab.
    pub fn new(name: impl Into<String>, source: VolumeSource, start: u64, region: Region) -> Self {
        let content = probe_content(&region);
        Volume {
            name: name.into(),
            source,
            start,
            len: region.len(),
            action: default_action(&content),
            content,
            xen_device: None,
            aliases: Vec::new(),
            mount: None,
            lvm: None,
            refusal: None,
            region: Some(region),
        }
    }

    /// A volume whose bytes cannot be read: `content` says why.
    fn unreadable(
        name: impl Into<String>,
        source: VolumeSource,
        start: u64,
        len: u64,
        content: VolumeContent,
    ) -> Self {
        Volume {
            name: name.into(),
            source,
            start,
            len,
            action: default_action(&content),
            content,
            xen_device: None,
            aliases: Vec::new(),
            mount: None,
            lvm: None,
            refusal: None,
            region: None,
        }
    }

    /// Why the guest cannot be converted without this logical volume, when it cannot be
    /// read.
    pub fn refusal(&self) -> Option<&LvError> {
        self.refusal.as_ref()
    }

    /// The logical volume's `(VG, LV)` names, when it is one.
    pub fn logical_volume(&self) -> Option<(&str, &str)> {
        match &self.source {
            VolumeSource::LogicalVolume { vg, lv } => Some((vg, lv)),
            _ => None,
        }
    }

    /// The volume's bytes, read-only.
    pub fn region(&self) -> Option<&Region> {
        self.region.as_ref()
    }

    /// The filesystem or swap UUID, lower case.
    pub fn uuid(&self) -> Option<&str> {
        match &self.content {
            VolumeContent::Ext { fs } => Some(fs.uuid.as_str()),
            VolumeContent::Swap { uuid, .. } => uuid.as_deref(),
            _ => None,
        }
    }

    /// The filesystem or swap label, when not empty.
    pub fn label(&self) -> Option<&str> {
        match &self.content {
            VolumeContent::Ext { fs } => Some(fs.label.as_str()),
            VolumeContent::Swap { label, .. } => Some(label.as_str()),
            _ => None,
        }
        .filter(|l| !l.is_empty())
    }

    /// The ext filesystem, when it is one.
    pub fn ext(&self) -> Option<&FsInfo> {
        match &self.content {
            VolumeContent::Ext { fs } => Some(fs),
            _ => None,
        }
    }

    /// Every name the guest may know it by: `/dev/xvda2`, the aliases, `UUID=…`, `LABEL=…`.
    pub fn known_as(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(d) = &self.xen_device {
            names.push(format!("/dev/{d}"));
        }
        names.extend(self.aliases.iter().cloned());
        if let Some(u) = self.uuid() {
            names.push(format!("UUID={u}"));
        }
        if let Some(l) = self.label() {
            names.push(format!("LABEL={l}"));
        }
        names
    }

    /// True when the fstab device field `spec` names this volume.
    pub fn matches(&self, spec: &str) -> bool {
        spec_names(
            spec,
            self.uuid(),
            self.label(),
            self.xen_device.as_deref(),
            &self.aliases,
        )
    }

    /// What the conversion does with it, in words.
    pub fn fate(&self) -> String {
        match &self.action {
            VolumeAction::Root => "the root partition of the output: used blocks streamed, kernel and boot files added, configuration fixed for KVM".into(),
            VolumeAction::Boot => "the boot partition of the output (first, boot flag), mounted at /boot as before: used blocks streamed, kernel, initrd and GRUB files added".into(),
            VolumeAction::Carry => match (&self.content, &self.mount) {
                (VolumeContent::Ext { .. }, Some(m)) => {
                    format!("a partition of the output, mounted at {m} as before: used blocks streamed")
                }
                (VolumeContent::Ext { .. }, None) => {
                    "a partition of the output (not in fstab): used blocks streamed".into()
                }
                (_, Some(m)) => format!(
                    "a partition of the output, mounted at {m} as before: copied verbatim"
                ),
                (_, None) => "a partition of the output (not in fstab): copied verbatim".into(),
            },
            VolumeAction::Swap => {
                "the swap partition of the output, with the same UUID and label".into()
            }
            VolumeAction::Skip { why } => format!("not carried: {why}"),
        }
    }
}

/// True when the fstab device field `spec` names the volume with this UUID, label, Xen
/// kernel name (prefix-insensitive: `/dev/sdb1` is `xvdb1`) or alias.
pub fn spec_names(
    spec: &str,
    uuid: Option<&str>,
    label: Option<&str>,
    xen_device: Option<&str>,
    aliases: &[String],
) -> bool {
    let unquote = |s: &str| s.trim_matches('"').to_string();
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return uuid.is_some_and(|v| v.eq_ignore_ascii_case(&unquote(u)));
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return label.is_some_and(|v| !v.is_empty() && v == unquote(l));
    }
    if let Some(want) = XenName::parse(spec).filter(|_| spec.starts_with("/dev/")) {
        return xen_device
            .and_then(XenName::parse)
            .is_some_and(|have| have == want);
    }
    aliases.iter().any(|a| a == spec)
}

fn default_action(content: &VolumeContent) -> VolumeAction {
    match content {
        VolumeContent::Swap { .. } => VolumeAction::Swap,
        VolumeContent::Foreign {
            found: Foreign::Lvm2,
        } => VolumeAction::Skip {
            why: "an LVM2 physical volume (its logical volumes are not read)".into(),
        },
        VolumeContent::Zeros => VolumeAction::Skip {
            why: "empty (its start is all zeros)".into(),
        },
        VolumeContent::ExtendedContainer => VolumeAction::Skip {
            why: "the container of the logical partitions, which are listed on their own".into(),
        },
        VolumeContent::Unreadable { why } => VolumeAction::Skip {
            why: format!("unreadable ({why})"),
        },
        _ => VolumeAction::Carry,
    }
}

/// Probe what `region` holds, read-only.
pub fn probe_content(region: &Region) -> VolumeContent {
    match probe_region(region, region.path()) {
        Ok(Probe::Ext(sb)) => VolumeContent::Ext {
            fs: Box::new(sb.info()),
        },
        Ok(Probe::BadExt(e)) => VolumeContent::CorruptExt { why: e.to_string() },
        Ok(Probe::Foreign(Foreign::Swap)) => {
            let mut page = vec![0u8; crate::swap::PAGE_SIZE as usize];
            match region.read_exact_at(0, &mut page) {
                Ok(()) => match crate::swap::read_header(&page) {
                    Ok(Some(h)) => VolumeContent::Swap {
                        uuid: (!h.uuid.is_nil()).then(|| h.uuid.to_string()),
                        label: h.label,
                    },
                    // Another swap signature (SWAP-SPACE, a suspend image): only the
                    // area counts.
                    _ => VolumeContent::Swap {
                        uuid: None,
                        label: String::new(),
                    },
                },
                Err(e) => VolumeContent::Unreadable { why: e.to_string() },
            }
        }
        Ok(Probe::Foreign(found)) => VolumeContent::Foreign { found },
        Ok(Probe::Zeros) => VolumeContent::Zeros,
        Ok(Probe::Unknown) => VolumeContent::Unknown,
        Err(e) => VolumeContent::Unreadable { why: e.to_string() },
    }
}

/// The volumes of partitioned disk `disk` (`whole`), in partition-number order, the MBR
/// extended containers included. `xen_disk` is the disk's Xen name (`xvda`), which names
/// each partition (`xvda5`).
pub(crate) fn partition_volumes(
    disk: usize,
    whole: &Region,
    table: &PartitionTable,
    xen_disk: Option<&str>,
) -> Vec<Volume> {
    let mut vols = Vec::new();
    for e in &table.entries {
        let logical = table.kind == TableKind::Mbr && e.number > 4;
        let src = VolumeSource::Partition {
            disk,
            number: e.number,
            logical,
        };
        let mut v = match whole.sub(e.start, e.len) {
            Ok(r) => Volume::new(format!("p{}", e.number), src, e.start, r),
            Err(err) => Volume::unreadable(
                format!("p{}", e.number),
                src,
                e.start,
                e.len,
                VolumeContent::Unreadable {
                    why: err.to_string(),
                },
            ),
        };
        v.xen_device = xen_disk.map(|d| format!("{d}{}", e.number));
        vols.push(v);
    }
    if table.kind == TableKind::Mbr {
        for (number, start, len) in extended_containers(whole) {
            vols.push(Volume::unreadable(
                format!("p{number}"),
                VolumeSource::Partition {
                    disk,
                    number,
                    logical: false,
                },
                start,
                len,
                VolumeContent::ExtendedContainer,
            ));
        }
    }
    vols.sort_by_key(|v| match v.source {
        VolumeSource::Partition { number, .. } => number,
        _ => usize::MAX,
    });
    vols
}

/// The primary entries of the MBR in sector 0 of `whole` that are extended containers:
/// (number, first byte, length). Read through the bounds-checked field reader; an entry
/// beyond the image is clipped to it.
fn extended_containers(whole: &Region) -> Vec<(usize, u64, u64)> {
    let mut sector = [0u8; 512];
    if whole.read_exact_at(0, &mut sector).is_err() {
        return Vec::new();
    }
    let mbr = Fields::new("master boot record", &sector);
    let mut found = Vec::new();
    for i in 0..4 {
        let at = 446 + i * 16;
        let (Ok(ty), Ok(start), Ok(count)) = (
            mbr.u8("partition type", at + 4),
            mbr.u32("start LBA", at + 8),
            mbr.u32("sector count", at + 12),
        ) else {
            continue;
        };
        if !ebr::is_extended_type(ty) || count == 0 {
            continue;
        }
        let start = u64::from(start) * 512;
        let len = (u64::from(count) * 512).min(whole.len().saturating_sub(start));
        found.push((i + 1, start, len));
    }
    found
}

/// One line of `/etc/fstab`: device, mount point, type, options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    pub spec: String,
    pub mount: String,
    pub fstype: String,
    pub options: String,
}

/// The entries of an fstab text (fstab(5): whitespace-separated fields, `#` comments),
/// at most [`MAX_FSTAB_ENTRIES`].
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(FstabEntry {
                spec: f.next()?.to_string(),
                mount: f.next()?.to_string(),
                fstype: f.next().unwrap_or("auto").to_string(),
                options: f.next().unwrap_or("defaults").to_string(),
            })
        })
        .take(MAX_FSTAB_ENTRIES)
        .collect()
}

/// The Xen name of the main source disk, as its fstab uses it for `/`: `xvda` for a
/// partitioned disk whose root entry is `/dev/xvda2`, `xvda2` for a bare filesystem.
/// Without a kernel name there, a partitioned disk is taken to be `xvda` (the first disk)
/// and a bare filesystem stays unnamed.
pub fn guess_main_device(fstab: &[FstabEntry], partitioned: bool) -> Option<String> {
    let named = fstab
        .iter()
        .find(|e| e.mount == "/")
        .and_then(|e| XenName::parse(&e.spec).filter(|_| e.spec.starts_with("/dev/")));
    match (named, partitioned) {
        (Some(n), true) => Some(format!("xvd{}", n.letters)),
        (Some(n), false) => Some(n.text()),
        (None, true) => Some("xvda".into()),
        (None, false) => None,
    }
}

/// Match each fstab entry to a volume (first match wins; an entry names one volume) and
/// give each volume its action: `root` is the index of the guest root; an ext filesystem
/// mounted at `/boot` is [`VolumeAction::Boot`].
pub fn assign_actions(volumes: &mut [Volume], root: Option<usize>, fstab: &[FstabEntry]) {
    for e in fstab {
        if let Some(v) = volumes
            .iter_mut()
            .find(|v| v.mount.is_none() && v.matches(&e.spec))
        {
            v.mount = Some(if e.fstype == "swap" {
                "swap".to_string()
            } else {
                e.mount.clone()
            });
        }
    }
    for (i, v) in volumes.iter_mut().enumerate() {
        v.action = if Some(i) == root {
            VolumeAction::Root
        } else if v.mount.as_deref() == Some("/boot") && v.ext().is_some() {
            VolumeAction::Boot
        } else {
            volume_default_action(v)
        };
    }
}

/// What becomes of a volume that is neither the root nor `/boot`: [`default_action`],
/// except for LVM: a physical volume is replaced by its logical volumes, and a logical
/// volume that cannot be read is left out (the conversion refuses the guest when the
/// guest uses it; see [`Volume::refusal`]).
fn volume_default_action(v: &Volume) -> VolumeAction {
    if let Some(e) = &v.refusal {
        return VolumeAction::Skip { why: e.to_string() };
    }
    match &v.lvm {
        Some(LvmRole::PhysicalVolume { vg: Some(vg), .. }) => VolumeAction::Skip {
            why: format!(
                "LVM physical volume of volume group {vg}: its logical volumes are carried as partitions"
            ),
        },
        Some(LvmRole::PhysicalVolume { vg: None, .. }) => VolumeAction::Skip {
            why: "an LVM physical volume in no volume group".into(),
        },
        _ => default_action(&v.content),
    }
}

/// Look for LVM2 physical volumes among `vols` (partitions and whole disks, all of them
/// together, so that a volume group spanning two of the disks given assembles), mark each
/// with its group, and add each visible logical volume as a volume of its own, named
/// `VG/LV` and known to the guest as `/dev/VG/LV` and `/dev/mapper/VG-LV`. A logical
/// volume that cannot be read (not linear, on a PV that was not given) is added without
/// bytes and with its [`Volume::refusal`]. Returns the PVs and groups that could not be
/// read at all.
pub(crate) fn add_logical_volumes(vols: &mut Vec<Volume>) -> Vec<LvmError> {
    let is_pv = |v: &Volume| {
        matches!(
            v.content,
            VolumeContent::Foreign {
                found: Foreign::Lvm2
            }
        )
    };
    let places: Vec<(String, Region)> = vols
        .iter()
        .filter(|v| is_pv(v))
        .filter_map(|v| Some((v.name.clone(), v.region.clone()?)))
        .collect();
    if places.is_empty() {
        return Vec::new();
    }
    let scan = lvm::scan(&places);
    for pv in &scan.pvs {
        if let Some(v) = vols.iter_mut().find(|v| is_pv(v) && v.name == pv.place) {
            v.lvm = Some(LvmRole::PhysicalVolume {
                uuid: pv.uuid.clone(),
                vg: pv.vg.clone(),
            });
            v.action = volume_default_action(v);
        }
    }
    for lv in scan.volumes() {
        let source = VolumeSource::LogicalVolume {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
        };
        let name = format!("{}/{}", lv.vg, lv.name);
        let mut v = match lv.open() {
            Ok(region) => Volume::new(name, source, 0, region),
            Err(e) => {
                let mut v = Volume::unreadable(
                    name,
                    source,
                    0,
                    lv.size,
                    VolumeContent::Unreadable { why: e.to_string() },
                );
                v.refusal = Some(e);
                v
            }
        };
        v.aliases = vec![lv.dev_path(), lv.mapper_path()];
        v.lvm = Some(LvmRole::LogicalVolume {
            uuid: lv.uuid.clone(),
            segment_types: lv.segment_types.clone(),
            unusable: v.refusal.as_ref().map(ToString::to_string),
        });
        v.action = volume_default_action(&v);
        vols.push(v);
    }
    scan.problems
}

/// The volumes of one extra disk: a bare filesystem named `xvdb1` (or a whole disk
/// `xvdb` without a partition table), or the partitions of a partitioned `xvdb`.
pub(crate) fn disk_volumes(
    index: usize,
    disk: &SourceDisk,
    whole: &Region,
) -> Result<Vec<Volume>, InspectError> {
    let name = XenName::parse(&disk.xen_device).ok_or_else(|| InspectError::BadXenDevice {
        path: disk.path.clone(),
        name: disk.xen_device.clone(),
    })?;
    if name.partition.is_none() {
        if let Some(table) = crate::partition::read_table(whole)? {
            let mut vols = partition_volumes(index, whole, &table, Some(&name.text()));
            for v in &mut vols {
                v.name = v.xen_device.clone().unwrap_or_else(|| v.name.clone());
            }
            return Ok(vols);
        }
    }
    let mut v = Volume::new(
        name.text(),
        VolumeSource::Disk { disk: index },
        0,
        whole.clone(),
    );
    v.xen_device = Some(name.text());
    Ok(vec![v])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_names_ignore_the_prefix() {
        let a = XenName::parse("/dev/sdb1").unwrap();
        assert_eq!(a, XenName::parse("xvdb1").unwrap());
        assert_eq!(a.text(), "xvdb1");
        assert_eq!(XenName::parse("hdc").unwrap().partition, None);
        assert!(XenName::parse("xvdb0").is_none());
        assert!(XenName::parse("/dev/mapper/vg-root").is_none());
    }

    #[test]
    fn disk_argument_is_path_equals_device() {
        let d = SourceDisk::parse("/srv/xen/home.img=xvdb1").unwrap();
        assert_eq!(d.path, PathBuf::from("/srv/xen/home.img"));
        assert_eq!(d.xen_device, "xvdb1");
        assert_eq!(
            SourceDisk::parse("a=b.img=/dev/sdc").unwrap().xen_device,
            "sdc"
        );
        assert!(SourceDisk::parse("home.img").is_err());
        assert!(SourceDisk::parse("home.img=vg-home").is_err());
        assert!(SourceDisk::parse("=xvdb").is_err());
    }

    #[test]
    fn fstab_entries_and_the_main_device() {
        let t = "# c\nUUID=1 / ext4 defaults 0 1\n/dev/xvda1 none swap sw 0 0\n\n/dev/sdb1 /home ext3\n";
        let e = parse_fstab(t);
        assert_eq!(e.len(), 3);
        assert_eq!(e[2].options, "defaults");
        assert_eq!(guess_main_device(&e, true).as_deref(), Some("xvda"));
        assert_eq!(guess_main_device(&e, false), None);
        let e = parse_fstab("/dev/xvda2 / ext4 defaults 0 1\n");
        assert_eq!(guess_main_device(&e, false).as_deref(), Some("xvda2"));
        let e = parse_fstab("/dev/hdb3 / ext4 defaults 0 1\n");
        assert_eq!(guess_main_device(&e, true).as_deref(), Some("xvdb"));
    }

    fn vol(name: &str, content: VolumeContent, dev: Option<&str>) -> Volume {
        Volume {
            name: name.into(),
            source: VolumeSource::Disk { disk: 0 },
            start: 0,
            len: 1 << 20,
            action: default_action(&content),
            content,
            xen_device: dev.map(str::to_string),
            aliases: Vec::new(),
            mount: None,
            lvm: None,
            refusal: None,
            region: None,
        }
    }

    #[test]
    fn fstab_entries_find_their_volumes() {
        let mut lv = vol("vg/home", VolumeContent::Unknown, None);
        lv.aliases = vec!["/dev/vg/home".into(), "/dev/mapper/vg-home".into()];
        let mut vols = vec![
            vol(
                "p1",
                VolumeContent::Swap {
                    uuid: Some("0a0b0c0d-0000-4000-8000-000000000001".into()),
                    label: "sw".into(),
                },
                Some("xvda1"),
            ),
            vol("p2", VolumeContent::Unknown, Some("xvda2")),
            vol("p3", VolumeContent::Zeros, Some("xvda3")),
            lv,
        ];
        assert!(vols[0].matches("UUID=0A0B0C0D-0000-4000-8000-000000000001"));
        assert!(vols[0].matches("LABEL=sw"));
        assert!(vols[0].matches("/dev/hda1"));
        assert!(!vols[0].matches("/dev/xvdb1"));
        assert!(
            !vols[1].matches("xvda2"),
            "a bare name is not a device path"
        );
        let fstab = parse_fstab(
            "/dev/sda2 / ext4 defaults 0 1\nLABEL=sw none swap sw\n/dev/mapper/vg-home /home xfs defaults\n",
        );
        assign_actions(&mut vols, Some(1), &fstab);
        assert_eq!(vols[0].mount.as_deref(), Some("swap"));
        assert_eq!(vols[0].action, VolumeAction::Swap);
        assert_eq!(vols[1].action, VolumeAction::Root);
        assert!(matches!(vols[2].action, VolumeAction::Skip { .. }));
        assert_eq!(vols[3].mount.as_deref(), Some("/home"));
        assert_eq!(vols[3].action, VolumeAction::Carry);
        assert!(vols[3].fate().contains("/home"), "{}", vols[3].fate());
    }
}
