//! One client connection's clock: a request's headers must arrive within
//! `server.header_read_timeout_secs` of its first byte (of connecting, for the first
//! request), and a kept-alive connection with no request in flight is closed after
//! `server.idle_timeout_secs`. Together with the cap on open connections (in the accept
//! loop) this bounds what slow or idle clients can hold: without them, 2000 clients that
//! each sent half a header held 808 MB, and idle keep-alive connections were never closed.
//!
//! Why not hyper's own `header_read_timeout`: hyper 1.x arms it as soon as a kept-alive
//! connection goes idle, before any byte of the next request, so it doubles as an idle
//! timeout of the same short length. A client whose pooled connection is closed that way
//! just as it sends its next POST sees a failure it may not retry. Here the header clock
//! starts with the next request's first byte, and the idle clock is separate and long.
//!
//! [`State`] is the pure core (time passed in); [`Watched`] (the socket) and [`Tracked`]
//! (the service) feed it through a shared [`Clock`], and the connection's task waits on
//! [`Clock::expired`] beside the connection. This module never looks at what is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The two time bounds of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte to the end of its headers.
    pub header_read: Duration,
    /// With no request in flight and no byte of the next one.
    pub idle: Duration,
}

/// Why a connection's clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request's headers did not arrive in time.
    HeaderRead,
    /// No request came in time.
    Idle,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight and no byte of the next one, since then.
    Idle(Instant),
    /// A request began then (its first byte, or the connection itself); its headers are
    /// not complete yet.
    Head(Instant),
    /// This many requests are being answered (their headers were read): no clock runs.
    Busy(usize),
}

/// The pure state machine: transitions take `now`, [`State::deadline`] says when the
/// connection is due to be closed and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    phase: Phase,
}

impl State {
    /// A connection just accepted: the client connected to send a request, so its
    /// headers are due within the header timeout (a client that connects and sends
    /// nothing is not kept for the whole idle timeout).
    pub fn new(now: Instant) -> State {
        State {
            phase: Phase::Head(now),
        }
    }

    /// Bytes arrived from the client. Returns whether the deadline changed.
    pub fn bytes_arrived(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Idle(_) => {
                self.phase = Phase::Head(now);
                true
            }
            // Later bytes of the same headers, or a request body: nothing changes.
            Phase::Head(_) | Phase::Busy(_) => false,
        }
    }

    /// A request's headers were read and it is being answered.
    pub fn request_started(&mut self) {
        self.phase = match self.phase {
            Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
            Phase::Idle(_) | Phase::Head(_) => Phase::Busy(1),
        };
    }

    /// A response was sent (or abandoned).
    pub fn response_done(&mut self, now: Instant) {
        self.phase = match self.phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(now),
        };
    }

    /// When the connection is to be closed, and why; `None` while a request runs.
    pub fn deadline(&self, limits: Limits) -> Option<(Instant, Expiry)> {
        match self.phase {
            Phase::Idle(since) => Some((since + limits.idle, Expiry::Idle)),
            Phase::Head(since) => Some((since + limits.header_read, Expiry::HeaderRead)),
            Phase::Busy(_) => None,
        }
    }
}

/// A connection's [`State`], shared by its socket, its service and its task.
pub struct Clock {
    state: Mutex<State>,
    limits: Limits,
}

impl Clock {
    /// The clock of a connection accepted now.
    pub fn new(limits: Limits) -> Arc<Clock> {
        Arc::new(Clock {
            state: Mutex::new(State::new(Instant::now())),
            limits,
        })
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // The state is plain data, valid whatever a panicking holder did.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    fn bytes_arrived(&self) {
        self.update(|s| s.bytes_arrived(Instant::now()));
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.update(State::request_started);
        InFlight(Arc::clone(self))
    }

    /// Completes when the connection is due to be closed, with the reason. The state is
    /// read at its deadline and at least every half header timeout, so a request never
    /// wakes this task: the request path pays a lock and a clock read, not a wake-up and
    /// a timer per change (a header deadline is seen at most half its length late).
    pub async fn expired(&self) -> Expiry {
        let check = (self.limits.header_read / 2).max(Duration::from_millis(50));
        loop {
            let now = Instant::now();
            let next = match self.update(|s| s.deadline(self.limits)) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => at.min(now + check),
                None => now + check,
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A request in flight; dropping it (the response body was sent, or dropped) starts the
/// idle clock.
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| s.response_done(Instant::now()));
    }
}

/// The client socket, telling the clock when bytes arrive.
pub struct Watched<T> {
    io: T,
    clock: Arc<Clock>,
}

impl<T> Watched<T> {
    /// Wraps `io`.
    pub fn new(io: T, clock: Arc<Clock>) -> Watched<T> {
        Watched { io, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connection's service, telling the clock when a request starts and (through its
/// response body) when it ends.
pub struct Tracked<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, clock: Arc<Clock>) -> Tracked<S> {
        Tracked { inner, clock }
    }
}

/// A boxed response future (one allocation per request, next to the router's own).
type Responding<B, E> =
    Pin<Box<dyn Future<Output = Result<hyper::Response<Guarded<B>>, E>> + Send>>;

impl<S, R, B> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
    B: 'static,
{
    type Response = hyper::Response<Guarded<B>>;
    type Error = S::Error;
    type Future = Responding<B, S::Error>;

    fn call(&self, req: R) -> Self::Future {
        let guard = self.clock.request_started();
        let responding = self.inner.call(req);
        Box::pin(async move {
            let resp = responding.await?;
            Ok(resp.map(|body| Guarded {
                body,
                _in_flight: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
pub struct Guarded<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_new_connection_must_send_its_headers_within_the_header_timeout() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        assert_eq!(s.deadline(LIMITS), Some((at(t0, 10), Expiry::HeaderRead)));
        // More bytes of the same headers do not buy more time.
        assert!(!s.bytes_arrived(at(t0, 5)));
        assert_eq!(s.deadline(LIMITS), Some((at(t0, 10), Expiry::HeaderRead)));
    }

    #[test]
    fn no_clock_runs_while_a_request_is_answered() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.request_started();
        assert_eq!(s.deadline(LIMITS), None);
        // A request body arriving changes nothing.
        assert!(!s.bytes_arrived(at(t0, 500)));
        assert_eq!(s.deadline(LIMITS), None);
    }

    #[test]
    fn between_requests_only_the_idle_clock_runs_until_the_next_request_begins() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.request_started();
        s.response_done(at(t0, 1));
        assert_eq!(s.deadline(LIMITS), Some((at(t0, 76), Expiry::Idle)));
        // Idle for longer than the header timeout, then a request begins.
        assert!(s.bytes_arrived(at(t0, 31)));
        assert_eq!(s.deadline(LIMITS), Some((at(t0, 41), Expiry::HeaderRead)));
        s.request_started();
        assert_eq!(s.deadline(LIMITS), None);
    }

    #[test]
    fn pipelined_requests_keep_the_connection_busy_until_the_last_answer() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.request_started();
        s.request_started();
        s.response_done(at(t0, 1));
        assert_eq!(s.deadline(LIMITS), None);
        s.response_done(at(t0, 2));
        assert_eq!(s.deadline(LIMITS), Some((at(t0, 77), Expiry::Idle)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_expires_on_the_deadline_and_follows_changes() {
        let clock = Clock::new(LIMITS);
        let started = Instant::now();
        assert_eq!(clock.expired().await, Expiry::HeaderRead);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let clock = Clock::new(LIMITS);
        let guard = clock.request_started();
        let waiting = tokio::spawn({
            let clock = Arc::clone(&clock);
            async move { clock.expired().await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!waiting.is_finished(), "expired while a request ran");
        let done = Instant::now();
        drop(guard);
        assert_eq!(waiting.await.expect("task"), Expiry::Idle);
        assert_eq!(done.elapsed(), Duration::from_secs(75));
    }
}
