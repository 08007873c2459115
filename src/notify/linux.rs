//! Delivery on Linux: `org.freedesktop.Notifications.Notify` on the session bus, over
//! zbus on the agent's own runtime. The connection is made on the first notification and
//! kept; a bus or service that is not there costs one warning in the log, not a failure.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Notice, APP_NAME};

/// Longest wait for the bus or the notification service.
const TIMEOUT: Duration = Duration::from_secs(5);

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Sends each notice until the channel closes.
pub(super) async fn deliver(mut rx: mpsc::Receiver<Notice>) {
    let mut conn: Option<zbus::Connection> = None;
    let mut warned = false;
    while let Some(notice) = rx.recv().await {
        let c = match &conn {
            Some(c) => c.clone(),
            None => match tokio::time::timeout(TIMEOUT, zbus::Connection::session()).await {
                Ok(Ok(c)) => {
                    conn = Some(c.clone());
                    c
                }
                Ok(Err(e)) => {
                    say_once(&mut warned, &format!("no session bus ({e})"));
                    continue;
                }
                Err(_) => {
                    say_once(&mut warned, "the session bus did not answer");
                    continue;
                }
            },
        };
        let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
        let body = (
            APP_NAME,
            0u32,
            "",
            notice.title.as_str(),
            notice.body.as_str(),
            Vec::<&str>::new(),
            hints,
            -1i32,
        );
        let call = c.call_method(Some(SERVICE), PATH, Some(SERVICE), "Notify", &body);
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(_)) => {
                warned = false;
                tracing::debug!(title = %notice.title, "notification sent");
            }
            Ok(Err(e)) => {
                say_once(
                    &mut warned,
                    &format!("the notification service refused ({e})"),
                );
                if matches!(e, zbus::Error::InputOutput(_)) {
                    conn = None;
                }
            }
            Err(_) => {
                say_once(&mut warned, "the notification service did not answer");
                conn = None;
            }
        }
    }
}

/// One warning until a notification gets through again (then debug lines).
fn say_once(warned: &mut bool, why: &str) {
    if *warned {
        tracing::debug!("notification not shown: {why}");
    } else {
        tracing::warn!("notification not shown: {why}; they are in this log instead");
        *warned = true;
    }
}
