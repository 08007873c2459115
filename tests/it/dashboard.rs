//! `GET /metrics` and the dashboard at `/ui`: the metrics after a known sequence of
//! requests, 429s and rotations (parsed, checked value by value, and searched for any
//! piece of a key), the switch that turns them off, the guard on both (foreign Host or
//! Origin, the auth token), and the page itself in real headless Chromium, driven by
//! Playwright (`tests/ui/dashboard_check.py`). `scripts/test` installs Chromium and
//! Playwright and sets `LLM_ROTATOR_SDK_PYTHON`; without them the browser test is skipped
//! with a note (a failure under `LLM_ROTATOR_NO_SKIP`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

const ALPHA_KEY: &str = "sk-QWERTYzxcvb1234567";
const BETA_KEY: &str = "sk-POIUYTmnbvc7654321";

/// A sample line's name and labels (sorted, `k="v"` joined by commas) → value.
type Samples = BTreeMap<(String, String), f64>;

/// Parses the Prometheus text format: `# HELP`/`# TYPE` lines and samples
/// `name{k="v",...} value`. Label values here hold no escaped quotes or commas.
fn parse_metrics(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels close");
                let mut pairs: Vec<&str> = inner.split(',').filter(|p| !p.is_empty()).collect();
                pairs.sort_unstable();
                (n.to_string(), pairs.join(","))
            }
            None => (series.to_string(), String::new()),
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "metric name {name:?}"
        );
        assert!(
            out.insert((name, labels), value).is_none(),
            "duplicate sample {line}"
        );
    }
    out
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    pairs.sort_unstable();
    samples.get(&(name.to_string(), pairs.join(","))).copied()
}

/// Every 5-character piece of `key`: none may appear anywhere in an output.
fn assert_no_piece_of(key: &str, text: &str) {
    for i in 0..=key.len() - 5 {
        let piece = &key[i..i + 5];
        assert!(!text.contains(piece), "{piece:?} of a key in:\n{text}");
    }
}

/// A stream whose last chunk carries usage (20 tokens).
fn stream_with_usage() -> Reply {
    let mut chunks = sse_chunks(&["one", " two"], false);
    let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "mock-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}});
    chunks.push(format!("data: {usage}\n\n"));
    chunks.push("data: [DONE]\n\n".into());
    Reply::Sse {
        chunks,
        delay: Duration::from_millis(2),
        end: SseEnd::Clean,
    }
}

fn rate_limited(retry_after: &str) -> Reply {
    Reply::json_with(
        429,
        &[("retry-after", retry_after)],
        json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
    )
}

#[tokio::test]
async fn metrics_count_requests_429s_rotations_and_tokens_and_show_no_piece_of_a_key() {
    let a = Mock::start(vec![rate_limited("60")]).await;
    let b = Mock::start(vec![
        Reply::completion("one"),
        Reply::completion("two"),
        stream_with_usage(),
    ])
    .await;
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &[ALPHA_KEY]), ("beta", &[BETA_KEY])]).await;
    // 1: alpha answers 429 and the request rotates to beta. 2: alpha is cooling, beta
    // answers. 3: a stream from beta whose tokens are counted when it ends.
    for _ in 0..2 {
        let (status, _, body) = chat(
            &proxy,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = chat(
        &proxy,
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[DONE]"), "{body}");
    let resp = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.expect("text");
    let m = parse_metrics(&text);
    let chat_ok = [
        ("provider", "beta"),
        ("model", "beta-model"),
        ("route", "chat_completions"),
        ("outcome", "ok"),
    ];
    assert_eq!(
        sample(&m, "llm_rotator_requests_total", &chat_ok),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "llm_rotator_tokens_total",
            &[
                ("provider", "beta"),
                ("model", "beta-model"),
                ("route", "chat_completions")
            ]
        ),
        Some(12.0 + 12.0 + 20.0),
        "{text}"
    );
    let attempts = |provider, outcome| {
        sample(
            &m,
            "llm_rotator_attempts_total",
            &[("provider", provider), ("key", "0"), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("alpha", "rate_limited"), Some(1.0), "{text}");
    assert_eq!(attempts("beta", "success"), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &m,
            "llm_rotator_rotations_total",
            &[("reason", "rate_limited")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "llm_rotator_cooldowns_total",
            &[("provider", "alpha"), ("reason", "rate_limited")]
        ),
        Some(1.0),
        "{text}"
    );
    let latency = [("provider", "beta"), ("route", "chat_completions")];
    assert_eq!(
        sample(&m, "llm_rotator_request_duration_seconds_count", &latency),
        Some(3.0),
        "{text}"
    );
    let mut inf = latency.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        sample(&m, "llm_rotator_request_duration_seconds_bucket", &inf),
        Some(3.0),
        "{text}"
    );
    for (provider, state, value) in [
        ("alpha", "cooling_down", 1.0),
        ("alpha", "ready", 0.0),
        ("beta", "ready", 1.0),
    ] {
        assert_eq!(
            sample(
                &m,
                "llm_rotator_provider_state",
                &[("provider", provider), ("state", state)]
            ),
            Some(value),
            "{provider} {state}: {text}"
        );
    }
    let left = sample(
        &m,
        "llm_rotator_provider_cooldown_remaining_seconds",
        &[("provider", "alpha")],
    )
    .expect("alpha's cooldown");
    assert!((50.0..=60.0).contains(&left), "{left}");
    assert_eq!(
        sample(
            &m,
            "llm_rotator_provider_requests_today",
            &[("provider", "beta")]
        ),
        Some(3.0)
    );
    assert_eq!(sample(&m, "llm_rotator_waiting_requests", &[]), Some(0.0));
    assert!(
        m.keys().any(|(n, l)| n == "llm_rotator_build_info"
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))),
        "{text}"
    );
    assert!(
        text.contains("# TYPE llm_rotator_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE llm_rotator_request_duration_seconds histogram"),
        "{text}"
    );
    assert_no_piece_of(ALPHA_KEY, &text);
    assert_no_piece_of(BETA_KEY, &text);
    // The dashboard's own JSON shows the same story, without a key either.
    let state = client()
        .get(proxy.url("/ui/api/state"))
        .send()
        .await
        .expect("state");
    let state = state.text().await.expect("text");
    assert_no_piece_of(ALPHA_KEY, &state);
    assert_no_piece_of(BETA_KEY, &state);
    let state: serde_json::Value = serde_json::from_str(&state).expect("json");
    let recent = state["recent"].as_array().expect("recent");
    assert_eq!(recent.len(), 3);
    assert_eq!(
        recent[0]["tokens"], 20,
        "the stream's tokens came at its end"
    );
    assert_eq!(recent[2]["providers"], json!(["alpha", "beta"]));
    let series = get_json(&proxy, "/ui/api/series?hours=24").await;
    let beta = series["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["name"] == "beta")
        .expect("beta's line")
        .clone();
    assert_eq!(beta["requests"].as_array().map(Vec::len), Some(24));
    assert_eq!(beta["requests"][23], 3);
    assert_eq!(beta["tokens"][23], 44);
    let alpha = series["providers"][0].clone();
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(alpha["rate_limited"][23], 1);
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_are_a_404_when_the_config_turns_them_off() {
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let cfg = config_text("[server]\nmetrics = false\n", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &[ALPHA_KEY])]).await;
    let resp = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 404);
    // The dashboard stays.
    let resp = client().get(proxy.url("/ui")).send().await.expect("ui");
    assert_eq!(resp.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn ui_and_metrics_refuse_a_foreign_host_or_origin_and_ask_for_the_token() {
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let token = "dashboard-token-0123456789";
    let cfg = config_text(
        &format!("[server]\nauth_token = \"{token}\"\n"),
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &[ALPHA_KEY])]).await;
    let own_origin = format!("http://{}", proxy.addr);
    let get = |path: &str| client().get(proxy.url(path));
    for path in [
        "/ui",
        "/ui/app.js",
        "/ui/api/state",
        "/ui/api/series",
        "/metrics",
    ] {
        let resp = get(path)
            .header("host", "attacker.example")
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 403, "{path} with a foreign Host");
        let resp = get(path)
            .header("origin", "http://attacker.example")
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 403, "{path} with a foreign Origin");
        // Another port on localhost is another origin too.
        let resp = get(path)
            .header("origin", "http://127.0.0.1:1")
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 403, "{path} from another local port");
    }
    // The page and its assets hold no data: served without the token, so it can ask.
    for path in ["/ui", "/ui/app.js", "/ui/style.css"] {
        let resp = get(path).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .expect("csp");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
    let page = get("/ui")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("id=\"login\""),
        "the page has the token prompt"
    );
    // Everything with data asks for it.
    for path in ["/ui/api/state", "/ui/api/series?hours=24", "/metrics"] {
        let resp = get(path).send().await.expect("send");
        assert_eq!(resp.status(), 401, "{path} without the token");
        let resp = get(path)
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401, "{path} with a wrong token");
        let resp = get(path)
            .bearer_auth(token)
            .header("origin", &own_origin)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "{path} with the token from the page");
    }
    // The page's own switches: its origin is the agent's.
    let resp = client()
        .post(proxy.url("/providers/alpha/disable"))
        .header("origin", &own_origin)
        .bearer_auth(token)
        .send()
        .await
        .expect("toggle");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "same-origin calls need no CORS"
    );
    let resp = client()
        .post(proxy.url("/providers/alpha/enable"))
        .header("origin", "http://attacker.example")
        .bearer_auth(token)
        .send()
        .await
        .expect("toggle");
    assert_eq!(resp.status(), 403);
    let status = client()
        .get(proxy.url("/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("status")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(
        provider_in(&status, "alpha").expect("alpha")["enabled"],
        false
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_unchanged_dashboard_state_is_a_bodiless_304() {
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let proxy = Proxy::start(&cfg, &[("alpha", &[ALPHA_KEY])]).await;
    let first = client()
        .get(proxy.url("/ui/api/state"))
        .send()
        .await
        .expect("state");
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].clone();
    let again = client()
        .get(proxy.url("/ui/api/state"))
        .header("if-none-match", tag.clone())
        .send()
        .await
        .expect("state");
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.expect("body").is_empty());
    let (status, _, _) = chat(
        &proxy,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let after = client()
        .get(proxy.url("/ui/api/state"))
        .header("if-none-match", tag)
        .send()
        .await
        .expect("state");
    assert_eq!(after.status(), 200, "a request changed the state");
    proxy.stop().await;
}

/// The Python with Playwright and the Chromium to drive, or why the browser test cannot
/// run here.
fn browser_tools() -> Result<(String, String), String> {
    let python = std::env::var("LLM_ROTATOR_SDK_PYTHON")
        .map_err(|_| "set LLM_ROTATOR_SDK_PYTHON (scripts/test does)".to_string())?;
    let chromium =
        std::env::var("LLM_ROTATOR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Err(format!(
            "no Chromium at {chromium} (scripts/test installs Debian's chromium)"
        ));
    }
    let has_playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright.sync_api, prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_playwright {
        return Err(format!(
            "{python} has no playwright or prometheus_client (scripts/test installs them)"
        ));
    }
    Ok((python, chromium))
}

async fn run_check(python: String, chromium: String, args: Vec<String>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/dashboard_check.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(&args)
            .env("LLM_ROTATOR_CHROMIUM", chromium)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard check failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn the_dashboard_works_in_headless_chromium() {
    let (python, chromium) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            skip("the dashboard browser test", &why);
            return;
        }
    };
    let a = Mock::start(vec![rate_limited("60")]).await;
    let b = Mock::start(vec![Reply::completion("hi")]).await;
    for (mock, models) in [
        (&a, ["alpha-model", "alpha-large"]),
        (&b, ["beta-model", "beta-mini"]),
    ] {
        let data: Vec<_> = models
            .iter()
            .map(|m| json!({"id": m, "object": "model"}))
            .collect();
        mock.set_models(json!({"object": "list", "data": data}));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_text("", &[P::new("alpha", &a, 1), P::new("beta", &b, 2)]);
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[("ALPHA_TEST_KEY", ALPHA_KEY), ("BETA_TEST_KEY", BETA_KEY)],
    );
    bin.wait_ready().await;
    // alpha's 429 (retry-after 60) rotates the first request to beta; two more follow.
    for _ in 0..3 {
        let (status, _, body) = chat(
            &bin,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-screenshots");
    let stdout = run_check(
        python,
        chromium,
        vec![
            bin.url(""),
            shots.to_string(),
            ALPHA_KEY.to_string(),
            BETA_KEY.to_string(),
        ],
    )
    .await;
    assert!(stdout.contains("dashboard: ok"), "{stdout}");
}

#[tokio::test]
async fn the_dashboard_asks_for_the_token_in_the_browser_and_then_shows_the_providers() {
    let (python, chromium) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            skip("the dashboard token test", &why);
            return;
        }
    };
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let token = "dashboard-token-0123456789";
    let cfg = config_text(
        &format!("[server]\nauth_token = \"{token}\"\n"),
        &[P::new("alpha", &a, 1)],
    );
    let proxy = Proxy::start(&cfg, &[("alpha", &[ALPHA_KEY])]).await;
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-screenshots");
    let stdout = run_check(
        python,
        chromium,
        vec![
            proxy.url(""),
            shots.to_string(),
            ALPHA_KEY.to_string(),
            "--token".to_string(),
            token.to_string(),
        ],
    )
    .await;
    assert!(stdout.contains("dashboard token: ok"), "{stdout}");
    proxy.stop().await;
}

#[test]
fn llm_rotator_ui_prints_the_dashboard_url_of_the_configured_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[server]\nport = 8123\n").expect("write");
    let cfg = cfg.to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["ui", "--no-open", "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("http://127.0.0.1:8123/ui"),
        "{out}"
    );
    let (code, out, err) = cli(&["ui", "--no-open", "--port", "9001", "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("http://127.0.0.1:9001/ui"),
        "{out}"
    );
    // Port 0 names no agent: an agent started on it picked a port of its own.
    let (code, out, err) = cli(&["ui", "--no-open", "--port", "0", "--config", cfg], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("port 0 names no running instance") && err.contains("--ready-file"),
        "{err}"
    );
}

#[tokio::test]
async fn the_dashboard_charts_come_from_the_usage_history_and_survive_a_restart() {
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_text("", &[P::new("alpha", &a, 1)]);
    let env = [("ALPHA_TEST_KEY", ALPHA_KEY)];
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    for _ in 0..3 {
        let (status, _, body) = chat(&bin, json!({"messages": []})).await;
        assert_eq!(status, 200, "{body}");
    }
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0), "{}", bin.stderr());

    // A new run: nothing counted in memory yet, the history has the three requests.
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    let series = get_json(&bin, "/ui/api/series?hours=2").await;
    let alpha = series["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "alpha"))
        .unwrap_or_else(|| panic!("no alpha in {series}"));
    let requests: u64 = alpha["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(requests, 3, "{series}");
    assert!(
        alpha["latency_ms"]
            .as_array()
            .expect("latency")
            .iter()
            .any(|v| v.as_u64().is_some()),
        "{series}"
    );
}
