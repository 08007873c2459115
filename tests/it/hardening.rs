//! Hostile providers against the real binary: each test stands up a loopback server that
//! misbehaves the way a real provider or gateway was seen to, and checks the bound the
//! agent promises (no key anywhere, an answer within a deadline, ...).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// The key the misbehaving gateways echo.
const KEY: &str = "sk-echo-Q7rT2vX9mK4pL8nW3zB6";

/// Every 6-character window of the key's secret part: none may appear anywhere.
fn key_windows() -> Vec<&'static str> {
    let secret = &KEY["sk-echo-".len()..];
    (0..=secret.len() - 6).map(|i| &secret[i..i + 6]).collect()
}

fn assert_no_key(place: &str, text: &str) {
    for w in key_windows() {
        assert!(
            !text.contains(w),
            "a part of the key ({w}) is in {place}:\n{text}"
        );
    }
}

/// Every file under `dir`, read as (lossy) text: state, logs, captured stdout/stderr.
fn assert_no_key_on_disk(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "config.toml") {
                files += 1;
                let bytes = std::fs::read(&path).expect("read");
                assert_no_key(
                    &path.display().to_string(),
                    &String::from_utf8_lossy(&bytes),
                );
            }
        }
    }
    assert!(
        files >= 2,
        "expected state and logs under {}",
        dir.display()
    );
}

/// A gateway that echoes the request (key included) in an error event after the stream
/// started, and in the text of a normal answer.
fn echoing_replies() -> Vec<Reply> {
    let mut chunks = sse_chunks(&["Hello"], false);
    chunks.push(format!(
        "data: {}\n\n",
        json!({"error": {
            "message": format!("upstream rejected the forwarded request {{\"authorization\":\"Bearer {KEY}\"}} key={KEY}"),
            "type": "server_error",
            "code": 502,
        }})
    ));
    vec![
        Reply::Sse {
            chunks,
            delay: Duration::from_millis(5),
            end: SseEnd::Clean,
        },
        Reply::completion(&format!("debug echo: Authorization: Bearer {KEY}")),
        Reply::Sse {
            chunks: sse_chunks(&["echo ", KEY, " done"], true),
            delay: Duration::ZERO,
            end: SseEnd::Clean,
        },
    ]
}

#[tokio::test]
async fn a_key_echoed_by_a_provider_reaches_no_client_status_state_or_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Mock::start(echoing_replies()).await;
    let port = free_port();
    let cfg = config_text(
        &format!("[server]\nport = {port}\n[log]\nlevel = \"debug\"\n"),
        &[P::new("gateway", &gateway, 1)],
    );
    let state_home = dir.path().join("xdg-state");
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        port,
        &[
            ("GATEWAY_TEST_KEY", KEY),
            ("XDG_STATE_HOME", state_home.to_str().expect("utf8")),
        ],
    );
    bin.wait_ready().await;

    // 1. An error event after the stream started.
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let streamed = resp.text().await.expect("body");
    assert!(streamed.contains("Hello"), "{streamed}");
    assert!(streamed.contains("upstream rejected"), "{streamed}");
    assert_no_key("the relayed stream", &streamed);

    let status = get_json(&bin, "/status").await;
    let gw = provider_in(&status, "gateway").expect("gateway in /status");
    let last_error = gw["last_error"].as_str().unwrap_or_default().to_string();
    assert!(last_error.contains("upstream rejected"), "{status}");
    assert_no_key("/status", &status.to_string());

    // 2. A normal answer that echoes it, and 3. a streamed one.
    let (code, _, body) = chat(
        &bin,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("debug echo"), "{body}");
    assert_no_key("a relayed answer", &body);
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    let streamed = resp.text().await.expect("body");
    assert!(streamed.contains("done"), "{streamed}");
    assert_no_key("a relayed stream's content", &streamed);

    // The final save on SIGTERM, then every file the agent wrote.
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    assert!(
        dir.path().join("data/state.json").exists(),
        "state was saved"
    );
    assert_no_key_on_disk(dir.path());
}
