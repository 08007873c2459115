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
        eprintln!(
            "skipped: set LLM_ROTATOR_SDK_PYTHON (scripts/test does) to run the OpenAI SDK test"
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
