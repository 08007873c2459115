//! The official OpenAI Python SDK against the real proxy (streaming and not, rotation,
//! the model list, a rate-limit error). `scripts/test` installs the SDK into a virtualenv
//! and points `LLM_ROTATOR_SDK_PYTHON` at it; there the test must run. Without that
//! variable (a plain `cargo test`) it is skipped with a note.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let Ok(python) = std::env::var("LLM_ROTATOR_SDK_PYTHON") else {
        skip(
            "the OpenAI SDK test",
            "set LLM_ROTATOR_SDK_PYTHON (scripts/test does)",
        );
        return;
    };
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let b = Mock::start(vec![
        Reply::completion("hello from the sdk test"),
        Reply::Sse {
            chunks: sse_chunks(&["one", " two", " three"], true),
            delay: Duration::from_millis(5),
            end: SseEnd::Clean,
        },
    ])
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_client.py");
    let base = proxy.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(base)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("openai sdk: ok"), "{stdout}");
    assert_eq!(a.hits(), 1, "the cooled provider got exactly one call");
}

fn tool_call_completion() -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-tool", "object": "chat.completion", "created": 1_700_000_000,
            "model": "mock-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        }),
    )
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let ev = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "mock-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {ev}\n\n")
}

#[tokio::test]
async fn the_openai_and_anthropic_sdks_work_through_responses_embeddings_and_messages() {
    let Ok(python) = std::env::var("LLM_ROTATOR_SDK_PYTHON") else {
        skip(
            "the front-end SDK test",
            "set LLM_ROTATOR_SDK_PYTHON (scripts/test does)",
        );
        return;
    };
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let b = Mock::start(vec![
        Reply::completion("hello from responses"),
        Reply::stream(&["one", " two"], Duration::from_millis(5)),
        tool_call_completion(),
        Reply::completion("It is sunny"),
        Reply::completion("hello from messages"),
        Reply::Sse {
            chunks: vec![
                chunk(
                    json!({"role": "assistant", "reasoning": "Two plus two"}),
                    None,
                ),
                chunk(json!({"content": "4"}), None),
                chunk(json!({}), Some("stop")),
                "data: [DONE]\n\n".into(),
            ],
            delay: Duration::from_millis(5),
            end: SseEnd::Clean,
        },
        tool_call_completion(),
        Reply::completion("It is sunny"),
    ])
    .await;
    let e = Mock::start(vec![Reply::json(
        200,
        json!({"object": "list", "model": "embed",
               "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4]}],
               "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
    )])
    .await;
    // Through the real binary.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_text(
        "",
        &[
            P::new("alpha", &a, 1),
            P::new("beta", &b, 2),
            P::new("emb", &e, 9).extra("embedding_models = [\"embed\"]"),
        ],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[
            ("ALPHA_TEST_KEY", "ka-000000000000"),
            ("BETA_TEST_KEY", "kb-000000000000"),
            ("EMB_TEST_KEY", "ke-000000000000"),
        ],
    );
    bin.wait_ready().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/frontends_client.py");
    let base = bin.url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(base)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}\nbeta got: {:#?}",
        b.requests().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    assert!(stdout.contains("front-end sdks: ok"), "{stdout}");
    // The tool result went back to the provider as a tool message.
    let sent: Vec<serde_json::Value> = b.requests().iter().map(|r| r.json()).collect();
    assert!(
        sent[3]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["role"] == "tool" && m["content"] == "sunny"),
        "{:#}",
        sent[3]
    );
}
