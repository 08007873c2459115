//! Reading the chat-completion events the rotation core relays, for front-ends that
//! translate them into another wire format: each event becomes a [`ChatEvent`], and a
//! translator turns it into the bytes of its own events, as they arrive.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::rotate::ChatEvents;

/// One relayed chat-completions SSE event, read.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A chunk (`chat.completion.chunk`), or the closing usage chunk.
    Chunk(Value),
    /// An error after the stream started: `{"error":{"message","type"}}`.
    Error {
        /// Its message.
        message: String,
        /// Its type.
        kind: String,
    },
    /// `data: [DONE]`.
    Done,
}

/// The events of one relayed SSE event (several when a provider packed more than one
/// into a write; none for comments).
pub fn read(raw: &[u8]) -> Vec<ChatEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let payload = data.join("\n");
        let payload = payload.trim();
        if payload == "[DONE]" {
            out.push(ChatEvent::Done);
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            continue;
        };
        match v.get("error") {
            Some(e) if v.get("choices").is_none() => out.push(ChatEvent::Error {
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error")
                    .to_string(),
                kind: e
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream_error")
                    .to_string(),
            }),
            _ => out.push(ChatEvent::Chunk(v)),
        }
    }
    out
}

/// Translates a relayed chat stream: `translate` gets each event as it arrives and
/// returns the bytes to send for it; `end` is called once when the chat stream ended
/// without `[DONE]` or an error (a stream cut short), for the translator's own close.
pub fn translate<T: Send + 'static>(
    events: ChatEvents,
    state: T,
    translate: impl FnMut(&mut T, ChatEvent) -> Vec<Bytes> + Send + 'static,
    end: impl FnOnce(&mut T) -> Vec<Bytes> + Send + 'static,
) -> ChatEvents {
    struct St<T, F, E> {
        events: ChatEvents,
        state: T,
        translate: F,
        end: Option<E>,
        closed: bool,
    }
    let st = St {
        events,
        state,
        translate,
        end: Some(end),
        closed: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.closed {
                return None;
            }
            match st.events.next().await {
                Some(Ok(raw)) => {
                    let mut out = Vec::new();
                    for ev in read(&raw) {
                        if matches!(ev, ChatEvent::Done | ChatEvent::Error { .. }) {
                            st.end = None;
                        }
                        out.extend((st.translate)(&mut st.state, ev));
                    }
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out.concat())), st));
                    }
                }
                Some(Err(never)) => match never {},
                None => {
                    st.closed = true;
                    let out = st.end.take().map(|f| f(&mut st.state)).unwrap_or_default();
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out.concat())), st));
                    }
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_errors_and_done_are_told_apart_comments_skipped() {
        let raw = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n: ping\n\ndata: {\"error\":{\"message\":\"down\",\"type\":\"upstream_error\"}}\n\ndata: [DONE]\n\n";
        let evs = read(raw);
        assert_eq!(evs.len(), 3);
        assert!(
            matches!(&evs[0], ChatEvent::Chunk(v) if v["choices"][0]["delta"]["content"] == "a")
        );
        assert_eq!(
            evs[1],
            ChatEvent::Error {
                message: "down".into(),
                kind: "upstream_error".into()
            }
        );
        assert_eq!(evs[2], ChatEvent::Done);
    }
}
