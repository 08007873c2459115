//! The last [`KEPT`] requests, in memory, for the dashboard: when, on which API, for
//! which model, the providers tried, the status, latency and tokens. Never a prompt, a
//! completion or a key: there is no field that could hold one.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many requests are kept.
pub const KEPT: usize = 100;

/// One request, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentRequest {
    /// Its id (for a stream's tokens, which come later).
    pub id: u64,
    /// When it was answered (or refused).
    pub at: DateTime<Utc>,
    /// The API it came in on (`chat_completions`, `messages`, …).
    pub route: &'static str,
    /// The model the client asked for.
    pub model: String,
    /// The model that answered, if one did.
    pub answered_by: Option<String>,
    /// Providers tried, in order.
    pub providers: Vec<String>,
    /// The status the client got.
    pub status: u16,
    /// Until the answer started, in milliseconds.
    pub latency_ms: u64,
    /// Tokens used, when known (a stream's when it ends).
    pub tokens: Option<u64>,
    /// Whether it was streamed.
    pub stream: bool,
}

/// The ring, oldest first.
#[derive(Debug, Default)]
pub struct Recent {
    ring: VecDeque<RecentRequest>,
}

impl Recent {
    /// Adds a request, forgetting the oldest past [`KEPT`].
    pub fn push(&mut self, r: RecentRequest) {
        if self.ring.len() == KEPT {
            self.ring.pop_front();
        }
        self.ring.push_back(r);
    }

    /// Sets the tokens of request `id` (a stream that ended), if it is still kept.
    pub fn set_tokens(&mut self, id: u64, tokens: u64) {
        // Streams end soon after they start: look from the newest.
        if let Some(r) = self.ring.iter_mut().rev().find(|r| r.id == id) {
            r.tokens = Some(tokens);
        }
    }

    /// Every kept request, newest first.
    pub fn newest_first(&self) -> Vec<RecentRequest> {
        self.ring.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64) -> RecentRequest {
        RecentRequest {
            id,
            at: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            route: "chat_completions",
            model: "auto".into(),
            answered_by: Some("m".into()),
            providers: vec!["groq".into()],
            status: 200,
            latency_ms: 12,
            tokens: None,
            stream: true,
        }
    }

    #[test]
    fn only_the_last_hundred_requests_are_kept_newest_first() {
        let mut r = Recent::default();
        for id in 0..150 {
            r.push(req(id));
        }
        let list = r.newest_first();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].id, 149);
        assert_eq!(list[KEPT - 1].id, 50);
    }

    #[test]
    fn a_stream_gets_its_tokens_when_it_ends_and_a_forgotten_one_is_ignored() {
        let mut r = Recent::default();
        r.push(req(1));
        r.push(req(2));
        r.set_tokens(1, 42);
        r.set_tokens(99, 7);
        let list = r.newest_first();
        assert_eq!(list[1].tokens, Some(42));
        assert_eq!(list[0].tokens, None);
    }
}
