//! API keys through the real binary: `llm-rotator keys ...` against a real Secret Service
//! (a throwaway gnome-keyring in a private D-Bus session, which `scripts/test` sets up and
//! announces with `LLM_ROTATOR_TEST_SECRET_SERVICE=1`), a running agent picking up changed
//! keys, per-key cooldowns, the headless (no keychain) path, and a search for leaked keys
//! in everything the agent writes or answers.
//!
//! Every test uses its own keychain service name (`LLM_ROTATOR_KEYCHAIN_SERVICE`), so tests
//! never see each other's items, nor a user's real ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use llm_rotator::secrets::keychain::{Keychain, SERVICE_ENV};
use llm_rotator::secrets::ApiKey;
use serde_json::json;

use crate::common::*;

const SS_ENV: &str = "LLM_ROTATOR_TEST_SECRET_SERVICE";

/// Whether to run the Secret Service tests. When `LLM_ROTATOR_TEST_SECRET_SERVICE` is set
/// the service must work: the tests then fail loudly if it does not.
fn secret_service(test: &str) -> bool {
    if std::env::var_os(SS_ENV).is_some() {
        return true;
    }
    skip(
        test,
        &format!(
            "it needs a real Secret Service; set {SS_ENV}=1 inside a D-Bus session with an \
             unlocked keyring (scripts/test does this)"
        ),
    );
    false
}

/// A config dir, a unique keychain service, and a way to run `llm-rotator keys ...`.
struct KeysEnv {
    dir: tempfile::TempDir,
    service: String,
    /// The port the CLI's config names until an agent runs: nothing listens there.
    _nowhere: ClosedPort,
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl KeysEnv {
    /// `providers` are (name, mock); the config's `[server] port` is one where nothing
    /// listens, until [`KeysEnv::serve`] points it at the agent.
    fn new(test: &str, providers: &[(&str, String)]) -> KeysEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let nowhere = ClosedPort::new();
        let port = nowhere.port;
        let ps: Vec<P<'_>> = providers
            .iter()
            .enumerate()
            .map(|(i, (name, url))| P {
                name,
                url: url.clone(),
                priority: i as u32 + 1,
                extra: "",
            })
            .collect();
        let cfg = config_text(&format!("[server]\nport = {port}\n"), &ps);
        std::fs::write(dir.path().join("config.toml"), cfg).expect("write config");
        KeysEnv {
            dir,
            service: format!("com.llmrotator.test.{}.{test}", std::process::id()),
            _nowhere: nowhere,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn keychain(&self) -> Keychain {
        Keychain::new(self.service.clone(), Duration::from_secs(20))
    }

    /// The keychain's keys of `provider`, as text.
    fn stored(&self, provider: &str) -> Vec<String> {
        self.keychain()
            .keys(provider)
            .expect("keychain readable")
            .iter()
            .map(|k| k.expose().to_string())
            .collect()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Binary::exe());
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env(SERVICE_ENV, &self.service)
            .env_remove("LLM_ROTATOR_CONFIG")
            .env_remove("LLM_ROTATOR_DATA_DIR")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `llm-rotator --config <cfg> <args>` with `stdin` piped in.
    fn run(&self, args: &[&str], stdin: &str) -> Out {
        run_cmd(self.command(args), stdin)
    }

    /// Starts `llm-rotator serve` on a copy of this config with these extra variables,
    /// waits until it is ready and points the CLI's config at it.
    async fn serve(&self, env: &[(&str, &str)]) -> Binary {
        let mut all: Vec<(&str, &str)> = vec![(SERVICE_ENV, self.service.as_str())];
        all.extend_from_slice(env);
        let cfg = std::fs::read_to_string(self.config()).expect("config");
        let mut bin = Binary::start(&self.dir.path().join("agent"), &cfg, &all);
        bin.wait_ready().await;
        self.point_at(&bin);
        bin
    }

    /// Makes the CLI's config name `bin`'s port, as a user's config names the port their
    /// agent runs on.
    fn point_at(&self, bin: &Binary) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("port = ") {
                    format!("port = {}\n", bin.port())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(self.config(), text).expect("write config");
    }
}

impl Drop for KeysEnv {
    fn drop(&mut self) {
        if std::env::var_os(SS_ENV).is_some() {
            for p in ["alpha", "beta", "gamma"] {
                let _ = self.keychain().remove_all(p);
            }
        }
    }
}

fn run_cmd(mut cmd: Command, stdin: &str) -> Out {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llm-rotator");
    {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait");
    Out {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn fp(key: &str) -> String {
    ApiKey::new(key).expect("key").fingerprint()
}

/// POSTs a chat completion; (status, x-provider, body).
async fn chat_bin(bin: &Binary, stream: bool) -> (u16, String, String) {
    let resp = client()
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let provider = answered_by(&resp);
    (status, provider, resp.text().await.expect("body"))
}

fn bearer(r: &Recorded) -> String {
    r.headers["authorization"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// A provider URL for tests that never call it (the discard port).
const NOWHERE: &str = "http://127.0.0.1:9/v1";

const K1: &str = "sk-first-4Tq8Lz2Wm6Xc1Vb9";
const K2: &str = "sk-second-7Hn3Jd5Fs8Ga2Pk4";
const K3: &str = "sk-third-9Rw1Ey6Uo3Ii5Qz7";
const K4: &str = "sk-fourth-2Mx8Nc4Bv6Lk1Jh3";

#[test]
fn keys_set_get_replace_add_delete_and_list_through_the_secret_service() {
    if !secret_service("keys_set_get_replace_add_delete_and_list_through_the_secret_service") {
        return;
    }
    let env = KeysEnv::new("crud", &[("alpha", NOWHERE.to_string())]);

    let list = env.run(&["keys", "list"], "");
    assert!(list.ok(), "{list:?}");
    assert!(
        list.stdout.contains("alpha     none"),
        "alpha starts with no key: {list:?}"
    );
    assert!(
        list.stdout
            .contains(&format!("keychain: service {}", env.service)),
        "the Secret Service must be usable here ({SS_ENV} is set): {list:?}"
    );

    // set + get: the key is read from stdin and lands in the keychain as is.
    let out = env.run(&["keys", "set", "alpha"], &format!("{K1}\n"));
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains(&format!("alpha key #1 ({})", fp(K1))),
        "{out:?}"
    );
    assert_eq!(env.stored("alpha"), vec![K1]);

    // The item carries a readable label and the provider as its account.
    let items = Command::new("secret-tool")
        .args(["search", "--all", "service", &env.service])
        .output()
        .expect("secret-tool (libsecret-tools) is installed");
    let items = String::from_utf8_lossy(&items.stdout).into_owned()
        + &String::from_utf8_lossy(&items.stderr);
    assert!(items.contains("label = LLM Rotator: alpha"), "{items}");
    assert!(items.contains("attribute.username = alpha"), "{items}");

    // Replacing is explicit.
    let out = env.run(&["keys", "set", "alpha"], K2);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("--replace"), "{out:?}");
    assert_eq!(env.stored("alpha"), vec![K1]);
    let out = env.run(&["keys", "set", "alpha", "--replace"], K2);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("replaced alpha key #1"), "{out:?}");
    assert_eq!(env.stored("alpha"), vec![K2]);

    // A second and a third key.
    let out = env.run(&["keys", "set", "alpha", "--add"], K3);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("stored alpha key #2"), "{out:?}");
    let out = env.run(&["keys", "set", "alpha", "--index", "3"], K4);
    assert!(out.ok(), "{out:?}");
    assert_eq!(env.stored("alpha"), vec![K2, K3, K4]);
    let out = env.run(&["keys", "set", "alpha", "--index", "1"], K1);
    assert_eq!(
        out.code,
        Some(1),
        "an existing index needs --replace: {out:?}"
    );
    let out = env.run(&["keys", "set", "alpha", "--index", "9"], K1);
    assert_eq!(out.code, Some(1), "{out:?}");
    let out = env.run(&["keys", "set", "alpha", "--add"], K3);
    assert!(out.stdout.contains("already this key"), "{out:?}");
    assert_eq!(env.stored("alpha"), vec![K2, K3, K4]);

    // list: origin and fingerprint per key, env keys after keychain keys, never a key.
    let mut cmd = env.command(&["keys", "list"]);
    cmd.env("ALPHA_TEST_KEY", K1);
    let list = run_cmd(cmd, "");
    assert!(list.ok(), "{list:?}");
    let rows: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with("alpha"))
        .collect();
    assert_eq!(rows.len(), 4, "{list:?}");
    assert!(
        rows[0].contains("keychain #1") && rows[0].contains(&fp(K2)),
        "{list:?}"
    );
    assert!(
        rows[1].contains("keychain #2") && rows[1].contains(&fp(K3)),
        "{list:?}"
    );
    assert!(
        rows[2].contains("keychain #3") && rows[2].contains(&fp(K4)),
        "{list:?}"
    );
    assert!(
        rows[3].contains("env ALPHA_TEST_KEY") && rows[3].contains(&fp(K1)),
        "{list:?}"
    );
    for k in [K1, K2, K3, K4] {
        assert_no_part_of_keys("keys list", &list.all(), &[k]);
    }
    // A key found in the keychain and in the environment is one key.
    let mut cmd = env.command(&["keys", "list"]);
    cmd.env("ALPHA_TEST_KEY", K3);
    let list = run_cmd(cmd, "");
    let rows = list
        .stdout
        .lines()
        .filter(|l| l.starts_with("alpha"))
        .count();
    assert_eq!(rows, 3, "{list:?}");

    // delete: ambiguous without --index/--all; later keys move up.
    let out = env.run(&["keys", "delete", "alpha"], "");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("--index"), "{out:?}");
    let out = env.run(&["keys", "delete", "alpha", "--index", "1"], "");
    assert!(out.ok(), "{out:?}");
    assert_eq!(env.stored("alpha"), vec![K3, K4]);
    let out = env.run(&["keys", "delete", "alpha", "--all"], "");
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("deleted 2 alpha key(s)"), "{out:?}");
    assert!(env.stored("alpha").is_empty());
    let out = env.run(&["keys", "delete", "alpha"], "");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no key in the keychain"), "{out:?}");

    // Empty input is an error and stores nothing.
    let out = env.run(&["keys", "set", "alpha"], "  \n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no key given"), "{out:?}");
    let out = env.run(&["keys", "set", "alpha"], "two words\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(env.stored("alpha").is_empty());
}

#[test]
fn keys_commands_reject_unknown_providers() {
    let env = KeysEnv::new("unknown", &[("alpha", NOWHERE.to_string())]);
    for args in [
        &["keys", "set", "nope"][..],
        &["keys", "delete", "nope"],
        &["keys", "test", "nope"],
    ] {
        let out = env.run(args, K1);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("no provider named \"nope\"") && out.stderr.contains("alpha"),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn keys_import_moves_a_dotenv_into_the_keychain() {
    if !secret_service("keys_import_moves_a_dotenv_into_the_keychain") {
        return;
    }
    let env = KeysEnv::new(
        "import",
        &[
            ("alpha", NOWHERE.to_string()),
            ("beta", NOWHERE.to_string()),
        ],
    );
    let dotenv = env.dir.path().join(".env");
    std::fs::write(
        &dotenv,
        format!(
            "# my keys\nALPHA_TEST_KEY={K1}\nexport BETA_TEST_KEY=\"{K2}\"\nDATABASE_URL=postgres://x\n"
        ),
    )
    .expect("write .env");

    // Default path: ./.env in the working directory.
    let out = env.run(&["keys", "import"], "");
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("ALPHA_TEST_KEY -> alpha key #1 ({})", fp(K1))),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("BETA_TEST_KEY -> beta key #1 ({})", fp(K2))),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("skipped DATABASE_URL (line 4): no configured provider reads it"),
        "{out:?}"
    );
    assert_no_part_of_keys("keys import", &out.all(), &[K1, K2]);
    assert_eq!(env.stored("alpha"), vec![K1]);
    assert_eq!(env.stored("beta"), vec![K2]);
    // The file holds other settings: --delete keeps it.
    let out = env.run(&["keys", "import", "--delete"], "");
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("already in the keychain"), "{out:?}");
    assert!(out.stdout.contains("kept"), "{out:?}");
    assert!(dotenv.exists());
    assert_eq!(
        env.stored("alpha"),
        vec![K1],
        "importing again adds nothing"
    );

    // A file of keys only: a new key is added next to the existing one, then deleted.
    let keys_only = env.dir.path().join("keys.env");
    std::fs::write(&keys_only, format!("ALPHA_TEST_KEY='{K3}'\n")).expect("write");
    let out = env.run(&["keys", "import", keys_only.to_str().expect("utf-8")], "");
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("can now be deleted"), "{out:?}");
    assert!(keys_only.exists());
    let out = env.run(
        &[
            "keys",
            "import",
            "--delete",
            keys_only.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(out.ok(), "{out:?}");
    assert!(!keys_only.exists(), "--delete removes the file: {out:?}");
    assert_eq!(env.stored("alpha"), vec![K1, K3]);

    // Nothing importable: a clear error.
    let nothing = env.dir.path().join("nothing.env");
    std::fs::write(&nothing, "OTHER=1\n").expect("write");
    let out = env.run(&["keys", "import", nothing.to_str().expect("utf-8")], "");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("found no key for a configured provider"),
        "{out:?}"
    );
    let out = env.run(&["keys", "import", "/nonexistent/.env"], "");
    assert_eq!(out.code, Some(1), "{out:?}");
}

#[tokio::test]
async fn running_agent_picks_up_a_changed_key_after_keys_set() {
    if !secret_service("running_agent_picks_up_a_changed_key_after_keys_set") {
        return;
    }
    let a = Mock::start(vec![
        Reply::json(401, json!({"error": {"message": "invalid api key"}})),
        Reply::completion("with the new key"),
    ])
    .await;
    let env = KeysEnv::new("reload", &[("alpha", a.base_url())]);
    let out = env.run(&["keys", "set", "alpha"], K1);
    assert!(out.ok(), "{out:?}");
    assert!(
        !out.stdout.contains("running"),
        "no agent runs yet: {out:?}"
    );

    let bin = env.serve(&[]).await;
    let st = provider_status(&bin, "alpha").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["keys"][0]["label"], format!("keychain {}", fp(K1)));

    let (code, _, body) = chat_bin(&bin, false).await;
    assert_ne!(code, 200, "{body}");
    assert_eq!(bearer(&a.requests()[0]), format!("Bearer {K1}"));
    assert_eq!(provider_status(&bin, "alpha").await["state"], "auth_failed");

    // A new key through the CLI: the running agent is told and takes it.
    let out = env.run(&["keys", "set", "alpha", "--replace"], K2);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains("the running llm-rotator now uses the new keys"),
        "{out:?}"
    );
    let st = provider_status(&bin, "alpha").await;
    assert_eq!(
        st["state"], "ready",
        "a changed key is eligible again: {st}"
    );
    assert_eq!(st["keys"].as_array().expect("keys").len(), 1, "{st}");
    assert_eq!(st["keys"][0]["label"], format!("keychain {}", fp(K2)));

    let (code, provider, body) = chat_bin(&bin, false).await;
    assert_eq!((code, provider.as_str()), (200, "alpha"), "{body}");
    assert_eq!(bearer(&a.requests()[1]), format!("Bearer {K2}"));

    // Deleting it leaves the provider without a key, again without a restart.
    let out = env.run(&["keys", "delete", "alpha"], "");
    assert!(out.ok(), "{out:?}");
    assert_eq!(provider_status(&bin, "alpha").await["state"], "no_key");
}

#[tokio::test]
async fn the_shared_pool_password_is_kept_as_the_keychain_item_shared_and_used_by_the_agent() {
    let test = "the_shared_pool_password_is_kept_as_the_keychain_item_shared";
    if !secret_service(test) {
        return;
    }
    let password = "pool-secret-Xq93kdL2";
    let a = Mock::start(vec![Reply::completion("hi")]).await;
    let env = KeysEnv::new("sharedpw", &[("alpha", a.base_url())]);
    let Some(redis) = crate::shared::Redis::start(test, env.dir.path(), Some(password)) else {
        return;
    };
    let out = env.run(&["keys", "set", "shared"], password);
    assert!(out.ok(), "{out:?}");
    assert_eq!(env.stored("shared"), vec![password.to_string()]);
    let again = env.run(&["keys", "set", "shared"], "other-password");
    assert!(
        !again.ok() && again.stderr.contains("--replace"),
        "{again:?}"
    );

    let cfg = std::fs::read_to_string(env.config()).expect("config");
    let cfg = format!(
        "{cfg}\n[shared]\nurl = \"{}\"\nmachine = \"m1\"\n",
        redis.url()
    );
    std::fs::write(env.config(), &cfg).expect("write");
    let bin = env.serve(&[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = get_json(&bin, "/status").await;
        if s["shared"]["state"] == "online" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never online: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = bin.stderr();
    assert!(!logs.contains(password), "the password is never logged");

    let out = env.run(&["keys", "delete", "shared"], "");
    assert!(out.ok(), "{out:?}");
    assert!(env.stored("shared").is_empty());
}

#[tokio::test]
async fn two_keychain_keys_on_one_provider_cool_down_on_their_own() {
    if !secret_service("two_keychain_keys_on_one_provider_cool_down_on_their_own") {
        return;
    }
    let a = Mock::start(vec![
        Reply::json_with(
            429,
            &[("retry-after", "120")],
            json!({"error": {"message": "rate limit reached"}}),
        ),
        Reply::completion("second key"),
    ])
    .await;
    let env = KeysEnv::new("cooldown", &[("alpha", a.base_url())]);
    assert!(env.run(&["keys", "set", "alpha"], K1).ok());
    assert!(env.run(&["keys", "set", "alpha", "--add"], K2).ok());

    let bin = env.serve(&[]).await;
    let (code, provider, body) = chat_bin(&bin, false).await;
    assert_eq!((code, provider.as_str()), (200, "alpha"), "{body}");
    let reqs = a.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(bearer(&reqs[0]), format!("Bearer {K1}"), "first key first");
    assert_eq!(bearer(&reqs[1]), format!("Bearer {K2}"), "then the second");

    let st = provider_status(&bin, "alpha").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["keys"][0]["label"], format!("keychain {}", fp(K1)));
    assert_eq!(st["keys"][0]["state"], "cooling_down", "{st}");
    let left = st["keys"][0]["cooldown_remaining_secs"]
        .as_u64()
        .expect("secs");
    assert!((100..=120).contains(&left), "{st}");
    assert_eq!(st["keys"][1]["label"], format!("keychain #2 {}", fp(K2)));
    assert_eq!(st["keys"][1]["state"], "ready", "{st}");

    // While the first key cools down, only the second is used.
    for _ in 0..2 {
        let (code, _, body) = chat_bin(&bin, false).await;
        assert_eq!(code, 200, "{body}");
    }
    let reqs = a.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[2..]
        .iter()
        .all(|r| bearer(r) == format!("Bearer {K2}")));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn without_a_keychain_the_agent_runs_on_env_keys_and_keys_set_explains_env_vars() {
    let a = Mock::start(vec![Reply::completion("from env")]).await;
    let env = KeysEnv::new("headless", &[("alpha", a.base_url())]);
    let empty_runtime_dir = tempfile::tempdir().expect("tempdir");
    let headless = |cmd: &mut Command| {
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("XDG_RUNTIME_DIR", empty_runtime_dir.path());
    };

    // The agent, with no session bus at all.
    let dir = env.dir.path().join("agent");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cmd = Command::new(Binary::exe());
    cmd.arg("serve")
        .arg("--config")
        .arg(env.config())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(Binary::any_port_args(&dir))
        .env(SERVICE_ENV, &env.service)
        .env("ALPHA_TEST_KEY", K1)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.log")).expect("stdout"))
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr"));
    headless(&mut cmd);
    let mut bin = Binary::adopt(cmd.spawn().expect("spawn"), &dir);
    bin.wait_ready().await;

    let status = get_json(&bin, "/status").await;
    let note = status["key_store"].as_str().unwrap_or_default().to_string();
    assert!(
        note.contains("no keychain service is available")
            && note.contains("environment variables only"),
        "{status}"
    );
    let st = provider_status(&bin, "alpha").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(
        st["keys"][0]["label"],
        format!("env ALPHA_TEST_KEY {}", fp(K1))
    );
    let (code, _, body) = chat_bin(&bin, false).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(bearer(&a.requests()[0]), format!("Bearer {K1}"));

    // Re-reading the keys does not repeat the warning.
    let r = client()
        .post(bin.url("/keys/reload"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let said = bin.stderr().matches("keychain not usable").count();
    assert_eq!(said, 1, "said once: {}", bin.stderr());

    // `keys set` cannot store anything and says how to use env vars instead.
    let mut cmd = env.command(&["keys", "set", "alpha"]);
    headless(&mut cmd);
    let out = run_cmd(cmd, K2);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no keychain service is available")
            && out.stderr.contains("environment variables")
            && out.stderr.contains("ALPHA_TEST_KEY=<key>"),
        "{out:?}"
    );
    assert_no_part_of_keys("keys set (headless)", &out.all(), &[K2]);

    // `keys list` still shows the env key, and the missing keychain.
    let mut cmd = env.command(&["keys", "list"]);
    headless(&mut cmd);
    cmd.env("ALPHA_TEST_KEY", K1);
    let out = run_cmd(cmd, "");
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("env ALPHA_TEST_KEY"), "{out:?}");
    assert!(
        out.stdout.contains("no keychain service is available"),
        "{out:?}"
    );
}

// The CLI runs as a blocking child process while the mocks answer on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_test_gives_a_verdict_per_key() {
    let ok = Mock::start(vec![Reply::json(
        200,
        json!({"object": "list", "data": []}),
    )])
    .await;
    let bad = Mock::start(vec![Reply::json(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {K2}")}}),
    )])
    .await;
    let limited = Mock::start(vec![Reply::json(
        429,
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let down = Mock::start(vec![Reply::json(503, json!({"error": "overloaded"}))]).await;
    for m in [&ok, &bad, &limited, &down] {
        m.script_models();
    }
    let env = KeysEnv::new(
        "test",
        &[
            ("alpha", ok.base_url()),
            ("beta", bad.base_url()),
            ("gamma", limited.base_url()),
            ("delta", down.base_url()),
        ],
    );
    let mut cmd = env.command(&["keys", "test"]);
    cmd.env("ALPHA_TEST_KEY", K1)
        .env("BETA_TEST_KEY", K2)
        .env("GAMMA_TEST_KEY", K3)
        .env("DELTA_TEST_KEY", K4);
    let out = run_cmd(cmd, "");
    assert_eq!(
        out.code,
        Some(1),
        "a rejected key fails the command: {out:?}"
    );
    let row = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("alpha").ends_with("ok"), "{out:?}");
    assert!(row("beta").contains("rejected (HTTP 401"), "{out:?}");
    assert!(row("gamma").contains("rate limited (HTTP 429"), "{out:?}");
    assert!(row("delta").contains("unreachable (HTTP 503"), "{out:?}");
    assert_no_part_of_keys("keys test", &out.all(), &[K1, K2, K3, K4]);
    assert_eq!(ok.requests()[0].path, "/v1/models");
    assert_eq!(bearer(&ok.requests()[0]), format!("Bearer {K1}"));

    // One provider, nothing listening: unreachable.
    let gone = ClosedPort::new();
    let cfg = std::fs::read_to_string(env.config())
        .expect("config")
        .replace(
            &ok.base_url(),
            &format!("http://127.0.0.1:{}/v1", gone.port),
        );
    std::fs::write(env.config(), cfg).expect("write");
    let mut cmd = env.command(&["keys", "test", "alpha"]);
    cmd.env("ALPHA_TEST_KEY", K1);
    let out = run_cmd(cmd, "");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("unreachable (cannot connect)"),
        "{out:?}"
    );
    let mut cmd = env.command(&["keys", "test", "gamma"]);
    cmd.env("GAMMA_TEST_KEY", K3);
    let out = run_cmd(cmd, "");
    assert!(out.ok(), "a rate-limited key still works: {out:?}");
}

/// Every substring of a key that is longer than what its fingerprint shows.
fn key_parts(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    chars.windows(5).map(|w| w.iter().collect()).collect()
}

fn assert_no_part_of_keys(place: &str, text: &str, keys: &[&str]) {
    for key in keys {
        for part in key_parts(key) {
            assert!(
                !text.contains(&part),
                "{place} contains {part:?}, part of a key:\n{text}"
            );
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// The CLI runs as a blocking child process while the mocks answer on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_part_of_a_key_leaks_into_output_files_status_or_error_bodies() {
    // Distinctive keys (no run of 5 characters occurs anywhere by chance) that the mock
    // providers echo back in their error messages, as real providers do.
    const LEAK_A1: &str = "lk-A1-Zq7Xm2Vw9Rt4Yp8Bn3Hc";
    const LEAK_A2: &str = "lk-A2-Jf5Kd1Ls6Qg8Wu3Oe7Ty";
    const LEAK_B: &str = "lk-B-Pm4Xz9Ca2Vb7Nq1Rk5Gh";
    const LEAK_C: &str = "lk-C-Ux3Iw8Oy6Ez1Tr4Ma9Sd";
    let keys = [LEAK_A1, LEAK_A2, LEAK_B, LEAK_C];
    let echo = |status: u16, key: &str| {
        Reply::json(
            status,
            json!({"error": {
                "message": format!("Incorrect API key provided: {key}. Key {key} (ends {}) is wrong", &key[key.len() - 6..]),
                "type": "invalid_request_error",
                "param": key,
            }}),
        )
    };
    // alpha: both keys rejected (401/403); beta: 429; gamma: 500 then 503.
    let a = Mock::start(vec![echo(401, LEAK_A1), echo(403, LEAK_A2)]).await;
    let b = Mock::start(vec![Reply::json_with(
        429,
        &[("retry-after", "300")],
        json!({"error": {"message": format!("Rate limit reached for key {LEAK_B}")}}),
    )])
    .await;
    let c = Mock::start(vec![
        Reply::json(
            500,
            json!({"error": format!("upstream failure for key={LEAK_C}")}),
        ),
        Reply::json(
            503,
            json!({"message": format!("overloaded; your key {LEAK_C}")}),
        ),
    ])
    .await;
    let env = KeysEnv::new(
        "leak",
        &[
            ("alpha", a.base_url()),
            ("beta", b.base_url()),
            ("gamma", c.base_url()),
        ],
    );
    let cfg = std::fs::read_to_string(env.config())
        .expect("config")
        .replace(
            "api_key_env = \"ALPHA_TEST_KEY\"",
            "api_key_env = [\"ALPHA_TEST_KEY\", \"ALPHA_TEST_KEY_2\"]",
        );
    // Every request here is refused; none should wait for gamma's short cooldown.
    let cfg = format!("[routing]\nmax_wait_secs = 0\n{cfg}");
    std::fs::write(env.config(), cfg).expect("write");
    let agent_env = [
        ("ALPHA_TEST_KEY", LEAK_A1),
        ("ALPHA_TEST_KEY_2", LEAK_A2),
        ("BETA_TEST_KEY", LEAK_B),
        ("GAMMA_TEST_KEY", LEAK_C),
        ("RUST_LOG", "debug"),
    ];
    let mut bin = env.serve(&agent_env).await;

    let mut answers: Vec<(String, String)> = Vec::new();
    for (i, stream) in [false, true, false, true, false].into_iter().enumerate() {
        let (code, _, body) = chat_bin(&bin, stream).await;
        assert_ne!(code, 200, "every provider fails: {body}");
        answers.push((format!("error body #{i} (HTTP {code})"), body));
    }
    // The providers did receive the keys and echo them back: this test can fail.
    assert!(a.hits() >= 2 && b.hits() >= 1 && c.hits() >= 1);
    assert_eq!(bearer(&a.requests()[0]), format!("Bearer {LEAK_A1}"));
    for path in [
        "/status",
        "/stats",
        "/v1/models",
        "/health",
        "/metrics",
        "/ui/api/state",
        "/ui/api/series?hours=24",
    ] {
        let text = get_text(&bin, path).await;
        answers.push((path.to_string(), text));
    }
    let status = get_json(&bin, "/status").await;
    assert_eq!(
        provider_status(&bin, "alpha").await["state"],
        "auth_failed",
        "{status}"
    );
    // A pinned request to each provider, and a reload, for more error paths.
    for model in ["alpha/x", "beta/x", "gamma/x"] {
        let resp = client()
            .post(bin.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": []}))
            .send()
            .await
            .expect("send");
        answers.push((format!("pinned {model}"), resp.text().await.expect("text")));
    }
    let r = client()
        .post(bin.url("/keys/reload"))
        .send()
        .await
        .expect("send");
    answers.push(("/keys/reload".into(), r.text().await.expect("text")));

    // The CLI's views of the same keys (`keys test` reads each provider's /models).
    for m in [&a, &b, &c] {
        m.script_models();
    }
    for args in [
        &["keys", "list"][..],
        &["keys", "test"],
        &["status"],
        &["status", "--json"],
    ] {
        let mut cmd = env.command(args);
        for (k, v) in &agent_env[..4] {
            cmd.env(k, v);
        }
        let out = run_cmd(cmd, "");
        answers.push((format!("llm-rotator {}", args.join(" ")), out.all()));
    }

    bin.signal("TERM");
    assert_eq!(bin.wait_exit(), Some(0));
    let files = files_under(env.dir.path());
    assert!(
        files.iter().any(|f| f.ends_with("stderr.log"))
            && files.iter().any(|f| f.ends_with("stdout.log")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("/logs/llm-rotator")),
        "the log file is searched too: {files:?}"
    );
    let stderr = bin.stderr();
    assert!(
        stderr.contains("alpha"),
        "the agent logged the failures: {stderr}"
    );
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).expect("read")).into_owned();
        assert_no_part_of_keys(&f.display().to_string(), &text, &keys);
    }
    for (place, text) in &answers {
        assert_no_part_of_keys(place, text, &keys);
    }
}
