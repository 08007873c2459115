//! Relaying a streamed answer. Upstream bytes are framed into SSE events as they arrive;
//! each event is checked against the client contract ([`super::contract`]) and goes out
//! as the same `Bytes` unless a rule needed a fix.
//!
//! Until the first data event the attempt can still fail and rotate: a stream that ends,
//! breaks or stays silent before it, or whose first event is an error object (OpenRouter
//! and gateways report upstream failures that way), is a failed attempt and nothing has
//! reached the client. Comments before it (": OPENROUTER PROCESSING") are held back. The
//! wait for it is bounded by the request's remaining start budget, so a client that gives
//! up after 120 s of silence never does while the proxy rotates.
//!
//! After it: a stream that breaks or goes silent ends with an SSE error event, an error
//! object from the provider is passed on as `{"error":{"message","type"}}` and the stream
//! closes, and a stream that ends without `data: [DONE]` gets it appended.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{FutureExt, Stream, StreamExt};

use super::contract::{client_error_event, error_event, ChunkFixer, Kind};
use super::rotate::AnswerBody;
use super::sse::Framer;
use crate::engine::Engine;
use crate::pool::{Attempt, Outcome};
use crate::telemetry::{Reason, Tally};
use crate::upstream;

type Upstream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Where a streamed attempt began: its request's telemetry tally and when it was sent
/// (the usage history's latency runs from then to the first event).
pub(super) struct Sent {
    pub tally: Tally,
    pub at: std::time::Instant,
}

/// Waits (at most `wait`) for the first data event, then commits to this provider and
/// relays the rest. `Err` is the outcome of a failed attempt; nothing was sent then.
pub(super) async fn relay(
    engine: &Engine,
    attempt: &Attempt,
    Sent { tally, at: sent_at }: Sent,
    resp: reqwest::Response,
    wait: Duration,
    idle: Duration,
    usage_for: Option<u64>,
) -> Result<AnswerBody, Outcome> {
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    let now = Utc::now();
    let mut upstream: Upstream = Box::pin(resp.bytes_stream());
    let mut framer = Framer::default();
    let nonce = u64::try_from(now.timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
    let mut fixer = ChunkFixer::new(
        &attempt.model,
        u64::try_from(now.timestamp()).unwrap_or(0),
        nonce ^ attempt.key_id,
    );
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let deadline = tokio::time::Instant::now() + wait;
    let transient = |reason: String| Outcome::Transient {
        reason,
        reached: true,
    };
    let mut ended = false;
    let mut held_back = 0usize;
    let first_tokens;
    // The events of the committing chunk that came after the first data event.
    let leftover: Vec<Bytes>;
    'wait: loop {
        let next = tokio::time::timeout_at(deadline, upstream.next()).await;
        let chunk = match next {
            Err(_) => {
                return Err(transient(format!(
                    "no stream data within {}s",
                    wait.as_secs()
                )))
            }
            Ok(Some(Err(e))) => {
                return Err(transient(format!("stream broke before any data: {e}")))
            }
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(None) => None,
        };
        let mut events = Vec::new();
        match chunk {
            Some(c) => {
                if let Err(e) = framer.push(c, &mut events) {
                    engine.pool.count_oversized(attempt);
                    engine
                        .telemetry
                        .cooldown(&attempt.provider.name, Reason::OversizedEvent);
                    return Err(transient(e.to_string()));
                }
            }
            None => {
                ended = true;
                events.extend(framer.finish());
            }
        }
        let mut events = events.into_iter();
        while let Some(ev) = events.next() {
            let seen = fixer.event(ev);
            match seen.kind {
                Kind::Other => {
                    // Comments and pings before the first data event mean nothing to the
                    // client: a few are kept, the rest dropped, so a provider that sends
                    // only those cannot fill memory while the start budget runs.
                    if held_back < HELD_BACK_BYTES {
                        held_back += seen.out.len();
                        queue.push_back(attempt.mask.relay(seen.out));
                    }
                }
                Kind::Error(payload) => {
                    return Err(upstream::classify_stream_error(
                        attempt.provider.quirks.kind,
                        &payload,
                        attempt.key.as_ref(),
                        Utc::now(),
                    ))
                }
                Kind::Chunk | Kind::Done => {
                    first_tokens = seen.tokens;
                    if seen.kind == Kind::Done {
                        if let Some(prompt) = usage_for.filter(|_| !fixer.usage_sent) {
                            queue.push_back(fixer.usage_chunk(prompt));
                        }
                    }
                    queue.push_back(attempt.mask.relay(seen.out));
                    leftover = events.collect();
                    break 'wait;
                }
            }
        }
        if ended {
            return Err(transient("stream ended before any data".into()));
        }
    }
    super::rotate::report(
        engine,
        attempt,
        &Outcome::Success { tokens: None },
        Some(sent_at.elapsed()),
    );
    let mut state = RelayState {
        upstream,
        framer,
        fixer,
        queue,
        events: Vec::new(),
        burst: BurstBackoff::default(),
        idle,
        engine: engine.clone(),
        attempt: attempt.clone(),
        tally,
        usage_for,
        tokens: first_tokens,
        closed: false,
    };
    for ev in leftover {
        state.handle(ev);
    }
    if ended {
        state.end();
    }
    Ok(AnswerBody::Stream {
        content_type: ct,
        events: Box::pin(futures_util::stream::unfold(state, next_chunk)),
    })
}

struct RelayState {
    upstream: Upstream,
    framer: Framer,
    fixer: ChunkFixer,
    queue: VecDeque<Bytes>,
    /// Scratch space for the events of one chunk.
    events: Vec<Bytes>,
    /// When to look for a burst.
    burst: BurstBackoff,
    idle: Duration,
    engine: Engine,
    /// Who is answering: for tokens, errors, and the mask every event goes through.
    attempt: Attempt,
    /// Which request, for its tokens in the telemetry.
    tally: Tally,
    /// When the client asked for usage: the prompt estimate for a usage chunk the
    /// provider leaves out.
    usage_for: Option<u64>,
    /// The last token count the provider reported. Counted once, when the stream is
    /// over: Groq reports the same usage twice (on the finish chunk and in a trailing
    /// usage chunk).
    tokens: Option<crate::history::Tokens>,
    /// No more reading: the queue is the rest of the stream.
    closed: bool,
}

impl RelayState {
    fn handle(&mut self, ev: Bytes) {
        if self.closed {
            return;
        }
        let seen = self.fixer.event(ev);
        if seen.tokens.is_some() {
            self.tokens = seen.tokens;
        }
        match seen.kind {
            Kind::Error(payload) => {
                // Gateways echo the request, key included, in such errors: masked before
                // it is relayed or stored.
                let payload = self.attempt.mask.relay(payload);
                let event = client_error_event(&payload);
                let msg =
                    upstream::error_message(&payload).unwrap_or_else(|| "error event".to_string());
                self.engine.pool.note_error(
                    &self.attempt,
                    &format!("the provider's stream reported an error: {msg}"),
                );
                tracing::warn!(provider = %self.attempt.provider.name, "stream reported an error midway");
                self.queue.push_back(event);
                self.closed = true;
            }
            Kind::Done => {
                self.close_usage();
                self.queue.push_back(seen.out);
            }
            _ => self.queue.push_back(self.attempt.mask.relay(seen.out)),
        }
    }

    /// Before `[DONE]`: the usage chunk the client asked for, if the provider sent none.
    fn close_usage(&mut self) {
        if let Some(prompt) = self.usage_for.filter(|_| !self.fixer.usage_sent) {
            let chunk = self.fixer.usage_chunk(prompt);
            self.queue.push_back(chunk);
        }
    }

    fn end(&mut self) {
        if let Some(ev) = self.framer.finish() {
            self.handle(ev);
        }
        if !self.closed && !self.fixer.saw_done {
            self.close_usage();
            self.queue
                .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        self.closed = true;
    }

    /// What the upstream stream gave: a chunk, a break, or its end.
    fn take(&mut self, item: Option<reqwest::Result<Bytes>>) {
        match item {
            Some(Ok(chunk)) => {
                let framed = self.framer.push(chunk, &mut self.events);
                let mut events = std::mem::take(&mut self.events);
                for ev in events.drain(..) {
                    self.handle(ev);
                }
                self.events = events;
                if let Err(e) = framed {
                    tracing::warn!(provider = %self.attempt.provider.name, "{e}; the stream was ended");
                    self.engine.pool.count_oversized(&self.attempt);
                    self.engine
                        .telemetry
                        .cooldown(&self.attempt.provider.name, Reason::OversizedEvent);
                    self.fail(format!("{e}; the stream was ended"), "upstream_error");
                }
            }
            Some(Err(e)) => {
                tracing::warn!(provider = %self.attempt.provider.name, "stream broke off midway");
                self.fail(
                    format!("the provider's stream broke off: {e}"),
                    "upstream_error",
                );
            }
            None => self.end(),
        }
    }

    /// The upstream connection hands over what one read brought one chunk at a time.
    /// Lets it hand over the rest of a burst before answering, so events that arrived
    /// together go to the client in one write instead of one write (and one wake-up of
    /// the client) each. Nothing waits for data that has not arrived: the first empty poll
    /// ends the burst. A stream whose chunks come one at a time (paced tokens) stops
    /// paying for the look: after each look that finds nothing, the next few chunks skip
    /// it (doubling up to [`BURST_BACKOFF_MAX`]); a look that finds more resets that.
    async fn collect_burst(&mut self) {
        if !self.burst.should_look() {
            return;
        }
        let mut found = 0;
        while found < BURST && !self.closed {
            // Asking is also what tells the upstream connection that more is wanted: it
            // decodes the next chunk only then.
            if let Some(item) = self.upstream.next().now_or_never() {
                self.take(item);
                found += 1;
                continue;
            }
            LetOthersRun(2).await;
            match self.upstream.next().now_or_never() {
                Some(item) => {
                    self.take(item);
                    found += 1;
                }
                None => break,
            }
        }
        self.burst.looked(found > 0);
    }

    fn fail(&mut self, msg: String, kind: &str) {
        self.engine.pool.note_error(&self.attempt, &msg);
        self.queue.push_back(error_event(&msg, kind));
        self.closed = true;
    }
}

impl Drop for RelayState {
    /// The stream is over (ended, failed, or the client left): its tokens are counted.
    fn drop(&mut self) {
        crate::memory::note_activity();
        if let Some(t) = self.tokens.take() {
            let now = Utc::now();
            self.engine.pool.add_tokens(&self.attempt, t.total, now);
            self.engine
                .telemetry
                .stream_tokens(self.tally, &self.attempt, t.total, now);
            self.engine.history.tokens(&self.attempt, t, now);
        }
    }
}

/// Most bytes of comments and other non-data events held back before the first data
/// event.
const HELD_BACK_BYTES: usize = 8 * 1024;

/// Most further upstream chunks collected after one, before answering (hyper writes up
/// to 16 buffers at once).
const BURST: usize = 32;

/// Most chunks that skip the look for a burst after looks that found none.
const BURST_BACKOFF_MAX: u8 = 15;

/// After each look for a burst that finds nothing, the next 1, 3, 7, then 15 chunks skip
/// the look; a look that finds more makes every chunk look again.
#[derive(Debug, Default)]
struct BurstBackoff {
    /// Chunks left that skip the look.
    skip: u8,
    /// The skip the last look set: 0 after a hit; each miss doubles it, plus one.
    backoff: u8,
}

impl BurstBackoff {
    /// Whether this chunk looks for a burst.
    fn should_look(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// After a look: whether it found more chunks.
    fn looked(&mut self, found: bool) {
        self.backoff = if found {
            0
        } else {
            (self.backoff * 2 + 1).min(BURST_BACKOFF_MAX)
        };
        self.skip = self.backoff;
    }
}

async fn next_chunk(
    mut st: RelayState,
) -> Option<(Result<Bytes, std::convert::Infallible>, RelayState)> {
    loop {
        if let Some(b) = st.queue.pop_front() {
            return Some((Ok(b), st));
        }
        if st.closed {
            return None;
        }
        match tokio::time::timeout(st.idle, st.upstream.next()).await {
            Ok(item) => {
                st.take(item);
                st.collect_burst().await;
            }
            Err(_) => {
                tracing::warn!(provider = %st.attempt.provider.name, "stream went silent");
                let msg = format!(
                    "the provider sent nothing for {}s; the stream was ended",
                    st.idle.as_secs()
                );
                st.fail(msg, "timeout");
            }
        }
    }
}

/// Gives the other tasks of this thread (the upstream connection) `n` turns: wakes itself
/// and is pending `n` times. Unlike `tokio::task::yield_now` it does not wait for a poll
/// of the I/O driver, so it costs no system call. Two turns are what the upstream
/// connection takes to decode and hand over a chunk it already holds (measured: with one,
/// no burst was ever collected).
struct LetOthersRun(u8);

impl std::future::Future for LetOthersRun {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 == 0 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_streams_look_for_bursts_ever_less_often_and_a_burst_resets_that() {
        let mut b = BurstBackoff::default();
        let mut pattern = String::new();
        for _ in 0..40 {
            if b.should_look() {
                pattern.push('L');
                b.looked(false);
            } else {
                pattern.push('.');
            }
        }
        assert_eq!(
            pattern, "L.L...L.......L...............L.........",
            "1, 3, 7, then 15 chunks skip the look"
        );
        // A look that finds a burst: every chunk looks again.
        while !b.should_look() {}
        b.looked(true);
        assert!(b.should_look());
        b.looked(true);
        assert!(b.should_look());
    }
}
