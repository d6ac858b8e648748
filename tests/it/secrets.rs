//! Secrets from wsctl's environment (`${VAR}` in app_env) and from
//! `env_file` reach the app containers and no output stream: every stdout
//! and stderr of a deploy, a failing deploy that prints its container's
//! logs, status, history and logs is grepped for their values.

use crate::common;

use std::process::Output;

use common::docker::{TestStack, docker_or_skip, explain};

#[tokio::test]
async fn secrets_reach_the_app_and_are_masked_in_every_output() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let from_variable = format!("key-{unique}-from-variable");
    let from_file = format!("pw-{unique}-from-file");
    let bad_rate = format!("rate-{unique}-from-variable");
    let stack = TestStack::new(
        "app_env:\n  SECRET_KEY: \"${IT_SECRET_KEY}\"\n  RATE_LIMIT: \"${IT_RATE}\"\n  \
         PLAIN: \"plain-value\"\nenv_file: [secrets.env]\n",
    );
    std::fs::write(
        stack.dir.join("secrets.env"),
        format!("# the stack's secrets\nDB_PASSWORD={from_file}\n"),
    )
    .unwrap();
    let mut outputs: Vec<(String, Output)> = Vec::new();

    // A variable that is not set stops the deploy before any step, named.
    let missing = stack.wsctl_with_env(&["deploy"], &[("IT_RATE", "50")]);
    assert_eq!(missing.status.code(), Some(2), "{}", explain(&missing));
    assert!(
        explain(&missing).contains("app_env.SECRET_KEY: ${IT_SECRET_KEY} is not set"),
        "{}",
        explain(&missing)
    );
    let nothing = docker
        .inspect_container(&format!("{}app_blue", stack.prefix), None)
        .await;
    assert!(nothing.is_err(), "a container was started: {nothing:?}");

    // Deployed with both, and two WSCTL_ overrides of the file.
    let env = [
        ("IT_SECRET_KEY", from_variable.as_str()),
        ("IT_RATE", "50"),
        ("WSCTL_APP_ENV__HEARTBEAT_INTERVAL", "7"),
        ("WSCTL_DRAIN_TIMEOUT", "3"),
    ];
    let deployed = stack.wsctl_with_env(&["deploy", "--json"], &env);
    assert_eq!(deployed.status.code(), Some(0), "{}", explain(&deployed));
    outputs.push(("deploy --json".into(), deployed));
    let blue = docker
        .inspect_container(&format!("{}app_blue", stack.prefix), None)
        .await
        .expect("app_blue");
    let container_env = blue
        .config
        .and_then(|config| config.env)
        .unwrap_or_default();
    for wanted in [
        format!("SECRET_KEY={from_variable}"),
        format!("DB_PASSWORD={from_file}"),
        "RATE_LIMIT=50".to_string(),
        "HEARTBEAT_INTERVAL=7".to_string(),
        "PLAIN=plain-value".to_string(),
    ] {
        assert!(
            container_env.contains(&wanted),
            "{wanted} not in {container_env:?}"
        );
    }

    // A deploy whose container prints a secret as it fails (a RATE_LIMIT
    // that is not a number, echoed in serve's error): the deploy reports
    // the container's log lines, masked.
    let failing_env = [
        ("IT_SECRET_KEY", from_variable.as_str()),
        ("IT_RATE", bad_rate.as_str()),
    ];
    for args in [&["deploy", "--json"][..], &["deploy"][..]] {
        let failed = stack.wsctl_with_env(args, &failing_env);
        assert_ne!(failed.status.code(), Some(0), "{}", explain(&failed));
        assert!(
            explain(&failed).contains("is not a number"),
            "the container's error is reported: {}",
            explain(&failed)
        );
        assert!(explain(&failed).contains("***"), "{}", explain(&failed));
        outputs.push((args.join(" "), failed));
    }

    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["history", "--json"],
        &["logs", "--tail", "50"],
        &["logs", "--json"],
    ] {
        let output = stack.wsctl_with_env(args, &env);
        outputs.push((args.join(" "), output));
    }
    for (what, output) in &outputs {
        let text = explain(output);
        for secret in [&from_variable, &from_file, &bad_rate] {
            assert!(
                !text.contains(secret.as_str()),
                "wsctl {what} printed {secret}: {text}"
            );
        }
    }
}
