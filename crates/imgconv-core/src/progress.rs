//! Progress reporting and cancellation.
//!
//! The library calls a [`Progress`] implementation at each stage and as work advances; a
//! CLI draws bars from it, a batch driver aggregates it, an embedding tool may ignore it.
//! Cancellation is polled through [`Progress::is_cancelled`] at every buffer boundary, so a
//! Ctrl-C handler only has to flip a flag.

use std::fmt;

/// The stages of one conversion, in pipeline order, then those of [`crate::verify()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Identify the source image and the guest inside it.
    Inspect,
    /// Read the donor and choose the kernel.
    Donor,
    /// Compute the target disk layout.
    Plan,
    /// Copy the used blocks of the guest filesystem into partition 1.
    Stream,
    /// Work on the copied filesystem with e2fsprogs: replay its journal or repair it
    /// (when asked), grow it.
    Grow,
    /// Copy the donor kernel, initrd, modules and GRUB files into the guest.
    Graft,
    /// Adapt the guest configuration to the new hardware.
    Fixups,
    /// Write boot code and grub.cfg.
    Boot,
    /// Copy the guest's other volumes (a separate /boot, data filesystems, swap) into
    /// their partitions, beside the root's stream.
    Volumes,
    /// Finish: flush, rename the temporary output into place.
    Finish,
    /// Verify: `e2fsck -fn` on the disk's ext filesystems.
    Fsck,
    /// Verify: `fsck.fat -n` on the EFI System Partition.
    #[serde(rename = "fsck.fat")]
    EspCheck,
    /// Verify: boot the disk under QEMU.
    BootTest,
}

impl Stage {
    /// A short lower-case name, stable for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Inspect => "inspect",
            Stage::Donor => "donor",
            Stage::Plan => "plan",
            Stage::Stream => "stream",
            Stage::Grow => "grow",
            Stage::Graft => "graft",
            Stage::Fixups => "fixups",
            Stage::Boot => "boot",
            Stage::Volumes => "volumes",
            Stage::Finish => "finish",
            Stage::Fsck => "fsck",
            Stage::EspCheck => "fsck.fat",
            Stage::BootTest => "boot-test",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Receives progress from the library. Every method has a no-op default.
pub trait Progress {
    /// A stage begins. `total` is its amount of work in the stage's unit (bytes for
    /// stream and volumes, files for graft), when known. The stage begun before it has
    /// ended, except [`Stage::Stream`] and [`Stage::Volumes`]: they may run beside the
    /// stages begun after them (the volumes beside the stream, the stream beside graft,
    /// fixups and boot), report their work through [`Progress::advance_beside`]
    /// meanwhile, and end at their [`Progress::stage_done`].
    fn stage(&mut self, _stage: Stage, _total: Option<u64>) {}
    /// Work done so far within the stage begun last (absolute, not a delta).
    fn advance(&mut self, _done: u64) {}
    /// Work done so far within `stage`, begun earlier and still running beside the stage
    /// begun last (absolute, not a delta). Delivered as it happens, interleaved with the
    /// other stage's events. The default ignores it, for a caller that shows one stage at
    /// a time.
    fn advance_beside(&mut self, _stage: Stage, _done: u64) {}
    /// Work done so far on `part` of `stage`, a stage whose parts run at once (each
    /// carried volume of [`Stage::Volumes`], named as the source names it: `p3`,
    /// `xvdb1`, `VolGroup00/LogVol02`), out of `total` when known, in the stage's unit
    /// (absolute, not a delta; a part may start over, as a /boot grown on a scratch copy
    /// does). The stage's own work, the sum over its parts, comes through
    /// [`Progress::advance_beside`]. The default ignores it.
    fn advance_part(&mut self, _stage: Stage, _part: &str, _done: u64, _total: Option<u64>) {}
    /// `stage` has finished after `seconds` of wall-clock time, measured by the library
    /// around the stage's work (the figure in
    /// [`Conversion::timings`](crate::Conversion::timings)). Sent when the stage
    /// ends, also for a stage that ran beside others; not sent for a stage that failed or
    /// was cancelled.
    fn stage_done(&mut self, _stage: Stage, _seconds: f64) {}
    /// A note worth showing (a warning, a decision such as an automatic grow).
    fn note(&mut self, _message: &str) {}
    /// Polled between units of work; returning true makes the library stop with
    /// [`crate::Error::Cancelled`] and remove anything it wrote.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A [`Progress`] that reports nothing and is never cancelled.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Forwards the work of `inner` without the stages it begins: the stream of a carried
/// volume is part of [`Stage::Volumes`], not a second [`Stage::Stream`].
pub(crate) struct WithinStage<'a>(pub(crate) &'a mut dyn Progress);

impl Progress for WithinStage<'_> {
    fn stage(&mut self, _stage: Stage, _total: Option<u64>) {}
    fn advance(&mut self, done: u64) {
        self.0.advance(done);
    }
    fn note(&mut self, message: &str) {
        self.0.note(message);
    }
    fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// Return `Err(Cancelled)` when the caller asked to stop.
pub fn check_cancel(progress: &dyn Progress) -> crate::Result<()> {
    if progress.is_cancelled() {
        Err(crate::Error::Cancelled)
    } else {
        Ok(())
    }
}
