//! Per-provider request shaping: which provider family a `[[providers]]` entry talks to
//! (detected from its `base_url` host, or set with `kind`), and what its requests need —
//! parameters to leave out and the name of the "max tokens" field. Defaults come from
//! each provider's documented behaviour; `drop_params` and `max_tokens_field` in the
//! config replace them. This module only describes; `proxy::body` applies it.

use std::fmt;
use std::str::FromStr;

/// The provider family an entry talks to. It decides how rate-limit headers are read,
/// which daily boundary applies and what the request body must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Google Gemini's OpenAI-compatible endpoint.
    Gemini,
    /// Cerebras Inference.
    Cerebras,
    /// GroqCloud.
    Groq,
    /// OpenAI.
    OpenAi,
    /// xAI (Grok).
    Xai,
    /// Mistral La Plateforme.
    Mistral,
    /// OpenRouter.
    OpenRouter,
    /// A local Ollama.
    Ollama,
    /// Anything else that speaks the OpenAI format.
    Generic,
}

impl ProviderKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [ProviderKind; 9] = [
        ProviderKind::Gemini,
        ProviderKind::Cerebras,
        ProviderKind::Groq,
        ProviderKind::OpenAi,
        ProviderKind::Xai,
        ProviderKind::Mistral,
        ProviderKind::OpenRouter,
        ProviderKind::Ollama,
        ProviderKind::Generic,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Gemini => "gemini",
            ProviderKind::Cerebras => "cerebras",
            ProviderKind::Groq => "groq",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Xai => "xai",
            ProviderKind::Mistral => "mistral",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Generic => "openai-compatible",
        }
    }

    /// The kind a base URL points at, from its host (`Generic` when unknown).
    pub fn detect(base_url: &str) -> ProviderKind {
        let rest = base_url.split("://").nth(1).unwrap_or(base_url);
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let host = host_port
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(host_port, |(h, _)| h)
            .to_ascii_lowercase();
        let port = host_port
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()));
        let is = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
        if is("generativelanguage.googleapis.com") {
            ProviderKind::Gemini
        } else if is("cerebras.ai") {
            ProviderKind::Cerebras
        } else if is("groq.com") {
            ProviderKind::Groq
        } else if is("openai.com") {
            ProviderKind::OpenAi
        } else if is("x.ai") {
            ProviderKind::Xai
        } else if is("mistral.ai") {
            ProviderKind::Mistral
        } else if is("openrouter.ai") {
            ProviderKind::OpenRouter
        } else if port == Some("11434") {
            ProviderKind::Ollama
        } else {
            ProviderKind::Generic
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = match s {
            "grok" => "xai",
            "generic" | "openai_compatible" => "openai-compatible",
            other => other,
        };
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?}; use one of {}", names.join(", "))
            })
    }
}

/// How the "max tokens" limit must be named for a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// Send what the client sent.
    Keep,
    /// Rename `max_completion_tokens` to `max_tokens`.
    MaxTokens,
    /// Rename `max_tokens` to `max_completion_tokens`.
    MaxCompletionTokens,
}

impl FromStr for MaxTokensField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(MaxTokensField::Keep),
            "max_tokens" => Ok(MaxTokensField::MaxTokens),
            "max_completion_tokens" => Ok(MaxTokensField::MaxCompletionTokens),
            other => Err(format!(
                "unknown field {other:?}; use \"max_tokens\", \"max_completion_tokens\" or \"keep\""
            )),
        }
    }
}

/// How a provider takes a reasoning effort (clients such as Osaurus send
/// `reasoning: {"effort"}`, `reasoning_effort`, or both). Checked 2026-11-30:
/// `reasoning_effort` at the top level is what OpenAI's Chat Completions, Groq, Cerebras,
/// Gemini's OpenAI endpoint, xAI, Mistral (mistral-small-latest, mistral-medium-3-5:
/// docs.mistral.ai "Reasoning") and Ollama (docs.ollama.com/api/openai-compatibility)
/// accept; OpenRouter takes the `reasoning` object (openrouter.ai/docs, "Reasoning
/// Tokens").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningField {
    /// `reasoning_effort: "<effort>"`.
    Effort,
    /// `reasoning: {"effort": "<effort>"}`.
    Object,
}

/// What a provider's requests need, resolved from its kind and the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    /// The provider family.
    pub kind: ProviderKind,
    /// Top-level request fields never sent to this provider.
    pub drop_params: Vec<String>,
    /// How the max-tokens field is named.
    pub max_tokens_field: MaxTokensField,
    /// How a reasoning effort is sent.
    pub reasoning: ReasoningField,
}

impl Quirks {
    /// The documented defaults for a kind.
    ///
    /// - Mistral answers 422 "Extra inputs are not permitted" to `stream_options`,
    ///   `max_completion_tokens`, `store` and other OpenAI-only fields.
    /// - Cerebras answers 400 to `frequency_penalty`, `presence_penalty`, `logit_bias`,
    ///   `parallel_tool_calls` and `service_tier`, and counts `max_completion_tokens`.
    /// - Groq answers 400 to `logprobs`, `top_logprobs` and `logit_bias`.
    /// - OpenAI's newer models refuse `max_tokens` in favour of `max_completion_tokens`.
    pub fn defaults(kind: ProviderKind) -> Quirks {
        let (drop, field): (&[&str], MaxTokensField) = match kind {
            ProviderKind::Mistral => (
                &[
                    "stream_options",
                    "store",
                    "metadata",
                    "service_tier",
                    "logit_bias",
                    "user",
                ],
                MaxTokensField::MaxTokens,
            ),
            ProviderKind::Cerebras => (
                &[
                    "frequency_penalty",
                    "presence_penalty",
                    "logit_bias",
                    "parallel_tool_calls",
                    "service_tier",
                ],
                MaxTokensField::MaxCompletionTokens,
            ),
            ProviderKind::Groq => (
                &["logprobs", "top_logprobs", "logit_bias"],
                MaxTokensField::MaxCompletionTokens,
            ),
            ProviderKind::Gemini => (&["store", "metadata", "service_tier"], MaxTokensField::Keep),
            ProviderKind::OpenAi => (&[], MaxTokensField::MaxCompletionTokens),
            ProviderKind::Ollama => (&[], MaxTokensField::MaxTokens),
            ProviderKind::Xai | ProviderKind::OpenRouter | ProviderKind::Generic => {
                (&[], MaxTokensField::Keep)
            }
        };
        Quirks {
            kind,
            drop_params: drop.iter().map(|s| (*s).to_string()).collect(),
            max_tokens_field: field,
            reasoning: match kind {
                ProviderKind::OpenRouter => ReasoningField::Object,
                _ => ReasoningField::Effort,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_detected_from_the_base_url_host() {
        let cases = [
            (
                "https://generativelanguage.googleapis.com/v1beta/openai",
                ProviderKind::Gemini,
            ),
            ("https://api.cerebras.ai/v1", ProviderKind::Cerebras),
            ("https://api.groq.com/openai/v1", ProviderKind::Groq),
            ("https://api.openai.com/v1", ProviderKind::OpenAi),
            ("https://api.x.ai/v1", ProviderKind::Xai),
            ("https://api.mistral.ai/v1", ProviderKind::Mistral),
            ("https://codestral.mistral.ai/v1", ProviderKind::Mistral),
            ("https://openrouter.ai/api/v1", ProviderKind::OpenRouter),
            ("http://127.0.0.1:11434/v1", ProviderKind::Ollama),
            ("http://127.0.0.1:4000/v1", ProviderKind::Generic),
            (
                "https://notopenai.com.evil.example/v1",
                ProviderKind::Generic,
            ),
        ];
        for (url, kind) in cases {
            assert_eq!(ProviderKind::detect(url), kind, "{url}");
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for k in ProviderKind::ALL {
            assert_eq!(k.as_str().parse::<ProviderKind>(), Ok(k));
        }
        assert_eq!("grok".parse::<ProviderKind>(), Ok(ProviderKind::Xai));
        assert!("bard".parse::<ProviderKind>().is_err());
    }

    use crate::config::{Config, ConfigError};

    const ENTRY: &str =
        "[[providers]]\nname = \"m\"\nbase_url = \"https://api.mistral.ai/v1\"\nmodel = \"x\"\n";

    fn invalid(text: &str) -> crate::config::Invalid {
        match Config::parse(text, None) {
            Err(ConfigError::Invalid(inv)) => *inv,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn detected_kind_brings_its_defaults_and_the_config_replaces_them() {
        let cfg = Config::parse(ENTRY, None).expect("parses");
        let q = &cfg.providers[0].quirks;
        assert_eq!(q.kind, ProviderKind::Mistral);
        assert!(q.drop_params.iter().any(|p| p == "stream_options"));
        assert_eq!(q.max_tokens_field, MaxTokensField::MaxTokens);
        let text = format!(
            "{ENTRY}kind = \"openrouter\"\ndrop_params = [\"seed\"]\nmax_tokens_field = \"keep\"\n"
        );
        let cfg = Config::parse(&text, None).expect("parses");
        let q = &cfg.providers[0].quirks;
        assert_eq!(q.kind, ProviderKind::OpenRouter);
        assert_eq!(q.drop_params, vec!["seed".to_string()]);
        assert_eq!(q.max_tokens_field, MaxTokensField::Keep);
    }

    #[test]
    fn unknown_kind_or_field_is_an_error_with_line_and_column() {
        let inv = invalid(&format!("{ENTRY}kind = \"bard\"\n"));
        assert_eq!(inv.key.as_deref(), Some("providers[0].kind"));
        assert_eq!((inv.line, inv.column), (Some(5), Some(8)), "{inv}");
        assert!(inv.message.contains("gemini"), "{inv}");
        let inv = invalid(&format!("{ENTRY}max_tokens_field = \"tokens\"\n"));
        assert_eq!(inv.key.as_deref(), Some("providers[0].max_tokens_field"));
        assert_eq!(inv.line, Some(5), "{inv}");
        let inv = invalid(&format!("{ENTRY}drop_param = [\"x\"]\n"));
        assert_eq!(inv.line, Some(5), "{inv}");
        assert!(inv.message.contains("drop_param"), "{inv}");
    }

    #[test]
    fn stream_start_timeout_must_stay_under_the_client_limit() {
        let cfg = Config::parse(ENTRY, None).expect("parses");
        assert_eq!(
            cfg.routing.stream_start_timeout,
            std::time::Duration::from_secs(100)
        );
        let inv = invalid("[routing]\nstream_start_timeout_secs = 120\n");
        assert_eq!(
            inv.key.as_deref(),
            Some("routing.stream_start_timeout_secs")
        );
        assert_eq!(inv.line, Some(2));
    }
}
