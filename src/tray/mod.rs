//! The menu-bar app behind `llm-rotator` / `llm-rotator run`: a tray icon whose menu shows
//! every provider live and sends toggles, reloads and quit to the engine. The proxy runs
//! on its own thread ([`crate::agent::serve_in_background`]); the event loop owns the main
//! thread, as macOS requires. Without a display (or in a build without the `tray`
//! feature) `run` serves headless instead.
//!
//! [`menu`] (what the menu says) and [`actions`] (which programs the actions run) are
//! plain, tested logic; only `app` and [`icons`] touch the UI toolkit.

pub mod actions;
#[cfg(feature = "tray")]
mod app;
#[cfg(feature = "tray")]
pub mod icons;
pub mod menu;

use crate::agent::{self, ServeOptions};

/// Environment variable naming a file the app rewrites with the menu's text (see
/// [`menu::MenuModel::dump`]) on every refresh: a debug channel for tests and bug reports.
pub const DUMP_ENV: &str = "LLM_ROTATOR_TRAY_DUMP";

/// Whether a graphical session is there to show a tray icon in (always on macOS; on
/// other systems `DISPLAY` or `WAYLAND_DISPLAY` must be set).
pub fn display_available() -> bool {
    if cfg!(target_os = "macos") {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Runs the agent with its menu-bar icon until Quit (or SIGTERM/SIGINT); serves headless
/// where there is no display.
pub fn run(opts: &ServeOptions) -> anyhow::Result<()> {
    // One agent per port: a second copy finds the first and leaves it be. A foreign
    // program on the port stops a headless agent with the fix in the message; the
    // menu-bar app starts anyway and shows the same fix in its menu.
    let menu_bar = cfg!(feature = "tray") && display_available();
    match crate::service::instance::already_running(opts) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e)
            if menu_bar
                && matches!(
                    e.downcast_ref::<crate::service::instance::InstanceError>(),
                    Some(crate::service::instance::InstanceError::Foreign { .. })
                ) =>
        {
            eprintln!("llm-rotator: {e}");
        }
        Err(e) => return Err(e),
    }
    let prepared = agent::prepare(opts)?;
    #[cfg(feature = "tray")]
    if display_available() {
        return app::run(prepared, opts);
    }
    let why = if cfg!(feature = "tray") {
        "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    } else {
        "this build has no menu-bar app"
    };
    tracing::info!("{why}; running headless like `serve`");
    agent::serve_prepared(prepared)
}
