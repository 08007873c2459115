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
