//! The Docker Engine, behind one module: one `connect()` that honours
//! `DOCKER_HOST` (unix and tcp) and negotiates the API version (the engine
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

/// Connects to `DOCKER_HOST` (default: the local unix socket) and agrees on
/// an API version both sides speak.
pub async fn connect() -> anyhow::Result<Docker> {
    let endpoint =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |reason: String| EngineUnreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let docker = Docker::connect_with_defaults().map_err(|error| unreachable(error.to_string()))?;
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
