//! What happened in each second of wall clock (first connects, sessions
//! back after a goodbye), so that the reports of several processes add up
//! second by second and a benchmark script can draw the run: a connect
//! rate that falls as sockets grow, or a slow move, shows at a glance.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Counts by Unix second.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// First connects completed (greeting received).
    pub connects: BTreeMap<u64, u32>,
    /// `--follow`: sessions back with their next count after a goodbye
    /// (or a broken socket).
    pub resumes: BTreeMap<u64, u32>,
}

impl Timeline {
    /// Adds another process's counts, second by second.
    pub fn merge(&mut self, other: &Timeline) {
        for (mine, theirs) in [
            (&mut self.connects, &other.connects),
            (&mut self.resumes, &other.resumes),
        ] {
            for (second, count) in theirs {
                *mine.entry(*second).or_default() += count;
            }
        }
    }
}

/// A count by second that many tasks add to at once.
#[derive(Debug, Default)]
pub struct PerSecond(Mutex<BTreeMap<u64, u32>>);

impl PerSecond {
    /// One more in the current second.
    pub fn tick(&self) {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        // A poisoned lock (a panicking task) loses its tick, not the run.
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(second).or_default() += 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<u64, u32> {
        self.0
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_of_two_processes_add_up_second_by_second() {
        let mut one = Timeline {
            connects: BTreeMap::from([(10, 3), (11, 1)]),
            resumes: BTreeMap::new(),
        };
        let two = Timeline {
            connects: BTreeMap::from([(11, 2), (12, 5)]),
            resumes: BTreeMap::from([(20, 7)]),
        };
        one.merge(&two);
        assert_eq!(one.connects, BTreeMap::from([(10, 3), (11, 3), (12, 5)]));
        assert_eq!(one.resumes, BTreeMap::from([(20, 7)]));
    }

    #[test]
    fn ticks_count_in_their_second() {
        let counts = PerSecond::default();
        counts.tick();
        counts.tick();
        assert_eq!(counts.counts().values().sum::<u32>(), 2);
    }
}
