//! The Anthropic Messages API (`POST /v1/messages`, what Claude Code speaks) as a pure
//! translator over chat completions: a Messages request becomes a chat body for the
//! rotation, and the chat answer (whole or streamed) becomes a Message or its events.
//!
//! It owns the two wire formats and nothing else: no HTTP, no pool, no providers, no model
//! aliases (the handler maps the client's `claude-*` id; the body always says `"auto"`).
//! Every function here is pure, so the handler stays thin and the tests need no server.
//!
//! Shapes checked 2026-11-30 against anthropic-sdk-python (`src/anthropic/types/*`,
//! `src/anthropic/lib/streaming/_messages.py`, `src/anthropic/_streaming.py`,
//! `tests/lib/streaming/fixtures/*`) and <https://docs.claude.com/en/api/errors>.
//!
//! Not translated (refused with [`TranslateError::Unsupported`], a 400 the client can
//! read): `document` and `search_result` blocks, Files API images, server tools
//! (`web_search_*`, `bash_*`, `text_editor_*`, `computer_*`, `code_execution_*`, ...),
//! remote `mcp_servers`. Dropped without a word, because chat providers have no
//! equivalent and the answer stays correct without them: `cache_control`, `top_k`,
//! `context_management`, `container`, `service_tier`, `inference_geo`, citations, and
//! thinking blocks in the history (their signatures only mean something to Anthropic).

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Tokens counted for one image by [`count_tokens`]: Anthropic's cost of an image near
/// its 1.15-megapixel limit, so a base64 payload is not counted as text.
const IMAGE_TOKENS: u64 = 1600;

/// A thinking budget below this asks for `"low"` reasoning effort.
const MEDIUM_BUDGET: u64 = 4096;
/// A thinking budget at or above this asks for `"high"` reasoning effort.
const HIGH_BUDGET: u64 = 16384;

/// The system block Claude Code prepends to every request: billing metadata, not
/// instructions, and its `cch` changes per request, which would defeat every provider's
/// prompt cache (ggml-org/llama.cpp#20623).
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// Why a Messages request cannot be translated; the handler answers 400
/// `invalid_request_error` with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request breaks the Messages API itself (a required field missing, a bad type).
    #[error("{0}")]
    Invalid(String),
    /// A valid request using something chat-completions providers cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl TranslateError {
    /// The Anthropic error type for this error (both kinds are the client's to fix).
    pub fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(message.into())
}

fn unsupported(message: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(message.into())
}

/// A Messages request translated for the chat-completions rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The chat-completions body, with `"model": "auto"`.
    pub body: Value,
    /// Whether the client asked for a stream (the body then asks for usage in it).
    pub stream: bool,
    /// The client's model id (e.g. `claude-opus-4-8`), for the handler's alias table and
    /// to echo back in the answer.
    pub model: String,
}

/// Translates a Messages request into a chat-completions request.
///
/// `system` becomes a leading system message (Claude Code's billing-header block is
/// left out); text blocks of one message are joined with a blank line; `tool_result`
/// blocks become `role: tool` messages placed straight after the assistant message that
/// made the calls, with the rest of that user message after them (images a tool returned
/// go there too, since tool messages carry only text); `thinking` and
/// `redacted_thinking` blocks in the history are dropped; `thinking` becomes
/// `reasoning_effort` (a budget below 4096 is low, below 16384 medium, else high; adaptive
/// thinking takes `output_config.effort`, `xhigh` and `max` being high).
pub fn to_chat(req: &Value) -> Result<ChatRequest, TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("model: field required"))?;
    let max_tokens = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid("max_tokens: field required (a positive integer)"))?;
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: expected a boolean")),
    };
    if req
        .get("mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|servers| !servers.is_empty())
    {
        return Err(unsupported(
            "mcp_servers: remote MCP servers cannot be reached through chat-completions providers",
        ));
    }

    let mut messages = Vec::new();
    if let Some(system) = system_text(req.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let history = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: field required (an array)"))?;
    for (i, message) in history.iter().enumerate() {
        push_message(&mut messages, message, i)?;
    }

    let mut body = Map::new();
    body.insert("model".into(), json!("auto"));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_tokens".into(), json!(max_tokens));
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools = chat_tools(req.get("tools"))?;
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
            let (choice, parallel) = chat_tool_choice(choice)?;
            body.insert("tool_choice".into(), choice);
            if !parallel {
                body.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if let Some(stop) = stop_sequences(req.get("stop_sequences"))? {
        body.insert("stop".into(), stop);
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(n @ Value::Number(_)) => {
                body.insert(key.into(), n.clone());
            }
            Some(_) => return Err(invalid(format!("{key}: expected a number"))),
        }
    }
    if let Some(effort) = reasoning_effort(req.get("thinking"), req.get("output_config"))? {
        body.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(format) = response_format(req.get("output_config"))? {
        body.insert("response_format".into(), format);
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        body.insert("user".into(), json!(user));
    }
    Ok(ChatRequest {
        body: Value::Object(body),
        stream,
        model: model.to_owned(),
    })
}

/// The system prompt as one string: a string as is, text blocks joined with a blank line.
fn system_text(system: Option<&Value>) -> Result<Option<String>, TranslateError> {
    let texts = match system {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                if block_type(block, &path)? != "text" {
                    return Err(invalid(format!(
                        "{path}: the system prompt takes only text blocks"
                    )));
                }
                let text = text_of(block, &path)?;
                if !text.starts_with(BILLING_HEADER) {
                    texts.push(text.to_owned());
                }
            }
            texts
        }
        Some(_) => {
            return Err(invalid(
                "system: expected a string or an array of text blocks",
            ))
        }
    };
    let text = texts.join("\n\n");
    Ok((!text.is_empty()).then_some(text))
}

fn block_type<'a>(block: &'a Value, path: &str) -> Result<&'a str, TranslateError> {
    block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.type: field required")))
}

fn text_of<'a>(block: &'a Value, path: &str) -> Result<&'a str, TranslateError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.text: field required")))
}

fn required_str<'a>(block: &'a Value, path: &str, key: &str) -> Result<&'a str, TranslateError> {
    block
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.{key}: field required")))
}

/// One part of a chat user message.
enum Part {
    Text(String),
    Image(String),
}

/// A user message's content: a string when it is all text (every provider takes that),
/// else the array of text and image parts.
fn user_content(parts: Vec<Part>) -> Value {
    if parts.iter().all(|p| matches!(p, Part::Text(_))) {
        let texts: Vec<String> = parts
            .into_iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t),
                Part::Image(_) => None,
            })
            .collect();
        return json!(texts.join("\n\n"));
    }
    Value::Array(
        parts
            .into_iter()
            .map(|p| match p {
                Part::Text(text) => json!({"type": "text", "text": text}),
                Part::Image(url) => json!({"type": "image_url", "image_url": {"url": url}}),
            })
            .collect(),
    )
}

/// An image block's source as a chat `image_url`: base64 as a data URL, a URL as is.
fn image_url(block: &Value, path: &str) -> Result<String, TranslateError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid(format!("{path}.source: field required")))?;
    let source_path = format!("{path}.source");
    match block_type(source, &source_path)? {
        "base64" => {
            let media_type = required_str(source, &source_path, "media_type")?;
            let data = required_str(source, &source_path, "data")?;
            Ok(format!("data:{media_type};base64,{data}"))
        }
        "url" => Ok(required_str(source, &source_path, "url")?.to_owned()),
        other => Err(unsupported(format!(
            "{path}: images from the Files API (source `{other}`) cannot be sent to chat-completions providers"
        ))),
    }
}

fn document_refused(path: &str) -> TranslateError {
    unsupported(format!(
        "{path}: document blocks cannot be sent to chat-completions providers"
    ))
}

fn block_refused(path: &str, kind: &str) -> TranslateError {
    unsupported(format!(
        "{path}: content blocks of type `{kind}` cannot be sent to chat-completions providers"
    ))
}

fn push_message(out: &mut Vec<Value>, message: &Value, i: usize) -> Result<(), TranslateError> {
    let path = format!("messages.{i}");
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.role: field required")))?;
    if role == "system" {
        // A system message inside the conversation (Claude Code's
        // mid-conversation-system beta, on by default for its newest models): many
        // chat providers take a system message only first, so it rides as a user-side
        // reminder in place, the way Claude Code itself falls back.
        let text = match message.get("content") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n\n"),
            _ => {
                return Err(invalid(format!(
                    "{path}.content: expected a string or an array of text blocks"
                )))
            }
        };
        out.push(json!({"role": "user", "content": format!("<system-reminder>\n{text}\n</system-reminder>")}));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(invalid(format!(
            "{path}.role: expected `user`, `assistant` or `system`, got `{role}`"
        )));
    }
    match message.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            Ok(())
        }
        Some(Value::Array(blocks)) if role == "user" => push_user(out, blocks, &path),
        Some(Value::Array(blocks)) => push_assistant(out, blocks, &path),
        _ => Err(invalid(format!(
            "{path}.content: expected a string or an array of content blocks"
        ))),
    }
}

/// A user message: its tool results first (as tool messages), then the rest.
fn push_user(out: &mut Vec<Value>, blocks: &[Value], path: &str) -> Result<(), TranslateError> {
    let mut tool_messages = Vec::new();
    // Images returned by tools: a tool message carries only text, so they ride in the
    // user message that follows, ahead of the user's own content.
    let mut tool_images = Vec::new();
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.content.{j}");
        match block_type(block, &path)? {
            "text" => parts.push(Part::Text(text_of(block, &path)?.to_owned())),
            "image" => parts.push(Part::Image(image_url(block, &path)?)),
            "tool_result" => tool_messages.push(tool_message(block, &path, &mut tool_images)?),
            "document" => return Err(document_refused(&path)),
            kind @ ("tool_use" | "thinking" | "redacted_thinking") => {
                return Err(invalid(format!(
                    "{path}: `{kind}` blocks belong in assistant messages"
                )))
            }
            other => return Err(block_refused(&path, other)),
        }
    }
    let only_tool_results = parts.is_empty() && tool_images.is_empty() && !tool_messages.is_empty();
    out.extend(tool_messages);
    if !only_tool_results {
        let mut content: Vec<Part> = tool_images.into_iter().map(Part::Image).collect();
        content.extend(parts);
        out.push(json!({"role": "user", "content": user_content(content)}));
    }
    Ok(())
}

/// A `tool_result` block as a chat tool message; `is_error` prefixes "Error: ".
fn tool_message(
    block: &Value,
    path: &str,
    images: &mut Vec<String>,
) -> Result<Value, TranslateError> {
    let id = required_str(block, path, "tool_use_id")?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let path = format!("{path}.content.{k}");
                match block_type(item, &path)? {
                    "text" => texts.push(text_of(item, &path)?.to_owned()),
                    "image" => {
                        images.push(image_url(item, &path)?);
                        texts.push(
                            "[the image this tool returned follows in the next user message]"
                                .to_owned(),
                        );
                    }
                    "document" => return Err(document_refused(&path)),
                    other => return Err(block_refused(&path, other)),
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(invalid(format!(
                "{path}.content: expected a string or an array of content blocks"
            )))
        }
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// An assistant message: its text and its tool calls; thinking blocks are dropped (their
/// signatures mean nothing to another provider, and chat has no field to carry them).
fn push_assistant(
    out: &mut Vec<Value>,
    blocks: &[Value],
    path: &str,
) -> Result<(), TranslateError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.content.{j}");
        match block_type(block, &path)? {
            "text" => texts.push(text_of(block, &path)?.to_owned()),
            "tool_use" => {
                let id = required_str(block, &path, "id")?;
                let name = required_str(block, &path, "name")?;
                let arguments = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input) => input.to_string(),
                };
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            "thinking" | "redacted_thinking" => {}
            "document" => return Err(document_refused(&path)),
            kind @ ("tool_result" | "image") => {
                return Err(invalid(format!(
                    "{path}: `{kind}` blocks belong in user messages"
                )))
            }
            other => return Err(block_refused(&path, other)),
        }
    }
    if texts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let content = if texts.is_empty() {
        Value::Null
    } else {
        json!(texts.join("\n\n"))
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    out.push(message);
    Ok(())
}

/// Client tools as chat function tools; any typed (server) tool is refused.
fn chat_tools(tools: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools: expected an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        let path = format!("tools.{k}");
        match tool.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(kind) => {
                return Err(unsupported(format!(
                    "{path}: the server tool `{kind}` cannot run on chat-completions providers"
                )))
            }
        }
        let name = required_str(tool, &path, "name")?;
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .ok_or_else(|| invalid(format!("{path}.input_schema: field required")))?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(description));
        }
        function.insert("parameters".into(), schema.clone());
        if let Some(strict) = tool.get("strict").and_then(Value::as_bool) {
            function.insert("strict".into(), json!(strict));
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` as chat's, and whether parallel tool calls stay allowed.
fn chat_tool_choice(choice: &Value) -> Result<(Value, bool), TranslateError> {
    let kind = block_type(choice, "tool_choice")?;
    let chat = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = required_str(choice, "tool_choice", "name")?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(invalid(format!(
                "tool_choice.type: expected `auto`, `any`, `tool` or `none`, got `{other}`"
            )))
        }
    };
    let parallel = kind == "none"
        || choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            != Some(true);
    Ok((chat, parallel))
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let list = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("stop_sequences: expected an array of strings")),
    };
    if !list.iter().all(Value::is_string) {
        return Err(invalid("stop_sequences: expected an array of strings"));
    }
    Ok((!list.is_empty()).then(|| Value::Array(list.clone())))
}

/// The chat `reasoning_effort` for `thinking` (and `output_config.effort` with adaptive
/// thinking); `None` leaves the provider's default.
fn reasoning_effort(
    thinking: Option<&Value>,
    output_config: Option<&Value>,
) -> Result<Option<&'static str>, TranslateError> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    match block_type(thinking, "thinking")? {
        "disabled" => Ok(None),
        "enabled" => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid("thinking.budget_tokens: field required"))?;
            Ok(Some(match budget {
                b if b < MEDIUM_BUDGET => "low",
                b if b < HIGH_BUDGET => "medium",
                _ => "high",
            }))
        }
        "adaptive" => {
            let effort = output_config
                .and_then(|c| c.get("effort"))
                .filter(|e| !e.is_null());
            match effort.map(|e| e.as_str()) {
                None => Ok(None),
                Some(Some("low")) => Ok(Some("low")),
                Some(Some("medium")) => Ok(Some("medium")),
                Some(Some("high" | "xhigh" | "max")) => Ok(Some("high")),
                Some(_) => Err(invalid(
                    "output_config.effort: expected `low`, `medium`, `high`, `xhigh` or `max`",
                )),
            }
        }
        other => Err(invalid(format!(
            "thinking.type: expected `enabled`, `adaptive` or `disabled`, got `{other}`"
        ))),
    }
}

/// `output_config.format` (structured output) as a chat `response_format`.
fn response_format(output_config: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let Some(format) = output_config
        .and_then(|c| c.get("format"))
        .filter(|f| !f.is_null())
    else {
        return Ok(None);
    };
    match block_type(format, "output_config.format")? {
        "json_schema" => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("output_config.format.schema: field required"))?;
            Ok(Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            })))
        }
        other => Err(invalid(format!(
            "output_config.format.type: expected `json_schema`, got `{other}`"
        ))),
    }
}

/// Token counts in Anthropic's terms, from a chat `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tokens {
    /// Prompt tokens not read from a cache (Anthropic counts cache reads apart).
    input: u64,
    output: u64,
    cache_read: u64,
}

impl Tokens {
    /// Reads `prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`
    /// (also under Groq's `x_groq.usage`). When `total_tokens` is larger than prompt plus
    /// completion (xAI leaves reasoning tokens out of `completion_tokens`), the output is
    /// the total minus the prompt.
    fn from_chat(usage: &Value) -> Option<Tokens> {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        let prompt = count("prompt_tokens");
        let completion = count("completion_tokens");
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let mut output = completion.unwrap_or(0);
        if let Some(total) = count("total_tokens") {
            output = output.max(total.saturating_sub(prompt));
        }
        let cache_read = usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(prompt);
        Some(Tokens {
            input: prompt - cache_read,
            output,
            cache_read,
        })
    }

    fn usage(self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

/// The usage object of a chat chunk or answer, if it has one.
fn chat_usage(chat: &Value) -> Option<&Value> {
    chat.get("usage")
        .filter(|u| u.is_object())
        .or_else(|| chat.pointer("/x_groq/usage").filter(|u| u.is_object()))
}

/// Anthropic's `stop_reason` for a chat `finish_reason`. Chat does not say which stop
/// sequence matched, so `"stop_sequence"` is never reported (a stop is `"end_turn"`).
fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// The reasoning text of a chat message or delta: `reasoning_content`, else `reasoning`
/// (Groq, OpenRouter, Ollama), if it is a non-empty string.
fn reasoning_text(message: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|key| message.get(*key).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// A tool call's arguments as the `input` object. Arguments that are not a JSON object
/// become `{}`: the SDK types `input` as an object, and an empty one fails the tool's
/// own schema check on the client (which the model then sees), where inventing a key to
/// carry the raw text could be accepted by a permissive tool and run with garbage.
fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(raw)) => match serde_json::from_str::<Value>(raw) {
            Ok(object @ Value::Object(_)) => object,
            _ => json!({}),
        },
        Some(object @ Value::Object(_)) => object.clone(),
        _ => json!({}),
    }
}

/// A tool-use id for a call the provider sent without one.
fn made_up_tool_id(message_id: &str, n: usize) -> String {
    format!("toolu_{}_{n}", message_id.trim_start_matches("msg_"))
}

/// Translates a whole chat-completions answer into an Anthropic Message.
///
/// `model` is the client's model id and `id` the message id (`msg_...`) to report.
/// Content comes in the order thinking (from `reasoning_content`; its `signature` is
/// empty, as no provider signs it), text (or the `refusal`), tool uses. Tool arguments
/// that are not a JSON object become `input: {}` (see [`tool_input`] for why).
pub fn from_chat(chat: &Value, model: &str, id: &str) -> Value {
    let choice = chat.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(thinking) = message.and_then(reasoning_text) {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    let text = message.and_then(|m| match m.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        _ => None,
    });
    let refusal = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (text.filter(|t| !t.is_empty()), refusal) {
        (Some(text), _) => content.push(json!({"type": "text", "text": text})),
        (None, Some(refusal)) => content.push(json!({"type": "text", "text": refusal})),
        (None, None) => {}
    }
    let calls = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (n, call) in calls.iter().enumerate() {
        let tool_id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| made_up_tool_id(id, n), str::to_owned);
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let input = tool_input(function.and_then(|f| f.get("arguments")));
        content.push(json!({"type": "tool_use", "id": tool_id, "name": name, "input": input}));
    }
    let finish_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let stop = if refusal.is_some() && finish_reason == Some("stop") && calls.is_empty() {
        "refusal"
    } else {
        stop_reason(finish_reason, !calls.is_empty())
    };
    let tokens = chat_usage(chat)
        .and_then(Tokens::from_chat)
        .unwrap_or_default();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": tokens.usage(),
    })
}

/// One SSE event as Anthropic sends it: named after its `type`.
fn event(data: &Value) -> Bytes {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("error");
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The kind of content block open in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool use, by the chat tool call's `index`.
    Tool(u64),
}

/// Translates a chat-completions stream into Messages stream events, chunk by chunk.
///
/// Blocks follow the chat deltas in order: reasoning opens a `thinking` block, text a
/// `text` block, each tool call (by its `index`) a `tool_use` block; a block is stopped
/// when a delta of another kind (or another tool call) arrives. A thinking block ends
/// with an empty `signature_delta` (the SDK types `signature` as a string, and no provider
/// signs its reasoning). Arguments that arrive for a tool call whose block was already
/// stopped (interleaved parallel calls) are still sent, to that block's index, where the
/// SDK's accumulator (which goes by index) puts them.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    started: bool,
    done: bool,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    next_index: usize,
    /// Tool calls seen: chat `index` -> block index.
    tools: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    usage: Option<Tokens>,
}

impl StreamTranslator {
    /// A translator for one answer; `id` is the message id (`msg_...`), `model` the
    /// client's model id.
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> StreamTranslator {
        StreamTranslator {
            id: id.into(),
            model: model.into(),
            started: false,
            done: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// `message_start`: the Message with no content and zero usage (the input tokens
    /// come with `message_delta`, once the provider has said). Sent once; later calls
    /// return nothing, and [`chunk`](Self::chunk) and [`finish`](Self::finish) send it
    /// themselves if it was not.
    pub fn start(&mut self) -> Vec<Bytes> {
        if self.started || self.done {
            return Vec::new();
        }
        self.started = true;
        vec![event(&json!({
            "type": "message_start",
            "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        }))]
    }

    /// A `ping` event, to keep the connection busy while waiting.
    pub fn ping(&mut self) -> Bytes {
        event(&json!({"type": "ping"}))
    }

    /// The events for one parsed chat chunk. A chunk's `finish_reason` and `usage` are
    /// remembered for [`finish`](Self::finish); a chunk carrying an `error` object ends
    /// the stream as [`fail`](Self::fail) does.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider failed mid-stream");
            return self.fail("api_error", message);
        }
        let mut out = self.start();
        if let Some(tokens) = chat_usage(chunk).and_then(Tokens::from_chat) {
            self.usage = Some(tokens);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return out;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return out;
        };
        if let Some(thinking) = reasoning_text(delta) {
            let index = self.open_block(Open::Thinking, &mut out);
            out.push(event(&json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "thinking_delta", "thinking": thinking},
            })));
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let index = self.open_block(Open::Text, &mut out);
            out.push(event(&json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": text},
            })));
        }
        let calls = delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for call in calls {
            self.tool_call(call, &mut out);
        }
        out
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let function = call.get("function");
        let chat_index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Gemini leaves `index` out: a delta with an id or a name starts a new call,
            // any other continues the last one.
            None => {
                let nonempty =
                    |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                let starts =
                    nonempty(call.get("id")) || nonempty(function.and_then(|f| f.get("name")));
                match self.tools.last() {
                    Some(&(last, _)) if !starts => last,
                    _ => self.tools.iter().map(|(i, _)| i + 1).max().unwrap_or(0),
                }
            }
        };
        let known = self
            .tools
            .iter()
            .find(|(i, _)| *i == chat_index)
            .map(|(_, block)| *block);
        let index = match known {
            Some(block) => block,
            None => {
                self.close(out);
                let index = self.next_index;
                self.next_index += 1;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| made_up_tool_id(&self.id, index), str::to_owned);
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.push(event(&json!({
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                })));
                self.tools.push((chat_index, index));
                self.open = Some((Open::Tool(chat_index), index));
                index
            }
        };
        if let Some(arguments) = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            out.push(event(&json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            })));
        }
    }

    /// The index of an open block of `kind`, opening one (and stopping the open one of
    /// another kind) if needed.
    fn open_block(&mut self, kind: Open, out: &mut Vec<Bytes>) -> usize {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            // Tool-use blocks are opened by `tool_call`, which knows their id and name.
            Open::Text | Open::Tool(_) => json!({"type": "text", "text": ""}),
        };
        out.push(event(&json!({
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        })));
        self.open = Some((kind, index));
        index
    }

    /// Stops the open block, if any.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some((kind, index)) = self.open.take() else {
            return;
        };
        if kind == Open::Thinking {
            out.push(event(&json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "signature_delta", "signature": ""},
            })));
        }
        out.push(event(
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }

    /// Ends the message: stops the open block, then `message_delta` (stop reason and
    /// cumulative usage, input tokens included) and `message_stop`. `finish_reason` and
    /// `usage` (a chat `usage` object) override what the chunks said; with neither, the
    /// stop reason is `end_turn` (`tool_use` if tools were called) and usage is zero.
    /// Later calls return nothing.
    pub fn finish(&mut self, finish_reason: Option<&str>, usage: Option<&Value>) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let mut out = self.start();
        self.close(&mut out);
        self.done = true;
        let reason = finish_reason.or(self.finish_reason.as_deref());
        let tokens = usage
            .and_then(Tokens::from_chat)
            .or(self.usage)
            .unwrap_or_default();
        out.push(event(&json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(reason, !self.tools.is_empty()),
                "stop_sequence": null,
            },
            "usage": {
                "input_tokens": tokens.input,
                "output_tokens": tokens.output,
                "cache_read_input_tokens": tokens.cache_read,
            },
        })));
        out.push(event(&json!({"type": "message_stop"})));
        out
    }

    /// Ends the stream with an `error` event (`{"type":"error","error":{type,message}}`),
    /// which the SDK raises as an error; nothing is sent after it.
    pub fn fail(&mut self, error_type: &str, message: &str) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        self.open = None;
        vec![event(&error_body(error_type, message))]
    }
}

/// An Anthropic error body: `{"type":"error","error":{"type","message"}}`.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// The Anthropic error type for an HTTP status, after
/// <https://docs.claude.com/en/api/errors> (checked 2026-11-30) and the SDK's `ErrorType`
/// (`src/anthropic/types/shared/error_type.py`). The table names no type for 502-504:
/// 503 (every provider cooling down) is `overloaded_error`, "temporarily overloaded",
/// 504 the SDK's `timeout_error`, 502 `api_error`.
pub fn error_type_for(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An estimate of a request's input tokens for `POST /v1/messages/count_tokens`: a
/// quarter token per character of the text, keys and values in `system`, `messages` and
/// `tools`, plus a flat 1600 per image or base64 source. No provider's tokenizer is
/// consulted; clients use the number to decide when to compact, where a rough answer
/// does. The caller answers `{"input_tokens": N}`.
pub fn count_tokens(req: &Value) -> Result<u64, TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    let messages = req
        .get("messages")
        .filter(|m| m.is_array())
        .ok_or_else(|| invalid("messages: field required (an array)"))?;
    let mut measure = Measure::default();
    measure.add(messages);
    for key in ["system", "tools"] {
        if let Some(part) = req.get(key) {
            measure.add(part);
        }
    }
    Ok(measure.chars.div_ceil(4) + measure.images * IMAGE_TOKENS)
}

#[derive(Default)]
struct Measure {
    chars: u64,
    images: u64,
}

impl Measure {
    fn add(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Bool(_) | Value::Number(_) => self.chars += value.to_string().len() as u64,
            Value::String(s) => self.chars += s.chars().count() as u64,
            Value::Array(items) => items.iter().for_each(|v| self.add(v)),
            Value::Object(map) => {
                if matches!(
                    map.get("type").and_then(Value::as_str),
                    Some("image" | "base64")
                ) {
                    self.images += 1;
                    return;
                }
                for (key, v) in map {
                    self.chars += key.chars().count() as u64;
                    self.add(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_system_message_inside_the_conversation_becomes_a_reminder_in_place() {
        let req = serde_json::json!({"model": "claude-opus-4-8", "max_tokens": 8, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Available agent types: general"},
            {"role": "user", "content": [{"type": "text", "text": "go"}]}
        ]});
        let chat = to_chat(&req).expect("translates");
        let msgs = chat.body["messages"].as_array().expect("messages");
        let roles: Vec<&str> = msgs.iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, ["user", "user", "user"], "{msgs:?}");
        let reminder = msgs[1]["content"].as_str().expect("text");
        assert!(
            reminder.contains("<system-reminder>") && reminder.contains("Available agent types")
        );
    }

    use super::*;

    const OPUS_REQUEST: &str =
        include_str!("../../tests/fixtures/frontends/messages/claude-code-opus-4-8.json");
    const BUDGET_REQUEST: &str =
        include_str!("../../tests/fixtures/frontends/messages/sdk-budget-thinking.json");
    const REFUSED: &str = include_str!("../../tests/fixtures/frontends/messages/refused.json");
    const REPLY: &str =
        include_str!("../../tests/fixtures/frontends/messages/reply-reasoning-text-tools.json");
    const STREAM: &str =
        include_str!("../../tests/fixtures/frontends/messages/stream-reasoning-text-tools.sse");
    const STREAM_EXPECT: &str = include_str!(
        "../../tests/fixtures/frontends/messages/stream-reasoning-text-tools.expect.json"
    );

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn request(extra: Value) -> Value {
        let mut req = json!({
            "model": "claude-opus-4-8",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "hi"}],
        });
        if let (Some(req), Some(extra)) = (req.as_object_mut(), extra.as_object()) {
            req.extend(extra.clone());
        }
        req
    }

    fn chat_body(extra: Value) -> Value {
        to_chat(&request(extra)).expect("translates").body
    }

    /// The chat chunks of an `.sse` transcript (comments and `[DONE]` left out).
    fn chat_chunks(sse: &str) -> Vec<Value> {
        sse.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).expect("chunk is JSON"))
            .collect()
    }

    /// Parses emitted events back into (SSE event name, data).
    fn parse_events(events: &[Bytes]) -> Vec<(String, Value)> {
        events
            .iter()
            .map(|bytes| {
                let text = std::str::from_utf8(bytes).expect("utf-8");
                assert!(
                    text.ends_with("\n\n"),
                    "event ends with a blank line: {text:?}"
                );
                let mut lines = text.trim_end().lines();
                let name = lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .expect("event line");
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .expect("data line");
                assert!(lines.next().is_none(), "one data line: {text:?}");
                (
                    name.to_owned(),
                    serde_json::from_str(data).expect("data is JSON"),
                )
            })
            .collect()
    }

    /// "type index block-or-delta-type", the way the expect file lists events.
    fn summary((name, data): &(String, Value)) -> String {
        let index = data
            .get("index")
            .map(|i| format!(" {i}"))
            .unwrap_or_default();
        let kind = data
            .pointer("/content_block/type")
            .or_else(|| data.pointer("/delta/type"))
            .and_then(Value::as_str)
            .map(|k| format!(" {k}"))
            .unwrap_or_default();
        if name == "message_delta" {
            return name.clone();
        }
        format!("{name}{index}{kind}")
    }

    /// Builds the final Message from events as anthropic-sdk-python's
    /// `lib/streaming/_messages.py::accumulate_event` does, checking on the way what it
    /// relies on: `message_start` first, deltas by index into a block of the right type.
    fn accumulate(events: &[(String, Value)]) -> Value {
        let mut message: Option<Value> = None;
        let mut json_buffers: Vec<String> = Vec::new();
        for (name, data) in events {
            assert_eq!(
                Some(name.as_str()),
                data["type"].as_str(),
                "event named after its type"
            );
            if name == "ping" {
                continue;
            }
            if name == "message_start" {
                assert!(message.is_none(), "one message_start");
                message = Some(data["message"].clone());
                continue;
            }
            let message = message.as_mut().expect("message_start comes first");
            match name.as_str() {
                "content_block_start" => {
                    let content = message["content"].as_array_mut().expect("content");
                    assert_eq!(data["index"], json!(content.len()), "blocks start in order");
                    content.push(data["content_block"].clone());
                    json_buffers.push(String::new());
                }
                "content_block_delta" => {
                    let index = data["index"].as_u64().expect("index") as usize;
                    let block = &mut message["content"][index];
                    let delta = &data["delta"];
                    match delta["type"].as_str().expect("delta type") {
                        "text_delta" => {
                            assert_eq!(block["type"], "text");
                            let text = format!(
                                "{}{}",
                                block["text"].as_str().expect("text"),
                                delta["text"].as_str().expect("text")
                            );
                            block["text"] = json!(text);
                        }
                        "thinking_delta" => {
                            assert_eq!(block["type"], "thinking");
                            let text = format!(
                                "{}{}",
                                block["thinking"].as_str().expect("thinking"),
                                delta["thinking"].as_str().expect("thinking")
                            );
                            block["thinking"] = json!(text);
                        }
                        "signature_delta" => {
                            assert_eq!(block["type"], "thinking");
                            assert!(
                                delta["signature"].is_string(),
                                "the SDK types signature as str"
                            );
                            block["signature"] = delta["signature"].clone();
                        }
                        "input_json_delta" => {
                            assert_eq!(block["type"], "tool_use");
                            json_buffers[index]
                                .push_str(delta["partial_json"].as_str().expect("partial_json"));
                            block["input"] =
                                serde_json::from_str(&json_buffers[index]).unwrap_or(Value::Null);
                        }
                        other => panic!("unknown delta {other}"),
                    }
                }
                "content_block_stop" => {
                    let index = data["index"].as_u64().expect("index") as usize;
                    assert!(index < message["content"].as_array().expect("content").len());
                }
                "message_delta" => {
                    message["stop_reason"] = data["delta"]["stop_reason"].clone();
                    message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                    let usage = &data["usage"];
                    assert!(usage["output_tokens"].is_u64(), "output_tokens is required");
                    for key in [
                        "output_tokens",
                        "input_tokens",
                        "cache_creation_input_tokens",
                        "cache_read_input_tokens",
                    ] {
                        if !usage[key].is_null() {
                            message["usage"][key] = usage[key].clone();
                        }
                    }
                }
                "message_stop" => {}
                other => panic!("unexpected event {other}"),
            }
        }
        message.expect("a message")
    }

    /// Every block started is stopped once, in order, before the message ends; the
    /// stream ends with `message_stop` (or an `error`).
    fn assert_well_formed(events: &[(String, Value)]) {
        let mut open: Option<u64> = None;
        let mut stopped = 0;
        let Some((first, _)) = events.first() else {
            panic!("no events");
        };
        let last = events.last().map(|(n, _)| n.as_str());
        if first == "error" {
            assert_eq!(events.len(), 1);
            return;
        }
        assert_eq!(first, "message_start");
        for (name, data) in events {
            match name.as_str() {
                "content_block_start" => {
                    assert_eq!(open, None, "a block starts only after the last one stopped");
                    assert_eq!(data["index"], json!(stopped));
                    open = data["index"].as_u64();
                }
                "content_block_stop" => {
                    assert_eq!(data["index"].as_u64(), open, "the open block stops");
                    open = None;
                    stopped += 1;
                }
                // An error may cut a block short, as Anthropic's own mid-stream errors do.
                "message_delta" | "message_stop" => {
                    assert_eq!(open, None, "no block left open at the end")
                }
                _ => {}
            }
        }
        assert!(
            matches!(last, Some("message_stop" | "error")),
            "ends: {last:?}"
        );
    }

    fn translate_stream(sse: &str) -> Vec<(String, Value)> {
        let mut translator = StreamTranslator::new("msg_01Test", "claude-opus-4-8");
        let mut events = translator.start();
        for chunk in chat_chunks(sse) {
            events.extend(translator.chunk(&chunk));
        }
        events.extend(translator.finish(None, None));
        parse_events(&events)
    }

    #[test]
    fn a_claude_code_request_becomes_the_recorded_chat_body() {
        let case = fixture(OPUS_REQUEST);
        let chat = to_chat(&case["request"]).expect("translates");
        assert_eq!(chat.body, case["expect"]);
        assert!(chat.stream);
        assert_eq!(chat.model, "claude-opus-4-8");
    }

    #[test]
    fn an_sdk_request_with_a_thinking_budget_becomes_the_recorded_chat_body() {
        let case = fixture(BUDGET_REQUEST);
        let chat = to_chat(&case["request"]).expect("translates");
        assert_eq!(chat.body, case["expect"]);
        assert!(!chat.stream);
        assert_eq!(chat.model, "claude-sonnet-4-5-20250929");
    }

    #[test]
    fn a_thinking_budget_picks_low_medium_or_high_effort() {
        for (budget, effort) in [
            (1024, "low"),
            (4095, "low"),
            (4096, "medium"),
            (16383, "medium"),
            (16384, "high"),
            (31999, "high"),
        ] {
            let body = chat_body(json!({"thinking": {"type": "enabled", "budget_tokens": budget}}));
            assert_eq!(body["reasoning_effort"], effort, "budget {budget}");
        }
    }

    #[test]
    fn adaptive_thinking_takes_its_effort_from_output_config() {
        for (effort, chat) in [
            ("low", "low"),
            ("medium", "medium"),
            ("high", "high"),
            ("xhigh", "high"),
            ("max", "high"),
        ] {
            let body = chat_body(
                json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": effort}}),
            );
            assert_eq!(body["reasoning_effort"], chat, "effort {effort}");
        }
        let body = chat_body(json!({"thinking": {"type": "adaptive"}}));
        assert!(body.get("reasoning_effort").is_none(), "{body}");
    }

    #[test]
    fn disabled_or_absent_thinking_sends_no_reasoning_effort() {
        let body = chat_body(
            json!({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}),
        );
        assert!(body.get("reasoning_effort").is_none(), "{body}");
        let body = chat_body(json!({"output_config": {"effort": "low"}}));
        assert!(body.get("reasoning_effort").is_none(), "{body}");
    }

    #[test]
    fn a_plain_request_keeps_only_what_chat_understands() {
        let body = chat_body(
            json!({"top_k": 5, "cache_control": {"type": "ephemeral"}, "context_management": {"edits": []}, "service_tier": "auto"}),
        );
        assert_eq!(
            body,
            json!({"model": "auto", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn tool_results_follow_the_calls_and_the_users_text_comes_after_them() {
        let body = chat_body(json!({"messages": [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "Read", "input": {"file_path": "a"}},
                {"type": "tool_use", "id": "toolu_b", "name": "Read", "input": {"file_path": "b"}}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "thanks"},
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "A"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "B"}
            ]}
        ]}));
        let roles: Vec<_> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["role"].clone())
            .collect();
        assert_eq!(
            roles,
            [
                json!("assistant"),
                json!("tool"),
                json!("tool"),
                json!("user")
            ]
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "tool", "tool_call_id": "toolu_a", "content": "A"})
        );
        assert_eq!(body["messages"][2]["tool_call_id"], "toolu_b");
        assert_eq!(
            body["messages"][3],
            json!({"role": "user", "content": "thanks"})
        );
    }

    #[test]
    fn a_failed_tool_result_is_prefixed_and_its_blocks_are_joined() {
        let body = chat_body(json!({"messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true, "content": [
                {"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}
            ]}]}
        ]}));
        assert_eq!(body["messages"][1]["content"], "Error: line one\nline two");
        assert_eq!(
            body["messages"].as_array().map(Vec::len),
            Some(2),
            "no empty user message"
        );
        assert_eq!(
            body["messages"][0]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }

    #[test]
    fn an_image_a_tool_returned_moves_to_the_next_user_message() {
        let body = chat_body(json!({"messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {"file_path": "s.png"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}]}
        ]}));
        assert_eq!(body["messages"][1]["role"], "tool");
        assert!(body["messages"][1]["content"]
            .as_str()
            .expect("text")
            .contains("next user message"));
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]})
        );
    }

    #[test]
    fn an_assistant_turn_of_only_thinking_is_left_out() {
        let body = chat_body(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}]},
            {"role": "user", "content": "well?"}
        ]}));
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "user", "content": "well?"}])
        );
    }

    #[test]
    fn tool_choice_becomes_chats_tool_choice() {
        let tools = json!([{"name": "Read", "input_schema": {"type": "object"}}]);
        for (choice, chat) in [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "Read"}),
                json!({"type": "function", "function": {"name": "Read"}}),
            ),
        ] {
            let body = chat_body(json!({"tools": tools, "tool_choice": choice}));
            assert_eq!(body["tool_choice"], chat, "{choice}");
            assert!(body.get("parallel_tool_calls").is_none());
        }
        let body = chat_body(
            json!({"tools": tools, "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
        );
        assert_eq!(body["parallel_tool_calls"], false);
        let body = chat_body(json!({"tool_choice": {"type": "any"}}));
        assert!(
            body.get("tool_choice").is_none(),
            "no tool_choice without tools: {body}"
        );
    }

    #[test]
    fn structured_output_becomes_a_json_schema_response_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let body = chat_body(
            json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
        );
        assert_eq!(
            body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
        );
    }

    #[test]
    fn refused_requests_name_the_block_or_tool_at_fault() {
        let cases = fixture(REFUSED);
        for case in cases["cases"].as_array().expect("cases") {
            let name = case["name"].as_str().expect("name");
            let error = to_chat(&case["request"]).expect_err(name);
            let expected = case["message"].as_str().expect("message");
            match case["kind"].as_str() {
                Some("unsupported") => assert_eq!(
                    error,
                    TranslateError::Unsupported(expected.into()),
                    "{name}"
                ),
                Some("invalid") => assert!(
                    matches!(&error, TranslateError::Invalid(m) if m.starts_with(expected)),
                    "{name}: {error}"
                ),
                other => panic!("{name}: unknown kind {other:?}"),
            }
            assert_eq!(error.error_type(), "invalid_request_error");
        }
    }

    #[test]
    fn remote_mcp_servers_are_refused() {
        let error = to_chat(&request(
            json!({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]}),
        ));
        assert!(
            matches!(error, Err(TranslateError::Unsupported(m)) if m.starts_with("mcp_servers:"))
        );
    }

    #[test]
    fn a_chat_reply_becomes_the_recorded_message() {
        let case = fixture(REPLY);
        let message = from_chat(
            &case["chat"],
            "claude-opus-4-8",
            "msg_01XFDUDYJgAACzvnptvVoYEL",
        );
        assert_eq!(message, case["expect"]);
    }

    #[test]
    fn a_plain_chat_reply_has_every_field_the_sdk_requires() {
        let chat = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}]});
        let message = from_chat(&chat, "claude-haiku-4-5", "msg_1");
        assert_eq!(
            message,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "max_tokens", "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            })
        );
    }

    #[test]
    fn tool_arguments_that_are_not_a_json_object_become_an_empty_input() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls"}},
            {"id": "call_2", "type": "function", "function": {"name": "Bash", "arguments": "[1]"}},
            {"id": "call_3", "type": "function", "function": {"name": "Bash", "arguments": ""}}
        ]}}]});
        let message = from_chat(&chat, "claude-opus-4-8", "msg_abc");
        let content = message["content"].as_array().expect("content");
        assert_eq!(content.len(), 3);
        for block in content {
            assert_eq!(block["input"], json!({}), "{block}");
        }
        assert_eq!(content[0]["id"], "toolu_abc_0", "a missing id is made up");
        assert_eq!(
            message["stop_reason"], "tool_use",
            "tools called even if the provider says stop"
        );
    }

    #[test]
    fn a_refusal_becomes_text_with_a_refusal_stop() {
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
        let message = from_chat(&chat, "claude-opus-4-8", "msg_1");
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(message["stop_reason"], "refusal");
    }

    #[test]
    fn a_chat_stream_becomes_the_recorded_message_events() {
        let expect = fixture(STREAM_EXPECT);
        let events = translate_stream(STREAM);
        let summaries: Vec<String> = events.iter().map(summary).collect();
        let expected: Vec<String> =
            serde_json::from_value(expect["events"].clone()).expect("events");
        assert_eq!(summaries, expected);
        assert_well_formed(&events);
        let mut message = accumulate(&events);
        assert_eq!(message["id"], "msg_01Test");
        message.as_object_mut().map(|m| m.remove("id"));
        assert_eq!(message, expect["message"]);
    }

    #[test]
    fn the_stream_and_the_whole_reply_give_the_same_message() {
        let mut streamed = accumulate(&translate_stream(STREAM));
        let mut whole = from_chat(&fixture(REPLY)["chat"], "claude-opus-4-8", "msg_01Test");
        for message in [&mut streamed, &mut whole] {
            message.as_object_mut().map(|m| m.remove("id"));
        }
        assert_eq!(streamed, whole);
    }

    #[test]
    fn message_start_has_an_empty_message_and_zero_usage() {
        let mut translator = StreamTranslator::new("msg_1", "claude-opus-4-8");
        let events = parse_events(&translator.start());
        assert_eq!(
            events,
            [(
                "message_start".to_owned(),
                json!({"type": "message_start", "message": {
                    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
                }})
            )]
        );
        assert!(translator.start().is_empty(), "sent once");
    }

    #[test]
    fn every_recorded_provider_stream_becomes_a_well_formed_message_stream() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
        let mut seen = 0;
        for provider in std::fs::read_dir(&dir).expect("providers dir") {
            let provider = provider.expect("entry").path();
            let Ok(files) = std::fs::read_dir(&provider) else {
                continue;
            };
            for file in files {
                let path = file.expect("entry").path();
                if path.extension().and_then(|e| e.to_str()) != Some("sse") {
                    continue;
                }
                let sse = std::fs::read_to_string(&path).expect("read");
                let events = translate_stream(&sse);
                assert_well_formed(&events);
                if events.last().map(|(n, _)| n.as_str()) == Some("message_stop") {
                    let message = accumulate(&events);
                    for block in message["content"].as_array().expect("content") {
                        if block["type"] == "tool_use" {
                            assert!(block["input"].is_object(), "{}: {block}", path.display());
                        }
                    }
                }
                seen += 1;
            }
        }
        assert!(seen >= 10, "read the provider transcripts ({seen})");
    }

    #[test]
    fn finish_uses_the_usage_and_finish_reason_the_chunks_carried() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        translator.start();
        translator.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "length"}]}));
        translator.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}));
        let events = parse_events(&translator.finish(None, None));
        let delta = &events[events.len() - 2];
        assert_eq!(
            delta.1,
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                   "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0}})
        );
        assert!(
            translator.finish(Some("stop"), None).is_empty(),
            "a second finish sends nothing"
        );
    }

    #[test]
    fn finish_arguments_override_what_the_chunks_said() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        let mut events = translator
            .chunk(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}));
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 40});
        events.extend(translator.finish(Some("stop"), Some(&usage)));
        let events = parse_events(&events);
        let names: Vec<_> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["message_start", "message_delta", "message_stop"],
            "the first chunk sends message_start if the handler did not"
        );
        assert_eq!(events[1].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            events[1].1["usage"]["output_tokens"], 30,
            "reasoning left out of completion_tokens (xAI) is counted"
        );
    }

    #[test]
    fn tool_calls_without_an_index_are_told_apart_by_their_id_or_name() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        let mut events = translator.start();
        for call in [
            json!({"id": "", "function": {"name": "Read", "arguments": "{\"file_path\":"}}),
            json!({"function": {"arguments": "\"a\"}"}}),
            json!({"id": "", "function": {"name": "Read", "arguments": "{\"file_path\":\"b\"}"}}),
        ] {
            let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]});
            events.extend(translator.chunk(&chunk));
        }
        events.extend(translator.finish(Some("stop"), None));
        let events = parse_events(&events);
        assert_well_formed(&events);
        let message = accumulate(&events);
        let inputs: Vec<_> = message["content"]
            .as_array()
            .expect("content")
            .iter()
            .map(|b| b["input"].clone())
            .collect();
        assert_eq!(
            inputs,
            [json!({"file_path": "a"}), json!({"file_path": "b"})]
        );
        assert_eq!(
            message["content"][0]["id"], "toolu_1_0",
            "a missing id is made up"
        );
        assert_eq!(message["stop_reason"], "tool_use");
    }

    #[test]
    fn reasoning_after_text_opens_a_new_thinking_block() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        let mut events = translator.start();
        for delta in [
            json!({"reasoning": "a"}),
            json!({"content": "b"}),
            json!({"reasoning_content": "c"}),
            json!({"content": "d"}),
        ] {
            events.extend(translator.chunk(&json!({"choices": [{"index": 0, "delta": delta}]})));
        }
        events.extend(translator.finish(Some("stop"), None));
        let events = parse_events(&events);
        assert_well_formed(&events);
        let message = accumulate(&events);
        let kinds: Vec<_> = message["content"]
            .as_array()
            .expect("content")
            .iter()
            .map(|b| b["type"].clone())
            .collect();
        assert_eq!(
            kinds,
            [
                json!("thinking"),
                json!("text"),
                json!("thinking"),
                json!("text")
            ]
        );
    }

    #[test]
    fn fail_sends_one_error_event_and_nothing_after() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        translator.start();
        translator.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}));
        let events =
            parse_events(&translator.fail("overloaded_error", "every provider is cooling down"));
        assert_eq!(
            events,
            [(
                "error".to_owned(),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "every provider is cooling down"}})
            )]
        );
        assert!(translator
            .chunk(&json!({"choices": [{"index": 0, "delta": {"content": "more"}}]}))
            .is_empty());
        assert!(translator.finish(Some("stop"), None).is_empty());
        assert!(translator.fail("api_error", "again").is_empty());
    }

    #[test]
    fn a_chunk_carrying_an_error_ends_the_stream_with_an_error_event() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        translator.start();
        let events = parse_events(&translator.chunk(
            &json!({"error": {"message": "upstream died", "type": "server_error"}, "choices": []}),
        ));
        assert_eq!(events[0].1, error_body("api_error", "upstream died"));
        assert!(translator.finish(None, None).is_empty());
    }

    #[test]
    fn ping_is_a_ping_event() {
        let mut translator = StreamTranslator::new("msg_1", "m");
        assert_eq!(
            translator.ping(),
            Bytes::from("event: ping\ndata: {\"type\":\"ping\"}\n\n")
        );
    }

    #[test]
    fn error_types_follow_anthropics_status_table() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type_for(status), kind, "{status}");
        }
        assert_eq!(
            error_body("rate_limit_error", "slow down"),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
    }

    #[test]
    fn token_count_is_a_quarter_token_per_character_plus_a_flat_cost_per_image() {
        // "role" + "user" + "content" + "abcd" = 19 characters -> 5 tokens.
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "abcd"}]});
        assert_eq!(count_tokens(&req), Ok(5));
        let with_image = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A".repeat(100_000)}}
        ]}]});
        // "role" "user" "content" = 15 characters -> 4 tokens, plus one image.
        assert_eq!(count_tokens(&with_image), Ok(4 + IMAGE_TOKENS));
        let bigger = json!({"model": "m", "system": "x".repeat(400), "messages": [], "tools": [{"name": "Read", "input_schema": {"type": "object"}}]});
        assert!(count_tokens(&bigger).expect("counts") > 100);
        assert!(matches!(
            count_tokens(&json!({"model": "m"})),
            Err(TranslateError::Invalid(_))
        ));
    }
}
