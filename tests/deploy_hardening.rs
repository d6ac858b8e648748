//! The shipped Nginx config against hostile requests, on the real Docker
//! Engine: no spelling of `/metrics` or `/status` gets past the private
//! networks, and no token reaches the access log.

mod common;

use common::docker::{TestStack, docker_or_skip, explain};

/// Spellings of the private endpoints a rule on the exact path would miss.
const SPELLINGS: &[&str] = &[
    "/status",
    "/metrics",
    "/status/",
    "/metrics/",
    "/status?x=1",
    "/metrics?format=text",
    "//status",
    "//metrics",
    "/STATUS",
    "/Metrics",
    "/%73tatus",
    "/%6detrics",
    "/status%2F",
    "/ws/../status",
    "/ws/%2e%2e/metrics",
    "/./status",
];

#[tokio::test]
async fn private_endpoints_stay_private_in_every_spelling() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // The test reaches Nginx from the host through the Docker gateway,
    // which this allow list leaves out.
    let stack = TestStack::new("private_networks: [\"127.0.0.0/8\"]\n");
    let output = stack.wsctl(&["deploy"]);
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for path in SPELLINGS {
        let (code, body) = common::raw_get(&stack.public, path).await;
        assert_eq!(code, 403, "{path} answered {code} from outside: {body}");
    }
    // Public paths still answer, with a token in the query string.
    let (code, _) = common::raw_get(&stack.public, "/healthz?token=s3cr3t-t0ken").await;
    assert_eq!(code, 200);

    // With the gateway in the allow list, the real answers come back:
    // the exact paths answer, every other spelling is the service's 404.
    stack.write_config("private_networks: [\"127.0.0.0/8\", \"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n");
    let output = stack.wsctl(&["switch", "--color", "blue"]);
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for path in SPELLINGS {
        let (code, body) = common::raw_get(&stack.public, path).await;
        let exact = ["/status", "/metrics", "/status?x=1", "/metrics?format=text"];
        let expected = if exact.contains(path) { 200 } else { 404 };
        assert_eq!(code, expected, "{path} from inside: {body}");
    }

    // The token never reached Nginx's access log.
    let logs = std::process::Command::new("docker")
        .args(["logs", &format!("{}nginx", stack.prefix)])
        .output()
        .expect("docker logs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("GET /healthz "),
        "the request is logged: {logs}"
    );
    assert!(
        !logs.contains("s3cr3t-t0ken"),
        "a token reached the log: {logs}"
    );
}
