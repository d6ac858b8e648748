//! The stack's Nginx and Redis containers as wsctl.yaml describes them:
//! the container spec of Nginx (used by the first deploy), drift (what
//! runs differs from what is configured, shown by `status`), and
//! `wsctl deploy --proxy`, which replaces Nginx with the configured one.
//!
//! Replacing Nginx cannot be seamless: the new container needs the public
//! port the old one holds, so the open WebSockets are cut (clients
//! reconnect and resume their sessions from Redis) and new connections are
//! refused for the moment between the old container's stop and the new
//! one's start (about a second here). The old container is kept, stopped
//! and renamed, until the new one is verified, and put back if it is not.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use serde_json::{Value, json};

use super::{DeployError, Stack, containers, nginx, preflight_failed};
use crate::docker;
use crate::stack::StackConfig;

/// How long the old Nginx gets to close its connections once it has the
/// stop signal (SIGQUIT, then SIGKILL): they are cut either way, and the
/// public port is closed meanwhile.
const OLD_PROXY_GRACE: Duration = Duration::from_secs(1);

/// The Nginx container wsctl.yaml describes: the configured image, sized
/// for the sockets the configured replicas hold, publishing the public
/// address on the stack's network.
pub fn container_body(config: &StackConfig) -> ContainerCreateBody {
    let public = config.public_socket();
    let bindings = HashMap::from([(
        "80/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some(public.ip().to_string()),
            host_port: Some(public.port().to_string()),
        }]),
    )]);
    let sizing = config.proxy_sizing(config.replicas);
    ContainerCreateBody {
        image: Some(config.images.nginx.clone()),
        entrypoint: Some(vec![
            nginx::NGINX.to_string(),
            "-g".to_string(),
            sizing.directives(),
        ]),
        exposed_ports: Some(vec!["80/tcp".into()]),
        host_config: Some(HostConfig {
            network_mode: Some(config.network_name()),
            port_bindings: Some(bindings),
            restart_policy: containers::unless_stopped(),
            ulimits: Some(vec![bollard::models::ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(sizing.open_files as i64),
                hard: Some(sizing.open_files as i64),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `status`'s view of Nginx and Redis: container, image, and `drift` (why
/// it differs from wsctl.yaml, or null). Redis is shown only when the stack
/// runs its own.
pub async fn drift(stack: &Stack) -> anyhow::Result<Value> {
    let config = &stack.config;
    let mut nginx = component(stack, &config.name("nginx"), &config.images.nginx).await?;
    if nginx["drift"].is_null()
        && let Some(workers) = nginx::running_workers(stack).await
    {
        let wanted = config.proxy_sizing(config.replicas).workers;
        if workers != wanted {
            nginx["drift"] = json!(format!(
                "runs {workers} workers; replicas: {} wants {wanted}",
                config.replicas
            ));
        }
    }
    let redis = match config.owns_redis() {
        true => component(stack, &config.name("redis"), &config.images.redis).await?,
        false => json!({"url": crate::config::masked_url(&config.app_redis_url())}),
    };
    Ok(json!({"nginx": nginx, "redis": redis}))
}

async fn component(stack: &Stack, name: &str, configured: &str) -> anyhow::Result<Value> {
    let Some(info) = docker::inspect(&stack.docker, name).await? else {
        return Ok(
            json!({"container": name, "state": "absent", "configured": configured,
                         "drift": null}),
        );
    };
    let drift = match docker::image_id(&stack.docker, configured).await? {
        None => Some(format!(
            "the configured image {configured} is not on this engine"
        )),
        Some(id) if id != info.image_id => Some(format!(
            "runs {} ({}), wsctl.yaml names {configured} ({})",
            info.image,
            short(&info.image_id),
            short(&id)
        )),
        Some(_) => None,
    };
    Ok(
        json!({"container": name, "state": info.state, "image": info.image,
              "configured": configured, "drift": drift}),
    )
}

/// `sha256:0123456789ab...` -> `0123456789ab`, as `docker images` shows IDs.
fn short(id: &str) -> &str {
    let bare = id.trim_start_matches("sha256:");
    &bare[..bare.len().min(12)]
}

/// `wsctl deploy --proxy`: Nginx recreated from wsctl.yaml (image, sizing,
/// public address), serving the upstream the old one served. The old
/// container is put back when the new one does not start or does not
/// serve the live colour.
pub async fn replace(stack: &mut Stack) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let result = replace_steps(stack).await;
    // The run's summary, as every deploy command ends with one.
    stack.events.emit(json!({
        "event": "proxy", "ok": result.is_ok(), "image": stack.config.images.nginx,
        "seconds": started.elapsed().as_secs_f64(), "steps_ms": stack.events.durations_ms(),
        "detail": result.as_ref().err().map(|error| format!("{error:#}")),
    }));
    result
}

async fn replace_steps(stack: &mut Stack) -> anyhow::Result<()> {
    stack.events.begin("preflight", "engine, nginx image, lock");
    let nginx_image = stack.config.images.nginx.clone();
    if let Err(error) =
        docker::ensure_image(&stack.docker, &nginx_image, &stack.config.registry).await
    {
        return preflight_failed(stack, error);
    }
    stack
        .locked("deploy --proxy", async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            stack.preflight_done(&format!(
                "live: {}",
                live.map_or("none".to_string(), |c| c.to_string())
            ))?;
            let name = stack.config.name("nginx");
            let next = stack.config.name("nginx_next");
            let old = stack.config.name("nginx_old");
            // Leftovers of a replacement that died half-way.
            docker::remove(&stack.docker, &next).await?;
            docker::remove(&stack.docker, &old).await?;

            stack
                .events
                .begin("create", &format!("{next} from {nginx_image}"));
            let created = async {
                let options = CreateContainerOptionsBuilder::default().name(&next).build();
                stack
                    .docker
                    .create_container(Some(options), container_body(&stack.config))
                    .await?;
                if let Some(upstream) = &serving.upstream {
                    nginx::upload_to(stack, &next, upstream).await?;
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = created {
                stack.events.fail(&format!("{error:#}"));
                docker::remove(&stack.docker, &next).await?;
                return Err(error);
            }
            stack.events.ok("created, upstream copied");

            stack
                .events
                .begin("replace", &format!("{name}: old stopped, new started"));
            let replaced = async {
                docker::stop(&stack.docker, &name, OLD_PROXY_GRACE).await?;
                docker::rename(&stack.docker, &name, &old).await?;
                docker::rename(&stack.docker, &next, &name).await?;
                docker::start(&stack.docker, &name).await?;
                match live {
                    Some(color) => nginx::verify(stack, color, Duration::ZERO).await,
                    None => nginx::answers(stack).await,
                }
            }
            .await;
            match replaced {
                Ok(()) => {
                    docker::remove(&stack.docker, &old).await?;
                    stack.events.ok(&format!("{name} runs {nginx_image}"));
                    Ok(())
                }
                Err(error) => {
                    let logs = docker::logs_tail(&stack.docker, &name, 20).await;
                    stack.events.fail(&format!("{error:#}"));
                    put_back(stack, &name, &old, &next).await?;
                    Err(DeployError::Switch(format!(
                        "the new Nginx did not serve ({error:#}); the old one is back. {}",
                        logs.trim()
                    ))
                    .into())
                }
            }
        })
        .await
}

/// Undoes a failed replacement: the new container goes, the old one comes
/// back under its name and starts.
async fn put_back(stack: &Stack, name: &str, old: &str, next: &str) -> anyhow::Result<()> {
    docker::remove(&stack.docker, next).await?;
    if docker::inspect(&stack.docker, old).await?.is_none() {
        // The old container was never renamed: it is still `name`.
        return docker::start(&stack.docker, name).await;
    }
    docker::remove(&stack.docker, name).await?;
    docker::rename(&stack.docker, old, name).await?;
    docker::start(&stack.docker, name).await
}
