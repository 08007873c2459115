//! The shared pool: several agents that use the same keys (a laptop and a desktop, a
//! household, a small team) share cooldowns, daily benches, rejected keys, retired models
//! and today's counts through a Redis or Valkey server the team already runs (`[shared]`
//! in the config; off by default).
//!
//! Off the request path, always: the pool in memory stays the truth for routing. This
//! task watches the pool, publishes what changed at once (counts batched once a second)
//! and merges what the other machines publish as it arrives. When the server is down or
//! unreachable the agent runs on its own state, says so once (log, `/status`, menu) and
//! catches up when it is back: it reads what the others stored and sends what it learned
//! meanwhile. A request never waits on Redis.
//!
//! No key, prompt or completion is ever sent: keys are named by a one-way hash
//! ([`crate::pool::shared_key_id`]), and what is sent is a kind of cooldown, an end time
//! and counts (see [`wire`]).

pub mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::task::JoinHandle;

use crate::config::SharedConfig;
use crate::engine::Engine;
use crate::pool::{Pool, Remote, SharedHold, SharedStatus};
use wire::{Event, Known, MachineRecord, Message, Names, Others};

/// The environment variable read for the server's password when the keychain has no
/// item `shared` (a headless machine, a test).
pub const PASSWORD_ENV: &str = "LLM_ROTATOR_SHARED_PASSWORD";

/// The keychain item (account) holding the server's password.
pub const KEYCHAIN_ITEM: &str = "shared";

/// Longest wait for connecting and for any one command: past it the server counts as
/// unreachable (a LAN answers in milliseconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Counts are batched: sent at most this often.
const BATCH: Duration = Duration::from_secs(1);

/// The machine record is refreshed (and the list of machines re-read) this often.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Changes in the pool are looked at no more often than this (under load the pool
/// changes with every request).
const SETTLE: Duration = Duration::from_millis(20);

/// Between attempts to reach the server again.
const RETRY: Duration = Duration::from_secs(1);

/// Who this agent is in the pool.
#[derive(Debug, Clone)]
struct Me {
    /// Unique per agent: a hash of the host name and the data dir.
    id: String,
    /// As the others show it.
    name: String,
}

/// Starts the shared pool's task when `[shared]` is configured (it lives as long as the
/// agent; the setting takes effect at start).
pub fn start(engine: &Engine, data_dir: &Path) -> Option<JoinHandle<()>> {
    let config = engine.started_config().shared.clone()?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let pool = engine.pool.clone();
    pool.set_shared_status(SharedStatus {
        pool: config.pool.clone(),
        server: server_shown(&config.url),
        online: false,
        since: Utc::now(),
        error: Some("connecting".into()),
        machines: Vec::new(),
    });
    Some(tokio::spawn(run(pool, config, data_dir.to_path_buf())))
}

/// Who this agent is: its name (configured, else the computer's) and an id unique to
/// this machine and data dir. Blocking (a subprocess on macOS, a file on Linux).
fn me(config: &SharedConfig, data_dir: &Path) -> Me {
    let host = host_name();
    let name = config.machine.clone().unwrap_or_else(|| host.clone());
    let id = crate::pool::endpoint_id(&format!("{host}\0{}", data_dir.display()))
        .chars()
        .take(12)
        .collect();
    Me { id, name }
}

/// The server as shown: host and port, never a user or password.
fn server_shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().unwrap_or(6379)
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// This machine's name: the computer's name on macOS, the host name elsewhere.
fn host_name() -> String {
    #[cfg(target_os = "macos")]
    {
        if let Ok(out) = std::process::Command::new("/usr/sbin/scutil")
            .args(["--get", "ComputerName"])
            .output()
        {
            let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !name.is_empty() {
                return name;
            }
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().trim_end_matches(".local").to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

/// The server's password: the keychain item `shared`, else [`PASSWORD_ENV`].
fn password() -> Option<String> {
    let keychain = crate::secrets::keychain::Keychain::from_env(Duration::from_secs(10));
    if let Ok(keys) = keychain.keys(KEYCHAIN_ITEM) {
        if let Some(k) = keys.first() {
            return Some(k.expose().to_string());
        }
    }
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

/// Why a session with the server ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("the connection closed")]
    Closed,
}

/// Runs a command with [`COMMAND_TIMEOUT`].
async fn within<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SessionError::Timeout),
    }
}

/// The names of the keys matching `pattern` (SCAN, so a large server is not blocked).
async fn scan(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> Result<Vec<String>, SessionError> {
    let mut names = Vec::new();
    let mut iter: redis::AsyncIter<String> = within(conn.scan_match(pattern)).await?;
    while let Some(item) = tokio::time::timeout(COMMAND_TIMEOUT, iter.next_item())
        .await
        .map_err(|_| SessionError::Timeout)?
    {
        names.push(item?);
    }
    Ok(names)
}

/// Connects, serves a session until it ends, says so once, and tries again.
async fn run(pool: Pool, config: SharedConfig, data_dir: PathBuf) {
    let names = Names::new(&config.pool);
    // The host name and the keychain may block: off the runtime's thread.
    let who = config.clone();
    let Ok((me, password)) =
        tokio::task::spawn_blocking(move || (me(&who, &data_dir), password())).await
    else {
        return;
    };
    update(&pool, |s| {
        s.machines = vec![(me.name.clone(), true, Utc::now())]
    });
    let client = match client(&config.url, password) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "shared pool: {} is not usable: {e}",
                server_shown(&config.url)
            );
            update(&pool, |s| {
                s.error = Some(e.to_string());
            });
            return;
        }
    };
    let mut was_online: Option<bool> = None;
    loop {
        let mut session = Session {
            pool: pool.clone(),
            names: names.clone(),
            me: me.clone(),
            known: Known::default(),
            others: Others::default(),
            machines: HashMap::new(),
        };
        let ended = session.serve(&client, &mut was_online).await;
        let error = match ended {
            Ok(()) => "the connection closed".to_string(),
            Err(e) => e.to_string(),
        };
        if was_online != Some(false) {
            tracing::warn!(
                "shared pool {} offline ({error}); running on this machine's own state until it is back",
                server_shown(&config.url)
            );
            was_online = Some(false);
            update(&pool, |s| {
                s.online = false;
                s.since = Utc::now();
                s.error = Some(error.clone());
            });
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Changes the shared status shown in snapshots.
fn update(pool: &Pool, f: impl FnOnce(&mut SharedStatus)) {
    if let Some(mut s) = pool.shared_status() {
        f(&mut s);
        pool.set_shared_status(s);
    }
}

fn client(url: &str, password: Option<String>) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info()?;
    if password.is_some() {
        info.redis.password = password;
    }
    redis::Client::open(info)
}

/// One connection's life: catch up, then publish and merge until it breaks.
struct Session {
    pool: Pool,
    names: Names,
    me: Me,
    known: Known,
    others: Others,
    /// Machine id → (name, last seen).
    machines: HashMap<String, (String, DateTime<Utc>)>,
}

impl Session {
    async fn serve(
        &mut self,
        client: &redis::Client,
        was_online: &mut Option<bool>,
    ) -> Result<(), SessionError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        let mut conn = within(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut pubsub = within(client.get_async_pubsub()).await?;
        within(pubsub.subscribe(self.names.channel())).await?;
        let mut messages = pubsub.into_on_message();
        // Subscribed first, then read: nothing published meanwhile is missed.
        self.catch_up(&mut conn).await?;
        self.heartbeat(&mut conn).await?;
        self.publish(&mut conn, &[Event::Hello]).await?;
        // What this agent learned while it was offline goes out now.
        self.send_changes(&mut conn, true).await?;
        if *was_online != Some(true) {
            tracing::info!(
                "shared pool online: {} machine(s) in pool {}",
                self.machines.len(),
                self.names.prefix().trim_end_matches(':')
            );
        }
        *was_online = Some(true);
        self.show(true);
        let mut changes = self.pool.subscribe();
        let mut batch = tokio::time::interval(BATCH);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { return Err(SessionError::Closed) };
                    let Ok(text) = msg.get_payload::<String>() else { continue };
                    if let Ok(m) = serde_json::from_str::<Message>(&text) {
                        if self.receive(m) {
                            self.refresh_machines(&mut conn).await?;
                        }
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.send_changes(&mut conn, false).await?;
                    tokio::time::sleep(SETTLE).await;
                }
                _ = batch.tick() => self.send_changes(&mut conn, true).await?,
                _ = heartbeat.tick() => self.heartbeat(&mut conn).await?,
            }
        }
    }

    /// Shows the status with the machines known now.
    fn show(&self, online: bool) {
        let mut machines: Vec<(String, bool, DateTime<Utc>)> = self
            .machines
            .iter()
            .map(|(id, (name, seen))| (name.clone(), *id == self.me.id, *seen))
            .collect();
        machines.sort_by(|a, b| (!a.1, &a.0).cmp(&(!b.1, &b.0)));
        update(&self.pool, |s| {
            if !s.online && online {
                s.since = Utc::now();
            }
            s.online = online;
            s.error = None;
            s.machines = machines;
        });
    }

    /// Reads every record of the pool and applies it.
    async fn catch_up(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), SessionError> {
        let now = Utc::now();
        let today = now.with_timezone(&chrono::Local).date_naive();
        let pattern = format!("{}*", self.names.prefix());
        for name in scan(conn, &pattern).await? {
            let Some((kind, rest)) = self.names.kind_of(&name) else {
                continue;
            };
            match kind {
                "hold" | "rejected" | "retired" => {
                    let text: Option<String> = within(conn.get(&name)).await?;
                    if let Some(m) = text.and_then(|t| serde_json::from_str::<Message>(&t).ok()) {
                        self.receive(m);
                    }
                }
                "count" => {
                    let Some((day, key)) = rest.split_once(':') else {
                        continue;
                    };
                    if day != today.to_string() {
                        continue;
                    }
                    let all: HashMap<String, String> = within(conn.hgetall(&name)).await?;
                    for (from, value) in all {
                        if from == self.me.id {
                            continue;
                        }
                        if let Some((requests, tokens)) = wire::parse_counts(&value) {
                            self.counts_from(&from, key, today, requests, tokens);
                        }
                    }
                }
                _ => {}
            }
        }
        self.refresh_machines(conn).await
    }

    /// Re-reads the machines of the pool.
    async fn refresh_machines(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), SessionError> {
        let pattern = format!("{}machine:*", self.names.prefix());
        let mut machines = HashMap::new();
        for name in scan(conn, &pattern).await? {
            let Some((_, id)) = self.names.kind_of(&name) else {
                continue;
            };
            let text: Option<String> = within(conn.get(&name)).await?;
            if let Some(r) = text.and_then(|t| serde_json::from_str::<MachineRecord>(&t).ok()) {
                machines.insert(id.to_string(), (r.name, r.last_seen));
            }
        }
        machines
            .entry(self.me.id.clone())
            .or_insert_with(|| (self.me.name.clone(), Utc::now()));
        self.machines = machines;
        self.show(true);
        Ok(())
    }

    /// Refreshes this machine's record.
    async fn heartbeat(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), SessionError> {
        let now = Utc::now();
        let record = MachineRecord {
            name: self.me.name.clone(),
            last_seen: now,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let text = serde_json::to_string(&record).unwrap_or_default();
        within(conn.set_ex::<_, _, ()>(self.names.machine(&self.me.id), text, wire::MACHINE_SECS))
            .await?;
        self.machines
            .insert(self.me.id.clone(), (self.me.name.clone(), now));
        self.refresh_machines(conn).await
    }

    /// Applies a message from another machine (own ones are skipped). Returns whether it
    /// was a machine saying hello (then the list of machines is re-read).
    fn receive(&mut self, m: Message) -> bool {
        if m.from == self.me.id {
            return false;
        }
        let now = Utc::now();
        if let Some(seen) = self.machines.get_mut(&m.from) {
            seen.1 = now;
        }
        let remote = match &m.event {
            Event::Hello => return true,
            Event::Hold {
                key,
                hold,
                cause,
                until,
            } => Remote::Hold {
                key: key.clone(),
                hold: SharedHold {
                    hold: *hold,
                    cause: *cause,
                    until: *until,
                },
                machine: m.name.clone(),
            },
            Event::Freed { key, rejection } => Remote::Freed {
                key: key.clone(),
                rejection: *rejection,
            },
            Event::Rejected { key } => Remote::Rejected {
                key: key.clone(),
                machine: m.name.clone(),
            },
            Event::Retired { endpoint, model } => Remote::Retired {
                endpoint: endpoint.clone(),
                model: model.clone(),
                machine: m.name.clone(),
            },
            Event::Counts {
                key,
                day,
                requests,
                tokens,
            } => {
                self.counts_from(&m.from, key, *day, *requests, *tokens);
                return false;
            }
        };
        self.known.learn(&m.event);
        self.pool.apply_shared(&remote, now);
        false
    }

    fn counts_from(
        &mut self,
        from: &str,
        key: &str,
        day: chrono::NaiveDate,
        requests: u64,
        tokens: u64,
    ) {
        let (requests, tokens) = self.others.note(key, from, day, requests, tokens);
        self.pool.apply_shared(
            &Remote::Others {
                key: key.to_string(),
                day,
                requests,
                tokens,
            },
            Utc::now(),
        );
    }

    /// Sends what the pool knows and the server does not (with `counts`, the batch of
    /// counts too).
    async fn send_changes(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        counts: bool,
    ) -> Result<(), SessionError> {
        let now = Utc::now();
        let facts = self.pool.shared_facts(now);
        let events = self.known.diff(&facts, now, counts);
        if events.is_empty() {
            return Ok(());
        }
        self.publish(conn, &events).await
    }

    /// Stores each event's record (with its expiry) and publishes it, in one round trip.
    async fn publish(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        events: &[Event],
    ) -> Result<(), SessionError> {
        let now = Utc::now();
        let mut pipe = redis::pipe();
        for event in events {
            let message = Message {
                from: self.me.id.clone(),
                name: self.me.name.clone(),
                event: event.clone(),
            };
            let text = serde_json::to_string(&message).unwrap_or_default();
            match event {
                Event::Hold { key, until, .. } => {
                    let ms = until.timestamp_millis();
                    if ms > now.timestamp_millis() {
                        pipe.cmd("SET")
                            .arg(self.names.hold(key))
                            .arg(&text)
                            .arg("PXAT")
                            .arg(ms)
                            .ignore();
                    }
                }
                Event::Freed { key, rejection } => {
                    pipe.del(self.names.hold(key)).ignore();
                    if *rejection {
                        pipe.del(self.names.rejected(key)).ignore();
                    }
                }
                Event::Rejected { key } => {
                    pipe.set_ex(self.names.rejected(key), &text, wire::REJECTED_SECS)
                        .ignore();
                }
                Event::Retired { endpoint, model } => {
                    pipe.set_ex(
                        self.names.retired(endpoint, model),
                        &text,
                        wire::RETIRED_SECS,
                    )
                    .ignore();
                }
                Event::Counts {
                    key,
                    day,
                    requests,
                    tokens,
                } => {
                    let name = self.names.counts(*day, key);
                    pipe.hset(&name, &self.me.id, wire::counts_value(*requests, *tokens))
                        .ignore();
                    pipe.expire(&name, wire::COUNTS_SECS as i64).ignore();
                }
                Event::Hello => {}
            }
            pipe.publish(self.names.channel(), text).ignore();
        }
        within(pipe.query_async::<()>(conn)).await
    }
}
