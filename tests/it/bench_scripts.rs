//! Every benchmark script runs on the current tree, in its short mode
//! (`BENCH_SHORT=1`: the same steps with small counts and short runs), and
//! leaves docs/BENCHMARKS.md as it was. No figure is asserted: this only
//! catches a script that broke (one once stopped at its first step for a
//! month, and another rewrote the sections after its own).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::docker::{docker_or_skip, explain, static_wsctl};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `python3 scripts/SCRIPT ARGS` short, from the repository's root,
/// with the static wsctl the scripts expect; checks it ended with 0 and
/// did not touch docs/BENCHMARKS.md.
fn run_short(script: &str, args: &[&str], env: &[(&str, PathBuf)]) {
    let docs = root().join("docs/BENCHMARKS.md");
    let before = std::fs::read(&docs).expect("docs/BENCHMARKS.md");
    let output = Command::new("python3")
        .arg(root().join("scripts").join(script))
        .args(args)
        .current_dir(root())
        .env("BENCH_SHORT", "1")
        // Wherever cargo built it (CI keeps its target directory outside
        // the clone).
        .env("WSCTL", static_wsctl())
        .envs(env.iter().map(|(key, value)| (*key, value.as_os_str())))
        .output()
        .expect("python3");
    assert!(output.status.success(), "{script}: {}", explain(&output));
    let after = std::fs::read(&docs).expect("docs/BENCHMARKS.md");
    assert!(
        before == after,
        "{script} rewrote docs/BENCHMARKS.md in its short mode"
    );
}

#[test]
fn the_service_benchmarks_run_short() {
    let wsctl = static_wsctl();
    let bare = wsctl
        .parent()
        .expect("the release directory")
        .join("bare_server");
    assert!(
        bare.exists(),
        "{} is missing: scripts/test.sh builds it",
        bare.display()
    );
    run_short("bench.py", &[], &[("BARE", bare)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_benchmark_runs_short() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    static_wsctl();
    run_short("bench_deploy.py", &[], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_benchmark_runs_short() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    static_wsctl();
    run_short("bench_reloads.py", &["50"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_and_deploy_benchmark_runs_short() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    static_wsctl();
    run_short(
        "bench_hold_deploy.py",
        &["200", "1"],
        &[("HOLD_SECONDS", PathBuf::from("30"))],
    );
}
