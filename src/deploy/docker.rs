//! The Docker Engine, behind one module: one `connect()` that honours
//! `DOCKER_HOST` (unix, tcp with or without TLS, ssh) and negotiates the API version (the engine
//! may be older than bollard's default), and the calls wsctl makes.

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use std::collections::HashMap;

/// The engine could not be reached (a distinct exit code for CI).
#[derive(Debug, thiserror::Error)]
#[error("Docker Engine unreachable at {endpoint}: {reason}")]
pub struct EngineUnreachable {
    pub endpoint: String,
    pub reason: String,
}

/// Where an engine is and how to reach it: the docker CLI's `DOCKER_HOST`,
/// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`, or a host of wsctl.yaml.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `unix:///path`, `tcp://host:port` or `ssh://user@host`.
    pub docker_host: String,
    pub tls_verify: bool,
    /// ca.pem, cert.pem and key.pem (default ~/.docker).
    pub cert_path: Option<std::path::PathBuf>,
    /// The key `ssh` logs in with (default: the ssh client's own).
    pub ssh_key: Option<std::path::PathBuf>,
}

impl Endpoint {
    /// The engine the docker CLI would use (default: the local socket).
    pub fn from_env() -> Endpoint {
        let set = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Endpoint {
            docker_host: set("DOCKER_HOST").unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
            tls_verify: set("DOCKER_TLS_VERIFY").is_some(),
            cert_path: set("DOCKER_CERT_PATH").map(Into::into),
            ssh_key: None,
        }
    }

    /// The engine one stack of wsctl.yaml is driven through: with
    /// `platform: swarm`, `swarm.manager` when given; else `DOCKER_HOST`.
    pub fn of_stack(config: &crate::deploy::config::StackConfig) -> Endpoint {
        let manager = config
            .swarm
            .manager
            .as_deref()
            .filter(|_| config.is_swarm());
        match manager {
            Some(manager) => Endpoint {
                docker_host: manager.to_string(),
                ..Endpoint::from_env()
            },
            None => Endpoint::from_env(),
        }
    }

    /// A host of wsctl.yaml's `hosts:`.
    pub fn of_host(host: &crate::deploy::config::Host) -> Endpoint {
        Endpoint {
            docker_host: host.docker_host.clone(),
            tls_verify: host.tls_verify,
            cert_path: host.cert_path.clone(),
            ssh_key: host.ssh_key.clone(),
        }
    }

    /// A client for this endpoint (no request made yet).
    fn client(&self) -> Result<Docker, String> {
        const TIMEOUT_SECONDS: u64 = 120;
        let version = bollard::API_DEFAULT_VERSION;
        let host = self.docker_host.as_str();
        let made = match host.split_once("://").map(|(scheme, _)| scheme) {
            Some("unix") => Docker::connect_with_unix(host, TIMEOUT_SECONDS, version),
            Some("tcp") | Some("https") if self.tls_verify => {
                let certs = match &self.cert_path {
                    Some(path) => path.clone(),
                    None => std::env::home_dir()
                        .ok_or("no home directory for ~/.docker certificates")?
                        .join(".docker"),
                };
                Docker::connect_with_ssl(
                    host,
                    &certs.join("key.pem"),
                    &certs.join("cert.pem"),
                    &certs.join("ca.pem"),
                    TIMEOUT_SECONDS,
                    version,
                )
            }
            Some("tcp") | Some("http") => Docker::connect_with_http(host, TIMEOUT_SECONDS, version),
            Some("ssh") if crate::deploy::config::ssh_port_given(host) => {
                return Err(format!(
                    "{host} names a port, which bollard 0.21's ssh client drops; name it in \
                     ~/.ssh/config (Host NAME, HostName, Port) and use ssh://user@NAME"
                ));
            }
            Some("ssh") => {
                let key = self.ssh_key.as_ref().map(|key| key.display().to_string());
                Docker::connect_with_ssh(host, TIMEOUT_SECONDS, version, key)
            }
            _ => return Err("not a unix://, tcp:// or ssh:// address".into()),
        };
        made.map_err(|error| error.to_string())
    }
}

/// Connects to the engine the environment names (`DOCKER_HOST`, as the
/// docker CLI reads it).
pub async fn connect() -> anyhow::Result<Docker> {
    connect_to(&Endpoint::from_env()).await
}

/// Connects to `endpoint` and agrees on an API version both sides speak
/// (the engine may be older than bollard's default).
pub async fn connect_to(endpoint: &Endpoint) -> anyhow::Result<Docker> {
    let unreachable = |reason: String| EngineUnreachable {
        endpoint: endpoint.docker_host.clone(),
        reason,
    };
    let docker = endpoint.client().map_err(unreachable)?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    docker
        .ping()
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    Ok(docker)
}

/// Builds `tag` from a tar build context, checking every message of the
/// build stream for an error; returns the image id.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    labels: &HashMap<String, String>,
    context_tar: Vec<u8>,
) -> anyhow::Result<String> {
    let labels: HashMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream =
        docker.build_image(options, None, Some(bollard::body_full(context_tar.into())));
    while let Some(message) = stream.next().await {
        let message = message.with_context(|| format!("building {tag}"))?;
        if let Some(error) = message.error_detail.and_then(|detail| detail.message) {
            anyhow::bail!("building {tag}: {error}");
        }
    }
    let image = docker
        .inspect_image(tag)
        .await
        .with_context(|| format!("inspecting the image {tag} just built"))?;
    Ok(image.id.unwrap_or_default())
}

/// The HTTP status of an engine error, for idempotent calls (404 on remove
/// = already gone, 304 on start/stop = already there, 409 = name taken).
pub fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Makes sure `image` is present, pulling it (with progress lines on
/// stderr, and the registry's credentials) when it is not; every pull
/// message is checked for an error.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    registry: &crate::deploy::config::RegistrySettings,
) -> anyhow::Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(error) if status_of(&error) == Some(404) => {}
        Err(error) => return Err(error).with_context(|| format!("inspecting image {image}")),
    }
    let (name, tag) = split_reference(image);
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(name)
        .tag(tag)
        .build();
    let credentials = crate::deploy::registry::credentials_for(image, registry)?;
    let mut pull = docker.create_image(Some(options), None, credentials);
    while let Some(message) = pull.next().await {
        let message = message.with_context(|| {
            // The hint only for the images scripts/build-images.sh makes.
            let ours = ["wsctl:local", "wsctl-nginx:local", "wsctl-redis:local"];
            match ours.contains(&image) {
                true => format!(
                    "pulling {image} (no registry? build it locally: scripts/build-images.sh)"
                ),
                false => format!("pulling {image}"),
            }
        })?;
        if let Some(error) = message.error_detail.and_then(|detail| detail.message) {
            anyhow::bail!("pulling {image}: {error}");
        }
        if let Some(status) = message.status {
            crate::shared::secrets::say_err!("pull {image}: {status}");
        }
    }
    Ok(())
}

/// Pushes `image` (NAME:TAG) with its registry's credentials, progress
/// lines on stderr; every push message is checked for an error.
pub async fn push_image(
    docker: &Docker,
    image: &str,
    registry: &crate::deploy::config::RegistrySettings,
) -> anyhow::Result<()> {
    let (name, tag) = split_reference(image);
    let credentials = crate::deploy::registry::credentials_for(image, registry)?;
    let options = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let mut push = docker.push_image(name, Some(options), credentials);
    while let Some(message) = push.next().await {
        let message = message.with_context(|| format!("pushing {image}"))?;
        if let Some(error) = message.error_detail.and_then(|detail| detail.message) {
            anyhow::bail!("pushing {image}: {error}");
        }
        if let Some(status) = message.status {
            crate::shared::secrets::say_err!("push {image}: {status}");
        }
    }
    Ok(())
}

/// `registry:5000/app:1` -> (`registry:5000/app`, `1`); no tag is `latest`.
fn split_reference(image: &str) -> (&str, &str) {
    image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .unwrap_or((image, "latest"))
}

/// The engine's own clock: leases (the deploy lock) are judged on it, so a
/// wrong clock on one machine driving the engine cannot break them.
pub async fn engine_time(docker: &Docker) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let info = docker
        .info()
        .await
        .context("asking the engine for its time")?;
    let stamp = info.system_time.unwrap_or_default();
    parse_time(&stamp).with_context(|| format!("the engine's time '{stamp}'"))
}

/// An engine timestamp (RFC 3339 with nanoseconds); `None` for Go's zero time.
pub fn parse_time(stamp: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|at| at.with_timezone(&chrono::Utc))
        .filter(|at| chrono::Datelike::year(at) > 1)
}

/// Creates the network unless it exists: a bridge, or (`overlay`, on a
/// swarm manager) an attachable overlay that services' tasks and the
/// manager's own containers share.
pub async fn ensure_network(docker: &Docker, name: &str, overlay: bool) -> anyhow::Result<()> {
    match docker.inspect_network(name, None).await {
        Ok(_) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => {
            let request = bollard::models::NetworkCreateRequest {
                name: name.to_string(),
                driver: Some(if overlay { "overlay" } else { "bridge" }.into()),
                attachable: overlay.then_some(true),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => Ok(()),
                Err(error) if status_of(&error) == Some(409) => Ok(()),
                Err(error) => Err(error).with_context(|| format!("creating network {name}")),
            }
        }
        Err(error) => Err(error).with_context(|| format!("inspecting network {name}")),
    }
}

/// Removes an image by name (an untag when other names share it); `false`
/// when it is already gone. An image a container uses is refused (409).
pub async fn remove_image(docker: &Docker, image: &str) -> anyhow::Result<bool> {
    match docker
        .remove_image(
            image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if status_of(&error) == Some(404) => Ok(false),
        Err(error) => Err(error).with_context(|| format!("removing image {image}")),
    }
}

/// What wsctl needs to know about a container.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// When the engine created it (RFC 3339, the engine's clock).
    pub created: Option<String>,
    pub state: String,
    pub running: bool,
    /// `healthy`, `unhealthy`, `starting`, or `none` without a HEALTHCHECK.
    pub health: String,
    /// The image reference it was created from (`wsctl-nginx:local`).
    pub image: String,
    /// The ID of the image it runs: a tag moved to a new build since is
    /// drift, though the reference reads the same.
    pub image_id: String,
    pub started_at: Option<String>,
    pub exit_code: Option<i64>,
    pub labels: HashMap<String, String>,
    /// Its IP address on each network it is attached to, by network name.
    pub addresses: HashMap<String, String>,
    /// What it publishes: container port (`80/tcp`) to `IP:PORT` on the host.
    pub published: std::collections::BTreeMap<String, String>,
    /// `host`, `bridge`, a network's name, or `container:ID`.
    pub network_mode: String,
}

/// The container's state, or `None` when it does not exist.
pub async fn inspect(docker: &Docker, name: &str) -> anyhow::Result<Option<ContainerInfo>> {
    let container = match docker.inspect_container(name, None).await {
        Ok(container) => container,
        Err(error) if status_of(&error) == Some(404) => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("inspecting {name}")),
    };
    let state = container.state.unwrap_or_default();
    let config = container.config.unwrap_or_default();
    let image_id = container.image.unwrap_or_default();
    let host_config = container.host_config.unwrap_or_default();
    let network_mode = host_config.network_mode.unwrap_or_default();
    let published = published(host_config.port_bindings);
    let addresses = container
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(network, endpoint)| {
            endpoint
                .ip_address
                .filter(|address| !address.is_empty())
                .map(|address| (network, address))
        })
        .collect();
    Ok(Some(ContainerInfo {
        id: container.id.unwrap_or_default(),
        name: name.to_string(),
        created: container.created,
        state: state
            .status
            .map(|status| status.to_string())
            .unwrap_or_default(),
        running: state.running.unwrap_or(false),
        health: state
            .health
            .and_then(|health| health.status)
            .map(|status| status.to_string())
            .unwrap_or_else(|| "none".into()),
        image: config.image.unwrap_or_default(),
        image_id,
        started_at: state.started_at,
        exit_code: state.exit_code,
        labels: config.labels.unwrap_or_default(),
        addresses,
        published,
        network_mode,
    }))
}

/// Port bindings as `80/tcp` -> `127.0.0.1:8080` (the first binding of each).
pub fn published(
    bindings: Option<HashMap<String, Option<Vec<bollard::models::PortBinding>>>>,
) -> std::collections::BTreeMap<String, String> {
    bindings
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(port, bound)| {
            let first = bound?.into_iter().next()?;
            let ip = first
                .host_ip
                .filter(|ip| !ip.is_empty())
                .unwrap_or("0.0.0.0".into());
            Some((
                port,
                format!("{ip}:{}", first.host_port.unwrap_or_default()),
            ))
        })
        .collect()
}

/// Names (without the engine's leading `/`) of the containers, running or
/// not, whose name contains `fragment`.
pub async fn container_names(docker: &Docker, fragment: &str) -> anyhow::Result<Vec<String>> {
    let filters = HashMap::from([("name", vec![fragment])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .with_context(|| format!("listing containers named like {fragment}"))?;
    Ok(containers
        .into_iter()
        .flat_map(|container| container.names.unwrap_or_default())
        .map(|name| name.trim_start_matches('/').to_string())
        .collect())
}

/// The ID of a local image; `None` when the engine does not have it.
pub async fn image_id(docker: &Docker, image: &str) -> anyhow::Result<Option<String>> {
    match docker.inspect_image(image).await {
        Ok(inspected) => Ok(inspected.id),
        Err(error) if status_of(&error) == Some(404) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("inspecting image {image}")),
    }
}

/// What `create` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// A new container, with its id.
    New(String),
    /// Another container has the name already (409).
    NameTaken,
}

/// Creates a container named `name`: the one call wsctl creates
/// containers with. A taken name is an answer, not an error: the lock and
/// the bootstrap decide what it means.
pub async fn create(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> anyhow::Result<Created> {
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(name)
        .build();
    match docker.create_container(Some(options), body).await {
        Ok(created) => Ok(Created::New(created.id)),
        Err(error) if status_of(&error) == Some(409) => Ok(Created::NameTaken),
        Err(error) => Err(error).with_context(|| format!("creating {name}")),
    }
}

/// Creates a container whose name must be free.
pub async fn create_new(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> anyhow::Result<()> {
    match create(docker, name, body).await? {
        Created::New(_) => Ok(()),
        Created::NameTaken => anyhow::bail!("creating {name}: the name is taken"),
    }
}

/// Renames a container.
pub async fn rename(docker: &Docker, name: &str, new_name: &str) -> anyhow::Result<()> {
    let options = bollard::query_parameters::RenameContainerOptionsBuilder::default()
        .name(new_name)
        .build();
    docker
        .rename_container(name, options)
        .await
        .with_context(|| format!("renaming {name} to {new_name}"))
}

/// Removes a container, running or not; gone already is fine.
pub async fn remove(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing {name}")),
    }
}

/// The name of a running container that publishes host port `port`, if
/// the engine knows one.
pub async fn publishing(docker: &Docker, port: &str) -> Option<String> {
    let filters = HashMap::from([("publish", vec![port])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let listed = docker.list_containers(Some(options)).await.ok()?;
    listed
        .into_iter()
        .flat_map(|container| container.names.unwrap_or_default())
        .map(|name| name.trim_start_matches('/').to_string())
        .next()
}

/// Restart after a crash or an engine restart, but not after `docker stop`
/// (so a drained colour stays stopped).
pub fn unless_stopped() -> Option<bollard::models::RestartPolicy> {
    Some(bollard::models::RestartPolicy {
        name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
        ..Default::default()
    })
}

/// Whether the network `name` exists.
pub async fn network_exists(docker: &Docker, name: &str) -> anyhow::Result<bool> {
    match docker.inspect_network(name, None).await {
        Ok(_) => Ok(true),
        Err(error) if status_of(&error) == Some(404) => Ok(false),
        Err(error) => Err(error).with_context(|| format!("inspecting network {name}")),
    }
}

/// Removes the network `name`; already gone is fine.
pub async fn remove_network(docker: &Docker, name: &str) -> anyhow::Result<()> {
    match docker.remove_network(name).await {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing network {name}")),
    }
}

/// Starts a container; already running is fine.
pub async fn start(docker: &Docker, name: &str) -> anyhow::Result<()> {
    match docker.start_container(name, None).await {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(304) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("starting {name}")),
    }
}

/// Stops a container with SIGTERM, then SIGKILL after `grace`; already
/// stopped or gone is fine.
pub async fn stop(docker: &Docker, name: &str, grace: std::time::Duration) -> anyhow::Result<()> {
    let options = bollard::query_parameters::StopContainerOptionsBuilder::default()
        .t(grace.as_secs().max(1) as i32)
        .build();
    match docker.stop_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(status_of(&error), Some(304) | Some(404)) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("stopping {name}")),
    }
}

/// Sends `signal` (`SIGQUIT`) to a running container's main process.
pub async fn signal(docker: &Docker, name: &str, signal: &str) -> anyhow::Result<()> {
    let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    docker
        .kill_container(name, Some(options))
        .await
        .with_context(|| format!("sending {signal} to {name}"))
}

/// Runs `command` inside a running container; returns its exit code and
/// combined output. No shell is involved (the images are FROM scratch).
pub async fn exec(
    docker: &Docker,
    container: &str,
    command: &[&str],
) -> anyhow::Result<(i64, String)> {
    exec_with_env(docker, container, command, Vec::new()).await
}

/// `exec` with `env` (`NAME=value`) added to the command's environment:
/// a secret passed so stays off the command line (`docker top`).
pub async fn exec_with_env(
    docker: &Docker,
    container: &str,
    command: &[&str],
    env: Vec<String>,
) -> anyhow::Result<(i64, String)> {
    let config = bollard::models::ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(command.iter().map(|part| part.to_string()).collect()),
        env: (!env.is_empty()).then_some(env),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .with_context(|| format!("exec {command:?} in {container}"))?;
    let mut output = String::new();
    if let bollard::exec::StartExecResults::Attached {
        output: mut stream, ..
    } = docker.start_exec(&created.id, None).await?
    {
        while let Some(chunk) = stream.next().await {
            output.push_str(&chunk?.to_string());
        }
    }
    let inspected = docker.inspect_exec(&created.id).await?;
    Ok((inspected.exit_code.unwrap_or(-1), output))
}

/// Writes one file into a container (`dir` must exist there).
pub async fn upload_file(
    docker: &Docker,
    container: &str,
    dir: &str,
    file: &str,
    contents: &[u8],
) -> anyhow::Result<()> {
    upload_files(docker, container, dir, &[(file, contents, 0o644)]).await
}

/// Writes `files` (name, contents, mode) into `dir` of a container in one
/// archive: one request, and the engine unpacks them together.
pub async fn upload_files(
    docker: &Docker,
    container: &str,
    dir: &str,
    files: &[(&str, &[u8], u32)],
) -> anyhow::Result<()> {
    let mut archive = tar::Builder::new(Vec::new());
    for (file, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        archive.append_data(&mut header, file, *contents)?;
    }
    let tarball = archive.into_inner()?;
    let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
        .path(dir)
        .build();
    let names: Vec<&str> = files.iter().map(|(file, _, _)| *file).collect();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tarball.into()))
        .await
        .with_context(|| format!("uploading {} into {container}:{dir}", names.join(", ")))
}

/// Reads one file from a container; `None` when it does not exist.
pub async fn download_file(
    docker: &Docker,
    container: &str,
    path: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(error) if status_of(&error) == Some(404) => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {path} in {container}"));
            }
        }
    }
    let mut entries = tar::Archive::new(archive.as_slice());
    // The archive holds the one file asked for.
    let Some(entry) = entries.entries()?.next() else {
        return Ok(None);
    };
    let mut contents = Vec::new();
    std::io::Read::read_to_end(&mut entry?, &mut contents)?;
    Ok(Some(contents))
}

/// The last `lines` lines of a container's output, for failure reports.
pub async fn logs_tail(docker: &Docker, container: &str, lines: usize) -> String {
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    read_logs(docker, container, options).await
}

/// The container's standard output since `since` (Unix seconds, the
/// engine's clock; whole seconds, so callers filter finer themselves).
pub async fn stdout_since(docker: &Docker, container: &str, since: i64) -> String {
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .since(since.clamp(0, i32::MAX as i64) as i32)
        .build();
    read_logs(docker, container, options).await
}

/// The log lines `options` select, as one text (what cannot be read is
/// left out: logs are for reports, never for decisions that must not err).
async fn read_logs(
    docker: &Docker,
    container: &str,
    options: bollard::query_parameters::LogsOptions,
) -> String {
    let mut stream = docker.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text
}
