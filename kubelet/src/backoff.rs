//! Crash-loop back-off, as upstream's kubelet keeps it: per pod and container, the first
//! restart is immediate; after that a container that exits again waits `initial` (10 s)
//! from its exit, doubled at each restart up to `max` (5 min). A container that ran for
//! more than twice `max` since the last restart starts over from `initial`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// `a - b`, zero when `b` is later.
fn since(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or(Duration::ZERO)
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Back-off delays per key (`<pod uid>/<container>`).
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, event: SystemTime, e: &Entry) -> bool {
        since(event, e.last_update) > self.max * 2
    }

    /// How much longer a container of `key` that exited at `exited` must wait before its
    /// restart (`None`: it may restart now).
    pub fn remaining(&self, key: &str, exited: SystemTime, now: SystemTime) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(exited, e) {
            return None;
        }
        let waited = since(now, exited);
        (waited < e.backoff).then(|| e.backoff - waited)
    }

    /// The delay the next exit will wait (for the waiting message), if any.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// Records a restart of `key` for an exit at `exited`.
    pub fn restarted(&mut self, key: &str, exited: SystemTime, now: SystemTime) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(exited, e) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Forgets the keys `keep` rejects (pods that are gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(10), s(300));
        let t0 = SystemTime::now();
        // First exit: restart at once.
        assert_eq!(b.remaining("p/c", t0, t0), None);
        b.restarted("p/c", t0, t0);
        // It exits again 1 s later: 10 s from that exit.
        let exit = t0 + s(1);
        assert_eq!(b.remaining("p/c", exit, exit), Some(s(10)));
        assert_eq!(b.remaining("p/c", exit, exit + s(4)), Some(s(6)));
        assert_eq!(b.remaining("p/c", exit, exit + s(10)), None);
        b.restarted("p/c", exit, exit + s(10));
        assert_eq!(b.current("p/c"), Some(s(20)));
        let mut now = exit + s(10);
        for _ in 0..10 {
            b.restarted("p/c", now, now);
            now += s(1);
        }
        assert_eq!(b.current("p/c"), Some(s(300)));
        // Ten minutes of running, then an exit: immediate restart, then 10 s again.
        let late = now + s(601);
        assert_eq!(b.remaining("p/c", late, late), None);
        b.restarted("p/c", late, late);
        assert_eq!(b.current("p/c"), Some(s(10)));
        // Other keys are independent; retain forgets.
        assert_eq!(b.remaining("p/other", late, late), None);
        b.retain(|k| !k.starts_with("p/"));
        assert_eq!(b.current("p/c"), None);
    }
}
