//! The command line through the real binary: `serve` on a first run, `status`,
//! `config path` and `config check`.

use std::process::Command;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn status_shows_a_table_of_the_running_instance_and_the_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let a = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "125")],
        json!({}),
    )])
    .await;
    let b = Mock::start(vec![Reply::completion("ok")]).await;
    let cfg = config_text(
        "",
        &[
            P::new("alpha", &a, 1),
            P::new("beta", &b, 2),
            P::new("gamma", &b, 3),
        ],
    );
    let mut bin = Binary::start(
        dir.path(),
        &cfg,
        &[
            ("ALPHA_TEST_KEY", "ka-000000000000"),
            ("BETA_TEST_KEY", "kb-000000000000"),
        ],
    );
    bin.wait_ready().await;
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-provider"], "beta");
    // The CLI finds the running instance through the port its config file names.
    let config = dir.path().join("client.toml");
    std::fs::write(&config, format!("[server]\nport = {}\n", bin.port())).unwrap();
    let (code, out, err) = cli(&["status", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PROVIDER"), "{out}");
    let alpha = lines.iter().find(|l| l.starts_with("alpha")).unwrap();
    assert!(
        alpha.contains("cooling down") && alpha.contains("2:0"),
        "{out}"
    );
    let beta = lines.iter().find(|l| l.starts_with("beta")).unwrap();
    assert!(beta.contains("ready") && beta.contains(" 1 "), "{out}");
    let gamma = lines.iter().find(|l| l.starts_with("gamma")).unwrap();
    assert!(gamma.contains("no key"), "{out}");
    // A config that names another port, with the running one given by --port.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[server]\nport = 1\n").unwrap();
    let (code, json_out, _) = cli(
        &[
            "status",
            "--json",
            "--config",
            other.to_str().unwrap(),
            "--port",
            &bin.port().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["providers"][0]["state"], "cooling_down");
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    let (code, _, err) = cli(&["status", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
}

#[tokio::test]
async fn first_run_writes_the_commented_default_config_and_serves() {
    let home = tempfile::tempdir().unwrap();
    let xdg = home.path().join("config");
    let env = [
        ("HOME", home.path().to_str().unwrap()),
        ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        (
            "XDG_DATA_HOME",
            home.path().join("data").to_str().unwrap().to_owned().leak() as &str,
        ),
        (
            "XDG_STATE_HOME",
            home.path()
                .join("state")
                .to_str()
                .unwrap()
                .to_owned()
                .leak() as &str,
        ),
    ];
    let (code, path, _) = cli(&["config", "path"], &env);
    assert_eq!(code, 0);
    let path = path.trim().to_string();
    assert!(path.ends_with("llm-rotator/config.toml"), "{path}");
    let child = Command::new(Binary::exe())
        .arg("serve")
        .args(Binary::any_port_args(home.path()))
        .envs(env)
        .env_remove("LLM_ROTATOR_CONFIG")
        .env_remove("LLM_ROTATOR_DATA_DIR")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut bin = Binary::adopt(child, home.path());
    bin.wait_ready().await;
    let models = get_json(&bin, "/v1/models").await;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    assert!(models["data"].as_array().unwrap().len() > 8);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# llm-rotator configuration."));
    let (code, out, err) = cli(&["config", "check"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn config_check_points_at_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nport = 8000\n\n[[providers]]\nname = \"groq\"\nbase_url = \"https://x/v1\"\nmodel = \"m\"\npriorty = 1\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.toml:8:1"), "{err}");
    assert!(err.contains("priorty"), "{err}");
    let (code, _, err) = cli(&["config", "check", "/nonexistent/llm.toml"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot read config file /nonexistent/llm.toml"),
        "{err}"
    );
}

#[test]
fn a_public_host_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[server]\nhost = \"0.0.0.0\"\n").unwrap();
    let (code, _, err) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("auth_token"), "{err}");
    // A fresh data dir holds no last good config to fall back on.
    let data = dir.path().join("data");
    let (code, _, err) = cli(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("c.toml:2:8"), "{err}");
}

#[tokio::test]
async fn a_typo_saved_while_stopped_starts_on_the_last_good_config_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let a = Mock::start(vec![Reply::completion("ok")]).await;
    let good = config_text("[server]\nport = 8000\n", &[P::new("alpha", &a, 1)]);
    let env = [("ALPHA_TEST_KEY", "ka-000000000000")];
    let mut bin = Binary::start(dir.path(), &good, &env);
    bin.wait_ready().await;
    assert_eq!(chat(&bin, json!({"messages": []})).await.0, 200);
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    drop(bin);

    // A typo on line 2, saved while the agent was stopped.
    let typo = good.replacen("port = ", "prot = 1\nport = ", 1);
    let mut bin = Binary::start(dir.path(), &typo, &env);
    bin.wait_ready().await;
    assert!(bin.stderr().contains("config.toml:2:1"), "{}", bin.stderr());
    let status = get_json(&bin, "/status").await;
    let err = status["config"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("config.toml:2:1") && err.contains("prot"),
        "{status}"
    );
    assert_eq!(status["providers"][0]["name"], "alpha");
    assert_eq!(status["providers"][0]["request_count"], 1, "state restored");
    assert_eq!(
        chat(&bin, json!({"messages": []})).await.0,
        200,
        "still serving on the last good config"
    );

    // Fixing the file is picked up without a restart.
    let fixed = good.replace("alpha-model", "alpha-fixed");
    std::fs::write(dir.path().join("config.toml"), &fixed).unwrap();
    wait_until(
        std::time::Duration::from_secs(5),
        "the fixed file is picked up",
        || async {
            let s = get_json(&bin, "/status").await;
            s["config"]["last_error"].is_null() && s["providers"][0]["model"] == "alpha-fixed"
        },
    )
    .await;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_agent_raises_a_low_open_files_limit_for_many_streams() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    // macOS starts programs with a soft limit of 256 descriptors: about 120 streams.
    let script = format!(
        "ulimit -Sn 256 && exec '{}' serve --config '{}' --data-dir '{}' --port 0 --ready-file '{}'",
        Binary::exe(),
        cfg.display(),
        dir.path().join("data").display(),
        Binary::ready_file(dir.path()).display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut bin = Binary::adopt(child, dir.path());
    bin.wait_ready().await;
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", bin.child.id())).unwrap_or_default();
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 256, "soft limit still {soft}: {limits}");
}

#[test]
fn config_check_warns_of_a_shared_pool_reached_without_tls_and_refuses_a_password_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.toml");
    std::fs::write(&file, "[shared]\nurl = \"redis://192.168.1.20:6379\"\n").unwrap();
    let (code, out, err) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(out.contains("ok"), "{out}");
    assert!(
        err.contains("warning: shared.url: 192.168.1.20 is reached without TLS"),
        "{err}"
    );
    std::fs::write(&file, "[shared]\nurl = \"rediss://192.168.1.20:6379\"\n").unwrap();
    let (code, _, err) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    std::fs::write(
        &file,
        "[shared]\nurl = \"rediss://me:s3cret-pw@192.168.1.20:6379\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("shared.toml:2") && err.contains("keys set shared"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
}
