//! Retry hints: how long a provider asked us to wait, read from the headers and bodies
//! each provider uses. Pure functions; time is passed in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The longest wait a provider can impose through a hint or a reset time: 7 days. Real
/// ones are seconds to a day (a daily quota); anything longer (`Retry-After: Fri, 31 Dec
/// 9999 23:59:59 GMT`, a reset 8e15 ms away) is a bug or hostile, and would bench the
/// provider for millennia — across toggles, reloads and restarts, since cooldowns are
/// saved. Longer values are cut to this; a plain 429's hint is further held to
/// `routing.max_cooldown_secs` where the cooldown is applied.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses durations as providers write them: `1m30s`, `6s`, `250ms`, `2m59.56s`, `1h2m`,
/// `6m0s`, `12ms`, `0.5` (plain seconds), `44s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return secs_f64(secs);
    }
    let mut total = 0f64;
    let mut rest = t;
    let mut any = false;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let factor = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "us" | "µs" => 0.000_001,
            _ => return None,
        };
        total += n * factor;
        any = true;
    }
    if any {
        secs_f64(total)
    } else {
        None
    }
}

/// Seconds as a provider wrote them, cut to [`MAX_PROVIDER_WAIT`]; `None` for negative
/// or non-finite values.
fn secs_f64(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_PROVIDER_WAIT.as_secs_f64())))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Retry-After`: seconds or an HTTP-date, at most [`MAX_PROVIDER_WAIT`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(d) = parse_duration(value) {
        return Some(d);
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    let when: DateTime<Utc> = when.into();
    Some(
        (when - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_PROVIDER_WAIT),
    )
}

/// The wait a 429 asks for, from headers first, then the body. `None` = no hint.
pub fn retry_hint(headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(d) = secs_f64(ms / 1000.0) {
            return Some(d);
        }
    }
    if let Some(d) = header(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(d);
    }
    if let Some(d) = ratelimit_reset(headers) {
        return Some(d);
    }
    body_hint(body)
}

/// `x-ratelimit-reset-{requests,tokens}`: the reset of the exhausted limit (remaining = 0),
/// or the longest one when none says which.
pub fn ratelimit_reset(headers: &HeaderMap) -> Option<Duration> {
    let pairs = [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ];
    let mut exhausted = None;
    let mut longest = None;
    for (remaining, reset) in pairs {
        let Some(d) = header(headers, reset).and_then(parse_duration) else {
            continue;
        };
        longest = longest.max(Some(d));
        let empty = header(headers, remaining)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n <= 0.0);
        if empty {
            exhausted = exhausted.max(Some(d));
        }
    }
    exhausted.or(longest)
}

/// Hints inside an error body: Gemini's `error.details[].retryDelay` (the body may be a
/// JSON array), or a message saying "retry in 25.46s" / "try again in 5.289s".
pub fn body_hint(body: &[u8]) -> Option<Duration> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = match &value {
        Value::Array(items) => items.first()?.get("error")?,
        other => other.get("error").unwrap_or(other),
    };
    if let Some(details) = error.get("details").and_then(Value::as_array) {
        for d in details {
            if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
                if let Some(dur) = parse_duration(delay) {
                    return Some(dur);
                }
            }
        }
    }
    let message = match error {
        Value::String(s) => Some(s.as_str()),
        other => other.get("message").and_then(Value::as_str),
    }?;
    message_hint(message)
}

/// "Please retry in 25.46s", "try again in 5.289s", "try again in 1m2.5s".
pub fn message_hint(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    for marker in ["retry in ", "try again in ", "retry after "] {
        if let Some(pos) = lower.find(marker) {
            let tail = &lower[pos + marker.len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(tail.len());
            let token = tail[..end].trim_end_matches('.');
            if let Some(d) = parse_duration(token) {
                return Some(d);
            }
            // "retry in 20 seconds"
            let words: Vec<&str> = tail.split_whitespace().take(2).collect();
            if let [n, unit] = words[..] {
                let n: f64 = n.parse().ok()?;
                let factor = match unit.trim_end_matches(['.', ',']) {
                    "ms" | "milliseconds" => 0.001,
                    "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
                    "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
                    "h" | "hour" | "hours" => 3600.0,
                    _ => return None,
                };
                return secs_f64(n * factor);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support::{headers, now};

    #[test]
    fn durations_in_every_provider_format() {
        let cases = [
            ("1m30s", 90_000),
            ("6s", 6_000),
            ("250ms", 250),
            ("2m59.56s", 179_560),
            ("6m0s", 360_000),
            ("12ms", 12),
            ("1h2m", 3_720_000),
            ("0.5", 500),
            ("44s", 44_000),
            ("7", 7_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "soon", "5x", "-3", "m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 12:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn far_future_hints_are_cut_to_seven_days() {
        let week = MAX_PROVIDER_WAIT;
        assert_eq!(week, Duration::from_secs(604_800));
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            Some(week)
        );
        assert_eq!(parse_retry_after("99999999999", now()), Some(week));
        assert_eq!(parse_duration("8000000000000000ms"), Some(week));
        assert_eq!(parse_duration("1e300"), Some(week));
        assert_eq!(parse_duration("inf"), None);
        assert_eq!(parse_duration("NaN"), None);
        for h in [
            headers(&[("retry-after-ms", "8e15")]),
            headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            headers(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "8000000000000000ms"),
            ]),
        ] {
            assert_eq!(retry_hint(&h, b"", now()), Some(week), "{h:?}");
        }
        let body = br#"{"error":{"message":"Please try again in 99999999h."}}"#;
        assert_eq!(body_hint(body), Some(week));
        // A date in the past is no wait at all.
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "2")]);
        assert_eq!(
            retry_hint(&h, b"", now()),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn reset_header_of_the_exhausted_limit_is_used() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "10"),
            ("x-ratelimit-reset-requests", "1m"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6s"),
        ]);
        assert_eq!(retry_hint(&h, b"", now()), Some(Duration::from_secs(6)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1m"),
            ("x-ratelimit-reset-tokens", "6s"),
        ]);
        assert_eq!(retry_hint(&h, b"", now()), Some(Duration::from_secs(60)));
    }

    #[test]
    fn gemini_retry_delay_in_an_array_body() {
        let body = br#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}]"#;
        assert_eq!(
            retry_hint(&HeaderMap::new(), body, now()),
            Some(Duration::from_secs(37))
        );
    }

    #[test]
    fn hint_from_the_message_text() {
        let body = br#"{"error":{"message":"Rate limit reached. Please try again in 5.289s. Visit ...","type":"tokens"}}"#;
        assert_eq!(body_hint(body), Some(Duration::from_millis(5289)));
        assert_eq!(
            message_hint("Please retry in 25.46s."),
            Some(Duration::from_millis(25460))
        );
        assert_eq!(
            message_hint("try again in 20 seconds"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(message_hint("slow down"), None);
        assert_eq!(body_hint(b"not json"), None);
    }
}
