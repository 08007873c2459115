//! Classifying a failed attempt into what the pool should do, from the shapes each
//! provider really sends (see `tests/fixtures/providers/`):
//! - a per-minute rate limit → cool down for the provider's hint;
//! - a daily quota (Gemini `QuotaFailure` "…PerDay…", Cerebras `-requests-day`, Groq
//!   RPD/TPD, OpenRouter `free-models-per-day`) → bench the key until the real reset;
//! - credits or billing exhausted (OpenAI `insufficient_quota`, xAI "used all available
//!   credits or reached its monthly spending limit", any 402) → long bench;
//! - a rejected key (401/403) → key rejected;
//! - 5xx/408 → short cooldown;
//! - 400/422 naming a parameter the provider does not accept → one retry without it.
//!
//! Pure functions; `now` is passed in.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::{daily, error_message, hint, limits, redact};
use crate::config::quirks::ProviderKind;
use crate::pool::Outcome;
use crate::secrets::ApiKey;

/// What to do after an upstream answered with a non-success status.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Record the outcome and try the next provider.
    Rotate(Outcome),
    /// Send the same attempt again once, without this top-level request parameter.
    RetryWithout(String),
    /// Relay the response to the client unchanged.
    Relay,
}

/// The parts of a provider's error body that classification looks at, whatever the
/// shape (`{"error":{..}}`, `[{"error":{..}}]`, Cerebras' and Mistral's bare
/// `{"message","type","code"}`, xAI's `{"code","error":"text"}`).
#[derive(Debug, Default)]
struct ErrorInfo {
    message: String,
    code: String,
    kind: String,
    quota_ids: Vec<String>,
    reasons: Vec<String>,
    /// A `…FreeTier` quota violation with a value of 0 or none.
    free_tier_zero: bool,
    /// `error.details` holds `type.googleapis.com/google.rpc.…` entries.
    google_rpc: bool,
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other @ (Value::Object(_) | Value::Array(_))) => other.to_string(),
        _ => String::new(),
    }
}

fn error_info(body: &[u8]) -> ErrorInfo {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return ErrorInfo {
            message: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
            ..ErrorInfo::default()
        };
    };
    let top = match &value {
        Value::Array(items) => items.first().unwrap_or(&Value::Null),
        other => other,
    };
    let error = match top.get("error") {
        Some(e @ Value::Object(_)) => e,
        _ => top,
    };
    let message = match (top, top.get("error")) {
        // xAI sometimes answers with nothing but a JSON string.
        (Value::String(s), _) | (_, Some(Value::String(s))) => s.clone(),
        _ => text(error.get("message")),
    };
    let quota_ids = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let reasons = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("reason").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let details: Vec<&Value> = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let google_rpc = details.iter().any(|d| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("google.rpc."))
    });
    let free_tier_zero = details
        .iter()
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .any(|v| {
            let id = v.get("quotaId").and_then(Value::as_str).unwrap_or_default();
            let value = v.get("quotaValue").map(|q| text(Some(q)));
            id.contains("FreeTier") && value.as_deref().is_none_or(|q| q == "0")
        });
    ErrorInfo {
        free_tier_zero,
        google_rpc,
        reasons,
        message,
        code: text(error.get("code").or_else(|| top.get("code"))),
        kind: text(error.get("type").or_else(|| error.get("status"))),
        quota_ids,
    }
}

impl ErrorInfo {
    fn lower(&self) -> String {
        self.message.to_ascii_lowercase()
    }

    /// An empty balance or a spending cap, not a rate limit: waiting minutes won't help.
    fn credits_exhausted(&self) -> bool {
        let m = self.lower();
        self.code == "insufficient_quota"
            || self.kind == "insufficient_quota"
            || m.contains("used all available credits")
            || m.contains("monthly spending limit")
            || m.contains("insufficient credits")
            || m.contains("requires more credits")
            || m.contains("negative balance")
    }

    /// A key the provider does not know, reported as a 400.
    fn key_invalid(&self) -> bool {
        self.reasons.iter().any(|r| r == "API_KEY_INVALID")
            || self.lower().contains("api key not valid")
    }

    /// The model is retired or unknown at this provider, in any provider's wording. Not
    /// OpenRouter's "No endpoints found that support tool use" or "…matching your
    /// guardrail restrictions": those models are alive.
    fn model_gone(&self) -> bool {
        let m = self.lower();
        let code = self.code.to_ascii_lowercase();
        let kind = self.kind.to_ascii_lowercase();
        let live_model = m.contains("that support") || m.contains("guardrail");
        !live_model
            && (matches!(
                code.as_str(),
                "model_decommissioned" | "model_not_found" | "model_archived" | "invalid_model"
            ) || kind == "invalid_model"
                || m.contains("has been decommissioned")
                || m.contains("no longer supported")
                || m.contains("no longer available")
                || m.contains("does not exist")
                || (m.contains("models/") && m.contains("is not found"))
                || m.contains("invalid model")
                || m.contains("no endpoints found for")
                || m.contains("is not a valid model id")
                || m.contains("model not found")
                || m.contains("unknown model"))
    }

    /// Google's free tier for a paid-only model: a quota of 0 (`limit: 0` in the
    /// message, or a `…FreeTier` violation whose value is 0 or left out, as proto3 JSON
    /// leaves out zeros).
    fn not_in_free_tier(&self) -> bool {
        self.lower().contains("limit: 0") || self.free_tier_zero
    }

    /// Google-shaped (`google.rpc.QuotaFailure` / `RetryInfo` in `error.details`),
    /// whatever the `base_url` or `kind`: gateways and custom hosts pass Gemini's errors
    /// on unchanged.
    fn google_shaped(&self) -> bool {
        self.google_rpc
    }

    /// A card or a purchase is needed (an ended free tier, a new team without credits).
    fn payment_needed(&self) -> bool {
        let m = self.lower();
        self.code.eq_ignore_ascii_case("payment_required")
            || self.code.eq_ignore_ascii_case("PAYMENT_METHOD_REQUIRED")
            || m.contains("payment method")
            || m.contains("add a card")
            || m.contains("add a payment")
            || m.contains("free tier has ended")
            || m.contains("free tier ended")
            || m.contains("purchase credits")
            || m.contains("never purchased")
            || m.contains("doesn't have any credits")
            || m.contains("does not have any credits")
    }

    /// A daily allowance, from the quota id or the wording.
    fn daily(&self) -> bool {
        let m = self.lower();
        self.quota_ids.iter().any(|q| q.contains("PerDay"))
            || m.contains("per day")
            || m.contains("per-day")
            || m.contains("(rpd)")
            || m.contains("(tpd)")
            || m.contains("daily")
    }
}

/// Classifies a non-2xx upstream answer (status, headers, body) into what to do.
pub fn classify(
    kind: ProviderKind,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    key: Option<&ApiKey>,
    now: DateTime<Utc>,
) -> Verdict {
    let code = status.as_u16();
    let detail = error_message(body)
        .map(|m| format!("HTTP {code}: {}", redact(&m, key)))
        .unwrap_or_else(|| format!("HTTP {code}"));
    let info = error_info(body);
    match code {
        410 => Verdict::Rotate(Outcome::ProviderGone { reason: detail }),
        429 if info.not_in_free_tier() => Verdict::Rotate(Outcome::NotInTier {
            reason: format!("not in this key's free tier ({detail})"),
        }),
        429 => Verdict::Rotate(rate_limit(kind, &info, headers, body, detail, now)),
        402 if info.payment_needed() => Verdict::Rotate(Outcome::PaymentRequired {
            reason: format!("a payment method or credits are needed ({detail})"),
        }),
        402 => Verdict::Rotate(Outcome::PaymentRequired {
            reason: format!("credits used up or balance negative ({detail})"),
        }),
        401 | 403 if info.credits_exhausted() => Verdict::Rotate(Outcome::PaymentRequired {
            reason: format!("credits used up ({detail})"),
        }),
        401 | 403 if info.payment_needed() => Verdict::Rotate(Outcome::PaymentRequired {
            reason: format!("a payment method or credits are needed ({detail})"),
        }),
        400 | 404 if info.model_gone() => Verdict::Rotate(Outcome::ModelRetired {
            reason: format!("model unavailable ({detail})"),
        }),
        401 | 403 => Verdict::Rotate(Outcome::AuthFailed { reason: detail }),
        408 | 500..=599 => Verdict::Rotate(Outcome::Transient {
            reason: detail,
            reached: true,
        }),
        300..=399 => Verdict::Rotate(Outcome::Transient {
            reason: format!("HTTP {code}: unexpected redirect"),
            reached: true,
        }),
        // Gemini answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
        400 if info.key_invalid() => Verdict::Rotate(Outcome::AuthFailed { reason: detail }),
        400 | 422 => match offending_param(body) {
            Some(p) => Verdict::RetryWithout(p),
            None => Verdict::Relay,
        },
        _ => Verdict::Relay,
    }
}

fn rate_limit(
    kind: ProviderKind,
    info: &ErrorInfo,
    headers: &HeaderMap,
    body: &[u8],
    detail: String,
    now: DateTime<Utc>,
) -> Outcome {
    if info.credits_exhausted() {
        return Outcome::PaymentRequired {
            reason: format!("credits used up ({detail})"),
        };
    }
    let headers = limits::with_body_headers(headers, body);
    let windows = limits::windows(kind, &headers, now);
    let hint = hint::retry_hint(&headers, body, now);
    let exhausted_daily = windows
        .iter()
        .filter(|w| w.exhausted() && (w.daily || (w.suffix.is_empty() && info.daily())))
        .filter_map(|w| w.reset)
        .filter(|t| *t > now)
        .max();
    if info.daily() || exhausted_daily.is_some() {
        let until = match kind {
            // Gemini's per-day quotas reset at midnight Pacific; the short retryDelay it
            // sends alongside is for the per-minute quota and would only fail again. Known
            // by the body's shape too, whatever the provider's kind.
            _ if kind == ProviderKind::Gemini || info.google_shaped() => {
                daily::next_pacific_midnight(now)
            }
            _ => exhausted_daily
                .or_else(|| hint.and_then(|h| Some(now + ChronoDuration::from_std(h).ok()?)))
                .unwrap_or_else(|| daily::next_utc_midnight(now)),
        };
        if until > now {
            return Outcome::QuotaExhausted {
                until,
                reason: detail,
            };
        }
    }
    let retry_after = hint.or_else(|| {
        windows
            .iter()
            .filter(|w| w.exhausted())
            .filter_map(|w| w.reset)
            .max()
            .and_then(|t| (t - now).to_std().ok())
    });
    Outcome::RateLimited {
        retry_after,
        reason: detail,
    }
}

/// Classifies an error that arrived as the first event of a 200 stream (OpenRouter and
/// gateways report upstream failures this way): its `code` stands for the status.
pub fn classify_stream_error(
    kind: ProviderKind,
    event: &[u8],
    key: Option<&ApiKey>,
    now: DateTime<Utc>,
) -> Outcome {
    let info = error_info(event);
    let status = info
        .code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or_else(|| {
            let c = format!("{} {}", info.code, info.kind).to_ascii_lowercase();
            if c.contains("rate") || c.contains("too_many") || c.contains("quota") {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::BAD_GATEWAY
            }
        });
    match classify(kind, status, &HeaderMap::new(), event, key, now) {
        Verdict::Rotate(o) => o,
        Verdict::RetryWithout(_) | Verdict::Relay => Outcome::Transient {
            reason: format!(
                "the stream opened with an error: {}",
                redact(&info.message, key)
            ),
            reached: true,
        },
    }
}

/// The top-level request parameter a 400/422 rejects, when the error names one:
/// Mistral's `detail[].loc = ["body", "<param>"]` (`extra_forbidden`, sometimes as JSON
/// inside the message string), OpenAI's `error.param`, Gemini's `Unknown name "<param>"`,
/// or a quoted name in a message about an unsupported parameter.
pub fn offending_param(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let top = match &value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let error = top.get("error").filter(|e| e.is_object()).unwrap_or(top);
    let message = error.get("message");
    let nested = message
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let details = [
        top.get("detail"),
        message.and_then(|m| m.get("detail")),
        message.filter(|m| m.is_array()),
        nested.as_ref().and_then(|n| n.get("detail")),
    ];
    let mut structured = false;
    for list in details.into_iter().flatten().filter_map(Value::as_array) {
        structured = true;
        for item in list {
            let loc = item.get("loc").and_then(Value::as_array);
            if let Some([Value::String(b), Value::String(name)]) = loc.map(Vec::as_slice) {
                if b == "body" {
                    return Some(name.clone());
                }
            }
        }
    }
    if structured || !message.is_some_and(Value::is_string) {
        // A validation list that names only nested fields: nothing to drop at the top.
        return None;
    }
    let msg = text(message);
    let lower = msg.to_ascii_lowercase();
    let about_params = [
        "unrecognized",
        "unsupported",
        "not supported",
        "unknown name",
        "unknown parameter",
        "not permitted",
        "extra inputs",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if !about_params {
        return None;
    }
    if let Some(p) = error.get("param").and_then(Value::as_str) {
        if is_param_name(p) {
            return Some(p.to_string());
        }
    }
    quoted_names(&msg).into_iter().find(|n| is_param_name(n))
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn quoted_names(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in ['"', '\'', '`'] {
        let parts: Vec<&str> = msg.split(q).collect();
        for inner in parts.iter().skip(1).step_by(2) {
            out.push((*inner).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support::now;

    #[test]
    fn statuses_map_to_outcomes() {
        let h = HeaderMap::new();
        let v = |s: u16| {
            classify(
                ProviderKind::Generic,
                StatusCode::from_u16(s).expect("status"),
                &h,
                b"{}",
                None,
                now(),
            )
        };
        assert!(matches!(
            v(429),
            Verdict::Rotate(Outcome::RateLimited {
                retry_after: None,
                ..
            })
        ));
        assert!(matches!(
            v(401),
            Verdict::Rotate(Outcome::AuthFailed { .. })
        ));
        assert!(matches!(
            v(403),
            Verdict::Rotate(Outcome::AuthFailed { .. })
        ));
        assert!(matches!(
            v(402),
            Verdict::Rotate(Outcome::PaymentRequired { .. })
        ));
        for s in [408, 500, 502, 503, 504] {
            assert!(
                matches!(v(s), Verdict::Rotate(Outcome::Transient { .. })),
                "{s}"
            );
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(v(s), Verdict::Relay, "{s}");
        }
    }

    #[test]
    fn offending_parameters_are_found_in_every_shape() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (
                br#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options"],"msg":"Extra inputs are not permitted","input":{"include_usage":true}}]},"type":"invalid_request_error","param":null,"code":null}"#,
                Some("stream_options"),
            ),
            (
                br#"{"object":"error","message":"{\"detail\":[{\"type\":\"extra_forbidden\",\"loc\":[\"body\",\"frequency_penalty\"],\"msg\":\"Extra inputs are not permitted\",\"input\":0.0}]}","type":"internal_error_proxy","param":null,"code":"1000"}"#,
                Some("frequency_penalty"),
            ),
            (
                br#"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#,
                Some("max_tokens"),
            ),
            (
                br#"[{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"store\": Cannot find field.","status":"INVALID_ARGUMENT"}}]"#,
                Some("store"),
            ),
            // A nested field (messages[0].name) cannot be dropped at the top level.
            (
                br#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","messages",0,"user","name"],"msg":"Extra inputs are not permitted"}]},"type":"invalid_request_error"}"#,
                None,
            ),
            (
                br#"{"error":{"message":"messages must not be empty","type":"invalid_request_error"}}"#,
                None,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                offending_param(body).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_stream_that_opens_with_an_error_is_classified_by_its_code() {
        let ev =
            br#"{"error":{"code":429,"message":"Provider returned error: rate limited upstream"}}"#;
        assert!(matches!(
            classify_stream_error(ProviderKind::OpenRouter, ev, None, now()),
            Outcome::RateLimited { .. }
        ));
        let ev = br#"{"id":"gen-1","object":"chat.completion.chunk","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
        assert!(matches!(
            classify_stream_error(ProviderKind::OpenRouter, ev, None, now()),
            Outcome::Transient { .. }
        ));
    }
}

/// Every recorded provider answer in `tests/fixtures/providers/` drives the classifier.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::upstream::limits;
    use reqwest::header::{HeaderName, HeaderValue};
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) fn all() -> Vec<(PathBuf, Value)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&root).expect("fixtures dir") {
            let dir = dir.expect("entry").path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir).expect("provider dir") {
                let f = f.expect("entry").path();
                if f.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&f).expect("read");
                    out.push((f, serde_json::from_str(&text).expect("fixture json")));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn kind_of(path: &std::path::Path) -> ProviderKind {
        let dir = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .expect("provider dir");
        dir.parse().expect("provider dir names a kind")
    }

    fn headers(v: &Value) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, val) in v.as_object().expect("headers") {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(val.as_str().expect("string")).expect("value"),
            );
        }
        h
    }

    fn close(d: Duration, secs: f64) -> bool {
        (d.as_secs_f64() - secs).abs() < 0.01
    }

    #[test]
    fn every_fixture_is_classified_as_recorded() {
        let fixtures = all();
        assert!(fixtures.len() >= 20, "{}", fixtures.len());
        for (path, fx) in fixtures {
            let name = path.display().to_string();
            let now: DateTime<Utc> = fx["now"].as_str().expect("now").parse().expect("time");
            let status = StatusCode::from_u16(fx["status"].as_u64().expect("status") as u16)
                .expect("status");
            let h = headers(&fx["headers"]);
            let body = fx["body"].to_string();
            let expect = &fx["expect"];
            let want = expect["outcome"].as_str().expect("outcome");
            let wait = expect["wait_secs"].as_f64();
            let kind = kind_of(&path);
            if status.is_success() {
                let b = limits::budget(kind, &h, now);
                match want {
                    "bench" => {
                        let (until, daily) = b.exhausted_until.expect(&name);
                        assert_eq!(Some(daily), expect["daily"].as_bool(), "{name}");
                        let secs = (until - now).num_milliseconds() as f64 / 1000.0;
                        assert!((secs - wait.expect("wait")).abs() < 0.01, "{name}: {secs}");
                    }
                    "budget" => {
                        assert_eq!(b.exhausted_until, None, "{name}");
                        let (left, reset) = b.tokens.expect(&name);
                        assert_eq!(Some(left), expect["tokens_left"].as_u64(), "{name}");
                        let secs = (reset - now).num_milliseconds() as f64 / 1000.0;
                        assert!((secs - wait.expect("wait")).abs() < 0.01, "{name}");
                    }
                    other => panic!("{name}: unknown success outcome {other}"),
                }
                continue;
            }
            let verdict = classify(kind, status, &h, body.as_bytes(), None, now);
            match (want, &verdict) {
                ("rate_limited", Verdict::Rotate(Outcome::RateLimited { retry_after, .. })) => {
                    match wait {
                        Some(w) => assert!(
                            retry_after.is_some_and(|d| close(d, w)),
                            "{name}: {retry_after:?}"
                        ),
                        None => assert_eq!(*retry_after, None, "{name}"),
                    }
                }
                ("daily_quota", Verdict::Rotate(Outcome::QuotaExhausted { until, .. })) => {
                    if let Some(at) = expect["until"].as_str() {
                        let at: DateTime<Utc> = at.parse().expect("until");
                        assert_eq!(*until, at, "{name}");
                    }
                    if let Some(w) = wait {
                        let secs = (*until - now).num_milliseconds() as f64 / 1000.0;
                        assert!((secs - w).abs() < 0.01, "{name}: {secs}");
                    }
                }
                ("credits", Verdict::Rotate(Outcome::PaymentRequired { .. }))
                | ("payment_required", Verdict::Rotate(Outcome::PaymentRequired { .. }))
                | ("model_retired", Verdict::Rotate(Outcome::ModelRetired { .. }))
                | ("not_in_free_tier", Verdict::Rotate(Outcome::NotInTier { .. }))
                | ("provider_gone", Verdict::Rotate(Outcome::ProviderGone { .. }))
                | ("auth", Verdict::Rotate(Outcome::AuthFailed { .. }))
                | ("transient", Verdict::Rotate(Outcome::Transient { .. })) => {}
                ("retry_without", Verdict::RetryWithout(p)) => {
                    assert_eq!(Some(p.as_str()), expect["param"].as_str(), "{name}");
                }
                _ => panic!("{name}: expected {want}, got {verdict:?}"),
            }
        }
    }
}
