//! The command line: subcommands and their output. `serve`/`run` hand over to
//! [`crate::agent`]; `status`, `doctor` and `config` are one-shot commands that print
//! readable text and exit non-zero with a clear message on failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub mod doctor;
pub mod keys;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::agent::{self, ServeOptions};
use crate::client::{admin_call, client_runtime, instance_config, instance_request};
use crate::config::Config;
use crate::pool::{countdown, ProviderStateKind, Snapshot};

/// Keeps one OpenAI-compatible endpoint on localhost alive by rotating across LLM
/// providers when they hit rate limits.
#[derive(Debug, Parser)]
#[command(name = "llm-rotator", version, about)]
pub struct Cli {
    /// Config file (default: the platform config dir).
    #[arg(long, global = true, env = "LLM_ROTATOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data dir for persisted state and, when given, logs.
    #[arg(long, global = true, env = "LLM_ROTATOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do (default: run the agent).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (menu-bar app where a display is available; else like `serve`).
    Run {
        /// Port to listen on (overrides server.port; 0: any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Once listening, write the address (`http://127.0.0.1:PORT`) to this file.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Run the proxy in the foreground, headless.
    Serve {
        /// Port to listen on (overrides server.port; 0: any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Once listening, write the address (`http://127.0.0.1:PORT`) to this file.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Show the running instance's providers.
    Status {
        /// Print the raw JSON of GET /status.
        #[arg(long)]
        json: bool,
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Show each provider's model catalog (read from the provider's own /models): its
    /// age, which configured models it offers, which one is in use, which retired, and
    /// what is new since the read before.
    Models {
        /// Only this provider.
        provider: Option<String>,
        /// Read every catalog again now (waits up to 30 s).
        #[arg(long)]
        refresh: bool,
        /// Print the raw JSON of GET /catalog.
        #[arg(long)]
        json: bool,
        /// Also list every model of each catalog.
        #[arg(long)]
        all: bool,
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Show the usage history: per provider and day, requests, tokens, 429s, failures,
    /// rotations and latency, with a sparkline of daily requests. Asks the running agent;
    /// with none running, reads the history file itself.
    Stats {
        /// Days back, today included (1 to 90).
        #[arg(long, default_value_t = crate::history::report::DEFAULT_DAYS)]
        days: u32,
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Print machine-readable rows (JSON) instead of tables.
        #[arg(long)]
        json: bool,
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// End a provider's cooldowns and benches now (as the menu's "Reset cooldowns").
    Reset {
        /// The provider.
        provider: String,
        /// Print the provider's fresh status as JSON.
        #[arg(long)]
        json: bool,
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Test the connection an app such as Osaurus uses: GET /v1/models, one tiny chat
    /// and one tiny stream through the running instance, each decoded strictly.
    Doctor {
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Open the dashboard of the running instance in the default browser (and print its
    /// URL).
    Ui {
        /// Only print the URL.
        #[arg(long)]
        no_open: bool,
        /// Port of the running instance (when it was started with `--port`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start at login: install, remove or inspect the login agent (launchd on macOS, a
    /// systemd user service on Linux).
    Service {
        /// What to do with it.
        #[command(subcommand)]
        action: crate::service::ServiceAction,
    },
    /// Manage provider API keys in the OS keychain.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: crate::cli::keys::KeysAction,
    },
    /// Inspect the config.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print where the config file lives.
    Path,
    /// Validate a config file (default: the one in use).
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let opts = |port| ServeOptions {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        port,
        ready_file: None,
    };
    let agent_opts = |port, ready_file: &Option<PathBuf>| ServeOptions {
        ready_file: ready_file.clone(),
        ..opts(port)
    };
    match &cli.command {
        None => crate::tray::run(&opts(None)).map(|()| ExitCode::SUCCESS),
        Some(Command::Run { port, ready_file }) => {
            crate::tray::run(&agent_opts(*port, ready_file)).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Serve { port, ready_file }) => {
            agent::serve_blocking(&agent_opts(*port, ready_file)).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Service { action }) => Ok(crate::service::command(action)?),
        Some(Command::Status { json, port }) => status(&opts(*port), *json),
        Some(Command::Doctor { port }) => crate::cli::doctor::run(&opts(*port)),
        Some(Command::Ui { no_open, port }) => ui(&opts(*port), *no_open),
        Some(Command::Stats {
            days,
            provider,
            json,
            port,
        }) => stats(&opts(*port), *days, provider.as_deref(), *json),
        Some(Command::Reset {
            provider,
            json,
            port,
        }) => reset(&opts(*port), provider, *json),
        Some(Command::Models {
            provider,
            refresh,
            json,
            all,
            port,
        }) => models(&opts(*port), provider.as_deref(), *refresh, *json, *all),
        Some(Command::Keys { action }) => crate::cli::keys::run(&opts(None), action),
        Some(Command::Config { action }) => match action {
            ConfigAction::Path => {
                let paths = agent::resolve_paths(&opts(None))?;
                println!("{}", paths.config.display());
                Ok(ExitCode::SUCCESS)
            }
            ConfigAction::Check { file } => config_check(&opts(None), file.as_ref()),
        },
    }
}

/// `llm-rotator ui`: prints the dashboard's URL and opens it.
fn ui(opts: &ServeOptions, no_open: bool) -> Result<ExitCode> {
    let config = instance_config(opts)?;
    let url = crate::browser::dashboard_url(&config);
    println!("{url}");
    if config.server.auth_token.is_some() {
        println!("the page asks for server.auth_token once per browser tab");
    }
    if no_open {
        return Ok(ExitCode::SUCCESS);
    }
    match crate::browser::open(&url) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(why) => {
            eprintln!("could not open a browser ({why}); open the URL above yourself");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn config_check(opts: &ServeOptions, file: Option<&PathBuf>) -> Result<ExitCode> {
    let path = match file {
        Some(f) => f.clone(),
        None => agent::resolve_paths(opts)?.config,
    };
    let config = Config::load(&path)?;
    let with_keys = config.providers.iter().filter(|p| p.enabled).count();
    let serving_on = match config.server.port {
        0 => "a free port picked at start".to_string(),
        _ => config.endpoint_url(),
    };
    println!(
        "{}: ok ({} providers, {} enabled; serving on {serving_on})",
        path.display(),
        config.providers.len(),
        with_keys,
    );
    for warning in config.shared.iter().flat_map(|s| s.warnings()) {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

fn models(
    opts: &ServeOptions,
    only: Option<&str>,
    refresh: bool,
    json: bool,
    all: bool,
) -> Result<ExitCode> {
    let config = instance_config(opts)?;
    if let Some(name) = only {
        if !config.providers.iter().any(|p| p.name == name) {
            let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!(
                "no provider named {name:?} in the config; providers: {}",
                names.join(", ")
            );
        }
    }
    let (method, path) = if refresh {
        (reqwest::Method::POST, "/catalog/refresh")
    } else {
        (reqwest::Method::GET, "/catalog")
    };
    let runtime = client_runtime()?;
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()?;
        match instance_request(&client, &config, method, path)
            .send()
            .await
        {
            Ok(resp) => {
                let code = resp.status().as_u16();
                Ok::<_, reqwest::Error>(Some((code, resp.text().await?)))
            }
            Err(e) if e.is_connect() => Ok(None),
            Err(e) => Err(e),
        }
    })?;
    let Some((code, body)) = answer else {
        anyhow::bail!(
            "llm-rotator is not running on {} (start it with `llm-rotator serve`)",
            config.admin_url()
        );
    };
    if code != 200 {
        anyhow::bail!("the running instance answered HTTP {code}: {body}");
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        providers: Vec<crate::catalog::ProviderModels>,
    }
    let mut list = serde_json::from_str::<Answer>(&body)
        .context("unexpected answer from GET /catalog")?
        .providers;
    list.retain(|p| only.is_none_or(|n| n == p.provider));
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!(
            "{}",
            crate::catalog::models_text(&list, chrono::Utc::now(), all)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` made safe for a URL path segment or query value.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `error.message` of an OpenAI-style error body, or the body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

fn stats(opts: &ServeOptions, days: u32, provider: Option<&str>, json: bool) -> Result<ExitCode> {
    use crate::history::{self, report};
    let query = report::Query::parse(Some(&days.to_string()), provider)?;
    let config = instance_config(opts)?;
    let mut path = format!("/stats/history?days={}", query.days);
    if let Some(p) = &query.provider {
        path.push_str(&format!("&provider={}", url_encode(p)));
    }
    let report = match admin_call(&config, reqwest::Method::GET, &path)? {
        Some((200, body)) => serde_json::from_str::<report::Report>(&body).with_context(|| {
            format!(
                "unexpected answer from GET /stats/history on {}",
                config.admin_url()
            )
        })?,
        Some((code, body)) => anyhow::bail!(
            "the instance on {} answered HTTP {code}: {}",
            config.admin_url(),
            error_message(&body)
        ),
        None => {
            // No agent: the file is free to open.
            let paths = agent::resolve_paths(opts)?;
            let file = history::file(&paths.data_dir);
            let mut providers: Vec<_> = config.providers.iter().collect();
            providers.sort_by_key(|p| p.priority);
            let configured: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
            let now = chrono::Utc::now();
            match history::Store::open_existing(&file) {
                Ok(store) => {
                    report::answer(&query, &configured, now, |from| store.rows_since(from))?
                }
                Err(history::HistoryError::Missing { .. }) => {
                    eprintln!("no usage history yet ({} does not exist)", file.display());
                    report::answer(&query, &configured, now, |_| Ok(Vec::new()))?
                }
                Err(e @ history::HistoryError::InUse { .. }) => anyhow::bail!(
                    "{e}, but nothing answers on {} (pass --port of the running agent)",
                    config.admin_url()
                ),
                Err(e) => return Err(e.into()),
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn reset(opts: &ServeOptions, provider: &str, json: bool) -> Result<ExitCode> {
    let config = instance_config(opts)?;
    let path = format!("/providers/{}/reset", url_encode(provider));
    let Some((code, body)) = admin_call(&config, reqwest::Method::POST, &path)? else {
        anyhow::bail!(
            "llm-rotator is not running on {} (start it with `llm-rotator serve`)",
            config.admin_url()
        );
    };
    if code != 200 {
        anyhow::bail!("{}", error_message(&body));
    }
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let p: crate::pool::ProviderSnapshot =
        serde_json::from_str(&body).context("unexpected answer from the reset route")?;
    println!(
        "{}: cooldowns reset; now {}",
        p.name,
        crate::tray::menu::state_text(&p)
    );
    Ok(ExitCode::SUCCESS)
}

fn status(opts: &ServeOptions, json: bool) -> Result<ExitCode> {
    let config = instance_config(opts)?;
    let Some((code, body)) = admin_call(&config, reqwest::Method::GET, "/status")? else {
        eprintln!(
            "llm-rotator is not running on {} (start it with `llm-rotator serve`)",
            config.admin_url()
        );
        return Ok(ExitCode::FAILURE);
    };
    if code != 200 {
        anyhow::bail!(
            "the instance on {} answered HTTP {code}: {body}",
            config.admin_url()
        );
    }
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let snap: Snapshot = serde_json::from_str(&body).with_context(|| {
        format!(
            "the program on {} is not llm-rotator (unexpected /status answer)",
            config.admin_url()
        )
    })?;
    print!("{}", status_table(&snap));
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns two spaces apart, one line per row (the CLI's tables).
pub fn text_table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The readable table `llm-rotator status` prints: per provider its state, requests
/// today, requests left today and when they come back, tokens left this minute, its
/// cooldown and model; then the pool's total and the forecasts.
pub fn status_table(snap: &Snapshot) -> String {
    status_table_at(snap, chrono::Utc::now())
}

fn status_table_at(snap: &Snapshot, now: chrono::DateTime<chrono::Utc>) -> String {
    use crate::headroom::{clock, pool_line, thousands};
    let mut rows: Vec<[String; 8]> = vec![[
        "PROVIDER".into(),
        "STATE".into(),
        "TODAY".into(),
        "LEFT TODAY".into(),
        "RESETS".into(),
        "TOKENS/MIN".into(),
        "COOLDOWN".into(),
        "MODEL".into(),
    ]];
    for p in snap.by_priority() {
        let state = p.state.words();
        let cooldown = if p.is_rate_limited {
            countdown(p.cooldown_remaining_secs)
        } else {
            "-".into()
        };
        let day = p.headroom.requests_today;
        let today = match p.request_count_all_machines {
            Some(all) if all != p.request_count => format!("{} ({all} shared)", p.request_count),
            _ => p.request_count.to_string(),
        };
        rows.push([
            p.name.clone(),
            state.into(),
            today,
            day.map_or("-".into(), |d| thousands(d.left)),
            day.map_or("-".into(), |d| clock(d.resets_at, now)),
            p.headroom
                .tokens_minute
                .map_or("-".into(), |t| thousands(t.left)),
            cooldown,
            p.model_shown(),
        ]);
    }
    let mut out = text_table(&rows);
    if let Some(total) = pool_line(&snap.headroom) {
        out.push_str(&format!("{total}\n"));
    }
    for p in snap.by_priority() {
        if let Some(t) = p.runs_out_at {
            out.push_str(&format!(
                "{}: at this pace it runs out at {}\n",
                p.name,
                clock(t, now)
            ));
        }
    }
    for p in snap.by_priority() {
        if let Some(err) = &p.last_error {
            if p.state != ProviderStateKind::Ready {
                out.push_str(&format!("{}: {err}\n", p.name));
            }
        }
    }
    if let Some(shared) = &snap.shared {
        out.push_str(&format!("{} ({})\n", shared.headline(), shared.server));
        for m in &shared.machines {
            out.push_str(&format!("  {}\n", m.words()));
        }
        if !shared.online() {
            out.push_str("  running on this machine's own state until it is back\n");
        }
    }
    if let Some(note) = &snap.key_store {
        out.push_str(&format!("keys: {note}\n"));
    }
    if let Some(err) = &snap.config.last_error {
        out.push_str(&format!("config not reloaded: {err}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::countdown;

    #[test]
    fn countdowns_read_as_minutes_and_seconds() {
        assert_eq!(countdown(0), "0:00");
        assert_eq!(countdown(161), "2:41");
        assert_eq!(countdown(3661), "1:01:01");
    }
}
