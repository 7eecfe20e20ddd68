//! The short answer to "can this image be converted, and what will happen to it?": a
//! verdict, every partition of the source (logical ones included) with what the conversion
//! does with it, the Xen-specific settings grouped with the fix each group gets, and what
//! needs attention. Built from an [`Inspection`] (or the reason there is none) plus a
//! read-only probe of each partition; `imgconv inspect` prints it before any detail.

use super::{
    probe_region, Container, InspectError, Inspection, Probe, VolumeAction, VolumeSource,
    XenIsmKind,
};
use crate::blockio::Region;
use crate::partition::{self, PartitionType, TableKind};
use std::path::Path;

/// Can the image be converted?
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Converts as it is: only the boot setup is added.
    Convertible,
    /// Converts, and these changes (beyond the boot setup) happen or are needed.
    ConvertibleWithChanges { changes: Vec<String> },
    /// Cannot be converted, and why.
    NotConvertible { why: String },
}

/// One partition, volume or disk of the source and its fate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Part {
    /// "p2", "p5 (logical)", or "the image" for a bare filesystem.
    pub name: String,
    /// Byte offset in the image.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it holds ("ext4 filesystem labelled \"root\"", "a Linux swap area", ...).
    pub holds: String,
    /// True for the guest root.
    pub root: bool,
    /// What the conversion does with it.
    pub fate: String,
}

/// Xen-specific settings of one kind, where they are, and how the conversion fixes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XenGroup {
    /// What they are ("fstab entries naming Xen disks").
    pub what: String,
    /// One short line per finding ("/dev/xvda1 on / (/etc/fstab)").
    pub found: Vec<String>,
    /// The fix.
    pub fix: String,
}

/// The summary of one source image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub verdict: Verdict,
    /// "bare ext4 filesystem", "MBR disk", "GPT disk", or what else the image is.
    pub source: String,
    pub parts: Vec<Part>,
    pub xen: Vec<XenGroup>,
    /// Things the user should know before converting.
    pub attention: Vec<String>,
}

/// What the conversion does with the guest root.
const ROOT_FATE: &str = "the root partition of the output: used blocks streamed, kernel and boot files added, configuration fixed for KVM";
const NOT_CARRIED: &str = "not carried: only the guest root filesystem is converted";

/// Summarise `path`, given the result of [`super::inspect`] on it.
pub fn summarize(path: &Path, inspected: Result<&Inspection, &InspectError>) -> Summary {
    let (source, parts) = survey(path, inspected.ok());
    let mut attention = Vec::new();
    let mut changes = Vec::new();
    let mut xen = Vec::new();
    if let Ok(i) = inspected {
        xen = xen_groups(i);
        if !xen.is_empty() {
            let n: usize = xen.iter().map(|g| g.found.len()).sum();
            changes.push(format!(
                "{n} Xen-specific setting{} fixed (see below)",
                if n == 1 { "" } else { "s" }
            ));
        }
        for (vg, lvs) in i.flattened_groups() {
            changes.push(format!(
                "volume group {vg} is flattened: {} become{} plain partitions; the guest will no longer see LVM",
                lvs.iter().map(|(lv, _)| lv.as_str()).collect::<Vec<_>>().join(", "),
                if lvs.len() == 1 { "s" } else { "" }
            ));
        }
        let lvm_pv = |v: &super::Volume| {
            matches!(
                v.lvm,
                Some(super::volumes::LvmRole::PhysicalVolume { vg: Some(_), .. })
            )
        };
        for (p, v) in parts.iter().zip(&i.volumes).filter(|(p, _)| !p.root) {
            if lvm_pv(v) {
                continue;
            }
            if let Some(e) = v.refusal() {
                changes.push(format!("{} is left out: {e}", p.name));
            } else if p.fate.starts_with("not carried") && !p.holds.starts_with("empty") {
                changes.push(format!(
                    "{} ({}) is left out of the output",
                    p.name, p.holds
                ));
            } else if p.fate.starts_with("LVM") {
                changes.push(format!("{} is left out: {}", p.name, p.fate));
            }
        }
        if i.fs.needs_recovery {
            changes.push("the journal needs recovery: convert with --replay-journal (replayed on the output copy only)".into());
        }
        if i.fs.errors {
            attention.push(
                "the kernel recorded errors in this filesystem: check a copy with e2fsck first (or convert with --fsck pre)".into(),
            );
        }
        if i.guest.kernels.is_empty() {
            attention
                .push("the guest has no kernel in /boot: the donor's kernel is grafted".into());
        }
        for k in i.guest.kernels.iter().filter(|k| k.xen_only) {
            attention.push(format!(
                "kernel {} only boots under Xen{}: the donor's kernel is grafted",
                k.version,
                k.xen_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        attention.extend(i.guest.warnings.iter().cloned());
    }
    let verdict = match inspected {
        Err(e) => Verdict::NotConvertible { why: e.to_string() },
        Ok(_) if changes.is_empty() => Verdict::Convertible,
        Ok(_) => Verdict::ConvertibleWithChanges { changes },
    };
    Summary {
        verdict,
        source,
        parts,
        xen,
        attention,
    }
}

/// What a region holds, in words, and what a non-root region of that kind becomes.
fn describe(region: &Region, path: &Path) -> (String, &'static str) {
    match probe_region(region, path) {
        Ok(Probe::Ext(sb)) => {
            let info = sb.info();
            let label = match info.label.as_str() {
                "" => String::new(),
                l => format!(" labelled {l:?}"),
            };
            (format!("{} filesystem{label}", info.kind), NOT_CARRIED)
        }
        Ok(Probe::BadExt(e)) => (
            format!("an ext filesystem with a corrupt superblock ({e})"),
            NOT_CARRIED,
        ),
        Ok(Probe::Foreign(super::Foreign::Swap)) => (
            super::Foreign::Swap.describe().to_string(),
            "not copied: the output gets a new swap partition (--swap)",
        ),
        Ok(Probe::Foreign(super::Foreign::Lvm2)) => (
            super::Foreign::Lvm2.describe().to_string(),
            "an LVM physical volume: its logical volumes are carried as partitions when they can be read",
        ),
        Ok(Probe::Foreign(f)) => (f.describe().to_string(), NOT_CARRIED),
        Ok(Probe::Zeros) => ("empty (zeros)".into(), NOT_CARRIED),
        Ok(Probe::Unknown) => ("unrecognised data".into(), NOT_CARRIED),
        Err(e) => (format!("unreadable ({e})"), NOT_CARRIED),
    }
}

fn type_name(kind: &PartitionType) -> String {
    match kind {
        PartitionType::Mbr { type_code, .. } => format!("type 0x{type_code:02x}"),
        PartitionType::Gpt { type_guid, name } if name.is_empty() => format!("type {type_guid}"),
        PartitionType::Gpt { name, .. } => format!("{name:?}"),
    }
}

/// The source's kind and its parts: the inspection's volumes when there is one, else
/// each partition probed read-only.
fn survey(path: &Path, inspected: Option<&Inspection>) -> (String, Vec<Part>) {
    if let Some(i) = inspected.filter(|i| !i.volumes.is_empty()) {
        return survey_volumes(i);
    }
    let Ok(whole) = Region::open(path) else {
        return ("unreadable".into(), Vec::new());
    };
    if let Some(Inspection {
        container: Container::Bare,
        fs,
        fs_len,
        ..
    }) = inspected
    {
        let label = match fs.label.as_str() {
            "" => String::new(),
            l => format!(" labelled {l:?}"),
        };
        return (
            format!("bare {} filesystem", fs.kind),
            vec![Part {
                name: "the image".into(),
                start: 0,
                len: *fs_len,
                holds: format!("{} filesystem{label}, guest root", fs.kind),
                root: true,
                fate: ROOT_FATE.into(),
            }],
        );
    }
    let root_partition = match inspected.map(|i| &i.container) {
        Some(Container::Partitioned { root_partition, .. }) => Some(*root_partition),
        _ => None,
    };
    let table = match partition::read_table(&whole) {
        Ok(Some(t)) => t,
        Ok(None) => {
            let (holds, fate) = describe(&whole, path);
            let fate = if fate.starts_with("LVM") {
                fate
            } else {
                "not convertible"
            };
            return (
                "no partition table".into(),
                vec![Part {
                    name: "the image".into(),
                    start: 0,
                    len: whole.len(),
                    holds,
                    root: false,
                    fate: fate.into(),
                }],
            );
        }
        Err(e) => return (format!("unreadable partition table ({e})"), Vec::new()),
    };
    let kind = match table.kind {
        TableKind::Mbr => "MBR disk",
        TableKind::Gpt => "GPT disk",
    };
    let mut parts = Vec::new();
    for e in &table.entries {
        let logical = table.kind == TableKind::Mbr && e.number > 4;
        let name = if logical {
            format!("p{} (logical)", e.number)
        } else {
            format!("p{}", e.number)
        };
        let root = root_partition == Some(e.number);
        let (holds, fate) = match whole.sub(e.start, e.len) {
            Ok(r) => describe(&r, path),
            Err(err) => (format!("unreadable ({err})"), NOT_CARRIED),
        };
        parts.push(Part {
            name,
            start: e.start,
            len: e.len,
            holds: if root {
                format!("{holds}, guest root")
            } else {
                format!("{holds}, {}", type_name(&e.kind))
            },
            root,
            fate: if root { ROOT_FATE.into() } else { fate.into() },
        });
    }
    (kind.into(), parts)
}

/// The inspection's volumes as parts, with what the conversion does with each.
fn survey_volumes(i: &Inspection) -> (String, Vec<Part>) {
    let kind = |t: &partition::PartitionTable| match t.kind {
        TableKind::Mbr => "MBR disk".to_string(),
        TableKind::Gpt => "GPT disk".to_string(),
    };
    let source = match &i.container {
        Container::Bare => format!("bare {} filesystem", i.fs.kind),
        Container::Partitioned { table, .. } => kind(table),
        Container::LogicalVolume { table, vg, lv } => format!(
            "{}, root on LVM logical volume {vg}/{lv}",
            table.as_ref().map_or("LVM physical volume".into(), kind)
        ),
    };
    let table = match &i.container {
        Container::Partitioned { table, .. } => Some(table),
        Container::LogicalVolume { table, .. } => table.as_ref(),
        Container::Bare => None,
    };
    let parts = i
        .volumes
        .iter()
        .map(|v| {
            let mut name = match (&v.source, v.xen_device.as_deref()) {
                (VolumeSource::Partition { disk: 0, .. }, _) => v.name.clone(),
                (VolumeSource::Disk { disk: 0 }, _) if i.disks.is_empty() => "the image".into(),
                (VolumeSource::Partition { disk, .. } | VolumeSource::Disk { disk }, dev) => {
                    let given = disk.checked_sub(1).and_then(|d| i.disks.get(d));
                    let mut file = match given {
                        None => Some(i.image.as_path()),
                        Some(d) => Some(d.path.as_path()),
                    }
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                    if let Some(m) = given.and_then(|d| d.member.as_deref()) {
                        file = format!("{file} {m}");
                    }
                    format!("{} ({file})", dev.unwrap_or(&v.name))
                }
                (VolumeSource::LogicalVolume { vg, lv }, _) => format!("{vg}/{lv} (LVM)"),
            };
            if let VolumeSource::Partition { logical: true, .. } = v.source {
                name.push_str(" (logical)");
            }
            let root = v.action == VolumeAction::Root;
            let mut holds = v.content.describe();
            if root {
                holds.push_str(", guest root");
            } else {
                let ty = match (&v.source, table) {
                    (
                        VolumeSource::Partition {
                            disk: 0, number, ..
                        },
                        Some(t),
                    ) => t
                        .entries
                        .iter()
                        .find(|e| e.number == *number)
                        .map(|e| type_name(&e.kind)),
                    _ => None,
                };
                if let Some(ty) = ty {
                    holds.push_str(&format!(", {ty}"));
                }
                if let Some(m) = &v.mount {
                    holds.push_str(&format!(", fstab: {m}"));
                }
            }
            Part {
                name,
                start: v.start,
                len: v.len,
                holds,
                root,
                fate: v.fate(),
            }
        })
        .collect();
    (source, parts)
}

/// The Xen-isms of the inspection, one group per kind, in a fixed order.
fn xen_groups(i: &Inspection) -> Vec<XenGroup> {
    let order: [(&str, &str, &str); 6] = [
        (
            "fstab-device",
            "fstab entries naming Xen disks",
            "rewritten: filesystems of the new disk by UUID=, other disks to the new bus's names (vdX/sdX)",
        ),
        (
            "console-getty",
            "getty on the Xen console",
            "moved to the serial console ttyS0 and tty1",
        ),
        (
            "secure-tty",
            "Xen console in /etc/securetty",
            "ttyS0 added so root can log in on the serial console",
        ),
        (
            "persistent-net-rules",
            "udev rules pinning NICs to Xen MAC addresses",
            "moved aside; net.ifnames=0 keeps the new NIC named eth0",
        ),
        (
            "pv-grub-menu",
            "pv-grub/pygrub menu",
            "no longer used: GRUB 2 boot code and grub.cfg are written",
        ),
        (
            "xen-module",
            "Xen drivers in module lists",
            "commented out; virtio drivers load instead",
        ),
    ];
    let mut groups = Vec::new();
    for (tag, what, fix) in order {
        let found: Vec<String> = i
            .guest
            .xenisms
            .iter()
            .filter(|x| kind_tag(&x.kind) == tag)
            .map(|x| {
                let detail = match &x.kind {
                    XenIsmKind::FstabDevice {
                        device,
                        mount_point,
                    } if matches!(mount_point.as_str(), "none" | "swap") => {
                        format!("{device} as swap")
                    }
                    XenIsmKind::FstabDevice {
                        device,
                        mount_point,
                    } => format!("{device} on {mount_point}"),
                    XenIsmKind::ConsoleGetty { tty } | XenIsmKind::SecureTty { tty } => tty.clone(),
                    XenIsmKind::PersistentNetRules { interfaces } => interfaces.join(", "),
                    XenIsmKind::PvGrubMenu => "menu.lst".into(),
                    XenIsmKind::XenModule { module } => module.clone(),
                };
                format!("{detail} ({})", x.file)
            })
            .collect();
        if !found.is_empty() {
            groups.push(XenGroup {
                what: what.into(),
                found,
                fix: fix.into(),
            });
        }
    }
    groups
}

fn kind_tag(k: &XenIsmKind) -> &'static str {
    match k {
        XenIsmKind::FstabDevice { .. } => "fstab-device",
        XenIsmKind::ConsoleGetty { .. } => "console-getty",
        XenIsmKind::SecureTty { .. } => "secure-tty",
        XenIsmKind::PersistentNetRules { .. } => "persistent-net-rules",
        XenIsmKind::PvGrubMenu => "pv-grub-menu",
        XenIsmKind::XenModule { .. } => "xen-module",
    }
}
