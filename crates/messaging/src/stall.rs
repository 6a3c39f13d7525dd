//! Tells a stuck consumer from a busy or an idle one.
//!
//! A consumer is **stalled** when its checkpoint is behind the log head (there are events
//! it has not processed) and has not moved for a while (`--stall-after`). A consumer at
//! the head is idle, not stalled, however long it waits; one that moves, however slowly,
//! is busy. Whoever looks at a consumer (the API, readiness, the sampler that keeps the
//! `consumer_stalled` gauge) asks the same [`StallWatch`], so they agree.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers, per consumer, its last checkpoint and since when it has not moved.
#[derive(Debug)]
pub struct StallWatch {
    after: Duration,
    /// Per consumer: its last checkpoint, since when it has not moved, and whether the
    /// last look found it stalled.
    seen: Mutex<HashMap<String, (u64, Instant, bool)>>,
}

impl StallWatch {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            seen: Mutex::default(),
        }
    }

    /// How long a consumer may stand still behind the head before it counts as stalled.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Records where `consumer` stands and says whether it is stalled; keeps the
    /// `consumer_stalled{consumer_group}` gauge (1 or 0).
    pub fn observe(&self, consumer: &str, checkpoint: u64, head: u64) -> bool {
        self.observe_at(consumer, checkpoint, head, Instant::now())
    }

    /// The consumers the last look found stalled (the background sampler looks every few
    /// seconds), by name: for readiness, which must not query the store for it.
    pub fn stalled(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = seen
            .iter()
            .filter(|(_, (_, _, stalled))| *stalled)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    fn observe_at(&self, consumer: &str, checkpoint: u64, head: u64, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen
            .entry(consumer.to_string())
            .or_insert((checkpoint, now, false));
        // Moved, or nothing to do: the clock starts again.
        if entry.0 != checkpoint || checkpoint >= head {
            *entry = (checkpoint, now, false);
        }
        let stalled = checkpoint < head && now.duration_since(entry.1) >= self.after;
        entry.2 = stalled;
        metrics::gauge!("consumer_stalled", "consumer_group" => consumer.to_string())
            .set(if stalled { 1.0 } else { 0.0 });
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_behind_and_standing_still() {
        let watch = StallWatch::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        assert!(!watch.observe_at("c", 10, 20, t0));
        assert!(!watch.observe_at("c", 10, 20, later(59)));
        assert!(
            watch.observe_at("c", 10, 20, later(60)),
            "behind and still for 60 s"
        );
        assert_eq!(watch.stalled(), ["c"]);
        assert!(
            !watch.observe_at("c", 11, 20, later(61)),
            "it moved: busy, not stalled"
        );
        assert!(!watch.observe_at("c", 11, 20, later(120)));
        assert!(watch.observe_at("c", 11, 20, later(121)));
        // At the head it is idle, however long it waits.
        assert!(!watch.observe_at("idle", 20, 20, t0));
        assert!(!watch.observe_at("idle", 20, 20, later(600)));
        // New events arrive: the clock runs from when it was last seen with nothing to do.
        assert!(!watch.observe_at("idle", 20, 25, later(601)));
        assert!(!watch.observe_at("idle", 20, 25, later(659)));
        assert!(watch.observe_at("idle", 20, 25, later(660)));
    }
}
