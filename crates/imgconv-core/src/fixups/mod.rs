//! Guest configuration fixups for the new hardware.
//!
//! A Xen PV guest names its disks `xvdX`, logs in on `hvc0`/`xvc0`, loads `xennet`/`xenblk`,
//! pins eth0 to its Xen vif MAC and may run Xen guest tools. Under KVM none of that holds.
//! [`apply`] adapts the guest's configuration through the [`GuestFs`] trait, one module per
//! concern, so the same code runs on a real image (`ext::ExtFs`), on an in-memory `MemFs`
//! in tests, and on a read-only [`dry_run::Overlay`] for `--dry-run` ([`plan`]):
//!
//! | module | files |
//! |---|---|
//! | [`fstab`] | `/etc/fstab`, `/etc/crypttab`, `/etc/initramfs-tools/conf.d/resume` |
//! | [`console`] | systemd getty links, `/etc/inittab`, upstart `/etc/init/*.conf` and `/etc/event.d/*`, `/etc/securetty` |
//! | [`network`] | `/etc/udev/rules.d/70-persistent-net.rules`, `75-persistent-net-generator.rules`, `HWADDR=` in `/etc/sysconfig/network-scripts/ifcfg-*`, NetworkManager `mac-address=`, netplan `macaddress:`, systemd-networkd `MACAddress=` |
//! | [`modules`] | `/etc/modules`, `/etc/modules-load.d/*.conf`, `/etc/modprobe.d/*.conf`, `/etc/modprobe.conf`, `/etc/initramfs-tools/modules`, SUSE `/etc/sysconfig/kernel` |
//! | [`xen_tools`] | systemd `*.wants` links and SysV `rc?.d` links of Xen guest tools |
//! | [`bootloader`] | `/etc/default/grub`, `/etc/sysconfig/grub`, `/etc/sysconfig/bootloader`, `/boot/grub2/grub.cfg`, `/boot/grub2/grubenv`, grub-pc's install device in debconf |
//! | [`cloud_init`] | `/etc/cloud/cloud.cfg.d/` datasource list |
//! | [`selinux`] | `/.autorelabel` |
//!
//! Rules every fixup follows:
//! - every change is recorded with [`Report::change`] (what, why, where the original is);
//! - an edited file's original is first copied to `<file>.imgconv-orig` (same mode, owner
//!   and mtime); a link or file that is moved aside is renamed, and the rename is the
//!   backup (see [`BACKUP_SUFFIX`] for the few names that must stay invisible to the
//!   program that scans the directory);
//! - an existing backup is never overwritten: a later backup of the same file gets a
//!   numbered name (`.imgconv-orig.2`, …);
//! - a fixup only acts when the guest's current state needs it, so a second [`apply`] on
//!   the output changes nothing and reports nothing new (idempotency, tested per init
//!   system); only a warning about something no fixup can repair (say, a guest without
//!   `getty@.service`) is given again.
//!

pub mod bootloader;
pub mod cloud_init;
pub mod console;
pub(crate) mod devices;
pub mod diff;
pub mod dry_run;
mod edit;
pub mod fstab;
pub mod modules;
pub mod network;
pub mod selinux;
pub mod xen_tools;

use crate::ext::read::ExtReader;
use crate::guestfs::{GuestFs, GuestFsError};
use crate::report::Report;

pub use edit::BACKUP_SUFFIX;

/// The disk bus of the converted disk (the pipeline's own type), which decides the
/// kernel's disk names.
pub use crate::hardware::DiskBus;

/// The kernel's disk name prefix on `bus`: `vd` for virtio, `sd` for SATA and for IDE —
/// every kernel since libata's `ata_piix`/`pata_*` drivers replaced the old IDE layer
/// (Linux 2.6.19+, and the only IDE drivers in current distribution kernels) names IDE
/// disks `sd*`, not `hd*`.
pub fn device_prefix(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "vd",
        DiskBus::Sata | DiskBus::Ide => "sd",
    }
}

/// The guest's init system, which decides how gettys are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitSystem {
    Systemd,
    /// SysV init with `/etc/inittab`.
    Sysvinit,
    /// Upstart: `/etc/init/*.conf` (0.6+) and/or the old `/etc/event.d/` jobs.
    Upstart,
}

/// What the fixups need to know about the converted disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FixupContext {
    /// UUID of the root filesystem on the converted disk (as `blkid` prints it).
    pub root_uuid: String,
    /// Type of the root filesystem (`ext2`, `ext3`, `ext4`).
    pub root_fstype: String,
    /// UUID of the new swap partition; `None` when the plan has no swap.
    pub swap_uuid: Option<String>,
    /// Bus of the converted disk; other kernel disk names in the guest are mapped to it.
    pub disk_bus: DiskBus,
    /// Whether the converted disk has a swap partition. Must agree with `swap_uuid`
    /// (checked by [`FixupContext::validate`]).
    pub new_swap_partition_exists: bool,
    /// The serial console the new kernel command line uses (`ttyS0`).
    pub serial_console: String,
    /// The guest's init system when the caller knows it; detected when `None`.
    pub init_system: Option<InitSystem>,
    /// Modification time for files and links the fixups create, seconds since the epoch.
    pub mtime: i64,
    /// FAT serial of the EFI System Partition (`ABCD-1234`) of a UEFI or hybrid disk:
    /// fstab mounts it at `/boot/efi`. `None` for a BIOS (MBR) disk.
    pub esp_uuid: Option<String>,
    /// Kernel arguments the guest's userland needs with the new kernel
    /// (`vsyscall=emulate` for an old glibc): the guest's own boot settings gain them
    /// too, so that a menu it regenerates keeps them.
    pub extra_kernel_args: Vec<String>,
    /// Leave cloud-init's datasource list alone (by default it is limited to
    /// `NoCloud, None`, see [`cloud_init`]).
    pub keep_cloud_init: bool,
    /// The guest's volumes carried onto the new disk besides the root, when the caller
    /// knows them: fstab entries naming them resolve to them, and entries naming anything
    /// else the new disk does not have get `nofail` (see [`fstab`]). `None`: unknown, the
    /// entries are handled as if only the root and the swap were carried.
    pub volumes: Option<Vec<OutputVolume>>,
    /// Other device paths the guest named its root by (`/dev/VG/LV`, `/dev/mapper/VG-LV`
    /// for a root on a flattened LVM2 logical volume): a kernel `root=` naming one of them
    /// becomes `root=UUID=`.
    pub root_aliases: Vec<String>,
}

/// A volume of the guest on the converted disk, with the names the guest knew it by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputVolume {
    /// Its Xen kernel name (`xvda3`, `xvdb1`).
    pub xen_device: Option<String>,
    /// Other device paths (`/dev/VG/LV`, `/dev/mapper/VG-LV`).
    pub aliases: Vec<String>,
    /// Its filesystem or swap UUID on the new disk (kept from the source).
    pub uuid: Option<String>,
    /// Its label (kept).
    pub label: Option<String>,
    /// Its partition number on the new disk.
    pub partition: u32,
    /// A swap area.
    pub swap: bool,
    /// The separate `/boot` filesystem, where the kernel and GRUB's files are: its entry
    /// is kept (by `UUID=`), not commented out.
    pub boot: bool,
}

impl OutputVolume {
    /// True when the fstab device field `spec` names it.
    pub fn matches(&self, spec: &str) -> bool {
        crate::source::volumes::spec_names(
            spec,
            self.uuid.as_deref(),
            self.label.as_deref(),
            self.xen_device.as_deref(),
            &self.aliases,
        )
    }

    /// How the new fstab names it: `UUID=…`, or the new disk's partition when it has no
    /// UUID this library reads (`/dev/vda3`).
    pub fn spec(&self, bus: DiskBus) -> String {
        match &self.uuid {
            Some(u) => format!("UUID={u}"),
            None => format!("/dev/{}a{}", device_prefix(bus), self.partition),
        }
    }
}

impl FixupContext {
    /// The volume groups whose logical volumes the converted disk carries as plain
    /// partitions (from the root's and the carried volumes' `/dev/VG/LV` names).
    pub fn flattened_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        let carried = self.volumes.iter().flatten().flat_map(|v| v.aliases.iter());
        for alias in self.root_aliases.iter().chain(carried) {
            if let Some((vg, _)) = crate::lvm::parse_device_name(alias) {
                if !groups.contains(&vg) {
                    groups.push(vg);
                }
            }
        }
        groups
    }

    /// A context for a virtio disk with console `ttyS0`, detecting the init system and
    /// stamping new files with the current time.
    pub fn new(root_uuid: &str, root_fstype: &str, swap_uuid: Option<&str>) -> Self {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        FixupContext {
            root_uuid: root_uuid.to_string(),
            root_fstype: root_fstype.to_string(),
            swap_uuid: swap_uuid.map(str::to_string),
            disk_bus: DiskBus::Virtio,
            new_swap_partition_exists: swap_uuid.is_some(),
            serial_console: "ttyS0".to_string(),
            init_system: None,
            mtime,
            esp_uuid: None,
            extra_kernel_args: Vec::new(),
            keep_cloud_init: false,
            volumes: None,
            root_aliases: Vec::new(),
        }
    }

    /// Check the values that end up in guest files: UUIDs and names must be plain tokens
    /// (no whitespace or separators that would corrupt a config line).
    pub fn validate(&self) -> Result<(), FixupError> {
        let token = |what: &str, v: &str, ok: fn(char) -> bool| {
            if v.is_empty() || v.len() > 64 || !v.chars().all(ok) {
                Err(FixupError::InvalidContext(format!(
                    "{what} {v:?} is not a plain token"
                )))
            } else {
                Ok(())
            }
        };
        let uuid_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        token("root filesystem UUID", &self.root_uuid, uuid_char)?;
        token("root filesystem type", &self.root_fstype, |c| {
            c.is_ascii_alphanumeric()
        })?;
        token("serial console", &self.serial_console, |c| {
            c.is_ascii_alphanumeric()
        })?;
        if let Some(s) = &self.swap_uuid {
            token("swap UUID", s, uuid_char)?;
        }
        if let Some(s) = &self.esp_uuid {
            token("ESP UUID", s, uuid_char)?;
        }
        for a in &self.extra_kernel_args {
            token("kernel argument", a, |c| {
                c.is_ascii_alphanumeric() || "=.,_-:/".contains(c)
            })?;
        }
        if self.new_swap_partition_exists != self.swap_uuid.is_some() {
            return Err(FixupError::InvalidContext(format!(
                "new_swap_partition_exists is {} but swap_uuid is {:?}",
                self.new_swap_partition_exists, self.swap_uuid
            )));
        }
        Ok(())
    }
}

/// Errors of the fixups.
#[derive(Debug, thiserror::Error)]
pub enum FixupError {
    /// A guest filesystem operation failed (including a symlink loop in the guest).
    #[error("fixing {step} ({path}): {source}")]
    Guest {
        step: &'static str,
        path: String,
        #[source]
        source: GuestFsError,
    },
    /// The caller's [`FixupContext`] is inconsistent.
    #[error("invalid fixup settings: {0}")]
    InvalidContext(String),
    /// Every backup name for a file is taken.
    #[error("fixing {step}: no free backup name for {path} (100 backups exist)")]
    NoBackupName { step: &'static str, path: String },
}

/// Attach the step and path to a guest filesystem error.
pub(crate) trait At<T> {
    fn at(self, step: &'static str, path: &str) -> Result<T, FixupError>;
}

impl<T> At<T> for Result<T, GuestFsError> {
    fn at(self, step: &'static str, path: &str) -> Result<T, FixupError> {
        self.map_err(|source| FixupError::Guest {
            step,
            path: path.to_string(),
            source,
        })
    }
}

/// Apply every fixup to the guest, recording each change (and each thing the user should
/// check) in `report`, with the unified diff of every file changed ([`diff`]). Running it again on its own output changes nothing.
pub fn apply(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    ctx.validate()?;
    let mut recorder = diff::Recorder::new(guest);
    apply_all(&mut recorder, ctx, report)?;
    let diffs = recorder.finish().at("diff", "/")?;
    report.diffs.extend(diffs);
    Ok(())
}

/// Every fixup, in order.
fn apply_all(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    fstab::fix_fstab(guest, ctx, report)?;
    fstab::fix_crypttab(guest, ctx, report)?;
    fstab::fix_resume(guest, ctx, report)?;
    console::fix_consoles(guest, ctx, report)?;
    network::fix_persistent_net(guest, ctx, report)?;
    network::fix_mac_bindings(guest, ctx, report)?;
    modules::fix_modules(guest, ctx, report)?;
    xen_tools::disable_xen_tools(guest, ctx, report)?;
    bootloader::fix_bootloader(guest, ctx, report)?;
    cloud_init::limit_datasources(guest, ctx, report)?;
    // Last: the relabel covers every file written before it.
    selinux::request_relabel(guest, ctx, report)?;
    Ok(())
}

/// What [`apply`] would change in the guest filesystem read by `source`, without writing
/// anything: the fixups run unchanged over a [`dry_run::Overlay`] that keeps their writes
/// in memory.
pub fn plan(source: &ExtReader, ctx: &FixupContext) -> Result<Report, FixupError> {
    plan_over(dry_run::ext_source(source), ctx)
}

/// [`plan`] over any read-only source with guest errors (e.g. [`dry_run::ext_source`] of
/// a [`crate::tree::Mounted`] pair of readers for a guest with a separate `/boot`).
pub fn plan_over(
    source: impl crate::tree::TreeRead<Error = crate::guestfs::GuestFsError>,
    ctx: &FixupContext,
) -> Result<Report, FixupError> {
    let mut overlay = dry_run::Overlay::new(source);
    let mut report = Report::default();
    apply(&mut overlay, ctx, &mut report)?;
    Ok(report)
}

impl FixupError {
    /// What the error concerns: the guest being edited (the input), or the library.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            FixupError::Guest { source, .. } => source.kind(),
            FixupError::NoBackupName { .. } => K::Input,
            _ => K::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_validation_rejects_tokens_that_would_corrupt_lines() {
        let ok = FixupContext::new("0b0e6c6e-1f47-4a39-a27d-7d3d5b1d7a41", "ext4", None);
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.root_uuid = "abc def".into();
        assert!(matches!(bad.validate(), Err(FixupError::InvalidContext(_))));
        let mut bad = ok.clone();
        bad.new_swap_partition_exists = true;
        assert!(matches!(bad.validate(), Err(FixupError::InvalidContext(_))));
        let mut bad = ok;
        bad.serial_console = "ttyS0\n".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn bus_prefixes() {
        assert_eq!(device_prefix(DiskBus::Virtio), "vd");
        assert_eq!(device_prefix(DiskBus::Sata), "sd");
        assert_eq!(device_prefix(DiskBus::Ide), "sd");
    }
}
