//! The one place where text from a provider becomes text we store, show or relay: every
//! path masks any echo of the key the attempt sent (some gateways echo the whole request,
//! key included, in error messages and even in answers).
//!
//! A [`KeyMask`] is built once per key slot and shared with each attempt. Its scan is
//! linear in the text and costs about one table lookup per byte when the text holds no
//! part of the key (the usual case), so it runs on every relayed stream event.

use std::borrow::Cow;

use bytes::Bytes;

use crate::secrets::ApiKey;

/// Shortest run of the key that is masked: shorter runs occur in ordinary text.
const RUN: usize = 5;

/// Bits in the filter of the key's 5-byte windows: with a 100-byte key, about 2.5 % of
/// the positions in unrelated text pass the filter and pay for a binary search.
const FILTER_WORDS: usize = 64;

/// Masks the runs of one key in provider text. `KeyMask::default()` masks nothing
/// (keyless providers such as a local Ollama).
#[derive(Default)]
pub struct KeyMask {
    key: Option<ApiKey>,
    /// Every 5-byte window of the key, as the low 40 bits of a `u64`, sorted.
    windows: Vec<u64>,
    /// A bit per hashed window: a quick "certainly not" for most positions.
    filter: Vec<u64>,
}

impl std::fmt::Debug for KeyMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMask")
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

fn hash(w: u64) -> usize {
    // Fibonacci hashing: the top 12 bits pick one of the filter's 4096 bits.
    (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

const WINDOW_MASK: u64 = (1 << (8 * RUN)) - 1;

impl KeyMask {
    /// The mask for `key` (none for a keyless provider).
    pub fn new(key: Option<&ApiKey>) -> KeyMask {
        let Some(key) = key else {
            return KeyMask::default();
        };
        let k = key.expose().as_bytes();
        let mut windows: Vec<u64> = k
            .windows(RUN)
            .map(|w| w.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
            .collect();
        windows.sort_unstable();
        windows.dedup();
        let mut filter = vec![0u64; FILTER_WORDS];
        for &w in &windows {
            let h = hash(w);
            filter[h / 64] |= 1 << (h % 64);
        }
        KeyMask {
            key: Some(key.clone()),
            windows,
            filter,
        }
    }

    /// Whether some run of the key occurs in `text`.
    fn occurs_in(&self, text: &[u8]) -> bool {
        if self.windows.is_empty() || text.len() < RUN {
            return false;
        }
        let mut w = 0u64;
        for (i, &b) in text.iter().enumerate() {
            w = ((w << 8) | u64::from(b)) & WINDOW_MASK;
            if i + 1 < RUN {
                continue;
            }
            let h = hash(w);
            if self.filter[h / 64] & (1 << (h % 64)) != 0 && self.windows.binary_search(&w).is_ok()
            {
                return true;
            }
        }
        false
    }

    /// `text` with every run of 5 or more bytes of the key replaced by `*` (same length).
    /// In JSON (a body or an SSE event) only runs inside strings are masked, so the
    /// text stays valid JSON: a key can only be echoed inside a string, while a number
    /// may share digits with it by chance. Borrowed when nothing had to change.
    pub fn mask<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(key) = &self.key else {
            return Cow::Borrowed(text);
        };
        if !self.occurs_in(text) {
            return Cow::Borrowed(text);
        }
        let maskable = maskable_bytes(text);
        let k = key.expose().as_bytes();
        let mut out: Option<Vec<u8>> = None;
        let mut i = 0;
        while i + RUN <= text.len() {
            // The longest run of the key starting at text[i] (rare path: a run is there).
            let longest = (0..=k.len() - RUN)
                .map(|start| {
                    k[start..]
                        .iter()
                        .zip(&text[i..])
                        .zip(&maskable[i..])
                        .take_while(|((a, b), &m)| a == b && m)
                        .count()
                })
                .max()
                .unwrap_or(0);
            if longest >= RUN {
                out.get_or_insert_with(|| text.to_vec())[i..i + longest].fill(b'*');
                i += longest;
            } else {
                i += 1;
            }
        }
        out.map_or(Cow::Borrowed(text), Cow::Owned)
    }

    /// Bytes relayed to the client (an error body, an answer, a stream event): the same
    /// `Bytes` unless a run of the key had to be masked.
    pub fn relay(&self, bytes: Bytes) -> Bytes {
        match self.mask(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(masked) => Bytes::from(masked),
        }
    }

    /// Provider text to store or show (`last_error`, cooldown reasons, `/status`, the
    /// menu, `state.json`, logs): key-like words and every run of the key removed.
    pub fn text(&self, message: &str) -> String {
        let words = super::redact(message, self.key.as_ref());
        match self.mask(words.as_bytes()) {
            Cow::Borrowed(_) => words,
            Cow::Owned(masked) => String::from_utf8_lossy(&masked).into_owned(),
        }
    }
}

/// Which bytes may be masked: all of plain text; in JSON (a body that opens with `{` or
/// `[`, or an SSE event: a field line or a comment) only those inside strings.
fn maskable_bytes(text: &[u8]) -> Vec<bool> {
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    let json = start.is_some_and(|i| {
        let t = &text[i..];
        matches!(t[0], b'{' | b'[' | b':')
            || [&b"data:"[..], b"event:", b"id:", b"retry:"]
                .iter()
                .any(|field| t.starts_with(field))
    });
    if !json {
        return vec![true; text.len()];
    }
    let mut in_string = false;
    let mut escaped = false;
    text.iter()
        .map(|&b| {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                    return false;
                }
                true
            } else {
                in_string = b == b'"';
                false
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::new("sk-live-abcdefghijklmnop1234").expect("key")
    }

    #[test]
    fn text_without_the_key_is_passed_as_the_same_bytes() {
        let m = KeyMask::new(Some(&key()));
        let ev =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n");
        let out = m.relay(ev.clone());
        assert_eq!(out.as_ptr(), ev.as_ptr(), "not copied");
    }

    #[test]
    fn every_run_of_five_or_more_is_masked_wherever_it_sits() {
        let m = KeyMask::new(Some(&key()));
        let body = br#"data: {"error":{"message":"bad key sk-live-abcdefghijklmnop1234 (ghijklm) nop12"}}"#;
        let out = m.mask(body);
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        for part in ["abcde", "ghijk", "nop12", "sk-li"] {
            assert!(!text.contains(part), "{part} in {text}");
        }
        assert_eq!(text.len(), body.len());
        assert!(text.ends_with("\"}}"));
    }

    #[test]
    fn stored_text_loses_the_key_and_key_like_words() {
        let m = KeyMask::new(Some(&key()));
        let s = m.text("upstream said: key=sk-live-abcdefghijklmnop1234 was refused");
        assert!(!s.contains("abcde"), "{s}");
        assert!(s.contains("was refused"), "{s}");
        let s = m.text("echo:abcdefghij");
        assert!(!s.contains("abcde"), "{s}");
    }

    #[test]
    fn json_stays_json_when_a_number_shares_digits_with_the_key() {
        let m = KeyMask::new(ApiKey::new("kb-000000000000").as_ref());
        let ev =
            Bytes::from_static(b"data: {\"created\":1700000000,\"x\":\"kb-000000000000\"}\n\n");
        let out = m.relay(ev);
        assert_eq!(
            &out[..],
            &b"data: {\"created\":1700000000,\"x\":\"***************\"}\n\n"[..]
        );
        let plain = m.mask(b"key kb-000000000000 refused at 1700000000");
        assert_eq!(
            &plain[..],
            &b"key *************** refused at 17********"[..]
        );
    }

    #[test]
    fn a_keyless_mask_and_short_text_change_nothing() {
        let none = KeyMask::default();
        assert!(matches!(none.mask(b"anything at all"), Cow::Borrowed(_)));
        let m = KeyMask::new(Some(&key()));
        assert!(matches!(m.mask(b"sk-l"), Cow::Borrowed(_)));
    }
}
