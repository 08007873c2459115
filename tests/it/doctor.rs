//! `llm-rotator doctor` through the real binary against a running agent, and every
//! recorded stream transcript relayed by the real binary and decoded by the strict
//! client decoder ([`llm_rotator::strict`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::common::*;
use llm_rotator::strict;

/// Runs `llm-rotator doctor` off the runtime (the mocks it reaches live on it).
async fn doctor(config: &Path, port: u16) -> (i32, String, String) {
    let config = config.to_str().expect("utf-8 path").to_string();
    tokio::task::spawn_blocking(move || {
        cli(
            &["doctor", "--config", &config, "--port", &port.to_string()],
            &[],
        )
    })
    .await
    .expect("doctor ran")
}

/// The real binary serving one provider `a` answered by `mock`, with `extra` TOML right
/// after `[server]`.
async fn agent_with(dir: &Path, extra: &str, mock: &Mock) -> Binary {
    let cfg = config_text(&format!("[server]\n{extra}"), &[P::new("a", mock, 1)]);
    let mut bin = Binary::start(dir, &cfg, &[("A_TEST_KEY", "ka-000000000000")]);
    bin.wait_ready().await;
    bin
}

/// A stream with usage in its own chunk before `[DONE]`, as `include_usage` asks.
fn stream_with_usage(words: &[&str]) -> Reply {
    let mut chunks = sse_chunks(words, false);
    let usage = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "mock-model", "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    });
    chunks.push(format!("data: {usage}\n\n"));
    chunks.push("data: [DONE]\n\n".into());
    Reply::Sse {
        chunks,
        delay: Duration::ZERO,
        end: SseEnd::Clean,
    }
}

#[tokio::test]
async fn doctor_against_a_healthy_agent_prints_three_ok_lines_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(vec![
        Reply::completion("OK"),
        stream_with_usage(&["O", "K"]),
    ])
    .await;
    // With a token, so the test also proves doctor sends it the way `status` does.
    let bin = agent_with(
        dir.path(),
        "auth_token = \"doctor-test-token-0123\"\n",
        &mock,
    )
    .await;
    let (code, out, err) = doctor(&dir.path().join("config.toml"), bin.port()).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("ok    models  "), "{out}");
    assert!(lines[0].contains(" ms "), "{out}");
    assert!(
        lines[1].starts_with("ok    chat    answered by a "),
        "{out}"
    );
    assert!(lines[1].ends_with("\"OK\""), "{out}");
    assert!(
        lines[2].starts_with("ok    stream  answered by a "),
        "{out}"
    );
    assert!(lines[2].contains("first byte after "), "{out}");
    assert!(lines[2].contains("usage chunk: yes"), "{out}");
    assert!(lines[3].starts_with("all 3 checks passed"), "{out}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].json()["messages"][0]["content"], "Say OK");
    assert_eq!(reqs[1].json()["stream"], true);
    assert_eq!(reqs[1].json()["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn doctor_against_a_failing_provider_prints_fail_with_the_agents_message() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(vec![Reply::json(
        500,
        json!({"error": {"message": "the mock is on fire", "type": "server_error"}}),
    )])
    .await;
    // No cooldown: every request reaches the provider and fails the same way at once.
    let bin = agent_with(
        dir.path(),
        "[routing]\ntransient_cooldown_secs = 0\n",
        &mock,
    )
    .await;
    let (status, _, body) = chat(
        &bin,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let said: serde_json::Value = serde_json::from_str(&body).expect("an OpenAI error");
    let said = said["error"]["message"].as_str().expect("error.message");
    assert!(said.contains("the mock is on fire"), "{said}");
    let (code, out, err) = doctor(&dir.path().join("config.toml"), bin.port()).await;
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ok    models"), "{out}");
    assert_eq!(lines[1], format!("FAIL  chat    HTTP {status}: {said}"));
    assert_eq!(lines[2], format!("FAIL  stream  HTTP {status}: {said}"));
    assert_eq!(
        err,
        "llm-rotator: doctor: 2 of 3 checks failed (chat, stream)\n"
    );
}

#[tokio::test]
async fn doctor_with_nothing_listening_says_no_agent_is_answering() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = ClosedPort::new();
    let port = nowhere.port;
    let (code, out, err) = doctor(&dir.path().join("absent.toml"), port).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "no llm-rotator is answering on http://127.0.0.1:{port}; start it with \
             `llm-rotator serve` or `llm-rotator service install`"
        )),
        "{err}"
    );
}

fn transcripts() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("fixtures")
        .filter_map(|d| std::fs::read_dir(d.ok()?.path()).ok())
        .flatten()
        .filter_map(|f| Some(f.ok()?.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "sse"))
        .collect();
    out.sort();
    out
}

/// The transcript's events, one SSE event per mock chunk.
fn events_of(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{}\n\n", e.trim_start_matches('\n')))
        .collect()
}

#[tokio::test]
async fn every_stream_transcript_relayed_by_the_binary_decodes_strictly() {
    let mut failures = Vec::new();
    let transcripts = transcripts();
    assert!(transcripts.len() >= 10, "{transcripts:?}");
    for path in &transcripts {
        let name = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .display()
            .to_string();
        let kind = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .expect("provider dir");
        let text = std::fs::read_to_string(path).expect("transcript");
        let a = Mock::start(vec![Reply::Sse {
            chunks: events_of(&text),
            delay: Duration::ZERO,
            end: SseEnd::Clean,
        }])
        .await;
        let b = Mock::start(vec![stream_with_usage(&["from ", "b"])]).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_text(
            "",
            &[
                P::new("a", &a, 1).extra(&format!("kind = \"{kind}\"")),
                P::new("b", &b, 2),
            ],
        );
        let mut bin = Binary::start(
            dir.path(),
            &cfg,
            &[
                ("A_TEST_KEY", "ka-000000000000"),
                ("B_TEST_KEY", "kb-000000000000"),
            ],
        );
        bin.wait_ready().await;
        let (status, headers, out) = chat(
            &bin,
            json!({
                "model": "auto", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]
            }),
        )
        .await;
        let provider = headers
            .get("x-provider")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status != 200 {
            failures.push(format!("{name}: HTTP {status}: {out}"));
            continue;
        }
        match strict::check_stream(&out) {
            Err(e) => failures.push(format!("{name}: {e}\n{out}")),
            Ok(seen) => {
                let mid_error = name.contains("mid-error");
                if mid_error != seen.error.is_some() {
                    failures.push(format!("{name}: error event {:?}\n{out}", seen.error));
                }
                if !mid_error && !seen.usage {
                    failures.push(format!(
                        "{name}: no usage chunk though include_usage\n{out}"
                    ));
                }
                if name.contains("first-event-error") && provider != "b" {
                    failures.push(format!("{name}: served by {provider:?}, not b"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
