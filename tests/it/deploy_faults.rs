//! Faults from outside wsctl, against the real engine and Nginx: a live
//! app process that crashes comes back by itself (restart policy), a
//! drained colour stays stopped, an old colour already dead counts as
//! drained, a restore that fails (Nginx paused during the switch) keeps
//! the serving colour running and says "recover", and an upstream file that
//! disagrees with what Nginx has loaded is refused until `recover`.

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain};

/// The public address's `/status` code, or 0 when nothing answered.
async fn public_code(stack: &TestStack) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    match client
        .get(format!("http://{}/status", stack.public))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn a_crashed_live_colour_serves_again_within_10_s_and_a_drained_one_stays_stopped() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let blue = format!("{}app_blue", stack.prefix);
    let info = docker.inspect_container(&blue, None).await.unwrap();
    let policy = info.host_config.unwrap().restart_policy.unwrap();
    assert_eq!(policy.name.unwrap().to_string(), "unless-stopped");

    // A crash: the service's process dies by SIGKILL (not `docker kill`,
    // which the engine treats as a deliberate stop).
    let pid = info.state.unwrap().pid.unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let crashed = Instant::now();
    while public_code(&stack).await != 200 {
        assert!(
            crashed.elapsed() < Duration::from_secs(10),
            "the public address did not answer again within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "crashed live colour served again after {:?}",
        crashed.elapsed()
    );

    // After a deploy, the drained colour stays stopped.
    stack.wsctl_ok(&["deploy"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = docker
        .inspect_container(&blue, None)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(false), "the drained colour restarted");
}

#[tokio::test]
async fn an_old_colour_already_dead_counts_as_drained_and_rollback_works_after() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let blue = format!("{}app_blue", stack.prefix);
    docker
        .kill_container(
            &blue,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();

    let deploy = stack.wsctl_ok(&["deploy"]);
    assert!(
        explain(&deploy).contains("nothing to drain"),
        "{}",
        explain(&deploy)
    );
    assert_eq!(stack.public_status().await["color"], "green");
    let status = stack.status_json();
    assert_eq!(status["history"][0]["outcome"], "succeeded", "{status}");
    assert_eq!(status["history"][0]["traffic"], "green", "{status}");

    stack.wsctl_ok(&["rollback"]);
    assert_eq!(stack.public_status().await["color"], "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_keeps_the_serving_colour_and_exits_9_saying_recover() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let nginx = format!("{}nginx", stack.prefix);

    // Nginx freezes while the standby is checked: the switch and then the
    // restore of the previous upstream both fail.
    let mut run = stack.spawn(&["deploy"]);
    assert!(run.wait_for_step("health"), "{:?}", run.seen);
    docker.pause_container(&nginx).await.unwrap();
    let (code, stdout, stderr) = run.finish();
    docker.unpause_container(&nginx).await.unwrap();
    assert_eq!(code, Some(9), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("recover") && stderr.contains("Nginx routes to"),
        "{stderr}"
    );
    // Nothing that Nginx may route to was stopped.
    for color in ["blue", "green"] {
        let name = format!("{}app_{color}", stack.prefix);
        let state = docker.inspect_container(&name, None).await.unwrap().state;
        assert_eq!(state.unwrap().running, Some(true), "{name} was stopped");
    }
    let status = stack.status_json();
    assert_eq!(status["history"][0]["outcome"], "needs_recover", "{status}");

    stack.wsctl_ok(&["recover"]);
    let status = stack.status_json();
    assert!(status["disagreement"].is_null(), "{status}");
    assert!(
        status["unfinished"].as_array().unwrap().is_empty(),
        "{status}"
    );
    let live = status["live"].as_str().unwrap().to_string();
    assert_eq!(stack.public_status().await["color"], live.as_str());
    stack.wsctl_ok(&["deploy"]);
}

/// The live colour is what Nginx has loaded, not what its upstream file
/// says: a file changed behind Nginx's back (as a run killed between upload
/// and reload leaves it) is reported, deploys refuse with exit 9, and
/// `wsctl recover` makes the two agree again.
#[tokio::test]
async fn an_upstream_file_that_disagrees_with_loaded_nginx_is_refused_until_recover() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let nginx = format!("{}nginx", stack.prefix);
    let path = "/etc/nginx/conf.d/upstream.conf";
    let read = std::process::Command::new("docker")
        .args(["cp", &format!("{nginx}:{path}"), "-"])
        .output()
        .unwrap();
    assert!(read.status.success());
    // `docker cp ... -` writes a tar stream; take the file out of it.
    let mut archive = tar::Archive::new(read.stdout.as_slice());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert!(text.contains("# wsctl live colour: blue"), "{text}");
    let edited = stack.dir.join("upstream.conf");
    std::fs::write(&edited, text.replace("blue", "green")).unwrap();
    let wrote = std::process::Command::new("docker")
        .args(["cp", edited.to_str().unwrap(), &format!("{nginx}:{path}")])
        .status()
        .unwrap();
    assert!(wrote.success());

    let status = stack.status_json();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["serving"]["file"], "green", "{status}");
    assert!(status["disagreement"].is_string(), "{status}");
    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(9), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("recover"),
        "{}",
        explain(&refused)
    );
    assert_eq!(stack.public_status().await["color"], "blue");

    stack.wsctl_ok(&["recover"]);
    let status = stack.status_json();
    assert!(status["disagreement"].is_null(), "{status}");
    assert_eq!(status["serving"]["file"], "blue", "{status}");
    stack.wsctl_ok(&["deploy"]);
    assert_eq!(stack.public_status().await["color"], "green");
}
