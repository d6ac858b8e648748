//! Secret values that wsctl must never print.
//!
//! A value becomes secret where the configuration is read
//! (`StackConfig::load`): what `${VAR}` brought into `app_env`, every value
//! of an `env_file`, the password of a Redis URL and of the registry. Every
//! place that writes for a person or a pipeline (deploy events, `status`,
//! `logs`, `exec`, the one error line of `main`) prints through [`say!`] or
//! [`say_err!`], which replace each registered value with `***`, the way a CI
//! runner masks its secrets. A registry read at the output, rather than a
//! value threaded through every call, is deliberate: a new output path that
//! uses the macros cannot forget a secret, and one that does not is visible
//! in review as a bare `println!`.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a masked value prints as.
pub const MASK: &str = "***";

/// Shorter values are not masked: replacing every `true` or `1` would make
/// the output unreadable, and a secret that short protects nothing.
pub const MIN_LENGTH: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Masks `value` in everything printed from now on.
pub fn register(value: &str) {
    if value.chars().count() < MIN_LENGTH {
        return;
    }
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    // Inside `--json` output a value appears JSON-escaped (a `"` as `\"`):
    // that form is masked too.
    let escaped = serde_json::to_string(value).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    for form in [value, escaped] {
        if !form.is_empty() && !secrets.iter().any(|known| known == form) {
            secrets.push(form.to_string());
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
}

/// The password of a URL such as `redis://:pw@host`, registered.
pub fn register_url_password(raw: &str) {
    if let Ok(url) = url::Url::parse(raw)
        && let Some(password) = url.password()
    {
        register(password);
        // The URL may be printed percent-decoded too.
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            register(&decoded);
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn mask(text: &str) -> Cow<'_, str> {
    let Ok(secrets) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    let mut masked = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if masked.contains(secret.as_str()) {
            masked = Cow::Owned(masked.replace(secret.as_str(), MASK));
        }
    }
    masked
}

/// Writes one line to stdout. A closed stdout (`wsctl status | head -1`)
/// drops the line instead of panicking as `println!` does: a deploy whose
/// reader went away must still finish (or undo) its run.
pub fn print_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `println!` with every registered secret masked (see [`print_line`]).
macro_rules! say {
    () => { $crate::shared::secrets::print_line("") };
    ($($arg:tt)*) => { $crate::shared::secrets::print_line(&$crate::shared::secrets::mask(&format!($($arg)*))) };
}

/// `eprintln!` with every registered secret masked.
macro_rules! say_err {
    () => { eprintln!() };
    ($($arg:tt)*) => { eprintln!("{}", $crate::shared::secrets::mask(&format!($($arg)*))) };
}

pub(crate) use {say, say_err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_and_short_ones_are_not() {
        register("s3cret-value-for-mask-test");
        register("s3cret-value");
        register("abc");
        assert_eq!(
            mask("a s3cret-value-for-mask-test and s3cret-value, abc"),
            "a *** and ***, abc"
        );
    }

    #[test]
    fn a_secret_is_masked_in_json_too() {
        register(r#"pa"ss\word-json"#);
        let line = serde_json::json!({"detail": r#"got pa"ss\word-json"#}).to_string();
        assert_eq!(mask(&line), r#"{"detail":"got ***"}"#);
    }

    #[test]
    fn a_url_password_is_masked_encoded_and_decoded() {
        register_url_password("redis://:p%40ss-word-9@redis:6379/0");
        assert_eq!(mask("p%40ss-word-9 p@ss-word-9"), "*** ***");
    }
}
