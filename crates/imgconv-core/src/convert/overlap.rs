//! The overlapped run: the stream copies the used blocks in a second thread while the
//! converting thread grafts, applies the fixups and writes the boot files through a
//! copy-on-write device, and a relay passes both threads' progress to the caller's
//! [`Progress`] as it happens.

use super::plan::StageTime;
use super::GuestWork;
use crate::boot;
use crate::ext::write::ExtFs;
use crate::graft::GraftSummary;
use crate::output::{self, TempOutput};
use crate::progress::{Progress, Stage};
use crate::report::Report;
use crate::stream::{self, StreamStats};
use crate::{Error, Result};
use std::time::Instant;

/// What the stream thread tells the converting thread.
enum StreamEvent {
    /// The bitmaps were checked and the copy starts: the graft may write now.
    Started(Option<u64>),
    Advance(u64),
    Note(String),
    /// The stream finished, after this many seconds.
    Finished(f64),
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

/// The converting thread's [`Progress`] while the stream runs beside it. The caller's
/// progress is not shared with the stream thread (it need not be `Send`): the stream's
/// events queue in a channel, and the relay delivers them at every progress call of the
/// guest work (the graft reports each file, and every stage polls for cancellation) and,
/// once the guest work is done, as they arrive. The stream's work is `advance` while the
/// stream is the stage begun last, `advance_beside` once the graft has begun; each stage
/// ends with its `stage_done` and its measured time. Cancelling (by the caller) stops the
/// stream too; a failed stream cancels the graft.
struct Relay<'a> {
    inner: std::cell::RefCell<RelayState<'a>>,
    stop: &'a std::sync::atomic::AtomicBool,
}

struct RelayState<'a> {
    progress: &'a mut dyn Progress,
    events: std::sync::mpsc::Receiver<StreamEvent>,
    streaming: bool,
    failed: bool,
    /// The stage the caller was told of last: its `advance` goes there.
    shown: Option<Stage>,
}

impl RelayState<'_> {
    fn apply(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Started(total) => {
                self.progress.stage(Stage::Stream, total);
                self.shown = Some(Stage::Stream);
            }
            StreamEvent::Advance(done) if self.shown == Some(Stage::Stream) => {
                self.progress.advance(done)
            }
            StreamEvent::Advance(done) => self.progress.advance_beside(Stage::Stream, done),
            StreamEvent::Note(m) => self.progress.note(&m),
            StreamEvent::Finished(seconds) => self.progress.stage_done(Stage::Stream, seconds),
            StreamEvent::Failed => self.failed = true,
        }
    }

    /// Deliver what the stream reported so far.
    fn pump(&mut self) {
        while self.streaming {
            match self.events.try_recv() {
                Ok(event) => self.apply(event),
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.streaming = false,
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
}

impl Progress for Relay<'_> {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        let state = self.inner.get_mut();
        state.pump();
        state.progress.stage(stage, total);
        state.shown = Some(stage);
    }
    fn advance(&mut self, done: u64) {
        let state = self.inner.get_mut();
        state.pump();
        state.progress.advance(done);
    }
    fn advance_beside(&mut self, stage: Stage, done: u64) {
        let state = self.inner.get_mut();
        state.pump();
        state.progress.advance_beside(stage, done);
    }
    fn note(&mut self, message: &str) {
        let state = self.inner.get_mut();
        state.pump();
        state.progress.note(message);
    }
    fn stage_done(&mut self, stage: Stage, seconds: f64) {
        let state = self.inner.get_mut();
        state.pump();
        state.progress.stage_done(stage, seconds);
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

/// Says [`WrittenRanges::device_finished`](crate::ext::write::cow::WrittenRanges) when
/// dropped.
struct DeviceDone<'a>(&'a crate::ext::write::cow::WrittenRanges);

impl Drop for DeviceDone<'_> {
    fn drop(&mut self) {
        self.0.device_finished();
    }
}

/// Stream in a second thread while this one grafts, applies the fixups and writes the
/// boot files through a [`CowDevice`](crate::ext::write::cow::CowDevice). Through the page
/// cache the stream copies meanwhile; writing direct, it reads ahead meanwhile and writes
/// once the guest work is done (see the `stream::direct` module).
pub(super) fn together(
    guest: &GuestWork<'_>,
    out: &TempOutput,
    root_offset: u64,
    report: &mut Report,
    timings: &mut Vec<StageTime>,
    progress: &mut dyn Progress,
) -> Result<(StreamStats, Option<GraftSummary>, Option<boot::CoreImage>)> {
    use crate::ext::write::cow::{CowDevice, WrittenRanges};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stream_at = timings.len();
    let src = guest.plan.inspection.open_fs()?;
    let written = WrittenRanges::new(u64::from(guest.plan.inspection.fs.block_size));
    let dst = out.sink();
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let stream_thread = scope.spawn(|| {
            let started = Instant::now();
            let mut side = StreamSide {
                events: tx,
                stop: &stop,
            };
            let result = stream::copy_used_blocks_around(
                &src,
                dst,
                root_offset,
                &written,
                guest.opts.copy_method,
                &mut side,
            );
            let seconds = started.elapsed().as_secs_f64();
            let _ = side.events.send(match result {
                Ok(_) => StreamEvent::Finished(seconds),
                Err(_) => StreamEvent::Failed,
            });
            (result, seconds)
        });
        let mut relay = Relay {
            inner: std::cell::RefCell::new(RelayState {
                progress,
                events: rx,
                streaming: true,
                failed: false,
                shown: None,
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
        // The stream's direct writes wait for this: said on every way out, a panic too.
        let device_done = DeviceDone(&written);
        let guest_result = if go {
            (|| {
                let mut device = CowDevice::new(
                    src.clone(),
                    dst.try_clone()
                        .map_err(|e| output::write_error(out.file(), "cannot reopen", e))?,
                    root_offset,
                    std::sync::Arc::clone(&written),
                );
                // The graft's data goes to the disk while it runs (see `cow::WriteBack`).
                if let Some(file) = crate::blockio::OutputDevice::raw_file(dst) {
                    device.start_write_back(file);
                }
                let mut fs = ExtFs::open_cow(device, out.path(), root_offset)?;
                let r = guest.write(&mut fs, report, timings, &mut relay)?;
                fs.close()?;
                Ok(r)
            })()
        } else {
            Err(Error::Cancelled)
        };
        // Nothing writes through the device any more: a stream that waited for it
        // writes now.
        drop(device_done);
        if guest_result.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        // Show the rest of the stream as it comes.
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
