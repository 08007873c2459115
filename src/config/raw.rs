//! The config file as written: serde types that mirror the TOML (unknown keys rejected),
//! and the validation that turns them into [`super::Config`] with errors that carry the
//! line, column and TOML path of the offending value.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::quirks::{MaxTokensField, ProviderKind, Quirks};
use super::{
    Config, Invalid, LogConfig, ProviderConfig, RoutingConfig, ServerConfig, SharedConfig,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    model_aliases: std::collections::BTreeMap<String, String>,
    shared: Option<RawShared>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShared {
    url: Spanned<String>,
    pool: Option<Spanned<String>>,
    machine: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<Spanned<String>>,
    port: Option<u16>,
    auth_token: Option<Spanned<String>>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_body_bytes: Option<Spanned<u64>>,
    shutdown_grace_secs: Option<u64>,
    header_read_timeout_secs: Option<Spanned<u64>>,
    idle_timeout_secs: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    metrics: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    default_cooldown_secs: Option<Spanned<u64>>,
    max_cooldown_secs: Option<Spanned<u64>>,
    transient_cooldown_secs: Option<u64>,
    payment_cooldown_secs: Option<u64>,
    connect_timeout_secs: Option<Spanned<u64>>,
    first_byte_timeout_secs: Option<Spanned<u64>>,
    request_timeout_secs: Option<Spanned<u64>>,
    stream_idle_timeout_secs: Option<Spanned<u64>>,
    max_attempts: Option<usize>,
    stream_start_timeout_secs: Option<Spanned<u64>>,
    max_wait_secs: Option<u64>,
    max_waiting: Option<usize>,
    request_start_timeout_secs: Option<Spanned<u64>>,
    max_response_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Spanned<String>,
    base_url: Spanned<String>,
    model: Spanned<OneOrMany>,
    #[serde(default)]
    models: Vec<String>,
    list_all_models: Option<bool>,
    #[serde(default)]
    embedding_models: Vec<String>,
    legacy_completions: Option<bool>,
    priority: Option<Spanned<u32>>,
    enabled: Option<bool>,
    api_key_env: Option<Spanned<OneOrMany>>,
    requires_key: Option<bool>,
    kind: Option<Spanned<String>>,
    drop_params: Option<Vec<String>>,
    max_tokens_field: Option<Spanned<String>>,
    requests_per_day: Option<Spanned<u64>>,
    requests_per_minute: Option<Spanned<u64>>,
    tokens_per_minute: Option<Spanned<u64>>,
    tokens_per_day: Option<Spanned<u64>>,
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

fn invalid_at(text: &str, span: Option<Range<usize>>, key: Option<String>, msg: String) -> Invalid {
    let (line, column) = match span {
        Some(r) => {
            let (l, c) = line_col(text, r.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    Invalid {
        file: None,
        line,
        column,
        key,
        message: msg,
    }
}

/// Parses and validates config text.
pub(super) fn parse(text: &str) -> Result<Config, Invalid> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        invalid_at(text, e.span(), None, message)
    })?;
    validate(raw, text)
}

fn secs(v: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(v.unwrap_or(default))
}

fn positive_secs(
    text: &str,
    v: Option<Spanned<u64>>,
    default: u64,
    key: &str,
) -> Result<Duration, Invalid> {
    match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) if *s.get_ref() == 0 => Err(invalid_at(
            text,
            Some(s.span()),
            Some(key.to_string()),
            "must be at least 1".to_string(),
        )),
        Some(s) => Ok(Duration::from_secs(*s.get_ref())),
    }
}

fn validate(raw: RawConfig, text: &str) -> Result<Config, Invalid> {
    let server = validate_server(raw.server, text)?;
    let routing = validate_routing(raw.routing, text)?;
    let log = LogConfig {
        level: raw.log.level.unwrap_or_else(|| "info".to_string()),
    };
    let mut names = HashSet::new();
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.into_iter().enumerate() {
        let provider = validate_provider(p, i, text, &mut names, &server)?;
        providers.push(Arc::new(provider));
    }
    // Exact ids first, then patterns, longest first: the most specific alias wins.
    let mut model_aliases: Vec<(String, String)> = raw.model_aliases.into_iter().collect();
    model_aliases.sort_by_key(|(k, _)| (k.ends_with('*'), std::cmp::Reverse(k.len())));
    let shared = raw.shared.map(|s| validate_shared(s, text)).transpose()?;
    Ok(Config {
        server,
        routing,
        log,
        providers,
        model_aliases,
        shared,
    })
}

/// `[shared]`: a `redis://` or `rediss://` URL without a password (that comes from the
/// keychain), a pool name that can sit in a Redis key, and a readable machine name.
fn validate_shared(s: RawShared, text: &str) -> Result<SharedConfig, Invalid> {
    let at = |span: Range<usize>, key: &str, msg: String| {
        invalid_at(text, Some(span), Some(format!("shared.{key}")), msg)
    };
    let (span, url) = (s.url.span(), s.url.into_inner());
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| at(span.clone(), "url", format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(at(
            span,
            "url",
            format!(
                "must start with redis:// or rediss:// (TLS), not {}://",
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(at(span, "url", "names no host".into()));
    }
    if parsed.password().is_some() {
        return Err(at(
            span,
            "url",
            "holds a password: passwords stay out of files; store it with \
             `llm-rotator keys set shared` (or set LLM_ROTATOR_SHARED_PASSWORD) and remove it from the URL"
                .into(),
        ));
    }
    let pool = match s.pool {
        None => "default".to_string(),
        Some(p) => {
            let (span, p) = (p.span(), p.into_inner());
            let ok = !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(at(
                    span,
                    "pool",
                    format!("{p:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
            p
        }
    };
    let machine = match s.machine {
        None => None,
        Some(m) => {
            let (span, m) = (m.span(), m.into_inner());
            let m = m.trim().to_string();
            if m.is_empty() || m.chars().count() > 64 || m.chars().any(char::is_control) {
                return Err(at(
                    span,
                    "machine",
                    "must be 1 to 64 characters on one line".into(),
                ));
            }
            Some(m)
        }
    };
    Ok(SharedConfig { url, pool, machine })
}

fn validate_server(s: RawServer, text: &str) -> Result<ServerConfig, Invalid> {
    let (host, host_span) = match s.host {
        None => (IpAddr::from([127, 0, 0, 1]), None),
        Some(h) => {
            let span = h.span();
            let value = h.into_inner();
            let ip = if value == "localhost" {
                IpAddr::from([127, 0, 0, 1])
            } else {
                value
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .map_err(|_| {
                        invalid_at(
                            text,
                            Some(span.clone()),
                            Some("server.host".into()),
                            format!("{value:?} is not an IP address (use \"127.0.0.1\")"),
                        )
                    })?
            };
            (ip, Some(span))
        }
    };
    let auth_token = match s.auth_token {
        None => None,
        Some(t) if t.get_ref().trim().len() < 16 => {
            return Err(invalid_at(
                text,
                Some(t.span()),
                Some("server.auth_token".into()),
                "must be at least 16 characters".into(),
            ))
        }
        Some(t) => Some(t.into_inner()),
    };
    if !host.is_loopback() && auth_token.is_none() {
        return Err(invalid_at(
            text,
            host_span,
            Some("server.host".into()),
            format!(
                "{host} is reachable from other machines; set server.auth_token to expose the proxy beyond this Mac, or use \"127.0.0.1\""
            ),
        ));
    }
    let max_body_bytes = match s.max_body_bytes {
        None => 32 * 1024 * 1024,
        Some(v) if *v.get_ref() < 1024 => {
            return Err(invalid_at(
                text,
                Some(v.span()),
                Some("server.max_body_bytes".into()),
                "must be at least 1024".into(),
            ))
        }
        Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
    };
    Ok(ServerConfig {
        host,
        port: s.port.unwrap_or(8000),
        auth_token,
        allowed_hosts: s
            .allowed_hosts
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        allowed_origins: s
            .allowed_origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        max_body_bytes,
        shutdown_grace: secs(s.shutdown_grace_secs, 10),
        header_read_timeout: positive_secs(
            text,
            s.header_read_timeout_secs,
            10,
            "server.header_read_timeout_secs",
        )?,
        idle_timeout: positive_secs(text, s.idle_timeout_secs, 75, "server.idle_timeout_secs")?,
        max_connections: match s.max_connections {
            None => 1024,
            Some(v) if *v.get_ref() == 0 => {
                return Err(invalid_at(
                    text,
                    Some(v.span()),
                    Some("server.max_connections".into()),
                    "must be at least 1".into(),
                ))
            }
            Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
        },
        metrics: s.metrics.unwrap_or(true),
        port_override: None,
    })
}

fn validate_routing(r: RawRouting, text: &str) -> Result<RoutingConfig, Invalid> {
    let default_cooldown = positive_secs(
        text,
        r.default_cooldown_secs,
        60,
        "routing.default_cooldown_secs",
    )?;
    let max_span = r.max_cooldown_secs.as_ref().map(Spanned::span);
    let max_cooldown = positive_secs(text, r.max_cooldown_secs, 3600, "routing.max_cooldown_secs")?;
    if max_cooldown < default_cooldown {
        return Err(invalid_at(
            text,
            max_span,
            Some("routing.max_cooldown_secs".into()),
            "must not be less than routing.default_cooldown_secs".into(),
        ));
    }
    Ok(RoutingConfig {
        default_cooldown,
        max_cooldown,
        transient_cooldown: secs(r.transient_cooldown_secs, 10),
        payment_cooldown: secs(r.payment_cooldown_secs, 3600),
        connect_timeout: positive_secs(
            text,
            r.connect_timeout_secs,
            10,
            "routing.connect_timeout_secs",
        )?,
        first_byte_timeout: positive_secs(
            text,
            r.first_byte_timeout_secs,
            60,
            "routing.first_byte_timeout_secs",
        )?,
        request_timeout: positive_secs(
            text,
            r.request_timeout_secs,
            600,
            "routing.request_timeout_secs",
        )?,
        stream_idle_timeout: positive_secs(
            text,
            r.stream_idle_timeout_secs,
            90,
            "routing.stream_idle_timeout_secs",
        )?,
        max_attempts: r.max_attempts.unwrap_or(0),
        stream_start_timeout: stream_start_timeout(text, r.stream_start_timeout_secs)?,
        max_wait: secs(r.max_wait_secs, 20),
        max_waiting: r.max_waiting.unwrap_or(64),
        request_start_timeout: positive_secs(
            text,
            r.request_start_timeout_secs,
            240,
            "routing.request_start_timeout_secs",
        )?,
        max_response_bytes: match r.max_response_bytes {
            None => 64 * 1024 * 1024,
            Some(v) if *v.get_ref() == 0 => {
                return Err(invalid_at(
                    text,
                    Some(v.span()),
                    Some("routing.max_response_bytes".to_string()),
                    "must be at least 1".to_string(),
                ))
            }
            Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
        },
    })
}

/// The streaming start budget must stay under the 120 s after which clients such as
/// Osaurus give up on a silent stream.
fn stream_start_timeout(text: &str, v: Option<Spanned<u64>>) -> Result<Duration, Invalid> {
    let key = "routing.stream_start_timeout_secs";
    match v {
        Some(s) if !(1..=115).contains(s.get_ref()) => Err(invalid_at(
            text,
            Some(s.span()),
            Some(key.to_string()),
            "must be between 1 and 115 (clients give up on a silent stream after 120 s)".into(),
        )),
        other => positive_secs(text, other, 100, key),
    }
}

/// Whether `url` is the address this agent listens on: a loopback name or the bound
/// address, with the agent's port.
fn points_at_self(url: &reqwest::Url, server: &ServerConfig) -> bool {
    if url.port_or_known_default() != Some(server.port) {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified() || ip == server.host)
}

fn validate_provider(
    p: RawProvider,
    i: usize,
    text: &str,
    names: &mut HashSet<String>,
    server: &ServerConfig,
) -> Result<ProviderConfig, Invalid> {
    let at = |span: Range<usize>, field: &str, msg: String| {
        invalid_at(
            text,
            Some(span),
            Some(format!("providers[{i}].{field}")),
            msg,
        )
    };
    let name_span = p.name.span();
    let name = p.name.into_inner();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(at(
            name_span,
            "name",
            format!("{name:?} must be non-empty and use only a-z, 0-9, _ and -"),
        ));
    }
    if name == "shared" {
        return Err(at(
            name_span,
            "name",
            "\"shared\" names the shared pool's password in the keychain; choose another name"
                .into(),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(at(
            name_span,
            "name",
            format!("{name:?} is used by another provider"),
        ));
    }
    let url_span = p.base_url.span();
    let raw_url = p.base_url.into_inner();
    // A trailing slash is dropped from the path, also when a query string follows.
    let base_url = match raw_url.split_once('?') {
        Some((path, query)) => format!("{}?{query}", path.trim_end_matches('/')),
        None => raw_url.trim_end_matches('/').to_string(),
    };
    let scheme_ok = base_url.starts_with("https://") || base_url.starts_with("http://");
    if !scheme_ok || base_url.split("://").nth(1).is_none_or(str::is_empty) {
        return Err(at(
            url_span,
            "base_url",
            format!(
                "{:?} must be an http:// or https:// URL",
                super::shown_url(&base_url)
            ),
        ));
    }
    // Parsed once here, not on every request.
    let chat_url = match reqwest::Url::parse(&super::endpoint_url(&base_url, "/chat/completions")) {
        Ok(u) => u,
        Err(e) => {
            return Err(at(
                url_span,
                "base_url",
                format!("{:?} is not a valid URL: {e}", super::shown_url(&base_url)),
            ))
        }
    };
    if points_at_self(&chat_url, server) {
        return Err(at(
            url_span,
            "base_url",
            format!(
                "{:?} is this agent's own address (port {}): every request would loop back into it; use the provider's real URL",
                super::shown_url(&base_url),
                server.port
            ),
        ));
    }
    let model_span = p.model.span();
    // One model, or a preference list: the first one the provider still serves is used.
    let preferred = match p.model.into_inner() {
        OneOrMany::One(m) => vec![m],
        OneOrMany::Many(list) => list,
    };
    if preferred.is_empty() || preferred.iter().any(|m| m.trim().is_empty()) {
        return Err(at(
            model_span,
            "model",
            "must be a model id or a non-empty list of model ids".into(),
        ));
    }
    let model = preferred[0].clone();
    let priority = match p.priority {
        None => 100,
        Some(s) if *s.get_ref() == 0 => {
            return Err(at(
                s.span(),
                "priority",
                "must be 1 or more (1 = tried first)".into(),
            ))
        }
        Some(s) => *s.get_ref(),
    };
    let default_env = format!("{}_API_KEY", name.to_ascii_uppercase().replace('-', "_"));
    let api_key_env = match p.api_key_env {
        None => vec![default_env],
        Some(s) => {
            let span = s.span();
            let list = match s.into_inner() {
                OneOrMany::One(v) => vec![v],
                OneOrMany::Many(v) => v,
            };
            if let Some(bad) = list
                .iter()
                .find(|v| v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(at(
                    span,
                    "api_key_env",
                    format!("{bad:?} is not an environment variable name"),
                ));
            }
            list
        }
    };
    let quirks = validate_quirks(&base_url, p.kind, p.drop_params, p.max_tokens_field, &at)?;
    let limit = |v: Option<Spanned<u64>>, field: &str| match v {
        Some(s) if *s.get_ref() == 0 => Err(at(
            s.span(),
            field,
            "must be at least 1 (leave it out when there is no limit)".into(),
        )),
        other => Ok(other.map(Spanned::into_inner)),
    };
    let limits = super::Limits {
        requests_per_day: limit(p.requests_per_day, "requests_per_day")?,
        requests_per_minute: limit(p.requests_per_minute, "requests_per_minute")?,
        tokens_per_minute: limit(p.tokens_per_minute, "tokens_per_minute")?,
        tokens_per_day: limit(p.tokens_per_day, "tokens_per_day")?,
    };
    Ok(ProviderConfig {
        name,
        base_url,
        chat_url,
        model,
        preferred,
        models: p.models,
        list_all_models: p.list_all_models.unwrap_or(false),
        embedding_models: p.embedding_models,
        legacy_completions: p.legacy_completions.unwrap_or(false),
        priority,
        enabled: p.enabled.unwrap_or(true),
        api_key_env,
        requires_key: p.requires_key.unwrap_or(true),
        quirks,
        limits,
    })
}

/// `kind`, `drop_params` and `max_tokens_field`: the kind's defaults, replaced by what
/// the entry sets.
fn validate_quirks(
    base_url: &str,
    kind: Option<Spanned<String>>,
    drop_params: Option<Vec<String>>,
    max_tokens_field: Option<Spanned<String>>,
    at: &dyn Fn(Range<usize>, &str, String) -> Invalid,
) -> Result<Quirks, Invalid> {
    let kind = match kind {
        None => ProviderKind::detect(base_url),
        Some(k) => k
            .get_ref()
            .parse::<ProviderKind>()
            .map_err(|msg| at(k.span(), "kind", msg))?,
    };
    let mut quirks = Quirks::defaults(kind);
    if let Some(list) = drop_params {
        quirks.drop_params = list;
    }
    if let Some(f) = max_tokens_field {
        quirks.max_tokens_field = f
            .get_ref()
            .parse::<MaxTokensField>()
            .map_err(|msg| at(f.span(), "max_tokens_field", msg))?;
    }
    Ok(quirks)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
    }
}
