//! The library's [`Progress`] drawn for people: indicatif bars on a terminal, plain
//! throttled lines when stderr is a pipe or a file, nothing with `--quiet`.
//!
//! One conversion shows one line per stage in a `MultiProgress` (bytes, rate and ETA while
//! streaming, files while grafting): the stream runs beside the graft, fixups and boot
//! stages, so its line and theirs advance together, and each line finishes with the
//! stage's duration as the library measured it. A batch shows one line per image,
//! restyled as the image moves through its stages. Cancellation is the global Ctrl-C
//! flag.

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
    /// One line per stage start/end and at most one progress line a second per stage.
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
            Stage::Stream | Stage::Volumes => Unit::Bytes,
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

/// A running stage (or CLI step) and its line.
struct Line {
    name: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    /// Its bar (one conversion on a terminal).
    bar: Option<ProgressBar>,
    /// The parts running at once within it (each carried volume): name, done, total.
    parts: Vec<(String, u64, Option<u64>)>,
}

impl Line {
    /// The parts in one line: `p3 12.0 MiB/64.0 MiB, xvdb1 done`.
    fn parts_text(&self) -> String {
        self.parts
            .iter()
            .map(|(name, done, total)| match total {
                Some(t) if done >= t => format!("{name} done"),
                Some(t) => format!(
                    "{name} {}/{}",
                    self.unit.amount(*done),
                    self.unit.amount(*t)
                ),
                None => format!("{name} {}", self.unit.amount(*done)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A [`Progress`] for the terminal. Cheap to create; one per conversion.
pub struct CliProgress {
    mode: Mode,
    /// Image name shown before each line in a batch.
    label: Option<String>,
    cancel: Arc<AtomicBool>,
    /// Where the bars are drawn: the batch's shared area, or this conversion's own.
    multi: Option<MultiProgress>,
    /// The image's one line in a batch.
    batch_bar: Option<ProgressBar>,
    /// Running stages in the order they began; the last one gets `advance`.
    running: Vec<Line>,
    /// Notes received (warnings, decisions), in order.
    pub notes: Vec<String>,
    /// Seconds each stage took, in the order they ended.
    pub timings: Vec<(String, f64)>,
}

/// Names a step whose start waits for a signal; see `CliProgress::hold_for_test`.
const HOLD_STAGE_ENV: &str = "IMGCONV_TEST_HOLD_STAGE";

/// Plain lines are printed at most this often while a stage advances.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a step keeps running when the next one begins: the library's stream runs
/// beside the stages after it, the carried volumes beside the stream, and each ends with
/// its `stage_done` (see [`Progress::stage`]).
fn runs_beside(name: &str) -> bool {
    name == Stage::Stream.name() || name == Stage::Volumes.name()
}

impl CliProgress {
    /// Progress for one conversion (or one CLI step sequence such as verify).
    pub fn single(mode: Mode, cancel: Arc<AtomicBool>) -> Self {
        CliProgress {
            mode,
            label: None,
            cancel,
            multi: (mode == Mode::Bars).then(|| CliProgress::multi(mode)),
            batch_bar: None,
            running: Vec::new(),
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
            batch_bar: bar,
            running: Vec::new(),
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
        match (self.mode, &self.multi) {
            (Mode::Quiet, _) => {}
            (Mode::Bars, Some(m)) => {
                let _ = m.println(format!("{}{line}", self.prefix()));
            }
            _ => eprintln!("{}{line}", self.prefix()),
        }
    }

    /// Begin a step that is not a library stage (e.g. "fsck-pre", "boot-test"). The step
    /// begun before it ends here, unless it runs beside (the stream).
    pub fn step(&mut self, name: &str, unit: Unit, total: Option<u64>) {
        if let Some(i) = self.running.iter().position(|l| l.name == name) {
            // The same stage again (the grow stage replays, then grows): one line.
            self.end_line(i, None);
        }
        if let Some(last) = self.running.last() {
            if !runs_beside(&last.name) {
                self.end_line(self.running.len() - 1, None);
            }
        }
        let now = Instant::now();
        let mut line = Line {
            name: name.to_string(),
            unit,
            total,
            done: 0,
            started: now,
            last_line: now,
            bar: None,
            parts: Vec::new(),
        };
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                let size = total.map_or_else(String::new, |t| format!(" ({})", unit.amount(t)));
                eprintln!("{}stage {name}: started{size}", self.prefix());
            }
            Mode::Bars => {
                if let Some(bar) = &self.batch_bar {
                    // Batch: restyle the image's one line.
                    bar.set_style(match total {
                        Some(_) => bar_style(unit, true),
                        None => spinner_style(true),
                    });
                    bar.set_length(total.unwrap_or(0));
                    bar.set_position(0);
                    bar.reset_eta();
                    bar.set_message(name.to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                } else if let Some(multi) = &self.multi {
                    let bar = match total {
                        Some(t) => ProgressBar::new(t).with_style(bar_style(unit, false)),
                        None => ProgressBar::new_spinner().with_style(spinner_style(false)),
                    };
                    let bar = multi.add(bar);
                    bar.set_prefix(name.to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    line.bar = Some(bar);
                }
            }
        }
        self.running.push(line);
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

    /// Record and show how far the step begun last got.
    pub fn set_done(&mut self, done: u64) {
        if let Some(i) = self.running.len().checked_sub(1) {
            self.advance_line(i, done, true);
        }
    }

    /// Show how far running line `i` got; `foreground` when it is the step begun last
    /// (a batch's one line shows only that one).
    fn advance_line(&mut self, i: usize, done: u64, foreground: bool) {
        let prefix = self.prefix();
        let line = &mut self.running[i];
        line.done = done;
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                if let Some(bar) = &line.bar {
                    bar.set_position(done);
                } else if let (Some(bar), true) = (&self.batch_bar, foreground) {
                    bar.set_position(done);
                }
            }
            Mode::Plain => {
                if line.last_line.elapsed() >= PLAIN_INTERVAL {
                    line.last_line = Instant::now();
                    let parts = match line.parts_text() {
                        t if t.is_empty() => t,
                        t => format!(" ({t})"),
                    };
                    let text = match line.total {
                        Some(t) if t > 0 => format!(
                            "stage {}: {}% ({}/{})",
                            line.name,
                            (done.min(t) * 100) / t,
                            line.unit.amount(done),
                            line.unit.amount(t)
                        ),
                        _ => format!("stage {}: {}", line.name, line.unit.amount(done)),
                    };
                    eprintln!("{prefix}{text}{parts}");
                }
            }
        }
    }

    /// End running line `i`: record its time (`seconds` as the library measured it, or
    /// the time since it began), leave its bar finished on screen.
    fn end_line(&mut self, i: usize, seconds: Option<f64>) {
        let line = self.running.remove(i);
        let secs = seconds.unwrap_or_else(|| line.started.elapsed().as_secs_f64());
        self.timings.push((line.name.clone(), secs));
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{}stage {}: done in {secs:.1} s", self.prefix(), line.name),
            Mode::Bars => {
                if let Some(bar) = line.bar {
                    match line.total {
                        Some(total) => bar.set_position(total),
                        None => bar.set_style(done_style()),
                    }
                    bar.finish_with_message(format!("done in {secs:.1} s"));
                }
            }
        }
    }

    /// Stop every running line of a run that failed or was cancelled: they did not finish,
    /// so no time is recorded and none is shown as done.
    fn stop_running(&mut self) {
        for line in std::mem::take(&mut self.running) {
            let secs = line.started.elapsed().as_secs_f64();
            match self.mode {
                Mode::Quiet => {}
                Mode::Plain => eprintln!(
                    "{}stage {}: stopped after {secs:.1} s",
                    self.prefix(),
                    line.name
                ),
                Mode::Bars => {
                    if let Some(bar) = line.bar {
                        bar.abandon_with_message(format!("stopped after {secs:.1} s"));
                    }
                }
            }
        }
    }

    /// End the whole run with a result message (`ok`, `failed: …`); `ok` tells whether it
    /// succeeded. Every step still running ends here: done when the run succeeded,
    /// stopped when it did not.
    pub fn finish(&mut self, ok: bool, result: &str) {
        if ok {
            while !self.running.is_empty() {
                self.end_line(self.running.len() - 1, None);
            }
        } else {
            self.stop_running();
        }
        if let Some(bar) = self.batch_bar.take() {
            bar.set_style(
                ProgressStyle::with_template("{prefix:<24.bold} {msg}").expect("static template"),
            );
            bar.finish_with_message(result.to_string());
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

    fn advance_beside(&mut self, stage: Stage, done: u64) {
        if let Some(i) = self.running.iter().position(|l| l.name == stage.name()) {
            let foreground = i + 1 == self.running.len();
            self.advance_line(i, done, foreground);
        }
    }

    fn advance_part(&mut self, stage: Stage, part: &str, done: u64, total: Option<u64>) {
        let Some(line) = self.running.iter_mut().find(|l| l.name == stage.name()) else {
            return;
        };
        match line.parts.iter_mut().find(|p| p.0 == part) {
            Some(p) => (p.1, p.2) = (done, total),
            None => line.parts.push((part.to_string(), done, total)),
        }
        if let Some(bar) = &line.bar {
            bar.set_message(line.parts_text());
        }
    }

    fn stage_done(&mut self, stage: Stage, seconds: f64) {
        if let Some(i) = self.running.iter().position(|l| l.name == stage.name()) {
            self.end_line(i, Some(seconds));
        }
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
        for line in self.running.drain(..) {
            if let Some(bar) = line.bar {
                bar.abandon();
            }
        }
        if let Some(bar) = self.batch_bar.take() {
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

/// A finished step without a counter: its name and time.
fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>8.bold}   {msg}").expect("static template")
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
        p.finish(true, "ok");
        let names: Vec<_> = p.timings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["inspect", "stream"]);
        assert_eq!(p.notes, ["grew partition 1"]);
        assert!(!p.is_cancelled());
        flag.store(true, Ordering::SeqCst);
        assert!(p.is_cancelled());
        // The stream runs beside the stages after it and ends with the library's time.
        let mut p = CliProgress::single(Mode::Quiet, Arc::new(AtomicBool::new(false)));
        p.stage(Stage::Stream, Some(100));
        p.stage(Stage::Graft, Some(10));
        p.advance(5);
        p.advance_beside(Stage::Stream, 60);
        assert_eq!(
            p.running.iter().map(|l| l.done).collect::<Vec<_>>(),
            [60, 5]
        );
        p.stage_done(Stage::Graft, 0.25);
        p.stage(Stage::Fixups, None);
        p.stage_done(Stage::Stream, 7.5);
        p.stage_done(Stage::Fixups, 0.5);
        p.finish(true, "ok");
        assert_eq!(
            p.timings,
            [
                ("graft".to_string(), 0.25),
                ("stream".to_string(), 7.5),
                ("fixups".to_string(), 0.5)
            ]
        );
    }

    #[test]
    fn volumes_run_beside_the_stream_with_one_entry_per_volume() {
        let mut p = CliProgress::single(Mode::Quiet, Arc::new(AtomicBool::new(false)));
        p.stage(Stage::Volumes, None);
        p.stage(Stage::Stream, Some(100));
        p.advance_part(Stage::Volumes, "p3", 10, Some(40));
        p.advance_part(Stage::Volumes, "xvdb1", 5, None);
        p.advance_part(Stage::Volumes, "p3", 40, Some(40));
        p.advance_beside(Stage::Volumes, 45);
        p.advance(30);
        let names: Vec<&str> = p.running.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["volumes", "stream"],
            "the volumes line keeps running"
        );
        assert_eq!(p.running[0].parts_text(), "p3 done, xvdb1 5 B");
        assert_eq!(p.running[0].done, 45);
        assert_eq!(p.running[1].done, 30);
        p.stage_done(Stage::Volumes, 1.5);
        p.finish(true, "ok");
        assert_eq!(p.timings[0], ("volumes".to_string(), 1.5));
    }
}
