//! One agent per port: before `run` starts serving it asks the configured port's `/health`
//! who is there (unless it asks for any free port, `--port 0`). llm-rotator answering
//! means a copy already runs (e.g. the login agent next to one opened by hand), so this
//! one says so and exits 0 (launchd's `KeepAlive {SuccessfulExit = false}` then leaves it
//! stopped); any other program is an error that names the port and the config key to
//! change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{self, ServeOptions};
use crate::config::Config;

/// How long the probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who is on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Nobody listens.
    Free,
    /// llm-rotator answers.
    Ours {
        /// Its version.
        version: String,
    },
    /// Something else answers (or accepts and does not answer like llm-rotator).
    Foreign {
        /// What it did.
        detail: String,
    },
}

/// Errors of the single-instance check.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another program holds the port.
    #[error("port {port} is used by another program ({detail}); set server.port in {} to a free port, or pass --port", config.display())]
    Foreign {
        /// The port.
        port: u16,
        /// What the program did.
        detail: String,
        /// The config file to edit.
        config: PathBuf,
    },
    /// The probe could not run.
    #[error("cannot check whether llm-rotator already runs: {0}")]
    Probe(String),
}

/// Reads a `/health` answer: llm-rotator's says `"service": "llm-rotator"`.
pub fn classify_health(status: u16, body: &str) -> Probe {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    match json {
        Some(v) if status == 200 && v["service"] == "llm-rotator" => Probe::Ours {
            version: v["version"].as_str().unwrap_or("unknown").to_string(),
        },
        _ => Probe::Foreign {
            detail: format!("it answered GET /health with HTTP {status}, not as llm-rotator"),
        },
    }
}

/// Asks `config`'s port who is there (blocking; call before the server's runtime starts).
/// Port 0 asks for any free port: no copy can hold a port not picked yet, so it is free.
pub fn probe(config: &Config) -> Result<Probe, InstanceError> {
    if config.server.port == 0 {
        return Ok(Probe::Free);
    }
    let url = format!("{}/health", config.admin_url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InstanceError::Probe(e.to_string()))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(PROBE_TIMEOUT)
            .build()
            .map_err(|e| InstanceError::Probe(crate::logging::error_chain(&e)))?;
        match client.get(&url).send().await {
            Err(e) if e.is_connect() => Ok(Probe::Free),
            Err(e) => Ok(Probe::Foreign {
                detail: format!(
                    "it did not answer GET /health over HTTP: {}",
                    crate::logging::error_chain(&e)
                ),
            }),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                Ok(classify_health(status, &body))
            }
        }
    })
}

/// Turns a probe into the decision for `run`: `Ok(Some(message))` = already running, do
/// not start; `Ok(None)` = start; `Err` = another program holds the port.
pub fn decide(
    probe: Probe,
    config: &Config,
    config_path: &Path,
) -> Result<Option<String>, InstanceError> {
    match probe {
        Probe::Free => Ok(None),
        Probe::Ours { version } => Ok(Some(format!(
            "llm-rotator {version} is already running on {}; not starting a second copy",
            config.endpoint_url()
        ))),
        Probe::Foreign { detail } => Err(InstanceError::Foreign {
            port: config.server.port,
            detail,
            config: config_path.to_path_buf(),
        }),
    }
}

/// For `run`: `Ok(true)` (after saying so on stderr) when llm-rotator already answers on
/// the configured port. Reads the config without creating it.
pub fn already_running(opts: &ServeOptions) -> anyhow::Result<bool> {
    let paths = agent::resolve_paths(opts)?;
    let mut config = if paths.config.exists() {
        // A config with an error still names the port the agent runs on: the last good copy.
        Config::load_or_last_good(&paths.config, &agent::last_good_path(&paths.data_dir))?.0
    } else {
        Config::builtin()?
    };
    if let Some(port) = opts.port {
        config.server.port = port;
    }
    match decide(probe(&config)?, &config, &paths.config)? {
        Some(message) => {
            eprintln!("{message}");
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_health_answer_is_recognised() {
        assert_eq!(
            classify_health(
                200,
                r#"{"status":"ok","service":"llm-rotator","version":"0.1.0"}"#
            ),
            Probe::Ours {
                version: "0.1.0".into()
            }
        );
        assert!(matches!(
            classify_health(200, r#"{"status":"ok"}"#),
            Probe::Foreign { .. }
        ));
        assert!(matches!(
            classify_health(404, "not found"),
            Probe::Foreign { .. }
        ));
    }

    #[test]
    fn an_agent_asking_for_any_free_port_finds_no_copy_running() {
        let mut config = Config::builtin().expect("builtin");
        config.server.port = 0;
        assert_eq!(probe(&config).expect("probe"), Probe::Free);
    }

    #[test]
    fn a_foreign_program_is_an_error_naming_the_port_and_the_key() {
        let mut config = Config::builtin().expect("builtin");
        config.server.port = 8123;
        let err = decide(
            Probe::Foreign {
                detail: "it answered GET /health with HTTP 404, not as llm-rotator".into(),
            },
            &config,
            Path::new("/c/config.toml"),
        )
        .expect_err("foreign");
        let msg = err.to_string();
        assert!(msg.contains("port 8123"), "{msg}");
        assert!(msg.contains("server.port in /c/config.toml"), "{msg}");
        assert_eq!(
            decide(Probe::Free, &config, Path::new("/c")).expect("ok"),
            None
        );
    }
}
