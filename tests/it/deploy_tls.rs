//! TLS at the edge against a real Nginx and certificates made with
//! Debian's openssl: a deploy with `tls:`, 30 clients over `wss://` riding
//! a deploy and a rollback, `http_address` redirecting, a certificate
//! rotated under 30 open sockets with `wsctl tls reload`, `smoke` and
//! `bench` over TLS with `--ca`, a deploy that rotates on its way, and a mismatched
//! key, an expired certificate and a garbage file each refused with
//! nothing changed.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::certs::{Certs, served_serial};
use common::docker::{TestStack, docker_or_skip, explain};
use common::live::LiveClients;
use common::second_engine::free_port;

const CLIENTS: usize = 30;

/// Each container of the stack and its state, to show nothing changed.
fn containers(stack: &TestStack) -> String {
    let output = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("name={}", stack.prefix)])
        .args(["--format", "{{.Names}} {{.State}} {{.CreatedAt}}"])
        .output()
        .expect("docker ps");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.contains("wsctl_lock"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join("\n")
}

fn tls_yaml(certificate: &std::path::Path, key: &std::path::Path, http: &str) -> String {
    format!(
        "tls: {{certificate: \"{}\", key: \"{}\"}}\nhttp_address: \"{http}\"\n",
        certificate.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_rides_deploys_rotates_under_open_sockets_and_refuses_bad_files() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let certs = Certs::new();
    let key_a = certs.key("a");
    let cert_a = certs.certificate("a", &key_a, "1001", None);
    let key_b = certs.key("b");
    let cert_b = certs.certificate("b", &key_b, "1002", None);
    let expired = certs.certificate(
        "old",
        &key_a,
        "1003",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let garbage = certs.path("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("garbage");
    let trust = wsctl::client::tls::trusting(Some(&certs.path("ca.pem"))).expect("the test CA");

    // A plain stack first: turning TLS on changes what Nginx publishes, so
    // a deploy refuses (naming `deploy --proxy`) and --proxy replaces it.
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let http = format!("127.0.0.1:{}", free_port());
    stack.write_config(&tls_yaml(&cert_a, &key_a, &http));
    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("`wsctl deploy --proxy` replaces it"),
        "{}",
        explain(&refused)
    );
    // Refused with nothing changed: the plain public address still serves.
    let plain_answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("http://{}/healthz", stack.public))
        .send()
        .await
        .expect("the plain public address answers");
    assert_eq!(plain_answer.status(), 200, "the refusal changed Nginx");
    stack.wsctl_ok(&["deploy", "--proxy"]);
    let status = stack.status_json();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(served_serial(&stack.public), "1001");
    // The key in the Nginx container is readable by root (Nginx's master) alone.
    let copied = Command::new("docker")
        .args([
            "cp",
            &format!("{}nginx:/etc/nginx/conf.d/tls-key.pem", stack.prefix),
            "-",
        ])
        .output()
        .expect("docker cp");
    assert!(copied.status.success(), "{}", explain(&copied));
    let mut archive = tar::Archive::new(copied.stdout.as_slice());
    let mode = archive
        .entries()
        .expect("a tar stream")
        .next()
        .expect("the key")
        .expect("an entry")
        .header()
        .mode()
        .expect("a mode");
    assert_eq!(mode & 0o777, 0o600, "the key's mode is {mode:o}");

    // Plain HTTP on http_address answers with a redirect to https://.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = plain
        .get(format!("http://{http}/healthz?x=1"))
        .send()
        .await
        .expect("http_address answers");
    assert_eq!(answer.status(), 301);
    let port = stack.public.rsplit(':').next().unwrap_or_default();
    assert_eq!(
        answer.headers()["location"],
        format!("https://127.0.0.1:{port}/healthz?x=1").as_str()
    );
    // The smoke test through the TLS public address, trusting the CA.
    let smoke = stack.wsctl(&[
        "smoke",
        "--url",
        &format!("https://{}", stack.public),
        "--ca",
        &certs.path("ca.pem").display().to_string(),
    ]);
    assert_eq!(smoke.status.code(), Some(0), "{}", explain(&smoke));
    let bench = common::wsctl()
        .args([
            "bench",
            "hold",
            "-n",
            "50",
            "--duration",
            "1",
            "--json",
            "--url",
        ])
        .arg(format!("wss://{}/ws/chat/", stack.public))
        .arg("--ca")
        .arg(certs.path("ca.pem"))
        .output()
        .expect("wsctl bench");
    assert_eq!(bench.status.code(), Some(0), "{}", explain(&bench));
    let report: serde_json::Value =
        serde_json::from_slice(&bench.stdout).unwrap_or_else(|_| panic!("{}", explain(&bench)));
    assert_eq!(report["connections_opened"], 50, "{report}");

    // 30 clients over wss:// ride a deploy and a rollback.
    let url = format!("wss://{}/ws/chat/", stack.public);
    let riders = LiveClients::start_trusting(&url, CLIENTS, Some(trust.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (command, colour) in [("deploy", "green"), ("rollback", "blue")] {
        let output = stack.wsctl_while_live(&[command]).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command}: {}",
            explain(&output)
        );
        assert_eq!(stack.status_json()["live"], colour);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary = riders.finish().await;
    println!(
        "wss: {CLIENTS} clients through a deploy and a rollback: {} messages, {} reconnects",
        summary.messages, summary.reconnects
    );

    // Rotation under 30 open sockets: none closes, a new one sees serial 1002.
    let open = LiveClients::start_trusting(&url, CLIENTS, Some(trust.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.write_config(&tls_yaml(&cert_b, &key_b, &http));
    let reloaded = stack.wsctl_while_live(&["tls", "reload", "--json"]).await;
    assert_eq!(reloaded.status.code(), Some(0), "{}", explain(&reloaded));
    let event: serde_json::Value = String::from_utf8_lossy(&reloaded.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "tls")
        .unwrap_or_else(|| panic!("no tls event: {}", explain(&reloaded)));
    assert_eq!(event["changed"], true, "{event}");
    assert_eq!(served_serial(&stack.public), "1002");
    let again = stack.wsctl(&["tls", "reload", "--json"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(r#""changed":false"#),
        "{}",
        explain(&again)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = open.finish().await;
    println!(
        "rotation: {CLIENTS} open sockets, {} messages, {} reconnects, {} abnormal closes",
        summary.messages, summary.reconnects, summary.abnormal_closes
    );
    assert_eq!(summary.reconnects, 0, "a socket was closed by the rotation");
    assert_eq!(summary.abnormal_closes, 0);

    // Bad files: refused before anything changes, naming the file and why.
    let before = containers(&stack);
    for (certificate, key, says) in [
        (&cert_b, &key_a, "is not the key of"),
        (&expired, &key_a, "expired on 2020-01-02"),
        (&garbage, &key_a, "holds no PEM certificate"),
    ] {
        stack.write_config(&tls_yaml(certificate, key, &http));
        for args in [&["deploy"][..], &["tls", "reload"][..]] {
            let refused = stack.wsctl(args);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
        assert_eq!(containers(&stack), before, "a refusal changed the stack");
        assert_eq!(served_serial(&stack.public), "1002");
    }

    // A deploy rotates on its way, as `tls reload` does.
    stack.write_config(&tls_yaml(&cert_a, &key_a, &http));
    stack.wsctl_ok(&["deploy"]);
    assert_eq!(served_serial(&stack.public), "1001");
    assert_eq!(stack.status_json()["live"], "green");
}
