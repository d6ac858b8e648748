//! The CI recipes in docs/ci/ are YAML, and every wsctl command they run
//! exists with every flag they give it: each is run with `--help` and its
//! flags are looked up in that help.

use crate::common;

use std::path::Path;

const RECIPES: [&str; 2] = ["docs/ci/github-actions.yml", "docs/ci/gitlab-ci.yml"];

/// The shell text of a recipe: every `run:` (GitHub) and `script:` line
/// (GitLab), found by walking the parsed YAML.
fn shell_lines(value: &serde_yaml::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    (Some("run"), serde_yaml::Value::String(text)) => out.push(text.clone()),
                    (
                        Some("script" | "after_script" | "before_script"),
                        serde_yaml::Value::Sequence(items),
                    ) => {
                        out.extend(
                            items
                                .iter()
                                .filter_map(|item| item.as_str().map(String::from)),
                        );
                    }
                    _ => shell_lines(child, out),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|item| shell_lines(item, out)),
        _ => {}
    }
}

/// Every wsctl invocation in `text`: the words after `wsctl`, up to the end
/// of its command (`|`, `;`, `&&`, `)`, a newline). Command substitutions
/// `$(...)` are taken out first and checked as invocations of their own.
fn invocations(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut outer = text.to_string();
    while let Some(open) = outer.find("$(") {
        let Some(close) = outer[open..].find(')') else {
            break;
        };
        found.extend(invocations(&outer[open + 2..open + close]));
        outer.replace_range(open..open + close + 1, "VALUE");
    }
    for command in outer.split(['\n', '|', ';', '&']) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let Some(at) = words
            .iter()
            .position(|word| *word == "wsctl" || word.ends_with("/wsctl"))
        else {
            continue;
        };
        found.push(
            words[at + 1..]
                .iter()
                .map(|word| word.trim_matches('"').to_string())
                .collect(),
        );
    }
    found
}

fn help(path: &[String]) -> Option<String> {
    let output = common::wsctl()
        .args(path)
        .arg("--help")
        .output()
        .expect("run wsctl");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn every_wsctl_command_and_flag_in_the_ci_recipes_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for recipe in RECIPES {
        let text = std::fs::read_to_string(root.join(recipe)).unwrap();
        let parsed: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("{recipe}: {error}"));
        let mut lines = Vec::new();
        shell_lines(&parsed, &mut lines);
        let calls: Vec<Vec<String>> = lines.iter().flat_map(|line| invocations(line)).collect();
        assert!(calls.len() >= 5, "{recipe}: only {calls:?}");
        for words in calls {
            // The subcommand is the leading words that are not flags, less
            // any positional value at its end.
            let mut path: Vec<String> = words
                .iter()
                .take_while(|word| !word.starts_with('-'))
                .cloned()
                .collect();
            let help_text = loop {
                assert!(
                    !path.is_empty(),
                    "{recipe}: no wsctl subcommand in {words:?}"
                );
                if let Some(text) = help(&path) {
                    break text;
                }
                path.pop();
            };
            for flag in words.iter().filter(|word| word.starts_with('-')) {
                let name = flag.split('=').next().unwrap_or(flag);
                assert!(
                    help_text.contains(&format!("{name} "))
                        || help_text.contains(&format!("{name},")),
                    "{recipe}: `wsctl {}` has no flag {name}:\n{help_text}",
                    path.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} invocations checked");
}

#[test]
fn the_invocation_parser_finds_nested_commands_and_flags() {
    let calls = invocations(
        "live=$(./wsctl status --json | jq -r .live)\n./wsctl smoke --color \"$live\" --junit s.xml",
    );
    assert_eq!(
        calls,
        [
            vec!["status", "--json"],
            vec!["smoke", "--color", "$live", "--junit", "s.xml"]
        ]
    );
}
