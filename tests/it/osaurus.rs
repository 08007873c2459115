//! What strict clients such as Osaurus need end to end: the usage chunk they asked for,
//! reasoning where they read it, an effort sent in the form each provider takes, and a
//! short cooldown waited out instead of a 429 they would never retry.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The JSON of every data event of an SSE body (not `[DONE]`).
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event is JSON"))
        .collect()
}

async fn stream(target: &impl Served, body: Value) -> String {
    let resp = client()
        .post(target.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("body")
}

fn usage_chunks(body: &str) -> Vec<Value> {
    events(body)
        .into_iter()
        .filter(|e| e.get("usage").is_some_and(Value::is_object))
        .collect()
}

fn asks_usage() -> Value {
    json!({"stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn a_provider_that_ignores_include_usage_still_gives_the_client_its_usage_chunk() {
    let a = Mock::start(vec![Reply::stream(&["Hi", " there"], Duration::ZERO)]).await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let body = stream(&proxy, asks_usage()).await;
    let usage = usage_chunks(&body);
    assert_eq!(usage.len(), 1, "{body}");
    assert_eq!(usage[0]["choices"], json!([]));
    let u = &usage[0]["usage"];
    assert_eq!(u["completion_tokens"], 2, "one per chunk: {u}");
    assert!(u["prompt_tokens"].as_u64().expect("int") > 0);
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "[DONE] follows the usage chunk: {body}"
    );
    // Not asked for: none added.
    let body = stream(
        &proxy,
        json!({"stream": true, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert!(usage_chunks(&body).is_empty(), "{body}");
}

#[tokio::test]
async fn a_provider_that_honours_include_usage_is_not_given_a_second_one() {
    let mut chunks = sse_chunks(&["Hi"], false);
    chunks.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
               "model": "m", "choices": [],
               "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}})
    ));
    chunks.push("data: [DONE]\n\n".into());
    let a = Mock::start(vec![Reply::Sse {
        chunks,
        delay: Duration::ZERO,
        end: SseEnd::Clean,
    }])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let body = stream(&proxy, asks_usage()).await;
    let usage = usage_chunks(&body);
    assert_eq!(usage.len(), 1, "{body}");
    assert_eq!(usage[0]["usage"]["prompt_tokens"], 11);
    assert_eq!(
        a.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn groq_usage_under_x_groq_reaches_the_client_as_its_usage_chunk() {
    let a = Mock::start(vec![Reply::Sse {
        chunks: vec![
            format!("data: {}\n\n", json!({"id": "g", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]})),
            format!("data: {}\n\n", json!({"id": "g", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "x_groq": {"usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}}})),
            "data: [DONE]\n\n".into(),
        ],
        delay: Duration::ZERO,
        end: SseEnd::Clean,
    }])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let body = stream(&proxy, asks_usage()).await;
    let usage = usage_chunks(&body);
    assert_eq!(usage.len(), 1, "{body}");
    assert_eq!(
        usage[0]["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35})
    );
}

#[tokio::test]
async fn mistral_gets_no_stream_options_and_its_own_usage_reaches_the_client() {
    let transcript = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/providers/mistral/stream.sse"),
    )
    .expect("transcript");
    let m = Mock::start(vec![Reply::Sse {
        chunks: vec![transcript],
        delay: Duration::ZERO,
        end: SseEnd::Clean,
    }])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("m", &m, 1).extra("kind = \"mistral\"")]),
        &[("m", &["km-0000000000000000"])],
    )
    .await;
    let body = stream(&proxy, asks_usage()).await;
    assert!(m.requests()[0].json().get("stream_options").is_none());
    let usage = usage_chunks(&body);
    assert_eq!(usage.len(), 1, "the provider's own, no second one: {body}");
    assert!(usage[0]["usage"]["total_tokens"].as_u64().expect("int") > 0);
}

#[tokio::test]
async fn reasoning_reaches_the_client_as_reasoning_content_streamed_and_not() {
    let a = Mock::start(vec![
        Reply::Sse {
            chunks: vec![
                format!("data: {}\n\n", json!({"id": "g", "object": "chat.completion.chunk", "created": 1, "model": "gpt-oss",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning": "Two plus two"}, "finish_reason": null}]})),
                format!("data: {}\n\n", json!({"id": "g", "object": "chat.completion.chunk", "created": 1, "model": "gpt-oss",
                    "choices": [{"index": 0, "delta": {"content": "4"}, "finish_reason": "stop"}]})),
                "data: [DONE]\n\n".into(),
            ],
            delay: Duration::ZERO,
            end: SseEnd::Clean,
        },
        Reply::json(
            200,
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-oss",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "4", "reasoning": "Two plus two"}}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ),
    ])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let body = stream(
        &proxy,
        json!({"stream": true, "messages": [{"role": "user", "content": "2+2?"}]}),
    )
    .await;
    let first = &events(&body)[0]["choices"][0]["delta"];
    assert_eq!(first["reasoning_content"], "Two plus two", "{body}");
    assert!(first.get("reasoning").is_none(), "sent once: {body}");
    let (code, _, text) = chat(
        &proxy,
        json!({"messages": [{"role": "user", "content": "2+2?"}]}),
    )
    .await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        "Two plus two"
    );
}

#[tokio::test]
async fn an_effort_is_sent_as_each_provider_takes_it_with_no_retry() {
    let groq = Mock::start(vec![Reply::completion("ok")]).await;
    let router = Mock::start(vec![Reply::completion("ok")]).await;
    let proxy = Proxy::start(
        &config_text(
            "",
            &[
                P::new("groq", &groq, 1).extra("kind = \"groq\""),
                P::new("router", &router, 2).extra("kind = \"openrouter\""),
            ],
        ),
        &[
            ("groq", &["kg-0000000000000000"]),
            ("router", &["kr-0000000000000000"]),
        ],
    )
    .await;
    let ask = |model: &str| {
        json!({"model": model, "reasoning": {"effort": "high"}, "reasoning_effort": "high",
               "messages": [{"role": "user", "content": "think"}]})
    };
    let (code, _, _) = chat(&proxy, ask("groq-model")).await;
    assert_eq!(code, 200);
    let sent = groq.requests()[0].json();
    assert_eq!(sent["reasoning_effort"], "high");
    assert!(sent.get("reasoning").is_none(), "{sent}");
    let (code, _, _) = chat(&proxy, ask("router-model")).await;
    assert_eq!(code, 200);
    let sent = router.requests()[0].json();
    assert_eq!(sent["reasoning"], json!({"effort": "high"}));
    assert!(sent.get("reasoning_effort").is_none(), "{sent}");
    assert_eq!(groq.hits() + router.hits(), 2, "no refused-parameter retry");
}

fn cooling_then_ok(secs: u64) -> Vec<Reply> {
    vec![
        Reply::json_with(429, &[("retry-after", &secs.to_string())], json!({})),
        Reply::completion("after the wait"),
    ]
}

#[tokio::test]
async fn all_providers_cooling_for_two_seconds_is_waited_out_not_refused() {
    let a = Mock::start(cooling_then_ok(2)).await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let started = Instant::now();
    let (code, _, body) = chat(
        &proxy,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("after the wait"));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(a.hits(), 2);
    // A stream waits the same way, inside its start budget.
    a.set_script(vec![
        Reply::json_with(429, &[("retry-after", "1")], json!({})),
        Reply::stream(&["streamed"], Duration::ZERO),
    ]);
    let body = stream(&proxy, json!({"stream": true, "messages": []})).await;
    assert!(body.contains("streamed"), "{body}");
}

#[tokio::test]
async fn cooling_longer_than_max_wait_is_a_429_at_once() {
    let a = Mock::start(cooling_then_ok(10)).await;
    let proxy = Proxy::start(
        &config_text("[routing]\nmax_wait_secs = 3\n", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let started = Instant::now();
    let (code, h, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(h["retry-after"], "10");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn waiting_requests_are_bounded_counted_in_status_and_served() {
    let a = Mock::start(vec![
        Reply::json_with(429, &[("retry-after", "2")], json!({})),
        Reply::completion("served"),
    ])
    .await;
    let proxy = Proxy::start(
        &config_text("[routing]\nmax_waiting = 2\n", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    // The first request meets the 429 and waits; the provider is now cooling.
    let first = {
        let url = proxy.url("/v1/chat/completions");
        tokio::spawn(async move {
            client()
                .post(url)
                .json(&json!({"messages": []}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        })
    };
    wait_until(
        Duration::from_secs(5),
        "the first request waits",
        || async { get_json(&proxy, "/status").await["waiting"] == 1 },
    )
    .await;
    let more: Vec<_> = (0..3)
        .map(|_| {
            let url = proxy.url("/v1/chat/completions");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .json(&json!({"messages": []}))
                    .send()
                    .await
                    .expect("send")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes = vec![first.await.expect("join")];
    for m in more {
        codes.push(m.await.expect("join"));
    }
    codes.sort_unstable();
    assert_eq!(
        codes,
        [200, 200, 429, 429],
        "two seats; the rest get today's 429"
    );
    assert_eq!(get_json(&proxy, "/status").await["waiting"], 0);
}

#[tokio::test]
async fn a_client_that_leaves_while_waiting_costs_nothing() {
    let a = Mock::start(cooling_then_ok(2)).await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let gone = impatient
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"messages": []}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    // Deliberately past the 2 s cooldown: proving that nothing is sent for it needs a
    // time bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.hits(), 1, "nothing was sent for the client that left");
    assert_eq!(get_json(&proxy, "/status").await["waiting"], 0);
}

#[tokio::test]
async fn sigterm_answers_every_waiting_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "15")],
        json!({}),
    )])
    .await;
    let cfg = config_text("", &[P::new("a", &a, 1)]);
    let mut bin = Binary::start(dir.path(), &cfg, &[("A_TEST_KEY", "ka-0000000000000000")]);
    bin.wait_ready().await;
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let url = bin.url("/v1/chat/completions");
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .json(&json!({"messages": []}))
                    .send()
                    .await
                    .expect("an answer");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            })
        })
        .collect();
    wait_until(Duration::from_secs(5), "three requests wait", || async {
        get_json(&bin, "/status").await["waiting"] == 3
    })
    .await;
    let started = Instant::now();
    bin.signal("TERM");
    for w in waiting {
        let (code, body) = w.await.expect("join");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("shutting down"), "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(bin.wait_exit(), Some(0));
}

#[tokio::test]
async fn the_handshake_never_fails_models_with_every_provider_benched_and_mcp_probes() {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "3000")],
        json!({}),
    )])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let (code, _, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 429);
    // Every provider benched: the model list still answers 200 from memory.
    let resp = client()
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    // Osaurus's MCP probe after a failed /models, and other unknown routes: a fast
    // OpenAI-shaped 404 or 405, never a hang or a bare body.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    for (method, path, want) in [
        (reqwest::Method::POST, "/v1", 404),
        (reqwest::Method::POST, "/", 404),
        (reqwest::Method::POST, "/v1/unknown", 404),
        (reqwest::Method::GET, "/v1/chat/completions", 405),
        (reqwest::Method::DELETE, "/v1/models", 405),
    ] {
        let resp = client()
            .request(method.clone(), proxy.url(path))
            .json(&initialize)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), want, "{method} {path}");
        let v: Value = resp.json().await.expect("json");
        assert!(v["error"]["message"].is_string(), "{method} {path}: {v}");
        assert!(v["error"]["code"].is_string(), "{method} {path}: {v}");
    }
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn a_reload_while_requests_wait_loses_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Mock::start(cooling_then_ok(2)).await;
    let cfg = config_text("", &[P::new("a", &a, 1)]);
    let mut bin = Binary::start(dir.path(), &cfg, &[("A_TEST_KEY", "ka-0000000000000000")]);
    bin.wait_ready().await;
    let waiting = {
        let url = bin.url("/v1/chat/completions");
        tokio::spawn(async move {
            let r = client()
                .post(url)
                .json(&json!({"messages": []}))
                .send()
                .await
                .expect("answer");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    wait_until(Duration::from_secs(5), "the request waits", || async {
        get_json(&bin, "/status").await["waiting"] == 1
    })
    .await;
    let reload = client()
        .post(bin.url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status(), 200);
    let (code, body) = waiting.await.expect("join");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("after the wait"), "{body}");
}
