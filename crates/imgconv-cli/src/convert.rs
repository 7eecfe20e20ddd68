//! `imgconv convert`, and the one-image driver that `batch` shares: checks up front
//! (before any work), the optional pre-fsck of the input, the library conversion, the
//! optional post-fsck of the output, the JSON report.

use crate::cli::{ConversionSettings, ConvertArgs, FirmwareArg, FormatArg};
use crate::errors::{self, Class, CliError, Paths};
use crate::fsck::{self, FsLocation};
use crate::progress::{CliProgress, Mode, Unit};
use crate::signals;
use crate::size::human;
use imgconv_core::convert::{
    Conversion, ConvertOptions, CopyMethod, DiskFormat, Firmware, Overlap,
};
use std::path::{Path, PathBuf};

/// What one successful conversion produced, in the CLI's terms.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The library's result as JSON (report, plan, timings).
    pub json: serde_json::Value,
    /// One-paragraph human summary (the library's Display).
    pub summary: String,
    /// Warnings from the conversion report.
    pub warnings: Vec<String>,
    /// What the source's container recorded about its VM (XVA: ova.xml).
    pub vm: Option<imgconv_core::vm::VmFacts>,
    /// What the fixups changed in each guest file.
    pub diffs: Vec<imgconv_core::report::FileDiff>,
    /// The data it moved: the bytes the stream read from the source's root filesystem
    /// and the file content the graft wrote (what `batch -j auto` measures throughput by).
    pub bytes: u64,
}

/// Build the library's options from the command line and the environment.
///
/// Three environment variables tune how the library copies, for benchmarks and for
/// comparing the paths by hand: `IMGCONV_OVERLAP=never` streams before the guest
/// work instead of beside it, `IMGCONV_COPY_FILE_RANGE=always|never` forces or forbids
/// `copy_file_range(2)`, `IMGCONV_DIRECT_IO=never` copies through the page cache instead
/// of with `O_DIRECT`. Other values leave the library's choice.
pub fn options(source: &Path, output: &Path, s: &ConversionSettings) -> ConvertOptions {
    with_settings(ConvertOptions::new(source, s.donor.clone(), output), s)
}

/// The options converting the guest of a Xen domain config: its disks as the sources
/// (the library finds the root disk by content and each image by the lookup rule), the
/// command line's settings on top. A config that does not read, a disk not found or no
/// disk holding a root is an error before anything is written.
pub fn xen_options(
    config: &Path,
    output: &Path,
    s: &ConversionSettings,
) -> Result<ConvertOptions, CliError> {
    let paths = Paths {
        source: Some(config.to_path_buf()),
        output: Some(output.to_path_buf()),
    };
    let cfg = imgconv_core::xen_config::XenConfig::from_file(config)
        .map_err(|e| errors::from_core(&imgconv_core::Error::from(e), &paths))?;
    let o = ConvertOptions::from_xen_config(&cfg, s.donor.clone(), output)
        .map_err(|e| errors::from_core(&e, &paths))?;
    Ok(with_settings(o, s))
}

/// Whether a batch source is a Xen domain config rather than an image: its name ends in
/// `.cfg`.
pub fn is_xen_config(source: &Path) -> bool {
    source
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("cfg"))
}

/// The command line's settings on top of `o`.
fn with_settings(o: ConvertOptions, s: &ConversionSettings) -> ConvertOptions {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    o.with_swap_size(s.swap)
        .with_target_size(s.size)
        .with_kernel_version(s.kernel.clone())
        .with_use_guest_kernel(s.use_guest_kernel)
        .with_kernel_source(s.kernel_source.into())
        .with_strict(s.strict)
        .with_keep_cloud_init(s.keep_cloud_init)
        .with_firmware(match s.firmware {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
            FirmwareArg::Hybrid => Firmware::Hybrid,
        })
        .with_disk_bus(s.bus.into())
        .with_disk_format(match s.format {
            FormatArg::Raw => DiskFormat::Raw,
            FormatArg::Qcow2 => DiskFormat::Qcow2,
        })
        .with_replay_journal(s.replay_journal)
        .with_repair(s.repair)
        .with_force(s.force)
        .with_grub_dir(s.grub_dir.clone())
        .with_extra_cmdline(s.kernel_cmdline.clone())
        .with_host_fallbacks(!s.no_host_files)
        .with_overlap(match env("IMGCONV_OVERLAP").as_str() {
            "never" => Overlap::Sequential,
            _ => Overlap::Auto,
        })
        .with_copy_method(CopyMethod::from_switches(
            &env("IMGCONV_COPY_FILE_RANGE"),
            &env("IMGCONV_DIRECT_IO"),
        ))
}

/// The paths of a conversion, to classify I/O errors.
pub fn paths_of(o: &ConvertOptions) -> Paths {
    Paths {
        source: Some(o.source.clone()),
        output: Some(o.output.clone()),
    }
}

/// Everything that can be refused before any work: missing source or donor, an output
/// that exists (without --force), a missing output directory, output == input.
pub fn preflight(o: &ConvertOptions) -> Result<(), CliError> {
    match std::fs::metadata(&o.source) {
        Err(e) => {
            return Err(CliError::new(
                Class::Input,
                format!("cannot read the source {}: {e}", o.source.display()),
                "give the path of an exported Xen guest image",
            ))
        }
        Ok(m) if m.is_dir() => {
            return Err(CliError::new(
                Class::Input,
                format!(
                    "the source {} is a directory, not an image",
                    o.source.display()
                ),
                "give the path of an exported Xen guest image (a file)",
            ))
        }
        Ok(_) => {}
    }
    if let Err(e) = std::fs::File::open(&o.source) {
        return Err(CliError::new(
            Class::Input,
            format!(
                "cannot open the source {} for reading: {e}",
                o.source.display()
            ),
            "check its permissions (imgconv only ever reads it)",
        ));
    }
    match &o.donor {
        Some(d) if !d.exists() => {
            return Err(CliError::new(
                Class::Donor,
                format!("the donor {} does not exist", d.display()),
                "give a bootable HVM disk image, a bare filesystem image or a directory with a kernel, initrd and /lib/modules",
            ))
        }
        None if o.effective_kernel_source() != imgconv_core::convert::KernelSource::Guest => {
            return Err(CliError::new(
                Class::Usage,
                "no --donor given",
                "pass --donor DONOR, or --kernel-source guest to keep a non-Xen kernel the guest has",
            ))
        }
        _ => {}
    }
    if let Some(g) = &o.grub_dir {
        if !g.is_dir() {
            return Err(CliError::new(
                Class::Donor,
                format!("--grub-dir {} is not a directory", g.display()),
                "give a GRUB i386-pc module directory such as /usr/lib/grub/i386-pc",
            ));
        }
    }
    refuse_naming_an_input(&o.output, "-o", o)?;
    if imgconv_core::blockdev::is_block_device(&o.output) {
        // Written in place: the library checks the device (size, use, content) before
        // writing anything.
        return Ok(());
    }
    if let Ok(m) = std::fs::symlink_metadata(&o.output) {
        if m.is_dir() {
            return Err(CliError::new(
                Class::Output,
                format!("the output {} is a directory", o.output.display()),
                "give a file name for -o",
            ));
        }
        if !o.force {
            return Err(CliError::new(
                Class::Output,
                format!("the output {} already exists", o.output.display()),
                "pass --force to overwrite it, or choose another -o",
            ));
        }
    }
    let dir = o
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CliError::new(
            Class::Output,
            format!("the output directory {} does not exist", dir.display()),
            format!(
                "create it (mkdir -p {}) or choose another -o",
                dir.display()
            ),
        ));
    }
    // Can we create the temporary output beside OUT? (Read-only mounts, permissions.)
    if let Err(e) = tempfile::Builder::new()
        .prefix(".imgconv-probe-")
        .tempfile_in(dir)
    {
        return Err(CliError::new(
            Class::Output,
            format!(
                "cannot write in the output directory {}: {e}",
                dir.display()
            ),
            "choose an -o in a writable directory",
        ));
    }
    Ok(())
}

/// True when `a` and `b` name one file: the same device and inode (through symlinks and
/// hard links alike), or, for names that do not exist yet, the same name in the same
/// directory.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        (Err(_), Err(_)) => {
            let place = |p: &Path| {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
                Some((dir, p.file_name()?.to_os_string()))
            };
            place(a).is_some_and(|x| Some(x) == place(b))
        }
        _ => false,
    }
}

/// Refuse a path to be written (`-o`, `--json`) that is the source or the donor: the
/// inputs are never modified.
pub fn refuse_naming_an_input(
    path: &Path,
    option: &str,
    o: &ConvertOptions,
) -> Result<(), CliError> {
    let inputs = [("source", Some(&o.source)), ("donor", o.donor.as_ref())]
        .into_iter()
        .chain(o.disks.iter().map(|d| ("guest disk", Some(&d.path))));
    for (what, input) in inputs {
        if input.is_some_and(|i| same_file(path, i)) {
            return Err(CliError::new(
                Class::Usage,
                format!("{option} {} is the {what} itself", path.display()),
                format!("the {what} is only ever read: choose another {option}"),
            ));
        }
    }
    Ok(())
}

/// Refuse a `--json` report path that is an input or the output image.
pub fn check_report_path(json: &Path, o: &ConvertOptions) -> Result<(), CliError> {
    refuse_naming_an_input(json, "--json", o)?;
    if same_file(json, &o.output) {
        return Err(CliError::new(
            Class::Usage,
            format!("--json {} is the output image", json.display()),
            "give the report its own file name",
        ));
    }
    Ok(())
}

/// Where the source's root filesystem is (for `--fsck pre`), from the library's inspection.
fn source_root(o: &ConvertOptions) -> Result<FsLocation, CliError> {
    let inspection = imgconv_core::source::inspect(&o.source)
        .map_err(|e| errors::from_core(&imgconv_core::Error::from(e), &paths_of(o)))?;
    if let imgconv_core::source::Container::LogicalVolume { vg, lv, .. } = &inspection.container {
        return Err(CliError::new(
            Class::Usage,
            format!(
                "--fsck pre runs e2fsck on the source in place, and the root of {} is LVM logical volume {vg}/{lv}, whose extents are not one range of the image",
                o.source.display()
            ),
            "leave out --fsck pre (or use --fsck post, which checks the converted copy)",
        ));
    }
    if !matches!(inspection.format.kind, "raw" | "block-device") {
        return Err(CliError::new(
            Class::Usage,
            format!(
                "--fsck pre runs e2fsck on the source in place, and {} is a {} image, not a raw one",
                o.source.display(),
                inspection.format.kind
            ),
            "leave out --fsck pre (or use --fsck post, which checks the converted copy)",
        ));
    }
    Ok(FsLocation {
        image: o.source.clone(),
        offset: inspection.fs_offset,
        len: inspection.fs_len,
    })
}

/// The CLI's result of a conversion the library finished.
fn converted(conversion: &Conversion) -> Converted {
    Converted {
        json: crate::schema::stamp(
            crate::schema::CONVERSION,
            serde_json::to_value(conversion).expect("the conversion serializes"),
        ),
        summary: summary(conversion),
        warnings: conversion.report.warnings.clone(),
        vm: conversion.plan.inspection.vm.clone(),
        diffs: conversion.report.diffs.clone(),
        bytes: conversion
            .stream
            .bytes_read
            .saturating_add(conversion.graft.as_ref().map_or(0, |g| g.bytes)),
    }
}

/// The final result, in a few lines.
fn summary(c: &Conversion) -> String {
    // A GPT plan (uefi/hybrid), when there is one, is the layout written.
    use imgconv_core::layout::{gpt::GptRole, PartitionRole};
    // The swap partition written: a new one, or the guest's own carried over.
    let (disk_bytes, root_number, root_start, swap, esp) = match &c.plan.gpt {
        Some(g) => (
            g.disk_bytes,
            g.root().number,
            g.root().start_bytes(),
            g.partitions
                .iter()
                .find(|p| p.role == GptRole::Swap)
                .map(|p| (p.number, p.volume)),
            format!(", ESP p{} (UUID {})", g.esp().number, g.esp_serial()),
        ),
        None => (
            c.plan.disk.disk_bytes,
            u32::from(c.plan.disk.root().number),
            c.plan.disk.root().start_bytes(),
            c.plan
                .disk
                .partitions
                .iter()
                .find(|p| p.role == PartitionRole::Swap)
                .map(|p| (u32::from(p.number), p.volume)),
            String::new(),
        ),
    };
    let swap = swap
        .map(|(n, volume)| {
            let uuid = match volume {
                Some(v) => c
                    .plan
                    .inspection
                    .volumes
                    .get(v)
                    .and_then(|v| v.uuid())
                    .map(str::to_string),
                None => c.swap_uuid.map(|u| u.to_string()),
            };
            match uuid {
                Some(u) => format!(", swap p{n} (UUID {u})"),
                None => format!(", swap p{n}"),
            }
        })
        .unwrap_or_default();
    // Wall time: the stream runs beside the later stages, so their times overlap.
    let seconds = c.seconds;
    let mut s = String::new();
    if let Some(guest) = &c.plan.inspection.xen_config {
        for line in guest.lines() {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s += &format!(
        "{}: {} disk, root p{root_number} at {} (UUID {}){swap}{esp}, kernel {}; {} guest changes, {} warnings; {:.1} s",
        c.output.display(),
        human(disk_bytes),
        root_start,
        c.root_uuid,
        c.plan.kernel.version,
        c.report.changes.len(),
        c.report.warnings.len(),
        seconds
    );
    for w in &c.report.warnings {
        s.push_str(&format!("\nwarning: {w}"));
    }
    s
}

/// Convert one image: preflight, pre-fsck, library convert, post-fsck, publish. The
/// post-fsck checks the finished image before it is published: when it fails, nothing
/// appears at the output path.
pub fn convert_one(
    o: &ConvertOptions,
    s: &ConversionSettings,
    progress: &mut CliProgress,
) -> Result<Converted, CliError> {
    preflight(o)?;
    if s.fsck.post() && o.disk_format != DiskFormat::Raw {
        return Err(CliError::new(
            Class::Usage,
            "--fsck post runs e2fsck on the output in place, which reads a raw image only",
            "leave out --fsck post and run `imgconv verify OUT` (it reads qcow2) afterwards",
        ));
    }
    if s.fsck.pre() {
        let root = source_root(o)?;
        progress.step("fsck-pre", Unit::Items, None);
        fsck::require_clean(&root, s.use_loop, "input's root filesystem", progress)?;
    }
    if signals::cancelled() {
        return Err(CliError::cancelled());
    }
    let core_err = |e: imgconv_core::Error| errors::from_core(&e, &paths_of(o));
    let finished = imgconv_core::convert::convert_unpublished(o, progress).map_err(core_err)?;
    if s.fsck.post() {
        let (offset, len) = finished.root_partition();
        let root = FsLocation {
            image: finished.image().to_path_buf(),
            offset,
            len,
        };
        progress.step("fsck-post", Unit::Items, None);
        let mut outcome = fsck::check(&root, s.use_loop, progress)?;
        // The image has no name yet: say which one it would have been.
        outcome.checked = format!("{}, partition 1, before publishing", o.output.display());
        fsck::clean_or_error(
            outcome,
            "output's root filesystem",
            if imgconv_core::blockdev::is_block_device(&o.output) {
                format!(
                    "the first MiB of the device {} was zeroed so the disk does not boot; run the conversion without --fsck post to keep the image and examine it",
                    o.output.display()
                )
            } else {
                format!(
                    "nothing was written to {}; run the conversion without --fsck post to keep the image and examine it",
                    o.output.display()
                )
            },
        )?;
    }
    if signals::cancelled() {
        return Err(CliError::cancelled());
    }
    Ok(converted(&finished.publish().map_err(core_err)?))
}

/// `imgconv convert`.
pub fn run(a: &ConvertArgs) -> Result<(), CliError> {
    let mut o = match (&a.source, &a.xen_config) {
        (_, Some(cfg)) => xen_options(cfg, &a.output, &a.settings)?,
        (Some(src), None) => options(src, &a.output, &a.settings),
        (None, None) => unreachable!("clap requires SOURCE or --xen-config"),
    };
    // With a config, --disk adds disks it does not name, after its own.
    o.disks.extend(a.disks.iter().cloned());
    if let Some(json) = &a.json {
        check_report_path(json, &o)?;
    }
    let mut progress = CliProgress::single(Mode::detect(a.settings.quiet), signals::cancel_flag());
    if a.dry_run {
        preflight(&o)?;
        let plan = imgconv_core::convert::plan(&o, &mut progress);
        progress.finish(plan.is_ok(), "planned");
        drop(progress);
        let plan = plan.map_err(|e| errors::from_core(&e, &paths_of(&o)))?;
        if let Some(path) = &a.json {
            write_json(
                path,
                &crate::schema::stamp(
                    crate::schema::PLAN,
                    serde_json::to_value(&plan).expect("the plan serializes"),
                ),
            )?;
        }
        let mut text = plan.to_string();
        if a.diff {
            text.push_str(&diff_text(&plan.fixups.diffs));
        }
        text.push_str("dry run: nothing was written\n");
        return crate::stdout::emit(&text);
    }
    let result = convert_one(&o, &a.settings, &mut progress);
    progress.finish(result.is_ok(), if result.is_ok() { "ok" } else { "failed" });
    drop(progress);
    let converted = result?;
    if let Some(path) = &a.json {
        write_json(path, &converted.json)?;
    }
    if let Some(path) = &a.libvirt_xml {
        write_libvirt_xml(a, &o, &converted, path)?;
    }
    let mut text = format!("{}\n", converted.summary);
    if a.diff {
        text.push_str(&diff_text(&converted.diffs));
    }
    crate::stdout::emit(&text)
}

/// The fixups' diffs for stdout, coloured on a terminal (`NO_COLOR` and `CLICOLOR=0`
/// turn the colours off): one `diff --git` section per file, or a line saying there are
/// none.
pub fn diff_text(diffs: &[imgconv_core::report::FileDiff]) -> String {
    use console::Style;
    if diffs.is_empty() {
        return "diff: the fixups change no guest file\n".to_string();
    }
    let (header, hunk, removed, added) = (
        Style::new().bold(),
        Style::new().cyan(),
        Style::new().red(),
        Style::new().green(),
    );
    let mut out = String::new();
    let mut in_hunk = false;
    for d in diffs {
        for line in d.unified.lines() {
            let style = if line.starts_with("diff --git ") {
                in_hunk = false;
                &header
            } else if line.starts_with("@@") {
                in_hunk = true;
                &hunk
            } else if !in_hunk {
                &header
            } else if line.starts_with('-') {
                &removed
            } else if line.starts_with('+') {
                &added
            } else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            out.push_str(&style.apply_to(line).to_string());
            out.push('\n');
        }
    }
    out
}

/// Write the libvirt domain definition for the converted disk.
fn write_libvirt_xml(
    a: &ConvertArgs,
    o: &ConvertOptions,
    converted: &Converted,
    path: &Path,
) -> Result<(), CliError> {
    let disk = std::path::absolute(&o.output).unwrap_or_else(|_| o.output.clone());
    let stem = o
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "converted-guest".into());
    let spec = imgconv_core::libvirt::DomainSpec {
        disk: &disk,
        disk_format: o.disk_format.name(),
        bus: o.disk_bus,
        firmware: o.firmware,
        name: a.vm_name.as_deref(),
        memory_mib: a.memory.map(|b| (b >> 20).max(1)),
        vcpus: a.vcpus,
        fallback_name: &stem,
    };
    let domain = imgconv_core::libvirt::domain(converted.vm.as_ref(), &spec);
    std::fs::write(path, domain.xml).map_err(|e| {
        CliError::new(
            Class::Output,
            format!(
                "cannot write the libvirt definition {}: {e}",
                path.display()
            ),
            "choose another --libvirt-xml path",
        )
    })
}

/// Write a JSON document to `path` (pretty, newline-terminated).
pub fn write_json(path: &PathBuf, value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON value serializes");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| {
        CliError::new(
            Class::Output,
            format!("cannot write the JSON report {}: {e}", path.display()),
            "choose another --json path",
        )
    })
}
