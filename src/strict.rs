//! A strict decoder for what the proxy sends to clients: every streamed chunk, every
//! non-streaming answer and the model list are checked against the fields Osaurus
//! requires, and the first field that would break it is named. Osaurus decodes each chunk
//! of a custom OpenAI-compatible provider with Swift `Decodable` structs; since mid-2026
//! one chunk it cannot decode ends the whole turn ("Provider emitted an invalid streaming
//! event"), before that the chunk was dropped with whatever it carried.
//!
//! It owns the schema of those client-facing shapes (from Osaurus's `OpenAIAPI.swift`,
//! recorded in issue 13) and SSE framing for checking. It never changes a body and is not
//! on the request path: `llm-rotator doctor` and the tests use it to prove the relay.
//!
//! Swift's decoding rules, which the schema follows: unknown keys are ignored; an
//! optional field may be missing or `null`; a required one must be present and not
//! `null` (a Swift default value does not make it optional); an `Int` must be a JSON
//! integer.

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

/// Where in the input a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A single chunk given to [`check_chunk`].
    Chunk,
    /// The n-th event (1-based, comments included) of a stream given to [`check_stream`].
    Event(usize),
    /// A non-streaming answer given to [`check_completion`].
    Response,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Chunk => f.write_str("chunk"),
            Location::Event(n) => write!(f, "event {n}"),
            Location::Response => f.write_str("response"),
        }
    }
}

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A required field is absent.
    Missing,
    /// A required field is `null`.
    Null,
    /// The field has the wrong type or value: `got` describes what is there.
    Wrong {
        /// What the client expects, e.g. "a string".
        want: &'static str,
        /// What came, e.g. "a number (1.5)".
        got: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is missing"),
            Problem::Null => f.write_str("is null"),
            Problem::Wrong { want, got } => write!(f, "is {got}, expected {want}"),
        }
    }
}

/// Why a strict client could not decode a chunk, a stream or an answer.
#[derive(Debug, Error)]
pub enum StrictError {
    /// A field is missing, null or of the wrong type.
    #[error("{at}: {path} {problem}")]
    Field {
        /// Where.
        at: Location,
        /// The field's path, e.g. `choices[0].delta`; `the payload` for the whole value.
        path: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The payload is not JSON.
    #[error("{at}: the payload is not JSON")]
    NotJson {
        /// Where.
        at: Location,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// An event with data came after `data: [DONE]`.
    #[error("{at}: data after `data: [DONE]`")]
    AfterDone {
        /// Where.
        at: Location,
    },
    /// The stream ended without `data: [DONE]`.
    #[error("the stream ended without `data: [DONE]`")]
    NoDone,
}

/// An error event in a stream: `{"error":{"message","type"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// Which event (1-based) carried it.
    pub event: usize,
    /// `error.message`.
    pub message: String,
    /// `error.type`.
    pub kind: String,
}

/// What a stream said, once every event decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Events carrying data, `[DONE]` included.
    pub data_events: usize,
    /// Every `delta.content`, joined.
    pub content: String,
    /// Every `delta.reasoning_content`, joined.
    pub reasoning: String,
    /// The name of each tool call, in the order they started.
    pub tool_calls: Vec<String>,
    /// Whether a chunk carried a `usage` object.
    pub usage: bool,
    /// Every non-null `finish_reason`, in order.
    pub finish_reasons: Vec<String>,
    /// The error event that ended the turn, if one came.
    pub error: Option<StreamError>,
}

/// How present a field must be (Swift: `T` or `T?`).
#[derive(Clone, Copy)]
enum Need {
    /// Present and not null.
    Required,
    /// Missing, null or of its type.
    Optional,
}

/// The JSON type a field must have.
enum Ty {
    Str,
    /// A Swift `Int`: a JSON integer that fits in 64 signed bits.
    Int,
    /// A Swift `Double`: any JSON number.
    Number,
    /// A string from a Swift `enum`'s raw values.
    OneOf(&'static [&'static str]),
    Object(&'static [Field]),
    ArrayOf(&'static Ty),
    /// Decoded with `try?`: any value, a wrong one silently becomes nil.
    Any,
}

struct Field {
    name: &'static str,
    need: Need,
    ty: Ty,
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        need: Need::Required,
        ty,
    }
}

const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        need: Need::Optional,
        ty,
    }
}

/// `Usage`.
const USAGE: &[Field] = &[
    req("prompt_tokens", Ty::Int),
    req("completion_tokens", Ty::Int),
    req("total_tokens", Ty::Int),
    opt("tokens_per_second", Ty::Number),
];

/// `DeltaToolCallFunction`.
const DELTA_FUNCTION: &[Field] = &[opt("name", Ty::Str), opt("arguments", Ty::Str)];

/// `DeltaToolCall`: everything optional; a call without `index` gets a slot by its id.
const DELTA_TOOL_CALL: &[Field] = &[
    opt("index", Ty::Int),
    opt("id", Ty::Str),
    opt("type", Ty::Str),
    opt("function", Ty::Object(DELTA_FUNCTION)),
];

/// `DeltaContent`. `content` as an array (Mistral's parts) decodes only in the newest
/// Osaurus, so it fails here.
const DELTA: &[Field] = &[
    opt("role", Ty::Str),
    opt("content", Ty::Str),
    opt("refusal", Ty::Str),
    opt("reasoning_content", Ty::Str),
    opt("tool_calls", Ty::ArrayOf(&Ty::Object(DELTA_TOOL_CALL))),
];

/// `StreamChoice`.
const CHUNK_CHOICE: &[Field] = &[
    req("index", Ty::Int),
    req("delta", Ty::Object(DELTA)),
    opt("finish_reason", Ty::Str),
];

/// `PrefillProgressState`, Osaurus's own extension (llm-rotator never sends it).
const PREFILL: &[Field] = &[
    req(
        "stage",
        Ty::OneOf(&[
            "queued",
            "cacheLookup",
            "cacheRestore",
            "prefill",
            "complete",
        ]),
    ),
    req("completedUnitCount", Ty::Int),
    req("totalUnitCount", Ty::Int),
    opt("detail", Ty::Str),
];

/// `ChatCompletionChunk`: one `data:` payload of a stream.
const CHUNK: &[Field] = &[
    req("id", Ty::Str),
    req("object", Ty::Str),
    req("created", Ty::Int),
    req("model", Ty::Str),
    req("choices", Ty::ArrayOf(&Ty::Object(CHUNK_CHOICE))),
    opt("system_fingerprint", Ty::Str),
    opt("prefix_hash", Ty::Str),
    opt("usage", Ty::Object(USAGE)),
    opt("osaurus_prefill", Ty::Object(PREFILL)),
];

/// `ToolCall` of a non-streaming message. Osaurus decodes `tool_calls` with `try?`, so
/// one malformed entry silently loses every call; this checks each entry as required.
const MESSAGE_TOOL_CALL: &[Field] = &[
    req("id", Ty::Str),
    req("type", Ty::Str),
    req(
        "function",
        Ty::Object(&[req("name", Ty::Str), req("arguments", Ty::Str)]),
    ),
];

/// `ChatMessage`: only `role` is decoded strictly; `content` may be a string or parts.
const MESSAGE: &[Field] = &[
    req("role", Ty::Str),
    opt("content", Ty::Any),
    opt("reasoning_content", Ty::Any),
    opt("tool_call_id", Ty::Any),
    opt("tool_calls", Ty::ArrayOf(&Ty::Object(MESSAGE_TOOL_CALL))),
];

/// `ChatChoice`: `finish_reason` is a required string here, unlike in a stream.
const COMPLETION_CHOICE: &[Field] = &[
    req("index", Ty::Int),
    req("message", Ty::Object(MESSAGE)),
    req("finish_reason", Ty::Str),
];

/// `ChatCompletionResponse`: a non-streaming answer; `usage` is required.
const COMPLETION: &[Field] = &[
    req("id", Ty::Str),
    req("object", Ty::Str),
    req("created", Ty::Int),
    req("model", Ty::Str),
    req("choices", Ty::ArrayOf(&Ty::Object(COMPLETION_CHOICE))),
    opt("system_fingerprint", Ty::Str),
    opt("prefix_hash", Ty::Str),
    req("usage", Ty::Object(USAGE)),
];

/// The model list Osaurus reads on connect.
const MODELS: &[Field] = &[
    opt("object", Ty::Str),
    req("data", Ty::ArrayOf(&Ty::Object(&[req("id", Ty::Str)]))),
];

/// `OpenAIError`: checked before a chunk; when it decodes, the turn ends with its message.
const ERROR_EVENT: &[Field] = &[req(
    "error",
    Ty::Object(&[req("message", Ty::Str), req("type", Ty::Str)]),
)];

/// Checks one SSE `data:` payload of a streamed chat completion. `[DONE]` and an error
/// event (`{"error":{"message","type"}}`) pass: they are what ends a turn.
pub fn check_chunk(data: &str) -> Result<(), StrictError> {
    if is_done(data) {
        return Ok(());
    }
    let v = parse(Location::Chunk, data)?;
    check_payload(Location::Chunk, &v).map(|_| ())
}

/// Checks a non-streaming chat completion body.
pub fn check_completion(body: &str) -> Result<(), StrictError> {
    let v = parse(Location::Response, body)?;
    check_fields(Location::Response, &v, COMPLETION)
}

/// Checks a `GET /v1/models` body (`{"data":[{"id"}]}`) and returns the model ids.
pub fn check_models(body: &str) -> Result<Vec<String>, StrictError> {
    let v = parse(Location::Response, body)?;
    check_fields(Location::Response, &v, MODELS)?;
    Ok(v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect())
}

/// Checks a whole SSE body of a streamed chat completion: every data event decodes,
/// `data: [DONE]` comes last, and what the stream said is summarized. An error event
/// (`{"error":{"message","type"}}`) is not a decode failure: it ends the turn as it
/// ends it in Osaurus, lands in [`StreamSummary::error`], and nothing after it is read.
pub fn check_stream(sse_text: &str) -> Result<StreamSummary, StrictError> {
    let mut summary = StreamSummary::default();
    let mut done = false;
    for event in events(sse_text) {
        let Some(data) = event.data else { continue };
        let at = Location::Event(event.number);
        if done {
            return Err(StrictError::AfterDone { at });
        }
        summary.data_events += 1;
        if is_done(&data) {
            done = true;
            continue;
        }
        let v = parse(at, &data)?;
        match check_payload(at, &v)? {
            Payload::Error => {
                summary.error = Some(StreamError {
                    event: event.number,
                    message: text_at(&v, "message"),
                    kind: text_at(&v, "type"),
                });
                return Ok(summary);
            }
            Payload::Chunk => add_chunk(&mut summary, &v),
        }
    }
    if done {
        Ok(summary)
    } else {
        Err(StrictError::NoDone)
    }
}

const DONE: &str = "[DONE]";

fn parse(at: Location, text: &str) -> Result<Value, StrictError> {
    serde_json::from_str(text).map_err(|source| StrictError::NotJson { at, source })
}

/// Osaurus compares the payload with `[DONE]` after trimming spaces and tabs.
fn is_done(data: &str) -> bool {
    data.trim_matches(|c: char| c.is_whitespace() && c != '\n' && c != '\r') == DONE
}

/// What a data event decoded as.
enum Payload {
    Error,
    Chunk,
}

/// Decodes a payload the way Osaurus tries it: as an error envelope first, then as a
/// chunk. A payload with an `error` that is neither is reported against the envelope,
/// the shape its sender meant.
fn check_payload(at: Location, v: &Value) -> Result<Payload, StrictError> {
    let Err(as_error) = check_fields(at, v, ERROR_EVENT) else {
        return Ok(Payload::Error);
    };
    match check_fields(at, v, CHUNK) {
        Ok(()) => Ok(Payload::Chunk),
        Err(_) if v.get("error").is_some_and(|e| !e.is_null()) => Err(as_error),
        Err(e) => Err(e),
    }
}

fn text_at(v: &Value, key: &str) -> String {
    v["error"][key].as_str().unwrap_or_default().to_string()
}

/// Adds a chunk that passed [`CHUNK`] to the summary.
fn add_chunk(summary: &mut StreamSummary, v: &Value) {
    if v.get("usage").is_some_and(Value::is_object) {
        summary.usage = true;
    }
    for choice in v["choices"].as_array().into_iter().flatten() {
        let delta = &choice["delta"];
        if let Some(s) = delta["content"].as_str() {
            summary.content.push_str(s);
        }
        if let Some(s) = delta["reasoning_content"].as_str() {
            summary.reasoning.push_str(s);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            if let Some(name) = call["function"]["name"].as_str() {
                summary.tool_calls.push(name.to_string());
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            summary.finish_reasons.push(reason.to_string());
        }
    }
}

/// Checks that `v` is an object whose fields follow `fields`.
fn check_fields(at: Location, v: &Value, fields: &[Field]) -> Result<(), StrictError> {
    let mut path = String::new();
    check_object(v, fields, &mut path).map_err(|(path, problem)| StrictError::Field {
        at,
        path: if path.is_empty() {
            "the payload".to_string()
        } else {
            path
        },
        problem,
    })
}

type Broken = (String, Problem);

fn check_object(v: &Value, fields: &[Field], path: &mut String) -> Result<(), Broken> {
    let obj = v.as_object().ok_or_else(|| wrong(path, "an object", v))?;
    for field in fields {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field.name);
        check_field(obj, field, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn check_field(obj: &Map<String, Value>, field: &Field, path: &mut String) -> Result<(), Broken> {
    match (obj.get(field.name), field.need) {
        (None, Need::Required) => Err((path.clone(), Problem::Missing)),
        (Some(Value::Null), Need::Required) => Err((path.clone(), Problem::Null)),
        (None | Some(Value::Null), Need::Optional) => Ok(()),
        (Some(v), _) => check_value(v, &field.ty, path),
    }
}

fn check_value(v: &Value, ty: &Ty, path: &mut String) -> Result<(), Broken> {
    match ty {
        Ty::Str if v.is_string() => Ok(()),
        Ty::Str => Err(wrong(path, "a string", v)),
        Ty::Int if v.is_i64() => Ok(()),
        Ty::Int => Err(wrong(path, "an integer", v)),
        Ty::Number if v.is_number() => Ok(()),
        Ty::Number => Err(wrong(path, "a number", v)),
        Ty::OneOf(names) if v.as_str().is_some_and(|s| names.contains(&s)) => Ok(()),
        Ty::OneOf(_) => Err(wrong(path, "one of Osaurus's stage names", v)),
        Ty::Any => Ok(()),
        Ty::Object(fields) => check_object(v, fields, path),
        Ty::ArrayOf(item) => {
            let items = v.as_array().ok_or_else(|| wrong(path, "an array", v))?;
            for (i, x) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                // Swift decodes `[T]` item by item: a null item is a null `T`.
                if x.is_null() {
                    return Err((path.clone(), Problem::Null));
                }
                check_value(x, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
    }
}

fn wrong(path: &str, want: &'static str, v: &Value) -> Broken {
    (
        path.to_string(),
        Problem::Wrong {
            want,
            got: describe(v),
        },
    )
}

/// "a number (1.5)", "a string", "an array", ...: what a value is, short.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// One SSE event as framed by the SSE rules: `number` counts events from 1 (comment-only
/// events too); `data` joins the event's `data:` lines with `\n`, `None` when it has none.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    number: usize,
    data: Option<String>,
}

/// Frames an SSE body: lines end with `\n`, `\r\n` or `\r`; a blank line ends an
/// event; `:` starts a comment; fields other than `data` are ignored. An event the
/// body ends in the middle of (no blank line after it) is still counted, as line-based
/// clients read it.
fn events(text: &str) -> Vec<Event> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let mut data: Option<String> = None;
    let mut lines_seen = false;
    let mut finish = |data: &mut Option<String>, lines_seen: &mut bool| {
        if std::mem::take(lines_seen) {
            out.push(Event {
                number: out.len() + 1,
                data: data.take(),
            });
        }
    };
    for line in text.split('\n') {
        if line.is_empty() {
            finish(&mut data, &mut lines_seen);
            continue;
        }
        lines_seen = true;
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if name == "data" {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
    }
    finish(&mut data, &mut lines_seen);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope every chunk needs, around `rest`.
    fn chunk(rest: &str) -> String {
        format!(r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",{rest}}}"#)
    }

    fn good() -> String {
        chunk(
            r#""choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]"#,
        )
    }

    fn chunk_error(data: &str) -> String {
        check_chunk(data).expect_err("should fail").to_string()
    }

    fn sse(payloads: &[&str]) -> String {
        payloads.iter().map(|p| format!("data: {p}\n\n")).collect()
    }

    const USAGE_OK: &str = r#""usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#;

    #[test]
    fn a_good_chunk_passes() {
        check_chunk(&good()).expect("good chunk");
        check_chunk("[DONE]").expect("[DONE]");
        check_chunk(" [DONE]\t").expect("[DONE] with spaces");
    }

    #[test]
    fn unknown_keys_and_nulls_in_optional_fields_pass() {
        check_chunk(&chunk(
            r#""x_groq":{"id":"r"},"provider":"Chutes","usage":null,"choices":[{"index":0,"logprobs":null,"delta":{"content":null,"reasoning":"ignored","tool_calls":null},"finish_reason":null}]"#,
        ))
        .expect("lenient where Osaurus is");
    }

    #[test]
    fn a_choice_without_delta_fails_naming_the_path() {
        let bad = chunk(r#""choices":[{"index":0}]"#);
        let text = sse(&[&good(), &good(), &bad, "[DONE]"]);
        let err = check_stream(&text).expect_err("missing delta");
        assert_eq!(err.to_string(), "event 3: choices[0].delta is missing");
    }

    #[test]
    fn a_chunk_without_id_object_created_or_model_fails() {
        let bare = r#"{"choices":[]}"#;
        assert_eq!(chunk_error(bare), "chunk: id is missing");
        let err = chunk_error(r#"{"id":"c","created":1,"model":"m","choices":[]}"#);
        assert_eq!(err, "chunk: object is missing");
        let err = chunk_error(r#"{"id":"c","object":"o","created":null,"model":"m","choices":[]}"#);
        assert_eq!(err, "chunk: created is null");
        let err = chunk_error(r#"{"id":1,"object":"o","created":1,"model":"m","choices":[]}"#);
        assert_eq!(err, "chunk: id is a number (1), expected a string");
    }

    #[test]
    fn usage_with_a_float_fails() {
        let err = chunk_error(&chunk(
            r#""choices":[],"usage":{"prompt_tokens":1.5,"completion_tokens":1,"total_tokens":3}"#,
        ));
        assert_eq!(
            err,
            "chunk: usage.prompt_tokens is a number (1.5), expected an integer"
        );
    }

    #[test]
    fn usage_without_total_tokens_fails() {
        let err = chunk_error(&chunk(
            r#""choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}"#,
        ));
        assert_eq!(err, "chunk: usage.total_tokens is missing");
    }

    #[test]
    fn a_numeric_finish_reason_fails() {
        let err = chunk_error(&chunk(
            r#""choices":[{"index":0,"delta":{},"finish_reason":1}]"#,
        ));
        assert_eq!(
            err,
            "chunk: choices[0].finish_reason is a number (1), expected a string"
        );
    }

    #[test]
    fn content_as_an_array_of_parts_fails_in_a_stream() {
        let err = chunk_error(&chunk(
            r#""choices":[{"index":0,"delta":{"content":[{"type":"text","text":"x"}]}}]"#,
        ));
        assert_eq!(
            err,
            "chunk: choices[0].delta.content is an array, expected a string"
        );
    }

    #[test]
    fn a_stream_without_done_fails() {
        let err = check_stream(&sse(&[&good()])).expect_err("no [DONE]");
        assert!(matches!(err, StrictError::NoDone), "{err}");
    }

    #[test]
    fn data_after_done_fails() {
        let err = check_stream(&sse(&[&good(), "[DONE]", &good()])).expect_err("after [DONE]");
        assert_eq!(err.to_string(), "event 3: data after `data: [DONE]`");
    }

    #[test]
    fn a_payload_that_is_not_an_object_or_not_json_fails() {
        assert_eq!(
            chunk_error("[1]"),
            "chunk: the payload is an array, expected an object"
        );
        assert_eq!(chunk_error("{oops"), "chunk: the payload is not JSON");
    }

    #[test]
    fn tool_call_deltas_may_leave_out_index_but_not_mistype_it() {
        check_chunk(&chunk(
            r#""choices":[{"index":0,"delta":{"tool_calls":[{"id":"","function":{"name":"f","arguments":"{}"}}]}}]"#,
        ))
        .expect("index is optional");
        let err = chunk_error(&chunk(
            r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":"0"}]}}]"#,
        ));
        assert_eq!(
            err,
            "chunk: choices[0].delta.tool_calls[0].index is a string, expected an integer"
        );
        let err = chunk_error(&chunk(
            r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":7}}]}}]"#,
        ));
        assert_eq!(
            err,
            "chunk: choices[0].delta.tool_calls[0].function.name is a number (7), expected a string"
        );
    }

    #[test]
    fn a_stream_is_summarized() {
        let parts = [
            chunk(
                r#""choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Hmm"}}]"#,
            ),
            chunk(r#""choices":[{"index":0,"delta":{"content":"Hel"}}]"#),
            chunk(
                r#""choices":[{"index":0,"delta":{"content":"lo","tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"get_weather","arguments":""}}]}}]"#,
            ),
            chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#),
            chunk(&format!(r#""choices":[],{USAGE_OK}"#)),
        ];
        let mut payloads: Vec<&str> = parts.iter().map(String::as_str).collect();
        payloads.push("[DONE]");
        let text = format!(": keep-alive\n\n{}", sse(&payloads));
        let s = check_stream(&text).expect("valid stream");
        assert_eq!(s.data_events, 6);
        assert_eq!(s.content, "Hello");
        assert_eq!(s.reasoning, "Hmm");
        assert_eq!(s.tool_calls, ["get_weather"]);
        assert!(s.usage);
        assert_eq!(s.finish_reasons, ["tool_calls"]);
        assert_eq!(s.error, None);
    }

    #[test]
    fn an_error_event_is_reported_in_the_summary_not_as_a_decode_failure() {
        let text = sse(&[
            &good(),
            r#"{"error":{"message":"provider went away","type":"server_error"}}"#,
            "not even JSON: nothing after the error is read",
        ]);
        let s = check_stream(&text).expect("error events decode");
        assert_eq!(
            s.error,
            Some(StreamError {
                event: 2,
                message: "provider went away".into(),
                kind: "server_error".into()
            })
        );
        assert_eq!(s.content, "Hi");
    }

    #[test]
    fn an_error_event_without_a_string_type_fails_against_the_envelope() {
        let err =
            check_stream(&sse(&[r#"{"error":{"message":"x","code":502}}"#])).expect_err("no type");
        assert_eq!(err.to_string(), "event 1: error.type is missing");
    }

    #[test]
    fn a_chunk_carrying_a_malformed_error_still_decodes_as_a_chunk() {
        // OpenRouter's in-band errors: not an envelope Osaurus recognises, but a chunk.
        let data = chunk(
            r#""error":{"code":429,"message":"later"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]"#,
        );
        check_chunk(&data).expect("a chunk");
    }

    #[test]
    fn sse_framing_joins_data_lines_and_counts_comments_as_events() {
        let got = events(": hi\r\n\r\ndata: a\ndata:b\nevent: x\n\ndata: [DONE]");
        assert_eq!(
            got,
            [
                Event {
                    number: 1,
                    data: None
                },
                Event {
                    number: 2,
                    data: Some("a\nb".into())
                },
                Event {
                    number: 3,
                    data: Some("[DONE]".into())
                },
            ]
        );
    }

    const COMPLETION_OK: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    fn completion_error(body: &str) -> String {
        check_completion(body).expect_err("should fail").to_string()
    }

    #[test]
    fn a_good_completion_passes() {
        check_completion(COMPLETION_OK).expect("good completion");
        let parts = COMPLETION_OK.replace(r#""content":null"#, r#""content":[{"type":"text"}]"#);
        check_completion(&parts).expect("content is decoded leniently");
    }

    #[test]
    fn a_completion_needs_usage_and_a_finish_reason() {
        let no_usage = COMPLETION_OK.replace(
            r#","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}"#,
            "",
        );
        assert_eq!(completion_error(&no_usage), "response: usage is missing");
        let null_finish = COMPLETION_OK.replace(r#""tool_calls"}"#, "null}");
        assert_eq!(
            completion_error(&null_finish),
            "response: choices[0].finish_reason is null"
        );
        let float = COMPLETION_OK.replace(r#""total_tokens":2"#, r#""total_tokens":2.0"#);
        assert_eq!(
            completion_error(&float),
            "response: usage.total_tokens is a number (2.0), expected an integer"
        );
    }

    #[test]
    fn a_completion_without_role_or_with_a_broken_tool_call_fails() {
        let no_role = COMPLETION_OK.replace(r#""role":"assistant","#, "");
        assert_eq!(
            completion_error(&no_role),
            "response: choices[0].message.role is missing"
        );
        let no_args = COMPLETION_OK.replace(r#","arguments":"{}""#, "");
        assert_eq!(
            completion_error(&no_args),
            "response: choices[0].message.tool_calls[0].function.arguments is missing"
        );
    }

    #[test]
    fn a_model_list_needs_data_with_string_ids() {
        let ids = check_models(r#"{"data":[{"id":"auto"},{"id":"m","owned_by":"x"}]}"#)
            .expect("list without object");
        assert_eq!(ids, ["auto", "m"]);
        let err = check_models(r#"{"object":"list","data":[{"name":"m"}]}"#).expect_err("no id");
        assert_eq!(err.to_string(), "response: data[0].id is missing");
    }
}
