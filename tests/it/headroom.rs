//! Headroom through the real binary: one mock provider sends Groq-style rate-limit
//! headers, another has `requests_per_day` set in the config; `/status` and
//! `llm-rotator status` tell what each has left, the pool's total, and that a used-up
//! configured limit rests the provider until midnight.

use serde_json::{json, Value};

use crate::common::*;

async fn ask(bin: &Binary, model: &str) -> u16 {
    client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn left_today(status: &Value, name: &str) -> Value {
    provider_in(status, name).unwrap()["headroom"]["requests_today"].clone()
}

#[tokio::test]
async fn status_and_the_cli_tell_what_is_left_from_provider_headers_and_from_a_configured_limit() {
    let dir = tempfile::tempdir().unwrap();
    let groq = Mock::start(vec![Reply::json_with(
        200,
        &[
            ("x-ratelimit-limit-requests", "1000"),
            ("x-ratelimit-remaining-requests", "412"),
            ("x-ratelimit-reset-requests", "2h0m0s"),
            ("x-ratelimit-limit-tokens", "6000"),
            ("x-ratelimit-remaining-tokens", "5800"),
            ("x-ratelimit-reset-tokens", "7.66s"),
        ],
        completion_body("from groq"),
    )])
    .await;
    let counted = Mock::start(vec![Reply::completion("from counted")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("groq", &groq, 1).extra("kind = \"groq\""),
            P::new("counted", &counted, 2).extra("requests_per_day = 3"),
        ],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[
            ("GROQ_TEST_KEY", "kg-000000000000"),
            ("COUNTED_TEST_KEY", "kc-000000000000"),
        ],
    );
    bin.wait_ready().await;
    // Before anything was sent: only the configured limit is known.
    let status = get_json(&bin, "/status").await;
    assert!(provider_in(&status, "groq").unwrap()["headroom"]
        .as_object()
        .unwrap()
        .is_empty());
    assert_eq!(left_today(&status, "counted")["left"], 3);

    assert_eq!(ask(&bin, "groq-model").await, 200);
    assert_eq!(ask(&bin, "counted-model").await, 200);
    assert_eq!(ask(&bin, "counted-model").await, 200);
    let status = get_json(&bin, "/status").await;
    let groq_left = left_today(&status, "groq");
    assert_eq!(groq_left["left"], 412, "{status}");
    assert_eq!(groq_left["source"], "provider");
    let reset = chrono::DateTime::parse_from_rfc3339(groq_left["resets_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let in_secs = (reset - chrono::Utc::now()).num_seconds();
    assert!((7000..=7200).contains(&in_secs), "{in_secs}");
    let groq_p = provider_in(&status, "groq").unwrap();
    assert_eq!(groq_p["headroom"]["tokens_minute"]["left"], 5800);
    assert!(groq_p["keys"][0]["headroom_read_at"].is_string());
    assert_eq!(groq_p["keys"][0]["headroom"]["requests_today"]["left"], 412);
    let counted_left = left_today(&status, "counted");
    assert_eq!(counted_left["left"], 1);
    assert_eq!(counted_left["source"], "config");
    assert_eq!(status["headroom"]["requests_left_today"], 413);
    assert_eq!(status["headroom"]["providers"], 2);
    // At today's pace (3 requests since midnight), a few left go by before the reset.
    assert!(provider_in(&status, "counted").unwrap()["runs_out_at"].is_string());

    let config = dir.path().join("config.toml");
    let status_now = || status_cli(&config, bin.port());
    let (code, out, err) = status_now();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("PROVIDER") && lines[0].contains("LEFT TODAY"),
        "{out}"
    );
    let groq_row = lines.iter().find(|l| l.starts_with("groq")).unwrap();
    assert!(
        groq_row.contains(" 412 ") && groq_row.contains(" 5,800 "),
        "{out}"
    );
    let counted_row = lines.iter().find(|l| l.starts_with("counted")).unwrap();
    assert!(
        counted_row.contains(" 2 ") && counted_row.contains(" 1 "),
        "{out}"
    );
    assert!(
        out.contains("~413 requests left today across 2 providers"),
        "{out}"
    );
    assert!(
        out.contains("counted: at this pace it runs out at"),
        "{out}"
    );

    // The last one the configured limit allows: the provider rests until midnight.
    assert_eq!(ask(&bin, "counted-model").await, 200);
    let status = get_json(&bin, "/status").await;
    let p = provider_in(&status, "counted").unwrap();
    assert_eq!(p["state"], "cooling_down", "{p}");
    assert!(
        p["cooldown_reason"]
            .as_str()
            .unwrap()
            .starts_with("daily quota used"),
        "{p}"
    );
    assert_eq!(p["headroom"]["requests_today"]["left"], 0);
    assert_eq!(counted.hits(), 3);
    // It is not asked again today.
    assert_eq!(ask(&bin, "counted-model").await, 429);
    assert_eq!(counted.hits(), 3);
    let (_, out, _) = status_now();
    let counted_row = out.lines().find(|l| l.starts_with("counted")).unwrap();
    assert!(counted_row.contains("cooling down"), "{out}");
}

#[tokio::test]
async fn a_429_s_rate_limit_headers_become_the_key_s_headroom() {
    let groq = Mock::start(vec![Reply::json_with(
        429,
        &[
            ("x-ratelimit-limit-requests", "1000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2h0m0s"),
            ("retry-after", "60"),
        ],
        json!({"error": {"message": "Rate limit reached for requests per day", "type": "requests", "code": "rate_limit_exceeded"}}),
    )])
    .await;
    let backup = Mock::start(vec![Reply::completion("from backup")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(
        "",
        &[
            P::new("groq", &groq, 1).extra("kind = \"groq\""),
            P::new("backup", &backup, 2),
        ],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[
            ("GROQ_TEST_KEY", "kg-000000000000"),
            ("BACKUP_TEST_KEY", "kb-000000000000"),
        ],
    );
    bin.wait_ready().await;
    // The request rotates to the backup; groq's 429 said what it has left.
    let (code, headers, _) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-provider"], "backup");
    let status = get_json(&bin, "/status").await;
    let left = left_today(&status, "groq");
    assert_eq!(left["left"], 0, "{status}");
    assert_eq!(left["source"], "provider", "{status}");
}
