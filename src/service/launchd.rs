//! The macOS login agent: the LaunchAgent plist (rendered from
//! `launchd/com.llmrotator.agent.plist`) and the `launchctl` command lines that load,
//! unload, restart and inspect it in the user's GUI domain (`gui/<uid>`, the uid read from
//! `id -u`). Rendering and command lines are pure; the flows only talk to launchctl
//! through a [`Runner`], so they are tested on Linux with recorded commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{path_text, run_checked, Cmd, Report, Runner, ServiceError, Setup};
use crate::paths::{self, APP_ID};

/// The launchd label (also the bundle identifier).
pub const LABEL: &str = APP_ID;

/// Least seconds between two starts, so a crash loop costs little.
pub const THROTTLE_SECS: u32 = 10;

/// The plist template with `{{PROGRAM}}`, `{{THROTTLE_SECS}}`, `{{STDOUT_PATH}}` and
/// `{{STDERR_PATH}}` fields.
pub const TEMPLATE: &str = include_str!("../../launchd/com.llmrotator.agent.plist");

/// What goes into the plist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchAgent {
    /// Absolute path of the executable (started with `run`).
    pub program: PathBuf,
    /// Where launchd writes the agent's stdout and stderr.
    pub log_dir: PathBuf,
}

impl LaunchAgent {
    /// The agent for `setup`: its executable, logs in ~/Library/Logs/llm-rotator.
    pub fn for_setup(setup: &Setup) -> LaunchAgent {
        LaunchAgent {
            program: setup.exe.clone(),
            log_dir: paths::macos_log_dir(&setup.home),
        }
    }

    /// The file launchd sends stdout to (panics and messages from before logging starts).
    pub fn stdout_path(&self) -> PathBuf {
        self.log_dir.join("launchd-stdout.log")
    }

    /// The file launchd sends stderr to.
    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir.join("launchd-stderr.log")
    }
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The plist text for `agent`.
pub fn render_plist(agent: &LaunchAgent) -> Result<String, ServiceError> {
    const FILE: &str = "launchd plist";
    let program = path_text(&agent.program, FILE)?;
    let stdout = agent.stdout_path();
    let stderr = agent.stderr_path();
    Ok(TEMPLATE
        .replace("{{PROGRAM}}", &xml_escape(program))
        .replace("{{THROTTLE_SECS}}", &THROTTLE_SECS.to_string())
        .replace("{{STDOUT_PATH}}", &xml_escape(path_text(&stdout, FILE)?))
        .replace("{{STDERR_PATH}}", &xml_escape(path_text(&stderr, FILE)?)))
}

/// `id -u`: the uid of the user running us, from the OS.
pub fn uid_cmd() -> Cmd {
    Cmd::new("id", &["-u"])
}

/// The uid printed by `id -u`.
pub fn parse_uid(stdout: &str) -> Result<u32, ServiceError> {
    stdout
        .trim()
        .parse()
        .map_err(|_| ServiceError::Uid(stdout.to_string()))
}

/// `gui/<uid>`: the user's login-session domain.
pub fn domain(uid: u32) -> String {
    format!("gui/{uid}")
}

/// `gui/<uid>/com.llmrotator.agent`.
pub fn service_target(uid: u32) -> String {
    format!("gui/{uid}/{LABEL}")
}

/// `launchctl print gui/<uid>/<label>`: succeeds only when the agent is loaded.
pub fn print_cmd(uid: u32) -> Cmd {
    Cmd::new("launchctl", &["print", &service_target(uid)])
}

/// `launchctl enable gui/<uid>/<label>`: clears an earlier `disable` (e.g. from Login
/// Items in System Settings) so bootstrap is allowed.
pub fn enable_cmd(uid: u32) -> Cmd {
    Cmd::new("launchctl", &["enable", &service_target(uid)])
}

/// `launchctl bootstrap gui/<uid> <plist>`: loads the agent (and starts it: RunAtLoad).
pub fn bootstrap_cmd(uid: u32, plist: &Path) -> Cmd {
    Cmd {
        program: "launchctl",
        args: vec![
            "bootstrap".to_string(),
            domain(uid),
            plist.to_string_lossy().into_owned(),
        ],
    }
}

/// `launchctl bootout gui/<uid>/<label>`: stops and unloads the agent.
pub fn bootout_cmd(uid: u32) -> Cmd {
    Cmd::new("launchctl", &["bootout", &service_target(uid)])
}

/// `launchctl kickstart -k gui/<uid>/<label>`: kills the running copy and starts it again.
pub fn kickstart_cmd(uid: u32) -> Cmd {
    Cmd::new("launchctl", &["kickstart", "-k", &service_target(uid)])
}

/// What `launchctl print` says about a loaded agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrintInfo {
    /// `state` ("running", "not running", ...).
    pub state: Option<String>,
    /// `pid` while running.
    pub pid: Option<u32>,
    /// `last exit code` ("0", "(never exited)", ...).
    pub last_exit: Option<String>,
    /// `program`.
    pub program: Option<String>,
}

/// Reads the top-level `key = value` lines of `launchctl print` (nested blocks are
/// indented deeper and skipped).
pub fn parse_print(text: &str) -> PrintInfo {
    let mut info = PrintInfo::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('\t') else {
            continue;
        };
        if rest.starts_with('\t') {
            continue;
        }
        let Some((key, value)) = rest.split_once(" = ") else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "state" => info.state = Some(value),
            "pid" => info.pid = value.parse().ok(),
            "last exit code" => info.last_exit = Some(value),
            "program" => info.program = Some(value),
            _ => {}
        }
    }
    info
}

/// Refuses a path macOS made up for a quarantined app (it disappears after quitting).
pub fn check_program(program: &Path) -> Result<(), ServiceError> {
    if program
        .components()
        .any(|c| c.as_os_str() == "AppTranslocation")
    {
        return Err(ServiceError::Translocated(program.to_path_buf()));
    }
    Ok(())
}

fn uid(runner: &dyn Runner) -> Result<u32, ServiceError> {
    parse_uid(&run_checked(runner, &uid_cmd())?.stdout)
}

/// `Some(info)` when the agent is loaded in the user's domain.
fn loaded(runner: &dyn Runner, uid: u32) -> Result<Option<PrintInfo>, ServiceError> {
    let out = runner.run(&print_cmd(uid))?;
    Ok(out.success().then(|| parse_print(&out.stdout)))
}

/// Boots the agent out and waits (up to 5 s) until launchd has let go of it; bootstrapping
/// again too early fails with "Input/output error".
fn bootout(runner: &dyn Runner, uid: u32) -> Result<(), ServiceError> {
    run_checked(runner, &bootout_cmd(uid))?;
    for _ in 0..50 {
        if loaded(runner, uid)?.is_none() {
            break;
        }
        runner.pause(Duration::from_millis(100));
    }
    Ok(())
}

/// Writes the plist for this executable and (re)loads it: one agent, the new path.
pub fn install(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    check_program(&setup.exe)?;
    let agent = LaunchAgent::for_setup(setup);
    let text = render_plist(&agent)?;
    let plist = paths::launch_agent_plist(&setup.home);
    let uid = uid(runner)?;
    std::fs::create_dir_all(&agent.log_dir).map_err(|source| ServiceError::File {
        what: "create the folder",
        path: agent.log_dir.clone(),
        source,
    })?;
    let replaced = loaded(runner, uid)?.is_some();
    if replaced {
        bootout(runner, uid)?;
    }
    super::write_file(&plist, &text)?;
    run_checked(runner, &enable_cmd(uid))?;
    run_checked(runner, &bootstrap_cmd(uid, &plist))?;
    Ok(Report::ok(format!(
        "{} the login agent {LABEL}: {} run\n\
         plist: {}\n\
         logs: {}\n\
         It starts at every login and again after a crash; Quit stops it until the next login.\n",
        if replaced { "Replaced" } else { "Installed" },
        setup.exe.display(),
        plist.display(),
        agent.log_dir.display()
    )))
}

/// Unloads the agent and removes its plist; says so when there was nothing to remove.
pub fn uninstall(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let plist = paths::launch_agent_plist(&setup.home);
    let uid = uid(runner)?;
    let was_loaded = loaded(runner, uid)?.is_some();
    if was_loaded {
        bootout(runner, uid)?;
    }
    let removed = super::remove_file(&plist)?;
    if !was_loaded && !removed {
        return Ok(Report::ok(format!(
            "llm-rotator is not installed as a login agent ({} does not exist); nothing to do.\n",
            plist.display()
        )));
    }
    Ok(Report::ok(format!(
        "Removed the login agent {LABEL} ({}).\n\
         Config, keys and logs are kept; see the README to remove them too.\n",
        plist.display()
    )))
}

/// Installed? Loaded? Running with which pid?
pub fn status(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let plist = paths::launch_agent_plist(&setup.home);
    let uid = uid(runner)?;
    let info = loaded(runner, uid)?;
    let mut text = if plist.exists() {
        format!("login agent: installed ({})\n", plist.display())
    } else {
        format!("login agent: not installed ({} missing)\n", plist.display())
    };
    let running = match &info {
        None => {
            text.push_str("launchd: not loaded\n");
            false
        }
        Some(i) => {
            let state = i.state.as_deref().unwrap_or("unknown");
            text.push_str(&format!("launchd: loaded, {state}"));
            if let Some(pid) = i.pid {
                text.push_str(&format!(", pid {pid}"));
            }
            if let Some(code) = &i.last_exit {
                text.push_str(&format!(", last exit code {code}"));
            }
            text.push('\n');
            if let Some(p) = &i.program {
                text.push_str(&format!("program: {p}\n"));
            }
            state == "running"
        }
    };
    text.push_str(&format!(
        "logs: {}\n",
        paths::macos_log_dir(&setup.home).display()
    ));
    Ok(Report {
        text,
        code: if running { 0 } else { 3 },
    })
}

/// Restarts the agent (loads it first when the plist exists but is not loaded).
pub fn restart(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let plist = paths::launch_agent_plist(&setup.home);
    let uid = uid(runner)?;
    if loaded(runner, uid)?.is_some() {
        run_checked(runner, &kickstart_cmd(uid))?;
    } else if plist.exists() {
        run_checked(runner, &enable_cmd(uid))?;
        run_checked(runner, &bootstrap_cmd(uid, &plist))?;
    } else {
        return Err(ServiceError::NotInstalled);
    }
    Ok(Report::ok(format!("Restarted the login agent {LABEL}.\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::fake::FakeRunner;

    fn setup(home: &Path) -> Setup {
        Setup {
            home: home.to_path_buf(),
            config_home: home.join(".config"),
            exe: PathBuf::from("/Applications/LLM Rotator.app/Contents/MacOS/llm-rotator"),
            tray: true,
        }
    }

    const PRINT_RUNNING: &str = "gui/501/com.llmrotator.agent = {\n\tactive count = 1\n\tpath = /Users/me/Library/LaunchAgents/com.llmrotator.agent.plist\n\ttype = LaunchAgent\n\tstate = running\n\n\tprogram = /Applications/LLM Rotator.app/Contents/MacOS/llm-rotator\n\targuments = {\n\t\t/Applications/LLM Rotator.app/Contents/MacOS/llm-rotator\n\t\trun\n\t}\n\n\tpid = 4242\n\tlast exit code = (never exited)\n\tspawn type = interactive (4)\n\tproperties = {\n\t\tstate = nested\n\t}\n}\n";

    #[test]
    fn xml_special_characters_are_escaped() {
        assert_eq!(
            xml_escape(r#"/a&b/<c>/"d"/'e'"#),
            "/a&amp;b/&lt;c&gt;/&quot;d&quot;/&apos;e&apos;"
        );
    }

    #[test]
    fn the_plist_names_the_program_run_and_the_log_files() {
        let text = render_plist(&LaunchAgent {
            program: PathBuf::from("/Apps/R&D <1>/llm-rotator"),
            log_dir: PathBuf::from("/Users/me/Library/Logs/llm-rotator"),
        })
        .expect("renders");
        assert!(text.contains(
            "<string>/Apps/R&amp;D &lt;1&gt;/llm-rotator</string>\n\t\t<string>run</string>"
        ));
        assert!(
            text.contains("<string>/Users/me/Library/Logs/llm-rotator/launchd-stderr.log</string>")
        );
        assert!(text.contains("<integer>10</integer>"));
        assert!(!text.contains("{{"), "every field is filled");
        assert!(!text.contains("EnvironmentVariables"));
    }

    #[test]
    fn a_relative_program_path_is_refused() {
        let err = render_plist(&LaunchAgent {
            program: PathBuf::from("llm-rotator"),
            log_dir: PathBuf::from("/tmp"),
        })
        .expect_err("refused");
        assert!(err.to_string().contains("not absolute"), "{err}");
    }

    #[test]
    fn launchctl_command_lines_target_the_users_gui_domain() {
        let lines: Vec<Vec<String>> = [
            print_cmd(502),
            enable_cmd(502),
            bootstrap_cmd(
                502,
                Path::new("/Users/me/Library/LaunchAgents/com.llmrotator.agent.plist"),
            ),
            bootout_cmd(502),
            kickstart_cmd(502),
        ]
        .into_iter()
        .map(|c| {
            assert_eq!(c.program, "launchctl");
            c.args
        })
        .collect();
        let expected: Vec<Vec<&str>> = vec![
            vec!["print", "gui/502/com.llmrotator.agent"],
            vec!["enable", "gui/502/com.llmrotator.agent"],
            vec![
                "bootstrap",
                "gui/502",
                "/Users/me/Library/LaunchAgents/com.llmrotator.agent.plist",
            ],
            vec!["bootout", "gui/502/com.llmrotator.agent"],
            vec!["kickstart", "-k", "gui/502/com.llmrotator.agent"],
        ];
        assert_eq!(lines, expected);
        assert_eq!(uid_cmd(), Cmd::new("id", &["-u"]));
    }

    #[test]
    fn the_uid_comes_from_id_and_garbage_is_an_error() {
        assert_eq!(parse_uid("502\n").expect("uid"), 502);
        assert!(parse_uid("").is_err());
        assert!(parse_uid("uid=502(me)").is_err());
    }

    #[test]
    fn print_output_gives_state_pid_and_program() {
        let info = parse_print(PRINT_RUNNING);
        assert_eq!(info.state.as_deref(), Some("running"));
        assert_eq!(info.pid, Some(4242));
        assert_eq!(info.last_exit.as_deref(), Some("(never exited)"));
        assert_eq!(
            info.program.as_deref(),
            Some("/Applications/LLM Rotator.app/Contents/MacOS/llm-rotator")
        );
    }

    #[test]
    fn a_translocated_app_is_refused() {
        let p = Path::new("/private/var/folders/x/T/AppTranslocation/ABC/d/LLM Rotator.app/Contents/MacOS/llm-rotator");
        assert!(matches!(
            check_program(p),
            Err(ServiceError::Translocated(_))
        ));
        assert!(check_program(Path::new("/Applications/LLM Rotator.app")).is_ok());
    }

    #[test]
    fn first_install_writes_the_plist_then_enables_and_bootstraps() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("launchctl print", 113, "", "Could not find service");
        let report = install(&setup(home.path()), &r).expect("installs");
        let plist = home
            .path()
            .join("Library/LaunchAgents/com.llmrotator.agent.plist");
        assert_eq!(
            r.lines(),
            vec![
                "id -u".to_string(),
                "launchctl print gui/501/com.llmrotator.agent".into(),
                "launchctl enable gui/501/com.llmrotator.agent".into(),
                format!("launchctl bootstrap gui/501 {}", plist.display()),
            ]
        );
        let text = std::fs::read_to_string(&plist).expect("plist written");
        assert!(text.contains("LLM Rotator.app/Contents/MacOS/llm-rotator</string>"));
        assert!(home.path().join("Library/Logs/llm-rotator").is_dir());
        assert!(report.text.starts_with("Installed"), "{}", report.text);
    }

    #[test]
    fn installing_again_boots_the_old_agent_out_first() {
        let home = tempfile::tempdir().expect("tmp");
        let r = FakeRunner::new(); // print succeeds: loaded
        let mut s = setup(home.path());
        s.exe = PathBuf::from("/opt/new/llm-rotator");
        let report = install(&s, &r).expect("installs");
        let lines = r.lines();
        let bootout = lines
            .iter()
            .position(|l| l == "launchctl bootout gui/501/com.llmrotator.agent")
            .expect("booted out");
        let bootstrap = lines
            .iter()
            .position(|l| l.starts_with("launchctl bootstrap gui/501 "))
            .expect("bootstrapped");
        assert!(bootout < bootstrap);
        assert_eq!(
            lines.iter().filter(|l| l.contains("bootstrap")).count(),
            1,
            "one agent"
        );
        let text = std::fs::read_to_string(paths::launch_agent_plist(home.path())).expect("plist");
        assert!(text.contains("<string>/opt/new/llm-rotator</string>"));
        assert!(report.text.starts_with("Replaced"), "{}", report.text);
    }

    #[test]
    fn a_failing_bootstrap_names_the_command_and_its_stderr() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("launchctl print", 113, "", "");
        r.answer(
            "launchctl bootstrap",
            5,
            "",
            "Bootstrap failed: 5: Input/output error",
        );
        let err = install(&setup(home.path()), &r).expect_err("fails");
        let msg = err.to_string();
        assert!(msg.contains("`launchctl bootstrap gui/501 "), "{msg}");
        assert!(msg.contains("Input/output error"), "{msg}");
    }

    #[test]
    fn uninstall_when_not_installed_says_so_and_succeeds() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("launchctl print", 113, "", "");
        let report = uninstall(&setup(home.path()), &r).expect("ok");
        assert_eq!(report.code, 0);
        assert!(report.text.contains("not installed"), "{}", report.text);
        assert!(!r.lines().iter().any(|l| l.contains("bootout")));
    }

    #[test]
    fn uninstall_boots_out_and_removes_the_plist() {
        let home = tempfile::tempdir().expect("tmp");
        let plist = paths::launch_agent_plist(home.path());
        crate::service::write_file(&plist, "x").expect("write");
        let r = FakeRunner::new();
        uninstall(&setup(home.path()), &r).expect("ok");
        assert!(r
            .lines()
            .contains(&"launchctl bootout gui/501/com.llmrotator.agent".to_string()));
        assert!(!plist.exists());
    }

    #[test]
    fn status_reports_the_running_pid() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("launchctl print", 0, PRINT_RUNNING, "");
        let report = status(&setup(home.path()), &r).expect("ok");
        assert_eq!(report.code, 0);
        assert!(
            report.text.contains("loaded, running, pid 4242"),
            "{}",
            report.text
        );
        r.answer("launchctl print", 113, "", "");
        assert_eq!(status(&setup(home.path()), &r).expect("ok").code, 3);
    }

    #[test]
    fn restart_kickstarts_a_loaded_agent_and_refuses_a_missing_one() {
        let home = tempfile::tempdir().expect("tmp");
        let r = FakeRunner::new();
        restart(&setup(home.path()), &r).expect("ok");
        assert!(r
            .lines()
            .contains(&"launchctl kickstart -k gui/501/com.llmrotator.agent".to_string()));
        let mut r = FakeRunner::new();
        r.answer("launchctl print", 113, "", "");
        assert!(matches!(
            restart(&setup(home.path()), &r),
            Err(ServiceError::NotInstalled)
        ));
    }
}
