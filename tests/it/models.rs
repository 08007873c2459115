//! Providers change under the user: a retired model, a model the free tier does not
//! include, a Google-shaped daily quota from any host. The request moves on, the pool
//! remembers, and `/status` and `/v1/models` tell the truth.

use std::path::PathBuf;

use chrono::Utc;
use serde_json::{json, Value};

use crate::common::*;
use llm_rotator::upstream::daily;

fn fixture(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/providers")
        .join(rel);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// The fixture's answer as a mock reply.
fn replay(rel: &str) -> Reply {
    let fx = fixture(rel);
    Reply::Raw {
        status: fx["status"].as_u64().expect("status") as u16,
        headers: fx["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("value").to_string()))
            .collect(),
        body: fx["body"].to_string(),
    }
}

fn ids(models: &Value) -> Vec<String> {
    models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn a_preference_list_falls_to_its_second_model_with_no_failed_request() {
    let groq = Mock::start(vec![
        replay("groq/400-model-decommissioned.json"),
        Reply::completion("from the second model"),
    ])
    .await;
    let cfg = config_text("", &[P::new("groq", &groq, 1).extra("kind = \"groq\"")]).replace(
        "model = \"groq-model\"",
        "model = [\"llama-3.3-70b-versatile\", \"openai/gpt-oss-120b\"]",
    );
    let proxy = Proxy::start(&cfg, &[("groq", &["kg-0000000000000000"])]).await;
    let (code, headers, body) = chat(
        &proxy,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-model"], "openai/gpt-oss-120b");
    let sent: Vec<Value> = groq
        .requests()
        .iter()
        .map(|r| r.json()["model"].clone())
        .collect();
    assert_eq!(
        sent,
        [
            json!("llama-3.3-70b-versatile"),
            json!("openai/gpt-oss-120b")
        ]
    );
    let st = provider_status(&proxy, "groq").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["model_in_use"], "openai/gpt-oss-120b");
    assert!(
        st["retired_models"]["llama-3.3-70b-versatile"]
            .as_str()
            .expect("why")
            .contains("decommissioned"),
        "{st}"
    );
    // The next request goes straight to the second model; /v1/models stops offering the
    // retired one.
    let (code, _, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 200);
    assert_eq!(groq.requests()[2].json()["model"], "openai/gpt-oss-120b");
    let listed = ids(&get_json(&proxy, "/v1/models").await);
    assert_eq!(listed, ["auto", "openai/gpt-oss-120b"]);
}

#[tokio::test]
async fn a_model_the_client_named_is_tried_elsewhere_then_answered_404_with_what_was_said() {
    let a = Mock::start(vec![replay("openai/404-model-not-found.json")]).await;
    let b = Mock::start(vec![replay("openrouter/404-no-endpoints-found.json")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("a", &a, 1).extra("models = [\"shared-model\"]"),
            P::new("b", &b, 2).extra("models = [\"shared-model\"]"),
        ],
    );
    let proxy = Proxy::start(
        &cfg,
        &[
            ("a", &["ka-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let (code, _, body) = chat(&proxy, json!({"model": "shared-model", "messages": []})).await;
    assert_eq!(code, 404, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("a: ") && msg.contains("b: "), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // Asked again: the same answer from memory, no provider called.
    let (code, _, _) = chat(&proxy, json!({"model": "shared-model", "messages": []})).await;
    assert_eq!(code, 404);
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // "auto" still works: their default models are not retired.
    a.set_script(vec![Reply::completion("auto is fine")]);
    let (code, _, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_google_shaped_daily_quota_from_a_plain_host_benches_until_the_pacific_reset() {
    // A gateway on 127.0.0.1 (kind detected as openai-compatible) passing Gemini's
    // per-day 429 on, with a 5 s retryDelay beside it.
    let g = Mock::start(vec![replay("gemini/429-per-day-short-retry-delay.json")]).await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let cfg = config_text("", &[P::new("gw", &g, 1), P::new("b", &b, 2)]);
    let proxy = Proxy::start(
        &cfg,
        &[
            ("gw", &["kg-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    let before = Utc::now();
    let (code, headers, _) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-provider"], "b");
    let st = provider_status(&proxy, "gw").await;
    let until: chrono::DateTime<Utc> = st["rate_limited_until"]
        .as_str()
        .expect("benched")
        .parse()
        .expect("time");
    assert_eq!(until, daily::next_pacific_midnight(before), "{st}");
}

#[tokio::test]
async fn a_free_key_skips_a_paid_only_model_and_uses_the_next_one() {
    let g = Mock::start(vec![
        replay("gemini/429-not-in-free-tier.json"),
        Reply::completion("flash answered"),
    ])
    .await;
    let cfg = config_text("", &[P::new("gemini", &g, 1).extra("kind = \"gemini\"")]).replace(
        "model = \"gemini-model\"",
        "model = [\"gemini-2.5-pro\", \"gemini-3.5-flash-lite\"]",
    );
    let proxy = Proxy::start(&cfg, &[("gemini", &["kg-0000000000000000"])]).await;
    let (code, headers, body) = chat(&proxy, json!({"messages": []})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-model"], "gemini-3.5-flash-lite");
    let st = provider_status(&proxy, "gemini").await;
    assert_eq!(st["state"], "ready", "not a cooldown loop: {st}");
    assert_eq!(st["is_rate_limited"], false, "{st}");
}

#[tokio::test]
async fn retired_marks_survive_a_restart_and_clear_when_the_config_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groq = Mock::start(vec![
        replay("groq/400-model-decommissioned.json"),
        Reply::completion("ok"),
    ])
    .await;
    let cfg = config_text("", &[P::new("groq", &groq, 1).extra("kind = \"groq\"")])
        .replace("model = \"groq-model\"", "model = [\"old\", \"new\"]");
    let env = [("GROQ_TEST_KEY", "kg-0000000000000000")];
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    let (code, _, _) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200);
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));

    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    let st = provider_status(&bin, "groq").await;
    assert_eq!(st["model_in_use"], "new", "remembered: {st}");
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));

    // The user edits the list: the marks made under the old one are gone.
    let edited = cfg.replace("[\"old\", \"new\"]", "[\"old\", \"new\", \"newer\"]");
    let mut bin = Binary::start(dir.path(), &edited, &env);
    bin.wait_ready().await;
    let st = provider_status(&bin, "groq").await;
    assert_eq!(st["model_in_use"], "old", "cleared: {st}");
    assert_eq!(st["retired_models"], json!({}));
}

#[tokio::test]
async fn a_provider_whose_every_model_is_retired_says_so_and_is_skipped() {
    let gone = Mock::start(vec![replay(
        "openai-compatible/410-github-models-retired.json",
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("from b")]).await;
    let cfg = config_text("", &[P::new("github", &gone, 1), P::new("b", &b, 2)]);
    let proxy = Proxy::start(
        &cfg,
        &[
            ("github", &["kg-0000000000000000"]),
            ("b", &["kb-0000000000000000"]),
        ],
    )
    .await;
    for _ in 0..2 {
        let (code, headers, _) = chat(&proxy, json!({"messages": []})).await;
        assert_eq!(code, 200);
        assert_eq!(headers["x-provider"], "b");
    }
    assert_eq!(gone.hits(), 1);
    let st = provider_status(&proxy, "github").await;
    assert_eq!(st["state"], "model_retired", "{st}");
    assert!(st["gone"].as_str().expect("why").contains("410"), "{st}");
    // /v1/models answers 200 from memory and no longer offers its model.
    let listed = ids(&get_json(&proxy, "/v1/models").await);
    assert_eq!(listed, ["auto", "b-model"]);
}

fn model_list(ids: &[&str]) -> Value {
    json!({"object": "list", "data": ids.iter().map(|id| json!({"id": id, "object": "model"})).collect::<Vec<_>>()})
}

/// Polls `/status` until the provider's catalog has been read (fails after 10 s).
async fn wait_for_catalog(target: &impl Served, provider: &str) -> Value {
    wait_for(
        std::time::Duration::from_secs(10),
        "the catalog is read",
        || async {
            let st = provider_status(target, provider).await;
            if st["catalog_fetched_at"].is_string() {
                Ok(st)
            } else {
                Err(st.to_string())
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_catalog_is_read_at_start_used_to_pick_and_kept_for_a_start_without_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groq = Mock::start(vec![Reply::completion("ok")]).await;
    groq.set_models(model_list(&["current", "other"]));
    let cfg = config_text("", &[P::new("groq", &groq, 1).extra("kind = \"groq\"")]).replace(
        "model = \"groq-model\"",
        "model = [\"withdrawn\", \"current\"]",
    );
    let env = [("GROQ_TEST_KEY", "kg-0000000000000000")];
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    let st = wait_for_catalog(&bin, "groq").await;
    assert_eq!(st["model_in_use"], "current", "{st}");
    assert_eq!(st["catalog_models"], 2);
    // The first preferred model is not listed: the request goes to the second at once.
    let (code, _, _) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200);
    assert_eq!(groq.requests()[0].json()["model"], "current");
    assert_eq!(
        ids(&get_json(&bin, "/v1/models").await),
        ["auto", "current"]
    );
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    assert!(dir.path().join("data/catalog.json").is_file());

    // Started again with the provider's list unreachable: the cached catalog is used.
    groq.hang_models();
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    let st = wait_for_catalog(&bin, "groq").await;
    assert_eq!(st["model_in_use"], "current", "{st}");
    // And /v1/models answers from memory while the read hangs.
    let started = std::time::Instant::now();
    let models = get_json(&bin, "/v1/models").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(ids(&models), ["auto", "current"]);
    // Shutdown does not wait for the hung read.
    let started = std::time::Instant::now();
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_retirement_rereads_the_catalog_and_the_cli_shows_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groq = Mock::start(vec![
        replay("groq/400-model-decommissioned.json"),
        Reply::completion("ok"),
    ])
    .await;
    groq.set_models(model_list(&[
        "llama-3.3-70b-versatile",
        "openai/gpt-oss-120b",
    ]));
    let cfg = config_text("", &[P::new("groq", &groq, 1).extra("kind = \"groq\"")]).replace(
        "model = \"groq-model\"",
        "model = [\"llama-3.3-70b-versatile\", \"openai/gpt-oss-120b\"]",
    );
    let env = [("GROQ_TEST_KEY", "kg-0000000000000000")];
    let mut bin = Binary::start(dir.path(), &cfg, &env);
    bin.wait_ready().await;
    wait_for_catalog(&bin, "groq").await;
    let reads = groq.models_hits();
    // The provider drops the model from its list and refuses it.
    groq.set_models(model_list(&["openai/gpt-oss-120b", "qwen/qwen3.6-27b"]));
    let (code, headers, _) = chat(&bin, json!({"messages": []})).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-model"], "openai/gpt-oss-120b");
    wait_until(
        std::time::Duration::from_secs(10),
        "the catalog is read again",
        || async { groq.models_hits() != reads },
    )
    .await;
    let config = dir.path().join("config.toml");
    let port_arg = bin.port().to_string();
    let out = wait_for(
        std::time::Duration::from_secs(10),
        "`models` shows what is new",
        || async {
            let (code, out, err) = cli(
                &[
                    "models",
                    "groq",
                    "--config",
                    config.to_str().expect("utf8"),
                    "--port",
                    &port_arg,
                ],
                &[],
            );
            assert_eq!(code, 0, "{err}");
            if out.contains("new since the last read") {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await;
    assert!(out.contains("groq: 2 models, read"), "{out}");
    assert!(
        out.contains("new since the last read: qwen/qwen3.6-27b"),
        "{out}"
    );
    assert!(
        out.contains("gone since the last read: llama-3.3-70b-versatile"),
        "{out}"
    );
    assert!(
        out.contains("llama-3.3-70b-versatile  (not in the catalog, retired:"),
        "{out}"
    );
    assert!(
        out.contains("openai/gpt-oss-120b  (in use, offered)"),
        "{out}"
    );
    // An unknown provider is a clear error.
    let (code, _, err) = cli(
        &[
            "models",
            "nope",
            "--config",
            config.to_str().expect("utf8"),
            "--port",
            &port_arg,
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no provider named \"nope\""), "{err}");
}

#[tokio::test]
async fn a_retired_model_the_client_named_is_a_404_saying_what_the_provider_offers_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groq = Mock::start(vec![replay("groq/400-model-decommissioned.json")]).await;
    groq.set_models(model_list(&["openai/gpt-oss-120b", "qwen/qwen3.6-27b"]));
    let cfg = config_text(
        "",
        &[P::new("groq", &groq, 1)
            .extra("kind = \"groq\"\nmodels = [\"llama-3.3-70b-versatile\"]")],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[("GROQ_TEST_KEY", "kg-0000000000000000")],
    );
    bin.wait_ready().await;
    wait_for_catalog(&bin, "groq").await;
    let (code, _, body) = chat(
        &bin,
        json!({"model": "llama-3.3-70b-versatile", "messages": []}),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("decommissioned"), "{msg}");
    assert!(
        msg.contains("it offers openai/gpt-oss-120b, qwen/qwen3.6-27b"),
        "{msg}"
    );
}
