//! The usage history through the real binary: rows written under concurrent load with
//! 429s that rotate, read back by `llm-rotator stats --json` from the running agent and,
//! after a `kill -9`, from the file; a corrupt database at start; bad questions; and the
//! manual reset (route and CLI).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const KA: &str = "sk-alpha-history-00000000001";
const KB: &str = "sk-beta-history-000000000002";

fn keys_env() -> Vec<(&'static str, &'static str)> {
    vec![("ALPHA_TEST_KEY", KA), ("BETA_TEST_KEY", KB)]
}

/// alpha (first) always answers 429 for a second; beta answers.
async fn two_providers(dir: &Path) -> (Mock, Mock, String) {
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "1")],
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text(
        "[routing]\nmax_wait_secs = 0\n",
        &[P::new("alpha", &a, 1), P::new("beta", &b, 2)],
    );
    std::fs::create_dir_all(dir).unwrap();
    (a, b, cfg)
}

fn stats_json(dir: &Path, port: u16, extra: &[&str]) -> Value {
    let config = dir.join("config.toml");
    let data = dir.join("data");
    let port = port.to_string();
    let mut args = vec![
        "stats",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--port",
        &port,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args, &[]);
    assert_eq!(code, 0, "stats failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Sums a field over a provider's rows.
fn total(report: &Value, provider: &str, field: &str) -> u64 {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["provider"] == provider)
        .map(|r| r[field].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_counts_every_attempt_under_load_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, cfg) = two_providers(dir.path()).await;
    let mut bin = Binary::start(dir.path(), &cfg, &keys_env());
    bin.wait_ready().await;
    let port = bin.port();
    const N: usize = 60;
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = bin.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            if i >= 30 {
                // A second wave, deliberately after alpha's 1 s cooldown ended: more 429s
                // that rotate.
                tokio::time::sleep(Duration::from_millis(1300)).await;
            }
            let resp = client()
                .post(url)
                .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let _ = resp.text().await;
            status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let limited = a.hits() as u64;
    assert!(limited >= 2, "alpha saw {limited} requests");
    assert_eq!(b.hits(), N);
    // From the running agent (it stores the last second before answering).
    let live = stats_json(dir.path(), port, &[]);
    assert_eq!(live["days"], 7);
    assert_eq!(live["providers"], json!(["alpha", "beta"]));
    assert_eq!(live["rows"].as_array().unwrap().len(), 14);
    assert_eq!(total(&live, "alpha", "requests"), limited);
    assert_eq!(total(&live, "alpha", "rate_limited"), limited);
    assert_eq!(total(&live, "alpha", "rotations"), limited);
    assert_eq!(total(&live, "alpha", "failures"), 0);
    assert_eq!(total(&live, "beta", "requests"), N as u64);
    assert_eq!(total(&live, "beta", "rate_limited"), 0);
    assert_eq!(total(&live, "beta", "prompt_tokens"), 5 * N as u64);
    assert_eq!(total(&live, "beta", "completion_tokens"), 7 * N as u64);
    let today = live["rows"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["provider"] == "beta")
        .unwrap()
        .clone();
    assert!(today["p50_ms"].as_u64().is_some(), "{today}");
    // Only beta, as text.
    let config = dir.path().join("config.toml");
    let (code, text, err) = cli(
        &[
            "stats",
            "--provider",
            "beta",
            "--days",
            "3",
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("PROVIDER") && text.contains("beta"), "{text}");
    assert!(!text.contains("alpha"), "{text}");
    assert!(text.contains('█'), "a sparkline: {text}");
    // kill -9 deliberately after the writer's flush interval (the bound under test):
    // nothing is lost.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bin.signal("KILL");
    let _ = bin.wait_exit();
    // No agent now: the CLI opens the file itself.
    let from_file = stats_json(dir.path(), port, &[]);
    assert_eq!(from_file["rows"], live["rows"]);
}

#[tokio::test]
async fn a_corrupt_history_database_is_moved_aside_and_the_agent_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, cfg) = two_providers(dir.path()).await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(data.join("history.redb"), &garbage).unwrap();
    let mut bin = Binary::start(dir.path(), &cfg, &keys_env());
    bin.wait_ready().await;
    let (status, _, _) = chat(
        &bin,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let log = bin.wait_stderr("was corrupt");
    assert!(log.contains("WARN"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(data.join(&aside[0])).unwrap(), garbage);
    // The fresh database counts the request.
    let report = stats_json(dir.path(), bin.port(), &[]);
    assert_eq!(total(&report, "beta", "requests"), 1);
}

#[tokio::test]
async fn stats_refuses_bad_questions_with_a_message_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, cfg) = two_providers(dir.path()).await;
    let mut bin = Binary::start(dir.path(), &cfg, &keys_env());
    bin.wait_ready().await;
    let config = dir.path().join("config.toml");
    let port_text = bin.port().to_string();
    let base = ["--config", config.to_str().unwrap(), "--port", &port_text];
    let run = |extra: &[&str]| {
        let mut args = vec!["stats"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&base);
        cli(&args, &[])
    };
    let (code, _, err) = run(&["--days", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("from 1 to 90"), "{err}");
    let (code, _, err) = run(&["--days", "91"]);
    assert_ne!(code, 0);
    assert!(err.contains("from 1 to 90"), "{err}");
    let (code, _, err) = run(&["--provider", "nope"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no provider named \"nope\"") && err.contains("alpha, beta"),
        "{err}"
    );
    // The route says the same in OpenAI's error shape.
    let resp = client()
        .get(bin.url("/stats/history?days=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("from 1 to 90"));
    let resp = client()
        .get(bin.url("/stats/history?provider=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_provider");
    // With no agent running, the file is read; a bad provider is still refused.
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    let data = dir.path().join("data");
    let (code, _, err) = cli(
        &[
            "stats",
            "--provider",
            "nope",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port_text,
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no provider named"), "{err}");
}

#[tokio::test]
async fn reset_ends_a_providers_cooldown_through_the_route_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "600")],
        json!({}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text(
        "[server]\nauth_token = \"secret-token-for-resets\"\n[routing]\nmax_wait_secs = 0\n",
        &[P::new("alpha", &a, 1), P::new("beta", &b, 2)],
    );
    let mut bin = Binary::start(dir.path(), &cfg, &keys_env());
    bin.wait_ready().await;
    let authed = |req: reqwest::RequestBuilder| req.bearer_auth("secret-token-for-resets");
    let resp = authed(client().post(bin.url("/v1/chat/completions")))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered_by(&resp), "beta");
    let status: Value = authed(client().get(bin.url("/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        provider_in(&status, "alpha").unwrap()["state"],
        "cooling_down"
    );
    // The same guard as the toggles: no token, no reset.
    let resp = client()
        .post(bin.url("/providers/alpha/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = authed(client().post(bin.url("/providers/alpha/reset")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fresh: Value = resp.json().await.unwrap();
    assert_eq!(fresh["name"], "alpha");
    assert_eq!(fresh["state"], "ready");
    assert_eq!(fresh["cooldown_remaining_secs"], 0);
    let resp = authed(client().post(bin.url("/providers/nope/reset")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_provider");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Cool it down again, then reset it from the command line.
    let _ = authed(client().post(bin.url("/v1/chat/completions")))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    // The CLI takes the token from the config file.
    let config = dir.path().join("config.toml");
    let port = bin.port().to_string();
    let reset = |provider: &str| {
        cli(
            &[
                "reset",
                provider,
                "--config",
                config.to_str().unwrap(),
                "--port",
                &port,
            ],
            &[],
        )
    };
    let (code, out, err) = reset("alpha");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "alpha: cooldowns reset; now ready");
    let (code, _, err) = reset("nope");
    assert_ne!(code, 0);
    assert!(err.contains("no provider named \"nope\""), "{err}");
    bin.wait_stderr("cooldowns reset by hand");
}
