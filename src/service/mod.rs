//! Start at login: `llm-rotator service install | uninstall | status | restart`.
//! On macOS a launchd LaunchAgent ([`launchd`]), on Linux a systemd user service
//! ([`systemd`]). File texts and command lines are built by pure functions; every external
//! command goes through a [`Runner`] so tests record them instead of running the real
//! `launchctl`/`systemctl`. [`instance`] keeps `run` to one copy per port.
//! Nothing here reads or writes keys: the agent finds them itself at start.

pub mod instance;
pub mod launchd;
pub mod systemd;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

/// `service` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServiceAction {
    /// Start llm-rotator at login (and now); run again after moving or upgrading the app.
    Install {
        /// Linux: start with the systemd user session instead of the graphical session
        /// (for machines without a desktop). Implied by builds without the tray.
        #[arg(long)]
        headless: bool,
    },
    /// Stop it and stop starting it at login (config, keys and logs are kept).
    Uninstall,
    /// Show whether it is installed and running.
    Status,
    /// Restart it (e.g. after replacing the binary).
    Restart,
}

/// Errors managing the login agent.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (or stdout when stderr was empty).
        stderr: String,
    },
    /// A file could not be written, created or removed.
    #[error("cannot {what} {path}: {source}")]
    File {
        /// "write", "remove", "create the folder" ...
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The running executable could not be located.
    #[error("cannot find the path of this program: {0}")]
    Exe(#[source] std::io::Error),
    /// A path cannot be written into the plist or unit file.
    #[error("the path {path:?} cannot be used in a {file}: {reason}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// "launchd plist" or "systemd unit".
        file: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// macOS runs a quarantined app from a random read-only copy.
    #[error("LLM Rotator is running from a temporary copy ({0}); move LLM Rotator.app to /Applications, open it from there, then install again")]
    Translocated(PathBuf),
    /// `id -u` gave something unexpected.
    #[error("cannot read the user id from `id -u`: {0:?}")]
    Uid(String),
    /// No home directory.
    #[error("cannot find the home directory")]
    NoHome,
    /// `restart` before `install`.
    #[error(
        "llm-rotator is not installed as a login agent; run `llm-rotator service install` first"
    )]
    NotInstalled,
}

/// One external command: a program and its arguments, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program, looked up in `PATH`.
    pub program: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Cmd {
    /// `program args...`.
    pub fn new(program: &'static str, args: &[&str]) -> Cmd {
        Cmd {
            program,
            args: args.iter().map(|a| (*a).to_string()).collect(),
        }
    }
}

impl fmt::Display for Cmd {
    /// The command as a user could paste it into a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program)?;
        for a in &self.args {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
            if plain {
                write!(f, " {a}")?;
            } else {
                write!(f, " '{}'", a.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

/// What a finished command said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs external commands. The real one is [`SystemRunner`]; tests record instead.
pub trait Runner {
    /// Runs `cmd` to completion and captures its output. `Err` only when it could not run.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, ServiceError>;

    /// Waits a little between polls (tests do not wait).
    fn pause(&self, how_long: Duration) {
        std::thread::sleep(how_long);
    }
}

/// Runs commands for real with `std::process::Command`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, ServiceError> {
        let out = std::process::Command::new(cmd.program)
            .args(&cmd.args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ServiceError::Spawn {
                command: cmd.to_string(),
                source,
            })?;
        Ok(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Runs `cmd` and turns a non-zero exit into [`ServiceError::Failed`] naming the command.
pub fn run_checked(runner: &dyn Runner, cmd: &Cmd) -> Result<CmdOutput, ServiceError> {
    let out = runner.run(cmd)?;
    if out.success() {
        return Ok(out);
    }
    let said = if out.stderr.trim().is_empty() {
        out.stdout.trim()
    } else {
        out.stderr.trim()
    };
    Err(ServiceError::Failed {
        command: cmd.to_string(),
        status: match out.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_string(),
        },
        stderr: if said.is_empty() {
            "(no output)".to_string()
        } else {
            said.to_string()
        },
    })
}

/// Where things are for this user, and which program to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The home directory.
    pub home: PathBuf,
    /// The XDG config dir (Linux: `$XDG_CONFIG_HOME` or ~/.config).
    pub config_home: PathBuf,
    /// Absolute path of the program to start (the one inside the .app when bundled).
    pub exe: PathBuf,
    /// Linux: the unit waits for the graphical session (the tray needs it).
    pub tray: bool,
}

impl Setup {
    /// This user and this executable.
    pub fn from_os(headless: bool) -> Result<Setup, ServiceError> {
        let dirs = directories::BaseDirs::new().ok_or(ServiceError::NoHome)?;
        let exe = std::env::current_exe().map_err(ServiceError::Exe)?;
        // Resolves symlinks (e.g. a Homebrew `bin/llm-rotator`) to the real file, which
        // for a bundle is `LLM Rotator.app/Contents/MacOS/llm-rotator`.
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        Ok(Setup {
            home: dirs.home_dir().to_path_buf(),
            config_home: dirs.config_dir().to_path_buf(),
            exe,
            tray: cfg!(feature = "tray") && !headless,
        })
    }
}

/// What a subcommand reports: text for the user and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines to print.
    pub text: String,
    /// 0 = done / running; 3 = not running (like `systemctl is-active`).
    pub code: u8,
}

impl Report {
    /// A successful report.
    pub fn ok(text: impl Into<String>) -> Report {
        Report {
            text: text.into(),
            code: 0,
        }
    }
}

/// The service manager of this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// launchd (macOS).
    Launchd,
    /// systemd user services (Linux and others).
    Systemd,
}

impl Platform {
    /// The one this build manages.
    pub fn current() -> Platform {
        #[cfg(target_os = "macos")]
        {
            Platform::Launchd
        }
        #[cfg(not(target_os = "macos"))]
        {
            Platform::Systemd
        }
    }
}

/// Runs one subcommand for `platform` with `runner`.
pub fn execute(
    platform: Platform,
    action: &ServiceAction,
    setup: &Setup,
    runner: &dyn Runner,
) -> Result<Report, ServiceError> {
    match (platform, action) {
        (Platform::Launchd, ServiceAction::Install { .. }) => launchd::install(setup, runner),
        (Platform::Launchd, ServiceAction::Uninstall) => launchd::uninstall(setup, runner),
        (Platform::Launchd, ServiceAction::Status) => launchd::status(setup, runner),
        (Platform::Launchd, ServiceAction::Restart) => launchd::restart(setup, runner),
        (Platform::Systemd, ServiceAction::Install { .. }) => systemd::install(setup, runner),
        (Platform::Systemd, ServiceAction::Uninstall) => systemd::uninstall(setup, runner),
        (Platform::Systemd, ServiceAction::Status) => systemd::status(setup, runner),
        (Platform::Systemd, ServiceAction::Restart) => systemd::restart(setup, runner),
    }
}

/// `llm-rotator service ...` for real: this user, this executable, real commands.
pub fn command(action: &ServiceAction) -> Result<ExitCode, ServiceError> {
    let headless = matches!(action, ServiceAction::Install { headless: true });
    let setup = Setup::from_os(headless)?;
    let report = execute(Platform::current(), action, &setup, &SystemRunner)?;
    print!("{}", report.text);
    Ok(ExitCode::from(report.code))
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees
/// half a file; creates the parent folder.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), ServiceError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServiceError::File {
            what: "create the folder",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ServiceError::File {
            what: "write",
            path: path.to_path_buf(),
            source,
        })
}

/// Removes `path`; `Ok(false)` when it was not there.
pub(crate) fn remove_file(path: &Path) -> Result<bool, ServiceError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServiceError::File {
            what: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The program path as UTF-8 text without control characters (both file formats need it).
pub(crate) fn path_text<'a>(path: &'a Path, file: &'static str) -> Result<&'a str, ServiceError> {
    let bad = |reason| ServiceError::BadPath {
        path: path.to_path_buf(),
        file,
        reason,
    };
    let text = path.to_str().ok_or_else(|| bad("it is not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("it is not absolute"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("it contains a control character"));
    }
    Ok(text)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A [`Runner`] that records commands and answers from a script.

    use std::cell::RefCell;

    use super::{Cmd, CmdOutput, Runner, ServiceError};

    /// Answers by the first matching rule: (args prefix joined by spaces, code, stdout, stderr).
    #[derive(Default)]
    pub struct FakeRunner {
        pub rules: Vec<(String, i32, String, String)>,
        pub calls: RefCell<Vec<Cmd>>,
    }

    impl FakeRunner {
        pub fn new() -> FakeRunner {
            let mut r = FakeRunner::default();
            r.answer("id -u", 0, "501\n", "");
            r
        }

        /// Adds a rule in front of the others.
        pub fn answer(&mut self, prefix: &str, code: i32, stdout: &str, stderr: &str) {
            self.rules.insert(
                0,
                (
                    prefix.to_string(),
                    code,
                    stdout.to_string(),
                    stderr.to_string(),
                ),
            );
        }

        /// Every command line so far, as `program arg arg`.
        pub fn lines(&self) -> Vec<String> {
            self.calls
                .borrow()
                .iter()
                .map(|c| format!("{} {}", c.program, c.args.join(" ")))
                .collect()
        }
    }

    impl Runner for FakeRunner {
        fn run(&self, cmd: &Cmd) -> Result<CmdOutput, ServiceError> {
            self.calls.borrow_mut().push(cmd.clone());
            let line = format!("{} {}", cmd.program, cmd.args.join(" "));
            let rule = self
                .rules
                .iter()
                .find(|(p, ..)| line.starts_with(p.as_str()));
            Ok(match rule {
                Some((_, code, out, err)) => CmdOutput {
                    code: Some(*code),
                    stdout: out.clone(),
                    stderr: err.clone(),
                },
                None => CmdOutput {
                    code: Some(0),
                    ..CmdOutput::default()
                },
            })
        }

        fn pause(&self, _: std::time::Duration) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_print_as_pasteable_shell_lines() {
        let c = Cmd::new(
            "launchctl",
            &["bootstrap", "gui/501", "/Users/a b/it's.plist"],
        );
        assert_eq!(
            c.to_string(),
            r"launchctl bootstrap gui/501 '/Users/a b/it'\''s.plist'"
        );
    }

    #[test]
    fn a_failed_command_is_reported_with_its_line_and_stderr() {
        let mut r = fake::FakeRunner::new();
        r.answer(
            "launchctl bootstrap",
            5,
            "",
            "Bootstrap failed: 5: Input/output error\n",
        );
        let err = run_checked(&r, &Cmd::new("launchctl", &["bootstrap", "gui/501", "/x"]))
            .expect_err("fails");
        assert_eq!(
            err.to_string(),
            "`launchctl bootstrap gui/501 /x` failed (exit code 5): Bootstrap failed: 5: Input/output error"
        );
    }

    #[test]
    fn paths_must_be_absolute_and_printable() {
        assert!(path_text(Path::new("relative/llm-rotator"), "systemd unit").is_err());
        assert!(path_text(Path::new("/a\nb"), "systemd unit").is_err());
        assert_eq!(
            path_text(Path::new("/Applications/LLM Rotator.app"), "x").expect("ok"),
            "/Applications/LLM Rotator.app"
        );
    }
}
