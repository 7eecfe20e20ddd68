//! The gate of a batch's workers: at most `level` of them convert at once, and the level
//! may change while they run (`-j auto`'s governor moves it).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often a waiting worker looks at its stop condition: a Ctrl-C or a failure stops
/// the waiting workers within this time, without anyone having to wake them.
const POLL: Duration = Duration::from_millis(50);

/// Lets at most `level` holders of a [`Pass`] through at once.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    opened: Condvar,
}

#[derive(Debug)]
struct State {
    level: u32,
    inside: u32,
}

/// Being inside the gate; leaving is dropping it.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// A gate letting `level` (at least 1) through at once.
    pub fn new(level: u32) -> Gate {
        Gate {
            state: Mutex::new(State {
                level: level.max(1),
                inside: 0,
            }),
            opened: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters, consistent after every statement: a panic elsewhere
        // leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Let `level` (at least 1) through from now on. Lowering it lets those inside finish;
    /// no one new enters until fewer than `level` are inside.
    pub fn set_level(&self, level: u32) {
        self.lock().level = level.max(1);
        self.opened.notify_all();
    }

    /// Wait until fewer than the level are inside, and enter; `None` as soon as `stop()`
    /// is true (looked at before waiting and every [`POLL`] while waiting).
    pub fn enter(&self, stop: impl Fn() -> bool) -> Option<Pass<'_>> {
        let mut state = self.lock();
        loop {
            if stop() {
                return None;
            }
            if state.inside < state.level {
                state.inside += 1;
                return Some(Pass { gate: self });
            }
            state = self
                .opened
                .wait_timeout(state, POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.inside = state.inside.saturating_sub(1);
        drop(state);
        self.gate.opened.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// `threads` threads each pass the gate `rounds` times, staying inside briefly; returns
    /// the most that were inside at once, counted by the threads themselves.
    fn most_inside(gate: &Gate, threads: usize, rounds: usize) -> u32 {
        let (inside, most) = (AtomicU32::new(0), AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let pass = gate.enter(|| false).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(pass);
                    }
                });
            }
        });
        most.load(Ordering::SeqCst)
    }

    #[test]
    fn at_most_level_inside_at_once() {
        for level in [1, 2, 3] {
            let gate = Gate::new(level);
            let most = most_inside(&gate, 12, 20);
            assert!(most <= level, "{most} inside with level {level}");
            assert!(most >= 1);
        }
    }

    #[test]
    fn raising_and_lowering_the_level_takes_effect() {
        let gate = Gate::new(1);
        let a = gate.enter(|| false).unwrap();
        // Full: a second one waits, and gives up when told to stop.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.enter(|| stop.load(Ordering::SeqCst)).is_some());
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::SeqCst);
            assert!(!waiter.join().unwrap(), "stopped while waiting");
        });
        // Raised: a waiting one enters without anyone leaving.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.enter(|| false).map(drop).is_some());
            std::thread::sleep(Duration::from_millis(20));
            gate.set_level(3);
            assert!(waiter.join().unwrap());
        });
        let b = gate.enter(|| false).unwrap();
        let c = gate.enter(|| false).unwrap();
        assert_eq!(gate.lock().inside, 3);
        // Lowered to 1 with 3 inside: those inside stay; no one enters until 0 are.
        gate.set_level(1);
        let tried = AtomicU32::new(0);
        let full = || tried.fetch_add(1, Ordering::SeqCst) > 0;
        assert!(gate.enter(full).is_none(), "3 inside, level 1: waits");
        drop((a, b));
        assert!(gate.enter(|| true).is_none(), "stop before anything");
        tried.store(0, Ordering::SeqCst);
        assert!(gate.enter(full).is_none(), "1 inside, level 1: waits");
        drop(c);
        assert!(gate.enter(|| false).is_some(), "0 inside: enters");
        // A level of 0 means 1.
        gate.set_level(0);
        let d = gate.enter(|| false);
        assert!(d.is_some());
        drop(d);
        assert!(most_inside(&Gate::new(0), 4, 3) <= 1);
    }
}
