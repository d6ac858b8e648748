//! The deploy history, kept in the Nginx container next to the upstream it
//! describes (`/etc/nginx/wsctl-history.jsonl`, one JSON object per line),
//! so every machine driving the engine sees the same history.

use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::docker;

const DIR: &str = "/etc/nginx";
const FILE: &str = "wsctl-history.jsonl";
/// Entries kept; older ones are dropped.
const KEEP: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub at: String,
    /// `deploy`, `switch` or `rollback`.
    pub action: String,
    /// The colour that was live before (none on the first deploy).
    pub from: Option<String>,
    pub to: String,
    /// The image the new live colour runs.
    pub image: String,
    pub seconds: f64,
}

pub async fn read(docker: &Docker, nginx: &str) -> anyhow::Result<Vec<Entry>> {
    let Some(bytes) = docker::download_file(docker, nginx, &format!("{DIR}/{FILE}")).await? else {
        return Ok(Vec::new());
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

pub async fn append(docker: &Docker, nginx: &str, entry: Entry) -> anyhow::Result<()> {
    let mut entries = read(docker, nginx).await?;
    entries.push(entry);
    let skip = entries.len().saturating_sub(KEEP);
    let mut text = String::new();
    for entry in &entries[skip..] {
        text.push_str(&serde_json::to_string(entry)?);
        text.push('\n');
    }
    docker::upload_file(docker, nginx, DIR, FILE, text.as_bytes()).await
}
