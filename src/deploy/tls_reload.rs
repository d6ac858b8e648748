//! `wsctl tls reload`: the certificate and key of wsctl.yaml's `tls:` put
//! into a running stack's Nginx without cutting a socket (the line an ACME
//! client's deploy hook runs). The files themselves are `tls.rs`'s.

use anyhow::Context;

use super::{DeployError, Stack, docker, nginx, proxy, tls};

/// What `wsctl tls reload` did on one stack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// The files differed from Nginx's and were uploaded, then reloaded.
    pub changed: bool,
    pub serial: String,
    pub not_after: String,
    pub days_left: i64,
    /// `platform: swarm` with `swarm.edges`: what each further edge did
    /// with its own certificate (the fields above are the manager's edge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeReloaded>,
}

/// What `wsctl tls reload` did on one edge of `swarm.edges`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EdgeReloaded {
    pub name: String,
    pub changed: bool,
    pub serial: String,
}

/// `wsctl tls reload`, under the stack's lock: uploads the current
/// certificate and key when they changed, reloads Nginx (sockets already
/// open stay with the old workers, new connections get the new
/// certificate) and checks through the public address that Nginx presents
/// the new certificate. With `swarm.edges`, every edge in turn, each with
/// its own certificate (every edge must answer first).
pub async fn reload(stack: &mut Stack) -> anyhow::Result<Reloaded> {
    stack.events.begin("preflight", "lock, tls files, nginx");
    stack.every_edge()?;
    let reloaded = super::runner::settled(
        stack,
        "tls reload",
        super::runner::Lease::Take,
        super::engine::Recovery::IfUnfinished,
        super::engine::Create::Never,
        async |stack, _| {
            let (changed, material) = reload_one(stack).await?;
            let mut edges = Vec::new();
            for edge in &mut stack.edges {
                edge.stack.events.begin("preflight", "tls files, nginx");
                let (changed, material) = reload_one(&mut edge.stack)
                    .await
                    .with_context(|| format!("swarm edge {}", edge.name))?;
                edges.push(EdgeReloaded {
                    name: edge.name.clone(),
                    changed,
                    serial: material.serial,
                });
            }
            Ok(Reloaded {
                changed,
                serial: material.serial,
                not_after: material.not_after,
                days_left: material.days_left,
                edges,
            })
        },
    )
    .await;
    super::runner::close_open_step(&mut stack.events, &reloaded);
    reloaded
}

/// One Nginx: its certificate checked, uploaded when changed, reloaded,
/// and presented through its own public address.
async fn reload_one(stack: &mut Stack) -> anyhow::Result<(bool, tls::Material)> {
    let Some(material) = tls::material(&stack.config)? else {
        return Err(DeployError::Usage("wsctl.yaml has no tls: to reload".into()).into());
    };
    let nginx = stack.config.name("nginx");
    if docker::inspect(&stack.docker, &nginx).await?.is_none() {
        return Err(DeployError::Usage(format!(
            "{nginx} does not exist: `wsctl deploy` creates it with tls"
        ))
        .into());
    }
    proxy::check_ports(stack).await?;
    stack.events.ok(&format!(
        "certificate serial {}, expires {} ({} days)",
        material.serial, material.not_after, material.days_left
    ));
    stack
        .events
        .begin("reload", "upload when changed, nginx -t, reload");
    let synced = nginx::install_tls(stack, &nginx).await?;
    let changed = synced == Some(tls::Synced::Uploaded);
    if changed {
        nginx::reload(stack).await?;
    }
    // Through the public address, trusting only the new certificate.
    nginx::answers(stack).await?;
    stack.events.ok(match changed {
        true => "uploaded; Nginx reloaded and presents it; open sockets stay",
        false => "unchanged: Nginx already presents it",
    });
    Ok((changed, material))
}
