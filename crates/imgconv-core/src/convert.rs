//! One conversion, end to end: inspect → plan → stream → graft → fixups → boot.
//!
//! [`convert`] is the single library call the CLI's `convert` and `batch` run; [`plan`] is
//! its dry run (it reads the source and the donor, decides everything, writes nothing).
//!
//! ```no_run
//! use imgconv_core::convert::{convert, ConvertOptions};
//! use imgconv_core::NoProgress;
//!
//! let opts = ConvertOptions::new("xen.img", Some("donor.img".into()), "kvm.img");
//! let done = convert(&opts, &mut NoProgress)?;
//! println!("root UUID {}, {} changes", done.root_uuid, done.report.changes.len());
//! # Ok::<(), imgconv_core::Error>(())
//! ```
//!
//! The order of the write steps matters: the partition table first (the boot sector is
//! written last and keeps it), then the filesystem blocks, then anything that runs
//! e2fsprogs on the copy (journal replay, grow), then the libext2fs engine (graft, fixups,
//! GRUB files), closed before the boot code goes into the MBR gap, and the rename last.
//! With `--firmware uefi|hybrid` the partition table is a protective MBR + GPT
//! (`boot::uefi::write_gpt`), the ESP is formatted and filled after the ext engine is
//! closed (`boot::uefi::install_esp`), and a hybrid disk then gets GRUB's BIOS boot code
//! in its BIOS boot partition (`boot::uefi::install_hybrid_bios_boot`).

use crate::boot::uefi::{self, EfiBootFiles, GptFirmware, GptPlan, GptPlanOptions};
use crate::boot::{self, GrubExtSupport, GrubPlatformFiles};
use crate::donor::{self, ArchCheck, Donor, DonorKernel, UserlandArch};
use crate::ext::ExtFs;
use crate::extread::ExtReader;
use crate::fixups::{self, FixupContext};
use crate::graft::GraftSummary;
use crate::layout::{self, DiskPlan, PlanOptions, SourceSpace};
use crate::output::{self, TempOutput};
use crate::progress::{check_cancel, Progress, Stage};
use crate::report::Report;
use crate::source::{self, Arch, Inspection};
use crate::stream::{self, StreamStats};
use crate::swap;
use crate::{Error, Result};
use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// Firmware the converted disk boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// MBR disk, GRUB i386-pc boot code (SeaBIOS and any PC BIOS).
    #[default]
    Bios,
    /// GPT disk with an EFI System Partition (shim + GRUB), root and swap (OVMF, any UEFI).
    Uefi,
    /// GPT disk with a BIOS boot partition, an ESP, root and swap: boots with UEFI and BIOS.
    Hybrid,
}

/// Disk bus the converted guest will see its disk on; decides device names for disks
/// other than the root that fstab still refers to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: /dev/vdX.
    #[default]
    Virtio,
    /// SATA/AHCI: /dev/sdX.
    Sata,
    /// IDE (libata): /dev/sdX.
    Ide,
}

/// Everything a conversion needs to know. Sizes are bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertOptions {
    /// The Xen guest image (bare ext2/3/4 filesystem or partitioned disk). Opened read-only.
    pub source: PathBuf,
    /// The donor: a bootable HVM disk image, a bare filesystem image or a directory.
    /// Optional only with `use_guest_kernel` (GRUB files then come from `grub_dir` or the host).
    pub donor: Option<PathBuf>,
    /// Where the raw disk image goes. Written to a temporary file beside it, renamed at the end.
    pub output: PathBuf,
    /// Swap partition size; 0 for none. Default 512 MiB.
    pub swap_size: u64,
    /// Total disk size wanted; `None` lets the plan choose (source size plus room for the graft).
    pub target_size: Option<u64>,
    /// Pick this donor kernel version instead of the newest.
    pub kernel_version: Option<String>,
    /// Keep a non-Xen kernel the guest already has instead of grafting the donor's.
    pub use_guest_kernel: bool,
    /// Firmware to boot with.
    pub firmware: Firmware,
    /// Disk bus the guest will run on.
    pub disk_bus: DiskBus,
    /// Replay a dirty journal in the output copy (never the input) instead of refusing.
    pub replay_journal: bool,
    /// Overwrite an existing output.
    pub force: bool,
    /// Take GRUB i386-pc modules from this directory instead of the donor's.
    pub grub_dir: Option<PathBuf>,
    /// Extra kernel command-line arguments.
    pub extra_cmdline: Vec<String>,
}

impl ConvertOptions {
    /// Options with the defaults: 512 MiB swap, BIOS, virtio, newest donor kernel.
    pub fn new(
        source: impl Into<PathBuf>,
        donor: Option<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        ConvertOptions {
            source: source.into(),
            donor,
            output: output.into(),
            swap_size: 512 << 20,
            target_size: None,
            kernel_version: None,
            use_guest_kernel: false,
            firmware: Firmware::Bios,
            disk_bus: DiskBus::Virtio,
            replay_journal: false,
            force: false,
            grub_dir: None,
            extra_cmdline: Vec::new(),
        }
    }
}

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
    pub origin: KernelOrigin,
    /// How the kernel's architecture relates to the guest userland's (donor kernels).
    pub arch_check: Option<ArchCheck>,
    /// Bytes the graft adds to the guest filesystem (0 for a guest kernel but GRUB files).
    pub graft_bytes: u64,
}

/// Where the GRUB i386-pc files come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrubChoice {
    /// "donor", "host" or the directory given with `grub_dir`.
    pub origin: String,
    /// GRUB version read from the files, when they say.
    pub version: Option<String>,
    /// Which ext features that GRUB reads, and how we know.
    pub ext_support: String,
}

/// Everything a conversion will do, decided before anything is written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConversionPlan {
    pub options: ConvertOptions,
    pub inspection: Inspection,
    pub kernel: KernelChoice,
    pub grub: GrubChoice,
    pub disk: DiskPlan,
    /// The GPT disk for `--firmware uefi|hybrid` (root and swap sized by `disk`); `None`
    /// for BIOS. When set, this is the layout written (print it instead of `disk`).
    pub gpt: Option<GptPlan>,
    /// Where the EFI binaries come from (UEFI and hybrid).
    pub efi_origin: Option<String>,
    /// UUID the swap partition will carry (fixed now so the plan shows the final fstab).
    pub swap_uuid: Option<String>,
    /// The guest changes the fixups will make (empty until [`plan`] computes them).
    pub fixups: Report,
    /// Things the user should know that do not stop the conversion.
    pub warnings: Vec<String>,
}

/// Seconds one stage took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageTime {
    pub stage: Stage,
    pub seconds: f64,
}

/// The result of a conversion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conversion {
    /// The finished image.
    pub output: PathBuf,
    pub plan: ConversionPlan,
    /// UUID of the root filesystem (the source's, unchanged).
    pub root_uuid: String,
    pub swap_uuid: Option<String>,
    pub stream: StreamStats,
    /// What the graft wrote (`None` with a guest kernel).
    pub graft: Option<GraftSummary>,
    /// Every change made in the guest, and warnings.
    pub report: Report,
    pub timings: Vec<StageTime>,
}

/// The values [`plan`] decides and [`convert`] needs, beyond the printable plan.
struct Prepared {
    plan: ConversionPlan,
    donor: Option<Donor>,
    donor_kernel: Option<DonorKernel>,
    grub: GrubPlatformFiles,
    /// shim/GRUB for the ESP and the donor's x86_64-efi modules (UEFI and hybrid).
    efi: Option<(EfiBootFiles, Option<GrubPlatformFiles>)>,
}

fn userland_arch(inspection: &Inspection) -> Option<UserlandArch> {
    match inspection.guest.arch {
        Some(Arch::X86_64) => Some(UserlandArch::X86_64),
        Some(Arch::I386) => Some(UserlandArch::I386),
        _ => None,
    }
}

fn timed<T>(
    timings: &mut Vec<StageTime>,
    stage: Stage,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let r = f();
    timings.push(StageTime {
        stage,
        seconds: start.elapsed().as_secs_f64(),
    });
    r
}

/// Read the source and the donor and decide everything: kernel, GRUB files, disk layout.
fn prepare(
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
            .map_or_else(|| PathBuf::from("."), |d| d.to_path_buf());
        let open = crate::formats::OpenOptions {
            scratch_dir: Some(scratch),
        };
        Ok(source::inspect_with(&opts.source, &open)?)
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
            let host = std::path::Path::new("/");
            let search = match &donor {
                Some(d) => uefi::EfiSearch::for_donor(d, efi_modules.as_ref(), Some(host)),
                None => uefi::EfiSearch {
                    host: Some(host),
                    ..Default::default()
                },
            };
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

/// GRUB's i386-pc files: from `grub_dir`, else the donor's, else the host's.
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
    Ok((GrubPlatformFiles::host_i386_pc()?, "host".into()))
}

fn grow_reason(reason: &layout::GrowReason) -> String {
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

fn fixup_context(plan: &ConversionPlan) -> FixupContext {
    let mut ctx = FixupContext::new(
        &plan.inspection.fs.uuid,
        &plan.inspection.fs.kind.to_string(),
        plan.swap_uuid.as_deref(),
    );
    ctx.disk_bus = plan.options.disk_bus;
    ctx.esp_uuid = plan.gpt.as_ref().map(GptPlan::esp_serial);
    ctx
}

/// The dry run: inspect the source, read the donor, choose the kernel and GRUB files,
/// lay out the disk and list the guest changes the fixups would make. Writes nothing.
pub fn plan(opts: &ConvertOptions, progress: &mut dyn Progress) -> Result<ConversionPlan> {
    let mut timings = Vec::new();
    let mut prepared = prepare(opts, progress, &mut timings)?;
    let plan = &mut prepared.plan;
    progress.stage(Stage::Fixups, None);
    let reader = ExtReader::open(
        plan.inspection.open_fs()?,
        plan.inspection.image.display().to_string(),
    )?;
    plan.fixups = fixups::plan(&reader, &fixup_context(plan))?;
    Ok(prepared.plan)
}

/// Convert `opts.source` into a bootable raw disk image at `opts.output`.
///
/// The source is only read. The output is written to a temporary file beside
/// `opts.output` and renamed into place only when complete; on any error, or when
/// `progress` reports cancellation, the temporary file is removed and nothing is left.
pub fn convert(opts: &ConvertOptions, progress: &mut dyn Progress) -> Result<Conversion> {
    let mut timings = Vec::new();
    let Prepared {
        plan,
        donor,
        donor_kernel,
        grub,
        efi,
    } = prepare(opts, progress, &mut timings)?;
    let root = *plan.disk.root();
    let WrittenLayout {
        root_offset,
        root_number,
        disk_bytes,
        swap: swap_part,
    } = plan.written_layout();
    let mut report = Report::default();
    report.warnings.extend(plan.warnings.iter().cloned());

    let out = TempOutput::create(&opts.output, disk_bytes, opts.force)?;
    match &plan.gpt {
        Some(g) => uefi::write_gpt(out.file(), g)?,
        None => layout::write_mbr(out.file(), &plan.disk)?,
    }

    // Stream and graft run side by side (see `together`) unless an outside tool has to
    // change the copied filesystem between them: journal replay and resize2fs work on the
    // finished copy in the output, so there the stages stay one after the other.
    // `IMGCONV_OVERLAP=never` forces the sequential path (tests compare both paths'
    // outputs; benchmarks measure what the overlap gains).
    let sequential = plan.inspection.fs.needs_recovery
        || plan.disk.grow.is_some()
        || std::env::var_os("IMGCONV_OVERLAP").is_some_and(|v| v == "never");
    let guest = GuestWork {
        opts,
        plan: &plan,
        donor: donor.as_ref(),
        donor_kernel: donor_kernel.as_ref(),
        grub: &grub,
        efi: efi.as_ref(),
        root_number,
    };
    let (stream, graft, core) = if sequential {
        let stream = timed(&mut timings, Stage::Stream, || {
            let src = plan.inspection.open_fs()?;
            stream::copy_used_blocks(&src, out.file(), root_offset, progress).map_err(Error::from)
        })?;
        check_cancel(progress)?;
        grow_and_replay(
            &plan,
            &out,
            root_offset,
            &mut report,
            &mut timings,
            progress,
        )?;
        let mut fs = ExtFs::open(out.path(), root_offset)?;
        let (graft, core) = guest.write(&mut fs, &mut report, &mut timings, progress)?;
        fs.close()?;
        (stream, graft, core)
    } else {
        together(
            &guest,
            &out,
            root_offset,
            &mut report,
            &mut timings,
            progress,
        )?
    };

    if let (Some((start, len)), Some(uuid)) = (swap_part, &plan.swap_uuid) {
        let uuid = uuid::Uuid::parse_str(uuid).expect("generated UUID");
        let page = swap::swap_header(len, uuid, "swap").map_err(Error::from)?;
        out.file()
            .write_all_at(&page, start)
            .map_err(|e| output::write_error(out.file(), "cannot write the swap header to", e))?;
    }
    check_cancel(progress)?;
    if let (Some(g), Some((files, _))) = (&plan.gpt, &efi) {
        uefi::install_esp(out.file(), g, files, &plan.inspection.fs.uuid, &mut report)?;
    }
    match (&plan.gpt, &core) {
        (None, Some(core)) => boot::install_bios_boot(out.file(), &grub, core, 1, root.start_lba)?,
        (Some(g), Some(core)) => uefi::install_hybrid_bios_boot(out.file(), g, &grub, core)?,
        _ => {}
    }
    check_cancel(progress)?;

    progress.stage(Stage::Finish, None);
    let output = out.commit()?;
    Ok(Conversion {
        output,
        root_uuid: plan.inspection.fs.uuid.clone(),
        swap_uuid: plan.swap_uuid.clone(),
        plan,
        stream,
        graft,
        report,
        timings,
    })
}

/// Grow the copied filesystem and replay its journal, in the output (sequential path).
fn grow_and_replay(
    plan: &ConversionPlan,
    out: &TempOutput,
    root_offset: u64,
    report: &mut Report,
    timings: &mut Vec<StageTime>,
    progress: &mut dyn Progress,
) -> Result<()> {
    timed(timings, Stage::Grow, || {
        if plan.inspection.fs.needs_recovery {
            progress.stage(Stage::Grow, None);
            crate::e2fs_tools::replay_journal(out.path(), root_offset)?;
            report.change(
                "journal",
                "/",
                "replayed the journal of the copied filesystem with e2fsck",
                "the source was not cleanly unmounted and --replay-journal was given; the input was not touched",
                None,
            );
        }
        if let Some(grow) = &plan.disk.grow {
            progress.stage(Stage::Grow, None);
            crate::e2fs_tools::grow(out.path(), root_offset, grow.to_bytes)?;
            report.change(
                "grow",
                "/",
                format!(
                    "grew the filesystem from {} to {}",
                    layout::human(grow.from_bytes),
                    layout::human(grow.to_bytes)
                ),
                grow_reason(&grow.reason),
                None,
            );
        }
        Ok(())
    })
}

/// What is written into the guest filesystem after the stream: graft, fixups, boot files.
struct GuestWork<'a> {
    opts: &'a ConvertOptions,
    plan: &'a ConversionPlan,
    donor: Option<&'a Donor>,
    donor_kernel: Option<&'a DonorKernel>,
    grub: &'a GrubPlatformFiles,
    efi: Option<&'a (EfiBootFiles, Option<GrubPlatformFiles>)>,
    root_number: u32,
}

impl GuestWork<'_> {
    /// Graft, fixups and boot files into `fs`; returns the graft summary and the BIOS
    /// core.img to embed (none for UEFI only).
    fn write(
        &self,
        fs: &mut ExtFs,
        report: &mut Report,
        timings: &mut Vec<StageTime>,
        progress: &mut dyn Progress,
    ) -> Result<(Option<GraftSummary>, Option<boot::CoreImage>)> {
        let graft = timed(timings, Stage::Graft, || {
            match (self.donor, self.donor_kernel) {
                (Some(donor), Some(kernel)) => Ok(Some(crate::graft::graft(
                    donor,
                    kernel,
                    fs,
                    Some(self.grub),
                    report,
                    progress,
                )?)),
                _ => Ok(None),
            }
        })?;
        check_cancel(progress)?;

        timed(timings, Stage::Fixups, || {
            progress.stage(Stage::Fixups, None);
            Ok(fixups::apply(fs, &fixup_context(self.plan), report)?)
        })?;
        check_cancel(progress)?;

        let core = timed(timings, Stage::Boot, || {
            progress.stage(Stage::Boot, None);
            let gpt = self.plan.gpt.is_some();
            let cfg = self.plan.grub_config();
            // BIOS boot code for bios and hybrid.
            let core = if self.opts.firmware == Firmware::Uefi {
                None
            } else {
                let core = boot::build_core_image(
                    self.grub,
                    &boot::prefix_for_partition(gpt, self.root_number),
                    if gpt {
                        boot::GPT_EXT_MODULES
                    } else {
                        boot::MSDOS_EXT_MODULES
                    },
                )?;
                boot::write_guest_boot_files(fs, self.grub, &core, &cfg, report)?;
                Some(core)
            };
            if let Some((files, modules)) = self.efi {
                uefi::write_guest_efi_files(fs, files, modules.as_ref(), &cfg, report)?;
            }
            Ok(core)
        })?;
        Ok((graft, core))
    }
}

/// What the stream thread tells the converting thread.
enum StreamEvent {
    /// The bitmaps were checked and the copy starts: the graft may write now.
    Started(Option<u64>),
    Advance(u64),
    Note(String),
    /// The stream stopped with an error (it is returned by the thread).
    Failed,
}

/// The stream thread's [`Progress`]: forwards to the converting thread, stops when told.
struct StreamSide<'a> {
    events: std::sync::mpsc::Sender<StreamEvent>,
    stop: &'a std::sync::atomic::AtomicBool,
}

impl Progress for StreamSide<'_> {
    fn stage(&mut self, _stage: Stage, total: Option<u64>) {
        let _ = self.events.send(StreamEvent::Started(total));
    }
    fn advance(&mut self, done: u64) {
        let _ = self.events.send(StreamEvent::Advance(done));
    }
    fn note(&mut self, message: &str) {
        let _ = self.events.send(StreamEvent::Note(message.to_string()));
    }
    fn is_cancelled(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A graft-side event kept back while the stream is still shown.
enum Held {
    Stage(Stage, Option<u64>),
    Advance(u64),
    Note(String),
}

/// The converting thread's [`Progress`] while the stream runs beside it. The caller's
/// progress shows one stage at a time, so it sees the stream until the stream ends, and
/// only then the graft, fixups and boot events so far (the latest count of each stage),
/// live after that. Their real durations are in [`Conversion::timings`]. Cancelling (by
/// the caller) stops the stream too; a failed stream cancels the graft.
struct Relay<'a> {
    inner: std::cell::RefCell<RelayState<'a>>,
    stop: &'a std::sync::atomic::AtomicBool,
}

struct RelayState<'a> {
    progress: &'a mut dyn Progress,
    events: std::sync::mpsc::Receiver<StreamEvent>,
    streaming: bool,
    failed: bool,
    held: Vec<Held>,
}

impl RelayState<'_> {
    fn apply(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Started(total) => self.progress.stage(Stage::Stream, total),
            StreamEvent::Advance(done) => self.progress.advance(done),
            StreamEvent::Note(m) => self.progress.note(&m),
            StreamEvent::Failed => self.failed = true,
        }
    }

    /// Deliver what the stream reported; when it has ended, release the held events.
    fn pump(&mut self) {
        while self.streaming {
            match self.events.try_recv() {
                Ok(event) => self.apply(event),
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.streaming = false,
            }
        }
        if self.failed || self.progress.is_cancelled() {
            // The conversion stops here: what ran beside the stream is not shown as done.
            self.held.clear();
            return;
        }
        for held in std::mem::take(&mut self.held) {
            match held {
                Held::Stage(stage, total) => self.progress.stage(stage, total),
                Held::Advance(done) => self.progress.advance(done),
                Held::Note(m) => self.progress.note(&m),
            }
        }
    }

    /// Wait up to 50 ms for the stream's next event, passing the caller's cancellation on
    /// to the stream meanwhile. `None` on timeout, or once the stream thread has ended.
    fn recv(&mut self, stop: &std::sync::atomic::AtomicBool) -> Option<StreamEvent> {
        if self.progress.is_cancelled() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        match self
            .events
            .recv_timeout(std::time::Duration::from_millis(50))
        {
            Ok(event) => Some(event),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.streaming = false;
                None
            }
        }
    }

    fn hold_or_send(&mut self, event: Held) {
        self.pump();
        if !self.streaming {
            self.held.push(event);
            self.pump();
            return;
        }
        match (self.held.last_mut(), event) {
            (Some(Held::Advance(last)), Held::Advance(done)) => *last = done,
            (_, event) => self.held.push(event),
        }
    }
}

impl Progress for Relay<'_> {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        self.inner.get_mut().hold_or_send(Held::Stage(stage, total));
    }
    fn advance(&mut self, done: u64) {
        self.inner.get_mut().hold_or_send(Held::Advance(done));
    }
    fn note(&mut self, message: &str) {
        self.inner
            .get_mut()
            .hold_or_send(Held::Note(message.to_string()));
    }
    fn is_cancelled(&self) -> bool {
        let Ok(mut state) = self.inner.try_borrow_mut() else {
            return self.stop.load(std::sync::atomic::Ordering::SeqCst);
        };
        state.pump();
        if state.progress.is_cancelled() {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        state.failed || self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Stream in a second thread while this one grafts, applies the fixups and writes the
/// boot files through a [`CowDevice`](crate::ext::cow::CowDevice): the guest work hides
/// behind the stream's I/O instead of following it.
fn together(
    guest: &GuestWork<'_>,
    out: &TempOutput,
    root_offset: u64,
    report: &mut Report,
    timings: &mut Vec<StageTime>,
    progress: &mut dyn Progress,
) -> Result<(StreamStats, Option<GraftSummary>, Option<boot::CoreImage>)> {
    use crate::ext::cow::{CowDevice, WrittenRanges};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stream_at = timings.len();
    let src = guest.plan.inspection.open_fs()?;
    let written = WrittenRanges::new(u64::from(guest.plan.inspection.fs.block_size));
    let dst = out.file();
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let stream_thread = scope.spawn(|| {
            let started = Instant::now();
            let mut side = StreamSide {
                events: tx,
                stop: &stop,
            };
            let result =
                stream::copy_used_blocks_around(&src, dst, root_offset, &written, &mut side);
            if result.is_err() {
                let _ = side.events.send(StreamEvent::Failed);
            }
            (result, started.elapsed().as_secs_f64())
        });
        let mut relay = Relay {
            inner: std::cell::RefCell::new(RelayState {
                progress,
                events: rx,
                streaming: true,
                failed: false,
                held: Vec::new(),
            }),
            stop: &stop,
        };
        // Wait until the stream has checked the bitmaps (or failed).
        let go = loop {
            let state = relay.inner.get_mut();
            if !state.streaming || state.failed {
                break false;
            }
            match state.recv(&stop) {
                Some(started @ StreamEvent::Started(_)) => {
                    state.apply(started);
                    break true;
                }
                Some(other) => state.apply(other),
                None => {}
            }
        };
        let guest_result = if go {
            (|| {
                let device = CowDevice::new(
                    src.clone(),
                    dst.try_clone()
                        .map_err(|e| output::write_error(dst, "cannot reopen", e))?,
                    root_offset,
                    std::sync::Arc::clone(&written),
                );
                let mut fs = ExtFs::open_cow(device, out.path(), root_offset)?;
                let r = guest.write(&mut fs, report, timings, &mut relay)?;
                fs.close()?;
                Ok(r)
            })()
        } else {
            Err(Error::Cancelled)
        };
        if guest_result.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        // Show the rest of the stream, then everything held back.
        let state = relay.inner.get_mut();
        while state.streaming {
            if let Some(event) = state.recv(&stop) {
                state.apply(event);
            }
        }
        state.pump();
        let cancelled = state.progress.is_cancelled();
        let (stream_result, stream_secs) = match stream_thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        timings.insert(
            stream_at.min(timings.len()),
            StageTime {
                stage: Stage::Stream,
                seconds: stream_secs,
            },
        );
        // The first real error wins over the "cancelled" it caused on the other side.
        match (stream_result.map_err(Error::from), guest_result) {
            (Err(e), Err(Error::Cancelled)) | (Err(e), Ok(_)) => Err(e),
            (_, Err(e)) => Err(e),
            (Ok(_), Ok(_)) if cancelled => Err(Error::Cancelled),
            (Ok(stats), Ok((graft, core))) => Ok((stats, graft, core)),
        }
    })
}

/// Where the parts of the disk go in the layout actually written: the GPT for
/// `--firmware uefi|hybrid`, otherwise the MBR plan.
struct WrittenLayout {
    root_offset: u64,
    root_number: u32,
    disk_bytes: u64,
    /// Start and length of the swap partition, in bytes.
    swap: Option<(u64, u64)>,
}

impl ConversionPlan {
    fn written_layout(&self) -> WrittenLayout {
        match &self.gpt {
            Some(g) => WrittenLayout {
                root_offset: g.root().start_bytes(),
                root_number: g.root().number,
                disk_bytes: g.disk_bytes,
                swap: g.swap().map(|p| (p.start_bytes(), p.len_bytes())),
            },
            None => WrittenLayout {
                root_offset: self.disk.root().start_bytes(),
                root_number: u32::from(self.disk.root().number),
                disk_bytes: self.disk.disk_bytes,
                swap: self.disk.swap().map(|p| (p.start_bytes(), p.len_bytes())),
            },
        }
    }

    /// The guest's `/boot/grub/grub.cfg` settings: the root by UUID, the kernel, the
    /// partition map, `extra_cmdline` appended to the kernel's arguments.
    pub fn grub_config(&self) -> boot::grub_cfg::GrubConfig {
        let mut cfg = boot::grub_cfg::GrubConfig::new(
            self.inspection.fs.uuid.clone(),
            self.kernel.version.clone(),
        );
        cfg.extra_args = self.options.extra_cmdline.join(" ");
        if self.gpt.is_some() {
            cfg.partition_map = boot::PartitionMap::Gpt;
        }
        cfg
    }
}

impl fmt::Display for ConversionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inspection;
        writeln!(
            f,
            "source:  {} ({} {}, {} used of {}, UUID {})",
            i.image.display(),
            i.place(),
            i.fs.kind,
            layout::human(i.fs.used_bytes),
            layout::human(i.fs.size_bytes),
            i.fs.uuid
        )?;
        if let Some(name) = i
            .guest
            .os
            .as_ref()
            .and_then(|os| os.pretty_name.clone().or(os.name.clone()))
        {
            let arch = i.guest.arch.map(|a| format!(", {a}")).unwrap_or_default();
            writeln!(
                f,
                "guest:   {name}{arch}, {:?} init, {} Xen-isms",
                i.guest.init,
                i.guest.xenisms.len()
            )?;
        }
        let origin = match self.kernel.origin {
            KernelOrigin::Donor => format!(
                "from the donor {}",
                self.options
                    .donor
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ),
            KernelOrigin::Guest => "already in the guest".to_string(),
        };
        writeln!(
            f,
            "kernel:  {} ({origin}; graft adds {})",
            self.kernel.version,
            layout::human(self.kernel.graft_bytes)
        )?;
        writeln!(f, "cmdline: {}", self.grub_config().kernel_args())?;
        writeln!(
            f,
            "grub:    i386-pc files from {}{}",
            self.grub.origin,
            self.grub
                .version
                .as_deref()
                .map(|v| format!(" (GRUB {v})"))
                .unwrap_or_default()
        )?;
        writeln!(f, "output:  {}", self.options.output.display())?;
        match &self.gpt {
            Some(g) => {
                writeln!(f, "{g}")?;
                if let Some(o) = &self.efi_origin {
                    writeln!(f, "EFI boot files: {o}")?;
                }
            }
            None => writeln!(f, "{}", self.disk)?,
        }
        if !self.fixups.changes.is_empty() {
            writeln!(f, "guest changes:")?;
            for c in &self.fixups.changes {
                writeln!(f, "  {:<9} {}: {}", c.step, c.path, c.what)?;
            }
        }
        for w in self.warnings.iter().chain(&self.fixups.warnings) {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
