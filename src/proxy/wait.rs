//! The waiting room: requests that arrive while every provider that could serve them is
//! cooling down, and the first is ready within `routing.max_wait_secs`, wait here instead
//! of getting a 429 (clients such as Osaurus never retry a 429 themselves).
//!
//! Seats are bounded (`routing.max_waiting`); past the bound a request gets today's 429.
//! Requests for the same route leave in the order they came: a waiter that wakes goes on
//! only when no older one for its route is still seated. A seat is given up when its
//! request is sent on, answered, or dropped (a client that disconnects costs nothing).
//! On shutdown every seated request is woken at once and answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::pool::Pool;

/// The room, shared by all serving threads.
pub struct WaitingRoom {
    seats: Mutex<Seats>,
    /// Bumped when a seat is given up or the room closes.
    changed: watch::Sender<u64>,
    pool: Pool,
}

#[derive(Default)]
struct Seats {
    next_ticket: u64,
    /// Ticket → route, in arrival order.
    taken: BTreeMap<u64, String>,
    closed: bool,
}

/// Why a wait ended without a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The agent is shutting down.
    Closing,
}

impl WaitingRoom {
    /// An empty room that reports how many wait to `pool` (for `/status` and the menu).
    pub fn new(pool: Pool) -> Arc<WaitingRoom> {
        let (changed, _) = watch::channel(0);
        Arc::new(WaitingRoom {
            seats: Mutex::new(Seats::default()),
            changed,
            pool,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Seats> {
        // Nothing panics while holding it; a poisoned lock still holds valid seats.
        self.seats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A seat for a request on `route`, or `None` when `max` are already taken or the
    /// agent is shutting down.
    pub fn enter(self: &Arc<Self>, route: String, max: usize) -> Option<Seat> {
        let count = {
            let mut s = self.lock();
            if s.closed || s.taken.len() >= max {
                return None;
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.taken.insert(ticket, route);
            (s.taken.len(), ticket)
        };
        self.pool.set_waiting(count.0);
        Some(Seat {
            room: Arc::clone(self),
            ticket: count.1,
        })
    }

    /// How many requests are waiting.
    pub fn count(&self) -> usize {
        self.lock().taken.len()
    }

    /// Wakes every waiting request to be answered, and seats no more.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|v| *v += 1);
    }

    fn leave(&self, ticket: u64) {
        let left = {
            let mut s = self.lock();
            s.taken.remove(&ticket);
            s.taken.len()
        };
        self.pool.set_waiting(left);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Whether the room is closing, or no older seat waits for the same route.
    fn turn(&self, ticket: u64) -> Result<bool, WaitEnd> {
        let s = self.lock();
        if s.closed {
            return Err(WaitEnd::Closing);
        }
        let Some(route) = s.taken.get(&ticket) else {
            return Ok(true);
        };
        Ok(!s.taken.range(..ticket).any(|(_, r)| r == route))
    }
}

/// One waiting request's place; given up when dropped.
pub struct Seat {
    room: Arc<WaitingRoom>,
    ticket: u64,
}

impl Seat {
    /// Waits until `until`, then for this request's turn among those for its route.
    pub async fn wait(&self, until: Instant) -> Result<(), WaitEnd> {
        let mut changed = self.room.changed.subscribe();
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            _ = changed.wait_for(|_| self.room.lock().closed) => return Err(WaitEnd::Closing),
        }
        loop {
            if self.room.turn(self.ticket)? {
                return Ok(());
            }
            if changed.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.leave(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room() -> Arc<WaitingRoom> {
        let routing = crate::config::Config::parse("", None)
            .expect("default config")
            .routing;
        WaitingRoom::new(Pool::new(
            &[],
            &std::collections::HashMap::new(),
            routing,
            chrono::Utc::now(),
        ))
    }

    #[tokio::test]
    async fn seats_are_bounded_and_given_back_when_dropped() {
        let r = room();
        let a = r.enter("any".into(), 2).expect("seat");
        let _b = r.enter("any".into(), 2).expect("seat");
        assert!(r.enter("any".into(), 2).is_none(), "full");
        assert_eq!(r.count(), 2);
        drop(a);
        assert_eq!(r.count(), 1);
        assert!(r.enter("any".into(), 2).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_older_request_for_a_route_goes_first() {
        let r = room();
        let old = r.enter("m".into(), 8).expect("seat");
        let young = r.enter("m".into(), 8).expect("seat");
        let other = r.enter("n".into(), 8).expect("seat");
        let at = Instant::now() + Duration::from_secs(2);
        // Another route is not held up by the old one.
        assert_eq!(other.wait(at).await, Ok(()));
        let young_done = tokio::spawn(async move {
            young.wait(at).await.expect("turn");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!young_done.is_finished(), "waits for the older one");
        old.wait(at).await.expect("turn");
        let left_at = Instant::now();
        drop(old);
        assert_eq!(young_done.await.expect("join"), left_at);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_wakes_every_waiter_at_once() {
        let r = room();
        let seat = r.enter("m".into(), 8).expect("seat");
        let r2 = Arc::clone(&r);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            r2.close();
        });
        let end = seat.wait(Instant::now() + Duration::from_secs(60)).await;
        assert_eq!(end, Err(WaitEnd::Closing));
        assert!(r.enter("m".into(), 8).is_none(), "no new seats");
    }
}
