//! The stack `wsctl deploy` drives, read from `wsctl.yaml`.
//!
//! Every key has a default, so no file is needed: one Docker network, the
//! containers `redis`, `nginx` (publishing the public port) and `app_blue`
//! / `app_green`. A malformed file or an unknown key is an error naming the
//! line. `prefix` is prepended to every name, so several stacks (or test
//! runs) can share one engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::shared::input::ConfigError;

mod app;
mod environment;
mod hooks;
mod platform;
mod tls;

pub use app::{AppKind, AppProtocol};
pub use hooks::{HOOK_TIMEOUT, Hooks, NOTIFY_EVENTS, Notify};
pub use platform::{MANAGER_EDGE, Platform, SwarmSettings};
pub use tls::Tls;

/// A deployment colour: the stack runs the service as `app_blue` and
/// `app_green`, and Nginx routes to one of them. A typed value, so a wrong
/// colour is refused by the command line before any I/O.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    /// The other colour: the standby when this one is live.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// `blue` or `green` as written in an upstream file or `/status`.
    pub fn parse(text: &str) -> Option<Color> {
        match text.trim() {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StackConfig {
    /// Prepended to every container and network name.
    pub prefix: String,
    pub network: String,
    /// Where Nginx listens on the host: `127.0.0.1:8080`. With `tls`, it
    /// speaks HTTPS and `wss://` there.
    pub public_address: String,
    /// TLS at Nginx: a certificate and its key (see `deploy::tls`).
    pub tls: Option<Tls>,
    /// With `tls`: where plain HTTP answers with a redirect to the
    /// `https://` public address (default: nowhere).
    pub http_address: Option<String>,
    pub images: Images,
    /// Port the service listens on inside its container.
    pub app_port: u16,
    /// Where Nginx's sockets live: the stack's network with the public
    /// address published (`stack`), or the host's own network (`host`).
    pub nginx_network: NginxNetwork,
    /// `docker` (containers on the engine) or `swarm` (a service per colour).
    pub platform: Platform,
    /// With `platform: swarm`: the manager and the tasks' placement.
    pub swarm: SwarmSettings,
    /// Extra environment for both colours (`COLOR` and `REDIS_URL` are set by wsctl).
    pub app_env: BTreeMap<String, String>,
    /// Seconds the standby may take to become healthy.
    pub ready_timeout: u64,
    /// Seconds the old colour gets to drain (SIGTERM, then SIGKILL).
    pub drain_timeout: u64,
    /// Seconds a run's lock lives without renewal; a running wsctl renews it
    /// every third of that, so only a crashed run's lock expires.
    pub lock_ttl: u64,
    /// An upstream template of your own (default: templates/upstream.conf.j2).
    pub upstream_template: Option<std::path::PathBuf>,
    /// Client networks (CIDR or address) that may read `/metrics` and
    /// `/status` through Nginx; everyone else gets 403.
    pub private_networks: Vec<String>,
    /// Load balancers in front of Nginx whose `X-Forwarded-For` names the
    /// real client (per-IP limits and the private networks then see it).
    pub trusted_proxies: Vec<String>,
    /// Client networks Nginx's per-address limits do not apply to: a load
    /// balancer that cannot send `X-Forwarded-For`, a load generator.
    pub unlimited_networks: Vec<String>,
    /// Memory bounds of the stack's Redis.
    pub redis: RedisSettings,
    /// What each app container may use.
    pub resources: Resources,
    /// Containers per colour (`deploy --replicas` overrides it).
    pub replicas: usize,
    /// A Redis (or Redis Cluster seed list) outside the stack: every app
    /// container uses it and wsctl starts no Redis. Required with `hosts`.
    pub redis_url: Option<String>,
    /// The Docker hosts the stack runs on, switched in this order (empty:
    /// the one engine `DOCKER_HOST` names).
    pub hosts: Vec<Host>,
    /// Hosts switched at a time during a deploy.
    pub switch_batch: usize,
    /// What a canary must measure up to (`deploy --canary-steps`).
    pub analysis: AnalysisSettings,
    /// Dotenv files whose variables the app gets under `app_env` (secrets:
    /// masked in every output). Relative to the directory of wsctl.yaml.
    pub env_file: Vec<std::path::PathBuf>,
    /// Credentials for pulls and pushes, beside `~/.docker/config.json`.
    pub registry: RegistrySettings,
    /// How many old Nginx workers a stack may carry after reloads.
    pub nginx: NginxSettings,
    /// Commands run before and after a deploy or a rollback.
    pub hooks: Hooks,
    /// Webhooks told of each deploy and rollback.
    pub notify: Vec<Notify>,
    /// The hosts a fleet's command runs on (hooks' `WSCTL_HOSTS`); set by
    /// the fleet, empty for one engine.
    #[serde(skip)]
    pub hook_hosts: String,
    /// `wsctl` (the bundled service) or `external` (any WebSocket app):
    /// the app contract of `config/app.rs`.
    pub app_kind: AppKind,
    /// External apps: the HTTP path that answers 2xx when ready (`/up`).
    pub health_path: Option<String>,
    /// External apps: where the WebSocket endpoint is (`/ws/chat/`), for
    /// the smoke test and the cutover probe.
    pub ws_path: Option<String>,
    /// External apps: the signal that stops the app (`SIGTERM`); the
    /// engine kills it after `drain_timeout`.
    pub stop_signal: Option<String>,
    /// External apps: the smoke test's checks (default: the health path,
    /// and an upgrade on `ws_path`).
    pub smoke: Option<Vec<crate::client::app_checks::AppCheck>>,
    /// External apps: `wsctl` when the app speaks docs/protocol.md.
    pub app_protocol: Option<AppProtocol>,
    /// External apps: Prometheus metrics with the contract's names, for
    /// the canary analysis.
    pub metrics_path: Option<String>,
}

/// Old Nginx workers: after a reload they keep the WebSockets they hold
/// until those close (a reload never cuts a socket). Past either bound,
/// wsctl asks the app to move their clients with `goodbye`, paced over
/// `DRAIN_WINDOW` (only the bundled service knows how; other apps' old
/// workers stay until their clients leave).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NginxSettings {
    /// Old worker processes (shutting down, holding sockets) allowed.
    pub max_old_workers: usize,
    /// Their memory (resident, summed) allowed: `256m`, `1g`, bytes.
    pub max_old_memory: String,
}

impl Default for NginxSettings {
    fn default() -> Self {
        NginxSettings {
            max_old_workers: 64,
            max_old_memory: "512m".into(),
        }
    }
}

impl NginxSettings {
    /// `max_old_memory` in bytes.
    pub fn max_old_memory_bytes(&self) -> u64 {
        parse_size(&self.max_old_memory).unwrap_or(u64::MAX)
    }
}

/// A registry login from wsctl.yaml; the password is never in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Host (and port) of the registry: `registry.example.com`.
    pub server: Option<String>,
    pub username: Option<String>,
    /// The environment variable that holds the password or token.
    pub password_env: Option<String>,
}

/// Thresholds and pace of a canary's analysis. The defaults follow the
/// alerts in compose/prometheus/alerts.yml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSettings {
    /// Seconds between samples of both colours' `/metrics`.
    pub interval: f64,
    /// Failed samples tolerated before the canary is rolled back (as
    /// Argo's `failureLimit`: 0 means the first failed sample does it).
    pub failure_limit: u32,
    /// Messages the new colour must have answered before a sample counts:
    /// a canary without traffic proves nothing.
    pub min_messages: u64,
    /// Refused frames per message on the new colour (errors / messages).
    pub max_error_ratio: f64,
    /// ... and no more than this above the old colour's ratio.
    pub max_error_ratio_over_old: f64,
    /// 95th-percentile message latency on the new colour, in seconds
    /// (WsctlSlowMessages: 1 s).
    pub max_p95_seconds: f64,
    /// Refused frames per connection the new colour accepted.
    pub max_errors_per_connection: f64,
    /// Connections the new colour refused (max_connections,
    /// origin_forbidden, unauthorized) per connection attempt.
    pub max_refused_ratio: f64,
    /// Requests and upgrades Nginx saw the new colour complete before its
    /// view counts (for an external app without metrics, before a sample
    /// counts at all).
    pub min_requests: u64,
    /// Plain requests the new colour answered 5xx, per request (Nginx's
    /// view) ...
    pub max_5xx_ratio: f64,
    /// ... WebSocket upgrades it did not answer with 101, per upgrade ...
    pub max_failed_upgrade_ratio: f64,
    /// ... and the 95th percentile of its time to answer (the handshake,
    /// for an upgrade), in seconds.
    pub max_upstream_p95_seconds: f64,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            interval: 2.0,
            failure_limit: 0,
            min_messages: 50,
            max_error_ratio: 0.05,
            max_error_ratio_over_old: 0.01,
            max_p95_seconds: 1.0,
            max_errors_per_connection: 10.0,
            max_refused_ratio: 0.05,
            min_requests: 20,
            max_5xx_ratio: 0.05,
            max_failed_upgrade_ratio: 0.05,
            max_upstream_p95_seconds: 1.0,
        }
    }
}

/// Where the stack's Nginx has its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NginxNetwork {
    /// On the stack's network; the engine publishes `public_address`
    /// (through docker-proxy for loopback clients, NAT for the rest).
    #[default]
    Stack,
    /// On the host's network, listening on `public_address` itself.
    Host,
}

impl StackConfig {
    /// Nginx runs on the host's network (`nginx_network: host`).
    pub fn nginx_on_host(&self) -> bool {
        self.nginx_network == NginxNetwork::Host
    }

    /// `nginx_network` problems, as one line.
    fn check_nginx_network(&self) -> Result<(), String> {
        if !self.nginx_on_host() {
            return Ok(());
        }
        if self.is_swarm() {
            return Err(
                "nginx_network: host is for platform: docker; on a swarm the edge \
                        reaches tasks on the overlay, which the host's network cannot"
                    .into(),
            );
        }
        if self.tls.is_some() {
            return Err(
                "nginx_network: host does not serve tls: yet; use nginx_network: \
                        stack for wss://"
                    .into(),
            );
        }
        Ok(())
    }
}

/// One Docker host of a stack spread over several.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Shown in reports and `--json` events (`host` field).
    pub name: String,
    /// `unix:///path`, `tcp://host:port` or `ssh://user@host`.
    pub docker_host: String,
    /// Where this host's Nginx publishes the service.
    pub public_address: String,
    /// How this host's containers reach the shared Redis (default: the
    /// stack's `redis_url`), when networks or regions differ.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// TLS with client certificates, as `DOCKER_TLS_VERIFY` means to the
    /// docker CLI (`tcp://` only).
    #[serde(default)]
    pub tls_verify: bool,
    /// Directory with ca.pem, cert.pem and key.pem (`DOCKER_CERT_PATH`;
    /// default ~/.docker).
    #[serde(default)]
    pub cert_path: Option<std::path::PathBuf>,
    /// The private key `ssh` logs in with (`ssh -i`; `ssh://` only).
    /// Without it, the ssh client's own keys and agent.
    #[serde(default)]
    pub ssh_key: Option<std::path::PathBuf>,
    /// This host's own certificate (default: the stack's `tls`).
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// `ssh://user@host:PORT`: bollard 0.21 hands `user@host:PORT` to `ssh` as
/// a host name, which no ssh resolves (fixed upstream in bollard#730, not
/// released yet). An IPv6 host in brackets without a port is fine.
pub fn ssh_port_given(docker_host: &str) -> bool {
    let authority = docker_host.trim_start_matches("ssh://");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .split_once(']')
            .is_some_and(|(_, rest)| rest.starts_with(':')),
        None => host.contains(':'),
    }
}

/// The most replicas a colour may have.
pub const MAX_REPLICAS: usize = 64;

/// Limits of each app container, as the design sizes them: one core, 1 GiB,
/// and enough descriptors for its sockets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPUs (fractions allowed: `0.5`).
    pub cpus: f64,
    /// Memory limit (`512m`, `1g`, bytes).
    pub memory: String,
    /// Open-file limit (soft and hard) of the container. wsctl also sets
    /// the service's `MAX_CONNECTIONS` to this minus a reserve, unless
    /// `app_env` sets it.
    pub open_files: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1.0,
            memory: "1g".into(),
            open_files: 20_000,
        }
    }
}

/// The service's own reserve of descriptors that are not WebSockets: a
/// container's `MAX_CONNECTIONS` is `open_files` minus this, so that the
/// service's start-up check agrees.
use crate::serve::config::RESERVED_FILES;

impl Resources {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        parse_size(&self.memory).unwrap_or(0)
    }

    /// `MAX_CONNECTIONS` that fits under `open_files`.
    pub fn max_connections(&self) -> u64 {
        self.open_files.saturating_sub(RESERVED_FILES)
    }
}

/// Connections per Nginx worker: `worker_connections` in nginx/nginx.conf.
pub const NGINX_WORKER_CONNECTIONS: u64 = 19_500;

/// How the stack's Nginx is sized for the sockets its upstream can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySizing {
    /// `worker_processes`.
    pub workers: u64,
    /// `worker_rlimit_nofile`, and the container's nofile ulimit.
    pub open_files: u64,
}

impl ProxySizing {
    /// The `-g` directives Nginx starts with.
    pub fn directives(&self) -> String {
        format!(
            "daemon off; worker_processes {}; worker_rlimit_nofile {};",
            self.workers, self.open_files
        )
    }
}

/// A replica count is 1 to [`MAX_REPLICAS`].
pub fn check_replicas(count: usize) -> Result<(), String> {
    if (1..=MAX_REPLICAS).contains(&count) {
        Ok(())
    } else {
        Err(format!("replicas {count} must be 1 to {MAX_REPLICAS}"))
    }
}

/// `256mb`, `1g`, `512k`, `1048576`: a size in bytes (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(['k', 'm', 'g', 'b']);
    let number: u64 = digits.parse().ok()?;
    let factor = match &lower[digits.len()..] {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `maxmemory` of the stack's Redis (`256mb`, `1gb`, bytes).
    pub maxmemory: String,
    /// What Redis evicts when full; `volatile-ttl` drops the sessions
    /// closest to expiring first (every wsctl key has a TTL).
    pub maxmemory_policy: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            maxmemory: "256mb".into(),
            maxmemory_policy: "volatile-ttl".into(),
        }
    }
}

/// Checks a Redis URL or a comma-separated seed list, without repeating
/// it (it may hold a password).
fn check_redis_url(urls: &str) -> Result<(), String> {
    for (index, url) in urls.split(',').enumerate() {
        if let Err(error) = redis::Client::open(url.trim()) {
            return Err(format!("entry {} is not a Redis URL: {error}", index + 1));
        }
    }
    Ok(())
}

/// Checks `10.0.0.0/8`, `192.168.1.7` or `::1/128`: an address with an
/// optional prefix length that fits it.
fn is_network(text: &str) -> bool {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|prefix| prefix.parse::<u8>().is_ok_and(|bits| bits <= max))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Images {
    pub app: String,
    pub nginx: String,
    pub redis: String,
    /// External apps: the image of the checker container, a wsctl image
    /// (default `wsctl:local`).
    pub checker: Option<String>,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            app: "wsctl:local".into(),
            nginx: "wsctl-nginx:local".into(),
            redis: "wsctl-redis:local".into(),
            checker: None,
        }
    }
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            prefix: String::new(),
            network: "wsctl".into(),
            public_address: "127.0.0.1:8080".into(),
            tls: None,
            http_address: None,
            images: Images::default(),
            app_port: 8000,
            nginx_network: NginxNetwork::Stack,
            platform: Platform::Docker,
            swarm: SwarmSettings::default(),
            app_env: BTreeMap::new(),
            ready_timeout: 30,
            drain_timeout: 15,
            lock_ttl: 60,
            upstream_template: None,
            private_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            trusted_proxies: Vec::new(),
            unlimited_networks: Vec::new(),
            redis: RedisSettings::default(),
            resources: Resources::default(),
            replicas: 1,
            redis_url: None,
            hosts: Vec::new(),
            switch_batch: 1,
            analysis: AnalysisSettings::default(),
            env_file: Vec::new(),
            registry: RegistrySettings::default(),
            nginx: NginxSettings::default(),
            hooks: Hooks::default(),
            notify: Vec::new(),
            hook_hosts: String::new(),
            app_kind: AppKind::Wsctl,
            health_path: None,
            ws_path: None,
            stop_signal: None,
            smoke: None,
            app_protocol: None,
            metrics_path: None,
        }
    }
}

/// What `wsctl init` writes: every key with its default, commented.
pub const INIT_FILE: &str = r#"# wsctl.yaml: the stack `wsctl deploy` drives. Every key is optional.

# Prepended to every container and network name below.
prefix: ""
# The Docker network all containers share.
network: wsctl
# Where Nginx publishes the service on the host.
public_address: "127.0.0.1:8080"
# TLS at Nginx: public_address then speaks https:// and wss://. PEM files
# on this machine (relative to this file), a chain allowed:
#   tls: {certificate: certs/fullchain.pem, key: certs/privkey.pem, hsts: false}
# Rotate with `wsctl tls reload` (open sockets stay open).
tls: null
# With tls: where plain HTTP answers with a redirect to https://.
http_address: null
# Commands run through sh -c on this machine around a deploy or rollback,
# with WSCTL_RUN_ID, WSCTL_ACTION, WSCTL_FROM, WSCTL_TO, WSCTL_IMAGE,
# WSCTL_HOSTS, WSCTL_PERFORMER (post hooks also WSCTL_OUTCOME, WSCTL_ERROR).
# A failing pre hook stops the run before anything starts (exit 12); a
# failing post hook is reported and recorded, never undoes anything.
hooks:
  timeout: null          # seconds each may run (default 300)
  pre_deploy: null
  post_deploy: null
  on_failure: null
  pre_rollback: null
  post_rollback: null
  on_rollback_failure: null
# Webhooks POSTed the run record (JSON, with a one-line `text`) on events:
# started, succeeded, failed, aborted, interrupted, rolled_back.
#   notify: [{webhook: "https://hooks.example.com/T0/B0/XX", events: [failed]}]
notify: []
images:
  # The service image (`wsctl build --tag wsctl:local`); pulled when absent.
  app: "wsctl:local"
  nginx: "wsctl-nginx:local"
  redis: "wsctl-redis:local"
  # app_kind external: the checker container's image (a wsctl image).
  checker: null
# `wsctl`: the image runs the bundled service. `external`: any WebSocket
# service (`wsctl init --app external` writes a file for one); the keys
# from health_path to metrics_path are for external apps only.
app_kind: wsctl
# An HTTP path that answers 2xx once the app is ready (default /up).
health_path: null
# Where the app's WebSocket endpoint is, for the smoke test.
ws_path: null
# The signal that stops the old colour; SIGKILL after drain_timeout.
stop_signal: null
# The smoke test: a list of {http: PATH} (2xx, or status: N) and
# {websocket: PATH, send: TEXT, expect: TEXT}; default: the health path
# and an upgrade on ws_path.
smoke: null
# `wsctl` when the app speaks docs/protocol.md (counts checked end to end).
app_protocol: null
# Prometheus metrics with the contract's names, for the canary analysis.
metrics_path: null
# Port the app listens on inside its container.
app_port: 8000
# `stack`: Nginx on the stack's network, public_address published by the
# engine. `host`: Nginx on the host's network, listening on public_address
# itself (no docker-proxy, no NAT: for tens of thousands of sockets); the
# upstream names the replicas' addresses on the stack's network.
nginx_network: stack
# `docker`: containers on the engine DOCKER_HOST names (or on each of
# hosts:). `swarm`: each colour is a Swarm service (endpoint_mode dnsrr, on
# an attachable overlay), driven through a manager; Nginx, Redis and the
# checker run on the manager node, the journal and the lock are Swarm
# configs (README: Docker Swarm).
platform: docker
swarm:
  manager: null      # the manager's engine; default DOCKER_HOST
  constraints: []    # placement of the tasks, e.g. ["node.role==worker"]
  # More edges (an Nginx on each of these manager nodes), switched with the
  # manager's: [{name: edge2, docker_host: "ssh://ops@m2", public_address: "0.0.0.0:80"}]
  edges: []
# Extra environment for both colours; COLOR and REDIS_URL are set by wsctl.
app_env: {}
# Seconds the standby colour may take to become healthy.
ready_timeout: 30
# Seconds the old colour gets to drain (its clients get goodbye and 1001).
drain_timeout: 15
# Seconds a deploy's lock lives without renewal (the running deploy renews
# it), so a crashed deploy's lock frees itself after this long.
lock_ttl: 60
# An upstream template of your own; it must start with
# `# wsctl live colour: {{ color }}` (default: the shipped template).
upstream_template: null
# Who may read /metrics and /status through Nginx (CIDR or address); all
# others get 403. Requests from the host to a published port arrive from
# the Docker network's gateway: add its subnet to read them there.
private_networks: ["127.0.0.0/8", "::1/128"]
# Load balancers in front of Nginx: their X-Forwarded-For names the real
# client, so per-IP limits and private_networks see real addresses.
trusted_proxies: []
# Clients Nginx's per-address limits (connections, requests, WebSocket
# upgrades) do not apply to: a load balancer without X-Forwarded-For, or a
# load generator. Everyone else is limited per address.
unlimited_networks: []
redis:
  # Memory bound of the stack's Redis; volatile-ttl evicts the sessions
  # closest to expiry first.
  maxmemory: 256mb
  maxmemory_policy: volatile-ttl
# Limits of each app container. open_files is its nofile ulimit, and the
# service's MAX_CONNECTIONS becomes open_files - 100 unless app_env sets it.
resources:
  cpus: 1.0
  memory: 1g
  open_files: 20000
# Containers per colour: app_blue when 1, app_blue_1 ... app_blue_N above.
# Nginx spreads new connections over them (least_conn).
replicas: 1
# A Redis outside the stack (a comma-separated seed list with
# REDIS_CLUSTER=true in app_env): wsctl then starts no Redis of its own.
redis_url: null
# Several Docker hosts, each with its own Nginx, switched one after the
# other (switch_batch at a time); needs redis_url. Without hosts, the one
# engine DOCKER_HOST names. Example:
#   hosts:
#     - {name: eu1, docker_host: "ssh://deploy@eu1", public_address: "0.0.0.0:80"}
#     - {name: eu2, docker_host: "tcp://10.0.0.2:2376", tls_verify: true,
#        cert_path: /etc/wsctl/eu2, public_address: "0.0.0.0:80",
#        redis_url: "redis://10.0.0.9:6379/0"}
hosts: []
switch_batch: 1
# A canary's analysis (`deploy --canary-steps 10,50,100`): both colours'
# /metrics every `interval` seconds; the new colour fails a sample when its
# errors per message pass max_error_ratio and the old colour's ratio by
# max_error_ratio_over_old, or its errors per accepted connection pass
# max_errors_per_connection, when it refuses more than max_refused_ratio of
# connection attempts, when its p95 message latency passes max_p95_seconds,
# or when a container stops or turns unhealthy. A sample counts once the
# new colour received min_messages frames. Nginx's own view of every app
# (its access log, by colour) fails a sample once the new colour completed
# min_requests requests and upgrades: 5xx per request above max_5xx_ratio,
# upgrades not answered 101 above max_failed_upgrade_ratio (each also above
# the old colour's by max_error_ratio_over_old), or its p95 time to answer
# above max_upstream_p95_seconds. An external app without metrics_path is
# judged on this view alone.
analysis:
  interval: 2.0
  failure_limit: 0
  min_messages: 50
  max_error_ratio: 0.05
  max_error_ratio_over_old: 0.01
  max_p95_seconds: 1.0
  max_errors_per_connection: 10.0
  max_refused_ratio: 0.05
  min_requests: 20
  max_5xx_ratio: 0.05
  max_failed_upgrade_ratio: 0.05
  max_upstream_p95_seconds: 1.0
# Dotenv files (KEY=VALUE lines) the app's environment starts from; app_env
# wins. Their values, and what `${VAR}` in app_env takes from wsctl's own
# environment at deploy time, are secrets: masked as *** in every output.
env_file: []
# Login for pulls and pushes of a private registry, used before
# ~/.docker/config.json (auths, credsStore, credHelpers). The password is
# read from the environment variable password_env names.
registry:
  server: null
  username: null
  password_env: null
# After a reload Nginx's old workers keep the WebSockets they hold until
# those close: no reload cuts a socket. Past either bound (processes, or
# their resident memory summed), wsctl asks the bundled service to move
# their clients: goodbye and close 1001, paced over DRAIN_WINDOW, and they
# reconnect through the new workers and resume.
nginx:
  max_old_workers: 64
  max_old_memory: 512m
"#;

/// What `wsctl init --app external` writes: a stack for a WebSocket
/// service of your own (any language, nothing of wsctl in its image).
pub const INIT_EXTERNAL_FILE: &str = r#"# wsctl.yaml for a WebSocket service of your own: any image that serves
# HTTP and WebSockets on app_port. wsctl needs two things of it: an HTTP
# path that answers 2xx once it is ready, and a clean stop on stop_signal
# (finish or close its sockets, then exit). Every other key of `wsctl init`
# works here too.
app_kind: external
images:
  # Your app's image; pulled when absent.
  app: "registry.example.com/team/chat:1.0"
  # Runs wsctl's checks on the stack's network (readiness, smoke): a wsctl
  # image; nothing of wsctl goes into your app's image.
  checker: "wsctl:local"
# Where the app listens inside its container.
app_port: 8000
# Answers 2xx once the app is ready: readiness, the switch's check, status
# and smoke use it.
health_path: /up
# The WebSocket endpoint, for the smoke test (an upgrade must succeed).
ws_path: /ws/
# How the old colour is stopped; the engine kills it after drain_timeout.
stop_signal: SIGTERM
drain_timeout: 15
# The smoke test before any traffic moves; default: health_path, and an
# upgrade on ws_path. Each check is {http: PATH} (2xx, or status: N) or
# {websocket: PATH, send: TEXT, expect: TEXT} (a frame with TEXT within 5 s).
smoke:
  - {http: /up}
  - {websocket: /ws/}
# Set when the app speaks docs/protocol.md (counts, resume, goodbye): the
# full continuity check then runs through every deploy.
app_protocol: null
# Prometheus metrics with the contract's names, for `deploy --canary-steps`.
metrics_path: null
# COLOR (blue or green) and REDIS_URL are set for the app; add your own.
app_env: {}
"#;

/// The file a stack command reads when neither `-c` nor `WSCTL_CONFIG`
/// names one.
pub const DEFAULT_PATH: &str = "wsctl.yaml";

impl StackConfig {
    /// The stack's configuration: the file `given` by `-c` or
    /// `WSCTL_CONFIG`, which must exist (a typo must not act on the default
    /// stack, which may be someone else's), else `./wsctl.yaml`, whose
    /// absence means every default; with `announce`, that is said on
    /// stderr first.
    pub fn load_from(given: Option<&Path>, announce: bool) -> Result<StackConfig, ConfigError> {
        match given {
            Some(path) if !path.exists() => Err(ConfigError(format!(
                "{}: no such file (named by -c or WSCTL_CONFIG; `wsctl init {}` writes one)",
                path.display(),
                path.display()
            ))),
            Some(path) => StackConfig::load(path),
            None => {
                let path = Path::new(DEFAULT_PATH);
                if announce && !path.exists() {
                    let defaults = StackConfig::default();
                    crate::shared::secrets::say_err!(
                        "wsctl: no {DEFAULT_PATH} here: the default stack (prefix \"\", network \
                         {}, public address {}); `wsctl init` writes a file to change it",
                        defaults.network,
                        defaults.public_address
                    );
                }
                StackConfig::load(path)
            }
        }
    }

    /// Reads `path` (a missing file means all defaults) with the
    /// `WSCTL_<KEY>` overrides of wsctl's environment on top, and registers
    /// every secret it names for masking.
    pub fn load(path: &Path) -> Result<StackConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(ConfigError(format!("reading {}: {error}", path.display())));
            }
        };
        let mut config =
            StackConfig::parse_with(&text, &path.display().to_string(), std::env::vars())?;
        // env_file paths are relative to wsctl.yaml, as Compose's are to
        // its file, so the stack reads the same files from any directory.
        let base = path.parent().unwrap_or(Path::new(""));
        for file in &mut config.env_file {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        for tls in config
            .tls
            .iter_mut()
            .chain(config.hosts.iter_mut().filter_map(|host| host.tls.as_mut()))
        {
            tls.resolve_from(base);
        }
        let origin = path.display();
        if let Some(tls) = &config.tls {
            tls.check_files("")
                .map_err(|why| ConfigError(format!("{origin}: {why}")))?;
        }
        for host in &config.hosts {
            if let Some(tls) = &host.tls {
                tls.check_files(&format!("host {}: ", host.name))
                    .map_err(|why| ConfigError(format!("{origin}: {why}")))?;
            }
        }
        config.register_secrets();
        Ok(config)
    }

    /// The file's text alone, without overrides.
    #[cfg(test)]
    pub fn parse(text: &str, origin: &str) -> Result<StackConfig, ConfigError> {
        StackConfig::parse_with(text, origin, std::iter::empty())
    }

    /// The file's text with the `WSCTL_<KEY>` variables among `vars` on top.
    pub fn parse_with(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<StackConfig, ConfigError> {
        let located = |error: serde_yaml::Error, origin: &str| {
            let at = error
                .location()
                .map(|location| format!(" line {}", location.line()))
                .unwrap_or_default();
            ConfigError(format!("{origin}{at}: {error}"))
        };
        // The file alone first: only parsing text gives errors their line.
        if !text.trim().is_empty() {
            serde_yaml::from_str::<StackConfig>(text).map_err(|error| located(error, origin))?;
        }
        let mut document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|error| located(error, origin))?;
        let known: serde_yaml::Value =
            serde_yaml::from_str(INIT_FILE).map_err(|error| located(error, "init file"))?;
        let overrides = environment::apply_overrides(&mut document, &known, vars)?;
        for name in &overrides.unknown {
            crate::shared::secrets::say_err!(
                "wsctl: warning: {name} names no setting of wsctl.yaml; ignored"
            );
        }
        let origin = if overrides.applied.is_empty() {
            origin.to_string()
        } else {
            format!("{origin} with {}", overrides.applied.join(", "))
        };
        if document.is_null() {
            document = serde_yaml::Value::Mapping(Default::default());
        }
        let config: StackConfig =
            serde_yaml::from_value(document).map_err(|error| located(error, &origin))?;
        if let Some(problem) = config.app_problem(|key| app::line_of(text, key)) {
            return Err(ConfigError(format!("{origin}{problem}")));
        }
        config.validate(&origin)
    }

    /// Registers what must never be printed: the app environment's values
    /// from files and variables, Redis passwords, the registry password.
    /// An environment that cannot be resolved yet (a variable not set for
    /// `status`) registers what it can; `deploy` reports the error.
    fn register_secrets(&self) {
        if let Ok((_, secrets)) = environment::resolve(&self.env_file, &self.app_env, |name| {
            std::env::var(name).ok()
        }) {
            secrets
                .iter()
                .for_each(|secret| crate::shared::secrets::register(secret));
        }
        let urls = self
            .hosts
            .iter()
            .filter_map(|host| host.redis_url.as_deref());
        for urls in self.redis_url.as_deref().into_iter().chain(urls) {
            urls.split(',')
                .for_each(|url| crate::shared::secrets::register_url_password(url.trim()));
        }
        if let Some(password) = self.registry_password() {
            crate::shared::secrets::register(&password);
        }
        // A chat webhook's path is its credential (Slack's, Discord's):
        // shown as scheme and host only.
        for notify in &self.notify {
            if let Ok(url) = url::Url::parse(&notify.webhook)
                && !matches!(url.path(), "" | "/")
            {
                crate::shared::secrets::register(url.path());
            }
        }
    }

    /// The app containers' environment from `env_file` and `app_env`, with
    /// `${VAR}` taken from wsctl's environment now. A variable that is not
    /// set, or a file that cannot be read, is an error naming it.
    pub fn app_environment(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let (env, secrets) = environment::resolve(&self.env_file, &self.app_env, |name| {
            std::env::var(name).ok()
        })?;
        secrets
            .iter()
            .for_each(|secret| crate::shared::secrets::register(secret));
        Ok(env)
    }

    /// The registry password from the variable `registry.password_env`.
    pub fn registry_password(&self) -> Option<String> {
        let name = self.registry.password_env.as_deref()?;
        std::env::var(name).ok()
    }

    fn validate(self, origin: &str) -> Result<StackConfig, ConfigError> {
        if self.public_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "{origin}: public_address '{}' is not IP:PORT",
                self.public_address
            )));
        }
        for (index, notify) in self.notify.iter().enumerate() {
            if !(notify.webhook.starts_with("http://") || notify.webhook.starts_with("https://"))
                || url::Url::parse(&notify.webhook).is_err()
            {
                return Err(ConfigError(format!(
                    "{origin}: notify[{index}].webhook '{}' is not an http(s) URL",
                    crate::shared::input::masked_url(&notify.webhook)
                )));
            }
            if let Some(event) = notify
                .events
                .iter()
                .find(|event| !NOTIFY_EVENTS.contains(&event.as_str()))
            {
                return Err(ConfigError(format!(
                    "{origin}: notify[{index}].events: '{event}' is not one of {}",
                    NOTIFY_EVENTS.join(", ")
                )));
            }
        }
        if self.hooks.timeout == Some(0) {
            return Err(ConfigError(format!(
                "{origin}: hooks.timeout must be at least 1 second"
            )));
        }
        if let Some(http) = &self.http_address {
            if self.tls.is_none() && self.hosts.iter().all(|host| host.tls.is_none()) {
                return Err(ConfigError(format!(
                    "{origin}: http_address redirects to https://, which needs tls"
                )));
            }
            if http.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError(format!(
                    "{origin}: http_address '{http}' is not IP:PORT"
                )));
            }
            if *http == self.public_address {
                return Err(ConfigError(format!(
                    "{origin}: http_address and public_address are both {http}"
                )));
            }
        }

        for (key, value) in [
            ("ready_timeout", self.ready_timeout),
            ("drain_timeout", self.drain_timeout),
            ("lock_ttl", self.lock_ttl),
        ] {
            if value == 0 {
                return Err(ConfigError(format!(
                    "{origin}: {key} must be at least 1 second"
                )));
            }
        }
        const POLICIES: &[&str] = &[
            "noeviction",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ];
        if !POLICIES.contains(&self.redis.maxmemory_policy.as_str()) {
            return Err(ConfigError(format!(
                "{origin}: redis.maxmemory_policy '{}' is not one of {}",
                self.redis.maxmemory_policy,
                POLICIES.join(", ")
            )));
        }
        if parse_size(&self.nginx.max_old_memory).is_none() {
            return Err(ConfigError(format!(
                "{origin}: nginx.max_old_memory '{}' is not a size such as 512m or 1g",
                self.nginx.max_old_memory
            )));
        }
        if parse_size(&self.redis.maxmemory).is_none() {
            return Err(ConfigError(format!(
                "{origin}: redis.maxmemory '{}' is not a size such as 256mb or 1gb",
                self.redis.maxmemory
            )));
        }
        let resources = &self.resources;
        if !(resources.cpus > 0.0 && resources.cpus <= 1024.0) {
            return Err(ConfigError(format!(
                "{origin}: resources.cpus {} must be above 0 (fractions allowed: 0.5)",
                resources.cpus
            )));
        }
        // Docker refuses containers with less than 6 MiB.
        if parse_size(&resources.memory).is_none_or(|bytes| bytes < 6 << 20) {
            return Err(ConfigError(format!(
                "{origin}: resources.memory '{}' is not a size of at least 6m such as 512m or 1g",
                resources.memory
            )));
        }
        check_replicas(self.replicas).map_err(|why| ConfigError(format!("{origin}: {why}")))?;
        if resources.open_files < 2 * RESERVED_FILES {
            return Err(ConfigError(format!(
                "{origin}: resources.open_files {} must be at least {}",
                resources.open_files,
                2 * RESERVED_FILES
            )));
        }
        self.validate_hosts(origin)?;
        self.check_platform()
            .map_err(|why| ConfigError(format!("{origin}: {why}")))?;
        self.check_nginx_network()
            .map_err(|why| ConfigError(format!("{origin}: {why}")))?;
        let analysis = &self.analysis;
        if !(analysis.interval >= 0.1 && analysis.interval <= 3600.0) {
            return Err(ConfigError(format!(
                "{origin}: analysis.interval {} must be between 0.1 and 3600 seconds",
                analysis.interval
            )));
        }
        for (key, value) in [
            ("max_error_ratio", analysis.max_error_ratio),
            (
                "max_error_ratio_over_old",
                analysis.max_error_ratio_over_old,
            ),
            ("max_p95_seconds", analysis.max_p95_seconds),
            (
                "max_errors_per_connection",
                analysis.max_errors_per_connection,
            ),
            ("max_refused_ratio", analysis.max_refused_ratio),
            ("max_5xx_ratio", analysis.max_5xx_ratio),
            (
                "max_failed_upgrade_ratio",
                analysis.max_failed_upgrade_ratio,
            ),
            (
                "max_upstream_p95_seconds",
                analysis.max_upstream_p95_seconds,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError(format!(
                    "{origin}: analysis.{key} {value} must be a number of at least 0"
                )));
            }
        }
        for (key, networks) in [
            ("private_networks", &self.private_networks),
            ("trusted_proxies", &self.trusted_proxies),
            ("unlimited_networks", &self.unlimited_networks),
        ] {
            if let Some(bad) = networks.iter().find(|network| !is_network(network)) {
                return Err(ConfigError(format!(
                    "{origin}: {key} entry '{bad}' is not an address or CIDR network"
                )));
            }
        }
        Ok(self)
    }

    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// Nginx sized for a colour of `replicas` full containers: each
    /// proxied WebSocket costs Nginx two descriptors (client and upstream),
    /// and no process may hold more than `resources.open_files`, so the
    /// sockets are spread over enough workers.
    pub fn proxy_sizing(&self, replicas: usize) -> ProxySizing {
        let open_files = self.resources.open_files;
        let per_worker = NGINX_WORKER_CONNECTIONS
            .min(open_files.saturating_sub(2 * RESERVED_FILES))
            .max(1);
        let descriptors = 2 * replicas as u64 * self.resources.max_connections();
        ProxySizing {
            workers: descriptors.div_ceil(per_worker).max(1),
            open_files,
        }
    }

    /// The colour's container when it has one replica.
    pub fn app(&self, color: Color) -> String {
        self.name(&format!("app_{color}"))
    }

    /// The colour's containers with `count` replicas: `app_blue` for one
    /// (the name stacks had before replicas), `app_blue_1`.. above.
    pub fn app_replicas(&self, color: Color, count: usize) -> Vec<String> {
        if count <= 1 {
            return vec![self.app(color)];
        }
        (1..=count)
            .map(|index| format!("{}_{index}", self.app(color)))
            .collect()
    }

    /// The replica number of `name` if it is one of `color`'s containers
    /// (0 for the single-replica name).
    pub fn replica_index(&self, color: Color, name: &str) -> Option<usize> {
        let name = name.trim_start_matches('/');
        let rest = name.strip_prefix(&self.app(color))?;
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix('_')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    pub fn network_name(&self) -> String {
        self.name(&self.network)
    }

    /// The `REDIS_URL` app containers get: the configured Redis, or the
    /// stack's own container.
    pub fn app_redis_url(&self) -> String {
        match &self.redis_url {
            Some(url) => url.clone(),
            None => format!("redis://{}:6379/0", self.name("redis")),
        }
    }

    /// Whether wsctl runs the stack's Redis itself (no `redis_url`).
    pub fn owns_redis(&self) -> bool {
        self.redis_url.is_none()
    }

    /// The stack as seen on one of its hosts: that host's public address
    /// and Redis address, and no host list of its own.
    pub fn for_host(&self, host: &Host) -> StackConfig {
        StackConfig {
            public_address: host.public_address.clone(),
            tls: host.tls.clone().or_else(|| self.tls.clone()),
            redis_url: host.redis_url.clone().or_else(|| self.redis_url.clone()),
            hosts: Vec::new(),
            ..self.clone()
        }
    }

    fn validate_hosts(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |why: String| Err(ConfigError(format!("{origin}: {why}")));
        if let Some(url) = &self.redis_url
            && let Err(why) = check_redis_url(url)
        {
            return fail(format!("redis_url {why}"));
        }
        if self.switch_batch == 0 {
            return fail("switch_batch must be at least 1".into());
        }
        if self.hosts.is_empty() {
            return Ok(());
        }
        if self.redis_url.is_none() {
            return fail(
                "hosts needs redis_url: the Redis every host's containers share \
                 (wsctl starts none of its own across hosts)"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (index, host) in self.hosts.iter().enumerate() {
            let at = format!("hosts[{index}]");
            if host.name.trim().is_empty() {
                return fail(format!("{at}: name must not be empty"));
            }
            if !seen.insert(host.name.as_str()) {
                return fail(format!("{at}: host name '{}' appears twice", host.name));
            }
            let at = format!("host {}", host.name);
            let scheme = host.docker_host.split("://").next().unwrap_or("");
            if !["unix", "tcp", "ssh"].contains(&scheme) || !host.docker_host.contains("://") {
                return fail(format!(
                    "{at}: docker_host '{}' is not unix://, tcp:// or ssh://",
                    host.docker_host
                ));
            }
            if scheme == "ssh" && ssh_port_given(&host.docker_host) {
                return fail(format!(
                    "{at}: docker_host '{}' names a port, which bollard 0.21's ssh client \
                     drops; name it in ~/.ssh/config (Host NAME, HostName, Port) and use \
                     ssh://user@NAME",
                    host.docker_host
                ));
            }
            if host.tls_verify && scheme != "tcp" {
                return fail(format!("{at}: tls_verify needs a tcp:// docker_host"));
            }
            if host.cert_path.is_some() && !host.tls_verify {
                return fail(format!("{at}: cert_path is set but tls_verify is not"));
            }
            if let Some(key) = &host.ssh_key {
                if scheme != "ssh" {
                    return fail(format!("{at}: ssh_key needs an ssh:// docker_host"));
                }
                if !key.is_file() {
                    return fail(format!("{at}: ssh_key {} is not a file", key.display()));
                }
            }
            if host.public_address.parse::<std::net::SocketAddr>().is_err() {
                return fail(format!(
                    "{at}: public_address '{}' is not IP:PORT",
                    host.public_address
                ));
            }
            if let Some(url) = &host.redis_url
                && let Err(why) = check_redis_url(url)
            {
                return fail(format!("{at}: redis_url {why}"));
            }
        }
        Ok(())
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }

    /// The host side of Nginx's published port.
    /// `http://PUBLIC` or, with `tls:`, `https://PUBLIC`.
    pub fn public_url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://{}", self.public_address),
            None => format!("http://{}", self.public_address),
        }
    }

    /// `ws://PUBLIC` or, with `tls:`, `wss://PUBLIC`.
    pub fn public_ws_url(&self) -> String {
        match self.tls {
            Some(_) => format!("wss://{}", self.public_address),
            None => format!("ws://{}", self.public_address),
        }
    }

    pub fn public_socket(&self) -> std::net::SocketAddr {
        // Checked in `validate`.
        self.public_address
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gets_its_own_certificate_or_the_stacks_and_http_address_needs_tls() {
        let yaml = "redis_url: \"redis://10.9.0.1:6379/0\"\n\
            tls: {certificate: all.pem, key: all.key}\n\
            hosts:\n\
            \x20 - {name: a, docker_host: \"unix:///s\", public_address: \"127.0.0.1:443\"}\n\
            \x20 - {name: b, docker_host: \"unix:///t\", public_address: \"127.0.0.2:443\", \
            tls: {certificate: b.pem, key: b.key, hsts: true}}\n";
        let config = StackConfig::parse(yaml, "w").unwrap();
        let a = config.for_host(&config.hosts[0]);
        let b = config.for_host(&config.hosts[1]);
        assert_eq!(
            a.tls.as_ref().map(|tls| tls.certificate.clone()),
            Some("all.pem".into())
        );
        assert_eq!(
            b.tls.as_ref().map(|tls| tls.certificate.clone()),
            Some("b.pem".into())
        );
        assert!(b.tls.as_ref().is_some_and(|tls| tls.hsts));
        assert_eq!(b.public_url(), "https://127.0.0.2:443");
        let error = StackConfig::parse("http_address: \"127.0.0.1:80\"\n", "w")
            .unwrap_err()
            .0;
        assert!(error.contains("needs tls"), "{error}");
    }

    #[test]
    fn no_file_means_defaults_and_the_init_file_is_the_defaults() {
        let defaults = StackConfig::default();
        let init = StackConfig::parse(INIT_FILE, "wsctl.yaml").unwrap();
        assert_eq!(format!("{defaults:?}"), format!("{init:?}"));
        assert_eq!(defaults.app(Color::Green), "app_green");
        assert_eq!(defaults.app_redis_url(), "redis://redis:6379/0");
    }

    #[test]
    fn the_external_init_file_is_an_external_app_with_its_defaults() {
        let config = StackConfig::parse(INIT_EXTERNAL_FILE, "wsctl.yaml").unwrap();
        assert!(config.is_external());
        assert_eq!(config.health_path(), "/up");
        assert_eq!(config.stop_signal(), "SIGTERM");
        assert_eq!(config.checker_image(), "wsctl:local");
        assert!(!config.speaks_wsctl());
    }

    #[test]
    fn the_app_contract_is_checked_with_its_line() {
        let refused = |text: &str| StackConfig::parse(text, "wsctl.yaml").unwrap_err().0;
        // A key for external apps on the bundled service.
        let error = refused("prefix: x\nhealth_path: /up\n");
        assert!(
            error.contains("line 2") && error.contains("app_kind: external"),
            "{error}"
        );
        let error = refused("images:\n  app: a\n  checker: c\n");
        assert!(
            error.contains("line 3") && error.contains("images.checker"),
            "{error}"
        );
        let error = refused("app_kind: external\nhealth_path: up\n");
        assert!(
            error.contains("line 2") && error.contains("must start with /"),
            "{error}"
        );
        let error = refused("app_kind: external\nstop_signal: TERM\n");
        assert!(error.contains("SIGTERM"), "{error}");
        let error = refused("app_kind: external\nsmoke: [{http: /up, websocket: /ws}]\n");
        assert!(
            error.contains("smoke[0]") && error.contains("both"),
            "{error}"
        );
        let error = refused("app_kind: external\napp_protocol: wsctl\n");
        assert!(error.contains("needs ws_path"), "{error}");
        let error = refused("app_kind: extrnal\n");
        assert!(
            error.contains("line 1") && error.contains("external"),
            "{error}"
        );

        let config = StackConfig::parse(
            "app_kind: external\nhealth_path: /health\nws_path: /ws/\nstop_signal: SIGINT\n",
            "wsctl.yaml",
        )
        .unwrap();
        let checks: Vec<String> = config.app_checks().iter().map(|c| c.name()).collect();
        assert_eq!(checks, ["GET /health", "upgrade /ws/"]);
        assert_eq!(config.stop_signal(), "SIGINT");
        let bundled = StackConfig::default();
        assert_eq!(bundled.health_path(), "/readyz");
        assert!(bundled.speaks_wsctl());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let error = StackConfig::parse("prefix: x\nnetwrok: y\n", "wsctl.yaml")
            .unwrap_err()
            .0;
        assert!(
            error.contains("line 2") && error.contains("netwrok"),
            "{error}"
        );
    }

    #[test]
    fn malformed_yaml_and_bad_values_are_refused() {
        assert!(
            StackConfig::parse("images: [", "f")
                .unwrap_err()
                .0
                .contains("f")
        );
        assert!(
            StackConfig::parse("public_address: nowhere", "f")
                .unwrap_err()
                .0
                .contains("public_address")
        );
        assert!(
            StackConfig::parse("ready_timeout: 0", "f")
                .unwrap_err()
                .0
                .contains("ready_timeout")
        );
    }

    #[test]
    fn resources_are_sizes_and_counts_with_one_line_errors() {
        let config = StackConfig::parse("resources: {cpus: 0.5, memory: 512m}", "f").unwrap();
        assert_eq!(config.resources.memory_bytes(), 512 << 20);
        assert_eq!(config.resources.open_files, 20_000);
        assert_eq!(config.resources.max_connections(), 19_900);
        for (yaml, named) in [
            ("resources: {cpus: 0}", "resources.cpus"),
            ("resources: {memory: lots}", "resources.memory"),
            ("resources: {memory: 1m}", "resources.memory"),
            ("resources: {open_files: 10}", "resources.open_files"),
            ("resources: {gpus: 1}", "gpus"),
        ] {
            let error = StackConfig::parse(yaml, "f").unwrap_err().0;
            assert!(error.contains(named), "{yaml}: {error}");
        }
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("256mb"), Some(256 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1t"), None);
    }

    #[test]
    fn replicas_keep_the_single_name_and_number_the_rest() {
        let config = StackConfig::parse("prefix: t_\nreplicas: 3", "f").unwrap();
        assert_eq!(config.app_replicas(Color::Blue, 1), ["t_app_blue"]);
        assert_eq!(
            config.app_replicas(Color::Green, 3),
            ["t_app_green_1", "t_app_green_2", "t_app_green_3"]
        );
        assert_eq!(config.replica_index(Color::Blue, "/t_app_blue"), Some(0));
        assert_eq!(config.replica_index(Color::Blue, "t_app_blue_12"), Some(12));
        assert_eq!(config.replica_index(Color::Blue, "t_app_blue_x"), None);
        assert_eq!(config.replica_index(Color::Blue, "t_app_bluesky"), None);
        assert_eq!(config.replica_index(Color::Green, "t_app_blue_1"), None);
        for yaml in ["replicas: 0", "replicas: 65"] {
            let error = StackConfig::parse(yaml, "f").unwrap_err().0;
            assert!(error.contains("replicas"), "{error}");
        }
    }

    #[test]
    fn nginx_has_workers_for_two_descriptors_per_socket() {
        let one = StackConfig::default().proxy_sizing(1);
        // 19,900 sockets, 39,800 descriptors, 19,500 per worker.
        assert_eq!(
            one,
            ProxySizing {
                workers: 3,
                open_files: 20_000
            }
        );
        assert_eq!(StackConfig::default().proxy_sizing(4).workers, 9);
        let small = StackConfig::parse("resources: {open_files: 1000}", "f").unwrap();
        // 900 sockets, 1,800 descriptors, 800 per worker.
        assert_eq!(small.proxy_sizing(1).workers, 3);
        assert_eq!(
            one.directives(),
            "daemon off; worker_processes 3; worker_rlimit_nofile 20000;"
        );
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let config = StackConfig::parse("prefix: t1_", "f").unwrap();
        assert_eq!(config.app(Color::Blue), "t1_app_blue");
        assert_eq!(config.network_name(), "t1_wsctl");
        assert_eq!(config.app_redis_url(), "redis://t1_redis:6379/0");
    }

    #[test]
    fn hosts_need_a_shared_redis_and_sound_addresses() {
        let two = "hosts:\n  - {name: a, docker_host: \"unix:///var/run/docker.sock\", public_address: \"127.0.0.1:80\"}\n  - {name: b, docker_host: \"tcp://10.0.0.2:2376\", tls_verify: true, public_address: \"0.0.0.0:80\", redis_url: \"redis://10.9.0.1:6379/0\"}\n";
        let error = StackConfig::parse(two, "w").unwrap_err().0;
        assert!(error.contains("hosts needs redis_url"), "{error}");
        let config = StackConfig::parse(
            &format!("redis_url: \"redis://:secret@r:6379/0\"\n{two}"),
            "w",
        )
        .unwrap();
        let b = config.for_host(&config.hosts[1]);
        assert_eq!(b.public_address, "0.0.0.0:80");
        assert_eq!(b.app_redis_url(), "redis://10.9.0.1:6379/0");
        assert!(b.hosts.is_empty() && !b.owns_redis());
        let a = config.for_host(&config.hosts[0]);
        assert_eq!(a.app_redis_url(), "redis://:secret@r:6379/0");

        for (bad, expected) in [
            (two.replace("name: b", "name: a"), "appears twice"),
            (
                two.replace("tcp://10.0.0.2:2376", "ftp://x"),
                "not unix://, tcp:// or ssh://",
            ),
            (
                two.replace("0.0.0.0:80", "nowhere"),
                "public_address 'nowhere'",
            ),
            (
                two.replace(
                    "unix:///var/run/docker.sock\"",
                    "unix:///s\", tls_verify: true",
                ),
                "tls_verify needs a tcp://",
            ),
            (
                two.replace("unix:///var/run/docker.sock", "ssh://deploy@eu1:2222"),
                "names a port",
            ),
            (
                two.replace(
                    "unix:///var/run/docker.sock\"",
                    "ssh://deploy@eu1\", ssh_key: /no/such/key",
                ),
                "ssh_key /no/such/key is not a file",
            ),
        ] {
            let text = format!("redis_url: \"redis://r:6379/0\"\n{bad}");
            let error = StackConfig::parse(&text, "w").unwrap_err().0;
            assert!(error.contains(expected), "{error}");
        }
        // A bad URL is named by position, never echoed (it may hold a password).
        let error = StackConfig::parse("redis_url: \"http://:secret@r\"\n", "w")
            .unwrap_err()
            .0;
        assert!(
            error.contains("redis_url entry 1") && !error.contains("secret"),
            "{error}"
        );
        let error = StackConfig::parse("switch_batch: 0\n", "w").unwrap_err().0;
        assert!(error.contains("switch_batch"), "{error}");
    }

    #[test]
    fn nginx_network_host_is_taken_and_refused_with_tls_or_swarm() {
        let host = StackConfig::parse("nginx_network: host\n", "w").unwrap();
        assert!(host.nginx_on_host());
        assert!(!StackConfig::default().nginx_on_host());
        for (bad, expected) in [
            ("nginx_network: host\nplatform: swarm\n", "platform: docker"),
            (
                "nginx_network: host\ntls: {certificate: c.pem, key: k.pem}\n",
                "tls: yet",
            ),
            ("nginx_network: bridge\n", "nginx_network"),
        ] {
            let error = StackConfig::parse(bad, "w").unwrap_err().0;
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn platform_swarm_takes_a_manager_and_constraints_and_refuses_hosts() {
        let swarm = StackConfig::parse(
            "platform: swarm\nswarm: {manager: \"ssh://ops@m1\", constraints: [\"node.role==worker\"]}\n",
            "w",
        )
        .unwrap();
        assert!(swarm.is_swarm() && swarm.checks_from_checker());
        assert_eq!(swarm.swarm.constraints, ["node.role==worker"]);
        // The bundled service's own image checks its tasks.
        assert_eq!(swarm.checker_image(), swarm.images.app);
        assert!(!StackConfig::default().is_swarm());
        for (bad, expected) in [
            (
                "swarm: {constraints: [\"node.role==worker\"]}\n",
                "add platform: swarm",
            ),
            (
                "platform: swarm\nswarm: {manager: \"m1:2377\"}\n",
                "not unix://",
            ),
            (
                "platform: swarm\nswarm: {constraints: [\"worker\"]}\n",
                "KEY==VALUE",
            ),
            ("platform: kubernetes\n", "platform"),
            (
                "platform: swarm\nswarm: {edges: [{name: manager, docker_host: \"unix:///s\", public_address: \"1.2.3.4:80\"}]}\n",
                "is empty or taken",
            ),
            (
                "platform: swarm\npublic_address: \"1.2.3.4:80\"\nswarm: {edges: [{name: b, docker_host: \"unix:///s\", public_address: \"1.2.3.4:80\"}]}\n",
                "another edge's",
            ),
            (
                "platform: swarm\nswarm: {edges: [{name: b, docker_host: \"m2:2375\", public_address: \"1.2.3.4:80\"}]}\n",
                "not unix://",
            ),
            (
                "swarm: {edges: [{name: b, docker_host: \"unix:///s\", public_address: \"1.2.3.4:80\"}]}\n",
                "add platform: swarm",
            ),
            (
                "platform: swarm\nredis_url: \"redis://r:6379/0\"\nhosts:\n  - {name: a, docker_host: \"unix:///var/run/docker.sock\", public_address: \"0.0.0.0:80\"}\n",
                "leave hosts: empty",
            ),
        ] {
            let error = StackConfig::parse(bad, "w").unwrap_err().0;
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }
}
