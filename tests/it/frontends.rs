//! The other wire formats over the same rotation: `/v1/embeddings` (and, where the
//! translators are wired, `/v1/responses` and `/v1/messages`), each with a 429 rotation
//! and an all-providers-cooling answer in the client's own error shape.

use serde_json::{json, Value};

use crate::common::*;

fn embedding(dims: usize) -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vec![0.25; dims]}],
        "model": "mock-embed",
        "usage": {"prompt_tokens": 3, "total_tokens": 3}
    })
}

async fn post(
    target: &impl Served,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = client()
        .post(target.url(path))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("text"))
}

#[tokio::test]
async fn embeddings_rotate_among_providers_with_embedding_models() {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({}),
    )])
    .await;
    let b = Mock::start(vec![Reply::json(200, embedding(4))]).await;
    let chat_only = Mock::start(vec![Reply::completion("never")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("chat", &chat_only, 1),
            P::new("a", &a, 2).extra("embedding_models = [\"embed-a\"]"),
            P::new("b", &b, 3).extra("embedding_models = [\"embed-b\", \"embed-b-large\"]"),
        ],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("chat", &["kc-0000000000000000"]),
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let (code, headers, body) = post(
        &proxy,
        "/v1/embeddings",
        json!({"model": "auto", "input": ["hello", "world"], "encoding_format": "float", "dimensions": 4}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-provider"], "b");
    assert_eq!(headers["x-model"], "embed-b");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(4));
    // Sent to the embeddings endpoint, with the client's fields passed on.
    let sent = &b.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    let j = sent.json();
    assert_eq!(
        (j["model"].as_str(), j["dimensions"].as_u64()),
        (Some("embed-b"), Some(4))
    );
    assert_eq!(j["input"], json!(["hello", "world"]));
    assert_eq!(j["encoding_format"], "float");
    assert_eq!(
        chat_only.hits(),
        0,
        "a chat-only provider is not asked for embeddings"
    );
    // A named embedding model goes only where it is listed.
    let (code, headers, _) = post(
        &proxy,
        "/v1/embeddings",
        json!({"model": "embed-b-large", "input": "x"}),
    )
    .await;
    assert_eq!(
        (code, headers["x-model"].to_str().expect("h")),
        (200, "embed-b-large")
    );

    // Everything cooling: an OpenAI-shaped 429 with Retry-After.
    b.set_script(vec![Reply::json_with(
        429,
        &[("retry-after", "600")],
        json!({}),
    )]);
    let (code, headers, body) = post(&proxy, "/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(code, 429, "{body}");
    assert!(headers.get("retry-after").is_some());
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn embeddings_refuse_bad_input_clearly() {
    let a = Mock::start(vec![Reply::completion("never")]).await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let (code, _, body) = post(&proxy, "/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("embedding_models"), "{body}");
    let (code, _, body) = post(&proxy, "/v1/embeddings", json!({"model": "auto"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("`input` is required"), "{body}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn legacy_completions_are_translated_to_chat_and_back_streamed_and_not() {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({}),
    )])
    .await;
    let b = Mock::start(vec![
        Reply::completion(" a time"),
        Reply::stream(&[" there", " was"], std::time::Duration::ZERO),
    ])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1), P::new("b", &b, 2)]),
        &[
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let (code, headers, body) = post(
        &proxy,
        "/v1/completions",
        json!({"model": "auto", "prompt": "Once upon", "max_tokens": 8}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-provider"], "b", "rotated past the 429");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], " a time");
    let sent = b.requests()[0].json();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Once upon"}])
    );
    assert_eq!(b.requests()[0].path, "/v1/chat/completions");

    let (code, _, body) = post(
        &proxy,
        "/v1/completions",
        json!({"prompt": "Once upon", "stream": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let texts: Vec<String> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).expect("json"))
        .inspect(|v| assert_eq!(v["object"], "text_completion"))
        .map(|v| {
            v["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(texts.concat(), " there was");
    assert!(body.trim_end().ends_with("data: [DONE]"));

    let (code, _, body) = post(
        &proxy,
        "/v1/completions",
        json!({"prompt": "x", "suffix": "y"}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("suffix"), "{body}");
}

#[tokio::test]
async fn messages_map_client_model_ids_through_aliases_and_accept_x_api_key() {
    let a = Mock::start(vec![Reply::completion("from a")]).await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let cfg = config_text(
        "[server]\nauth_token = \"token-0123456789abcdef\"\n[model_aliases]\n\"claude-haiku-*\" = \"b/b-model\"\n",
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
    let ask = |model: &str, key: &str| {
        client()
            .post(proxy.url("/v1/messages?beta=true"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let resp = ask("claude-haiku-4-5", "token-0123456789abcdef")
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "b");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-haiku-4-5", "the client's id is echoed");
    assert_eq!(v["content"][0]["text"], "from b");
    // No alias: Claude Code's own id goes to auto.
    let resp = ask("claude-opus-4-8[1m]", "token-0123456789abcdef")
        .await
        .expect("send");
    assert_eq!(resp.headers()["x-provider"], "a");
    // A wrong key: refused in Anthropic's shape.
    let resp = ask("claude-opus-4-8", "wrong").await.expect("send");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    // count_tokens: an estimate, never a provider call.
    let resp = client()
        .post(proxy.url("/v1/messages/count_tokens"))
        .header("x-api-key", "token-0123456789abcdef")
        .json(&json!({"model": "claude-opus-4-8",
                      "messages": [{"role": "user", "content": "hello there, how are you today?"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert!(v["input_tokens"].as_u64().expect("count") > 0);
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // Something that cannot be translated: a 400 naming it, in Anthropic's shape.
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", "token-0123456789abcdef")
        .json(&json!({"model": "claude-opus-4-8", "max_tokens": 8, "messages": [{"role": "user",
            "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("document"),
        "{v}"
    );
}

#[tokio::test]
async fn responses_remember_a_stored_answer_for_previous_response_id_and_refuse_unknown_ids() {
    let a = Mock::start(vec![
        Reply::completion("first answer"),
        Reply::completion("second answer"),
    ])
    .await;
    let proxy = Proxy::start(
        &config_text("", &[P::new("a", &a, 1)]),
        &[("a", &["ka-0000000000000000"])],
    )
    .await;
    let (code, _, body) = post(&proxy, "/v1/responses", json!({"input": "Remember 7"})).await;
    assert_eq!(code, 200, "{body}");
    let first: Value = serde_json::from_str(&body).expect("json");
    let id = first["id"].as_str().expect("id");
    let (code, _, body) = post(
        &proxy,
        "/v1/responses",
        json!({"input": "What number?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let sent = a.requests()[1].json();
    let texts: Vec<String> = sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].to_string())
        .collect();
    assert!(texts.iter().any(|t| t.contains("Remember 7")), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("first answer")),
        "{texts:?}"
    );
    let (code, _, body) = post(
        &proxy,
        "/v1/responses",
        json!({"input": "x", "previous_response_id": "resp_unknown"}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "previous_response_not_found");
    assert_eq!(v["error"]["param"], "previous_response_id");
    // store: false keeps nothing.
    let (_, _, body) = post(
        &proxy,
        "/v1/responses",
        json!({"input": "x", "store": false}),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    let (code, _, _) = post(
        &proxy,
        "/v1/responses",
        json!({"input": "y", "previous_response_id": v["id"]}),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn legacy_completions_go_as_sent_to_providers_that_serve_them() {
    let native = json!({"id": "cmpl-native", "object": "text_completion", "created": 1,
        "model": "instruct", "choices": [{"text": " native", "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}});
    let a = Mock::start(vec![Reply::json(200, native)]).await;
    let b = Mock::start(vec![Reply::completion(" translated")]).await;
    let proxy = Proxy::start(
        &config_text(
            "",
            &[
                P::new("a", &a, 1).extra("models = [\"instruct\"]\nlegacy_completions = true"),
                P::new("b", &b, 2).extra("models = [\"instruct\"]"),
            ],
        ),
        &[
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let ask = json!({"model": "instruct", "prompt": "Once", "max_tokens": 4, "suffix": null});
    let (code, headers, body) = post(&proxy, "/v1/completions", ask.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-provider"], "a");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["id"], "cmpl-native", "relayed as the provider sent it");
    let sent = &a.requests()[0];
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(sent.json()["prompt"], "Once");
    // Rate limited there: the next provider gets the translation.
    a.set_script(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({}),
    )]);
    let (code, headers, body) = post(&proxy, "/v1/completions", ask).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-provider"], "b");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["choices"][0]["text"], " translated");
    assert_eq!(b.requests()[0].path, "/v1/chat/completions");
}
