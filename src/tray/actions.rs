//! What the menu's action items do outside the process: the clipboard, opening files,
//! the hidden API-key prompt, and the `keys` / `service` subcommands of this very binary
//! (spawning our own executable keeps the tray independent of how keys and login items
//! are stored). Every function here blocks (processes, dialogs): the UI calls them from a
//! thread of their own and shows the returned notice. Choosing the program is a pure
//! function of the platform and of which tools are installed, tested on Linux.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::secrets::ApiKey;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The executable name (looked up in `PATH`).
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Program {
    fn new(name: &str, args: &[&str]) -> Program {
        Program {
            name: name.to_string(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.name);
        c.args(&self.args);
        c
    }
}

/// The platform the choices are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// macOS.
    MacOs,
    /// Linux or another Unix with X11 or Wayland.
    Unix {
        /// A Wayland session (`WAYLAND_DISPLAY` set).
        wayland: bool,
    },
}

impl Platform {
    /// The platform this process runs on.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Unix {
                wayland: std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty()),
            }
        }
    }
}

/// Whether `name` is an executable file in one of the `PATH` directories.
pub fn in_path(name: &str, path: Option<&OsString>) -> bool {
    path.is_some_and(|p| std::env::split_paths(p).any(|dir| is_executable(&dir.join(name))))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn installed(name: &str) -> bool {
    in_path(name, std::env::var_os("PATH").as_ref())
}

/// The program that puts its standard input on the clipboard, if one is installed.
pub fn clipboard_program(platform: Platform, has: impl Fn(&str) -> bool) -> Option<Program> {
    let candidates = match platform {
        Platform::MacOs => vec![Program::new("pbcopy", &[])],
        Platform::Unix { wayland } => {
            let mut v = Vec::new();
            if wayland {
                v.push(Program::new("wl-copy", &[]));
            }
            v.push(Program::new("xclip", &["-selection", "clipboard"]));
            v.push(Program::new("xsel", &["--clipboard", "--input"]));
            v
        }
    };
    candidates.into_iter().find(|p| has(&p.name))
}

/// The program that opens a file or folder in the user's default application.
pub fn opener(platform: Platform) -> &'static str {
    match platform {
        Platform::MacOs => "open",
        Platform::Unix { .. } => "xdg-open",
    }
}

/// The native prompt with hidden input that prints the typed key, if one is available.
/// Cancelling makes it exit non-zero.
pub fn key_prompt_program(
    provider: &str,
    platform: Platform,
    has: impl Fn(&str) -> bool,
) -> Option<Program> {
    let question = format!(
        "API key for {provider} (stored in the system keychain; replaces its current key):"
    );
    match platform {
        Platform::MacOs => {
            let script = format!(
                "display dialog \"{}\" default answer \"\" with hidden answer with title \"llm-rotator\"",
                question.replace('\\', "\\\\").replace('"', "\\\"")
            );
            Some(Program {
                name: "osascript".into(),
                args: vec![
                    "-e".into(),
                    script,
                    "-e".into(),
                    "text returned of result".into(),
                ],
            })
        }
        Platform::Unix { .. } if has("zenity") => Some(Program {
            name: "zenity".into(),
            args: vec![
                "--entry".into(),
                "--hide-text".into(),
                "--title=llm-rotator".into(),
                format!("--text={question}"),
            ],
        }),
        Platform::Unix { .. } if has("kdialog") => Some(Program {
            name: "kdialog".into(),
            args: vec![
                "--title".into(),
                "llm-rotator".into(),
                "--password".into(),
                question,
            ],
        }),
        Platform::Unix { .. } => None,
    }
}

/// How to run this binary's own subcommands: the executable plus the `--config` and
/// `--data-dir` the agent was started with, so they act on the same files.
#[derive(Debug, Clone)]
pub struct SelfCommand {
    /// Our executable.
    pub exe: PathBuf,
    /// Global arguments to put before the subcommand.
    pub global: Vec<OsString>,
}

impl SelfCommand {
    /// For this process with these overrides.
    pub fn new(config: Option<&Path>, data_dir: Option<&Path>) -> std::io::Result<SelfCommand> {
        let mut global = Vec::new();
        if let Some(c) = config {
            global.push("--config".into());
            global.push(c.as_os_str().to_owned());
        }
        if let Some(d) = data_dir {
            global.push("--data-dir".into());
            global.push(d.as_os_str().to_owned());
        }
        Ok(SelfCommand {
            exe: std::env::current_exe()?,
            global,
        })
    }

    /// A command for `llm-rotator <global> <args>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(&self.global).args(args).stdin(Stdio::null());
        c
    }

    /// Whether this build has the subcommand (its `--help` succeeds).
    pub fn has_subcommand(&self, name: &str) -> bool {
        self.command(&[name, "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The last non-empty line a failed command wrote (the interesting one with clap and
/// `anyhow` errors).
pub fn last_line(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Copies `text` to the clipboard; the notice says what happened (the text itself when
/// no clipboard tool is installed, so it can be copied by hand).
pub fn copy_to_clipboard(text: &str) -> String {
    let Some(program) = clipboard_program(Platform::current(), installed) else {
        return format!("Endpoint: {text} (no clipboard tool found)");
    };
    let run = || -> std::io::Result<bool> {
        let mut child = program
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes())?;
        }
        Ok(child.wait()?.success())
    };
    match run() {
        Ok(true) => format!("Copied {text}"),
        Ok(false) | Err(_) => format!("Endpoint: {text} ({} failed)", program.name),
    }
}

/// Opens a file or folder with the default application.
pub fn open_path(path: &Path, create_dir: bool) -> Option<String> {
    if create_dir {
        if let Err(e) = std::fs::create_dir_all(path) {
            return Some(format!("Cannot create {}: {e}", path.display()));
        }
    }
    let program = opener(Platform::current());
    let status = Command::new(program)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => None,
        Ok(_) | Err(_) => Some(format!("Could not open it; it is at {}", path.display())),
    }
}

/// The hint shown where the key cannot be asked for here.
pub fn keys_hint(provider: &str) -> String {
    format!("Run in a terminal: llm-rotator keys set {provider}")
}

/// The outcome of "Set API key…".
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Stored: the running engine should re-read its keys.
    Saved(String),
    /// Nothing changed; the notice says why (cancelled, no prompt, failure).
    Unchanged(Option<String>),
}

/// Asks for `provider`'s key with a hidden prompt and stores it through
/// `llm-rotator keys set <provider>` (the key goes on its standard input, never on a
/// command line).
pub fn set_key(me: &SelfCommand, provider: &str) -> KeyOutcome {
    if !me.has_subcommand("keys") {
        return KeyOutcome::Unchanged(Some(keys_hint(provider)));
    }
    let Some(prompt) = key_prompt_program(provider, Platform::current(), installed) else {
        return KeyOutcome::Unchanged(Some(keys_hint(provider)));
    };
    let answer = prompt
        .command()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let key = match answer {
        Ok(out) if out.status.success() => {
            ApiKey::new(String::from_utf8_lossy(&out.stdout).trim_end_matches(['\r', '\n']))
        }
        // Cancelled.
        Ok(_) => return KeyOutcome::Unchanged(None),
        Err(_) => return KeyOutcome::Unchanged(Some(keys_hint(provider))),
    };
    let Some(key) = key else {
        return KeyOutcome::Unchanged(Some("No key entered; nothing changed".into()));
    };
    let run = || -> std::io::Result<std::process::Output> {
        // The dialog names the provider and says it replaces the key: that is the
        // explicit choice `keys set` asks for before replacing one.
        let mut child = me
            .command(&["keys", "set", provider, "--replace"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(key.expose().as_bytes())?;
            stdin.write_all(b"\n")?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => {
            KeyOutcome::Saved(format!("Key saved for {provider} ({})", key.fingerprint()))
        }
        Ok(out) => {
            KeyOutcome::Unchanged(Some(format!("Key not saved: {}", last_line(&out.stderr))))
        }
        Err(e) => KeyOutcome::Unchanged(Some(format!("Key not saved: {e}"))),
    }
}

/// Whether the login item is installed: `Some(true/false)` from `llm-rotator service
/// status` (exit code 0 = installed), `None` when this build has no `service` command.
pub fn login_item_installed(me: &SelfCommand) -> Option<bool> {
    if !me.has_subcommand("service") {
        return None;
    }
    let status = me
        .command(&["service", "status"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    Some(status.success())
}

/// Installs or removes the login item; `Err` carries the notice to show.
pub fn set_login_item(me: &SelfCommand, on: bool) -> Result<(), String> {
    let verb = if on { "install" } else { "uninstall" };
    match me.command(&["service", verb]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "Start at login not changed: {}",
            last_line(&out.stderr)
        )),
        Err(e) => Err(format!("Start at login not changed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |n| names.contains(&n)
    }

    #[test]
    fn clipboard_prefers_the_session_tool() {
        let x11 = Platform::Unix { wayland: false };
        let wl = Platform::Unix { wayland: true };
        let all = only(&["wl-copy", "xclip", "xsel"]);
        assert_eq!(
            clipboard_program(wl, &all).map(|p| p.name),
            Some("wl-copy".into())
        );
        assert_eq!(
            clipboard_program(x11, &all).map(|p| p.name),
            Some("xclip".into())
        );
        assert_eq!(
            clipboard_program(x11, only(&["xsel"])).map(|p| p.args),
            Some(vec!["--clipboard".to_string(), "--input".to_string()])
        );
        assert_eq!(clipboard_program(x11, only(&[])), None);
        assert_eq!(
            clipboard_program(Platform::MacOs, only(&["pbcopy"])).map(|p| p.name),
            Some("pbcopy".into())
        );
    }

    #[test]
    fn files_open_with_the_platform_opener() {
        assert_eq!(opener(Platform::MacOs), "open");
        assert_eq!(opener(Platform::Unix { wayland: false }), "xdg-open");
    }

    #[test]
    fn key_prompts_hide_the_input() {
        let mac = key_prompt_program("groq", Platform::MacOs, only(&[])).unwrap();
        assert_eq!(mac.name, "osascript");
        assert!(mac.args[1].contains("with hidden answer"), "{mac:?}");
        assert!(mac.args[1].contains("API key for groq"));
        let x = Platform::Unix { wayland: false };
        let zenity = key_prompt_program("groq", x, only(&["zenity", "kdialog"])).unwrap();
        assert_eq!(zenity.name, "zenity");
        assert!(zenity.args.contains(&"--hide-text".to_string()));
        let kdialog = key_prompt_program("groq", x, only(&["kdialog"])).unwrap();
        assert!(kdialog.args.contains(&"--password".to_string()));
        assert_eq!(key_prompt_program("groq", x, only(&[])), None);
    }

    #[test]
    fn applescript_quotes_are_escaped() {
        let p = key_prompt_program("my \"odd\" one", Platform::MacOs, only(&[])).unwrap();
        assert!(p.args[1].contains("my \\\"odd\\\" one"), "{}", p.args[1]);
    }

    #[test]
    fn path_lookup_finds_executables_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert!(in_path("tool", Some(&path)));
        assert!(!in_path("data", Some(&path)));
        assert!(!in_path("missing", Some(&path)));
        assert!(!in_path("tool", None));
    }

    #[test]
    fn self_commands_keep_the_files_of_this_run() {
        let me = SelfCommand::new(Some(Path::new("/c.toml")), Some(Path::new("/d"))).unwrap();
        let c = me.command(&["keys", "set", "groq"]);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(
            args,
            [
                "--config",
                "/c.toml",
                "--data-dir",
                "/d",
                "keys",
                "set",
                "groq"
            ]
        );
    }

    #[test]
    fn missing_subcommands_are_detected() {
        // The test binary does not know `keys`: clap-less, it fails, like an old build.
        let me = SelfCommand {
            exe: PathBuf::from("false"),
            global: Vec::new(),
        };
        assert!(!me.has_subcommand("keys"));
        assert_eq!(login_item_installed(&me), None);
        assert_eq!(
            set_key(&me, "groq"),
            KeyOutcome::Unchanged(Some(keys_hint("groq")))
        );
    }

    #[test]
    fn last_line_is_the_error() {
        assert_eq!(
            last_line(b"warning\nerror: no such provider\n\n"),
            "error: no such provider"
        );
        assert_eq!(last_line(b""), "");
    }
}
