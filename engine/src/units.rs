//! Small value syntaxes shared by the stack format: durations and file modes.

use std::time::Duration;

/// The longest duration any setting accepts (timeouts, intervals, retries, `--lock-timeout`):
/// 365 days, written `8760h`. Every duration is bounded when it is parsed, so no deadline
/// computed from one (`now + timeout`) can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a duration was refused; its text is the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration `{0}`: expected a number and a unit, e.g. 500ms, 30s, 10m, 1h")]
    Invalid(String),
    #[error("duration `{0}` is too long: at most 8760h (365 days)")]
    TooLong(String),
}

/// Parses `500ms`, `30s`, `10m`, `1h`, or a sequence such as `1h30m`, refusing anything longer
/// than [`MAX_DURATION`]. Every duration of the stack format and the command line goes through
/// here.
pub fn duration(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(s.to_string());
    let too_long = || DurationError::TooLong(s.to_string());
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        // Digits alone are valid; only their size can be wrong from here on.
        let n: u64 = number.parse().map_err(|_| too_long())?;
        let part = n.checked_mul(unit_ms).ok_or_else(too_long)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(too_long)?;
        if total > MAX_DURATION {
            return Err(too_long());
        }
    }
    Ok(total)
}

/// [`duration`], for callers that report their own message: `None` when invalid or too long.
pub fn parse_duration(s: &str) -> Option<Duration> {
    duration(s).ok()
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// Parses a mode written as an octal string of three or four digits, e.g. `"0640"`.
pub fn parse_mode(s: &str) -> Option<u32> {
    if !(3..=4).contains(&s.len()) || !s.chars().all(|c| ('0'..='7').contains(&c)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

/// A mode in the canonical four-digit form used in plans and state.
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "10", "s", "10 s", "1d", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("8760h"), Some(MAX_DURATION));
        for huge in [
            "8760h1ms",
            "18446744073709551615s",
            "9223372036854775807s",
            "99999999999999999999999ms",
            "5124095576030431h",
            "8000h8000h",
        ] {
            assert_eq!(
                duration(huge),
                Err(DurationError::TooLong(huge.into())),
                "{huge}"
            );
        }
        assert!(matches!(duration("1d"), Err(DurationError::Invalid(_))));
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("755"), Some(0o755));
        for bad in ["", "8", "0800", "06400", "rw-", "64"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
        assert_eq!(format_mode(0o644), "0644");
    }
}
