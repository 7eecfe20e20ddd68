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
//! e2fsprogs on the copy (journal replay, repair, grow), then the libext2fs engine (graft, fixups,
//! GRUB files), closed before the boot code goes into the MBR gap, and publishing the
//! output last ([`Unpublished::publish`]).
//! With [`Firmware::Uefi`] or [`Firmware::Hybrid`] the partition table is a protective MBR + GPT
//! (`boot::uefi::write_gpt`), the ESP is formatted and filled after the ext engine is
//! closed (`boot::uefi::install_esp`), and a hybrid disk then gets GRUB's BIOS boot code
//! in its BIOS boot partition (`boot::uefi::install_hybrid_bios_boot`).
//!
//! The module's parts: [`options`](ConvertOptions) (what is asked), `prepare` (what is
//! decided before writing), [`plan`](ConversionPlan) (the decisions and the result),
//! `overlap` (the stream thread beside the guest work, with its progress relay) and
//! `display` (the plan as the dry run prints it).

mod carry;
mod check;
mod display;
mod options;
mod overlap;
mod plan;
mod prepare;

pub use options::{
    ConvertOptions, CopyMethod, DiskBus, DiskFormat, Firmware, KernelSource, Overlap, SourceDisk,
};
pub use plan::{
    Conversion, ConversionPlan, GrubChoice, GrubOrigin, KernelChoice, KernelOrigin, StageTime,
};

use crate::blockio::{BlockDevice, OutputDevice};
use crate::boot::uefi::{self, EfiBootFiles, GptPlan};
use crate::boot::{self, GrubPlatformFiles};
use crate::donor::{Donor, DonorKernel};
use crate::ext::read::ExtReader;
use crate::ext::write::ExtFs;
use crate::fixups::{self, FixupContext};
use crate::graft::GraftSummary;
use crate::layout;
use crate::output::{self, TempOutput};
use crate::progress::{check_cancel, Progress, Stage};
use crate::report::Report;
use crate::stream;
use crate::swap;
use crate::{Error, Result};
use plan::WrittenLayout;
pub use prepare::efi_search;
use prepare::{prepare, Prepared};
use std::time::Instant;

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

/// Tell `progress` that the stage timed last has ended, with its measured time.
fn report_done(timings: &[StageTime], progress: &mut dyn Progress) {
    if let Some(t) = timings.last() {
        progress.stage_done(t.stage, t.seconds);
    }
}

fn fixup_context(plan: &ConversionPlan) -> FixupContext {
    let swap_uuid = plan.swap_uuid.map(|u| u.to_string());
    let mut ctx = FixupContext::new(
        &plan.inspection.fs.uuid,
        &plan.inspection.fs.kind.to_string(),
        swap_uuid.as_deref(),
    );
    ctx.disk_bus = plan.options.disk_bus;
    ctx.esp_uuid = plan.gpt.as_ref().map(GptPlan::esp_serial);
    ctx.extra_kernel_args = plan
        .compat
        .kernel_args
        .iter()
        .map(|(arg, _)| arg.clone())
        .collect();
    ctx.keep_cloud_init = plan.options.keep_cloud_init;
    let volumes = &plan.inspection.volumes;
    ctx.root_aliases = plan
        .inspection
        .root_volume()
        .and_then(|i| volumes.get(i))
        .map(|v| v.aliases.clone())
        .unwrap_or_default();
    ctx.volumes = Some(
        plan.volume_partitions()
            .into_iter()
            .filter_map(|(i, partition)| {
                let v = volumes.get(i)?;
                Some(fixups::OutputVolume {
                    xen_device: v.xen_device.clone(),
                    aliases: v.aliases.clone(),
                    uuid: v.uuid().map(str::to_string),
                    label: v.label().map(str::to_string),
                    partition,
                    swap: v.action == crate::source::VolumeAction::Swap,
                    boot: v.action == crate::source::VolumeAction::Boot && v.ext().is_some(),
                })
            })
            .collect(),
    );
    ctx
}

/// The dry run: inspect the source, read the donor, choose the kernel and GRUB files,
/// lay out the disk and list the guest changes the fixups would make. Writes nothing.
pub fn plan(opts: &ConvertOptions, progress: &mut dyn Progress) -> Result<ConversionPlan> {
    refuse_device_format(opts)?;
    let mut timings = Vec::new();
    let mut prepared = prepare(opts, progress, &mut timings)?;
    let plan = &mut prepared.plan;
    // A block device output gets the checks the conversion would make before writing.
    output::check_device(
        &opts.output,
        plan.written_layout().disk_bytes,
        opts.force,
        Some(&opts.source),
    )?;
    progress.stage(Stage::Fixups, None);
    let reader = ExtReader::open(
        plan.inspection.open_fs()?,
        plan.inspection.image.display().to_string(),
    )?;
    // With a separate /boot the fixups see it mounted, as the conversion writes them.
    let boot_reader = plan
        .boot_volume()
        .and_then(|v| v.region())
        .map(|r| {
            ExtReader::open(
                r.clone(),
                format!("{} (/boot)", plan.inspection.image.display()),
            )
        })
        .transpose()?;
    plan.fixups = timed(&mut timings, Stage::Fixups, || match &boot_reader {
        Some(boot) => Ok(fixups::plan_over(
            fixups::dry_run::ext_source(crate::tree::Mounted::new(&reader, boot)),
            &fixup_context(plan),
        )?),
        None => Ok(fixups::plan(&reader, &fixup_context(plan))?),
    })?;
    report_done(&timings, progress);
    Ok(prepared.plan)
}

/// Convert `opts.source` into a bootable raw disk image at `opts.output`.
///
/// The source is only read. The output is written to an unnamed temporary file in the
/// directory of `opts.output` and published there only when complete, with the source's
/// permission bits (see [`output::Access`]); on any error, or when `progress` reports
/// cancellation, nothing is left.
pub fn convert(opts: &ConvertOptions, progress: &mut dyn Progress) -> Result<Conversion> {
    convert_unpublished(opts, progress)?.publish()
}

/// A finished conversion not yet published at `opts.output`: the complete image in its
/// temporary file, for checks (such as `e2fsck -fn` on its root filesystem) that decide
/// whether it is published at all. Dropping it removes the image.
#[derive(Debug)]
pub struct Unpublished {
    conversion: Conversion,
    out: TempOutput,
    root: (u64, u64),
}

impl Unpublished {
    /// A path that opens the finished image (through its open descriptor), valid while
    /// `self` lives. Read it only: it is published as it is.
    pub fn image(&self) -> &std::path::Path {
        self.out.path()
    }

    /// Byte offset and length of the root filesystem's partition in the image.
    pub fn root_partition(&self) -> (u64, u64) {
        self.root
    }

    /// The conversion's result (its `output` is where the image will be published).
    pub fn conversion(&self) -> &Conversion {
        &self.conversion
    }

    /// Publish the image at the requested output path.
    pub fn publish(self) -> Result<Conversion> {
        let mut conversion = self.conversion;
        conversion.output = self.out.commit()?;
        Ok(conversion)
    }
}

/// A block device output is written raw (the guest's disk is the device itself).
fn refuse_device_format(opts: &ConvertOptions) -> Result<()> {
    if opts.disk_format != DiskFormat::Raw && crate::blockdev::is_block_device(&opts.output) {
        return Err(output::OutputError::DeviceFormat {
            path: opts.output.clone(),
            format: "qcow2",
        }
        .into());
    }
    Ok(())
}

/// [`convert`] up to, not including, publishing the output (see [`Unpublished`]).
///
/// A block device output is written in place; when the conversion fails after it was
/// claimed, its first MiB is zeroed and the error says so ([`Error::DeviceWiped`]).
pub fn convert_unpublished(
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<Unpublished> {
    refuse_device_format(opts)?;
    let note = output::WipeNote::default();
    convert_into(opts, progress, &note).map_err(|e| note.annotate(e))
}

fn convert_into(
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
    note: &output::WipeNote,
) -> Result<Unpublished> {
    let started = Instant::now();
    let mut timings = Vec::new();
    let Prepared {
        plan,
        donor,
        donor_kernel,
        grub,
        efi,
    } = prepare(opts, progress, &mut timings)?;
    // GRUB's core.img fills the gap before the first partition.
    let gap_end_lba = plan
        .disk
        .partitions
        .iter()
        .map(|p| p.start_lba)
        .min()
        .unwrap_or(plan.disk.root().start_lba);
    let WrittenLayout {
        root_offset,
        root_len,
        root_number,
        disk_bytes,
        swap: swap_part,
        carried,
    } = plan.written_layout();
    let mut report = Report::default();
    report.warnings.extend(plan.warnings.iter().cloned());

    // Stream and graft run side by side (see `overlap::together`) unless an outside tool
    // has to change the copied filesystem between them: journal replay, repair (e2fsck -fy
    // on a filesystem whose bitmaps cannot be trusted; the graft allocates from them) and
    // resize2fs work on the finished copy in the output, so there the stages stay one
    // after the other. `Overlap::Sequential` forces the sequential path (tests compare
    // both paths' outputs; benchmarks measure what the overlap gains).
    let sequential = plan.inspection.fs.needs_recovery
        || plan.inspection.unclean().is_some()
        || plan.disk.grow.is_some()
        || opts.repair
        || opts.overlap == Overlap::Sequential;
    // A qcow2 disk is written as qcow2 from the start, except where those outside tools
    // need it as a raw file: then it is rewritten once complete.
    let direct_qcow2 = opts.disk_format == DiskFormat::Qcow2 && !sequential;
    let mut out = if direct_qcow2 {
        TempOutput::create_qcow2(&opts.output, disk_bytes, opts.force)?
    } else {
        TempOutput::create_for(
            &opts.output,
            disk_bytes,
            opts.force,
            Some(&opts.source),
            Some(note.clone()),
        )?
    };
    // A device holds old data: zero what the layout relies on reading as zeros.
    let mut kept = vec![(root_offset, root_len)];
    kept.extend(swap_part);
    out.zero_unwritten(disk_bytes, &kept)?;
    // The output holds everything the source holds: it gets the source's permission bits
    // and owner (or stays 0600 if the source cannot be read back).
    if let Ok(access) = output::Access::of(&opts.source) {
        out.set_access(access);
    }
    match &plan.gpt {
        Some(g) => uefi::write_gpt(out.sink(), g)?,
        None => layout::write_mbr(out.sink(), &plan.disk)?,
    }
    // A separate /boot is carried first, alone (it is small, and the graft writes into it
    // through its own libext2fs handle; see `carry` for why not beside the root), grown
    // when the plan says so. The other volumes are carried by worker threads beside the
    // root's stream and the guest work; `Overlap::Sequential` carries them after it, one
    // at a time.
    let boot_part = plan.boot_partition();
    let others: Vec<carry::Carried> = carried
        .iter()
        .copied()
        .filter(|c| Some(*c) != boot_part)
        .collect();
    let volumes_beside = opts.overlap != Overlap::Sequential && !others.is_empty();
    if let Some(boot) = boot_part {
        timed(&mut timings, Stage::Volumes, || {
            progress.stage(Stage::Volumes, None);
            let mut within = crate::progress::WithinStage(&mut *progress);
            carry::carry_one(
                &plan,
                out.sink(),
                boot,
                plan.boot_grow.as_ref(),
                opts.copy_method,
                &mut within,
            )
        })?;
        if let Some(grow) = &plan.boot_grow {
            carry::report_grown(&mut report, "/boot", grow);
        }
        report_done(&timings, progress);
    }

    // The block check reads the source beside the stream; the guest work waits for it
    // before libext2fs touches anything. After a journal replay the copy is checked
    // instead, once replayed: before it, inodes and bitmaps may not agree yet.
    let pending = if plan.inspection.fs.needs_recovery {
        None
    } else {
        Some(check::start(plan.inspection.open_fs()?))
    };
    let guest = GuestWork {
        opts,
        plan: &plan,
        check: std::sync::Mutex::new(pending),
        donor: donor.as_ref(),
        donor_kernel: donor_kernel.as_ref(),
        grub: &grub,
        efi: efi.as_ref(),
        root_number,
        boot: boot_part.map(|(_, start, _, number)| (start, number)),
        image: out.path(),
        sink: out.sink(),
    };
    let begun = timings.len();
    let mut root_work = |progress: &mut dyn Progress| -> Result<_> {
        Ok(if sequential {
            let stream = timed(&mut timings, Stage::Stream, || {
                let src = plan.inspection.open_fs()?;
                // Other volumes may be copied into the output beside this stream.
                let method = if volumes_beside {
                    opts.copy_method.beside_other_writers()
                } else {
                    opts.copy_method
                };
                stream::copy_used_blocks_with(&src, out.sink(), root_offset, method, progress)
                    .map_err(Error::from)
            })?;
            report_done(&timings, progress);
            check_cancel(progress)?;
            let pending = guest.check.lock().ok().and_then(|mut c| c.take());
            if let Some(pending) = pending {
                let findings = pending.wait()?;
                let src = plan.inspection.open_fs()?;
                check::repair_or_refuse(
                    opts.repair,
                    &out,
                    root_offset,
                    findings,
                    Some((&src, u64::from(plan.inspection.fs.block_size))),
                    &mut report,
                    progress,
                )?;
            }
            grow_and_replay(
                &plan,
                &out,
                root_offset,
                &mut report,
                &mut timings,
                progress,
            )?;
            if plan.inspection.fs.needs_recovery {
                // Replayed: check the copy's root filesystem (streamed whole, so nothing
                // it owns is missing from it).
                let copy = crate::blockio::Region::from_file(
                    out.file()
                        .try_clone()
                        .map_err(|e| output::write_error(out.file(), "cannot reopen", e))?,
                    out.path(),
                )
                .and_then(|r| r.sub(root_offset, plan.inspection.fs_len))
                .map_err(|e| output::write_error(out.file(), "cannot read back", e))?;
                let findings = check::start(copy).wait()?;
                check::repair_or_refuse(
                    opts.repair,
                    &out,
                    root_offset,
                    findings,
                    None,
                    &mut report,
                    progress,
                )?;
            }
            let mut fs = ExtFs::open(out.path(), root_offset)?;
            let (graft, core) = guest.write(&mut fs, &mut report, &mut timings, progress)?;
            fs.close()?;
            (stream, graft, core)
        } else {
            overlap::together(
                &guest,
                &out,
                root_offset,
                &mut report,
                &mut timings,
                progress,
            )?
        })
    };
    let (stream, graft, core) = if volumes_beside {
        let (done, seconds) = carry::beside(
            &plan,
            out.sink(),
            &others,
            opts.copy_method.beside_other_writers(),
            progress,
            root_work,
        )?;
        timings.insert(
            begun.min(timings.len()),
            StageTime {
                stage: Stage::Volumes,
                seconds,
            },
        );
        done
    } else {
        let done = root_work(progress)?;
        if !others.is_empty() {
            timed(&mut timings, Stage::Volumes, || {
                progress.stage(Stage::Volumes, None);
                let mut within = crate::progress::WithinStage(&mut *progress);
                for &c in &others {
                    carry::carry_one(&plan, out.sink(), c, None, opts.copy_method, &mut within)?;
                }
                Ok(())
            })?;
            report_done(&timings, progress);
        }
        done
    };
    if let (Some((start, len)), Some(uuid)) = (swap_part, &plan.swap_uuid) {
        let page = swap::swap_header(len, *uuid, "swap").map_err(Error::from)?;
        out.sink()
            .write_at(start, &page)
            .map_err(|e| output::write_error(out.file(), "cannot write the swap header to", e))?;
    }
    check_cancel(progress)?;
    if let (Some(g), Some((files, _))) = (&plan.gpt, &efi) {
        // The stub finds GRUB's directory: on the separate /boot when there is one.
        let grub_fs = plan
            .boot_volume()
            .and_then(|v| v.uuid())
            .unwrap_or(&plan.inspection.fs.uuid);
        uefi::install_esp(out.sink(), g, files, grub_fs, &mut report)?;
    }
    match (&plan.gpt, &core) {
        (None, Some(core)) => boot::install_bios_boot(out.sink(), &grub, core, 1, gap_end_lba)?,
        (Some(g), Some(core)) => uefi::install_hybrid_bios_boot(out.sink(), g, &grub, core)?,
        _ => {}
    }
    check_cancel(progress)?;

    progress.stage(Stage::Finish, None);
    // A qcow2 output gets its tables and header, or is rewritten from the finished raw
    // image, before it is handed back; its root partition offset then means nothing to
    // outside tools (the CLI refuses `--fsck post` for it and `verify` reads it through a
    // raw copy).
    let out = match opts.disk_format {
        DiskFormat::Raw => out,
        DiskFormat::Qcow2 if direct_qcow2 => {
            out.finish()?;
            out
        }
        DiskFormat::Qcow2 => match out.into_qcow2(progress) {
            Ok(o) => o,
            Err(_) if progress.is_cancelled() => return Err(Error::Cancelled),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(Unpublished {
        conversion: Conversion {
            output: opts.output.clone(),
            root_uuid: plan.inspection.fs.uuid.clone(),
            swap_uuid: plan.swap_uuid,
            plan,
            stream,
            graft,
            report,
            timings,
            seconds: started.elapsed().as_secs_f64(),
        },
        out,
        root: (root_offset, root_len),
    })
}

/// Replay the copied filesystem's journal or repair it, then grow it, in the output
/// (sequential path; the stream has finished and nothing was written into it yet).
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
            out.unclaimed(|| {
                crate::e2fs_tools::replay_journal(out.path(), root_offset, &*progress)
            })??;
            report.change(
                "journal",
                "/",
                "replayed the journal of the copied filesystem with e2fsck",
                "the source was not cleanly unmounted and replaying its journal was asked for; the input was not touched",
                None,
            );
        }
        if let Some(state) = plan.inspection.unclean() {
            // `check_clean` let it through: --repair was given.
            progress.stage(Stage::Grow, None);
            let run =
                out.unclaimed(|| crate::e2fs_tools::repair(out.path(), root_offset, &*progress))??;
            report.change(
                "repair",
                "/",
                format!(
                    "repaired the copied filesystem with e2fsck -fy before writing into it ({})",
                    if run.exit_code == 0 {
                        "it found nothing to fix".to_string()
                    } else {
                        format!("it fixed: {}", fsck_fixes(&run.output_tail))
                    }
                ),
                format!(
                    "the source filesystem {state}, so its allocation bitmaps could not be trusted, and a repair was asked for; the input was not touched"
                ),
                None,
            );
        }
        if let Some(grow) = &plan.disk.grow {
            progress.stage(Stage::Grow, None);
            out.unclaimed(|| {
                crate::e2fs_tools::grow(out.path(), root_offset, grow.to_bytes, &*progress)
            })??;
            carry::report_grown(report, "/", grow);
        }
        Ok(())
    })?;
    if plan.inspection.fs.needs_recovery
        || plan.inspection.unclean().is_some()
        || plan.disk.grow.is_some()
    {
        report_done(timings, progress);
    }
    Ok(())
}

/// The problems e2fsck reports fixing, in one line: its output without the pass headers
/// and the summary, at most a few hundred characters.
fn fsck_fixes(output: &str) -> String {
    let fixes: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Pass ")
                && !l.starts_with("e2fsck ")
                && !l.contains("***** FILE SYSTEM WAS MODIFIED")
                && !l.contains(" files (")
        })
        .collect();
    let mut line = fixes.join("; ");
    if line.len() > 400 {
        let cut = (0..=400)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// What is written into the guest filesystem after the stream: graft, fixups, boot files.
struct GuestWork<'a> {
    opts: &'a ConvertOptions,
    plan: &'a ConversionPlan,
    /// The block check, until the guest work waits for it.
    check: std::sync::Mutex<Option<check::PendingCheck>>,
    donor: Option<&'a Donor>,
    donor_kernel: Option<&'a DonorKernel>,
    grub: &'a GrubPlatformFiles,
    efi: Option<&'a (EfiBootFiles, Option<GrubPlatformFiles>)>,
    root_number: u32,
    /// A separate /boot already copied into the output: its start byte and partition
    /// number.
    boot: Option<(u64, u32)>,
    /// The output image, where the separate /boot is opened.
    image: &'a std::path::Path,
    /// The output disk (a qcow2 one opens the separate /boot through it).
    sink: &'a output::Sink,
}

impl GuestWork<'_> {
    /// Graft, fixups and boot files into the root `fs` and, with a separate /boot, into
    /// that filesystem too (opened here, closed before returning): the guest is written as
    /// it will see itself mounted. Returns the graft summary and the BIOS core.img to embed
    /// (none for UEFI only).
    fn write(
        &self,
        fs: &mut ExtFs,
        report: &mut Report,
        timings: &mut Vec<StageTime>,
        progress: &mut dyn Progress,
    ) -> Result<(Option<GraftSummary>, Option<boot::CoreImage>)> {
        let Some((offset, _)) = self.boot else {
            return self.write_into(fs, report, timings, progress);
        };
        let mut boot_fs = if self.sink.is_qcow2() {
            let sink = self
                .sink
                .try_clone()
                .map_err(|e| output::write_error(self.sink.backing_file(), "cannot reopen", e))?;
            ExtFs::open_device(output::SinkAt::new(sink, offset), self.image, offset)?
        } else {
            ExtFs::open(self.image, offset)?
        };
        let mut mounted = crate::guestfs::Mounted::new(fs, &mut boot_fs);
        let r = self.write_into(&mut mounted, report, timings, progress)?;
        boot_fs.close()?;
        Ok(r)
    }

    fn write_into(
        &self,
        fs: &mut dyn crate::guestfs::GuestFs,
        report: &mut Report,
        timings: &mut Vec<StageTime>,
        progress: &mut dyn Progress,
    ) -> Result<(Option<GraftSummary>, Option<boot::CoreImage>)> {
        // Nothing is written before the block check has passed (the sequential path
        // waited for it already).
        let pending = self.check.lock().ok().and_then(|mut c| c.take());
        if let Some(pending) = pending {
            let findings = pending.wait()?;
            check::refuse_unclean(findings, report, progress)?;
        }
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
        if graft.is_some() {
            report_done(timings, progress);
        }
        check_cancel(progress)?;

        timed(timings, Stage::Fixups, || {
            progress.stage(Stage::Fixups, None);
            Ok(fixups::apply(fs, &fixup_context(self.plan), report)?)
        })?;
        report_done(timings, progress);
        check_cancel(progress)?;

        let core = timed(timings, Stage::Boot, || {
            progress.stage(Stage::Boot, None);
            let gpt = self.plan.gpt.is_some();
            let cfg = self.plan.grub_config();
            // BIOS boot code for bios and hybrid.
            let core = if self.opts.firmware == Firmware::Uefi {
                None
            } else {
                let prefix = match self.boot {
                    Some((_, number)) => boot::grub_bios::prefix_for_boot_partition(gpt, number),
                    None => boot::prefix_for_partition(gpt, self.root_number),
                };
                let core = boot::build_core_image(
                    self.grub,
                    &prefix,
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
        report_done(timings, progress);
        Ok((graft, core))
    }
}
