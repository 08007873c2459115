//! The shared pool through two real agents and a real `redis-server` (Debian's package)
//! on a loopback port: what one agent learns (a 429, a daily bench, a rejected key)
//! keeps the other away within a second; counts add up; records expire with their
//! cooldown; no key reaches Redis; with Redis killed both keep answering undelayed and
//! they converge when it is back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const K_REJ: &str = "sk-rj-7Q2mX9vLp4Rt8Wz1";
const K_FIRST: &str = "sk-fs-Hn3Jc6Ub0Ye5Ka2";
const K_DAILY: &str = "sk-dy-Gt7Fd4Ms1Qp8Lv3";
const K_LAST: &str = "sk-ls-Zx5Cv2Bn9Mm6Aa1";

fn keys_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("REJ_TEST_KEY", K_REJ),
        ("FIRST_TEST_KEY", K_FIRST),
        ("DAILY_TEST_KEY", K_DAILY),
        ("LAST_TEST_KEY", K_LAST),
    ]
}

/// A `redis-server` on a loopback port, without persistence; killed when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    dir: PathBuf,
    /// Serving TLS only, with these PEM files (certificate, key, CA).
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Redis {
    /// Starts one, or reports the test skipped when Redis is not installed.
    pub fn start(test: &str, dir: &Path, password: Option<&str>) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            skip(test, "redis-server is not installed");
            return None;
        }
        let mut r = Redis {
            child: None,
            port: port_for_redis(),
            password: password.map(str::to_string),
            dir: dir.to_path_buf(),
            tls: None,
        };
        r.launch();
        Some(r)
    }

    /// Starts one that speaks TLS only, with a certificate for `localhost` from a CA
    /// made for the test (its PEM is `ca.pem` in `dir`).
    fn start_tls(test: &str, dir: &Path) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
            || Command::new("openssl").arg("version").output().is_err()
        {
            skip(test, "redis-server or openssl is not installed");
            return None;
        }
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=llm-rotator test CA",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        let mut r = Redis {
            child: None,
            port: port_for_redis(),
            password: None,
            dir: dir.to_path_buf(),
            tls: Some((
                dir.join("server.pem"),
                dir.join("server.key"),
                dir.join("ca.pem"),
            )),
        };
        r.launch();
        Some(r)
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            Some((cert, key, ca)) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
        }
        cmd.args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (as a crash or a pulled cable would look to the agents).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis-cli -p PORT args…`, its output.
    fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string());
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        if let Some((_, _, ca)) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }
}

/// A free loopback port for `redis-server`, which cannot bind port 0 and report it (0
/// turns its TCP listener off): bound here, released, and handed to it.
fn port_for_redis() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Four providers in priority order: `rej` (401), `first` (429 with a short
/// Retry-After), `daily` (200, one request a day configured), `last` (200).
struct Upstreams {
    rej: Mock,
    first: Mock,
    daily: Mock,
    last: Mock,
}

impl Upstreams {
    async fn start(retry_after: &str) -> Upstreams {
        let err = |code: &str| json!({"error": {"message": "no", "code": code}});
        Upstreams {
            rej: Mock::start(vec![Reply::json(401, err("invalid_api_key"))]).await,
            first: Mock::start(vec![Reply::json_with(
                429,
                &[("retry-after", retry_after)],
                err("rate_limit_exceeded"),
            )])
            .await,
            daily: Mock::start(vec![Reply::completion("from daily")]).await,
            last: Mock::start(vec![Reply::completion("from last")]).await,
        }
    }

    fn all_ok(&self) -> Upstreams {
        Upstreams {
            rej: self.rej.clone(),
            first: self.first.clone(),
            daily: self.daily.clone(),
            last: self.last.clone(),
        }
    }
}

fn agent_config(up: &Upstreams, redis: &Redis, machine: &str) -> String {
    config_text(
        &format!(
            "[shared]\nurl = \"{}\"\npool = \"test\"\nmachine = \"{machine}\"\n",
            redis.url()
        ),
        &[
            P::new("rej", &up.rej, 1),
            P::new("first", &up.first, 2),
            P::new("daily", &up.daily, 3).extra("requests_per_day = 1"),
            P::new("last", &up.last, 4),
        ],
    )
}

async fn agent(
    dir: &Path,
    up: &Upstreams,
    redis: &Redis,
    machine: &str,
    env: &[(&str, &str)],
) -> Binary {
    let mut all = keys_env();
    all.extend_from_slice(env);
    let mut bin = Binary::start(&dir.join(machine), &agent_config(up, redis, machine), &all);
    bin.wait_ready().await;
    wait_shared(&bin, "online", Duration::from_secs(10)).await;
    bin
}

/// Sends a chat completion; returns (status, x-provider, how long it took).
async fn ask(bin: &Binary) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let provider = answered_by(&resp);
    let _ = resp.text().await;
    (status, provider, started.elapsed())
}

/// Polls `/status` until `cond` holds; panics after `within` with the last status.
async fn wait_status(
    bin: &Binary,
    what: &str,
    within: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = get_json(bin, "/status").await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what} within {within:?}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_shared(bin: &Binary, state: &str, within: Duration) -> Value {
    wait_status(bin, &format!("shared pool {state}"), within, |s| {
        s["shared"]["state"] == state
    })
    .await
}

fn state_of(status: &Value, name: &str) -> String {
    provider_in(status, name).expect("provider")["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every 5-character piece of every key.
fn key_pieces() -> Vec<String> {
    let mut out = Vec::new();
    for k in [K_REJ, K_FIRST, K_DAILY, K_LAST] {
        for i in 0..=k.len() - 5 {
            out.push(k[i..i + 5].to_string());
        }
    }
    out
}

#[tokio::test]
async fn what_one_agent_learns_keeps_the_other_away_within_a_second_and_expires_with_its_cooldown()
{
    let test = "shared::what_one_agent_learns";
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(test, dir.path(), None) else {
        return;
    };
    let up = Upstreams::start("3").await;
    let a = agent(dir.path(), &up, &redis, "alpha", &[]).await;
    let b = agent(dir.path(), &up, &redis, "beta", &[]).await;

    // One request on A meets a rejected key, a 429 and then uses up a daily allowance.
    let (code, by, _) = ask(&a).await;
    assert_eq!((code, by.as_str()), (200, "daily"));
    let seen_at = Instant::now();
    let status = wait_status(
        &b,
        "A's rejection, 429 and bench",
        Duration::from_secs(1),
        |s| {
            state_of(s, "rej") == "auth_failed"
                && state_of(s, "first") == "cooling_down"
                && state_of(s, "daily") == "cooling_down"
        },
    )
    .await;
    eprintln!("B knew in {:?}", seen_at.elapsed());
    let first = provider_in(&status, "first").unwrap();
    assert!(
        first["cooldown_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("alpha"),
        "{first:#}"
    );
    let daily = provider_in(&status, "daily").unwrap();
    assert!(
        daily["cooldown_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("daily quota"),
        "{daily:#}"
    );
    // B goes straight to the last provider: none of the three sees a request from it.
    let hits = (up.rej.hits(), up.first.hits(), up.daily.hits());
    let (code, by, _) = ask(&b).await;
    assert_eq!((code, by.as_str()), (200, "last"));
    assert_eq!(
        (up.rej.hits(), up.first.hits(), up.daily.hits()),
        hits,
        "B called a provider A had learned about"
    );

    // The cooldown's record carries the cooldown's own end.
    let holds: Vec<String> = redis
        .cli(&["--scan", "--pattern", "llm-rotator:test:hold:*"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(holds.len(), 2, "one rate limit and one bench: {holds:?}");
    let ttls: Vec<i64> = holds
        .iter()
        .map(|k| redis.cli(&["PTTL", k]).trim().parse().unwrap())
        .collect();
    assert!(
        ttls.iter().any(|t| (1..=3000).contains(t)),
        "the 429's record expires with its 3 s cooldown: {ttls:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let left = redis.cli(&["--scan", "--pattern", "llm-rotator:test:hold:*"]);
        if left.lines().count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 429's record outlived it: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing in Redis holds any piece of a key: not a name, not a value.
    let names = redis.cli(&["--scan", "--pattern", "*"]);
    assert!(names.lines().count() >= 4, "{names}");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for name in names.lines() {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let text = format!("{name}\n{}", String::from_utf8_lossy(&dump));
        for piece in key_pieces() {
            assert!(
                !text.contains(&piece),
                "{piece:?} of a key in {name}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn counts_add_up_across_agents_and_status_lists_the_machines() {
    let test = "shared::counts_add_up";
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(test, dir.path(), None) else {
        return;
    };
    let up = Upstreams::start("600").await;
    let a = agent(dir.path(), &up, &redis, "alpha", &[]).await;
    let b = agent(dir.path(), &up, &redis, "beta", &[]).await;
    for _ in 0..3 {
        assert_eq!(ask(&a).await.0, 200);
    }
    // What A learned reaches B within milliseconds, not before B's next request.
    wait_status(&b, "A's bench", Duration::from_secs(1), |s| {
        state_of(s, "daily") == "cooling_down"
    })
    .await;
    for _ in 0..2 {
        assert_eq!(ask(&b).await.0, 200);
    }
    // A: daily once, last twice; B: last twice (daily was benched by A's use).
    for bin in [&a, &b] {
        let s = wait_status(bin, "5 requests over both", Duration::from_secs(5), |s| {
            let total = |n: &str| {
                provider_in(s, n).unwrap()["request_count_all_machines"]
                    .as_u64()
                    .unwrap_or(0)
            };
            total("daily") + total("last") == 5
        })
        .await;
        let daily = provider_in(&s, "daily").unwrap();
        assert_eq!(daily["headroom"]["requests_today"]["left"], 0, "{daily:#}");
    }
    let s = get_json(&b, "/status").await;
    let last = provider_in(&s, "last").unwrap();
    assert_eq!(last["request_count"], 2, "B's own count stays its own");
    assert_eq!(last["request_count_all_machines"], 4);

    let config = dir.path().join("beta").join("config.toml");
    let (code, out, err) = status_cli(&config, b.port());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shared pool test: 2 machines"), "{out}");
    assert!(out.contains("beta (this machine)"), "{out}");
    assert!(out.contains("alpha (seen"), "{out}");
    let last_row = out.lines().find(|l| l.starts_with("last")).unwrap();
    assert!(last_row.contains("2 (4 shared)"), "{out}");
}

#[tokio::test]
async fn with_redis_killed_both_keep_answering_undelayed_and_converge_when_it_is_back() {
    let test = "shared::with_redis_killed";
    let dir = tempfile::tempdir().unwrap();
    let password = "pool-password-1234";
    let Some(mut redis) = Redis::start(test, dir.path(), Some(password)) else {
        return;
    };
    let up = Upstreams::start("600").await;
    let ok = up.all_ok();
    // Every provider answers: the first one serves until it says otherwise.
    for m in [&ok.rej, &ok.first, &ok.daily] {
        m.set_script(vec![Reply::completion("ok")]);
    }
    let env = [("LLM_ROTATOR_SHARED_PASSWORD", password)];
    let a = agent(dir.path(), &ok, &redis, "alpha", &env).await;
    let b = agent(dir.path(), &ok, &redis, "beta", &env).await;

    let mut before = Vec::new();
    for _ in 0..10 {
        for bin in [&a, &b] {
            let (code, _, took) = ask(bin).await;
            assert_eq!(code, 200);
            before.push(took);
        }
    }
    redis.kill();
    let mut during = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for bin in [&a, &b] {
            let (code, _, took) = ask(bin).await;
            assert_eq!(code, 200, "a request failed while Redis was down");
            during.push(took);
        }
    }
    let slowest_before = before.iter().max().copied().unwrap_or_default();
    let slowest_during = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "slowest request: {slowest_before:?} with Redis, {slowest_during:?} without ({} requests)",
        during.len()
    );
    assert!(
        slowest_during < slowest_before + Duration::from_millis(250),
        "a request waited on the dead Redis: {slowest_during:?} (before: {slowest_before:?})"
    );
    for bin in [&a, &b] {
        wait_shared(bin, "offline", Duration::from_secs(10)).await;
    }
    let err = a.wait_stderr("shared pool");
    assert_eq!(
        err.matches("offline").count(),
        1,
        "said once in the log: {err}"
    );

    // While it is down, A meets a 429 B knows nothing of.
    ok.rej.set_script(vec![Reply::json_with(
        429,
        &[("retry-after", "600")],
        json!({"error": {"message": "slow down"}}),
    )]);
    let (code, by, _) = ask(&a).await;
    assert_eq!((code, by.as_str()), (200, "first"));
    let s = get_json(&b, "/status").await;
    assert_eq!(state_of(&s, "rej"), "ready");

    redis.launch();
    for bin in [&a, &b] {
        wait_shared(bin, "online", Duration::from_secs(10)).await;
    }
    wait_status(
        &b,
        "A's 429 after Redis came back",
        Duration::from_secs(5),
        |s| state_of(s, "rej") == "cooling_down",
    )
    .await;
}

#[tokio::test]
async fn rediss_reaches_a_tls_redis_whose_certificate_the_system_trusts_and_refuses_one_it_does_not(
) {
    let test = "shared::rediss";
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start_tls(test, dir.path()) else {
        return;
    };
    let up = Upstreams::start("600").await;
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    // The test CA stands in for the team's own: trusted the way the system store is read.
    let a = agent(dir.path(), &up, &redis, "alpha", &[("SSL_CERT_FILE", ca)]).await;
    assert_eq!(ask(&a).await.0, 200);
    let names = redis.cli(&["--scan", "--pattern", "llm-rotator:test:*"]);
    assert!(names.contains("llm-rotator:test:machine:"), "{names}");

    // Without the CA the certificate is refused: the agent serves, offline, and says why.
    let mut bin = Binary::start(
        &dir.path().join("untrusting"),
        &agent_config(&up, &redis, "beta"),
        &keys_env(),
    );
    bin.wait_ready().await;
    let s = wait_status(
        &bin,
        "why the pool is offline",
        Duration::from_secs(10),
        |s| s["shared"]["state"] == "offline" && s["shared"]["error"] != "connecting",
    )
    .await;
    let why = s["shared"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(why.contains("certificate") || why.contains("tls"), "{s:#}");
    assert_eq!(ask(&bin).await.0, 200);
}
