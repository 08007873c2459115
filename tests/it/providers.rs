//! Provider quirks end to end: every recorded answer in `tests/fixtures/providers/` is
//! replayed by a mock provider to the real server, which must rotate and rest the
//! provider as the fixture says; every stream transcript must reach the client in the
//! shape strict clients (Osaurus) decode; plus proactive rotation, request shaping, the
//! 422 retry and the client-facing 429 headers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::common::*;
use llm_rotator::upstream::daily;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers")
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == ext) {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

fn kind_of(path: &Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .expect("provider dir")
        .to_string()
}

fn fixture(rel: &str) -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join(rel)).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn transcript(rel: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(rel)).expect("transcript")
}

/// The fixture's answer as a mock reply.
fn replay(fx: &Value) -> Reply {
    Reply::Raw {
        status: fx["status"].as_u64().expect("status") as u16,
        headers: fx["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("value").to_string()))
            .collect(),
        body: fx["body"].to_string(),
    }
}

/// A transcript cut into pieces that do not line up with events, as TCP delivers them.
fn sse_pieces(text: &str) -> Reply {
    let bytes = text.as_bytes();
    let chunks = bytes
        .chunks(97)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>();
    // Cutting inside a multi-byte character would corrupt it; the transcripts are ASCII.
    assert!(text.is_ascii());
    Reply::Sse {
        chunks,
        delay: Duration::ZERO,
        end: SseEnd::Clean,
    }
}

fn kind_line(kind: &str) -> String {
    format!("kind = \"{kind}\"")
}

async fn two_providers(a: &Mock, a_extra: &str, b: &Mock) -> Proxy {
    let cfg = config_text("", &[P::new("a", a, 1).extra(a_extra), P::new("b", b, 2)]);
    Proxy::start(
        &cfg,
        &[
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await
}

fn secs(v: &Value) -> u64 {
    v["cooldown_remaining_secs"].as_u64().expect("secs")
}

#[tokio::test]
async fn every_recorded_failure_rotates_through_the_real_server() {
    let mut checked = 0;
    for path in files("json") {
        let name = path.display().to_string();
        let fx: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        if fx["status"].as_u64() == Some(200) {
            continue;
        }
        let expect = &fx["expect"];
        let outcome = expect["outcome"].as_str().expect("outcome");
        let kind = kind_of(&path);
        let retry = outcome == "retry_without";
        // For the retry, make sure the refused parameter is really sent.
        let extra = if retry {
            format!(
                "{}\ndrop_params = []\nmax_tokens_field = \"keep\"",
                kind_line(&kind)
            )
        } else {
            kind_line(&kind)
        };
        let a = Mock::start(vec![replay(&fx), Reply::completion("from a")]).await;
        let b = Mock::start(vec![Reply::completion("from b")]).await;
        let proxy = two_providers(&a, &extra, &b).await;
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64});
        if let Some(p) = expect["param"].as_str() {
            if p != "max_tokens" {
                body[p] = if p == "stream_options" {
                    json!({"include_usage": true})
                } else {
                    json!(0.5)
                };
            }
        }
        let before = Utc::now();
        let (status, headers, text) = chat(&proxy, body).await;
        assert_eq!(status, 200, "{name}: {text}");
        let st = provider_status(&proxy, "a").await;
        if retry {
            assert_eq!(headers["x-provider"], "a", "{name}");
            let reqs = a.requests();
            assert_eq!(reqs.len(), 2, "{name}: one retry");
            let p = expect["param"].as_str().expect("param");
            assert!(
                reqs[0].json().get(p).is_some(),
                "{name}: first try sends {p}"
            );
            assert!(
                reqs[1].json().get(p).is_none(),
                "{name}: the retry leaves {p} out"
            );
            if p == "max_tokens" {
                assert_eq!(reqs[1].json()["max_completion_tokens"], 64, "{name}");
            }
            assert_eq!(b.hits(), 0, "{name}");
            checked += 1;
            proxy.stop().await;
            continue;
        }
        assert_eq!(headers["x-provider"], "b", "{name}: {st}");
        assert_eq!(a.hits(), 1, "{name}");
        match outcome {
            "auth" => assert_eq!(st["state"], "auth_failed", "{name}: {st}"),
            "model_retired" => {
                assert_eq!(st["state"], "model_retired", "{name}: {st}");
                assert!(st["retired_models"]["a-model"].is_string(), "{name}: {st}");
                assert_eq!(st["model_in_use"], Value::Null, "{name}: {st}");
            }
            "not_in_free_tier" => {
                assert_eq!(st["state"], "model_retired", "{name}: {st}");
                let said = st["last_error"].as_str().expect("last_error");
                assert!(said.contains("free tier"), "{name}: {said}");
            }
            "provider_gone" => {
                assert_eq!(st["state"], "model_retired", "{name}: {st}");
                assert!(st["gone"].is_string(), "{name}: {st}");
            }
            "payment_required" => {
                assert_eq!(st["state"], "cooling_down", "{name}: {st}");
                let reason = st["cooldown_reason"].as_str().expect("reason");
                assert!(
                    reason.contains("payment method or credits"),
                    "{name}: {reason}"
                );
            }
            "credits" => {
                assert_eq!(st["state"], "cooling_down", "{name}");
                assert!((3599..=3600).contains(&secs(&st)), "{name}: {st}");
                let reason = st["cooldown_reason"].as_str().expect("reason");
                assert!(reason.contains("credits"), "{name}: {reason}");
            }
            "rate_limited" => {
                assert_eq!(st["state"], "cooling_down", "{name}");
                let relative = expect["absolute"].as_bool() != Some(true);
                match expect["wait_secs"].as_f64() {
                    Some(w) if relative => {
                        let want = w.ceil() as u64;
                        assert!(
                            (want.saturating_sub(1)..=want).contains(&secs(&st)),
                            "{name}: {st}"
                        );
                    }
                    // No hint: the default cooldown (60 s).
                    None => assert!((59..=60).contains(&secs(&st)), "{name}: {st}"),
                    Some(_) => {}
                }
            }
            "daily_quota" => {
                assert_eq!(st["state"], "cooling_down", "{name}");
                let reason = st["cooldown_reason"].as_str().expect("reason");
                assert!(
                    reason.starts_with("daily quota used, back"),
                    "{name}: {reason}"
                );
                let until: DateTime<Utc> = st["rate_limited_until"]
                    .as_str()
                    .expect("until")
                    .parse()
                    .expect("time");
                match expect["boundary"].as_str() {
                    Some("pacific_midnight") => {
                        let want = daily::next_pacific_midnight(before);
                        assert_eq!(until, want, "{name}");
                    }
                    Some("utc_midnight") => {
                        // The recorded reset, or the next UTC midnight once it is past.
                        let recorded: DateTime<Utc> =
                            expect["until"].as_str().expect("until").parse().expect("t");
                        let want = if recorded > before {
                            recorded
                        } else {
                            daily::next_utc_midnight(before)
                        };
                        assert_eq!(until, want, "{name}");
                    }
                    _ => {
                        let want = expect["wait_secs"].as_f64().expect("wait").ceil() as u64;
                        assert!(
                            (want.saturating_sub(1)..=want).contains(&secs(&st)),
                            "{name}: {st}"
                        );
                    }
                }
            }
            other => panic!("{name}: unexpected outcome {other}"),
        }
        // While resting, a second request does not reach the provider.
        let (status, headers, _) = chat(&proxy, json!({"messages": []})).await;
        assert_eq!(
            (status, headers["x-provider"].to_str().expect("h")),
            (200, "b")
        );
        assert_eq!(a.hits(), 1, "{name}");
        checked += 1;
        proxy.stop().await;
    }
    assert!(checked >= 20, "{checked}");
}

/// What the client received, checked against the rules strict clients decode by.
struct ClientStream {
    content: String,
    tool_call_indexes: Vec<u64>,
    last_finish: Option<String>,
}

fn check_contract(name: &str, text: &str) -> ClientStream {
    let mut out = ClientStream {
        content: String::new(),
        tool_call_indexes: Vec::new(),
        last_finish: None,
    };
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(
        events.last().map(|e| e.trim()),
        Some("data: [DONE]"),
        "{name}: ends with [DONE]: {text}"
    );
    for ev in &events[..events.len() - 1] {
        let ev = ev.trim_start_matches('\n');
        if ev.starts_with(':') {
            continue;
        }
        let data = ev
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("{name}: not a data event: {ev:?}"));
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{name}: {e}: {data}"));
        assert!(v["id"].is_string(), "{name}: id in {data}");
        assert!(v["object"].is_string(), "{name}: object in {data}");
        assert!(v["created"].is_u64(), "{name}: created in {data}");
        assert!(v["model"].is_string(), "{name}: model in {data}");
        for c in v["choices"].as_array().expect("choices") {
            assert!(c["index"].is_u64(), "{name}: choices[].index in {data}");
            if let Some(s) = c["delta"]["content"].as_str() {
                out.content.push_str(s);
            }
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: tool call index in {data}"));
                if !out.tool_call_indexes.contains(&i) {
                    out.tool_call_indexes.push(i);
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                out.last_finish = Some(f.to_string());
            }
        }
    }
    out
}

/// Content, tool calls and tokens as the provider sent them.
fn transcript_facts(text: &str) -> (String, usize, u64) {
    let (mut content, mut calls, mut tokens) = (String::new(), 0, 0);
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            if let Some(s) = c["delta"]["content"].as_str() {
                content.push_str(s);
            }
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                if tc.get("index").is_none() || tc["function"]["name"].is_string() {
                    calls += 1;
                }
            }
        }
        let usage = if v["usage"].is_object() {
            &v["usage"]
        } else {
            &v["x_groq"]["usage"]
        };
        // The last usage reported is the stream's (Groq repeats it in a trailing chunk).
        if let Some(t) = usage["total_tokens"].as_u64() {
            tokens = t;
        }
    }
    (content, calls, tokens)
}

#[tokio::test]
async fn every_stream_transcript_reaches_the_client_in_the_contract_shape() {
    let mut checked = 0;
    for path in files("sse") {
        let name = path.display().to_string();
        if name.contains("error") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let kind = kind_of(&path);
        let a = Mock::start(vec![sse_pieces(&text)]).await;
        let b = Mock::start(vec![Reply::completion("unused")]).await;
        let proxy = two_providers(&a, &kind_line(&kind), &b).await;
        let (status, headers, out) = chat(
            &proxy,
            json!({"stream": true, "stream_options": {"include_usage": true}, "messages": []}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {out}");
        assert_eq!(headers["x-provider"], "a", "{name}");
        let seen = check_contract(&name, &out);
        let (content, calls, tokens) = transcript_facts(&text);
        assert_eq!(seen.content, content, "{name}: content unchanged");
        assert_eq!(
            seen.tool_call_indexes.len(),
            calls,
            "{name}: one index per call"
        );
        if calls > 0 {
            assert_eq!(seen.last_finish.as_deref(), Some("tool_calls"), "{name}");
        } else {
            assert_eq!(seen.last_finish.as_deref(), Some("stop"), "{name}");
        }
        let st = provider_status(&proxy, "a").await;
        assert_eq!(st["total_tokens_used"], tokens, "{name}: tokens counted");
        checked += 1;
        proxy.stop().await;
    }
    assert!(checked >= 8, "{checked}");
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_error_rotates() {
    let a = Mock::start(vec![sse_pieces(&transcript(
        "openrouter/stream-first-event-error.sse",
    ))])
    .await;
    let b = Mock::start(vec![Reply::stream(&["from ", "b"], Duration::ZERO)]).await;
    let proxy = two_providers(&a, &kind_line("openrouter"), &b).await;
    let (status, headers, out) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(headers["x-provider"], "b");
    let seen = check_contract("first-event-error", &out);
    assert_eq!(seen.content, "from b");
    assert!(
        !out.contains("OPENROUTER PROCESSING"),
        "nothing of a leaked: {out}"
    );
    let st = provider_status(&proxy, "a").await;
    assert_eq!(st["state"], "cooling_down", "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rate-limited upstream")),
        "{st}"
    );
}

#[tokio::test]
async fn an_error_after_the_stream_started_is_a_string_error_event_then_close() {
    let a = Mock::start(vec![sse_pieces(&transcript(
        "openrouter/stream-mid-error.sse",
    ))])
    .await;
    let b = Mock::start(vec![Reply::completion("unused")]).await;
    let proxy = two_providers(&a, &kind_line("openrouter"), &b).await;
    let (status, headers, out) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(
        (status, headers["x-provider"].to_str().expect("h")),
        (200, "a")
    );
    let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{out}");
    assert!(events[0].contains("Partial "), "{out}");
    let err: Value =
        serde_json::from_str(events[1].strip_prefix("data: ").expect("data")).expect("json");
    assert_eq!(
        err["error"]["message"], "Provider disconnected unexpectedly",
        "{err}"
    );
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn a_success_that_uses_up_the_daily_requests_rests_the_key_before_any_429() {
    let fx = fixture("groq/200-requests-used-up.json");
    let a = Mock::start(vec![replay(&fx)]).await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let proxy = two_providers(&a, &kind_line("groq"), &b).await;
    let (status, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(
        (status, headers["x-provider"].to_str().expect("h")),
        (200, "a")
    );
    let st = provider_status(&proxy, "a").await;
    assert_eq!(st["state"], "cooling_down", "{st}");
    assert!((179..=180).contains(&secs(&st)), "{st}");
    assert!(
        st["cooldown_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("daily quota used, back at")),
        "{st}"
    );
    let (_, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(headers["x-provider"], "b");
    assert_eq!(a.hits(), 1, "the used-up provider got no doomed request");
}

#[tokio::test]
async fn a_request_that_cannot_fit_the_tokens_left_goes_elsewhere() {
    let fx = fixture("cerebras/200-tokens-nearly-spent.json");
    let a = Mock::start(vec![replay(&fx)]).await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let proxy = two_providers(&a, &kind_line("cerebras"), &b).await;
    let ask = |max: u64| json!({"messages": [], "max_completion_tokens": max});
    let (_, h, _) = chat(&proxy, ask(100)).await;
    assert_eq!(h["x-provider"], "a");
    // 800 tokens left this minute: Cerebras would reserve 1000 up front and refuse.
    let (_, h, _) = chat(&proxy, ask(1000)).await;
    assert_eq!(h["x-provider"], "b");
    let (_, h, _) = chat(&proxy, ask(500)).await;
    assert_eq!(h["x-provider"], "a");
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn mistral_requests_are_shaped_and_tokens_still_counted() {
    let a = Mock::start(vec![sse_pieces(&transcript("mistral/stream.sse"))]).await;
    let b = Mock::start(vec![Reply::completion("unused")]).await;
    let proxy = two_providers(&a, &kind_line("mistral"), &b).await;
    let (status, _, out) = chat(
        &proxy,
        json!({"stream": true, "stream_options": {"include_usage": true},
               "max_completion_tokens": 300, "store": false, "messages": []}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let sent = a.requests()[0].json();
    assert!(sent.get("stream_options").is_none(), "{sent}");
    assert!(sent.get("store").is_none(), "{sent}");
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
    assert_eq!(sent["max_tokens"], 300, "{sent}");
    assert_eq!(sent["stream"], true, "{sent}");
    let st = provider_status(&proxy, "a").await;
    assert_eq!(st["total_tokens_used"], 10, "{st}");
}

#[tokio::test]
async fn a_rejected_parameter_is_retried_once_then_relayed() {
    let fx = fixture("mistral/422-stream-options.json");
    let a = Mock::start(vec![replay(&fx)]).await;
    let b = Mock::start(vec![Reply::completion("unused")]).await;
    let extra = format!("{}\ndrop_params = []", kind_line("mistral"));
    let proxy = two_providers(&a, &extra, &b).await;
    // The provider keeps refusing: one retry, then the client sees the provider's 422.
    let (status, _, out) = chat(
        &proxy,
        json!({"stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(a.hits(), 2);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn models_answer_without_any_key_with_stable_ids() {
    let a = Mock::start(vec![Reply::completion("unused")]).await;
    let cfg = config_text("", &[P::new("a", &a, 1).extra("models = [\"m2\", \"m3\"]")]);
    let proxy = Proxy::start(&cfg, &[]).await;
    let first = get_json(&proxy, "/v1/models").await;
    let ids: Vec<&str> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["auto", "a-model", "m2", "m3"]);
    assert_eq!(first["object"], "list");
    assert_eq!(get_json(&proxy, "/v1/models").await, first);
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn client_429s_say_when_to_retry_and_not_to_when_it_is_long() {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "30")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let cfg = config_text("", &[P::new("a", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("a", &["ka-0000000000000000"])]).await;
    let (status, h, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(h["retry-after"], "30");
    let ms: u64 = h["retry-after-ms"]
        .to_str()
        .expect("h")
        .parse()
        .expect("ms");
    assert!((29_000..=30_000).contains(&ms), "{ms}");
    assert!(h.get("x-should-retry").is_none());

    let g = Mock::start(vec![replay(&fixture("gemini/429-per-day.json"))]).await;
    let cfg = config_text("", &[P::new("g", &g, 1).extra(&kind_line("gemini"))]);
    let proxy = Proxy::start(&cfg, &[("g", &["kg-0000000000000000"])]).await;
    let (status, h, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 429, "{body}");
    let wait: u64 = h["retry-after"].to_str().expect("h").parse().expect("secs");
    assert!(wait > 120, "{wait}");
    assert_eq!(h["x-should-retry"], "false");
    assert!(body.contains("daily quota used"), "{body}");
}

#[tokio::test]
async fn a_streaming_request_stops_rotating_before_the_client_gives_up() {
    let a = Mock::start(vec![Reply::Hang]).await;
    let b = Mock::start(vec![Reply::Hang]).await;
    let cfg = config_text(
        "[routing]\nstream_start_timeout_secs = 1\n",
        &[P::new("a", &a, 1), P::new("b", &b, 2)],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let (status, _, body) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("stream_start_timeout_secs"), "{body}");
    assert_eq!(b.hits(), 0, "the budget was spent on a: {body}");
}

#[tokio::test]
async fn non_streaming_replies_always_carry_usage_and_a_finish_reason() {
    let a = Mock::start(vec![Reply::json(
        200,
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gemini-2.5-flash",
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                 "tool_calls": [{"id": "", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{}"}}]}}]}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("unused")]).await;
    let proxy = two_providers(&a, &kind_line("gemini"), &b).await;
    let (status, _, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(v["usage"]["total_tokens"].is_u64(), "{v}");
}

#[tokio::test]
async fn a_200_whose_body_is_an_error_rotates() {
    let a = Mock::start(vec![Reply::json(
        200,
        json!({"error": {"code": 502, "message": "Provider returned error"}}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let proxy = two_providers(&a, &kind_line("openrouter"), &b).await;
    let (status, h, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(
        (status, h["x-provider"].to_str().expect("h")),
        (200, "b"),
        "{body}"
    );
}
