//! Sending one attempt to a provider with reqwest, and classifying what came back into a
//! pool [`Outcome`] (per provider kind: see [`classify`], [`limits`], [`daily`]).
//! Upstream failures are data here, not errors: the rotation loop decides.
//! This module never logs keys and never reads the client's headers.

pub mod classify;
pub mod daily;
pub mod hint;
pub mod limits;
pub mod scrub;
#[cfg(test)]
mod test_support;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Client;

use crate::config::RoutingConfig;
use crate::pool::{Attempt, Outcome};
use crate::secrets::ApiKey;

pub use classify::{classify, classify_stream_error, offending_param, Verdict};

/// How long an upstream connection stays pooled without use.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Most idle connections kept per provider host (per serving thread): enough for a
/// desktop's steady use, while a burst's extra connections close when it ends.
pub const POOL_MAX_IDLE_PER_HOST: usize = 16;

/// Builds the one HTTP client all attempts share (connection pools per host).
pub fn build_client(routing: &RoutingConfig) -> reqwest::Result<Client> {
    Client::builder()
        .connect_timeout(routing.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Under the 60 s after which common load balancers drop an idle connection, so
        // a request is not sent down one the provider is closing. Also shorter than the
        // per-attempt timeouts, so the pool's own timer is always the runtime's next one
        // and arming those costs no wake-up of the runtime.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // A burst of a thousand streams opens a thousand connections to one provider;
        // keeping them all for the idle timeout would hold their buffers all that time.
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .user_agent(concat!("llm-rotator/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// This agent's hop tag, `llm-rotator-<random>`, sent upstream in `Via`. A request that
/// comes back carrying it has looped (a `base_url` pointing at this agent, or two agents
/// pointing at each other) and is refused; another agent's tag is a legitimate chain.
pub fn hop_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("llm-rotator-{:016x}", h.finish())
    })
}

/// Whether a client request already went through this agent (its `Via` names our tag).
pub fn looped(headers: &axum::http::HeaderMap) -> bool {
    headers.get_all(axum::http::header::VIA).iter().any(|v| {
        v.as_bytes()
            .windows(hop_tag().len())
            .any(|w| w == hop_tag().as_bytes())
    })
}

/// Which of a provider's OpenAI endpoints an attempt goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `{base_url}/chat/completions`.
    Chat,
    /// `{base_url}/embeddings`.
    Embeddings,
    /// `{base_url}/completions` (the legacy text completions, for providers that serve
    /// them: `legacy_completions = true`).
    Completions,
}

/// Sends an attempt to `endpoint`: the body as given, the attempt's key, nothing from
/// the client's headers (but our hop tag in `Via`).
pub async fn send(
    client: &Client,
    attempt: &Attempt,
    endpoint: Endpoint,
    body: Bytes,
    stream: bool,
    first_byte_timeout: Duration,
) -> Result<reqwest::Response, SendFailure> {
    let url = match endpoint {
        Endpoint::Chat => attempt.provider.chat_url.clone(),
        Endpoint::Embeddings => reqwest::Url::parse(&crate::config::endpoint_url(
            &attempt.provider.base_url,
            "/embeddings",
        ))
        .map_err(|e| SendFailure::Other(format!("bad embeddings URL: {e}")))?,
        Endpoint::Completions => reqwest::Url::parse(&crate::config::endpoint_url(
            &attempt.provider.base_url,
            "/completions",
        ))
        .map_err(|e| SendFailure::Other(format!("bad completions URL: {e}")))?,
    };
    let mut req = client
        .post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        )
        .header(reqwest::header::VIA, via())
        .body(body);
    if let Some(key) = &attempt.key {
        req = req.header(AUTHORIZATION, bearer(key).ok_or(SendFailure::BadKey)?);
    }
    match tokio::time::timeout(first_byte_timeout, req.send()).await {
        Err(_) => Err(SendFailure::Timeout(first_byte_timeout)),
        Ok(Err(e)) => Err(SendFailure::from_reqwest(&e)),
        Ok(Ok(resp)) => Ok(resp),
    }
}

fn via() -> HeaderValue {
    static VIA: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    VIA.get_or_init(|| {
        HeaderValue::from_str(&format!("1.1 {}", hop_tag()))
            .unwrap_or(HeaderValue::from_static("1.1 llm-rotator"))
    })
    .clone()
}

/// `Authorization: Bearer <key>`, marked sensitive (never printed by the HTTP stack);
/// `None` when the key holds characters a header cannot carry.
pub fn bearer(key: &ApiKey) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendFailure {
    /// No response headers within the limit.
    #[error("no response within {}s", .0.as_secs())]
    Timeout(Duration),
    /// TCP/TLS connection failed.
    #[error("connection failed")]
    Connect,
    /// Anything else on the wire.
    #[error("request failed: {0}")]
    Other(String),
    /// The key contains characters that cannot go in a header.
    #[error("the key contains characters that are not allowed in an HTTP header")]
    BadKey,
}

impl SendFailure {
    fn from_reqwest(e: &reqwest::Error) -> SendFailure {
        if e.is_connect() {
            SendFailure::Connect
        } else if e.is_timeout() {
            SendFailure::Timeout(Duration::ZERO)
        } else {
            // reqwest's Display includes the URL: shown without its query values (some
            // gateways take the key there).
            let mut msg = e.to_string();
            if let Some(url) = e.url() {
                msg = msg.replace(url.as_str(), &crate::config::shown_url(url.as_str()));
            }
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            SendFailure::Other(msg)
        }
    }

    /// The pool outcome for this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendFailure::BadKey => Outcome::AuthFailed {
                reason: self.to_string(),
            },
            _ => Outcome::Transient {
                reason: self.to_string(),
                reached: false,
            },
        }
    }
}

/// The provider's error message, shortened, if the body has one (any of the shapes
/// providers use: `{"error":{"message"}}`, `[{"error":...}]`, `{"message"}`,
/// `{"error":"text"}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let v = match &value {
        serde_json::Value::Array(items) => items.first()?,
        other => other,
    };
    let message = |m: &serde_json::Value| match m {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        // Mistral's validation errors carry an object here.
        other => Some(other.to_string()),
    };
    let msg = match v.get("error") {
        None if v.is_string() => message(v)?,
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(e) => message(e.get("message")?)?,
        None => message(v.get("message")?)?,
    };
    let mut short: String = msg.chars().take(200).collect();
    if short.len() < msg.len() {
        short.push('…');
    }
    Some(short)
}

/// Removes anything key-like from a provider's message before it is stored or shown:
/// providers echo keys ("Incorrect API key provided: sk-proj-****abcd"), so any word with
/// a mask character or a long token shape is replaced, and so is any 5-character run of
/// the key that was sent.
pub fn redact(message: &str, key: Option<&ApiKey>) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in message.split(' ') {
        let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '*');
        let tokenish = core.len() >= 20
            && core
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_*.".contains(c))
            && core.chars().any(|c| c.is_ascii_digit());
        let masked = core.contains("**") || core.starts_with("sk-") || core.starts_with("gsk_");
        let leaks = key.is_some_and(|k| {
            let chars: Vec<char> = k.expose().chars().collect();
            chars.len() >= 5
                && chars
                    .windows(5)
                    .any(|w| word.contains(&w.iter().collect::<String>()))
        });
        if tokenish || masked || leaks {
            out.push("[redacted]".to_string());
        } else {
            out.push(word.to_string());
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_echoes_are_redacted() {
        let key = ApiKey::new("sk-proj-abcdefghijklmnopqrstuvwxyz123456").expect("key");
        let msg = "Incorrect API key provided: sk-proj-********************3456. You can find your key at https://platform.openai.com.";
        let out = redact(msg, Some(&key));
        assert!(!out.contains("sk-proj"), "{out}");
        assert!(!out.contains("3456"), "{out}");
        assert!(
            out.starts_with("Incorrect API key provided: [redacted]"),
            "{out}"
        );
        let out = redact("key qqqzzzwww is wrong", Some(&key));
        assert_eq!(out, "key qqqzzzwww is wrong");
        let out = redact("key mnopqrs is wrong", Some(&key));
        assert_eq!(out, "key [redacted] is wrong");
    }

    #[test]
    fn error_messages_from_every_shape() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key"}}"#).as_deref(),
            Some("bad key")
        );
        assert_eq!(
            error_message(br#"[{"error":{"message":"quota"}}]"#).as_deref(),
            Some("quota")
        );
        assert_eq!(error_message(br#"{"message":"m"}"#).as_deref(), Some("m"));
        assert_eq!(
            error_message(br#"{"error":"plain"}"#).as_deref(),
            Some("plain")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
