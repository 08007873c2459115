//! Translation both ways, driven by the fixtures in `tests/fixtures/frontends/responses/`
//! (see `tests/fixtures/frontends/README.md` for where each shape comes from), and every
//! stream checked the way the OpenAI Python SDK and Codex CLI read it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frontends/responses")
}

fn fixture(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON chunks of a chat stream transcript (`data:` lines; comments and `[DONE]` skipped).
fn chunks(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Splits the translator's output into events, checking the SSE framing: `event:` names
/// the same type as the JSON's `type`.
fn events(bytes: &[Bytes]) -> Vec<Value> {
    bytes
        .iter()
        .map(|b| {
            let text = std::str::from_utf8(b).expect("utf-8");
            let rest = text.strip_prefix("event: ").expect("starts with event:");
            let (kind, rest) = rest.split_once('\n').expect("event line");
            let data = rest
                .strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .expect("one data line, then a blank line");
            assert!(!data.contains('\n'), "data is one line: {data}");
            let v: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(v["type"], kind, "event name and type agree");
            v
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Runs a chat transcript through a translator (`echo` from a request) and returns the
/// Responses events.
fn translate_stream(path: &Path, echo: Echo) -> Vec<Value> {
    let mut t =
        StreamTranslator::new("resp_test".into(), "auto".into(), 1_795_780_800).with_echo(echo);
    let mut out = t.start();
    for c in chunks(path) {
        out.extend(t.chunk(&c));
    }
    out.extend(t.finish(None));
    events(&out)
}

/// Reads a Responses stream the way its two strictest readers do, panicking on anything
/// either would choke on:
/// - the OpenAI Python SDK's `ResponseStreamState.accumulate_event`: `response.created`
///   first; `output_index` indexes the snapshot's `output`; text deltas land in an
///   `output_text` part of a message, argument deltas in a `function_call`;
/// - Codex CLI: every text or reasoning delta belongs to the item it last saw added.
///
/// Also checks `sequence_number` counts up from 0 and exactly one terminal event comes
/// last. Returns the terminal event.
fn check_stream(events: &[Value]) -> Value {
    assert_eq!(
        types(&events[..2]),
        ["response.created", "response.in_progress"]
    );
    let mut output: Vec<Value> = Vec::new();
    let mut active: Option<(String, String)> = None; // (item type, item id)
    let mut open = 0usize;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], json!(i), "sequence_number of {e}");
        let kind = e["type"].as_str().expect("type");
        let terminal = matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        );
        assert_eq!(
            terminal,
            i + 1 == events.len(),
            "one terminal event, last: {kind}"
        );
        let oi = e["output_index"].as_u64().map(|n| n as usize);
        match kind {
            "response.output_item.added" => {
                assert_eq!(oi, Some(output.len()), "output_index is the next position");
                let item = e["item"].clone();
                let t = item["type"].as_str().expect("item type").to_string();
                if t == "message" || t == "reasoning" {
                    assert!(
                        active.is_none(),
                        "Codex: one text or reasoning item at a time"
                    );
                    active = Some((t, item["id"].as_str().expect("id").to_string()));
                }
                output.push(item);
                open += 1;
            }
            "response.output_item.done" => {
                let n = oi.expect("output_index");
                assert_eq!(
                    output[n]["id"], e["item"]["id"],
                    "done names the added item"
                );
                if active
                    .as_ref()
                    .is_some_and(|(_, id)| e["item"]["id"] == json!(id))
                {
                    active = None;
                }
                output[n] = e["item"].clone();
                open -= 1;
            }
            "response.content_part.added" => {
                let n = oi.expect("output_index");
                assert_eq!(output[n]["type"], "message");
                let content = output[n]["content"].as_array_mut().expect("content");
                assert_eq!(e["content_index"], json!(content.len()));
                content.push(e["part"].clone());
            }
            "response.output_text.delta" => {
                let n = oi.expect("output_index");
                assert_eq!(output[n]["type"], "message");
                let ci = e["content_index"].as_u64().expect("content_index") as usize;
                let part = &mut output[n]["content"][ci];
                assert_eq!(part["type"], "output_text");
                let text = format!(
                    "{}{}",
                    part["text"].as_str().unwrap_or_default(),
                    e["delta"].as_str().expect("delta")
                );
                part["text"] = json!(text);
                assert!(e["logprobs"].is_array(), "the SDK requires logprobs");
                assert!(
                    active
                        .as_ref()
                        .is_some_and(|(t, id)| t == "message" && e["item_id"] == json!(id)),
                    "Codex: OutputTextDelta without active item"
                );
            }
            "response.reasoning_summary_text.delta" => {
                assert!(
                    e["summary_index"].is_u64(),
                    "Codex drops deltas without summary_index"
                );
                assert!(
                    active
                        .as_ref()
                        .is_some_and(|(t, id)| t == "reasoning" && e["item_id"] == json!(id)),
                    "Codex: ReasoningSummaryDelta without active item"
                );
            }
            "response.function_call_arguments.delta" => {
                let n = oi.expect("output_index");
                assert_eq!(output[n]["type"], "function_call");
                let args = format!(
                    "{}{}",
                    output[n]["arguments"].as_str().unwrap_or_default(),
                    e["delta"].as_str().expect("delta")
                );
                output[n]["arguments"] = json!(args);
            }
            "response.function_call_arguments.done" => {
                assert!(e["name"].is_string(), "the SDK requires name");
                let n = oi.expect("output_index");
                assert_eq!(
                    output[n]["arguments"], e["arguments"],
                    "deltas add up to the arguments"
                );
            }
            "response.output_text.done" => {
                let n = oi.expect("output_index");
                assert_eq!(
                    output[n]["content"][0]["text"], e["text"],
                    "deltas add up to the text"
                );
            }
            _ => {}
        }
        if terminal {
            if kind != "response.failed" {
                assert_eq!(open, 0, "every item is done before the end");
                assert_eq!(
                    e["response"]["output"],
                    json!(output),
                    "the end repeats the items"
                );
            }
            for key in [
                "id",
                "created_at",
                "model",
                "output",
                "parallel_tool_calls",
                "tool_choice",
                "tools",
            ] {
                assert!(
                    !e["response"][key].is_null(),
                    "the SDK's Response requires {key}"
                );
            }
            assert_eq!(e["response"]["object"], "response");
            assert!(
                e["response"].get("output_text").is_none(),
                "output_text is not a wire field"
            );
            return e.clone();
        }
    }
    panic!("the stream has no terminal event")
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

fn as_recorded(req: &ChatRequest) -> Value {
    json!({
        "body": req.body,
        "stream": req.stream,
        "model": req.model,
        "store": req.store,
        "previous_response_id": req.previous_response_id,
        "dropped_tools": req.dropped_tools,
    })
}

#[test]
fn a_codex_request_becomes_the_recorded_chat_body() {
    let req = to_chat(&fixture("codex-request.json")).expect("translates");
    assert_eq!(as_recorded(&req), fixture("codex-request.chat.json"));
}

#[test]
fn a_codex_request_drops_web_search_and_reasoning_but_keeps_the_conversation() {
    let req = to_chat(&fixture("codex-request.json")).expect("translates");
    assert_eq!(req.dropped_tools, ["web_search"]);
    assert!(!req.store);
    let messages = req.body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "system",
            "user",
            "user",
            "assistant",
            "tool",
            "assistant",
            "assistant",
            "tool"
        ]
    );
    assert_eq!(
        messages[7]["tool_calls"][0]["function"]["arguments"],
        json!(json!({"input": "*** Begin Patch\n*** Update File: src/lib.rs\n@@\n-    a + b + 1\n+    a + b\n*** End Patch\n"}).to_string()),
        "a custom tool call becomes a function call with the input as its one argument"
    );
}

#[test]
fn an_sdk_structured_output_request_becomes_the_recorded_chat_body() {
    let req = to_chat(&fixture("sdk-request.json")).expect("translates");
    assert_eq!(as_recorded(&req), fixture("sdk-request.chat.json"));
}

#[test]
fn function_calls_and_their_outputs_become_one_assistant_message_and_tool_messages() {
    let req = to_chat(&fixture("tool-roundtrip-request.json")).expect("translates");
    assert_eq!(
        as_recorded(&req),
        fixture("tool-roundtrip-request.chat.json")
    );
    let messages = req.body["messages"].as_array().expect("messages");
    assert_eq!(
        messages.len(),
        4,
        "user, one assistant with both calls, two tool results"
    );
    assert_eq!(messages[1]["tool_calls"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "call_12345xyz", "content": "{\"temperature\": 14}"})
    );
    assert_eq!(
        messages[3]["content"], "{\"temperature\": 18}",
        "text-only output parts become a string"
    );
    assert_eq!(req.previous_response_id.as_deref(), Some("resp_earlier"));
}

#[test]
fn a_forced_hosted_tool_is_unsupported_and_the_error_names_it() {
    let err = to_chat(&json!({
        "input": "news?",
        "tools": [{"type": "web_search_preview"}],
        "tool_choice": {"type": "web_search_preview"}
    }))
    .expect_err("cannot run web search");
    assert!(matches!(err, TranslateError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("web_search_preview"), "{err}");
    assert_eq!(err.param(), "tool_choice");
    assert_eq!(err.code(), "unsupported_value");
}

#[test]
fn required_tool_choice_with_only_hosted_tools_is_unsupported_naming_them() {
    let err = to_chat(&json!({
        "input": "find it",
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "code_interpreter", "container": {"type": "auto"}}],
        "tool_choice": "required"
    }))
    .expect_err("no tool can be called");
    assert!(matches!(err, TranslateError::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string().contains("file_search, code_interpreter"),
        "{err}"
    );
}

#[test]
fn hosted_tool_declarations_are_dropped_and_reported_once_each() {
    let req = to_chat(&json!({
        "input": "hi",
        "tools": [
            {"type": "web_search"},
            {"type": "mcp", "server_label": "a", "server_url": "https://a.example/mcp"},
            {"type": "mcp", "server_label": "b", "server_url": "https://b.example/mcp"},
            {"type": "image_generation"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": true
    }))
    .expect("translates");
    assert_eq!(req.dropped_tools, ["web_search", "mcp", "image_generation"]);
    assert!(req.body.get("tools").is_none(), "no chat tools");
    assert!(
        req.body.get("tool_choice").is_none(),
        "tool_choice without tools is rejected by chat APIs"
    );
    assert!(req.body.get("parallel_tool_calls").is_none());
}

#[test]
fn input_that_is_neither_a_string_nor_an_array_is_invalid_naming_input() {
    let err = to_chat(&json!({"input": 42})).expect_err("bad input");
    assert!(matches!(err, TranslateError::Invalid { .. }));
    assert_eq!(err.param(), "input");
    assert!(err.to_string().contains("input"), "{err}");
}

#[test]
fn a_missing_input_is_invalid_unless_a_previous_response_is_continued() {
    assert_eq!(
        to_chat(&json!({"model": "m"}))
            .expect_err("no input")
            .param(),
        "input"
    );
    assert!(to_chat(&json!({"previous_response_id": "resp_1"})).is_ok());
}

#[test]
fn a_message_item_without_content_is_invalid_naming_its_path() {
    let err = to_chat(
        &json!({"input": [{"role": "user", "content": "a"}, {"type": "message", "role": "user"}]}),
    )
    .expect_err("no content");
    assert_eq!(err.param(), "input[1].content");
    assert_eq!(err.to_string(), "input[1].content is required");
}

#[test]
fn wrong_types_are_invalid_naming_the_field() {
    let cases = [
        (json!({"input": "x", "temperature": "hot"}), "temperature"),
        (
            json!({"input": "x", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
        (json!({"input": "x", "stream": "yes"}), "stream"),
        (json!({"input": "x", "instructions": ["a"]}), "instructions"),
        (
            json!({"input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"input": [{"type": "function_call_output", "output": "x"}]}),
            "input[0].call_id",
        ),
        (
            json!({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
            "input[0].arguments",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
            "input[0].content[0].text",
        ),
        (
            json!({"input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
            "text.format.schema",
        ),
        (json!([1, 2]), ""),
    ];
    for (req, param) in cases {
        let err = to_chat(&req).expect_err(&req.to_string());
        assert!(
            matches!(err, TranslateError::Invalid { .. }),
            "{req}: {err:?}"
        );
        assert_eq!(err.param(), param, "{req}");
    }
}

#[test]
fn images_become_image_parts_and_images_by_file_id_are_unsupported() {
    let req = to_chat(&json!({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"}
    ]}]}))
    .expect("translates");
    assert_eq!(
        req.body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}}
        ])
    );
    let err = to_chat(&json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}))
        .expect_err("needs the file store");
    assert!(matches!(err, TranslateError::Unsupported { .. }));
    assert_eq!(err.param(), "input[0].content[0]");
}

#[test]
fn stored_prompts_and_conversations_are_unsupported() {
    for key in ["prompt", "conversation"] {
        let err = to_chat(&json!({"input": "x", key: {"id": "p_1"}})).expect_err(key);
        assert!(matches!(err, TranslateError::Unsupported { .. }));
        assert_eq!(err.param(), key);
    }
    let err = to_chat(&json!({"input": [{"type": "item_reference", "id": "msg_1"}]}))
        .expect_err("reference");
    assert_eq!(err.param(), "input[0]");
}

#[test]
fn developer_and_shorthand_messages_become_chat_roles() {
    let req = to_chat(&json!({
        "instructions": "Be terse.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"role": "system", "content": [{"type": "input_text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}
        ]
    }))
    .expect("translates");
    assert_eq!(
        req.body["messages"],
        json!([
            {"role": "system", "content": "Be terse."},
            {"role": "system", "content": "Use metric units."},
            {"role": "system", "content": "No emojis."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}
        ])
    );
    assert!(req.store, "store defaults to true");
    assert!(!req.stream);
    assert!(req.body.get("stream").is_none());
}

#[test]
fn json_object_format_and_reasoning_effort_map_to_chat_fields() {
    let req = to_chat(&json!({
        "input": "x",
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "high", "summary": "detailed"},
        "stream": true
    }))
    .expect("translates");
    assert_eq!(req.body["response_format"], json!({"type": "json_object"}));
    assert_eq!(req.body["reasoning_effort"], "high");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"], json!({"include_usage": true}));
}

#[test]
fn allowed_tools_narrows_the_declared_functions() {
    let req = to_chat(&json!({
        "input": "x",
        "tools": [
            {"type": "function", "name": "read", "parameters": {"type": "object"}},
            {"type": "function", "name": "delete", "parameters": {"type": "object"}}
        ],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "read"}]}
    }))
    .expect("translates");
    assert_eq!(req.body["tools"].as_array().map(Vec::len), Some(1));
    assert_eq!(req.body["tools"][0]["function"]["name"], "read");
    assert_eq!(req.body["tool_choice"], "required");
}

#[test]
fn namespaced_tools_are_flattened_and_their_calls_come_back_with_the_namespace() {
    let req = to_chat(&json!({
        "input": [
            {"role": "user", "content": "spawn"},
            {"type": "function_call", "namespace": "multi_agent_v1", "name": "spawn_agent", "arguments": "{}", "call_id": "c0"},
            {"type": "function_call_output", "call_id": "c0", "output": "ok"}
        ],
        "tools": [{"type": "namespace", "name": "multi_agent_v1", "description": "Agents.", "tools": [
            {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}
        ]}]
    }))
    .expect("translates");
    assert_eq!(
        req.body["tools"][0]["function"]["name"],
        "multi_agent_v1__spawn_agent"
    );
    assert_eq!(
        req.body["messages"][1]["tool_calls"][0]["function"]["name"],
        "multi_agent_v1__spawn_agent"
    );
    let chat = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "multi_agent_v1__spawn_agent", "arguments": "{}"}}
    ]}, "finish_reason": "tool_calls"}]});
    let resp = from_chat_with(&chat, "m", "resp_1", 1, &req.echo);
    assert_eq!(resp["output"][0]["type"], "function_call");
    assert_eq!(resp["output"][0]["name"], "spawn_agent");
    assert_eq!(resp["output"][0]["namespace"], "multi_agent_v1");
}

#[test]
fn history_goes_after_the_new_system_messages_without_the_old_instructions() {
    let mut chat = json!({"messages": [
        {"role": "system", "content": "New instructions."},
        {"role": "user", "content": "And tomorrow?"}
    ]});
    let history = history_entry(
        &[
            json!({"role": "system", "content": "Old instructions."}),
            json!({"role": "user", "content": "Weather today?"}),
        ],
        &fixture("chat-completion.json"),
    );
    prepend_history(&mut chat, &history);
    let roles: Vec<&str> = chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(chat["messages"][0]["content"], "New instructions.");
    assert_eq!(
        chat["messages"][2],
        json!({"role": "assistant", "content": "Checking the weather in Paris.", "tool_calls": [
            {"id": "call_DdmO9pD3", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
        ]})
    );
}

// ---------------------------------------------------------------------------------------
// Non-streaming responses
// ---------------------------------------------------------------------------------------

#[test]
fn a_chat_completion_becomes_the_recorded_response() {
    let resp = from_chat(
        &fixture("chat-completion.json"),
        "auto",
        "resp_abc",
        1_795_780_800,
    );
    assert_eq!(resp, fixture("chat-completion.response.json"));
}

#[test]
fn a_response_repeats_the_request_it_answers() {
    let req = to_chat(&fixture("tool-roundtrip-request.json")).expect("translates");
    let resp = from_chat_with(
        &fixture("chat-completion.json"),
        "auto",
        "resp_abc",
        1,
        &req.echo,
    );
    assert_eq!(
        resp["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );
    assert_eq!(
        resp["tools"],
        fixture("tool-roundtrip-request.json")["tools"]
    );
    assert_eq!(resp["parallel_tool_calls"], true);
    assert_eq!(resp["previous_response_id"], "resp_earlier");
    assert_eq!(resp["store"], true);
    assert_eq!(resp["metadata"], json!({}));
}

#[test]
fn a_chat_cut_off_at_the_token_limit_is_an_incomplete_response() {
    let chat = json!({"choices": [{"message": {"role": "assistant", "content": "Once upon"}, "finish_reason": "length"}]});
    let resp = from_chat(&chat, "m", "resp_1", 1);
    assert_eq!(resp["status"], "incomplete");
    assert_eq!(
        resp["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(resp["usage"], Value::Null, "no usage is null, not zeros");
}

#[test]
fn custom_tool_calls_come_back_as_custom_tool_call_items() {
    let req = to_chat(&fixture("codex-request.json")).expect("translates");
    let chat = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n*** End Patch\\n\"}"}},
        {"id": "call_10", "type": "function", "function": {"name": "shell_command", "arguments": "{\"command\":\"ls\"}"}}
    ]}, "finish_reason": "tool_calls"}]});
    let resp = from_chat_with(&chat, "m", "resp_1", 1, &req.echo);
    assert_eq!(
        resp["output"][0],
        json!({"id": "ctc_1_0", "type": "custom_tool_call", "status": "completed", "call_id": "call_9",
               "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch\n"})
    );
    assert_eq!(resp["output"][1]["type"], "function_call");
    assert_eq!(resp["output"][1]["arguments"], "{\"command\":\"ls\"}");
}

#[test]
fn error_bodies_use_the_openai_envelope() {
    assert_eq!(
        error_body(400, "unsupported_value", "tool_choice forces web_search"),
        json!({"error": {"message": "tool_choice forces web_search", "type": "invalid_request_error", "param": null, "code": "unsupported_value"}})
    );
    assert_eq!(
        error_body(429, "rate_limit_exceeded", "m")["error"]["type"],
        "rate_limit_error"
    );
    assert_eq!(
        error_body(502, "all_providers_failed", "m")["error"]["type"],
        "upstream_error"
    );
    assert_eq!(
        error_body(401, "invalid_api_key", "m")["error"]["type"],
        "authentication_error"
    );
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

fn recorded_types(name: &str) -> Vec<String> {
    fixture(name)
        .as_array()
        .expect("a list of event types")
        .iter()
        .map(|t| t.as_str().expect("type").to_string())
        .collect()
}

#[test]
fn a_reasoning_then_text_stream_becomes_the_recorded_event_sequence() {
    let events = translate_stream(
        &dir().join("chat-stream-reasoning-text.sse"),
        Echo::default(),
    );
    assert_eq!(
        types(&events),
        recorded_types("chat-stream-reasoning-text.events.json")
    );
    let end = check_stream(&events);
    assert_eq!(end["response"]["status"], "completed");
    assert_eq!(
        end["response"]["output"][0]["summary"][0]["text"],
        "The user greets; answer briefly."
    );
    assert_eq!(
        end["response"]["output"][1]["content"][0]["text"],
        "Hello there!"
    );
    assert_eq!(
        end["response"]["usage"],
        json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
               "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 7}, "total_tokens": 32})
    );
}

#[test]
fn a_text_then_tool_calls_stream_becomes_the_recorded_event_sequence() {
    let req = to_chat(&fixture("codex-request.json")).expect("translates");
    let events = translate_stream(&dir().join("chat-stream-text-then-tools.sse"), req.echo);
    assert_eq!(
        types(&events),
        recorded_types("chat-stream-text-then-tools.events.json")
    );
    let end = check_stream(&events);
    let output = &end["response"]["output"];
    assert_eq!(output[0]["content"][0]["text"], "Let me check both.");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["call_id"], "call_A");
    assert_eq!(output[1]["arguments"], "{\"location\":\"Paris\"}");
    assert_eq!(output[2]["type"], "custom_tool_call");
    assert_eq!(output[2]["input"], "*** Begin Patch\n*** End Patch\n");
}

#[test]
fn a_stream_cut_off_at_the_token_limit_ends_with_response_incomplete() {
    let events = translate_stream(&dir().join("chat-stream-length.sse"), Echo::default());
    assert_eq!(
        types(&events),
        recorded_types("chat-stream-length.events.json")
    );
    let end = check_stream(&events);
    assert_eq!(
        end["response"]["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(end["response"]["usage"]["total_tokens"], 12);
}

#[test]
fn every_recorded_chat_stream_makes_a_well_formed_responses_stream() {
    let providers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("fixtures")
        .chain(
            std::fs::read_dir(&providers)
                .expect("provider fixtures")
                .filter_map(Result::ok)
                .filter_map(|d| std::fs::read_dir(d.path()).ok())
                .flatten(),
        )
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sse"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "found {paths:?}");
    for path in paths {
        let events = translate_stream(&path, Echo::default());
        let result = std::panic::catch_unwind(|| check_stream(&events));
        assert!(result.is_ok(), "{}: {:#?}", path.display(), types(&events));
    }
}

#[test]
fn a_failure_sends_error_then_response_failed_with_the_code() {
    let mut t = StreamTranslator::new("resp_f".into(), "m".into(), 1);
    let mut out = t.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "Hal"}}]}));
    out.extend(t.fail(
        "Rate limit reached. Please try again in 20s.",
        "rate_limit_exceeded",
    ));
    let events = events(&out);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "error",
            "response.failed"
        ]
    );
    let end = check_stream(&events);
    assert_eq!(events[5]["code"], "rate_limit_exceeded");
    assert_eq!(
        events[5]["error"]["message"],
        "Rate limit reached. Please try again in 20s."
    );
    assert_eq!(end["response"]["status"], "failed");
    assert_eq!(
        end["response"]["error"],
        json!({"code": "rate_limit_exceeded", "message": "Rate limit reached. Please try again in 20s."})
    );
    assert_eq!(end["response"]["output"][0]["status"], "in_progress");
    assert_eq!(t.final_response(), end["response"]);
}

#[test]
fn nothing_is_sent_after_the_end() {
    let mut t = StreamTranslator::new("resp_e".into(), "m".into(), 1);
    assert_eq!(t.start().len(), 2);
    assert!(t.start().is_empty(), "start once");
    assert!(!t.finish(None).is_empty());
    assert!(t
        .chunk(&json!({"choices": [{"index": 0, "delta": {"content": "late"}}]}))
        .is_empty());
    assert!(t.finish(None).is_empty());
    assert!(t.fail("x", "server_error").is_empty());
    assert_eq!(t.final_response()["status"], "completed");
    assert_eq!(t.final_response()["output"], json!([]));
}

#[test]
fn the_final_response_and_chat_completion_of_a_stream_match_what_was_sent() {
    let mut t = StreamTranslator::new("resp_s".into(), "auto".into(), 7);
    assert_eq!(t.final_response()["status"], "in_progress");
    let mut out = t.start();
    for c in chunks(&dir().join("chat-stream-reasoning-text.sse")) {
        out.extend(t.chunk(&c));
    }
    let usage = json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3});
    out.extend(t.finish(Some(&usage)));
    let end = check_stream(&events(&out));
    assert_eq!(t.final_response(), end["response"]);
    assert_eq!(
        end["response"]["usage"]["total_tokens"], 3,
        "the caller's usage wins"
    );
    let chat = t.chat_completion();
    assert_eq!(chat["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(
        chat["choices"][0]["message"]["reasoning_content"],
        "The user greets; answer briefly."
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    let history = history_entry(&[json!({"role": "user", "content": "Hi"})], &chat);
    assert_eq!(
        history[1],
        json!({"role": "assistant", "content": "Hello there!"})
    );
}

#[test]
fn parallel_tool_calls_with_interleaved_arguments_stay_apart() {
    let mut t = StreamTranslator::new("resp_p".into(), "m".into(), 1);
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let (Some(id), Some(name)) = (id, name) {
            c["id"] = json!(id);
            c["function"]["name"] = json!(name);
        }
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [c]}}]})
    };
    let mut out = t.start();
    out.extend(t.chunk(&call(0, Some("a"), Some("f"), "{\"x\":")));
    out.extend(t.chunk(&call(1, Some("b"), Some("g"), "{\"y\":")));
    out.extend(t.chunk(&call(0, None, None, "1}")));
    out.extend(t.chunk(&call(1, None, None, "2}")));
    out.extend(t.finish(None));
    let end = check_stream(&events(&out));
    assert_eq!(end["response"]["output"][0]["arguments"], "{\"x\":1}");
    assert_eq!(end["response"]["output"][1]["arguments"], "{\"y\":2}");
}
