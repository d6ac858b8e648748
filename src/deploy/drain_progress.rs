//! The drain's progress line ("N connections left") at a price the move
//! can afford.
//!
//! A replica's count comes from its `/status`, read by an exec into it
//! (the engine may be remote, so its containers' addresses may be out of
//! reach). Reading every replica at every look was 12 execs a second for
//! six replicas, each a process started by runc, on the same cores the
//! clients' reconnects need (docs/BENCHMARKS.md section 11). So each look
//! reads one replica, in turn, and the line sums the last count of each.

use std::collections::HashMap;
use std::future::Future;

#[derive(Default)]
pub struct ConnectionsLeft {
    /// The last count read from each replica still draining.
    last: HashMap<String, i64>,
    /// Which replica the next look reads.
    turn: usize,
}

impl ConnectionsLeft {
    /// Reads the next of `replicas` with `read`, and returns the sum of
    /// the last count of each (`None` while none has answered). A replica
    /// that no longer answers (it exited) or is no longer listed counts 0.
    pub async fn look<F, Fut>(&mut self, replicas: &[String], read: F) -> Option<i64>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Option<i64>>,
    {
        self.last.retain(|name, _| replicas.contains(name));
        if replicas.is_empty() {
            return None;
        }
        let name = replicas[self.turn % replicas.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        match read(name.clone()).await {
            Some(count) => self.last.insert(name, count),
            None => self.last.remove(&name),
        };
        (!self.last.is_empty()).then(|| self.last.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[tokio::test]
    async fn each_look_reads_one_replica_in_turn_and_sums_the_last_counts() {
        let replicas = names(&["a", "b", "c"]);
        let mut left = ConnectionsLeft::default();
        let mut read = Vec::new();
        let counts = HashMap::from([("a", 10), ("b", 20), ("c", 30)]);
        let mut sums = Vec::new();
        for _ in 0..4 {
            let sum = left
                .look(&replicas, |name| {
                    read.push(name.clone());
                    let count = counts[name.as_str()];
                    async move { Some(count) }
                })
                .await;
            sums.push(sum);
        }
        assert_eq!(read, ["a", "b", "c", "a"]);
        assert_eq!(sums, [Some(10), Some(30), Some(60), Some(60)]);
    }

    #[tokio::test]
    async fn a_replica_that_stops_answering_or_leaves_the_list_counts_nothing() {
        let mut left = ConnectionsLeft::default();
        let both = names(&["a", "b"]);
        assert_eq!(left.look(&both, |_| async { Some(5) }).await, Some(5));
        assert_eq!(left.look(&both, |_| async { Some(7) }).await, Some(12));
        // "a" exited: its exec fails.
        assert_eq!(left.look(&both, |_| async { None }).await, Some(7));
        // "b" is gone from the list (its task stopped).
        assert_eq!(left.look(&names(&["a"]), |_| async { None }).await, None);
        assert_eq!(left.look(&[], |_| async { Some(1) }).await, None);
    }
}
