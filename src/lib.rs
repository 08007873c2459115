//! llm-rotator: one OpenAI-compatible endpoint on localhost that rotates across LLM
//! providers when they hit rate limits. The engine (config, pool, upstream, proxy,
//! server) is plain Rust; platform code lives in small modules behind `cfg`.

pub mod admin;
pub mod agent;
pub mod browser;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod files;
pub mod frontends;
pub mod history;
pub mod keys_cli;
pub mod logging;
pub mod paths;
pub mod pool;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod service;
pub mod state;
pub mod strict;
pub mod telemetry;
pub mod tray;
pub mod ui;
pub mod upstream;
pub mod wake;
pub mod watcher;
