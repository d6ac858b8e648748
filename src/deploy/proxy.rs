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
//! The replacement is a plan of its own (`Plan::proxy`: Created, Replaced),
//! run, journaled and undone by the runner like any other.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use serde::Serialize;

use super::wait::{Check, poll_until};
use super::{DeployError, Stack, nginx};
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::docker;

/// How long the old Nginx gets to close its connections once it has the
/// stop signal (SIGQUIT, then SIGKILL): they are cut either way, and the
/// public port is closed meanwhile.
const OLD_PROXY_GRACE: Duration = Duration::from_secs(1);

/// The Nginx container wsctl.yaml describes: the configured image, sized
/// for the sockets the configured replicas hold, publishing the public
/// address on the stack's network, or with `nginx_network: host` on the
/// host's network, where it listens on the public address itself
/// (`install_listener`).
pub fn container_body(config: &StackConfig) -> ContainerCreateBody {
    let bindings = published_ports(config);
    let exposed = bindings.keys().cloned().collect();
    let sizing = config.proxy_sizing(config.replicas);
    let network = match config.nginx_on_host() {
        true => HOST_NETWORK.to_string(),
        false => config.network_name(),
    };
    ContainerCreateBody {
        image: Some(config.images.nginx.clone()),
        entrypoint: Some(vec![
            nginx::NGINX.to_string(),
            "-g".to_string(),
            sizing.directives(),
        ]),
        exposed_ports: Some(exposed),
        host_config: Some(HostConfig {
            network_mode: Some(network),
            port_bindings: Some(bindings),
            restart_policy: docker::unless_stopped(),
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

/// The container ports Nginx publishes, and where: the public address on
/// its plain listener (80), or with `tls:` on its TLS listener (443) and
/// `http_address`, when set, on the plain one, which then only redirects.
pub fn published_ports(config: &StackConfig) -> HashMap<String, Option<Vec<PortBinding>>> {
    if config.nginx_on_host() {
        return HashMap::new();
    }
    let binding = |address: std::net::SocketAddr| {
        Some(vec![PortBinding {
            host_ip: Some(address.ip().to_string()),
            host_port: Some(address.port().to_string()),
        }])
    };
    let public = config.public_socket();
    let mut bindings = HashMap::new();
    if config.tls.is_none() {
        bindings.insert("80/tcp".to_string(), binding(public));
        return bindings;
    }
    bindings.insert("443/tcp".to_string(), binding(public));
    if let Some(http) = config
        .http_address
        .as_deref()
        .and_then(|http| http.parse().ok())
    {
        bindings.insert("80/tcp".to_string(), binding(http));
    }
    bindings
}

/// How the ports an Nginx container publishes differ from what wsctl.yaml
/// wants (TLS turned on or off, another address), in one line that says
/// what fixes it; `None` when they agree.
pub fn ports_drift(config: &StackConfig, nginx: &docker::ContainerInfo) -> Option<String> {
    let on_host = nginx.network_mode == HOST_NETWORK;
    if on_host != config.nginx_on_host() {
        let (runs, wanted) = match on_host {
            true => ("host", "stack"),
            false => ("stack", "host"),
        };
        return Some(format!(
            "runs on the {runs} network, wsctl.yaml wants nginx_network: {wanted}: `wsctl \
             deploy --proxy` replaces it"
        ));
    }
    let wanted = docker::published(Some(published_ports(config)));
    if nginx.published == wanted {
        return None;
    }
    let show = |ports: &std::collections::BTreeMap<String, String>| {
        ports
            .iter()
            .map(|(port, address)| format!("{address} -> {port}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "publishes {}, wsctl.yaml wants {} (tls:, public_address, http_address): \
         `wsctl deploy --proxy` replaces it",
        show(&nginx.published),
        show(&wanted)
    ))
}

/// A container of the stack besides the app (Nginx, Redis), as `status`
/// shows it: `drift` says why it differs from wsctl.yaml (null: it does
/// not).
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub container: String,
    /// The engine's state, or `absent`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub configured: String,
    pub drift: Option<String>,
}

/// Redis as `status` shows it: the stack's own container, or the URL of
/// the one it uses (password masked).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RedisView {
    Container(Component),
    External { url: String },
}

/// `status`'s view of Nginx and Redis: container, image, and drift.
/// Redis is shown as a container only when the stack runs its own.
pub async fn drift(stack: &Stack) -> anyhow::Result<(Component, RedisView)> {
    let config = &stack.config;
    let mut nginx = component(stack, &config.name("nginx"), &config.images.nginx).await?;
    if nginx.drift.is_none()
        && let Some(info) = docker::inspect(&stack.docker, &config.name("nginx")).await?
    {
        nginx.drift = ports_drift(config, &info);
    }
    if nginx.drift.is_none()
        && let Some(workers) = nginx::running_workers(stack).await
    {
        let wanted = config.proxy_sizing(config.replicas).workers;
        if workers != wanted {
            nginx.drift = Some(format!(
                "runs {workers} workers; replicas: {} wants {wanted}",
                config.replicas
            ));
        }
    }
    let redis = match config.owns_redis() {
        true => RedisView::Container(
            component(stack, &config.name("redis"), &config.images.redis).await?,
        ),
        false => RedisView::External {
            url: crate::shared::input::masked_url(&config.app_redis_url()),
        },
    };
    Ok((nginx, redis))
}

async fn component(stack: &Stack, name: &str, configured: &str) -> anyhow::Result<Component> {
    let Some(info) = docker::inspect(&stack.docker, name).await? else {
        return Ok(Component {
            container: name.to_string(),
            state: "absent".into(),
            image: None,
            configured: configured.to_string(),
            drift: None,
        });
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
    Ok(Component {
        container: name.to_string(),
        state: info.state,
        image: Some(info.image),
        configured: configured.to_string(),
        drift,
    })
}

/// `sha256:0123456789ab...` -> `0123456789ab`, as `docker images` shows IDs.
fn short(id: &str) -> &str {
    let bare = id.trim_start_matches("sha256:");
    &bare[..bare.len().min(12)]
}

/// The Docker network a container on the host's own network is attached to.
pub const HOST_NETWORK: &str = "host";

/// With `nginx_network: host`, the created (not yet started) Nginx
/// `container` listens on the public address itself: its plain listener
/// (`conf.d/listen.conf`, port 80 in the image) is rewritten. Nothing to do
/// on the stack's network.
pub async fn install_listener(stack: &Stack, container: &str) -> anyhow::Result<()> {
    if !stack.config.nginx_on_host() {
        return Ok(());
    }
    let listen = format!(
        "# nginx_network: host: public_address itself (wsctl.yaml).\nlisten {} reuseport;\n",
        stack.config.public_socket()
    );
    docker::upload_file(
        &stack.docker,
        container,
        "/etc/nginx/conf.d",
        "listen.conf",
        listen.as_bytes(),
    )
    .await
}

/// With `nginx_network: host`, refuses a public address where something
/// already listens, before Nginx is created: its `reuseport` listener would
/// not fail there but share the address with that process (the kernel lets
/// processes of one user bind an address together with SO_REUSEPORT), and
/// new connections would go to either.
pub async fn check_address_free(stack: &Stack) -> anyhow::Result<()> {
    if !stack.config.nginx_on_host() {
        return Ok(());
    }
    let address = stack.config.public_socket();
    let connect = tokio::net::TcpStream::connect(address);
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
        return Err(DeployError::Usage(format!(
            "public_address {address} is in use (something accepts connections there); \
             choose another in wsctl.yaml"
        ))
        .into());
    }
    Ok(())
}

/// With `nginx_network: host`, refuses a started Nginx whose nginx.conf
/// does not read `conf.d/listen*.conf` (an image from before the option):
/// it would listen on the host's port 80 instead of the public address.
pub async fn check_listener(stack: &Stack, container: &str) -> anyhow::Result<()> {
    if !stack.config.nginx_on_host() {
        return Ok(());
    }
    // The listener is taken (or Nginx failed otherwise): its own words.
    let exited = || async {
        let log = docker::logs_tail(&stack.docker, container, 5).await;
        anyhow::anyhow!("{container} exited: {}", log.trim())
    };
    let dumped = nginx::config_dump(&stack.docker, container).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    if !docker::inspect(&stack.docker, container)
        .await?
        .is_some_and(|info| info.running)
    {
        return Err(exited().await);
    }
    if dumped?.contains("conf.d/listen.conf") {
        return Ok(());
    }
    Err(DeployError::Usage(format!(
        "the Nginx image {} does not include conf.d/listen*.conf in its nginx.conf, so on \
         nginx_network: host it cannot listen on public_address: build it again \
         (scripts/build-images.sh)",
        stack.config.images.nginx
    ))
    .into())
}

/// `deploy --proxy`, its first step: the new Nginx (`nginx_next`) created
/// from wsctl.yaml with the upstream the old one serves. Leftovers of a
/// replacement that died half-way go first.
pub async fn create_next(stack: &Stack, upstream: Option<&str>) -> anyhow::Result<()> {
    let next = stack.config.name("nginx_next");
    docker::remove(&stack.docker, &next).await?;
    docker::remove(&stack.docker, &stack.config.name("nginx_old")).await?;
    docker::create_new(&stack.docker, &next, container_body(&stack.config)).await?;
    install_listener(stack, &next).await?;
    if let Some(upstream) = upstream {
        nginx::upload_to(stack, &next, upstream).await?;
    }
    nginx::install_tls(stack, &next).await?;
    Ok(())
}

/// `deploy --proxy`, its second step: the old Nginx stopped and kept as
/// `nginx_old`, the new one started under the stack's name and verified
/// to serve `live` (or to answer, when nothing is live). The old one stays
/// until every edge serves from its new Nginx (`remove_old`): the step's
/// undo, `put_back`, needs it.
pub async fn replace_with_next(stack: &Stack, live: Option<Color>) -> anyhow::Result<()> {
    let name = stack.config.name("nginx");
    let next = stack.config.name("nginx_next");
    let old = stack.config.name("nginx_old");
    let replaced = async {
        if !stack.config.is_external() {
            clients_leave_with_goodbye(stack, &name).await?;
        }
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
    if let Err(error) = replaced {
        return Err(DeployError::Switch(format!("the new Nginx did not serve ({error:#})")).into());
    }
    Ok(())
}

/// The old Nginx a replacement kept, removed once every edge is replaced.
pub async fn remove_old(stack: &Stack) -> anyhow::Result<()> {
    docker::remove(&stack.docker, &stack.config.name("nginx_old")).await
}

/// Before the old Nginx goes, its clients leave with the contract's
/// goodbye instead of a cut (a cut between counting a message and its
/// answer counted it twice on resume): the old Nginx stops accepting
/// (SIGQUIT, its graceful stop: listeners closed, open sockets kept), every
/// replica of the bundled service moves its connections (`goodbye` and
/// 1001, paced over `DRAIN_WINDOW`), and once they are gone the old Nginx
/// exits by itself (at most `drain_timeout`; whatever is left then is
/// stopped). Clients that reconnect meanwhile are refused until the new
/// Nginx starts, and retry.
async fn clients_leave_with_goodbye(stack: &Stack, name: &str) -> anyhow::Result<()> {
    docker::signal(&stack.docker, name, "SIGQUIT").await?;
    let moved_before = std::time::Instant::now();
    super::reloads::move_clients(&stack.docker, &stack.config, moved_before).await;
    let _ = poll_until(
        stack.config.drain_timeout(),
        Duration::from_millis(100),
        || async {
            match docker::inspect(&stack.docker, name).await {
                Ok(Some(info)) if info.running => Check::Pending("old Nginx draining".into()),
                _ => Check::Ready(()),
            }
        },
    )
    .await;
    Ok(())
}

/// Undoes a replacement: the new container goes, the old one comes back
/// under its name and starts.
pub async fn put_back(stack: &Stack) -> anyhow::Result<()> {
    let name = stack.config.name("nginx");
    let next = stack.config.name("nginx_next");
    let old = stack.config.name("nginx_old");
    docker::remove(&stack.docker, &next).await?;
    if docker::inspect(&stack.docker, &old).await?.is_none() {
        // The old container was never renamed: it is still `name`.
        return docker::start(&stack.docker, &name).await;
    }
    docker::remove(&stack.docker, &name).await?;
    docker::rename(&stack.docker, &old, &name).await?;
    docker::start(&stack.docker, &name).await
}

/// The edge ready for `tls:` before a command that moves traffic (see
/// `Engine::prepare_edge`): the ports it publishes are the ones wsctl.yaml
/// wants, and it holds the current certificate. Nothing to do without `tls:`.
pub async fn prepare_edge(stack: &Stack) -> anyhow::Result<()> {
    if stack.config.tls.is_none() {
        return Ok(());
    }
    check_ports(stack).await?;
    let nginx = stack.config.name("nginx");
    if nginx::install_tls(stack, &nginx).await? == Some(super::tls::Synced::Uploaded) {
        nginx::reload(stack).await?;
    }
    Ok(())
}

/// Refuses an Nginx that publishes other ports than wsctl.yaml wants.
pub async fn check_ports(stack: &Stack) -> anyhow::Result<()> {
    let nginx = stack.config.name("nginx");
    let Some(info) = docker::inspect(&stack.docker, &nginx).await? else {
        return Ok(());
    };
    if let Some(drift) = ports_drift(&stack.config, &info) {
        return Err(DeployError::Usage(format!("{nginx} {drift}")).into());
    }
    Ok(())
}
