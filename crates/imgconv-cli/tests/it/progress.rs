//! Live progress of a conversion whose stream runs beside the graft, fixups and boot
//! stages (a 640 MiB stream, `support::large_guest`): under a pseudo-terminal (`script`
//! from util-linux) indicatif draws one line per running stage, the stream's and the
//! graft's at once; on a pipe the plain lines come live (the graft starts before the
//! stream ends), at most one progress line per stage per second, and each stage's "done
//! in" is the time in the JSON report.

use crate::common;
use crate::support;

use common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The lines of `text`: indicatif separates them with newlines, carriage returns and
/// cursor moves (`ESC [ n B`) or line erasures (`ESC [ 2 K`); other escape sequences
/// (colours) are dropped.
fn visible_lines(text: &str) -> Vec<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    if c == 'B' || c == 'K' {
                        out.push('\n');
                    }
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.split(['\n', '\r'])
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The frames indicatif drew, each as its visible lines: it moves the cursor up
/// (`ESC [ n A`) before each redraw of its lines.
fn frames(screen: &str) -> Vec<Vec<String>> {
    let b = screen.as_bytes();
    let mut chunks = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i + 2 < b.len() {
        if b[i] == 0x1b && b[i + 1] == b'[' {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 2 && j < b.len() && b[j] == b'A' {
                chunks.push(&screen[start..i]);
                start = j + 1;
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    chunks.push(&screen[start..]);
    chunks.into_iter().map(visible_lines).collect()
}

fn donor() -> std::path::PathBuf {
    support::synthetic().join("donor-dir")
}

#[test]
fn a_terminal_shows_one_line_per_running_stage_with_stream_and_graft_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = support::large_guest(dir.path());
    let out = dir.path().join("out.raw");
    let cmdline = format!(
        "{} convert {} --donor {} -o {}",
        bin().display(),
        src.display(),
        donor().display(),
        out.display()
    );
    let tty = Command::new("script")
        .args(["-qfec", &cmdline, "/dev/null"])
        .env("TERM", "xterm")
        .env("IMGCONV_COPY_FILE_RANGE", "never")
        .env_remove("NO_COLOR")
        .output()
        .expect("script (util-linux) is installed");
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{screen}");
    assert!(out.exists());
    // indicatif pads each line to the terminal's width (no separator between them), so
    // each frame is read as one text.
    let frames: Vec<String> = frames(&screen).into_iter().map(|f| f.join(" ")).collect();
    // A frame with the stream still copying (its bar not done) and the graft's line
    // drawn under it.
    let both = frames
        .iter()
        .any(|f| match (f.find("stream ["), f.find("graft [")) {
            (Some(s), Some(g)) => s < g && !f[s..g].contains("done in"),
            _ => false,
        });
    assert!(
        both,
        "no frame shows the stream and the graft at once:\n{:#?}",
        frames.iter().rev().take(8).collect::<Vec<_>>()
    );
    // Every stage's line ends finished with its time.
    let all = visible_lines(&screen).join(" ");
    for stage in ["inspect", "stream", "graft", "fixups", "boot"] {
        assert!(finished(&all, stage), "{stage} not finished: {all}");
    }
}

/// Whether some line of `stage` in `text` says "done in" (before another stage's name).
fn finished(text: &str, stage: &str) -> bool {
    const STAGES: [&str; 8] = [
        "inspect", "donor", "plan", "stream", "graft", "fixups", "boot", "finish",
    ];
    text.match_indices(stage).any(|(i, _)| {
        let rest = &text[i + stage.len()..];
        rest.find("done in")
            .is_some_and(|d| !STAGES.iter().any(|s| rest[..d].contains(s)))
    })
}

/// `stage NAME: …` lines of a plain-mode run, with the time each arrived.
fn plain_lines(cmd: &mut Command) -> (Vec<(Duration, String)>, bool) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        lines.push((t0.elapsed(), line.unwrap()));
    }
    let ok = child.wait().unwrap().success();
    (lines, ok)
}

#[test]
fn a_pipe_gets_live_plain_lines_at_most_one_a_second_per_stage_and_the_real_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = support::large_guest(dir.path());
    let out = dir.path().join("out.raw");
    let json = dir.path().join("out.json");
    let (lines, ok) = plain_lines(
        Command::new(bin())
            .arg("convert")
            .arg(&src)
            .arg("--donor")
            .arg(donor())
            .arg("-o")
            .arg(&out)
            .arg("--json")
            .arg(&json)
            .env("IMGCONV_COPY_FILE_RANGE", "never"),
    );
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(ok, "{text:#?}");
    assert!(
        text.iter()
            .all(|l| !l.contains('\r') && !l.contains('\x1b')),
        "plain lines only: {text:#?}"
    );
    let at = |needle: &str| {
        text.iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text:#?}"))
    };
    // Live: the graft starts while the stream is still being shown.
    assert!(
        at("stage graft: started") < at("stage stream: done in"),
        "{text:#?}"
    );

    // Each stage's "done in" is the library's measured time, as in the JSON report.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for t in report["timings"].as_array().unwrap() {
        let stage = t["stage"].as_str().unwrap();
        if stage == "grow" {
            continue;
        }
        let shown = format!(
            "stage {stage}: done in {:.1} s",
            t["seconds"].as_f64().unwrap()
        );
        assert!(text.contains(&shown.as_str()), "{shown:?} not in {text:#?}");
    }

    // At most one progress line a second per stage, between its start and end lines.
    for stage in ["stream", "graft", "fixups", "boot"] {
        let prefix = format!("stage {stage}: ");
        let mine: Vec<&(Duration, String)> = lines
            .iter()
            .filter(|(_, l)| l.starts_with(&prefix))
            .collect();
        let start = mine
            .iter()
            .find(|(_, l)| l.contains(": started"))
            .unwrap()
            .0;
        let end = mine
            .iter()
            .find(|(_, l)| l.contains(": done in"))
            .unwrap()
            .0;
        let progress = mine
            .iter()
            .filter(|(_, l)| !l.contains(": started") && !l.contains(": done in"))
            .count();
        let allowed = (end - start).as_secs_f64().floor() as usize + 1;
        assert!(
            progress <= allowed,
            "{stage}: {progress} progress lines in {:?}",
            end - start
        );
    }
}
