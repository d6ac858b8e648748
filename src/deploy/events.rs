//! What a deploy tells its user: each step with a spinner and its duration
//! on a terminal, or one JSON object per line with `--json` (the format is
//! documented in the README and stable).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::shared::secrets::{mask, say, say_err};

/// The `--json` side of a reporter, for a task that runs beside the run
/// (it prints whole objects; steps and spinners stay with `Events`).
#[derive(Debug, Clone)]
pub struct Emitter {
    json: bool,
    host: Option<String>,
}

impl Emitter {
    /// One object on its own line in JSON mode (with `host` when the stack
    /// is one host of several); nothing on a terminal.
    pub fn emit(&self, mut value: Value) {
        if self.json {
            if let (Some(host), Some(object)) = (&self.host, value.as_object_mut()) {
                object.insert("host".into(), json!(host));
            }
            say!("{value}");
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// `[host] ` when it speaks for one host of several.
    pub fn prefix(&self) -> String {
        self.host
            .as_ref()
            .map_or(String::new(), |host| format!("[{host}] "))
    }
}

pub struct Events {
    json: bool,
    spinner: Option<ProgressBar>,
    step: &'static str,
    /// A step has begun and not yet finished.
    open: bool,
    started: Instant,
    /// Each finished step and its duration, for the summary.
    durations: Vec<(&'static str, Duration)>,
    /// The host this reporter speaks for when a stack spans several: a
    /// `host` field in every event, a `[host]` prefix on every line, and no
    /// spinner (several hosts run at once).
    host: Option<String>,
}

impl Events {
    pub fn new(json: bool) -> Events {
        Events {
            json,
            spinner: None,
            step: "",
            open: false,
            started: Instant::now(),
            durations: Vec::new(),
            host: None,
        }
    }

    /// A reporter for one host of several.
    pub fn for_host(json: bool, host: &str) -> Events {
        Events {
            host: Some(host.to_string()),
            ..Events::new(json)
        }
    }

    /// `[host] ` when this reporter speaks for one host of several.
    pub fn prefix(&self) -> String {
        self.host
            .as_ref()
            .map_or(String::new(), |host| format!("[{host}] "))
    }

    pub fn begin(&mut self, step: &'static str, what: &str) {
        self.step = step;
        self.open = true;
        self.started = Instant::now();
        if self.json {
            self.emit(json!({"event": "step", "step": step, "status": "started", "detail": what}));
        } else if self.host.is_some() {
            say!("{}...  {step:<10} {what}", self.prefix());
        } else if std::io::stderr().is_terminal() {
            let spinner = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                spinner.set_style(style);
            }
            spinner.set_message(mask(&format!("{step:<10} {what}")).into_owned());
            spinner.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(spinner);
        }
    }

    /// A progress line goes somewhere (a spinner, or `--json`): only then
    /// is it worth what reading it costs.
    pub fn shows_progress(&self) -> bool {
        self.spinner.is_some() || self.json
    }

    /// Updates the running step's line (drain progress).
    pub fn progress(&mut self, what: &str) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(mask(&format!("{:<10} {what}", self.step)).into_owned());
        } else if self.json {
            self.emit(json!({"event": "progress", "step": self.step, "detail": what}));
        }
    }

    pub fn ok(&mut self, detail: &str) {
        self.finish("ok", detail);
    }

    pub fn fail(&mut self, detail: &str) {
        self.finish("failed", detail);
    }

    fn finish(&mut self, status: &str, detail: &str) {
        self.open = false;
        let took = self.started.elapsed();
        self.durations.push((self.step, took));
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
        if self.json {
            self.emit(json!({
                "event": "step", "step": self.step, "status": status,
                "duration_ms": (took.as_secs_f64() * 1000.0).round(), "detail": detail,
            }));
        } else {
            let mark = if status == "ok" { "ok  " } else { "FAIL" };
            say!(
                "{}{mark} {:<10} {:>7.2} s  {detail}",
                self.prefix(),
                self.step,
                took.as_secs_f64()
            );
        }
    }

    /// Each finished step's duration in milliseconds, for the summary
    /// (a step run twice, such as `undo`, adds up).
    pub fn durations_ms(&self) -> serde_json::Map<String, Value> {
        let mut steps = serde_json::Map::new();
        for (step, took) in &self.durations {
            let before = steps.get(*step).and_then(Value::as_f64).unwrap_or(0.0);
            let ms = (before + took.as_secs_f64() * 1000.0).round();
            steps.insert(step.to_string(), json!(ms));
        }
        steps
    }

    /// Something the user should act on that does not stop the run: a
    /// `warning` event, or a line on stderr.
    pub fn warn(&self, detail: &str) {
        if self.json {
            self.emit(json!({"event": "warning", "detail": detail}));
        } else {
            say_err!("{}warning: {detail}", self.prefix());
        }
    }

    /// A final or informational object (JSON mode) or line (terminal).
    pub fn emit(&self, value: Value) {
        self.emitter().emit(value)
    }

    /// What a task beside the run emits its objects with.
    pub fn emitter(&self) -> Emitter {
        Emitter {
            json: self.json,
            host: self.host.clone(),
        }
    }

    /// A step has begun and not finished (an error must close it).
    pub fn step_open(&self) -> bool {
        self.open
    }

    pub fn is_json(&self) -> bool {
        self.json
    }
}
