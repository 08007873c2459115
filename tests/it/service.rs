//! The login agent and its files: the rendered LaunchAgent plist and Info.plist read back
//! by Python's plistlib, the systemd unit checked by `systemd-analyze verify`, the app
//! bundle assembled by packaging/macos/build-app.sh, `service` commands driving a fake
//! `systemctl` found first on PATH (never the real one), one agent per port with two real
//! processes, and the log files (in the data dir, pruned by date, no key, no prompt).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use llm_rotator::service::launchd::{render_plist, LaunchAgent, THROTTLE_SECS};
use llm_rotator::service::systemd::render_unit;
use llm_rotator::service::Setup;
use serde_json::{json, Value};

use crate::common::{client, config_text, skip, Binary, Mock, Reply, P};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Reads a plist with Python's plistlib and returns it as JSON.
fn read_plist(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,plistlib,sys; print(json.dumps(plistlib.load(open(sys.argv[1],'rb'))))",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed to read plists");
    assert!(
        out.status.success(),
        "plistlib could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_rendered_launch_agent_parses_as_a_plist_with_every_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let program =
        PathBuf::from("/Applications/R&D <beta> \"LLM\" Rotator.app/Contents/MacOS/llm-rotator");
    let text = render_plist(&LaunchAgent {
        program: program.clone(),
        log_dir: PathBuf::from("/Users/me & you/Library/Logs/llm-rotator"),
    })
    .expect("renders");
    let path = dir.path().join("com.llmrotator.agent.plist");
    std::fs::write(&path, &text).expect("write");
    let plist = read_plist(&path);
    assert_eq!(
        plist,
        json!({
            "Label": "com.llmrotator.agent",
            "AssociatedBundleIdentifiers": "com.llmrotator.agent",
            "ProgramArguments": [program.to_str().expect("utf8"), "run"],
            "RunAtLoad": true,
            "KeepAlive": {"SuccessfulExit": false},
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",
            "ThrottleInterval": THROTTLE_SECS,
            "StandardOutPath": "/Users/me & you/Library/Logs/llm-rotator/launchd-stdout.log",
            "StandardErrorPath": "/Users/me & you/Library/Logs/llm-rotator/launchd-stderr.log",
        })
    );
}

fn cargo_version() -> String {
    let text = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).expect("Cargo.toml");
    let manifest: toml::Value = toml::from_str(&text).expect("toml");
    manifest["package"]["version"]
        .as_str()
        .expect("version")
        .to_string()
}

#[test]
fn info_plist_carries_the_cargo_version_and_makes_a_menu_bar_only_app() {
    let plist = read_plist(&Path::new(REPO).join("Info.plist"));
    let version = cargo_version();
    assert_eq!(plist["CFBundleShortVersionString"], version.as_str());
    assert_eq!(plist["CFBundleVersion"], version.as_str());
    assert_eq!(plist["CFBundleIdentifier"], "com.llmrotator.agent");
    assert_eq!(plist["CFBundleName"], "LLM Rotator");
    assert_eq!(plist["CFBundleDisplayName"], "LLM Rotator");
    assert_eq!(plist["CFBundleExecutable"], "llm-rotator");
    assert_eq!(plist["CFBundlePackageType"], "APPL");
    assert_eq!(plist["CFBundleIconFile"], "AppIcon");
    assert_eq!(plist["LSUIElement"], true);
    assert_eq!(plist["LSMinimumSystemVersion"], "12.0");
    assert!(plist["NSHumanReadableCopyright"]
        .as_str()
        .is_some_and(|c| c.contains("Copyright")));
}

/// `systemd-analyze --user verify` of `unit`: (success, everything it printed).
fn systemd_verify(dir: &Path, unit: &Path) -> Option<(bool, String)> {
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    let out = match Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip(
                "the systemd unit check",
                &format!("systemd-analyze is not installed ({e})"),
            );
            return None;
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tmp");
    // A program path that needs quoting and escaping.
    let bin_dir = dir.path().join("odd dir 100% $HOME");
    std::fs::create_dir_all(&bin_dir).expect("dir");
    let exe = bin_dir.join("llm rotator");
    std::fs::write(&exe, "#!/bin/sh\n").expect("program");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for tray in [true, false] {
        let setup = Setup {
            home: dir.path().to_path_buf(),
            config_home: dir.path().join("config"),
            exe: exe.clone(),
            tray,
        };
        let unit = dir.path().join("llm-rotator.service");
        std::fs::write(&unit, render_unit(&setup).expect("unit")).expect("write");
        let Some((ok, said)) = systemd_verify(dir.path(), &unit) else {
            return;
        };
        assert!(ok && said.trim().is_empty(), "tray={tray}: {said}");
    }
    // The check itself catches a unit whose program does not exist.
    let broken = dir.path().join("llm-rotator.service");
    std::fs::write(
        &broken,
        "[Service]\nExecStart=/nonexistent/llm-rotator run\n[Install]\nWantedBy=default.target\n",
    )
    .expect("write");
    let (ok, said) = systemd_verify(dir.path(), &broken).expect("ran above");
    assert!(!ok, "a missing program is reported: {said}");
}

/// Writes a 1024x1024 PNG (a solid square) without any image tool.
fn write_png(path: &Path, size: u32) {
    let script = r#"
import struct, sys, zlib
path, size = sys.argv[1], int(sys.argv[2])
row = b"\x00" + b"\x2b\x6c\xb0\xff" * size
raw = zlib.compress(row * size)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
open(path, "wb").write(png)
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(size.to_string())
        .status()
        .expect("python3");
    assert!(status.success());
}

/// (type, PNG width) of every entry of an .icns file, checking the container's lengths.
fn icns_entries(data: &[u8]) -> Vec<(String, u32)> {
    assert_eq!(&data[..4], b"icns");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    assert_eq!(be(&data[4..8]) as usize, data.len(), "total length");
    let mut out = Vec::new();
    let mut at = 8;
    while at < data.len() {
        let kind = String::from_utf8(data[at..at + 4].to_vec()).expect("type");
        let len = be(&data[at + 4..at + 8]) as usize;
        let png = &data[at + 8..at + len];
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{kind} holds a PNG");
        out.push((kind, be(&png[16..20])));
        at += len;
    }
    assert_eq!(at, data.len());
    out
}

#[test]
fn the_bundle_script_assembles_the_app_tree_zip_and_cask_on_linux() {
    let dir = tempfile::tempdir().expect("tmp");
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("tray")).expect("assets");
    write_png(&assets.join("AppIcon.png"), 1024);
    write_png(&assets.join("tray-ready.png"), 22);
    write_png(&assets.join("tray/tray-cooling.png"), 22);
    let out_dir = dir.path().join("out");
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("packaging/macos/build-app.sh"))
        .arg("--host-binary")
        .arg(Binary::exe())
        .arg("--skip-sign")
        .arg("--assets")
        .arg(&assets)
        .arg("--out")
        .arg(&out_dir)
        .env("RELEASE_URL", "https://example.invalid/LLM-Rotator.zip")
        .env_remove("HOMEPAGE")
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "build-app.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let app = out_dir.join("LLM Rotator.app/Contents");
    let exe = app.join("MacOS/llm-rotator");
    assert_eq!(
        std::fs::read(&exe).expect("binary"),
        std::fs::read(Binary::exe()).expect("host binary")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&exe).expect("meta").permissions().mode() & 0o111,
        0o111
    );
    let plist = read_plist(&app.join("Info.plist"));
    assert_eq!(plist["CFBundleExecutable"], "llm-rotator");
    assert_eq!(plist["CFBundleVersion"], cargo_version().as_str());
    assert_eq!(
        std::fs::read_to_string(app.join("PkgInfo")).expect("PkgInfo"),
        "APPL????"
    );
    let icns = std::fs::read(app.join("Resources/AppIcon.icns")).expect("icns");
    let entries = icns_entries(&icns);
    assert!(entries.contains(&("ic10".to_string(), 1024)), "{entries:?}");
    for (kind, width) in &entries {
        let expected = match kind.as_str() {
            "ic07" => 128,
            "ic08" => 256,
            "ic09" => 512,
            "ic10" => 1024,
            other => panic!("unexpected icon type {other}"),
        };
        assert_eq!(*width, expected, "{kind}");
    }
    assert!(app.join("Resources/tray-ready.png").is_file());
    assert!(app.join("Resources/tray-cooling.png").is_file());
    assert!(!app.join("Resources/AppIcon.png").exists());

    let version = cargo_version();
    let zip = out_dir.join(format!("LLM-Rotator-{version}-macos.zip"));
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys,zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(oct(i.external_attr >> 16), i.filename)",
        ])
        .arg(&zip)
        .output()
        .expect("python3");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("0o100755 LLM Rotator.app/Contents/MacOS/llm-rotator"),
        "{listing}"
    );
    assert!(listing.contains("LLM Rotator.app/Contents/Info.plist"));

    let cask = std::fs::read_to_string(out_dir.join("llm-rotator.rb")).expect("cask");
    let sha = Command::new("sha256sum")
        .arg(&zip)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout);
    let sha = sha.split_whitespace().next().expect("sum");
    assert!(cask.contains(&format!("sha256 \"{sha}\"")), "{cask}");
    assert!(cask.contains(&format!("version \"{version}\"")));
    assert!(cask.contains("url \"https://example.invalid/LLM-Rotator.zip\""));
    assert!(cask.contains("app \"LLM Rotator.app\""));
    assert!(!cask.contains('@'), "every field filled or dropped: {cask}");
}

#[test]
fn the_bundle_script_refuses_an_info_plist_version_that_drifted() {
    // The script checks the real Info.plist against Cargo.toml, so a copy of the
    // repo layout with a changed version must fail before anything is built.
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("packaging/macos")).expect("dirs");
    std::fs::copy(
        Path::new(REPO).join("packaging/macos/build-app.sh"),
        repo.join("packaging/macos/build-app.sh"),
    )
    .expect("copy script");
    std::fs::copy(Path::new(REPO).join("Cargo.toml"), repo.join("Cargo.toml")).expect("copy");
    let info = std::fs::read_to_string(Path::new(REPO).join("Info.plist")).expect("plist");
    let version = cargo_version();
    std::fs::write(
        repo.join("Info.plist"),
        info.replace(
            &format!("<string>{version}</string>"),
            "<string>9.9.9</string>",
        ),
    )
    .expect("write");
    let out = Command::new("bash")
        .arg(repo.join("packaging/macos/build-app.sh"))
        .args(["--host-binary", Binary::exe(), "--skip-sign"])
        .output()
        .expect("bash");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is 9.9.9 but Cargo.toml says"), "{err}");
}

/// A fake `systemctl` first on PATH: logs its arguments and remembers "enabled".
fn fake_systemctl(dir: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).expect("bin");
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  "--user is-active llm-rotator.service")
    if [ -f "{state}" ]; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  "--user enable --now llm-rotator.service") touch "{state}" ;;
  "--user disable --now llm-rotator.service") rm -f "{state}" ;;
esac
exit 0
"#,
        log = dir.join("systemctl.log").display(),
        state = dir.join("active").display()
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

fn service_cmd(dir: &Path, bin: &Path, action: &[&str]) -> (Option<i32>, String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(Binary::exe())
        .arg("service")
        .args(action)
        .env("PATH", path)
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("home/.config"))
        .stdin(Stdio::null())
        .output()
        .expect("run llm-rotator service");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn service_commands_manage_a_systemd_user_unit_idempotently() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = fake_systemctl(dir.path());
    let unit = dir
        .path()
        .join("home/.config/systemd/user/llm-rotator.service");
    let log = || std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap_or_default();

    let (code, _, err) = service_cmd(dir.path(), &bin, &["status"]);
    assert_eq!(code, Some(3), "not running: {err}");

    let (code, out, err) = service_cmd(dir.path(), &bin, &["install"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let text = std::fs::read_to_string(&unit).expect("unit written");
    let exe = std::fs::canonicalize(Binary::exe()).expect("exe");
    assert!(
        text.contains(&format!("ExecStart=\"{}\" run", exe.display())),
        "{text}"
    );
    assert!(text.contains("Restart=on-failure"));

    let (code, out, _) = service_cmd(dir.path(), &bin, &["install", "--headless"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("Replaced"), "{out}");
    assert!(std::fs::read_to_string(&unit)
        .expect("unit")
        .contains("WantedBy=default.target"));
    assert!(
        log().ends_with("--user restart llm-rotator.service\n"),
        "a running copy is restarted onto the new unit: {}",
        log()
    );

    let (code, out, _) = service_cmd(dir.path(), &bin, &["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("systemd: active"), "{out}");

    let (code, _, _) = service_cmd(dir.path(), &bin, &["restart"]);
    assert_eq!(code, Some(0));

    let (code, out, _) = service_cmd(dir.path(), &bin, &["uninstall"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("Removed"), "{out}");
    assert!(!unit.exists());

    let (code, out, _) = service_cmd(dir.path(), &bin, &["uninstall"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("not installed"), "{out}");

    let (code, _, err) = service_cmd(dir.path(), &bin, &["restart"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("llm-rotator service install"), "{err}");

    assert_eq!(
        log(),
        "--user is-active llm-rotator.service\n\
         --user is-active llm-rotator.service\n\
         --user daemon-reload\n\
         --user enable --now llm-rotator.service\n\
         --user is-active llm-rotator.service\n\
         --user daemon-reload\n\
         --user enable --now llm-rotator.service\n\
         --user restart llm-rotator.service\n\
         --user is-active llm-rotator.service\n\
         --user restart llm-rotator.service\n\
         --user disable --now llm-rotator.service\n\
         --user daemon-reload\n"
    );
}

/// What the agents here run without: a display and a log dir from the environment.
const UNSET: [&str; 3] = ["DISPLAY", "WAYLAND_DISPLAY", "LLM_ROTATOR_LOG_DIR"];

/// Starts the real binary with `sub` (`run`/`serve`) on any free port, no display and the
/// default log dir.
fn start(dir: &Path, sub: &str, config: &str, env: &[(&str, &str)]) -> Binary {
    Binary::start_as(dir, sub, config, env, &UNSET)
}

/// Like [`start`], on this very port (one that is already taken).
fn start_on_port(dir: &Path, sub: &str, config: &str, port: u16) -> Binary {
    Binary::start_on_port(dir, sub, config, port, &[], &UNSET)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_finds_the_first_and_exits_0() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut first = start(&dir.path().join("a"), "run", "", &[]);
    first.wait_ready().await;
    let mut second = start_on_port(&dir.path().join("b"), "run", "", first.port());
    let code = tokio::task::spawn_blocking(move || (second.wait_exit(), second.stderr()))
        .await
        .expect("join");
    assert_eq!(code.0, Some(0), "{}", code.1);
    assert!(code.1.contains("already running on"), "{}", code.1);
    let health = client()
        .get(first.url("/health"))
        .send()
        .await
        .expect("first still serves");
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_port_held_by_another_program_and_names_the_setting() {
    let dir = tempfile::tempdir().expect("tmp");
    let other = Mock::start(vec![Reply::json(404, json!({"detail": "Not Found"}))]).await;
    let port = other.addr.port();
    let mut agent = start_on_port(dir.path(), "run", "", port);
    let (code, err) = tokio::task::spawn_blocking(move || (agent.wait_exit(), agent.stderr()))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("port {port} is used by another program")),
        "{err}"
    );
    assert!(err.contains("server.port"), "{err}");
    assert_eq!(other.hits(), 1, "asked /health once");
    assert_eq!(other.requests()[0].path, "/health");
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const KEY: &str = "sk-test-SECRET-key-0123456789abcdef";
const PROMPT: &str = "tell me about the purple elephant";

/// Starts `serve` against a mock, makes one request with a recognisable prompt, stops it
/// with SIGTERM (flushing the log) and returns the log dir.
async fn one_logged_request(dir: &Path, top: &str, env: &[(&str, &str)]) -> PathBuf {
    let mock = Mock::start(vec![Reply::completion("the reply text is ochre")]).await;
    let config = config_text(top, &[P::new("alpha", &mock, 1)]);
    let mut all_env = vec![("ALPHA_TEST_KEY", KEY)];
    all_env.extend_from_slice(env);
    let mut bin = start(dir, "serve", &config, &all_env);
    bin.wait_ready().await;
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let _ = resp.text().await;
    bin.signal("TERM");
    let code = tokio::task::spawn_blocking(move || bin.wait_exit())
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    dir.join("data/logs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_the_data_dir_keep_seven_days_and_hold_no_key_or_prompt() {
    let dir = tempfile::tempdir().expect("tmp");
    let logs = dir.path().join("data/logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let today = chrono::Utc::now().date_naive();
    // Nine older days, written newest first so creation order disagrees with the dates.
    let old: Vec<String> = (1..=9)
        .map(|d| {
            let day = today - chrono::Duration::days(d);
            format!("llm-rotator.{}.log", day.format("%Y-%m-%d"))
        })
        .collect();
    for name in &old {
        std::fs::write(logs.join(name), "old\n").expect("old log");
    }
    one_logged_request(dir.path(), "", &[]).await;

    let todays = format!("llm-rotator.{}.log", today.format("%Y-%m-%d"));
    let mut expected: Vec<String> = old[..6].to_vec();
    expected.push(todays.clone());
    expected.sort();
    assert_eq!(log_files(&logs), expected);

    let text = std::fs::read_to_string(logs.join(&todays)).expect("today's log");
    let line = text
        .lines()
        .find(|l| l.contains(" request") && l.contains("providers=alpha"))
        .unwrap_or_else(|| panic!("one line for the request: {text}"));
    for field in [
        "model=alpha-model",
        "status=200",
        "attempts=1",
        "latency_ms=",
        "tokens=12",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!text.contains(KEY), "no key in the log");
    assert!(!text.contains("SECRET"), "not even part of the key");
    assert!(!text.contains("purple elephant"), "no prompt in the log");
    assert!(!text.contains("ochre"), "no completion in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_comes_from_the_config_unless_rust_log_says_otherwise() {
    let dir = tempfile::tempdir().expect("tmp");
    let quiet =
        one_logged_request(&dir.path().join("quiet"), "[log]\nlevel = \"warn\"\n", &[]).await;
    let loud = one_logged_request(
        &dir.path().join("loud"),
        "[log]\nlevel = \"warn\"\n",
        &[("RUST_LOG", "info")],
    )
    .await;
    let read = |d: &Path| {
        log_files(d)
            .iter()
            .map(|n| std::fs::read_to_string(d.join(n)).expect("log"))
            .collect::<String>()
    };
    assert!(
        !read(&quiet).contains("providers=alpha"),
        "{}",
        read(&quiet)
    );
    assert!(read(&loud).contains("providers=alpha"), "{}", read(&loud));
}
