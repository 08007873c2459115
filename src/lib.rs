//! llm-rotator: one OpenAI-compatible endpoint on localhost that rotates across LLM
//! providers when they hit rate limits. The engine (config, pool, upstream, proxy,
//! http) is plain Rust; platform code lives in small modules behind `cfg`.
//!
//! # Where things are
//!
//! | module | owns | must not |
//! |---|---|---|
//! | [`agent`] | wiring: start-up, the runtime, background tasks, shutdown | hold state of its own |
//! | [`engine`] | the live config and the [`pool`] handle every part shares; reload | parse TOML itself |
//! | [`config`] | raw serde types → validated `Config`; the only code that reads TOML | touch the network |
//! | [`pool`] | **the** provider state: cooldowns and their causes, benches, toggles, counters; snapshots out; `pool/store.rs` keeps it in `state.json` across restarts | do I/O outside `store.rs` |
//! | [`upstream`] | one attempt with reqwest; classifying an answer into an `Outcome`; key masking | decide what comes next |
//! | [`proxy`] | the OpenAI routes and the rotation core ([`proxy::rotate`]), the only caller of `pick`/`report` | keep state between requests |
//! | [`frontends`] | `/v1/responses` and `/v1/messages` translated onto the rotation core | talk to providers directly |
//! | [`http`], [`ui`] | the HTTP edge: accept loop, guards, routes, admin routes (`http/admin.rs`), the OpenAI-style error every route answers with (`http/error.rs`); the dashboard | change state except through the engine |
//! | [`telemetry`], [`history`] | counters for `/metrics` and the dashboard; the usage database | sit on the request path beyond a counter bump |
//! | [`headroom`] | what each key has left and when it runs out, from headers or configured limits (pure) | do I/O |
//! | [`notify`], [`settings`] | desktop notifications decided from successive snapshots; the user's choices outside the config | block a request or the menu |
//! | [`shared`] | the shared pool: the pool's facts to Redis and other machines' facts into the pool, in the background | sit on the request path, or send a key |
//! | [`catalog`], [`strict`] | model catalogs; the Osaurus strict decoder | |
//! | [`secrets`] | the key store (Keychain / Secret Service / env) | log a key |
//! | [`cli`], [`client`], [`browser`] | subcommands and their output (`cli/keys.rs`: `llm-rotator keys`; `cli/doctor.rs`: "Test connection"); the one way a command talks to a running agent; opening the dashboard | talk to a running agent except through [`client`] |
//! | [`tray`] | the menu-bar app on the main thread; `menu.rs` is a pure snapshot → menu model | mutate the pool directly |
//! | [`service`] | launchd (macOS) and systemd (Linux) start-at-login | |
//! | [`paths`] (every file and folder name, the data dir's included), [`files`], [`logging`], [`watcher`], [`wake`], [`network`], [`memory`] | file locations; capped reads and atomic writes; the log writer; config watching; sleep and network-change detection; giving memory back | |
//! | [`ready`] | the ready file: the address the agent listens on, for whoever started it with `--port 0` | |
//!
//! A request's path: [`http`] accepts the connection and checks the guards →
//! [`proxy`] (or [`frontends`]) parses the body → [`proxy::rotate`] picks a key from the
//! [`pool`], sends through [`upstream`], reports the outcome to the pool, [`history`] and
//! [`telemetry`], and on a rate limit picks the next → the answer is relayed as it
//! arrives (`proxy/stream.rs`).
//!
//! # Words
//!
//! - **cooldown**: a key (or provider) is not tried until a time, because the provider
//!   said so (a 429 and its hint) or because it failed (5xx, timeout). "Cooling down" in
//!   the menu and `/status`.
//! - **bench**: a cooldown until a daily or monthly allowance refills ("daily quota used,
//!   back at 02:00"); it survives a wake from sleep, where a plain cooldown may not.
//! - **rejected key**: the provider refused the key (401/403); it stays out until the key
//!   changes or the provider is enabled by hand.
//! - **retired model**: the provider no longer serves a configured model; the next model
//!   of the provider's list is used.
//! - **rotation**: a request moving on to another key or provider after a failed attempt.
//! - **headroom**: what a key has left before its next rate limit, from the provider's
//!   headers or from configured limits.

pub mod agent;
pub mod browser;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod files;
pub mod frontends;
pub mod headroom;
pub mod history;
pub mod http;
pub mod logging;
pub mod memory;
pub mod network;
pub mod notify;
pub mod paths;
pub mod pool;
pub mod proxy;
pub mod ready;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod shared;
pub mod strict;
pub mod telemetry;
pub mod tray;
pub mod ui;
pub mod upstream;
pub mod wake;
pub mod watcher;
