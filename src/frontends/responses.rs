//! The OpenAI Responses API (`POST /v1/responses`, what Codex CLI speaks) as a pure
//! translation over chat completions: a Responses request becomes a chat-completions body
//! for the rotation; a chat completion, or its stream of chunks, becomes a Response object,
//! or its stream of events.
//!
//! This module owns the two wire formats and nothing else: no I/O, no clock, no storage and
//! no ids beyond those derived from the ids it is given. The HTTP layer picks the response
//! id and `created_at`, runs the rotation, keeps the history behind `previous_response_id`
//! and turns [`TranslateError`] into a 400 with [`error_body`].
//!
//! What the wire must look like was checked against the OpenAI Python SDK's types and
//! stream accumulator and against Codex CLI's SSE parser; the sources are listed in
//! `tests/fixtures/frontends/README.md`. The decisions that follow from them:
//!
//! - Output items are strictly sequential, as OpenAI sends them: a reasoning or message item
//!   is closed (`…done` events) before the next item is added, because Codex attributes
//!   every text or reasoning delta to the one item it last saw added. Function calls stay
//!   open until something else starts or the stream ends, so interleaved argument pieces
//!   of parallel calls still land in the right call.
//! - `output_index` is the item's position in `output`: the SDK's accumulator indexes its
//!   snapshot with it.
//! - A chat `finish_reason: "length"` ends the stream with `response.incomplete`, not
//!   `response.completed`, as OpenAI does (Codex reports it as an incomplete turn).
//! - A failure mid-stream sends `error` and then `response.failed`, as OpenAI does; Codex
//!   ignores the first and classifies the second by `response.error.code`.
//! - Hosted tools (web search, file search, code interpreter, computer use, image
//!   generation, MCP, local shell, tool search, …) cannot run behind chat completions.
//!   Codex declares `web_search` in every request by default, so rejecting such a
//!   declaration would make the endpoint unusable for Codex; they are dropped instead and
//!   listed in [`ChatRequest::dropped_tools`]. Only a `tool_choice` that forces one of them
//!   is an error.
//! - `custom` (free-form) tools, such as Codex's `apply_patch`, become chat functions with
//!   one string parameter `input`; a call to one comes back as a `custom_tool_call` item.
//!   `namespace` tools are flattened to `<namespace>__<name>` and come back with their
//!   `namespace`. Both need the [`Echo`] of the request on the way back.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

#[cfg(test)]
mod tests;

/// A Responses request that cannot be translated. Both kinds are the client's fault and
/// become a 400; the message names the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// Not a valid Responses request: a missing field or a field of the wrong type.
    #[error("{message}")]
    Invalid {
        /// JSON path of the offending field, e.g. `input[2].content`.
        param: String,
        /// What is wrong, naming the path.
        message: String,
    },
    /// A valid Responses request that chat completions cannot serve (an input image given
    /// by file id, a stored prompt, a forced hosted tool…).
    #[error("{message}")]
    Unsupported {
        /// JSON path of the offending field.
        param: String,
        /// What is not supported and why, naming the path.
        message: String,
    },
}

impl TranslateError {
    /// JSON path of the offending field, for the error body's `param`.
    pub fn param(&self) -> &str {
        match self {
            TranslateError::Invalid { param, .. } | TranslateError::Unsupported { param, .. } => {
                param
            }
        }
    }

    /// OpenAI error `code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            TranslateError::Invalid { .. } => "invalid_value",
            TranslateError::Unsupported { .. } => "unsupported_value",
        }
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        param: param.into(),
        message: message.into(),
    }
}

fn unsupported(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        param: param.into(),
        message: message.into(),
    }
}

/// A Responses request translated for the chat-completions rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The chat-completions request body.
    pub body: Value,
    /// Whether the client asked for a stream of events.
    pub stream: bool,
    /// The requested model, if any (also in `body.model`).
    pub model: Option<String>,
    /// The request's `store` (the API's default is `true`). The translation is stateless
    /// either way; the HTTP layer decides whether to remember the exchange.
    pub store: bool,
    /// The response whose history the client wants continued; the HTTP layer prepends it
    /// with [`prepend_history`].
    pub previous_response_id: Option<String>,
    /// Types of the declared tools that were dropped because they run on OpenAI's servers
    /// (e.g. `web_search`), in request order, repeated types once.
    pub dropped_tools: Vec<String>,
    /// What the Response object repeats from the request, and how chat function names map
    /// back to custom and namespaced tools. Pass it to [`from_chat_with`] or
    /// [`StreamTranslator::with_echo`].
    pub echo: Echo,
}

/// What a Response repeats from its request (`instructions`, `tools`, `tool_choice`,
/// `temperature`, …) and how chat function names map back to Responses tools.
/// [`Echo::default`] repeats nothing and maps every name to a plain function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    fields: Map<String, Value>,
    origins: BTreeMap<String, ToolOrigin>,
}

/// Where a chat function name came from, for the names that are not plain functions.
#[derive(Debug, Clone, PartialEq)]
struct ToolOrigin {
    name: String,
    namespace: Option<String>,
    custom: bool,
}

/// Request fields the Response object repeats, with the API's defaults.
const ECHOED: &[&str] = &[
    "background",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
];

fn echo_default(key: &str) -> Value {
    match key {
        "background" => json!(false),
        "metadata" => json!({}),
        "parallel_tool_calls" | "store" => json!(true),
        "reasoning" => json!({"effort": null, "summary": null}),
        "text" => json!({"format": {"type": "text"}}),
        "tool_choice" => json!("auto"),
        "tools" => json!([]),
        "truncation" => json!("disabled"),
        _ => Value::Null,
    }
}

impl Echo {
    fn from_request(req: &Map<String, Value>, origins: BTreeMap<String, ToolOrigin>) -> Echo {
        let fields = ECHOED
            .iter()
            .filter_map(|k| {
                req.get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| ((*k).to_string(), v.clone()))
            })
            .collect();
        Echo { fields, origins }
    }

    /// The echoed fields, defaults filled in.
    fn fields(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = ECHOED
            .iter()
            .map(|k| ((*k).to_string(), echo_default(k)))
            .collect();
        out.extend(self.fields.clone());
        out.insert("service_tier".into(), json!("default"));
        out
    }

    fn origin(&self, chat_name: &str) -> Option<&ToolOrigin> {
        self.origins.get(chat_name)
    }
}

/// The chat function name of a (possibly namespaced) Responses tool.
fn flat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        None => name.to_string(),
        Some(ns) if ns.ends_with("__") => format!("{ns}{name}"),
        Some(ns) => format!("{ns}__{name}"),
    }
}

// ---------------------------------------------------------------------------------------
// Request: Responses -> chat completions
// ---------------------------------------------------------------------------------------

/// Translates a Responses request body into a chat-completions request.
///
/// Handled: `model`; `input` as a string or a list of items; `instructions` (a leading
/// system message); `tools` and `tool_choice`; `max_output_tokens` (as `max_tokens`);
/// `temperature`; `top_p`; `parallel_tool_calls`; `reasoning.effort` (as
/// `reasoning_effort`); `text.format` (as `response_format`); `stream` (adds
/// `stream_options.include_usage`); `store`; `previous_response_id`.
///
/// Input items: `message` (typed, or the `{"role","content"}` shorthand; `developer` and
/// `system` become `system`), `function_call` and `custom_tool_call` and
/// `local_shell_call` (consecutive ones merge into one assistant message with
/// `tool_calls`), `function_call_output` and `custom_tool_call_output` (`role: tool`).
/// `reasoning` items are dropped: chat completions has no field that every provider
/// accepts for earlier reasoning, and their `encrypted_content` is only readable by
/// OpenAI. Records of hosted tool runs (`web_search_call`, `image_generation_call`,
/// `tool_search_call`, `compaction`, …) are dropped the same way; `item_reference` is
/// unsupported (it needs OpenAI's item store).
///
/// Ignored (accepted and without effect): `metadata`, `user`, `include`, `truncation`,
/// `service_tier`, `prompt_cache_key`, `prompt_cache_retention`, `safety_identifier`,
/// `background`, `client_metadata`, `stream_options`, `top_logprobs`, `max_tool_calls`,
/// `text.verbosity`, `reasoning.summary`, and any other field not named above.
/// Unsupported: `prompt` (a stored prompt template) and `conversation` (server-side
/// state), which would otherwise be silently lost.
pub fn to_chat(req: &Value) -> Result<ChatRequest, TranslateError> {
    let obj = req
        .as_object()
        .ok_or_else(|| invalid("", "the request body must be a JSON object"))?;
    for key in ["prompt", "conversation"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                key,
                format!("{key} needs state stored at OpenAI, which this proxy does not have; send the input instead"),
            ));
        }
    }
    let model = opt_str(obj, "model")?.map(str::to_string);
    let stream = opt_bool(obj, "stream")?.unwrap_or(false);
    let store = opt_bool(obj, "store")?.unwrap_or(true);
    let previous_response_id = opt_str(obj, "previous_response_id")?.map(str::to_string);

    let mut tools = ToolSet::default();
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                tools.add(t, &format!("tools[{i}]"), None)?;
            }
        }
        Some(_) => return Err(invalid("tools", "tools must be an array")),
    }
    let tool_choice = tool_choice(obj.get("tool_choice"), &mut tools)?;

    let mut messages = Vec::new();
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(_) => return Err(invalid("instructions", "instructions must be a string")),
    }
    match obj.get("input") {
        None | Some(Value::Null) => {
            if previous_response_id.is_none() {
                return Err(invalid("input", "input is required"));
            }
        }
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => input_items(items, &mut messages)?,
        Some(_) => {
            return Err(invalid(
                "input",
                "input must be a string or an array of items",
            ))
        }
    }

    let mut body = Map::new();
    if let Some(m) = &model {
        body.insert("model".into(), json!(m));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !tools.chat.is_empty() {
        body.insert("tools".into(), Value::Array(tools.chat.clone()));
        if let Some(choice) = tool_choice {
            body.insert("tool_choice".into(), choice);
        }
        if let Some(p) = opt_bool(obj, "parallel_tool_calls")? {
            body.insert("parallel_tool_calls".into(), json!(p));
        }
    } else if tool_choice
        .as_ref()
        .is_some_and(|c| *c != "auto" && *c != "none")
    {
        return Err(if tools.dropped.is_empty() {
            invalid(
                "tool_choice",
                "tool_choice requires a tool call, but no tools are declared",
            )
        } else {
            unsupported(
                "tool_choice",
                format!(
                    "tool_choice requires a tool call, but the only tools declared ({}) run on OpenAI's servers and cannot be used through chat completions",
                    tools.dropped.join(", ")
                ),
            )
        });
    }
    if let Some(n) = opt_u64(obj, "max_output_tokens")? {
        body.insert("max_tokens".into(), json!(n));
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(invalid(key, format!("{key} must be a number")));
            }
            body.insert(key.into(), v.clone());
        }
    }
    match obj.get("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => match r.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) => {
                body.insert("reasoning_effort".into(), json!(e));
            }
            Some(_) => {
                return Err(invalid(
                    "reasoning.effort",
                    "reasoning.effort must be a string",
                ))
            }
        },
        Some(_) => return Err(invalid("reasoning", "reasoning must be an object")),
    }
    if let Some(format) = response_format(obj.get("text"))? {
        body.insert("response_format".into(), format);
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }

    Ok(ChatRequest {
        body: Value::Object(body),
        stream,
        model,
        store,
        previous_response_id,
        dropped_tools: tools.dropped,
        echo: Echo::from_request(obj, tools.origins),
    })
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(key, format!("{key} must be a string"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(key, format!("{key} must be a boolean"))),
    }
}

fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("{key} must be a non-negative integer"))),
    }
}

/// A string field of an item, required.
fn req_str<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<&'a str, TranslateError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(invalid(
            format!("{path}.{key}"),
            format!("{path}.{key} is required"),
        )),
        Some(_) => Err(invalid(
            format!("{path}.{key}"),
            format!("{path}.{key} must be a string"),
        )),
    }
}

/// The declared tools, as chat sees them.
#[derive(Default)]
struct ToolSet {
    chat: Vec<Value>,
    dropped: Vec<String>,
    origins: BTreeMap<String, ToolOrigin>,
}

impl ToolSet {
    fn add(
        &mut self,
        tool: &Value,
        path: &str,
        namespace: Option<&str>,
    ) -> Result<(), TranslateError> {
        let t = tool
            .as_object()
            .ok_or_else(|| invalid(path, format!("{path} must be an object")))?;
        let kind = req_str(t, path, "type")?;
        match kind {
            "function" | "custom" => {
                let name = req_str(t, path, "name")?;
                let chat_name = flat_name(namespace, name);
                let mut function = Map::new();
                function.insert("name".into(), json!(chat_name));
                let description = opt_str(t, "description").map_err(|_| {
                    invalid(
                        format!("{path}.description"),
                        format!("{path}.description must be a string"),
                    )
                })?;
                if kind == "function" {
                    if let Some(d) = description {
                        function.insert("description".into(), json!(d));
                    }
                    if let Some(p) = t.get("parameters").filter(|p| !p.is_null()) {
                        function.insert("parameters".into(), p.clone());
                    }
                    // `strict: false` is chat's default; leaving it out spares providers
                    // that do not know the field.
                    if t.get("strict") == Some(&Value::Bool(true)) {
                        function.insert("strict".into(), json!(true));
                    }
                } else {
                    function.insert(
                        "description".into(),
                        json!(custom_description(description, t.get("format"))),
                    );
                    function.insert(
                        "parameters".into(),
                        json!({
                            "type": "object",
                            "properties": {"input": {"type": "string", "description": "The tool's input, verbatim."}},
                            "required": ["input"],
                            "additionalProperties": false
                        }),
                    );
                }
                if kind == "custom" || namespace.is_some() {
                    self.origins.insert(
                        chat_name.clone(),
                        ToolOrigin {
                            name: name.to_string(),
                            namespace: namespace.map(str::to_string),
                            custom: kind == "custom",
                        },
                    );
                }
                self.chat
                    .push(json!({"type": "function", "function": function}));
            }
            "namespace" if namespace.is_none() => {
                let ns = req_str(t, path, "name")?;
                let Some(Value::Array(inner)) = t.get("tools") else {
                    return Err(invalid(
                        format!("{path}.tools"),
                        format!("{path}.tools must be an array"),
                    ));
                };
                for (i, it) in inner.iter().enumerate() {
                    self.add(it, &format!("{path}.tools[{i}]"), Some(ns))?;
                }
            }
            other => {
                if !self.dropped.iter().any(|d| d == other) {
                    self.dropped.push(other.to_string());
                }
            }
        }
        Ok(())
    }
}

/// A custom tool's description for chat, carrying its input grammar, since chat functions
/// only take JSON arguments.
fn custom_description(description: Option<&str>, format: Option<&Value>) -> String {
    let mut out = description.unwrap_or_default().to_string();
    let grammar = format.filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar"));
    if let Some(f) = grammar {
        let syntax = f.get("syntax").and_then(Value::as_str).unwrap_or("lark");
        let definition = f
            .get("definition")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!(
            "Put the raw input in the `input` string; it must match this {syntax} grammar:\n{definition}"
        ));
    }
    out
}

/// Maps `tool_choice`; for `allowed_tools` narrows the declared tools instead.
fn tool_choice(
    choice: Option<&Value>,
    tools: &mut ToolSet,
) -> Result<Option<Value>, TranslateError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(c) => c,
    };
    if let Value::String(s) = choice {
        return match s.as_str() {
            "auto" | "none" | "required" => Ok(Some(choice.clone())),
            other => Err(invalid(
                "tool_choice",
                format!("tool_choice must be \"auto\", \"none\", \"required\" or an object, not \"{other}\""),
            )),
        };
    }
    let o = choice
        .as_object()
        .ok_or_else(|| invalid("tool_choice", "tool_choice must be a string or an object"))?;
    let kind = req_str(o, "tool_choice", "type")?;
    match kind {
        "function" | "custom" => {
            let name = req_str(o, "tool_choice", "name")?;
            let ns = opt_str(o, "namespace")?;
            Ok(Some(json!({"type": "function", "function": {"name": flat_name(ns, name)}})))
        }
        "allowed_tools" => {
            let mode = match o.get("mode") {
                None | Some(Value::Null) => "auto",
                Some(Value::String(m)) if m == "auto" || m == "required" => m.as_str(),
                Some(_) => {
                    return Err(invalid(
                        "tool_choice.mode",
                        "tool_choice.mode must be \"auto\" or \"required\"",
                    ))
                }
            };
            let Some(Value::Array(allowed)) = o.get("tools") else {
                return Err(invalid("tool_choice.tools", "tool_choice.tools must be an array"));
            };
            let names: Vec<String> = allowed
                .iter()
                .filter_map(|a| {
                    let name = a.get("name").and_then(Value::as_str)?;
                    let ns = a.get("namespace").and_then(Value::as_str);
                    Some(flat_name(ns, name))
                })
                .collect();
            tools.chat.retain(|t| {
                t.pointer("/function/name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.iter().any(|a| a == n))
            });
            Ok(Some(json!(mode)))
        }
        other => Err(unsupported(
            "tool_choice",
            format!("tool_choice forces the {other} tool, which runs on OpenAI's servers; only function and custom tools can be used through chat completions"),
        )),
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(text: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let format = match text {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(t)) => match t.get("format") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(f)) => f,
            Some(_) => return Err(invalid("text.format", "text.format must be an object")),
        },
        Some(_) => return Err(invalid("text", "text must be an object")),
    };
    match req_str(format, "text.format", "type")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                json!(req_str(format, "text.format", "name")?),
            );
            let s = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    invalid("text.format.schema", "text.format.schema must be an object")
                })?;
            schema.insert("schema".into(), s.clone());
            for key in ["strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(invalid(
            "text.format.type",
            format!("text.format.type must be text, json_object or json_schema, not {other}"),
        )),
    }
}

/// Appends the chat messages for `input` items.
fn input_items(items: &[Value], out: &mut Vec<Value>) -> Result<(), TranslateError> {
    // Whether the last message pushed is an assistant message made of tool calls only, so
    // that the next call joins it.
    let mut calls_open = false;
    for (i, item) in items.iter().enumerate() {
        let path = format!("input[{i}]");
        let o = item
            .as_object()
            .ok_or_else(|| invalid(&path, format!("{path} must be an object")))?;
        let kind = match o.get("type") {
            None | Some(Value::Null) => "message",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(invalid(
                    format!("{path}.type"),
                    format!("{path}.type must be a string"),
                ))
            }
        };
        match kind {
            "message" => {
                out.push(message(o, &path)?);
                calls_open = false;
            }
            "function_call" | "custom_tool_call" | "local_shell_call" => {
                let call = tool_call(o, &path, kind)?;
                let merged = calls_open
                    && out
                        .last_mut()
                        .and_then(|m| m.get_mut("tool_calls"))
                        .and_then(Value::as_array_mut)
                        .map(|calls| calls.push(call.clone()))
                        .is_some();
                if !merged {
                    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
                calls_open = true;
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = req_str(o, &path, "call_id")?;
                let content = tool_output(o.get("output"), &format!("{path}.output"))?;
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                calls_open = false;
            }
            "item_reference" => {
                return Err(unsupported(
                    &path,
                    format!("{path} is an item_reference, which needs OpenAI's item store; send the item itself"),
                ))
            }
            // `reasoning` and the records of hosted tool runs (see `to_chat`).
            _ => {}
        }
    }
    Ok(())
}

fn message(o: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let role = match req_str(o, path, "role")? {
        "user" => "user",
        "assistant" => "assistant",
        "system" | "developer" => "system",
        other => {
            return Err(invalid(
                format!("{path}.role"),
                format!("{path}.role must be user, assistant, system or developer, not {other}"),
            ))
        }
    };
    let content = match o.get("content") {
        Some(Value::String(s)) => json!(s),
        Some(Value::Array(parts)) => {
            content_parts(parts, &format!("{path}.content"), role == "user")?
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("{path}.content is required"),
            ))
        }
        Some(_) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("{path}.content must be a string or an array of content parts"),
            ))
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// Content parts as chat content: one string when they are all text (what every provider
/// accepts, and how Codex's own chat client joins them), else an array of chat parts.
fn content_parts(parts: &[Value], path: &str, media: bool) -> Result<Value, TranslateError> {
    let mut text = String::new();
    let mut chat = Vec::new();
    let mut only_text = true;
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{path}[{j}]");
        let p = part
            .as_object()
            .ok_or_else(|| invalid(&pp, format!("{pp} must be an object")))?;
        match req_str(p, &pp, "type")? {
            "input_text" | "output_text" | "text" => {
                let t = req_str(p, &pp, "text")?;
                text.push_str(t);
                chat.push(json!({"type": "text", "text": t}));
            }
            "refusal" => {
                let t = req_str(p, &pp, "refusal")?;
                text.push_str(t);
                chat.push(json!({"type": "text", "text": t}));
            }
            kind @ ("input_image" | "input_file") if !media => {
                return Err(unsupported(
                    &pp,
                    format!("{pp} is an {kind}; chat completions takes images and files only in user messages and tool outputs"),
                ));
            }
            "input_image" => {
                only_text = false;
                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                    return Err(unsupported(
                        &pp,
                        format!(
                            "{pp} gives no image_url; images by file_id need OpenAI's file store"
                        ),
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(d) = p.get("detail").and_then(Value::as_str) {
                    image["detail"] = json!(d);
                }
                chat.push(json!({"type": "image_url", "image_url": image}));
            }
            "input_file" => {
                only_text = false;
                let Some(data) = p.get("file_data").and_then(Value::as_str) else {
                    return Err(unsupported(
                        &pp,
                        format!("{pp} gives no file_data; files by file_id or file_url need OpenAI's file store"),
                    ));
                };
                let mut file = json!({"file_data": data});
                if let Some(n) = p.get("filename").and_then(Value::as_str) {
                    file["filename"] = json!(n);
                }
                chat.push(json!({"type": "file", "file": file}));
            }
            other => {
                return Err(unsupported(
                    format!("{pp}.type"),
                    format!("{pp} is an {other} part, which chat completions cannot carry"),
                ))
            }
        }
    }
    Ok(if only_text {
        json!(text)
    } else {
        Value::Array(chat)
    })
}

/// A call item as a chat tool call.
fn tool_call(o: &Map<String, Value>, path: &str, kind: &str) -> Result<Value, TranslateError> {
    let (name, arguments, call_id) = match kind {
        "function_call" => {
            let name = flat_name(opt_str(o, "namespace")?, req_str(o, path, "name")?);
            let arguments = match o.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => {
                    return Err(invalid(
                        format!("{path}.arguments"),
                        format!("{path}.arguments is required"),
                    ))
                }
                Some(other) => other.to_string(),
            };
            (name, arguments, req_str(o, path, "call_id")?)
        }
        "custom_tool_call" => {
            let name = flat_name(opt_str(o, "namespace")?, req_str(o, path, "name")?);
            let input = req_str(o, path, "input")?;
            (
                name,
                json!({"input": input}).to_string(),
                req_str(o, path, "call_id")?,
            )
        }
        _ => {
            // local_shell_call: the action is the arguments; its output comes back as a
            // function_call_output with the same call_id.
            let action = o.get("action").cloned().unwrap_or(Value::Null);
            let call_id = match o.get("call_id").and_then(Value::as_str) {
                Some(c) => c,
                None => req_str(o, path, "id")?,
            };
            ("local_shell".to_string(), action.to_string(), call_id)
        }
    };
    Ok(json!({
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments}
    }))
}

/// A tool output as chat tool-message content.
fn tool_output(output: Option<&Value>, path: &str) -> Result<Value, TranslateError> {
    match output {
        Some(Value::String(s)) => Ok(json!(s)),
        Some(Value::Array(parts)) => content_parts(parts, path, true),
        // Codex's older failure shape: {"content": "...", "success": false}.
        Some(Value::Object(o)) if o.get("content").is_some_and(Value::is_string) => {
            Ok(o.get("content").cloned().unwrap_or_default())
        }
        None | Some(Value::Null) => Err(invalid(path, format!("{path} is required"))),
        Some(_) => Err(invalid(
            path,
            format!("{path} must be a string or an array of content parts"),
        )),
    }
}

/// Inserts the messages of an earlier exchange (from a stored response, for
/// `previous_response_id`) before the new request's messages, after its leading system
/// messages. The history's own leading system messages are skipped: they are the earlier
/// request's `instructions`, which OpenAI does not carry over to the next response (a
/// leading `developer` input message of the earlier request is skipped with them).
pub fn prepend_history(chat: &mut Value, history: &[Value]) {
    let Some(messages) = chat.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    let is_system = |m: &Value| m.get("role").and_then(Value::as_str) == Some("system");
    let at = messages.iter().take_while(|m| is_system(m)).count();
    let earlier: Vec<Value> = history
        .iter()
        .skip_while(|m| is_system(m))
        .cloned()
        .collect();
    messages.splice(at..at, earlier);
}

/// The chat messages to remember for a later `previous_response_id`: the request's
/// messages plus the assistant message of `chat` (a chat completion, or
/// [`StreamTranslator::chat_completion`]).
pub fn history_entry(request_chat_messages: &[Value], chat: &Value) -> Vec<Value> {
    let message = chat.pointer("/choices/0/message").unwrap_or(&Value::Null);
    let text = message_text(message.get("content"));
    let calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    json!({
                        "id": c.get("id").cloned().unwrap_or_default(),
                        "type": "function",
                        "function": {
                            "name": c.pointer("/function/name").cloned().unwrap_or_default(),
                            "arguments": c.pointer("/function/arguments").cloned().unwrap_or(json!("")),
                        }
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut assistant = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            assistant["content"] = Value::Null;
        }
        assistant["tool_calls"] = Value::Array(calls);
    }
    let mut out = request_chat_messages.to_vec();
    out.push(assistant);
    out
}

// ---------------------------------------------------------------------------------------
// Response: chat completion -> Response object
// ---------------------------------------------------------------------------------------

/// A chat message's text: `content` as a string, or its text parts joined.
fn message_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A chat message's or delta's reasoning text (`reasoning_content`, or `reasoning` as
/// Groq, OpenRouter and Ollama send it).
fn reasoning_text(m: &Value) -> Option<&str> {
    m.get("reasoning_content")
        .and_then(Value::as_str)
        .or_else(|| m.get("reasoning").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// What is known of one output item.
#[derive(Debug, Clone)]
enum Kind {
    Reasoning(String),
    Message(String),
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The `input` of a custom tool call from the chat function's JSON arguments.
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => match o.get("input") {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_string(),
        },
        Ok(Value::String(s)) => s,
        _ => arguments.to_string(),
    }
}

/// The item as the Response lists it. `added` gives the empty shell sent with
/// `response.output_item.added`.
fn item_value(kind: &Kind, id: &str, status: &str, echo: &Echo, added: bool) -> Value {
    match kind {
        Kind::Reasoning(text) => {
            let summary = if added || text.is_empty() {
                json!([])
            } else {
                json!([{"type": "summary_text", "text": text}])
            };
            json!({"id": id, "type": "reasoning", "summary": summary})
        }
        Kind::Message(text) => {
            let content = if added {
                json!([])
            } else {
                json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text}])
            };
            json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
        }
        Kind::Call {
            call_id,
            name,
            arguments,
        } => {
            let origin = echo.origin(name);
            let mut v = match origin {
                Some(o) if o.custom => json!({
                    "id": id, "type": "custom_tool_call", "status": status, "call_id": call_id,
                    "name": o.name,
                    "input": if added { String::new() } else { custom_input(arguments) },
                }),
                _ => json!({
                    "id": id, "type": "function_call", "status": status, "call_id": call_id,
                    "name": origin.map_or(name.as_str(), |o| o.name.as_str()),
                    "arguments": if added { "" } else { arguments.as_str() },
                }),
            };
            if let Some(ns) = origin.and_then(|o| o.namespace.as_deref()) {
                v["namespace"] = json!(ns);
            }
            v
        }
    }
}

/// Ids of the items of one response, derived from the response id.
fn item_id(prefix: &str, response_id: &str, n: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{n}")
}

fn kind_prefix(kind: &Kind, echo: &Echo) -> &'static str {
    match kind {
        Kind::Reasoning(_) => "rs",
        Kind::Message(_) => "msg",
        Kind::Call { name, .. } if echo.origin(name).is_some_and(|o| o.custom) => "ctc",
        Kind::Call { .. } => "fc",
    }
}

/// Status and `incomplete_details` for a chat `finish_reason`.
fn status_for(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Chat `usage` as Responses `usage`; `null` when there is none.
fn map_usage(usage: Option<&Value>) -> Value {
    let Some(u) = usage.filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let input = n("/prompt_tokens");
    let output = n("/completion_tokens");
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n("/prompt_tokens_details/cached_tokens"),
            "cache_write_tokens": 0
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": total
    })
}

/// The Response object.
#[expect(
    clippy::too_many_arguments,
    reason = "one flat constructor for the three places that build a Response"
)]
fn response_value(
    id: &str,
    model: &str,
    created_at: u64,
    status: &str,
    output: Vec<Value>,
    usage: Value,
    echo: &Echo,
    error: Value,
    incomplete_details: Value,
) -> Value {
    let mut r = echo.fields();
    r.insert("id".into(), json!(id));
    r.insert("object".into(), json!("response"));
    r.insert("created_at".into(), json!(created_at));
    r.insert("status".into(), json!(status));
    r.insert("error".into(), error);
    r.insert("incomplete_details".into(), incomplete_details);
    r.insert("model".into(), json!(model));
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage);
    Value::Object(r)
}

/// Turns a chat completion into a Response object, with nothing echoed from the request;
/// see [`from_chat_with`].
pub fn from_chat(chat: &Value, model: &str, id: &str, created_at: u64) -> Value {
    from_chat_with(chat, model, id, created_at, &Echo::default())
}

/// Turns a chat completion (`choices[0].message` with `content`, `reasoning_content` and
/// `tool_calls`, `finish_reason`, `usage`) into a Response object: a reasoning item, a
/// message item and one call item per tool call, in that order; status `incomplete` when
/// the chat stopped for `length` or `content_filter`. `output_text` is not a wire field
/// (the SDKs compute it). `echo` is the request's [`ChatRequest::echo`].
pub fn from_chat_with(chat: &Value, model: &str, id: &str, created_at: u64, echo: &Echo) -> Value {
    let choice = chat.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut kinds = Vec::new();
    if let Some(r) = reasoning_text(message) {
        kinds.push(Kind::Reasoning(r.to_string()));
    }
    let mut text = message_text(message.get("content"));
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        text.push_str(refusal);
    }
    if !text.is_empty() {
        kinds.push(Kind::Message(text));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let n = kinds.len();
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| item_id("call", id, n), str::to_string);
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => other.to_string(),
        };
        kinds.push(Kind::Call {
            call_id,
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            arguments,
        });
    }
    let output = kinds
        .iter()
        .enumerate()
        .map(|(n, k)| {
            item_value(
                k,
                &item_id(kind_prefix(k, echo), id, n),
                "completed",
                echo,
                false,
            )
        })
        .collect();
    let (status, incomplete) = status_for(choice.get("finish_reason").and_then(Value::as_str));
    response_value(
        id,
        model,
        created_at,
        status,
        output,
        map_usage(chat.get("usage")),
        echo,
        Value::Null,
        incomplete,
    )
}

// ---------------------------------------------------------------------------------------
// Streaming: chat.completion.chunk -> Responses events
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Item {
    id: String,
    open: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    Started,
    Done,
}

/// Turns a stream of chat-completion chunks into the Responses stream: `start`, then
/// `chunk` for each chunk, then `finish` (or `fail`). Every event is
/// `event: <type>\ndata: <json>\n\n`, and every JSON carries `type` and an increasing
/// `sequence_number`. Calls after the end return nothing.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created_at: u64,
    echo: Echo,
    seq: u64,
    phase: Phase,
    items: Vec<Item>,
    /// Chat tool-call index -> position in `items`.
    calls: BTreeMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    final_response: Option<Value>,
}

impl StreamTranslator {
    /// A translator for the response `id` (e.g. `resp_…`) of `model`, created at
    /// `created_at` (Unix seconds), echoing nothing from the request.
    pub fn new(id: String, model: String, created_at: u64) -> Self {
        StreamTranslator {
            id,
            model,
            created_at,
            echo: Echo::default(),
            seq: 0,
            phase: Phase::New,
            items: Vec::new(),
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
            final_response: None,
        }
    }

    /// Echoes the request (its [`ChatRequest::echo`]) in the Response objects and maps
    /// custom and namespaced tool calls back.
    pub fn with_echo(mut self, echo: Echo) -> Self {
        self.echo = echo;
        self
    }

    /// `response.created` and `response.in_progress`. Called by `chunk`, `finish` and
    /// `fail` when it was not called before.
    pub fn start(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.phase != Phase::New {
            return out;
        }
        self.phase = Phase::Started;
        let snapshot = self.snapshot("in_progress", Value::Null, Value::Null);
        self.emit(
            &mut out,
            "response.created",
            json!({"response": snapshot.clone()}),
        );
        self.emit(
            &mut out,
            "response.in_progress",
            json!({"response": snapshot}),
        );
        out
    }

    /// The events for one `chat.completion.chunk` (its JSON).
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        let mut out = self.start();
        if self.phase == Phase::Done {
            return out;
        }
        if let Some(u) = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| chunk.pointer("/x_groq/usage").filter(|u| u.is_object()))
        {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return out;
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(r) = reasoning_text(delta) {
                self.reasoning_delta(r, &mut out);
            }
            let mut text = delta
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                text.push_str(refusal);
            }
            if !text.is_empty() {
                self.text_delta(&text, &mut out);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, call) in calls.iter().enumerate() {
                    self.call_delta(call, pos, &mut out);
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_string());
        }
        out
    }

    /// Closes every open item and ends the stream with `response.completed` (or
    /// `response.incomplete` when the chat stopped for `length` or `content_filter`)
    /// carrying the whole Response. `usage` is the chat usage if the caller has it;
    /// otherwise the last `usage` seen in the chunks is used.
    pub fn finish(&mut self, usage: Option<&Value>) -> Vec<Bytes> {
        let mut out = self.start();
        if self.phase == Phase::Done {
            return out;
        }
        if let Some(u) = usage.filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        self.close_all(&mut out);
        let (status, incomplete) = status_for(self.finish_reason.as_deref());
        let response = self.snapshot(status, Value::Null, incomplete);
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(&mut out, kind, json!({"response": response.clone()}));
        self.final_response = Some(response);
        self.phase = Phase::Done;
        out
    }

    /// Ends the stream with a failure: an `error` event, then `response.failed` whose
    /// `response.error` is `{code, message}`. Codex reads the code (`rate_limit_exceeded`
    /// with "try again in Ns", `context_length_exceeded`, `insufficient_quota`,
    /// `server_is_overloaded`, …). The `error` event carries the documented flat fields and
    /// also the nested `error` object OpenAI actually sends, on which the Python SDK raises.
    pub fn fail(&mut self, message: &str, code: &str) -> Vec<Bytes> {
        let mut out = self.start();
        if self.phase == Phase::Done {
            return out;
        }
        self.emit(
            &mut out,
            "error",
            json!({
                "code": code,
                "message": message,
                "param": null,
                "error": {"type": "server_error", "code": code, "message": message, "param": null}
            }),
        );
        let response = self.snapshot(
            "failed",
            json!({"code": code, "message": message}),
            Value::Null,
        );
        self.emit(
            &mut out,
            "response.failed",
            json!({"response": response.clone()}),
        );
        self.final_response = Some(response);
        self.phase = Phase::Done;
        out
    }

    /// The Response as it stands: the final one after `finish` or `fail`, else an
    /// `in_progress` snapshot.
    pub fn final_response(&self) -> Value {
        match &self.final_response {
            Some(r) => r.clone(),
            None => self.snapshot("in_progress", Value::Null, Value::Null),
        }
    }

    /// The streamed answer as a non-streaming chat completion (`choices[0].message`,
    /// `finish_reason`, `usage`), for [`history_entry`].
    pub fn chat_completion(&self) -> Value {
        let mut reasoning = String::new();
        let mut text = String::new();
        let mut calls = Vec::new();
        for item in &self.items {
            match &item.kind {
                Kind::Reasoning(r) => reasoning.push_str(r),
                Kind::Message(t) => text.push_str(t),
                Kind::Call {
                    call_id,
                    name,
                    arguments,
                } => calls.push(json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments}
                })),
            }
        }
        let mut message = json!({"role": "assistant", "content": text});
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created_at,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        })
    }

    fn snapshot(&self, status: &str, error: Value, incomplete: Value) -> Value {
        let output = self
            .items
            .iter()
            .map(|i| {
                let s = if i.open { "in_progress" } else { "completed" };
                item_value(&i.kind, &i.id, s, &self.echo, false)
            })
            .collect();
        let usage = if status == "in_progress" {
            Value::Null
        } else {
            map_usage(self.usage.as_ref())
        };
        response_value(
            &self.id,
            &self.model,
            self.created_at,
            status,
            output,
            usage,
            &self.echo,
            error,
            incomplete,
        )
    }

    fn emit(&mut self, out: &mut Vec<Bytes>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    }

    /// Adds an item and sends `response.output_item.added`; returns its position.
    fn open(&mut self, kind: Kind, out: &mut Vec<Bytes>) -> usize {
        let n = self.items.len();
        let id = item_id(kind_prefix(&kind, &self.echo), &self.id, n);
        let item = item_value(&kind, &id, "in_progress", &self.echo, true);
        self.items.push(Item {
            id,
            open: true,
            kind,
        });
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": n, "item": item}),
        );
        n
    }

    /// The open item of the kind `pick` selects, if it is the last item.
    fn open_last(&self, pick: fn(&Kind) -> bool) -> Option<usize> {
        let n = self.items.len().checked_sub(1)?;
        let item = &self.items[n];
        (item.open && pick(&item.kind)).then_some(n)
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        let n = match self.open_last(|k| matches!(k, Kind::Reasoning(_))) {
            Some(n) => n,
            None => {
                self.close_all(out);
                let n = self.open(Kind::Reasoning(String::new()), out);
                let item_id = self.items[n].id.clone();
                self.emit(
                    out,
                    "response.reasoning_summary_part.added",
                    json!({"item_id": item_id, "output_index": n, "summary_index": 0,
                           "part": {"type": "summary_text", "text": ""}}),
                );
                n
            }
        };
        if let Kind::Reasoning(text) = &mut self.items[n].kind {
            text.push_str(delta);
        }
        let item_id = self.items[n].id.clone();
        self.emit(
            out,
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": n, "summary_index": 0, "delta": delta}),
        );
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        let n = match self.open_last(|k| matches!(k, Kind::Message(_))) {
            Some(n) => n,
            None => {
                self.close_all(out);
                let n = self.open(Kind::Message(String::new()), out);
                let item_id = self.items[n].id.clone();
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": n, "content_index": 0,
                           "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
                );
                n
            }
        };
        if let Kind::Message(text) = &mut self.items[n].kind {
            text.push_str(delta);
        }
        let item_id = self.items[n].id.clone();
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": n, "content_index": 0,
                   "delta": delta, "logprobs": []}),
        );
    }

    fn call_delta(&mut self, call: &Value, pos: usize, out: &mut Vec<Bytes>) {
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(pos as u64);
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let piece = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let n = match self.calls.get(&index) {
            Some(&n) => {
                if let Kind::Call { name: known, .. } = &mut self.items[n].kind {
                    if known.is_empty() {
                        *known = name.to_string();
                    }
                }
                n
            }
            None => {
                // Text and reasoning end where the calls begin; earlier calls stay open.
                for n in 0..self.items.len() {
                    if !matches!(self.items[n].kind, Kind::Call { .. }) {
                        self.close(n, out);
                    }
                }
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map_or_else(
                        || item_id("call", &self.id, self.items.len()),
                        str::to_string,
                    );
                let n = self.open(
                    Kind::Call {
                        call_id,
                        name: name.to_string(),
                        arguments: String::new(),
                    },
                    out,
                );
                self.calls.insert(index, n);
                n
            }
        };
        if piece.is_empty() {
            return;
        }
        let custom = match &mut self.items[n].kind {
            Kind::Call {
                arguments, name, ..
            } => {
                arguments.push_str(piece);
                self.echo.origin(name).is_some_and(|o| o.custom)
            }
            _ => return,
        };
        // A custom tool's input is inside the JSON arguments; it is sent whole when the
        // call is done.
        if self.items[n].open && !custom {
            let item_id = self.items[n].id.clone();
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": n, "delta": piece}),
            );
        }
    }

    fn close_all(&mut self, out: &mut Vec<Bytes>) {
        for n in 0..self.items.len() {
            self.close(n, out);
        }
    }

    /// Sends the `…done` events of item `n` if it is open.
    fn close(&mut self, n: usize, out: &mut Vec<Bytes>) {
        if !self.items[n].open {
            return;
        }
        self.items[n].open = false;
        let id = self.items[n].id.clone();
        let kind = self.items[n].kind.clone();
        match &kind {
            Kind::Reasoning(text) => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": n, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": n, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
            }
            Kind::Message(text) => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": n, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": n, "content_index": 0,
                           "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}}),
                );
            }
            Kind::Call {
                name, arguments, ..
            } => match self.echo.origin(name) {
                Some(o) if o.custom => {
                    let input = custom_input(arguments);
                    self.emit(
                        out,
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": n, "input": input}),
                    );
                }
                origin => {
                    let name = origin.map_or(name.clone(), |o| o.name.clone());
                    self.emit(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": n, "name": name, "arguments": arguments}),
                    );
                }
            },
        }
        let item = item_value(&kind, &id, "completed", &self.echo, false);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": n, "item": item}),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The OpenAI error envelope `{"error":{"message","type","param","code"}}`, which the
/// Responses API shares with chat completions; `type` follows from the status as in the
/// rest of the proxy.
pub fn error_body(status: u16, code: &str, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "upstream_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
