//! What every command's input shares: the one error type for a setting
//! that cannot be used (exit code 2, wherever it comes from), the value
//! parsers of flags, environment variables and wsctl.yaml, and URLs made
//! fit to print.

use std::time::Duration;

/// A setting that cannot be used; the message names it and says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A URL fit for messages and logs: its password replaced by `***`. Text
/// that does not parse as a URL is not repeated at all (where a password
/// would sit in it is unknown).
pub fn masked_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Parses a strictly positive number of seconds (fractions allowed: `0.5`).
pub fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("'{raw}' must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{raw}' is too large"))
}

/// Parses a whole number that must be at least `min`.
pub fn parse_count(raw: &str, min: usize) -> Result<usize, String> {
    let value: usize = raw
        .trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a whole number"))?;
    if value < min {
        return Err(format!("'{raw}' must be at least {min}"));
    }
    Ok(value)
}

/// Parses a positive rate (messages per second).
pub fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a number"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "'{raw}' must be a positive number of messages per second"
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_refuse_zero_negative_and_text() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert!(parse_seconds("0").unwrap_err().contains("positive"));
        assert!(parse_seconds("-5").unwrap_err().contains("positive"));
        assert!(parse_seconds("ten").unwrap_err().contains("not a number"));
        assert!(parse_seconds("inf").is_err());
    }

    #[test]
    fn counts_have_a_floor() {
        assert_eq!(parse_count("65536", 1), Ok(65536));
        assert!(parse_count("0", 1).is_err());
        assert!(parse_count("-1", 1).is_err());
    }
}
