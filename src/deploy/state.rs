//! The words a run is recorded in: the command it belongs to (`Action`)
//! and where it is (`State`). The journal stores them and the plans walk
//! them; both depend on this file, neither on the other.

use serde::{Deserialize, Serialize};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Planned,
    Started,
    Healthy,
    Smoked,
    /// A canary: both colours serve, weighted, under analysis.
    Canary,
    Switched,
    /// `--watch`: switched, the old colour still running, under analysis.
    Watching,
    Drained,
    /// `abort`: the paused colour is stopped and removed.
    Removed,
    /// `deploy --proxy`: the new Nginx exists, with the live upstream.
    Created,
    /// `deploy --proxy`: the new Nginx serves in the old one's place.
    Replaced,
    Recorded,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// The command a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deploy,
    Switch,
    Rollback,
    Recover,
    /// Traffic to a colour left paused by `deploy --no-switch`.
    Promote,
    /// The colour left paused by `deploy --no-switch`, removed.
    Abort,
    /// `deploy --proxy`: Nginx replaced with the configured one.
    Proxy,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Deploy => "deploy",
            Action::Switch => "switch",
            Action::Rollback => "rollback",
            Action::Recover => "recover",
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Proxy => "proxy",
        })
    }
}
