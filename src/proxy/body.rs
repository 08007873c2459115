//! The client's request body, peeked rather than parsed: the top-level object is split
//! into raw fields (validated as JSON, values left as text), so `model` and `stream` can
//! be read and `model` replaced without building a tree of the messages.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

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

    /// The body to send upstream: the client's fields in order, with `model` set to
    /// `model` (added when absent).
    pub fn with_model(&self, model: &str) -> Bytes {
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
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(&mut out, k);
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
