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

use crate::config::quirks::{MaxTokensField, Quirks};

const MAX_TOKENS: &str = "max_tokens";
const MAX_COMPLETION_TOKENS: &str = "max_completion_tokens";

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
        self.write(model, |k| {
            if k == MAX_TOKENS || k == MAX_COMPLETION_TOKENS {
                if let Some(t) = target {
                    // Both present: keep the one already named right.
                    return if has_target && k != t { None } else { Some(t) };
                }
            }
            if refused(k) || quirks.drop_params.iter().any(|d| d == k) {
                None
            } else {
                Some(k)
            }
        })
    }

    /// The body to send upstream: the client's fields in order, with `model` set to
    /// `model` (added when absent).
    pub fn with_model(&self, model: &str) -> Bytes {
        self.write(model, Some)
    }

    /// Writes the fields in order, each under the name `rename` gives it (`None` = left
    /// out), with `model` set (added when absent).
    fn write<'k>(&'k self, model: &str, rename: impl Fn(&'k str) -> Option<&'k str>) -> Bytes {
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
        }
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
