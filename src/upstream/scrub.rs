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

    /// `text` with every run of 5 or more bytes of the key replaced by `*` (same length).
    /// In JSON (a body or an SSE event) only runs inside strings are masked, so the
    /// text stays valid JSON: a key can only be echoed inside a string, while a number
    /// may share digits with it by chance. One pass: a rolling 5-byte window is checked
    /// against the key's windows (a bit filter, then a binary search) only where the
    /// last 5 bytes may be masked; the rare hit is extended to the longest run. Borrowed
    /// when nothing had to change.
    pub fn mask<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(key) = &self.key else {
            return Cow::Borrowed(text);
        };
        if self.windows.is_empty() || text.len() < RUN {
            return Cow::Borrowed(text);
        }
        let json = looks_like_json(text);
        let k = key.expose().as_bytes();
        let mut out: Option<Vec<u8>> = None;
        let mut w = 0u64;
        let (mut in_string, mut escaped) = (false, false);
        // Maskable bytes in a row, ending at the current one.
        let mut maskable_run = 0usize;
        let mut masked_until = 0usize;
        for (i, &b) in text.iter().enumerate() {
            let maskable = if !json {
                true
            } else if in_string {
                if escaped {
                    escaped = false;
                    true
                } else if b == b'\\' {
                    escaped = true;
                    true
                } else if b == b'"' {
                    in_string = false;
                    false
                } else {
                    true
                }
            } else {
                in_string = b == b'"';
                false
            };
            maskable_run = if maskable { maskable_run + 1 } else { 0 };
            w = ((w << 8) | u64::from(b)) & WINDOW_MASK;
            if maskable_run < RUN || i < masked_until {
                continue;
            }
            let h = hash(w);
            if self.filter[h / 64] & (1 << (h % 64)) == 0 || self.windows.binary_search(&w).is_err()
            {
                continue;
            }
            // A run of the key ends here: mask the longest run starting where it begins,
            // within the string (a quote or an escape ends it in JSON).
            let start = i + 1 - RUN;
            let longest = (0..=k.len() - RUN)
                .map(|from| {
                    k[from..]
                        .iter()
                        .zip(&text[start..])
                        .take_while(|(a, b)| a == b && !(json && matches!(**b, b'"' | b'\\')))
                        .count()
                })
                .max()
                .unwrap_or(0);
            if longest >= RUN {
                out.get_or_insert_with(|| text.to_vec())[start..start + longest].fill(b'*');
                masked_until = start + longest;
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

/// Whether `text` is JSON (a body that opens with `{` or `[`) or an SSE event (a field
/// line or a comment), where only strings can hold an echoed key.
fn looks_like_json(text: &[u8]) -> bool {
    let Some(i) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    let t = &text[i..];
    matches!(t[0], b'{' | b'[' | b':')
        || [&b"data:"[..], b"event:", b"id:", b"retry:"]
            .iter()
            .any(|field| t.starts_with(field))
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
