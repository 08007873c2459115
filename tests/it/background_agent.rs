//! The proxy on a background thread, as the menu-bar app runs it: it reports its engine
//! (with the port it bound when the config asks for any free port), serves real requests
//! until asked to stop, and reports a port held by another program instead of ending (so
//! the tray can show the fix).

use std::sync::mpsc;
use std::time::Duration;

use llm_rotator::agent::{self, Background, Started};
use llm_rotator::config::Config;
use llm_rotator::http::ServeError;
use llm_rotator::paths::Paths;
use serde_json::json;

use crate::common::*;

/// Only guards against a hang; the agent starts in milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn start(
    dir: &std::path::Path,
    port: u16,
    mock: &Mock,
) -> (Background, mpsc::Receiver<Started>, mpsc::Receiver<()>) {
    let text = format!(
        "[server]\nport = {port}\n\n[[providers]]\nname = \"alpha\"\nbase_url = \"{}\"\nmodel = \"alpha-model\"\npriority = 1\nrequires_key = false\n",
        mock.base_url()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let paths = Paths {
        config: path,
        data_dir: dir.join("data"),
        log_dir: dir.join("logs"),
        ready_file: Some(dir.join("ready")),
    };
    let (started_tx, started_rx) = mpsc::channel();
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let bg = agent::serve_in_background(
        config,
        paths,
        None,
        Box::new(move |s| {
            let _ = started_tx.send(s);
        }),
        Box::new(move || {
            let _ = stopped_tx.send(());
        }),
    )
    .unwrap();
    (bg, started_rx, stopped_rx)
}

#[test]
fn background_agent_serves_until_asked_to_stop() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(Mock::start(vec![Reply::completion("from alpha")]));
    let dir = tempfile::tempdir().unwrap();
    // Port 0: any free port; the engine's config names the one bound.
    let (mut bg, started, stopped) = start(dir.path(), 0, &mock);
    let s = started
        .recv_timeout(PATIENCE)
        .expect("the agent reports its start");
    assert!(s.bind_error.is_none());
    assert_eq!(s.engine.pool.snapshot(chrono::Utc::now()).ready_count(), 1);
    let config = s.engine.config();
    let port = config.server.port;
    assert_ne!(port, 0);
    assert_eq!(
        config.endpoint_url(),
        format!("http://localhost:{port}/v1"),
        "the menu's address"
    );
    let ready = dir.path().join("ready");
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap(),
        format!("http://127.0.0.1:{port}\n")
    );

    let body = rt.block_on(async {
        let resp = client()
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    });
    assert!(body.contains("from alpha"), "{body}");
    assert_eq!(
        s.engine.pool.snapshot(chrono::Utc::now()).providers[0].request_count,
        1
    );

    assert!(!bg.is_finished());
    bg.stop();
    stopped
        .recv_timeout(PATIENCE)
        .expect("the agent reports its stop");
    bg.join().unwrap();
    assert!(!ready.exists(), "the ready file goes with the agent");
    // The port is free again.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
fn a_taken_port_is_reported_and_the_engine_keeps_running() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(Mock::start(vec![Reply::completion("hi")]));
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let (bg, started, stopped) = start(dir.path(), port, &mock);
    let s = started
        .recv_timeout(PATIENCE)
        .expect("the agent reports its start");
    match &s.bind_error {
        Some(ServeError::Bind { addr, source }) => {
            assert_eq!(addr.port(), port);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    // The tray can still show and toggle providers.
    assert!(s.engine.set_enabled("alpha", false));
    assert!(!s.engine.pool.snapshot(chrono::Utc::now()).providers[0].enabled);
    assert!(
        stopped.try_recv().is_err(),
        "the agent ended on a taken port"
    );
    bg.join().unwrap();
    stopped
        .recv_timeout(PATIENCE)
        .expect("the agent reports its stop");
}
