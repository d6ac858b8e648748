//! Where wsctl.yaml meets the environment: `WSCTL_<KEY>` overrides of any
//! setting, `${VAR}` in `app_env` values, and `env_file:` dotenv files.
//! Everything taken from the environment or a file for the app is a
//! secret and registered for masking (`crate::secrets`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use crate::shared::input::ConfigError;

/// The prefix of override variables: `WSCTL_REPLICAS=3`,
/// `WSCTL_IMAGES__APP=app:2`, `WSCTL_APP_ENV__RATE_LIMIT=50`.
const PREFIX: &str = "WSCTL_";
/// Between the keys of a nested setting.
const NESTING: &str = "__";
/// `WSCTL_` variables that are wsctl's own flags, not settings.
const NOT_SETTINGS: [&str; 1] = ["WSCTL_CONFIG"];

/// What [`apply_overrides`] did.
#[derive(Debug, Default)]
pub struct Overrides {
    /// The variables applied, by name.
    pub applied: Vec<String>,
    /// `WSCTL_` variables that name no setting. A warning, not an error: the
    /// prefix is not ours alone (CI systems and scripts set such variables),
    /// and refusing to run over one would break a deploy for a stranger's
    /// variable.
    pub unknown: Vec<String>,
}

/// Applies every `WSCTL_<KEY>` of `vars` to the parsed file `document`.
/// `known` is the document with every setting (the init file), so a
/// variable that names no setting is reported rather than silently kept.
pub fn apply_overrides(
    document: &mut Value,
    known: &Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Overrides, ConfigError> {
    let mut done = Overrides::default();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && !NOT_SETTINGS.contains(&name.as_str()))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path = setting_path(&name);
        if !is_known(known, &path) {
            done.unknown.push(name);
            continue;
        }
        // app_env values are strings as given; any other value is YAML, so
        // numbers, booleans, null and flow lists (`[a, b]`) work.
        let value = if path[0] == "app_env" || raw.is_empty() {
            Value::String(raw)
        } else {
            serde_yaml::from_str(&raw)
                .map_err(|error| ConfigError(format!("{name}: not a YAML value: {error}")))?
        };
        insert(document, &path, value);
        done.applied.push(name);
    }
    Ok(done)
}

/// `WSCTL_IMAGES__APP` -> `["images", "app"]`; keys below `app_env` keep
/// their case (they are environment variable names).
fn setting_path(name: &str) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    for key in name[PREFIX.len()..].split(NESTING) {
        if path.first().is_some_and(|top| top == "app_env") {
            path.push(key.to_string());
        } else {
            path.push(key.to_ascii_lowercase());
        }
    }
    path
}

fn is_known(known: &Value, path: &[String]) -> bool {
    let mut node = known;
    for (depth, key) in path.iter().enumerate() {
        // Below a free-form map (app_env) any key is a setting.
        if depth == 1 && path[0] == "app_env" {
            return path.len() == 2;
        }
        match node.get(key.as_str()) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

fn insert(document: &mut Value, path: &[String], value: Value) {
    if !document.is_mapping() {
        *document = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = document else {
        return;
    };
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        map.insert(key, value);
        return;
    }
    let child = map.entry(key).or_insert(Value::Null);
    insert(child, &path[1..], value);
}

/// `text` with each `${NAME}` replaced by `lookup(NAME)`; `$${` is a literal
/// `${`. Only the braced form is expanded, so a literal `$` in a password
/// stays as written (shell-style expanders also expand `$word`).
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut taken = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            let close = open
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = &open[..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{name}}} is not a variable name"));
            }
            let value = lookup(name)
                .ok_or_else(|| format!("${{{name}}} is not set in wsctl's environment"))?;
            out.push_str(&value);
            taken.push(value);
            rest = &open[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok((out, taken))
}

/// The variables of a dotenv file, in order.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let fail = |error: dotenvy::Error| ConfigError(format!("env_file {}: {error}", path.display()));
    dotenvy::from_path_iter(path)
        .map_err(fail)?
        .map(|item| item.map_err(fail))
        .collect()
}

/// The app's environment: the env files in order, then `app_env` with its
/// `${VAR}` expanded (so `app_env` wins, as in Compose). Also returns the
/// values that are secrets (from files and variables).
pub fn resolve(
    env_files: &[std::path::PathBuf],
    app_env: &BTreeMap<String, String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(BTreeMap<String, String>, Vec<String>), ConfigError> {
    let mut env = BTreeMap::new();
    let mut secrets = Vec::new();
    for path in env_files {
        for (key, value) in read_env_file(path)? {
            secrets.push(value.clone());
            env.insert(key, value);
        }
    }
    for (key, raw) in app_env {
        let (value, taken) =
            expand(raw, &lookup).map_err(|why| ConfigError(format!("app_env.{key}: {why}")))?;
        secrets.extend(taken);
        env.insert(key.clone(), value);
    }
    Ok((env, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_set_nested_settings_and_report_a_typo() {
        let known: Value =
            serde_yaml::from_str("replicas: 1\nimages: {app: a}\napp_env: {}\nprefix: ''").unwrap();
        let mut document: Value = serde_yaml::from_str("images: {app: x}").unwrap();
        let applied = apply_overrides(
            &mut document,
            &known,
            vars(&[
                ("WSCTL_REPLICAS", "3"),
                ("WSCTL_IMAGES__APP", "app:2"),
                ("WSCTL_APP_ENV__Rate_Limit", "50"),
                ("WSCTL_PREFIX", ""),
                ("WSCTL_CONFIG", "other.yaml"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.applied.len(), 4);
        assert!(applied.unknown.is_empty());
        assert_eq!(document["replicas"], Value::from(3));
        assert_eq!(document["images"]["app"], Value::from("app:2"));
        assert_eq!(document["app_env"]["Rate_Limit"], Value::from("50"));
        assert_eq!(document["prefix"], Value::from(""));

        let typo = apply_overrides(&mut document, &known, vars(&[("WSCTL_NETWROK", "n")])).unwrap();
        assert_eq!(typo.unknown, ["WSCTL_NETWROK"]);
        assert!(document.get("netwrok").is_none());
    }

    #[test]
    fn only_braced_variables_expand_and_a_missing_one_is_named() {
        let lookup = |name: &str| (name == "PW").then(|| "hunter22".to_string());
        let (text, taken) = expand("u:${PW}@db $HOME $${PW} 5$", lookup).unwrap();
        assert_eq!(text, "u:hunter22@db $HOME ${PW} 5$");
        assert_eq!(taken, ["hunter22"]);
        assert_eq!(
            expand("${NOPE}", lookup).unwrap_err(),
            "${NOPE} is not set in wsctl's environment"
        );
        assert!(expand("${PW", lookup).is_err());
    }

    #[test]
    fn app_env_wins_over_env_files_and_file_values_are_secrets() {
        let dir = std::env::temp_dir().join(format!("wsctl-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets.env");
        std::fs::write(&file, "# comment\nDB_PASSWORD=from-file\nMODE=file\n").unwrap();
        let app_env = BTreeMap::from([("MODE".to_string(), "${MODE_VAR}".to_string())]);
        let (env, secrets) = resolve(std::slice::from_ref(&file), &app_env, |name| {
            (name == "MODE_VAR").then(|| "from-var".to_string())
        })
        .unwrap();
        assert_eq!(env["DB_PASSWORD"], "from-file");
        assert_eq!(env["MODE"], "from-var");
        assert!(secrets.contains(&"from-file".to_string()));
        assert!(secrets.contains(&"from-var".to_string()));
        let missing = resolve(&[dir.join("absent.env")], &app_env, |_| None)
            .unwrap_err()
            .0;
        assert!(missing.contains("absent.env"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
