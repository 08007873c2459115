//! Giving memory back once a burst is over. A burst of requests (a thousand streams, say)
//! leaves the allocator holding the pages it used: glibc keeps them in its per-thread
//! arenas, macOS's malloc in its magazines, and the agent would sit at its peak size all
//! day. After [`QUIET`] with no request starting or ending, the agent asks the allocator
//! to return what is free (`malloc_trim` on glibc, `malloc_zone_pressure_relief` on
//! macOS) and, on Linux, lets go of its own code pages (the `code` module below): a few
//! milliseconds, once per burst, never while requests keep coming.
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
            // Milliseconds of system calls: off the runtime's thread, which also runs the
            // state file, the config watcher and signals.
            match tokio::task::spawn_blocking(release).await {
                Ok(freed) => tracing::debug!("idle: returned free memory to the system ({freed})"),
                Err(e) => tracing::debug!("idle: releasing memory failed: {e}"),
            }
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

/// Asks the allocator to return free pages to the system, and on Linux lets go of the
/// program's code pages; says what it did.
pub fn release() -> String {
    let allocator = platform::release();
    match code::release() {
        Some(code) => format!("{allocator}; {code}"),
        None => allocator.to_string(),
    }
}

/// The program's own code and read-only data, mapped from its file. Linux counts every
/// such page in the process's RSS once it is mapped, and it maps 64 KB around each page
/// touched: start-up alone (argument parsing, the config, the history file, the keychain
/// and D-Bus) leaves most of the 9 MB of code resident, used once and never again. These
/// pages are clean copies of the file, so dropping them from the process's page tables
/// loses nothing: the page cache keeps them, and the next request maps what it runs
/// again (a minor fault per 64 KB, microseconds). macOS needs none of this: Activity
/// Monitor's footprint does not count clean code pages.
#[cfg(target_os = "linux")]
mod code {
    use std::ffi::c_void;

    /// Drops the page-table entries of the program's read-only segments; says how much
    /// resident memory that gave back, or `None` when there was nothing to do.
    pub fn release() -> Option<String> {
        let before = resident()?;
        let span = drop_read_only_segments();
        let after = resident()?;
        (span > 0).then(|| {
            format!(
                "code pages let go: resident {:.1} → {:.1} MB",
                mb(before),
                mb(after)
            )
        })
    }

    fn mb(bytes: u64) -> f64 {
        bytes as f64 / (1024.0 * 1024.0)
    }

    /// The process's resident bytes (`/proc/self/statm`, in pages).
    fn resident() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page_size() as u64)
    }

    #[expect(unsafe_code, reason = "sysconf takes and returns plain integers")]
    fn page_size() -> usize {
        // SAFETY: sysconf reads a constant of the system.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096)
    }

    /// The whole pages of a segment loaded at `base + vaddr`, `len` bytes long: a
    /// page it shares with a neighbour is left out. `None` when there are none.
    fn whole_pages(base: u64, vaddr: u64, len: u64, page: usize) -> Option<(usize, usize)> {
        let first = usize::try_from(base.checked_add(vaddr)?).ok()?;
        let last = first.checked_add(usize::try_from(len).ok()?)?;
        let start = first.checked_next_multiple_of(page)?;
        let end = last.checked_div(page)?.checked_mul(page)?;
        (end > start).then_some((start, end))
    }

    /// `madvise(MADV_DONTNEED)` over the whole pages of each loaded, non-writable segment
    /// of the main program (the first object `dl_iterate_phdr` visits). Those segments
    /// are never written (no text relocations; relocated data, RELRO included, sits in
    /// segments the program headers mark writable, which are left alone), so every page
    /// in them is the file's own and reads back the same. Returns the bytes advised.
    #[expect(
        unsafe_code,
        reason = "dl_iterate_phdr hands out the loader's own program headers; madvise only on whole pages of read-only file mappings"
    )]
    fn drop_read_only_segments() -> usize {
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut c_void,
        ) -> libc::c_int {
            // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the
            // call, and `data` is the `Walk` that `drop_read_only_segments` lent.
            let (info, walk) = unsafe { (&*info, &mut *data.cast::<Walk>()) };
            if info.dlpi_phdr.is_null() {
                return 1;
            }
            for i in 0..usize::from(info.dlpi_phnum) {
                // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
                let ph = unsafe { &*info.dlpi_phdr.add(i) };
                if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
                    continue;
                }
                // Checked throughout: a panic here could not unwind out of the loader.
                let Some((start, end)) =
                    whole_pages(info.dlpi_addr, ph.p_vaddr, ph.p_memsz, walk.page)
                else {
                    continue;
                };
                // SAFETY: [start, end) lies inside a read-only mapping of the program's
                // file; dropping it only makes the next access map the file page again.
                let rc = unsafe {
                    libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED)
                };
                if rc == 0 {
                    walk.advised += end - start;
                }
            }
            // The main program comes first; the shared libraries are the system's.
            1
        }

        struct Walk {
            page: usize,
            advised: usize,
        }
        let mut walk = Walk {
            page: page_size(),
            advised: 0,
        };
        // SAFETY: `each` matches the callback type and only uses `walk` during the call.
        unsafe {
            libc::dl_iterate_phdr(Some(each), (&raw mut walk).cast::<c_void>());
        }
        walk.advised
    }

    #[cfg(test)]
    mod tests {
        use super::whole_pages;

        #[test]
        fn only_whole_pages_inside_a_segment_are_let_go() {
            // 0x2b2900..0x2b2900+0x8de700, as in the release build's code segment.
            assert_eq!(
                whole_pages(0x1000_0000, 0x2b2900, 0x8de700, 4096),
                Some((0x1000_0000 + 0x2b3000, 0x1000_0000 + 0xb91000))
            );
            // A segment smaller than a page, or inside one, gives nothing.
            assert_eq!(whole_pages(0, 0x100, 0x800, 4096), None);
            assert_eq!(whole_pages(0, 0x1000, 0x1000, 4096), Some((0x1000, 0x2000)));
        }

        #[test]
        fn absurd_headers_give_nothing_rather_than_a_panic() {
            assert_eq!(whole_pages(u64::MAX, 1, 10, 4096), None);
            assert_eq!(whole_pages(0, u64::MAX - 10, 4096, 4096), None);
            assert_eq!(whole_pages(0, 0, 8192, 0), None);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod code {
    /// Nothing to do: clean code pages are not part of the footprint macOS reports.
    pub fn release() -> Option<String> {
        None
    }
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
