//! `imgconv batch`: many conversions on a pool of N worker threads, one progress line
//! per image, a summary table and a JSON report.
//!
//! Outputs are named `<out-dir>/<stem>.raw` (`.qcow2` with `--format qcow2`; the source's file name without its last
//! extension). Without `--keep-going`, no new conversion starts after the first failure;
//! those already running finish. The exit status is 0 only if every image converted.

use crate::cli::BatchArgs;
use crate::convert::{self, Converted};
use crate::errors::{Class, CliError};
use crate::progress::{CliProgress, Mode};
use crate::signals;
use crate::size::human;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

/// The result of one image of a batch (one JSON entry, one summary row).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub source: PathBuf,
    pub output: PathBuf,
    /// "ok", "failed", "cancelled" or "skipped" (not started after a failure).
    pub result: &'static str,
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
}

/// The whole batch, as written by `--json FILE`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchReport {
    pub ok: bool,
    pub jobs: u32,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub images: Vec<Entry>,
}

/// The output path for a source.
pub fn output_for(out_dir: &Path, source: &Path, format: crate::cli::FormatArg) -> PathBuf {
    let stem = source
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let ext = match format {
        crate::cli::FormatArg::Raw => "raw",
        crate::cli::FormatArg::Qcow2 => "qcow2",
    };
    out_dir.join(format!("{stem}.{ext}"))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        CliError::new(
            Class::Input,
            format!("cannot list {}: {e}", dir.display()),
            "give a directory of images with --dir",
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::new(
            Class::Input,
            format!("no image files in {}", dir.display()),
            "put the Xen images there, or list them on the command line",
        ));
    }
    Ok(files)
}

/// `imgconv batch`.
pub fn run(a: &BatchArgs) -> Result<(), CliError> {
    let sources = match &a.dir {
        Some(d) => list_dir(d)?,
        None => a.sources.clone(),
    };
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
    let mut seen = HashSet::new();
    let mut jobs = VecDeque::new();
    let mut refused: Vec<CliError> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let out = output_for(&a.out_dir, src, a.settings.format);
        if !seen.insert(out.clone()) {
            return Err(CliError::new(
                Class::Usage,
                format!("two sources would both be written to {}", out.display()),
                "outputs are named <out-dir>/<stem>.raw: rename one source or convert it separately",
            ));
        }
        let o = convert::options(src, &out, &a.settings);
        // Output problems (an existing output without --force, output == input) stop the
        // whole batch; a bad source or donor is that image's failure, reported in turn.
        if let Err(e) = convert::preflight(&o) {
            if matches!(e.class, Class::Output | Class::Usage) {
                refused.push(e);
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
    let queue = Mutex::new(jobs);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Entry)>();
    let started = Instant::now();
    let n = a.jobs.min(sources.len() as u32).max(1);
    std::thread::scope(|scope| {
        for _ in 0..n {
            let tx = tx.clone();
            let (queue, stop, multi) = (&queue, &stop, &multi);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) || signals::cancelled() {
                    return;
                }
                let Some((i, src, out, o)) = queue.lock().ok().and_then(|mut q| q.pop_front())
                else {
                    return;
                };
                let label = src.file_name().map_or_else(
                    || src.display().to_string(),
                    |f| f.to_string_lossy().into_owned(),
                );
                let mut p = CliProgress::in_batch(mode, multi, &label, signals::cancel_flag());
                let t0 = Instant::now();
                let result = convert::convert_one(&o, &a.settings, &mut p);
                let seconds = t0.elapsed().as_secs_f64();
                p.finish(&match &result {
                    Ok(_) => format!("ok in {seconds:.1} s"),
                    Err(e) => format!("FAILED: {}", e.cause.lines().next().unwrap_or("")),
                });
                if result.is_err() && !a.keep_going {
                    stop.store(true, Ordering::SeqCst);
                }
                let _ = tx.send((i, entry(src, out, result, seconds)));
            });
        }
    });
    drop(tx);
    let mut done: Vec<Option<Entry>> = vec![None; sources.len()];
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
                output: output_for(&a.out_dir, src, a.settings.format),
                result: "skipped",
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
            })
        })
        .collect();
    let report = BatchReport {
        ok: images.iter().all(|e| e.result == "ok"),
        jobs: n,
        succeeded: images.iter().filter(|e| e.result == "ok").count(),
        failed: images
            .iter()
            .filter(|e| e.result == "failed" || e.result == "cancelled")
            .count(),
        skipped: images.iter().filter(|e| e.result == "skipped").count(),
        seconds: started.elapsed().as_secs_f64(),
        images,
    };
    print_summary(&report);
    if let Some(path) = &a.json {
        convert::write_json(
            path,
            &serde_json::to_value(&report).expect("batch report serializes"),
        )?;
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
                result: "ok",
                exit_code: 0,
                error: None,
                hint: None,
                seconds,
                output_size: meta.as_ref().map(|m| m.len()),
                output_allocated: meta.as_ref().map(|m| m.blocks() * 512),
                warnings: c.warnings,
                conversion: Some(c.json),
            }
        }
        Err(e) => Entry {
            source,
            output,
            result: if e.class == Class::Cancelled {
                "cancelled"
            } else {
                "failed"
            },
            exit_code: e.class.code(),
            error: Some(e.cause),
            hint: Some(e.hint),
            seconds,
            output_size: None,
            output_allocated: None,
            warnings: Vec::new(),
            conversion: None,
        },
    }
}

fn print_summary(r: &BatchReport) {
    let name_w = r
        .images
        .iter()
        .map(|e| e.source.display().to_string().len())
        .max()
        .unwrap_or(5)
        .clamp(5, 60);
    println!(
        "{:<name_w$}  {:<9}  {:>8}  {:>10}  {:>8}",
        "IMAGE", "RESULT", "SECONDS", "SIZE", "WARNINGS"
    );
    for e in &r.images {
        println!(
            "{:<name_w$}  {:<9}  {:>8.1}  {:>10}  {:>8}",
            e.source.display(),
            e.result,
            e.seconds,
            e.output_size.map_or_else(|| "-".into(), human),
            e.warnings.len()
        );
    }
    for e in r.images.iter().filter(|e| e.result != "ok") {
        if let Some(err) = &e.error {
            println!(
                "{}: {}",
                e.source.display(),
                err.lines().next().unwrap_or("")
            );
        }
    }
    println!(
        "{} ok, {} failed, {} skipped in {:.1} s",
        r.succeeded, r.failed, r.skipped, r.seconds
    );
}
