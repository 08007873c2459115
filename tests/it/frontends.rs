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
