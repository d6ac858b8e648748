//! Labelled records in the cluster: Swarm configs, for the journal and the
//! lock of a stack on `platform: swarm`.
//!
//! A config is created atomically by the managers' Raft store (a second
//! create under the same name is a 409, on every manager), replicated to
//! every manager, and survives the loss of any node: what volumes and a
//! named container are on one engine, a config is on the cluster. Its data
//! cannot change, but its labels can (`update_config` with the version
//! read, so two writers cannot both win), and its `UpdatedAt` then moves on
//! the manager's clock: that is how the lock's lease is renewed.

use std::collections::HashMap;

use anyhow::Context;
use bollard::Docker;
use bollard::models::ConfigSpec;
use bollard::query_parameters::{ListConfigsOptionsBuilder, UpdateConfigOptionsBuilder};

use crate::deploy::docker::{self, status_of};

/// Swarm refuses config names longer than this.
const MAX_NAME: usize = 64;
/// Every record's data (base64 of `wsctl`): configs must hold some; what a
/// record says is in its labels.
const DATA: &str = "d3NjdGw=";

/// One config as a record.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// The Raft version an update must name.
    pub version: u64,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    pub updated: Option<chrono::DateTime<chrono::Utc>>,
}

impl Record {
    fn of(config: bollard::models::Config) -> Option<Record> {
        let spec = config.spec?;
        Some(Record {
            id: config.id?,
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default(),
            version: config
                .version
                .and_then(|version| version.index)
                .unwrap_or(0),
            created: config.created_at.as_deref().and_then(docker::parse_time),
            updated: config.updated_at.as_deref().and_then(docker::parse_time),
        })
    }
}

/// Creates the record `name`; `Ok(None)` when the name is taken.
pub async fn create(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> anyhow::Result<Option<String>> {
    anyhow::ensure!(
        name.len() <= MAX_NAME,
        "the Swarm config name {name} is longer than {MAX_NAME} characters: shorten prefix"
    );
    let spec = ConfigSpec {
        name: Some(name.to_string()),
        labels: Some(labels),
        data: Some(DATA.into()),
        ..Default::default()
    };
    match docker.create_config(spec).await {
        Ok(created) => Ok(Some(created.id)),
        Err(error) if status_of(&error) == Some(409) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("creating the Swarm config {name}")),
    }
}

/// The record named `name` exactly (`None`: absent).
pub async fn find(docker: &Docker, name: &str) -> anyhow::Result<Option<Record>> {
    match docker.inspect_config(name).await {
        Ok(config) => Ok(Record::of(config).filter(|record| record.name == name)),
        Err(error) if status_of(&error) == Some(404) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading the Swarm config {name}")),
    }
}

/// Every record with the label `key=value`.
pub async fn labelled(docker: &Docker, key: &str, value: &str) -> anyhow::Result<Vec<Record>> {
    let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
    let options = ListConfigsOptionsBuilder::default()
        .filters(&filters)
        .build();
    let configs = docker
        .list_configs(Some(options))
        .await
        .context("listing Swarm configs")?;
    Ok(configs.into_iter().filter_map(Record::of).collect())
}

/// Rewrites the labels of `record` (as read: a record changed since is a
/// conflict, `Ok(false)`, as is a record removed since).
pub async fn relabel(
    docker: &Docker,
    record: &Record,
    labels: HashMap<String, String>,
) -> anyhow::Result<bool> {
    let spec = ConfigSpec {
        name: Some(record.name.clone()),
        labels: Some(labels),
        data: Some(DATA.into()),
        ..Default::default()
    };
    let options = UpdateConfigOptionsBuilder::default()
        .version(record.version as i64)
        .build();
    match docker.update_config(&record.id, spec, options).await {
        Ok(()) => Ok(true),
        Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(false),
        // An update naming an old version is refused as "update out of
        // sequence" (500 on Engine 20.10).
        Err(error) if format!("{error}").contains("out of sequence") => Ok(false),
        Err(error) => {
            Err(error).with_context(|| format!("updating the Swarm config {}", record.name))
        }
    }
}

/// Removes the record with `id` (gone already: fine).
pub async fn remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    match docker.delete_config(id).await {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing the Swarm config {id}")),
    }
}
