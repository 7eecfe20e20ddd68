//! `imgconv convert`, and the one-image driver that `batch` shares: checks up front
//! (before any work), the optional pre-fsck of the input, the library conversion, the
//! optional post-fsck of the output, the JSON report.

use crate::cli::{ConversionSettings, ConvertArgs, FirmwareArg};
use crate::errors::{self, Class, CliError, Paths};
use crate::fsck::{self, FsLocation};
use crate::progress::{CliProgress, Mode, Unit};
use crate::signals;
use crate::size::human;
use imgconv_core::convert::{Conversion, ConvertOptions, CopyMethod, Firmware, Overlap};
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
}

/// Build the library's options from the command line and the environment.
///
/// Two environment variables tune how the library copies, for benchmarks and for
/// comparing the two paths by hand: `IMGCONV_OVERLAP=never` streams before the guest
/// work instead of beside it, `IMGCONV_COPY_FILE_RANGE=always|never` forces or forbids
/// `copy_file_range(2)`. Other values leave the library's choice.
pub fn options(source: &Path, output: &Path, s: &ConversionSettings) -> ConvertOptions {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    ConvertOptions::new(source, s.donor.clone(), output)
        .with_swap_size(s.swap)
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
        .with_copy_method(match env("IMGCONV_COPY_FILE_RANGE").as_str() {
            "always" => CopyMethod::CopyFileRange,
            "never" => CopyMethod::ReadWrite,
            _ => CopyMethod::Auto,
        })
}

/// The paths of a conversion, to classify I/O errors.
pub fn paths_of(o: &ConvertOptions) -> Paths {
    Paths {
        source: Some(o.source.clone()),
        donor: o.donor.clone(),
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
    if same_file(&o.source, &o.output) {
        return Err(CliError::new(
            Class::Usage,
            format!("the output {} is the source itself", o.output.display()),
            "the input is never modified: choose another -o",
        ));
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

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Where the source's root filesystem is (for `--fsck pre`), from the library's inspection.
fn source_root(o: &ConvertOptions) -> Result<FsLocation, CliError> {
    let inspection = imgconv_core::source::inspect(&o.source)
        .map_err(|e| errors::from_core(&imgconv_core::Error::from(e), &paths_of(o)))?;
    Ok(FsLocation {
        image: o.source.clone(),
        offset: inspection.fs_offset,
        len: inspection.fs_len,
    })
}

/// Where the output's root filesystem is (for `--fsck post`): partition 1 of the table we wrote.
pub fn output_root(output: &Path) -> Result<FsLocation, CliError> {
    use imgconv_core::blockio::Region;
    let region = Region::open(output).map_err(|e| {
        CliError::new(
            Class::Output,
            e.to_string(),
            "the converted image cannot be read back",
        )
    })?;
    let table = imgconv_core::partition::read_table(&region).map_err(|e| {
        CliError::new(
            Class::Verify,
            e.to_string(),
            "the converted image has a broken partition table",
        )
    })?;
    let p1 = table
        .and_then(|t| t.entries.into_iter().find(|e| e.number == 1))
        .ok_or_else(|| {
            CliError::new(
                Class::Verify,
                format!("{} has no partition 1", output.display()),
                "the converted image is not what imgconv writes",
            )
        })?;
    Ok(FsLocation {
        image: output.to_path_buf(),
        offset: p1.start,
        len: p1.len,
    })
}

/// The library conversion, mapped to the CLI's terms.
fn library_convert(o: &ConvertOptions, progress: &mut CliProgress) -> Result<Converted, CliError> {
    let conversion = imgconv_core::convert::convert(o, progress)
        .map_err(|e| errors::from_core(&e, &paths_of(o)))?;
    Ok(Converted {
        json: serde_json::to_value(&conversion).expect("the conversion serializes"),
        summary: summary(&conversion),
        warnings: conversion.report.warnings.clone(),
    })
}

/// The final result, in a few lines.
fn summary(c: &Conversion) -> String {
    // A GPT plan (uefi/hybrid), when there is one, is the layout written.
    let (disk_bytes, root_start, esp) = match &c.plan.gpt {
        Some(g) => (
            g.disk_bytes,
            g.root().start_bytes(),
            format!(", ESP p{} (UUID {})", g.esp().number, g.esp_serial()),
        ),
        None => (
            c.plan.disk.disk_bytes,
            c.plan.disk.root().start_bytes(),
            String::new(),
        ),
    };
    let seconds: f64 = c.timings.iter().map(|t| t.seconds).sum();
    let mut s = format!(
        "{}: {} disk, root p1 at {} (UUID {}){}{esp}, kernel {}; {} guest changes, {} warnings; {:.1} s",
        c.output.display(),
        human(disk_bytes),
        root_start,
        c.root_uuid,
        c.swap_uuid
            .as_deref()
            .map(|u| format!(", swap p2 (UUID {u})"))
            .unwrap_or_default(),
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

/// Convert one image: preflight, pre-fsck, library convert, post-fsck.
pub fn convert_one(
    o: &ConvertOptions,
    s: &ConversionSettings,
    progress: &mut CliProgress,
) -> Result<Converted, CliError> {
    preflight(o)?;
    if s.fsck.pre() {
        let root = source_root(o)?;
        progress.step("fsck-pre", Unit::Items, None);
        fsck::require_clean(&root, s.use_loop, "input's root filesystem")?;
    }
    if signals::cancelled() {
        return Err(CliError::cancelled());
    }
    let converted = library_convert(o, progress)?;
    if s.fsck.post() {
        let root = output_root(&o.output)?;
        progress.step("fsck-post", Unit::Items, None);
        fsck::require_clean(&root, s.use_loop, "output's root filesystem")?;
    }
    Ok(converted)
}

/// `imgconv convert`.
pub fn run(a: &ConvertArgs) -> Result<(), CliError> {
    let o = options(&a.source, &a.output, &a.settings);
    let mut progress = CliProgress::single(Mode::detect(a.settings.quiet), signals::cancel_flag());
    if a.dry_run {
        preflight(&o)?;
        let plan = imgconv_core::convert::plan(&o, &mut progress);
        progress.finish("planned");
        drop(progress);
        let plan = plan.map_err(|e| errors::from_core(&e, &paths_of(&o)))?;
        if let Some(path) = &a.json {
            write_json(
                path,
                &serde_json::to_value(&plan).expect("the plan serializes"),
            )?;
        }
        print!("{plan}");
        println!("dry run: nothing was written");
        return Ok(());
    }
    let result = convert_one(&o, &a.settings, &mut progress);
    progress.finish(if result.is_ok() { "ok" } else { "failed" });
    drop(progress);
    let converted = result?;
    if let Some(path) = &a.json {
        write_json(path, &converted.json)?;
    }
    println!("{}", converted.summary);
    Ok(())
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
