//! The monitoring assets in compose/, proven with the real tools: promtool
//! checks the config and rules and runs their unit tests, and a real
//! Prometheus scrapes a real `wsctl serve` under a little traffic, then
//! evaluates every dashboard panel and alert query: each must return at
//! least one series, so a query naming a metric the service does not
//! export fails here. Every alert's runbook_url leads to a README heading,
//! and on the real engine a Prometheus on a prefixed stack's network finds
//! every replica of the live colour by DNS, before and after a deploy.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, send_json};
use serde_json::{Value, json};

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/prometheus")
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect(
            "promtool is not installed: run scripts/test.sh, which installs Debian's prometheus",
        );
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_config_and_the_rules() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn every_alert_fires_on_its_synthetic_series_and_stays_silent_when_healthy() {
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// Every alert's query without its threshold (`<query> <op> <number>`).
fn alert_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let expr = rule["expr"].as_str().unwrap();
            let split = [" >= ", " <= ", " == ", " != ", " > ", " < "]
                .iter()
                .filter_map(|op| expr.rfind(op))
                .max()
                .unwrap_or_else(|| panic!("{name}: expression has no threshold: {expr}"));
            queries.push((name, expr[..split].trim().to_string()));
        }
    }
    assert_eq!(queries.len(), 4, "the design's four alerts");
    queries
}

/// Every panel's and annotation's query, with the dashboard's `$color`
/// variable at "All" (`.*`), as Grafana sends them.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/grafana/dashboards/wsctl.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let all = |expr: &str| expr.replace("$color", ".*");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("$color"),
                "{}: not filtered by $color",
                panel["title"]
            );
            queries.push((panel["title"].as_str().unwrap().to_string(), all(expr)));
        }
    }
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    assert!(!annotations.is_empty(), "no deploy annotation");
    for annotation in annotations {
        let name = annotation["name"].as_str().unwrap();
        queries.push((
            format!("annotation {name}"),
            all(annotation["expr"].as_str().unwrap()),
        ));
    }
    // The `$color` variable's values: label_values(app_info, color).
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "color"]);
    queries.push(("variable color".into(), "app_info".into()));
    queries
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_url_to_a_readme_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let anchors: Vec<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect();
    let text = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut checked = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook_url"));
            let (page, fragment) = url.split_once('#').unwrap_or_else(|| panic!("{url}"));
            assert!(page.ends_with("/README.md"), "{name}: {url}");
            assert!(
                anchors.iter().any(|anchor| anchor == fragment),
                "{name}: README.md has no heading #{fragment}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn scrape(target: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("wsctl-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(prometheus_dir().join("alerts.yml"), dir.join("alerts.yml")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: wsctl\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n        labels: {{color: blue}}\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed: run scripts/test.sh");
        Prometheus { child, dir, port }
    }

    async fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr)])
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        assert_ne!(body["status"], "error", "{expr}: {body}");
        body["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn every_dashboard_and_alert_query_returns_a_series_from_a_real_scrape() {
    let server = Server::start(&[("RATE_LIMIT", "1000")]);
    let prometheus = Prometheus::scrape(&server.addr);
    let (mut ws, _) = server.connect("").await;
    let (mut other, _) = server.connect("").await;
    // A little traffic over several scrapes: messages, a broadcast, an error.
    let started = Instant::now();
    for i in 0..30 {
        send_json(&mut ws, json!({"type": "message", "message": i})).await;
        common::recv_non_heartbeat(&mut ws).await;
        if i % 10 == 0 {
            send_json(&mut other, json!({"type": "broadcast", "message": i})).await;
            common::recv_non_heartbeat(&mut other).await;
            common::recv_non_heartbeat(&mut ws).await;
            send_json(&mut other, json!("not an object")).await;
            common::recv_non_heartbeat(&mut other).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(4));

    let mut queries = dashboard_queries();
    queries.extend(alert_queries());
    for (source, expr) in queries {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match prometheus.query(&expr).await {
                Some(series) if !series.is_empty() => break,
                result => assert!(
                    Instant::now() < deadline,
                    "{source}: `{expr}` returned no series ({result:?})"
                ),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Prometheus from this machine's binary and the libraries `ldd` names,
/// `FROM scratch` (no registry here).
fn build_prometheus(images: &mut common::docker::BuiltImages, tag: &str) {
    let dir = common::docker::BuiltImages::context();
    let binary = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v prometheus"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let binary = binary.trim();
    let libraries = Command::new("ldd").arg(binary).output().unwrap();
    let mut files = vec![binary.to_string()];
    for word in String::from_utf8_lossy(&libraries.stdout).split_whitespace() {
        if word.starts_with('/') {
            files.push(word.to_string());
        }
    }
    for file in &files {
        let target = dir.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, &target).unwrap();
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nCOPY . /\nENTRYPOINT [\"{binary}\"]\n"),
    )
    .unwrap();
    images.build(tag, &dir);
}

/// The active targets' colours and health, from Prometheus's API.
async fn targets(api: &str) -> Vec<(String, String)> {
    let Ok(response) = reqwest::get(format!("{api}/api/v1/targets")).await else {
        return Vec::new();
    };
    let body: Value = response.json().await.unwrap_or_default();
    body["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|target| {
            (
                target["labels"]["color"].as_str().unwrap_or("").to_string(),
                target["health"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_for_targets(api: &str, wanted: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wanted: Vec<(String, String)> = wanted
        .iter()
        .map(|(color, health)| (color.to_string(), health.to_string()))
        .collect();
    wanted.sort();
    loop {
        let mut seen = targets(api).await;
        seen.sort();
        if seen == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "targets {seen:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The shipped prometheus.yml, unchanged, in a container on a prefixed
/// stack's network: it finds both replicas of the live colour by DNS, and
/// after a deploy both of the new one (the stopped colour has no target).
#[tokio::test]
async fn prometheus_finds_every_replica_of_a_prefixed_stack_by_dns() {
    let Some(_docker) = common::docker::docker_or_skip().await else {
        return;
    };
    let stack = common::docker::TestStack::new("replicas: 2\n");
    stack.wsctl_ok(&["deploy"]);
    let mut images = common::docker::BuiltImages::default();
    let image = format!("{}prometheus:test", stack.prefix);
    build_prometheus(&mut images, &image);
    let config_dir = stack.dir.join("prometheus");
    std::fs::create_dir_all(&config_dir).unwrap();
    for file in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(prometheus_dir().join(file), config_dir.join(file)).unwrap();
    }
    let name = format!("{}prometheus", stack.prefix);
    let started = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network"])
        .arg(format!("{}wsctl", stack.prefix))
        .args(["-p", "127.0.0.1::9090", "-v"])
        .arg(format!("{}:/etc/prometheus:ro", config_dir.display()))
        .args([
            &image,
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/tmp/data",
        ])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        common::docker::explain(&started)
    );
    let port = Command::new("docker")
        .args(["port", &name, "9090/tcp"])
        .output()
        .unwrap();
    let address = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let api = format!("http://{address}");

    wait_for_targets(&api, &[("blue", "up"), ("blue", "up")]).await;
    stack.wsctl_ok(&["deploy"]);
    wait_for_targets(&api, &[("green", "up"), ("green", "up")]).await;
}
