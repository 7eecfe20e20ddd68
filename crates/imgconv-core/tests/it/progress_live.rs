//! Progress of the overlapped conversion reaches the caller as it happens: the graft's
//! events arrive while the stream still copies (its bytes are interleaved with them), each
//! stage ends with `stage_done` carrying the time in `Conversion::timings`, and the
//! reported times fit the wall-clock time the test measures around the conversion.

use crate::support;

use imgconv_core::convert::{convert, Conversion, ConvertOptions, CopyMethod, Overlap};
use imgconv_core::{Progress, Stage};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Stage(Stage),
    Advance,
    Beside(Stage),
    Done(Stage, f64),
}

/// Records every event with the time it arrived, since the conversion began.
struct Recorder {
    started: Instant,
    events: Vec<(Duration, Event)>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            started: Instant::now(),
            events: Vec::new(),
        }
    }
    fn push(&mut self, e: Event) {
        self.events.push((self.started.elapsed(), e));
    }
    fn position(&self, e: &Event) -> usize {
        self.events
            .iter()
            .position(|(_, x)| x == e)
            .unwrap_or_else(|| panic!("no {e:?} in {:?}", self.kinds()))
    }
    fn done_at(&self, stage: Stage) -> (usize, Duration, f64) {
        let i = self
            .events
            .iter()
            .position(|(_, x)| matches!(x, Event::Done(s, _) if *s == stage))
            .unwrap_or_else(|| panic!("no stage_done({stage}) in {:?}", self.kinds()));
        let Event::Done(_, secs) = self.events[i].1 else {
            unreachable!()
        };
        (i, self.events[i].0, secs)
    }
    fn kinds(&self) -> Vec<&Event> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !matches!(e, Event::Advance | Event::Beside(_)))
            .collect()
    }
}

impl Progress for Recorder {
    fn stage(&mut self, stage: Stage, _total: Option<u64>) {
        self.push(Event::Stage(stage));
    }
    fn advance(&mut self, _done: u64) {
        self.push(Event::Advance);
    }
    fn advance_beside(&mut self, stage: Stage, _done: u64) {
        self.push(Event::Beside(stage));
    }
    fn stage_done(&mut self, stage: Stage, seconds: f64) {
        self.push(Event::Done(stage, seconds));
    }
}

fn run(
    src: &std::path::Path,
    overlap: Overlap,
    dir: &std::path::Path,
) -> (Recorder, Conversion, Duration) {
    let fx = support::synthetic();
    let out = dir.join(format!("{overlap:?}.raw"));
    // Read and write, never shared extents: the stream really copies its 640 MiB.
    let opts = ConvertOptions::new(src, Some(fx.join("donor-dir")), &out)
        .with_overlap(overlap)
        .with_copy_method(CopyMethod::ReadWrite);
    let mut rec = Recorder::new();
    let t0 = Instant::now();
    let done = convert(&opts, &mut rec).unwrap_or_else(|e| panic!("convert: {e}"));
    let wall = t0.elapsed();
    std::fs::remove_file(&out).unwrap();
    (rec, done, wall)
}

/// Every stage time reported through `stage_done` is the one in `Conversion::timings`,
/// above zero, and no longer than the wall time up to its `stage_done`.
fn check_times(rec: &Recorder, done: &Conversion, wall: Duration) {
    assert!(done.seconds > 0.0 && done.seconds <= wall.as_secs_f64());
    for t in &done.timings {
        if matches!(t.stage, Stage::Grow) {
            continue;
        }
        let (_, at, secs) = rec.done_at(t.stage);
        assert_eq!(secs, t.seconds, "{}: stage_done and timings", t.stage);
        assert!(t.seconds > 0.0, "{}: {} s", t.stage, t.seconds);
        assert!(
            t.seconds <= at.as_secs_f64(),
            "{}: {} s reported, but its stage_done came {at:?} after the start",
            t.stage,
            t.seconds
        );
    }
}

#[test]
fn graft_events_arrive_while_the_stream_copies_and_stage_times_are_the_measured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = support::large_guest(dir.path());
    let (rec, done, wall) = run(&src, Overlap::Auto, dir.path());
    assert!(done.stream.bytes_written > 600 << 20, "{:?}", done.stream);

    // The graft began before the stream finished.
    let (stream_done, _, _) = rec.done_at(Stage::Stream);
    let graft = rec.position(&Event::Stage(Stage::Graft));
    assert!(graft < stream_done, "{:?}", rec.kinds());
    // The stream's bytes reached the caller between the graft's start and the stream's
    // end, as they came (not held back until the stream ended).
    let beside: Vec<usize> = (graft..stream_done)
        .filter(|&i| rec.events[i].1 == Event::Beside(Stage::Stream))
        .collect();
    assert!(
        !beside.is_empty(),
        "no stream progress during the graft: {:?}",
        rec.kinds()
    );
    // Each event came once: stream and graft stages begin once each.
    assert_eq!(
        rec.events
            .iter()
            .filter(|(_, e)| *e == Event::Stage(Stage::Stream))
            .count(),
        1
    );
    check_times(&rec, &done, wall);
    let stream = rec.position(&Event::Stage(Stage::Stream));
    assert!(stream < graft);

    // One after the other, the stage times add up to no more than the whole conversion.
    let (rec, done, wall) = run(&src, Overlap::Sequential, dir.path());
    check_times(&rec, &done, wall);
    let sum: f64 = done.timings.iter().map(|t| t.seconds).sum();
    assert!(
        sum <= done.seconds,
        "sequential stages {sum} s in {} s",
        done.seconds
    );
    let (stream_done, _, _) = rec.done_at(Stage::Stream);
    assert!(stream_done < rec.position(&Event::Stage(Stage::Graft)));
    assert!(!rec
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Beside(_))));
}
