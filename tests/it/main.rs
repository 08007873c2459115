//! All integration tests, linked into one test binary.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed expectation is how a test (and its helpers) reports failure"
)]

mod background_agent;
mod cli;
mod common;
mod dashboard;
mod doctor;
mod frontends;
mod hardening;
mod headroom;
mod history;
mod hostile;
mod keys;
mod memory;
mod models;
#[cfg(target_os = "linux")]
mod network;
#[cfg(target_os = "linux")]
mod notifications;
mod osaurus;
mod providers;
mod proxy;
mod real_clients;
mod sdk;
mod service;
mod shared;
mod state;
