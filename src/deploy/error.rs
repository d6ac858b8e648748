//! Why a deploy command failed. Each kind has its own exit code (README,
//! "Exit codes"), and every message says where traffic is when it matters.

use crate::shared::signal::Signal;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Bad input, found before anything changed.
    #[error("{0}")]
    Usage(String),
    #[error("health check failed: {0}")]
    Health(String),
    #[error("smoke test failed: {0}")]
    Smoke(String),
    /// The switch failed; the runner's undo puts the previous upstream
    /// back (and says so, or ends in `NeedsRecover` when it cannot).
    #[error("switch failed: {0}")]
    Switch(String),
    /// Traffic moved; the old colour did not stop in time (the run is recorded).
    #[error("drain timed out: {0}")]
    Drain(String),
    #[error("the stack is locked by {holder} since {since} (wsctl unlock --force breaks it)")]
    LockHeld { holder: String, since: String },
    /// The stack is not in a state wsctl can build on: a restore failed, or
    /// Nginx's loaded configuration and its upstream file disagree.
    #[error("{0}; the stack needs `wsctl recover`")]
    NeedsRecover(String),
    /// On a stack of several hosts: this host's run was unwound because
    /// another host failed.
    #[error("undone: {0}")]
    Undone(String),
    /// A canary's analysis failed: the new colour was rolled back.
    #[error("analysis failed, rolled back: {0}")]
    Analysis(String),
    /// A canary never got the traffic its analysis needs: rolled back.
    #[error("analysis inconclusive, rolled back: {0}")]
    Inconclusive(String),
    /// A pre hook of wsctl.yaml failed: the run stopped before its first step.
    #[error("{0}")]
    Hook(String),
    /// The first SIGINT or SIGTERM: the run stopped at a safe point.
    #[error("interrupted by {signal}: {outcome}")]
    Interrupted { signal: Signal, outcome: String },
}

impl DeployError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DeployError::Usage(_) => 2,
            DeployError::Health(_) => 3,
            DeployError::Smoke(_) => 4,
            DeployError::Switch(_) => 5,
            DeployError::Drain(_) => 6,
            DeployError::LockHeld { .. } => 7,
            DeployError::Undone(_) => 5,
            DeployError::Analysis(_) => 10,
            DeployError::Inconclusive(_) => 11,
            DeployError::Hook(_) => 12,
            DeployError::NeedsRecover(_) => 9,
            DeployError::Interrupted { signal, .. } => signal.exit_code(),
        }
    }
}
