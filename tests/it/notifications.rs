//! Desktop notifications through the real binary, caught on a real session bus: a
//! private `dbus-daemon` and a test notification server on it (the
//! `org.freedesktop.Notifications` interface, recording each `Notify`). Mock providers
//! drive every trigger that can be driven from outside: a rejected key, a retired model,
//! a daily quota used up (Groq-style headers), the last ready provider cooling down.
//! Each fires once; driven again within the hour, none fires twice. The toggle turns
//! them off and stays off across a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// What the test server received: (app name, summary, body).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

struct Server {
    received: Received,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[expect(
        clippy::too_many_arguments,
        reason = "the D-Bus Notify method's eight arguments"
    )]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut r = self.received.lock().unwrap();
        r.push((app_name, summary, body));
        r.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "test".into(),
            "llm-rotator".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

async fn ask(bin: &Binary) -> u16 {
    client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post(bin: &Binary, path: &str) {
    let r = client().post(bin.url(path)).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// Waits until `n` notifications arrived (fails after 10 s), then a moment more so
/// that any extra one would be seen too.
async fn settle(received: &Received, n: usize) -> Vec<(String, String, String)> {
    wait_for(
        Duration::from_secs(10),
        &format!("{n} notifications arrived"),
        || async {
            let got = received.lock().unwrap().clone();
            if got.len() >= n {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    // Deliberate: proving that no extra one follows needs a time bound.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    received.lock().unwrap().clone()
}

#[tokio::test]
async fn each_trigger_notifies_once_on_the_session_bus_and_not_again_within_the_hour() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bus) = PrivateBus::start(dir.path()) else {
        skip(
            "each_trigger_notifies_once_on_the_session_bus",
            "dbus-daemon is not installed (Debian package dbus)",
        );
        return;
    };
    let received: Received = Arc::default();
    let _server = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            Server {
                received: Arc::clone(&received),
            },
        )
        .unwrap()
        .build()
        .await
        .unwrap();

    let rejects = Mock::start(vec![Reply::json(
        401,
        json!({"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}}),
    )])
    .await;
    let retired = Mock::start(vec![Reply::json(
        400,
        json!({"error": {"message": "The model `oldie-model` has been decommissioned and is no longer supported.", "type": "invalid_request_error", "code": "model_decommissioned"}}),
    )])
    .await;
    let quota = Mock::start(vec![Reply::json_with(
        200,
        &[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "3h0m0s"),
        ],
        completion_body("the last one today"),
    )])
    .await;
    let limited = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "600")],
        json!({"error": {"message": "Rate limit reached", "type": "rate_limit"}}),
    )])
    .await;
    let cfg = config_text(
        "",
        &[
            P::new("rejects", &rejects, 1),
            P::new("oldie", &retired, 2).extra("kind = \"groq\""),
            P::new("quota", &quota, 3).extra("kind = \"groq\""),
            P::new("limited", &limited, 4),
        ],
    );
    let secret = "kr-secret-key-0123456789";
    let keys = [
        ("REJECTS_TEST_KEY", secret),
        ("OLDIE_TEST_KEY", "ko-000000000000"),
        ("QUOTA_TEST_KEY", "kq-000000000000"),
        ("LIMITED_TEST_KEY", "kl-000000000000"),
        ("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str()),
    ];
    let data = dir.path().join("agent");
    let mut bin = Binary::start(&data, &cfg, &keys);
    bin.wait_ready().await;
    // Let the notifier take its first look (the baseline) before anything happens.
    // Deliberately a fixed wait: that look is not visible from outside, and it happens
    // as soon as the agent serves, so half a second is ample.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Rejected key, retired model, then the quota provider answers with its last request
    // of the day.
    assert_eq!(ask(&bin).await, 200);
    // The only provider left says 429: nothing can serve.
    assert_eq!(ask(&bin).await, 429);
    let got = settle(&received, 4).await;
    let summaries: Vec<&str> = got.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    for want in [
        "rejects rejected a key",
        "oldie retired oldie-model",
        "quota: daily quota used",
        "All providers cooling down",
    ] {
        assert!(summaries.contains(&want), "{want} missing from {got:?}");
    }
    for (app, summary, body) in &got {
        assert_eq!(app, "llm-rotator");
        assert!(!summary.contains(secret) && !body.contains(secret));
        assert!(!body.contains("hi"), "{body}");
    }
    let all = got
        .iter()
        .find(|(_, s, _)| s == "All providers cooling down")
        .unwrap();
    assert!(
        all.2.starts_with("All providers cooling, back at "),
        "{all:?}"
    );

    // The same again within the hour: the key accepted and rejected again, the quota and
    // the rate limit reset by hand and hit again. Nothing new is said.
    post(&bin, "/providers/rejects/enable").await;
    post(&bin, "/providers/quota/reset").await;
    post(&bin, "/providers/limited/reset").await;
    assert_eq!(ask(&bin).await, 200);
    assert_eq!(ask(&bin).await, 429);
    // Deliberate: proving that nothing is said needs a time bound.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        received.lock().unwrap().len(),
        4,
        "{:?}",
        received.lock().unwrap()
    );
    assert!(rejects.hits() >= 2 && quota.hits() >= 2 && limited.hits() >= 2);

    // The toggle: off, saved, and still off after a restart.
    let status = get_json(&bin, "/status").await;
    assert_eq!(status["notifications"], true);
    post(&bin, "/notifications/disable").await;
    let status = get_json(&bin, "/status").await;
    assert_eq!(status["notifications"], false);
    let settings = data.join("data").join("settings.json");
    wait_until(
        Duration::from_secs(5),
        "settings.json is written",
        || async { settings.exists() },
    )
    .await;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    let mut bin = Binary::start(&data, &cfg, &keys);
    bin.wait_ready().await;
    let status = get_json(&bin, "/status").await;
    assert_eq!(status["notifications"], false);
}
