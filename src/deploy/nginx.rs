//! The Nginx side of a traffic move: what Nginx serves now, and switching
//! it (upload the rendered upstream, `nginx -t`, reload, verify through the
//! public address). Undoing a switch is applying the previous upstream.

use std::time::Duration;

use serde::Serialize;

use super::swarm::edges::EdgeServing;
use super::tls;
use super::upstream::{self, HEADER};
use super::wait::{Check, WaitError, poll_until};
use super::{DeployError, Stack};
use crate::deploy::config::Color;
use crate::deploy::docker;

const UPSTREAM_DIR: &str = "/etc/nginx/conf.d";
const UPSTREAM_FILE: &str = "upstream.conf";
/// Where the stack's Nginx images (ours and the official one) keep nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// How long new connections may take to reach the new colour after a reload.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// 40 looks a second: under the shipped per-address request rate (50/s,
/// nginx.conf), which every request from this machine shares.
const VERIFY_INTERVAL: Duration = Duration::from_millis(25);
/// Good answers in a row that make a switch verified.
const VERIFY_IN_A_ROW: u32 = 3;
/// How long a reload may take to replace the workers that accept: a few
/// milliseconds on an idle machine.
const RELOAD_WITHIN: Duration = Duration::from_secs(10);
const RELOAD_LOOK_EVERY: Duration = Duration::from_millis(20);

/// What Nginx routes to, from three witnesses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Serving {
    /// Nginx answered through the public address.
    pub answered: bool,
    /// The colour of the configuration Nginx has loaded (its `X-Wsctl-Live`
    /// header); `None` when it answered without one (nothing live yet).
    pub loaded: Option<Color>,
    /// The colour of the service that answered through the public address
    /// (its `X-Wsctl-Color` header).
    pub status_color: Option<Color>,
    /// The colour the upstream file on disk names.
    pub file: Option<Color>,
    /// The upstream file itself: what undoing a switch puts back.
    #[serde(skip)]
    pub upstream: Option<String>,
    /// `swarm.edges`: what each other edge serves (the fields above are
    /// the manager's edge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeServing>,
}

impl Serving {
    /// The live colour: what Nginx has loaded; the file only when Nginx
    /// did not answer at all.
    pub fn live(&self) -> Option<Color> {
        if self.answered {
            self.loaded
        } else {
            self.file
        }
    }

    /// Nginx serves one thing and its file says another (a run stopped
    /// between upload and reload, or a hand edit).
    /// With `swarm.edges`, also an edge that disagrees with itself or
    /// serves another colour than the manager's edge (a run that failed
    /// to put one back); an edge that cannot be reached is not asked.
    pub fn disagreement(&self) -> Option<String> {
        let name = |color: Option<Color>| color.map_or("no colour".to_string(), |c| c.to_string());
        if self.answered && self.loaded != self.file {
            return Some(format!(
                "Nginx serves {} but its upstream file names {}",
                name(self.loaded),
                name(self.file)
            ));
        }
        // A lost edge is reported as such (`status`), not as a colour.
        let reached = self.edges.iter().filter(|edge| edge.unreachable.is_none());
        reached.into_iter().find_map(|edge| {
            if let Some(own) = edge.serving.disagreement() {
                return Some(format!("swarm edge {}: {own}", edge.name));
            }
            (edge.serving.live() != self.live()).then(|| {
                format!(
                    "swarm edge {} serves {} but the manager's edge serves {}",
                    edge.name,
                    name(edge.serving.live()),
                    name(self.live())
                )
            })
        })
    }

    /// Every edge serves `color`, loaded and on disk.
    pub fn everywhere(&self, color: Color) -> bool {
        std::iter::once(self)
            .chain(self.edges.iter().map(|edge| &edge.serving))
            .all(|serving| serving.live() == Some(color) && serving.file == Some(color))
    }
}

/// A fresh connection per look, so an old worker's keep-alive socket
/// cannot answer for the new configuration.
///
/// With `tls:`, it trusts exactly the certificate wsctl.yaml names (what
/// wsctl uploads), whatever the public address's name; a certificate that
/// does not load leaves the public roots, so `status` still shows the
/// stack (its look then fails).
fn client(stack: &Stack) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0);
    if stack.config.tls.is_none() {
        return Ok(builder.build()?);
    }
    let trust = match tls::material(&stack.config) {
        Ok(Some(material)) => crate::client::tls::pinned(material.leaf)?,
        _ => crate::client::tls::trusting(None)?,
    };
    crate::client::tls::http_client(trust, builder)
}

/// One request through the public address: `(loaded colour, colour of the
/// service that answered)`, or `None` when Nginx did not answer. It asks
/// the public `/healthz`: `/status` is private, and from the host a
/// published port's traffic arrives from the Docker gateway, which is not
/// a private network by default. Nginx names its loaded colour in
/// `X-Wsctl-Live`, the service its own in `X-Wsctl-Color`.
///
/// An external app names no colour: an answer of its own to the health
/// path (not a 502-504 of Nginx's) through an Nginx that names its loaded
/// colour stands for that colour (a reload returns only once no old worker
/// accepts, so the answer is the new upstream's). Readiness was checked on
/// the replicas themselves before.
async fn look(stack: &Stack, client: &reqwest::Client) -> Option<Look> {
    let path = match stack.config.is_external() {
        true => stack.config.health_path(),
        false => "/healthz",
    };
    let url = format!("{}{path}", stack.config.public_url());
    let response = client.get(&url).send().await.ok()?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(Color::parse)
    };
    let loaded = header(HEADER);
    let status = response.status();
    let limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    let answered_by = if limited {
        None
    } else if stack.config.is_external() {
        // Any answer of the app's own (a 404 from an old version without
        // the health path too); 502-504 are Nginx saying no upstream did.
        let gateway_error = matches!(status.as_u16(), 502..=504);
        loaded.filter(|_| !gateway_error)
    } else if status.is_success() {
        header(crate::shared::protocol::COLOR_HEADER)
    } else {
        None
    };
    Some(Look {
        loaded,
        answered_by,
        limited,
    })
}

/// What one look through the public address saw.
struct Look {
    /// The colour of the configuration the answering worker has loaded.
    loaded: Option<Color>,
    /// The colour of the service that answered (`None`: Nginx answered
    /// itself, or the service named none).
    answered_by: Option<Color>,
    /// Nginx's per-address limits (`limit_req`, `limit_conn`: 429) turned
    /// the request away before any upstream saw it: says nothing about
    /// the upstream. Every request from this machine shares one address's
    /// allowance with whatever else it sends (a published port's traffic
    /// arrives from the Docker gateway).
    limited: bool,
}

/// Asks Nginx (through the public address) and reads its upstream file.
pub async fn serving(stack: &Stack) -> anyhow::Result<Serving> {
    let client = client(stack)?;
    let (upstream, seen) = tokio::join!(read_upstream(stack), look(stack, &client));
    let upstream = upstream?;
    Ok(Serving {
        answered: seen.is_some(),
        loaded: seen.as_ref().and_then(|look| look.loaded),
        status_color: seen.as_ref().and_then(|look| look.answered_by),
        file: upstream.as_deref().and_then(upstream::live_color),
        upstream,
        edges: Vec::new(),
    })
}

/// The upstream file as it is on disk; `None` without an Nginx container.
/// The upstream file in the Nginx container (`None`: no Nginx, or no file).
pub async fn upstream_on_disk(stack: &Stack) -> anyhow::Result<Option<String>> {
    read_upstream(stack).await
}

async fn read_upstream(stack: &Stack) -> anyhow::Result<Option<String>> {
    let nginx = stack.config.name("nginx");
    if docker::inspect(&stack.docker, &nginx).await?.is_none() {
        return Ok(None);
    }
    let path = format!("{UPSTREAM_DIR}/{UPSTREAM_FILE}");
    let bytes = docker::download_file(&stack.docker, &nginx, &path).await?;
    Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// A warning when the running Nginx has fewer workers than `replicas` full
/// containers need (it is sized when created; see `StackConfig::proxy_sizing`).
/// Nothing when its sizing cannot be read (an Nginx wsctl did not create).
pub async fn undersized(stack: &Stack, replicas: usize) -> Option<String> {
    let name = stack.config.name("nginx");
    let workers = running_workers(stack).await?;
    let needed = stack.config.proxy_sizing(replicas).workers;
    (workers < needed).then(|| {
        format!(
            "{name} runs {workers} workers, sized for fewer sockets than {replicas} replicas \
             hold ({needed} needed); remove it (docker rm -f {name}) and deploy again to \
             recreate it (clients reconnect and resume)"
        )
    })
}

/// The worker processes the running Nginx was started with (wsctl puts
/// them on its command line); `None` for an Nginx wsctl did not create.
pub async fn running_workers(stack: &Stack) -> Option<u64> {
    let name = stack.config.name("nginx");
    let container = stack.docker.inspect_container(&name, None).await.ok()?;
    let entrypoint = container.config?.entrypoint?.join(" ");
    entrypoint
        .split("worker_processes ")
        .nth(1)?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The access policy of wsctl.yaml, rendered beside every upstream.
fn access(stack: &Stack) -> upstream::Access<'_> {
    upstream::Access {
        private_networks: &stack.config.private_networks,
        trusted_proxies: &stack.config.trusted_proxies,
        unlimited_networks: &stack.config.unlimited_networks,
        hsts: stack.config.tls.as_ref().is_some_and(|tls| tls.hsts),
    }
}

/// The upstream that routes to `color`: every replica it has.
pub async fn render(stack: &Stack, color: Color) -> Result<String, DeployError> {
    let replicas = super::containers::upstream_servers(stack, color)
        .await
        .map_err(|error| DeployError::Switch(format!("{error:#}")))?;
    upstream::render(
        &stack.template,
        color,
        &replicas,
        stack.config.app_port,
        &access(stack),
    )
    .map_err(|error| DeployError::Switch(format!("rendering the upstream: {error:#}")))
}

/// The upstream that routes to `hosts` as `color`, for the Swarm edge's
/// follower (`swarm/follow.rs`), which has no certificate to say `hsts`.
pub fn render_for(
    stack: &Stack,
    color: Color,
    hosts: &[String],
    hsts: bool,
) -> anyhow::Result<String> {
    let access = upstream::Access {
        hsts,
        ..access(stack)
    };
    upstream::render(
        &stack.template,
        color,
        hosts,
        stack.config.app_port,
        &access,
    )
}

/// The upstream of a canary: `percent` of new connections to `new`'s
/// replicas, the rest to `old`'s (which stays the live colour).
pub async fn render_canary(
    stack: &Stack,
    old: Color,
    new: Color,
    percent: u8,
) -> Result<String, DeployError> {
    let replicas = |color| super::containers::upstream_servers(stack, color);
    let (olds, news) = match (replicas(old).await, replicas(new).await) {
        (Ok(olds), Ok(news)) => (olds, news),
        (Err(error), _) | (_, Err(error)) => {
            return Err(DeployError::Switch(format!("{error:#}")));
        }
    };
    // Each colour's total weight is its share: every old replica weighs
    // (100 - percent) x the new replica count, every new one percent x the
    // old count.
    let percent = u32::from(percent.min(100));
    let old_weight = (100 - percent) * news.len() as u32;
    let new_weight = percent * olds.len() as u32;
    let mut servers: Vec<(String, Option<u32>)> = Vec::new();
    if old_weight > 0 {
        servers.extend(olds.into_iter().map(|name| (name, Some(old_weight))));
    }
    if new_weight > 0 {
        servers.extend(news.into_iter().map(|name| (name, Some(new_weight))));
    }
    upstream::render_weighted(
        &stack.template,
        old,
        &servers,
        stack.config.app_port,
        &access(stack),
    )
    .map_err(|error| DeployError::Switch(format!("rendering the upstream: {error:#}")))
}

/// Uploads `text` as the upstream, tests it and reloads Nginx.
pub async fn apply(stack: &Stack, text: &str) -> anyhow::Result<()> {
    upload(
        stack.docker.clone(),
        stack.config.name("nginx"),
        text.to_string(),
    )
    .await?;
    reload(stack).await
}

/// Writes `text` as the upstream of the container `nginx` (created or
/// running), as it is: a new Nginx gets the upstream the old one served.
pub async fn upload_to(stack: &Stack, nginx: &str, text: &str) -> anyhow::Result<()> {
    upload(stack.docker.clone(), nginx.to_string(), text.to_string()).await
}

/// Waits until Nginx answers through the public address (any colour, or
/// none live yet).
pub async fn answers(stack: &Stack) -> anyhow::Result<()> {
    let client = client(stack)?;
    let answered = poll_until(VERIFY_TIMEOUT, VERIFY_INTERVAL, || async {
        match look(stack, &client).await {
            Some(_) => Check::Ready(()),
            None => Check::Pending("no answer".into()),
        }
    })
    .await;
    answered.map_err(|_| {
        DeployError::Switch(format!("{} does not answer", stack.config.public_address)).into()
    })
}

/// Writes the upstream file; Nginx serves it only after `reload`.
async fn upload(docker: bollard::Docker, nginx: String, text: String) -> anyhow::Result<()> {
    docker::upload_file(
        &docker,
        &nginx,
        UPSTREAM_DIR,
        UPSTREAM_FILE,
        text.as_bytes(),
    )
    .await
    .map_err(|error| DeployError::Switch(format!("{error:#}")).into())
}

/// The upload of the next upstream, running on its own task.
pub type Staged = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Waits for a staged upload; a task that panicked is an error.
pub async fn landed(staged: Staged) -> anyhow::Result<()> {
    staged
        .await
        .map_err(|error| anyhow::anyhow!("uploading the upstream: {error}"))?
}

/// Renders and uploads the upstream for `color` on a task of its own, so
/// the upload (60-110 ms through the engine's archive API) runs while the
/// colour gets ready; the task completes even if its caller stops waiting.
pub async fn stage(stack: &Stack, color: Color) -> Staged {
    let rendered = render(stack, color).await;
    let (docker, nginx) = (stack.docker.clone(), stack.config.name("nginx"));
    tokio::spawn(async move { upload(docker, nginx, rendered?).await })
}

/// Tests the uploaded upstream and reloads Nginx with it, returning once
/// the reload has taken effect: `nginx -s reload` only signals the master,
/// and until each worker that ran before it has stopped accepting (its title
/// says "shutting down", or it is gone), a new connection may still get the
/// old upstream. Waiting here makes every reload mean "new connections get
/// the new upstream" to whoever comes next: the canary's analysis, a test, a
/// look at the old workers.
pub async fn reload(stack: &Stack) -> anyhow::Result<()> {
    let nginx = stack.config.name("nginx");
    install_tls(stack, &nginx).await?;
    nginx_command(stack, &["-t"]).await?;
    let before = workers(&stack.docker, &nginx).await;
    nginx_command(stack, &["-s", "reload"]).await?;
    // Workers that cannot be listed give nothing to wait for.
    let Some(before) = before else {
        return Ok(());
    };
    let serving_before: Vec<u64> = before
        .iter()
        .filter(|worker| !worker.shutting_down)
        .map(|worker| worker.pid)
        .collect();
    let replaced = poll_until(RELOAD_WITHIN, RELOAD_LOOK_EVERY, || async {
        match workers(&stack.docker, &nginx).await {
            Some(now) => {
                let still = now
                    .iter()
                    .filter(|worker| !worker.shutting_down && serving_before.contains(&worker.pid))
                    .count();
                if still == 0 {
                    Check::Ready(())
                } else {
                    Check::Pending(format!(
                        "{still} workers from before the reload still accept"
                    ))
                }
            }
            None => Check::Ready(()),
        }
    })
    .await;
    replaced.map_err(|error| {
        let why = match error {
            WaitError::Failed(why) | WaitError::TimedOut(why) => why,
        };
        DeployError::Switch(format!(
            "Nginx was reloaded but did not take the new upstream within {} s: {why}",
            RELOAD_WITHIN.as_secs()
        ))
        .into()
    })
}

/// With wsctl.yaml's `tls:`, puts the current certificate, key and TLS
/// listener into the Nginx `container` (a look at one file when they are
/// already there); the next reload serves them. Refuses an image whose
/// nginx.conf would not read them.
pub async fn install_tls(stack: &Stack, container: &str) -> anyhow::Result<Option<tls::Synced>> {
    let Some(material) = tls::material(&stack.config)? else {
        return Ok(None);
    };
    let synced = tls::sync(stack, container, &material).await?;
    let running = docker::inspect(&stack.docker, container)
        .await?
        .is_some_and(|info| info.running);
    if synced == tls::Synced::Uploaded && running {
        let dump = config_dump(&stack.docker, container).await?;
        if !dump.contains(tls::INCLUDED) {
            return Err(DeployError::Usage(format!(
                "the Nginx image {} does not include conf.d/tls*.conf in its nginx.conf, so it \
                 cannot serve tls: build it again (scripts/build-images.sh) and run `wsctl \
                 deploy --proxy`",
                stack.config.images.nginx
            ))
            .into());
        }
    }
    Ok(Some(synced))
}

/// What `nginx -T` prints in `container`: every configuration file Nginx
/// reads, each under a `# configuration file PATH:` line. A configuration
/// that does not test is an error in Nginx's words, not a missing file.
/// An answer with no output at all is asked again: the engine can lose a
/// quick exec's output (moby/moby#27289), and a dump is never empty.
pub async fn config_dump(docker: &bollard::Docker, container: &str) -> anyhow::Result<String> {
    const ASKS: usize = 3;
    for _ in 0..ASKS {
        let (code, dump) = docker::exec(docker, container, &[NGINX, "-T"]).await?;
        if code != 0 {
            return Err(DeployError::Switch(format!(
                "nginx -T in {container} failed: {}",
                dump.trim()
            ))
            .into());
        }
        if !dump.trim().is_empty() {
            return Ok(dump);
        }
    }
    Err(DeployError::Switch(format!(
        "nginx -T in {container} printed nothing, {ASKS} times"
    ))
    .into())
}

async fn nginx_command(stack: &Stack, args: &[&str]) -> anyhow::Result<()> {
    let mut command = vec![NGINX];
    command.extend_from_slice(args);
    let (code, output) = docker::exec(&stack.docker, &stack.config.name("nginx"), &command)
        .await
        .map_err(|error| DeployError::Switch(format!("nginx {}: {error:#}", args.join(" "))))?;
    if code != 0 {
        return Err(
            DeployError::Switch(format!("nginx {}: {}", args.join(" "), output.trim())).into(),
        );
    }
    Ok(())
}

/// Waits until new connections through the public address reach `color`:
/// Nginx names it as loaded and the service answers with it, three times
/// in a row and, with `steady`, for that long without a miss. One look is
/// not enough: for a moment after a reload an old worker may still accept
/// a connection and serve the old upstream. That is harmless while the old
/// upstream is a running colour, but after the first deploy it routes
/// nowhere, so the first deploy asks for a steady half second.
pub async fn verify(stack: &Stack, color: Color, steady: Duration) -> anyhow::Result<()> {
    let client = client(stack)?;
    let tally = std::cell::RefCell::new(VerifyTally::default());
    let verified = poll_until(VERIFY_TIMEOUT, VERIFY_INTERVAL, || async {
        let seen = look(stack, &client).await;
        let mut tally = tally.borrow_mut();
        // Turned away by the per-address limits: no evidence either way,
        // so neither a good look nor a miss.
        if seen.as_ref().is_some_and(|look| look.limited) {
            tally.limited += 1;
            return Check::Pending(String::new());
        }
        let good = matches!(&seen, Some(Look { loaded: Some(loaded), answered_by: Some(by), .. }) if *loaded == color && *by == color);
        match seen {
            _ if good => tally.good(),
            Some(look) => tally.miss(format!(
                "Nginx serves {} and the service that answered is {}",
                look.loaded.map_or("no colour".into(), |c| c.to_string()),
                look.answered_by.map_or("none".into(), |c| c.to_string()),
            )),
            None => tally.miss("no answer".into()),
        }
        if tally.in_a_row >= VERIFY_IN_A_ROW && tally.good_for(steady) {
            Check::Ready(())
        } else {
            Check::Pending(String::new())
        }
    })
    .await;
    match verified {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(_) | WaitError::TimedOut(_)) => Err(DeployError::Switch(format!(
            "{} never reached {color} within {} s: {}",
            stack.config.public_address,
            VERIFY_TIMEOUT.as_secs(),
            tally.borrow().describe(steady)
        ))
        .into()),
    }
}

/// What a verification saw, for the line that says why it failed: a
/// flapping answer and one that never came are different faults.
#[derive(Default)]
struct VerifyTally {
    looks: u32,
    good: u32,
    in_a_row: u32,
    /// When the current run of good looks began.
    streak_since: Option<tokio::time::Instant>,
    longest_streak: u32,
    /// Looks that Nginx's per-address limits answered with 429.
    limited: u32,
    misses: std::collections::BTreeMap<String, u32>,
}

impl VerifyTally {
    fn good(&mut self) {
        if self.in_a_row == 0 {
            self.streak_since = Some(tokio::time::Instant::now());
        }
        self.looks += 1;
        self.good += 1;
        self.in_a_row += 1;
        self.longest_streak = self.longest_streak.max(self.in_a_row);
    }

    fn miss(&mut self, why: String) {
        self.looks += 1;
        self.in_a_row = 0;
        self.streak_since = None;
        *self.misses.entry(why).or_default() += 1;
    }

    /// The current run of good looks has lasted `steady` (a miss ends it).
    fn good_for(&self, steady: Duration) -> bool {
        self.streak_since
            .is_some_and(|since| since.elapsed() >= steady)
    }

    fn describe(&self, steady: Duration) -> String {
        let misses: Vec<String> = self
            .misses
            .iter()
            .map(|(why, count)| format!("{count}x {why}"))
            .collect();
        let mut line = format!(
            "{} of {} looks good, at most {} in a row",
            self.good, self.looks, self.longest_streak
        );
        if !steady.is_zero() {
            line.push_str(&format!(
                " (needed {} ms without a miss)",
                steady.as_millis()
            ));
        }
        if !misses.is_empty() {
            line.push_str(&format!("; misses: {}", misses.join(", ")));
        }
        if self.limited > 0 {
            line.push_str(&format!(
                "; {} more answered 429 by Nginx's per-address limits (add this machine's \
                 address to unlimited_networks)",
                self.limited
            ));
        }
        line
    }
}

/// Points Nginx at `color` and verifies it.
pub async fn switch_to(stack: &Stack, color: Color, steady: Duration) -> anyhow::Result<()> {
    let text = render(stack, color).await?;
    apply(stack, &text).await?;
    verify(stack, color, steady).await
}

/// One Nginx worker process, as the engine lists it (`docker top`, which
/// runs `ps` on the engine's host: the images have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub pid: u64,
    /// Resident memory.
    pub kib: u64,
    /// Told to stop by a reload: it accepts nothing new and goes once the
    /// sockets it holds close.
    pub shutting_down: bool,
}

/// The worker processes of the Nginx container `nginx`; `None` when they
/// cannot be listed.
pub async fn workers(docker: &bollard::Docker, nginx: &str) -> Option<Vec<Worker>> {
    let options = bollard::query_parameters::TopOptionsBuilder::default()
        .ps_args("-o pid,rss,args")
        .build();
    let top = docker.top_processes(nginx, Some(options)).await.ok()?;
    let titles = top.titles.unwrap_or_default();
    let column = |name: &str| titles.iter().position(|title| title == name);
    let (pid, rss, args) = (column("PID")?, column("RSS")?, column("COMMAND")?);
    let number = |process: &Vec<String>, at: usize| {
        process
            .get(at)
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    let workers = top
        .processes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|process| {
            let title = process.get(args)?;
            title.contains("worker process").then(|| Worker {
                pid: number(&process, pid).unwrap_or(0),
                kib: number(&process, rss).unwrap_or(0),
                shutting_down: title.contains("worker process is shutting down"),
            })
        })
        .collect();
    Some(workers)
}

/// Nginx's old workers: after a reload they keep the WebSockets they hold
/// until those close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OldWorkers {
    pub processes: usize,
    /// Their resident memory, summed.
    pub kib: u64,
}

/// The old workers of the Nginx container `nginx` (none when it cannot be
/// listed).
pub async fn old_workers(docker: &bollard::Docker, nginx: &str) -> OldWorkers {
    let workers = workers(docker, nginx).await.unwrap_or_default();
    let old = workers.iter().filter(|worker| worker.shutting_down);
    OldWorkers {
        processes: old.clone().count(),
        kib: old.map(|worker| worker.kib).sum(),
    }
}

/// How long the first deploy's switch must answer from the new colour
/// without a miss (see `verify`).
pub const FIRST_SWITCH_STEADY: Duration = Duration::from_millis(500);
