//! The channel layer: how a `broadcast` reaches every connection of every
//! instance.
//!
//! Every process has one [`Hub`], a bounded tokio broadcast queue that every
//! local connection reads. Heartbeats go straight into it (one timer per
//! process). Broadcasts go through a [`ChannelLayer`]: the in-memory layer
//! puts them into the local hub; the Redis layer publishes them, and one
//! subscription per process feeds what arrives into the local hub.
//!
//! Frames are serialized once and shared (`Utf8Bytes` clones a reference),
//! so a fan-out to 10,000 connections encodes JSON once. The queue is a ring
//! shared by all readers: a connection that falls `BROADCAST_BUFFER` frames
//! behind gets `Lagged` and is disconnected, so one slow client neither holds
//! memory nor slows the others.

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::session::StoreUnavailable;

/// What kind of frame went through the hub (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubKind {
    Broadcast,
    Heartbeat,
}

/// One serialized frame for every local connection.
#[derive(Debug, Clone)]
pub struct HubFrame {
    pub kind: HubKind,
    pub text: Utf8Bytes,
}

/// The process-wide fan-out queue.
pub type Hub = broadcast::Sender<HubFrame>;

#[async_trait]
pub trait ChannelLayer: Send + Sync + 'static {
    /// Sends a serialized `broadcast` frame to every connection of every
    /// instance, the sender's own included.
    async fn publish(&self, text: String) -> Result<(), StoreUnavailable>;
}

/// Broadcasts within this process.
pub struct MemoryChannelLayer {
    hub: Hub,
}

impl MemoryChannelLayer {
    pub fn new(hub: Hub) -> Self {
        MemoryChannelLayer { hub }
    }
}

#[async_trait]
impl ChannelLayer for MemoryChannelLayer {
    async fn publish(&self, text: String) -> Result<(), StoreUnavailable> {
        // An error only means no connection is listening right now.
        let _ = self.hub.send(HubFrame {
            kind: HubKind::Broadcast,
            text: text.into(),
        });
        Ok(())
    }
}
