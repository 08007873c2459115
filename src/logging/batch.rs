//! The log writer behind the formatter: a line is appended to a buffer in memory and a
//! background thread writes what has gathered to the rolling file (and stderr) a moment
//! later, in one write per sink. The request path never makes a syscall or wakes a thread
//! for its log line: the thread is woken only by the first line after a quiet spell, then
//! waits [`GATHER`] to collect whatever follows. Warnings and errors are rare and wanted
//! at once: one of them ends the wait. Idle, the thread sleeps on a condition variable and
//! costs nothing. Dropping the [`LogGuard`] writes out what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread gathers lines after being woken before writing them.
pub const GATHER: Duration = Duration::from_millis(100);

/// The batch buffer's size kept between bursts.
const KEEP_CAPACITY: usize = 64 << 10;

/// What may wait in memory if the disk stalls; lines beyond it are dropped and counted.
const MAX_PENDING: usize = 4 << 20;

/// One output of the writer thread.
pub type Sink = Box<dyn Write + Send>;

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    dropped: u64,
    /// A warning or error is waiting: write now.
    urgent: bool,
    stop: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the buffer half-written in a way
        // that matters more than losing the log, so a poisoned lock is used as is.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `MakeWriter` handed to `tracing_subscriber::fmt`: cheap to clone, appends lines.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread alive; dropping it writes out every pending line and joins it.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread for `sinks`.
pub fn start(sinks: Vec<Sink>) -> std::io::Result<(BatchWriter, LogGuard)> {
    start_with(sinks, GATHER)
}

fn start_with(sinks: Vec<Sink>, gather: Duration) -> std::io::Result<(BatchWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
    });
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("llm-rotator-log".into())
        .spawn(move || run(&thread_shared, sinks, gather))?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run(shared: &Shared, mut sinks: Vec<Sink>, gather: Duration) {
    let mut out = Vec::new();
    loop {
        let (stop, dropped) = {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.stop {
                p = shared
                    .wake
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if !p.urgent && !p.stop {
                p = shared
                    .wake
                    .wait_timeout_while(p, gather, |p| !p.urgent && !p.stop)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut p.buf, &mut out);
            p.urgent = false;
            (p.stop, std::mem::take(&mut p.dropped))
        };
        if dropped > 0 {
            out.extend_from_slice(
                format!("WARN {dropped} log lines were dropped: the log could not be written fast enough\n")
                    .as_bytes(),
            );
        }
        for sink in &mut sinks {
            // Nowhere to report a failing log sink but the log itself.
            let _ = sink.write_all(&out).and_then(|()| sink.flush());
        }
        out.clear();
        // A burst's batches grow this buffer (and, swapped, the pending one) to hundreds
        // of KB; an idle agent keeps neither that large. Regrowing under load costs a
        // realloc or two per batch.
        if out.capacity() > KEEP_CAPACITY * 4 {
            out.shrink_to(KEEP_CAPACITY);
        }
        if stop {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer for one event.
pub struct Line<'a> {
    shared: &'a Shared,
    /// A warning or an error.
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut p = self.shared.lock();
        if p.buf.len() + bytes.len() > MAX_PENDING {
            p.dropped += 1;
            return Ok(bytes.len());
        }
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(bytes);
        p.urgent |= self.urgent;
        drop(p);
        // Only the first line after the writer emptied the buffer wakes it, or a warning.
        if was_empty || self.urgent {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.shared,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink that records each write it gets.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_together_reach_every_sink_in_one_write_each() {
        let (a, b) = (Recorder::default(), Recorder::default());
        let (writer, guard) = start(vec![Box::new(a.clone()), Box::new(b.clone())]).expect("start");
        for i in 0..100 {
            writeln!(writer.make_writer(), "line {i}").expect("write");
        }
        // Written out a moment later, in far fewer writes than lines (one, unless this
        // thread stalled for a whole gathering spell between two lines).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.0.lock().expect("lock").concat().len() < 100 * "line NN\n".len() - 10 {
            assert!(std::time::Instant::now() < deadline, "lines never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        let writes = a.0.lock().expect("lock").clone();
        assert!(writes.len() <= 3, "{} writes for 100 lines", writes.len());
        let text = String::from_utf8(writes.concat()).expect("utf8");
        assert_eq!(text.lines().count(), 100);
        assert!(text.starts_with("line 0\n") && text.ends_with("line 99\n"));
        assert_eq!(b.0.lock().expect("lock").concat(), writes.concat());
        drop(guard);
    }

    #[test]
    fn dropping_the_guard_writes_out_what_is_pending() {
        let sink = Recorder::default();
        let (writer, guard) = start(vec![Box::new(sink.clone())]).expect("start");
        writeln!(writer.make_writer(), "last words").expect("write");
        // Dropped at once, before the gathering spell is over.
        drop(guard);
        assert_eq!(sink.0.lock().expect("lock").concat(), b"last words\n");
        // Lines after the end go nowhere and do not block.
        writeln!(writer.make_writer(), "too late").expect("write");
    }

    #[test]
    fn a_warning_is_written_without_waiting_for_the_gathering_spell() {
        let sink = Recorder::default();
        // A gathering spell far longer than the test waits: only urgency can end it.
        let (writer, guard) =
            start_with(vec![Box::new(sink.clone())], Duration::from_secs(600)).expect("start");
        writeln!(writer.make_writer(), "info line").expect("write");
        let warn = tracing::Metadata::new(
            "w",
            "t",
            tracing::Level::WARN,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        writeln!(writer.make_writer_for(&warn), "warning").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if sink.0.lock().expect("lock").concat() == b"info line\nwarning\n" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the warning waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(guard);
    }

    struct Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static CALLSITE: Callsite = Callsite;

    #[test]
    fn a_stalled_sink_drops_lines_beyond_the_limit_and_says_so() {
        let sink = Recorder::default();
        let (writer, guard) = start(vec![Box::new(sink.clone())]).expect("start");
        let line = vec![b'x'; 1 << 20];
        for _ in 0..6 {
            writer.make_writer().write_all(&line).expect("write");
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().expect("lock").concat()).expect("utf8");
        assert!(text.contains("log lines were dropped"), "{}", text.len());
        assert!(text.len() <= MAX_PENDING + 200);
    }
}
