//! The guest's other volumes — carried filesystems, swap areas — copied into their
//! partitions by worker threads beside the root's stream and the guest work; and the
//! separate `/boot`, copied before them.
//!
//! Workers: one per source disk (the main image, each extra disk, each LVM volume group),
//! at most [`MAX_WORKERS`] at once; a worker copies its disk's volumes in their order on
//! the disk. Volumes of one disk thus read one after the other, front to back, and the
//! disk sees at most two streams (its volumes' and the root's), each in runs of up to
//! 8 MiB, so a spinning disk does not seek between many readers; volumes on different
//! disks (a Xen guest's `--disk` images, a volume group of its own) copy at once. Each
//! copy holds one 8 MiB buffer, so the workers add at most 24 MiB to the root's stream.
//!
//! A separate `/boot` is not among them: the graft writes into it through a second
//! libext2fs handle, so it is copied (and grown) before the root's stream starts, alone.
//! Copied beside the root's stream it only took longer (both read the same disk) while
//! the graft, the longest stage of the converting thread, waited for it all the same:
//! measured on the real split-layout and LVM fixtures, the conversion got slower.
//!
//! Errors: the first real error wins. A failed volume stops the others and the root's
//! work (the progress seen by the root reports cancellation); a failed root stops the
//! volumes; the "cancelled" the other side then returns gives way to the cause.

use super::plan::ConversionPlan;
use super::prepare::grow_reason;
use super::CopyMethod;
use crate::blockio::{BlockDevice, OutputDevice};
use crate::layout::{self, GrowPlan};
use crate::output::{self, Sink};
use crate::progress::{check_cancel, Progress, Stage};
use crate::report::Report;
use crate::source::{VolumeAction, VolumeSource};
use crate::stream;
use crate::swap;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A carried volume and its partition: (volume index, start byte, length, number).
pub(super) type Carried = (usize, u64, u64, u32);

/// Most volume copies running at once (beside the root's stream).
pub(super) const MAX_WORKERS: usize = 3;

/// Copy one carried volume into its partition: an ext filesystem used blocks only,
/// anything else whole and sparse; a swap area gets only its header, with the guest's
/// UUID and label. `/boot` with a grow plan is grown on a scratch copy first.
pub(super) fn carry_one(
    plan: &ConversionPlan,
    dst: &Sink,
    (index, start, len, number): Carried,
    grow: Option<&GrowPlan>,
    method: CopyMethod,
    progress: &mut dyn Progress,
) -> Result<()> {
    check_cancel(progress)?;
    let v = &plan.inspection.volumes[index];
    if let Some(grow) = grow {
        return carry_grown_boot(
            plan,
            dst,
            (index, start, len, number),
            grow,
            method,
            progress,
        );
    }
    if v.action == VolumeAction::Swap {
        let uuid = v
            .uuid()
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
            .unwrap_or_else(uuid::Uuid::new_v4);
        let page = swap::swap_header(len, uuid, v.label().unwrap_or(""))?;
        dst.write_at(start, &page).map_err(|e| {
            output::write_error(dst.backing_file(), "cannot write the swap header to", e)
        })?;
        return Ok(());
    }
    let Some(region) = v.region() else {
        return Ok(());
    };
    progress.note(&format!(
        "carrying {} ({}) into partition {number}",
        v.name,
        v.content.describe(),
    ));
    // An ext filesystem longer than its volume (a truncated disk image) would be carried
    // broken: refused, naming the image.
    if let Some(fs) = v.ext().filter(|fs| fs.size_bytes > region.len()) {
        return Err(stream::StreamError::SourceTooShort {
            path: region.path().to_path_buf(),
            fs_bytes: fs.size_bytes,
            available: region.len(),
        }
        .into());
    }
    let used_blocks = v.ext().and_then(|fs| region.sub(0, fs.size_bytes).ok());
    match used_blocks {
        Some(fs) => match stream::copy_used_blocks_with(&fs, dst, start, method, progress) {
            Ok(_) => {}
            // An external journal or a superblock the walker refuses: the bytes as
            // they are.
            Err(
                stream::StreamError::NotAFilesystem { .. } | stream::StreamError::Superblock { .. },
            ) => {
                stream::copy_sparse(region, dst, start, progress)?;
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            stream::copy_sparse(region, dst, start, progress)?;
        }
    }
    Ok(())
}

/// Carry the separate /boot grown: copied into a scratch file beside the output, grown
/// there with resize2fs (at offset 0, where growing a regular file is safe whatever the
/// growth), then its used blocks copied into its larger partition.
fn carry_grown_boot(
    plan: &ConversionPlan,
    dst: &Sink,
    (index, start, len, _): Carried,
    grow: &GrowPlan,
    method: CopyMethod,
    progress: &mut dyn Progress,
) -> Result<()> {
    let v = &plan.inspection.volumes[index];
    let fs = v
        .region()
        .zip(v.ext())
        .and_then(|(r, fs)| r.sub(0, fs.size_bytes).ok())
        .ok_or_else(|| Error::Io {
            action: "cannot read the /boot filesystem of",
            path: plan.options.source.clone(),
            source: std::io::Error::other("its volume holds no readable ext filesystem"),
        })?;
    let output = &plan.options.output;
    let dir = match output.parent().filter(|d| !d.as_os_str().is_empty()) {
        _ if crate::blockdev::is_block_device(output) => std::env::temp_dir(),
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let scratch_err = |source| Error::Io {
        action: "cannot use a scratch file for growing /boot in",
        path: dir.clone(),
        source,
    };
    let scratch = tempfile::Builder::new()
        .prefix(".imgconv-boot-")
        .tempfile_in(&dir)
        .map_err(scratch_err)?;
    scratch.as_file().set_len(fs.len()).map_err(scratch_err)?;
    stream::copy_used_blocks_with(&fs, scratch.as_file(), 0, method, progress)?;
    progress.note(&format!(
        "growing /boot from {} to {}",
        layout::human(grow.from_bytes),
        layout::human(grow.to_bytes)
    ));
    crate::e2fs_tools::grow(scratch.path(), 0, grow.to_bytes.min(len), &*progress)?;
    let grown =
        crate::blockio::Region::from_file(scratch.reopen().map_err(scratch_err)?, scratch.path())
            .map_err(scratch_err)?;
    stream::copy_used_blocks_with(&grown, dst, start, method, progress)?;
    Ok(())
}

/// The report's line for a filesystem grown: the root (`/`) or a separate `/boot`.
pub(super) fn report_grown(report: &mut Report, mount: &str, grow: &GrowPlan) {
    let what = if mount == "/" {
        "the filesystem".to_string()
    } else {
        format!("the {mount} filesystem")
    };
    report.change(
        "grow",
        mount,
        format!(
            "grew {what} from {} to {}",
            layout::human(grow.from_bytes),
            layout::human(grow.to_bytes)
        ),
        grow_reason(&grow.reason),
        None,
    );
}

/// What a worker tells the converting thread.
enum Event {
    /// Volume `part` (index into the job list) has `done` of `total` bytes copied.
    Part {
        part: usize,
        done: u64,
        total: Option<u64>,
    },
    Note(String),
    /// A worker finished all its volumes at this instant.
    Done(Instant),
    /// A worker stopped with an error (it is returned by the worker).
    Failed,
}

/// A worker's [`Progress`] for one volume: forwards to the converting thread, stops when
/// told.
struct PartSide<'a> {
    part: usize,
    total: Option<u64>,
    events: &'a Sender<Event>,
    stop: &'a AtomicBool,
}

impl Progress for PartSide<'_> {
    fn stage(&mut self, _stage: Stage, total: Option<u64>) {
        self.total = total;
        self.advance(0);
    }
    fn advance(&mut self, done: u64) {
        let _ = self.events.send(Event::Part {
            part: self.part,
            done,
            total: self.total,
        });
    }
    fn note(&mut self, message: &str) {
        let _ = self.events.send(Event::Note(message.to_string()));
    }
    fn is_cancelled(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The converting thread's [`Progress`] while the workers run: every call first delivers
/// what the workers reported (the caller's progress need not be `Send`), as
/// `advance_part` per volume and `advance_beside(Volumes, sum)`, and `stage_done(Volumes)`
/// once the last worker is done. It reports cancellation once a worker failed, and
/// passes the caller's cancellation on to the workers.
struct Relay<'a> {
    inner: std::cell::RefCell<RelayState<'a>>,
    stop: &'a AtomicBool,
}

struct RelayState<'a> {
    progress: &'a mut dyn Progress,
    events: Receiver<Event>,
    /// Name, bytes done and total of each volume.
    parts: Vec<(String, u64, Option<u64>)>,
    started: Instant,
    workers_left: usize,
    last_end: Option<Instant>,
    failed: bool,
    /// The stage's time, once every worker is done.
    seconds: Option<f64>,
    connected: bool,
}

impl RelayState<'_> {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Part { part, done, total } => {
                let Some(p) = self.parts.get_mut(part) else {
                    return;
                };
                (p.1, p.2) = (done, total);
                self.progress
                    .advance_part(Stage::Volumes, &p.0, done, total);
                let sum = self.parts.iter().map(|p| p.1).sum();
                self.progress.advance_beside(Stage::Volumes, sum);
            }
            Event::Note(m) => self.progress.note(&m),
            Event::Done(at) => {
                self.workers_left = self.workers_left.saturating_sub(1);
                self.last_end = Some(self.last_end.map_or(at, |t| t.max(at)));
                if self.workers_left == 0 && !self.failed {
                    let seconds = self
                        .last_end
                        .map_or(0.0, |t| t.duration_since(self.started).as_secs_f64());
                    self.seconds = Some(seconds);
                    self.progress.stage_done(Stage::Volumes, seconds);
                }
            }
            Event::Failed => self.failed = true,
        }
    }

    fn pump(&mut self) {
        while self.connected {
            match self.events.try_recv() {
                Ok(e) => self.apply(e),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.connected = false,
            }
        }
    }
}

impl Progress for Relay<'_> {
    fn stage(&mut self, stage: Stage, total: Option<u64>) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.stage(stage, total);
    }
    fn advance(&mut self, done: u64) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.advance(done);
    }
    fn advance_beside(&mut self, stage: Stage, done: u64) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.advance_beside(stage, done);
    }
    fn advance_part(&mut self, stage: Stage, part: &str, done: u64, total: Option<u64>) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.advance_part(stage, part, done, total);
    }
    fn stage_done(&mut self, stage: Stage, seconds: f64) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.stage_done(stage, seconds);
    }
    fn note(&mut self, message: &str) {
        let s = self.inner.get_mut();
        s.pump();
        s.progress.note(message);
    }
    fn is_cancelled(&self) -> bool {
        let Ok(mut s) = self.inner.try_borrow_mut() else {
            return self.stop.load(Ordering::SeqCst);
        };
        s.pump();
        if s.progress.is_cancelled() {
            self.stop.store(true, Ordering::SeqCst);
        }
        s.failed || self.stop.load(Ordering::SeqCst)
    }
}

/// The volumes grouped by the disk they are read from (an LVM volume group counts as one
/// disk), groups in order of their first volume.
fn by_disk(plan: &ConversionPlan, jobs: &[Carried]) -> Vec<Vec<usize>> {
    #[derive(PartialEq)]
    enum Disk<'a> {
        Index(usize),
        Group(&'a str),
    }
    let disk_of = |c: &Carried| match &plan.inspection.volumes[c.0].source {
        VolumeSource::Partition { disk, .. } | VolumeSource::Disk { disk } => Disk::Index(*disk),
        VolumeSource::LogicalVolume { vg, .. } => Disk::Group(vg),
    };
    let mut groups: Vec<(Disk, Vec<usize>)> = Vec::new();
    for (i, c) in jobs.iter().enumerate() {
        let d = disk_of(c);
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => g.1.push(i),
            None => groups.push((d, vec![i])),
        }
    }
    groups.into_iter().map(|g| g.1).collect()
}

/// Run `root` (the root's stream and the guest work, given the progress to report
/// through) while worker threads carry `volumes`. Reports [`Stage::Volumes`] beside the
/// root's stages (begun first, ended by its `stage_done`), with each volume's bytes
/// through [`Progress::advance_part`]. Returns `root`'s value and the stage's time.
pub(super) fn beside<T>(
    plan: &ConversionPlan,
    dst: &Sink,
    volumes: &[Carried],
    method: CopyMethod,
    progress: &mut dyn Progress,
    root: impl FnOnce(&mut dyn Progress) -> Result<T>,
) -> Result<(T, f64)> {
    progress.stage(Stage::Volumes, None);
    let jobs: Vec<Carried> = volumes.to_vec();
    let groups = by_disk(plan, &jobs);
    let workers = groups.len().clamp(1, MAX_WORKERS);
    let queue = Mutex::new(groups.into_iter().collect::<VecDeque<_>>());
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let parts = jobs
        .iter()
        .map(|c| (plan.inspection.volumes[c.0].name.clone(), 0, None))
        .collect();
    let (jobs, queue, stop) = (&jobs, &queue, &stop);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let events = tx.clone();
                scope.spawn(move || -> Result<()> {
                    let result = (|| loop {
                        let Some(group) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                            return Ok(());
                        };
                        for part in group {
                            let mut side = PartSide {
                                part,
                                total: None,
                                events: &events,
                                stop,
                            };
                            carry_one(plan, dst, jobs[part], None, method, &mut side)?;
                        }
                    })();
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                        let _ = events.send(Event::Failed);
                    } else {
                        let _ = events.send(Event::Done(Instant::now()));
                    }
                    result
                })
            })
            .collect();
        drop(tx);
        let mut relay = Relay {
            inner: std::cell::RefCell::new(RelayState {
                progress,
                events: rx,
                parts,
                started,
                workers_left: workers,
                last_end: None,
                failed: false,
                seconds: None,
                connected: true,
            }),
            stop,
        };
        let root_result = root(&mut relay);
        if root_result.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        // The rest of the volumes' progress as it comes.
        let s = relay.inner.get_mut();
        while s.connected {
            if s.progress.is_cancelled() {
                stop.store(true, Ordering::SeqCst);
            }
            match s.events.recv_timeout(Duration::from_millis(50)) {
                Ok(e) => s.apply(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => s.connected = false,
            }
        }
        let cancelled = s.progress.is_cancelled();
        let seconds = s.seconds;
        let mut volume_error = None;
        let mut volume_cancelled = false;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(Error::Cancelled)) => volume_cancelled = true,
                Ok(Err(e)) => {
                    volume_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // The first real error wins over the "cancelled" it caused on the other side.
        match (root_result, volume_error) {
            (Err(Error::Cancelled) | Ok(_), Some(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(_), None) if cancelled || volume_cancelled => Err(Error::Cancelled),
            (Ok(t), None) => Ok((t, seconds.unwrap_or(0.0))),
        }
    })
}
