//! Test harness shared by every integration test: mock providers that are real HTTP
//! servers on 127.0.0.1 (scripted replies, SSE streams with delays, hangs, broken
//! streams), the real proxy router on an ephemeral port, the real binary on a port it
//! picks and reports itself, and polling for a condition instead of sleeping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use llm_rotator::config::{Config, ProviderConfig};
use llm_rotator::engine::Engine;
use llm_rotator::secrets::{ApiKey, KeyOrigin, KeyStore, ProviderKey};
use serde_json::{json, Value};

/// How a stream ends.
#[derive(Clone, Debug)]
pub enum SseEnd {
    /// Ends cleanly after the chunks.
    Clean,
    /// The connection breaks after the chunks.
    Break,
    /// Stays open without sending anything more.
    Hang,
}

/// One scripted answer of a mock provider.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, headers and a body.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// 200 text/event-stream: each chunk is sent as is, `delay` apart.
    Sse {
        chunks: Vec<String>,
        delay: Duration,
        end: SseEnd,
    },
    /// Never answers.
    Hang,
    /// 200 text/event-stream: sends `first`, then waits until the test opens `gate`
    /// before sending `rest` — proof that the first chunk was relayed on its own.
    SseGated {
        first: String,
        rest: Vec<String>,
        gate: Arc<tokio::sync::Notify>,
    },
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Raw {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A JSON answer with extra headers.
    pub fn json_with(status: u16, headers: &[(&str, &str)], body: Value) -> Reply {
        let mut h = vec![("content-type".to_string(), "application/json".to_string())];
        h.extend(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        Reply::Raw {
            status,
            headers: h,
            body: body.to_string(),
        }
    }

    /// A normal chat completion with usage.
    pub fn completion(text: &str) -> Reply {
        Reply::json(200, completion_body(text))
    }

    /// A streamed completion: one chunk per word, `[DONE]` at the end.
    pub fn stream(words: &[&str], delay: Duration) -> Reply {
        Reply::Sse {
            chunks: sse_chunks(words, true),
            delay,
            end: SseEnd::Clean,
        }
    }
}

/// An OpenAI chat completion body.
pub fn completion_body(text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    })
}

/// SSE events for `words` (one delta each), optionally followed by `data: [DONE]`.
pub fn sse_chunks(words: &[&str], done: bool) -> Vec<String> {
    let mut out: Vec<String> = words
        .iter()
        .map(|w| {
            let ev = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "mock-model",
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]
            });
            format!("data: {ev}\n\n")
        })
        .collect();
    if done {
        out.push("data: [DONE]\n\n".into());
    }
    out
}

/// What a mock provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct MockState {
    script: Vec<Reply>,
    next: usize,
    requests: Vec<Recorded>,
    /// The answer to `GET …/models` (the agent's catalog reads): kept apart from the
    /// chat script and its count. `None`: 404.
    models: Option<Reply>,
    models_hits: usize,
    /// `GET …/models` never answers.
    models_hang: bool,
    /// `GET …/models` takes the next reply of the script, like any request.
    models_scripted: bool,
}

/// A mock provider: a real HTTP server on 127.0.0.1 answering from a script (the last
/// reply repeats).
#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
}

impl Mock {
    /// Starts a mock with this script.
    pub async fn start(script: Vec<Reply>) -> Mock {
        let state = Arc::new(Mutex::new(MockState {
            script,
            ..MockState::default()
        }));
        let app = axum::Router::new()
            .fallback(mock_handler)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { addr, state }
    }

    /// The base URL to put in a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.state.lock().expect("lock").requests.len()
    }

    /// Serves this body (an OpenAI model list) at `GET …/models`.
    pub fn set_models(&self, body: Value) {
        self.set_models_reply(Reply::json(200, body));
    }

    /// Answers `GET …/models` with this reply.
    pub fn set_models_reply(&self, reply: Reply) {
        self.state.lock().expect("lock").models = Some(reply);
    }

    /// Serves `GET …/models` from the script like any other request (for `keys test`).
    pub fn script_models(&self) {
        self.state.lock().expect("lock").models_scripted = true;
    }

    /// Makes `GET …/models` never answer (a hung catalog read).
    pub fn hang_models(&self) {
        self.state.lock().expect("lock").models_hang = true;
    }

    /// How many catalog reads (`GET …/models`) arrived.
    pub fn models_hits(&self) -> usize {
        self.state.lock().expect("lock").models_hits
    }

    /// Replaces the script (and restarts it).
    pub fn set_script(&self, script: Vec<Reply>) {
        let mut s = self.state.lock().expect("lock");
        s.script = script;
        s.next = 0;
    }
}

async fn mock_handler(State(state): State<Arc<Mutex<MockState>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let catalog_read = parts.method == axum::http::Method::GET
        && parts.uri.path().ends_with("/models")
        && !state.lock().expect("lock").models_scripted;
    let reply = if catalog_read {
        let (models, hang) = {
            let mut s = state.lock().expect("lock");
            s.models_hits += 1;
            (s.models.clone(), s.models_hang)
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        match models {
            Some(reply) => reply,
            None => return StatusCode::NOT_FOUND.into_response(),
        }
    } else {
        next_reply(&state, parts, body)
    };
    match reply {
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(status).expect("status");
            for (k, v) in headers {
                resp.headers_mut().insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(&v).expect("value"),
                );
            }
            resp
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(Body::empty())
        }
        Reply::SseGated { first, rest, gate } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                if tx.send(Ok(Bytes::from(first))).await.is_err() {
                    return;
                }
                gate.notified().await;
                for c in rest {
                    if tx.send(Ok(Bytes::from(c))).await.is_err() {
                        return;
                    }
                }
            });
            let mut resp = Response::new(Body::from_stream(tokio_stream_from(rx)));
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            resp
        }
        Reply::Sse { chunks, delay, end } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                for (i, c) in chunks.into_iter().enumerate() {
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if tx.send(Ok(Bytes::from(c))).await.is_err() {
                        return;
                    }
                }
                match end {
                    SseEnd::Clean => {}
                    SseEnd::Break => {
                        let _ = tx
                            .send(Err(std::io::Error::other("mock stream broke")))
                            .await;
                    }
                    SseEnd::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(tx);
                    }
                }
            });
            let stream = tokio_stream_from(rx);
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            resp
        }
    }
}

/// The next scripted reply (the last one repeats), recording the request.
fn next_reply(
    state: &Arc<Mutex<MockState>>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Reply {
    let mut s = state.lock().expect("lock");
    s.requests.push(Recorded {
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body,
    });
    let i = s.next.min(s.script.len().saturating_sub(1));
    s.next += 1;
    s.script.get(i).cloned().unwrap_or(Reply::Raw {
        status: 500,
        headers: vec![],
        body: "no script".into(),
    })
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A key store with fixed keys, for in-process proxies.
pub struct StaticKeys(pub HashMap<String, Vec<String>>);

impl KeyStore for StaticKeys {
    fn keys_for(&self, provider: &ProviderConfig) -> Vec<ProviderKey> {
        self.0
            .get(&provider.name)
            .map(|ks| {
                ks.iter()
                    .enumerate()
                    .filter_map(|(i, k)| {
                        Some(ProviderKey {
                            key: ApiKey::new(k)?,
                            origin: KeyOrigin::Keychain(i),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A provider entry for a config.
pub struct P<'a> {
    pub name: &'a str,
    pub url: String,
    pub priority: u32,
    pub extra: &'a str,
}

impl<'a> P<'a> {
    pub fn new(name: &'a str, mock: &Mock, priority: u32) -> P<'a> {
        P {
            name,
            url: mock.base_url(),
            priority,
            extra: "",
        }
    }
    pub fn extra(mut self, extra: &'a str) -> P<'a> {
        self.extra = extra;
        self
    }
}

/// Config text with these providers (model `<name>-model`) and extra top-level TOML.
pub fn config_text(top: &str, providers: &[P<'_>]) -> String {
    let mut s = String::from(top);
    s.push('\n');
    for p in providers {
        s.push_str(&format!(
            "[[providers]]\nname = \"{}\"\nbase_url = \"{}\"\nmodel = \"{}-model\"\npriority = {}\napi_key_env = \"{}_TEST_KEY\"\n{}\n\n",
            p.name,
            p.url,
            p.name,
            p.priority,
            p.name.to_ascii_uppercase().replace('-', "_"),
            p.extra
        ));
    }
    s
}

/// An in-process proxy on 127.0.0.1:0.
pub struct Proxy {
    pub addr: SocketAddr,
    #[expect(
        dead_code,
        reason = "held so the engine lives exactly as long as the proxy"
    )]
    pub engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts the real router with this config text and keys (provider -> keys).
    pub async fn start(config: &str, keys: &[(&str, &[&str])]) -> Proxy {
        let config = Config::parse(config, None).expect("test config is valid");
        Proxy::start_with(config, None, keys).await
    }

    /// Starts with a parsed config and an optional config path (for reload tests).
    pub async fn start_with(
        config: Config,
        path: Option<PathBuf>,
        keys: &[(&str, &[&str])],
    ) -> Proxy {
        let store = StaticKeys(
            keys.iter()
                .map(|(p, ks)| {
                    (
                        (*p).to_string(),
                        ks.iter().map(|k| (*k).to_string()).collect(),
                    )
                })
                .collect(),
        );
        let grace = config.server.shutdown_grace;
        let engine = Engine::new(config, path, Arc::new(store)).expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e2 = engine.clone();
        let task = tokio::spawn(async move {
            let _ = llm_rotator::http::serve(
                listener,
                e2,
                async move {
                    let _ = rx.await;
                },
                grace,
            )
            .await;
        });
        Proxy {
            addr,
            engine,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A plain HTTP client (no retries, no proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Posts a chat completion and returns (status, headers, body text).
pub async fn chat(target: &impl Served, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = client()
        .post(target.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("text");
    (status, headers, text)
}

/// Something serving the API on 127.0.0.1: the in-process [`Proxy`] or the real
/// [`Binary`].
pub trait Served {
    /// `http://127.0.0.1:port{path}`.
    fn url(&self, path: &str) -> String;
}

impl Served for Proxy {
    fn url(&self, path: &str) -> String {
        Proxy::url(self, path)
    }
}

impl Served for Binary {
    fn url(&self, path: &str) -> String {
        Binary::url(self, path)
    }
}

/// GET a JSON admin route.
pub async fn get_json(target: &impl Served, path: &str) -> Value {
    let text = get_text(target, path).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {text}"))
}

/// `GET path` on the target, its body as text.
pub async fn get_text(target: &impl Served, path: &str) -> String {
    client()
        .get(target.url(path))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text")
}

/// The provider entry with this name in a `/status` body, if there is one.
pub fn provider_in(status: &Value, name: &str) -> Option<Value> {
    status["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// The provider entry of `/status` with this name.
pub async fn provider_status(target: &impl Served, name: &str) -> Value {
    provider_in(&get_json(target, "/status").await, name).expect("provider in /status")
}

/// The `x-provider` header of an answer ("" when there is none).
pub fn answered_by(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Reports that `test` cannot run in this environment (`why`): a note on a plain `cargo
/// test`, a failure where `scripts/test` set `LLM_ROTATOR_NO_SKIP` (there everything it
/// installs must run, so a silent skip cannot pass for a pass).
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("LLM_ROTATOR_NO_SKIP").is_none(),
        "{test} cannot run: {why} (LLM_ROTATOR_NO_SKIP is set, so this is a failure)"
    );
    eprintln!("skipped {test}: {why}");
}

/// A port on 127.0.0.1 where nothing listens, for a provider that must be unreachable:
/// a socket bound to it but never listening, so connections are refused, and held until
/// dropped, so no other program (or parallel test) can take the port meanwhile. Our own
/// agent never needs a port picked beforehand: [`Binary`] starts it on port 0 and reads
/// the port it reports.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    /// The port.
    pub port: u16,
}

impl ClosedPort {
    /// Binds one.
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let port = socket.local_addr().expect("addr").port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }
}

/// Polls `cond` (every 20 ms) until it holds; fails after `timeout`, naming `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let checked = cond();
        async move {
            if checked.await {
                Ok(())
            } else {
                Err("it never did".to_string())
            }
        }
    })
    .await;
}

/// Polls `probe` (every 20 ms) until it gives `Ok`, and returns that; fails after
/// `timeout`, naming `what` and showing the last `Err` (what was seen instead).
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `llm-rotator status` with `config`, asking the agent on `port`.
pub fn status_cli(config: &Path, port: u16) -> (i32, String, String) {
    let config = config.to_str().expect("a UTF-8 path");
    cli(
        &["status", "--config", config, "--port", &port.to_string()],
        &[],
    )
}

/// Runs the real binary with `args` (the config and data dir env vars removed, `env`
/// added) and returns its exit code, stdout and stderr.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(Binary::exe());
    cmd.args(args)
        .env_remove("LLM_ROTATOR_CONFIG")
        .env_remove("LLM_ROTATOR_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run llm-rotator");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real binary, started with a config file and data dir, stdout/stderr captured to
/// files in the data dir. It listens on a port the system picks (`--port 0`) and writes
/// it to its ready file (`--ready-file`), where [`Binary::wait_ready`] reads it: no port
/// is guessed beforehand, so parallel tests never race for one.
pub struct Binary {
    pub child: Child,
    pub dir: PathBuf,
    /// Known once [`Binary::wait_ready`] read it (or given at start).
    port: Option<u16>,
}

impl Binary {
    /// Path of the built binary.
    pub fn exe() -> &'static str {
        // Cargo sets this when it builds the tests for the host; a type-check for another
        // target (the macOS check) has no binary to point at.
        option_env!("CARGO_BIN_EXE_llm-rotator").unwrap_or("llm-rotator")
    }

    /// Where an agent started for `dir` writes the address it listens on.
    pub fn ready_file(dir: &Path) -> PathBuf {
        dir.join("ready")
    }

    /// The arguments that make `serve`/`run` listen on any free port and report it in
    /// the ready file for `dir` (a dir no agent ran in before): for tests that build the
    /// command themselves and hand the child to [`Binary::adopt`].
    pub fn any_port_args(dir: &Path) -> Vec<std::ffi::OsString> {
        vec![
            "--port".into(),
            "0".into(),
            "--ready-file".into(),
            Binary::ready_file(dir).into(),
        ]
    }

    /// Wraps an agent a test started itself with [`Binary::any_port_args`] for `dir`.
    pub fn adopt(child: Child, dir: &Path) -> Binary {
        Binary {
            child,
            dir: dir.to_path_buf(),
            port: None,
        }
    }

    /// Writes `config` and starts `llm-rotator serve` on any free port. `env` adds
    /// environment variables.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Binary {
        Binary::start_as(dir, "serve", config, env, &[])
    }

    /// Like [`Binary::start`], with subcommand `sub` (`serve` or `run`) and the
    /// environment variables `unset` removed.
    pub fn start_as(
        dir: &Path,
        sub: &str,
        config: &str,
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> Binary {
        Binary::spawn(dir, sub, config, 0, env, unset)
    }

    /// Like [`Binary::start_as`], on this very port: for tests of a port that is already
    /// taken (by another agent or another program).
    pub fn start_on_port(
        dir: &Path,
        sub: &str,
        config: &str,
        port: u16,
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> Binary {
        let mut bin = Binary::spawn(dir, sub, config, port, env, unset);
        bin.port = Some(port);
        bin
    }

    fn spawn(
        dir: &Path,
        sub: &str,
        config: &str,
        port: u16,
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> Binary {
        std::fs::create_dir_all(dir).expect("dir");
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).expect("write config");
        let out = std::fs::File::create(dir.join("stdout.log")).expect("stdout");
        let err = std::fs::File::create(dir.join("stderr.log")).expect("stderr");
        // An agent killed in this dir before (kill -9 leaves it behind) wrote another port.
        let ready = Binary::ready_file(dir);
        if ready.exists() {
            std::fs::remove_file(&ready).expect("remove an old ready file");
        }
        let mut cmd = Command::new(Binary::exe());
        cmd.arg(sub)
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for k in unset {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn llm-rotator");
        Binary::adopt(child, dir)
    }

    /// The port it listens on (known once [`Binary::wait_ready`] returned).
    pub fn port(&self) -> u16 {
        self.port
            .expect("the agent's port is known once wait_ready returned")
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// The port in the ready file, once the agent wrote it (the file is written whole
    /// or not at all).
    fn reported_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(Binary::ready_file(&self.dir)).ok()?;
        let (_, port) = text.trim().rsplit_once(':')?;
        Some(port.parse().expect("a port in the ready file"))
    }

    /// Waits until the agent reported its port and `/health` answers 200 (panics after
    /// 20 s, or at once with its stderr when it exits).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.port.is_none() {
                self.port = self.reported_port();
            }
            if self.port.is_some() {
                if let Ok(r) = client().get(self.url("/health")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llm-rotator exited early with {status}: {}",
                    std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "llm-rotator did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (unix).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit (panics after 20 s) and returns the exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "llm-rotator did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Stderr once it contains `needle` (info lines are written in batches, a moment
    /// after they happen); fails after 10 s.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in stderr: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `dbus-daemon` (standing in for the session or the system bus); killed when
/// dropped. `None` where `dbus-daemon` is not installed. (Linux: the network and
/// notification tests are the only users.)
#[cfg(target_os = "linux")]
pub struct PrivateBus {
    child: std::process::Child,
    /// Its address, for `DBUS_SESSION_BUS_ADDRESS` or `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

#[cfg(target_os = "linux")]
impl PrivateBus {
    /// Starts one with its socket in `dir`.
    pub fn start(dir: &Path) -> Option<PrivateBus> {
        let socket = dir.join("bus");
        let mut child = Command::new("dbus-daemon")
            .arg("--session")
            .arg("--nofork")
            .arg("--nopidfile")
            .arg(format!("--address=unix:path={}", socket.display()))
            .arg("--print-address=1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        use std::io::{BufRead, BufReader};
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        Some(PrivateBus {
            child,
            address: line.trim().to_string(),
        })
    }
}

#[cfg(target_os = "linux")]
impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
