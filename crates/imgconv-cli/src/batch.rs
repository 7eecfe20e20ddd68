//! `imgconv batch`: many conversions on a pool of N worker threads, one progress line
//! per image, a summary table and a JSON report; `imgconv report merge` joins reports.
//! With `-j N` all N convert at once; with `-j auto` the pool is [`auto_jobs`]'s ceiling
//! and a [`gate::Gate`] lets through as many as the [`governor::Governor`] finds pay.
//!
//! Outputs are named `<out-dir>/<stem>.raw` (`.qcow2` with `--format qcow2`; the source's file name without its last
//! extension); sources sharing a stem are named `<parent>-<stem>.raw` after their
//! directory instead, with `-2`, `-3`, … in path order if that name is taken (see
//! [`output_names`]). Without `--keep-going`, no new conversion starts after the first failure;
//! those already running finish. The exit status is 0 only if every image converted.
//!
//! Across machines: `--shard K/N` takes every N-th source from the K-th of the sources
//! sorted by path, so N workers given the same list convert disjoint shares whose union is
//! the list; `--skip-done` writes `<stem>.report.json` (a one-image batch report, with the
//! source's size and mtime) beside each output and skips sources whose output and report
//! still match, so a re-run resumes where the last one stopped.

use crate::cli::{BatchArgs, Jobs, MergeArgs, Shard};
use crate::convert::{self, Converted};
use crate::errors::{Class, CliError};
use crate::progress::{CliProgress, Mode};
use crate::signals;
use crate::size::human;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

mod gate;
mod governor;

use gate::Gate;
use governor::{Change, Governor};

/// The result of one image of a batch (one JSON entry, one summary row).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    #[serde(serialize_with = "imgconv_core::serde_path::lossy")]
    pub source: PathBuf,
    #[serde(serialize_with = "imgconv_core::serde_path::lossy")]
    pub output: PathBuf,
    /// "ok", "already-done" (converted by an earlier run, `--skip-done`), "failed",
    /// "cancelled" or "skipped" (not started after a failure).
    pub result: String,
    /// The exit code this image alone would have given.
    pub exit_code: i32,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub seconds: f64,
    /// Size of the output file in bytes (apparent size), when written.
    pub output_size: Option<u64>,
    /// Bytes actually allocated for the output (it is sparse).
    pub output_allocated: Option<u64>,
    pub warnings: Vec<String>,
    /// The conversion report (plan, changes, timings), when it succeeded.
    pub conversion: Option<serde_json::Value>,
    /// The source's size in bytes and modification time (nanoseconds since the epoch)
    /// when the batch looked at it: what `--skip-done` compares.
    #[serde(default)]
    pub source_size: Option<u64>,
    #[serde(default)]
    pub source_mtime_ns: Option<i64>,
}

impl Entry {
    fn succeeded(&self) -> bool {
        self.result == "ok" || self.result == "already-done"
    }
}

/// The whole batch, as written by `--json FILE`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchReport {
    pub ok: bool,
    /// Worker threads: the conversions at once with `-j N`, the most with `-j auto`
    /// (both bounded by the images).
    pub jobs: u32,
    /// How `-j auto` moved the conversions at once (absent with `-j N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<Parallelism>,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub images: Vec<Entry>,
    /// Entries of `--dir` that were not taken as images, with the reason.
    #[serde(default)]
    pub ignored: Vec<Ignored>,
}

impl BatchReport {
    /// The report of `images` (counts and verdict derived from them).
    fn of(images: Vec<Entry>, jobs: u32, seconds: f64) -> BatchReport {
        BatchReport {
            ok: images.iter().all(Entry::succeeded),
            jobs,
            parallelism: None,
            succeeded: images.iter().filter(|e| e.succeeded()).count(),
            failed: images
                .iter()
                .filter(|e| e.result == "failed" || e.result == "cancelled")
                .count(),
            skipped: images.iter().filter(|e| e.result == "skipped").count(),
            seconds,
            images,
            ignored: Vec::new(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        crate::schema::stamp(
            crate::schema::BATCH,
            serde_json::to_value(self).expect("batch report serializes"),
        )
    }
}

/// What `-j auto`'s governor did over a batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Parallelism {
    /// The most it would run at once (`auto_jobs`, bounded by the images).
    pub ceiling: u32,
    /// The level it started at.
    pub start: u32,
    /// Each stretch at one level, in order; the last is where the batch ended.
    pub history: Vec<LevelReport>,
}

/// One stretch of a batch at one level.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LevelReport {
    /// Conversions at once.
    pub level: u32,
    /// Successful conversions that started and finished at this level (the measured
    /// ones).
    pub conversions: u32,
    /// The batch's throughput at this level, in MB/s (10^6 bytes): `level` times the
    /// measured conversions' bytes over their seconds; null when none was measured.
    pub mb_per_s: Option<f64>,
}

impl Parallelism {
    fn of(g: &Governor, start: u32) -> Parallelism {
        Parallelism {
            ceiling: g.ceiling(),
            start,
            history: g
                .history()
                .iter()
                .map(|p| LevelReport {
                    level: p.level,
                    conversions: p.conversions,
                    mb_per_s: p.bytes_per_second().map(|b| (b / 1e4).round() / 100.0),
                })
                .collect(),
        }
    }
}

/// Throughput for a note: `12.3 MB/s`.
fn mb_per_s(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// The note line of a governor's change.
fn change_note(c: &Change) -> String {
    let at = |r: &governor::Rate| format!("{} at {}", mb_per_s(r.bytes_per_second), r.level);
    match c {
        Change::Raised { to, below, at: now } => match below {
            Some(b) => format!("-j auto: {to} at once ({}, {})", at(b), at(now)),
            None => format!("-j auto: {to} at once ({})", at(now)),
        },
        Change::SteppedBack { kept, tried } => format!(
            "-j auto: {} at once ({}, {}: no gain of {:.0}%, holding)",
            kept.level,
            at(kept),
            at(tried),
            governor::MARGIN * 100.0
        ),
        Change::HeldAtCeiling { below, at: now } => format!(
            "-j auto: {} at once ({}, {}: the most, holding)",
            now.level,
            at(below),
            at(now)
        ),
    }
}

/// The source's size and mtime (ns since the epoch), if it can be read.
fn stamp_of(source: &Path) -> (Option<u64>, Option<i64>) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(source) {
        Ok(m) => (
            Some(m.len()),
            m.mtime()
                .checked_mul(1_000_000_000)
                .and_then(|ns| ns.checked_add(m.mtime_nsec())),
        ),
        Err(_) => (None, None),
    }
}

/// The sources of share `shard`: sorted by path, every `count`-th from the `index`-th.
pub fn shard_of(sources: &[PathBuf], shard: Shard) -> Vec<PathBuf> {
    let mut sorted = sources.to_vec();
    sorted.sort();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 % u64::from(shard.count) == u64::from(shard.index))
        .map(|(_, p)| p)
        .collect()
}

/// The per-image report `--skip-done` keeps beside an output: `<stem>.report.json`.
pub fn report_for(output: &Path) -> PathBuf {
    output.with_extension("report.json")
}

/// The entry of an earlier run's conversion of `source` into `output`, if its output and
/// report are there and the report matches the source's current size and mtime and the
/// output's size.
fn done_before(source: &Path, output: &Path) -> Option<Entry> {
    let text = std::fs::read(report_for(output)).ok()?;
    let report: BatchReport = serde_json::from_slice(&text).ok()?;
    let [mut e]: [Entry; 1] = report.images.try_into().ok()?;
    let out_len = std::fs::metadata(output).ok()?.len();
    let (size, mtime) = stamp_of(source);
    let matches = e.succeeded()
        && e.source == source
        && size.is_some()
        && (e.source_size, e.source_mtime_ns) == (size, mtime)
        && e.output_size == Some(out_len);
    matches.then(|| {
        e.result = "already-done".into();
        e
    })
}

/// Write `value` to `path` through a temporary file renamed into place, so a reader (a
/// later `--skip-done`) never sees half a report.
fn write_json_atomically(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    tmp.write_all(text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The source's file name without its last extension; for a Xen domain config, the
/// domain's `name` when it is a plain file name (no `/`, not hidden, at most 200 bytes).
fn stem_of(source: &Path) -> String {
    if convert::is_xen_config(source) {
        let name = imgconv_core::xen_config::XenConfig::from_file(source)
            .ok()
            .and_then(|c| c.name)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 200
                    && !n.starts_with('.')
                    && !n.contains(['/', '\0'])
                    && !n.chars().any(char::is_control)
            });
        if let Some(name) = name {
            return name;
        }
    }
    source
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
}

/// The disk images the Xen domain configs among `sources` name (as each config's lookup
/// finds them), with the config naming each: they are converted with their config, not
/// on their own. Configs that do not read or whose disks are not found name none here;
/// their conversion reports the error.
fn disks_of_configs(sources: &[PathBuf]) -> HashMap<PathBuf, PathBuf> {
    let mut out = HashMap::new();
    for cfg in sources.iter().filter(|s| convert::is_xen_config(s)) {
        let Ok(config) = imgconv_core::xen_config::XenConfig::from_file(cfg) else {
            continue;
        };
        for d in config.resolve_disks().unwrap_or_default() {
            if let Ok(key) = std::fs::canonicalize(&d.path) {
                out.entry(key).or_insert_with(|| cfg.clone());
            }
        }
    }
    out
}

/// The name of the directory holding `source` (the current directory's for a bare name).
fn parent_name(source: &Path) -> String {
    let parent = source.parent().filter(|p| !p.as_os_str().is_empty());
    parent
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| {
            std::fs::canonicalize(parent.unwrap_or(Path::new(".")))
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "root".into())
}

/// The output path of each source (in the order given), over the whole list so that
/// every shard names each source alike: `<stem>.<ext>` for a stem no other source has;
/// `<parent>-<stem>.<ext>` (the name of its directory) for sources sharing a stem
/// (`a/disk.img` → `a-disk.raw`, `b/disk.img` → `b-disk.raw`); a derived name already
/// taken (by a plain name, or a source earlier by path) gets the first free `-2`, `-3`, …
/// before the extension. Deterministic: it depends on the paths only, never on their
/// order.
pub fn output_names(
    out_dir: &Path,
    sources: &[PathBuf],
    format: crate::cli::FormatArg,
) -> Vec<PathBuf> {
    use std::collections::{HashMap, HashSet};
    let ext = match format {
        crate::cli::FormatArg::Raw => "raw",
        crate::cli::FormatArg::Qcow2 => "qcow2",
    };
    let mut stems: HashMap<String, usize> = HashMap::new();
    for s in sources {
        *stems.entry(stem_of(s)).or_default() += 1;
    }
    let base: Vec<(bool, String)> = sources
        .iter()
        .map(|s| {
            let stem = stem_of(s);
            if stems[&stem] > 1 {
                (true, format!("{}-{stem}", parent_name(s)))
            } else {
                (false, stem)
            }
        })
        .collect();
    // Plain names first (they are unique), then the derived ones in path order, each
    // with the first free counter if its name is taken.
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by(|&a, &b| (base[a].0, &sources[a]).cmp(&(base[b].0, &sources[b])));
    let mut taken: HashSet<String> = HashSet::new();
    let mut names = vec![String::new(); sources.len()];
    for i in order {
        let name = &base[i].1;
        let mut pick = name.clone();
        let mut n = 1;
        while taken.contains(&pick) {
            n += 1;
            pick = format!("{name}-{n}");
        }
        taken.insert(pick.clone());
        names[i] = pick;
    }
    names
        .into_iter()
        .map(|n| out_dir.join(format!("{n}.{ext}")))
        .collect()
}

/// An entry of `--dir` that is not taken as an image, and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ignored {
    #[serde(serialize_with = "imgconv_core::serde_path::lossy")]
    pub path: PathBuf,
    pub reason: String,
}

/// Why a directory entry is not an image, or `None` for a regular file or a block device
/// (directly or through a symlink).
fn not_an_image(path: &Path, name: &std::ffi::OsStr) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    if name.as_encoded_bytes().starts_with(b".") {
        return Some("hidden".into());
    }
    let link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    let via = if link { "a symlink to " } else { "" };
    let kind = match std::fs::metadata(path) {
        Err(e) if link => return Some(format!("a symlink that cannot be followed: {e}")),
        Err(e) => return Some(format!("cannot stat it: {e}")),
        Ok(m) => m.file_type(),
    };
    if kind.is_file() || kind.is_block_device() {
        return None;
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    Some(format!("{via}{what}"))
}

/// The images in `dir`: regular files and block devices, also through symlinks, sorted by
/// name; and the entries left out, with the reason.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Ignored>), CliError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        CliError::new(
            Class::Input,
            format!("cannot list {}: {e}", dir.display()),
            "give a directory of images with --dir",
        )
    })?;
    let mut files = Vec::new();
    let mut ignored = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| {
            CliError::new(
                Class::Input,
                format!("cannot list {}: {e}", dir.display()),
                "give a directory of images with --dir",
            )
        })?;
        let path = entry.path();
        match not_an_image(&path, &entry.file_name()) {
            None => files.push(path),
            Some(reason) => ignored.push(Ignored { path, reason }),
        }
    }
    files.sort();
    ignored.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(CliError::new(
            Class::Input,
            format!(
                "no image files in {}{}",
                dir.display(),
                ignored_list(&ignored)
                    .map(|l| format!(" (left out: {l})"))
                    .unwrap_or_default()
            ),
            "put the Xen images there, or list them on the command line",
        ));
    }
    Ok((files, ignored))
}

/// `name (reason), …`, or `None` when nothing was left out.
fn ignored_list(ignored: &[Ignored]) -> Option<String> {
    (!ignored.is_empty()).then(|| {
        ignored
            .iter()
            .map(|i| {
                let name = i.path.file_name().unwrap_or(i.path.as_os_str());
                format!("{} ({})", name.to_string_lossy(), i.reason)
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Most conversions `-j auto` runs at once: on solid-state (or unknown) storage, and
/// when the output directory or a source is on a rotational disk.
const AUTO_MAX: u32 = 8;
const AUTO_MAX_ROTATIONAL: u32 = 2;

/// What `-j auto` chose, and from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoJobs {
    /// Conversions at once (before the batch's image count bounds it).
    pub jobs: u32,
    /// The cores this process may use (`available_parallelism`: affinity and cgroup
    /// quota count).
    pub cores: u32,
    /// The first of the output directory and the sources found on a rotational disk.
    pub rotational: Option<PathBuf>,
}

/// `-j auto`: one conversion per core, at most [`AUTO_MAX`]; at most
/// [`AUTO_MAX_ROTATIONAL`] when the output directory or any source is on a disk the
/// kernel marks rotational. A conversion is mostly I/O (its stream reads and writes in
/// 8 MiB runs beside a graft that keeps about one core busy), so one per core keeps the
/// cores and a solid-state disk busy; on a spinning disk more than two streams at once
/// spend their time seeking between each other. Storage the kernel does not describe (a
/// btrfs or NFS mount, a file not there) counts as solid-state.
pub fn auto_jobs(out_dir: &Path, sources: &[PathBuf]) -> AutoJobs {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(1024) as u32);
    let mut seen = HashSet::new();
    let rotational = std::iter::once(out_dir)
        .chain(sources.iter().map(PathBuf::as_path))
        .find(|p| device_of(p).is_some_and(|d| seen.insert(d) && is_rotational(d)))
        .map(Path::to_path_buf);
    let cap = if rotational.is_some() {
        AUTO_MAX_ROTATIONAL
    } else {
        AUTO_MAX
    };
    AutoJobs {
        jobs: cores.clamp(1, cap),
        cores,
        rotational,
    }
}

/// The block device (major, minor) holding `path`: the device itself for a block device,
/// the filesystem's device for anything else.
fn device_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    let dev = if m.file_type().is_block_device() {
        m.rdev()
    } else {
        m.dev()
    };
    Some((libc::major(dev), libc::minor(dev)))
}

/// Whether the kernel marks block device `(major, minor)` rotational: its
/// `queue/rotational` in sysfs, or its disk's for a partition. False when sysfs does not
/// describe it.
fn is_rotational((major, minor): (u32, u32)) -> bool {
    let dev = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    [
        dev.join("queue/rotational"),
        dev.join("../queue/rotational"),
    ]
    .iter()
    .find_map(|q| std::fs::read_to_string(q).ok())
    .is_some_and(|t| t.trim() == "1")
}

/// `imgconv batch`.
pub fn run(a: &BatchArgs) -> Result<(), CliError> {
    let (mut all_sources, mut ignored) = match &a.dir {
        Some(d) => list_dir(d)?,
        None => (a.sources.clone(), Vec::new()),
    };
    // A disk image a config of the batch names is converted with that config.
    let config_disks = disks_of_configs(&all_sources);
    if !config_disks.is_empty() {
        all_sources.retain(|src| {
            let owner = std::fs::canonicalize(src)
                .ok()
                .and_then(|k| config_disks.get(&k));
            if let Some(cfg) = owner {
                let name = cfg.file_name().unwrap_or(cfg.as_os_str());
                ignored.push(Ignored {
                    path: src.clone(),
                    reason: format!("a disk of {}, converted with it", name.to_string_lossy()),
                });
            }
            owner.is_none()
        });
        ignored.sort_by(|a, b| a.path.cmp(&b.path));
    }
    if let Some(list) = ignored_list(&ignored) {
        eprintln!("imgconv: note: not images, left out: {list}");
    }
    std::fs::create_dir_all(&a.out_dir).map_err(|e| {
        CliError::new(
            Class::Output,
            format!(
                "cannot create the output directory {}: {e}",
                a.out_dir.display()
            ),
            "choose another --out-dir",
        )
    })?;
    // Everything that can be refused is refused before the first conversion starts.
    // Outputs are named over all sources, so every shard names each source alike.
    let mut seen = HashSet::new();
    for src in &all_sources {
        if !seen.insert(src) {
            return Err(CliError::new(
                Class::Usage,
                format!("the source {} is given twice", src.display()),
                "give each source once",
            ));
        }
    }
    let names: std::collections::HashMap<PathBuf, PathBuf> = all_sources
        .iter()
        .cloned()
        .zip(output_names(&a.out_dir, &all_sources, a.settings.format))
        .collect();
    let output_for = |src: &PathBuf| names[src].clone();
    let sources = match a.shard {
        Some(shard) => shard_of(&all_sources, shard),
        None => all_sources,
    };
    let mut jobs = VecDeque::new();
    let mut refused: Vec<CliError> = Vec::new();
    let mut done: Vec<Option<Entry>> = vec![None; sources.len()];
    for (i, src) in sources.iter().enumerate() {
        let out = output_for(src);
        if a.skip_done {
            if let Some(e) = done_before(src, &out) {
                done[i] = Some(e);
                continue;
            }
        }
        // A config that does not read, or whose disks are not found, is that image's
        // failure, reported in turn.
        let o = if convert::is_xen_config(src) {
            convert::xen_options(src, &out, &a.settings)
        } else {
            Ok(convert::options(src, &out, &a.settings))
        };
        if let Ok(o) = &o {
            if let Some(json) = &a.json {
                if let Err(e) = convert::check_report_path(json, o) {
                    refused.push(e);
                }
            }
            // Output problems (an existing output without --force, output == input) stop
            // the whole batch; a bad source or donor is that image's failure, reported in
            // turn.
            if let Err(e) = convert::preflight(o) {
                if matches!(e.class, Class::Output | Class::Usage) {
                    refused.push(e);
                }
            }
        }
        jobs.push_back((i, src.clone(), out, o));
    }
    if let Some(first) = refused.first() {
        let causes: Vec<&str> = refused.iter().map(|e| e.cause.as_str()).collect();
        return Err(CliError::new(
            first.class,
            causes.join("; "),
            first.hint.clone(),
        ));
    }

    let mode = Mode::detect(a.settings.quiet);
    let multi = CliProgress::multi(mode);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Entry)>();
    let started = Instant::now();
    let note = |line: &str| match mode {
        Mode::Quiet => {}
        Mode::Bars => {
            let _ = multi.println(format!("imgconv: note: {line}"));
        }
        Mode::Plain => eprintln!("imgconv: note: {line}"),
    };
    // The worker threads: `-j N`, or `-j auto`'s ceiling; never more than the images.
    let pending = jobs.len() as u32;
    let (n, gov) = match a.jobs {
        Jobs::Count(n) => (n.min(pending).max(1), None),
        Jobs::Auto => {
            let auto = auto_jobs(&a.out_dir, &sources);
            let n = auto.jobs.min(pending).max(1);
            let g = Governor::new(n);
            let mut why = format!("{} cores", auto.cores);
            if let Some(p) = &auto.rotational {
                why += &format!(", {} on a rotational disk", p.display());
            }
            if pending < auto.jobs {
                why += &format!(", {pending} to convert");
            }
            let conversions = |k: u32| format!("{k} conversion{}", if k == 1 { "" } else { "s" });
            note(&if g.level() < n {
                format!(
                    "-j auto: {} at once to start, at most {n} ({why}); one more while the measured throughput rises by {:.0}% or more",
                    conversions(g.level()),
                    governor::MARGIN * 100.0
                )
            } else {
                format!("-j auto: {} at once ({why})", conversions(n))
            });
            (n, Some(Mutex::new(g)))
        }
    };
    let start_level = gov.as_ref().map(|g| lock(g).level());
    let gate = Gate::new(start_level.unwrap_or(n));
    let queue = Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..n {
            let tx = tx.clone();
            let (queue, stop, multi, gate, gov, note) = (&queue, &stop, &multi, &gate, &gov, &note);
            scope.spawn(move || loop {
                let halted = || stop.load(Ordering::SeqCst) || signals::cancelled();
                // Held until this image's conversion ends (after the governor heard of it).
                let Some(pass) = gate.enter(halted) else {
                    return;
                };
                let Some((i, src, out, o)) = queue.lock().ok().and_then(|mut q| q.pop_front())
                else {
                    return;
                };
                let epoch = gov.as_ref().map(|g| lock(g).epoch());
                let label = src.file_name().map_or_else(
                    || src.display().to_string(),
                    |f| f.to_string_lossy().into_owned(),
                );
                let mut p = CliProgress::in_batch(mode, multi, &label, signals::cancel_flag());
                let t0 = Instant::now();
                let result = match &o {
                    Ok(o) => convert::convert_one(o, &a.settings, &mut p),
                    Err(e) => Err(e.clone()),
                };
                let seconds = t0.elapsed().as_secs_f64();
                if let (Some(g), Some(epoch), Ok(c)) = (gov, epoch, &result) {
                    let mut g = lock(g);
                    if let Some(change) = g.record(epoch, c.bytes, seconds) {
                        gate.set_level(g.level());
                        note(&change_note(&change));
                    }
                }
                drop(pass);
                p.finish(result.is_ok(), &match &result {
                    Ok(_) => format!("ok in {seconds:.1} s"),
                    Err(e) => format!("FAILED: {}", e.cause.lines().next().unwrap_or("")),
                });
                if result.is_err() && !a.keep_going {
                    stop.store(true, Ordering::SeqCst);
                }
                let (source_size, source_mtime_ns) = stamp_of(&src);
                let mut e = entry(src, out, result, seconds);
                (e.source_size, e.source_mtime_ns) = (source_size, source_mtime_ns);
                if a.skip_done && e.result == "ok" {
                    let one = BatchReport::of(vec![e.clone()], 1, seconds);
                    if let Err(err) = write_json_atomically(&report_for(&e.output), &one.to_json()) {
                        e.warnings.push(format!(
                            "cannot write {} (a later --skip-done converts this image again): {err}",
                            report_for(&e.output).display()
                        ));
                    }
                }
                let _ = tx.send((i, e));
            });
        }
    });
    drop(tx);
    for (i, e) in rx {
        done[i] = Some(e);
    }
    let cancelled = signals::cancelled();
    let images: Vec<Entry> = done
        .into_iter()
        .zip(&sources)
        .map(|(e, src)| {
            e.unwrap_or_else(|| Entry {
                source: src.clone(),
                output: output_for(src),
                result: "skipped".into(),
                exit_code: if cancelled { 130 } else { 1 },
                error: Some(
                    if cancelled {
                        "not started: interrupted"
                    } else {
                        "not started: an earlier image failed (use --keep-going)"
                    }
                    .into(),
                ),
                hint: None,
                seconds: 0.0,
                output_size: None,
                output_allocated: None,
                warnings: Vec::new(),
                conversion: None,
                source_size: None,
                source_mtime_ns: None,
            })
        })
        .collect();
    let mut report = BatchReport::of(images, n, started.elapsed().as_secs_f64());
    report.ignored = ignored;
    report.parallelism = gov
        .as_ref()
        .zip(start_level)
        .map(|(g, start)| Parallelism::of(&lock(g), start));
    crate::stdout::emit(&summary_text(&report))?;
    if let Some(path) = &a.json {
        convert::write_json(path, &report.to_json())?;
    }
    if report.ok {
        return Ok(());
    }
    if cancelled {
        return Err(CliError::cancelled());
    }
    let failed: Vec<&Entry> = report
        .images
        .iter()
        .filter(|e| e.result == "failed")
        .collect();
    let first = failed.first().map(|e| e.exit_code).unwrap_or(1);
    let class = if failed.iter().all(|e| e.exit_code == first) {
        class_of(first)
    } else {
        Class::Failure
    };
    Err(CliError::new(
        class,
        format!(
            "{} of {} images failed: {}",
            report.failed,
            report.images.len(),
            failed.iter().map(|e| e.source.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
        "see the errors in the summary above (and in the --json report); fix them and run the failed ones again",
    ))
}

/// The governor, also after a worker panicked holding it (its state is consistent
/// between calls).
fn lock(g: &Mutex<Governor>) -> std::sync::MutexGuard<'_, Governor> {
    g.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn class_of(code: i32) -> Class {
    match code {
        2 => Class::Usage,
        3 => Class::Input,
        4 => Class::Donor,
        5 => Class::Output,
        6 => Class::Verify,
        130 => Class::Cancelled,
        _ => Class::Failure,
    }
}

fn entry(source: PathBuf, output: PathBuf, r: Result<Converted, CliError>, seconds: f64) -> Entry {
    use std::os::unix::fs::MetadataExt;
    match r {
        Ok(c) => {
            let meta = std::fs::metadata(&output).ok();
            Entry {
                source,
                output,
                result: "ok".into(),
                exit_code: 0,
                error: None,
                hint: None,
                seconds,
                output_size: meta.as_ref().map(|m| m.len()),
                output_allocated: meta.as_ref().map(|m| m.blocks() * 512),
                warnings: c.warnings,
                conversion: Some(c.json),
                source_size: None,
                source_mtime_ns: None,
            }
        }
        Err(e) => Entry {
            source,
            output,
            result: if e.class == Class::Cancelled {
                "cancelled"
            } else {
                "failed"
            }
            .into(),
            exit_code: e.class.code(),
            error: Some(e.cause),
            hint: Some(e.hint),
            seconds,
            output_size: None,
            output_allocated: None,
            warnings: Vec::new(),
            conversion: None,
            source_size: None,
            source_mtime_ns: None,
        },
    }
}

fn summary_text(r: &BatchReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let name_w = r
        .images
        .iter()
        .map(|e| e.source.display().to_string().len())
        .max()
        .unwrap_or(5)
        .clamp(5, 60);
    let _ = writeln!(
        o,
        "{:<name_w$}  {:<9}  {:>8}  {:>10}  {:>8}",
        "IMAGE", "RESULT", "SECONDS", "SIZE", "WARNINGS"
    );
    for e in &r.images {
        let _ = writeln!(
            o,
            "{:<name_w$}  {:<9}  {:>8.1}  {:>10}  {:>8}",
            e.source.display(),
            e.result,
            e.seconds,
            e.output_size.map_or_else(|| "-".into(), human),
            e.warnings.len()
        );
    }
    for e in r.images.iter().filter(|e| !e.succeeded()) {
        if let Some(err) = &e.error {
            let _ = writeln!(
                o,
                "{}: {}",
                e.source.display(),
                err.lines().next().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        o,
        "{} ok, {} failed, {} skipped in {:.1} s",
        r.succeeded, r.failed, r.skipped, r.seconds
    );
    o
}

/// `imgconv report merge A.json B.json … -o all.json`: one batch report with every image
/// of the inputs, sorted by source path. A source found in two inputs is refused (shards
/// are disjoint; two runs over the same source are not one batch).
pub fn merge(a: &MergeArgs) -> Result<(), CliError> {
    let mut images: Vec<(Entry, &Path)> = Vec::new();
    let (mut jobs, mut seconds) = (0, 0.0f64);
    for path in &a.reports {
        let bad = |why: String| {
            CliError::new(
                Class::Input,
                format!("{}: {why}", path.display()),
                "give batch reports written by `imgconv batch --json FILE`",
            )
        };
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value["schema"] != crate::schema::BATCH {
            return Err(bad(format!(
                "not a batch report (schema {}, expected {})",
                value["schema"],
                crate::schema::BATCH
            )));
        }
        let report: BatchReport = serde_json::from_value(value)
            .map_err(|e| bad(format!("malformed batch report: {e}")))?;
        jobs = jobs.max(report.jobs);
        seconds = seconds.max(report.seconds);
        for e in report.images {
            if let Some((_, first)) = images.iter().find(|(x, _)| x.source == e.source) {
                return Err(CliError::new(
                    Class::Usage,
                    format!(
                        "{} is in both {} and {}",
                        e.source.display(),
                        first.display(),
                        path.display()
                    ),
                    "merge the reports of disjoint shards (batch --shard K/N) only",
                ));
            }
            images.push((e, path));
        }
    }
    let mut images: Vec<Entry> = images.into_iter().map(|(e, _)| e).collect();
    images.sort_by(|x, y| x.source.cmp(&y.source));
    let report = BatchReport::of(images, jobs, seconds);
    convert::write_json(&a.output, &report.to_json())?;
    crate::stdout::emit(&format!(
        "{}: {} images ({} ok, {} failed, {} skipped)\n",
        a.output.display(),
        report.images.len(),
        report.succeeded,
        report.failed,
        report.skipped
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_jobs, FormatArg};

    #[test]
    fn jobs_are_a_number_from_1_to_64_or_auto() {
        assert_eq!(parse_jobs("auto"), Ok(Jobs::Auto));
        assert_eq!(parse_jobs("AUTO"), Ok(Jobs::Auto));
        assert_eq!(parse_jobs("3"), Ok(Jobs::Count(3)));
        assert_eq!(parse_jobs("64"), Ok(Jobs::Count(64)));
        for bad in ["0", "65", "-1", "two", ""] {
            assert!(parse_jobs(bad).is_err(), "{bad:?}");
        }
    }

    /// `lsblk`'s rotational flag (ROTA) of the disk holding `path`, as an outside judge;
    /// `None` when the path is not on a block device lsblk knows.
    fn lsblk_rota(path: &Path) -> Option<bool> {
        let run = |cmd: &str, args: &[&str]| {
            let o = std::process::Command::new(cmd).args(args).output().ok()?;
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let source = run("findmnt", &["-no", "SOURCE", "-T", path.to_str()?])?;
        let rota = run("lsblk", &["-dno", "ROTA", &source])?;
        match rota.lines().next()?.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    #[test]
    fn auto_jobs_follow_the_cores_and_the_storage() {
        let dir = tempfile::tempdir().unwrap();
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        let a = auto_jobs(dir.path(), &[]);
        assert_eq!(a.cores, cores);
        assert!(
            a.jobs >= 1 && a.jobs <= cores && a.jobs <= AUTO_MAX,
            "{a:?}"
        );
        match &a.rotational {
            Some(p) => {
                assert_eq!(p, dir.path());
                assert_eq!(a.jobs, cores.min(AUTO_MAX_ROTATIONAL), "{a:?}");
            }
            None => assert_eq!(a.jobs, cores.min(AUTO_MAX), "{a:?}"),
        }
        if let Some(rota) = lsblk_rota(dir.path()) {
            assert_eq!(
                a.rotational.is_some(),
                rota,
                "lsblk says ROTA={rota}: {a:?}"
            );
        }
        // A source that does not exist says nothing about the storage.
        let b = auto_jobs(dir.path(), &[dir.path().join("missing.img")]);
        assert_eq!(a, b);
    }

    fn names(sources: &[&str]) -> Vec<String> {
        let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
        output_names(Path::new("/out"), &sources, FormatArg::Raw)
            .into_iter()
            .map(|p| p.strip_prefix("/out").unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn same_stems_are_named_after_their_directory_then_counted() {
        assert_eq!(
            names(&["/x/web1.img", "/y/db.qcow2"]),
            ["web1.raw", "db.raw"]
        );
        assert_eq!(
            names(&["/a/disk.img", "/b/disk.img", "/b/web1.img"]),
            ["a-disk.raw", "b-disk.raw", "web1.raw"]
        );
        // Same directory name too: a plain name keeps its name, the derived ones are
        // counted in path order, whatever the order given.
        assert_eq!(
            names(&["/y/a/disk.img", "/x/a/disk.img", "/z/a-disk.img"]),
            ["a-disk-3.raw", "a-disk-2.raw", "a-disk.raw"]
        );
        assert_eq!(
            names(&[
                "/z/a-disk.img",
                "/x/a/disk.img",
                "/y/a/disk.img",
                "/w/a-disk-2.img"
            ]),
            ["a-disk.raw", "a-disk-3.raw", "a-disk-4.raw", "a-disk-2.raw"]
        );
        // One file per stem keeps the plain name.
        assert_eq!(names(&["disk.img"]), ["disk.raw"]);
    }
}
