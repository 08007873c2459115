//! Giving memory back once a burst is over. A burst of requests (a thousand streams, say)
//! leaves the allocator holding the pages it used: glibc keeps them in its per-thread
//! arenas, macOS's malloc in its magazines, and the agent would sit at its peak size all
//! day. After [`QUIET`] with no request starting or ending, the agent asks the allocator
//! to return what is free (`malloc_trim` on glibc, `malloc_zone_pressure_relief` on
//! macOS): a few milliseconds, once per burst, never while requests keep coming.
//!
//! The request path only bumps a counter ([`note_activity`]); the first request after a
//! release also wakes the releasing task, which otherwise sleeps and costs nothing.
//! [`Quiet`] is the pure core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

/// How long no request must start or end before free memory is returned.
pub const QUIET: Duration = Duration::from_secs(3);

/// Requests started and ended since start.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);
/// The releasing task is asleep until the next request (set after a release).
static ASLEEP: AtomicBool = AtomicBool::new(false);

fn wake() -> &'static Notify {
    static WAKE: OnceLock<Notify> = OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

/// A request started or ended. Costs an atomic add; the first call after a release also
/// wakes the releasing task.
pub fn note_activity() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
    if ASLEEP.load(Ordering::Relaxed) && ASLEEP.swap(false, Ordering::AcqRel) {
        wake().notify_one();
    }
}

/// What the releasing task does at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Requests came since the last look: look again after [`QUIET`].
    Wait,
    /// A quiet spell after activity: return free memory now, then sleep until a request.
    Release,
}

/// The pure core: fed the activity counter at each look, [`QUIET`] apart.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet {
    seen: u64,
}

impl Quiet {
    /// The counter now reads `count`.
    pub fn look(&mut self, count: u64) -> Step {
        if count != self.seen {
            self.seen = count;
            Step::Wait
        } else {
            Step::Release
        }
    }
}

/// Runs the releasing task on the current runtime until aborted.
pub fn start() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut quiet = Quiet::default();
        loop {
            tokio::time::sleep(QUIET).await;
            if quiet.look(ACTIVITY.load(Ordering::Relaxed)) == Step::Wait {
                continue;
            }
            let freed = release();
            tracing::debug!("idle: returned free memory to the system ({freed})");
            // Asleep until the next request; a request that came just before this is
            // caught by the counter check below rather than lost.
            let woken = wake().notified();
            ASLEEP.store(true, Ordering::Release);
            if quiet.look(ACTIVITY.load(Ordering::Relaxed)) == Step::Release {
                woken.await;
            } else {
                ASLEEP.store(false, Ordering::Release);
            }
        }
    })
}

/// Asks the allocator to return free pages to the system; says what it did.
pub fn release() -> &'static str {
    platform::release()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod platform {
    #[expect(
        unsafe_code,
        reason = "malloc_trim takes no pointers and is safe to call from any thread at any time"
    )]
    pub fn release() -> &'static str {
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
        let trimmed = unsafe { libc::malloc_trim(0) };
        if trimmed == 1 {
            "malloc_trim released pages"
        } else {
            "malloc_trim found nothing to release"
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    extern "C" {
        /// libmalloc: returns free memory of `zone` (all zones when null) to the system,
        /// up to `goal` bytes (0: as much as it can). Returns the bytes released.
        fn malloc_zone_pressure_relief(zone: *mut libc::malloc_zone_t, goal: usize) -> usize;
    }

    #[expect(
        unsafe_code,
        reason = "malloc_zone_pressure_relief with a null zone touches only the allocator's own free lists"
    )]
    pub fn release() -> &'static str {
        // SAFETY: a null zone means every registered zone; the call takes its own locks.
        let released = unsafe { malloc_zone_pressure_relief(std::ptr::null_mut(), 0) };
        if released > 0 {
            "malloc_zone_pressure_relief released pages"
        } else {
            "malloc_zone_pressure_relief found nothing to release"
        }
    }
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), target_os = "macos")))]
mod platform {
    pub fn release() -> &'static str {
        "this platform's allocator returns memory by itself"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_after_a_look_that_saw_no_new_activity() {
        let mut q = Quiet::default();
        assert_eq!(q.look(5), Step::Wait, "requests came: wait");
        assert_eq!(q.look(9), Step::Wait, "still coming: wait");
        assert_eq!(q.look(9), Step::Release, "a quiet spell: release");
    }

    #[test]
    fn an_agent_that_never_served_releases_at_its_first_look() {
        // Start-up itself allocates (config, clients): its leftovers go back too.
        assert_eq!(Quiet::default().look(0), Step::Release);
    }
}
