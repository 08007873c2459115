//! Rate-limit windows as providers report them in `x-ratelimit-*` headers, read the same
//! way for everyone and interpreted per provider kind:
//! - OpenAI, xAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets `6m0s`.
//! - Groq: the same names, but `-requests` counts requests per **day** (`-tokens` per
//!   minute); resets like `2m59.56s`.
//! - Cerebras: `-requests-day` and `-tokens-minute`, resets in float seconds.
//! - OpenRouter: bare `X-RateLimit-{Limit,Remaining,Reset}`, reset as a Unix time in ms,
//!   sometimes only inside the error body (`error.metadata.headers`).
//!
//! Pure functions; `now` is passed in.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::hint::{parse_duration, MAX_PROVIDER_WAIT};
use crate::config::quirks::ProviderKind;
use crate::headroom::{Reading, Slot};

const REMAINING: &str = "x-ratelimit-remaining";
const RESET: &str = "x-ratelimit-reset";

/// One rate-limit window read from the headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The header suffix naming the window (`-requests`, `-tokens-minute`, or empty).
    pub suffix: String,
    /// What is left in the window.
    pub remaining: Option<f64>,
    /// When the window refills.
    pub reset: Option<DateTime<Utc>>,
    /// Whether it counts tokens (else requests).
    pub tokens: bool,
    /// Whether it is a daily window.
    pub daily: bool,
}

impl Window {
    /// Whether nothing is left.
    pub fn exhausted(&self) -> bool {
        self.remaining.is_some_and(|r| r <= 0.0)
    }
}

/// A reset value: a duration (`2m59.56s`, `33011.38`), or a Unix time in seconds or
/// milliseconds (OpenRouter); never later than [`MAX_PROVIDER_WAIT`] from `now`.
pub fn parse_reset(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let latest = now + ChronoDuration::from_std(MAX_PROVIDER_WAIT).ok()?;
    let v = value.trim();
    if let Ok(n) = v.parse::<f64>() {
        // Past chrono's range (year 262143) is as far away as anything else.
        if n > 1e11 {
            let at = Utc
                .timestamp_millis_opt(n as i64)
                .single()
                .unwrap_or(latest);
            return Some(at.min(latest));
        }
        if n > 1e9 {
            let at = Utc.timestamp_opt(n as i64, 0).single().unwrap_or(latest);
            return Some(at.min(latest));
        }
    }
    let d = parse_duration(v)?;
    Some((now + ChronoDuration::from_std(d).ok()?).min(latest))
}

/// Every window the headers describe.
pub fn windows(kind: ProviderKind, headers: &HeaderMap, now: DateTime<Utc>) -> Vec<Window> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some(suffix) = name.as_str().strip_prefix(REMAINING) else {
            continue;
        };
        let remaining = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok());
        let reset = headers
            .get(format!("{RESET}{suffix}").as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_reset(v, now));
        let daily =
            suffix.ends_with("-day") || (kind == ProviderKind::Groq && suffix == "-requests");
        out.push(Window {
            suffix: suffix.to_string(),
            remaining,
            reset,
            tokens: suffix.contains("token"),
            daily,
        });
    }
    out
}

/// What a successful answer's headers say about the next request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budget {
    /// A window is empty: rest until then (and whether it is a daily window).
    pub exhausted_until: Option<(DateTime<Utc>, bool)>,
    /// Tokens left in the tightest token window, and when it refills.
    pub tokens: Option<(u64, DateTime<Utc>)>,
    /// Every window the headers described, sorted by kind (the key's headroom).
    pub reading: Reading,
}

/// Keeps the tighter of two readings of the same kind of window.
fn tighter(slot: &mut Option<Slot>, new: Slot) {
    if slot.is_none_or(|s| new.remaining < s.remaining) {
        *slot = Some(new);
    }
}

/// Reads the budget left after a successful answer. Cheap when the provider sends no
/// rate-limit headers: one pass over the header names, nothing allocated.
pub fn budget(kind: ProviderKind, headers: &HeaderMap, now: DateTime<Utc>) -> Budget {
    let mut b = Budget::default();
    for w in windows(kind, headers, now) {
        let Some(reset) = w.reset.filter(|t| *t > now) else {
            continue;
        };
        if w.exhausted() {
            let later = b.exhausted_until.is_none_or(|(t, _)| reset > t);
            if later {
                b.exhausted_until = Some((reset, w.daily));
            }
        }
        let Some(left) = w.remaining.filter(|r| *r >= 0.0).map(|r| r as u64) else {
            continue;
        };
        if w.tokens && b.tokens.is_none_or(|(l, _)| left < l) {
            b.tokens = Some((left, reset));
        }
        let slot = Slot {
            remaining: left,
            reset,
        };
        let r = &mut b.reading;
        match (w.tokens, w.daily) {
            (false, true) => tighter(&mut r.requests_day, slot),
            (false, false) => tighter(&mut r.requests_minute, slot),
            (true, false) => tighter(&mut r.tokens_minute, slot),
            (true, true) => tighter(&mut r.tokens_day, slot),
        }
    }
    b
}

/// The headers plus those OpenRouter puts in `error.metadata.headers` (header values
/// win; the body only fills gaps).
pub fn with_body_headers(headers: &HeaderMap, body: &[u8]) -> HeaderMap {
    let mut out = headers.clone();
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    let error = match &value {
        Value::Array(items) => items.first().and_then(|i| i.get("error")),
        other => other.get("error"),
    };
    let Some(map) = error
        .and_then(|e| e.get("metadata"))
        .and_then(|m| m.get("headers"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        let (Ok(name), Ok(val)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(&text),
        ) else {
            continue;
        };
        if !out.contains_key(&name) {
            out.insert(name, val);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support::{headers, now};

    #[test]
    fn resets_as_durations_float_seconds_or_unix_times() {
        let s = |secs: i64| now() + ChronoDuration::seconds(secs);
        assert_eq!(
            parse_reset("2m59.56s", now()),
            Some(s(179) + ChronoDuration::milliseconds(560))
        );
        assert_eq!(parse_reset("33011", now()), Some(s(33011)));
        assert_eq!(
            parse_reset("1795824000000", now()),
            Utc.timestamp_opt(1_795_824_000, 0).single()
        );
        assert_eq!(parse_reset("soon", now()), None);
    }

    #[test]
    fn far_future_resets_are_cut_to_seven_days() {
        let week = now() + ChronoDuration::days(7);
        for far in [
            "8e15",
            "8000000000000000",
            "8000000000000000ms",
            "1e300",
            "99999999999",
        ] {
            assert_eq!(parse_reset(far, now()), Some(week), "{far}");
        }
        // Even on a successful answer: the bench it causes is a week at most.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "8000000000000000ms"),
        ]);
        for kind in [ProviderKind::Groq, ProviderKind::OpenAi] {
            let b = budget(kind, &h, now());
            assert_eq!(b.exhausted_until.map(|e| e.0), Some(week), "{kind:?}");
        }
        // A reset in the past is kept as it is (and ignored by its readers).
        let past = parse_reset("1000000000000", now()).expect("past");
        assert!(past < now());
    }

    #[test]
    fn groq_request_headers_are_daily_cerebras_says_so_in_the_name() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
            ("x-ratelimit-remaining-tokens", "17997"),
            ("x-ratelimit-reset-tokens", "7.66s"),
        ]);
        let b = budget(ProviderKind::Groq, &h, now());
        let (until, daily) = b.exhausted_until.expect("exhausted");
        assert!(daily);
        assert_eq!((until - now()).num_milliseconds(), 179_560);
        assert_eq!(b.tokens.map(|t| t.0), Some(17_997));
        // The same headers from OpenAI are a per-minute window.
        let b = budget(ProviderKind::OpenAi, &h, now());
        assert_eq!(b.exhausted_until.map(|e| e.1), Some(false));
        let h = headers(&[
            ("x-ratelimit-remaining-requests-day", "0"),
            ("x-ratelimit-reset-requests-day", "43200.5"),
        ]);
        let b = budget(ProviderKind::Cerebras, &h, now());
        assert_eq!(b.exhausted_until.map(|e| e.1), Some(true));
    }

    #[test]
    fn the_reading_sorts_windows_into_requests_today_and_tokens_this_minute() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "412"),
            ("x-ratelimit-reset-requests", "2h0m0s"),
            ("x-ratelimit-remaining-tokens", "5800"),
            ("x-ratelimit-reset-tokens", "7.66s"),
        ]);
        let r = budget(ProviderKind::Groq, &h, now()).reading;
        let day = r.requests_day.expect("requests per day");
        assert_eq!(day.remaining, 412);
        assert_eq!((day.reset - now()).num_seconds(), 7200);
        assert_eq!(r.tokens_minute.map(|s| s.remaining), Some(5800));
        assert_eq!(r.requests_minute, None);
        // OpenAI's request window is per minute.
        let r = budget(ProviderKind::OpenAi, &h, now()).reading;
        assert_eq!(r.requests_minute.map(|s| s.remaining), Some(412));
        assert_eq!(r.requests_day, None);
        let h = headers(&[
            ("x-ratelimit-remaining-requests-day", "14000"),
            ("x-ratelimit-reset-requests-day", "43200.5"),
            ("x-ratelimit-remaining-tokens-minute", "59000"),
            ("x-ratelimit-reset-tokens-minute", "30"),
        ]);
        let r = budget(ProviderKind::Cerebras, &h, now()).reading;
        assert_eq!(r.requests_day.map(|s| s.remaining), Some(14000));
        assert_eq!(r.tokens_minute.map(|s| s.remaining), Some(59000));
        // No headers: nothing read.
        assert!(budget(ProviderKind::Groq, &HeaderMap::new(), now())
            .reading
            .is_empty());
    }

    #[test]
    fn openrouter_headers_inside_the_error_body_fill_gaps() {
        let body = br#"{"error":{"message":"Rate limit exceeded: free-models-per-day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1795824000000"}}}}"#;
        let h = with_body_headers(&HeaderMap::new(), body);
        let w = windows(ProviderKind::OpenRouter, &h, now());
        assert_eq!(w.len(), 1);
        assert!(w[0].exhausted());
        assert_eq!(w[0].reset, Utc.timestamp_opt(1_795_824_000, 0).single());
    }
}
