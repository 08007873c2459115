//! Framing a byte stream into SSE events (each up to and including its blank line), in
//! time linear in the bytes: every byte is scanned once, however the stream is cut into
//! chunks. Events wholly inside one chunk are slices of it; only an event cut by a chunk
//! boundary is copied, once. An event may not grow past [`MAX_EVENT_BYTES`]: a provider
//! that sends a line that never ends cannot hold memory or a core.

use bytes::{Bytes, BytesMut};

/// Largest SSE event accepted (a streamed chunk is a few hundred bytes; a whole tool
/// call's arguments in one event can reach a few hundred KB).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// An event grew past [`MAX_EVENT_BYTES`] without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the provider sent an SSE event larger than {} MB", MAX_EVENT_BYTES / 1024 / 1024)]
pub struct Oversized;

/// Splits a byte stream into SSE events.
#[derive(Default)]
pub struct Framer {
    /// The unfinished event.
    carry: BytesMut,
    /// Where the current line of `carry` starts.
    line_start: usize,
    /// How much of `carry` was scanned for line ends.
    scanned: usize,
}

impl Framer {
    /// Appends the complete events in `chunk` to `out` and keeps an unfinished tail; an
    /// unfinished event past the size limit is an error (and is dropped).
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), Oversized> {
        if self.carry.is_empty() {
            // The usual case: whole events are slices of the chunk itself.
            let mut start = 0;
            let mut line = 0;
            while let Some(nl) = memchr(b'\n', &chunk[line..]) {
                let end = line + nl;
                let blank = end == line || (end == line + 1 && chunk[line] == b'\r');
                line = end + 1;
                if blank {
                    out.push(chunk.slice(start..line));
                    start = line;
                }
            }
            if start < chunk.len() {
                self.carry.extend_from_slice(&chunk[start..]);
                self.line_start = line - start;
                self.scanned = self.carry.len();
            }
            return self.check();
        }
        self.carry.extend_from_slice(&chunk);
        while let Some(nl) = memchr(b'\n', &self.carry[self.scanned..]) {
            let end = self.scanned + nl;
            let blank = end == self.line_start
                || (end == self.line_start + 1 && self.carry[self.line_start] == b'\r');
            self.scanned = end + 1;
            self.line_start = end + 1;
            if blank {
                out.push(self.carry.split_to(end + 1).freeze());
                self.scanned = 0;
                self.line_start = 0;
            }
        }
        self.scanned = self.carry.len();
        self.check()
    }

    fn check(&mut self) -> Result<(), Oversized> {
        if self.carry.len() > MAX_EVENT_BYTES {
            self.carry = BytesMut::new();
            self.line_start = 0;
            self.scanned = 0;
            return Err(Oversized);
        }
        Ok(())
    }

    /// At the end of the stream: an unterminated last event, completed.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.line_start = 0;
        self.scanned = 0;
        if self.carry.iter().all(u8::is_ascii_whitespace) {
            self.carry.clear();
            return None;
        }
        self.carry.extend_from_slice(b"\n\n");
        Some(self.carry.split().freeze())
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The events of `text`, framed the slow, obvious way.
    fn reference(text: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut events = Vec::new();
        let mut start = 0;
        let mut line = 0;
        for (i, &b) in text.iter().enumerate() {
            if b == b'\n' {
                let l = &text[line..i];
                if l.is_empty() || l == b"\r" {
                    events.push(text[start..=i].to_vec());
                    start = i + 1;
                }
                line = i + 1;
            }
        }
        (events, text[start..].to_vec())
    }

    #[test]
    fn framer_slices_whole_events_and_joins_cut_ones() {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let chunk = Bytes::from_static(b"data: a\n\ndata: b\r\n\r\ndata: c");
        f.push(chunk.clone(), &mut out).expect("small");
        assert_eq!(out, [&b"data: a\n\n"[..], &b"data: b\r\n\r\n"[..]]);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr(), "a slice, not a copy");
        out.clear();
        f.push(Bytes::from_static(b"\n"), &mut out).expect("small");
        assert!(out.is_empty());
        f.push(Bytes::from_static(b"\n: keep-alive\n\n"), &mut out)
            .expect("small");
        assert_eq!(out, [&b"data: c\n\n"[..], &b": keep-alive\n\n"[..]]);
        assert_eq!(f.finish(), None);
        f.push(Bytes::from_static(b"data: [DONE]"), &mut out)
            .expect("small");
        assert_eq!(f.finish().as_deref(), Some(&b"data: [DONE]\n\n"[..]));
    }

    #[test]
    fn a_line_that_never_ends_is_refused_at_the_limit_in_linear_time() {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        let started = std::time::Instant::now();
        let mut refused = false;
        for _ in 0..(MAX_EVENT_BYTES / piece.len() + 2) {
            if f.push(piece.clone(), &mut out).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "an endless line is refused");
        assert!(out.is_empty());
        // 4 MB in 64 KB pieces: rescanning the carry each time would be ~130 MB of work.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // After the refusal the framer is empty again.
        f.push(Bytes::from_static(b"data: ok\n\n"), &mut out)
            .expect("small");
        assert_eq!(out.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn any_bytes_cut_anywhere_frame_like_the_reference(
            text in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'd'), Just(b':'), any::<u8>()],
                0..600,
            ),
            cuts in proptest::collection::vec(0usize..600, 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c < text.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut f = Framer::default();
            let mut out = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(text.len())) {
                f.push(Bytes::copy_from_slice(&text[prev..c]), &mut out).expect("small");
                prev = c;
            }
            let (want, tail) = reference(&text);
            let got: Vec<Vec<u8>> = out.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, want);
            let last = f.finish();
            if tail.iter().all(u8::is_ascii_whitespace) {
                prop_assert_eq!(last, None);
            } else {
                let mut t = tail.clone();
                t.extend_from_slice(b"\n\n");
                prop_assert_eq!(last.map(|b| b.to_vec()), Some(t));
            }
        }
    }
}
