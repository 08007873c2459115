//! Network changes through the real binary on Linux: a private bus stands in for the
//! system bus, and NetworkManager's `StateChanged` signal sent on it (disconnected, then
//! connected) ends a transient cooldown at once, as a wake from sleep does.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn networkmanager_saying_connected_again_ends_transient_cooldowns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bus) = PrivateBus::start(dir.path()) else {
        skip(
            "networkmanager_saying_connected_again_ends_transient_cooldowns",
            "dbus-daemon is not installed (Debian package dbus)",
        );
        return;
    };
    let address = bus.address.clone();

    let down = Mock::start(vec![Reply::json(
        503,
        json!({"error": {"message": "down"}}),
    )])
    .await;
    let cfg = config_text(
        "[routing]\ntransient_cooldown_secs = 600\n",
        &[P::new("flaky", &down, 1)],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[
            ("FLAKY_TEST_KEY", "kf-000000000000"),
            ("DBUS_SYSTEM_BUS_ADDRESS", address.as_str()),
        ],
    );
    bin.wait_ready().await;
    let (code, _, _) = chat(
        &bin,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(code, 502);
    assert_eq!(
        provider_status(&bin, "flaky").await["state"],
        "cooling_down"
    );

    let nm = zbus::connection::Builder::address(address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Disconnected (20), then connected globally (70); sent again until the agent,
        // which subscribes at start, has heard it.
        for state in [20u32, 70] {
            nm.emit_signal(
                None::<&str>,
                "/org/freedesktop/NetworkManager",
                "org.freedesktop.NetworkManager",
                "StateChanged",
                &(state,),
            )
            .await
            .unwrap();
        }
        // The pace of sending again; the loop polls for the cooldown's end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if provider_status(&bin, "flaky").await["state"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "the cooldown did not end");
    }
    bin.wait_stderr("the network is back; 1 key is back from transient cooldowns");
}
