//! A run's side of the fleet's conversation: the `Coordinator` of one host
//! of several (`coordinator.rs` names the points, `fleet.rs` decides).
//!
//! Each host runs its own plan (its own engine, Nginx, journal), all at
//! once. At each point a host sends `Reached` with a reply channel and
//! waits for the fleet's verdict; when its run is over it sends
//! `Finished`.

use tokio::sync::{mpsc, oneshot};

use super::coordinator::{Coordinator, Point};

/// The fleet's answer at a point.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The host's run is over: on its own (`ok` says how), or after a
    /// verdict.
    Finished { host: usize, ok: bool },
}

/// A host's side of the conversation.
#[derive(Debug, Clone)]
pub struct Gate {
    pub host: usize,
    pub fleet: mpsc::UnboundedSender<Message>,
}

impl Coordinator for Gate {
    async fn pass(&self, point: Point) -> Result<(), String> {
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

    fn finished(&self, ok: bool) {
        let _ = self.fleet.send(Message::Finished {
            host: self.host,
            ok,
        });
    }
}
