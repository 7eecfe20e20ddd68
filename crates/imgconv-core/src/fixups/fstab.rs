//! Block device names: `/etc/fstab`, `/etc/crypttab` and the initramfs resume device.
//!
//! The converted disk holds the guest's root filesystem in partition 1 and, when planned,
//! a new swap partition; nothing else of the Xen disks comes along. So:
//! - the entry mounted at `/` (found by mount point — xen-tools guests have root on
//!   `xvda2` and swap on `xvda1`) is pointed at `UUID=<root uuid>`, its type fixed when it
//!   disagrees with the real one (`auto` is left alone); `/dev/root`, `LABEL=` and stale
//!   `UUID=` roots are rewritten the same way; a missing root entry is added (warning);
//! - the first swap entry on a block device is pointed at `UUID=<new swap uuid>`; other
//!   swap entries on kernel names (`/dev/xvdb1`) are commented out because those devices
//!   do not exist after conversion; with swap planned and no swap entry, one is added;
//! - a separate `/boot` carried onto the new disk ([`OutputVolume::boot`](super::OutputVolume))
//!   stays mounted, by `UUID=`: the kernel and GRUB's files were written into it; a `/boot`
//!   entry naming anything else is commented out, since the converted disk then boots from
//!   `/boot` inside the root filesystem;
//! - with the carried volumes known ([`FixupContext::volumes`]), an entry naming one of
//!   them (by `/dev/xvdXN`, `/dev/sdXN`, `/dev/hdXN`, an alias such as `/dev/VG/LV`,
//!   `UUID=` or `LABEL=`) resolves to it: device names become `UUID=` (UUIDs and labels are
//!   kept), `UUID=`/`LABEL=` stay; an entry naming a filesystem that was not given keeps
//!   its device (a Xen name of another disk mapped to the new bus) and gets `nofail`, with
//!   a warning naming it;
//! - other kernel names are mapped to the new bus (`/dev/xvdb1` → `/dev/vdb1`), with a
//!   warning since those disks are not converted — except names on the converted disk
//!   itself (`xvdaN` besides root and swap), which would land on the wrong partition and
//!   are commented out instead;
//! - on a UEFI or hybrid disk ([`FixupContext::esp_uuid`]), the EFI System Partition is
//!   mounted at `/boot/efi` by its FAT serial: an existing `/boot/efi` entry is pointed at
//!   it, else one is added (`crate::boot::uefi::esp_fstab_line`);
//! - `UUID=`, `LABEL=`, `PARTUUID=`, `/dev/disk/by-*`, `/dev/mapper/*`, network and virtual
//!   filesystems are left untouched.
//!
//! Lines are edited field by field: comments, blank lines, unknown lines and the
//! whitespace between fields (tabs included) stay byte-for-byte as they were.

use super::devices::KernelDisk;
use super::edit::{
    append_lines, apply_edit, create, edit_config, exists, is_blank_or_comment, lines, read_config,
    split_eol, Edited, Fields, COMMENT_PREFIX,
};
use super::{FixupContext, FixupError};
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;
use std::collections::BTreeSet;

const FSTAB: &str = "/etc/fstab";
const CRYPTTAB: &str = "/etc/crypttab";
const RESUME: &str = "/etc/initramfs-tools/conf.d/resume";

fn is_uuid_spec(spec: &str, uuid: &str) -> bool {
    spec.strip_prefix("UUID=")
        .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
}

/// A swap spec that names a partition on a disk (as opposed to a swap file or a
/// device-mapper device such as an encrypted swap): the one the new partition replaces.
fn is_partition_spec(spec: &str) -> bool {
    [
        "UUID=",
        "LABEL=",
        "PARTUUID=",
        "PARTLABEL=",
        "/dev/disk/by-",
    ]
    .iter()
    .any(|p| spec.starts_with(p))
        || spec == "/dev/root"
        || KernelDisk::parse(spec).is_some()
}

/// Disk letters that stand for the converted disk: `a` (the converted disk is the first
/// disk under KVM) and the disk the guest's root entry names.
fn converted_letters(text: &[u8]) -> BTreeSet<String> {
    let mut set = BTreeSet::from(["a".to_string()]);
    for line in lines(text) {
        let Ok(t) = std::str::from_utf8(split_eol(line).0) else {
            continue;
        };
        if is_blank_or_comment(t) {
            continue;
        }
        let f = Fields::parse(t);
        if f.get(1) == Some("/") {
            if let Some(d) = f.get(0).and_then(KernelDisk::parse) {
                set.insert(d.letters.to_string());
            }
            break;
        }
    }
    set
}

fn root_line(ctx: &FixupContext) -> String {
    format!(
        "UUID={} / {} errors=remount-ro 0 1\n",
        ctx.root_uuid, ctx.root_fstype
    )
}

fn swap_line(uuid: &str) -> String {
    format!("UUID={uuid} none swap sw 0 0\n")
}

fn esp_line(serial: &str) -> String {
    format!("{}\n", crate::boot::uefi::esp_fstab_line(serial))
}

/// Where the guest mounts the ESP.
const ESP_MOUNT: &str = "/boot/efi";

/// Mount points whose entries this module decides itself whatever the volumes: `/boot`
/// (unless it names the carried boot volume, the kernel is in the root filesystem's
/// /boot) and, on a UEFI disk, the ESP.
fn special_mount(mnt: &str, ctx: &FixupContext) -> bool {
    mnt == "/boot" || (mnt == ESP_MOUNT && ctx.esp_uuid.is_some())
}

/// Compute the new fstab text (pure, for unit tests).
fn edit_fstab(old: &[u8], ctx: &FixupContext) -> Edited {
    let mut out = Edited::default();
    let converted = converted_letters(old);
    let root_spec = format!("UUID={}", ctx.root_uuid);
    let mut root_seen = false;
    let mut swap_assigned = false;
    let mut esp_seen = false;
    let carried: &[super::OutputVolume] = ctx.volumes.as_deref().unwrap_or(&[]);
    for line in lines(old) {
        let (text_bytes, eol) = split_eol(line);
        let Ok(text) = std::str::from_utf8(text_bytes) else {
            out.keep(line);
            continue;
        };
        if is_blank_or_comment(text) {
            out.keep(line);
            continue;
        }
        let mut f = Fields::parse(text);
        let (Some(spec), Some(mnt)) = (f.get(0).map(str::to_string), f.get(1).map(str::to_string))
        else {
            out.keep(line);
            continue;
        };
        let fstype = f.get(2).map(str::to_string);
        let is_swap = fstype.as_deref() == Some("swap");

        if mnt == "/" && !root_seen {
            root_seen = true;
            let mut changed = false;
            if !is_uuid_spec(&spec, &ctx.root_uuid) {
                f.set(0, &root_spec);
                out.edits.push(format!("root entry {spec} → {root_spec}"));
                changed = true;
            }
            if let Some(t) = fstype.as_deref() {
                if t != ctx.root_fstype && t != "auto" {
                    f.set(2, &ctx.root_fstype);
                    out.edits
                        .push(format!("root filesystem type {t} → {}", ctx.root_fstype));
                    changed = true;
                }
            }
            if changed {
                out.push(&f.render(), eol);
            } else {
                out.keep(line);
            }
        } else if mnt == "/" {
            out.warnings.push(format!(
                "/etc/fstab has a second entry for / ({spec}); it was left as it is"
            ));
            out.keep(line);
        } else if let Some(v) = carried
            .iter()
            .find(|v| (!special_mount(&mnt, ctx) || (mnt == "/boot" && v.boot)) && v.matches(&spec))
        {
            // A volume carried onto the new disk: its UUID and label are the same, so
            // `UUID=`/`LABEL=` lines stay; device names point at it by UUID.
            swap_assigned |= v.swap;
            let new = v.spec(ctx.disk_bus);
            if spec.starts_with("UUID=") || spec.starts_with("LABEL=") || spec == new {
                out.keep(line);
            } else {
                f.set(0, &new);
                out.edits.push(format!("{mnt} entry {spec} → {new}"));
                out.push(&f.render(), eol);
            }
        } else if ctx.volumes.is_some()
            && !is_swap
            && !special_mount(&mnt, ctx)
            && (spec.starts_with("UUID=")
                || spec.starts_with("LABEL=")
                || KernelDisk::parse(&spec).is_some())
        {
            // A filesystem that was not given: the guest boots without it.
            let mut new_spec = spec.clone();
            if let Some(d) = KernelDisk::parse(&spec).filter(|d| !converted.contains(d.letters)) {
                new_spec = d.on_bus(ctx.disk_bus);
                f.set(0, &new_spec);
            }
            let opts = f.get(3).unwrap_or("defaults").to_string();
            let has_nofail = opts.split(',').any(|o| o == "nofail");
            if !has_nofail && f.get(3).is_some() {
                f.set(3, &format!("{opts},nofail"));
            }
            if new_spec == spec && (has_nofail || f.get(3).is_none()) {
                out.keep(line);
            } else {
                out.edits.push(format!(
                    "{mnt} entry {spec}: nofail (not on the converted disk)"
                ));
                out.push(&f.render(), eol);
            }
            out.warnings.push(format!(
                "/etc/fstab: {mnt} is on {spec}, which was not given to the conversion (no image for it); the entry {}so the guest boots without it — give the disk with --disk to carry it",
                if new_spec == spec { "gets nofail ".to_string() } else { format!("is renamed to {new_spec} and gets nofail ") }
            ));
        } else if is_swap {
            match &ctx.swap_uuid {
                Some(uuid) if !swap_assigned && is_partition_spec(&spec) => {
                    swap_assigned = true;
                    if is_uuid_spec(&spec, uuid) {
                        out.keep(line);
                    } else {
                        let new = format!("UUID={uuid}");
                        f.set(0, &new);
                        out.edits.push(format!("swap entry {spec} → {new}"));
                        out.push(&f.render(), eol);
                    }
                }
                _ if KernelDisk::parse(&spec).is_some() => {
                    let why = format!("swap device {spec} is not part of the converted disk");
                    out.disable(text, eol, &why);
                    out.edits.push(format!("swap entry {spec} commented out"));
                    out.warnings
                        .push(format!("/etc/fstab: {why}; its entry was commented out"));
                }
                _ => out.keep(line),
            }
        } else if let (true, Some(serial)) = (mnt == ESP_MOUNT, &ctx.esp_uuid) {
            if esp_seen {
                out.warnings.push(format!(
                    "/etc/fstab has a second entry for {ESP_MOUNT} ({spec}); it was left as it is"
                ));
                out.keep(line);
                continue;
            }
            esp_seen = true;
            let mut changed = false;
            if !is_uuid_spec(&spec, serial) {
                let new = format!("UUID={serial}");
                f.set(0, &new);
                out.edits.push(format!("{ESP_MOUNT} entry {spec} → {new}"));
                changed = true;
            }
            if let Some(t) = fstype.as_deref() {
                if t != "vfat" && t != "auto" {
                    f.set(2, "vfat");
                    out.edits
                        .push(format!("{ESP_MOUNT} filesystem type {t} → vfat"));
                    changed = true;
                }
            }
            if changed {
                out.push(&f.render(), eol);
            } else {
                out.keep(line);
            }
        } else if mnt == "/boot" {
            let why = format!(
                "the converted disk has no separate /boot ({spec}); the kernel is in the root filesystem's /boot"
            );
            out.disable(text, eol, &why);
            out.edits.push(format!("/boot entry {spec} commented out"));
            out.warnings.push(format!(
                "/etc/fstab mounted a separate /boot from {spec}; the entry was commented out because the converted disk boots from /boot in the root filesystem"
            ));
        } else if let Some(d) = KernelDisk::parse(&spec) {
            if converted.contains(d.letters) {
                let why = format!(
                    "{spec} was a partition of the converted Xen disk, which only keeps the root filesystem"
                );
                out.disable(text, eol, &why);
                out.edits.push(format!("{mnt} entry {spec} commented out"));
                out.warnings.push(format!(
                    "/etc/fstab: {why}; the entry for {mnt} was commented out"
                ));
            } else {
                let new = d.on_bus(ctx.disk_bus);
                if new == spec {
                    out.keep(line);
                } else {
                    f.set(0, &new);
                    out.edits.push(format!("{mnt} entry {spec} → {new}"));
                    out.warnings.push(format!(
                        "/etc/fstab: {mnt} is on {spec}, a disk imgconv does not convert; renamed to {new} for the new bus — attach that disk to the new machine or fix the entry"
                    ));
                    out.push(&f.render(), eol);
                }
            }
        } else {
            out.keep(line);
        }
    }
    if !root_seen {
        append_lines(
            &mut out.text,
            &format!(
                "{COMMENT_PREFIX}root filesystem (this fstab had no entry for /)\n{}",
                root_line(ctx)
            ),
        );
        out.edits.push(format!("added a root entry {root_spec}"));
        out.warnings
            .push("/etc/fstab had no entry for /; imgconv added one by UUID".to_string());
    }
    if let (Some(uuid), false) = (&ctx.swap_uuid, swap_assigned) {
        append_lines(
            &mut out.text,
            &format!(
                "{COMMENT_PREFIX}the new swap partition\n{}",
                swap_line(uuid)
            ),
        );
        out.edits.push(format!("added a swap entry UUID={uuid}"));
    }
    if let (Some(serial), false) = (&ctx.esp_uuid, esp_seen) {
        append_lines(
            &mut out.text,
            &format!(
                "{COMMENT_PREFIX}the EFI System Partition\n{}",
                esp_line(serial)
            ),
        );
        out.edits
            .push(format!("added a {ESP_MOUNT} entry UUID={serial}"));
    }
    out
}

/// Fix `/etc/fstab` for the converted disk (see the module documentation).
pub fn fix_fstab(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    const STEP: &str = "fstab";
    let why = "the Xen disk names (xvdX) do not exist under KVM; the converted filesystems are found by UUID";
    let Some(old) = read_config(guest, STEP, FSTAB)? else {
        if exists(guest, STEP, FSTAB)? {
            report.warn(
                "/etc/fstab is not a regular file (or a dangling link); it was left as it is",
            );
            return Ok(());
        }
        let mut text = format!(
            "# /etc/fstab written by imgconv: the guest had none\n{}",
            root_line(ctx)
        );
        if let Some(uuid) = &ctx.swap_uuid {
            text.push_str(&swap_line(uuid));
        }
        if let Some(serial) = &ctx.esp_uuid {
            text.push_str(&esp_line(serial));
        }
        create(
            guest,
            report,
            STEP,
            FSTAB,
            text.as_bytes(),
            NodeAttrs::root(0o644, ctx.mtime),
            "created /etc/fstab with the root filesystem (and swap) by UUID",
            "the guest had no /etc/fstab, so nothing would remount the root filesystem read-write",
        )?;
        report.warn("the guest had no /etc/fstab; imgconv created one");
        return Ok(());
    };
    apply_edit(guest, report, STEP, FSTAB, &old, edit_fstab(&old, ctx), why)?;
    Ok(())
}

/// Compute the new crypttab text: the device field (2nd) of each entry, by the fstab
/// rules for kernel names.
fn edit_crypttab(old: &[u8], ctx: &FixupContext) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (text_bytes, eol) = split_eol(line);
        let Ok(text) = std::str::from_utf8(text_bytes) else {
            out.keep(line);
            continue;
        };
        if is_blank_or_comment(text) {
            out.keep(line);
            continue;
        }
        let mut f = Fields::parse(text);
        let Some((name, spec)) = f
            .get(0)
            .zip(f.get(1))
            .map(|(a, b)| (a.to_string(), b.to_string()))
        else {
            out.keep(line);
            continue;
        };
        match KernelDisk::parse(&spec) {
            Some(d) if d.letters == "a" => {
                out.warnings.push(format!(
                    "/etc/crypttab: {name} is on {spec}, a partition of the converted Xen disk that was not carried over; left as it is"
                ));
                out.keep(line);
            }
            Some(d) if d.on_bus(ctx.disk_bus) != spec => {
                let new = d.on_bus(ctx.disk_bus);
                f.set(1, &new);
                out.edits.push(format!("{name} device {spec} → {new}"));
                out.warnings.push(format!(
                    "/etc/crypttab: {name} is on {spec}, a disk imgconv does not convert; renamed to {new} for the new bus"
                ));
                out.push(&f.render(), eol);
            }
            _ => out.keep(line),
        }
    }
    out
}

/// Map kernel disk names in `/etc/crypttab` to the new bus.
pub fn fix_crypttab(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    edit_config(
        guest,
        report,
        "crypttab",
        CRYPTTAB,
        "the Xen disk names (xvdX) do not exist under KVM",
        |old| edit_crypttab(old, ctx),
    )
}

/// Compute the new initramfs-tools resume config: a `RESUME=` naming a kernel disk or a
/// logical volume of a flattened volume group points at the swap partition by UUID, or
/// at `none` when there is no swap.
fn edit_resume(old: &[u8], ctx: &FixupContext) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (text_bytes, eol) = split_eol(line);
        let parsed = std::str::from_utf8(text_bytes).ok().and_then(|text| {
            let lead = &text[..text.len() - text.trim_start().len()];
            let value = text.trim_start().strip_prefix("RESUME=")?;
            let (quote, inner) = match value.strip_prefix('"') {
                Some(v) => ("\"", v.strip_suffix('"')?),
                None => ("", value.trim_end()),
            };
            let flattened_lv = crate::lvm::parse_device_name(inner)
                .is_some_and(|(vg, _)| ctx.flattened_groups().contains(&vg));
            if KernelDisk::parse(inner).is_none() && !flattened_lv {
                return None;
            }
            Some((lead, quote, inner))
        });
        match parsed {
            Some((lead, quote, dev)) => {
                let new = match &ctx.swap_uuid {
                    Some(u) => format!("UUID={u}"),
                    None => "none".to_string(),
                };
                out.push(&format!("{lead}RESUME={quote}{new}{quote}"), eol);
                out.edits.push(format!("RESUME={dev} → RESUME={new}"));
            }
            None => out.keep(line),
        }
    }
    out
}

/// Point `RESUME=` in `/etc/initramfs-tools/conf.d/resume` at the new swap partition.
pub fn fix_resume(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    edit_config(
        guest,
        report,
        "resume",
        RESUME,
        "an initramfs built in the guest would wait for a Xen swap device that no longer exists",
        |old| edit_resume(old, ctx),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::DiskBus;

    fn ctx() -> FixupContext {
        let mut c = FixupContext::new("1111-root", "ext4", Some("2222-swap"));
        c.mtime = 0;
        c
    }

    fn edit(s: &str, c: &FixupContext) -> (String, Edited) {
        let e = edit_fstab(s.as_bytes(), c);
        (String::from_utf8(e.text.clone()).unwrap(), e)
    }

    #[test]
    fn esp_entry_added_or_repointed_on_uefi_disks() {
        let mut c = ctx();
        c.esp_uuid = Some("1A2B-3C4D".into());
        let (t, e) = edit(
            "/dev/xvda1 / ext4 defaults 0 1\nUUID=2222-swap none swap sw 0 0\n",
            &c,
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\nUUID=2222-swap none swap sw 0 0\n\
             # imgconv: the EFI System Partition\nUUID=1A2B-3C4D /boot/efi vfat umask=0077 0 1\n"
        );
        assert_eq!(
            e.edits.last().unwrap(),
            "added a /boot/efi entry UUID=1A2B-3C4D"
        );
        // An old ESP entry (a kernel name on the converted disk, wrong type) is re-pointed,
        // its options kept; a second one is left alone with a warning.
        let (t, e) = edit(
            "UUID=1111-root / ext4 defaults 0 1\n/dev/xvda3\t/boot/efi msdos defaults 0 2\n\
             LABEL=X /boot/efi vfat defaults 0 0\nUUID=2222-swap none swap sw 0 0\n",
            &c,
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\nUUID=1A2B-3C4D\t/boot/efi vfat defaults 0 2\n\
             LABEL=X /boot/efi vfat defaults 0 0\nUUID=2222-swap none swap sw 0 0\n"
        );
        assert_eq!(
            e.edits,
            [
                "/boot/efi entry /dev/xvda3 → UUID=1A2B-3C4D",
                "/boot/efi filesystem type msdos → vfat"
            ]
        );
        assert!(
            e.warnings[0].contains("second entry for /boot/efi"),
            "{:?}",
            e.warnings
        );
        // Already right: unchanged.
        let right = "UUID=1111-root / ext4 defaults 0 1\nUUID=1a2b-3c4d /boot/efi vfat umask=0077 0 1\nUUID=2222-swap none swap sw 0 0\n";
        let (t, e) = edit(right, &c);
        assert_eq!(t, right);
        assert!(e.edits.is_empty());
        // BIOS disks (no ESP) leave a /boot/efi entry to the other rules.
        let (t, _) = edit(
            "UUID=1111-root / ext4 defaults 0 1\nUUID=1A2B-3C4D /boot/efi vfat umask=0077 0 1\nUUID=2222-swap none swap sw 0 0\n",
            &ctx(),
        );
        assert!(t.contains("UUID=1A2B-3C4D /boot/efi"));
        // No fstab at all: the created one has the ESP too.
        let mut fs = crate::guestfs::MemFs::new().with_file("/etc/hostname", "guest\n");
        let mut report = Report::default();
        let mut c2 = ctx();
        c2.esp_uuid = Some("1A2B-3C4D".into());
        fix_fstab(&mut fs, &c2, &mut report).unwrap();
        assert!(fs
            .text("/etc/fstab")
            .unwrap()
            .ends_with("UUID=1A2B-3C4D /boot/efi vfat umask=0077 0 1\n"));
        // A bad serial is refused by validate().
        c.esp_uuid = Some("1A2B 3C4D".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn unterminated_last_line_and_crlf_survive() {
        let (t, _) = edit(
            "/dev/xvda1 / ext3 defaults 0 1\r\nproc /proc proc defaults 0 0",
            &ctx(),
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\r\nproc /proc proc defaults 0 0\n\
             # imgconv: the new swap partition\nUUID=2222-swap none swap sw 0 0\n"
        );
    }

    #[test]
    fn non_utf8_lines_are_kept() {
        let mut old = b"# caf\xe9\n".to_vec();
        old.extend_from_slice(
            b"UUID=1111-root / ext4 defaults 0 1\nUUID=2222-swap none swap sw 0 0\n",
        );
        let e = edit_fstab(&old, &ctx());
        assert_eq!(e.text, old);
        assert!(e.edits.is_empty());
    }

    #[test]
    fn sata_keeps_sd_names() {
        let mut c = ctx();
        c.disk_bus = DiskBus::Sata;
        let (t, e) = edit(
            "UUID=1111-root / ext4 defaults 0 1\n/dev/sdb1 /srv ext4 defaults 0 2\n/dev/hdc1 /x ext4 defaults 0 2\nUUID=2222-swap none swap sw 0 0\n",
            &c,
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\n/dev/sdb1 /srv ext4 defaults 0 2\n/dev/sdc1 /x ext4 defaults 0 2\nUUID=2222-swap none swap sw 0 0\n"
        );
        assert_eq!(e.edits, ["/x entry /dev/hdc1 → /dev/sdc1"]);
    }

    #[test]
    fn encrypted_swap_and_swap_files_are_not_taken_for_the_new_partition() {
        let (t, _) = edit(
            "/dev/xvda1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n/dev/mapper/cswap none swap sw 0 0\n",
            &ctx(),
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n/dev/mapper/cswap none swap sw 0 0\n\
             # imgconv: the new swap partition\nUUID=2222-swap none swap sw 0 0\n"
        );
    }

    #[test]
    fn no_swap_planned_disables_xen_swap() {
        let mut c = ctx();
        c.swap_uuid = None;
        c.new_swap_partition_exists = false;
        let (t, e) = edit(
            "/dev/xvda2 / ext3 defaults 0 1\n/dev/xvda1 none swap sw 0 0\n",
            &c,
        );
        assert_eq!(
            t,
            "UUID=1111-root / ext4 defaults 0 1\n\
             # imgconv: next entry disabled: swap device /dev/xvda1 is not part of the converted disk\n\
             # imgconv: /dev/xvda1 none swap sw 0 0\n"
        );
        assert_eq!(e.warnings.len(), 1);
    }

    #[test]
    fn resume_on_a_flattened_volume_points_at_the_swap_uuid() {
        let mut c = ctx();
        c.swap_uuid = Some("3b1c2d3e-4f50-4162-9374-8596a7b8c9da".into());
        c.root_aliases = vec!["/dev/VolGroup00/LogVol00".into()];
        let e = edit_resume(b"RESUME=/dev/mapper/VolGroup00-LogVol01\n", &c);
        assert_eq!(
            String::from_utf8_lossy(&e.text),
            "RESUME=UUID=3b1c2d3e-4f50-4162-9374-8596a7b8c9da\n"
        );
        let e = edit_resume(b"RESUME=/dev/othervg/swap\n", &c);
        assert!(e.edits.is_empty());
    }

    #[test]
    fn resume_points_at_new_swap_or_none() {
        let e = edit_resume(b"RESUME=/dev/xvda1\n", &ctx());
        assert_eq!(e.text, b"RESUME=UUID=2222-swap\n");
        let e = edit_resume(b"# x\nRESUME=\"/dev/xvda1\"\n", &ctx());
        assert_eq!(e.text, b"# x\nRESUME=\"UUID=2222-swap\"\n");
        let mut c = ctx();
        c.swap_uuid = None;
        let e = edit_resume(b"RESUME=/dev/xvda1\n", &c);
        assert_eq!(e.text, b"RESUME=none\n");
        let e = edit_resume(b"RESUME=UUID=abc\n", &ctx());
        assert_eq!(e.text, b"RESUME=UUID=abc\n");
    }

    #[test]
    fn crypttab_maps_other_disks() {
        let e = edit_crypttab(
            b"# <target> <source> <key> <options>\ndata\t/dev/xvdb1\tnone\tluks\nhome UUID=5 none luks\n",
            &ctx(),
        );
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "# <target> <source> <key> <options>\ndata\t/dev/vdb1\tnone\tluks\nhome UUID=5 none luks\n"
        );
    }
}
