//! Chaos: 20 deploys and rollbacks, each killed at a random moment by a
//! random signal (SIGTERM, SIGINT or SIGKILL), while 50 live clients talk
//! through Nginx. Each next command recovers what the last one left. At the
//! end no client lost or doubled a message, the public address was never
//! unanswered for more than 1 s, and a final deploy succeeds.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip};
use common::live::LiveClients;
use common::test_log::TestLog;

const ROUNDS: usize = 20;
const CLIENTS: usize = 50;

/// Polls the public `/status` every 50 ms; returns the longest time between
/// two 200 answers, in milliseconds. 20 requests a second leave room, under
/// the shipped per-address limit (50/s, which every request from this
/// machine shares), for wsctl's own verification looks (40/s): at 20 ms
/// the poller alone used the whole allowance, and a recover's verification
/// got 429s for seconds (the failure this test showed about once in nine
/// runs).
fn gap_poller(public: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let url = format!("http://{public}/status");
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let longest = AtomicU64::new(0);
        let mut last_ok = Instant::now();
        // Bounded: at most 30 minutes.
        for _ in 0..36_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
                let gap = last_ok.elapsed().as_millis() as u64;
                longest.fetch_max(gap, Ordering::Relaxed);
                last_ok = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        longest.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_interrupted_deploys_and_rollbacks_lose_nothing() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let mut log = TestLog::new("deploy_chaos");
    let stack = TestStack::new("drain_timeout: 8\n");
    stack.wsctl_ok(&["deploy"]);

    let clients = LiveClients::start(&format!("ws://{}/ws/chat/", stack.public), CLIENTS);
    let stop = Arc::new(AtomicBool::new(false));
    let poller = gap_poller(&stack.public, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut codes: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..ROUNDS {
        let random = uuid::Uuid::new_v4().as_u128();
        let command = if round % 2 == 0 { "deploy" } else { "rollback" };
        let signal = ["TERM", "INT", "KILL"][(random % 3) as usize];
        let delay = Duration::from_millis(((random >> 8) % 4000) as u64);
        let run = stack.spawn(&[command]);
        tokio::time::sleep(delay).await;
        run.signal(signal);
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
            .await
            .unwrap();
        let headline = format!(
            "round {round}: {command} SIG{signal} after {delay:?}: exit {code:?} {}",
            stderr.lines().last().unwrap_or("")
        );
        println!("{headline}");
        log.line(&format!(
            "{headline}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ));
        if !matches!(code, None | Some(0) | Some(2) | Some(130) | Some(143)) {
            log.line(&format!(
                "--- the stack after round {round}\n{}",
                stack.snapshot()
            ));
            panic!(
                "round {round}: {command} exit {code:?} (the whole run: {})\n{stdout}\n{stderr}",
                log.path().display()
            );
        }
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }

    let last = stack.wsctl(&["deploy"]);
    log.line(&format!("final deploy: {}", common::docker::explain(&last)));
    if last.status.code() != Some(0) {
        log.line(&format!(
            "--- the stack after the final deploy\n{}",
            stack.snapshot()
        ));
    }
    assert_eq!(
        last.status.code(),
        Some(0),
        "{} (the whole run: {})",
        String::from_utf8_lossy(&last.stderr),
        log.path().display()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let longest_gap_ms = poller.await.unwrap();
    let summary = clients.finish_logged(Some(&mut log)).await;
    let line = format!(
        "chaos: {ROUNDS} interrupted runs (exit codes {codes:?}), {CLIENTS} clients, {} messages \
         answered, {} reconnects, close codes {:?}, longest client gap {:?}, longest public \
         gap {longest_gap_ms} ms",
        summary.messages, summary.reconnects, summary.close_codes, summary.longest_gap
    );
    println!("{line}");
    log.line(&line);
    assert!(
        longest_gap_ms <= 1000,
        "the public address was unanswered for {longest_gap_ms} ms"
    );
}

/// The chaos test's one failure, made certain: a deploy killed during its
/// smoke leaves Nginx's upstream file naming the standby, so the next
/// command's recover switches back and verifies through the public address.
/// Here another client of this machine sends 100 requests a second there,
/// twice the shipped per-address rate: Nginx answers most requests 429,
/// which says nothing about the upstream. The verification must see past
/// them (it once counted each as a miss and never got 500 ms without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recover_verifies_while_this_machine_is_over_nginxs_per_address_rate() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let mut run = stack.spawn(&["deploy"]);
    assert!(run.wait_for_step("smoke"), "no smoke: {:?}", run.seen);
    run.signal("KILL");
    let _ = tokio::task::spawn_blocking(move || run.finish()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicU64::new(0));
    let url = format!("http://{}/status", stack.public);
    // Two loops of 100 requests a second each.
    let hammers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, limited, url) = (stop.clone(), limited.clone(), url.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                // Bounded: at most 60 s.
                for _ in 0..6_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if matches!(client.get(&url).send().await, Ok(r) if r.status() == 429) {
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    // Until the burst (100 requests) of the allowance is used up.
    let waited = Instant::now();
    while limited.load(Ordering::Relaxed) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "Nginx never answered 429: the test is not over the rate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = stack.wsctl_while_live(&["recover"]).await;
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        let _ = hammer.await;
    }
    assert_eq!(
        recovered.status.code(),
        Some(0),
        "{}",
        common::docker::explain(&recovered)
    );
    assert_eq!(stack.status_json()["live"], "blue");
}
