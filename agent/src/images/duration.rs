//! Go's `time.Duration` text form (`"12h"`, `"1m30s"`, `"500ms"`, `"0"`),
//! as kubelet's credential provider config and plugin responses use it.

use std::time::Duration;

/// Parses a non-negative Go duration string.
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with('-') {
        return Err(format!("negative duration {s:?}"));
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += value * seconds;
    }
    // A value past what a Duration holds (or not finite) is refused, not
    // a panic (found by fuzzing a plugin's cacheDuration).
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {s:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("-1m").is_err());
        assert!(parse("5").is_err());
        assert!(parse("5d").is_err());
        assert!(parse("").is_err());
        assert!(parse("h").is_err());
    }

    #[test]
    fn a_duration_too_long_to_hold_is_an_error_not_a_panic() {
        assert!(parse("99999999999999999999999h").is_err());
        assert!(parse(&format!("{}s", "9".repeat(400))).is_err());
    }
}
