//! `wsctl smoke --url URL`: smoke-test a running service. Exit 0 when every
//! check passed, 1 otherwise.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::client::app_checks::{self, AppCheck};
use crate::client::smoke;
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// Base URL of the service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8000",
        conflicts_with = "color"
    )]
    url: String,
    /// Smoke a colour of the stack instead, from inside its container
    /// (straight at its port, not through Nginx; works with a remote engine).
    #[arg(long, value_enum)]
    color: Option<crate::deploy::config::Color>,
    /// The stack's configuration (with --color; must exist when given)
    /// [default: ./wsctl.yaml].
    #[arg(long, short = 'c', env = "WSCTL_CONFIG")]
    config: Option<PathBuf>,
    /// Trust this CA (PEM) for an https:// URL, beside the public roots:
    /// a private CA's certificate on the public address.
    #[arg(long, value_name = "FILE", conflicts_with = "color")]
    ca: Option<PathBuf>,
    /// One JSON object per check, then a summary object.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Check an app that is not ours instead: a JSON list of
    /// `{"http": PATH}` (2xx, or `"status": N`) and `{"websocket": PATH,
    /// "send": TEXT, "expect": TEXT}`, as wsctl.yaml's `smoke:` (with
    /// --color, wsctl.yaml's own list is used).
    #[arg(long, value_name = "JSON", conflicts_with = "color", value_parser = parse_checks)]
    checks: Option<CheckList>,
}

/// `--checks`: one argument holding the whole list (clap would take a
/// `Vec` for repeated values).
#[derive(Debug, Clone)]
struct CheckList(Vec<AppCheck>);

/// `--checks`: a JSON list of checks, each as wsctl.yaml writes it.
fn parse_checks(text: &str) -> Result<CheckList, String> {
    let checks: Vec<AppCheck> = serde_json::from_str(text)
        .map_err(|error| format!("not a JSON list of checks: {error}"))?;
    if checks.is_empty() {
        return Err("lists no check".into());
    }
    for (index, check) in checks.iter().enumerate() {
        if let Some(problem) = check.problem() {
            return Err(format!("check {index} {problem}"));
        }
    }
    Ok(CheckList(checks))
}

/// Some checks failed (the report says which); exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} smoke checks failed")]
pub struct SmokeFailed {
    pub failed: usize,
    pub total: usize,
}

/// `--url`: an http(s) URL with a host, or one line and exit 2.
fn check_url(raw: &str) -> Result<(), crate::shared::input::ConfigError> {
    let bad = |why: String| crate::shared::input::ConfigError(format!("--url '{raw}' {why}"));
    let url = url::Url::parse(raw).map_err(|error| bad(format!("is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad(
            "must be http://HOST[:PORT] or https://HOST[:PORT]".into()
        ));
    }
    Ok(())
}

pub fn run(args: SmokeArgs) -> anyhow::Result<()> {
    if args.color.is_none() {
        check_url(&args.url)?;
    }
    let checks = match &args.color {
        Some(color) => smoke_colour(args.config.as_deref(), *color)?,
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match &args.checks {
                Some(CheckList(checks)) => runtime.block_on(app_checks::run(&args.url, checks)),
                None => {
                    let tls = match &args.ca {
                        Some(ca) => {
                            Some(crate::client::tls::trusting(Some(ca)).map_err(|error| {
                                crate::shared::input::ConfigError(format!("{error:#}"))
                            })?)
                        }
                        None => None,
                    };
                    runtime.block_on(smoke::run(&args.url, tls))
                }
            }
        }
    };
    for check in &checks {
        if args.json {
            let mut line = serde_json::to_value(check)?;
            line["event"] = "check".into();
            say!("{line}");
        } else {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            let detail = if check.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", check.detail)
            };
            say!(
                "{mark} {:<18} {:>8.1} ms{detail}",
                check.name,
                check.duration_ms
            );
        }
    }
    let failed = checks.iter().filter(|check| !check.ok).count();
    if args.json {
        let summary = serde_json::json!({
            "event": "smoke", "url": args.url, "color": args.color, "ok": failed == 0,
            "checks": checks.len(), "failed": failed,
        });
        say!("{summary}");
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, smoke::junit(&args.url, &checks)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if failed > 0 {
        return Err(SmokeFailed {
            failed,
            total: checks.len(),
        }
        .into());
    }
    Ok(())
}

/// Runs the smoke test of each of the colour's containers (on every host of
/// `hosts:`; on Swarm, each running task at its address), from where the
/// deploy runs it, and reads their checks back. With more than one
/// container, each check is named after its container (and host).
fn smoke_colour(
    config: Option<&std::path::Path>,
    color: crate::deploy::config::Color,
) -> anyhow::Result<Vec<smoke::Check>> {
    let stack = crate::deploy::config::StackConfig::load_from(config, true)?;
    let endpoints: Vec<(Option<String>, crate::deploy::docker::Endpoint)> =
        if stack.hosts.is_empty() {
            vec![(None, crate::deploy::docker::Endpoint::of_stack(&stack))]
        } else {
            stack
                .hosts
                .iter()
                .map(|host| {
                    let endpoint = crate::deploy::docker::Endpoint::of_host(host);
                    (Some(host.name.clone()), endpoint)
                })
                .collect()
        };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut all = Vec::new();
        let mut containers = Vec::new();
        for (host, endpoint) in &endpoints {
            let docker = crate::deploy::docker::connect_to(endpoint).await?;
            let base = stack.app(color);
            let at = host
                .as_ref()
                .map_or(String::new(), |host| format!("host {host}: "));
            let names = match stack.is_swarm() {
                true => swarm_tasks(&docker, &stack, color).await?,
                false => crate::deploy::existing_replicas(&docker, &stack, color).await?,
            };
            let what = match stack.is_swarm() {
                true => "no task runs",
                false => "no such container",
            };
            anyhow::ensure!(!names.is_empty(), "{at}{base} is not running ({what})");
            for name in names {
                containers.push((host.clone(), docker.clone(), name));
            }
        }
        let named = containers.len() > 1;
        for (host, docker, container) in containers {
            let label = match &host {
                Some(host) => format!("{host}/{container}"),
                None => container.clone(),
            };
            for mut check in smoke_container(&docker, &container, &stack).await? {
                if named {
                    check.name = format!("{label}: {}", check.name);
                }
                all.push(check);
            }
        }
        Ok(all)
    })
}

/// The overlay addresses of the colour's running tasks (`platform: swarm`),
/// asked of the manager.
async fn swarm_tasks(
    docker: &bollard::Docker,
    config: &crate::deploy::config::StackConfig,
    color: crate::deploy::config::Color,
) -> anyhow::Result<Vec<String>> {
    crate::deploy::ensure_swarm_manager(docker).await?;
    let stack = crate::deploy::Stack::for_looks(docker.clone(), config.clone());
    crate::deploy::task_addresses(&stack, color).await
}

/// The smoke report of one replica: a container, or on Swarm a running
/// task's address (checked from the checker container).
async fn smoke_container(
    docker: &bollard::Docker,
    container: &str,
    stack: &crate::deploy::config::StackConfig,
) -> anyhow::Result<Vec<smoke::Check>> {
    if !stack.is_swarm()
        && crate::deploy::docker::inspect(docker, container)
            .await?
            .is_none_or(|info| !info.running)
    {
        anyhow::bail!("{container} is not running");
    }
    crate::deploy::smoke_replica(docker, stack, container).await
}
