//! The client's request body, peeked rather than parsed: the top-level object is split
//! into raw fields (validated as JSON, values left as text), so `model`, `stream` and
//! `max_tokens` can be read, and the body shaped for a provider (model replaced,
//! parameters it rejects left out, the max-tokens field renamed) without building a tree
//! of the messages.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::quirks::{MaxTokensField, Quirks, ReasoningField};

const MAX_TOKENS: &str = "max_tokens";
const MAX_COMPLETION_TOKENS: &str = "max_completion_tokens";
const REASONING: &str = "reasoning";
const REASONING_EFFORT: &str = "reasoning_effort";

/// A chat-completions request body, borrowed from the bytes it came in.
#[derive(Debug)]
pub struct ChatBody<'a> {
    fields: Vec<(String, &'a RawValue)>,
    model: Option<String>,
    stream: bool,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all.
    #[error("the request body is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("the request body must be a JSON object")]
    NotObject,
    /// `model` is present but not a string.
    #[error("`model` must be a string")]
    BadModel,
    /// `stream` is present but not a boolean.
    #[error("`stream` must be a boolean")]
    BadStream,
}

struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> ChatBody<'a> {
    /// Splits the body into fields; refuses anything but a JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<ChatBody<'a>, BodyError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Tell "not JSON" from "JSON but not an object".
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => BodyError::NotObject,
                    Err(e) => BodyError::NotJson(e.to_string()),
                },
            );
        }
        let Fields(fields) =
            serde_json::from_slice(bytes).map_err(|e| BodyError::NotJson(e.to_string()))?;
        let mut model = None;
        let mut stream = false;
        for (k, v) in &fields {
            match k.as_str() {
                "model" => {
                    model = serde_json::from_str::<Option<String>>(v.get())
                        .map_err(|_| BodyError::BadModel)?;
                }
                "stream" => {
                    stream = serde_json::from_str::<Option<bool>>(v.get())
                        .map_err(|_| BodyError::BadStream)?
                        .unwrap_or(false);
                }
                _ => {}
            }
        }
        Ok(ChatBody {
            fields,
            model,
            stream,
        })
    }

    /// The requested model, if any.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The completion-token limit the client set (`max_completion_tokens` or
    /// `max_tokens`), if any.
    pub fn max_tokens(&self) -> Option<u64> {
        [MAX_COMPLETION_TOKENS, MAX_TOKENS].iter().find_map(|name| {
            self.fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| serde_json::from_str::<u64>(v.get()).ok())
        })
    }

    /// Whether the client asked for a closing usage chunk
    /// (`stream_options.include_usage: true`).
    pub fn include_usage(&self) -> bool {
        #[derive(Deserialize)]
        struct StreamOptions {
            include_usage: Option<bool>,
        }
        self.field("stream_options")
            .and_then(|v| serde_json::from_str::<StreamOptions>(v.get()).ok())
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// A rough count of the prompt's tokens (about four bytes each), for a usage the
    /// provider did not report.
    pub fn prompt_estimate(&self) -> u64 {
        self.field("messages")
            .map_or(0, |v| (v.get().len() as u64).div_ceil(4))
    }

    fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Whether the body has this top-level field.
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == field)
    }

    /// The body for one provider: `model` set, the provider's `drop_params` and
    /// `also_drop` left out, and the max-tokens field named as the provider wants. A
    /// max-tokens field named in `also_drop` (a 422 refused it) is renamed to the other
    /// name rather than dropped, so the limit still applies.
    pub fn shaped(&self, model: &str, quirks: &Quirks, also_drop: &[String]) -> Bytes {
        let refused = |name: &str| also_drop.iter().any(|d| d == name);
        let target = if refused(MAX_TOKENS) {
            Some(MAX_COMPLETION_TOKENS)
        } else if refused(MAX_COMPLETION_TOKENS) {
            Some(MAX_TOKENS)
        } else {
            match quirks.max_tokens_field {
                MaxTokensField::Keep => None,
                MaxTokensField::MaxTokens => Some(MAX_TOKENS),
                MaxTokensField::MaxCompletionTokens => Some(MAX_COMPLETION_TOKENS),
            }
        };
        let has_target = target.is_some_and(|t| self.has(t));
        // A reasoning effort goes in the one form the provider takes, so no request with
        // an effort needs a refused-parameter round trip.
        let effort = self.effort();
        let (keep_reasoning, add_reasoning) = match (effort, quirks.reasoning) {
            (None, _) => (true, None),
            (Some(e), ReasoningField::Effort) => (false, Some((REASONING_EFFORT, e.to_string()))),
            // The client's own object may say more (max_tokens, exclude): kept whole.
            (Some(_), ReasoningField::Object) if self.has(REASONING) => (true, None),
            (Some(e), ReasoningField::Object) => (
                false,
                Some((REASONING, format!("{{\"effort\":{}}}", e.get()))),
            ),
        };
        let add_reasoning = add_reasoning.filter(|(name, _)| !refused(name));
        self.write(
            model,
            |k| {
                if k == MAX_TOKENS || k == MAX_COMPLETION_TOKENS {
                    if let Some(t) = target {
                        // Both present: keep the one already named right.
                        return if has_target && k != t { None } else { Some(t) };
                    }
                }
                if (k == REASONING || k == REASONING_EFFORT)
                    && effort.is_some()
                    && !(keep_reasoning && k == REASONING)
                {
                    return None;
                }
                if refused(k) || quirks.drop_params.iter().any(|d| d == k) {
                    None
                } else {
                    Some(k)
                }
            },
            add_reasoning.as_ref().map(|(k, v)| (*k, v.as_str())),
        )
    }

    /// The reasoning effort the client asked for, as raw JSON (a string): from
    /// `reasoning_effort`, else from `reasoning.effort`.
    fn effort(&self) -> Option<&'a RawValue> {
        #[derive(Deserialize)]
        struct Reasoning<'r> {
            #[serde(borrow)]
            effort: Option<&'r RawValue>,
        }
        let is_str = |v: &&RawValue| v.get().starts_with('"');
        self.field(REASONING_EFFORT).filter(is_str).or_else(|| {
            self.field(REASONING)
                .and_then(|v| serde_json::from_str::<Reasoning<'a>>(v.get()).ok())
                .and_then(|r| r.effort)
                .filter(is_str)
        })
    }

    /// The body to send upstream: the client's fields in order, with `model` set to
    /// `model` (added when absent).
    pub fn with_model(&self, model: &str) -> Bytes {
        self.write(model, Some, None)
    }

    /// Writes the fields in order, each under the name `rename` gives it (`None` = left
    /// out), with `model` set (added when absent) and `extra` (a name and raw JSON) last.
    fn write<'k>(
        &'k self,
        model: &str,
        rename: impl Fn(&'k str) -> Option<&'k str>,
        extra: Option<(&str, &str)>,
    ) -> Bytes {
        let len: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(len + model.len() + 16);
        out.push(b'{');
        let mut first = true;
        let mut wrote_model = false;
        for (k, v) in &self.fields {
            let name = if k == "model" {
                Some("model")
            } else {
                rename(k)
            };
            let Some(name) = name else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(&mut out, name);
            out.push(b':');
            if k == "model" {
                write_str(&mut out, model);
                wrote_model = true;
            } else {
                out.extend_from_slice(v.get().as_bytes());
            }
        }
        if !wrote_model {
            if !first {
                out.push(b',');
            }
            write_str(&mut out, "model");
            out.push(b':');
            write_str(&mut out, model);
        }
        if let Some((name, raw)) = extra {
            out.push(b',');
            write_str(&mut out, name);
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream_and_replaces_model() {
        let raw = br#" {"model":"auto","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"temperature":0.2}"#;
        let body = ChatBody::parse(raw).expect("parses");
        assert_eq!(body.model(), Some("auto"));
        assert!(body.stream());
        let out = body.with_model("llama-3.3");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["model"], "llama-3.3");
        assert_eq!(v["messages"][0]["content"], "hi \"there\"");
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn adds_model_when_absent() {
        let body = ChatBody::parse(br#"{"messages":[]}"#).expect("parses");
        assert_eq!(body.model(), None);
        assert!(!body.stream());
        let v: serde_json::Value = serde_json::from_slice(&body.with_model("m")).expect("json");
        assert_eq!(v["model"], "m");
        let empty = ChatBody::parse(b"{}").expect("parses");
        assert_eq!(&empty.with_model("m")[..], br#"{"model":"m"}"#);
    }

    fn quirks(field: MaxTokensField, drop: &[&str]) -> Quirks {
        Quirks {
            kind: crate::config::quirks::ProviderKind::Generic,
            drop_params: drop.iter().map(|d| (*d).to_string()).collect(),
            max_tokens_field: field,
            reasoning: ReasoningField::Effort,
        }
    }

    fn shaped_for(kind: crate::config::quirks::ProviderKind, raw: &[u8]) -> serde_json::Value {
        let body = ChatBody::parse(raw).expect("parse");
        let out = body.shaped("m", &Quirks::defaults(kind), &[]);
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn a_reasoning_effort_goes_in_the_one_form_each_provider_takes() {
        use crate::config::quirks::ProviderKind;
        let osaurus = br#"{"messages":[],"reasoning":{"effort":"high"},"reasoning_effort":"high"}"#;
        for kind in [
            ProviderKind::Groq,
            ProviderKind::Gemini,
            ProviderKind::Mistral,
        ] {
            let v = shaped_for(kind, osaurus);
            assert_eq!(v["reasoning_effort"], "high", "{kind:?}");
            assert!(v.get("reasoning").is_none(), "{kind:?}: {v}");
        }
        let only_object = br#"{"messages":[],"reasoning":{"effort":"low"}}"#;
        assert_eq!(
            shaped_for(ProviderKind::Cerebras, only_object)["reasoning_effort"],
            "low"
        );
        let v = shaped_for(ProviderKind::OpenRouter, osaurus);
        assert_eq!(v["reasoning"], serde_json::json!({"effort": "high"}));
        assert!(v.get("reasoning_effort").is_none(), "{v}");
        let only_effort = br#"{"messages":[],"reasoning_effort":"medium"}"#;
        let v = shaped_for(ProviderKind::OpenRouter, only_effort);
        assert_eq!(v["reasoning"], serde_json::json!({"effort": "medium"}));
        assert!(v.get("reasoning_effort").is_none(), "{v}");
        // No effort: nothing added or removed.
        let v = shaped_for(
            ProviderKind::Groq,
            br#"{"messages":[],"reasoning":{"exclude":true}}"#,
        );
        assert_eq!(v["reasoning"], serde_json::json!({"exclude": true}));
        assert!(v.get("reasoning_effort").is_none());
    }

    #[test]
    fn include_usage_and_the_prompt_estimate_are_read_from_the_body() {
        let b = ChatBody::parse(br#"{"messages":[{"role":"user","content":"hello there"}],"stream_options":{"include_usage":true}}"#).expect("parse");
        assert!(b.include_usage());
        assert!(b.prompt_estimate() > 5);
        let b = ChatBody::parse(br#"{"messages":[],"stream_options":{"include_usage":false}}"#)
            .expect("parse");
        assert!(!b.include_usage());
        assert!(!ChatBody::parse(br#"{"messages":[]}"#)
            .expect("parse")
            .include_usage());
    }

    #[test]
    fn shaping_drops_rejected_parameters_and_renames_max_tokens() {
        let raw = br#"{"model":"auto","messages":[],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":512,"seed":7}"#;
        let body = ChatBody::parse(raw).expect("parses");
        assert_eq!(body.max_tokens(), Some(512));
        let out = body.shaped(
            "mistral-small",
            &quirks(MaxTokensField::MaxTokens, &["stream_options"]),
            &[],
        );
        assert_eq!(
            &out[..],
            br#"{"model":"mistral-small","messages":[],"stream":true,"max_tokens":512,"seed":7}"#
        );
        // A 422 that refused `seed`, and one that refused the max-tokens name.
        let out = body.shaped(
            "m",
            &quirks(MaxTokensField::Keep, &[]),
            &["seed".to_string(), "max_completion_tokens".to_string()],
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(v.get("seed").is_none());
        assert_eq!(v["max_tokens"], 512);
        assert!(v.get("max_completion_tokens").is_none());
        assert_eq!(v["stream_options"]["include_usage"], true);
        // Both names present: the right one stays, the other goes.
        let both = ChatBody::parse(br#"{"max_tokens":1,"max_completion_tokens":2}"#).expect("p");
        let out = both.shaped("m", &quirks(MaxTokensField::MaxCompletionTokens, &[]), &[]);
        assert_eq!(&out[..], br#"{"max_completion_tokens":2,"model":"m"}"#);
        // Everything dropped still leaves a valid object.
        let only = ChatBody::parse(br#"{"seed":1}"#).expect("p");
        let out = only.shaped("m", &quirks(MaxTokensField::Keep, &["seed"]), &[]);
        assert_eq!(&out[..], br#"{"model":"m"}"#);
    }

    #[test]
    fn refuses_non_objects_and_bad_fields() {
        assert!(matches!(
            ChatBody::parse(b"[1,2]"),
            Err(BodyError::NotObject)
        ));
        assert!(matches!(
            ChatBody::parse(b"\"x\""),
            Err(BodyError::NotObject)
        ));
        assert!(matches!(
            ChatBody::parse(b"{nope"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(ChatBody::parse(b""), Err(BodyError::NotJson(_))));
        assert!(matches!(
            ChatBody::parse(br#"{"model":5}"#),
            Err(BodyError::BadModel)
        ));
        assert!(matches!(
            ChatBody::parse(br#"{"stream":"yes"}"#),
            Err(BodyError::BadStream)
        ));
        assert!(matches!(
            ChatBody::parse(br#"{"a":1} trailing"#),
            Err(BodyError::NotJson(_))
        ));
    }
}
