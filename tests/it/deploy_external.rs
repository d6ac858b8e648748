//! Deploying a WebSocket service that is not ours (`app_kind: external`)
//! on the real Docker Engine and Nginx: a Node app on Debian's `ws` library
//! (tests/apps/node-ws), FROM scratch with no shell and no wsctl, rides a
//! deploy and a rollback with 30 sockets open; its checks run from the
//! stack's checker container. An app whose health path never answers fails
//! at health with traffic where it was; an image without wsctl deployed as
//! the bundled service fails at once, naming `app_kind: external`.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use common::apps::node_ws_image;
use common::docker::{BuiltImages, TestStack, docker_or_skip};

/// What one held socket saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The colour of the last echo.
    colour: String,
    close_codes: Vec<u16>,
    upgrades_refused: u64,
}

/// Sockets to `/echo/` through the public address, each held open and
/// opened again (at most 50 times, 100 ms apart) when the server closes
/// it; after each (re)connect it sends one frame and records the colour
/// of the echo.
struct EchoClients {
    seen: Vec<Arc<Mutex<Seen>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EchoClients {
    fn start(url: &str, count: usize) -> EchoClients {
        let stop = CancellationToken::new();
        let mut seen = Vec::new();
        let mut tasks = Vec::new();
        for index in 0..count {
            let mine = Arc::new(Mutex::new(Seen::default()));
            seen.push(mine.clone());
            let (url, stop) = (url.to_string(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    if stop.is_cancelled() {
                        return;
                    }
                    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
                        mine.lock().unwrap().upgrades_refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let hello = format!("client {index}");
                    if socket.send(Message::text(hello)).await.is_err() {
                        continue;
                    }
                    let code = loop {
                        let frame = tokio::select! {
                            frame = socket.next() => frame,
                            _ = stop.cancelled() => return,
                        };
                        match frame {
                            Some(Ok(Message::Text(text))) => {
                                let colour = text.split(':').next().unwrap_or("").to_string();
                                mine.lock().unwrap().colour = colour;
                            }
                            Some(Ok(Message::Close(close))) => {
                                break close.map_or(1005, |close| u16::from(close.code));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break 1006,
                        }
                    };
                    mine.lock().unwrap().close_codes.push(code);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        EchoClients { seen, stop, tasks }
    }

    fn colours(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|seen| seen.lock().unwrap().colour.clone())
            .collect()
    }

    /// Waits (at most `within`) until every socket's last echo came from
    /// `colour`.
    async fn all_on(&self, colour: &str, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.colours().iter().all(|seen| seen == colour) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn finish(self) -> Vec<Seen> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.seen
            .iter()
            .map(|seen| seen.lock().unwrap().clone())
            .collect()
    }
}

/// A test stack and the Node app's image, built under the stack's prefix
/// (removed with the returned images).
fn node_stack() -> (TestStack, BuiltImages, String) {
    let stack = TestStack::new("");
    let mut images = BuiltImages::default();
    let tag = format!("{}node:1", stack.prefix.trim_end_matches('_'));
    let node = node_ws_image(&mut images, &tag);
    (stack, images, node)
}

/// `GET /` through the public address every 100 ms until stopped: the
/// requests sent, and each failure with what it was (a status, or the
/// client's error, and when), so a failure says whether Nginx answered.
/// Ten a second, with the sockets' reconnects, stays within Nginx's
/// default per-address request limit (50/s, burst 100): every client here
/// comes from one address, the Docker network's gateway.
fn poll_http(public: &str, stop: CancellationToken) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    let url = format!("http://{public}/");
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let started = std::time::Instant::now();
        let (mut sent, mut failed) = (0, Vec::new());
        while !stop.is_cancelled() && sent < 10_000 {
            sent += 1;
            let at = started.elapsed();
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => failed.push(format!("{} at {at:?}", response.status())),
                Err(error) => failed.push(format!("{error:#} at {at:?}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (sent, failed)
    })
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Milliseconds from the start of a `--json` run to its switch step's
/// end, from the step events' durations.
fn until_switched_ms(all: &[serde_json::Value]) -> f64 {
    all.iter()
        .filter(|event| event["event"] == "step" && event["status"] == "ok")
        .take_while(|event| event["step"] != "drain")
        .filter_map(|event| event["duration_ms"].as_f64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_app_rides_a_deploy_and_a_rollback_with_nothing_of_wsctl_inside() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (stack, _images, node) = node_stack();
    stack.write_external_config(
        &node,
        "health_path: /up\nws_path: /echo/\nsmoke:\n  - {http: /up}\n  - {http: /nothing, status: 404}\n  - {websocket: /echo/, send: ping, expect: ping}\n",
    );
    let first = stack.wsctl_ok(&["deploy", "--json"]);
    let first = String::from_utf8_lossy(&first.stdout).to_string();
    println!(
        "first deploy: {:.0} ms to traffic",
        until_switched_ms(&events(&first))
    );

    let url = format!("ws://{}/echo/", stack.public);
    let clients = EchoClients::start(&url, 30);
    assert!(
        clients.all_on("blue", Duration::from_secs(10)).await,
        "not every socket on blue: {:?}",
        clients.colours()
    );
    let stop = CancellationToken::new();
    let poller = poll_http(&stack.public, stop.clone());

    // A deploy: green takes every new connection; blue's SIGTERM closes
    // its sockets with 1001 and they come back on green.
    let deployed = stack.wsctl_ok(&["deploy", "--json"]);
    let deployed = String::from_utf8_lossy(&deployed.stdout).to_string();
    let all = events(&deployed);
    println!("deploy: {:.0} ms to traffic", until_switched_ms(&all));
    let continuity = all
        .iter()
        .find(|event| event["event"] == "continuity")
        .unwrap_or_else(|| panic!("no continuity report: {deployed}"));
    println!("deploy's cutover probe: {continuity}");
    assert!(
        continuity["close_codes"]["1001"].as_u64().unwrap_or(0) > 0,
        "the probe's sockets saw no 1001: {continuity}"
    );
    assert_eq!(continuity["http_failed"], 0, "{continuity}");
    assert!(
        clients.all_on("green", Duration::from_secs(20)).await,
        "not every socket back on green: {:?}",
        clients.colours()
    );

    // Status reads the app's health path from the checker.
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    assert_eq!(status["colors"]["green"]["health"], "healthy", "{status}");
    // The stack's own smoke test of a colour, as the deploy runs it.
    stack.wsctl_ok(&["smoke", "--color", "green"]);

    // And back.
    stack.wsctl_ok(&["rollback", "--json"]);
    assert!(
        clients.all_on("blue", Duration::from_secs(20)).await,
        "not every socket back on blue: {:?}",
        clients.colours()
    );
    stop.cancel();
    let (sent, failed) = poller.await.expect("poller");
    let seen = clients.finish().await;
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    for code in seen.iter().flat_map(|seen| seen.close_codes.iter()) {
        *codes.entry(*code).or_default() += 1;
    }
    let refused: u64 = seen.iter().map(|seen| seen.upgrades_refused).sum();
    println!(
        "30 sockets: close codes {codes:?}, upgrades refused {refused}; HTTP {}/{sent} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "HTTP requests through Nginx failed: {failed:?} of {sent}"
    );
    assert!(sent > 10, "the poller sent only {sent}");
    // Each socket was closed by the old colour's SIGTERM, once per move,
    // with a close frame.
    assert_eq!(codes, BTreeMap::from([(1001, 60)]), "{seen:?}");
    assert_eq!(refused, 0, "{seen:?}");

    // The engine stops the app with its stop signal.
    let inspect = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Config.StopSignal}}",
            &format!("{}app_green", stack.prefix),
        ])
        .output()
        .expect("docker inspect");
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_turns_healthy_fails_at_health_and_traffic_stays() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (stack, _images, node) = node_stack();

    // A newcomer's first try: their image as if it were the bundled
    // service. It has no /wsctl, a fault no retry fixes, so the deploy
    // fails at once instead of waiting out ready_timeout, and says what to
    // set.
    stack.write_config_for(&node, "ready_timeout: 30\n");
    let started = Instant::now();
    let failed = stack.wsctl(&["deploy"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("app_kind: external"), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");

    // As an external app it deploys.
    stack.write_external_config(&node, "ws_path: /echo/\n");
    stack.wsctl_ok(&["deploy"]);
    assert_eq!(stack.status_json()["live"], "blue");

    // A health path that answers 404: the standby never turns ready, and
    // traffic stays on blue.
    stack.write_external_config(
        &node,
        "ws_path: /echo/\nhealth_path: /nothing\nready_timeout: 3\n",
    );
    let failed = stack.wsctl(&["deploy", "--json"]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("/nothing answered 404"), "{stdout}");
    let summary = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["traffic"], "blue", "{summary}");
    let answer = reqwest::get(format!("http://{}/", stack.public))
        .await
        .expect("GET /")
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(answer.trim(), "node-ws blue", "blue no longer answers");
}

/// `count` short sockets to `url`, one after the other: opened, one echo,
/// closed (Nginx logs a WebSocket when it closes). Returns how many opened.
async fn short_sockets(url: &str, count: usize) -> usize {
    let mut opened = 0;
    for _ in 0..count {
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await;
        if let Ok(Ok((mut socket, _))) = connected {
            opened += 1;
            let _ = socket.send(Message::text("hello")).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.next()).await;
            let _ = socket.close(None).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    opened
}

/// `deploy --canary 50 ARGS`, with `sockets` short sockets opened once the
/// weighted upstream is loaded: the run's (exit code, stdout, stderr).
async fn canary_under_short_sockets(
    stack: &TestStack,
    url: &str,
    args: &[&str],
    sockets: usize,
) -> (Option<i32>, String, String) {
    let mut command = vec!["deploy", "--canary", "50"];
    command.extend_from_slice(args);
    let mut run = stack.spawn(&command);
    assert!(
        run.wait_for(|event| event["event"] == "reload"),
        "no reload: {:?}",
        run.seen
    );
    let traffic = tokio::spawn({
        let url = url.to_string();
        async move { short_sockets(&url, sockets).await }
    });
    let finished = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    traffic.abort();
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_judged_from_nginx_s_view_promoted_when_good_and_rolled_back_when_upgrades_fail()
 {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (stack, _images, node) = node_stack();
    stack.write_external_config(
        &node,
        "ws_path: /echo/\nanalysis: {interval: 1.0, min_requests: 10}\n",
    );
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/echo/", stack.public);

    // A healthy canary: no metrics of its own, judged on Nginx's view.
    let (code, stdout, stderr) =
        canary_under_short_sockets(&stack, &url, &["--analysis", "3"], 60).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let passed = events(&stdout)
        .into_iter()
        .filter(|event| event["event"] == "analysis")
        .find(|event| event["verdict"] == "ok")
        .unwrap_or_else(|| panic!("no passing sample: {stdout}"));
    assert!(
        passed["new_requests"].as_u64().unwrap_or(0) >= 10,
        "{passed}"
    );
    assert_eq!(stack.status_json()["live"], "green");

    // A canary that refuses every second upgrade with a 500: its smoke
    // test (one upgrade) passes, real traffic does not.
    let (code, stdout, stderr) = canary_under_short_sockets(
        &stack,
        &url,
        &["--analysis", "30", "--env", "FAIL_UPGRADE_EVERY=2"],
        200,
    )
    .await;
    assert_eq!(code, Some(10), "{stdout}\n{stderr}");
    let failed = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "analysis" && event["verdict"] == "failed")
        .unwrap_or_else(|| panic!("no failed sample: {stdout}"));
    println!("failed sample: {failed}");
    assert!(
        failed["detail"].as_str().unwrap_or("").contains("upgrades"),
        "{failed}"
    );
    let summary = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["traffic"], "green", "{summary}");
    let answer = reqwest::get(format!("http://{}/", stack.public))
        .await
        .expect("GET /")
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(answer.trim(), "node-ws green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_asgi_app_of_the_contract_loses_and_doubles_nothing_through_a_deploy_and_a_rollback()
 {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let mut images = BuiltImages::default();
    let app = common::apps::python_asgi_image(
        &mut images,
        &format!("{}python:1", stack.prefix.trim_end_matches('_')),
    );
    stack.write_external_config(
        &app,
        "health_path: /up\nws_path: /ws/chat/\napp_protocol: wsctl\n",
    );
    stack.wsctl_ok(&["deploy"]);
    let clients = common::live::LiveClients::start(&format!("ws://{}/ws/chat/", stack.public), 30);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployed = stack.wsctl_ok(&["deploy", "--json"]);
    let deployed = String::from_utf8_lossy(&deployed.stdout).to_string();
    // The cutover probe ran the contract's sessions on ws_path.
    let continuity = events(&deployed)
        .into_iter()
        .find(|event| event["event"] == "continuity")
        .unwrap_or_else(|| panic!("no continuity report: {deployed}"));
    println!("deploy's cutover probe: {continuity}");
    assert!(
        continuity["messages_answered"].as_u64().unwrap_or(0) > 0,
        "{continuity}"
    );
    assert_eq!(continuity["messages_lost"], 0, "{continuity}");
    assert_eq!(continuity["messages_duplicated"], 0, "{continuity}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.wsctl_ok(&["rollback"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // LiveClients checks every client's counts: 1, 2, 3 ... across both
    // moves, each resumed with its count on the other colour.
    let summary = clients.finish().await;
    println!(
        "30 clients: {} messages, {} reconnects, closes {:?}, longest gap {:?}",
        summary.messages, summary.reconnects, summary.close_codes, summary.longest_gap
    );
    assert!(summary.reconnects >= 60, "{summary:?}");
    assert_eq!(summary.abnormal_closes, 0, "{summary:?}");
    assert!(
        summary.close_codes.keys().all(|code| *code == 1001),
        "{:?}",
        summary.close_codes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_app_deploys_on_a_remote_engine_over_tcp_with_tls() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    use common::second_engine::{SecondEngine, create_network};
    let (stack, _images, node) = node_stack();
    // No registry: the images are copied into the second engine.
    let engine = SecondEngine::start(&format!(
        "{} {node} wsctl-nginx:local wsctl-redis:local",
        stack.app_image
    ));
    let n = engine.n;
    // A network whose bridge the second engine's forwarding rule covers,
    // adopted by wsctl as it is.
    create_network(
        &["-H", &engine.socket],
        &format!("{}wsctl", stack.prefix),
        &format!("10.218.{n}.0/24"),
        Some(format!("w2e{n}s")),
    );
    stack.write_external_config(&node, "ws_path: /echo/\n");
    let remote = [
        ("DOCKER_HOST", engine.tcp.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", engine.certs.as_str()),
    ];
    let ok = |args: &[&str]| {
        let output = stack.wsctl_with_env(args, &remote);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            common::docker::explain(&output)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    ok(&["deploy"]);
    let clients = EchoClients::start(&format!("ws://{}/echo/", stack.public), 10);
    assert!(
        clients.all_on("blue", Duration::from_secs(10)).await,
        "{:?}",
        clients.colours()
    );
    ok(&["deploy"]);
    assert!(
        clients.all_on("green", Duration::from_secs(20)).await,
        "{:?}",
        clients.colours()
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json"])).expect("status JSON");
    assert_eq!(status["live"], "green", "{status}");
    assert_eq!(status["colors"]["green"]["health"], "healthy", "{status}");
    ok(&["smoke", "--color", "green"]);
    // Everything ran on the second engine, the checker too; nothing here.
    let checker = engine.docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("{}checker", stack.prefix),
    ]);
    assert_eq!(String::from_utf8_lossy(&checker.stdout).trim(), "true");
    let here = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={}", stack.prefix)])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&here.stdout).trim().is_empty(),
        "containers on engine one"
    );
    let seen = clients.finish().await;
    assert!(
        seen.iter().all(|seen| seen.close_codes == [1001]),
        "{seen:?}"
    );
}
