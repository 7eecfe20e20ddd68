//! How many conversions `batch -j auto` runs at once, from the throughput it measures.
//!
//! [`auto_jobs`](super::auto_jobs) gives the ceiling (cores, storage); the governor climbs
//! towards it while climbing pays. It starts at [`START`] and is told of every successful
//! conversion (the bytes it moved and its wall seconds). A level's throughput is measured
//! over the conversions that started at that level and finished before the level
//! changed, at least [`MIN_WINDOW`] of them and at least one per slot, so each running slot
//! has finished once: the batch's aggregate throughput at level `L` is `L` times their
//! bytes over their seconds (each slot moves data at that rate while `L` run beside each
//! other). Conversions that straddle a change are left out, as they ran partly at each
//! level.
//!
//! After a window, the level goes up by one if it beat the level below by [`MARGIN`] (or
//! it is the starting level, which has nothing below it yet); otherwise it steps back to the
//! level below and holds there for the rest of the batch. It also holds at the ceiling.
//! There is no later probe: images differ in size and content, so a rate measured over a
//! few of them late in the batch cannot tell a changed disk from different images, and a
//! probe that misjudges costs a whole window at a worse level. Holding once makes the
//! result predictable and free of oscillation.
//!
//! Pure bookkeeping: no clock, no threads, no printing. The batch feeds it and prints
//! its [`Change`]s.

/// The level a batch starts at (bounded by the ceiling). One at a time is the only level
/// whose throughput says whether a second conversion beside it pays; starting higher
/// would assume it does, and on shared or spinning storage it may not.
pub const START: u32 = 1;

/// The fewest conversions a level's throughput is measured over: one image's rate is that
/// image's (its size, its fixed costs); two already halve the spread.
pub const MIN_WINDOW: u32 = 2;

/// How much better a raised level must do than the level below it to be kept: 10%. Below
/// the largest ceiling (8), one more slot adds at least 1/7 ≈ 14% when the storage and the
/// cores keep up, so a raise that pays clears it; measurement noise over a few images of
/// different sizes stays under it.
pub const MARGIN: f64 = 0.10;

/// A level and the aggregate throughput measured at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Conversions at once.
    pub level: u32,
    /// Bytes per second over the whole batch.
    pub bytes_per_second: f64,
}

/// What a measurement changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// One more at once: `at` is the level just measured (beating `below`, if any).
    Raised {
        to: u32,
        below: Option<Rate>,
        at: Rate,
    },
    /// The raise to `tried.level` did not pay: back to `kept.level`, for good.
    SteppedBack { kept: Rate, tried: Rate },
    /// The raise to the ceiling paid: it stays there.
    HeldAtCeiling { below: Rate, at: Rate },
}

/// One stretch of the batch at one level, as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Conversions at once.
    pub level: u32,
    /// Conversions measured: they started and finished at this level.
    pub conversions: u32,
    /// Their bytes.
    pub bytes: u64,
    /// Their wall seconds, summed.
    pub seconds: f64,
}

impl Phase {
    /// The batch's aggregate throughput in this phase: `level` times the bytes over the
    /// seconds of its conversions; `None` before any measured time.
    pub fn bytes_per_second(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| f64::from(self.level) * self.bytes as f64 / self.seconds)
    }
}

/// The hill-climbing governor (see the module documentation).
#[derive(Debug, Clone)]
pub struct Governor {
    ceiling: u32,
    level: u32,
    epoch: u64,
    /// The level below the current probe and its throughput.
    below: Option<Rate>,
    held: bool,
    phases: Vec<Phase>,
}

impl Governor {
    /// A governor climbing from [`START`] to at most `ceiling` (at least 1).
    pub fn new(ceiling: u32) -> Governor {
        let ceiling = ceiling.max(1);
        let level = START.clamp(1, ceiling);
        Governor {
            ceiling,
            level,
            epoch: 0,
            below: None,
            held: level == ceiling,
            phases: vec![Phase {
                level,
                conversions: 0,
                bytes: 0,
                seconds: 0.0,
            }],
        }
    }

    /// Conversions to run at once now.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The most it ever runs at once.
    pub fn ceiling(&self) -> u32 {
        self.ceiling
    }

    /// Changes with every level change: a conversion is measured only if the epoch it
    /// started in is still the current one when it finishes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The phases so far, in order; the last is the current one.
    pub fn history(&self) -> &[Phase] {
        &self.phases
    }

    /// A conversion that started in `epoch` finished after `seconds`, having moved `bytes`.
    /// Returns the change it led to, if any. Conversions of an earlier epoch, and those of
    /// no measurable time (zero, negative, not finite), are not measured.
    pub fn record(&mut self, epoch: u64, bytes: u64, seconds: f64) -> Option<Change> {
        if epoch != self.epoch || !seconds.is_finite() || seconds <= 0.0 {
            return None;
        }
        let phase = self.phases.last_mut()?;
        phase.conversions += 1;
        phase.bytes = phase.bytes.saturating_add(bytes);
        phase.seconds += seconds;
        if self.held || phase.conversions < self.level.max(MIN_WINDOW) {
            return None;
        }
        let at = Rate {
            level: self.level,
            bytes_per_second: phase.bytes_per_second().unwrap_or(0.0),
        };
        let paid = match self.below {
            None => true,
            Some(below) => {
                at.bytes_per_second > 0.0
                    && at.bytes_per_second >= below.bytes_per_second * (1.0 + MARGIN)
            }
        };
        match (paid, self.below) {
            (false, Some(kept)) => {
                self.held = true;
                self.set_level(kept.level);
                Some(Change::SteppedBack { kept, tried: at })
            }
            _ if self.level >= self.ceiling => {
                self.held = true;
                self.below.map(|below| Change::HeldAtCeiling { below, at })
            }
            (_, below) => {
                self.below = Some(at);
                self.set_level(self.level + 1);
                Some(Change::Raised {
                    to: self.level,
                    below,
                    at,
                })
            }
        }
    }

    fn set_level(&mut self, level: u32) {
        self.level = level.clamp(1, self.ceiling);
        self.epoch += 1;
        self.phases.push(Phase {
            level: self.level,
            conversions: 0,
            bytes: 0,
            seconds: 0.0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `g` conversions of `bytes` each, started at the level in force, each taking
    /// `seconds(level)`, until `n` have been measured or the governor holds; returns the
    /// changes and checks the level's bounds after every step.
    fn run(g: &mut Governor, n: usize, bytes: u64, seconds: impl Fn(u32) -> f64) -> Vec<Change> {
        let mut changes = Vec::new();
        for _ in 0..n {
            let s = seconds(g.level());
            if let Some(c) = g.record(g.epoch(), bytes, s) {
                changes.push(c);
            }
            assert!(
                (1..=g.ceiling()).contains(&g.level()),
                "level {} outside 1..={}",
                g.level(),
                g.ceiling()
            );
        }
        changes
    }

    #[test]
    fn rising_throughput_climbs_to_the_ceiling_and_stays() {
        let mut g = Governor::new(4);
        assert_eq!(g.level(), 1);
        // Each conversion takes the same time whatever runs beside it: perfect scaling.
        let changes = run(&mut g, 40, 1_000_000, |_| 1.0);
        assert_eq!(g.level(), 4);
        let levels: Vec<u32> = g.history().iter().map(|p| p.level).collect();
        assert_eq!(levels, [1, 2, 3, 4]);
        let raised: Vec<u32> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Raised { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(raised, [2, 3, 4]);
        assert!(matches!(
            changes.last(),
            Some(Change::HeldAtCeiling { at, .. }) if at.level == 4
        ));
        // Windows: 2 at level 1 and 2, 3 at level 3; the rest all measured at 4.
        let counts: Vec<u32> = g.history().iter().map(|p| p.conversions).collect();
        assert_eq!(counts, [2, 2, 3, 33]);
        let rates: Vec<f64> = g
            .history()
            .iter()
            .map(|p| p.bytes_per_second().unwrap())
            .collect();
        assert_eq!(rates, [1e6, 2e6, 3e6, 4e6]);
    }

    #[test]
    fn flat_throughput_stops_after_one_probe_and_steps_back() {
        let mut g = Governor::new(8);
        // Each conversion takes as many seconds as run at once: the disk is the limit.
        let changes = run(&mut g, 30, 1_000_000, f64::from);
        assert_eq!(g.level(), 1);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(matches!(
            changes[0],
            Change::Raised {
                to: 2,
                below: None,
                ..
            }
        ));
        match &changes[1] {
            Change::SteppedBack { kept, tried } => {
                assert_eq!((kept.level, tried.level), (1, 2));
                assert!((kept.bytes_per_second - tried.bytes_per_second).abs() < 1.0);
            }
            c => panic!("{c:?}"),
        }
        let levels: Vec<u32> = g.history().iter().map(|p| p.level).collect();
        assert_eq!(levels, [1, 2, 1]);
        assert_eq!(
            g.history()[2].conversions,
            26,
            "held: every later one counted"
        );
    }

    #[test]
    fn a_drop_steps_back_after_climbing() {
        let mut g = Governor::new(8);
        // Scales to 3, then 4 at once thrash: slower than 3.
        let changes = run(&mut g, 30, 8_000_000, |l| if l <= 3 { 1.0 } else { 8.0 });
        assert_eq!(g.level(), 3);
        match changes.last() {
            Some(Change::SteppedBack { kept, tried }) => {
                assert_eq!((kept.level, tried.level), (3, 4));
                assert!(tried.bytes_per_second < kept.bytes_per_second);
            }
            c => panic!("{c:?}"),
        }
        let levels: Vec<u32> = g.history().iter().map(|p| p.level).collect();
        assert_eq!(levels, [1, 2, 3, 4, 3]);
    }

    #[test]
    fn a_gain_under_the_margin_is_not_kept() {
        let mut g = Governor::new(8);
        // Two at once gain 5% only.
        run(
            &mut g,
            20,
            1_000_000,
            |l| if l == 1 { 1.0 } else { 2.0 / 1.05 },
        );
        assert_eq!(g.level(), 1);
        let mut g = Governor::new(8);
        // Two at once gain 20%, three none.
        run(&mut g, 20, 1_000_000, |l| {
            [1.0, 2.0 / 1.2, 3.0 / 1.2][l as usize - 1]
        });
        assert_eq!(g.level(), 2);
    }

    #[test]
    fn ceiling_one_never_climbs() {
        for ceiling in [0, 1] {
            let mut g = Governor::new(ceiling);
            assert_eq!((g.level(), g.ceiling()), (1, 1));
            let changes = run(&mut g, 10, 1_000_000, |_| 1.0);
            assert!(changes.is_empty(), "{changes:?}");
            assert_eq!(g.history().len(), 1);
            assert_eq!(g.history()[0].conversions, 10);
        }
    }

    #[test]
    fn zero_bytes_and_zero_seconds_neither_divide_by_zero_nor_climb_forever() {
        let mut g = Governor::new(8);
        // No measurable time: not measured at all.
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(g.record(g.epoch(), 1 << 30, s), None);
        }
        assert_eq!(g.history()[0].conversions, 0);
        assert_eq!(g.history()[0].bytes_per_second(), None);
        // Zero bytes: a throughput of 0, which no raise beats.
        let changes = run(&mut g, 20, 0, |_| 1.0);
        assert_eq!(g.level(), 1, "{changes:?}");
        assert!(matches!(changes.last(), Some(Change::SteppedBack { .. })));
        assert!(g
            .history()
            .iter()
            .all(|p| p.bytes_per_second().is_some_and(|r| r == 0.0)));
        // Huge counts saturate instead of overflowing.
        let mut g = Governor::new(2);
        run(&mut g, 6, u64::MAX, |_| 1e-300);
        assert!((1..=2).contains(&g.level()));
    }

    #[test]
    fn conversions_straddling_a_change_are_not_measured() {
        let mut g = Governor::new(3);
        let old = g.epoch();
        g.record(old, 1_000_000, 1.0);
        assert!(
            g.record(old, 1_000_000, 1.0).is_some(),
            "window of 2 at level 1"
        );
        assert_eq!(g.level(), 2);
        // Started at level 1, finished at level 2: not counted anywhere.
        assert_eq!(g.record(old, 1_000_000, 100.0), None);
        assert_eq!(g.history()[1].conversions, 0);
        // Started at level 2: measured.
        g.record(g.epoch(), 1_000_000, 1.0);
        assert_eq!(g.history()[1].conversions, 1);
    }
}
