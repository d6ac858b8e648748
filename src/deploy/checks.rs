//! Where and how a replica is checked, by `app_kind`.
//!
//! Every check is `wsctl probe` or `wsctl smoke` run by exec through the
//! engine, so it works on every engine wsctl drives (unix, tcp, TLS, ssh)
//! and the host never talks to a container's address:
//! - the bundled service (`app_kind: wsctl`) has wsctl in its image: the
//!   check runs inside the replica, at `127.0.0.1:app_port`;
//! - an external app has nothing of ours: the check runs in the stack's
//!   checker container (`{prefix}checker`, `images.checker`, on the stack's
//!   network), at `REPLICA:app_port`, by the engine's DNS;
//! - on `platform: swarm` every check runs from the checker too (a task
//!   may run on a node whose engine wsctl does not reach), at the task's
//!   overlay address.

use bollard::models::{ContainerCreateBody, HostConfig};

use super::wait::Check;
use crate::client::smoke;
use crate::deploy::config::StackConfig;
use crate::deploy::docker;

/// Where a check of one replica runs, and the base URL it uses there.
pub struct Target {
    /// The container the check is exec'd in.
    pub container: String,
    /// `http://127.0.0.1:8000` inside the replica, or
    /// `http://app_blue:8000` from the checker.
    pub base: String,
}

/// The checker container's name.
pub fn checker(config: &StackConfig) -> String {
    config.name("checker")
}

pub fn target(config: &StackConfig, replica: &str) -> Target {
    if config.checks_from_checker() {
        Target {
            container: checker(config),
            base: format!("http://{replica}:{}", config.app_port),
        }
    } else {
        Target {
            container: replica.to_string(),
            base: format!("http://127.0.0.1:{}", config.app_port),
        }
    }
}

/// The label holding what the checker follows (`platform: swarm`): a
/// checker whose label differs from wsctl.yaml's is created again.
pub const FOLLOW_LABEL: &str = "wsctl.follow";

/// The checker container of an external app's stack: the wsctl image,
/// waiting on the stack's network to be exec'd into. With `follow` (the
/// JSON of `swarm::follow::Spec`) it also keeps Nginx's upstream on the
/// live colour's tasks, through the manager's `socket` mounted in.
pub fn checker_body(config: &StackConfig, follow: Option<(String, String)>) -> ContainerCreateBody {
    let mut labels =
        std::collections::HashMap::from([("wsctl.role".to_string(), "checker".to_string())]);
    let mut cmd = vec!["checker".to_string()];
    let mut env = None;
    let mut binds = None;
    if let Some((spec, socket)) = follow {
        cmd.push("--follow".into());
        env = Some(vec![
            format!("{}={spec}", crate::deploy::swarm::follow::ENV),
            format!(
                "DOCKER_HOST=unix://{}",
                crate::deploy::swarm::follow::SOCKET
            ),
        ]);
        binds = Some(vec![format!(
            "{socket}:{}",
            crate::deploy::swarm::follow::SOCKET
        )]);
        labels.insert(FOLLOW_LABEL.to_string(), spec);
    }
    ContainerCreateBody {
        image: Some(config.checker_image().to_string()),
        cmd: Some(cmd),
        env,
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(config.network_name()),
            restart_policy: docker::unless_stopped(),
            init: Some(true),
            binds,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Errors of an exec that no retry can fix: the program is not there.
fn missing_program(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("no such file or directory") || text.contains("executable file not found")
}

/// One readiness check of `replica`: its health path answers 2xx.
pub async fn ready(docker: &bollard::Docker, config: &StackConfig, replica: &str) -> Check<()> {
    let target = target(config, replica);
    let url = format!("{}{}", target.base, config.health_path());
    let command = ["/wsctl", "probe", "--timeout", "1", &url];
    let failed_to_run = |text: &str| {
        let why = text.trim();
        if config.is_external() {
            Check::Failed(format!(
                "the checker container {} cannot run wsctl ({why}): images.checker must be \
                 a wsctl image",
                target.container
            ))
        } else {
            Check::Failed(format!(
                "{replica} has no /wsctl ({why}): for an app that is not wsctl serve, set \
                 app_kind: external (README: Deploying your own WebSocket service)"
            ))
        }
    };
    match docker::exec(docker, &target.container, &command).await {
        Ok((0, _)) => Check::Ready(()),
        Ok((_, output)) if missing_program(&output) => failed_to_run(&output),
        Ok((_, output)) => Check::Pending(output.trim().to_string()),
        Err(error) if missing_program(&format!("{error:#}")) => {
            failed_to_run(&format!("{error:#}"))
        }
        Err(error) => {
            if config.checks_from_checker() && !running(docker, &target.container).await {
                return Check::Failed(format!(
                    "the checker container {} is not running",
                    target.container
                ));
            }
            Check::Pending(format!("{error:#}"))
        }
    }
}

async fn running(docker: &bollard::Docker, name: &str) -> bool {
    matches!(docker::inspect(docker, name).await, Ok(Some(info)) if info.running)
}

/// The smoke test of `replica`: the bundled service's own checks, or the
/// external app's `smoke:` list; each check as `wsctl smoke --json`
/// reported it.
pub async fn smoke(
    docker: &bollard::Docker,
    config: &StackConfig,
    replica: &str,
) -> anyhow::Result<Vec<smoke::Check>> {
    let target = target(config, replica);
    let mut command = vec![
        "/wsctl".to_string(),
        "smoke".into(),
        "--json".into(),
        "--url".into(),
        target.base.clone(),
    ];
    if config.is_external() {
        command.push("--checks".into());
        command.push(serde_json::to_string(&config.app_checks())?);
    }
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let (_, output) = docker::exec(docker, &target.container, &command).await?;
    let checks: Vec<smoke::Check> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["event"] == "check")
        .filter_map(|line| serde_json::from_value(line).ok())
        .collect();
    anyhow::ensure!(
        !checks.is_empty(),
        "no smoke report from {}: {}",
        target.container,
        output.trim()
    );
    Ok(checks)
}

/// The body `replica` answers at `path` (2xx only), by exec.
pub async fn read(
    docker: &bollard::Docker,
    config: &StackConfig,
    replica: &str,
    path: &str,
) -> Option<String> {
    let target = target(config, replica);
    let url = format!("{}{path}", target.base);
    match docker::exec(
        docker,
        &target.container,
        &["/wsctl", "probe", "--print", &url],
    )
    .await
    {
        Ok((0, body)) => Some(body),
        _ => None,
    }
}

/// The bundled service's `/status` of `replica`; `None` for an external
/// app (it has no such page) or when it does not answer.
pub async fn service_status(
    docker: &bollard::Docker,
    config: &StackConfig,
    replica: &str,
) -> Option<serde_json::Value> {
    if config.is_external() {
        return None;
    }
    let body = read(docker, config, replica, "/status").await?;
    serde_json::from_str(body.trim()).ok()
}

/// The Prometheus metrics of `replica` with the contract's names: the
/// bundled service's `/metrics`, an external app's `metrics_path`.
pub async fn metrics(
    docker: &bollard::Docker,
    config: &StackConfig,
    replica: &str,
) -> Option<String> {
    let path = match config.is_external() {
        false => "/metrics",
        true => config.metrics_path.as_deref()?,
    };
    read(docker, config, replica, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_in_the_replica_or_from_the_checker() {
        let bundled = StackConfig::default();
        let inside = target(&bundled, "app_blue");
        assert_eq!(
            (inside.container.as_str(), inside.base.as_str()),
            ("app_blue", "http://127.0.0.1:8000")
        );
        let external = StackConfig {
            app_kind: crate::deploy::config::AppKind::External,
            prefix: "t_".into(),
            ..StackConfig::default()
        };
        let beside = target(&external, "t_app_blue_2");
        assert_eq!(
            (beside.container.as_str(), beside.base.as_str()),
            ("t_checker", "http://t_app_blue_2:8000")
        );
        assert!(missing_program(
            "OCI runtime exec failed: exec: \"/wsctl\": stat /wsctl: no such file or directory"
        ));
        assert!(!missing_program("connection refused"));
    }
}
