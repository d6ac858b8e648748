//! Shell completions and man pages come from the command-line definition
//! itself: every subcommand and flag is in them, and bash accepts the
//! script.

use crate::common;

use common::wsctl;

#[test]
fn completions_name_every_command_and_bash_parses_them() {
    for shell in ["bash", "zsh", "fish"] {
        let output = wsctl()
            .args(["completions", shell])
            .output()
            .expect("wsctl");
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        for word in [
            "deploy",
            "rollback",
            "promote",
            "abort",
            "canary-steps",
            "replicas",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let bash = wsctl()
        .args(["completions", "bash"])
        .output()
        .expect("wsctl");
    let path = std::env::temp_dir().join(format!("wsctl-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &bash.stdout).expect("write");
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("bash");
    let _ = std::fs::remove_file(&path);
    assert!(parsed.success(), "bash -n refused the completion script");
    let refused = wsctl()
        .args(["completions", "tcsh"])
        .output()
        .expect("wsctl");
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn man_pages_cover_the_tool_and_each_subcommand() {
    let dir = std::env::temp_dir().join(format!("wsctl-man-{}", std::process::id()));
    let output = wsctl()
        .args(["man", "--out"])
        .arg(&dir)
        .output()
        .expect("wsctl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(page("wsctl.1").starts_with(".ie") || page("wsctl.1").contains(".TH"));
    let deploy = page("wsctl-deploy.1");
    assert!(
        deploy.contains(".TH") && deploy.contains("canary"),
        "{deploy}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("wsctl-serve.1"));
    let _ = std::fs::remove_dir_all(&dir);
}
