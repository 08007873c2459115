//! Delivery on macOS: the user notification center (UNUserNotificationCenter), through
//! pure Rust bindings. It works only in a process started from an app bundle (the center
//! aborts the process otherwise), so outside one (`cargo run`, a bare binary) the log
//! line written when a notification was decided is all there is. Authorization is asked
//! once, when the first notification thread starts; macOS remembers the answer.

use std::sync::atomic::{AtomicU64, Ordering};

use block2::RcBlock;
use objc2::runtime::Bool;
use objc2_foundation::{NSBundle, NSError, NSString};
use objc2_user_notifications::{
    UNAuthorizationOptions, UNMutableNotificationContent, UNNotificationRequest,
    UNUserNotificationCenter,
};
use tokio::sync::mpsc;

use super::Notice;

/// Tells notifications apart (each needs its own identifier to be shown).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Sends each notice until the channel closes (on this thread).
pub(super) fn deliver(mut rx: mpsc::Receiver<Notice>) {
    if NSBundle::mainBundle().bundleIdentifier().is_none() {
        tracing::info!(
            "not running from the app bundle: notifications are written to the log only"
        );
        while rx.blocking_recv().is_some() {}
        return;
    }
    let center = UNUserNotificationCenter::currentNotificationCenter();
    let answered = RcBlock::new(|granted: Bool, _error: *mut NSError| {
        if !granted.as_bool() {
            tracing::info!(
                "notifications are not allowed for llm-rotator (System Settings › Notifications)"
            );
        }
    });
    center.requestAuthorizationWithOptions_completionHandler(
        UNAuthorizationOptions::Alert | UNAuthorizationOptions::Sound,
        &answered,
    );
    while let Some(notice) = rx.blocking_recv() {
        let content = UNMutableNotificationContent::new();
        content.setTitle(&NSString::from_str(&notice.title));
        content.setBody(&NSString::from_str(&notice.body));
        let id = NSString::from_str(&format!(
            "llm-rotator-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let request =
            UNNotificationRequest::requestWithIdentifier_content_trigger(&id, &content, None);
        center.addNotificationRequest_withCompletionHandler(&request, None);
    }
}
