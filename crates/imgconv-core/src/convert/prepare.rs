//! Everything decided before anything is written: inspect the source, open the donor,
//! choose the kernel and the GRUB and EFI files, lay out the disk.

use super::options::ConvertOptions;
use super::plan::{ConversionPlan, GrubChoice, KernelChoice, KernelOrigin, StageTime};
use super::timed;
use crate::boot::uefi::{self, EfiBootFiles, GptFirmware, GptPlanOptions};
use crate::boot::{self, GrubExtSupport, GrubPlatformFiles};
use crate::donor::{self, ArchCheck, Donor, DonorKernel, UserlandArch};
use crate::extread::ExtReader;
use crate::layout::{self, PlanOptions, SourceSpace};
use crate::progress::{check_cancel, Progress, Stage};
use crate::report::Report;
use crate::source::{self, Arch, Inspection};
use crate::{Error, Result};

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
        Ok(source::inspect(&opts.source)?)
    })?;
    inspection.check_journal(opts.replay_journal)?;
    check_cancel(progress)?;

    let mut warnings = inspection.guest.warnings.clone();
    let (donor, donor_kernel, kernel, grub) = timed(timings, Stage::Donor, || {
        progress.stage(Stage::Donor, None);
        let donor = match &opts.donor {
            Some(path) => Some(Donor::open(path)?),
            None if opts.use_guest_kernel => None,
            None => return Err(Error::NoDonor),
        };
        let (grub, origin) = grub_files(opts, donor.as_ref())?;
        let (donor_kernel, kernel) = if opts.use_guest_kernel {
            let reader = ExtReader::open(
                inspection.open_fs()?,
                inspection.image.display().to_string(),
            )?;
            let gk = donor::guest_kernel::find_guest_kernel_in_reader(&reader)?;
            // Only GRUB files are added; round each up to a 4 KiB block.
            let graft_bytes = grub
                .files
                .values()
                .map(|d| (d.len() as u64).div_ceil(4096) * 4096)
                .sum();
            (
                None,
                KernelChoice {
                    version: gk.version,
                    origin: KernelOrigin::Guest,
                    arch_check: None,
                    graft_bytes,
                },
            )
        } else {
            let donor = donor
                .as_ref()
                .expect("donor is required without use_guest_kernel");
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
            let choice = KernelChoice {
                version: k.version.clone(),
                origin: KernelOrigin::Donor,
                arch_check,
                graft_bytes,
            };
            (Some(k), choice)
        };
        let support = GrubExtSupport::detect(&grub);
        support.check(
            inspection.fs.features.incompat_raw,
            inspection.fs.features.ro_compat_raw,
        )?;
        let grub_choice = GrubChoice {
            origin,
            version: grub.grub_version().map(|v| v.package.unwrap_or(v.upstream)),
            ext_support: support.basis.clone(),
        };
        Ok((donor, donor_kernel, kernel, (grub, grub_choice)))
    })?;
    check_cancel(progress)?;

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
            let mut search = match &donor {
                Some(d) => uefi::EfiSearch::for_donor(d, efi_modules.as_ref(), host),
                None => uefi::EfiSearch {
                    host,
                    ..Default::default()
                },
            };
            if !opts.host_fallbacks {
                // The unsigned fallback runs the host's grub-mkimage.
                search.donor_efi_modules = None;
            }
            let files = uefi::find_efi_boot_files(&search)?;
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

    let disk = timed(timings, Stage::Plan, || {
        progress.stage(Stage::Plan, None);
        let plan_opts = PlanOptions {
            graft_bytes: kernel.graft_bytes,
            root_bytes: None,
            disk_bytes: match gpt_firmware {
                Some(fw) => opts
                    .target_size
                    .map(|t| t.saturating_sub(uefi::gpt_extra_bytes(fw, uefi::DEFAULT_ESP_BYTES))),
                None => opts.target_size,
            },
            swap_bytes: opts.swap_size,
            disk_signature: None,
        };
        Ok(layout::plan(
            &SourceSpace::from(&inspection.fs),
            &plan_opts,
        )?)
    })?;
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
            uefi::plan_gpt(&GptPlanOptions::new(
                fw,
                disk.root().len_bytes(),
                disk.swap().map_or(0, |s| s.len_bytes()),
            ))
        })
        .transpose()?;
    let swap_uuid = disk.swap().map(|_| uuid::Uuid::new_v4().to_string());
    let (grub, grub_choice) = grub;
    let plan = ConversionPlan {
        options: opts.clone(),
        inspection,
        kernel,
        grub: grub_choice,
        disk,
        gpt,
        efi_origin: efi.as_ref().map(|(f, _)| f.origin.clone()),
        swap_uuid,
        fixups: Report::default(),
        warnings,
    };
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

/// GRUB's i386-pc files: from `grub_dir`, else the donor's, else the host's (when
/// [`ConvertOptions::host_fallbacks`] allows it).
fn grub_files(opts: &ConvertOptions, donor: Option<&Donor>) -> Result<(GrubPlatformFiles, String)> {
    if let Some(dir) = &opts.grub_dir {
        return Ok((
            GrubPlatformFiles::from_dir(dir, "i386-pc")?,
            dir.display().to_string(),
        ));
    }
    if let Some(files) = donor
        .map(|d| d.grub_files("i386-pc"))
        .transpose()?
        .flatten()
    {
        return Ok((files, "donor".into()));
    }
    if !opts.host_fallbacks {
        return Err(Error::NoGrubFiles {
            platform: boot::grub_files::PLATFORM_I386_PC,
        });
    }
    Ok((GrubPlatformFiles::host_i386_pc()?, "host".into()))
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
            Ok((_, origin)) => assert_eq!(origin, "host"),
            Err(e) => assert!(
                !host_has_grub,
                "{} exists but was not used: {e}",
                boot::HOST_I386_PC_DIR
            ),
        }
    }
}
