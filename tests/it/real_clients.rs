//! The real clients, headless, against the in-process agent and mock providers on
//! 127.0.0.1: Codex CLI (`codex exec`, over `/v1/responses`) and Claude Code
//! (`claude -p`, over `/v1/messages`), each once with a plain answer after a 429 rotation
//! and once with a tool call the client really runs.
//!
//! `scripts/test` installs both CLIs from npm into `target/clients` and points
//! `LLM_ROTATOR_CODEX` and `LLM_ROTATOR_CLAUDE` at them; without those variables (a plain
//! `cargo test`) the tests are skipped with a note. The clients get a cleared environment
//! (only `PATH` is kept) with a throwaway `HOME`, so nothing of the user's own setup, and
//! no proxy, reaches them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// How long one client run may take; a passing run takes about a second.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The text every scripted answer ends with.
const ANSWER: &str = "hello from the mock";

/// The shell command of the tool calls. Its output, `ran-42`, is not in the command
/// itself, so finding it in a tool message proves a shell ran it.
const TOOL_COMMAND: &str = "echo ran-$((6*7))";
const TOOL_OUTPUT: &str = "ran-42";

/// What one client run left behind.
struct Run {
    /// The exit code; `None` when killed (timeout or signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

/// The executable named by `var`, or `None` (and a note) when it is unset.
fn client_exe(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            skip(
                &format!("the {what} test"),
                &format!("set {var} (scripts/test does)"),
            );
            None
        }
    }
}

/// A scratch directory under cargo's target tmp dir (Codex refuses to put its helpers
/// under /tmp and says so on every run).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("real-client-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir")
}

/// Runs `exe args` in `dir` with a cleared environment plus `PATH`, `HOME=dir/home` and
/// `env`; stdin is empty, output goes to files (no pipe can fill up); killed after
/// [`CLIENT_TIMEOUT`].
async fn run_client(exe: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Run {
    let home = dir.join("home");
    let work = dir.join("work");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&work).expect("work");
    let out_path = dir.join("client.stdout");
    let err_path = dir.join("client.stderr");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let exe = exe.display().to_string();
    let (code, elapsed, timed_out) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status.code(), start.elapsed(), false);
            }
            if start.elapsed() > CLIENT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return (None, start.elapsed(), true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
    Run {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed,
        timed_out,
    }
}

/// The client's output and what each mock received (messages cut short, tool names
/// only): the story of a failed run.
fn report(client: &str, run: &Run, mocks: &[(&str, &Mock)]) -> String {
    let mut s = format!(
        "{client}: exit {:?}{} after {:.1?}\n--- stdout\n{}\n--- stderr\n{}\n",
        run.code,
        if run.timed_out { " (timed out)" } else { "" },
        run.elapsed,
        run.stdout,
        run.stderr
    );
    for (name, mock) in mocks {
        for (i, r) in mock.requests().iter().enumerate() {
            let body = r.json();
            let messages: Vec<String> = body["messages"]
                .as_array()
                .map(|ms| ms.iter().map(|m| cut(&m.to_string(), 300)).collect())
                .unwrap_or_default();
            let tools: Vec<&str> = body["tools"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .filter_map(|t| t["function"]["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "--- {name} request {i}: {} model {} stream {}\n  tools {tools:?}\n  {}\n",
                r.path,
                body["model"],
                body["stream"],
                messages.join("\n  ")
            ));
        }
    }
    s
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One chat stream chunk with this delta.
fn chunk(delta: Value, finish: Option<&str>) -> String {
    let ev = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {ev}\n\n")
}

/// A streamed text answer, ending with usage and `[DONE]` like a real provider.
fn text_stream(words: &[&str]) -> Reply {
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    chunks.extend(words.iter().map(|w| chunk(json!({"content": w}), None)));
    chunks.push(chunk(json!({}), Some("stop")));
    chunks.push(usage_chunk());
    chunks.push("data: [DONE]\n\n".into());
    Reply::Sse {
        chunks,
        delay: Duration::from_millis(5),
        end: SseEnd::Clean,
    }
}

/// A streamed call of the tool `name` with these arguments, split in two deltas.
fn tool_call_stream(name: &str, arguments: &Value) -> Reply {
    let args = arguments.to_string();
    let (head, tail) = args.split_at(args.len() / 2);
    Reply::Sse {
        chunks: vec![
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                    "id": "call_mock_1", "type": "function",
                    "function": {"name": name, "arguments": head}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
            usage_chunk(),
            "data: [DONE]\n\n".into(),
        ],
        delay: Duration::from_millis(5),
        end: SseEnd::Clean,
    }
}

fn usage_chunk() -> String {
    let ev = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "mock-model", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}});
    format!("data: {ev}\n\n")
}

/// A provider that is out of quota for five minutes.
async fn rate_limited_mock() -> Mock {
    Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({"error": {"message": "rate limit reached", "type": "rate_limit_error"}}),
    )])
    .await
}

/// The agent with `alpha` (priority 1) and `beta` (priority 2).
async fn agent(alpha: &Mock, beta: &Mock) -> Proxy {
    let cfg = config_text("", &[P::new("alpha", alpha, 1), P::new("beta", beta, 2)]);
    Proxy::start(
        &cfg,
        &[
            ("alpha", &["ka-000000000000"]),
            ("beta", &["kb-000000000000"]),
        ],
    )
    .await
}

/// The tool message answering `call_mock_1` in a chat request, if there is one.
fn tool_message(body: &Value) -> Option<Value> {
    body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_mock_1")
        .cloned()
}

/// The text of a chat message whose content is a string or text parts.
fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Whether some user message of a chat request contains `text`.
fn has_user_text(body: &Value, text: &str) -> bool {
    body["messages"].as_array().is_some_and(|ms| {
        ms.iter()
            .any(|m| m["role"] == "user" && content_text(m).contains(text))
    })
}

// ---- Codex CLI ----

/// `codex exec` against the agent: a model provider speaking Responses, its key from
/// `ROTATOR_KEY`, no retries of its own (so a failure shows at once, and the mocks see
/// exactly the requests Codex meant to send).
async fn run_codex(codex: &Path, proxy: &Proxy, prompt: &str, extra: &[&str]) -> Run {
    let dir = scratch();
    let codex_home = dir.path().join("codex-home");
    std::fs::create_dir_all(&codex_home).expect("codex home");
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            r#"model = "auto"
model_provider = "rotator"

[model_providers.rotator]
name = "llm-rotator"
base_url = "{}"
wire_api = "responses"
env_key = "ROTATOR_KEY"
request_max_retries = 0
stream_max_retries = 0
"#,
            proxy.url("/v1")
        ),
    )
    .expect("codex config");
    let codex_home = codex_home.display().to_string();
    let mut args = vec!["exec", "--skip-git-repo-check", "--ephemeral"];
    args.extend_from_slice(extra);
    args.push(prompt);
    run_client(
        codex,
        &args,
        dir.path(),
        &[("CODEX_HOME", &codex_home), ("ROTATOR_KEY", "rotator-test")],
    )
    .await
}

#[tokio::test]
async fn codex_exec_prints_the_answer_of_the_next_provider_after_a_429() {
    let Some(codex) = client_exe("LLM_ROTATOR_CODEX", "Codex CLI") else {
        return;
    };
    let a = rate_limited_mock().await;
    let b = Mock::start(vec![text_stream(&["hello", " from", " the", " mock"])]).await;
    let proxy = agent(&a, &b).await;

    let run = run_codex(&codex, &proxy, "say hi", &[]).await;
    let story = report("codex", &run, &[("alpha", &a), ("beta", &b)]);
    eprintln!("codex exec took {:.1?}", run.elapsed);

    assert_eq!(run.code, Some(0), "{story}");
    assert!(run.stdout.contains(ANSWER), "{story}");
    assert_eq!((a.hits(), b.hits()), (1, 1), "{story}");
    let sent = b.requests()[0].json();
    assert_eq!(sent["model"], "beta-model", "{story}");
    assert_eq!(sent["stream"], true, "{story}");
    assert!(has_user_text(&sent, "say hi"), "{story}");
}

#[tokio::test]
async fn codex_exec_runs_the_tool_call_and_sends_its_output_back() {
    let Some(codex) = client_exe("LLM_ROTATOR_CODEX", "Codex CLI tool call") else {
        return;
    };
    let a = rate_limited_mock().await;
    // Codex 0.171 offers a unified `exec_command` tool (`cmd`: one shell string) to
    // custom Responses providers.
    let b = Mock::start(vec![
        tool_call_stream("exec_command", &json!({"cmd": TOOL_COMMAND})),
        text_stream(&["hello", " from", " the", " mock"]),
    ])
    .await;
    let proxy = agent(&a, &b).await;

    // A container may not allow Codex's bubblewrap sandbox; the only command that can
    // run is the mock's `echo`.
    let run = run_codex(
        &codex,
        &proxy,
        "print the answer with echo",
        &["--dangerously-bypass-approvals-and-sandbox"],
    )
    .await;
    let story = report("codex", &run, &[("alpha", &a), ("beta", &b)]);
    eprintln!("codex exec with a tool call took {:.1?}", run.elapsed);

    assert_eq!(run.code, Some(0), "{story}");
    assert!(run.stdout.contains(ANSWER), "{story}");
    assert_eq!(b.hits(), 2, "{story}");
    let first = b.requests()[0].json();
    assert!(
        first["tools"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["function"]["name"] == "exec_command")),
        "{story}"
    );
    let second = b.requests()[1].json();
    let tool = tool_message(&second).unwrap_or_else(|| panic!("no tool message\n{story}"));
    assert!(
        content_text(&tool).contains(TOOL_OUTPUT),
        "{tool:#}\n{story}"
    );
    // The call itself precedes its result, as chat requires.
    assert!(
        second["messages"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["role"] == "assistant"
                && m["tool_calls"][0]["id"] == "call_mock_1"
                && m["tool_calls"][0]["function"]["name"] == "exec_command")),
        "{story}"
    );
}

// ---- Claude Code ----

/// `claude -p` against the agent, with the settings that keep it offline and quiet.
async fn run_claude(claude: &Path, proxy: &Proxy, args: &[&str]) -> Run {
    let dir = scratch();
    let base = proxy.url("");
    run_client(
        claude,
        args,
        dir.path(),
        &[
            ("ANTHROPIC_BASE_URL", &base),
            ("ANTHROPIC_API_KEY", "rotator-test"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
    )
    .await
}

#[tokio::test]
async fn claude_code_prints_the_answer_of_the_next_provider_after_a_429() {
    let Some(claude) = client_exe("LLM_ROTATOR_CLAUDE", "Claude Code") else {
        return;
    };
    let a = rate_limited_mock().await;
    let b = Mock::start(vec![text_stream(&["hello", " from", " the", " mock"])]).await;
    let proxy = agent(&a, &b).await;

    // Claude Code's own default model, as a user gets it.
    let run = run_claude(&claude, &proxy, &["-p", "say hi"]).await;
    let story = report("claude", &run, &[("alpha", &a), ("beta", &b)]);
    eprintln!("claude -p took {:.1?}", run.elapsed);

    assert_eq!(run.code, Some(0), "{story}");
    assert!(run.stdout.contains(ANSWER), "{story}");
    assert_eq!((a.hits(), b.hits()), (1, 1), "{story}");
    let sent = b.requests()[0].json();
    assert_eq!(sent["model"], "beta-model", "{story}");
    assert!(has_user_text(&sent, "say hi"), "{story}");
}

#[tokio::test]
async fn claude_code_runs_the_bash_tool_call_and_sends_its_output_back() {
    let Some(claude) = client_exe("LLM_ROTATOR_CLAUDE", "Claude Code tool call") else {
        return;
    };
    let a = rate_limited_mock().await;
    let b = Mock::start(vec![
        tool_call_stream(
            "Bash",
            &json!({"command": TOOL_COMMAND, "description": "Print a number"}),
        ),
        text_stream(&["hello", " from", " the", " mock"]),
    ])
    .await;
    let proxy = agent(&a, &b).await;

    // `--allowedTools Bash`: headless mode has no one to ask (and
    // `--dangerously-skip-permissions` is refused as root). `claude-sonnet-4-6` is an id
    // for which Claude Code keeps its reminders in user text (no `system` messages in
    // `messages`): the other wire shape next to the default model's in the test above.
    let run = run_claude(
        &claude,
        &proxy,
        &[
            "-p",
            "print the answer with echo",
            "--allowedTools",
            "Bash",
            "--model",
            "claude-sonnet-4-6",
        ],
    )
    .await;
    let story = report("claude", &run, &[("alpha", &a), ("beta", &b)]);
    eprintln!("claude -p with a tool call took {:.1?}", run.elapsed);

    assert_eq!(run.code, Some(0), "{story}");
    assert!(run.stdout.contains(ANSWER), "{story}");
    assert_eq!(b.hits(), 2, "{story}");
    let first = b.requests()[0].json();
    assert!(
        first["tools"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["function"]["name"] == "Bash")),
        "{story}"
    );
    let second = b.requests()[1].json();
    let tool = tool_message(&second).unwrap_or_else(|| panic!("no tool message\n{story}"));
    assert!(
        content_text(&tool).contains(TOOL_OUTPUT),
        "{tool:#}\n{story}"
    );
}
