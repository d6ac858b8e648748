//! Where a run on one host of several waits for the others.
//!
//! On a stack spread over hosts, each host runs its own plan (its own
//! engine, Nginx, journal), all at once, up to two points where the fleet
//! decides for everyone (`fleet.rs`):
//! - `BeforeSwitch`: every host has started, checked and smoke-tested its
//!   colour. The fleet lets hosts switch a batch at a time, or tells all of
//!   them to unwind when one failed before the switch.
//! - `Switched`: this host's Nginx serves the new colour. The fleet lets it
//!   drain once every host has switched, or tells it to switch back (its
//!   own undo: the previous upstream, then the new colour retired) when a
//!   later host failed to switch.
//!
//! A single-host run has no gate and never waits.

use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforeSwitch,
    Switched,
}

/// The fleet's answer at a point.
#[derive(Debug)]
pub enum Verdict {
    Go,
    /// Unwind this host's run, for the reason given.
    Undo(String),
}

/// What a host tells the fleet.
#[derive(Debug)]
pub enum Message {
    Reached {
        host: usize,
        point: Point,
        reply: oneshot::Sender<Verdict>,
    },
    /// The host's command returned (on its own, or after a verdict).
    Finished { host: usize },
}

/// A host's side of the conversation.
#[derive(Debug, Clone)]
pub struct Gate {
    pub host: usize,
    pub fleet: mpsc::UnboundedSender<Message>,
}

impl Gate {
    /// Waits for the fleet's verdict at `point`: `Err` with the reason to
    /// unwind.
    pub async fn pass(&self, point: Point) -> Result<(), String> {
        let (reply, verdict) = oneshot::channel();
        let message = Message::Reached {
            host: self.host,
            point,
            reply,
        };
        if self.fleet.send(message).is_err() {
            return Err("the deploy across hosts stopped".into());
        }
        match verdict.await {
            Ok(Verdict::Go) => Ok(()),
            Ok(Verdict::Undo(why)) => Err(why),
            Err(_) => Err("the deploy across hosts stopped".into()),
        }
    }

    /// Tells the fleet this host's command returned.
    pub fn finished(&self) {
        let _ = self.fleet.send(Message::Finished { host: self.host });
    }
}
