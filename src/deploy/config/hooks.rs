//! `hooks:` and `notify:` in wsctl.yaml: what runs, and who hears, around a
//! deploy or a rollback (`deploy::hooks`, `deploy::notify`).

use serde::Deserialize;

/// Command lines run through `sh -c` on the machine that runs wsctl.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Seconds each hook may run before it is killed (its whole process
    /// group); a pre hook that runs out of time fails.
    pub timeout: Option<u64>,
    /// Before a deploy's first step: failing stops it (exit 12).
    pub pre_deploy: Option<String>,
    /// After a deploy succeeded (or paused with `--no-switch`).
    pub post_deploy: Option<String>,
    /// After a deploy that did not succeed (failed, rolled back by its
    /// analysis, interrupted).
    pub on_failure: Option<String>,
    pub pre_rollback: Option<String>,
    pub post_rollback: Option<String>,
    pub on_rollback_failure: Option<String>,
}

/// Seconds a hook may run when wsctl.yaml names no `hooks.timeout`.
pub const HOOK_TIMEOUT: u64 = 300;

/// One webhook of `notify:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Where the run record is POSTed as JSON.
    pub webhook: String,
    /// Which of `started`, `succeeded`, `failed`, `aborted`,
    /// `interrupted`, `rolled_back` (default: all).
    #[serde(default)]
    pub events: Vec<String>,
}

/// The events a notification can be sent for.
pub const NOTIFY_EVENTS: &[&str] = &[
    "started",
    "succeeded",
    "failed",
    "aborted",
    "interrupted",
    "rolled_back",
];
