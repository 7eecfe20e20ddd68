//! What [`plan`](super::plan) decides and [`convert`](super::convert) returns: the plan
//! with its kernel, GRUB and disk choices, and the result of a conversion.

use super::options::ConvertOptions;
use crate::boot;
use crate::boot::uefi::GptPlan;
use crate::donor::ArchCheck;
use crate::graft::GraftSummary;
use crate::layout::DiskPlan;
use crate::progress::Stage;
use crate::report::Report;
use crate::source::Inspection;
use crate::stream::StreamStats;
use std::path::PathBuf;

/// Where the kernel that will boot the guest comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelOrigin {
    /// Grafted from the donor.
    Donor,
    /// Already in the guest (`use_guest_kernel`).
    Guest,
}

/// The kernel chosen for the converted guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelChoice {
    /// Version, as in `/boot/vmlinuz-<version>` and `/lib/modules/<version>`.
    pub version: String,
    /// Where the kernel comes from.
    pub origin: KernelOrigin,
    /// How the kernel's architecture relates to the guest userland's (donor kernels).
    pub arch_check: Option<ArchCheck>,
    /// Bytes the graft adds to the guest filesystem (0 for a guest kernel but GRUB files).
    pub graft_bytes: u64,
    /// Why this kernel boots the guest, in a sentence.
    pub why: String,
    /// The initrd's file name in `/boot` when it is not `initrd.img-<version>` (a
    /// guest kernel's dracut or SUSE initrd).
    pub initrd_file: Option<String>,
    /// What the guest's own newest kernel's initrd offers, when it was looked at.
    pub guest_readiness: Option<crate::donor::guest_kernel::KvmReadiness>,
}

/// Where GRUB's i386-pc files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrubOrigin {
    /// The donor's `/usr/lib/grub/i386-pc` (or its `/boot/grub/i386-pc`).
    Donor,
    /// This machine's `/usr/lib/grub/i386-pc` (allowed by `host_fallbacks`).
    Host,
    /// The directory given with `grub_dir`.
    Dir(PathBuf),
}

impl std::fmt::Display for GrubOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrubOrigin::Donor => f.write_str("donor"),
            GrubOrigin::Host => f.write_str("host"),
            GrubOrigin::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// In JSON as in the plan's text: `"donor"`, `"host"` or the directory.
impl serde::Serialize for GrubOrigin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where the GRUB i386-pc files come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrubChoice {
    /// The donor, the host, or the directory given with `grub_dir`.
    pub origin: GrubOrigin,
    /// GRUB version read from the files, when they say.
    pub version: Option<String>,
    /// Which ext features that GRUB reads, and how we know.
    pub ext_support: String,
}

/// Everything a conversion will do, decided before anything is written.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ConversionPlan {
    /// The options the plan was made for.
    pub options: ConvertOptions,
    /// What the source is: its root filesystem, guest OS and Xen-isms.
    pub inspection: Inspection,
    /// The kernel that will boot the guest.
    pub kernel: KernelChoice,
    /// Where the GRUB i386-pc files come from.
    pub grub: GrubChoice,
    /// The MBR disk: partitions, sizes, and whether the filesystem grows.
    pub disk: DiskPlan,
    /// The grow of a separate `/boot` filesystem that is too small for the kernel, initrd
    /// and GRUB files (resize2fs on its copy, into its larger partition).
    pub boot_grow: Option<crate::layout::GrowPlan>,
    /// The GPT disk for `--firmware uefi|hybrid` (root and swap sized by `disk`); `None`
    /// for BIOS. When set, this is the layout written (print it instead of `disk`).
    pub gpt: Option<GptPlan>,
    /// Where the EFI binaries come from (UEFI and hybrid).
    pub efi_origin: Option<crate::boot::uefi::efi_files::EfiOrigin>,
    /// UUID the swap partition will carry (fixed now so the plan shows the final fstab).
    pub swap_uuid: Option<uuid::Uuid>,
    /// The guest userland checked against the kernel that boots it: kernel arguments it
    /// needs (`vsyscall=emulate`), pairings known not to work, notes.
    pub compat: crate::compat::Assessment,
    /// The guest changes the fixups will make (empty until [`plan`](super::plan) computes them).
    pub fixups: Report,
    /// Things the user should know that do not stop the conversion.
    pub warnings: Vec<String>,
}

/// Seconds one stage took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// Wall-clock seconds it took.
    pub seconds: f64,
}

/// The result of a conversion.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Conversion {
    /// The finished image.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub output: PathBuf,
    /// The plan it carried out.
    pub plan: ConversionPlan,
    /// UUID of the root filesystem (the source's, unchanged).
    pub root_uuid: String,
    /// UUID of the swap partition, when there is one.
    pub swap_uuid: Option<uuid::Uuid>,
    /// What the stream copied and how.
    pub stream: StreamStats,
    /// What the graft wrote (`None` with a guest kernel).
    pub graft: Option<GraftSummary>,
    /// Every change made in the guest, and warnings.
    pub report: Report,
    /// Seconds per stage, in the order they started. The stream may run beside the
    /// graft, fixups and boot stages (see [`Overlap`](super::Overlap)), so the stages'
    /// sum can exceed [`Conversion::seconds`].
    pub timings: Vec<StageTime>,
    /// Wall-clock seconds of the whole conversion (up to, not including, publishing).
    pub seconds: f64,
}

/// Where the parts of the disk go in the layout actually written: the GPT for
/// `--firmware uefi|hybrid`, otherwise the MBR plan.
pub(super) struct WrittenLayout {
    pub(super) root_offset: u64,
    /// Length of the root partition, in bytes.
    pub(super) root_len: u64,
    pub(super) root_number: u32,
    pub(super) disk_bytes: u64,
    /// Start and length of the new swap partition, in bytes.
    pub(super) swap: Option<(u64, u64)>,
    /// The other volumes carried: (volume index, start, length in bytes, number).
    pub(super) carried: Vec<(usize, u64, u64, u32)>,
}

impl ConversionPlan {
    /// The output partition of each carried volume: (volume index, partition number),
    /// in the layout written.
    pub fn volume_partitions(&self) -> Vec<(usize, u32)> {
        self.written_layout()
            .carried
            .iter()
            .map(|&(v, _, _, n)| (v, n))
            .collect()
    }

    /// What becomes of the guest's LVM2 volume groups, in words: each group whose
    /// logical volumes become plain partitions (with the partition each lands on), and
    /// each logical volume left out because it cannot be read and the guest does not use
    /// it.
    pub fn lvm_notes(&self) -> Vec<String> {
        let i = &self.inspection;
        let written = self.written_layout();
        let mut notes = Vec::new();
        for (vg, lvs) in i.flattened_groups() {
            let each: Vec<String> = lvs
                .iter()
                .map(|(lv, index)| {
                    let v = &i.volumes[*index];
                    let number = if v.action == crate::source::VolumeAction::Root {
                        Some(written.root_number)
                    } else {
                        written.carried.iter().find(|c| c.0 == *index).map(|c| c.3)
                    };
                    let role = match (&v.action, v.mount.as_deref()) {
                        (crate::source::VolumeAction::Root, _) => "root".to_string(),
                        (crate::source::VolumeAction::Swap, _) => "swap".to_string(),
                        (_, Some(m)) => m.to_string(),
                        (_, None) => "not in fstab".to_string(),
                    };
                    match number {
                        Some(n) => format!("{lv} \u{2192} p{n} ({role})"),
                        None => format!("{lv} ({role})"),
                    }
                })
                .collect();
            notes.push(format!(
                "volume group {vg} is flattened: {}; the guest will no longer see LVM",
                each.join(", ")
            ));
        }
        for v in &i.volumes {
            if let Some(e) = v.refusal() {
                notes.push(format!("{e}: the guest does not use it, so it is left out"));
            }
        }
        notes
    }

    /// The guest's separate `/boot` filesystem, when it has one: the kernel, initrd and
    /// GRUB files go there, and GRUB boots from it.
    pub fn boot_volume(&self) -> Option<&crate::source::Volume> {
        self.inspection
            .volumes
            .iter()
            .find(|v| v.action == crate::source::VolumeAction::Boot && v.ext().is_some())
    }

    /// Where the separate `/boot` lands: (volume index, start byte, length, partition
    /// number) in the layout written.
    pub(super) fn boot_partition(&self) -> Option<(usize, u64, u64, u32)> {
        self.written_layout().carried.into_iter().find(|c| {
            self.inspection
                .volumes
                .get(c.0)
                .is_some_and(|v| v.action == crate::source::VolumeAction::Boot && v.ext().is_some())
        })
    }

    pub(super) fn written_layout(&self) -> WrittenLayout {
        match &self.gpt {
            Some(g) => WrittenLayout {
                root_offset: g.root().start_bytes(),
                root_len: g.root().len_bytes(),
                root_number: g.root().number,
                disk_bytes: g.disk_bytes,
                swap: g.swap().map(|p| (p.start_bytes(), p.len_bytes())),
                carried: g
                    .carried()
                    .filter_map(|p| Some((p.volume?, p.start_bytes(), p.len_bytes(), p.number)))
                    .collect(),
            },
            None => WrittenLayout {
                root_offset: self.disk.root().start_bytes(),
                root_len: self.disk.root().len_bytes(),
                root_number: u32::from(self.disk.root().number),
                disk_bytes: self.disk.disk_bytes,
                swap: self.disk.swap().map(|p| (p.start_bytes(), p.len_bytes())),
                carried: self
                    .disk
                    .carried()
                    .filter_map(|p| {
                        Some((
                            p.volume?,
                            p.start_bytes(),
                            p.len_bytes(),
                            u32::from(p.number),
                        ))
                    })
                    .collect(),
            },
        }
    }

    /// The guest's `/boot/grub/grub.cfg` settings: the root by UUID, the kernel and its
    /// initrd, the partition map, the compatibility arguments and `extra_cmdline`
    /// appended to the kernel's arguments.
    pub fn grub_config(&self) -> boot::grub_cfg::GrubConfig {
        let mut cfg = boot::grub_cfg::GrubConfig::new(
            self.inspection.fs.uuid.clone(),
            self.kernel.version.clone(),
        );
        let mut args: Vec<String> = self
            .compat
            .kernel_args
            .iter()
            .map(|(arg, _)| arg.clone())
            .collect();
        args.extend(self.options.extra_cmdline.iter().cloned());
        cfg.extra_args = args.join(" ");
        cfg.initrd_file = self.kernel.initrd_file.clone();
        cfg.boot_uuid = self
            .boot_volume()
            .and_then(|v| v.uuid())
            .map(str::to_string);
        if self.gpt.is_some() {
            cfg.partition_map = boot::PartitionMap::Gpt;
        }
        cfg
    }
}
