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
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "37")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let proxy = Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
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
    let words = ["one", "two", "three", "four"];
    let a = Mock::start(vec![Reply::stream(&words, Duration::from_millis(300))]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &["ka-000000000000"])]).await;
    let started = std::time::Instant::now();
    let mut resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"stream": true, "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "alpha");
    let first = resp.chunk().await.expect("chunk").expect("some");
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    // The provider needs 900 ms for the rest; the first chunk came well before that.
    assert!(
        first_at < Duration::from_millis(600),
        "first chunk after {first_at:?}"
    );
    let mut all = String::from_utf8_lossy(&first).to_string();
    while let Some(c) = resp.chunk().await.expect("chunk") {
        all.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(all.contains("four"));
    assert!(all.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test]
async fn all_cooling_gives_429_with_retry_after() {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "30")],
        json!({}),
    )])
    .await;
    let b = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after-ms", "12500")],
        json!({}),
    )])
    .await;
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let proxy = Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
    )
    .await;
    let (status, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "13");
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
