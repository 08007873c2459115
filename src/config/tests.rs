use super::*;

const MINIMAL: &str = r#"
[[providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1/"
model = "llama"
"#;

#[test]
fn builtin_default_config_is_valid_and_lists_the_known_providers() {
    let cfg = Config::builtin().expect("default config parses");
    let names: Vec<_> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "grok",
        "cerebras",
        "gemini",
        "openai",
        "mistral",
        "groq",
        "openrouter",
        "ollama",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(cfg.server.port, 8000);
    assert!(cfg.server.host.is_loopback());
    let ollama = cfg.provider("ollama").expect("ollama");
    assert!(!ollama.requires_key);
}

#[test]
fn the_default_config_prefers_current_models_and_says_when_they_were_checked() {
    let cfg = Config::builtin().expect("default config parses");
    for p in cfg.providers.iter().filter(|p| p.name != "ollama") {
        assert!(p.preferred.len() >= 2, "{}: a preference list", p.name);
    }
    // Each cloud provider's list carries the date it was checked.
    let checked = DEFAULT_CONFIG.matches("checked 2026-").count();
    assert!(checked >= 7, "{checked}");
    // Retired by their providers in 2026: never shipped again.
    for gone in [
        "llama-3.3-70b-versatile\"",
        "\"llama-3.1-8b-instant",
        "\"llama3.1-8b",
        "\"grok-3-mini",
        "\"gemini-2.5-flash\"",
        "\"gemini-2.5-pro",
    ] {
        let live = DEFAULT_CONFIG
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.split('#').next().unwrap_or("").contains(gone));
        assert!(!live, "{gone} is still configured");
    }
    // A provider whose free tier ended is off by default.
    assert!(!cfg.provider("cerebras").expect("cerebras").enabled);
}

#[test]
fn every_config_example_in_the_readme_parses() {
    let readme = include_str!("../../README.md");
    let mut blocks = 0;
    for block in readme.split("```toml").skip(1) {
        let text = block.split("```").next().unwrap_or("");
        if !["[[providers]]", "[server]", "[model_aliases]"]
            .iter()
            .any(|t| text.contains(t))
        {
            continue;
        }
        Config::parse(text, None)
            .unwrap_or_else(|e| panic!("README example does not parse: {e}\n{text}"));
        blocks += 1;
    }
    assert!(blocks >= 1, "no config example found in the README");
}

#[test]
fn defaults_fill_in_missing_values() {
    let cfg = Config::parse(MINIMAL, None).expect("parses");
    assert_eq!(cfg.routing.default_cooldown, Duration::from_secs(60));
    assert_eq!(cfg.server.max_body_bytes, 32 * 1024 * 1024);
    let p = &cfg.providers[0];
    assert_eq!(p.base_url, "https://api.groq.com/openai/v1");
    assert_eq!(p.api_key_env, vec!["GROQ_API_KEY".to_string()]);
    assert!(p.enabled);
    assert_eq!(cfg.endpoint_url(), "http://localhost:8000/v1");
}

#[test]
fn api_key_env_accepts_a_list() {
    let text = format!("{MINIMAL}api_key_env = [\"A_KEY\", \"B_KEY\"]\n");
    let cfg = Config::parse(&text, None).expect("parses");
    assert_eq!(cfg.providers[0].api_key_env, vec!["A_KEY", "B_KEY"]);
}

fn invalid(text: &str) -> Invalid {
    match Config::parse(text, None) {
        Err(ConfigError::Invalid(inv)) => *inv,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn unknown_key_is_an_error_with_line_and_column() {
    let inv = invalid("[server]\nport = 8000\nprot = 1\n");
    assert_eq!(inv.line, Some(3), "{inv}");
    assert_eq!(inv.column, Some(1), "{inv}");
    assert!(inv.message.contains("prot"), "{inv}");
}

#[test]
fn wrong_type_is_an_error_with_line() {
    let inv = invalid("[server]\nport = \"eighty\"\n");
    assert_eq!(inv.line, Some(2), "{inv}");
}

#[test]
fn duplicate_provider_names_are_rejected_at_the_second() {
    let text = format!("{MINIMAL}{MINIMAL}");
    let inv = invalid(&text);
    assert_eq!(inv.key.as_deref(), Some("providers[1].name"));
    assert_eq!(inv.line, Some(8), "{inv}");
}

#[test]
fn bad_provider_name_is_rejected() {
    let inv =
        invalid("[[providers]]\nname = \"Groq AI\"\nbase_url = \"https://x\"\nmodel = \"m\"\n");
    assert_eq!(inv.key.as_deref(), Some("providers[0].name"));
    assert_eq!((inv.line, inv.column), (Some(2), Some(8)));
}

#[test]
fn non_http_base_url_is_rejected() {
    let inv = invalid("[[providers]]\nname = \"a\"\nbase_url = \"ftp://x\"\nmodel = \"m\"\n");
    assert_eq!(inv.key.as_deref(), Some("providers[0].base_url"));
}

#[test]
fn a_base_url_that_is_not_a_url_is_rejected_at_load_not_per_request() {
    let inv = invalid(
        "[[providers]]\nname = \"a\"\nbase_url = \"http://exa mple.com/v1\"\nmodel = \"m\"\n",
    );
    assert_eq!(inv.key.as_deref(), Some("providers[0].base_url"));
    assert!(inv.message.contains("not a valid URL"), "{inv}");
    let ok = Config::parse(
        "[[providers]]\nname = \"a\"\nbase_url = \"http://localhost:11434/v1/\"\nmodel = \"m\"\n",
        None,
    )
    .expect("valid");
    assert_eq!(
        ok.providers[0].chat_url.as_str(),
        "http://localhost:11434/v1/chat/completions"
    );
}

#[test]
fn public_host_without_auth_token_is_refused() {
    let inv = invalid("[server]\nhost = \"0.0.0.0\"\n");
    assert_eq!(inv.key.as_deref(), Some("server.host"));
    assert!(inv.message.contains("auth_token"), "{inv}");
    let ok = Config::parse(
        "[server]\nhost = \"0.0.0.0\"\nauth_token = \"0123456789abcdef0123\"\n",
        None,
    );
    assert!(ok.is_ok());
}

#[test]
fn zero_priority_and_zero_cooldown_are_rejected() {
    let inv = invalid(&format!("{MINIMAL}priority = 0\n"));
    assert_eq!(inv.key.as_deref(), Some("providers[0].priority"));
    let inv = invalid("[routing]\ndefault_cooldown_secs = 0\n");
    assert_eq!(inv.key.as_deref(), Some("routing.default_cooldown_secs"));
}

#[test]
fn error_display_names_file_line_and_column() {
    let err = Config::parse("[server]\nport = -1\n", Some(Path::new("/tmp/c.toml")))
        .expect_err("invalid");
    let text = err.to_string();
    assert!(text.starts_with("/tmp/c.toml:2:"), "{text}");
}

#[test]
fn load_or_create_writes_the_commented_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("config.toml");
    let (cfg, created) = Config::load_or_create(&path).expect("created");
    assert!(created);
    assert!(!cfg.providers.is_empty());
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("# llm-rotator configuration."));
    let (_, created_again) = Config::load_or_create(&path).expect("loaded");
    assert!(!created_again);
}

#[test]
fn client_connection_limits_have_defaults_and_refuse_zero() {
    let cfg = Config::parse(MINIMAL, None).expect("parses");
    assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(75));
    assert_eq!(cfg.server.max_connections, 1024);
    let set =
        "[server]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 5\nmax_connections = 3\n";
    let cfg = Config::parse(set, None).expect("parses");
    assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(5));
    assert_eq!(cfg.server.max_connections, 3);
    for key in [
        "header_read_timeout_secs",
        "idle_timeout_secs",
        "max_connections",
    ] {
        let inv = invalid(&format!("[server]\n{key} = 0\n"));
        assert_eq!(inv.key.as_deref(), Some(&*format!("server.{key}")), "{inv}");
        assert_eq!(inv.line, Some(2), "{inv}");
    }
}

#[test]
fn a_config_file_that_is_not_a_regular_file_or_too_large_is_refused_with_why() {
    let dir = tempfile::tempdir().expect("dir");
    let err = Config::load(dir.path()).expect_err("a directory");
    assert!(
        err.to_string()
            .ends_with("is not a regular file (a directory); only regular files are read, so that a pipe or a device cannot hang the agent"),
        "{err}"
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).expect("write");
    let err = Config::load(&big).expect_err("too large");
    assert!(matches!(err, ConfigError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("more than the 4.0 MiB allowed"),
        "{err}"
    );
    // The last good copy keeps the file's permissions.
    let src = dir.path().join("config.toml");
    std::fs::write(&src, MINIMAL).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let dest = dir.path().join("data").join("config.last-good.toml");
    remember_last_good(&src, &dest).expect("copy");
    assert_eq!(std::fs::read_to_string(&dest).expect("copy"), MINIMAL);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn provider_limits_are_read_and_zero_is_refused_with_its_path() {
    let text = format!(
        "{MINIMAL}requests_per_day = 1000\nrequests_per_minute = 30\ntokens_per_minute = 6000\ntokens_per_day = 500000\n"
    );
    let cfg = Config::parse(&text, None).expect("valid");
    let l = cfg.providers[0].limits;
    assert_eq!(l.requests_per_day, Some(1000));
    assert_eq!(l.requests_per_minute, Some(30));
    assert_eq!(l.tokens_per_minute, Some(6000));
    assert_eq!(l.tokens_per_day, Some(500_000));
    // Left out: no limit known.
    let cfg = Config::parse(MINIMAL, None).expect("valid");
    assert_eq!(cfg.providers[0].limits, Limits::default());
    for field in [
        "requests_per_day",
        "requests_per_minute",
        "tokens_per_minute",
        "tokens_per_day",
    ] {
        let inv = invalid(&format!("{MINIMAL}{field} = 0\n"));
        assert_eq!(inv.key, Some(format!("providers[0].{field}")), "{inv}");
        assert_eq!(inv.line, Some(6), "{inv}");
        let inv = invalid(&format!("{MINIMAL}{field} = -5\n"));
        assert_eq!(inv.line, Some(6), "{inv}");
    }
}

#[test]
fn metrics_are_served_unless_the_config_turns_them_off() {
    assert!(Config::parse(MINIMAL, None).expect("parses").server.metrics);
    let off = Config::parse("[server]\nmetrics = false\n", None).expect("parses");
    assert!(!off.server.metrics);
}

#[test]
fn a_reload_names_the_settings_that_wait_for_a_restart() {
    let running = Config::parse(MINIMAL, None).expect("valid");
    assert!(crate::config::restart_only_changes(&running, &running).is_empty());
    let text = format!(
        "[server]\nport = 8123\nmax_connections = 99\n\n[routing]\nconnect_timeout_secs = 3\ndefault_cooldown_secs = 7\n\n{MINIMAL}"
    );
    let new = Config::parse(&text, None).expect("valid");
    assert_eq!(
        crate::config::restart_only_changes(&running, &new),
        [
            "server.port",
            "server.max_connections",
            "routing.connect_timeout_secs"
        ],
        "a cooldown applies at once and is not listed"
    );
}

#[test]
fn a_shared_pool_is_off_by_default_and_read_with_its_defaults() {
    let cfg = Config::parse("", None).expect("empty");
    assert_eq!(cfg.shared, None);
    let cfg = Config::parse("[shared]\nurl = \"redis://10.0.0.5:6379/2\"\n", None).expect("shared");
    let shared = cfg.shared.expect("on");
    assert_eq!(shared.pool, "default");
    assert_eq!(shared.machine, None);
    let cfg = Config::parse(
        "[shared]\nurl = \"rediss://redis.home.arpa\"\npool = \"home\"\nmachine = \"Ada's Mac\"\n",
        None,
    )
    .expect("shared");
    let shared = cfg.shared.expect("on");
    assert_eq!(
        (shared.pool.as_str(), shared.machine.as_deref()),
        ("home", Some("Ada's Mac"))
    );
}

#[test]
fn a_shared_pool_refuses_a_password_in_the_file_and_other_schemes_at_their_line() {
    let inv = invalid("[shared]\nurl = \"redis://:hunter2@10.0.0.5:6379\"\n");
    assert_eq!(inv.line, Some(2), "{inv}");
    assert!(inv.message.contains("keys set shared"), "{inv}");
    assert!(
        !inv.message.contains("hunter2"),
        "the password is not repeated: {inv}"
    );
    let inv = invalid("[shared]\nurl = \"http://10.0.0.5:6379\"\n");
    assert!(inv.message.contains("redis://"), "{inv}");
    let inv = invalid("[shared]\nurl = \"redis://x\"\npool = \"a b\"\n");
    assert_eq!(inv.key.as_deref(), Some("shared.pool"), "{inv}");
    let inv = invalid("[shared]\npool = \"home\"\n");
    assert!(inv.message.contains("url"), "{inv}");
}

#[test]
fn a_shared_pool_without_tls_off_this_machine_is_warned_about() {
    let warn = |url: &str| {
        Config::parse(&format!("[shared]\nurl = \"{url}\"\n"), None)
            .expect("parse")
            .shared
            .expect("on")
            .warnings()
    };
    assert_eq!(warn("redis://10.0.0.5:6379").len(), 1);
    assert!(warn("rediss://10.0.0.5:6379").is_empty());
    assert!(warn("redis://127.0.0.1:6379").is_empty());
    assert!(warn("redis://localhost").is_empty());
    assert!(warn("redis://[::1]:6379").is_empty());
}

#[test]
fn changing_the_shared_pool_needs_a_restart() {
    let a = Config::parse("", None).expect("a");
    let b = Config::parse("[shared]\nurl = \"redis://127.0.0.1\"\n", None).expect("b");
    assert_eq!(crate::config::restart_only_changes(&a, &b), vec!["shared"]);
}
