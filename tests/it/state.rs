//! State that lasts and changes live, through the real binary: counters, toggles and
//! cooldowns across restarts (clean and `kill -9`), bad state files, hot reload by file
//! edit, `POST /reload` and SIGHUP, and graceful shutdown with streams in flight.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const KA: &str = "sk-alpha-state-0000000000001";
const KB: &str = "sk-beta-state-00000000000002";
const KC: &str = "sk-gamma-state-0000000000003";

fn keys_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ALPHA_TEST_KEY", KA),
        ("BETA_TEST_KEY", KB),
        ("GAMMA_TEST_KEY", KC),
    ]
}

async fn start(dir: &Path, config: &str) -> Binary {
    let mut bin = Binary::start(dir, config, &keys_env());
    bin.wait_ready().await;
    bin
}

async fn post(bin: &Binary, path: &str) -> (u16, Value) {
    let resp = client().post(bin.url(path)).send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Sends a chat completion; returns (status, x-provider).
async fn ask(bin: &Binary) -> (u16, String) {
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let provider = answered_by(&resp);
    let _ = resp.text().await;
    (status, provider)
}

/// Polls `/status` until `cond` holds (panics after 15 s with the last status).
async fn wait_status(bin: &Binary, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(15), what, || async {
        let s = get_json(bin, "/status").await;
        if cond(&s) {
            Ok(s)
        } else {
            Err(format!("{s:#}"))
        }
    })
    .await
}

fn stop(bin: &mut Binary, sig: &str) {
    bin.signal(sig);
    assert_eq!(bin.wait_exit(), Some(0), "stderr: {}", bin.stderr());
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

fn state_file(dir: &Path) -> PathBuf {
    data_dir(dir).join("state.json")
}

/// Writes `text` to the config in place (same file, truncated and rewritten).
fn write_in_place(dir: &Path, text: &str) {
    std::fs::write(dir.join("config.toml"), text).expect("write config");
}

/// Writes `text` beside the config and renames it over, as many editors save.
fn replace_by_rename(dir: &Path, text: &str) {
    let tmp = dir.join(".config.toml.swp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, dir.join("config.toml")).expect("rename");
}

/// Rewrites the config in place with text of the same length and puts the old
/// modification time back: a change the file watcher cannot see, so only an explicit
/// reload can apply it.
fn edit_unseen_by_the_watcher(dir: &Path, text: &str) {
    let path = dir.join("config.toml");
    let before = std::fs::metadata(&path).expect("meta");
    assert_eq!(before.len(), text.len() as u64, "same length needed");
    std::fs::write(&path, text).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open")
        .set_modified(before.modified().expect("mtime"))
        .expect("set mtime");
}

async fn stream_request(bin: &Binary) -> reqwest::Response {
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    resp
}

async fn read_rest(mut resp: reqwest::Response, mut all: String) -> String {
    while let Some(c) = resp.chunk().await.expect("chunk") {
        all.push_str(&String::from_utf8_lossy(&c));
    }
    all
}

/// Checks every word arrived once, in order, and the stream ended with `[DONE]`.
fn assert_intact(body: &str, words: &[String]) {
    let mut at = 0;
    for w in words {
        let needle = format!("\"content\":\"{w}\"");
        let pos = body[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{w} missing or out of order in {body}"));
        at += pos + needle.len();
    }
    assert!(!body.contains("\"error\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i:02}")).collect()
}

#[tokio::test]
async fn counts_tokens_toggles_and_an_active_cooldown_survive_sigterm_and_restart() {
    let alpha = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "3600")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let beta = Mock::start(vec![Reply::completion("ok")]).await;
    let gamma = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("alpha", &alpha, 1),
            P::new("beta", &beta, 2),
            P::new("gamma", &gamma, 3),
        ],
    );
    let tmp = tempfile::tempdir().expect("dir");
    let mut bin = start(tmp.path(), &cfg).await;
    for _ in 0..3 {
        assert_eq!(ask(&bin).await, (200, "beta".to_string()));
    }
    assert_eq!(post(&bin, "/providers/gamma/disable").await.0, 200);
    stop(&mut bin, "TERM");

    let saved = std::fs::read_to_string(state_file(tmp.path())).expect("state file");
    for key in [KA, KB, KC] {
        assert!(!saved.contains(key), "a key reached the state file");
        assert!(!saved.contains(&key[key.len() - 6..]));
    }

    let mut bin = start(tmp.path(), &cfg).await;
    let a = provider_status(&bin, "alpha").await;
    assert_eq!(a["state"], "cooling_down", "{a}");
    assert!(
        a["cooldown_remaining_secs"].as_u64().expect("secs") > 3500,
        "{a}"
    );
    assert_eq!(a["request_count"], 1);
    let b = provider_status(&bin, "beta").await;
    assert_eq!(b["request_count"], 3);
    assert_eq!(b["total_requests"], 3);
    assert_eq!(b["total_tokens_used"], 36);
    assert_eq!(b["keys"][0]["request_count"], 3);
    let c = provider_status(&bin, "gamma").await;
    assert_eq!(
        (c["enabled"].clone(), c["enabled_in_config"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(c["state"], "disabled");

    // The restarted agent does not hammer the provider that asked for an hour's pause.
    assert_eq!(ask(&bin).await, (200, "beta".to_string()));
    assert_eq!(alpha.hits(), 1);
    assert_eq!(gamma.hits(), 0);
    // Toggling back on also lasts.
    assert_eq!(post(&bin, "/providers/gamma/enable").await.0, 200);
    stop(&mut bin, "INT");
    let bin = start(tmp.path(), &cfg).await;
    let c = provider_status(&bin, "gamma").await;
    assert_eq!(
        (c["enabled"].clone(), c["state"].clone()),
        (json!(true), json!("ready"))
    );
    assert_eq!(provider_status(&bin, "beta").await["total_requests"], 4);
}

#[tokio::test]
async fn after_sigkill_requests_finished_over_a_second_before_survive() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let mut bin = start(tmp.path(), &cfg).await;
    for _ in 0..3 {
        assert_eq!(ask(&bin).await.0, 200);
    }
    // The guarantee under test (so a deliberate wait): at most the last second is lost.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bin.signal("KILL");
    assert_eq!(bin.wait_exit(), None, "killed by a signal");

    let bin = start(tmp.path(), &cfg).await;
    let a = provider_status(&bin, "alpha").await;
    assert_eq!(a["request_count"], 3, "{a}");
    assert_eq!(a["total_tokens_used"], 36, "{a}");
}

/// Starts on a data dir holding `bad` as state.json: one warning, a fresh start, the bad
/// file kept beside under a new name, and saving works again afterwards.
async fn starts_fresh_from_a_bad_state_file(tmp: &Path, cfg: &str, bad: &[u8]) {
    std::fs::create_dir_all(data_dir(tmp)).expect("data dir");
    std::fs::write(state_file(tmp), bad).expect("write bad state");
    let mut bin = start(tmp, cfg).await;
    let a = provider_status(&bin, "alpha").await;
    assert_eq!(
        (a["request_count"].clone(), a["total_requests"].clone()),
        (json!(0), json!(0))
    );
    let warnings: Vec<String> = bin
        .stderr()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("state.json"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", bin.stderr());
    assert!(warnings[0].contains("moved it to"), "{warnings:?}");
    let aside: Vec<PathBuf> = std::fs::read_dir(data_dir(tmp))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("state.json.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).expect("aside"), bad);

    assert_eq!(ask(&bin).await.0, 200);
    stop(&mut bin, "TERM");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(tmp)).expect("state")).expect("json");
    assert_eq!(saved["providers"]["alpha"]["total_requests"], 1, "{saved}");
}

#[tokio::test]
async fn a_truncated_state_file_is_moved_aside_with_a_warning_and_the_agent_starts_fresh() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    // A real state file, cut in half as a crash in a non-atomic writer would leave it.
    let mut bin = start(tmp.path(), &cfg).await;
    assert_eq!(ask(&bin).await.0, 200);
    stop(&mut bin, "TERM");
    let full = std::fs::read(state_file(tmp.path())).expect("state");
    starts_fresh_from_a_bad_state_file(tmp.path(), &cfg, &full[..full.len() / 2]).await;
}

#[tokio::test]
async fn a_garbage_state_file_is_moved_aside_with_a_warning_and_the_agent_starts_fresh() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    starts_fresh_from_a_bad_state_file(tmp.path(), &cfg, b"\x7fELF\x00\x01garbage{{{").await;
}

#[tokio::test]
async fn editing_the_config_in_place_reloads_it_keeping_counters_by_name() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let beta = Mock::start(vec![Reply::completion("ok")]).await;
    let gamma = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1), P::new("beta", &beta, 2)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));

    let edited = config_text(
        "",
        &[
            P::new("alpha", &alpha, 5).extra("models = [\"extra-model\"]"),
            P::new("gamma", &gamma, 1),
        ],
    );
    write_in_place(tmp.path(), &edited);
    let s = wait_status(&bin, "gamma after an in-place edit", |s| {
        provider_in(s, "gamma").is_some()
    })
    .await;
    assert!(
        provider_in(&s, "beta").is_none(),
        "removed providers vanish"
    );
    let a = provider_in(&s, "alpha").expect("alpha");
    assert_eq!(
        (a["priority"].clone(), a["request_count"].clone()),
        (json!(5), json!(1))
    );
    assert_eq!(a["models"], json!(["extra-model"]));
    assert!(s["config"]["last_error"].is_null(), "{s}");
    assert_eq!(ask(&bin).await, (200, "gamma".to_string()));
    bin.wait_stderr("changed; reloading");
}

#[tokio::test]
async fn replacing_the_config_by_rename_reloads_it() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let beta = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
    let edited = config_text("", &[P::new("alpha", &alpha, 2), P::new("beta", &beta, 1)]);
    replace_by_rename(tmp.path(), &edited);
    wait_status(&bin, "beta after a rename", |s| {
        provider_in(s, "beta").is_some()
    })
    .await;
    assert_eq!(ask(&bin).await, (200, "beta".to_string()));
    // A second save by rename is seen too (the watch follows the path, not the old file).
    let again = config_text("", &[P::new("alpha", &alpha, 1)]);
    replace_by_rename(tmp.path(), &again);
    wait_status(&bin, "beta gone after a second rename", |s| {
        provider_in(s, "beta").is_none()
    })
    .await;
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
}

#[tokio::test]
async fn post_reload_and_sighup_apply_an_edit_the_watcher_did_not_see() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;

    edit_unseen_by_the_watcher(tmp.path(), &cfg.replace("priority = 1", "priority = 7"));
    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"], json!(["alpha"]));
    // The port given on the command line (0: the one bound) still wins: nothing waits
    // for a restart, and the endpoint is the bound port.
    assert_eq!(body["restart_needed"], json!([]), "{body}");
    assert_eq!(
        get_json(&bin, "/status").await["endpoint"],
        format!("http://localhost:{}/v1", bin.port())
    );
    assert_eq!(provider_status(&bin, "alpha").await["priority"], 7);

    edit_unseen_by_the_watcher(tmp.path(), &cfg.replace("priority = 1", "priority = 4"));
    bin.signal("HUP");
    wait_status(&bin, "priority 4 after SIGHUP", |s| {
        provider_in(s, "alpha").is_some_and(|a| a["priority"] == 4)
    })
    .await;
    bin.wait_stderr("SIGHUP received");
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
}

#[tokio::test]
async fn an_invalid_config_is_rejected_with_line_and_column_while_the_old_one_serves() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;
    // Line 8, column 1: an unknown key in the provider table.
    let broken = config_text("", &[P::new("alpha", &alpha, 1).extra("bogus_setting = 1")]);
    assert_eq!(broken.lines().nth(7), Some("bogus_setting = 1"));
    write_in_place(tmp.path(), &broken);

    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    assert_eq!(
        (
            body["error"]["line"].clone(),
            body["error"]["column"].clone()
        ),
        (json!(8), json!(1))
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("config.toml:8:1"), "{message}");
    assert!(message.contains("bogus_setting"), "{message}");

    let s = get_json(&bin, "/status").await;
    let last = s["config"]["last_error"].as_str().expect("last_error");
    assert!(
        last.contains(":8:1") && last.contains("bogus_setting"),
        "{last}"
    );
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
    // The log is written by a background thread: wait for the line, then check it.
    let log = bin.wait_stderr(":8:1");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("rejected") && l.contains(":8:1")),
        "{log}"
    );

    // Fixing the file clears the error, through the watcher alone.
    let fixed = config_text("", &[P::new("alpha", &alpha, 2)]);
    write_in_place(tmp.path(), &fixed);
    wait_status(&bin, "the error cleared after a fix", |s| {
        s["config"]["last_error"].is_null()
            && provider_in(s, "alpha").is_some_and(|a| a["priority"] == 2)
    })
    .await;
}

#[tokio::test]
async fn a_provider_whose_key_or_base_url_changed_leaves_auth_failed() {
    let alpha = Mock::start(vec![Reply::json(
        401,
        json!({"error": {"message": "bad key"}}),
    )])
    .await;
    let alpha_moved = Mock::start(vec![Reply::completion("ok")]).await;
    let beta = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1), P::new("beta", &beta, 2)]);
    let tmp = tempfile::tempdir().expect("dir");
    let mut env = keys_env();
    env.push(("ALPHA_NEW_KEY", "sk-alpha-new-000000000000009"));
    let mut bin = Binary::start(tmp.path(), &cfg, &env);
    bin.wait_ready().await;
    assert_eq!(ask(&bin).await, (200, "beta".to_string()));
    assert_eq!(provider_status(&bin, "alpha").await["state"], "auth_failed");

    // A new key: the config now names another variable.
    alpha.set_script(vec![Reply::completion("ok")]);
    write_in_place(
        tmp.path(),
        &cfg.replace(
            "api_key_env = \"ALPHA_TEST_KEY\"",
            "api_key_env = \"ALPHA_NEW_KEY\"",
        ),
    );
    wait_status(&bin, "alpha ready with its new key", |s| {
        provider_in(s, "alpha").is_some_and(|a| a["state"] == "ready")
    })
    .await;
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
    let last = alpha.requests().pop().expect("request");
    assert_eq!(
        last.headers["authorization"],
        "Bearer sk-alpha-new-000000000000009"
    );

    // Rejected again, then a new base_url with the same key.
    alpha.set_script(vec![Reply::json(401, json!({}))]);
    write_in_place(tmp.path(), &cfg);
    wait_status(&bin, "the old key back", |s| {
        provider_in(s, "alpha").is_some_and(|a| {
            a["keys"][0]["label"]
                .as_str()
                .is_some_and(|l| l.contains("ALPHA_TEST_KEY"))
        })
    })
    .await;
    assert_eq!(ask(&bin).await, (200, "beta".to_string()));
    assert_eq!(provider_status(&bin, "alpha").await["state"], "auth_failed");
    write_in_place(
        tmp.path(),
        &cfg.replace(&alpha.base_url(), &alpha_moved.base_url()),
    );
    wait_status(&bin, "alpha ready at its new base_url", |s| {
        provider_in(s, "alpha").is_some_and(|a| a["state"] == "ready")
    })
    .await;
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
    assert_eq!(alpha_moved.hits(), 1);
}

#[tokio::test]
async fn a_stream_in_flight_during_a_reload_completes_intact() {
    let w = words(12);
    let wr: Vec<&str> = w.iter().map(String::as_str).collect();
    let alpha = Mock::start(vec![Reply::stream(&wr, Duration::from_millis(120))]).await;
    let beta = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;

    let mut resp = stream_request(&bin).await;
    assert_eq!(resp.headers()["x-provider"], "alpha");
    let first =
        String::from_utf8_lossy(&resp.chunk().await.expect("chunk").expect("some")).to_string();
    // The stream's provider is removed from the config mid-stream.
    write_in_place(tmp.path(), &config_text("", &[P::new("beta", &beta, 1)]));
    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"], json!(["beta"]));
    assert_eq!(ask(&bin).await, (200, "beta".to_string()));

    let all = read_rest(resp, first).await;
    assert_intact(&all, &w);
    assert_eq!(alpha.hits(), 1);
}

#[tokio::test]
async fn sigterm_stops_accepting_lets_a_stream_finish_saves_state_and_exits_0() {
    let w = words(20);
    let wr: Vec<&str> = w.iter().map(String::as_str).collect();
    let mut chunks = sse_chunks(&wr, false);
    let usage = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "mock-model", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    });
    chunks.push(format!("data: {usage}\n\n"));
    chunks.push("data: [DONE]\n\n".into());
    let alpha = Mock::start(vec![Reply::Sse {
        chunks,
        delay: Duration::from_millis(100),
        end: SseEnd::Clean,
    }])
    .await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let mut bin = start(tmp.path(), &cfg).await;

    let mut resp = stream_request(&bin).await;
    let first =
        String::from_utf8_lossy(&resp.chunk().await.expect("chunk").expect("some")).to_string();
    bin.signal("TERM");
    // New connections are refused while the stream still runs.
    wait_until(
        Duration::from_secs(15),
        "new connections are refused after SIGTERM",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", bin.port()))
                .await
                .is_err()
        },
    )
    .await;
    assert!(
        bin.child.try_wait().expect("try_wait").is_none(),
        "exited before the stream ended"
    );

    let all = read_rest(resp, first).await;
    assert_intact(&all, &w);
    assert_eq!(bin.wait_exit(), Some(0), "{}", bin.stderr());
    assert!(bin.stderr().contains("shutting down"), "{}", bin.stderr());

    // The tokens counted at the stream's end, after the signal, were saved too.
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(tmp.path())).expect("state"))
            .expect("json");
    assert_eq!(saved["providers"]["alpha"]["total_tokens"], 30, "{saved}");
    assert_eq!(saved["providers"]["alpha"]["request_count"], 1, "{saved}");
}

#[tokio::test]
async fn a_stream_outlasting_the_grace_is_cut_and_the_agent_still_saves_and_exits_0() {
    let alpha = Mock::start(vec![Reply::Sse {
        chunks: sse_chunks(&["only", "part"], false),
        delay: Duration::ZERO,
        end: SseEnd::Hang,
    }])
    .await;
    let cfg = config_text(
        "[server]\nshutdown_grace_secs = 1\n",
        &[P::new("alpha", &alpha, 1)],
    );
    let tmp = tempfile::tempdir().expect("dir");
    let mut bin = start(tmp.path(), &cfg).await;
    let mut resp = stream_request(&bin).await;
    let first =
        String::from_utf8_lossy(&resp.chunk().await.expect("chunk").expect("some")).to_string();
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0), "{}", bin.stderr());
    assert!(
        bin.stderr().contains("grace period over"),
        "{}",
        bin.stderr()
    );
    // The client sees its stream end (cut), not a hang.
    let mut rest = first;
    while let Ok(Some(c)) = resp.chunk().await {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("only"), "{rest}");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(tmp.path())).expect("state"))
            .expect("json");
    assert_eq!(saved["providers"]["alpha"]["request_count"], 1, "{saved}");
}

/// A key store whose next lookup, once armed, blocks until released: a slow keychain.
struct SlowKeys {
    armed: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl llm_rotator::secrets::KeyStore for SlowKeys {
    fn keys_for(
        &self,
        _provider: &llm_rotator::config::ProviderConfig,
    ) -> Vec<llm_rotator::secrets::ProviderKey> {
        let gate = self.armed.lock().expect("lock").take();
        if let Some((blocked, release)) = gate {
            let _ = blocked.send(());
            let _ = release.recv();
        }
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_reloads_end_on_the_newest_file() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let tmp = tempfile::tempdir().expect("dir");
    let path = tmp.path().join("config.toml");
    let version = |prio: u32| config_text("", &[P::new("alpha", &alpha, prio)]);
    std::fs::write(&path, version(1)).expect("write");
    let config = llm_rotator::config::Config::load(&path).expect("config");
    let keys = std::sync::Arc::new(SlowKeys {
        armed: std::sync::Mutex::new(None),
    });
    let engine =
        llm_rotator::engine::Engine::new(config, Some(path.clone()), keys.clone()).expect("engine");

    // Reload A reads version 2, then its key lookup hangs (a keychain prompt, say).
    std::fs::write(&path, version(2)).expect("write");
    let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *keys.armed.lock().expect("lock") = Some((blocked_tx, release_rx));
    let a = tokio::spawn({
        let e = engine.clone();
        async move { e.reload().await.map(|_| ()) }
    });
    tokio::task::spawn_blocking(move || blocked_rx.recv())
        .await
        .expect("join")
        .expect("A reached the key lookup");
    // Meanwhile the file is saved again and reload B starts.
    std::fs::write(&path, version(3)).expect("write");
    let b = tokio::spawn({
        let e = engine.clone();
        async move { e.reload().await.map(|_| ()) }
    });
    // Deliberate: give B every chance to finish first, as it would if reloads could
    // overlap (proving that something does not happen needs a time bound).
    tokio::time::sleep(Duration::from_millis(300)).await;
    release_tx.send(()).expect("release");
    a.await.expect("join").expect("reload A");
    b.await.expect("join").expect("reload B");
    assert_eq!(engine.config().providers[0].priority, 3);
    assert_eq!(
        engine.pool.snapshot(chrono::Utc::now()).providers[0].priority,
        3
    );
}

#[tokio::test]
async fn a_reload_says_which_changed_settings_wait_for_a_restart() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let bin = start(tmp.path(), &cfg).await;
    let edited = config_text(
        "[routing]\nconnect_timeout_secs = 3\ndefault_cooldown_secs = 9\n",
        &[P::new("alpha", &alpha, 1)],
    );
    // Whether the watcher or this call applies it first, the answer compares with what
    // the agent started on.
    write_in_place(tmp.path(), &edited);
    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restart_needed"],
        json!(["routing.connect_timeout_secs"]),
        "{body}"
    );
    bin.wait_stderr("routing.connect_timeout_secs changed; the running value stays");
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
}

#[tokio::test]
async fn a_config_asking_for_any_free_port_serves_on_the_bound_one_across_reloads() {
    let alpha = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text("[server]\nport = 0\n", &[P::new("alpha", &alpha, 1)]);
    let tmp = tempfile::tempdir().expect("dir");
    let config = tmp.path().join("config.toml");
    write_in_place(tmp.path(), &cfg);
    // No --port: the file asks for any free port.
    let child = std::process::Command::new(Binary::exe())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--ready-file")
        .arg(Binary::ready_file(tmp.path()))
        .envs(keys_env())
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(tmp.path().join("stderr.log")).expect("stderr"))
        .spawn()
        .expect("spawn");
    let mut bin = Binary::adopt(child, tmp.path());
    bin.wait_ready().await;
    let endpoint = format!("http://localhost:{}/v1", bin.port());
    assert_eq!(get_json(&bin, "/status").await["endpoint"], endpoint);
    bin.wait_stderr(&format!("serving on {endpoint}"));

    // The same file again: any free port is content with the one bound.
    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_needed"], json!([]), "{body}");
    // Port 0 names no instance for the CLI, which says where to find the real one.
    let (code, _, err) = cli(&["status", "--config", config.to_str().expect("utf8")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("port 0 names no running instance"), "{err}");
    let (code, out, err) = cli(&["config", "check", config.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("serving on a free port picked at start"),
        "{out}"
    );

    // A fixed port in the file waits for a restart; the agent stays where it is.
    write_in_place(tmp.path(), &cfg.replace("port = 0", "port = 8000"));
    let (status, body) = post(&bin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_needed"], json!(["server.port"]), "{body}");
    assert_eq!(ask(&bin).await, (200, "alpha".to_string()));
}
