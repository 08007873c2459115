//! Network changes, where the platform tells of them. On Linux, NetworkManager's
//! `StateChanged` signal on the system bus: when the machine is connected again (state
//! 70, "connected globally") after it was not, the cooldowns that were our own caution
//! end at once, as after a wake from sleep (see [`crate::wake`]), and the snapshot is
//! published anew so the menu and `/status` tell the fresh story. Without NetworkManager
//! (or a system bus) nothing is watched, and one debug line says so. macOS has no pure
//! Rust binding to its reachability API that we build here, so there a network change
//! is noticed through the wake from sleep that usually comes with it.
//!
//! [`Tracker`] is the pure part (states in, "came back" out); [`start`] is the thin task.

use crate::engine::Engine;

/// NetworkManager's `NM_STATE_CONNECTED_GLOBAL`.
pub const CONNECTED_GLOBAL: u32 = 70;

/// Follows NetworkManager's states.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracker {
    last: Option<u32>,
}

impl Tracker {
    /// Takes a new state; true when the machine is connected again after it was not
    /// (or after a change we did not see the start of).
    pub fn observe(&mut self, state: u32) -> bool {
        let before = self.last.replace(state);
        state >= CONNECTED_GLOBAL && before.is_none_or(|b| b < CONNECTED_GLOBAL)
    }
}

/// Watches for network changes until the returned task is aborted (at shutdown); `None`
/// where the platform does not tell.
pub fn start(engine: &Engine) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(target_os = "linux")]
    {
        let engine = engine.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = linux::watch(&engine).await {
                tracing::debug!("not watching network changes: {e}");
            }
        }))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = engine;
        None
    }
}

/// What a network change did, for the log line.
#[cfg(any(target_os = "linux", test))]
fn change_line(freed: usize) -> String {
    format!(
        "the network is back; {freed} key{} back from transient cooldowns (provider-set waits kept)",
        if freed == 1 { " is" } else { "s are" }
    )
}

#[cfg(target_os = "linux")]
mod linux {
    use futures_util::StreamExt;

    use super::{change_line, Tracker};
    use crate::engine::Engine;

    /// Follows `StateChanged` until the bus goes away.
    pub(super) async fn watch(engine: &Engine) -> zbus::Result<()> {
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            zbus::Connection::system(),
        )
        .await
        .map_err(|_| zbus::Error::Failure("the system bus did not answer".into()))??;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.NetworkManager")?
            .member("StateChanged")?
            .build();
        let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(16)).await?;
        let mut tracker = Tracker::default();
        while let Some(msg) = stream.next().await {
            let Ok(state) = msg.and_then(|m| m.body().deserialize::<u32>()) else {
                continue;
            };
            if tracker.observe(state) {
                let freed = engine.pool.network_changed(chrono::Utc::now());
                tracing::info!("{}", change_line(freed));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_again_after_a_drop_is_a_change_and_staying_connected_is_not() {
        let mut t = Tracker::default();
        // A signal with no earlier state seen: something changed.
        assert!(t.observe(CONNECTED_GLOBAL));
        assert!(!t.observe(CONNECTED_GLOBAL));
        // Disconnecting (20), connecting (40), connected locally (50): not yet.
        assert!(!t.observe(20));
        assert!(!t.observe(40));
        assert!(!t.observe(50));
        assert!(t.observe(CONNECTED_GLOBAL));
    }

    #[test]
    fn the_change_line_counts_the_keys_it_freed() {
        assert_eq!(
            change_line(1),
            "the network is back; 1 key is back from transient cooldowns (provider-set waits kept)"
        );
    }
}
