//! The one way a one-shot command talks to a running agent: which config (and so which
//! address and token) it would use, and an HTTP call to it with its token when it has one.
//! `llm-rotator status`, `stats`, `reset`, `models`, `ui`, `doctor` and `keys` all come
//! through here.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{self, ServeOptions};
use crate::config::Config;

/// Loads the config a running instance would use, without creating anything.
pub fn config_for_client(opts: &ServeOptions) -> Result<Config> {
    let paths = agent::resolve_paths(opts)?;
    if paths.config.exists() {
        Ok(Config::load(&paths.config)?)
    } else {
        Ok(Config::builtin()?)
    }
}

/// The config of the running instance a one-shot command talks to: the file it would
/// use, with `--port` applied. Port 0 names no instance (an agent asked for it listens
/// on the port the system picked), so it is refused with where to find the real one.
pub fn instance_config(opts: &ServeOptions) -> Result<Config> {
    let mut config = config_for_client(opts)?;
    if let Some(port) = opts.port {
        config.server.port = port;
    }
    if config.server.port == 0 {
        anyhow::bail!(
            "port 0 names no running instance: an agent started on port 0 listens on a free port it picks itself; \
             pass that port with --port (the agent writes it to its --ready-file and logs it as \"serving on\")"
        );
    }
    Ok(config)
}

/// A runtime for a one-shot command's calls to the running instance.
pub fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A request to the running instance on `config`, with its auth token when it has one.
pub fn instance_request(
    client: &reqwest::Client,
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let req = client.request(method, format!("{}{path}", config.admin_url()));
    match &config.server.auth_token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Calls an admin route of the running instance. `Ok(None)` when nothing listens.
pub fn admin_call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> Result<Option<(u16, String)>> {
    let runtime = client_runtime()?;
    let url = format!("{}{path}", config.admin_url());
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let req = instance_request(&client, config, method, path);
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Ok(Some((status, text)))
            }
            Err(e) if e.is_connect() => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("calling {url}"))),
        }
    })
}
