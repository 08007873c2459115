//! The client contract (what Osaurus and the OpenAI SDKs decode strictly): every streamed
//! chunk carries `id`, `object`, `created`, `model` and `choices[].index`; tool-call
//! deltas carry `index` (Gemini leaves it out); a stream that called tools ends with
//! `finish_reason: "tool_calls"` (Gemini says "stop"); non-streaming replies always have
//! `usage` and a `finish_reason`; errors after the 200 are `{"error":{"message","type"}}`
//! with string fields.
//!
//! Events are checked with a borrowed peek (no tree is built); only an event that breaks
//! a rule is parsed and rewritten, every other one goes out as the same bytes.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::Usage;

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    /// Groq reports a stream's usage here.
    #[serde(borrow)]
    x_groq: Option<GroqPeek<'a>>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoicePeek<'a>>>,
}

#[derive(Deserialize)]
struct GroqPeek<'a> {
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    #[serde(borrow)]
    index: Option<&'a RawValue>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<DeltaPeek<'a>>,
}

#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolPeek<'a>>>,
    /// Groq (gpt-oss), OpenRouter and Ollama send reasoning here; strict clients read
    /// only `reasoning_content`.
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
}

/// The three counts of a `usage` object, as raw values.
#[derive(Deserialize)]
struct UsagePeek<'a> {
    #[serde(borrow)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    total_tokens: Option<&'a RawValue>,
}

fn is_count(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| !r.get().is_empty() && r.get().bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a `usage` value is absent, null, or an object with all three integer counts.
fn usage_whole(v: Option<&RawValue>) -> bool {
    match v {
        None => true,
        Some(r) if r.get() == "null" => true,
        Some(r) => serde_json::from_str::<UsagePeek<'_>>(r.get()).is_ok_and(|u| {
            is_count(u.prompt_tokens) && is_count(u.completion_tokens) && is_count(u.total_tokens)
        }),
    }
}

/// Whether a chunk's `usage` carries counts (not absent, not null).
fn has_usage(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| r.get() != "null")
}

/// A reasoning text given as `reasoning` only: moved to `reasoning_content`, where
/// strict clients (Osaurus) read it. Moved, not copied, so a client that reads both
/// fields never shows it twice.
fn reasoning_misplaced(reasoning: Option<&RawValue>, content: Option<&RawValue>) -> bool {
    is_string(reasoning) && !is_string(content)
}

/// A count as a whole number: integers as they are, floats rounded, anything else none.
fn count_of(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
}

/// Makes `usage` whole: each missing count derived from the other two, or else taken as
/// 0 (`total` then the sum). A usage that is not an object is removed.
fn fix_usage(obj: &mut Map<String, Value>) {
    let Some(u) = obj.get_mut("usage") else {
        return;
    };
    if u.is_null() {
        return;
    }
    let Some(m) = u.as_object_mut() else {
        obj.remove("usage");
        return;
    };
    let (p, c, t) = (
        count_of(m.get("prompt_tokens")),
        count_of(m.get("completion_tokens")),
        count_of(m.get("total_tokens")),
    );
    let (p, c, t) = match (p, c, t) {
        (Some(p), Some(c), t) => (p, c, t.unwrap_or(p + c)),
        (Some(p), None, Some(t)) => (p, t.saturating_sub(p), t),
        (None, Some(c), Some(t)) => (t.saturating_sub(c), c, t),
        (None, None, Some(t)) => (0, t, t),
        (Some(p), None, None) => (p, 0, p),
        (None, Some(c), None) => (0, c, c),
        (None, None, None) => (0, 0, 0),
    };
    m.insert("prompt_tokens".into(), json!(p));
    m.insert("completion_tokens".into(), json!(c));
    m.insert("total_tokens".into(), json!(t));
}

/// Moves `reasoning` (a string) to `reasoning_content` in a delta or message.
fn move_reasoning(m: &mut Map<String, Value>) {
    if m.get("reasoning").is_some_and(Value::is_string)
        && !m.get("reasoning_content").is_some_and(Value::is_string)
    {
        if let Some(r) = m.remove("reasoning") {
            m.insert("reasoning_content".into(), r);
        }
    }
}

#[derive(Deserialize)]
struct ToolPeek<'a> {
    #[serde(borrow)]
    index: Option<&'a RawValue>,
}

fn tool_index(tc: &ToolPeek<'_>) -> Option<u64> {
    tc.index.and_then(|i| i.get().parse::<u64>().ok())
}

fn is_string(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| r.get().starts_with('"'))
}

fn is_number(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| r.get().starts_with(|c: char| c.is_ascii_digit()))
}

/// What one SSE event turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum Kind {
    /// A comment, a blank separator, or data that is not JSON: passed through.
    Other,
    /// `data: [DONE]`.
    Done,
    /// A chunk (possibly rewritten).
    Chunk,
    /// An error object; the payload is kept for classification.
    Error(Bytes),
}

/// The result of looking at one event.
pub(super) struct Seen {
    /// What it was.
    pub kind: Kind,
    /// What to send the client for it (the same bytes unless a rule needed a fix).
    pub out: Bytes,
    /// Tokens reported by a `usage` object in it.
    pub tokens: Option<crate::history::Tokens>,
}

/// Checks and fixes the chunks of one stream, remembering what the rules need across
/// events (the stream's id, tool calls seen so far).
pub(super) struct ChunkFixer {
    id: Option<String>,
    created: Option<u64>,
    model: String,
    fallback_id: String,
    fallback_created: u64,
    tools_seen: u64,
    last_tool: Option<u64>,
    saw_tool_calls: bool,
    /// Whether a `[DONE]` went by.
    pub saw_done: bool,
    /// Whether a chunk that went out carried a whole `usage`.
    pub usage_sent: bool,
    /// The last whole usage the provider reported (`usage`, or Groq's `x_groq.usage`).
    reported: Option<(u64, u64, u64)>,
    /// Chunks that carried choices: our own count of completion tokens when the
    /// provider reports none.
    deltas: u64,
}

impl ChunkFixer {
    /// A fixer for a stream answering with `model`, started at `now` (Unix seconds).
    pub fn new(model: &str, now: u64, nonce: u64) -> ChunkFixer {
        ChunkFixer {
            id: None,
            created: None,
            model: model.to_string(),
            fallback_id: format!("chatcmpl-rotator-{nonce:x}"),
            fallback_created: now,
            tools_seen: 0,
            last_tool: None,
            saw_tool_calls: false,
            saw_done: false,
            usage_sent: false,
            reported: None,
            deltas: 0,
        }
    }

    /// The closing `choices: []` usage chunk a client that asked for usage
    /// (`stream_options.include_usage`) gets when the provider sent none: the counts the
    /// provider reported elsewhere, or else our estimate (`prompt_estimate`, and a token
    /// per chunk).
    pub fn usage_chunk(&mut self, prompt_estimate: u64) -> Bytes {
        let (p, c, t) =
            self.reported
                .unwrap_or((prompt_estimate, self.deltas, prompt_estimate + self.deltas));
        self.usage_sent = true;
        let id = self.id.clone().unwrap_or_else(|| self.fallback_id.clone());
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": self.created.unwrap_or(self.fallback_created),
            "model": self.model,
            "choices": [],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t},
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// Looks at one complete SSE event (its bytes up to and including the blank line).
    pub fn event(&mut self, ev: Bytes) -> Seen {
        let other = |out: Bytes| Seen {
            kind: Kind::Other,
            out,
            tokens: None,
        };
        let Some(payload) = data_payload(&ev) else {
            return other(ev);
        };
        let trimmed = payload.trim_ascii();
        if trimmed == b"[DONE]" {
            self.saw_done = true;
            return Seen {
                kind: Kind::Done,
                out: ev,
                tokens: None,
            };
        }
        let Ok(peek) = serde_json::from_slice::<ChunkPeek<'_>>(trimmed) else {
            return other(ev);
        };
        if peek.error.is_some() {
            return Seen {
                kind: Kind::Error(Bytes::copy_from_slice(trimmed)),
                out: ev,
                tokens: None,
            };
        }
        let usage = peek
            .usage
            .or_else(|| peek.x_groq.as_ref().and_then(|x| x.usage))
            .and_then(|u| serde_json::from_str::<Usage>(u.get()).ok());
        let tokens = usage.as_ref().map(Usage::tokens);
        if let Some(u) = &usage {
            if let Some(whole) = u.whole() {
                self.reported = Some(whole);
            }
        }
        self.remember(&peek);
        let mut broken = !is_string(peek.id)
            || !is_string(peek.object)
            || !is_number(peek.created)
            || !is_string(peek.model)
            || peek.choices.is_none()
            || !usage_whole(peek.usage);
        if peek.choices.as_ref().is_some_and(|c| !c.is_empty()) {
            self.deltas += 1;
        }
        let mut tool_calls_here = false;
        for c in peek.choices.iter().flatten() {
            broken |= !is_number(c.index);
            broken |= c.delta.is_none();
            broken |= c
                .finish_reason
                .is_some_and(|f| f.get() != "null" && !f.get().starts_with('"'));
            broken |= c
                .delta
                .as_ref()
                .is_some_and(|d| reasoning_misplaced(d.reasoning, d.reasoning_content));
            if let Some(tcs) = c.delta.as_ref().and_then(|d| d.tool_calls.as_ref()) {
                for tc in tcs {
                    tool_calls_here = true;
                    broken |= tool_index(tc).is_none();
                }
            }
            let stop = c.finish_reason.is_some_and(|f| f.get() == "\"stop\"");
            broken |= stop && (self.saw_tool_calls || tool_calls_here);
        }
        if !broken {
            for tc in peek
                .choices
                .iter()
                .flatten()
                .filter_map(|c| c.delta.as_ref()?.tool_calls.as_ref())
                .flatten()
            {
                if let Some(i) = tool_index(tc) {
                    self.saw_tool_calls = true;
                    self.tools_seen = self.tools_seen.max(i + 1);
                    self.last_tool = Some(i);
                }
            }
            self.usage_sent |= has_usage(peek.usage);
            return Seen {
                kind: Kind::Chunk,
                out: ev,
                tokens,
            };
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(trimmed) else {
            return other(ev);
        };
        self.fix(&mut value);
        self.usage_sent |= value.get("usage").is_some_and(Value::is_object);
        Seen {
            kind: Kind::Chunk,
            out: Bytes::from(format!("data: {value}\n\n")),
            tokens,
        }
    }

    fn remember(&mut self, peek: &ChunkPeek<'_>) {
        if self.id.is_none() && is_string(peek.id) {
            self.id = peek.id.and_then(|r| serde_json::from_str(r.get()).ok());
        }
        if self.created.is_none() {
            self.created = peek.created.and_then(|r| r.get().parse().ok());
        }
        if is_string(peek.model) {
            if let Some(m) = peek.model.and_then(|r| serde_json::from_str(r.get()).ok()) {
                self.model = m;
            }
        }
    }

    fn fix(&mut self, v: &mut Value) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        if !obj.get("id").is_some_and(Value::is_string) {
            let id = self.id.clone().unwrap_or_else(|| self.fallback_id.clone());
            obj.insert("id".into(), json!(id));
        }
        if !obj.get("object").is_some_and(Value::is_string) {
            obj.insert("object".into(), json!("chat.completion.chunk"));
        }
        if !obj.get("created").is_some_and(Value::is_u64) {
            obj.insert(
                "created".into(),
                json!(self.created.unwrap_or(self.fallback_created)),
            );
        }
        if !obj.get("model").is_some_and(Value::is_string) {
            obj.insert("model".into(), json!(self.model));
        }
        fix_usage(obj);
        if !obj.get("choices").is_some_and(Value::is_array) {
            obj.insert("choices".into(), json!([]));
        }
        let Some(choices) = obj.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for (i, choice) in choices.iter_mut().enumerate() {
            let Some(c) = choice.as_object_mut() else {
                continue;
            };
            if !c.get("index").is_some_and(Value::is_u64) {
                c.insert("index".into(), json!(i));
            }
            if !c.get("delta").is_some_and(Value::is_object) {
                c.insert("delta".into(), json!({}));
            }
            if let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) {
                move_reasoning(d);
            }
            if c.get("finish_reason")
                .is_some_and(|f| !f.is_null() && !f.is_string())
            {
                c.insert("finish_reason".into(), Value::Null);
            }
            if let Some(tcs) = c
                .get_mut("delta")
                .and_then(|d| d.get_mut("tool_calls"))
                .and_then(Value::as_array_mut)
            {
                for tc in tcs.iter_mut().filter_map(Value::as_object_mut) {
                    self.fix_tool_call(tc);
                }
            }
            if c.get("finish_reason").and_then(Value::as_str) == Some("stop") && self.saw_tool_calls
            {
                c.insert("finish_reason".into(), json!("tool_calls"));
            }
        }
    }

    /// A tool call without `index` is a new call when it names a function or has an id
    /// (Gemini sends each call whole), otherwise more arguments for the last one.
    fn fix_tool_call(&mut self, tc: &mut Map<String, Value>) {
        self.saw_tool_calls = true;
        if let Some(i) = tc.get("index").and_then(Value::as_u64) {
            self.tools_seen = self.tools_seen.max(i + 1);
            self.last_tool = Some(i);
            return;
        }
        let named = tc
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let has_id = tc
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let index = match self.last_tool {
            Some(last) if !named && !has_id => last,
            _ => {
                let i = self.tools_seen;
                self.tools_seen += 1;
                i
            }
        };
        self.last_tool = Some(index);
        tc.insert("index".into(), json!(index));
    }
}

/// The `data:` payload of an event (one line borrowed, several joined), or `None` for
/// events without data (comments, separators).
fn data_payload(ev: &Bytes) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut lines = ev
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|d| d.strip_prefix(b" ").unwrap_or(d));
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = first.to_vec();
            for l in std::iter::once(second).chain(lines) {
                joined.push(b'\n');
                joined.extend_from_slice(l);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// The SSE error event the client gets after the 200: `message` and `type` as strings.
pub(super) fn error_event(message: &str, kind: &str) -> Bytes {
    let body = json!({"error": {"message": message, "type": kind, "code": kind}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// Rewrites a provider's in-stream error object into [`error_event`]'s shape.
pub(super) fn client_error_event(payload: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&Value::Null);
    let as_text = |x: Option<&Value>| match x {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = match e {
        Value::String(s) => s.clone(),
        other => as_text(other.get("message"))
            .unwrap_or_else(|| "the provider reported an error".to_string()),
    };
    let kind = as_text(e.get("type"))
        .or_else(|| as_text(e.get("code")))
        .unwrap_or_else(|| "upstream_error".to_string());
    error_event(&message, &kind)
}

#[derive(Deserialize)]
struct CompletionPeek<'a> {
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<CompletionChoicePeek<'a>>>,
}

#[derive(Deserialize)]
struct CompletionChoicePeek<'a> {
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<MessagePeek<'a>>,
}

#[derive(Deserialize)]
struct MessagePeek<'a> {
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
}

/// A successful embeddings answer: passed on as it came (a list with `data`), with the
/// tokens its `usage` reports; an error object or non-JSON is a failed attempt.
pub(super) fn embeddings(body: Bytes) -> Completion {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        usage: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let Ok(peek) = serde_json::from_slice::<Peek<'_>>(&body) else {
        return Completion::NotJson;
    };
    if peek.error.is_some() && peek.data.is_none() {
        return Completion::Error(body);
    }
    let tokens = peek
        .usage
        .and_then(|u| serde_json::from_str::<Usage>(u.get()).ok())
        .map(|u| u.tokens());
    Completion::Ok(body, tokens)
}

/// The `usage` added to an answer that has none (spliced in before its closing brace).
const ZERO_USAGE: &str = r#","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}"#;

/// What a successful non-streaming body turned out to be.
pub(super) enum Completion {
    /// A completion (possibly fixed), with the tokens it reports.
    Ok(Bytes, Option<crate::history::Tokens>),
    /// A 200 whose body is an error object (OpenRouter does this): a failed attempt.
    Error(Bytes),
    /// A 200 whose body is not JSON at all (a broken gateway): a failed attempt.
    NotJson,
}

/// Makes sure a non-streaming reply has `usage` and a `finish_reason` per choice
/// (`tool_calls` when the message calls tools), rewriting only when one is missing.
pub(super) fn completion(body: Bytes) -> Completion {
    let Ok(peek) = serde_json::from_slice::<CompletionPeek<'_>>(&body) else {
        return Completion::NotJson;
    };
    if peek.error.is_some() && peek.choices.as_ref().is_none_or(Vec::is_empty) {
        return Completion::Error(body);
    }
    let tokens = peek
        .usage
        .and_then(|u| serde_json::from_str::<Usage>(u.get()).ok())
        .map(|u| u.tokens());
    let no_usage = !has_usage(peek.usage);
    let mut broken = !no_usage && !usage_whole(peek.usage);
    for c in peek.choices.iter().flatten() {
        broken |= c
            .message
            .as_ref()
            .is_some_and(|m| reasoning_misplaced(m.reasoning, m.reasoning_content));
        let calls = c
            .message
            .as_ref()
            .and_then(|m| m.tool_calls)
            .is_some_and(|t| t.get().starts_with('[') && t.get() != "[]");
        let finish = c.finish_reason.map(RawValue::get);
        broken |= finish.is_none() || (calls && finish == Some("\"stop\""));
    }
    if !broken && !no_usage {
        return Completion::Ok(body, tokens);
    }
    if !broken && peek.usage.is_none() {
        // Only `usage` is missing: added at the end of the object, without a tree of the
        // whole answer (which would take many times its size).
        if let Some(end) = body.iter().rposition(|&b| b == b'}') {
            let empty = body[..end]
                .iter()
                .rev()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b'{');
            let usage = if empty { &ZERO_USAGE[1..] } else { ZERO_USAGE };
            let mut out = Vec::with_capacity(body.len() + ZERO_USAGE.len());
            out.extend_from_slice(&body[..end]);
            out.extend_from_slice(usage.as_bytes());
            out.extend_from_slice(&body[end..]);
            return Completion::Ok(Bytes::from(out), tokens);
        }
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return Completion::Ok(body, tokens);
    };
    if let Some(obj) = v.as_object_mut() {
        fix_usage(obj);
        if obj.get("usage").is_none_or(Value::is_null) {
            obj.insert(
                "usage".into(),
                json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
            );
        }
        for c in obj
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            if let Some(m) = c.get_mut("message").and_then(Value::as_object_mut) {
                move_reasoning(m);
            }
            let calls = c
                .get("message")
                .and_then(|m| m.get("tool_calls"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let finish = c.get("finish_reason").and_then(Value::as_str);
            if calls && matches!(finish, None | Some("stop")) {
                c.insert("finish_reason".into(), json!("tool_calls"));
            } else if finish.is_none() {
                c.insert("finish_reason".into(), json!("stop"));
            }
        }
    }
    Completion::Ok(Bytes::from(v.to_string()), tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixer() -> ChunkFixer {
        ChunkFixer::new("gemini-2.5-flash", 1_800_000_000, 1)
    }

    fn json_of(out: &Bytes) -> Value {
        let text = std::str::from_utf8(out).expect("utf8");
        let data = text.trim().strip_prefix("data: ").expect("data line");
        serde_json::from_str(data).expect("json")
    }

    #[test]
    fn a_complete_chunk_passes_through_as_the_same_bytes() {
        let ev = Bytes::from_static(b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n");
        let seen = fixer().event(ev.clone());
        assert_eq!(seen.kind, Kind::Chunk);
        assert_eq!(seen.out.as_ptr(), ev.as_ptr(), "not copied");
    }

    #[test]
    fn gemini_tool_calls_get_indexes_and_finish_with_tool_calls() {
        let mut f = fixer();
        let call = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\",\"name\":\"a\"},\"id\":\"\",\"type\":\"function\"},{\"function\":{\"arguments\":\"{}\",\"name\":\"b\"},\"id\":\"\",\"type\":\"function\"}]},\"index\":0}],\"created\":1,\"model\":\"gemini-2.5-flash\",\"object\":\"chat.completion.chunk\"}\n\n");
        let out = json_of(&f.event(call).out);
        let tcs = &out["choices"][0]["delta"]["tool_calls"];
        assert_eq!(
            (tcs[0]["index"].as_u64(), tcs[1]["index"].as_u64()),
            (Some(0), Some(1))
        );
        assert!(out["id"].is_string());
        let stop = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"created\":1,\"id\":\"x\",\"model\":\"g\",\"object\":\"chat.completion.chunk\"}\n\n");
        let out = json_of(&f.event(stop).out);
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn every_choice_gets_a_delta_and_finish_reason_is_a_string_or_null() {
        let mut f = fixer();
        let ev = Bytes::from_static(b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"},{\"index\":1,\"delta\":{},\"finish_reason\":7}]}\n\n");
        let out = json_of(&f.event(ev).out);
        assert_eq!(out["choices"][0]["delta"], json!({}));
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["choices"][1]["finish_reason"], Value::Null);
        let no_choices = Bytes::from_static(b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n");
        let out = json_of(&f.event(no_choices).out);
        assert_eq!(out["choices"], json!([]));
    }

    #[test]
    fn usage_is_made_whole_or_left_out() {
        let mut f = fixer();
        let ev = |u: &str| {
            Bytes::from(format!("data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[],\"usage\":{u}}}\n\n"))
        };
        let out = json_of(
            &f.event(ev(r#"{"prompt_tokens":4,"completion_tokens":6}"#))
                .out,
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens":4,"completion_tokens":6,"total_tokens":10})
        );
        let out = json_of(
            &f.event(ev(r#"{"prompt_tokens":4,"total_tokens":10.0}"#))
                .out,
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens":4,"completion_tokens":6,"total_tokens":10})
        );
        let out = json_of(&f.event(ev(r#""12 tokens""#)).out);
        assert!(out.get("usage").is_none(), "{out}");
        let whole = ev(r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#);
        assert_eq!(
            f.event(whole.clone()).out,
            whole,
            "a whole usage passes as is"
        );
        assert!(f.usage_sent);
    }

    #[test]
    fn reasoning_moves_to_reasoning_content_once() {
        let mut f = fixer();
        let ev = Bytes::from_static(b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"thinking\"}}]}\n\n");
        let out = json_of(&f.event(ev).out);
        assert_eq!(
            out["choices"][0]["delta"],
            json!({"reasoning_content": "thinking"})
        );
        let both = Bytes::from_static(b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"a\",\"reasoning_content\":\"a\"}}]}\n\n");
        assert_eq!(
            f.event(both.clone()).out,
            both,
            "already readable: untouched"
        );
        let body = Bytes::from_static(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"4","reasoning":"2+2"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#);
        let Completion::Ok(out, _) = completion(body) else {
            panic!("not an error");
        };
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "2+2");
        assert!(v["choices"][0]["message"].get("reasoning").is_none());
    }

    #[test]
    fn the_usage_chunk_uses_what_the_provider_reported_else_our_count() {
        let mut f = fixer();
        f.event(Bytes::from_static(b"data: {\"id\":\"g1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"));
        f.event(Bytes::from_static(b"data: {\"id\":\"g1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}}\n\n"));
        assert!(!f.usage_sent, "x_groq.usage is not read by clients");
        let v = json_of(&f.usage_chunk(100));
        assert_eq!(v["choices"], json!([]));
        assert_eq!(v["id"], "g1");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens":9,"completion_tokens":2,"total_tokens":11})
        );
        let mut f = fixer();
        for _ in 0..3 {
            f.event(Bytes::from_static(b"data: {\"id\":\"g1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"));
        }
        let v = json_of(&f.usage_chunk(20));
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens":20,"completion_tokens":3,"total_tokens":23})
        );
    }

    #[test]
    fn a_plain_stop_without_tool_calls_is_left_alone() {
        let mut f = fixer();
        let stop = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"created\":1,\"id\":\"x\",\"model\":\"g\",\"object\":\"chat.completion.chunk\"}\n\n");
        let seen = f.event(stop.clone());
        assert_eq!(seen.out, stop);
    }

    #[test]
    fn errors_comments_and_done_are_recognised() {
        let mut f = fixer();
        let seen = f.event(Bytes::from_static(b": OPENROUTER PROCESSING\n\n"));
        assert_eq!(seen.kind, Kind::Other);
        let seen = f.event(Bytes::from_static(
            b"data: {\"error\":{\"code\":502,\"message\":\"down\"}}\n\n",
        ));
        assert!(matches!(seen.kind, Kind::Error(_)));
        let seen = f.event(Bytes::from_static(b"data: [DONE]\n\n"));
        assert_eq!(seen.kind, Kind::Done);
        assert!(f.saw_done);
    }

    #[test]
    fn in_stream_errors_become_string_fields() {
        let out =
            client_error_event(br#"{"error":{"code":502,"message":"Provider disconnected"}}"#);
        let v = json_of(&out);
        assert_eq!(v["error"]["message"], "Provider disconnected");
        assert_eq!(v["error"]["type"], "502");
    }

    #[test]
    fn non_streaming_replies_get_usage_and_finish_reason() {
        let body = Bytes::from_static(br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#);
        let Completion::Ok(out, tokens) = completion(body) else {
            panic!("not an error");
        };
        assert_eq!(tokens, None);
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 0);
        let ok = Bytes::from_static(br#"{"choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#);
        let Completion::Ok(out, tokens) = completion(ok.clone()) else {
            panic!("not an error");
        };
        let split = tokens.map(|t| (t.prompt, t.completion, t.total));
        assert_eq!((out, split), (ok, Some((1, 2, 3))));
        assert!(matches!(
            completion(Bytes::from_static(
                br#"{"error":{"message":"x","code":502}}"#
            )),
            Completion::Error(_)
        ));
        // Only usage missing: spliced in, the rest kept byte for byte.
        for raw in [
            &br#"{"id":"x","choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"}]}"#[..],
            br#"{ }"#,
        ] {
            let Completion::Ok(out, _) = completion(Bytes::from_static(raw)) else {
                panic!("not an error");
            };
            let v: Value = serde_json::from_slice(&out).expect("still JSON");
            assert_eq!(v["usage"]["total_tokens"], 0, "{v}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, .. proptest::prelude::ProptestConfig::default() })]

        /// Arbitrary bytes, and arbitrary JSON-ish events, never panic the fixer, and
        /// what it sends is bounded by what came in.
        #[test]
        fn the_fixer_takes_any_event_without_panic_and_with_bounded_output(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            choices in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(r#"{"index":0}"#),
                    proptest::strategy::Just(r#"{"delta":{"reasoning":"r","tool_calls":[{"function":{"name":"f"}}]},"finish_reason":7}"#),
                    proptest::strategy::Just(r#"{"index":"x","delta":null,"finish_reason":"stop"}"#),
                    proptest::strategy::Just("[]"),
                    proptest::strategy::Just("null"),
                ],
                0..4,
            ),
            usage in proptest::prop_oneof![
                proptest::strategy::Just(""),
                proptest::strategy::Just(r#","usage":{"total_tokens":5}"#),
                proptest::strategy::Just(r#","usage":"x""#),
                proptest::strategy::Just(r#","usage":{"prompt_tokens":1.5,"completion_tokens":-2}"#),
            ],
        ) {
            let mut f = fixer();
            let seen = f.event(Bytes::from(raw.clone()));
            proptest::prop_assert!(seen.out.len() <= raw.len() * 2 + 512);
            let ev = format!("data: {{\"choices\":[{}]{usage}}}\n\n", choices.join(","));
            let seen = f.event(Bytes::from(ev.clone()));
            proptest::prop_assert!(seen.out.len() <= ev.len() * 2 + 512);
            if seen.kind == Kind::Chunk {
                let v = json_of(&seen.out);
                for c in v["choices"].as_array().into_iter().flatten() {
                    if c.is_object() {
                        proptest::prop_assert!(c["delta"].is_object(), "{v}");
                    }
                }
                if let Some(u) = v.get("usage") {
                    proptest::prop_assert!(u.is_null() || u["total_tokens"].is_u64(), "{v}");
                }
            }
        }
    }
}
