//! Nginx reloads under live clients, on the real engine: a reload that
//! keeps a colour serving cuts none of its sockets, however long they stay
//! (old workers keep them; Nginx used to cut them 30 s after the reload,
//! without a close frame); past `nginx.max_old_workers` wsctl moves the old
//! workers' clients with goodbye, and the old workers go. Every reload is
//! in the journal record of its run.

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain};
use common::live::LiveClients;

/// `wsctl switch --color blue` on a stack where blue is live: a reload by
/// wsctl that keeps blue serving. Returns its `reload` event.
fn switch_to_the_live_colour(stack: &TestStack) -> serde_json::Value {
    let switched = stack.wsctl_ok(&["switch", "--color", "blue", "--json"]);
    String::from_utf8_lossy(&switched.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "reload")
        .unwrap_or_else(|| panic!("no reload event: {}", explain(&switched)))
}

/// Past the 30 s `worker_shutdown_timeout` the shipped config used to set.
const LONGER_THAN_THE_OLD_CUT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_that_keep_a_colour_serving_cut_no_socket() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 30);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A reload by hand, then one by wsctl that keeps blue serving (a
    // switch to the live colour re-renders and reloads).
    stack.reload_nginx_by_hand();
    let reload = switch_to_the_live_colour(&stack);
    assert_eq!(reload["step"], "switch", "{reload}");
    assert_eq!(reload["moved"], false, "{reload}");
    assert!(reload["old_workers"].as_u64() > Some(0), "{reload}");
    let history = stack.wsctl_ok(&["history", "--json", "-n", "1"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let recorded = &history["runs"][0]["reloads"];
    assert_eq!(recorded[0]["step"], "switch", "{history}");
    assert_eq!(recorded[0]["reason"], "traffic to blue", "{history}");

    let started = Instant::now();
    tokio::time::sleep(LONGER_THAN_THE_OLD_CUT).await;
    // The old workers still hold the clients' sockets.
    let lingering = stack.old_nginx_workers();
    let summary = clients.finish().await;
    println!(
        "30 clients, two reloads, {:?}: {} messages, {} reconnects, {} abnormal closes, \
         {lingering} old workers still holding them",
        started.elapsed(),
        summary.messages,
        summary.reconnects,
        summary.abnormal_closes
    );
    assert_eq!(summary.abnormal_closes, 0, "{:?}", summary.close_codes);
    assert_eq!(
        summary.reconnects, 0,
        "a client was moved: {:?}",
        summary.close_codes
    );
    assert!(
        lingering > 0,
        "the old workers went before their clients did"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_old_workers_clients_move_with_goodbye_and_resume() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("nginx:\n  max_old_workers: 0\n");
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 20);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let reload = switch_to_the_live_colour(&stack);
    assert_eq!(reload["moved"], true, "{reload}");
    // Goodbyes spread over DRAIN_WINDOW (2 s); then the old workers have
    // no socket left and exit.
    let gone = Instant::now();
    while stack.old_nginx_workers() > 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(15),
            "old workers stayed: {}",
            stack.old_nginx_workers()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let emptied = gone.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary = clients.finish().await;
    println!(
        "20 clients moved off old workers: gone after {emptied:?}, {} reconnects, close codes \
         {:?}, longest gap {:?}",
        summary.reconnects, summary.close_codes, summary.longest_gap
    );
    assert_eq!(summary.abnormal_closes, 0, "{:?}", summary.close_codes);
    assert_eq!(
        summary.reconnects, 20,
        "each client moved once: {summary:?}"
    );
    assert_eq!(
        summary.close_codes.keys().copied().collect::<Vec<_>>(),
        [1001],
        "{summary:?}"
    );
}
