//! What of the pool is kept across restarts: the records `state.json` holds (per provider
//! and key, matched by a one-way hash of the key, never the key), and turning the live
//! state into records and back. The file itself is [`crate::pool::store`]'s.

use super::*;

/// Persisted, per key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Cooldown deadline.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Why it cools down.
    pub cooldown_reason: Option<String>,
    /// What kind of cooldown it is (absent in files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Why it cools down, as data (absent in files of older versions: then `hold` and
    /// `cooldown_reason` are read back as a [`Cause::Saved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Rejected by the provider.
    pub auth_failed: bool,
    /// Requests today on this key.
    pub request_count: u64,
    /// Tokens today on this key (absent in files of older versions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_today: u64,
    /// Models this key may not use (model → what the provider said).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub out_of_tier: BTreeMap<String, String>,
}

/// Persisted, per provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProviderRecord {
    /// Runtime toggle, when the user flipped it.
    pub enabled_override: Option<bool>,
    /// The day `request_count` counts.
    pub day: Option<NaiveDate>,
    /// Requests on `day`.
    pub request_count: u64,
    /// Requests ever.
    pub total_requests: u64,
    /// Tokens ever.
    pub total_tokens: u64,
    /// Last failure text.
    pub last_error: Option<String>,
    /// Per key, by fingerprint-independent key hash (see [`key_hash`]).
    pub keys: HashMap<String, KeyRecord>,
    /// Retired models (model → what the provider said), valid while `marks_for` matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retired: BTreeMap<String, String>,
    /// Why the whole provider is gone (410), valid while `marks_for` matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<String>,
    /// The config and keys the marks were made under (see [`ProviderState::marks_key`]):
    /// a change clears them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub marks_for: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stable, non-reversible id for a key, for matching persisted records to keys without
/// storing any part of the key (FNV-1a over the key bytes, salted with the provider name).
pub fn key_hash(provider: &str, key: Option<&ApiKey>) -> String {
    let bytes: Vec<u8> = provider
        .as_bytes()
        .iter()
        .chain(b"\0")
        .chain(key.map_or(&b""[..], |k| k.expose().as_bytes()))
        .copied()
        .collect();
    fnv_hex(&bytes)
}

/// FNV-1a, as 16 hex digits.
pub(super) fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Pool {
    /// What to persist, as of `now`: "requests today" rolls over first, so the records
    /// always tell the same story as a snapshot taken at the same instant.
    pub fn records(&self, now: DateTime<Utc>) -> HashMap<String, ProviderRecord> {
        let mut inner = self.lock();
        let today = local_day(now);
        for p in &mut inner.providers {
            p.roll_day(today);
        }
        inner
            .providers
            .iter()
            .map(|p| {
                let keys = p
                    .keys
                    .iter()
                    .map(|k| {
                        (
                            key_hash(&p.config.name, k.key.as_ref()),
                            KeyRecord {
                                cooldown_until: k.cooldown_until,
                                cooldown_reason: k.cause.as_ref().map(|c| c.words(now)),
                                hold: k.hold_kind(),
                                cause: k.cause.clone(),
                                auth_failed: k.auth_failed,
                                request_count: k.counts.requests_today,
                                tokens_today: k.counts.tokens_today,
                                out_of_tier: k.out_of_tier.clone(),
                            },
                        )
                    })
                    .collect();
                (
                    p.config.name.clone(),
                    ProviderRecord {
                        enabled_override: p.enabled_override,
                        day: Some(p.day),
                        request_count: p.request_count,
                        total_requests: p.total_requests,
                        total_tokens: p.total_tokens,
                        last_error: p.last_error.clone(),
                        keys,
                        retired: p.retired.clone(),
                        gone: p.gone.clone(),
                        marks_for: p.marks_key(),
                    },
                )
            })
            .collect()
    }

    /// Restores persisted records (at start-up), for providers and keys that still exist.
    pub fn restore(&self, records: &HashMap<String, ProviderRecord>, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let today = local_day(now);
            for p in &mut inner.providers {
                let Some(r) = records.get(&p.config.name) else {
                    continue;
                };
                p.enabled_override = r.enabled_override;
                p.total_requests = r.total_requests;
                p.total_tokens = r.total_tokens;
                p.last_error = r.last_error.clone();
                // Retired marks made under another config or other keys are stale.
                if r.marks_for == p.marks_key() {
                    p.retired = r.retired.clone();
                    p.gone = r.gone.clone();
                }
                let same_day = r.day == Some(today);
                p.day = today;
                p.request_count = if same_day { r.request_count } else { 0 };
                for k in &mut p.keys {
                    let Some(kr) = r.keys.get(&key_hash(&p.config.name, k.key.as_ref())) else {
                        continue;
                    };
                    k.cooldown_until = kr.cooldown_until.filter(|t| *t > now);
                    let cause = kr.cause.clone().or_else(|| {
                        kr.cooldown_reason.clone().map(|said| Cause::Saved {
                            hold: kr.hold,
                            said,
                        })
                    });
                    k.cause = k.cooldown_until.and(cause);
                    k.auth_failed = kr.auth_failed;
                    k.counts.requests_today = if same_day { kr.request_count } else { 0 };
                    k.counts.tokens_today = if same_day { kr.tokens_today } else { 0 };
                    k.out_of_tier = kr.out_of_tier.clone();
                }
            }
        }
        self.changed();
    }
}
