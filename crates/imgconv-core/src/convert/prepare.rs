//! Everything decided before anything is written: inspect the source, open the donor,
//! choose the kernel and the GRUB and EFI files, lay out the disk.

use super::options::{ConvertOptions, KernelSource};
use super::plan::{ConversionPlan, GrubChoice, GrubOrigin, KernelChoice, KernelOrigin, StageTime};
use super::timed;
use crate::boot::uefi::{self, EfiBootFiles, GptFirmware, GptPlanOptions, UefiError};
use crate::boot::{self, GrubExtSupport, GrubPlatformFiles};
use crate::donor::guest_kernel::{GuestKernel, KvmReadiness};
use crate::donor::{self, ArchCheck, Donor, DonorError, DonorKernel, UserlandArch};
use crate::ext::read::ExtReader;
use crate::layout::{self, PlanOptions, SourceSpace};
use crate::progress::{check_cancel, Progress, Stage};
use crate::report::Report;
use crate::source::{self, Arch, Inspection, VolumeAction, VolumeContent};
use crate::tree::MapErr;
use crate::{Error, Result};
use std::path::Path;

/// The values [`plan`](super::plan) decides and [`convert`](super::convert) needs, beyond the printable plan.
pub(super) struct Prepared {
    pub(super) plan: ConversionPlan,
    pub(super) donor: Option<Donor>,
    pub(super) donor_kernel: Option<DonorKernel>,
    pub(super) grub: GrubPlatformFiles,
    /// shim/GRUB for the ESP and the donor's x86_64-efi modules (UEFI and hybrid).
    pub(super) efi: Option<(EfiBootFiles, Option<GrubPlatformFiles>)>,
}

fn userland_arch(inspection: &Inspection) -> Option<UserlandArch> {
    match inspection.guest.arch {
        Some(Arch::X86_64) => Some(UserlandArch::X86_64),
        Some(Arch::I386) => Some(UserlandArch::I386),
        _ => None,
    }
}

/// Read the source and the donor and decide everything: kernel, GRUB files, disk layout.
pub(super) fn prepare(
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
    timings: &mut Vec<StageTime>,
) -> Result<Prepared> {
    let inspection = timed(timings, Stage::Inspect, || {
        progress.stage(Stage::Inspect, None);
        // A compressed source is decompressed beside the output (see formats::compressed).
        let scratch = opts
            .output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| std::path::PathBuf::from("."), |d| d.to_path_buf());
        let open = crate::formats::OpenOptions {
            scratch_dir: Some(scratch),
        };
        let mut inspection = source::inspect_guest(
            &opts.source,
            &open,
            opts.source_xen_device.as_deref(),
            &opts.disks,
        )?;
        // The sources came from a domain config: its facts describe the machine.
        if let Some(guest) = &opts.xen_config {
            inspection.vm = Some(guest.vm.clone());
            inspection.xen_config = Some(guest.clone());
        }
        Ok(inspection)
    })?;
    super::report_done(timings, progress);
    inspection.check_journal(opts.replay_journal)?;
    inspection.check_clean(opts.repair)?;
    check_cancel(progress)?;

    let mut warnings = inspection.guest.warnings.clone();
    // What the graft writes outside /boot (the donor's modules tree); the rest of the
    // kernel's graft bytes land in /boot.
    let mut modules_bytes = 0u64;
    let (donor, donor_kernel, kernel, grub) = timed(timings, Stage::Donor, || {
        progress.stage(Stage::Donor, None);
        let source = opts.effective_kernel_source();
        let donor = match &opts.donor {
            Some(path) => Some(Donor::open(path)?),
            None if source == KernelSource::Guest => None,
            None => return Err(Error::NoDonor),
        };
        let (grub, origin) = grub_files(opts, donor.as_ref())?;
        let guest = if source == KernelSource::Donor {
            GuestKernelLook::NotLooked
        } else {
            look_at_guest_kernel(opts, &inspection, source, donor.is_some())?
        };
        let (donor_kernel, kernel) = match guest {
            GuestKernelLook::Ready(gk, readiness) => {
                // Only GRUB files are added; round each up to a 4 KiB block.
                let graft_bytes = grub
                    .files
                    .values()
                    .map(|d| (d.len() as u64).div_ceil(4096) * 4096)
                    .sum();
                let initrd_file = gk
                    .initrd
                    .strip_prefix("/boot/")
                    .filter(|f| *f != format!("initrd.img-{}", gk.version))
                    .map(str::to_string);
                (
                    None,
                    KernelChoice {
                        why: format!(
                            "the guest's own kernel{}: {}",
                            if source == KernelSource::Guest {
                                " (asked for)"
                            } else {
                                ""
                            },
                            readiness.why
                        ),
                        version: gk.version,
                        origin: KernelOrigin::Guest,
                        arch_check: None,
                        graft_bytes,
                        initrd_file,
                        guest_readiness: Some(readiness),
                    },
                )
            }
            other => {
                let (why, readiness) = match other {
                    GuestKernelLook::NotLooked => ("--kernel-source donor".to_string(), None),
                    GuestKernelLook::NotReady(why, r) => {
                        if source == KernelSource::Guest {
                            warnings
                                .push(format!("{why}; the donor's kernel boots the guest instead"));
                        }
                        (why, r)
                    }
                    GuestKernelLook::Ready(..) => unreachable!("handled above"),
                };
                let donor = donor
                    .as_ref()
                    .expect("a donor is required unless the guest's kernel boots");
                let k = donor.select_kernel(opts.kernel_version.as_deref())?;
                let arch_check = match userland_arch(&inspection) {
                    Some(userland) => Some(donor::check_arch(k.arch, userland)?),
                    None => {
                        warnings.push("the guest userland's architecture could not be read; the donor kernel's was not checked against it".into());
                        None
                    }
                };
                if arch_check == Some(ArchCheck::KernelUnknown) {
                    warnings.push(format!(
                        "the architecture of donor kernel {} could not be read from its boot header",
                        k.version
                    ));
                }
                warnings.extend(k.warnings.iter().cloned());
                let graft_bytes = Donor::graft_size_with(&k, Some(&grub));
                modules_bytes = Donor::modules_graft_size(&k);
                let choice = KernelChoice {
                    version: k.version.clone(),
                    origin: KernelOrigin::Donor,
                    arch_check,
                    graft_bytes,
                    why: format!("the donor's kernel: {why}"),
                    initrd_file: None,
                    guest_readiness: readiness,
                };
                (Some(k), choice)
            }
        };
        let support = GrubExtSupport::detect(&grub);
        support.check(
            inspection.fs.features.incompat_raw,
            inspection.fs.features.ro_compat_raw,
        )?;
        // GRUB reads the kernel from a separate /boot: it must read that filesystem too.
        for v in &inspection.volumes {
            if let (VolumeAction::Boot, Some(fs)) = (&v.action, v.ext()) {
                support.check(fs.features.incompat_raw, fs.features.ro_compat_raw)?;
            }
        }
        let grub_choice = GrubChoice {
            origin,
            version: grub.grub_version().map(|v| v.package.unwrap_or(v.upstream)),
            ext_support: support.basis.clone(),
        };
        Ok((donor, donor_kernel, kernel, (grub, grub_choice)))
    })?;
    super::report_done(timings, progress);
    check_cancel(progress)?;

    // The guest's userland against the donor kernel (its own kernel is of its own era).
    let compat = match (&donor, &donor_kernel) {
        (Some(d), Some(k)) => {
            let mut facts = crate::compat::KernelFacts::of_donor_kernel(d, k)?;
            facts.x86_64 &= userland_arch(&inspection) == Some(UserlandArch::X86_64);
            crate::compat::assess(&inspection.guest.userland, &facts)
        }
        _ => crate::compat::Assessment::default(),
    };
    if !compat.problems.is_empty() {
        if opts.strict {
            return Err(Error::Incompatible {
                problems: compat.problems.clone(),
            });
        }
        warnings.extend(compat.problems.iter().cloned());
    }
    warnings.extend(compat.notes.iter().cloned());

    let gpt_firmware = GptFirmware::from_firmware(opts.firmware);
    let efi = match gpt_firmware {
        None => None,
        Some(_) => {
            let efi_modules = donor
                .as_ref()
                .map(|d| d.grub_files(uefi::PLATFORM_X86_64_EFI))
                .transpose()?
                .flatten();
            let host = opts.host_fallbacks.then_some(std::path::Path::new("/"));
            let mut search = efi_search(donor.as_ref(), efi_modules.as_ref(), host);
            if !opts.host_fallbacks {
                // The unsigned fallback runs the host's grub-mkimage.
                search.donor_efi_modules = None;
            }
            let files = uefi::find_efi_boot_files(&mut search)?;
            drop(search);
            Some((files, efi_modules))
        }
    };
    // The guest also gets /boot/grub/x86_64-efi (modules + core.efi).
    let mut kernel = kernel;
    if let Some((files, modules)) = &efi {
        let block = |n: usize| (n as u64).div_ceil(4096) * 4096;
        kernel.graft_bytes += block(files.grub.len())
            + modules
                .as_ref()
                .map_or(0, |m| m.files.values().map(|d| block(d.len())).sum());
    }

    let mut inspection = inspection;
    let mut carried = carried_volumes(&mut inspection);
    // A separate /boot takes the kernel, initrd and GRUB files; the root keeps the modules.
    let mut root_graft_bytes = kernel.graft_bytes;
    let mut boot_grow = None;
    if let Some(c) = carried
        .iter_mut()
        .find(|c| c.role == layout::PartitionRole::Boot)
    {
        let v = &inspection.volumes[c.volume];
        if let Some(fs) = v.ext() {
            let boot_bytes = kernel.graft_bytes.saturating_sub(modules_bytes);
            root_graft_bytes = modules_bytes;
            let cannot_grow = if fs.needs_recovery {
                Some("its journal needs recovery (it was not cleanly unmounted)".to_string())
            } else if !fs.clean || fs.errors {
                Some("it was not cleanly unmounted or has errors recorded, and resize2fs grows only a clean filesystem".to_string())
            } else {
                None
            };
            boot_grow = layout::plan_boot_room(&SourceSpace::from(fs), boot_bytes, cannot_grow)?;
            if let Some(g) = &boot_grow {
                c.bytes = c.bytes.max(g.to_bytes);
            }
        }
    }
    let guest_swap = carried
        .iter()
        .any(|c| c.role == layout::PartitionRole::Swap);
    let disk = timed(timings, Stage::Plan, || {
        progress.stage(Stage::Plan, None);
        let plan_opts = PlanOptions {
            graft_bytes: root_graft_bytes,
            root_bytes: None,
            disk_bytes: match gpt_firmware {
                Some(fw) => opts
                    .target_size
                    .map(|t| t.saturating_sub(uefi::gpt_extra_bytes(fw, uefi::DEFAULT_ESP_BYTES))),
                None => opts.target_size,
            },
            // The guest's own swap replaces the new one.
            swap_bytes: if guest_swap { 0 } else { opts.swap_size },
            disk_signature: None,
        };
        Ok(layout::plan_with(
            &SourceSpace::from(&inspection.fs),
            &plan_opts,
            &carried,
        )?)
    })?;
    super::report_done(timings, progress);
    if let Some(grow) = &boot_grow {
        progress.note(&format!(
            "the guest's /boot filesystem will grow from {} to {} ({})",
            layout::human(grow.from_bytes),
            layout::human(grow.to_bytes),
            grow_reason(&grow.reason)
        ));
    }
    if let Some(grow) = &disk.grow {
        progress.note(&format!(
            "the guest filesystem will grow from {} to {} ({})",
            layout::human(grow.from_bytes),
            layout::human(grow.to_bytes),
            grow_reason(&grow.reason)
        ));
    }
    let gpt = gpt_firmware
        .map(|fw| {
            uefi::plan_gpt_with(
                &GptPlanOptions::new(
                    fw,
                    disk.root().len_bytes(),
                    disk.swap().map_or(0, |s| s.len_bytes()),
                ),
                &carried,
            )
        })
        .transpose()?;
    let swap_uuid = match disk.swap() {
        Some(_) => Some(uuid::Uuid::new_v4()),
        // The guest's swap header carried as it is: its UUID was read from it.
        None => inspection
            .volumes
            .iter()
            .find(|v| v.action == VolumeAction::Swap)
            .and_then(|v| v.uuid())
            .and_then(|u| uuid::Uuid::parse_str(u).ok()),
    };
    let (grub, grub_choice) = grub;
    let mut plan = ConversionPlan {
        options: opts.clone(),
        inspection,
        kernel,
        grub: grub_choice,
        disk,
        boot_grow,
        gpt,
        efi_origin: efi.as_ref().map(|(f, _)| f.origin.clone()),
        swap_uuid,
        compat,
        fixups: Report::default(),
        warnings,
    };
    let lvm_notes = plan.lvm_notes();
    plan.warnings.extend(lvm_notes);
    // grub.cfg is written last: a value it cannot hold (--kernel-cmdline) fails the plan.
    boot::grub_cfg::render(&plan.grub_config())?;
    Ok(Prepared {
        plan,
        donor,
        donor_kernel,
        grub,
        efi,
    })
}

/// The volumes that get a partition of their own beside the root, in source order. A
/// carried swap area without a UUID gets a new one here, so the plan shows the UUID its
/// header and fstab will have.
fn carried_volumes(inspection: &mut Inspection) -> Vec<layout::Carried> {
    let mut carried = Vec::new();
    for (i, v) in inspection.volumes.iter_mut().enumerate() {
        let role = match v.action {
            // A separate /boot is the boot partition: first, with the boot flag.
            VolumeAction::Boot => layout::PartitionRole::Boot,
            VolumeAction::Carry => layout::PartitionRole::Data,
            VolumeAction::Swap => layout::PartitionRole::Swap,
            VolumeAction::Root | VolumeAction::Skip { .. } => continue,
        };
        if let VolumeContent::Swap {
            uuid: uuid @ None, ..
        } = &mut v.content
        {
            *uuid = Some(uuid::Uuid::new_v4().to_string());
        }
        carried.push(layout::Carried {
            role,
            bytes: v.len,
            volume: i,
        });
    }
    carried
}

/// What the guest's own kernel can do.
enum GuestKernelLook {
    /// `--kernel-source donor`: not looked at.
    NotLooked,
    /// Its initrd has what the boot needs.
    Ready(GuestKernel, KvmReadiness),
    /// Why it cannot boot the guest (no kernel, Xen-only, drivers missing), and what its
    /// initrd offers when one was read.
    NotReady(String, Option<KvmReadiness>),
}

/// Find the guest's newest non-Xen kernel and read its initrd. Asked for explicitly
/// (`source` is [`KernelSource::Guest`]) without a donor to fall back to, a kernel that
/// cannot boot is an error.
fn look_at_guest_kernel(
    opts: &ConvertOptions,
    inspection: &Inspection,
    source: KernelSource,
    have_donor: bool,
) -> Result<GuestKernelLook> {
    let forced = source == KernelSource::Guest;
    // A journal that needs replaying keeps the reader out; only asked for is that an error.
    let reader = match inspection.open_fs().map_err(Error::from).and_then(|fs| {
        ExtReader::open(fs, inspection.image.display().to_string()).map_err(Error::from)
    }) {
        Ok(r) => r,
        Err(e) if forced => return Err(e),
        Err(e) => {
            return Ok(GuestKernelLook::NotReady(
                format!("the guest's kernels could not be read ({e})"),
                None,
            ))
        }
    };
    // A separate /boot holds the guest's kernels and initrds.
    let boot_reader = inspection
        .volumes
        .iter()
        .find(|v| v.action == VolumeAction::Boot && v.ext().is_some())
        .and_then(|v| v.region())
        .and_then(|r| {
            ExtReader::open(r.clone(), format!("{} (/boot)", inspection.image.display())).ok()
        });
    let gk = match donor::guest_kernel::find_guest_kernel_in_readers(&reader, boot_reader.as_ref())
    {
        Ok(gk) => gk,
        // Reading the guest here is reading the input, not the donor.
        Err(e) if forced => {
            return Err(match e {
                DonorError::Guest(g) => Error::Guest(g),
                DonorError::Read(r) => Error::ExtRead(r),
                other => other.into(),
            })
        }
        Err(DonorError::NoGuestKernel { .. }) => {
            return Ok(GuestKernelLook::NotReady(
                "the guest has no complete kernel of its own (vmlinuz, initrd and modules)".into(),
                None,
            ))
        }
        Err(DonorError::OnlyXenKernels { found }) => {
            return Ok(GuestKernelLook::NotReady(
                format!("the guest's kernels are Xen-only ({})", found.join(", ")),
                None,
            ))
        }
        Err(e) => {
            return Ok(GuestKernelLook::NotReady(
                format!("the guest's kernels could not be read ({e})"),
                None,
            ))
        }
    };
    let readiness = match donor::guest_kernel::kvm_readiness_in_readers(
        &reader,
        boot_reader.as_ref(),
        &gk,
        opts.disk_bus,
        &inspection.fs.kind.to_string(),
    ) {
        Ok(r) => r,
        Err(e) if forced => return Err(e.into()),
        Err(e) => {
            return Ok(GuestKernelLook::NotReady(
                format!(
                    "the initrd of the guest's kernel {} could not be read ({e})",
                    gk.version
                ),
                None,
            ))
        }
    };
    if readiness.ready {
        return Ok(GuestKernelLook::Ready(gk, readiness));
    }
    if forced && !have_donor {
        return Err(DonorError::GuestKernelNotReady {
            kernel: gk.version,
            bus: format!("{:?}", opts.disk_bus).to_lowercase(),
            why: readiness.why,
        }
        .into());
    }
    Ok(GuestKernelLook::NotReady(
        format!(
            "the guest's kernel {} cannot boot on KVM: {}",
            gk.version, readiness.why
        ),
        Some(readiness),
    ))
}

/// Where [`uefi::find_efi_boot_files`] looks: everything `donor` offers (its ESP when it
/// is a disk image, its package files, read through [`crate::tree::TreeRead`], and `efi_modules`, its
/// `x86_64-efi` GRUB files), then the host root `host` (`None`: never the host).
pub fn efi_search<'a>(
    donor: Option<&'a Donor>,
    efi_modules: Option<&'a GrubPlatformFiles>,
    host: Option<&'a Path>,
) -> uefi::EfiSearch<'a> {
    let Some(donor) = donor else {
        return uefi::EfiSearch {
            host,
            ..Default::default()
        };
    };
    let files = MapErr::new(donor, |_: &'static str, _: &str, e: DonorError| {
        UefiError::Files(Box::new(Error::from(e)))
    });
    uefi::EfiSearch {
        donor_image: donor.path().is_file().then(|| donor.path()),
        donor_files: Some(uefi::PackageFiles {
            label: format!("the donor {}", donor.path().display()),
            tree: Box::new(files),
        }),
        donor_efi_modules: efi_modules,
        host,
    }
}

/// GRUB's i386-pc files: from `grub_dir`, else the donor's, else the host's (when
/// [`ConvertOptions::host_fallbacks`] allows it).
fn grub_files(
    opts: &ConvertOptions,
    donor: Option<&Donor>,
) -> Result<(GrubPlatformFiles, GrubOrigin)> {
    if let Some(dir) = &opts.grub_dir {
        return Ok((
            GrubPlatformFiles::from_dir(dir, "i386-pc").map_err(boot::BootError::from)?,
            GrubOrigin::Dir(dir.clone()),
        ));
    }
    if let Some(files) = donor
        .map(|d| d.grub_files("i386-pc"))
        .transpose()?
        .flatten()
    {
        return Ok((files, GrubOrigin::Donor));
    }
    if !opts.host_fallbacks {
        return Err(Error::NoGrubFiles {
            platform: crate::grub_files::PLATFORM_I386_PC,
        });
    }
    Ok((
        GrubPlatformFiles::host_i386_pc().map_err(boot::BootError::from)?,
        GrubOrigin::Host,
    ))
}

pub(super) fn grow_reason(reason: &layout::GrowReason) -> String {
    match reason {
        layout::GrowReason::Requested => "a larger root partition was requested".into(),
        layout::GrowReason::GraftRoom {
            free_bytes,
            needed_bytes,
        } => format!(
            "the graft needs {} free, the guest has {}",
            layout::human(*needed_bytes),
            layout::human(*free_bytes)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a donor or a GRUB directory, the i386-pc files come from the host only
    /// when host fallbacks are allowed; otherwise the error names the missing platform.
    #[test]
    fn host_grub_files_only_when_allowed() {
        let opts = ConvertOptions::new("src.img", None, "out.img").with_host_fallbacks(false);
        match grub_files(&opts, None) {
            Err(Error::NoGrubFiles { platform }) => assert_eq!(platform, "i386-pc"),
            other => panic!("expected NoGrubFiles, got {:?}", other.map(|(_, o)| o)),
        }
        let opts = opts.with_host_fallbacks(true);
        let host_has_grub = std::path::Path::new(boot::HOST_I386_PC_DIR)
            .join("kernel.img")
            .is_file();
        match grub_files(&opts, None) {
            Ok((_, origin)) => assert_eq!(origin, GrubOrigin::Host),
            Err(e) => assert!(
                !host_has_grub,
                "{} exists but was not used: {e}",
                boot::HOST_I386_PC_DIR
            ),
        }
    }
}
