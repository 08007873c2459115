//! Desktop notifications: a nudge when the pool is in trouble, through the platform's own
//! service (the freedesktop notification service over D-Bus on Linux, the user
//! notification center on macOS when running from the app bundle; elsewhere only the
//! log). [`decide`] is the pure core that picks what to say; this module is the thin
//! shell around it: one task watches the pool's snapshots (and a minute tick, for the
//! forecasts) and posts what the core says to a delivery worker of its own, so neither a
//! request nor the tray's main thread ever waits on a notification. The menu's
//! "Notifications" toggle (see [`crate::settings`]) turns sending off; deciding goes on,
//! so turning it back on does not replay the last hour.

pub mod decide;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

pub use decide::{Kind, Notice, Notifier};

use crate::engine::Engine;

/// The app name notifications carry.
pub const APP_NAME: &str = "llm-rotator";

/// At most one look at the pool this often, however busy it is.
const COALESCE: Duration = Duration::from_millis(250);

/// How often the forecasts are looked at when nothing else changes.
const TICK: Duration = Duration::from_secs(60);

/// How many notifications may wait for delivery; past that, new ones are dropped (and
/// logged): a stuck notification service must not grow memory.
const QUEUE: usize = 16;

/// The running notification tasks; [`Notifications::stop`] ends them.
pub struct Notifications {
    watch: tokio::task::JoinHandle<()>,
    deliver: Option<tokio::task::JoinHandle<()>>,
}

impl Notifications {
    /// Stops watching and delivering (at shutdown); what waits is dropped.
    pub fn stop(self) {
        self.watch.abort();
        if let Some(d) = self.deliver {
            d.abort();
        }
    }
}

/// Starts watching `engine`'s pool and delivering what the notifier decides.
pub fn start(engine: &Engine) -> Notifications {
    let (tx, rx) = mpsc::channel::<Notice>(QUEUE);
    let deliver = start_delivery(rx);
    let engine = engine.clone();
    let watch = tokio::spawn(async move {
        let mut notifier = Notifier::new();
        let mut changes = engine.pool.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
            }
            let now = Utc::now();
            let snap = engine.pool.snapshot(now);
            for notice in notifier.observe(&snap, now) {
                if !engine.settings.notifications() {
                    tracing::debug!(title = %notice.title, "notifications are off; not sent");
                    continue;
                }
                tracing::info!(title = %notice.title, "notification: {}", notice.body);
                if tx.try_send(notice).is_err() {
                    tracing::warn!("the notification queue is full; a notification was dropped");
                }
            }
            tokio::time::sleep(COALESCE).await;
        }
    });
    Notifications { watch, deliver }
}

#[cfg(target_os = "linux")]
fn start_delivery(rx: mpsc::Receiver<Notice>) -> Option<tokio::task::JoinHandle<()>> {
    Some(tokio::spawn(linux::deliver(rx)))
}

#[cfg(target_os = "macos")]
fn start_delivery(rx: mpsc::Receiver<Notice>) -> Option<tokio::task::JoinHandle<()>> {
    // The notification center's objects are not `Send`: they live on a thread of their
    // own, which ends when the channel closes.
    let spawned = std::thread::Builder::new()
        .name("llm-rotator-notify".into())
        .spawn(move || macos::deliver(rx));
    if let Err(e) = spawned {
        tracing::warn!("cannot start the notification thread: {e}");
    }
    None
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn start_delivery(mut rx: mpsc::Receiver<Notice>) -> Option<tokio::task::JoinHandle<()>> {
    // No notification service here: the log line written when it was decided is all.
    Some(tokio::spawn(
        async move { while rx.recv().await.is_some() {} },
    ))
}
