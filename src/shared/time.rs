//! Timestamps as the contract writes them: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{SecondsFormat, Utc};

/// `2026-01-01T12:00:00.000Z`
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let stamp = super::now_rfc3339();
        assert_eq!(stamp.len(), "2026-01-01T12:00:00.000Z".len(), "{stamp}");
        assert!(stamp.ends_with('Z'));
    }
}
