//! `POST /v1/completions` (the legacy text-completions API), translated to chat
//! completions over the same rotation: the prompt becomes one user message, the answer's
//! message text becomes `choices[].text`. What cannot be translated (`suffix`, `echo`,
//! `logprobs`, `best_of`, several prompts in one request) is refused with a 400 naming
//! it, never silently dropped.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::events::ChatEvent;
use crate::http::error::ApiError;

/// The chat request for a completions request, or why it cannot be translated.
pub fn to_chat(req: &Value) -> Result<Value, ApiError> {
    let obj = req
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    for unsupported in ["suffix", "echo", "logprobs", "best_of"] {
        if obj
            .get(unsupported)
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(ApiError::bad_request(format!(
                "`{unsupported}` cannot be translated to the chat completions the providers speak; leave it out or use /v1/chat/completions"
            )));
        }
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request(
                "`prompt` must be one string: several prompts (or token arrays) in one request cannot be translated to chat; send one request each",
            ))
        }
        _ => return Err(ApiError::bad_request("`prompt` is required: a string")),
    };
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(json!("auto")),
    );
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    for passed in [
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "logit_bias",
        "stream",
        "stream_options",
    ] {
        if let Some(v) = obj.get(passed) {
            chat.insert(passed.into(), v.clone());
        }
    }
    Ok(Value::Object(chat))
}

/// A chat completion as a text completion.
pub fn from_chat(chat: &Value) -> Value {
    let choices: Vec<Value> = chat["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "text": c["message"]["content"].as_str().unwrap_or_default(),
                "index": c["index"].as_u64().unwrap_or(0),
                "logprobs": null,
                "finish_reason": c["finish_reason"].clone(),
            })
        })
        .collect();
    json!({
        "id": chat["id"].as_str().map(|id| id.replace("chatcmpl", "cmpl")).unwrap_or_else(|| "cmpl-rotator".into()),
        "object": "text_completion",
        "created": chat["created"].clone(),
        "model": chat["model"].clone(),
        "choices": choices,
        "usage": chat["usage"].clone(),
    })
}

/// One relayed chat event as text-completion stream events.
pub fn stream_event(ev: ChatEvent) -> Vec<Bytes> {
    match ev {
        ChatEvent::Done => vec![Bytes::from_static(b"data: [DONE]\n\n")],
        ChatEvent::Error { message, kind } => {
            let e = json!({"error": {"message": message, "type": kind}});
            vec![Bytes::from(format!("data: {e}\n\n"))]
        }
        ChatEvent::Chunk(c) => {
            let choices: Vec<Value> = c["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|ch| {
                    json!({
                        "text": ch["delta"]["content"].as_str().unwrap_or_default(),
                        "index": ch["index"].as_u64().unwrap_or(0),
                        "logprobs": null,
                        "finish_reason": ch["finish_reason"].clone(),
                    })
                })
                .collect();
            let mut out = json!({
                "id": c["id"].as_str().map(|id| id.replace("chatcmpl", "cmpl")).unwrap_or_default(),
                "object": "text_completion",
                "created": c["created"].clone(),
                "model": c["model"].clone(),
                "choices": choices,
            });
            if c.get("usage").is_some_and(Value::is_object) {
                out["usage"] = c["usage"].clone();
            }
            vec![Bytes::from(format!("data: {out}\n\n"))]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_becomes_one_user_message_and_the_answer_text() {
        let chat = to_chat(
            &json!({"model": "auto", "prompt": "Once upon", "max_tokens": 5, "stop": ["\n"]}),
        )
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "Once upon"}])
        );
        assert_eq!(chat["max_tokens"], 5);
        assert_eq!(chat["stop"], json!(["\n"]));
        let done = from_chat(&json!({"id": "chatcmpl-1", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " a time"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}));
        assert_eq!(done["object"], "text_completion");
        assert_eq!(done["choices"][0]["text"], " a time");
        assert_eq!(done["id"], "cmpl-1");
        assert_eq!(done["usage"]["total_tokens"], 5);
    }

    #[test]
    fn what_cannot_be_translated_is_a_clear_400() {
        for (body, word) in [
            (json!({"prompt": "x", "suffix": "y"}), "suffix"),
            (json!({"prompt": "x", "echo": true}), "echo"),
            (json!({"prompt": ["a", "b"]}), "several prompts"),
            (json!({"prompt": [1, 2]}), "several prompts"),
            (json!({"max_tokens": 1}), "`prompt` is required"),
        ] {
            let err = to_chat(&body).expect_err("refused");
            assert_eq!(err.status.as_u16(), 400);
            assert!(err.message.contains(word), "{}", err.message);
        }
        assert!(to_chat(&json!({"prompt": "x", "echo": false})).is_ok());
    }
}
