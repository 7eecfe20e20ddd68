//! The library's [`Progress`] drawn for people: indicatif bars on a terminal, plain
//! throttled lines when stderr is a pipe or a file, nothing with `--quiet`.
//!
//! One conversion shows one bar per stage (bytes, rate and ETA while streaming, files
//! while grafting); a batch shows one line per image in a `MultiProgress`, restyled as the
//! image moves through its stages. Cancellation is the global Ctrl-C flag.

use crate::size::human;
use imgconv_core::{Progress, Stage};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif bars (stderr is a terminal).
    Bars,
    /// One line per stage start/end and at most one progress line a second.
    Plain,
    /// Nothing but errors and the final result.
    Quiet,
}

impl Mode {
    /// Bars on a terminal (unless TERM=dumb), plain lines otherwise, nothing if quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
        {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

/// What a stage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Files,
    Items,
}

impl Unit {
    fn of(stage: Stage) -> Unit {
        match stage {
            Stage::Stream => Unit::Bytes,
            Stage::Graft => Unit::Files,
            _ => Unit::Items,
        }
    }

    fn amount(self, n: u64) -> String {
        match self {
            Unit::Bytes => human(n),
            Unit::Files => format!("{n} files"),
            Unit::Items => n.to_string(),
        }
    }
}

struct Current {
    name: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

/// A [`Progress`] for the terminal. Cheap to create; one per conversion.
pub struct CliProgress {
    mode: Mode,
    /// Image name shown before each line in a batch.
    label: Option<String>,
    cancel: Arc<AtomicBool>,
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    current: Option<Current>,
    /// Notes received (warnings, decisions), in order.
    pub notes: Vec<String>,
    /// Seconds each stage took, in order.
    pub timings: Vec<(String, f64)>,
}

/// Names a step whose start waits for a signal; see `CliProgress::hold_for_test`.
const HOLD_STAGE_ENV: &str = "IMGCONV_TEST_HOLD_STAGE";

/// Plain lines are printed at most this often while a stage advances.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

impl CliProgress {
    /// Progress for one conversion (or one CLI step sequence such as verify).
    pub fn single(mode: Mode, cancel: Arc<AtomicBool>) -> Self {
        CliProgress {
            mode,
            label: None,
            cancel,
            multi: None,
            bar: None,
            current: None,
            notes: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// Progress for one image of a batch: one line in `multi`, labelled.
    pub fn in_batch(
        mode: Mode,
        multi: &MultiProgress,
        label: &str,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let bar = (mode == Mode::Bars).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style(true));
            bar.set_prefix(label.to_string());
            bar.set_message("waiting");
            bar
        });
        CliProgress {
            mode,
            label: Some(label.to_string()),
            cancel,
            multi: Some(multi.clone()),
            bar,
            current: None,
            notes: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// A multi-progress area on stderr (hidden unless drawing bars).
    pub fn multi(mode: Mode) -> MultiProgress {
        if mode == Mode::Bars {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        }
    }

    fn prefix(&self) -> String {
        self.label
            .as_deref()
            .map_or_else(String::new, |l| format!("{l}: "))
    }

    /// Print a line without tearing the bars (dropped in quiet mode).
    pub fn println(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{}{line}", self.prefix()),
            Mode::Bars => match (&self.multi, &self.bar) {
                (Some(m), _) => {
                    let _ = m.println(format!("{}{line}", self.prefix()));
                }
                (None, Some(b)) => b.println(line),
                (None, None) => eprintln!("{line}"),
            },
        }
    }

    /// Begin a step that is not a library stage (e.g. "fsck-pre", "boot-test").
    pub fn step(&mut self, name: &str, unit: Unit, total: Option<u64>) {
        self.end_current();
        let now = Instant::now();
        self.current = Some(Current {
            name: name.to_string(),
            unit,
            total,
            done: 0,
            started: now,
            last_line: now,
        });
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                let size = total.map_or_else(String::new, |t| format!(" ({})", unit.amount(t)));
                eprintln!("{}stage {name}: started{size}", self.prefix());
            }
            Mode::Bars => {
                if self.multi.is_some() {
                    // Batch: restyle the image's one line.
                    if let Some(bar) = &self.bar {
                        bar.set_style(match total {
                            Some(_) => bar_style(unit, true),
                            None => spinner_style(true),
                        });
                        bar.set_length(total.unwrap_or(0));
                        bar.set_position(0);
                        bar.reset_eta();
                        bar.set_message(name.to_string());
                        bar.enable_steady_tick(Duration::from_millis(200));
                    }
                } else {
                    let bar = match total {
                        Some(t) => {
                            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr())
                                .with_style(bar_style(unit, false))
                        }
                        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                            .with_style(spinner_style(false)),
                    };
                    bar.set_prefix(name.to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    self.bar = Some(bar);
                }
            }
        }
        self.hold_for_test(name);
    }

    /// Test hook: when `IMGCONV_TEST_HOLD_STAGE` names this step, its start
    /// waits (at most a minute) for Ctrl-C or SIGTERM, so that the tests can interrupt
    /// every stage at a known point. Unset in normal use.
    fn hold_for_test(&self, name: &str) {
        if std::env::var_os(HOLD_STAGE_ENV).is_some_and(|s| s == name) {
            let t0 = Instant::now();
            while !self.cancel.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Record and show how far the current step got.
    pub fn set_done(&mut self, done: u64) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        cur.done = done;
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                }
            }
            Mode::Plain => {
                if cur.last_line.elapsed() >= PLAIN_INTERVAL {
                    cur.last_line = Instant::now();
                    let line = match cur.total {
                        Some(t) if t > 0 => format!(
                            "stage {}: {}% ({}/{})",
                            cur.name,
                            (done.min(t) * 100) / t,
                            cur.unit.amount(done),
                            cur.unit.amount(t)
                        ),
                        _ => format!("stage {}: {}", cur.name, cur.unit.amount(done)),
                    };
                    eprintln!("{}{line}", self.prefix());
                }
            }
        }
    }

    /// Close the current step: record its time, leave its bar finished on screen.
    pub fn end_current(&mut self) {
        let Some(cur) = self.current.take() else {
            return;
        };
        let secs = cur.started.elapsed().as_secs_f64();
        self.timings.push((cur.name.clone(), secs));
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{}stage {}: done in {secs:.1} s", self.prefix(), cur.name),
            Mode::Bars => {
                if self.multi.is_none() {
                    if let Some(bar) = self.bar.take() {
                        bar.finish_with_message(format!("done in {secs:.1} s"));
                    }
                }
            }
        }
    }

    /// End the whole run with a result message (`ok`, `failed: …`).
    pub fn finish(&mut self, result: &str) {
        self.end_current();
        if let Some(bar) = self.bar.take() {
            if self.multi.is_some() {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<24.bold} {msg}")
                        .expect("static template"),
                );
                bar.finish_with_message(result.to_string());
            } else {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for CliProgress {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        self.step(stage.name(), Unit::of(stage), total);
    }

    fn advance(&mut self, done: u64) {
        self.set_done(done);
    }

    fn note(&mut self, message: &str) {
        self.notes.push(message.to_string());
        self.println(&format!("note: {message}"));
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn bar_style(unit: Unit, batch: bool) -> ProgressStyle {
    let counter = match unit {
        Unit::Bytes => "{binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        Unit::Files => "{pos}/{len} files ETA {eta}",
        Unit::Items => "{pos}/{len}",
    };
    let head = if batch {
        "{prefix:<24.bold} {msg:<8} [{bar:30.cyan/blue}] "
    } else {
        "{prefix:>8.bold} [{bar:40.cyan/blue}] "
    };
    let tail = if batch { "" } else { " {msg}" };
    ProgressStyle::with_template(&format!("{head}{counter}{tail}"))
        .expect("static template")
        .progress_chars("=>-")
}

fn spinner_style(batch: bool) -> ProgressStyle {
    let t = if batch {
        "{prefix:<24.bold} {spinner} {msg} {elapsed}"
    } else {
        "{prefix:>8.bold} {spinner} {msg} {elapsed}"
    };
    ProgressStyle::with_template(t).expect("static template")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stage_timings_and_notes_and_reports_cancel() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut p = CliProgress::single(Mode::Quiet, flag.clone());
        p.stage(Stage::Inspect, None);
        p.stage(Stage::Stream, Some(100));
        p.advance(50);
        p.note("grew partition 1");
        p.finish("ok");
        let names: Vec<_> = p.timings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["inspect", "stream"]);
        assert_eq!(p.notes, ["grew partition 1"]);
        assert!(!p.is_cancelled());
        flag.store(true, Ordering::SeqCst);
        assert!(p.is_cancelled());
    }
}
