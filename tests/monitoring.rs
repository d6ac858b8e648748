//! The monitoring assets in compose/, proven with the real tools: promtool
//! checks the config and rules and runs their unit tests, and a real
//! Prometheus scrapes a real `wsctl serve` under a little traffic, then
//! evaluates every dashboard panel and alert query: each must return at
//! least one series, so a query naming a metric the service does not
//! export fails here.

mod common;

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

fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/grafana/dashboards/wsctl.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    queries
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
             scrape_configs:\n  - job_name: wsctl\n    static_configs:\n      - targets: ['{target}']\n"
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
