//! The process hub: how a frame reaches every connection of this process.
//!
//! Every process has one [`Hub`], a bounded tokio broadcast queue that every
//! local connection reads: the broadcasts. (Heartbeats are each
//! connection's own, `connection.rs`.) Broadcasts go through the
//! [`Backend`](super::backend::Backend):
//! the embedded one puts them into the local hub; the Redis ones publish
//! them, and one subscription per process feeds what arrives into the hub.
//!
//! Frames are serialized once and shared (`Utf8Bytes` clones a reference),
//! so a fan-out to 10,000 connections encodes JSON once. The queue is a ring
//! shared by all readers: a connection that falls `BROADCAST_BUFFER` frames
//! behind gets `Lagged` and is disconnected, so one slow client neither holds
//! memory nor slows the others.

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One serialized broadcast frame for every local connection.
#[derive(Debug, Clone)]
pub struct HubFrame {
    pub text: Utf8Bytes,
}

/// The process-wide fan-out queue.
pub type Hub = broadcast::Sender<HubFrame>;
