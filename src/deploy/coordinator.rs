//! Where a run waits for the runs beside it: the coordinator seam.
//!
//! The runner (`runner.rs`) asks its coordinator at three points and goes
//! on only when told to:
//! - `Preflight`: the stack is locked, bootstrapped and recovered, and
//!   its live colour is known. On several hosts, the fleet checks that they
//!   agree before anything moves.
//! - `BeforeSwitch`: the new colour is started, checked and smoke-tested.
//!   On several hosts, they switch a batch at a time.
//! - `Switched`: this host's Nginx serves the new colour. On several hosts,
//!   it drains only once every host has switched, or switches back.
//!
//! `Solo` (one engine) passes every point at once. The fleet's `Gate`
//! (`gate.rs`) asks the fleet's coordinator (`fleet.rs`).

use crate::deploy::config::Color;

/// A point where a run waits for its coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Preflight is done up to the command's own checks; `live` is what
    /// this stack's Nginx serves.
    Preflight {
        live: Option<Color>,
    },
    BeforeSwitch,
    Switched,
}

/// What a run asks at each point, and says when it is over.
pub trait Coordinator: Send + Sync {
    /// Waits for the verdict at `point`: `Err` with the reason to unwind.
    fn pass(&self, point: Point) -> impl Future<Output = Result<(), String>> + Send;

    /// The run is over, `ok` or not (its command returned).
    fn finished(&self, ok: bool);
}

/// One stack on its own: nobody to wait for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Coordinator for Solo {
    async fn pass(&self, _point: Point) -> Result<(), String> {
        Ok(())
    }

    fn finished(&self, _ok: bool) {}
}
