//! The journal: every deploy, switch, rollback and recover, recorded in the
//! engine before each state is acted on, so any machine driving the engine
//! sees what ran, what it reached and how it ended, also after the machine
//! that ran it was lost.
//!
//! Where: Docker volumes used as labelled records. A record is a volume
//! named `{prefix}wsctl_run_{run id}_{seq}` whose labels hold the run as
//! JSON; writing the next state creates the next `seq` and then removes
//! the one before, so a run always has at least one record and a reader
//! takes the highest. Creating a volume is atomic and costs about 2 ms;
//! copying a file into a container (the first design) cost 60-110 ms a
//! write, five of them on the path to a switched rollback. The volumes hold
//! no data and are never mounted. The Nginx container is not used: it may be
//! recreated, and the journal must survive that.
//!
//! On `platform: swarm` the records are Swarm configs with the same names
//! and labels (`swarm/configs.rs`): in the cluster's Raft store, so every
//! machine that reaches a manager reads the same journal.

use std::collections::HashMap;

use anyhow::Context;
use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListVolumesOptionsBuilder;
use serde::{Deserialize, Serialize};

use super::state::{Action, State};
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::docker;
use crate::deploy::swarm::configs;

const STACK: &str = "wsctl.journal.stack";
const RUN: &str = "wsctl.journal.run";
const RECORD: &str = "wsctl.journal.record";
/// Runs kept; the oldest go when a new one starts.
const KEEP: usize = 200;

/// How a run ended (or `in_progress` while it runs, and forever if it died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    Succeeded,
    /// A step failed; `traffic` says where traffic ended up.
    Failed,
    /// SIGINT or SIGTERM: undone before the switch, finished after it.
    Interrupted,
    /// Left in a state only `wsctl recover` repairs (a restore failed).
    NeedsRecover,
    /// Died unfinished; a later `wsctl recover` repaired the stack.
    Recovered,
    /// A canary's analysis failed or was inconclusive: rolled back.
    Aborted,
    /// `deploy --no-switch`: the new colour runs, checked, without traffic,
    /// until `wsctl promote` or `wsctl abort`.
    Paused,
    /// Refused before it changed anything (nothing to roll back to, the
    /// lock held, no stack yet, ...): `detail` says why.
    Refused,
}

/// A state and when the run entered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reached {
    pub state: State,
    pub at: String,
}

/// One run of a deploy command, as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Sorts by start time: `20261127T140512.123Z-1a2b3c4d`.
    pub id: String,
    pub action: Action,
    /// `user@host`.
    pub performer: String,
    /// The CI job, when the standard CI variables say there is one.
    pub ci_job: Option<String>,
    /// The colour live when the run started.
    pub from: Option<Color>,
    /// The colour it moves to; `None` for a refusal that never chose one.
    pub to: Option<Color>,
    pub image: String,
    /// The state the run is in (entered before acting on it).
    pub state: State,
    pub states: Vec<Reached>,
    pub outcome: Outcome,
    pub detail: String,
    /// Where traffic is at the end (`None` while in progress or unknown).
    pub traffic: Option<Color>,
    pub started_at: String,
    pub updated_at: String,
    pub seconds: f64,
    /// The Nginx upstream before the switch: what an undo or a recover restores.
    pub previous_upstream: Option<String>,
    /// This run created the `to` container (a deploy's standby, or a
    /// rollback that recreated a removed colour), so undoing removes it.
    pub created_container: bool,
    /// Milliseconds per finished step.
    #[serde(default)]
    pub steps_ms: serde_json::Map<String, serde_json::Value>,
    /// A canary's (or `--watch`'s) last analysis sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<serde_json::Value>,
    /// Every Nginx reload the run made, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<Reload>,
    /// The hooks of wsctl.yaml that ran for it (`hooks:`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
    /// Records written so far (the journal's sequence number).
    #[serde(default)]
    pub seq: u32,
}

/// One reload of Nginx by a run: which step made it and why, and the old
/// workers (holding sockets opened before it) once it was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reload {
    pub step: String,
    pub reason: String,
    pub at: String,
    pub old_workers: usize,
    pub old_workers_kib: u64,
    /// Past wsctl.yaml's `nginx:` bounds: the app was asked to move the
    /// old workers' clients with goodbye.
    #[serde(default)]
    pub moved: bool,
}

/// One hook run, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    /// `pre_deploy`, `post_deploy`, `on_failure`, ...
    pub hook: String,
    /// `None` when it was killed at its timeout or could not start.
    pub exit_code: Option<i32>,
    pub seconds: f64,
    #[serde(default)]
    pub timed_out: bool,
    /// Its last lines of output (stdout and stderr), secrets masked.
    pub output: String,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// One line: `pre_deploy exited 3 after 0.1 s`.
    pub fn describe(&self) -> String {
        let how = match (self.timed_out, self.exit_code) {
            (true, _) => "was killed at its timeout".to_string(),
            (false, Some(code)) => format!("exited {code}"),
            (false, None) => "could not run".to_string(),
        };
        format!("{} hook {how} after {:.1} s", self.hook, self.seconds)
    }
}

impl Run {
    pub fn new(action: Action, from: Option<Color>, to: Color, image: &str) -> Run {
        let now = crate::shared::time::now_rfc3339();
        let compact: String = now.chars().filter(|c| !matches!(c, '-' | ':')).collect();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Run {
            id: format!("{compact}-{suffix}"),
            action,
            performer: performer(),
            ci_job: ci_job(),
            from,
            to: Some(to),
            image: image.to_string(),
            state: State::Planned,
            states: vec![Reached {
                state: State::Planned,
                at: now.clone(),
            }],
            outcome: Outcome::InProgress,
            detail: String::new(),
            traffic: None,
            started_at: now.clone(),
            updated_at: now,
            seconds: 0.0,
            previous_upstream: None,
            created_container: false,
            steps_ms: serde_json::Map::new(),
            analysis: None,
            reloads: Vec::new(),
            hooks: Vec::new(),
            seq: 0,
        }
    }

    /// A command refused before it changed anything, as the journal
    /// keeps it: who asked, for what, and why not.
    pub fn refused(action: Action, from: Option<Color>, why: &str) -> Run {
        let mut run = Run::new(action, from, Color::Blue, "");
        run.to = None;
        run.outcome = Outcome::Refused;
        run.traffic = from;
        run.detail = why.to_string();
        run
    }

    pub fn enter(&mut self, state: State) {
        let at = crate::shared::time::now_rfc3339();
        self.state = state;
        self.states.push(Reached {
            state,
            at: at.clone(),
        });
        self.updated_at = at;
    }

    /// Traffic moved from one colour to another in this run.
    pub fn moved_traffic(&self) -> bool {
        self.traffic.is_some() && self.traffic != self.from
    }

    /// One line for people: `deploy blue -> green by ops@ci (state switched)`.
    pub fn describe(&self) -> String {
        let from = self.from.map_or("none".to_string(), |c| c.to_string());
        let to = self.to.map_or("none".to_string(), |c| c.to_string());
        let job = self
            .ci_job
            .as_deref()
            .map(|job| format!(", {job}"))
            .unwrap_or_default();
        format!(
            "{} {} {from} -> {to} by {}{job}, started {}, state {}",
            self.id, self.action, self.performer, self.started_at, self.state
        )
    }
}

/// `user@host`.
pub fn performer() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|user| !user.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host}")
}

/// The name of this process's user in /etc/passwd (USER is often unset
/// in CI jobs and services).
fn user_from_passwd() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2) == Some(&uid.as_str())).then(|| fields[0].to_string())
    })
}

/// The CI job from the standard variables of the common CI systems.
fn ci_job() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if let Some(run) = var("GITHUB_RUN_ID") {
        let job = var("GITHUB_JOB")
            .map(|job| format!("/{job}"))
            .unwrap_or_default();
        return Some(format!("github {run}{job}"));
    }
    for (name, system) in [
        ("CI_JOB_ID", "gitlab"),
        ("BUILDKITE_JOB_ID", "buildkite"),
        ("CIRCLE_BUILD_NUM", "circleci"),
        ("BUILD_TAG", "jenkins"),
    ] {
        if let Some(id) = var(name) {
            return Some(format!("{system} {id}"));
        }
    }
    None
}

/// The journal of one stack.
pub struct Journal {
    /// The label value that marks this stack's records.
    stack: String,
    prefix: String,
    /// Where records live: Docker volumes on the engine, or Swarm configs
    /// in the cluster (`platform: swarm`: every manager sees them).
    store: Store,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Volumes,
    SwarmConfigs,
}

impl Journal {
    pub fn new(config: &StackConfig) -> Journal {
        Journal {
            stack: config.name("wsctl"),
            prefix: config.name("wsctl_run_"),
            store: match config.is_swarm() {
                true => Store::SwarmConfigs,
                false => Store::Volumes,
            },
        }
    }

    fn record_name(&self, run: &str, seq: u32) -> String {
        format!("{}{run}_{seq:05}", self.prefix)
    }

    /// Records `run` as its next record, then drops the previous one.
    pub async fn write(&self, docker: &Docker, run: &mut Run) -> anyhow::Result<()> {
        run.seq += 1;
        let name = self.record_name(&run.id, run.seq);
        let labels = HashMap::from([
            (STACK.to_string(), self.stack.clone()),
            (RUN.to_string(), run.id.clone()),
            (RECORD.to_string(), serde_json::to_string(run)?),
        ]);
        match self.store {
            Store::Volumes => {
                let request = VolumeCreateRequest {
                    name: Some(name),
                    labels: Some(labels),
                    ..Default::default()
                };
                docker
                    .create_volume(request)
                    .await
                    .context("writing the journal")?;
            }
            Store::SwarmConfigs => {
                let created = configs::create(docker, &name, labels)
                    .await
                    .context("writing the journal")?;
                anyhow::ensure!(created.is_some(), "writing the journal: {name} exists");
            }
        }
        if run.seq > 1 {
            self.remove_record(docker, &self.record_name(&run.id, run.seq - 1))
                .await;
        } else {
            self.prune(docker).await;
        }
        Ok(())
    }

    /// Every run, oldest first, each at its latest record.
    pub async fn runs(&self, docker: &Docker) -> anyhow::Result<Vec<Run>> {
        let mut latest: HashMap<String, Run> = HashMap::new();
        for (_, run) in self.records(docker).await? {
            match latest.get(&run.id) {
                Some(seen) if seen.seq >= run.seq => {}
                _ => {
                    latest.insert(run.id.clone(), run);
                }
            }
        }
        let mut runs: Vec<Run> = latest.into_values().collect();
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }

    /// `(record name, run)` for every record of this stack.
    async fn records(&self, docker: &Docker) -> anyhow::Result<Vec<(String, Run)>> {
        let labelled: Vec<(String, HashMap<String, String>)> = match self.store {
            Store::Volumes => {
                let filters = HashMap::from([("label", vec![format!("{STACK}={}", self.stack)])]);
                let options = ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                docker
                    .list_volumes(Some(options))
                    .await
                    .context("reading the journal")?
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|volume| (volume.name, volume.labels))
                    .collect()
            }
            Store::SwarmConfigs => configs::labelled(docker, STACK, &self.stack)
                .await
                .context("reading the journal")?
                .into_iter()
                .map(|record| (record.name, record.labels))
                .collect(),
        };
        Ok(labelled
            .into_iter()
            .filter_map(|(name, labels)| {
                let run = serde_json::from_str(labels.get(RECORD)?).ok()?;
                Some((name, run))
            })
            .collect())
    }

    /// The names of every record (the volumes `wsctl down --volumes`
    /// removes, or the Swarm configs).
    pub async fn volumes(&self, docker: &Docker) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .records(docker)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes every record (`wsctl down --volumes`).
    pub async fn remove_all(&self, docker: &Docker) -> anyhow::Result<()> {
        for name in self.volumes(docker).await? {
            match self.store {
                Store::Volumes => docker
                    .remove_volume(
                        &name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                    .with_context(|| format!("removing the journal record {name}"))?,
                Store::SwarmConfigs => configs::remove(docker, &name).await?,
            }
        }
        Ok(())
    }

    /// Drops the oldest runs beyond `KEEP` (best effort).
    async fn prune(&self, docker: &Docker) {
        let Ok(records) = self.records(docker).await else {
            return;
        };
        let mut ids: Vec<&str> = records.iter().map(|(_, run)| run.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let Some(&keep_from) = ids.len().checked_sub(KEEP).and_then(|cut| ids.get(cut)) else {
            return;
        };
        for (name, run) in &records {
            if run.id.as_str() < keep_from {
                self.remove_record(docker, name).await;
            }
        }
    }

    /// Removes one record (best effort: a failure leaves an old record,
    /// which readers skip for the newer one).
    async fn remove_record(&self, docker: &Docker, name: &str) {
        let removed = match self.store {
            Store::Volumes => match docker
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Err(error) if docker::status_of(&error) != Some(404) => Err(error.into()),
                _ => Ok(()),
            },
            Store::SwarmConfigs => configs::remove(docker, name).await,
        };
        if let Err(error) = removed {
            tracing::warn!(error = %format!("{error:#}"), record = name, "removing an old journal record");
        }
    }
}

/// Runs that left the stack for `recover`: their process died (or its
/// machine was lost) while holding the lock, or a restore failed. Seen by
/// a holder of the lock, an in-progress run is a dead one.
pub fn unfinished(runs: &[Run]) -> Vec<&Run> {
    runs.iter()
        .filter(|run| matches!(run.outcome, Outcome::InProgress | Outcome::NeedsRecover))
        .collect()
}

/// The deploy left paused by `--no-switch`, when it is the last word: no
/// run came after it but a replacement of Nginx (`deploy --proxy`), which
/// leaves both colours as they were, or a refusal, which changed nothing.
pub fn paused(runs: &[Run]) -> Option<&Run> {
    runs.iter()
        .rev()
        .find(|run| run.action != Action::Proxy && run.outcome != Outcome::Refused)
        .filter(|run| run.outcome == Outcome::Paused)
}

/// Where traffic is, by the journal: the newest run's `traffic`, when that
/// run has ended. `None` when there is no run yet, or when the newest one
/// is in progress or needs `wsctl recover` (a run that died: its lock and
/// `recover` decide, not a reader of the journal). Refusals are passed
/// over: they changed nothing.
pub fn traffic(runs: &[Run]) -> Option<Color> {
    let newest = runs
        .iter()
        .rev()
        .find(|run| run.outcome != Outcome::Refused)?;
    match newest.outcome {
        Outcome::InProgress | Outcome::NeedsRecover => None,
        _ => newest.traffic,
    }
}

/// The colour to roll back to: where the last run that moved traffic took
/// it from, if that run also took it to `live`.
pub fn rollback_target(runs: &[Run], live: Option<Color>) -> Option<(Color, String)> {
    let last = runs.iter().rev().find(|run| run.moved_traffic())?;
    let from = last.from?;
    if live.is_some() && last.traffic != live {
        return None;
    }
    // The image that colour ran: the last run that took traffic to it.
    let image = runs
        .iter()
        .rev()
        .find(|run| run.traffic == Some(from) && run.moved_traffic())
        .map(|run| run.image.clone())
        .unwrap_or_default();
    Some((from, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(from: Option<Color>, to: Color, image: &str) -> Run {
        let mut run = Run::new(Action::Deploy, from, to, image);
        run.outcome = Outcome::Succeeded;
        run.traffic = Some(to);
        run
    }

    #[test]
    fn rollback_goes_back_where_the_last_move_came_from_with_its_image() {
        let mut failed = Run::new(Action::Deploy, Some(Color::Green), Color::Blue, "v3");
        failed.outcome = Outcome::Failed;
        failed.traffic = Some(Color::Green);
        let runs = vec![
            moved(None, Color::Blue, "v1"),
            moved(Some(Color::Blue), Color::Green, "v2"),
            failed,
        ];
        assert_eq!(
            rollback_target(&runs, Some(Color::Green)),
            Some((Color::Blue, "v1".to_string()))
        );
        // Nothing to go back to after the first deploy.
        assert_eq!(rollback_target(&runs[..1], Some(Color::Blue)), None);
    }

    #[test]
    fn traffic_is_where_the_newest_ended_run_left_it() {
        let mut failed = Run::new(Action::Deploy, Some(Color::Green), Color::Blue, "v3");
        failed.outcome = Outcome::Failed;
        failed.traffic = Some(Color::Green);
        let refused = Run::refused(Action::Rollback, Some(Color::Blue), "no");
        let mut running = Run::new(Action::Deploy, Some(Color::Green), Color::Blue, "v4");
        running.traffic = None;
        let moved_to_green = moved(Some(Color::Blue), Color::Green, "v2");
        assert_eq!(traffic(&[]), None);
        assert_eq!(
            traffic(&[moved(None, Color::Blue, "v1"), moved_to_green.clone()]),
            Some(Color::Green)
        );
        // A failed switch says where traffic ended up: back on green.
        assert_eq!(
            traffic(&[moved_to_green.clone(), failed.clone()]),
            Some(Color::Green)
        );
        // A refusal changed nothing, whatever it saw.
        assert_eq!(
            traffic(&[moved_to_green.clone(), refused]),
            Some(Color::Green)
        );
        // A run in progress (or dead before its end) has no word yet.
        assert_eq!(traffic(&[moved_to_green, running]), None);
    }

    #[test]
    fn a_paused_deploy_stays_paused_across_a_proxy_replacement_only() {
        let mut paused_run = Run::new(Action::Deploy, Some(Color::Blue), Color::Green, "v2");
        paused_run.outcome = Outcome::Paused;
        let mut proxy = Run::new(Action::Proxy, Some(Color::Blue), Color::Blue, "nginx");
        proxy.outcome = Outcome::Succeeded;
        let mut switch = Run::new(Action::Switch, Some(Color::Blue), Color::Blue, "v1");
        switch.outcome = Outcome::Failed;
        let runs = vec![paused_run.clone(), proxy.clone()];
        assert_eq!(
            paused(&runs).map(|run| run.id.clone()),
            Some(paused_run.id.clone())
        );
        let runs = vec![paused_run, proxy, switch];
        assert!(paused(&runs).is_none(), "a later run is the last word");
    }

    #[test]
    fn run_ids_sort_by_start_and_runs_serialize_round_trip() {
        let a = Run::new(Action::Deploy, None, Color::Blue, "x");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Run::new(Action::Rollback, Some(Color::Blue), Color::Green, "y");
        assert!(a.id < b.id, "{} {}", a.id, b.id);
        let text = serde_json::to_string(&b).unwrap();
        let back: Run = serde_json::from_str(&text).unwrap();
        assert_eq!(back.id, b.id);
        assert!(text.contains(r#""action":"rollback""#), "{text}");
        assert!(text.contains(r#""outcome":"in_progress""#), "{text}");
    }
}
