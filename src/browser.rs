//! Opening the dashboard in the user's default browser, for the tray's "Open dashboard"
//! and `llm-rotator ui`: `open` on macOS, `xdg-open` elsewhere. Building the command is
//! pure and tested; running it is the only side effect. The URL never carries the auth
//! token (it would stay in the browser's history): the page asks for it.

use std::process::{Command, Stdio};

use crate::config::Config;
use crate::tray::actions::{opener, Platform};

/// The dashboard of the instance running on `config`, e.g. `http://127.0.0.1:8000/ui`.
pub fn dashboard_url(config: &Config) -> String {
    format!("{}/ui", config.admin_url())
}

/// The command that opens `url` on `platform`.
pub fn open_command(url: &str, platform: Platform) -> Command {
    let mut c = Command::new(opener(platform));
    c.arg(url);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Opens `url` in the default browser and waits for the opener to hand it over. `Err`
/// says why it could not (no opener installed, or it failed).
pub fn open(url: &str) -> Result<(), String> {
    let platform = Platform::current();
    match open_command(url, platform).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{} exited with {s}", opener(platform))),
        Err(e) => Err(format!("cannot run {}: {e}", opener(platform))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_opens_with_the_platform_opener_and_the_url_as_its_only_argument() {
        let url = "http://127.0.0.1:8000/ui";
        let mac = open_command(url, Platform::MacOs);
        assert_eq!(mac.get_program(), "open");
        assert_eq!(mac.get_args().collect::<Vec<_>>(), [url]);
        let linux = open_command(url, Platform::Unix { wayland: true });
        assert_eq!(linux.get_program(), "xdg-open");
        assert_eq!(linux.get_args().collect::<Vec<_>>(), [url]);
    }

    #[test]
    fn the_dashboard_url_is_the_admin_address_with_ui() {
        let config = Config::parse("[server]\nport = 8123\n", None).expect("config");
        assert_eq!(dashboard_url(&config), "http://127.0.0.1:8123/ui");
    }
}
