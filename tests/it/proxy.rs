//! The rotation proxy through real HTTP: mock providers on 127.0.0.1, the real router.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn answers_from_the_first_provider_with_provider_headers() {
    let a = Mock::start(vec![Reply::completion("hello")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["sk-alpha-0000000000001111"])]).await;
    let (status, headers, body) = chat(
        &proxy,
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "alpha");
    assert_eq!(headers["x-model"], "alpha-model");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    let req = &a.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.headers["authorization"],
        "Bearer sk-alpha-0000000000001111"
    );
    assert_eq!(req.json()["model"], "alpha-model");
    assert_eq!(req.json()["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn rotates_to_next_provider_on_429_and_cools_down_for_the_hint() {
    let (a, _, proxy) = alpha_and_beta(
        vec![Reply::json_with(
            429,
            &[("retry-after", "37")],
            json!({"error": {"message": "slow down"}}),
        )],
        vec![Reply::completion("from b")],
    )
    .await;
    let (status, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-provider"], "beta");
    let st = provider_status(&proxy, "alpha").await;
    assert_eq!(st["state"], "cooling_down");
    assert_eq!(st["is_rate_limited"], true);
    let left = st["cooldown_remaining_secs"].as_u64().expect("secs");
    assert!((36..=37).contains(&left), "{left}");
    // While cooling, alpha receives nothing more.
    for _ in 0..3 {
        let (s, h, _) = chat(&proxy, json!({"messages": []})).await;
        assert_eq!((s, h["x-provider"].to_str().expect("h")), (200, "beta"));
    }
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn client_authorization_is_never_forwarded() {
    let a = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["provider-key-000000000"])]).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-secret")
        .json(&json!({"messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let req = &a.requests()[0];
    assert_eq!(
        req.headers["authorization"],
        "Bearer provider-key-000000000"
    );
    assert!(!format!("{:?}", req.headers).contains("client-secret"));
}

#[tokio::test]
async fn streams_reach_the_client_before_the_provider_finishes() {
    // The provider sends its first event and then holds the rest back until the test
    // has received that event through the proxy: a proxy that buffered would never
    // deliver it, and the test would time out.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut events = sse_chunks(&["one", "two", "three", "four"], true);
    let first = events.remove(0);
    let a = Mock::start(vec![Reply::SseGated {
        first,
        rest: events,
        gate: gate.clone(),
    }])
    .await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let mut resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"stream": true, "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "alpha");
    let first = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
        .await
        .expect("the first event arrived while the provider still held the rest")
        .expect("chunk")
        .expect("some");
    assert!(String::from_utf8_lossy(&first).contains("one"));
    gate.notify_one();
    let mut all = String::from_utf8_lossy(&first).to_string();
    while let Some(c) = resp.chunk().await.expect("chunk") {
        all.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(all.contains("four"));
    assert!(all.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test]
async fn all_cooling_gives_429_with_retry_after() {
    let (_, _, proxy) = alpha_and_beta(
        vec![Reply::json_with(429, &[("retry-after", "30")], json!({}))],
        vec![Reply::json_with(
            429,
            &[("retry-after-ms", "22500")],
            json!({}),
        )],
    )
    .await;
    // Both cool down for longer than routing.max_wait_secs (20 s): no wait, a 429.
    let (status, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "23");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("alpha"));
}

#[tokio::test]
async fn bad_input_gets_openai_style_errors() {
    let a = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text(
        "[server]\nmax_body_bytes = 2048\n",
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let c = client();
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            c.post(proxy.url("/v1/chat/completions")).body("not json"),
            400,
        ),
        (c.post(proxy.url("/v1/chat/completions")).body("[1,2]"), 400),
        (
            c.post(proxy.url("/v1/chat/completions"))
                .body("x".repeat(5000)),
            413,
        ),
        (c.get(proxy.url("/v1/nope")), 404),
        (c.get(proxy.url("/v1/chat/completions")), 405),
        (c.delete(proxy.url("/status")), 405),
    ];
    for (req, want) in cases {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), want);
        let v: serde_json::Value = resp.json().await.expect("json error body");
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    assert_eq!(a.hits(), 0, "bad input is never forwarded");
    let (status, _, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 200, "the server keeps serving");
}

/// Providers alpha (priority 1) and beta (2), each with a key, on these scripts.
async fn alpha_and_beta(first: Vec<Reply>, second: Vec<Reply>) -> (Mock, Mock, Proxy) {
    let a = Mock::start(first).await;
    let b = Mock::start(second).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let proxy = Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
    )
    .await;
    (a, b, proxy)
}

async fn two_providers(first: Vec<Reply>) -> (Mock, Mock, Proxy) {
    alpha_and_beta(first, vec![Reply::completion("from b")]).await
}

async fn cooldown_after(first: Reply) -> u64 {
    let (a, _b, proxy) = two_providers(vec![first]).await;
    let (status, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "beta");
    assert_eq!(a.hits(), 1);
    let st = provider_status(&proxy, "alpha").await;
    assert_eq!(st["state"], "cooling_down", "{st}");
    st["cooldown_remaining_secs"].as_u64().expect("secs")
}

#[tokio::test]
async fn every_429_hint_form_sets_the_cooldown() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(300));
    let cases: Vec<(Reply, std::ops::RangeInclusive<u64>)> = vec![
        (
            Reply::json_with(429, &[("retry-after", "42")], json!({})),
            41..=42,
        ),
        (
            Reply::json_with(429, &[("retry-after", &date)], json!({})),
            298..=300,
        ),
        (
            Reply::json_with(429, &[("retry-after-ms", "7500")], json!({})),
            7..=8,
        ),
        (
            Reply::json_with(
                429,
                &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1m30s"),
                    ("x-ratelimit-remaining-tokens", "5000"),
                    ("x-ratelimit-reset-tokens", "250ms"),
                ],
                json!({}),
            ),
            89..=90,
        ),
        (
            Reply::json_with(
                429,
                &[
                    ("x-ratelimit-remaining-tokens", "0"),
                    ("x-ratelimit-reset-tokens", "6s"),
                ],
                json!({}),
            ),
            5..=6,
        ),
        (
            Reply::json(
                429,
                json!([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}]),
            ),
            36..=37,
        ),
        (
            Reply::json(
                429,
                json!({"error": {"message": "Rate limit reached. Please try again in 12.5s.", "type": "tokens"}}),
            ),
            12..=13,
        ),
        // No hint at all: the default cooldown.
        (
            Reply::json(429, json!({"error": {"message": "too many"}})),
            59..=60,
        ),
    ];
    for (reply, want) in cases {
        let left = cooldown_after(reply.clone()).await;
        assert!(
            want.contains(&left),
            "{reply:?}: cooldown {left}s, want {want:?}"
        );
    }
}

#[tokio::test]
async fn rejected_key_is_benched_until_the_provider_is_reenabled() {
    let (a, _b, proxy) = two_providers(vec![Reply::json(
        401,
        json!({"error": {"message": "Incorrect API key provided: ka-0000****0000"}}),
    )])
    .await;
    let (status, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(
        (status, headers["x-provider"].to_str().unwrap()),
        (200, "beta")
    );
    let st = provider_status(&proxy, "alpha").await;
    assert_eq!(st["state"], "auth_failed");
    assert!(
        !st["last_error"].as_str().unwrap().contains("ka-0000"),
        "{st}"
    );
    chat(&proxy, json!({"messages": []})).await;
    assert_eq!(a.hits(), 1, "a rejected key is not retried");
    // Re-enabling is the user's way of saying "try again".
    let c = client();
    c.post(proxy.url("/providers/alpha/disable"))
        .send()
        .await
        .unwrap();
    let r = c
        .post(proxy.url("/providers/alpha/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    a.set_script(vec![Reply::completion("alpha again")]);
    let (_, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(headers["x-provider"], "alpha");
}

#[tokio::test]
async fn payment_required_and_server_errors_rotate_with_cooldowns() {
    let left = cooldown_after(Reply::json(
        402,
        json!({"error": {"message": "no credits"}}),
    ))
    .await;
    assert!((3590..=3600).contains(&left), "402 cooldown {left}");
    for status in [500, 502, 503, 408] {
        let left = cooldown_after(Reply::json(status, json!({"error": {"message": "oops"}}))).await;
        assert!((9..=10).contains(&left), "{status} cooldown {left}");
    }
}

#[tokio::test]
async fn a_200_with_garbage_instead_of_json_rotates() {
    let left = cooldown_after(Reply::Raw {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: "<html>proxy error</html>".into(),
    })
    .await;
    assert!((9..=10).contains(&left));
}

#[tokio::test]
async fn connection_refused_and_hangs_rotate() {
    // A port where nothing listens.
    let dead = ClosedPort::new();
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let hang = Mock::start(vec![Reply::Hang]).await;
    let cfg = config_text(
        "[routing]\nfirst_byte_timeout_secs = 1\n",
        &[
            P {
                name: "dead",
                url: format!("http://127.0.0.1:{}/v1", dead.port),
                priority: 1,
                extra: "",
            },
            P::new("hang", &hang, 2),
            P::new("beta", &b, 3),
        ],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("dead", &["k1-000000000000"]),
            ("hang", &["k2-000000000000"]),
            ("beta", &["k3-000000000000"]),
        ],
    )
    .await;
    let (status, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "beta");
    for name in ["dead", "hang"] {
        let st = provider_status(&proxy, name).await;
        assert_eq!(st["state"], "cooling_down", "{st}");
    }
    assert_eq!(hang.hits(), 1);
}

#[tokio::test]
async fn client_errors_are_relayed_unchanged_without_rotation() {
    for status in [400u16, 404, 413, 422] {
        let body = json!({"error": {"message": format!("bad thing {status}"), "type": "invalid_request_error"}});
        let (a, b, proxy) = two_providers(vec![Reply::json(status, body.clone())]).await;
        let (got, headers, text) = chat(&proxy, json!({"messages": []})).await;
        assert_eq!(got, status);
        assert_eq!(headers["x-provider"], "alpha");
        assert_eq!(headers["x-model"], "alpha-model");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            body
        );
        assert_eq!((a.hits(), b.hits()), (1, 0));
        assert_eq!(provider_status(&proxy, "alpha").await["state"], "ready");
    }
}

#[tokio::test]
async fn every_failed_attempt_is_listed_in_a_502() {
    let (_, _, proxy) = alpha_and_beta(
        vec![Reply::json(
            500,
            json!({"error": {"message": "alpha broke"}}),
        )],
        vec![Reply::json(
            503,
            json!({"error": {"message": "beta overloaded"}}),
        )],
    )
    .await;
    let (status, _, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 502, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "all_providers_failed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("alpha broke") && msg.contains("beta overloaded"),
        "{msg}"
    );
}

#[tokio::test]
async fn no_keys_or_all_disabled_gives_503_saying_what_to_do() {
    let a = Mock::start(vec![Reply::completion("x")]).await;
    let b = Mock::start(vec![Reply::completion("x")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let proxy = Proxy::start(&cfg, &[("beta", &["kb-000000000000"])]).await;
    client()
        .post(proxy.url("/providers/beta/disable"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_provider_available");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("alpha: no_key") && msg.contains("beta: disabled"),
        "{msg}"
    );
    assert!(msg.contains("keys set"), "{msg}");
    assert_eq!(a.hits() + b.hits(), 0);
}

#[tokio::test]
async fn models_route_requests_to_the_providers_that_serve_them() {
    let a = Mock::start(vec![Reply::completion("a")]).await;
    let b = Mock::start(vec![Reply::completion("b")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("alpha", &a, 1),
            P::new("beta", &b, 2).extra("models = [\"shared-model\", \"vendor/special\"]"),
        ],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
    )
    .await;
    let cases = [
        (json!("beta-model"), "beta", "beta-model"),
        (json!("vendor/special"), "beta", "vendor/special"),
        (json!("alpha/custom-id"), "alpha", "custom-id"),
        (json!("never-heard-of-it"), "alpha", "alpha-model"),
        (json!("auto"), "alpha", "alpha-model"),
    ];
    for (model, provider, sent) in cases {
        let (status, headers, _) = chat(&proxy, json!({"model": model, "messages": []})).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-provider"], provider, "{model}");
        assert_eq!(headers["x-model"], sent, "{model}");
    }
    assert_eq!(b.requests()[1].json()["model"], "vendor/special");
    assert_eq!(a.requests()[0].json()["model"], "custom-id");
    let models = get_json(&proxy, "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "auto",
            "alpha-model",
            "beta-model",
            "shared-model",
            "vendor/special"
        ]
    );
    assert_eq!(models["object"], "list");
}

#[tokio::test]
async fn a_stream_that_dies_midway_ends_with_an_error_event() {
    let (_, b, proxy) = alpha_and_beta(
        vec![Reply::Sse {
            chunks: sse_chunks(&["one", "two"], false),
            delay: Duration::from_millis(10),
            end: SseEnd::Break,
        }],
        vec![Reply::completion("b")],
    )
    .await;
    let (status, headers, body) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-provider"], "alpha");
    assert!(body.contains("two"), "{body}");
    let last = body.trim_end().lines().last().unwrap();
    let ev: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(ev["error"]["message"].is_string(), "{body}");
    assert_eq!(b.hits(), 0, "never rotates after the first byte");
}

#[tokio::test]
async fn a_silent_stream_is_ended_instead_of_hanging() {
    let a = Mock::start(vec![Reply::Sse {
        chunks: sse_chunks(&["one"], false),
        delay: Duration::ZERO,
        end: SseEnd::Hang,
    }])
    .await;
    let cfg = config_text(
        "[routing]\nstream_idle_timeout_secs = 1\n",
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let (status, _, body) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(status, 200);
    assert!(body.contains("one"));
    assert!(body.contains("\"error\""), "{body}");
}

#[tokio::test]
async fn streams_rotate_before_the_first_byte_and_carry_provider_headers() {
    let (_, _, proxy) = alpha_and_beta(
        vec![Reply::json_with(429, &[("retry-after", "20")], json!({}))],
        vec![Reply::stream(&["hi", "there"], Duration::from_millis(5))],
    )
    .await;
    let (status, headers, body) = chat(&proxy, json!({"stream": true, "messages": []})).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-provider"], "beta");
    assert_eq!(headers["x-model"], "beta-model");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(body.contains("there") && body.contains("[DONE]"));
}

#[tokio::test]
async fn tokens_are_counted_from_answers_and_streams() {
    let mut chunks = sse_chunks(&["x"], false);
    chunks.push(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\n".into(),
    );
    chunks.push("data: [DONE]\n\n".into());
    let a = Mock::start(vec![
        Reply::completion("counted"),
        Reply::Sse {
            chunks,
            delay: Duration::ZERO,
            end: SseEnd::Clean,
        },
    ])
    .await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    chat(&proxy, json!({"messages": []})).await;
    let (_, _, body) = chat(
        &proxy,
        json!({"stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    assert!(
        body.contains("\"total_tokens\":30"),
        "the client gets the usage it asked for"
    );
    let st = provider_status(&proxy, "alpha").await;
    assert_eq!(st["total_tokens_used"], 42);
    assert_eq!(st["request_count"], 2);
    let stats = get_json(&proxy, "/stats").await;
    assert_eq!(stats["providers"][0]["total_tokens_used"], 42);
    assert_eq!(stats["providers"][0]["request_count"], 2);
}

#[tokio::test]
async fn status_lists_every_field_apps_rely_on() {
    let a = Mock::start(vec![Reply::completion("x")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let st = provider_status(&proxy, "alpha").await;
    for field in [
        "name",
        "enabled",
        "has_key",
        "priority",
        "model",
        "models",
        "state",
        "request_count",
        "total_requests",
        "total_tokens_used",
        "is_rate_limited",
        "rate_limited_until",
        "cooldown_remaining_secs",
        "last_error",
    ] {
        assert!(st.get(field).is_some(), "missing {field}: {st}");
    }
    assert_eq!(st["rate_limited_until"], serde_json::Value::Null);
    let health = get_json(&proxy, "/health").await;
    assert_eq!(health["status"], "ok");
    let r = client()
        .post(proxy.url("/providers/nope/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_provider");
}

#[tokio::test]
async fn foreign_hosts_and_browser_origins_are_refused() {
    let a = Mock::start(vec![Reply::completion("x")]).await;
    let cfg = config_text(
        "[server]\nallowed_hosts = [\"my-mac.local\"]\nallowed_origins = [\"http://localhost:3000\"]\n",
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let c = client();
    let get = |host: &str, origin: Option<&str>| {
        let mut r = c.get(proxy.url("/v1/models")).header("host", host);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(get("attacker.example", None).await.unwrap().status(), 403);
    assert_eq!(get("localhost:8000", None).await.unwrap().status(), 200);
    assert_eq!(get("my-mac.local:8000", None).await.unwrap().status(), 200);
    assert_eq!(get("[::1]:8000", None).await.unwrap().status(), 200);
    assert_eq!(
        get("localhost", Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = get("localhost", Some("http://localhost:3000"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let plain = get("localhost", None).await.unwrap();
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn auth_token_guards_everything_but_health() {
    let a = Mock::start(vec![Reply::completion("x")]).await;
    let cfg = config_text(
        "[server]\nauth_token = \"0123456789abcdef-token\"\n",
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let c = client();
    assert_eq!(
        c.get(proxy.url("/health")).send().await.unwrap().status(),
        200
    );
    let denied = c.get(proxy.url("/status")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let v: serde_json::Value = denied.json().await.unwrap();
    assert!(v["error"]["message"].is_string());
    let wrong = c
        .get(proxy.url("/v1/models"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = c
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("0123456789abcdef-token")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The proxy's token is not a provider key: it is never forwarded.
    assert_eq!(
        a.requests()[0].headers["authorization"],
        "Bearer ka-000000000000"
    );
}

#[tokio::test]
async fn equal_priorities_take_turns_and_keyless_providers_serve() {
    let a = Mock::start(vec![Reply::completion("a")]).await;
    let b = Mock::start(vec![Reply::completion("b")]).await;
    let local = Mock::start(vec![Reply::completion("local")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("alpha", &a, 1),
            P::new("beta", &b, 1),
            P::new("local", &local, 2).extra("requires_key = false"),
        ],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
    )
    .await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let (_, h, _) = chat(&proxy, json!({"messages": []})).await;
        order.push(h["x-provider"].to_str().unwrap().to_string());
    }
    assert_eq!(order, ["alpha", "beta", "alpha", "beta"]);
    for name in ["alpha", "beta"] {
        client()
            .post(proxy.url(&format!("/providers/{name}/disable")))
            .send()
            .await
            .unwrap();
    }
    let (status, h, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!((status, h["x-provider"].to_str().unwrap()), (200, "local"));
    assert!(local.requests()[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn a_relayed_client_error_never_echoes_the_key() {
    let key = "sk-relay-0123456789abcdefXYZ";
    let a = Mock::start(vec![Reply::json(
        400,
        json!({"error": {"message": format!("invalid request for key {key}"), "type": "invalid_request_error"}}),
    )])
    .await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &[key])]).await;
    let (status, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-provider"], "alpha");
    let v: serde_json::Value = serde_json::from_str(&body).expect("still the provider's JSON");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request for key "));
    for w in key.as_bytes().windows(5) {
        assert!(!body.contains(std::str::from_utf8(w).unwrap()), "{body}");
    }
}

#[tokio::test]
async fn many_connections_at_once_are_all_answered_and_the_port_is_free_after_stopping() {
    let a = Mock::start(vec![Reply::completion("x")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let addr = proxy.addr;
    // Many clients at once, each on its own connection: all are answered.
    let mut clients = Vec::new();
    for _ in 0..32 {
        let url = proxy.url("/v1/chat/completions");
        clients.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for c in clients {
        assert_eq!(c.await.expect("task").expect("request"), 200);
    }
    assert_eq!(a.hits(), 32);
    proxy.stop().await;
    // Every serving thread's handle of the socket is closed: the port can be bound again.
    let again = tokio::net::TcpListener::bind(addr).await;
    assert!(again.is_ok(), "port still held after stopping: {again:?}");
}
