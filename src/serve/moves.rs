//! Moving clients off an old proxy, gracefully.
//!
//! After an Nginx reload the old workers keep the WebSockets they hold
//! until those close: a reload never cuts a socket. Every connection opened
//! before the last reload is held by an old worker. When the deploy tool
//! wants old workers gone (too many, or too much memory), it asks each
//! replica, on a private endpoint (`POST /connections/move`, loopback
//! only: wsctl reaches it by exec inside the container), to move the
//! connections opened more than `older_than` seconds ago. Each of them
//! says `goodbye` and closes with 1001 at a moment of its own, spread over
//! `DRAIN_WINDOW` as a shutdown's goodbyes are, and its client reconnects
//! through the new workers and resumes.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The order every connection listens to: connections opened before the
/// instant are to move.
pub struct Moves {
    cutoff: watch::Sender<Option<Instant>>,
}

impl Default for Moves {
    fn default() -> Self {
        Moves {
            cutoff: watch::Sender::new(None),
        }
    }
}

impl Moves {
    /// A connection's side: it waits for an order that names it.
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.cutoff.subscribe()
    }

    /// Every connection opened more than `older_than` ago is to move.
    pub fn order(&self, older_than: Duration) {
        let cutoff = Instant::now().checked_sub(older_than);
        self.cutoff.send_replace(cutoff);
    }
}

/// Resolves when an order names a connection opened at `opened` (never,
/// when the server has no orders left to give).
pub async fn named(orders: &mut watch::Receiver<Option<Instant>>, opened: Instant) {
    loop {
        if orders.changed().await.is_err() {
            return std::future::pending().await;
        }
        if orders
            .borrow_and_update()
            .is_some_and(|cutoff| opened < cutoff)
        {
            return;
        }
    }
}

/// When in the drain window a moved connection says goodbye: a share of
/// the window taken from its (random, v4) id, so the goodbyes of many
/// connections spread evenly over it.
pub fn offset(id: uuid::Uuid, window: Duration) -> Duration {
    let (_, low) = id.as_u64_pair();
    // The low word's two top bits are the variant; the rest is random.
    window.mul_f64((low % 1_000_000) as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_order_names_only_connections_opened_before_its_cutoff() {
        let moves = Moves::default();
        let old = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut orders = moves.subscribe();
        let young = Instant::now();
        moves.order(Duration::from_millis(25));
        // The old connection is named; the young one is not.
        tokio::time::timeout(Duration::from_secs(1), named(&mut orders.clone(), old))
            .await
            .expect("the old connection is named");
        let young_named =
            tokio::time::timeout(Duration::from_millis(100), named(&mut orders, young)).await;
        assert!(
            young_named.is_err(),
            "a connection opened after the cutoff moved"
        );
    }

    #[test]
    fn goodbyes_spread_over_the_whole_window() {
        let window = Duration::from_secs(2);
        let offsets: Vec<Duration> = (0..2000)
            .map(|_| offset(uuid::Uuid::new_v4(), window))
            .collect();
        assert!(offsets.iter().all(|offset| *offset <= window));
        let first_half = offsets.iter().filter(|o| **o < window / 2).count();
        assert!(
            (800..1200).contains(&first_half),
            "{first_half} of 2000 in the first half"
        );
    }
}
