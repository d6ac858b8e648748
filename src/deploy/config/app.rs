//! The app contract: what wsctl may assume of the app it deploys.
//!
//! `app_kind: wsctl` (the default) is the bundled service: wsctl's own
//! binary is in the image, so checks run inside each container by exec,
//! its `/status` and `/metrics` are read, and its clients are moved with
//! `goodbye`. `app_kind: external` is any image that serves HTTP and
//! WebSockets on `app_port`: it needs a health path that answers 2xx when
//! ready and a clean stop on `stop_signal`, nothing inside the image; its
//! checks run from the stack's checker container (`images.checker`, a
//! wsctl image) on the stack's network.

use serde::Deserialize;

use super::StackConfig;
use crate::client::app_checks::AppCheck;

/// Which app the stack deploys.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// `wsctl serve` in the image (today's behaviour).
    #[default]
    Wsctl,
    /// Any WebSocket service: a health path and a clean stop.
    External,
}

/// The wire protocol an external app speaks, when it is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// docs/protocol.md: greetings with counts, resume by `session_uuid`,
    /// `goodbye` before a close; the full continuity check runs.
    Wsctl,
}

/// The health path of an external app when wsctl.yaml names none (Kamal's).
pub const EXTERNAL_HEALTH_PATH: &str = "/up";
/// The bundled service's readiness path.
pub const WSCTL_READY_PATH: &str = "/readyz";
/// The bundled service's WebSocket path.
pub const WSCTL_WS_PATH: &str = "/ws/chat/";
/// The checker's image when wsctl.yaml names none.
pub const CHECKER_IMAGE: &str = "wsctl:local";

/// Signals the engine may stop an external app with.
pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH",
];

/// The keys that only mean something for `app_kind: external`.
pub const EXTERNAL_ONLY: &[&str] = &[
    "health_path",
    "ws_path",
    "stop_signal",
    "smoke",
    "app_protocol",
    "metrics_path",
    "images.checker",
];

impl StackConfig {
    pub fn is_external(&self) -> bool {
        self.app_kind == AppKind::External
    }

    /// The app speaks docs/protocol.md: the bundled service, or an
    /// external app with `app_protocol: wsctl`.
    pub fn speaks_wsctl(&self) -> bool {
        !self.is_external() || self.app_protocol == Some(AppProtocol::Wsctl)
    }

    /// The path that answers 2xx once a replica is ready.
    pub fn health_path(&self) -> &str {
        match self.app_kind {
            AppKind::Wsctl => WSCTL_READY_PATH,
            AppKind::External => self.health_path.as_deref().unwrap_or(EXTERNAL_HEALTH_PATH),
        }
    }

    /// Where the app's WebSocket endpoint is, if wsctl knows.
    pub fn ws_path(&self) -> Option<&str> {
        match self.app_kind {
            AppKind::Wsctl => Some(WSCTL_WS_PATH),
            AppKind::External => self.ws_path.as_deref(),
        }
    }

    /// The signal the engine stops the app with (then SIGKILL after
    /// `drain_timeout`).
    pub fn stop_signal(&self) -> &str {
        self.stop_signal.as_deref().unwrap_or("SIGTERM")
    }

    /// The image of the checker container (external apps, and every app
    /// on `platform: swarm`): `images.checker`, else the bundled service's
    /// own image (it has wsctl), else `wsctl:local`.
    pub fn checker_image(&self) -> &str {
        match (&self.images.checker, self.is_external()) {
            (Some(image), _) => image,
            (None, false) => &self.images.app,
            (None, true) => CHECKER_IMAGE,
        }
    }

    /// The smoke checks of an external app: wsctl.yaml's `smoke`, else the
    /// health path and an upgrade on `ws_path` when it is set.
    pub fn app_checks(&self) -> Vec<AppCheck> {
        if let Some(checks) = &self.smoke {
            return checks.clone();
        }
        let mut checks = vec![AppCheck::http(self.health_path())];
        if let Some(path) = self.ws_path() {
            checks.push(AppCheck::websocket(path));
        }
        checks
    }

    /// What is wrong with the app contract as written, as ` line N: why`
    /// (or `: why`) to follow the file's name; `line` finds a key's line in
    /// the file (`None` when it came from a variable).
    pub(super) fn app_problem(&self, line: impl Fn(&str) -> Option<usize>) -> Option<String> {
        let at = |key: &str| line(key).map_or(String::new(), |line| format!(" line {line}"));
        let set = |key: &str| match key {
            "health_path" => self.health_path.is_some(),
            "ws_path" => self.ws_path.is_some(),
            "stop_signal" => self.stop_signal.is_some(),
            "smoke" => self.smoke.is_some(),
            "app_protocol" => self.app_protocol.is_some(),
            "metrics_path" => self.metrics_path.is_some(),
            "images.checker" => self.images.checker.is_some(),
            _ => false,
        };
        if !self.is_external() {
            let key = EXTERNAL_ONLY.iter().find(|key| set(key))?;
            return Some(format!(
                "{}: {key} means something only with app_kind: external (the bundled \
                 service has its own health path, signal and checks)",
                at(key)
            ));
        }
        for (key, path) in [
            ("health_path", &self.health_path),
            ("ws_path", &self.ws_path),
            ("metrics_path", &self.metrics_path),
        ] {
            if let Some(path) = path
                && !path.starts_with('/')
            {
                return Some(format!("{}: {key} '{path}' must start with /", at(key)));
            }
        }
        if let Some(signal) = &self.stop_signal
            && !STOP_SIGNALS.contains(&signal.as_str())
        {
            return Some(format!(
                "{}: stop_signal '{signal}' is not one of {}",
                at("stop_signal"),
                STOP_SIGNALS.join(", ")
            ));
        }
        if let Some(checks) = &self.smoke {
            if checks.is_empty() {
                return Some(format!(
                    "{}: smoke lists no check (leave it out for the default)",
                    at("smoke")
                ));
            }
            for (index, check) in checks.iter().enumerate() {
                if let Some(problem) = check.problem() {
                    return Some(format!("{}: smoke[{index}] {problem}", at("smoke")));
                }
            }
        }
        if self.app_protocol.is_some() && self.ws_path.is_none() {
            return Some(format!(
                "{}: app_protocol: wsctl needs ws_path, where the app's sessions are",
                at("app_protocol")
            ));
        }
        None
    }
}

/// The line of `key` (`images.checker`: the line of `checker:` under
/// `images:`) in the YAML `text`, counted from 1.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let (parent, leaf) = match key.split_once('.') {
        Some((parent, leaf)) => (Some(parent), leaf),
        None => (None, key),
    };
    let mut inside = parent.is_none();
    for (index, line) in text.lines().enumerate() {
        let indented = line.starts_with([' ', '\t']);
        let trimmed = line.trim_start();
        if let Some(parent) = parent
            && !indented
        {
            inside = trimmed.starts_with(&format!("{parent}:"));
            if inside && trimmed.contains(&format!("{leaf}:")) {
                return Some(index + 1);
            }
            continue;
        }
        if inside && (parent.is_some() || !indented) && trimmed.starts_with(&format!("{leaf}:")) {
            return Some(index + 1);
        }
    }
    None
}
