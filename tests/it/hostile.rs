//! Hostile providers and configs against the real binary, each bound asserted: a
//! provider pointing back at the agent, answers too large to buffer, a stream of pings
//! or a line that never ends, a non-streaming request across silent providers, a key in
//! a `base_url` query string, absurd token counts, a client's huge model name.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// Peak resident memory of a process, in MB (Linux `/proc`).
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// CPU time a process used so far, in seconds (Linux `/proc`, 100 ticks a second).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn start(dir: &std::path::Path, top: &str, providers: &[P<'_>], env: &[(&str, &str)]) -> Binary {
    let cfg = config_text(top, providers);
    Binary::start(dir, &cfg, env)
}

#[tokio::test]
async fn a_provider_pointing_back_at_the_agent_costs_one_hop_not_every_descriptor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let mut bin = Binary::start(
        dir.path(),
        &config_text("", &[P::new("b", &b, 2)]),
        &[
            ("SELF_TEST_KEY", "ks-0000000000000000"),
            ("B_TEST_KEY", "kb-0000000000000000"),
        ],
    );
    bin.wait_ready().await;
    // The config names port 8000; the agent runs on another port given on the command
    // line, so config validation cannot see that "self" points back here: the hop tag must.
    let cfg = format!(
        "[[providers]]\nname = \"self\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 1\napi_key_env = \"SELF_TEST_KEY\"\n\n{}",
        bin.url("/v1"),
        config_text("", &[P::new("b", &b, 2)])
    );
    std::fs::write(dir.path().join("config.toml"), cfg).expect("write");
    let reload = client()
        .post(bin.url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(
        reload.status(),
        200,
        "{}",
        reload.text().await.unwrap_or_default()
    );
    let started = Instant::now();
    let (code, headers, body) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-provider"], "b");
    assert!(started.elapsed() < Duration::from_secs(5));
    let st = provider_status(&bin, "self").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("508"),
        "{st}"
    );
    let health = client()
        .get(bin.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", bin.child.id()))
        .expect("fds")
        .count();
    assert!(fds < 100, "{fds} open descriptors");
    assert!(peak_rss_mb(bin.child.id()) < 60);

    // And config check refuses a base_url that is the agent's own address.
    let own = dir.path().join("own.toml");
    std::fs::write(
        &own,
        "[[providers]]\nname = \"self\"\nbase_url = \"http://localhost:8000/v1\"\nmodel = \"m\"\n",
    )
    .expect("write");
    let (code, _, err) = cli(&["config", "check", own.to_str().expect("utf8")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("this agent's own address"), "{err}");
    assert!(err.contains("providers[0].base_url"), "{err}");
}

#[tokio::test]
async fn answers_too_large_to_buffer_rotate_with_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let huge_ok = format!(
        "{{\"choices\":[{{\"index\":0,\"message\":{{\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}]}}",
        "x".repeat(40 * 1024 * 1024)
    );
    let huge_error = format!(
        "{{\"error\":{{\"message\":\"{}\"}}}}",
        "y".repeat(40 * 1024 * 1024)
    );
    let a = Mock::start(vec![
        Reply::Raw {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: huge_ok,
        },
        Reply::Raw {
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: huge_error,
        },
    ])
    .await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let mut bin = start(
        dir.path(),
        "[routing]\nmax_response_bytes = 4194304\ntransient_cooldown_secs = 1\nmax_wait_secs = 0\n",
        &[P::new("a", &a, 1), P::new("b", &b, 2)],
        &[
            ("A_TEST_KEY", "ka-0000000000000000"),
            ("B_TEST_KEY", "kb-0000000000000000"),
        ],
    );
    bin.wait_ready().await;
    let (code, headers, body) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(
        (code, headers["x-provider"].to_str().expect("h")),
        (200, "b"),
        "{body}"
    );
    let st = provider_status(&bin, "a").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_response_bytes"),
        "{st}"
    );
    // Deliberately past a's transient cooldown (1 s), so the next request tries it again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, headers, _) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(
        (code, headers["x-provider"].to_str().expect("h")),
        (200, "b")
    );
    let st = provider_status(&bin, "a").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("error body larger"),
        "{st}"
    );
    let rss = peak_rss_mb(bin.child.id());
    assert!(rss < 60, "peak RSS {rss} MB for two 40 MB answers");
}

#[tokio::test]
async fn pings_before_the_first_event_and_a_line_that_never_ends_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 40 MB of pings, then a real answer.
    let ping_block = "event: ping\n\n".repeat(4096);
    let mut chunks: Vec<String> = (0..800).map(|_| ping_block.clone()).collect();
    chunks.extend(sse_chunks(&["after the pings"], true));
    // The first event, then one line of 6 MB that never ends.
    let mut endless = sse_chunks(&["start"], false);
    endless.extend((0..96).map(|_| "z".repeat(64 * 1024)));
    let a = Mock::start(vec![
        Reply::Sse {
            chunks,
            delay: Duration::ZERO,
            end: SseEnd::Clean,
        },
        Reply::Sse {
            chunks: endless,
            delay: Duration::ZERO,
            end: SseEnd::Hang,
        },
    ])
    .await;
    let mut bin = start(
        dir.path(),
        "",
        &[P::new("a", &a, 1)],
        &[("A_TEST_KEY", "ka-0000000000000000")],
    );
    bin.wait_ready().await;
    let stream_body = || json!({"stream": true, "messages": []});
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&stream_body())
        .send()
        .await
        .expect("send");
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("after the pings"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(
        text.len() < 64 * 1024,
        "held-back pings were capped: {} bytes",
        text.len()
    );

    let started = Instant::now();
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&stream_body())
        .send()
        .await
        .expect("send");
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("the stream ends")
        .expect("body");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(text.contains("start"));
    assert!(
        text.contains("larger than 4 MB"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let st = provider_status(&bin, "a").await;
    assert_eq!(st["oversized_events"], 1, "{st}");
    assert_eq!(st["state"], "cooling_down", "{st}");
    let rss = peak_rss_mb(bin.child.id());
    assert!(rss < 60, "peak RSS {rss} MB");
    // 40 MB of pings and a 6 MB line: linear work, well under a few CPU seconds (the
    // old framer rescanned the whole carry on every chunk).
    let cpu = cpu_secs(bin.child.id());
    assert!(cpu < 5.0, "{cpu} CPU seconds");
}

#[tokio::test]
async fn a_non_streaming_request_has_one_budget_across_silent_providers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mocks = [
        Mock::start(vec![Reply::Hang]).await,
        Mock::start(vec![Reply::Hang]).await,
        Mock::start(vec![Reply::Hang]).await,
    ];
    let mut bin = start(
        dir.path(),
        "[routing]\nrequest_start_timeout_secs = 2\nfirst_byte_timeout_secs = 60\n",
        &[
            P::new("a", &mocks[0], 1),
            P::new("b", &mocks[1], 2),
            P::new("c", &mocks[2], 3),
        ],
        &[
            ("A_TEST_KEY", "ka-0000000000000000"),
            ("B_TEST_KEY", "kb-0000000000000000"),
            ("C_TEST_KEY", "kc-0000000000000000"),
        ],
    );
    bin.wait_ready().await;
    let started = Instant::now();
    let (code, _, body) = chat(&bin, json!({"messages": []})).await;
    let took = started.elapsed();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("request_start_timeout_secs"), "{body}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn a_key_in_the_base_url_query_is_kept_and_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Mock::start(vec![
        Reply::json(500, json!({"error": "down"})),
        Reply::completion("ok"),
    ])
    .await;
    let cfg = format!(
        "[routing]\nmax_wait_secs = 0\ntransient_cooldown_secs = 1\n\n[[providers]]\nname = \"gw\"\nbase_url = \"http://{}/v1/?key=QSECRETQ4711xyz\"\nmodel = \"m\"\nrequires_key = false\n",
        gw.addr
    );
    let mut bin = Binary::start(dir.path(), &cfg, &[]);
    bin.wait_ready().await;
    let (code, _, first) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 502, "{first}");
    // Deliberately past gw's transient cooldown (1 s), so it is asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _, second) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200, "{second}");
    let sent = &gw.requests()[0];
    assert_eq!(
        sent.path, "/v1/chat/completions",
        "the query is not glued to the path"
    );
    let status = get_json(&bin, "/status").await.to_string();
    for (place, text) in [("error body", first.as_str()), ("/status", status.as_str())] {
        assert!(!text.contains("QSECRETQ"), "{place}: {text}");
    }
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    for file in [
        "data/state.json",
        "data/catalog.json",
        "stderr.log",
        "stdout.log",
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap_or_default();
        assert!(!text.contains("QSECRETQ"), "{file}: {text}");
    }
}

#[tokio::test]
async fn absurd_token_counts_saturate_and_a_huge_model_name_is_not_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = completion_body("ok");
    body["usage"] = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": u64::MAX});
    let a = Mock::start(vec![Reply::json(200, body)]).await;
    let mut bin = start(
        dir.path(),
        "",
        &[P::new("a", &a, 1)],
        &[("A_TEST_KEY", "ka-0000000000000000")],
    );
    bin.wait_ready().await;
    for _ in 0..2 {
        let (code, _, _) = chat(&bin, json!({"messages": []})).await;
        assert_eq!(code, 200);
    }
    let st = provider_status(&bin, "a").await;
    assert_eq!(
        st["total_tokens_used"],
        json!(u64::MAX),
        "saturated, not wrapped: {st}"
    );

    let model = format!("a/{}", "m".repeat(3 * 1024 * 1024));
    for _ in 0..5 {
        let (code, headers, _) = chat(&bin, json!({"model": model, "messages": []})).await;
        assert_eq!(code, 200);
        let echoed = headers["x-model"].len();
        assert!(echoed <= 200, "X-Model of {echoed} bytes");
    }
    let sent: Value = a.requests().last().expect("sent").json();
    assert_eq!(
        sent["model"].as_str().map(str::len),
        Some(3 * 1024 * 1024),
        "sent whole"
    );
    let log = bin.stderr();
    assert!(log.len() < 200 * 1024, "{} bytes of log", log.len());
    // Nor does it become a 3 MB metric label or dashboard entry.
    for path in ["/metrics", "/ui/api/state"] {
        let text = get_text(&bin, path).await;
        assert!(text.len() < 64 * 1024, "{path}: {} bytes", text.len());
    }
}
