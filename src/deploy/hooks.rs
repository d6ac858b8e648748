//! Hooks: the commands of wsctl.yaml's `hooks:` around a deploy or a
//! rollback, run through `sh -c` on the machine that runs wsctl, as
//! Kamal's are. A pre hook runs after the preflight (under the lock, the
//! run journaled as planned) and before the first step: failing (or
//! running out of time) stops the run with exit 12, nothing started. A
//! post hook runs once the outcome is known and is only reported: it
//! never undoes a deploy. Every hook run is in the run's journal record.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::journal::{HookRun, Outcome, Run};
use super::state::Action;
use crate::deploy::config::{HOOK_TIMEOUT, StackConfig};
use crate::shared::secrets::mask;

/// Lines of a hook's output kept in the journal (all of it is shown).
const KEPT_LINES: usize = 20;

/// The hook that runs before `action`, if wsctl.yaml names one.
pub fn pre(config: &StackConfig, action: Action) -> Option<(&'static str, &str)> {
    match action {
        Action::Deploy => config
            .hooks
            .pre_deploy
            .as_deref()
            .map(|c| ("pre_deploy", c)),
        Action::Rollback => config
            .hooks
            .pre_rollback
            .as_deref()
            .map(|c| ("pre_rollback", c)),
        _ => None,
    }
}

/// The hook that runs after `action` ended with `outcome`, if any.
pub fn post(
    config: &StackConfig,
    action: Action,
    outcome: Outcome,
) -> Option<(&'static str, &str)> {
    let succeeded = matches!(outcome, Outcome::Succeeded | Outcome::Paused);
    let hooks = &config.hooks;
    let (name, command) = match (action, succeeded) {
        (Action::Deploy, true) => ("post_deploy", &hooks.post_deploy),
        (Action::Deploy, false) => ("on_failure", &hooks.on_failure),
        (Action::Rollback, true) => ("post_rollback", &hooks.post_rollback),
        (Action::Rollback, false) => ("on_rollback_failure", &hooks.on_rollback_failure),
        _ => return None,
    };
    command.as_deref().map(|command| (name, command))
}

/// Runs `command` as hook `name` for `run`, with the `WSCTL_*` variables;
/// `error` (post hooks) is what the run failed with.
pub async fn run(
    config: &StackConfig,
    hosts: &str,
    name: &str,
    command: &str,
    run: &Run,
    error: Option<&str>,
) -> HookRun {
    let started = Instant::now();
    let timeout = Duration::from_secs(config.hooks.timeout.unwrap_or(HOOK_TIMEOUT));
    let colour = |color: Option<crate::deploy::config::Color>| {
        color.map_or(String::new(), |color| color.to_string())
    };
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env("WSCTL_HOOK", name)
        .env("WSCTL_RUN_ID", &run.id)
        .env("WSCTL_ACTION", run.action.to_string())
        .env("WSCTL_FROM", colour(run.from))
        .env("WSCTL_TO", colour(run.to))
        .env("WSCTL_IMAGE", &run.image)
        .env("WSCTL_HOSTS", hosts)
        .env("WSCTL_PERFORMER", &run.performer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if !name.starts_with("pre_") {
        let outcome = serde_json::to_value(run.outcome)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        child
            .env("WSCTL_OUTCOME", outcome)
            .env("WSCTL_ERROR", error.unwrap_or_default());
    }
    let mut record = HookRun {
        hook: name.to_string(),
        exit_code: None,
        seconds: 0.0,
        timed_out: false,
        output: String::new(),
    };
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(error) => {
            record.output = format!("sh -c could not start: {error}");
            return record;
        }
    };
    // Both pipes read to their end while the hook runs (a full pipe
    // would block it), merged in the order they come.
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let output = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(pipe) = stdout.as_mut() {
                let _ = pipe.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        out.extend_from_slice(&err);
        out
    };
    let finished = tokio::time::timeout(timeout, async {
        let (output, status) = tokio::join!(output, child.wait());
        (output, status)
    })
    .await;
    match finished {
        Ok((output, status)) => {
            record.exit_code = status.ok().and_then(|status| status.code());
            record.output = String::from_utf8_lossy(&output).into_owned();
        }
        Err(_) => {
            record.timed_out = true;
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
        }
    }
    record.seconds = started.elapsed().as_secs_f64();
    record.output = mask(&record.output).into_owned();
    record
}

/// The last lines of a hook's output, as the journal keeps them.
pub fn kept(mut hook: HookRun) -> HookRun {
    let lines: Vec<&str> = hook.output.lines().collect();
    let from = lines.len().saturating_sub(KEPT_LINES);
    hook.output = lines[from..].join("\n");
    hook
}
