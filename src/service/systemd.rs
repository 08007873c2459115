//! The Linux login agent: a systemd user unit (`~/.config/systemd/user/llm-rotator.service`)
//! and the `systemctl --user` command lines that enable, disable, restart and inspect it.
//! The unit text and the command lines are pure; the flows run commands only through a
//! [`Runner`].

use super::{path_text, run_checked, Cmd, Report, Runner, ServiceError, Setup};
use crate::paths;

/// The unit's name.
pub const UNIT: &str = "llm-rotator.service";

/// Seconds systemd waits before restarting after a crash.
pub const RESTART_SECS: u32 = 10;

/// Quotes the program path of `ExecStart`: double quotes with C-style escapes and `%`
/// doubled so systemd expands no specifiers. `$` stays as is: systemd substitutes
/// variables in the arguments only, never in the program path (`systemd-analyze verify`
/// in the tests checks this).
pub fn exec_path_quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit text for `setup`: `ExecStart=<exe> run`, restarted on failure; the tray variant
/// starts with (and stops with) the graphical session, the headless one with the user's
/// systemd instance.
pub fn render_unit(setup: &Setup) -> Result<String, ServiceError> {
    let exe = path_text(&setup.exe, "systemd unit")?;
    let (ordering, wanted_by) = if setup.tray {
        (
            "PartOf=graphical-session.target\nAfter=graphical-session.target\n",
            "graphical-session.target",
        )
    } else {
        ("", "default.target")
    };
    Ok(format!(
        "# Written by `llm-rotator service install`; remove it with `llm-rotator service uninstall`.\n\
         [Unit]\n\
         Description=LLM Rotator: one OpenAI-compatible endpoint across LLM providers\n\
         {ordering}\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} run\n\
         Restart=on-failure\n\
         RestartSec={RESTART_SECS}\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        exec_path_quote(exe)
    ))
}

/// `systemctl --user <verb> [llm-rotator.service]`.
pub fn systemctl(args: &[&str]) -> Cmd {
    let mut all = vec!["--user"];
    all.extend_from_slice(args);
    Cmd::new("systemctl", &all)
}

/// `systemctl --user daemon-reload`: re-reads unit files.
pub fn daemon_reload_cmd() -> Cmd {
    systemctl(&["daemon-reload"])
}

/// `systemctl --user enable --now llm-rotator.service`.
pub fn enable_now_cmd() -> Cmd {
    systemctl(&["enable", "--now", UNIT])
}

/// `systemctl --user disable --now llm-rotator.service`.
pub fn disable_now_cmd() -> Cmd {
    systemctl(&["disable", "--now", UNIT])
}

/// `systemctl --user is-active llm-rotator.service` (exit 0 = running).
pub fn is_active_cmd() -> Cmd {
    systemctl(&["is-active", UNIT])
}

/// `systemctl --user restart llm-rotator.service`.
pub fn restart_cmd() -> Cmd {
    systemctl(&["restart", UNIT])
}

/// Writes the unit and enables it now; a running copy is restarted onto the new binary.
pub fn install(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let text = render_unit(setup)?;
    let unit = paths::systemd_user_unit(&setup.config_home);
    let replaced = unit.exists();
    let was_active = runner.run(&is_active_cmd())?.success();
    super::write_file(&unit, &text)?;
    run_checked(runner, &daemon_reload_cmd())?;
    run_checked(runner, &enable_now_cmd())?;
    if was_active {
        run_checked(runner, &restart_cmd())?;
    }
    Ok(Report::ok(format!(
        "{} the systemd user service {UNIT}: {} run\n\
         unit: {}\n\
         It starts with your {} and again after a crash; Quit stops it until the next login.\n\
         Logs: `journalctl --user -u {UNIT}` and the log files of `llm-rotator` itself.\n",
        if replaced { "Replaced" } else { "Installed" },
        setup.exe.display(),
        unit.display(),
        if setup.tray {
            "graphical session"
        } else {
            "user session"
        }
    )))
}

/// Disables and removes the unit; says so when there was nothing to remove.
pub fn uninstall(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let unit = paths::systemd_user_unit(&setup.config_home);
    if !unit.exists() {
        return Ok(Report::ok(format!(
            "llm-rotator is not installed as a systemd user service ({} does not exist); nothing to do.\n",
            unit.display()
        )));
    }
    run_checked(runner, &disable_now_cmd())?;
    super::remove_file(&unit)?;
    run_checked(runner, &daemon_reload_cmd())?;
    Ok(Report::ok(format!(
        "Removed the systemd user service {UNIT} ({}).\n\
         Config, keys and logs are kept; see the README to remove them too.\n",
        unit.display()
    )))
}

/// Installed? Active?
pub fn status(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    let unit = paths::systemd_user_unit(&setup.config_home);
    let mut text = if unit.exists() {
        format!("login agent: installed ({})\n", unit.display())
    } else {
        format!("login agent: not installed ({} missing)\n", unit.display())
    };
    let out = runner.run(&is_active_cmd())?;
    let state = out.stdout.trim();
    text.push_str(&format!(
        "systemd: {}\n",
        if state.is_empty() { "unknown" } else { state }
    ));
    Ok(Report {
        text,
        code: if out.success() { 0 } else { 3 },
    })
}

/// Restarts the service.
pub fn restart(setup: &Setup, runner: &dyn Runner) -> Result<Report, ServiceError> {
    if !paths::systemd_user_unit(&setup.config_home).exists() {
        return Err(ServiceError::NotInstalled);
    }
    run_checked(runner, &restart_cmd())?;
    Ok(Report::ok(format!(
        "Restarted the systemd user service {UNIT}.\n"
    )))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::service::fake::FakeRunner;

    fn setup(home: &Path, tray: bool) -> Setup {
        Setup {
            home: home.to_path_buf(),
            config_home: home.join(".config"),
            exe: PathBuf::from("/opt/llm rotator/bin/llm-rotator"),
            tray,
        }
    }

    #[test]
    fn exec_words_are_quoted_and_specifiers_escaped() {
        assert_eq!(
            exec_path_quote(r#"/a b/50%/$HOME/"q"\x"#),
            r#""/a b/50%%/$HOME/\"q\"\\x""#
        );
    }

    #[test]
    fn the_tray_unit_follows_the_graphical_session() {
        let text = render_unit(&setup(Path::new("/h"), true)).expect("unit");
        assert!(text.contains("\nPartOf=graphical-session.target\n"));
        assert!(text.contains("\nAfter=graphical-session.target\n"));
        assert!(text.contains("\nExecStart=\"/opt/llm rotator/bin/llm-rotator\" run\n"));
        assert!(text.contains("\nRestart=on-failure\n"));
        assert!(text.contains("\nWantedBy=graphical-session.target\n"));
        let headless = render_unit(&setup(Path::new("/h"), false)).expect("unit");
        assert!(!headless.contains("graphical-session"));
        assert!(headless.contains("\nWantedBy=default.target\n"));
    }

    #[test]
    fn systemctl_command_lines_are_user_scoped() {
        let all: Vec<Vec<String>> = [
            daemon_reload_cmd(),
            enable_now_cmd(),
            disable_now_cmd(),
            is_active_cmd(),
            restart_cmd(),
        ]
        .into_iter()
        .map(|c| {
            assert_eq!(c.program, "systemctl");
            c.args
        })
        .collect();
        let expected: Vec<Vec<&str>> = vec![
            vec!["--user", "daemon-reload"],
            vec!["--user", "enable", "--now", UNIT],
            vec!["--user", "disable", "--now", UNIT],
            vec!["--user", "is-active", UNIT],
            vec!["--user", "restart", UNIT],
        ];
        assert_eq!(all, expected);
    }

    #[test]
    fn install_writes_the_unit_reloads_and_enables_it() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("systemctl --user is-active", 3, "inactive\n", "");
        install(&setup(home.path(), true), &r).expect("installs");
        assert_eq!(
            r.lines(),
            vec![
                "systemctl --user is-active llm-rotator.service",
                "systemctl --user daemon-reload",
                "systemctl --user enable --now llm-rotator.service",
            ]
        );
        let unit = home.path().join(".config/systemd/user/llm-rotator.service");
        assert!(std::fs::read_to_string(unit)
            .expect("unit")
            .contains("ExecStart=\"/opt/llm rotator/bin/llm-rotator\" run"));
    }

    #[test]
    fn installing_over_a_running_service_restarts_it_on_the_new_binary() {
        let home = tempfile::tempdir().expect("tmp");
        let r = FakeRunner::new(); // is-active succeeds
        install(&setup(home.path(), true), &r).expect("installs");
        let mut s = setup(home.path(), true);
        s.exe = PathBuf::from("/usr/local/bin/llm-rotator");
        let report = install(&s, &r).expect("installs again");
        assert!(report.text.starts_with("Replaced"), "{}", report.text);
        assert_eq!(
            r.lines().last().map(String::as_str),
            Some("systemctl --user restart llm-rotator.service")
        );
        let unit = home.path().join(".config/systemd/user/llm-rotator.service");
        assert!(std::fs::read_to_string(unit)
            .expect("unit")
            .contains("ExecStart=\"/usr/local/bin/llm-rotator\" run"));
    }

    #[test]
    fn uninstall_disables_removes_and_reloads_and_is_a_no_op_the_second_time() {
        let home = tempfile::tempdir().expect("tmp");
        let r = FakeRunner::new();
        install(&setup(home.path(), false), &r).expect("installs");
        let before = r.lines().len();
        uninstall(&setup(home.path(), false), &r).expect("uninstalls");
        assert_eq!(
            r.lines()[before..].to_vec(),
            vec![
                "systemctl --user disable --now llm-rotator.service",
                "systemctl --user daemon-reload",
            ]
        );
        let again = uninstall(&setup(home.path(), false), &r).expect("no-op");
        assert!(again.text.contains("not installed"), "{}", again.text);
        assert_eq!(again.code, 0);
    }

    #[test]
    fn status_is_3_when_inactive_and_restart_needs_an_install() {
        let home = tempfile::tempdir().expect("tmp");
        let mut r = FakeRunner::new();
        r.answer("systemctl --user is-active", 3, "inactive\n", "");
        let report = status(&setup(home.path(), true), &r).expect("status");
        assert_eq!(report.code, 3);
        assert!(report.text.contains("systemd: inactive"), "{}", report.text);
        assert!(matches!(
            restart(&setup(home.path(), true), &r),
            Err(ServiceError::NotInstalled)
        ));
    }
}
